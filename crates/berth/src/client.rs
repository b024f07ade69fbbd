//! The user commands: thin calls through the typed client, streaming
//! where data is large (invoke and task output).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_client::reqwest::Response;
use berth_client::{Call, Client, TaskQuery};
use berth_contract::FunctionConfig;
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value, json};
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

impl Conn {
    pub(crate) fn connect(&self) -> Result<Client> {
        let dir = self
            .data_dir
            .clone()
            .unwrap_or_else(berth_server::default_data_dir);
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
        Ok(Client::new(&base, &key)?)
    }
}

pub(crate) fn print(v: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// The settings `fn deploy` can change. Only the ones named on the command
/// line are sent: redeploying with `--timeout 30` changes the timeout and
/// keeps every other setting.
#[derive(clap::Args, Debug)]
pub struct Settings {
    /// The image: NAME[:TAG] in your registry namespace, HOST:PORT/TENANT/NAME:TAG,
    /// or (admin) an image on the container engine. Needed to create a function.
    #[arg(long)]
    image: Option<String>,
    /// CPU in millicores (1000 = one core).
    #[arg(long)]
    cpu: Option<u32>,
    /// Memory limit in MiB.
    #[arg(long)]
    memory: Option<u32>,
    /// Timeout in seconds.
    #[arg(long)]
    timeout: Option<u32>,
    /// Environment variable, KEY=VALUE; repeatable. Added to the ones the
    /// function has.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Removes an environment variable; repeatable.
    #[arg(long = "unset-env", value_name = "KEY")]
    unset_env: Vec<String>,
    /// Run as root (uid 0, still without capabilities) instead of the
    /// image's non-root user or nobody.
    #[arg(long, overrides_with = "no_run_as_root")]
    run_as_root: bool,
    /// Run as the image's non-root user or nobody again.
    #[arg(long)]
    no_run_as_root: bool,
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
    /// Run the image's own ENTRYPOINT and CMD again, dropping a command set earlier.
    #[arg(long, conflicts_with = "command")]
    image_command: bool,
    /// The program and its arguments, replacing the image's ENTRYPOINT and
    /// CMD: everything after `--` (`berth fn deploy f --image i -- /bin/sh -c 'cat'`).
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

impl Settings {
    /// The named settings as a JSON merge patch.
    fn patch(&self) -> Result<Value> {
        let mut p = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                p.insert(k.to_owned(), v);
            }
        };
        put("image", self.image.as_ref().map(|i| json!(i)));
        put("cpu_millis", self.cpu.map(|v| json!(v)));
        put("memory_mb", self.memory.map(|v| json!(v)));
        put("timeout_secs", self.timeout.map(|v| json!(v)));
        put("mode", self.mode.as_ref().map(|v| json!(v)));
        put("concurrency", self.concurrency.map(|v| json!(v)));
        put("min_instances", self.min_instances.map(|v| json!(v)));
        put("max_instances", self.max_instances.map(|v| json!(v)));
        put("idle_timeout_secs", self.idle_timeout.map(|v| json!(v)));
        put("max_queue", self.max_queue.map(|v| json!(v)));
        put("queue_timeout_secs", self.queue_timeout.map(|v| json!(v)));
        if self.run_as_root {
            put("run_as_root", Some(json!(true)));
        } else if self.no_run_as_root {
            put("run_as_root", Some(json!(false)));
        }
        if !self.command.is_empty() {
            put("command", Some(json!(self.command)));
        } else if self.image_command {
            put("command", Some(Value::Null));
        }
        let mut env = Map::new();
        for kv in &self.env {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--env {kv:?} is not KEY=VALUE"))?;
            env.insert(k.to_owned(), json!(v));
        }
        for k in &self.unset_env {
            env.insert(k.clone(), Value::Null);
        }
        if !env.is_empty() {
            p.insert("env".into(), Value::Object(env));
        }
        Ok(Value::Object(p))
    }
}

#[derive(Subcommand, Debug)]
pub enum FnCommand {
    /// Create a function, or change the settings named (the others keep
    /// theirs); prints the version in force.
    Deploy {
        name: String,
        #[command(flatten)]
        settings: Settings,
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
    match cmd {
        FnCommand::Deploy { name, settings } => {
            let patch = settings.patch()?;
            match c.update(&name, &patch).await {
                Ok(d) => print(&d)?,
                Err(e) if e.code() == Some("function_not_found") => {
                    if settings.image.is_none() {
                        bail!(
                            "function {name:?} does not exist yet: --image is needed to create it"
                        );
                    }
                    // A new function: what was named, defaults for the rest.
                    let mut full = patch;
                    if let Some(env) = full.get_mut("env").and_then(Value::as_object_mut) {
                        env.retain(|_, v| !v.is_null());
                    }
                    if let Some(o) = full.as_object_mut() {
                        o.retain(|_, v| !v.is_null());
                    }
                    let config: FunctionConfig = serde_json::from_value(full)
                        .context("these settings do not make a function")?;
                    print(&c.deploy(&name, &config).await?)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        FnCommand::List => print(&c.functions().await?)?,
        FnCommand::Get { name } => print(&c.function(&name).await?)?,
        FnCommand::Delete { name } => {
            c.delete_function(&name).await?;
            print(&json!({ "deleted": name }))?;
        }
    }
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
    let call = Call {
        body: berth_client::reqwest::Body::wrap_stream(stdin),
        content_type: args.content_type.clone(),
        headers: Vec::new(),
    };
    let query = args.query.as_deref();
    if args.asynchronous {
        let task = c.submit(&args.name, query, call).await?;
        upload.finish_and_clear();
        println!("{}", task.id);
        return Ok(0);
    }
    let resp = c.invoke(&args.name, query, call).await?;
    upload.finish_and_clear();
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
        TaskCommand::Get { id } => print(&c.task(&id).await?)?,
        TaskCommand::Wait { id, timeout } => {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            let mut pause = Duration::from_millis(100);
            loop {
                let t = c.task(&id).await?;
                if t.status.is_terminal() {
                    print(&t)?;
                    return Ok(if t.status == berth_contract::TaskStatus::Succeeded {
                        0
                    } else {
                        1
                    });
                }
                if tokio::time::Instant::now() >= deadline {
                    bail!("task {id} still {} after {timeout}s", t.status);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
        TaskCommand::Output { id } => copy_to_stdout(c.output(&id).await?).await?,
        TaskCommand::Logs { id } => copy_to_stdout(c.logs(&id).await?).await?,
        TaskCommand::Cancel { id } => print(&c.cancel(&id).await?)?,
        TaskCommand::List {
            function,
            status,
            limit,
            cursor,
        } => {
            let q = TaskQuery {
                function,
                status,
                limit,
                cursor,
            };
            print(&c.tasks(&q).await?)?;
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
    let host = registry_host(c.base())?;
    let mut child = tokio::process::Command::new("docker")
        .args(["login", &host, "-u", &args.username, "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running docker (is the Docker CLI installed?)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(c.key().as_bytes()).await?;
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
