//! What the built-in registry records: manifests pushed and pulled, and
//! the bytes that went in and out.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Default)]
pub struct RegistryMetrics {
    pushes: Counter,
    pulls: Counter,
    received: Counter,
    sent: Counter,
}

impl RegistryMetrics {
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "registry_pushes",
            "Manifests stored (a push ends with one per image or index)",
            self.pushes.clone(),
        );
        r.register(
            "registry_pulls",
            "Manifests served by GET (a pull starts with one per image or index)",
            self.pulls.clone(),
        );
        r.register_with_unit(
            "registry_received",
            "Bytes of request bodies read by uploads and manifest pushes",
            Unit::Bytes,
            self.received.clone(),
        );
        r.register_with_unit(
            "registry_sent",
            "Bytes of blobs and manifests sent",
            Unit::Bytes,
            self.sent.clone(),
        );
    }

    pub fn pushed(&self) {
        self.pushes.inc();
    }

    pub fn pulled(&self) {
        self.pulls.inc();
    }

    pub fn received(&self, bytes: u64) {
        self.received.inc_by(bytes);
    }

    pub fn sent(&self, bytes: u64) {
        self.sent.inc_by(bytes);
    }
}
