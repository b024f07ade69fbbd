//! `berth task` and `berth logs`: inspect, wait for, follow and cancel
//! tasks.

use std::time::Duration;

use anyhow::{Result, bail};
use berth_client::reqwest::Response;
use berth_client::{Client, ClientError, TaskQuery};
use berth_contract::{Task, TaskStatus};
use clap::{Args, Subcommand};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::conn::Global;
use crate::invoke::copy_to_stdout;
use crate::output::{Detail, NONE, Table, age};
use crate::progress;
use crate::units::{fmt_bytes, fmt_ms, fmt_secs, parse_secs};

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Show a task's status, timing and usage.
    Get {
        /// The task's id.
        id: String,
    },
    /// Wait until a task finishes, then show it; exits non-zero unless it
    /// succeeded.
    Wait {
        /// The task's id.
        id: String,
        /// Give up after this long: 90s, 10m, 1h, or a number of seconds.
        #[arg(long, default_value = "1h", value_parser = parse_secs, value_name = "DURATION")]
        timeout: u64,
    },
    /// Write a task's output (stdout) to stdout.
    Output(Payload),
    /// Write a task's logs (stderr) to stdout.
    Logs(Payload),
    /// Cancel a queued or running task.
    Cancel {
        /// The task's id.
        id: String,
    },
    /// List tasks, newest first.
    List {
        /// Only this function's tasks.
        #[arg(long, value_name = "NAME")]
        function: Option<String>,
        /// Only tasks in this status: queued, running, succeeded, failed,
        /// timed_out or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Tasks per page, 1 to 1000 [default: 100].
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Where the previous page ended (printed under it).
        #[arg(long)]
        cursor: Option<String>,
    },
}

/// Which task's output or logs, and whether to follow it.
#[derive(Args, Debug)]
pub struct Payload {
    /// The task's id.
    id: String,
    /// Follow a queued or running task: stream as it is written until the
    /// task ends.
    #[arg(short, long)]
    follow: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Output,
    Logs,
}

pub async fn command(g: &Global, cmd: TaskCommand) -> Result<u8> {
    let c = g.connect()?;
    let out = g.output;
    match cmd {
        TaskCommand::Get { id } => out.print(&c.task(&id).await?, |t| task_detail(t).render())?,
        TaskCommand::Wait { id, timeout } => {
            let t = wait(&c, &id, timeout).await?;
            out.print(&t, |t| task_detail(t).render())?;
            return Ok(if t.status == TaskStatus::Succeeded {
                0
            } else {
                1
            });
        }
        TaskCommand::Output(p) => return payload(&c, p, Kind::Output).await,
        TaskCommand::Logs(p) => return payload(&c, p, Kind::Logs).await,
        TaskCommand::Cancel { id } => {
            let t = c.cancel(&id).await?;
            out.print(&t, |t| format!("task {} {}", t.id, t.status))?;
        }
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
            let list = c.tasks(&q).await?;
            out.print(&list, |l| {
                let mut t = Table::new(&[
                    "ID", "FUNCTION", "VERSION", "KIND", "STATUS", "CREATED", "WALL", "ERROR",
                ]);
                for task in &l.tasks {
                    t.row(vec![
                        task.id.clone(),
                        task.function.clone(),
                        task.version.to_string(),
                        task.kind.as_str().into(),
                        task.status.to_string(),
                        age(&task.created_at),
                        task.usage.wall_ms.map_or(NONE.into(), fmt_ms),
                        task.error
                            .as_ref()
                            .map_or(NONE.into(), |e| e.code.to_string()),
                    ]);
                }
                let mut s = t.render();
                if let Some(next) = &l.next_cursor {
                    s.push_str(&format!("(more: --cursor {next})\n"));
                }
                s
            })?;
        }
    }
    Ok(0)
}

/// `berth logs TASK [-f]`, the short form of `berth task logs`.
pub async fn logs(g: &Global, p: Payload) -> Result<u8> {
    payload(&g.connect()?, p, Kind::Logs).await
}

/// Polls until the task ends, with a spinner on a terminal.
async fn wait(c: &Client, id: &str, timeout: u64) -> Result<Task> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let mut pause = Duration::from_millis(100);
    let bar = progress::spinner(format!("task {id}"));
    loop {
        let t = c.task(id).await?;
        if t.status.is_terminal() {
            bar.finish_and_clear();
            return Ok(t);
        }
        bar.set_message(format!("task {id} {}", t.status));
        if tokio::time::Instant::now() >= deadline {
            bar.finish_and_clear();
            bail!("task {id} still {} after {}", t.status, fmt_secs(timeout));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn payload(c: &Client, p: Payload, kind: Kind) -> Result<u8> {
    let id = &p.id;
    if !p.follow {
        let resp = match kind {
            Kind::Output => c.output(id).await,
            Kind::Logs => c.logs(id).await,
        };
        let resp = resp.map_err(|e| not_finished_hint(e, id, kind))?;
        copy_to_stdout(resp).await?;
        return Ok(0);
    }
    let resp = match kind {
        Kind::Output => c.follow_output(id).await?,
        Kind::Logs => c.follow_logs(id).await?,
    };
    let streamed = stream(resp).await;
    let t = c.task(id).await?;
    let ended_well = t.status == TaskStatus::Succeeded || kind == Kind::Logs;
    if let (Ok(()), true) = (&streamed, ended_well) {
        return Ok(0);
    }
    let why = t
        .error
        .as_ref()
        .map(|e| format!(": {} ({})", e.message, e.code))
        .unwrap_or_default();
    eprintln!("berth: task {id} ended as {}{why}", t.status);
    if let Err(e) = streamed {
        eprintln!("berth: the stream was cut off: {e}");
    }
    if kind == Kind::Output {
        eprintln!("berth: its logs: berth logs {id}");
    }
    Ok(1)
}

/// Copies a followed payload to stdout as it comes, each piece at once.
async fn stream(resp: Response) -> Result<(), String> {
    let mut out = tokio::io::stdout();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        out.write_all(&chunk).await.map_err(|e| e.to_string())?;
        out.flush().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn not_finished_hint(e: ClientError, id: &str, kind: Kind) -> anyhow::Error {
    if e.code() != Some("task_not_finished") {
        return e.into();
    }
    let follow = match kind {
        Kind::Output => format!("berth task output -f {id}"),
        Kind::Logs => format!("berth logs -f {id}"),
    };
    anyhow::anyhow!("{e}\nfollow it to its end with `{follow}`")
}

fn task_detail(t: &Task) -> Detail {
    let mut d = Detail::new();
    let status = match t.exit_code {
        Some(code) => format!("{} (exit {code})", t.status),
        None => t.status.to_string(),
    };
    d.add("id", t.id.clone())
        .add(
            "function",
            format!("{} (version {})", t.function, t.version),
        )
        .add("kind", t.kind.as_str())
        .add("status", status)
        .opt(
            "error",
            t.error
                .as_ref()
                .map(|e| format!("{}: {}", e.code, e.message)),
        )
        .add("attempt", format!("{} of {}", t.attempt, t.max_attempts))
        .opt("node", t.node.clone())
        .add("created", t.created_at.clone())
        .opt("started", t.started_at.clone())
        .opt("finished", t.finished_at.clone());
    let ms = |v: Option<i64>| v.map_or(NONE.to_owned(), fmt_ms);
    let tm = &t.timing;
    d.add(
        "timing",
        format!(
            "queued {}, pull {}, start {}, run {}",
            ms(tm.queued_ms),
            ms(tm.pull_ms),
            ms(tm.start_ms),
            ms(tm.run_ms)
        ),
    );
    let u = &t.usage;
    let bytes = |v: Option<i64>| {
        v.and_then(|n| u64::try_from(n).ok())
            .map_or(NONE.to_owned(), fmt_bytes)
    };
    d.add(
        "usage",
        format!(
            "cpu {}, peak memory {}, wall {}",
            ms(u.cpu_ms),
            bytes(u.peak_memory_bytes),
            ms(u.wall_ms)
        ),
    )
    .add(
        "bytes",
        format!("in {}, out {}", bytes(t.input_bytes), bytes(t.output_bytes)),
    );
    if let Some(attempts) = t.attempts.as_ref().filter(|a| !a.is_empty()) {
        let lines: Vec<String> = attempts
            .iter()
            .map(|a| {
                let ended = a.ended.map_or_else(
                    || "running".to_owned(),
                    |e| {
                        serde_json::to_value(e)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_else(|| format!("{e:?}"))
                    },
                );
                format!(
                    "{} on {}: {ended}, from {}",
                    a.attempt, a.node, a.started_at
                )
            })
            .collect();
        d.add("attempts", lines.join("\n"));
    }
    d
}
