//! Runs function containers on one node.
//!
//! Architecture Invariant: only this crate knows Docker. The scheduler sees
//! the [`Executor`] trait; a remote executor (cluster mode) implements the
//! same trait over the network, so the request path does not change when
//! the container runs on another machine.

mod docker;

use std::io;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use berth_core::TaskId;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use docker::{DockerConfig, DockerExecutor};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("image {0} is not present on the container engine")]
    ImageNotFound(String),
    #[error("the container engine is unavailable: {0}")]
    EngineUnavailable(String),
    #[error("no capacity: {0} containers already running on this executor")]
    NoCapacity(usize),
    #[error("container engine error: {0}")]
    Engine(String),
}

pub type InputStream = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

/// Everything an executor needs to run one attempt of a task. Built by the
/// scheduler from an immutable function version and the request.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub task_id: TaskId,
    pub tenant: String,
    pub function: String,
    pub version: i64,
    /// Content-addressed image id; never a mutable tag.
    pub image: String,
    pub command: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub cpu_millis: u32,
    pub memory_mb: u32,
    pub timeout: Duration,
    /// Fired to kill the attempt (a cancel request).
    pub cancel: CancellationToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i64),
    /// The memory limit was hit and the kernel killed the function.
    OomKilled,
    TimedOut,
    Cancelled,
    /// Whoever consumed stdout went away (a sync caller disconnected).
    CallerGone,
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub exit: Exit,
    /// The last few KiB of stderr, for error messages.
    pub stderr_tail: String,
    pub start_ms: i64,
    pub run_ms: i64,
    pub cpu_ms: Option<i64>,
    pub peak_memory_bytes: Option<i64>,
}

/// A running attempt. Both output channels must be drained: they are
/// bounded, and a full channel stalls the function, which is what keeps
/// memory flat however much it writes. Dropping `stdout` kills the attempt.
pub struct Invocation {
    pub stdout: mpsc::Receiver<Bytes>,
    pub stderr: mpsc::Receiver<Bytes>,
    pub done: oneshot::Receiver<Result<RunOutcome, ExecError>>,
}

#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// Content-addressed id (`sha256:...`).
    pub id: String,
}

#[derive(Debug, Clone)]
pub struct ExecutorStatus {
    pub id: String,
    pub capacity: usize,
    pub running: usize,
    pub healthy: bool,
}

#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Resolves an image reference on this executor.
    async fn resolve_image(&self, reference: &str) -> Result<ImageInfo, ExecError>;
    /// Starts an attempt; fails fast when the executor is full or the
    /// engine is down, before any of `stdin` is consumed.
    async fn run(&self, spec: RunSpec, stdin: InputStream) -> Result<Invocation, ExecError>;
    /// Removes containers a previous life of this executor left behind.
    async fn reap_orphans(&self) -> Result<usize, ExecError>;
    async fn status(&self) -> ExecutorStatus;
    /// A cheap, local guess at whether a run would be accepted now.
    fn has_room(&self) -> bool;
}
