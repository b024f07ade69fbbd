//! Just enough of W3C WebDriver (a JSON protocol over HTTP) to drive
//! Debian's headless Chromium through its `chromedriver`: open a page,
//! find, click and type, read the page through a script, take
//! screenshots, and read the browser's network and console logs
//! (ChromeDriver's `goog:loggingPrefs`). Everything stays on loopback:
//! chromedriver listens on 127.0.0.1 and the browser is told to resolve no
//! name and to send anything that is not loopback to a tripwire.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::PATIENCE;

/// The key W3C WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Debian's packages `chromium` and `chromium-driver`; scripts/host.sh
/// installs them. The browser itself, not Debian's `/usr/bin/chromium`
/// launcher, which adds Google API keys and remote extensions, and with
/// them requests to Google's services.
fn chromium() -> String {
    std::env::var("BERTH_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/lib/chromium/chromium".to_owned())
}

fn chromedriver() -> String {
    std::env::var("BERTH_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned())
}

/// A WebDriver error answer: `error` is the protocol's code (`no such
/// element`, `stale element reference`, ...).
#[derive(Debug)]
pub struct WdError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

impl WdError {
    fn retriable(&self) -> bool {
        matches!(
            self.error.as_str(),
            "no such element"
                | "stale element reference"
                | "element not interactable"
                | "element click intercepted"
        )
    }
}

pub struct Browser {
    http: reqwest::Client,
    driver: Option<Child>,
    driver_addr: SocketAddr,
    /// `http://127.0.0.1:PORT/session/ID`, once a session is open.
    session: String,
    session_id: String,
    _profile: tempfile::TempDir,
    pub driver_log: PathBuf,
}

/// The flags that keep the browser quiet and off the network: no
/// background requests, no updates, no sync, no first-run pages, no name
/// resolution but loopback, and a proxy that is a tripwire (loopback
/// itself is never proxied).
fn chromium_args(profile: &Path, tripwire: SocketAddr) -> Vec<String> {
    [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--metrics-recording-only",
        "--password-store=basic",
        "--window-size=1280,1000",
        "--disable-search-engine-choice-screen",
        "--disable-features=AutofillServerCommunication,NetworkTimeServiceQuerying,\
         OptimizationHints,MediaRouter,Translate",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        format!("--proxy-server=http://{tripwire}"),
        format!("--user-data-dir={}", profile.display()),
    ])
    .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Browser {
    /// Starts chromedriver on loopback and opens a headless Chromium
    /// session through it.
    pub async fn start(tripwire: SocketAddr) -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let driver_log = profile.path().join("chromedriver.log");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let port = free_port();
        let driver_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", driver_log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (Debian's chromium-driver; scripts/host.sh installs it)",
                    chromedriver()
                )
            });
        let mut browser = Self {
            http,
            driver: Some(driver),
            driver_addr,
            session: String::new(),
            session_id: String::new(),
            _profile: profile,
            driver_log,
        };
        browser.wait_driver().await;
        let args = chromium_args(browser._profile.path(), tripwire);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium(), "args": args, "prefs": {
                // No preconnecting (to the search engine, say), no sign-in.
                "net.network_prediction_options": 2,
                "signin.allowed": false,
                "search.suggest_enabled": false,
            }},
            "goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"},
        }}});
        let created = browser
            .raw(
                Method::POST,
                &format!("http://{driver_addr}/session"),
                Some(caps),
            )
            .await
            .unwrap_or_else(|e| panic!("new session: {e}\n{}", browser.driver_log()));
        browser.session_id = created["sessionId"].as_str().expect("sessionId").to_owned();
        browser.session = format!("http://{driver_addr}/session/{}", browser.session_id);
        browser
    }

    fn driver_log(&self) -> String {
        std::fs::read_to_string(&self.driver_log).unwrap_or_default()
    }

    async fn wait_driver(&mut self) {
        let begun = Instant::now();
        loop {
            let status = self
                .raw(
                    Method::GET,
                    &format!("http://{}/status", self.driver_addr),
                    None,
                )
                .await;
            if status.is_ok_and(|v| v["ready"] == true) {
                return;
            }
            if let Some(Ok(Some(code))) = self.driver.as_mut().map(|c| c.try_wait()) {
                panic!("chromedriver exited with {code}:\n{}", self.driver_log());
            }
            assert!(begun.elapsed() < PATIENCE, "chromedriver did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn raw(&self, method: Method, url: &str, body: Option<Value>) -> Result<Value, WdError> {
        let mut req = self.http.request(method, url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| WdError {
            error: "transport".into(),
            message: e.to_string(),
        })?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.map_err(|e| WdError {
            error: "transport".into(),
            message: e.to_string(),
        })?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if ok {
            Ok(value)
        } else {
            Err(WdError {
                error: value["error"].as_str().unwrap_or("unknown").to_owned(),
                message: value["message"].as_str().unwrap_or_default().to_owned(),
            })
        }
    }

    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        self.raw(method, &format!("{}{path}", self.session), body)
            .await
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` (a function body) in the page with `args`.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.cmd(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
        .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    /// The `textContent` of the first element `css` selects, if any.
    pub async fn text(&self, css: &str) -> Option<String> {
        let v = self
            .script(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                json!([css]),
            )
            .await;
        v.as_str().map(str::to_owned)
    }

    /// An attribute of the first element `css` selects, if both exist.
    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let v = self
            .script(
                "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
                json!([css, name]),
            )
            .await;
        v.as_str().map(str::to_owned)
    }

    /// The page's visible text, for failure messages.
    pub async fn page_text(&self) -> String {
        self.script(
            "return document.body ? document.body.innerText : '';",
            json!([]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits until the element `css` selects has text for which `good`
    /// holds, and returns that text.
    pub async fn wait_text(&self, css: &str, good: impl Fn(&str) -> bool) -> String {
        let begun = Instant::now();
        loop {
            if let Some(text) = self.text(css).await
                && good(&text)
            {
                return text;
            }
            if begun.elapsed() > PATIENCE {
                panic!(
                    "{css} never showed the expected text (it has {:?}); the page says:\n{}",
                    self.text(css).await,
                    self.page_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `css` selects an element.
    pub async fn wait_for(&self, css: &str) {
        self.wait_text(css, |_| true).await;
    }

    async fn find(&self, css: &str) -> Result<String, WdError> {
        let v = self
            .cmd(
                Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await?;
        Ok(v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("element reference in {v}"))
            .to_owned())
    }

    /// Finds `css` and does `what` to it, again while the page is still
    /// being built (no such element yet, replaced, not yet interactable).
    async fn on_element(&self, css: &str, path: &str, body: Value) {
        let begun = Instant::now();
        loop {
            let done = match self.find(css).await {
                Ok(id) => {
                    self.cmd(
                        Method::POST,
                        &format!("/element/{id}{path}"),
                        Some(body.clone()),
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match done {
                Ok(_) => return,
                Err(e) if e.retriable() && begun.elapsed() < PATIENCE => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!(
                    "{css}{path}: {e}; the page says:\n{}",
                    self.page_text().await
                ),
            }
        }
    }

    /// Clicks the element, like a user: it must be visible and on top.
    pub async fn click(&self, css: &str) {
        self.on_element(css, "/click", json!({})).await;
    }

    /// Types into the element; into a file input, a path chooses the file.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, "/value", json!({ "text": text }))
            .await;
    }

    pub async fn screenshot(&self, path: &Path) {
        let v = self
            .cmd(Method::GET, "/screenshot", None)
            .await
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .expect("base64");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// The entries of a ChromeDriver log (`performance`, `browser`) since
    /// the last read.
    pub async fn log(&self, kind: &str) -> Vec<Value> {
        let v = self
            .cmd(Method::POST, "/se/log", Some(json!({ "type": kind })))
            .await
            .unwrap_or_else(|e| panic!("{kind} log: {e}"));
        v.as_array().cloned().unwrap_or_default()
    }

    /// Closes the browser and stops chromedriver.
    pub async fn quit(mut self) {
        let _ = self.cmd(Method::DELETE, "", None).await;
        self.session.clear();
        self.stop_driver();
    }

    fn stop_driver(&mut self) {
        if let Some(mut child) = self.driver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Browser {
    /// A test that failed half-way still closes its browser: the session
    /// is deleted with a plain blocking request (no runtime in `drop`)
    /// before chromedriver is stopped.
    fn drop(&mut self) {
        if !self.session.is_empty()
            && let Ok(mut s) = TcpStream::connect_timeout(&self.driver_addr, Duration::from_secs(5))
        {
            let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                self.session_id, self.driver_addr
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
        self.stop_driver();
    }
}
