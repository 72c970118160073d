//! A `wharf server` child process on an ephemeral loopback port, with its data
//! in a temporary directory that outlives restarts.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const READY_PREFIX: &str = "listening on http://";

/// A running `wharf server`. Killed (SIGKILL) on drop, also when the test
/// panics, in which case the end of its log is printed to help diagnose.
///
/// All registry access of the tests goes through [`TestServer::request`] or
/// the `skopeo`/`docker` wrappers, so credentials can be added in one place
/// once the registry requires them.
pub struct TestServer {
    root: tempfile::TempDir,
    extra_args: Vec<String>,
    child: Option<Child>,
    addr: SocketAddr,
    http: reqwest::Client,
}

impl TestServer {
    /// Starts a server on a fresh data directory. Blocks until the server
    /// reports its address (well under a second).
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// Starts a server with extra `wharf server` arguments (e.g. `--gc-grace 0`).
    pub fn start_with(extra_args: &[&str]) -> TestServer {
        let root = tempfile::Builder::new()
            .prefix("wharf-e2e-")
            .tempdir()
            .expect("creating a temporary directory for the server");
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("building the HTTP client");
        let mut server = TestServer {
            root,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http,
        };
        server.spawn();
        server
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, the registry host as image references name it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The server's data directory (kept across restarts).
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The HTTP client the tests use against this server.
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// A request to `path` (starting with `/`) on this server.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url()))
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error here means it already exited, which is fine too.
            let _ = child.kill();
            child.wait().expect("waiting for the killed server");
        }
    }

    /// Kills the server if it runs and starts it again on the same data
    /// directory. The port changes.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The last `lines` lines of the server's log (stderr of every run).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path(), lines)
    }

    fn log_path(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the server log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("server")
            .args(["--listen", "127.0.0.1:0"])
            // Tests run collections themselves unless they ask for a schedule.
            .args(
                (!self.extra_args.iter().any(|a| a == "--gc-interval"))
                    .then_some(["--gc-interval", "0"])
                    .into_iter()
                    .flatten(),
            )
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting the wharf binary");
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so that a later write never hits a closed pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(err) => panic!(
                "wharf server did not report its address ({err}); log:\n{}",
                self.log_tail(40)
            ),
        };
        self.addr = line
            .strip_prefix(READY_PREFIX)
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first stdout line from wharf server: {line:?}"));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of the wharf server log ---\n{}",
                self.log_tail(60)
            );
        }
    }
}

/// The last `lines` lines of a text file, read from its end.
pub fn log_tail(path: &Path, lines: usize) -> String {
    const MAX_BYTES: u64 = 64 << 10;
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    if text.trim().is_empty() {
        return "(empty)".into();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
