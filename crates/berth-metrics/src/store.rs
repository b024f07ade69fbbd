//! How long store operations take, by operation, and how many fail.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::STORE_BUCKETS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    operation: &'static str,
}

fn store_histogram() -> Histogram {
    Histogram::new(STORE_BUCKETS)
}

#[derive(Clone, Debug)]
pub struct StoreMetrics {
    duration: Family<Operation, Histogram, fn() -> Histogram>,
    errors: Family<Operation, Counter>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self {
            duration: Family::new_with_constructor(store_histogram),
            errors: Family::default(),
        }
    }
}

impl StoreMetrics {
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register_with_unit(
            "store_operation_duration",
            "Time a store operation took, by operation (the Store trait's method), \
             failures included",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register(
            "store_operation_errors",
            "Store operations that failed, by operation",
            self.errors.clone(),
        );
    }

    /// One operation ended after `took`, successfully or not.
    pub fn observe(&self, operation: &'static str, took: Duration, ok: bool) {
        let labels = Operation { operation };
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if !ok {
            self.errors.get_or_create(&labels).inc();
        }
    }
}
