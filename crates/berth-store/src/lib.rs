//! Control-plane state: API keys, functions and their versions, task records
//! and their attempts, the durable async queue, singleton leases, executor
//! nodes and their join tokens, the events replicas wake each other with,
//! and the registry's index (both backends implement
//! [`berth_registry::RegistryIndex`]). SQLite embedded for one node,
//! PostgreSQL for a set of replicas.
//!
//! Architecture Invariant: only this crate speaks SQL. Everything above it
//! sees the [`Store`] trait.
//!
//! Architecture Invariant: every exclusive decision of a set is the
//! database's: claims take rows with `FOR UPDATE SKIP LOCKED`, leases and
//! singletons expire on the database's clock, and every transition of a
//! running task is a conditional update on its attempt's epoch (fencing),
//! so a replica that wakes after its lease lapsed can change nothing.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod events;
mod nodes;
mod payloads;
mod policy;
mod postgres;
mod registry;
mod rows;
mod sqlite;

use async_trait::async_trait;
use berth_core::{
    AttemptRecord, Cancel, FunctionConfig, FunctionSummary, FunctionVersion, JoinTokenRecord,
    NewNode, NodeRecord, NodeReport, NodeState, Outcome, QuotaOverrides, TaskError, TaskFilter,
    TaskId, TaskPage, TaskRecord, TaskStatus, TenantRecord, Timing, Usage,
};

pub use payloads::{PayloadWriter, Payloads};
pub use postgres::PgStore;
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

impl StoreError {
    /// Whether the database could not be reached (down, restarting, failing
    /// over, pool exhausted) rather than refusing the request: worth a 503
    /// and a retry, not a 500.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Db(
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            )
        )
    }
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
    /// task's is what its caller will read. A backend may commit durably
    /// anyway (PostgreSQL does).
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

/// Who holds a running task, and for how long from now on the database's
/// clock (zero or less: lapsed at once).
#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: String,
    pub duration_ms: i64,
}

/// One attempt as the fence knows it: the task and the epoch its claim
/// got. Epochs only grow (a release does not give one back), so an epoch
/// names one claim forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fence {
    pub id: TaskId,
    pub epoch: i64,
}

/// What replicas of a set tell each other through the store (PostgreSQL
/// `LISTEN/NOTIFY`). Only ever a hint: whoever acts on one reads the truth
/// from the store; polling covers a lost one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Work was queued: dispatchers look now rather than at their next poll.
    Queued,
    /// A task was cancelled: the replica running it kills the attempt now
    /// rather than when it ends (its finish would be refused anyway).
    Cancelled(TaskId),
    /// A cached record changed: drop it.
    Invalidate(Invalidation),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The tenant's API keys changed (rotation, revocation).
    Keys { tenant: String },
    /// The tenant's quotas changed.
    Quotas { tenant: String },
    /// The function's versions changed (deploy, delete).
    Function { tenant: String, name: String },
}

/// Events as they arrive; ends when the connection is lost (the listener
/// then reconnects and treats the gap as "everything may have changed").
pub type Events = std::pin::Pin<Box<dyn futures::Stream<Item = Event> + Send>>;

/// Why a join was turned away. Each is a 401 to the node; they are told
/// apart only in the set's own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// No token has that hash.
    Unknown,
    Revoked,
    /// Tokens are single-use and this one was.
    Used,
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

    /// Records an async task (queued). This is the durable commit point:
    /// once it returns, the task will run.
    async fn insert_task(&self, task: &TaskRecord) -> Result<()>;
    /// Records a sync call's task already running under `lease` at epoch 1,
    /// unless the tenant already has `max_running` tasks running across
    /// the set (false then, and nothing is recorded). Running tasks of
    /// both kinds count; async claims are not held to the limit here
    /// (their quota is `claim_queued`'s `skip`). Not forced to disk: if
    /// the machine loses power, its caller has lost the call anyway.
    async fn insert_running(
        &self,
        task: &TaskRecord,
        lease: &Lease,
        max_running: u32,
    ) -> Result<bool>;
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
    /// Every claim of the task, oldest first (empty for another tenant's).
    /// A released claim stays, ended `Released`, and the next claim runs
    /// under its attempt number again. Sync calls have none: they are
    /// never claimed, and their record is their one run.
    async fn list_attempts(&self, tenant: &str, id: TaskId) -> Result<Vec<AttemptRecord>>;
    async fn list_tasks(&self, tenant: &str, filter: &TaskFilter) -> Result<TaskPage>;
    /// Cheapest round trip that proves the store answers (readiness).
    async fn ping(&self) -> Result<()>;

    /// Moves up to `max` queued async tasks to running under a lease held by
    /// `lease.owner`, counting the attempt and giving each claim a new
    /// epoch (recorded as an attempt row naming the owner). Fair: the
    /// oldest task of each tenant and function goes before the second of
    /// any, oldest first among equals, within the oldest thousand queued
    /// tasks (a claim costs the same however deep the queue). Tasks of the
    /// tenants in `skip` (at their concurrency quota) stay queued.
    /// Concurrent claimers, on any replica, never get the same task.
    /// Returned oldest first.
    async fn claim_queued(
        &self,
        lease: &Lease,
        max: u32,
        skip: &[String],
    ) -> Result<Vec<TaskRecord>>;
    /// Extends the leases of these attempts still held by `lease.owner`,
    /// even one that lapsed if no recovery took it yet.
    async fn renew_leases(&self, lease: &Lease, attempts: &[Fence]) -> Result<()>;
    /// Hands a claimed attempt back to the queue without counting it, for
    /// when the executor could not start it (full, engine down).
    async fn release_task(&self, fence: Fence) -> Result<bool>;
    /// Hands a claimed attempt back to the queue with the attempt counted,
    /// for when the executor lost it mid-run (its container or engine
    /// died): the caller checks that attempts remain.
    async fn requeue_task(&self, fence: Fence) -> Result<bool>;
    /// Records the end of an attempt. Refused (false) unless the task is
    /// still running that epoch: a cancel, a recovery or a newer claim won.
    async fn finish_task(&self, fence: Fence, finish: &Finish) -> Result<bool>;
    async fn cancel_task(&self, tenant: &str, id: TaskId) -> Result<Option<Cancel>>;
    /// Requeues running tasks whose lease expired on the database's clock,
    /// or whose owner is `dead_owner` (a replica restarting under its own
    /// name); tasks out of attempts, and sync tasks (their caller is
    /// gone), fail with `lost`. Their attempts end as `Expired` (lapsed)
    /// or `Lost` (the owner said it died, lapsed or not). A task whose
    /// finish is committing at that moment is left to it.
    async fn recover(&self, dead_owner: Option<&str>) -> Result<Recovered>;
    /// Deletes up to `max` finished tasks that ended before `before` (ms)
    /// and returns their ids so their payloads can be removed too.
    async fn expire_tasks(&self, before: i64, max: u32) -> Result<Vec<TaskId>>;

    /// Tasks running now per tenant, across the set (async claims check
    /// the tenants' concurrency quotas against it).
    async fn running_counts(&self) -> Result<Vec<(String, i64)>>;
    /// Tasks queued now per tenant, across the set (the queue's depth in
    /// the metrics).
    async fn queued_counts(&self) -> Result<Vec<(String, i64)>>;

    /// Takes or keeps the singleton `name` (the lease reaper, retention,
    /// registry GC) for `holder` until `ttl_ms` from now on the database's
    /// clock; true while `holder` has it. Another holder gets it only
    /// after it expired, so a dead holder's job moves on by itself.
    async fn hold_singleton(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool>;
    /// Gives a singleton up at once (clean shutdown).
    async fn release_singleton(&self, name: &str, holder: &str) -> Result<()>;

    /// Tells the other replicas (not necessarily this one). A store of one
    /// node has no one to tell and does nothing. Send it after the commit
    /// it announces, never from inside a transaction (on PostgreSQL a
    /// transaction that notifies serialises every commit behind it), and
    /// coalesce: each call is one notification to every listener.
    async fn notify(&self, event: &Event) -> Result<()>;
    /// Events from every replica, this one included; `None` when the store
    /// carries none (one node: nothing happens elsewhere).
    async fn listen(&self) -> Result<Option<Events>>;
    /// The database's clock, ms since the Unix epoch: what leases and
    /// singletons expire by.
    async fn now_ms(&self) -> Result<i64>;

    /// Records a join token by its hash (the secret is shown once and
    /// never stored). `id` is its public handle.
    async fn create_join_token(&self, id: &str, hash: &[u8; 32], label: &str) -> Result<()>;
    /// Every token, newest first.
    async fn list_join_tokens(&self) -> Result<Vec<JoinTokenRecord>>;
    /// False when there is no such token.
    async fn revoke_join_token(&self, id: &str) -> Result<bool>;
    /// In one transaction: spends the token (single use) and records the
    /// node, `Active`, with its credential's hash and its first heartbeat
    /// now on the database's clock. Refused, recording nothing, for a
    /// token unknown, revoked or already used.
    async fn join_node(
        &self,
        token_hash: &[u8; 32],
        node: &NewNode,
        credential_hash: &[u8; 32],
    ) -> Result<Result<(), JoinRefused>>;
    /// The node a credential belongs to.
    async fn node_for_credential(&self, hash: &[u8; 32]) -> Result<Option<String>>;
    /// Records a heartbeat at the database's now with the node's report
    /// and address. A `Lost` node becomes `Active` again (it re-registers);
    /// a cordoned or draining one stays so. Returns the node's state after,
    /// `None` if there is no such node.
    async fn heartbeat_node(
        &self,
        id: &str,
        address: &str,
        report: &NodeReport,
    ) -> Result<Option<NodeState>>;
    /// Every node, by id, with its heartbeat's age on the database's clock.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>>;
    async fn get_node(&self, id: &str) -> Result<Option<NodeRecord>>;
    /// Sets a node's state (cordon, uncordon, drain); false if no such node.
    async fn set_node_state(&self, id: &str, state: NodeState) -> Result<bool>;
    /// Marks `Lost` every node not already lost whose last heartbeat is
    /// older than `max_age_ms` on the database's clock; returns their ids.
    async fn mark_lost_nodes(&self, max_age_ms: i64) -> Result<Vec<String>>;
    /// Forgets a node (it left for good); its credential stops working.
    async fn remove_node(&self, id: &str) -> Result<bool>;
    /// The set-wide secret named `name`: `candidate` is stored if there is
    /// none yet, and whatever is stored is returned, so every replica ends
    /// up with the same one.
    async fn set_secret(&self, name: &str, candidate: &str) -> Result<String>;
}
