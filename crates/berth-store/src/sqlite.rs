//! The embedded store of one node: a SQLite file. Its writers take the
//! database's one write lock at `BEGIN IMMEDIATE`, which serialises every
//! decision a set would make with row locks; its clock is the node's.
//! The work is split by job: [`tenants`] (keys and tenants), [`functions`]
//! (versions), [`tasks`] (records, attempts, retention), [`queue`]
//! (claims and every transition of a running task), [`singletons`],
//! [`nodes`] (executor nodes, join tokens, the set's secrets),
//! [`registry`] (the registry's index).

mod functions;
mod nodes;
mod queue;
mod registry;
mod singletons;
mod tasks;
mod tenants;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use berth_core::{
    AttemptRecord, Cancel, FunctionConfig, FunctionSummary, FunctionVersion, JoinTokenRecord,
    NewNode, NodeRecord, NodeReport, NodeState, QuotaOverrides, TaskFilter, TaskId, TaskPage,
    TaskRecord, TaskStatus, TenantRecord,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::{
    Event, Events, Fence, Finish, Idempotent, JoinRefused, Lease, Recovered, Result, Store,
};

/// One SQLite file in WAL mode with `synchronous=FULL`, so a committed
/// task survives power loss, not just a process crash. Sync calls' rows go
/// through a second pool with `synchronous=NORMAL` (in WAL mode: durable
/// against a crash of the process, not of the machine), which saves two
/// fsyncs on every call's path.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    relaxed: SqlitePool,
}

impl SqliteStore {
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Checkpoints run in the background (below): left automatic,
            // one in every few hundred commits pays for copying and
            // syncing the whole WAL, a tenth of a busy server's time.
            .pragma("wal_autocheckpoint", "0");
        let pool = Self::connect(opts.clone()).await?;
        let relaxed = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.synchronous(SqliteSynchronous::Normal))
            .await?;
        spawn_checkpoints(pool.clone());
        Ok(Self { pool, relaxed })
    }

    pub async fn in_memory() -> Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // One connection: every in-memory connection is its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self {
            relaxed: pool.clone(),
            pool,
        })
    }

    async fn connect(opts: SqliteConnectOptions) -> Result<SqlitePool> {
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(pool)
    }

    fn pool_for(&self, durable: bool) -> &SqlitePool {
        if durable { &self.pool } else { &self.relaxed }
    }

    /// A transaction that will write. It takes the write lock at BEGIN: a
    /// deferred one that reads first and then writes fails at once with
    /// "database is locked" (no busy wait) whenever another connection
    /// wrote in between, which a cancel racing a finish, or recovery
    /// racing a busy queue, hits as a matter of course.
    async fn write_tx(&self, durable: bool) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool_for(durable).begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Copies the WAL back into the database every second, off the request
/// path. PASSIVE never waits for readers or writers; a WAL that readers
/// kept from being reset is caught up by a later pass.
fn spawn_checkpoints(pool: SqlitePool) {
    tokio::spawn(async move {
        while !pool.is_closed() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
    });
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_api_key(&self, tenant: &str, hash: &[u8; 32], label: &str) -> Result<()> {
        tenants::put_api_key(self, tenant, hash, label).await
    }

    async fn delete_api_keys_labelled(&self, tenant: &str, label: &str) -> Result<u64> {
        tenants::delete_api_keys_labelled(self, tenant, label).await
    }

    async fn tenant_for_key(&self, hash: &[u8; 32]) -> Result<Option<String>> {
        tenants::tenant_for_key(self, hash).await
    }

    async fn create_tenant(
        &self,
        name: &str,
        quotas: &QuotaOverrides,
        key_hash: &[u8; 32],
    ) -> Result<bool> {
        tenants::create_tenant(self, name, quotas, key_hash).await
    }

    async fn ensure_tenant(&self, name: &str) -> Result<()> {
        tenants::ensure_tenant(self, name).await
    }

    async fn get_tenant(&self, name: &str) -> Result<Option<TenantRecord>> {
        tenants::get_tenant(self, name).await
    }

    async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        tenants::list_tenants(self).await
    }

    async fn set_tenant_quotas(&self, name: &str, quotas: &QuotaOverrides) -> Result<bool> {
        tenants::set_tenant_quotas(self, name, quotas).await
    }

    async fn replace_api_keys(
        &self,
        tenant: &str,
        new_hash: Option<&[u8; 32]>,
        label: &str,
    ) -> Result<bool> {
        tenants::replace_api_keys(self, tenant, new_hash, label).await
    }

    async fn count_tasks(&self, tenant: &str, status: TaskStatus) -> Result<i64> {
        tasks::count_tasks(self, tenant, status).await
    }

    async fn put_function(
        &self,
        tenant: &str,
        name: &str,
        config: &FunctionConfig,
        image_id: &str,
    ) -> Result<(FunctionVersion, bool)> {
        functions::put_function(self, tenant, name, config, image_id).await
    }

    async fn get_function(&self, tenant: &str, name: &str) -> Result<Option<FunctionSummary>> {
        functions::get_function(self, tenant, name).await
    }

    async fn list_versions(&self, tenant: &str, name: &str) -> Result<Vec<FunctionVersion>> {
        functions::list_versions(self, tenant, name).await
    }

    async fn get_version(
        &self,
        tenant: &str,
        name: &str,
        version: i64,
    ) -> Result<Option<FunctionVersion>> {
        functions::get_version(self, tenant, name, version).await
    }

    async fn list_functions(&self, tenant: &str) -> Result<Vec<FunctionSummary>> {
        functions::list_functions(self, Some(tenant)).await
    }

    async fn list_all_functions(&self) -> Result<Vec<FunctionSummary>> {
        functions::list_functions(self, None).await
    }

    async fn delete_function(&self, tenant: &str, name: &str) -> Result<bool> {
        functions::delete_function(self, tenant, name).await
    }

    async fn insert_task(&self, task: &TaskRecord) -> Result<()> {
        tasks::insert_task(self, task).await
    }

    async fn insert_running(
        &self,
        task: &TaskRecord,
        lease: &Lease,
        max_running: u32,
    ) -> Result<bool> {
        tasks::insert_running(self, task, lease, max_running).await
    }

    async fn insert_task_idempotent(
        &self,
        task: &TaskRecord,
        key: &str,
        digest: &str,
    ) -> Result<Idempotent> {
        tasks::insert_task_idempotent(self, task, key, digest).await
    }

    async fn idempotency_key_used(&self, tenant: &str, key: &str) -> Result<bool> {
        tasks::idempotency_key_used(self, tenant, key).await
    }

    async fn get_task(&self, tenant: &str, id: TaskId) -> Result<Option<TaskRecord>> {
        tasks::get_task(self, tenant, id).await
    }

    async fn list_attempts(&self, tenant: &str, id: TaskId) -> Result<Vec<AttemptRecord>> {
        tasks::list_attempts(self, tenant, id).await
    }

    async fn list_tasks(&self, tenant: &str, filter: &TaskFilter) -> Result<TaskPage> {
        tasks::list_tasks(self, tenant, filter).await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn claim_queued(
        &self,
        lease: &Lease,
        max: u32,
        skip: &[String],
    ) -> Result<Vec<TaskRecord>> {
        queue::claim_queued(self, lease, max, skip).await
    }

    async fn renew_leases(&self, lease: &Lease, attempts: &[Fence]) -> Result<()> {
        queue::renew_leases(self, lease, attempts).await
    }

    async fn release_task(&self, fence: Fence) -> Result<bool> {
        queue::release_task(self, fence).await
    }

    async fn requeue_task(&self, fence: Fence) -> Result<bool> {
        queue::requeue_task(self, fence).await
    }

    async fn finish_task(&self, fence: Fence, finish: &Finish) -> Result<bool> {
        queue::finish_task(self, fence, finish).await
    }

    async fn cancel_task(&self, tenant: &str, id: TaskId) -> Result<Option<Cancel>> {
        queue::cancel_task(self, tenant, id).await
    }

    async fn recover(&self, dead_owner: Option<&str>) -> Result<Recovered> {
        queue::recover(self, dead_owner).await
    }

    async fn expire_tasks(&self, before: i64, max: u32) -> Result<Vec<TaskId>> {
        tasks::expire_tasks(self, before, max).await
    }

    async fn running_counts(&self) -> Result<Vec<(String, i64)>> {
        tasks::counts_in(self, TaskStatus::Running).await
    }

    async fn queued_counts(&self) -> Result<Vec<(String, i64)>> {
        tasks::counts_in(self, TaskStatus::Queued).await
    }

    async fn hold_singleton(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        singletons::hold(self, name, holder, ttl_ms).await
    }

    async fn release_singleton(&self, name: &str, holder: &str) -> Result<()> {
        singletons::release(self, name, holder).await
    }

    /// One node: nobody else to tell.
    async fn notify(&self, _event: &Event) -> Result<()> {
        Ok(())
    }

    async fn listen(&self) -> Result<Option<Events>> {
        Ok(None)
    }

    /// The node's own clock: with one node there is no other to disagree.
    async fn now_ms(&self) -> Result<i64> {
        Ok(berth_core::now_ms())
    }

    async fn create_join_token(&self, id: &str, hash: &[u8; 32], label: &str) -> Result<()> {
        nodes::create_join_token(self, id, hash, label).await
    }

    async fn list_join_tokens(&self) -> Result<Vec<JoinTokenRecord>> {
        nodes::list_join_tokens(self).await
    }

    async fn revoke_join_token(&self, id: &str) -> Result<bool> {
        nodes::revoke_join_token(self, id).await
    }

    async fn join_node(
        &self,
        token_hash: &[u8; 32],
        node: &NewNode,
        credential_hash: &[u8; 32],
    ) -> Result<Result<(), JoinRefused>> {
        nodes::join_node(self, token_hash, node, credential_hash).await
    }

    async fn node_for_credential(&self, hash: &[u8; 32]) -> Result<Option<String>> {
        nodes::node_for_credential(self, hash).await
    }

    async fn heartbeat_node(
        &self,
        id: &str,
        address: &str,
        report: &NodeReport,
    ) -> Result<Option<NodeState>> {
        nodes::heartbeat_node(self, id, address, report).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        nodes::list_nodes(self).await
    }

    async fn get_node(&self, id: &str) -> Result<Option<NodeRecord>> {
        nodes::get_node(self, id).await
    }

    async fn set_node_state(&self, id: &str, state: NodeState) -> Result<bool> {
        nodes::set_node_state(self, id, state).await
    }

    async fn mark_lost_nodes(&self, max_age_ms: i64) -> Result<Vec<String>> {
        nodes::mark_lost_nodes(self, max_age_ms).await
    }

    async fn remove_node(&self, id: &str) -> Result<bool> {
        nodes::remove_node(self, id).await
    }

    async fn set_secret(&self, name: &str, candidate: &str) -> Result<String> {
        nodes::set_secret(self, name, candidate).await
    }
}

#[cfg(test)]
mod tests;
