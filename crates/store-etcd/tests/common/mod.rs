//! A private etcd server per test: loopback only, random free ports, data in
//! a temporary directory, killed on drop.
//!
//! Without an `etcd` binary the tests that need one are skipped with a
//! message, except under `CI=true`, where they fail.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use wharf_store_etcd::{EtcdStore, EtcdStoreOptions};

/// How long a starting etcd may take to elect itself and answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or deliberately stopped) single-member etcd.
pub struct Etcd {
    binary: PathBuf,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    child: Mutex<Option<Child>>,
}

impl Etcd {
    /// Starts an etcd and waits until it answers; `None` when the test should
    /// be skipped because etcd is not installed.
    pub async fn start() -> Option<Etcd> {
        let binary = etcd_binary()?;
        let (client_port, peer_port) = free_ports();
        let etcd = Etcd {
            binary,
            dir: data_root(),
            client_port,
            peer_port,
            child: Mutex::new(None),
        };
        etcd.spawn();
        etcd.wait_ready().await;
        Some(etcd)
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A store on this etcd under `namespace`, with test-sized timeouts.
    pub async fn store(&self, namespace: &str) -> EtcdStore {
        self.store_with(namespace, EtcdStoreOptions::default())
            .await
    }

    /// A store on this etcd under `namespace`, tuned by `options`.
    pub async fn store_with(&self, namespace: &str, options: EtcdStoreOptions) -> EtcdStore {
        EtcdStore::connect(&[self.endpoint()], test_options(namespace, options))
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "connect to {}: {error}\n{}",
                    self.endpoint(),
                    self.log_tail()
                )
            })
    }

    /// Kills etcd with SIGKILL, as a crash or power loss would, and reaps it.
    pub fn kill(&self) {
        if let Some(mut child) = self.child().take() {
            // Already exited is fine: we only want it gone.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data directory and ports, and waits until it answers.
    pub async fn restart(&self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    /// Prometheus metrics text from etcd's client port.
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.client_port))
            .await
            .expect("connect to etcd metrics");
        // HTTP/1.0: etcd closes the connection after the response.
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("send metrics request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read metrics");
        response
    }

    /// One gauge or counter from [`Etcd::metrics`].
    pub async fn metric(&self, name: &str) -> f64 {
        let metrics = self.metrics().await;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} not found"))
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(&self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open etcd log");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let client = self.endpoint();
        let child = Command::new(&self.binary)
            .args(["--name", "wharf-test"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("wharf-test={peer}")])
            .args([
                "--initial-cluster-token",
                &format!("wharf-test-{}", self.client_port),
            ])
            // A short election timeout makes the member elect itself sooner
            // and lowers etcd's minimum lease TTL to 1 s (1.5 election timeouts).
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", self.binary.display()));
        *self.child() = Some(child);
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let options = test_options("", EtcdStoreOptions::default());
        loop {
            match EtcdStore::connect(&[self.endpoint()], options.clone()).await {
                Ok(_) => return,
                Err(error) if Instant::now() > deadline => panic!(
                    "etcd did not answer within {START_TIMEOUT:?}: {error}\n{}",
                    self.log_tail()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The end of etcd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut tail = String::new();
        if let Ok(mut file) = File::open(self.log_path()) {
            let length = file.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = file.seek(SeekFrom::Start(length.saturating_sub(4096)));
            let _ = file.read_to_string(&mut tail);
        }
        format!("--- etcd log (tail) ---\n{tail}")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// Store options for tests: the given namespace, timeouts that fail fast.
pub fn test_options(namespace: &str, options: EtcdStoreOptions) -> EtcdStoreOptions {
    EtcdStoreOptions {
        namespace: namespace.to_owned(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..options
    }
}

/// The etcd binary (`$WHARF_ETCD_BIN`, else `etcd` on the `PATH`), or `None`
/// to skip; under `CI=true` a missing binary fails the test instead.
fn etcd_binary() -> Option<PathBuf> {
    let found = match std::env::var_os("WHARF_ETCD_BIN") {
        Some(path) => Some(PathBuf::from(path)).filter(|path| path.is_file()),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("etcd"))
                .find(|path| path.is_file())
        }),
    };
    wharf_testkit::prereq::require(
        found.is_some(),
        "etcd not installed: apt-get install etcd-server",
    );
    found
}

/// Two distinct free loopback ports (client, peer).
fn free_ports() -> (u16, u16) {
    // Both listeners are held until both ports are known, so they differ.
    let client = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let peer = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = |listener: &TcpListener| listener.local_addr().expect("local address").port();
    (port(&client), port(&peer))
}

/// A temporary directory for etcd's data, in memory when possible: etcd
/// fsyncs every commit, which on a disk would dominate the tests' time.
fn data_root() -> TempDir {
    let shm = Path::new("/dev/shm");
    let in_memory = shm
        .is_dir()
        .then(|| {
            tempfile::Builder::new()
                .prefix("wharf-etcd-")
                .tempdir_in(shm)
                .ok()
        })
        .flatten();
    in_memory.unwrap_or_else(|| {
        tempfile::Builder::new()
            .prefix("wharf-etcd-")
            .tempdir()
            .expect("temp dir")
    })
}
