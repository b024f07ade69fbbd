//! Which executor runs an attempt, and what it is told to run.
//!
//! Today: the executors that report room first, in the fleet's order, then
//! the others. Each executor remains the judge of its own capacity: one
//! that refuses (full, busy, engine down, unreachable) before reading any
//! of the input passes the attempt to the next, not to the caller.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use berth_core::{FunctionVersion, TaskRecord};
use berth_executor::{ExecError, InputStream, Invocation, PoolSettings, RunSpec};
use bytes::Bytes;
use futures::Stream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::{SchedError, TaskManager, cgi_env};

impl TaskManager {
    pub(crate) async fn place(
        &self,
        spec: RunSpec,
        stdin: InputStream,
    ) -> Result<Invocation, SchedError> {
        let mut candidates = self.fleet.candidates();
        // Stable: the fleet's order stands among those with room, and
        // nodes whose heartbeat is late go last.
        candidates.sort_by_key(|m| (!m.has_room(&spec), !m.fresh));
        let input = Lent::new(stdin);
        let mut last: Option<ExecError> = None;
        for m in candidates {
            match m.executor.run(spec.clone(), input.lend()).await {
                Ok(inv) => return Ok(inv),
                Err(e) if e.is_refusal() && !input.touched() => {
                    debug!(node = %m.id, error = %e, "executor refused; trying the next");
                    last = Some(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or(SchedError::NoExecutor, SchedError::from))
    }

    /// One attempt of a task on one version, as an executor runs it.
    pub(crate) fn spec(
        &self,
        v: &FunctionVersion,
        task: &TaskRecord,
        cancel: CancellationToken,
    ) -> RunSpec {
        self.modes.note(v);
        RunSpec {
            task_id: task.id,
            tenant: v.tenant.clone(),
            function: v.function.clone(),
            version: v.version,
            image: v.image_id.clone(),
            command: v.config.command.clone(),
            env: v
                .config
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            request_env: cgi_env(v, task),
            request: task.request.clone(),
            cpu_millis: v.config.cpu_millis,
            memory_mb: v.config.memory_mb,
            timeout: Duration::from_secs(u64::from(v.config.timeout_secs)),
            mode: v.config.mode,
            run_as_root: v.config.run_as_root,
            pool: PoolSettings {
                concurrency: v.config.concurrency,
                min_instances: v.config.min_instances,
                max_instances: v.config.max_instances,
                idle_timeout: Duration::from_secs(u64::from(v.config.idle_timeout_secs)),
                max_queue: v.config.max_queue,
                queue_timeout: Duration::from_secs(u64::from(v.config.queue_timeout_secs)),
            },
            cancel,
        }
    }
}

/// A request body several executors may be offered in turn: each gets a
/// stream over the one body, and whether any of it was read is known, so
/// only an untouched body is offered to the next.
struct Lent {
    body: Arc<Mutex<Option<InputStream>>>,
    touched: Arc<std::sync::atomic::AtomicBool>,
}

impl Lent {
    fn new(body: InputStream) -> Self {
        Self {
            body: Arc::new(Mutex::new(Some(body))),
            touched: Arc::default(),
        }
    }

    fn lend(&self) -> InputStream {
        Box::pin(Loan {
            body: Arc::clone(&self.body),
            touched: Arc::clone(&self.touched),
        })
    }

    fn touched(&self) -> bool {
        self.touched.load(std::sync::atomic::Ordering::Acquire)
    }
}

struct Loan {
    body: Arc<Mutex<Option<InputStream>>>,
    touched: Arc<std::sync::atomic::AtomicBool>,
}

impl Stream for Loan {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.touched
            .store(true, std::sync::atomic::Ordering::Release);
        // Only one loan is ever read: the executor that accepted the run.
        let mut body = self.body.lock().unwrap_or_else(|p| p.into_inner());
        match body.as_mut() {
            Some(b) => b.as_mut().poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}
