//! Which version of a function serves a call.
//!
//! Today every call goes to the newest version; traffic splits between
//! versions (gray release) are decided here and nowhere else, so every
//! path that binds a call to a version (sync calls, async submissions)
//! goes through [`TaskManager::route`].
//!
//! Versions are immutable and every call needs one, so the latest of each
//! function is remembered for [`LATEST_TTL`]: deploys and deletes through
//! this process update it at once, another replica's within the TTL.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_core::{FunctionVersion, RequestMeta};

use crate::{SchedError, TaskManager};

const LATEST_TTL: Duration = Duration::from_secs(1);
/// Bound on remembered functions; past it the memory starts over.
const CACHE_MAX: usize = 10_000;

type Key = (String, String);

#[derive(Default)]
pub(crate) struct Routing {
    latest: Mutex<HashMap<Key, (FunctionVersion, Instant)>>,
}

impl Routing {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, (FunctionVersion, Instant)>> {
        // Single inserts and removes: a panic elsewhere cannot leave the
        // map half-changed.
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, tenant: &str, name: &str) -> Option<FunctionVersion> {
        let cache = self.lock();
        let (v, at) = cache.get(&(tenant.to_owned(), name.to_owned()))?;
        (at.elapsed() < LATEST_TTL).then(|| v.clone())
    }

    fn remember(&self, v: &FunctionVersion) {
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            (v.tenant.clone(), v.function.clone()),
            (v.clone(), Instant::now()),
        );
    }

    /// After a deploy or a delete, here or on another replica.
    pub(crate) fn forget(&self, tenant: &str, name: &str) {
        self.lock().remove(&(tenant.to_owned(), name.to_owned()));
    }

    pub(crate) fn forget_all(&self) {
        self.lock().clear();
    }
}

impl TaskManager {
    /// The version that serves this call of the function.
    pub(crate) async fn route(
        &self,
        tenant: &str,
        name: &str,
        _request: &RequestMeta,
    ) -> Result<FunctionVersion, SchedError> {
        if let Some(v) = self.routing.cached(tenant, name) {
            return Ok(v);
        }
        let v = self
            .store
            .get_function(tenant, name)
            .await?
            .map(|f| f.latest)
            .ok_or_else(|| SchedError::FunctionNotFound(name.to_owned()))?;
        self.routing.remember(&v);
        Ok(v)
    }
}
