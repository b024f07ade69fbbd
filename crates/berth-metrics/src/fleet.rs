//! Executors and their warm instances, as their status says when the
//! metrics are scraped: capacity, what is allocated, instances by state
//! and the requests waiting for one.

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::Functions;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Executor {
    executor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Instances {
    function: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Function {
    function: String,
}

/// One executor's status.
#[derive(Clone, Debug)]
pub struct ExecutorGauge {
    pub id: String,
    /// Containers it may run at once.
    pub capacity: usize,
    /// Containers it runs now (warm instances, busy or idle, and fresh runs).
    pub containers: usize,
    pub healthy: bool,
}

/// One function version's warm instances on one executor.
#[derive(Clone, Copy, Debug)]
pub struct InstanceGauge<'a> {
    pub tenant: &'a str,
    pub function: &'a str,
    /// Ready instances, busy or not.
    pub ready: usize,
    /// Ready instances serving at least one request.
    pub busy: usize,
    pub starting: usize,
    /// Requests waiting for a slot.
    pub waiting: usize,
}

#[derive(Clone, Debug)]
pub struct FleetMetrics {
    functions: Functions,
    capacity: Family<Executor, Gauge>,
    containers: Family<Executor, Gauge>,
    healthy: Family<Executor, Gauge>,
    instances: Family<Instances, Gauge>,
    waiting: Family<Function, Gauge>,
}

impl Default for FleetMetrics {
    fn default() -> Self {
        Self::new(Functions::default())
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl FleetMetrics {
    pub(crate) fn new(functions: Functions) -> Self {
        Self {
            functions,
            capacity: Family::default(),
            containers: Family::default(),
            healthy: Family::default(),
            instances: Family::default(),
            waiting: Family::default(),
        }
    }

    pub(crate) fn register(&self, r: &mut Registry) {
        r.register_with_unit(
            "executor_capacity",
            "Containers an executor may run at once",
            Unit::Other("containers".into()),
            self.capacity.clone(),
        );
        r.register_with_unit(
            "executor_allocated",
            "Containers an executor runs now: warm instances, busy or idle, and fresh runs",
            Unit::Other("containers".into()),
            self.containers.clone(),
        );
        r.register(
            "executor_healthy",
            "1 when the executor's engine answers, else 0",
            self.healthy.clone(),
        );
        r.register(
            "instances",
            "Warm instances by function and state: idle, busy or starting",
            self.instances.clone(),
        );
        r.register(
            "instance_waiting_requests",
            "Requests waiting for a slot on a warm instance, by function",
            self.waiting.clone(),
        );
    }

    /// Replaces what the executors said last time.
    pub fn set_executors(&self, executors: &[ExecutorGauge]) {
        self.capacity.clear();
        self.containers.clear();
        self.healthy.clear();
        for e in executors {
            let labels = Executor {
                executor: e.id.clone(),
            };
            self.capacity
                .get_or_create(&labels)
                .set(gauge_value(e.capacity));
            self.containers
                .get_or_create(&labels)
                .set(gauge_value(e.containers));
            self.healthy
                .get_or_create(&labels)
                .set(i64::from(e.healthy));
        }
    }

    /// Replaces the instance counts: the versions of one function, on
    /// every executor, add up under its name; functions with nothing left
    /// leave the series.
    pub fn set_instances<'a>(&self, counts: impl IntoIterator<Item = InstanceGauge<'a>>) {
        let mut states: BTreeMap<(String, &'static str), usize> = BTreeMap::new();
        let mut waiting: BTreeMap<String, usize> = BTreeMap::new();
        for c in counts {
            let function = self.functions.label(c.tenant, c.function);
            for (state, n) in [
                ("idle", c.ready.saturating_sub(c.busy)),
                ("busy", c.busy),
                ("starting", c.starting),
            ] {
                *states.entry((function.clone(), state)).or_default() += n;
            }
            *waiting.entry(function).or_default() += c.waiting;
        }
        self.instances.clear();
        self.waiting.clear();
        for ((function, state), n) in states {
            let labels = Instances { function, state };
            self.instances.get_or_create(&labels).set(gauge_value(n));
        }
        for (function, n) in waiting {
            self.waiting
                .get_or_create(&Function { function })
                .set(gauge_value(n));
        }
    }
}
