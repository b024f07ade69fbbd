//! Per-tenant quotas: what each tenant may have running and queued, read
//! from the store through a short-lived cache, and the count of tasks each
//! tenant has running in this process.
//!
//! The running count is this replica's: in a cluster each replica enforces
//! the limit on its own share, so a tenant could run up to the limit on
//! each. The queue count is the store's and holds cluster-wide.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_core::Quotas;
use berth_store::Store;

use crate::SchedError;

/// How long a tenant's quotas are trusted before the store is asked again;
/// an admin's change reaches other replicas within this.
const QUOTA_TTL: Duration = Duration::from_secs(2);
const CACHE_MAX: usize = 10_000;

pub(crate) struct QuotaBook {
    defaults: Quotas,
    cache: Mutex<HashMap<String, (Quotas, Instant)>>,
    active: Mutex<HashMap<String, u32>>,
}

/// A running task's place in its tenant's concurrency quota, given back
/// when dropped, whichever way the task ends.
pub(crate) struct ActiveSlot {
    book: Arc<QuotaBook>,
    tenant: String,
}

impl Drop for ActiveSlot {
    fn drop(&mut self) {
        let mut active = self.book.lock_active();
        if let Some(n) = active.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                active.remove(&self.tenant);
            }
        }
    }
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
            active: Mutex::new(HashMap::new()),
        })
    }

    fn lock_active(&self) -> MutexGuard<'_, HashMap<String, u32>> {
        lock(&self.active)
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

    /// Drops what this process remembers of a tenant's quotas, after the
    /// admin changed them here.
    pub(crate) fn forget(&self, tenant: &str) {
        lock(&self.cache).remove(tenant);
    }

    /// Takes one of the tenant's running slots if it has one free.
    pub(crate) fn try_start(self: &Arc<Self>, tenant: &str, limit: u32) -> Option<ActiveSlot> {
        let mut active = self.lock_active();
        let n = active.entry(tenant.to_owned()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(ActiveSlot {
            book: Arc::clone(self),
            tenant: tenant.to_owned(),
        })
    }

    /// Tenants whose running tasks fill their quota, as last known: their
    /// queued tasks are left for later.
    pub(crate) fn saturated(&self) -> Vec<String> {
        let cache = lock(&self.cache);
        self.lock_active()
            .iter()
            .filter(|(tenant, n)| {
                let limit = cache
                    .get(*tenant)
                    .map_or(self.defaults.max_concurrent_tasks, |(q, _)| {
                        q.max_concurrent_tasks
                    });
                **n >= limit
            })
            .map(|(tenant, _)| tenant.clone())
            .collect()
    }

    pub(crate) fn running(&self, tenant: &str) -> u32 {
        self.lock_active().get(tenant).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_tenant_and_given_back_on_drop() {
        let book = QuotaBook::new(Quotas {
            max_concurrent_tasks: 2,
            ..Default::default()
        });
        let a1 = book.try_start("a", 2).expect("first");
        let a2 = book.try_start("a", 2).expect("second");
        assert!(book.try_start("a", 2).is_none(), "third is over the quota");
        assert!(
            book.try_start("b", 2).is_some(),
            "another tenant is unaffected"
        );
        assert_eq!(book.saturated(), ["a"]);
        drop(a1);
        assert!(book.saturated().is_empty());
        assert_eq!(book.running("a"), 1);
        drop(a2);
        assert_eq!(book.running("a"), 0);
        assert!(book.lock_active().is_empty(), "no entry lingers");
    }
}
