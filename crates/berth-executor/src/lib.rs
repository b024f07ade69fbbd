//! What the scheduler asks of whatever runs function containers: the
//! [`Executor`] trait and the types that cross it.
//!
//! Architecture Invariant: this crate knows no container engine. The
//! Docker implementation lives in `berth-docker`; a remote executor
//! (cluster mode) implements the same trait over the network, so the
//! request path does not change when the container runs on another
//! machine, and a client of one needs nothing of Docker.

pub mod host;
#[cfg(feature = "testing")]
pub mod testing;

use std::io;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use berth_core::{ErrorCode, Mode, Outcome, RequestMeta, TaskError, TaskId};
use bytes::Bytes;
use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecError {
    /// Not on the engine, and not Berth's to pull: a local image removed
    /// behind Berth's back stays gone until someone provides it again.
    #[error(
        "image {0} is not on the Docker Engine and cannot be pulled from Berth's registry; \
         push the image to the registry (or load it) and deploy the function again"
    )]
    ImageNotFound(String),
    #[error("pulling image {image} failed: {message}")]
    PullFailed { image: String, message: String },
    #[error("the Docker Engine is unavailable: {0}")]
    EngineUnavailable(String),
    #[error("no capacity: {0} containers already running on this executor")]
    NoCapacity(usize),
    /// The function's own instances and queue are full: the caller should
    /// back off (429), the executor itself may have room for others.
    #[error("function is busy: {0}")]
    Busy(String),
    /// A warm instance failed before the request reached the program.
    #[error("function instance failed: {0}")]
    Instance(String),
    #[error("container engine error: {0}")]
    Engine(String),
    /// The node that runs (or was to run) the attempt cannot be reached or
    /// went silent. From `run`, the attempt never started and another node
    /// may take it; through `done`, it was lost mid-run.
    #[error("executor node lost: {0}")]
    ExecutorLost(String),
    /// The node was taken back (drained past its grace period) and killed
    /// the attempt: not the attempt's fault, so it is handed back to the
    /// queue without counting.
    #[error("executor node reclaimed: {0}")]
    Reclaimed(String),
}

impl ExecError {
    /// How a task that could not start, or whose run the engine failed,
    /// records it.
    pub fn code(&self) -> ErrorCode {
        match self {
            ExecError::ImageNotFound(_) => ErrorCode::ImageMissing,
            ExecError::PullFailed { .. } => ErrorCode::PullFailed,
            ExecError::EngineUnavailable(_) => ErrorCode::EngineUnavailable,
            ExecError::NoCapacity(_) => ErrorCode::NoCapacity,
            ExecError::Busy(_) => ErrorCode::Busy,
            ExecError::Instance(_) => ErrorCode::InstanceFailed,
            ExecError::Engine(_) => ErrorCode::EngineError,
            ExecError::ExecutorLost(_) | ExecError::Reclaimed(_) => ErrorCode::ExecutorLost,
        }
    }

    /// Whether the executor turned the attempt away before running it
    /// (full, busy, engine down): trying later may work, and the attempt
    /// does not count.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ExecError::NoCapacity(_)
                | ExecError::EngineUnavailable(_)
                | ExecError::Busy(_)
                | ExecError::ExecutorLost(_)
        )
    }

    pub fn task_error(&self) -> TaskError {
        TaskError::new(self.code(), self.to_string())
    }
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
    /// The function's own environment, the same for every request.
    pub env: Vec<(String, String)>,
    /// This request's CGI meta-variables; they win over `env`.
    pub request_env: Vec<(String, String)>,
    /// The request as received, for http mode's proxying.
    pub request: RequestMeta,
    pub cpu_millis: u32,
    pub memory_mb: u32,
    pub timeout: Duration,
    pub mode: Mode,
    /// Run as uid 0 instead of the image's non-root user or nobody.
    pub run_as_root: bool,
    pub pool: PoolSettings,
    /// Fired to kill the attempt (a cancel request).
    pub cancel: CancellationToken,
}

/// How a function version's warm instances are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub concurrency: u32,
    pub min_instances: u32,
    pub max_instances: u32,
    pub idle_timeout: Duration,
    pub max_queue: u32,
    pub queue_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            concurrency: 1,
            min_instances: 0,
            max_instances: 1,
            idle_timeout: Duration::from_secs(300),
            max_queue: 0,
            queue_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i64),
    /// The memory limit was hit and the kernel killed the function.
    OomKilled,
    TimedOut,
    Cancelled,
    /// Whoever consumed stdout went away (a sync caller disconnected).
    CallerGone,
    /// The warm instance died under the request (the container exited or
    /// the agent broke the connection); the instance is replaced.
    InstanceLost(String),
}

impl Exit {
    /// The task outcome this exit means; `stderr_tail` goes into the
    /// message of a non-zero exit.
    pub fn outcome(&self, stderr_tail: &str) -> Outcome {
        let failed = |code, message: String| Outcome::failed(TaskError::new(code, message));
        match self {
            Exit::Code(code) => Outcome::exited(*code, stderr_tail),
            Exit::OomKilled => failed(
                ErrorCode::Oom,
                "function was killed for exceeding its memory limit".into(),
            ),
            Exit::TimedOut => failed(
                ErrorCode::Timeout,
                "function exceeded its timeout and was killed".into(),
            ),
            Exit::Cancelled => failed(ErrorCode::Cancelled, "cancelled by request".into()),
            Exit::CallerGone => failed(
                ErrorCode::ClientDisconnected,
                "the caller stopped reading the output; the function was killed".into(),
            ),
            Exit::InstanceLost(why) => failed(
                ErrorCode::InstanceLost,
                format!("the function's instance failed during the request: {why}"),
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub exit: Exit,
    /// The last few KiB of stderr, for error messages.
    pub stderr_tail: String,
    /// Time spent waiting for a busy function's instance.
    pub queued_ms: i64,
    /// Time spent pulling the image for this request, if it had to be.
    pub pull_ms: Option<i64>,
    /// Time spent starting an instance for this request; 0 when warm.
    pub start_ms: i64,
    pub run_ms: i64,
    pub cpu_ms: Option<i64>,
    pub peak_memory_bytes: Option<i64>,
}

/// A running attempt. Both output channels must be drained: they are
/// bounded, and a full channel stalls the function, which is what keeps
/// memory flat however much it writes. Dropping `stdout` kills the attempt.
pub struct Invocation {
    /// http mode: the program's status line and headers, sent before any
    /// stdout. Other modes never send one.
    pub head: Option<oneshot::Receiver<ResponseHead>>,
    pub stdout: mpsc::Receiver<Bytes>,
    pub stderr: mpsc::Receiver<Bytes>,
    pub done: oneshot::Receiver<Result<RunOutcome, ExecError>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
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
    /// Containers alive: warm instances (busy or idle) and fresh runs.
    pub running: usize,
    /// CPU (millicores) and memory (MiB) promised to those containers.
    pub cpu_millis_allocated: u64,
    pub memory_mb_allocated: u64,
    /// Warm instances, per function version.
    pub instances: Vec<InstanceCount>,
    pub healthy: bool,
}

#[derive(Debug, Clone)]
pub struct InstanceCount {
    pub tenant: String,
    pub function: String,
    pub version: i64,
    pub ready: usize,
    pub busy: usize,
    pub starting: usize,
    pub queued: usize,
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
    /// Makes a version ready to serve: its image present and, for warm
    /// modes, `min_instances` started. Called at deploy, so the first call
    /// does not pay for either. The spec's request fields are unused.
    async fn prepare(&self, spec: &RunSpec) -> Result<(), ExecError>;
    /// Lets the warm instances of a function's versions other than `keep`
    /// scale to zero (all of them with `None`, when it is deleted).
    fn retire(&self, tenant: &str, function: &str, keep: Option<i64>);
    /// Removes this executor's warm instances (shutdown).
    async fn shutdown(&self) {}
    async fn status(&self) -> ExecutorStatus;
    /// A cheap, local guess at whether this run would be accepted now.
    fn has_room(&self, spec: &RunSpec) -> bool;
}
