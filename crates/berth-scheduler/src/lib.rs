//! The TaskManager: turns requests into tasks and tasks into container runs.
//!
//! It owns the decisions (which version serves a call, which executor runs
//! it, when an async task is claimed, retried or given up, what a tenant
//! may do) and none of the mechanisms: executors run containers, the store
//! keeps state. Sync calls go straight to an executor; async tasks go
//! through the store's queue, claimed under renewable leases so that a
//! crashed process's work is found and re-run.
//!
//! Architecture Invariant: this is the API's only way in. The API sees
//! neither the store nor the executors, only the methods here and the
//! types of `berth-core`.
//!
//! One file per job:
//! - `routing`: which version of a function serves a call;
//! - `versions`: deploying, reading and deleting functions;
//! - `placement`: which executor runs an attempt;
//! - `sync_call`: synchronous calls;
//! - `submit` and `dispatch`: accepting async tasks, claiming and running them;
//! - `outcome`: how an attempt's end becomes the task's final state;
//! - `lifecycle`: start-up recovery, background loops, shutdown;
//! - `tasks`: reading, waiting for and cancelling tasks; `follow`: their
//!   logs and output while they run;
//! - `tenants` and `keys`: who may do what, and API keys;
//! - `quota`, `logs`, `cgi`: quotas, stored stderr, the CGI environment.
//! - `metrics` and `timed_store`: what calls, the queue and the store
//!   operations tell the metrics, and the scrape.

mod cgi;
mod dispatch;
mod fleet;
mod follow;
mod journal;
mod keys;
mod lifecycle;
mod logs;
mod metrics;
mod nodes;
mod outcome;
mod placement;
mod quota;
mod routing;
mod submit;
mod sync_call;
mod tasks;
mod tenants;
mod timed_store;
mod versions;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_blobs::Payloads;
use berth_core::{ErrorCode, Limits, Quotas, TaskError, TaskId, TaskKind, TaskStatus};
use berth_executor::{ExecError, Executor};
use berth_store::{Fence, Store, StoreError};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

pub use berth_executor::{InputStream, ResponseHead};
/// The `Content-Type` of [`TaskManager::metrics`].
pub use berth_metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;
pub use cgi::cgi_env;
pub use fleet::{DATA_PLANE_SECRET, DataPlaneSecret, NodeConnector, node_report};
pub use keys::{generate_key, hash_key};
pub use nodes::{HeartbeatAck, JoinRequest, Joined, NewJoinToken};
pub use submit::Submitted;
pub use sync_call::{CallResult, SyncCall};
pub use tasks::Payload;
pub use tenants::{NewTenant, Readiness};
pub use versions::{AdmittedImage, Deployed, ImageAdmission};

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("{0}")]
    Invalid(String),
    #[error("function {0:?} not found")]
    FunctionNotFound(String),
    #[error("task not found")]
    TaskNotFound,
    #[error("tenant not found")]
    TenantNotFound,
    #[error("{0}")]
    InvalidTenant(String),
    #[error("{0}")]
    InvalidQuota(String),
    #[error("tenant {0:?} already exists")]
    TenantExists(String),
    #[error("{0}")]
    Forbidden(String),
    /// The admin key is the server's setting, not a record to change.
    #[error(
        "the admin key comes from BERTH_ADMIN_KEY or DIR/admin.key; change it there and restart"
    )]
    AdminKeyFixed,
    #[error("task already finished as {0}")]
    TaskFinished(TaskStatus),
    #[error("task is {0}; try again when it has finished")]
    TaskNotFinished(TaskStatus),
    /// The task has no stored payload of that kind; the text says why.
    #[error("{0}")]
    NoPayload(&'static str),
    #[error("request body is larger than the {0} byte limit")]
    InputTooLarge(u64),
    #[error("request body could not be read: {0}")]
    InputAborted(std::io::Error),
    /// A running or queued limit of the tenant is reached; later may work.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A definition asks for more than the tenant may ever have.
    #[error("{0}")]
    OverQuota(String),
    #[error("{0}")]
    ImageNotAllowed(String),
    /// At deploy: the image is nowhere to be found; the text says where
    /// it was looked for.
    #[error("{0}")]
    ImageNotFound(String),
    #[error("idempotency key {0:?} was already used with a different request")]
    IdempotencyConflict(String),
    /// An attempt could not be started; the code says why.
    #[error("{}", .0.message)]
    Run(TaskError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blobs(#[from] berth_blobs::BlobError),
    #[error("no executor node is available to run it")]
    NoExecutor,
    /// A node's credential or join token is missing, wrong or spent.
    #[error("{0}")]
    NodeUnauthorized(String),
    #[error("executor node {0:?} not found")]
    NodeNotFound(String),
    #[error("join token {0:?} not found")]
    JoinTokenNotFound(String),
    /// A replica's own executor follows its replica: stop the replica to
    /// drain it.
    #[error("{0:?} is a replica's in-process executor; stop that replica to take it out")]
    NodeInProcess(String),
}

impl From<ExecError> for SchedError {
    fn from(e: ExecError) -> Self {
        SchedError::Run(e.task_error())
    }
}

impl SchedError {
    /// The code a task records when this error kept its attempt from
    /// starting.
    /// Whether an executor turned the attempt away before running it
    /// (full, busy, engine down): trying later may work, and the attempt
    /// does not count.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            SchedError::Run(e) if matches!(
                e.code,
                ErrorCode::NoCapacity | ErrorCode::EngineUnavailable | ErrorCode::Busy
            )
        )
    }

    pub fn task_error(&self) -> TaskError {
        match self {
            SchedError::Run(e) => e.clone(),
            SchedError::InputTooLarge(_) => {
                TaskError::new(ErrorCode::BodyTooLarge, self.to_string())
            }
            other => TaskError::new(ErrorCode::StartFailed, other.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// This process's identity in leases and container labels.
    pub node_id: String,
    /// Async tasks run at once by this process.
    pub async_concurrency: usize,
    pub lease: Duration,
    /// Attempts an async task gets when the process running it is lost.
    pub max_attempts: i64,
    /// A task's stored stderr is cut at this size: the start is kept.
    pub max_log_bytes: u64,
    pub max_output_bytes: u64,
    pub max_async_input_bytes: u64,
    /// Longest pause allowed between two pieces of an async task's input.
    pub upload_idle_timeout: Duration,
    /// How often the queue is checked without a wake-up (other replicas'
    /// submissions, expired leases).
    pub poll_interval: Duration,
    /// How long finished tasks, their output and logs are kept.
    pub retention: Duration,
    pub limits: Limits,
    /// Every tenant's quotas unless the admin set its own.
    pub quotas: Quotas,
    /// How often nodes heartbeat (this replica's in-process executor too).
    pub heartbeat_every: Duration,
    /// A node whose last heartbeat is older than this, on the database's
    /// clock, is lost.
    pub node_lost_after: Duration,
    /// The in-process executor's zone and labels, as a node of the set.
    pub zone: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where this TaskManager's series go (and its store operations'
    /// timings); a clone of the config records into the same ones.
    pub metrics: Arc<berth_metrics::Metrics>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: "local".into(),
            async_concurrency: 4,
            lease: Duration::from_secs(30),
            max_attempts: 3,
            max_log_bytes: 1024 * 1024,
            max_output_bytes: 1024 * 1024 * 1024,
            max_async_input_bytes: 256 * 1024 * 1024,
            upload_idle_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            retention: Duration::from_secs(7 * 24 * 3600),
            limits: Limits::default(),
            quotas: Quotas::default(),
            heartbeat_every: Duration::from_secs(2),
            node_lost_after: Duration::from_secs(6),
            zone: None,
            labels: std::collections::BTreeMap::new(),
            metrics: Arc::default(),
        }
    }
}

struct Running {
    cancel: CancellationToken,
    tenant: String,
    kind: TaskKind,
    epoch: i64,
}

pub struct TaskManager {
    store: Arc<dyn Store>,
    payloads: Payloads,
    fleet: fleet::Fleet,
    cfg: Config,
    /// Attempts running in this process, by task, so a cancel or a
    /// shutdown can reach them.
    running: Mutex<HashMap<TaskId, Running>>,
    wake: Notify,
    /// Set when work was queued here and the other replicas were not told
    /// yet (see `lifecycle::announce_loop`).
    queued_since_announce: AtomicBool,
    announce: Notify,
    /// Whether every executor has had its orphans removed since start; an
    /// engine that was down at start is reaped once it answers.
    reaped: AtomicBool,
    /// Async tasks finished by this process, for callers waiting on them.
    finished: broadcast::Sender<TaskId>,
    admission: std::sync::OnceLock<Arc<dyn ImageAdmission>>,
    routing: routing::Routing,
    quotas: Arc<quota::QuotaBook>,
    keys: keys::KeyCache,
    /// What running attempts store, for those following them.
    taps: follow::Taps,
    /// The mode of versions attempts were built of, for counting ends.
    modes: metrics::ModeBook,
    /// Held by a scrape while it reads the gauges and renders them.
    scrape: tokio::sync::Mutex<()>,
}

impl TaskManager {
    pub fn new(
        store: Arc<dyn Store>,
        payloads: Payloads,
        executors: Vec<Arc<dyn Executor>>,
        cfg: Config,
    ) -> Arc<Self> {
        let cfg_quotas = cfg.quotas;
        let store: Arc<dyn Store> = Arc::new(timed_store::TimedStore::new(
            store,
            cfg.metrics.store().clone(),
        ));
        Arc::new(Self {
            store,
            payloads,
            fleet: fleet::Fleet::new(executors, &cfg.node_id),
            cfg,
            running: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            queued_since_announce: AtomicBool::new(false),
            announce: Notify::new(),
            reaped: AtomicBool::new(false),
            finished: broadcast::channel(1024).0,
            admission: std::sync::OnceLock::new(),
            routing: routing::Routing::default(),
            quotas: quota::QuotaBook::new(cfg_quotas),
            keys: keys::KeyCache::default(),
            taps: follow::Taps::default(),
            modes: metrics::ModeBook::default(),
            scrape: tokio::sync::Mutex::new(()),
        })
    }

    /// Set once, when the server knows the registry's address.
    pub fn set_image_admission(&self, admission: Arc<dyn ImageAdmission>) {
        let _ = self.admission.set(admission);
    }

    /// The quotas a tenant is held to now.
    pub async fn quotas_of(&self, tenant: &str) -> Result<Quotas, SchedError> {
        self.quotas.of(self.store.as_ref(), tenant).await
    }

    pub fn default_quotas(&self) -> Quotas {
        self.cfg.quotas
    }

    /// Tasks of the tenant running in this process (the quota counts the
    /// whole set's, in the store).
    pub fn running_tasks(&self, tenant: &str) -> u32 {
        let n = self
            .lock_running()
            .values()
            .filter(|r| r.tenant == tenant)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The attempts running in this process, as the fence names them.
    fn running_fences(&self, kind: Option<TaskKind>) -> Vec<(Fence, CancellationToken)> {
        self.lock_running()
            .iter()
            .filter(|(_, r)| kind.is_none_or(|k| r.kind == k))
            .map(|(id, r)| {
                (
                    Fence {
                        id: *id,
                        epoch: r.epoch,
                    },
                    r.cancel.clone(),
                )
            })
            .collect()
    }

    fn lease(&self) -> berth_store::Lease {
        berth_store::Lease {
            owner: self.cfg.node_id.clone(),
            duration_ms: lease_ms(self.cfg.lease),
        }
    }

    fn concurrency_refusal(&self, tenant: &str, q: &Quotas) -> SchedError {
        SchedError::QuotaExceeded(format!(
            "tenant {tenant:?} already has {} tasks running, its max_concurrent_tasks quota",
            q.max_concurrent_tasks
        ))
    }

    fn track(&self, id: TaskId, tenant: &str, kind: TaskKind, epoch: i64) -> CancellationToken {
        let token = CancellationToken::new();
        let entry = Running {
            cancel: token.clone(),
            tenant: tenant.to_owned(),
            kind,
            epoch,
        };
        self.lock_running().insert(id, entry);
        token
    }

    fn untrack(&self, id: TaskId) {
        self.lock_running().remove(&id);
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Running>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single inserts and removes), so a poisoned lock is still usable.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn lease_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
