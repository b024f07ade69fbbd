//! Test support for crates that drive an [`Executor`]: a scripted
//! [`FakeExecutor`] that needs no engine, a [`FaultyExecutor`] that injects
//! engine and instance failures into any executor, and helpers to build a
//! [`RunSpec`] and to read an [`Invocation`] to its end.
//!
//! Only compiled with the `testing` feature, so that production builds
//! carry none of it; other crates enable it from their
//! `[dev-dependencies]`.
//!
//! [`Executor`]: crate::Executor

mod fake;
mod faults;
#[cfg(test)]
mod tests;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use berth_core::{RequestMeta, TaskId};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{ExecError, InputStream, Invocation, PoolSettings, ResponseHead, RunOutcome, RunSpec};

pub use fake::{FakeExecutor, Retired, image_id};
pub use faults::{Fault, FaultyExecutor};

/// The depth of every output channel the fakes hand out: small, like the
/// real executor's, so that a test which forgets to drain one stalls the
/// "function" the way production would.
pub const CHANNEL_DEPTH: usize = 16;

/// A spec for one attempt of `function` (tenant `t`, version 1) running
/// `command`, with a fresh task id and cancel token and a 10 s timeout.
/// An empty `command` leaves it `None` (the fake then runs `echo-upper`).
/// Fields are public: adjust the rest in place.
pub fn run_spec(function: &str, command: &[&str]) -> RunSpec {
    RunSpec {
        task_id: TaskId::new(),
        tenant: "t".into(),
        function: function.into(),
        version: 1,
        image: image_id(function),
        command: (!command.is_empty()).then(|| command.iter().map(|&c| c.into()).collect()),
        env: Vec::new(),
        request_env: Vec::new(),
        request: RequestMeta {
            method: "POST".into(),
            path: "/".into(),
            ..RequestMeta::default()
        },
        cpu_millis: 1_000,
        memory_mb: 256,
        timeout: Duration::from_secs(10),
        mode: berth_core::Mode::Exec,
        run_as_root: false,
        pool: PoolSettings::default(),
        cancel: CancellationToken::new(),
    }
}

/// A request body of one chunk (none when `data` is empty).
pub fn input(data: impl Into<Bytes>) -> InputStream {
    let data: Bytes = data.into();
    let chunk = (!data.is_empty()).then_some(Ok(data));
    futures::stream::iter(chunk).boxed()
}

/// All an attempt produced, read to its end.
#[derive(Debug)]
pub struct Output {
    pub head: Option<ResponseHead>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub done: Result<RunOutcome, ExecError>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Drains both output channels together (draining one after the other
/// could stall the attempt on the full other), then waits for its end.
/// Never returns for an attempt that never ends: give it a timeout.
pub async fn collect(inv: Invocation) -> Output {
    let Invocation {
        head,
        mut stdout,
        mut stderr,
        done,
    } = inv;
    let read_out = async {
        let mut all = Vec::new();
        while let Some(chunk) = stdout.recv().await {
            all.extend_from_slice(&chunk);
        }
        all
    };
    let read_err = async {
        let mut all = Vec::new();
        while let Some(chunk) = stderr.recv().await {
            all.extend_from_slice(&chunk);
        }
        all
    };
    let (stdout, stderr) = tokio::join!(read_out, read_err);
    let done = done.await.unwrap_or_else(|_| {
        Err(ExecError::Engine(
            "the attempt ended without reporting".into(),
        ))
    });
    // Once the attempt has reported, its head was either sent or dropped.
    let head = head.and_then(|mut h| h.try_recv().ok());
    Output {
        head,
        stdout,
        stderr,
        done,
    }
}

/// A poisoned lock only means another test thread panicked; the records
/// it guards are still worth reading.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
