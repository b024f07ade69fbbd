//! A TaskManager's life: what it recovers at start, the loops it keeps
//! running (queue dispatch, leases and recovery, retention), and how it
//! hands work back at shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_core::{TaskId, TaskKind};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{SchedError, TaskManager, lease_ms};

impl TaskManager {
    /// Starts the background loops. They stop when `shutdown` fires;
    /// anything still running is recovered from its lease at next start.
    pub fn spawn_background(self: &Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(Arc::clone(self).dispatch_loop(shutdown.clone()));
        // Leases are renewed until the process exits, through the drain.
        tokio::spawn(Arc::clone(self).lease_loop());
        tokio::spawn(Arc::clone(self).retention_loop(shutdown));
    }

    /// Deletes finished tasks past the retention period, in small batches
    /// so the store is never locked for long.
    async fn retention_loop(self: Arc<Self>, shutdown: CancellationToken) {
        const BATCH: u32 = 500;
        loop {
            let cutoff = berth_core::now_ms() - lease_ms(self.cfg.retention);
            loop {
                match self.store.expire_tasks(cutoff, BATCH).await {
                    Ok(ids) => {
                        for id in &ids {
                            if let Err(e) = self.payloads.remove(*id).await {
                                warn!(task = %id, error = %e, "could not remove payloads");
                            }
                        }
                        if ids.len() < BATCH as usize {
                            break;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "retention pass failed");
                        break;
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Renews the leases of attempts running here and requeues attempts
    /// whose lease lapsed anywhere (their holder is presumed dead).
    async fn lease_loop(self: Arc<Self>) {
        let every = self.cfg.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let ids: Vec<_> = self.lock_running().keys().copied().collect();
            if !ids.is_empty()
                && let Err(e) = self
                    .store
                    .renew_leases(&self.cfg.node_id, &ids, lease_ms(self.cfg.lease))
                    .await
            {
                warn!(error = %e, "lease renewal failed");
            }
            self.reap_orphans().await;
            match self.store.recover(None).await {
                Ok(r) if !r.requeued.is_empty() => {
                    debug!(n = r.requeued.len(), "requeued tasks with lapsed leases");
                    self.wake.notify_one();
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
        let async_running = || -> Vec<(TaskId, i64, CancellationToken)> {
            self.lock_running()
                .iter()
                .filter(|(_, r)| r.kind == TaskKind::Async)
                .map(|(id, r)| (*id, r.attempt, r.cancel.clone()))
                .collect()
        };
        let deadline = tokio::time::Instant::now() + grace;
        while !async_running().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = async_running();
        if left.is_empty() {
            self.shutdown_executors().await;
            return;
        }
        info!(
            tasks = left.len(),
            "handing unfinished async tasks back to the queue"
        );
        for (id, attempt, cancel) in &left {
            // Released first, so the killed attempt's result is refused.
            match self.store.release_task(*id, *attempt).await {
                Ok(_) => {}
                Err(e) => warn!(task = %id, error = %e, "could not release; its lease will lapse"),
            }
            cancel.cancel();
        }
        // Give the kills a moment to remove the containers; whatever is
        // left is reaped at the next start.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !async_running().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.shutdown_executors().await;
    }

    async fn shutdown_executors(&self) {
        for e in &self.executors {
            e.shutdown().await;
        }
    }

    /// Runs once at start: requeues what a previous life of this process
    /// left running and removes its orphaned containers.
    pub async fn recover_at_start(&self) -> Result<(), SchedError> {
        let r = self.store.recover(Some(&self.cfg.node_id)).await?;
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
        for e in &self.executors {
            match e.reap_orphans().await {
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
