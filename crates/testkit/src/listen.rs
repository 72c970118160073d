//! Waiting for a child process to listen on a loopback port.
//!
//! A bare "connect until it works" loop has two ways to be fooled, and CI
//! met one (`ec2_moto`, a refused request right after the wait): a
//! connect to a port nobody listens on yet can pick that same port as its
//! source and connect to itself (TCP simultaneous open), and a server that
//! lost the port to another process exits while the loop keeps trying.

use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

/// Waits until something other than the connecting socket itself accepts
/// connections on `addr`, while `child` keeps running. Errs when the child
/// exits first or `timeout` passes.
pub fn wait_until_listening(
    addr: SocketAddr,
    child: &mut Child,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited before listening on {addr}: {status}"));
        }
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            let to_itself = stream.local_addr().ok() == stream.peer_addr().ok();
            if !to_itself {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("not listening on {addr} after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::process::Command;

    #[test]
    fn a_listening_port_is_found_while_the_child_runs() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let found = wait_until_listening(
            listener.local_addr().unwrap(),
            &mut child,
            Duration::from_secs(5),
        );
        child.kill().unwrap();
        child.wait().unwrap();
        found.unwrap();
    }

    #[test]
    fn a_child_that_exits_ends_the_wait_with_its_status() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut child = Command::new("false").spawn().unwrap();
        let started = Instant::now();
        let err = wait_until_listening(port, &mut child, Duration::from_secs(30)).unwrap_err();
        assert!(err.contains("exited"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
