//! What the TaskManager tells the metrics, and the scrape.
//!
//! A call is counted once, where it ends: a sync call when its record is
//! final (or when it is refused before it runs), an async task when the
//! attempt that ends it is recorded on this replica, or when it is
//! cancelled through this replica. Each attempt that ran adds its phases
//! (queue, pull, start, run) to the histograms; one that waited for a
//! container start is a cold start. The gauges (the queue, executors and
//! their instances) are read when the metrics are scraped.
//!
//! Only the admin may scrape: the series name every tenant's functions.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use berth_core::{ADMIN_TENANT, FunctionVersion, Mode, Outcome, TaskKind, TaskRecord, Timing};
use berth_metrics::{Call, ExecutorGauge, InstanceGauge, Phases, TaskMetrics};
use berth_store::Finish;
use tracing::warn;

use crate::{SchedError, TaskManager};

/// How a refusal before a task was recorded is counted: the tenant's
/// running or queued tasks were at their quota.
const QUOTA_EXCEEDED: &str = "quota_exceeded";

/// Bound on remembered versions; past it the memory starts over.
const MODES_MAX: usize = 10_000;

/// The mode of each version this replica built an attempt of, which saves
/// the async path a read of the version when its end is counted. Versions
/// are immutable; a function deleted and deployed again numbers its
/// versions anew, so its entries go when it changes (as the routing
/// cache's do).
#[derive(Default)]
pub(crate) struct ModeBook {
    modes: Mutex<HashMap<(String, String, i64), Mode>>,
}

impl ModeBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, i64), Mode>> {
        // Single inserts and clears: a panic elsewhere cannot leave the
        // map half-changed.
        self.modes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn note(&self, v: &FunctionVersion) {
        let key = (v.tenant.clone(), v.function.clone(), v.version);
        let mut modes = self.lock();
        if modes.contains_key(&key) {
            return;
        }
        if modes.len() >= MODES_MAX {
            modes.clear();
        }
        modes.insert(key, v.config.mode);
    }

    pub(crate) fn forget(&self, tenant: &str, function: &str) {
        self.lock()
            .retain(|(t, f, _), _| t != tenant || f != function);
    }

    pub(crate) fn forget_all(&self) {
        self.lock().clear();
    }

    fn get(&self, task: &TaskRecord) -> Option<Mode> {
        let key = (task.tenant.clone(), task.function.clone(), task.version);
        self.lock().get(&key).copied()
    }
}

/// `ok`, or the code of the error the call ended with.
fn status_of(outcome: &Outcome) -> &'static str {
    outcome.error.as_ref().map_or("ok", |e| e.code.as_str())
}

fn ms(v: Option<i64>) -> Option<Duration> {
    v.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

fn call<'a>(task: &'a TaskRecord, mode: Option<Mode>) -> Call<'a> {
    Call {
        tenant: &task.tenant,
        function: &task.function,
        kind: task.kind.as_str(),
        mode: mode.map_or("none", Mode::as_str),
    }
}

impl TaskManager {
    fn task_metrics(&self) -> &TaskMetrics {
        self.cfg.metrics.tasks()
    }

    /// The mode of the task's version: remembered, or read from the
    /// store; `None` once the version is gone.
    pub(crate) async fn mode_of(&self, task: &TaskRecord) -> Option<Mode> {
        if let Some(mode) = self.modes.get(task) {
            return Some(mode);
        }
        match self
            .store
            .get_version(&task.tenant, &task.function, task.version)
            .await
        {
            Ok(Some(v)) => {
                self.modes.note(&v);
                Some(v.config.mode)
            }
            Ok(None) | Err(_) => None,
        }
    }

    /// A call ended as `finish` says; `mode` is its version's (`None`: the
    /// version is gone). An attempt that ran adds its phases.
    /// An async task's queue phase is its wait in the store's queue and
    /// then for a slot on an instance.
    pub(crate) fn count_end(&self, task: &TaskRecord, mode: Option<Mode>, finish: &Finish) {
        let call = call(task, mode);
        self.task_metrics().ended(&call, status_of(&finish.outcome));
        let t: &Timing = &finish.timing;
        if t.run_ms.is_none() {
            return;
        }
        let queued = match task.kind {
            TaskKind::Sync => t.queued_ms,
            TaskKind::Async => Some(task.timing.queued_ms.unwrap_or(0) + t.queued_ms.unwrap_or(0)),
        };
        let phases = Phases {
            queue: ms(queued),
            pull: ms(t.pull_ms),
            start: ms(t.start_ms),
            run: ms(t.run_ms),
        };
        self.task_metrics().attempt(&call, &phases);
    }

    /// A call refused before its task was recorded: the tenant was at its
    /// quota.
    pub(crate) fn count_quota_refusal(&self, task: &TaskRecord, mode: Mode) {
        self.task_metrics()
            .ended(&call(task, Some(mode)), QUOTA_EXCEEDED);
    }

    /// An async attempt went back to the queue: `lost` or `refused`.
    pub(crate) fn count_requeue(&self, task: &TaskRecord, reason: &'static str) {
        self.task_metrics()
            .requeued(&task.tenant, &task.function, reason);
    }

    /// A recovery pass took back lapsed tasks: requeued, or failed as
    /// lost (out of attempts, or sync calls whose caller is gone).
    pub(crate) fn count_recovery(&self, r: &berth_store::Recovered) {
        self.task_metrics()
            .recovered(r.requeued.len(), r.failed.len());
    }

    /// A cancel went through: an async task ends here (a sync call is
    /// counted when its attempt, killed, reports).
    pub(crate) async fn count_cancel(&self, tenant: &str, id: berth_core::TaskId) {
        let task = match self.store.get_task(tenant, id).await {
            Ok(Some(t)) if t.kind == TaskKind::Async => t,
            Ok(_) => return,
            Err(e) => {
                warn!(task = %id, error = %e, "could not read a cancelled task to count it");
                return;
            }
        };
        let mode = self.mode_of(&task).await;
        self.task_metrics().ended(
            &call(&task, mode),
            berth_core::ErrorCode::Cancelled.as_str(),
        );
    }

    /// Every series, in Prometheus's text format, for the admin only:
    /// the gauges are read now (the store's counts, the executors'
    /// status). A store that does not answer leaves its gauges as they
    /// were: the metrics matter most when something is down.
    pub async fn metrics(&self, caller: &str) -> Result<String, SchedError> {
        if caller != ADMIN_TENANT {
            return Err(SchedError::Forbidden(
                "the metrics name every tenant's functions: they need the admin key".into(),
            ));
        }
        // One scrape at a time: each replaces the gauges it reads.
        let _one = self.scrape.lock().await;
        self.read_gauges().await;
        Ok(self.cfg.metrics.render())
    }

    async fn read_gauges(&self) {
        let all = self.fleet.all();
        let mut statuses = Vec::with_capacity(all.len());
        for m in &all {
            statuses.push(m.executor.status().await);
        }
        let fleet = self.cfg.metrics.fleet();
        let executors: Vec<ExecutorGauge> = statuses
            .iter()
            .map(|s| ExecutorGauge {
                id: s.id.clone(),
                capacity: s.capacity,
                containers: s.running,
                healthy: s.healthy,
            })
            .collect();
        fleet.set_executors(&executors);
        fleet.set_instances(statuses.iter().flat_map(|s| {
            s.instances.iter().map(|c| InstanceGauge {
                tenant: &c.tenant,
                function: &c.function,
                ready: c.ready,
                busy: c.busy,
                starting: c.starting,
                waiting: c.queued,
            })
        }));
        let counts = tokio::try_join!(self.store.queued_counts(), self.store.running_counts());
        match counts {
            Ok((queued, running)) => {
                let running = running.iter().map(|(_, n)| n).sum();
                self.task_metrics().set_queue(&queued, running);
            }
            Err(e) => warn!(error = %e, "could not count tasks for the metrics"),
        }
    }
}
