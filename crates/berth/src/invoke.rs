//! `berth invoke`: stdin is the request body, the function's output goes
//! to stdout, both streamed.

use anyhow::{Context as _, Result, bail};
use berth_client::Call;
use berth_client::reqwest::{Method, Response, StatusCode};
use berth_contract::Task;
use clap::Args;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::conn::Global;
use crate::progress;
use crate::units::{fmt_secs, parse_secs};

#[derive(Args, Debug)]
pub struct InvokeArgs {
    /// The function's name.
    name: String,
    /// Query string handed to the function as QUERY_STRING (e.g. op=thumbnail&w=128).
    #[arg(long, short)]
    query: Option<String>,
    /// The request path the function sees, e.g. /resize/small (PATH_INFO;
    /// the path an http-mode function's server is asked for).
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// The request method the function sees [default: POST].
    #[arg(short = 'X', long = "method", value_name = "METHOD")]
    method: Option<String>,
    /// A request header, "Name: value"; repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Content-Type of the input.
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
    /// Submit as an async task and print its id instead of waiting.
    #[arg(long = "async")]
    asynchronous: bool,
    /// Submit as a task and wait up to this long (30s, 2m; at most 5m) for
    /// its output; one still running then is left running and its id
    /// printed, as with --async.
    #[arg(
        long,
        value_parser = parse_secs,
        value_name = "DURATION",
        conflicts_with = "asynchronous"
    )]
    wait: Option<u64>,
    /// With --async or --wait: a repeat of the same request with the same
    /// key returns the first task instead of running another.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
}

impl InvokeArgs {
    fn is_task(&self) -> bool {
        self.asynchronous || self.wait.is_some()
    }

    /// The request as the client sends it; stdin is its body, streamed.
    fn call(&self, body: berth_client::reqwest::Body) -> Result<Call> {
        let mut call = Call {
            body,
            content_type: self.content_type.clone(),
            path: self.path.clone(),
            ..Default::default()
        };
        if let Some(m) = &self.method {
            let m = Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| anyhow::anyhow!("-X {m:?} is not an HTTP method"))?;
            call.method = Some(m);
        }
        for h in &self.headers {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("-H {h:?} is not \"Name: value\""))?;
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("authorization") {
                bail!("-H: the Authorization header carries your key; use --key");
            }
            if name.eq_ignore_ascii_case("content-type") {
                call.content_type = Some(value.to_owned());
            } else {
                call.headers.push((name.to_owned(), value.to_owned()));
            }
        }
        if let Some(secs) = self.wait {
            call.headers.push(("Prefer".into(), format!("wait={secs}")));
        }
        if let Some(k) = &self.idempotency_key {
            call.headers.push(("Idempotency-Key".into(), k.clone()));
        }
        Ok(call)
    }

    fn check(&self) -> Result<()> {
        if self.idempotency_key.is_some() && !self.is_task() {
            bail!("--idempotency-key applies to tasks: add --async or --wait DURATION");
        }
        if self.is_task() {
            if self.path.is_some() {
                bail!("--path applies to sync calls, not to tasks (--async, --wait)");
            }
            if self.method.is_some() {
                bail!("-X applies to sync calls; a task is always submitted with POST");
            }
        }
        Ok(())
    }
}

pub async fn command(g: &Global, args: InvokeArgs) -> Result<u8> {
    args.check()?;
    let c = g.connect()?;
    // stdin is streamed, never read whole: inputs may be larger than memory.
    let upload = progress::bytes(stdin_len(), "sent");
    let stdin = {
        let upload = upload.clone();
        ReaderStream::with_capacity(tokio::io::stdin(), 256 * 1024).inspect(move |chunk| {
            if let Ok(c) = chunk {
                upload.inc(c.len() as u64);
            }
        })
    };
    let call = args.call(berth_client::reqwest::Body::wrap_stream(stdin))?;
    let query = args.query.as_deref();
    if args.asynchronous {
        let task = c.submit(&args.name, query, call).await?;
        upload.finish_and_clear();
        println!("{}", task.id);
        return Ok(0);
    }
    if let Some(secs) = args.wait {
        let resp = c.submit_raw(&args.name, query, call).await?;
        upload.finish_and_clear();
        return waited(resp, secs).await;
    }
    let resp = c.invoke(&args.name, query, call).await;
    upload.finish_and_clear();
    let resp = resp.map_err(|e| match (e.code(), &args.method) {
        // A server from before functions took any method.
        (Some("method_not_allowed"), Some(m)) => anyhow::anyhow!(
            "{e}\nthis server takes calls to functions only as POST: it cannot pass -X {m} on"
        ),
        _ => e.into(),
    })?;
    copy_to_stdout(resp).await?;
    Ok(0)
}

/// The answer to a submission that waited: the output if the task ended
/// in time, else its id.
async fn waited(resp: Response, secs: u64) -> Result<u8> {
    if resp.status() != StatusCode::ACCEPTED {
        copy_to_stdout(resp).await?;
        return Ok(0);
    }
    let task: Task = resp.json().await.context("reading the task")?;
    eprintln!(
        "berth: task {id} is still {status} after {waited}; it goes on.\n\
         berth: follow its output with `berth task output -f {id}`, its logs with `berth logs -f {id}`",
        id = task.id,
        status = task.status,
        waited = fmt_secs(secs),
    );
    println!("{}", task.id);
    Ok(0)
}

/// Streams an answer's body to stdout. A body cut off mid-way (the
/// function failed after its output began) is an error naming the task.
pub async fn copy_to_stdout(resp: Response) -> Result<()> {
    let task = resp
        .headers()
        .get("x-berth-task-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bar = progress::bytes(resp.content_length(), "received");
    let mut out = tokio::io::stdout();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            let hint = match &task {
                Some(id) => format!("; task {id}, its logs: berth logs {id}"),
                None => String::new(),
            };
            anyhow::anyhow!("the answer was cut off ({e}): the function failed mid-stream{hint}")
        })?;
        bar.inc(chunk.len() as u64);
        out.write_all(&chunk).await?;
        out.flush().await?;
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
