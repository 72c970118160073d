//! moto's server (an AWS API emulator from PyPI) on a free loopback port,
//! for the EC2 driver's tests. `scripts/install-deps` installs it in a
//! venv under `/opt/wharf-ci/moto`; `WHARF_MOTO_SERVER` names another
//! `moto_server`.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::listen::wait_until_listening;

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
        let server = server.expect("checked");
        // Another process may take the port between our probe and moto's
        // bind; moto then exits and a fresh port is tried.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = Command::new(&server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts");
            let mut moto = MotoServer {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match wait_until_listening(addr, &mut moto.child, Duration::from_secs(60)) {
                Ok(()) => return Some(moto),
                Err(e) => last_error = e,
            }
        }
        panic!("moto_server: {last_error}");
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
