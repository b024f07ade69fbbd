//! Per-tenant quotas, read from the store through a short-lived cache.
//!
//! What each tenant has running and queued is counted in the store, so
//! the limits hold across every replica of a set: a sync call is
//! recorded only if the tenant is under its running limit
//! (`Store::insert_running`, atomic per tenant), and async claims leave
//! the tenants at their limit queued and hand back, uncounted, what a
//! claim racing another took past it (`dispatch.rs`, `TaskManager::claim`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_core::Quotas;
use berth_store::Store;

use crate::SchedError;

/// How long a tenant's quotas are trusted before the store is asked again.
/// An admin's change through any replica reaches the others at once
/// through the store's events; this bounds how stale they can be when an
/// event is lost (one node needs none).
const QUOTA_TTL: Duration = Duration::from_secs(2);
const CACHE_MAX: usize = 10_000;

pub(crate) struct QuotaBook {
    defaults: Quotas,
    cache: Mutex<HashMap<String, (Quotas, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map update, so a panic elsewhere
    // cannot leave the map half-changed.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl QuotaBook {
    pub(crate) fn new(defaults: Quotas) -> Arc<Self> {
        Arc::new(Self {
            defaults,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The tenant's quotas: the defaults with its own settings applied. A
    /// tenant without a record (only possible for the built-in admin
    /// before its first start) gets the defaults.
    pub(crate) async fn of(&self, store: &dyn Store, tenant: &str) -> Result<Quotas, SchedError> {
        if let Some((q, at)) = lock(&self.cache).get(tenant)
            && at.elapsed() < QUOTA_TTL
        {
            return Ok(*q);
        }
        let q = match store.get_tenant(tenant).await? {
            Some(t) => self.defaults.with(&t.overrides),
            None => self.defaults,
        };
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(tenant.to_owned(), (q, Instant::now()));
        Ok(q)
    }

    /// Drops what this process remembers of a tenant's quotas.
    pub(crate) fn forget(&self, tenant: &str) {
        lock(&self.cache).remove(tenant);
    }

    /// Drops everything remembered (events may have been missed).
    pub(crate) fn forget_all(&self) {
        lock(&self.cache).clear();
    }
}
