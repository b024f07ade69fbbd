//! Starts, kills and restarts a real `berth server` in its own data
//! directory, and gives tests a client that speaks the v1 contract: the
//! typed helpers answer with `berth_contract`'s types (through
//! `berth_client`), while `req` and `req_as` send raw requests for tests
//! of the wire itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_client::{Client, TaskQuery};
use berth_contract::{
    CreateTenant, CreatedTenant, Deployed, ErrorBody, ErrorObject, Function, FunctionConfig,
    FunctionList, QuotaOverrides, Task, TaskList, TaskStatus,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub const BUSYBOX: &str = "berth-test/busybox:latest";
pub const IMAGE_OPS: &str = "berth-example/image-ops:latest";
pub const ECHO_HTTP: &str = "berth-test/echo-http:latest";

/// The statically linked agent built by `scripts/build-agent.sh`; warm
/// instances bind-mount it into images that have no libc.
pub fn agent_path() -> PathBuf {
    if let Ok(p) = std::env::var("BERTH_TEST_AGENT") {
        return PathBuf::from(p);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/x86_64-unknown-linux-gnu/release/berth-agent");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-agent.sh first",
        path.display()
    );
    path
}

/// Liveness bound for anything a test waits on. Not a performance claim:
/// only there so a broken build fails instead of hanging CI.
pub const PATIENCE: Duration = Duration::from_secs(120);

pub struct Server {
    /// Holds the server's log, and is its data directory unless the
    /// arguments name another.
    dir: tempfile::TempDir,
    data: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub url: String,
    pub key: String,
    http: reqwest::Client,
    /// Rebuilt at every start: a restarted server listens on a new port.
    client: Option<Client>,
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(args: &[&str]) -> Self {
        Self::start_with_env(args, &[]).await
    }

    /// With extra environment, e.g. `DOCKER_HOST` for a private engine.
    /// A `--data-dir DIR` among `args` replaces the test's own data
    /// directory (the log stays outside it).
    pub async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let data = match args.iter().position(|a| a == "--data-dir") {
            Some(i) => {
                let named: Vec<String> = args.drain(i..i + 2).collect();
                PathBuf::from(named.get(1).expect("--data-dir takes a directory"))
            }
            None => dir.path().to_owned(),
        };
        let mut server = Self {
            dir,
            data,
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            url: String::new(),
            key: String::new(),
            http: reqwest::Client::new(),
            client: None,
        };
        server.spawn().await;
        server
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    async fn spawn(&mut self) {
        let endpoint = self.data.join("endpoint");
        let _ = std::fs::remove_file(&endpoint);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("server log");
        // A test may name the address (a set whose executors live in
        // network namespaces reaches it on theirs).
        let listen: &[&str] = if self.args.iter().any(|a| a == "--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("server")
            .arg("--data-dir")
            .arg(&self.data)
            .args(listen)
            .args(&self.args)
            .env_remove("BERTH_ADMIN_KEY")
            .env("BERTH_AGENT", agent_path())
            .env("BERTH_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn berth server");
        self.child = Some(child);
        let begun = Instant::now();
        loop {
            if let Ok(url) = std::fs::read_to_string(&endpoint) {
                self.url = url.trim().to_owned();
                if self
                    .http
                    .get(format!("{}/healthz", self.url))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    break;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("server exited with {status}:\n{}", self.log());
            }
            assert!(
                begun.elapsed() < PATIENCE,
                "server did not come up:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Replicas of a set share the admin key they are given; a lone
        // server writes the one it made.
        self.key = match self.env.iter().find(|(k, _)| k == "BERTH_ADMIN_KEY") {
            Some((_, key)) => key.clone(),
            None => std::fs::read_to_string(self.data.join("admin.key"))
                .expect("admin.key written by the server")
                .trim()
                .to_owned(),
        };
        self.client = Some(Client::new(&self.url, &self.key).expect("client"));
    }

    /// SIGKILL: no chance to clean up, like a power cut of the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit on its own.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        let begun = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                begun.elapsed() < PATIENCE,
                "server ignored SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// The server's process id, for signals (SIGSTOP, SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{name}");
    }

    pub fn node_id(&self) -> String {
        std::fs::read_to_string(self.data.join("node-id"))
            .expect("node-id")
            .trim()
            .to_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Peak resident memory of the server process so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib_of(self.child.as_ref().expect("running").id())
    }

    pub fn assert_no_panic(&self) {
        let log = self.log();
        assert!(!log.contains("panicked"), "server panicked:\n{log}");
        let exited = self.child.as_ref().map(|c| {
            Command::new("kill")
                .arg("-0")
                .arg(c.id().to_string())
                .status()
        });
        assert!(
            matches!(exited, Some(Ok(s)) if s.success()),
            "server process is gone:\n{log}"
        );
    }

    /// The typed client of the v1 contract, holding the admin key.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("server running")
    }

    /// A typed client holding another tenant's key.
    pub fn client_as(&self, key: &str) -> Client {
        Client::new(&self.url, key).expect("client")
    }

    /// A raw request, for tests of the wire itself: exact members, status
    /// codes and headers, malformed input.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.key)
    }

    /// A raw request made with another tenant's key.
    pub fn req_as(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(key)
    }

    /// Sends a request that must be answered with `status` and a body of
    /// type `T`.
    async fn expect<T: DeserializeOwned>(
        &self,
        req: RequestBuilder,
        status: StatusCode,
        what: &str,
    ) -> T {
        let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let got = resp.status();
        let body = resp.bytes().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(got, status, "{what}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{what}: {e}: {}", String::from_utf8_lossy(&body)))
    }

    /// A request to `/{segments...}`, each escaped, with the admin key.
    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.client()
            .request(method, segments)
            .unwrap_or_else(|e| panic!("{segments:?}: {e}"))
    }

    /// Creates a tenant (as the admin) and returns its API key.
    pub async fn create_tenant(&self, name: &str, quotas: QuotaOverrides) -> String {
        let body = CreateTenant {
            name: name.to_owned(),
            quotas,
        };
        let created: CreatedTenant = self
            .expect(
                self.request(Method::POST, &["v1", "tenants"]).json(&body),
                StatusCode::CREATED,
                &format!("create tenant {name}"),
            )
            .await;
        created.api_key
    }

    pub async fn deploy(&self, name: &str, config: &FunctionConfig) -> Deployed {
        ok(
            &format!("deploy {name}"),
            self.client().deploy(name, config).await,
        )
    }

    pub async fn function(&self, name: &str) -> Function {
        ok(
            &format!("function {name}"),
            self.client().function(name).await,
        )
    }

    pub async fn functions(&self) -> FunctionList {
        ok("functions", self.client().functions().await)
    }

    /// A sync call, answered as it is: its status, headers and body, which
    /// is the function's output or an error.
    pub async fn invoke(
        &self,
        name: &str,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        let url = self
            .client()
            .url(&["v1", "functions", name, "invoke"], Some(query))
            .expect("invoke URL");
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.key)
            .body(body)
            .send()
            .await
            .expect("invoke");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("invoke body").to_vec();
        (status, headers, bytes)
    }

    /// Submits an async task, which must be accepted (202).
    pub async fn submit(&self, name: &str, body: impl Into<reqwest::Body>) -> Task {
        let req = self
            .request(Method::POST, &["v1", "functions", name, "tasks"])
            .body(body);
        self.expect(req, StatusCode::ACCEPTED, &format!("submit to {name}"))
            .await
    }

    pub async fn task(&self, id: &str) -> Task {
        ok(&format!("task {id}"), self.client().task(id).await)
    }

    pub async fn tasks(&self, query: &TaskQuery) -> TaskList {
        ok(
            &format!("tasks {query:?}"),
            self.client().tasks(query).await,
        )
    }

    /// Cancels a task, which must be answered 200 with the task.
    pub async fn cancel(&self, id: &str) -> Task {
        let req = self.request(Method::DELETE, &["v1", "tasks", id]);
        self.expect(req, StatusCode::OK, &format!("cancel {id}"))
            .await
    }

    /// Waits until the task is neither queued nor running.
    pub async fn wait(&self, id: &str) -> Task {
        let begun = Instant::now();
        loop {
            let t = self.task(id).await;
            if t.status.is_terminal() {
                return t;
            }
            assert!(
                begun.elapsed() < PATIENCE,
                "task {id} never finished: {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_status(&self, id: &str, status: TaskStatus) -> Task {
        let begun = Instant::now();
        loop {
            let t = self.task(id).await;
            if t.status == status {
                return t;
            }
            assert!(
                begun.elapsed() < PATIENCE,
                "task {id} never became {}: {t:?}",
                status.as_str()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A finished task's stdout, which must be there (200).
    pub async fn output(&self, id: &str) -> Vec<u8> {
        let resp = self
            .request(Method::GET, &["v1", "tasks", id, "output"])
            .send()
            .await
            .expect("output");
        assert_eq!(resp.status(), StatusCode::OK, "output of {id}");
        resp.bytes().await.expect("output body").to_vec()
    }

    /// A finished task's stderr, which must be there (200).
    pub async fn logs(&self, id: &str) -> String {
        let resp = self
            .request(Method::GET, &["v1", "tasks", id, "logs"])
            .send()
            .await
            .expect("logs");
        assert_eq!(resp.status(), StatusCode::OK, "logs of {id}");
        resp.text().await.expect("logs body")
    }
}

/// Unwraps a typed call's answer, or fails the test with the server's
/// error.
fn ok<T>(what: &str, r: berth_client::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// A function of `image` with every other setting at its default.
pub fn image(image: &str) -> FunctionConfig {
    serde_json::from_value(serde_json::json!({ "image": image })).expect("a function config")
}

/// A busybox function running `script` under `sh -c`.
pub fn sh(script: &str) -> FunctionConfig {
    FunctionConfig {
        command: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
        ..image(BUSYBOX)
    }
}

/// The task a call made, from its answer's `x-berth-task-id`.
pub fn task_id(headers: &reqwest::header::HeaderMap) -> String {
    headers["x-berth-task-id"]
        .to_str()
        .expect("task id")
        .to_owned()
}

/// An error answer's body, as the contract says every error reads.
pub fn api_error(body: &[u8]) -> ErrorObject {
    let e: ErrorBody = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not an error body ({e}): {}", String::from_utf8_lossy(body)));
    e.error
}

impl Drop for Server {
    fn drop(&mut self) {
        let node = std::fs::read_to_string(self.data.join("node-id")).ok();
        self.kill();
        // Containers of a killed server would be reaped at its next start,
        // which never comes for a test's server.
        if let Some(node) = node {
            for id in containers(&format!("dev.berth.node={}", node.trim())) {
                let _ = Command::new("docker").args(["rm", "-f", &id]).output();
            }
        }
    }
}

/// Ids of all containers (running or not) carrying a label.
pub fn containers(label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label={label}"),
        ])
        .output()
        .expect("docker ps");
    assert!(
        out.status.success(),
        "docker ps failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn docker_inspect(id: &str) -> Option<Value> {
    let out = Command::new("docker")
        .args(["inspect", id])
        .output()
        .expect("docker inspect");
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(0).cloned()
}

/// Waits until some container carries the label and returns them all. A
/// task is `running` from its claim; its container follows shortly.
pub async fn wait_for_containers(label: &str) -> Vec<String> {
    let begun = Instant::now();
    loop {
        let found = containers(label);
        if !found.is_empty() {
            return found;
        }
        assert!(
            begun.elapsed() < PATIENCE,
            "no container ever carried {label}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no container carries the label; containers are removed
/// before a task's result is recorded, so this normally returns at once.
pub async fn assert_no_containers(label: &str) {
    let begun = Instant::now();
    loop {
        let left = containers(label);
        if left.is_empty() {
            return;
        }
        assert!(
            begun.elapsed() < PATIENCE,
            "containers left behind for {label}: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// Writes `size` bytes of incompressible, reproducible filler (xorshift)
/// to `path`, 1 MB at a time; returns their SHA-256.
pub fn write_filler(path: &Path, size: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    let mut expected = Sha256::new();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1_000_000];
    let mut left = size;
    while left > 0 {
        for b in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        let n = left.min(block.len());
        expected.update(&block[..n]);
        f.write_all(&block[..n]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
    expected.finalize().to_vec()
}

/// POSTs the file at `input` to `url` with the real curl, streaming; the
/// answer's SHA-256 and length, hashed as it arrives (never held whole).
pub async fn post_hashed(url: &str, key: &str, input: &Path) -> (Vec<u8>, usize) {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut curl = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", "POST", "--data-binary"])
        .arg(format!("@{}", input.display()))
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args(["-H", "Content-Type: application/octet-stream"])
        .arg(url)
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut out = curl.stdout.take().unwrap();
    let hashed = tokio::task::spawn_blocking(move || {
        let mut h = Sha256::new();
        let mut n = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let k = out.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            n += k;
            h.update(&buf[..k]);
        }
        (h.finalize().to_vec(), n)
    })
    .await
    .unwrap();
    assert!(curl.wait().unwrap().success(), "curl failed");
    hashed
}

/// Peak resident memory of a process so far, in KiB.
pub fn peak_rss_kib_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}
