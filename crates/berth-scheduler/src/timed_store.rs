//! Every store operation the TaskManager makes, timed: a wrapper around
//! the [`Store`] it was given that records each call's duration and
//! failure under the operation's name (the trait method's), so the
//! metrics say which queries are slow without each backend timing its
//! own SQL.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use berth_core::{
    AttemptRecord, Cancel, FunctionConfig, FunctionSummary, FunctionVersion, JoinTokenRecord,
    NewNode, NodeRecord, NodeReport, NodeState, QuotaOverrides, TaskFilter, TaskId, TaskPage,
    TaskRecord, TaskStatus, TenantRecord,
};
use berth_metrics::StoreMetrics;
use berth_store::{
    Event, Events, Fence, Finish, Idempotent, JoinRefused, Lease, Recovered, Result, Store,
};

pub(crate) struct TimedStore {
    inner: Arc<dyn Store>,
    metrics: StoreMetrics,
}

impl TimedStore {
    pub(crate) fn new(inner: Arc<dyn Store>, metrics: StoreMetrics) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let began = Instant::now();
        let result = call.await;
        self.metrics
            .observe(operation, began.elapsed(), result.is_ok());
        result
    }
}

#[async_trait]
impl Store for TimedStore {
    async fn put_api_key(&self, tenant: &str, hash: &[u8; 32], label: &str) -> Result<()> {
        self.timed("put_api_key", self.inner.put_api_key(tenant, hash, label))
            .await
    }

    async fn delete_api_keys_labelled(&self, tenant: &str, label: &str) -> Result<u64> {
        self.timed(
            "delete_api_keys_labelled",
            self.inner.delete_api_keys_labelled(tenant, label),
        )
        .await
    }

    async fn tenant_for_key(&self, hash: &[u8; 32]) -> Result<Option<String>> {
        self.timed("tenant_for_key", self.inner.tenant_for_key(hash))
            .await
    }

    async fn create_tenant(
        &self,
        name: &str,
        quotas: &QuotaOverrides,
        key_hash: &[u8; 32],
    ) -> Result<bool> {
        self.timed(
            "create_tenant",
            self.inner.create_tenant(name, quotas, key_hash),
        )
        .await
    }

    async fn ensure_tenant(&self, name: &str) -> Result<()> {
        self.timed("ensure_tenant", self.inner.ensure_tenant(name))
            .await
    }

    async fn get_tenant(&self, name: &str) -> Result<Option<TenantRecord>> {
        self.timed("get_tenant", self.inner.get_tenant(name)).await
    }

    async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        self.timed("list_tenants", self.inner.list_tenants()).await
    }

    async fn set_tenant_quotas(&self, name: &str, quotas: &QuotaOverrides) -> Result<bool> {
        self.timed(
            "set_tenant_quotas",
            self.inner.set_tenant_quotas(name, quotas),
        )
        .await
    }

    async fn replace_api_keys(
        &self,
        tenant: &str,
        new_hash: Option<&[u8; 32]>,
        label: &str,
    ) -> Result<bool> {
        self.timed(
            "replace_api_keys",
            self.inner.replace_api_keys(tenant, new_hash, label),
        )
        .await
    }

    async fn count_tasks(&self, tenant: &str, status: TaskStatus) -> Result<i64> {
        self.timed("count_tasks", self.inner.count_tasks(tenant, status))
            .await
    }

    async fn put_function(
        &self,
        tenant: &str,
        name: &str,
        config: &FunctionConfig,
        image_id: &str,
    ) -> Result<(FunctionVersion, bool)> {
        self.timed(
            "put_function",
            self.inner.put_function(tenant, name, config, image_id),
        )
        .await
    }

    async fn get_function(&self, tenant: &str, name: &str) -> Result<Option<FunctionSummary>> {
        self.timed("get_function", self.inner.get_function(tenant, name))
            .await
    }

    async fn list_versions(&self, tenant: &str, name: &str) -> Result<Vec<FunctionVersion>> {
        self.timed("list_versions", self.inner.list_versions(tenant, name))
            .await
    }

    async fn get_version(
        &self,
        tenant: &str,
        name: &str,
        version: i64,
    ) -> Result<Option<FunctionVersion>> {
        self.timed("get_version", self.inner.get_version(tenant, name, version))
            .await
    }

    async fn list_functions(&self, tenant: &str) -> Result<Vec<FunctionSummary>> {
        self.timed("list_functions", self.inner.list_functions(tenant))
            .await
    }

    async fn list_all_functions(&self) -> Result<Vec<FunctionSummary>> {
        self.timed("list_all_functions", self.inner.list_all_functions())
            .await
    }

    async fn delete_function(&self, tenant: &str, name: &str) -> Result<bool> {
        self.timed("delete_function", self.inner.delete_function(tenant, name))
            .await
    }

    async fn insert_task(&self, task: &TaskRecord) -> Result<()> {
        self.timed("insert_task", self.inner.insert_task(task))
            .await
    }

    async fn insert_running(
        &self,
        task: &TaskRecord,
        lease: &Lease,
        max_running: u32,
    ) -> Result<bool> {
        self.timed(
            "insert_running",
            self.inner.insert_running(task, lease, max_running),
        )
        .await
    }

    async fn insert_task_idempotent(
        &self,
        task: &TaskRecord,
        key: &str,
        digest: &str,
    ) -> Result<Idempotent> {
        self.timed(
            "insert_task_idempotent",
            self.inner.insert_task_idempotent(task, key, digest),
        )
        .await
    }

    async fn idempotency_key_used(&self, tenant: &str, key: &str) -> Result<bool> {
        self.timed(
            "idempotency_key_used",
            self.inner.idempotency_key_used(tenant, key),
        )
        .await
    }

    async fn get_task(&self, tenant: &str, id: TaskId) -> Result<Option<TaskRecord>> {
        self.timed("get_task", self.inner.get_task(tenant, id))
            .await
    }

    async fn list_attempts(&self, tenant: &str, id: TaskId) -> Result<Vec<AttemptRecord>> {
        self.timed("list_attempts", self.inner.list_attempts(tenant, id))
            .await
    }

    async fn list_tasks(&self, tenant: &str, filter: &TaskFilter) -> Result<TaskPage> {
        self.timed("list_tasks", self.inner.list_tasks(tenant, filter))
            .await
    }

    async fn ping(&self) -> Result<()> {
        self.timed("ping", self.inner.ping()).await
    }

    async fn claim_queued(
        &self,
        lease: &Lease,
        max: u32,
        skip: &[String],
    ) -> Result<Vec<TaskRecord>> {
        self.timed("claim_queued", self.inner.claim_queued(lease, max, skip))
            .await
    }

    async fn renew_leases(&self, lease: &Lease, attempts: &[Fence]) -> Result<()> {
        self.timed("renew_leases", self.inner.renew_leases(lease, attempts))
            .await
    }

    async fn release_task(&self, fence: Fence) -> Result<bool> {
        self.timed("release_task", self.inner.release_task(fence))
            .await
    }

    async fn requeue_task(&self, fence: Fence) -> Result<bool> {
        self.timed("requeue_task", self.inner.requeue_task(fence))
            .await
    }

    async fn finish_task(&self, fence: Fence, finish: &Finish) -> Result<bool> {
        self.timed("finish_task", self.inner.finish_task(fence, finish))
            .await
    }

    async fn cancel_task(&self, tenant: &str, id: TaskId) -> Result<Option<Cancel>> {
        self.timed("cancel_task", self.inner.cancel_task(tenant, id))
            .await
    }

    async fn recover(&self, dead_owner: Option<&str>) -> Result<Recovered> {
        self.timed("recover", self.inner.recover(dead_owner)).await
    }

    async fn expire_tasks(&self, before: i64, max: u32) -> Result<Vec<TaskId>> {
        self.timed("expire_tasks", self.inner.expire_tasks(before, max))
            .await
    }

    async fn running_counts(&self) -> Result<Vec<(String, i64)>> {
        self.timed("running_counts", self.inner.running_counts())
            .await
    }

    async fn queued_counts(&self) -> Result<Vec<(String, i64)>> {
        self.timed("queued_counts", self.inner.queued_counts())
            .await
    }

    async fn hold_singleton(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        self.timed(
            "hold_singleton",
            self.inner.hold_singleton(name, holder, ttl_ms),
        )
        .await
    }

    async fn release_singleton(&self, name: &str, holder: &str) -> Result<()> {
        self.timed(
            "release_singleton",
            self.inner.release_singleton(name, holder),
        )
        .await
    }

    async fn notify(&self, event: &Event) -> Result<()> {
        self.timed("notify", self.inner.notify(event)).await
    }

    async fn listen(&self) -> Result<Option<Events>> {
        self.timed("listen", self.inner.listen()).await
    }

    async fn now_ms(&self) -> Result<i64> {
        self.timed("now_ms", self.inner.now_ms()).await
    }

    async fn create_join_token(&self, id: &str, hash: &[u8; 32], label: &str) -> Result<()> {
        self.timed(
            "create_join_token",
            self.inner.create_join_token(id, hash, label),
        )
        .await
    }

    async fn list_join_tokens(&self) -> Result<Vec<JoinTokenRecord>> {
        self.timed("list_join_tokens", self.inner.list_join_tokens())
            .await
    }

    async fn revoke_join_token(&self, id: &str) -> Result<bool> {
        self.timed("revoke_join_token", self.inner.revoke_join_token(id))
            .await
    }

    async fn join_node(
        &self,
        token_hash: &[u8; 32],
        node: &NewNode,
        credential_hash: &[u8; 32],
    ) -> Result<Result<(), JoinRefused>> {
        self.timed(
            "join_node",
            self.inner.join_node(token_hash, node, credential_hash),
        )
        .await
    }

    async fn node_for_credential(&self, hash: &[u8; 32]) -> Result<Option<String>> {
        self.timed("node_for_credential", self.inner.node_for_credential(hash))
            .await
    }

    async fn heartbeat_node(
        &self,
        id: &str,
        address: &str,
        report: &NodeReport,
    ) -> Result<Option<NodeState>> {
        self.timed(
            "heartbeat_node",
            self.inner.heartbeat_node(id, address, report),
        )
        .await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.timed("list_nodes", self.inner.list_nodes()).await
    }

    async fn get_node(&self, id: &str) -> Result<Option<NodeRecord>> {
        self.timed("get_node", self.inner.get_node(id)).await
    }

    async fn set_node_state(&self, id: &str, state: NodeState) -> Result<bool> {
        self.timed("set_node_state", self.inner.set_node_state(id, state))
            .await
    }

    async fn mark_lost_nodes(&self, max_age_ms: i64) -> Result<Vec<String>> {
        self.timed("mark_lost_nodes", self.inner.mark_lost_nodes(max_age_ms))
            .await
    }

    async fn remove_node(&self, id: &str) -> Result<bool> {
        self.timed("remove_node", self.inner.remove_node(id)).await
    }

    async fn set_secret(&self, name: &str, candidate: &str) -> Result<String> {
        self.timed("set_secret", self.inner.set_secret(name, candidate))
            .await
    }
}
