//! A store wrapper that lets a test stand between one replica and the
//! store it shares with the others, deterministically:
//!
//! - a gate that holds back what a replica writes about its own claims
//!   and singletons (`finish_task`, `requeue_task`, `renew_leases`,
//!   `hold_singleton`): closed, the replica is cut off from the set as
//!   one behind a partition or frozen in a long pause is, and another
//!   writer (another replica's recovery or claim) can act first;
//! - a record of what the replica asked and was answered (singletons
//!   held, recoveries, retention passes, claims, fenced finishes, events
//!   handled), so a test can say which replica did what;
//! - optionally, an [`EventBus`] shared by the replicas' wrappers, which
//!   carries events between them over a store that has none (SQLite).
//!
//! Everything else goes straight to the store it wraps.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use async_trait::async_trait;
use berth_core::{
    AttemptRecord, Cancel, FunctionConfig, FunctionSummary, FunctionVersion, JoinTokenRecord,
    NewNode, NodeRecord, NodeReport, NodeState, QuotaOverrides, TaskFilter, TaskId, TaskPage,
    TaskRecord, TaskStatus, TenantRecord,
};
use berth_store::{
    Event, Events, Fence, Finish, Idempotent, JoinRefused, Lease, Recovered, Result, Store,
    StoreError,
};
use futures::{Stream, StreamExt};
use tokio::sync::{OwnedRwLockWriteGuard, RwLock, broadcast};

/// Events between the wrappers of one set, for a store that carries none:
/// every listener hears every event sent after it began to listen, its
/// own included, as PostgreSQL's `LISTEN/NOTIFY` delivers them.
#[derive(Clone)]
pub(super) struct EventBus(broadcast::Sender<Event>);

impl EventBus {
    pub(super) fn new() -> Self {
        Self(broadcast::channel(1024).0)
    }

    fn listen(&self) -> Events {
        let rx = self.0.subscribe();
        // A listener that fell behind lost events: its stream ends, so it
        // treats the gap as "everything may have changed".
        futures::stream::unfold(rx, |mut rx| async move {
            let event = rx.recv().await.ok()?;
            Some((event, rx))
        })
        .boxed()
    }
}

/// What a replica asked of the store and was answered.
#[derive(Debug, Default, Clone)]
pub(super) struct Record {
    /// `hold_singleton` answers: the singleton's name and whether held.
    pub holds: Vec<(String, bool)>,
    /// `recover` calls (the reaper's passes, a restart's recovery).
    pub recoveries: usize,
    /// `expire_tasks` calls (retention passes).
    pub expiries: usize,
    /// `claim_queued` calls that returned.
    pub claims: usize,
    /// `finish_task` answers, by fence.
    pub finishes: Vec<(Fence, bool)>,
    /// Streams `listen` handed out.
    pub listening: usize,
    /// Events the replica's listener took and acted on: counted when it
    /// asks for the next one, which it does only once done with this one.
    pub handled: Vec<Event>,
}

impl Record {
    /// Whether the replica held the singleton at its last try, and how
    /// many tries it made.
    pub fn held(&self, name: &str) -> (bool, usize) {
        let tries: Vec<bool> = self
            .holds
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, held)| *held)
            .collect();
        (tries.last().copied().unwrap_or(false), tries.len())
    }
}

pub(super) struct GatedStore {
    inner: Arc<dyn Store>,
    /// The replica's own writes wait while someone holds this for writing.
    gate: Arc<RwLock<()>>,
    record: Arc<Mutex<Record>>,
    bus: Option<EventBus>,
    /// 0: counts answer; 1: the next claim that takes something arms 2;
    /// 2: the next `running_counts` fails (and disarms).
    count_failure: AtomicU8,
}

/// While alive, the replica's writes about its claims and singletons wait.
pub(super) struct Closed {
    _guard: OwnedRwLockWriteGuard<()>,
}

impl GatedStore {
    pub(super) fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            gate: Arc::new(RwLock::new(())),
            record: Arc::default(),
            bus: None,
            count_failure: AtomicU8::new(0),
        }
    }

    /// With events carried by `bus` instead of the wrapped store.
    pub(super) fn with_bus(inner: Arc<dyn Store>, bus: EventBus) -> Self {
        Self {
            bus: Some(bus),
            ..Self::new(inner)
        }
    }

    pub(super) async fn close(&self) -> Closed {
        Closed {
            _guard: Arc::clone(&self.gate).write_owned().await,
        }
    }

    /// Makes the store fail to count running tasks once, right after the
    /// next claim that takes something: the claim's check against the
    /// quotas cannot be made.
    pub(super) fn fail_the_check_after_the_next_claim(&self) {
        self.count_failure.store(1, Ordering::SeqCst);
    }

    /// What the replica did so far.
    pub(super) fn record(&self) -> Record {
        lock(&self.record).clone()
    }

    fn note(&self, f: impl FnOnce(&mut Record)) {
        f(&mut lock(&self.record));
    }
}

fn lock(m: &Mutex<Record>) -> MutexGuard<'_, Record> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A listener's stream that notes each event once the listener is done
/// with it (when it asks for the next).
struct Handled {
    inner: Events,
    last: Option<Event>,
    record: Arc<Mutex<Record>>,
}

impl Stream for Handled {
    type Item = Event;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if let Some(done) = self.last.take() {
            lock(&self.record).handled.push(done);
        }
        let next = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(Some(event)) = &next {
            self.last = Some(event.clone());
        }
        next
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
    async fn insert_task(&self, task: &TaskRecord) -> Result<()> {
        self.inner.insert_task(task).await
    }
    async fn insert_running(
        &self,
        task: &TaskRecord,
        lease: &Lease,
        max_running: u32,
    ) -> Result<bool> {
        self.inner.insert_running(task, lease, max_running).await
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
    async fn list_attempts(&self, tenant: &str, id: TaskId) -> Result<Vec<AttemptRecord>> {
        self.inner.list_attempts(tenant, id).await
    }
    async fn list_tasks(&self, tenant: &str, filter: &TaskFilter) -> Result<TaskPage> {
        self.inner.list_tasks(tenant, filter).await
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
    async fn claim_queued(
        &self,
        lease: &Lease,
        max: u32,
        skip: &[String],
    ) -> Result<Vec<TaskRecord>> {
        let claimed = self.inner.claim_queued(lease, max, skip).await;
        self.note(|r| r.claims += 1);
        if claimed.as_ref().is_ok_and(|c| !c.is_empty()) {
            let _ = self
                .count_failure
                .compare_exchange(1, 2, Ordering::SeqCst, Ordering::SeqCst);
        }
        claimed
    }
    async fn renew_leases(&self, lease: &Lease, attempts: &[Fence]) -> Result<()> {
        let _open = self.gate.read().await;
        self.inner.renew_leases(lease, attempts).await
    }
    async fn release_task(&self, fence: Fence) -> Result<bool> {
        self.inner.release_task(fence).await
    }
    async fn requeue_task(&self, fence: Fence) -> Result<bool> {
        let _open = self.gate.read().await;
        self.inner.requeue_task(fence).await
    }
    async fn finish_task(&self, fence: Fence, finish: &Finish) -> Result<bool> {
        let _open = self.gate.read().await;
        let done = self.inner.finish_task(fence, finish).await;
        if let Ok(done) = &done {
            self.note(|r| r.finishes.push((fence, *done)));
        }
        done
    }
    async fn cancel_task(&self, tenant: &str, id: TaskId) -> Result<Option<Cancel>> {
        self.inner.cancel_task(tenant, id).await
    }
    async fn recover(&self, dead_owner: Option<&str>) -> Result<Recovered> {
        self.note(|r| r.recoveries += 1);
        self.inner.recover(dead_owner).await
    }
    async fn expire_tasks(&self, before: i64, max: u32) -> Result<Vec<TaskId>> {
        self.note(|r| r.expiries += 1);
        self.inner.expire_tasks(before, max).await
    }
    async fn running_counts(&self) -> Result<Vec<(String, i64)>> {
        let armed = self
            .count_failure
            .compare_exchange(2, 0, Ordering::SeqCst, Ordering::SeqCst);
        if armed.is_ok() {
            return Err(StoreError::Corrupt("injected: counts unavailable".into()));
        }
        self.inner.running_counts().await
    }
    async fn queued_counts(&self) -> Result<Vec<(String, i64)>> {
        self.inner.queued_counts().await
    }
    async fn hold_singleton(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let _open = self.gate.read().await;
        let held = self.inner.hold_singleton(name, holder, ttl_ms).await;
        if let Ok(held) = &held {
            self.note(|r| r.holds.push((name.to_owned(), *held)));
        }
        held
    }
    async fn release_singleton(&self, name: &str, holder: &str) -> Result<()> {
        self.inner.release_singleton(name, holder).await
    }
    async fn notify(&self, event: &Event) -> Result<()> {
        match &self.bus {
            Some(bus) => {
                // Nobody listening is not an error: nobody to tell.
                let _ = bus.0.send(event.clone());
                Ok(())
            }
            None => self.inner.notify(event).await,
        }
    }
    async fn listen(&self) -> Result<Option<Events>> {
        let events = match &self.bus {
            Some(bus) => Some(bus.listen()),
            None => self.inner.listen().await?,
        };
        let Some(events) = events else {
            return Ok(None);
        };
        self.note(|r| r.listening += 1);
        Ok(Some(
            Handled {
                inner: events,
                last: None,
                record: Arc::clone(&self.record),
            }
            .boxed(),
        ))
    }
    async fn now_ms(&self) -> Result<i64> {
        self.inner.now_ms().await
    }

    async fn create_join_token(&self, id: &str, hash: &[u8; 32], label: &str) -> Result<()> {
        self.inner.create_join_token(id, hash, label).await
    }

    async fn list_join_tokens(&self) -> Result<Vec<JoinTokenRecord>> {
        self.inner.list_join_tokens().await
    }

    async fn revoke_join_token(&self, id: &str) -> Result<bool> {
        self.inner.revoke_join_token(id).await
    }

    async fn join_node(
        &self,
        token_hash: &[u8; 32],
        node: &NewNode,
        credential_hash: &[u8; 32],
    ) -> Result<Result<(), JoinRefused>> {
        self.inner
            .join_node(token_hash, node, credential_hash)
            .await
    }

    async fn node_for_credential(&self, hash: &[u8; 32]) -> Result<Option<String>> {
        self.inner.node_for_credential(hash).await
    }

    async fn heartbeat_node(
        &self,
        id: &str,
        address: &str,
        report: &NodeReport,
    ) -> Result<Option<NodeState>> {
        self.inner.heartbeat_node(id, address, report).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.inner.list_nodes().await
    }

    async fn get_node(&self, id: &str) -> Result<Option<NodeRecord>> {
        self.inner.get_node(id).await
    }

    async fn set_node_state(&self, id: &str, state: NodeState) -> Result<bool> {
        self.inner.set_node_state(id, state).await
    }

    async fn mark_lost_nodes(&self, max_age_ms: i64) -> Result<Vec<String>> {
        self.inner.mark_lost_nodes(max_age_ms).await
    }

    async fn remove_node(&self, id: &str) -> Result<bool> {
        self.inner.remove_node(id).await
    }

    async fn set_secret(&self, name: &str, candidate: &str) -> Result<String> {
        self.inner.set_secret(name, candidate).await
    }
}
