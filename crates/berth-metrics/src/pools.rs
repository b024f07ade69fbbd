//! What the warm pools record as it happens: instances started and
//! removed (scale events), starts that failed, and requests turned away
//! because a function's instances and queue were full (its 429s).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::Functions;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Scale {
    function: String,
    direction: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Busy {
    function: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Function {
    function: String,
}

#[derive(Clone, Debug)]
pub struct PoolMetrics {
    functions: Functions,
    scale: Family<Scale, Counter>,
    busy: Family<Busy, Counter>,
    start_failures: Family<Function, Counter>,
}

impl Default for PoolMetrics {
    fn default() -> Self {
        Self::new(Functions::default())
    }
}

impl PoolMetrics {
    pub(crate) fn new(functions: Functions) -> Self {
        Self {
            functions,
            scale: Family::default(),
            busy: Family::default(),
            start_failures: Family::default(),
        }
    }

    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "scale_events",
            "Warm instances started (up: demand, minimum) and taken out of service \
             (down: idle, evicted, failed)",
            self.scale.clone(),
        );
        r.register(
            "busy_rejections",
            "Requests turned away with 429 busy: the queue was full, or no slot freed in time",
            self.busy.clone(),
        );
        r.register(
            "instance_start_failures",
            "Warm instance starts that failed",
            self.start_failures.clone(),
        );
    }

    /// An instance is being started: `demand` (requests wait for it) or
    /// `minimum` (`min_instances`).
    pub fn scaled_up(&self, tenant: &str, function: &str, reason: &'static str) {
        self.scale(tenant, function, "up", reason);
    }

    /// An instance left service: `idle` (past its idle timeout, or its
    /// version retired), `evicted` (its slot went to another function) or
    /// `failed` (it died or broke under a request).
    pub fn scaled_down(&self, tenant: &str, function: &str, reason: &'static str) {
        self.scale(tenant, function, "down", reason);
    }

    fn scale(&self, tenant: &str, function: &str, direction: &'static str, reason: &'static str) {
        let labels = Scale {
            function: self.functions.label(tenant, function),
            direction,
            reason,
        };
        self.scale.get_or_create(&labels).inc();
    }

    /// A request was turned away: `queue_full` or `queue_timeout`.
    pub fn busy(&self, tenant: &str, function: &str, reason: &'static str) {
        let labels = Busy {
            function: self.functions.label(tenant, function),
            reason,
        };
        self.busy.get_or_create(&labels).inc();
    }

    pub fn start_failed(&self, tenant: &str, function: &str) {
        let labels = Function {
            function: self.functions.label(tenant, function),
        };
        self.start_failures.get_or_create(&labels).inc();
    }
}
