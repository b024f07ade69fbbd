//! Control-plane state: API keys, functions and their versions, task records
//! and the durable async queue, plus the task payload files.
//!
//! Architecture Invariant: only this crate speaks SQL. Everything above it
//! sees the [`Store`] trait, so a PostgreSQL implementation can slide in for
//! clusters without the API or scheduler noticing.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod payloads;
mod sqlite;

use async_trait::async_trait;
use berth_core::{
    Cancel, FunctionConfig, FunctionSummary, FunctionVersion, Outcome, QuotaOverrides, TaskError,
    TaskFilter, TaskId, TaskPage, TaskRecord, TaskStatus, TenantRecord, Timing, Usage,
};

pub use payloads::{PayloadWriter, Payloads};
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("payload storage: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How a claimed attempt ended.
#[derive(Debug, Clone)]
pub struct Finish {
    pub outcome: Outcome,
    pub usage: Usage,
    /// `queued_ms` here is the executor's wait for a busy function; it adds
    /// to the time the task already spent in the store's queue.
    pub timing: Timing,
    pub output_bytes: Option<i64>,
    /// Whether the result must survive power loss before this returns.
    /// A sync call's result has already gone to its caller; an async
    /// task's is what its caller will read.
    pub durable: bool,
}

impl Finish {
    /// An attempt that failed before the function produced an outcome.
    pub fn failed(error: TaskError) -> Self {
        Self {
            outcome: Outcome::failed(error),
            usage: Usage::default(),
            timing: Timing::default(),
            output_bytes: None,
            durable: true,
        }
    }
}

/// What a recovery pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub requeued: Vec<TaskId>,
    pub failed: Vec<TaskId>,
}

/// Who holds a running task, and until when (ms since the epoch).
#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: String,
    pub expires_at: i64,
}

/// Outcome of an async submission that carried an idempotency key.
#[derive(Debug, Clone)]
pub enum Idempotent {
    /// The task was recorded now.
    Inserted,
    /// The key was used before: the task it made, and whether the request
    /// then was the same as now.
    Existing {
        task: Box<TaskRecord>,
        same_request: bool,
    },
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Registers a key hash for a tenant. Only hashes are ever stored.
    async fn put_api_key(&self, tenant: &str, hash: &[u8; 32], label: &str) -> Result<()>;
    /// Drops every key with this label (e.g. replacing the admin key).
    async fn delete_api_keys_labelled(&self, tenant: &str, label: &str) -> Result<u64>;
    async fn tenant_for_key(&self, hash: &[u8; 32]) -> Result<Option<String>>;

    /// Creates a tenant holding one key; false if the name is taken.
    async fn create_tenant(
        &self,
        name: &str,
        quotas: &QuotaOverrides,
        key_hash: &[u8; 32],
    ) -> Result<bool>;
    /// Makes sure a tenant record exists (the built-in admin tenant).
    async fn ensure_tenant(&self, name: &str) -> Result<()>;
    async fn get_tenant(&self, name: &str) -> Result<Option<TenantRecord>>;
    async fn list_tenants(&self) -> Result<Vec<TenantRecord>>;
    /// Replaces a tenant's quota settings; false if there is no such tenant.
    async fn set_tenant_quotas(&self, name: &str, quotas: &QuotaOverrides) -> Result<bool>;
    /// Drops every key of the tenant and, when given, records the new one,
    /// in one transaction: a rotation never leaves two valid keys or none.
    /// False if there is no such tenant.
    async fn replace_api_keys(
        &self,
        tenant: &str,
        new_hash: Option<&[u8; 32]>,
        label: &str,
    ) -> Result<bool>;
    /// Tasks of a tenant in one status (queue quotas).
    async fn count_tasks(&self, tenant: &str, status: TaskStatus) -> Result<i64>;

    /// Records a new version unless the config and image id equal the
    /// latest; returns the version in force and whether it is new.
    async fn put_function(
        &self,
        tenant: &str,
        name: &str,
        config: &FunctionConfig,
        image_id: &str,
    ) -> Result<(FunctionVersion, bool)>;
    async fn get_function(&self, tenant: &str, name: &str) -> Result<Option<FunctionSummary>>;
    async fn list_versions(&self, tenant: &str, name: &str) -> Result<Vec<FunctionVersion>>;
    async fn get_version(
        &self,
        tenant: &str,
        name: &str,
        version: i64,
    ) -> Result<Option<FunctionVersion>>;
    async fn list_functions(&self, tenant: &str) -> Result<Vec<FunctionSummary>>;
    /// Every tenant's functions, for work done on all of them at start.
    async fn list_all_functions(&self) -> Result<Vec<FunctionSummary>>;
    /// Removes the function and its versions; its queued tasks fail with
    /// `function_deleted`. Returns false when there was no such function.
    async fn delete_function(&self, tenant: &str, name: &str) -> Result<bool>;

    /// Records a task. For async tasks this is the durable commit point:
    /// once it returns, the task will run. A sync task is inserted already
    /// running under `lease`, and not forced to disk: if the machine loses
    /// power, its caller has lost the call anyway.
    async fn insert_task(&self, task: &TaskRecord, lease: Option<&Lease>) -> Result<()>;
    /// Records an async task under an idempotency key unless the tenant
    /// already used that key; `digest` identifies the request.
    async fn insert_task_idempotent(
        &self,
        task: &TaskRecord,
        key: &str,
        digest: &str,
    ) -> Result<Idempotent>;
    /// Whether the tenant already submitted a task under this key: a retry
    /// of an accepted submission is answered even when the tenant's queue
    /// is full.
    async fn idempotency_key_used(&self, tenant: &str, key: &str) -> Result<bool>;
    async fn get_task(&self, tenant: &str, id: TaskId) -> Result<Option<TaskRecord>>;
    async fn list_tasks(&self, tenant: &str, filter: &TaskFilter) -> Result<TaskPage>;
    /// Cheapest round trip that proves the store answers (readiness).
    async fn ping(&self) -> Result<()>;

    /// Moves up to `max` queued async tasks to running under a lease held by
    /// `owner`, oldest first, counting the attempt. Tasks of the tenants in
    /// `skip` (at their concurrency quota) stay queued.
    async fn claim_queued(
        &self,
        owner: &str,
        max: u32,
        lease_ms: i64,
        skip: &[String],
    ) -> Result<Vec<TaskRecord>>;
    async fn renew_leases(&self, owner: &str, ids: &[TaskId], lease_ms: i64) -> Result<()>;
    /// Hands a claimed attempt back to the queue without counting it, for
    /// when the executor could not start it (full, engine down).
    async fn release_task(&self, id: TaskId, attempt: i64) -> Result<bool>;
    /// Hands a claimed attempt back to the queue with the attempt counted,
    /// for when the executor lost it mid-run (its container or engine
    /// died): the caller checks that attempts remain.
    async fn requeue_task(&self, id: TaskId, attempt: i64) -> Result<bool>;
    /// Records the end of an attempt. Refused (false) unless the task is
    /// still running that attempt: a cancel or a recovery won the race.
    async fn finish_task(&self, id: TaskId, attempt: i64, finish: &Finish) -> Result<bool>;
    async fn cancel_task(&self, tenant: &str, id: TaskId) -> Result<Option<Cancel>>;
    /// Requeues running tasks whose lease expired, or whose owner is
    /// `dead_owner`; tasks out of attempts, and sync tasks (their caller is
    /// gone), fail with `lost`.
    async fn recover(&self, dead_owner: Option<&str>) -> Result<Recovered>;
    /// Deletes up to `max` finished tasks that ended before `before` (ms)
    /// and returns their ids so their payloads can be removed too.
    async fn expire_tasks(&self, before: i64, max: u32) -> Result<Vec<TaskId>>;
}
