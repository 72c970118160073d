//! One run of a probe's handler: an HTTP GET or a TCP connect to the pod's
//! address from the node (through the pod bridge, as kubelet does), or a
//! command through `runc exec`. Each is bounded by the probe's timeout.

use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf_api::{
    Container, ContainerPort, ExecAction, HttpGetAction, LifecycleHandler, Probe, TcpSocketAction,
};
use wharf_runc::Runc;

/// Redirects an HTTP probe follows (Kubernetes' bound too).
const MAX_REDIRECTS: usize = 10;
/// Most bytes of an HTTP answer's head read, and of a command's output kept.
const MAX_READ: usize = 10 * 1024;

/// What one probe checks, resolved against the pod's address and the
/// container's ports.
#[derive(Clone, Debug)]
pub enum Check {
    /// `GET path` to `addr` with `headers`; 200-399 passes.
    Http {
        /// Where to connect.
        addr: SocketAddr,
        /// Request path.
        path: String,
        /// Extra request headers (may replace Host, User-Agent, Accept).
        headers: Vec<(String, String)>,
    },
    /// A TCP connection to `addr`.
    Tcp {
        /// Where to connect.
        addr: SocketAddr,
    },
    /// `command` in container `id`; exit code 0 passes.
    Exec {
        /// The runc the container runs under.
        runc: Runc,
        /// The container's runtime id.
        id: String,
        /// The command.
        command: Vec<String>,
        /// Where runc writes the command's pid, so a timeout can kill it.
        pid_file: PathBuf,
    },
}

impl Check {
    /// The check `probe` of `container` makes on a pod at `pod_ip`; exec
    /// probes need `runc` and the container's runtime id and directory.
    pub fn of(
        probe: &Probe,
        container: &Container,
        pod_ip: IpAddr,
        exec: Option<(&Runc, &str, PathBuf)>,
    ) -> Result<Check, String> {
        let actions = Actions {
            http_get: probe.http_get.as_ref(),
            tcp_socket: probe.tcp_socket.as_ref(),
            exec: probe.exec.as_ref(),
        };
        actions.check(&container.ports, pod_ip, exec)
    }

    /// The check a lifecycle hook's `exec` or `httpGet` makes, as a probe's
    /// would (`None` for a hook with neither: a `sleep`).
    pub fn of_hook(
        hook: &LifecycleHandler,
        ports: &[ContainerPort],
        pod_ip: IpAddr,
        exec: Option<(&Runc, &str, PathBuf)>,
    ) -> Option<Result<Check, String>> {
        let actions = Actions {
            http_get: hook.http_get.as_ref(),
            tcp_socket: None,
            exec: hook.exec.as_ref(),
        };
        (hook.http_get.is_some() || hook.exec.is_some()).then(|| actions.check(ports, pod_ip, exec))
    }

    /// Runs the check within `timeout`: `Err` says why it failed, as the
    /// `Unhealthy` event shows it.
    pub async fn run(&self, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.attempt()).await {
            Ok(result) => result,
            Err(_) => {
                if let Check::Exec { pid_file, .. } = self {
                    kill_by_pid_file(pid_file).await;
                }
                Err(format!("timed out after {timeout:?}"))
            }
        }
    }

    async fn attempt(&self) -> Result<(), String> {
        match self {
            Check::Http {
                addr,
                path,
                headers,
            } => http_get(*addr, path, headers).await,
            Check::Tcp { addr } => TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|err| format!("dial tcp {addr}: {err}")),
            Check::Exec {
                runc,
                id,
                command,
                pid_file,
            } => exec(runc, id, command, pid_file).await,
        }
    }
}

/// The handlers a probe or a hook declares (validation leaves one).
struct Actions<'a> {
    http_get: Option<&'a HttpGetAction>,
    tcp_socket: Option<&'a TcpSocketAction>,
    exec: Option<&'a ExecAction>,
}

impl Actions<'_> {
    /// The check of the declared handler, against a pod at `pod_ip` whose
    /// container has `ports`.
    fn check(
        &self,
        ports: &[ContainerPort],
        pod_ip: IpAddr,
        exec: Option<(&Runc, &str, PathBuf)>,
    ) -> Result<Check, String> {
        let address = |port: &wharf_api::ProbePort, host: &Option<String>| {
            let port = port
                .resolve(ports)
                .ok_or_else(|| format!("port {port:?} is not one of the container's"))?;
            let ip = match host {
                Some(host) => host.parse().map_err(|_| format!("host {host:?}"))?,
                None => pod_ip,
            };
            Ok::<_, String>(SocketAddr::new(ip, port))
        };
        if let Some(http) = self.http_get {
            return Ok(Check::Http {
                addr: address(&http.port, &http.host)?,
                path: http.path.clone().unwrap_or_else(|| "/".into()),
                headers: http
                    .http_headers
                    .iter()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            });
        }
        if let Some(tcp) = self.tcp_socket {
            return Ok(Check::Tcp {
                addr: address(&tcp.port, &tcp.host)?,
            });
        }
        if let Some(command) = self.exec {
            let (runc, id, pid_file) = exec.ok_or("exec needs containers run by runc")?;
            return Ok(Check::Exec {
                runc: runc.clone(),
                id: id.to_string(),
                command: command.command.clone(),
                pid_file,
            });
        }
        Err("no handler".into())
    }
}

/// An HTTP/1.1 GET that follows redirects to the same address; a status of
/// 200-399 passes, and so does a redirect elsewhere (as in Kubernetes).
async fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let mut path = path.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let (status, location) = http_status(addr, &path, headers).await?;
        match (status, location) {
            (300..=399, Some(location)) => match same_host_path(addr, &location) {
                Some(next) => path = next,
                None => return Ok(()),
            },
            (200..=399, _) => return Ok(()),
            (status, _) => return Err(format!("HTTP probe failed with statuscode: {status}")),
        }
    }
    Err(format!("stopped after {MAX_REDIRECTS} redirects"))
}

/// One request: the answer's status and `Location` header.
async fn http_status(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
) -> Result<(u16, Option<String>), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|err| format!("dial tcp {addr}: {err}"))?;
    let given = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    if !given("host") {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    if !given("user-agent") {
        request.push_str(concat!(
            "User-Agent: wharf-probe/",
            env!("CARGO_PKG_VERSION"),
            "\r\n"
        ));
    }
    if !given("accept") {
        request.push_str("Accept: */*\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|err| format!("sending the request to {addr}: {err}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_READ {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|err| format!("reading the answer from {addr}: {err}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_head(&head).ok_or_else(|| format!("no HTTP answer from {addr}"))
}

/// The status and `Location` of an HTTP/1.x answer's head.
fn parse_head(head: &[u8]) -> Option<(u16, Option<String>)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let location = lines
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("location"))
        .map(|(_, value)| value.trim().to_string());
    Some((status, location))
}

/// The path to ask next for a redirect to `location`, when it stays on
/// `addr`; `None` when it leads elsewhere.
fn same_host_path(addr: SocketAddr, location: &str) -> Option<String> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(location.to_string());
    }
    let rest = location.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let same =
        authority == addr.to_string() || (addr.port() == 80 && authority == addr.ip().to_string());
    same.then(|| path.to_string())
}

/// `runc exec` of the command (runc is killed when this is dropped).
async fn exec(
    runc: &Runc,
    id: &str,
    command: &[String],
    pid_file: &std::path::Path,
) -> Result<(), String> {
    let _ = tokio::fs::remove_file(pid_file).await;
    let flags = [OsStr::new("--pid-file"), pid_file.as_os_str()];
    let mut child = crate::exec::runc_exec(runc, &flags, id, command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("running runc exec: {err}"))?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (out, err) = tokio::join!(read_bounded(stdout), read_bounded(stderr));
    let status = child
        .wait()
        .await
        .map_err(|err| format!("waiting for runc exec: {err}"))?;
    let code = crate::exec::exit_code(status);
    let output = String::from_utf8_lossy(&[out, err].concat())
        .trim_end()
        .to_string();
    match (code, output.is_empty()) {
        (0, _) => Ok(()),
        (_, true) => Err(format!("command {command:?} exited with {code}")),
        (_, false) => Err(format!("command {command:?} exited with {code}: {output}")),
    }
}

/// At most [`MAX_READ`] bytes of a pipe.
async fn read_bounded(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let mut output = Vec::new();
    if let Some(pipe) = pipe {
        let _ = pipe.take(MAX_READ as u64).read_to_end(&mut output).await;
    }
    output
}

/// Kills the process of a timed-out exec probe: runc, killed itself,
/// cannot pass SIGKILL on, so the process is killed by the pid runc wrote.
async fn kill_by_pid_file(pid_file: &std::path::Path) {
    if let Ok(pid) = tokio::fs::read_to_string(pid_file).await
        && let Ok(pid) = pid.trim().parse::<i32>()
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_and_location() {
        let head = b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\nlocation: /healthz\r\n\r\n";
        assert_eq!(parse_head(head), Some((302, Some("/healthz".into()))));
        assert_eq!(parse_head(b"HTTP/1.0 200 OK\r\n\r\n"), Some((200, None)));
        assert_eq!(parse_head(b"SSH-2.0-OpenSSH\r\n"), None);
    }

    #[test]
    fn follows_redirects_on_the_same_address_only() {
        let addr: SocketAddr = "10.91.0.5:8080".parse().unwrap();
        assert_eq!(same_host_path(addr, "/b"), Some("/b".into()));
        assert_eq!(
            same_host_path(addr, "http://10.91.0.5:8080/c"),
            Some("/c".into())
        );
        assert_eq!(same_host_path(addr, "http://10.91.0.6:8080/c"), None);
        assert_eq!(same_host_path(addr, "//evil/c"), None);
        assert_eq!(same_host_path(addr, "https://10.91.0.5:8080/c"), None);
    }

    /// A server answering each connection with the next of `answers`.
    async fn server(answers: Vec<&'static str>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in answers {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(answer.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_checks_pass_on_2xx_and_3xx_only() {
        let http = |addr| Check::Http {
            addr,
            path: "/".into(),
            headers: vec![],
        };
        let ok = server(vec![
            "HTTP/1.1 301 Moved\r\nLocation: /up\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        assert_eq!(http(ok).run(Duration::from_secs(2)).await, Ok(()));
        let bad = server(vec!["HTTP/1.1 500 Oops\r\n\r\n"]).await;
        let err = http(bad).run(Duration::from_secs(2)).await.unwrap_err();
        assert!(err.contains("statuscode: 500"), "{err}");
    }

    #[tokio::test]
    async fn checks_time_out_and_fail_on_refused_connections() {
        // Accepts (through the backlog) and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hung = listener.local_addr().unwrap();
        let check = Check::Http {
            addr: hung,
            path: "/".into(),
            headers: vec![],
        };
        let err = check.run(Duration::from_millis(200)).await.unwrap_err();
        assert!(err.contains("timed out"), "{err}");
        assert_eq!(
            Check::Tcp { addr: hung }.run(Duration::from_secs(1)).await,
            Ok(())
        );
        drop(listener);
        let err = Check::Tcp { addr: hung }
            .run(Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.contains("dial tcp"), "{err}");
    }
}
