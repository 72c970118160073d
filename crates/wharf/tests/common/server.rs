//! A `wharf server` child process on an ephemeral loopback port, with its data
//! in a temporary directory that outlives restarts. The server starts with a
//! known `admin` password; registry requests of the tests authenticate as
//! `admin` unless they ask for another client.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::{Method, Url};

use super::api::ApiClient;
use super::registry::{Credentials, RegistryClient, RegistryRequest, plain_http_client};

/// How long the server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const READY_PREFIX: &str = "listening on http://";

/// Starts `command` (a `wharf server` or `wharf up`) with stdout piped and
/// waits for its first line, `listening on http://ADDR`. Returns the child,
/// that address and the rest of its stdout; `log` gives what to show when
/// the start fails.
pub fn spawn_listening(
    command: &mut Command,
    log: impl FnOnce() -> String,
) -> (Child, SocketAddr, StdoutLines) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the wharf binary");
    let lines = StdoutLines::of(&mut child);
    let line = match lines.next(START_TIMEOUT) {
        Ok(line) => line,
        Err(err) => panic!("wharf did not report its address ({err}); log:\n{}", log()),
    };
    let addr = line
        .strip_prefix(READY_PREFIX)
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first stdout line from wharf: {line:?}"));
    (child, addr, lines)
}

/// The lines a child prints on stdout, read by a thread so that waiting for
/// one can time out. The thread reads to the end, so that the child never
/// writes into a closed pipe, however few lines the test wants.
pub struct StdoutLines(mpsc::Receiver<String>);

impl StdoutLines {
    /// Takes `child`'s piped stdout.
    pub fn of(child: &mut Child) -> StdoutLines {
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // A test that stopped listening still drains the pipe.
                let _ = tx.send(line);
            }
        });
        StdoutLines(rx)
    }

    /// The next line, waiting at most `timeout`.
    pub fn next(&self, timeout: Duration) -> Result<String, mpsc::RecvTimeoutError> {
        self.0.recv_timeout(timeout)
    }
}

/// The password of the `admin` account of every test server.
pub const ADMIN_PASSWORD: &str = "e2e-admin-Secret-7f3a";

/// The system administrator's credentials.
pub fn admin_credentials() -> Credentials {
    Credentials::new("admin", ADMIN_PASSWORD)
}

/// How to start a [`TestServer`]: extra arguments, environment, and files
/// placed in the data directory before the first start.
#[derive(Default)]
pub struct ServerOptions {
    args: Vec<String>,
    env: Vec<(String, String)>,
    files: Vec<(String, Vec<u8>)>,
}

impl ServerOptions {
    /// Extra `wharf server` arguments (e.g. `--gc-grace 0`).
    pub fn args(mut self, args: &[&str]) -> ServerOptions {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// An environment variable of the server (e.g. `RUST_LOG`).
    pub fn env(mut self, key: &str, value: &str) -> ServerOptions {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// A file at `name` in the data directory (its directories created),
    /// written before the first start (e.g. another server's `token.key`).
    pub fn data_file(mut self, name: &str, bytes: Vec<u8>) -> ServerOptions {
        self.files.push((name.to_string(), bytes));
        self
    }

    /// Starts the server.
    pub fn start(self) -> TestServer {
        TestServer::start_with_options(self)
    }
}

/// A running `wharf server`. Killed (SIGKILL) on drop, also when the test
/// panics, in which case the end of its log is printed to help diagnose.
///
/// Registry requests go through [`TestServer::request`], which answers the
/// registry's token challenges with the `admin` credentials.
pub struct TestServer {
    root: tempfile::TempDir,
    options: ServerOptions,
    child: Option<Child>,
    addr: SocketAddr,
    http: reqwest::Client,
    registry: RegistryClient,
}

impl TestServer {
    /// Starts a server on a fresh data directory. Blocks until the server
    /// reports its address (well under a second).
    pub fn start() -> TestServer {
        TestServer::start_with_options(ServerOptions::default())
    }

    /// Starts a server with extra `wharf server` arguments (e.g. `--gc-grace 0`).
    pub fn start_with(extra_args: &[&str]) -> TestServer {
        ServerOptions::default().args(extra_args).start()
    }

    /// Options for [`ServerOptions::start`].
    pub fn options() -> ServerOptions {
        ServerOptions::default()
    }

    fn start_with_options(options: ServerOptions) -> TestServer {
        let root = tempfile::Builder::new()
            .prefix("wharf-e2e-")
            .tempdir()
            .expect("creating a temporary directory for the server");
        let mut server = TestServer {
            root,
            options,
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: plain_http_client(),
            registry: RegistryClient::new(Some(admin_credentials())),
        };
        std::fs::create_dir_all(server.data_dir()).expect("creating the data directory");
        for (name, bytes) in &server.options.files {
            let path = server.data_dir().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("creating a data subdirectory");
            }
            std::fs::write(path, bytes)
                .unwrap_or_else(|e| panic!("writing {name} into the data directory: {e}"));
        }
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

    /// A plain HTTP client without credentials, for requests that must
    /// control their `Authorization` themselves.
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// `http://127.0.0.1:PORT/service/token`, the token realm.
    pub fn realm(&self) -> String {
        format!("{}/service/token", self.url())
    }

    /// A registry request to `path` (starting with `/`) as `admin`.
    pub fn request(&self, method: Method, path: &str) -> RegistryRequest {
        self.request_url(method, super::registry::url(&self.url(), path))
    }

    /// A registry request to `url` as `admin`.
    pub fn request_url(&self, method: Method, url: Url) -> RegistryRequest {
        self.registry.request(method, url)
    }

    /// The registry client of `admin` that [`TestServer::request`] uses.
    pub fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    /// A registry client acting as `credentials`, or anonymous with `None`.
    pub fn registry_as(&self, credentials: Option<&Credentials>) -> RegistryClient {
        RegistryClient::new(credentials.cloned())
    }

    /// An API session as `admin`.
    pub async fn admin(&self) -> ApiClient {
        self.api_as(&admin_credentials()).await
    }

    /// An API session as `credentials`; panics if the login fails.
    pub async fn api_as(&self, credentials: &Credentials) -> ApiClient {
        ApiClient::login(&self.url(), credentials)
            .await
            .unwrap_or_else(|(status, body)| {
                panic!(
                    "API login as {} failed ({status}): {body}",
                    credentials.user
                )
            })
    }

    /// The server's stderr (every run), for searching.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error here means it already exited, which is fine too.
            let _ = child.kill();
            child.wait().expect("waiting for the killed server");
        }
    }

    /// Stops the server with SIGTERM, as an operator or systemd would, and
    /// waits for it to exit; panics unless it exits cleanly within 15 s.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .expect("sending SIGTERM to the server");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the server") {
                assert!(status.success(), "the server exited with {status}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server if it runs and starts it again on the same data
    /// directory. The port changes.
    pub fn restart(&mut self) {
        self.kill();
        // Tokens held by the old client name the old port's realm; start afresh.
        self.registry = RegistryClient::new(Some(admin_credentials()));
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
        let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
        command
            .arg("server")
            // Loopback unless the test names an address (one reachable
            // from a network namespace standing for another machine).
            .args(
                (!self.options.args.iter().any(|a| a == "--listen"))
                    .then_some(["--listen", "127.0.0.1:0"])
                    .into_iter()
                    .flatten(),
            )
            // Tests run collections themselves unless they ask for a schedule.
            .args(
                (!self.options.args.iter().any(|a| a == "--gc-interval"))
                    .then_some(["--gc-interval", "0"])
                    .into_iter()
                    .flatten(),
            )
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.options.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("WHARF_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stderr(log);
        let log_path = self.log_path();
        let (child, addr, _) = spawn_listening(&mut command, || log_tail(&log_path, 40));
        self.child = Some(child);
        self.addr = addr;
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
