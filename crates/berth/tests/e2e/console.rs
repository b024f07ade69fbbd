//! The web console at `/console/`, in a real headless Chromium (Debian's
//! `chromium`, driven through `chromedriver`): sign in with the admin key,
//! call an existing function with a file from the invoke form, see its
//! output, open the task it made and read its status and logs; the same as
//! an async task, whose page shows its output; then the task list,
//! filtered. Screenshots of each step are saved under
//! `target/test-artifacts/console/`. Nothing leaves loopback: every URL the
//! page requested is the server's, the browser resolves no name, and its
//! proxy for anything but loopback is a tripwire on loopback that answers
//! nothing and records what the browser tried on its own account (which
//! must be only its vendor's background services).

mod webdriver;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use reqwest::{Method, StatusCode, header};
use serde_json::Value;
use tokio::io::AsyncReadExt;

use crate::harness::{Server, sh};
use webdriver::Browser;

/// Where the screenshots go: the workspace's target directory.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-artifacts").join("console");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    // Left by an earlier failed run, it would tell of a failure not this one.
    let _ = std::fs::remove_file(dir.join("failure.png"));
    dir
}

/// A listener that records every connection made to it: the browser's
/// proxy for anything that is not loopback, so any such request shows up
/// here instead of leaving the machine.
struct Tripwire {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Tripwire {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("tripwire");
        let addr = listener.local_addr().expect("tripwire addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let mut head = vec![0; 512];
                    let n = conn.read(&mut head).await.unwrap_or(0);
                    let line = String::from_utf8_lossy(&head[..n])
                        .lines()
                        .next()
                        .unwrap_or("(connection without a request)")
                        .to_owned();
                    record.lock().unwrap().push(line);
                });
            }
        });
        Self { addr, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

const FUNCTION: &str = "console-echo";

/// Whether a request line the tripwire caught is one of the browser's own
/// background services, which no flag fully silences in Debian's build:
/// Google's update, account and time services, and the search engine it
/// preconnects to. A connection that sent nothing counts as one too.
fn browser_service(line: &str) -> bool {
    let target = match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["CONNECT", authority, ..] => authority.to_owned(),
        [_, url, ..] => url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned(),
        _ => return line == "(connection without a request)",
    };
    let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
    [
        "google.com",
        "googleapis.com",
        "gstatic.com",
        "duckduckgo.com",
    ]
    .iter()
    .any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

#[tokio::test]
async fn console_signs_in_invokes_with_a_file_and_shows_the_task_and_its_logs() {
    let server = Server::start().await;
    server
        .deploy(
            FUNCTION,
            &sh("cat; echo \"console: $REQUEST_METHOD $CONTENT_LENGTH bytes\" >&2"),
        )
        .await;
    let content = format!(
        "Hello from the console test.\nA second line, with ünïcödé.\n{}\n",
        rand::random::<u64>()
    );
    let input = tempfile::NamedTempFile::new().expect("input file");
    std::fs::write(input.path(), &content).expect("write input");

    let tripwire = Tripwire::start().await;
    let browser = Browser::start(tripwire.addr).await;
    let shots = artifacts();
    let steps = walk_through(&browser, &server, input.path(), &content, &shots);
    let outcome = std::panic::AssertUnwindSafe(steps).catch_unwind().await;
    if outcome.is_err() {
        browser.screenshot(&shots.join("failure.png")).await;
        eprintln!("server log:\n{}", server.log());
    }
    let requested = requested_urls(&browser).await;
    let console_errors = browser.log("browser").await;
    browser.quit().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }

    // No request left loopback: every URL fetched over the network was
    // the server's (the browser's own `chrome:`, `data:` and `blob:` URLs
    // never leave the process)...
    let origin = format!("{}/", server.url);
    let fetched: Vec<&String> = requested
        .iter()
        .filter(|u| {
            ["http:", "https:", "ws:", "wss:", "ftp:"]
                .iter()
                .any(|s| u.starts_with(s))
        })
        .collect();
    assert!(
        fetched
            .iter()
            .any(|u| u.starts_with(&format!("{origin}v1/"))),
        "the network log has no API call: {requested:?}"
    );
    let elsewhere: Vec<&&String> = fetched.iter().filter(|u| !u.starts_with(&origin)).collect();
    assert!(
        elsewhere.is_empty(),
        "requests beyond the server: {elsewhere:?}"
    );
    // ...and what the browser tried on its own account (Chromium's
    // component updater, its account check, a preconnect to its search
    // engine) went to the tripwire on loopback and got nothing: no other
    // host was tried.
    let caught = tripwire.seen();
    let unexpected: Vec<&String> = caught.iter().filter(|l| !browser_service(l)).collect();
    assert!(
        unexpected.is_empty(),
        "the browser tried hosts beyond its own services: {unexpected:?}"
    );
    if !caught.is_empty() {
        eprintln!("held on loopback by the tripwire: {caught:?}");
    }
    // No script error and no Content-Security-Policy violation (error
    // answers, like the 401 to the wrong key, are logged as `network`).
    let severe: Vec<&Value> = console_errors
        .iter()
        .filter(|e| e["level"] == "SEVERE" && e["source"] != "network")
        .collect();
    assert!(severe.is_empty(), "console errors: {severe:#?}");
    server.assert_no_panic();
}

async fn walk_through(
    browser: &Browser,
    server: &Server,
    input: &std::path::Path,
    content: &str,
    shots: &std::path::Path,
) {
    // `/console` redirects to the page, which asks for a key.
    browser.goto(&format!("{}/console", server.url)).await;
    browser.wait_for("#signin-key").await;
    let at = browser
        .script("return location.pathname;", Value::Array(vec![]))
        .await;
    assert_eq!(at, "/console/");
    browser.screenshot(&shots.join("1-sign-in.png")).await;

    // A key the server does not know is refused, and not kept.
    browser.type_into("#signin-key", "not-a-key").await;
    browser.click("#signin-submit").await;
    browser
        .wait_text("#signin-form .error", |t| t.contains("does not accept"))
        .await;
    browser
        .script(
            "document.getElementById('signin-key').value = '';",
            Value::Array(vec![]),
        )
        .await;

    browser.type_into("#signin-key", &server.key).await;
    browser.click("#signin-submit").await;
    let link = format!("a[data-function=\"{FUNCTION}\"]");
    browser.wait_for(&link).await;
    let kept = browser
        .script(
            "return sessionStorage.getItem('berth.key');",
            Value::Array(vec![]),
        )
        .await;
    assert_eq!(kept, server.key.as_str(), "the key is kept for the tab");
    browser.screenshot(&shots.join("2-functions.png")).await;

    // The function's page, and its invoke form with a file.
    browser.click(&link).await;
    browser.wait_text("#function-name", |t| t == FUNCTION).await;
    browser
        .type_into("#invoke-file", input.to_str().expect("a UTF-8 path"))
        .await;
    browser.click("#invoke-submit").await;
    browser.wait_text("#invoke-output", |t| t == content).await;
    let status = browser.text("#invoke-status").await.unwrap_or_default();
    assert!(status.starts_with("200"), "{status}");
    let download = browser
        .attribute("#invoke-output-download", "href")
        .await
        .unwrap_or_default();
    assert!(download.starts_with("blob:"), "{download}");
    let timing = browser.text("#invoke-timing").await.unwrap_or_default();
    assert!(timing.contains("run"), "Server-Timing shown: {timing:?}");
    browser.screenshot(&shots.join("3-invoke.png")).await;

    // The task the call made, as the API has it.
    let id = browser
        .text("#invoke-task-link")
        .await
        .expect("a link to the task");
    let task = server.wait(&id).await;
    assert_eq!(task.function, FUNCTION);

    // Its page: status, timing and logs (a sync call's output is not kept).
    browser.click("#invoke-task-link").await;
    browser.wait_text("#task-id", |t| t == id).await;
    browser
        .wait_text("#task-status", |t| t == "succeeded")
        .await;
    let expected_log = format!("console: POST {} bytes", content.len());
    browser
        .wait_text("#task-logs", |t| t.contains(&expected_log))
        .await;
    browser.wait_for("#task-timing .timing-bar").await;
    browser.screenshot(&shots.join("4-task.png")).await;

    // The same file as an async task: the form links to the task, whose
    // page follows it to its end and then shows its output and logs.
    browser
        .click(&format!("#task-facts a[href=\"#/functions/{FUNCTION}\"]"))
        .await;
    browser.wait_text("#function-name", |t| t == FUNCTION).await;
    browser.click("#invoke-async").await;
    browser
        .type_into("#invoke-file", input.to_str().expect("a UTF-8 path"))
        .await;
    browser.click("#invoke-submit").await;
    let status = browser.wait_text("#invoke-status", |t| !t.is_empty()).await;
    assert!(status.starts_with("202"), "{status}");
    let queued = browser
        .text("#invoke-task-link")
        .await
        .expect("a link to the task");
    assert_ne!(queued, id);
    browser.click("#invoke-task-link").await;
    browser.wait_text("#task-id", |t| t == queued).await;
    browser
        .wait_text("#task-status", |t| t == "succeeded")
        .await;
    browser.wait_text("#task-output", |t| t == content).await;
    browser
        .wait_text("#task-logs", |t| t.contains(&expected_log))
        .await;
    let download = browser
        .attribute("#task-output-download", "download")
        .await
        .unwrap_or_default();
    assert_eq!(download, format!("output-{queued}.txt"));
    assert_eq!(server.output(&queued).await, content.as_bytes());
    browser
        .script(
            "document.getElementById('task-output').scrollIntoView();",
            Value::Array(vec![]),
        )
        .await;
    browser.screenshot(&shots.join("5-async-task.png")).await;

    // The task list, filtered by function and status, has both.
    browser.click("nav a[data-nav=\"tasks\"]").await;
    browser.wait_for("#task-filters").await;
    browser
        .goto(&format!(
            "{}/console/#/tasks?function={FUNCTION}&status=succeeded",
            server.url
        ))
        .await;
    browser.wait_for(&format!("a[data-task=\"{id}\"]")).await;
    browser
        .wait_for(&format!("a[data-task=\"{queued}\"]"))
        .await;
    browser.screenshot(&shots.join("6-tasks.png")).await;

    // Signing out forgets the key.
    browser.click("#sign-out").await;
    browser.wait_for("#signin-key").await;
    let kept = browser
        .script(
            "return sessionStorage.getItem('berth.key');",
            Value::Array(vec![]),
        )
        .await;
    assert_eq!(kept, Value::Null, "the key is forgotten at sign-out");
}

/// Every URL the page asked for, from the browser's network log.
async fn requested_urls(browser: &Browser) -> Vec<String> {
    browser
        .log("performance")
        .await
        .iter()
        .filter_map(|entry| serde_json::from_str::<Value>(entry["message"].as_str()?).ok())
        .filter_map(|m| {
            let m = &m["message"];
            match m["method"].as_str()? {
                "Network.requestWillBeSent" => m["params"]["request"]["url"].as_str(),
                "Network.webSocketCreated" => m["params"]["url"].as_str(),
                _ => None,
            }
            .map(str::to_owned)
        })
        .collect()
}

/// The console's files need no key and carry a strict policy; the API
/// beside them still needs one.
#[tokio::test]
async fn console_files_need_no_key_and_carry_a_strict_policy() {
    let server = Server::start().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| http.get(format!("{}{path}", server.url)).send();

    let resp = get("/console").await.unwrap();
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(resp.headers()[header::LOCATION], "/console/");

    for (path, media_type) in [
        ("/console/", "text/html; charset=utf-8"),
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let resp = get(path).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_TYPE], media_type, "{path}");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self';"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache", "{path}");
        assert!(h.contains_key(header::ETAG), "{path}");
        assert!(
            !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "{path}"
        );
    }
    assert_eq!(
        get("/console/missing.js").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let api = http
        .request(Method::GET, format!("{}/v1/functions", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    server.assert_no_panic();
}
