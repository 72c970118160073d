//! moto's server (an AWS API emulator from PyPI) on a free loopback port,
//! for the EC2 driver's tests. `scripts/install-deps` installs it in a
//! venv under `/opt/wharf-ci/moto`; `WHARF_MOTO_SERVER` names another
//! `moto_server`.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::prereq::{find_executable, require};

/// Where install-deps puts moto.
const VENV_SERVER: &str = "/opt/wharf-ci/moto/bin/moto_server";

/// A running moto server; killed on drop.
pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

fn moto_server() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("WHARF_MOTO_SERVER") {
        return Some(PathBuf::from(path));
    }
    let venv = PathBuf::from(VENV_SERVER);
    if venv.is_file() {
        return Some(venv);
    }
    find_executable("moto_server")
}

impl MotoServer {
    /// Starts moto on loopback, or `None` (a skip; a panic under CI) when
    /// it is not installed.
    #[track_caller]
    pub fn start() -> Option<MotoServer> {
        let server = moto_server();
        let installed = require(
            server.is_some(),
            "moto not installed: run scripts/install-deps (a venv under /opt/wharf-ci/moto)",
        );
        if !installed {
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(server.expect("checked"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let moto = MotoServer {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
