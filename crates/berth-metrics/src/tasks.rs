//! What the scheduler records: how calls end, how long each phase of an
//! attempt takes, cold starts, requeues, and the queue as the store
//! counts it.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::{CALL_BUCKETS, Functions};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Ended {
    function: String,
    kind: &'static str,
    mode: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Phase {
    function: String,
    kind: &'static str,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ColdStart {
    function: String,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Requeue {
    function: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Recovery {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn call_histogram() -> Histogram {
    Histogram::new(CALL_BUCKETS)
}

/// One call, as its series name it.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    pub tenant: &'a str,
    pub function: &'a str,
    /// `sync` or `async`.
    pub kind: &'static str,
    /// `exec`, `http` or `fresh`; `none` when it never reached an
    /// executor.
    pub mode: &'static str,
}

/// How long an attempt spent in each phase; `None` for a phase it did
/// not go through (no pull, say).
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    pub queue: Option<Duration>,
    pub pull: Option<Duration>,
    pub start: Option<Duration>,
    pub run: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct TaskMetrics {
    functions: Functions,
    invocations: Family<Ended, Counter>,
    phases: Histograms<Phase>,
    cold_starts: Family<ColdStart, Counter>,
    requeues: Family<Requeue, Counter>,
    recovered: Family<Recovery, Counter>,
    tasks: Family<State, Gauge>,
    queue_depth: Family<TenantLabel, Gauge>,
}

impl Default for TaskMetrics {
    fn default() -> Self {
        Self::new(Functions::default())
    }
}

impl TaskMetrics {
    pub(crate) fn new(functions: Functions) -> Self {
        Self {
            functions,
            invocations: Family::default(),
            phases: Family::new_with_constructor(call_histogram),
            cold_starts: Family::default(),
            requeues: Family::default(),
            recovered: Family::default(),
            tasks: Family::default(),
            queue_depth: Family::default(),
        }
    }

    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "invocations",
            "Calls that ended on this replica, by function, kind (sync or async), \
             mode and status (ok, or the error code)",
            self.invocations.clone(),
        );
        r.register_with_unit(
            "invocation_phase_duration",
            "Time an attempt spent in each phase: queue, pull, start, run",
            Unit::Seconds,
            self.phases.clone(),
        );
        r.register(
            "cold_starts",
            "Attempts that waited for a container started for them",
            self.cold_starts.clone(),
        );
        r.register(
            "task_requeues",
            "Async attempts handed back to the queue: lost (counted) or refused (not counted)",
            self.requeues.clone(),
        );
        r.register(
            "tasks_recovered",
            "Running tasks whose lease lapsed, taken back by this replica's recovery",
            self.recovered.clone(),
        );
        r.register(
            "tasks",
            "Tasks queued and running across the set, as the store counts them",
            self.tasks.clone(),
        );
        r.register(
            "queue_depth",
            "Async tasks waiting in the queue across the set, per tenant",
            self.queue_depth.clone(),
        );
    }

    /// A call ended: `status` is `ok` or the code of its error.
    pub fn ended(&self, call: &Call<'_>, status: &'static str) {
        let labels = Ended {
            function: self.functions.label(call.tenant, call.function),
            kind: call.kind,
            mode: call.mode,
            status,
        };
        self.invocations.get_or_create(&labels).inc();
    }

    /// The phases of one attempt, and whether it was a cold start.
    pub fn attempt(&self, call: &Call<'_>, phases: &Phases) {
        let function = self.functions.label(call.tenant, call.function);
        for (phase, took) in [
            ("queue", phases.queue),
            ("pull", phases.pull),
            ("start", phases.start),
            ("run", phases.run),
        ] {
            let Some(took) = took else { continue };
            let labels = Phase {
                function: function.clone(),
                kind: call.kind,
                phase,
            };
            self.phases
                .get_or_create(&labels)
                .observe(took.as_secs_f64());
        }
        if phases.start.is_some_and(|s| !s.is_zero()) {
            let labels = ColdStart {
                function,
                mode: call.mode,
            };
            self.cold_starts.get_or_create(&labels).inc();
        }
    }

    /// An async attempt went back to the queue: `lost` or `refused`.
    pub fn requeued(&self, tenant: &str, function: &str, reason: &'static str) {
        let labels = Requeue {
            function: self.functions.label(tenant, function),
            reason,
        };
        self.requeues.get_or_create(&labels).inc();
    }

    /// A recovery pass took back lapsed tasks.
    pub fn recovered(&self, requeued: usize, failed: usize) {
        for (result, n) in [("requeued", requeued), ("failed", failed)] {
            if n > 0 {
                self.recovered
                    .get_or_create(&Recovery { result })
                    .inc_by(n as u64);
            }
        }
    }

    /// The store's counts across the set: queued tasks per tenant, and
    /// the running total.
    pub fn set_queue(&self, queued: &[(String, i64)], running: i64) {
        let total: i64 = queued.iter().map(|(_, n)| n).sum();
        self.tasks
            .get_or_create(&State { state: "queued" })
            .set(total);
        self.tasks
            .get_or_create(&State { state: "running" })
            .set(running);
        // Tenants whose queue emptied leave the series rather than stay at
        // their last depth.
        self.queue_depth.clear();
        for (tenant, n) in queued {
            let labels = TenantLabel {
                tenant: tenant.clone(),
            };
            self.queue_depth.get_or_create(&labels).set(*n);
        }
    }
}
