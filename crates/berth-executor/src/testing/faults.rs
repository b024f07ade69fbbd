//! A wrapper that makes any executor (the fake or the real one) fail the
//! way engines and instances do, on the runs a test chooses, so that the
//! scheduler's handling of each failure can be tested without breaking a
//! real engine.
//!
//! Faults are injected at runtime: [`FaultyExecutor::inject`] for the next
//! N runs, [`FaultyExecutor::inject_for`] for every run of one function.
//! A run takes the first injection that matches it, in the order they were
//! made; runs no injection matches go to the inner executor untouched, as
//! does everything besides `run` and `has_room`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use berth_core::Mode;
use tokio::sync::{mpsc, oneshot};

use super::{CHANNEL_DEPTH, lock};
use crate::{
    ExecError, Executor, ExecutorStatus, Exit, ImageInfo, InputStream, Invocation, RunOutcome,
    RunSpec,
};

#[derive(Debug, Clone)]
pub enum Fault {
    /// `run` fails with this error without reading any stdin (the engine
    /// is down, the image is gone, the engine errs).
    FailStart(ExecError),
    /// `run` fails with [`ExecError::NoCapacity`] without reading any
    /// stdin, and `has_room` says false while this is the next fault.
    RefuseCapacity,
    /// The attempt runs on the inner executor, but once `after_bytes` of
    /// its stdout reached the caller the instance dies: no more output,
    /// and it ends with [`Exit::InstanceLost`]. An attempt that writes
    /// less dies when its stdout ends, before its exit is reported.
    DieMidStream { after_bytes: usize },
    /// The attempt never reaches the inner executor and never writes nor
    /// ends until `spec.cancel` ([`Exit::Cancelled`]), `spec.timeout`
    /// ([`Exit::TimedOut`]) or the caller drops stdout
    /// ([`Exit::CallerGone`]).
    Hang,
    /// The attempt runs and its output passes through, then `done`
    /// resolves to [`ExecError::EngineUnavailable`]: the engine went away
    /// before the exit could be read.
    EngineLostMidRun,
}

struct Injection {
    fault: Fault,
    /// Only runs of this function; any run when `None`.
    function: Option<String>,
    /// Runs left; until cleared when `None`.
    runs: Option<usize>,
}

impl Injection {
    fn matches(&self, spec: &RunSpec) -> bool {
        self.function.as_ref().is_none_or(|f| *f == spec.function)
    }
}

pub struct FaultyExecutor<E> {
    inner: E,
    plan: Mutex<Vec<Injection>>,
    fired: AtomicUsize,
}

impl<E: Executor> FaultyExecutor<E> {
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            plan: Mutex::default(),
            fired: AtomicUsize::new(0),
        }
    }

    /// The wrapped executor, e.g. to read a fake's records.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// Applies `fault` to the next `runs` runs, whatever their function.
    pub fn inject(&self, fault: Fault, runs: usize) {
        if runs > 0 {
            self.push(fault, None, Some(runs));
        }
    }

    /// Applies `fault` to every run of `function` until [`clear`](Self::clear).
    pub fn inject_for(&self, function: &str, fault: Fault) {
        self.push(fault, Some(function.to_owned()), None);
    }

    /// Drops every pending injection.
    pub fn clear(&self) {
        lock(&self.plan).clear();
    }

    /// How many runs a fault was applied to, including any the inner
    /// executor then refused.
    pub fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }

    fn push(&self, fault: Fault, function: Option<String>, runs: Option<usize>) {
        lock(&self.plan).push(Injection {
            fault,
            function,
            runs,
        });
    }

    /// The fault the next run of `spec` would get, without using it up.
    fn next_fault(&self, spec: &RunSpec) -> Option<Fault> {
        let plan = lock(&self.plan);
        plan.iter()
            .find(|i| i.matches(spec))
            .map(|i| i.fault.clone())
    }

    fn take(&self, spec: &RunSpec) -> Option<Fault> {
        let mut plan = lock(&self.plan);
        let at = plan.iter().position(|i| i.matches(spec))?;
        let fault = plan[at].fault.clone();
        if let Some(left) = &mut plan[at].runs {
            *left -= 1;
            if *left == 0 {
                plan.remove(at);
            }
        }
        self.fired.fetch_add(1, Ordering::SeqCst);
        Some(fault)
    }
}

#[async_trait]
impl<E: Executor> Executor for FaultyExecutor<E> {
    async fn resolve_image(&self, reference: &str) -> Result<ImageInfo, ExecError> {
        self.inner.resolve_image(reference).await
    }

    async fn run(&self, spec: RunSpec, stdin: InputStream) -> Result<Invocation, ExecError> {
        let Some(fault) = self.take(&spec) else {
            return self.inner.run(spec, stdin).await;
        };
        match fault {
            Fault::FailStart(e) => Err(e),
            Fault::RefuseCapacity => Err(ExecError::NoCapacity(self.inner.status().await.running)),
            Fault::Hang => Ok(hang(spec)),
            Fault::DieMidStream { after_bytes } => {
                let inv = self.inner.run(spec, stdin).await?;
                Ok(die_after(inv, after_bytes))
            }
            Fault::EngineLostMidRun => {
                let inv = self.inner.run(spec, stdin).await?;
                Ok(lose_engine(inv))
            }
        }
    }

    async fn reap_orphans(&self) -> Result<usize, ExecError> {
        self.inner.reap_orphans().await
    }

    async fn prepare(&self, spec: &RunSpec) -> Result<(), ExecError> {
        self.inner.prepare(spec).await
    }

    fn retire(&self, tenant: &str, function: &str, keep: Option<i64>) {
        self.inner.retire(tenant, function, keep);
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }

    async fn status(&self) -> ExecutorStatus {
        self.inner.status().await
    }

    fn has_room(&self, spec: &RunSpec) -> bool {
        !matches!(self.next_fault(spec), Some(Fault::RefuseCapacity)) && self.inner.has_room(spec)
    }
}

/// An outcome for an attempt the wrapper ended itself.
fn ended(exit: Exit, began: Instant) -> RunOutcome {
    RunOutcome {
        exit,
        stderr_tail: String::new(),
        queued_ms: 0,
        pull_ms: None,
        start_ms: 0,
        run_ms: i64::try_from(began.elapsed().as_millis()).unwrap_or(i64::MAX),
        cpu_ms: None,
        peak_memory_bytes: None,
    }
}

fn hang(spec: RunSpec) -> Invocation {
    let (out_tx, out_rx) = mpsc::channel(CHANNEL_DEPTH);
    let (err_tx, err_rx) = mpsc::channel(CHANNEL_DEPTH);
    let (head_tx, head_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let http = spec.mode == Mode::Http;
    tokio::spawn(async move {
        let began = Instant::now();
        let exit = tokio::select! {
            () = tokio::time::sleep(spec.timeout) => Exit::TimedOut,
            () = spec.cancel.cancelled() => Exit::Cancelled,
            () = out_tx.closed() => Exit::CallerGone,
        };
        // A hung instance never answers, so its channels close unused.
        drop((out_tx, err_tx, head_tx));
        let _ = done_tx.send(Ok(ended(exit, began)));
    });
    Invocation {
        head: http.then_some(head_rx),
        stdout: out_rx,
        stderr: err_rx,
        done: done_rx,
    }
}

fn die_after(inner: Invocation, after_bytes: usize) -> Invocation {
    let Invocation {
        head,
        stdout: mut inner_out,
        stderr: mut inner_err,
        done: inner_done,
    } = inner;
    let (out_tx, out_rx) = mpsc::channel(CHANNEL_DEPTH);
    let (err_tx, err_rx) = mpsc::channel(CHANNEL_DEPTH);
    let (done_tx, done_rx) = oneshot::channel();
    // stderr on its own task, so that stdout waiting on a slow reader
    // never stalls the inner attempt on a full stderr.
    tokio::spawn(async move {
        while let Some(chunk) = inner_err.recv().await {
            if err_tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let began = Instant::now();
        let mut left = after_bytes;
        let mut caller_gone = false;
        while left > 0 {
            let chunk = tokio::select! {
                c = inner_out.recv() => c,
                () = out_tx.closed() => None,
            };
            let Some(mut chunk) = chunk else {
                caller_gone = out_tx.is_closed();
                break;
            };
            chunk.truncate(left);
            left -= chunk.len();
            if out_tx.send(chunk).await.is_err() {
                caller_gone = true;
                break;
            }
        }
        // The inner attempt loses its reader, which kills it, as the
        // death of its instance would.
        drop((inner_out, out_tx));
        let result = match (caller_gone, inner_done.await) {
            (true, Ok(report)) => report,
            (true, Err(_)) => Ok(ended(Exit::CallerGone, began)),
            (false, Ok(Ok(mut outcome))) => {
                outcome.exit = lost(after_bytes);
                Ok(outcome)
            }
            (false, _) => Ok(ended(lost(after_bytes), began)),
        };
        let _ = done_tx.send(result);
    });
    Invocation {
        head,
        stdout: out_rx,
        stderr: err_rx,
        done: done_rx,
    }
}

fn lost(after_bytes: usize) -> Exit {
    Exit::InstanceLost(format!(
        "injected fault: the instance died after {after_bytes} bytes of stdout"
    ))
}

fn lose_engine(inner: Invocation) -> Invocation {
    let (done_tx, done_rx) = oneshot::channel();
    let Invocation {
        head,
        stdout,
        stderr,
        done,
    } = inner;
    tokio::spawn(async move {
        let _ = done.await;
        let _ = done_tx.send(Err(ExecError::EngineUnavailable(
            "injected fault: the engine went away during the run".into(),
        )));
    });
    Invocation {
        head,
        stdout,
        stderr,
        done: done_rx,
    }
}
