//! The store of a set: PostgreSQL, shared by every replica. Exclusive
//! decisions are the database's (row locks, `FOR UPDATE SKIP LOCKED`,
//! advisory locks, conditional updates) and so is the clock leases and
//! singletons expire by and nodes' heartbeats are judged by
//! (`berth_now_ms()`, from `clock_timestamp()`). The
//! work is split by job: [`tenants`], [`functions`], [`tasks`] (records,
//! attempts, retention, the running limit), [`queue`] (claims and every
//! transition of a running task), [`singletons`], [`nodes`] (executor
//! nodes, join tokens, the set's secrets), [`events`] (`LISTEN/NOTIFY`),
//! [`registry`] (the registry's index).
//!
//! A lost connection is a [`StoreError::Db`] like any other database
//! error, so the layers above answer 503 and retry; the pool replaces dead
//! connections by itself once the database is back (each connection is
//! checked as it leaves the pool), so a store outlives a database restart
//! or a failover without being recreated.

mod events;
mod functions;
mod nodes;
mod queue;
mod registry;
mod singletons;
mod tasks;
mod tenants;

use std::time::Duration;

use async_trait::async_trait;
use berth_core::{
    AttemptRecord, Cancel, FunctionConfig, FunctionSummary, FunctionVersion, JoinTokenRecord,
    NewNode, NodeRecord, NodeReport, NodeState, QuotaOverrides, TaskFilter, TaskId, TaskPage,
    TaskRecord, TaskStatus, TenantRecord,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::{
    Event, Events, Fence, Finish, Idempotent, JoinRefused, Lease, Recovered, Result, Store,
    StoreError,
};

/// Connections per replica. Most calls are one statement; the claim and
/// recovery loops hold one each for a moment.
const POOL_SIZE: u32 = 16;

/// How long a call waits for a connection before it fails. While the
/// database is down this is how long a call takes to fail with
/// [`StoreError::Db`]: short, so the caller can answer 503 while a client
/// still waits.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Classes of the advisory locks this store takes (the first key of
/// `pg_advisory_xact_lock(int, int)`; the second is a hash), so they never
/// collide with another application's on the same database.
mod lock {
    /// A tenant's running count and the sync call recorded under it.
    pub const RUNNING: i32 = 0x6265_7201;
    /// A function's version numbering.
    pub const VERSIONS: i32 = 0x6265_7202;
}

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// For the dedicated connection each listener opens.
    options: PgConnectOptions,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and brings the
    /// schema up to date. Replicas starting at once are safe: migrations
    /// run under an advisory lock.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url.parse().map_err(StoreError::Db)?).await
    }

    pub async fn connect_with(options: PgConnectOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection cut by a restart is found dead here and
            // replaced, instead of failing the call that drew it.
            .test_before_acquire(true)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool, options })
    }
}

#[async_trait]
impl Store for PgStore {
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

    async fn notify(&self, event: &Event) -> Result<()> {
        events::notify(self, event).await
    }

    async fn listen(&self) -> Result<Option<Events>> {
        events::listen(self).await.map(Some)
    }

    async fn now_ms(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT berth_now_ms()")
            .fetch_one(&self.pool)
            .await?)
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
