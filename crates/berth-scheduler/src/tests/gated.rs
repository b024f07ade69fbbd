//! A store that can hold back the results attempts write, so a test can
//! put another writer (another replica's claim) between an attempt's end
//! and its record, deterministically. Everything else goes straight to
//! the store it wraps.

use std::sync::Arc;

use async_trait::async_trait;
use berth_core::{
    Cancel, FunctionConfig, FunctionSummary, FunctionVersion, QuotaOverrides, TaskFilter, TaskId,
    TaskPage, TaskRecord, TaskStatus, TenantRecord,
};
use berth_store::{Finish, Idempotent, Lease, Recovered, Result, Store};
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

pub(super) struct GatedStore {
    inner: Arc<dyn Store>,
    /// Writes of results wait while someone holds this for writing.
    gate: Arc<RwLock<()>>,
}

/// While alive, attempts' results (`finish_task`, `requeue_task`) wait.
pub(super) struct Closed {
    _guard: OwnedRwLockWriteGuard<()>,
}

impl GatedStore {
    pub(super) fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            gate: Arc::new(RwLock::new(())),
        }
    }

    pub(super) async fn close(&self) -> Closed {
        Closed {
            _guard: Arc::clone(&self.gate).write_owned().await,
        }
    }
}

#[async_trait]
impl Store for GatedStore {
    async fn put_api_key(&self, tenant: &str, hash: &[u8; 32], label: &str) -> Result<()> {
        self.inner.put_api_key(tenant, hash, label).await
    }
    async fn delete_api_keys_labelled(&self, tenant: &str, label: &str) -> Result<u64> {
        self.inner.delete_api_keys_labelled(tenant, label).await
    }
    async fn tenant_for_key(&self, hash: &[u8; 32]) -> Result<Option<String>> {
        self.inner.tenant_for_key(hash).await
    }
    async fn create_tenant(
        &self,
        name: &str,
        quotas: &QuotaOverrides,
        key_hash: &[u8; 32],
    ) -> Result<bool> {
        self.inner.create_tenant(name, quotas, key_hash).await
    }
    async fn ensure_tenant(&self, name: &str) -> Result<()> {
        self.inner.ensure_tenant(name).await
    }
    async fn get_tenant(&self, name: &str) -> Result<Option<TenantRecord>> {
        self.inner.get_tenant(name).await
    }
    async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        self.inner.list_tenants().await
    }
    async fn set_tenant_quotas(&self, name: &str, quotas: &QuotaOverrides) -> Result<bool> {
        self.inner.set_tenant_quotas(name, quotas).await
    }
    async fn replace_api_keys(
        &self,
        tenant: &str,
        new_hash: Option<&[u8; 32]>,
        label: &str,
    ) -> Result<bool> {
        self.inner.replace_api_keys(tenant, new_hash, label).await
    }
    async fn count_tasks(&self, tenant: &str, status: TaskStatus) -> Result<i64> {
        self.inner.count_tasks(tenant, status).await
    }
    async fn put_function(
        &self,
        tenant: &str,
        name: &str,
        config: &FunctionConfig,
        image_id: &str,
    ) -> Result<(FunctionVersion, bool)> {
        self.inner
            .put_function(tenant, name, config, image_id)
            .await
    }
    async fn get_function(&self, tenant: &str, name: &str) -> Result<Option<FunctionSummary>> {
        self.inner.get_function(tenant, name).await
    }
    async fn list_versions(&self, tenant: &str, name: &str) -> Result<Vec<FunctionVersion>> {
        self.inner.list_versions(tenant, name).await
    }
    async fn get_version(
        &self,
        tenant: &str,
        name: &str,
        version: i64,
    ) -> Result<Option<FunctionVersion>> {
        self.inner.get_version(tenant, name, version).await
    }
    async fn list_functions(&self, tenant: &str) -> Result<Vec<FunctionSummary>> {
        self.inner.list_functions(tenant).await
    }
    async fn list_all_functions(&self) -> Result<Vec<FunctionSummary>> {
        self.inner.list_all_functions().await
    }
    async fn delete_function(&self, tenant: &str, name: &str) -> Result<bool> {
        self.inner.delete_function(tenant, name).await
    }
    async fn insert_task(&self, task: &TaskRecord, lease: Option<&Lease>) -> Result<()> {
        self.inner.insert_task(task, lease).await
    }
    async fn insert_task_idempotent(
        &self,
        task: &TaskRecord,
        key: &str,
        digest: &str,
    ) -> Result<Idempotent> {
        self.inner.insert_task_idempotent(task, key, digest).await
    }
    async fn idempotency_key_used(&self, tenant: &str, key: &str) -> Result<bool> {
        self.inner.idempotency_key_used(tenant, key).await
    }
    async fn get_task(&self, tenant: &str, id: TaskId) -> Result<Option<TaskRecord>> {
        self.inner.get_task(tenant, id).await
    }
    async fn list_tasks(&self, tenant: &str, filter: &TaskFilter) -> Result<TaskPage> {
        self.inner.list_tasks(tenant, filter).await
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
    async fn claim_queued(
        &self,
        owner: &str,
        max: u32,
        lease_ms: i64,
        skip: &[String],
    ) -> Result<Vec<TaskRecord>> {
        self.inner.claim_queued(owner, max, lease_ms, skip).await
    }
    async fn renew_leases(&self, owner: &str, ids: &[TaskId], lease_ms: i64) -> Result<()> {
        self.inner.renew_leases(owner, ids, lease_ms).await
    }
    async fn release_task(&self, id: TaskId, attempt: i64) -> Result<bool> {
        self.inner.release_task(id, attempt).await
    }
    async fn requeue_task(&self, id: TaskId, attempt: i64) -> Result<bool> {
        let _open = self.gate.read().await;
        self.inner.requeue_task(id, attempt).await
    }
    async fn finish_task(&self, id: TaskId, attempt: i64, finish: &Finish) -> Result<bool> {
        let _open = self.gate.read().await;
        self.inner.finish_task(id, attempt, finish).await
    }
    async fn cancel_task(&self, tenant: &str, id: TaskId) -> Result<Option<Cancel>> {
        self.inner.cancel_task(tenant, id).await
    }
    async fn recover(&self, dead_owner: Option<&str>) -> Result<Recovered> {
        self.inner.recover(dead_owner).await
    }
    async fn expire_tasks(&self, before: i64, max: u32) -> Result<Vec<TaskId>> {
        self.inner.expire_tasks(before, max).await
    }
}
