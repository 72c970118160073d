//! Debian's docker-registry (CNCF distribution 2.8) as a real peer: in a
//! test's network namespace on port 5000, or on a free loopback port; with
//! its own config (the package's service listens on every interface) and a
//! data directory that outlives a stop, so a restart serves what it had.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wharf_net::testing::HostNamespace;
use wharf_testkit::listen::wait_until_listening;

/// A private docker-registry process.
pub struct DockerRegistry {
    child: Option<Child>,
    /// The namespace it runs in, if not the host's.
    ns: Option<String>,
    address: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl DockerRegistry {
    /// Inside `ns`, on port 5000 of every address there.
    pub fn start(ns: &HostNamespace) -> DockerRegistry {
        DockerRegistry::launch(
            Some(ns.name().to_string()),
            ns.ns_side().addr.to_string(),
            5000,
            "0.0.0.0",
        )
    }

    /// On 127.0.0.1, on a port free when it starts.
    pub fn on_loopback() -> DockerRegistry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        DockerRegistry::launch(None, "127.0.0.1".into(), port, "127.0.0.1")
    }

    fn launch(ns: Option<String>, address: String, port: u16, listen: &str) -> DockerRegistry {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {listen}:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut registry = DockerRegistry {
            child: None,
            ns,
            address,
            port,
            dir,
        };
        registry.spawn();
        registry
    }

    fn spawn(&mut self) {
        let mut command = match &self.ns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns, "docker-registry"]);
                command
            }
            None => Command::new("docker-registry"),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("log"))
            .unwrap();
        let mut child = command
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let addr = SocketAddr::new(self.address.parse().expect("an IP address"), self.port);
        let listening = wait_until_listening(addr, &mut child, Duration::from_secs(20));
        self.child = Some(child);
        if let Err(e) = listening {
            panic!("docker-registry did not start: {e}: {}", self.log());
        }
    }

    /// `http://ADDRESS:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// `ADDRESS:PORT`, as image references name it.
    pub fn host(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Kills it; its content stays for [`DockerRegistry::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same address, port and content.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}
