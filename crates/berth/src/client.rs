//! The user commands: thin HTTP calls to a server, streaming where data is
//! large (invoke and task output).

use std::io::IsTerminal;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

/// How to reach the server: flags, then environment, then what a local
/// `berth server` left in its data directory.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Server URL [default: the endpoint a local server wrote, else http://127.0.0.1:8080]
    #[arg(long, env = "BERTH_URL", global = true)]
    server: Option<String>,
    /// API key [default: the admin key a local server wrote]
    #[arg(long, env = "BERTH_API_KEY", global = true, hide_env_values = true)]
    key: Option<String>,
    /// Data directory of a local server, to find its endpoint and admin key.
    #[arg(long, env = "BERTH_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Conn {
    pub(crate) fn connect(&self) -> Result<Client> {
        let dir = self
            .data_dir
            .clone()
            .unwrap_or_else(crate::default_data_dir);
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let base = self
            .server
            .clone()
            .or_else(|| read("endpoint"))
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let key = self
            .key
            .clone()
            .or_else(|| read("admin.key"))
            .with_context(|| {
                format!(
                    "no API key: pass --key, set BERTH_API_KEY, or run where {} holds admin.key",
                    dir.display()
                )
            })?;
        Ok(Client {
            http: reqwest::Client::builder().build()?,
            base: base.trim_end_matches('/').to_owned(),
            key,
        })
    }
}

impl Client {
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    pub(crate) async fn json(&self, req: RequestBuilder) -> Result<Value> {
        let resp = req.send().await.context("cannot reach the server")?;
        let resp = check(resp).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        Ok(resp.json().await?)
    }
}

/// Turns an error response into an error carrying the server's message.
async fn check(resp: Response) -> Result<Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            Some(format!(
                "{} ({})",
                e.get("message")?.as_str()?,
                e.get("code")?.as_str()?
            ))
        })
        .unwrap_or(body);
    bail!("{status}: {msg}")
}

pub(crate) fn print(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// How a function's instances run and scale; unset fields keep the
/// server's defaults.
#[derive(clap::Args, Debug)]
pub struct Scaling {
    /// exec (warm, a process per request), http (warm, a long-lived HTTP
    /// server on $PORT) or fresh (a container per request).
    #[arg(long, value_parser = ["exec", "http", "fresh"])]
    mode: Option<String>,
    /// Requests one instance serves at once.
    #[arg(long)]
    concurrency: Option<u32>,
    /// Instances kept warm when idle.
    #[arg(long)]
    min_instances: Option<u32>,
    #[arg(long)]
    max_instances: Option<u32>,
    /// Seconds an idle instance is kept.
    #[arg(long)]
    idle_timeout: Option<u32>,
    /// Requests that may wait when every instance is busy.
    #[arg(long)]
    max_queue: Option<u32>,
    /// Seconds a request may wait in that queue.
    #[arg(long)]
    queue_timeout: Option<u32>,
}

impl Scaling {
    fn apply(&self, body: &mut serde_json::Value) {
        let fields = [
            ("concurrency", self.concurrency),
            ("min_instances", self.min_instances),
            ("max_instances", self.max_instances),
            ("idle_timeout_secs", self.idle_timeout),
            ("max_queue", self.max_queue),
            ("queue_timeout_secs", self.queue_timeout),
        ];
        for (key, value) in fields {
            if let Some(v) = value {
                body[key] = json!(v);
            }
        }
        if let Some(mode) = &self.mode {
            body["mode"] = json!(mode);
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum FnCommand {
    /// Create or update a function; prints the version in force.
    Deploy {
        name: String,
        #[arg(long)]
        image: String,
        /// CPU in millicores (1000 = one core).
        #[arg(long)]
        cpu: Option<u32>,
        /// Memory limit in MiB.
        #[arg(long)]
        memory: Option<u32>,
        /// Timeout in seconds.
        #[arg(long)]
        timeout: Option<u32>,
        /// Environment variable, KEY=VALUE; repeatable.
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Program and arguments replacing the image's entrypoint and command.
        #[arg(long, num_args = 1.., allow_hyphen_values = true)]
        command: Option<Vec<String>>,
        /// Run as root (uid 0, still without capabilities) instead of the
        /// image's non-root user or nobody.
        #[arg(long)]
        run_as_root: bool,
        #[command(flatten)]
        scaling: Scaling,
    },
    List,
    Get {
        name: String,
    },
    Delete {
        name: String,
    },
}

pub async fn function(conn: Conn, cmd: FnCommand) -> Result<u8> {
    let c = conn.connect()?;
    let v = match cmd {
        FnCommand::Deploy {
            name,
            image,
            cpu,
            memory,
            timeout,
            env,
            command,
            run_as_root,
            scaling,
        } => {
            let mut body = json!({ "image": image });
            if run_as_root {
                body["run_as_root"] = json!(true);
            }
            scaling.apply(&mut body);
            if let Some(cpu) = cpu {
                body["cpu_millis"] = json!(cpu);
            }
            if let Some(m) = memory {
                body["memory_mb"] = json!(m);
            }
            if let Some(t) = timeout {
                body["timeout_secs"] = json!(t);
            }
            if let Some(cmd) = command {
                body["command"] = json!(cmd);
            }
            let mut envs = serde_json::Map::new();
            for kv in env {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--env {kv:?} is not KEY=VALUE"))?;
                envs.insert(k.to_owned(), json!(v));
            }
            body["env"] = Value::Object(envs);
            c.json(
                c.request(Method::PUT, &format!("/v1/functions/{name}"))
                    .json(&body),
            )
            .await?
        }
        FnCommand::List => c.json(c.request(Method::GET, "/v1/functions")).await?,
        FnCommand::Get { name } => {
            c.json(c.request(Method::GET, &format!("/v1/functions/{name}")))
                .await?
        }
        FnCommand::Delete { name } => {
            c.json(c.request(Method::DELETE, &format!("/v1/functions/{name}")))
                .await?;
            json!({ "deleted": name })
        }
    };
    print(&v)?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct InvokeArgs {
    name: String,
    /// Query string handed to the function as QUERY_STRING (e.g. op=thumbnail&w=128).
    #[arg(long, short)]
    query: Option<String>,
    /// Content-Type of the input.
    #[arg(long)]
    content_type: Option<String>,
    /// Submit as an async task and print its id instead of waiting.
    #[arg(long = "async")]
    asynchronous: bool,
}

pub async fn invoke(conn: Conn, args: InvokeArgs) -> Result<u8> {
    let c = conn.connect()?;
    let endpoint = if args.asynchronous { "tasks" } else { "invoke" };
    let mut path = format!("/v1/functions/{}/{endpoint}", args.name);
    if let Some(q) = &args.query {
        path.push('?');
        path.push_str(q.trim_start_matches('?'));
    }
    // stdin is streamed, never read whole: inputs may be larger than memory.
    let upload = progress_bar(stdin_len(), "sent");
    let stdin = {
        let upload = upload.clone();
        ReaderStream::with_capacity(tokio::io::stdin(), 256 * 1024).inspect(move |chunk| {
            if let Ok(c) = chunk {
                upload.inc(c.len() as u64);
            }
        })
    };
    let mut req = c
        .request(Method::POST, &path)
        .body(reqwest::Body::wrap_stream(stdin));
    if let Some(ct) = &args.content_type {
        req = req.header(reqwest::header::CONTENT_TYPE, ct);
    }
    let resp = check(req.send().await.context("cannot reach the server")?).await?;
    upload.finish_and_clear();
    if args.asynchronous {
        let v: Value = resp.json().await?;
        println!("{}", v["id"].as_str().unwrap_or_default());
        return Ok(0);
    }
    copy_to_stdout(resp).await?;
    Ok(0)
}

async fn copy_to_stdout(resp: Response) -> Result<()> {
    let bar = progress_bar(resp.content_length(), "received");
    let mut out = tokio::io::stdout();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the response was cut off (the function failed mid-stream?)")?;
        bar.inc(chunk.len() as u64);
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    bar.finish_and_clear();
    Ok(())
}

/// The size of stdin when it is a regular file (`< photo.jpg`).
fn stdin_len() -> Option<u64> {
    let meta = std::fs::metadata("/dev/stdin").ok()?;
    meta.is_file().then_some(meta.len())
}

/// A byte counter on stderr for transfers large enough to wait for. It
/// draws only when stderr is a terminal, so pipes and scripts see nothing.
fn progress_bar(len: Option<u64>, what: &'static str) -> indicatif::ProgressBar {
    const WORTH_SHOWING: u64 = 8 * 1024 * 1024;
    let target = if std::io::stderr().is_terminal() && len.is_none_or(|n| n >= WORTH_SHOWING) {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    let bar = indicatif::ProgressBar::with_draw_target(len, target);
    let style = match len {
        Some(_) => "{bytes}/{total_bytes} {msg} [{bar:30}] {bytes_per_sec}, {eta} left",
        None => "{bytes} {msg} {bytes_per_sec}",
    };
    if let Ok(s) = indicatif::ProgressStyle::with_template(style) {
        bar.set_style(s.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Show a task's status, timing and usage.
    Get { id: String },
    /// Wait until a task finishes, then print it; exits non-zero unless it succeeded.
    Wait {
        id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Write a finished task's output to stdout.
    Output { id: String },
    /// Write a finished task's logs (stderr) to stdout.
    Logs { id: String },
    /// Cancel a queued or running task.
    Cancel { id: String },
    /// List tasks, newest first.
    List {
        #[arg(long)]
        function: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
}

pub async fn task(conn: Conn, cmd: TaskCommand) -> Result<u8> {
    let c = conn.connect()?;
    match cmd {
        TaskCommand::Get { id } => {
            print(
                &c.json(c.request(Method::GET, &format!("/v1/tasks/{id}")))
                    .await?,
            )?;
        }
        TaskCommand::Wait { id, timeout } => {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            let mut pause = Duration::from_millis(100);
            loop {
                let v = c
                    .json(c.request(Method::GET, &format!("/v1/tasks/{id}")))
                    .await?;
                let status = v["status"].as_str().unwrap_or_default().to_owned();
                if !matches!(status.as_str(), "queued" | "running") {
                    print(&v)?;
                    return Ok(if status == "succeeded" { 0 } else { 1 });
                }
                if tokio::time::Instant::now() >= deadline {
                    bail!("task {id} still {status} after {timeout}s");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
        TaskCommand::Output { id } => {
            let resp = c
                .request(Method::GET, &format!("/v1/tasks/{id}/output"))
                .send()
                .await?;
            copy_to_stdout(check(resp).await?).await?;
        }
        TaskCommand::Logs { id } => {
            let resp = c
                .request(Method::GET, &format!("/v1/tasks/{id}/logs"))
                .send()
                .await?;
            copy_to_stdout(check(resp).await?).await?;
        }
        TaskCommand::Cancel { id } => {
            print(
                &c.json(c.request(Method::DELETE, &format!("/v1/tasks/{id}")))
                    .await?,
            )?;
        }
        TaskCommand::List {
            function,
            status,
            limit,
            cursor,
        } => {
            let mut q: Vec<(&str, String)> = Vec::new();
            if let Some(f) = function {
                q.push(("function", f));
            }
            if let Some(s) = status {
                q.push(("status", s));
            }
            if let Some(l) = limit {
                q.push(("limit", l.to_string()));
            }
            if let Some(cur) = cursor {
                q.push(("cursor", cur));
            }
            print(
                &c.json(c.request(Method::GET, "/v1/tasks").query(&q))
                    .await?,
            )?;
        }
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The tenant the key belongs to (the registry login name).
    #[arg(long, short = 'u', default_value = berth_core::ADMIN_TENANT)]
    username: String,
}

/// Runs `docker login HOST:PORT` with the key on stdin, so the key never
/// shows in a process listing and Docker stores it the way it stores any
/// registry credential.
pub async fn login(conn: Conn, args: LoginArgs) -> Result<u8> {
    let c = conn.connect()?;
    let host = registry_host(&c.base)?;
    let mut child = tokio::process::Command::new("docker")
        .args(["login", &host, "-u", &args.username, "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running docker (is the Docker CLI installed?)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(c.key.as_bytes()).await?;
        stdin.shutdown().await?;
    }
    let status = child.wait().await?;
    if !status.success() {
        bail!("docker login {host} failed ({status})");
    }
    Ok(0)
}

/// `host:port` of a server URL, as Docker names registries.
fn registry_host(base: &str) -> Result<String> {
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))
        .unwrap_or(base);
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        bail!("cannot tell the registry host from {base:?}");
    }
    Ok(host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::registry_host;

    #[test]
    fn registry_hosts() {
        assert_eq!(
            registry_host("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            registry_host("https://berth.example:443/base").unwrap(),
            "berth.example:443"
        );
        assert!(registry_host("http://").is_err());
    }
}
