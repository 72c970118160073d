//! Debian's headless Chromium driven through `chromedriver` (WebDriver),
//! for the dashboard's browser tests: a private chromedriver on a loopback
//! port and a fresh browser profile per test, a fixed 1280x800 window, and
//! screenshots saved under the test's output directory.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::require_tool;

/// How long a page may take to show what a test waits for.
const WAIT: Duration = Duration::from_secs(20);

/// Whether chromium and chromedriver are installed (under `CI=true` their
/// absence fails the test).
pub fn browser_available() -> bool {
    require_tool("chromium", "apt-get install chromium")
        && require_tool("chromedriver", "apt-get install chromium-driver")
}

/// Where a test's screenshots go:
/// `$CARGO_TARGET_TMPDIR/dashboard-screenshots/<test>/`.
pub fn screenshot_dir(test: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("dashboard-screenshots")
        .join(test)
}

/// A chromedriver process with one headless Chromium session. The driver
/// (and with it the browser) is killed on drop.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    screenshots: PathBuf,
    shots: usize,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a 1280x800 window;
    /// screenshots go to [`screenshot_dir`]`(test)`, emptied first.
    pub async fn start(test: &str) -> Browser {
        let port = free_port();
        let mut driver = Command::new("chromedriver")
            // Its own process group, so that drop ends the browsers it
            // started too, even when the test panicked mid-session.
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("a browser profile directory");
        let options = json!({
            "binary": chromium_binary(),
            "args": [
                "--headless=new",
                // Root (as in CI) cannot use Chromium's setuid sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,800",
                "--no-first-run",
                "--no-default-browser-check",
                // Nothing leaves the machine: no update checks, sync or
                // component downloads.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                // No crash handler process outliving the session.
                "--disable-crash-reporter",
                "--disable-breakpad",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), options);
        let deadline = Instant::now() + WAIT;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(err) if Instant::now() < deadline => {
                    // chromedriver may not listen yet.
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => {
                    let _ = driver.kill();
                    panic!("no WebDriver session from chromedriver at {url}: {err}");
                }
            }
        };
        client
            .set_window_size(1280, 800)
            .await
            .expect("setting the window to 1280x800");
        let screenshots = screenshot_dir(test);
        let _ = std::fs::remove_dir_all(&screenshots);
        std::fs::create_dir_all(&screenshots).expect("creating the screenshot directory");
        Browser {
            client,
            driver,
            _profile: profile,
            screenshots,
            shots: 0,
        }
    }

    /// Ends the WebDriver session (closing the browser) before the driver
    /// is killed.
    pub async fn finish(self) {
        let _ = self.client.clone().close().await;
    }

    /// Opens `url`.
    pub async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// Saves a PNG of the viewport as `NN-name.png`; returns its path.
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        self.shots += 1;
        let png = self.client.screenshot().await.expect("taking a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "screenshots are PNG");
        let path = self
            .screenshots
            .join(format!("{:02}-{name}.png", self.shots));
        std::fs::write(&path, png).expect("saving a screenshot");
        path
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(err) => panic!(
                "no element {css} appeared: {err}; page:\n{}",
                self.main_text().await
            ),
        }
    }

    /// Waits until the element matching `css` shows text containing
    /// `needle`; returns its whole text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return text;
            }
            if Instant::now() > deadline {
                panic!(
                    "{css} never showed {needle:?}; it shows {text:?}; page:\n{}",
                    self.main_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into the field matching `css`, replacing its value.
    pub async fn fill(&self, css: &str, text: &str) {
        let input = self.find(css).await;
        input.clear().await.expect("clearing a field");
        input.send_keys(text).await.expect("typing into a field");
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Clicks the element matching `css`, which asks to confirm, and
    /// accepts the confirmation.
    pub async fn click_and_confirm(&self, css: &str) {
        self.click(css).await;
        let deadline = Instant::now() + WAIT;
        while let Err(err) = self.client.accept_alert().await {
            if Instant::now() > deadline {
                panic!("no confirmation after clicking {css}: {err}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the button (or link) whose text is `label`, within `scope` (CSS).
    pub async fn click_labelled(&self, scope: &str, label: &str) {
        let xpath = format!("//*[self::button or self::a][normalize-space(.)={label:?}]",);
        let container = self.find(scope).await;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(target) = container.find(Locator::XPath(&format!(".{xpath}"))).await {
                target
                    .click()
                    .await
                    .unwrap_or_else(|e| panic!("clicking {label}: {e}"));
                return;
            }
            if Instant::now() > deadline {
                panic!("no {label:?} in {scope}; page:\n{}", self.main_text().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Logs in through the dashboard's form and waits for the nav bar.
    pub async fn log_in(&mut self, base: &str, user: &str, password: &str) {
        self.open(&format!("{base}/")).await;
        self.fill("form.login input[name=username]", user).await;
        self.fill("form.login input[name=password]", password).await;
        self.screenshot("login-form").await;
        self.click("form.login button[type=submit]").await;
        self.wait_text("#current-user", user).await;
    }

    /// Runs `script` (an async function body) in the page; returns its value.
    pub async fn run(&self, script: &str) -> Value {
        // WebDriver's execute awaits a returned promise.
        self.client
            .execute(
                &format!("return (async () => {{ {script} }})();"),
                Vec::new(),
            )
            .await
            .unwrap_or_else(|e| panic!("running a script in the page: {e}"))
    }

    /// The text of the main area, for failure messages.
    pub async fn main_text(&self) -> String {
        match self.client.find(Locator::Css("main")).await {
            Ok(main) => main.text().await.unwrap_or_default(),
            Err(_) => String::from("(no main element)"),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group holds chromedriver and the Chromium processes it started.
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

/// Debian installs the browser as `chromium`.
fn chromium_binary() -> String {
    super::prereq::find_executable("chromium")
        .expect("chromium on the PATH")
        .display()
        .to_string()
}

/// A loopback port free right now (for chromedriver, which has no port 0).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener.local_addr().expect("a bound address").port()
}
