//! A TaskManager's life: what it recovers at start, the loops it keeps
//! running (queue dispatch, lease renewal, recovery and retention, the
//! store's events), and how it hands work back at shutdown.
//!
//! In a set every replica runs the same loops; the jobs that must run
//! once per set (recovering lapsed leases, retention) run only on the
//! replica that holds their singleton lease in the store, and move to
//! another by themselves when it dies.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_core::TaskKind;
use berth_store::{Event, Invalidation};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{SchedError, TaskManager, lease_ms};

/// Singleton names in the store.
pub(crate) const REAPER: &str = "lease-reaper";
pub(crate) const RETENTION: &str = "retention";
/// How often a replica may tell the others that it queued work: NOTIFY
/// serialises commits in PostgreSQL, so a burst of submissions sends one.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(20);

impl TaskManager {
    /// Starts the background loops. They stop when `shutdown` fires;
    /// anything still running is recovered from its lease at next start.
    pub fn spawn_background(self: &Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(Arc::clone(self).dispatch_loop(shutdown.clone()));
        // Leases are renewed until the process exits, through the drain.
        tokio::spawn(Arc::clone(self).lease_loop(shutdown.clone()));
        tokio::spawn(Arc::clone(self).retention_loop(shutdown.clone()));
        tokio::spawn(Arc::clone(self).event_loop(shutdown.clone()));
        tokio::spawn(Arc::clone(self).fleet_loop(shutdown.clone()));
        tokio::spawn(Arc::clone(self).announce_loop(shutdown));
    }

    /// Tells the other replicas that work was queued, at most once per
    /// [`ANNOUNCE_EVERY`]; this replica's own dispatcher is woken directly.
    pub(crate) fn announce_queued(&self) {
        self.queued_since_announce.store(true, Ordering::Release);
        self.announce.notify_one();
    }

    async fn announce_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = self.announce.notified() => {}
                () = shutdown.cancelled() => return,
            }
            if self.queued_since_announce.swap(false, Ordering::AcqRel)
                && let Err(e) = self.store.notify(&Event::Queued).await
            {
                debug!(error = %e, "could not announce queued work; others poll");
            }
            tokio::time::sleep(ANNOUNCE_EVERY).await;
        }
    }

    /// Tells every replica that a cached record changed. Rare (deploys,
    /// key and quota changes), so sent at once.
    pub(crate) async fn invalidate(&self, what: Invalidation) {
        self.forget(&what);
        if let Err(e) = self.store.notify(&Event::Invalidate(what)).await {
            warn!(error = %e, "could not tell other replicas; their caches expire on their own");
        }
    }

    fn forget(&self, what: &Invalidation) {
        match what {
            Invalidation::Keys { tenant } => self.forget_keys(tenant),
            Invalidation::Quotas { tenant } => self.quotas.forget(tenant),
            Invalidation::Function { tenant, name } => {
                self.routing.forget(tenant, name);
                self.modes.forget(tenant, name);
            }
        }
    }

    fn forget_everything(&self) {
        self.keys_forget_all();
        self.quotas.forget_all();
        self.routing.forget_all();
        self.modes.forget_all();
    }

    /// Follows the store's events: queued work wakes the dispatcher, a
    /// changed record leaves the caches. While the connection is down,
    /// and whenever it comes back (events may have been missed), the
    /// caches are dropped whole; polling keeps the queue moving.
    async fn event_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let events = tokio::select! {
                r = self.store.listen() => r,
                () = shutdown.cancelled() => return,
            };
            let mut events = match events {
                Ok(Some(events)) => events,
                // One node: nothing happens elsewhere.
                Ok(None) => return,
                Err(e) => {
                    debug!(error = %e, "cannot listen to the store's events yet");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
            };
            self.forget_everything();
            loop {
                let event = tokio::select! {
                    e = events.next() => e,
                    () = shutdown.cancelled() => return,
                };
                match event {
                    Some(Event::Queued) => self.wake.notify_one(),
                    Some(Event::Cancelled(id)) => self.kill_local(id),
                    Some(Event::Invalidate(what)) => self.forget(&what),
                    None => break,
                }
            }
            self.forget_everything();
        }
    }

    /// Deletes finished tasks past the retention period, in small batches
    /// so the store is never locked for long; on one replica of a set.
    async fn retention_loop(self: Arc<Self>, shutdown: CancellationToken) {
        const EVERY: Duration = Duration::from_secs(60);
        loop {
            let held = self
                .store
                .hold_singleton(RETENTION, &self.cfg.node_id, lease_ms(EVERY * 3))
                .await
                .unwrap_or(false);
            if held {
                let cutoff = berth_core::now_ms() - lease_ms(self.cfg.retention);
                self.expire_finished(cutoff).await;
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = shutdown.cancelled() => {
                    let _ = self.store.release_singleton(RETENTION, &self.cfg.node_id).await;
                    return;
                }
            }
        }
    }

    /// Deletes the tasks that finished before `cutoff`, and their
    /// payloads, a batch at a time.
    async fn expire_finished(&self, cutoff: i64) {
        const BATCH: u32 = 500;
        loop {
            match self.store.expire_tasks(cutoff, BATCH).await {
                Ok(ids) => {
                    for id in &ids {
                        if let Err(e) = self.payloads.remove(*id).await {
                            warn!(task = %id, error = %e, "could not remove payloads");
                        }
                    }
                    if ids.len() < BATCH as usize {
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "retention pass failed");
                    return;
                }
            }
        }
    }

    /// Renews the leases of attempts running here and, on the replica
    /// holding the reaper singleton, requeues attempts whose lease lapsed
    /// anywhere (their holder is presumed dead). Once `shutdown` fires it
    /// only renews: a replica on its way out takes on no job of the set's,
    /// so the reaper the drain released goes to another replica.
    async fn lease_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let every = self.cfg.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let fences: Vec<_> = self
                .running_fences(None)
                .into_iter()
                .map(|(f, _)| f)
                .collect();
            if !fences.is_empty()
                && let Err(e) = self.store.renew_leases(&self.lease(), &fences).await
            {
                warn!(error = %e, "lease renewal failed");
            }
            self.reap_orphans().await;
            if shutdown.is_cancelled() {
                continue;
            }
            let reaper = self
                .store
                .hold_singleton(REAPER, &self.cfg.node_id, lease_ms(self.cfg.lease))
                .await;
            match reaper {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    warn!(error = %e, "cannot reach the store for the reaper's lease");
                    continue;
                }
            }
            if shutdown.is_cancelled() {
                // Taken back while the drain was releasing it: give it up.
                let _ = self
                    .store
                    .release_singleton(REAPER, &self.cfg.node_id)
                    .await;
                continue;
            }
            let recovered = self.store.recover(None).await;
            if let Ok(r) = &recovered {
                self.count_recovery(r);
            }
            match recovered {
                Ok(r) if !r.requeued.is_empty() => {
                    debug!(n = r.requeued.len(), "requeued tasks with lapsed leases");
                    self.wake.notify_one();
                    self.announce_queued();
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "lease recovery failed"),
            }
        }
    }

    /// Shutdown: async attempts get `grace` to finish; the rest go back to
    /// the queue without counting the attempt, and their containers are
    /// killed, so restarting the server costs no task an attempt. Call
    /// after stopping the dispatcher (the `spawn_background` token).
    pub async fn drain(&self, grace: Duration) {
        let async_running = || self.running_fences(Some(TaskKind::Async));
        let deadline = tokio::time::Instant::now() + grace;
        while !async_running().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = async_running();
        for singleton in [REAPER, RETENTION] {
            let _ = self
                .store
                .release_singleton(singleton, &self.cfg.node_id)
                .await;
        }
        if left.is_empty() {
            self.taps.close();
            self.shutdown_executors().await;
            return;
        }
        info!(
            tasks = left.len(),
            "handing unfinished async tasks back to the queue"
        );
        for (fence, cancel) in &left {
            // Released first, so the killed attempt's result is refused.
            match self.store.release_task(*fence).await {
                Ok(_) => {}
                Err(e) => {
                    warn!(task = %fence.id, error = %e, "could not release; its lease will lapse")
                }
            }
            cancel.cancel();
        }
        self.announce_queued();
        // Give the kills a moment to remove the containers; whatever is
        // left is reaped at the next start.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !async_running().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Those following tasks that now go on elsewhere are let go.
        self.taps.close();
        self.shutdown_executors().await;
    }

    async fn shutdown_executors(&self) {
        for m in self.fleet.local() {
            m.executor.shutdown().await;
        }
    }

    /// Runs once at start: requeues what a previous life of this process
    /// left running and removes its orphaned containers.
    pub async fn recover_at_start(&self) -> Result<(), SchedError> {
        let r = self.store.recover(Some(&self.cfg.node_id)).await?;
        self.count_recovery(&r);
        if !r.requeued.is_empty() || !r.failed.is_empty() {
            info!(
                requeued = r.requeued.len(),
                failed = r.failed.len(),
                "recovered tasks from a previous run"
            );
        }
        self.reap_orphans().await;
        Ok(())
    }

    /// Removes containers a previous life of this node left behind, unless
    /// that has already been done since start.
    async fn reap_orphans(&self) {
        if self.reaped.load(Ordering::Relaxed) {
            return;
        }
        let mut all = true;
        for m in self.fleet.local() {
            match m.executor.reap_orphans().await {
                Ok(0) => {}
                Ok(n) => info!(containers = n, "removed orphaned containers"),
                Err(err) => {
                    all = false;
                    warn!(error = %err, "could not reap orphaned containers; will retry");
                }
            }
        }
        self.reaped.store(all, Ordering::Relaxed);
    }
}
