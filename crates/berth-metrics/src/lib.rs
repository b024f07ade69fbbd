//! The metrics of one Berth server process, in Prometheus's terms.
//!
//! One [`Metrics`] per process holds the registry. Each component records
//! through a handle of its own, cheap to clone: [`TaskMetrics`] (the
//! scheduler: calls, their phases, the queue), [`PoolMetrics`] (warm
//! instances scaling and turning requests away), [`FleetMetrics`]
//! (executors and their instances, refreshed when scraped),
//! [`RegistryMetrics`] (pushes, pulls, bytes) and [`StoreMetrics`]
//! (how long store operations take). A handle made with `Default` records
//! into nothing that is exposed, so a component built without a server
//! around it (a test, a tool) needs no registry.
//!
//! Architecture Invariant: this crate knows Prometheus and nothing else:
//! no HTTP, no tasks, no containers. Every series is declared here, once,
//! and described in `docs/METRICS.md`. Label values are bounded: names of
//! deployed functions (`tenant/function`, at most [`MAX_FUNCTIONS`] of
//! them, the rest counted under [`OVERFLOW`]), tenants, executors and
//! closed sets of words. Never a task id, a key, a path or a digest.

mod fleet;
mod pools;
mod registry;
mod store;
mod tasks;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

pub use fleet::{ExecutorGauge, FleetMetrics, InstanceGauge};
pub use pools::PoolMetrics;
pub use registry::RegistryMetrics;
pub use store::StoreMetrics;
pub use tasks::{Call, Phases, TaskMetrics};

/// The `Content-Type` of [`Metrics::render`]: Prometheus's text format,
/// version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Distinct `function` label values one process records; calls of any
/// further function are counted under [`OVERFLOW`].
pub const MAX_FUNCTIONS: usize = 1000;

/// The `function` label of functions past [`MAX_FUNCTIONS`]. It has no
/// `/`, so no function is ever named so.
pub const OVERFLOW: &str = "_overflow";

/// Every series of one process, and the handles that record into them.
pub struct Metrics {
    registry: Registry,
    tasks: TaskMetrics,
    fleet: FleetMetrics,
    pools: PoolMetrics,
    images: RegistryMetrics,
    store: StoreMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        Self::with_functions(Functions::new(MAX_FUNCTIONS))
    }

    fn with_functions(functions: Functions) -> Self {
        let mut registry = Registry::with_prefix("berth");
        let tasks = TaskMetrics::new(functions.clone());
        let fleet = FleetMetrics::new(functions.clone());
        let pools = PoolMetrics::new(functions);
        let images = RegistryMetrics::default();
        let store = StoreMetrics::default();
        tasks.register(&mut registry);
        fleet.register(&mut registry);
        pools.register(&mut registry);
        images.register(&mut registry);
        store.register(&mut registry);
        Self {
            registry,
            tasks,
            fleet,
            pools,
            images,
            store,
        }
    }

    pub fn tasks(&self) -> &TaskMetrics {
        &self.tasks
    }

    pub fn fleet(&self) -> &FleetMetrics {
        &self.fleet
    }

    pub fn pools(&self) -> &PoolMetrics {
        &self.pools
    }

    pub fn registry(&self) -> &RegistryMetrics {
        &self.images
    }

    pub fn store(&self) -> &StoreMetrics {
        &self.store
    }

    /// Every series, in the text format of [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The `function` label values handed out so far, shared by every handle
/// of one [`Metrics`], so the cap holds across all of its series.
#[derive(Clone, Debug)]
pub(crate) struct Functions {
    seen: Arc<Mutex<HashSet<String>>>,
    cap: usize,
}

impl Default for Functions {
    fn default() -> Self {
        Self::new(MAX_FUNCTIONS)
    }
}

impl Functions {
    fn new(cap: usize) -> Self {
        Self {
            seen: Arc::default(),
            cap,
        }
    }

    /// `tenant/function`, or [`OVERFLOW`] once `cap` other functions
    /// have a label.
    pub(crate) fn label(&self, tenant: &str, function: &str) -> String {
        let name = format!("{tenant}/{function}");
        // Single inserts: a panic elsewhere cannot leave the set half-changed.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&name) {
            return name;
        }
        if seen.len() >= self.cap {
            return OVERFLOW.to_owned();
        }
        seen.insert(name.clone());
        name
    }
}

/// Buckets, in seconds, for the phases of a call: a millisecond (a warm
/// slot free at once) to five minutes (a long function).
pub(crate) const CALL_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Buckets, in seconds, for one store operation: half a millisecond (a
/// cached SQLite read) to five seconds (a database failing over).
pub(crate) const STORE_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[cfg(test)]
mod tests;
