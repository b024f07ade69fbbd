//! A scripted in-memory executor: no engine, no containers. What the
//! "function" does is chosen by the first word of its `command`:
//!
//! | command               | behaviour                                             |
//! |-----------------------|-------------------------------------------------------|
//! | `echo-upper` or none  | stdout = uppercased stdin, a line on stderr, exit 0   |
//! | `fail <code> <msg>`   | stderr = msg, exit code                               |
//! | `sleep`               | never exits: ends by timeout, cancel or caller gone   |
//! | `big`                 | 200 KiB of stdout, then exit 1                        |
//! | `stream`              | writes stdout forever (until caller gone/timeout)     |
//! | `env`                 | stdout = `spec.env` then `spec.request_env`, `K=V\n`  |
//! | `busy`                | `run` refuses with [`ExecError::Busy`]                |
//! | anything else         | a line on stderr, exit 127                            |
//!
//! Every wait honours `spec.timeout` ([`Exit::TimedOut`]), `spec.cancel`
//! ([`Exit::Cancelled`]) and a dropped stdout receiver
//! ([`Exit::CallerGone`]), as the real executor does. In http mode a
//! `200` head is sent before the first stdout chunk.
//!
//! `resolve_image("missing")` fails with [`ExecError::ImageNotFound`];
//! any other reference resolves to [`image_id`] of it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use berth_core::{Mode, TaskId};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use super::{CHANNEL_DEPTH, lock};
use crate::{
    ExecError, Executor, ExecutorStatus, Exit, ImageInfo, InputStream, InstanceCount, Invocation,
    ResponseHead, RunOutcome, RunSpec,
};

/// What the scheduler's default configuration would see of a small node.
const DEFAULT_CAPACITY: usize = 64;

/// The image id a reference resolves to: derived from the name, so that
/// tests can predict it.
pub fn image_id(reference: &str) -> String {
    let hex: String = reference.bytes().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// One call of [`Executor::retire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    pub tenant: String,
    pub function: String,
    pub keep: Option<i64>,
}

#[derive(Default)]
struct Records {
    started: Vec<RunSpec>,
    running: Vec<RunSpec>,
    finished: Vec<(TaskId, Exit)>,
    prepared: Vec<RunSpec>,
    retired: Vec<Retired>,
}

/// The scripted executor; see the module doc for the script. Refuses a
/// run with [`ExecError::NoCapacity`] when `capacity` attempts are
/// already running or it was [`set_full`](Self::set_full).
pub struct FakeExecutor {
    capacity: usize,
    full: AtomicBool,
    // Shared with the attempts' tasks, which record how they ended.
    records: Arc<Mutex<Records>>,
}

impl Default for FakeExecutor {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl FakeExecutor {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            full: AtomicBool::new(false),
            records: Arc::default(),
        }
    }

    /// Makes `has_room` false and `run` refuse, whatever is running.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// Every attempt `run` accepted, in order.
    pub fn started(&self) -> Vec<RunSpec> {
        lock(&self.records).started.clone()
    }

    /// The first attempt started for `function`.
    pub fn started_for(&self, function: &str) -> Option<RunSpec> {
        lock(&self.records)
            .started
            .iter()
            .find(|s| s.function == function)
            .cloned()
    }

    /// Attempts started and not yet ended.
    pub fn running(&self) -> Vec<RunSpec> {
        lock(&self.records).running.clone()
    }

    /// How the latest ended attempt of a task ended; recorded before its
    /// `done` resolves, so it is there once a caller saw the end.
    pub fn exit_of(&self, task_id: TaskId) -> Option<Exit> {
        lock(&self.records)
            .finished
            .iter()
            .rev()
            .find(|(t, _)| *t == task_id)
            .map(|(_, e)| e.clone())
    }

    pub fn prepared(&self) -> Vec<RunSpec> {
        lock(&self.records).prepared.clone()
    }

    pub fn prepare_calls(&self) -> usize {
        lock(&self.records).prepared.len()
    }

    pub fn retired(&self) -> Vec<Retired> {
        lock(&self.records).retired.clone()
    }

    pub fn retire_calls(&self) -> usize {
        lock(&self.records).retired.len()
    }

    /// Admits the attempt or says why not, under one lock so that
    /// concurrent runs cannot overshoot the capacity.
    fn admit(&self, spec: &RunSpec) -> Result<(), ExecError> {
        let mut records = lock(&self.records);
        let running = records.running.len();
        if self.full.load(Ordering::SeqCst) || running >= self.capacity {
            return Err(ExecError::NoCapacity(running));
        }
        if spec
            .command
            .as_ref()
            .and_then(|c| c.first())
            .is_some_and(|w| w == "busy")
        {
            return Err(ExecError::Busy(
                "2 instances busy and 3 requests queued".into(),
            ));
        }
        records.started.push(spec.clone());
        records.running.push(spec.clone());
        Ok(())
    }
}

#[async_trait]
impl Executor for FakeExecutor {
    async fn resolve_image(&self, reference: &str) -> Result<ImageInfo, ExecError> {
        if reference == "missing" {
            return Err(ExecError::ImageNotFound(reference.to_owned()));
        }
        Ok(ImageInfo {
            id: image_id(reference),
        })
    }

    async fn run(&self, spec: RunSpec, stdin: InputStream) -> Result<Invocation, ExecError> {
        self.admit(&spec)?;
        let (out_tx, out_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (err_tx, err_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (head_tx, head_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let http = spec.mode == Mode::Http;
        let records = Arc::clone(&self.records);
        tokio::spawn(async move {
            let began = Instant::now();
            let mut proc = Proc {
                out: out_tx,
                err: err_tx,
                head: http.then_some(head_tx),
                tail: String::new(),
                deadline: Box::pin(tokio::time::sleep(spec.timeout)),
                cancel: spec.cancel.clone(),
            };
            let command = spec.command.clone().unwrap_or_default();
            let env: Vec<_> = spec.env.iter().chain(&spec.request_env).cloned().collect();
            let exit = match script(&mut proc, &command, &env, stdin).await {
                Ok(code) => Exit::Code(code),
                Err(interrupted) => interrupted,
            };
            {
                let mut records = lock(&records);
                if let Some(i) = records
                    .running
                    .iter()
                    .position(|s| s.task_id == spec.task_id)
                {
                    records.running.remove(i);
                }
                records.finished.push((spec.task_id, exit.clone()));
            }
            let _ = done_tx.send(Ok(RunOutcome {
                exit,
                stderr_tail: proc.tail,
                queued_ms: 0,
                pull_ms: None,
                start_ms: 0,
                run_ms: i64::try_from(began.elapsed().as_millis()).unwrap_or(i64::MAX),
                cpu_ms: None,
                peak_memory_bytes: None,
            }));
        });
        Ok(Invocation {
            head: http.then_some(head_rx),
            stdout: out_rx,
            stderr: err_rx,
            done: done_rx,
        })
    }

    async fn prepare(&self, spec: &RunSpec) -> Result<(), ExecError> {
        lock(&self.records).prepared.push(spec.clone());
        Ok(())
    }

    fn retire(&self, tenant: &str, function: &str, keep: Option<i64>) {
        lock(&self.records).retired.push(Retired {
            tenant: tenant.into(),
            function: function.into(),
            keep,
        });
    }

    async fn reap_orphans(&self) -> Result<usize, ExecError> {
        Ok(0)
    }

    async fn status(&self) -> ExecutorStatus {
        let running = self.running();
        // Each attempt stands for one busy instance of its version.
        let mut instances: Vec<InstanceCount> = Vec::new();
        for s in &running {
            match instances.iter_mut().find(|i| {
                i.tenant == s.tenant && i.function == s.function && i.version == s.version
            }) {
                Some(i) => i.busy += 1,
                None => instances.push(InstanceCount {
                    tenant: s.tenant.clone(),
                    function: s.function.clone(),
                    version: s.version,
                    ready: 0,
                    busy: 1,
                    starting: 0,
                    queued: 0,
                }),
            }
        }
        ExecutorStatus {
            cpu_millis_allocated: running.iter().map(|s| u64::from(s.cpu_millis)).sum(),
            memory_mb_allocated: running.iter().map(|s| u64::from(s.memory_mb)).sum(),
            id: "fake".into(),
            capacity: self.capacity,
            running: running.len(),
            instances,
            healthy: true,
        }
    }

    fn has_room(&self, _spec: &RunSpec) -> bool {
        !self.full.load(Ordering::SeqCst) && lock(&self.records).running.len() < self.capacity
    }
}

/// A fake process: what a function sees of the executor's channels.
struct Proc {
    out: mpsc::Sender<Bytes>,
    err: mpsc::Sender<Bytes>,
    /// http mode only, until the first stdout.
    head: Option<oneshot::Sender<ResponseHead>>,
    tail: String,
    deadline: Pin<Box<Sleep>>,
    cancel: CancellationToken,
}

impl Proc {
    /// Waits for `f` unless the deadline passes, a cancel arrives or the
    /// caller stops reading stdout first.
    async fn guard<F: Future>(&mut self, f: F) -> Result<F::Output, Exit> {
        let Proc {
            out,
            deadline,
            cancel,
            ..
        } = self;
        tokio::select! {
            v = f => Ok(v),
            () = deadline => Err(Exit::TimedOut),
            () = cancel.cancelled() => Err(Exit::Cancelled),
            () = out.closed() => Err(Exit::CallerGone),
        }
    }

    async fn stdout(&mut self, data: impl Into<Bytes>) -> Result<(), Exit> {
        if let Some(head) = self.head.take() {
            let _ = head.send(ResponseHead {
                status: 200,
                headers: vec![("content-type".into(), "application/octet-stream".into())],
            });
        }
        let out = self.out.clone();
        match self.guard(out.send(data.into())).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(Exit::CallerGone),
        }
    }

    async fn stderr(&mut self, text: &str) -> Result<(), Exit> {
        self.tail.push_str(text);
        let err = self.err.clone();
        // Nobody reading stderr does not stop the function, as with the
        // real executor.
        let _ = self
            .guard(err.send(Bytes::copy_from_slice(text.as_bytes())))
            .await?;
        Ok(())
    }

    /// Never returns normally: ends by deadline, cancel or caller gone.
    async fn hang(&mut self) -> Exit {
        match self.guard(std::future::pending::<Infallible>()).await {
            Ok(never) => match never {},
            Err(why) => why,
        }
    }
}

async fn script(
    p: &mut Proc,
    command: &[String],
    env: &[(String, String)],
    mut stdin: InputStream,
) -> Result<i64, Exit> {
    match command.first().map(String::as_str) {
        None | Some("echo-upper") => {
            let mut input = Vec::new();
            while let Some(chunk) = p.guard(stdin.next()).await? {
                match chunk {
                    Ok(c) => input.extend_from_slice(&c),
                    Err(e) => {
                        p.stderr(&format!("stdin failed: {e}")).await?;
                        return Ok(1);
                    }
                }
            }
            p.stderr(&format!("echo-upper: {} bytes\n", input.len()))
                .await?;
            for piece in input.to_ascii_uppercase().chunks(16 * 1024) {
                p.stdout(Bytes::copy_from_slice(piece)).await?;
            }
            Ok(0)
        }
        Some("fail") => {
            let code = command.get(1).and_then(|c| c.parse().ok()).unwrap_or(1);
            let msg = command.get(2).cloned().unwrap_or_default();
            p.stderr(&msg).await?;
            Ok(code)
        }
        Some("sleep") => Err(p.hang().await),
        Some("big") => {
            for _ in 0..25 {
                p.stdout(vec![b'x'; 8 * 1024]).await?;
            }
            p.stderr("boom after output").await?;
            Ok(1)
        }
        Some("stream") => loop {
            p.stdout(vec![b'y'; 8 * 1024]).await?;
        },
        Some("env") => {
            let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            p.stdout(text).await?;
            Ok(0)
        }
        Some(other) => {
            p.stderr(&format!("fake: unknown command {other}")).await?;
            Ok(127)
        }
    }
}
