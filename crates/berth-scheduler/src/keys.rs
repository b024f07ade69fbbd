//! API keys. Keys are random 256-bit values shown once; only their SHA-256
//! is stored, and a request is matched by hashing what it presents, so no
//! comparison of secret bytes happens anywhere.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::{SchedError, TaskManager};

/// Longer keys are refused unhashed: no real key is anywhere near this.
const MAX_KEY_LEN: usize = 256;

/// How long a key found valid is trusted without asking the store again.
/// Every call checks its key, and the store round trip was a fifth of a
/// warm call's server time; a revoked key stops working within this.
const KEY_TTL: Duration = Duration::from_secs(2);
/// Bound on remembered keys; past it the memory starts over.
const KEY_CACHE_MAX: usize = 10_000;

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A fresh key: 32 random bytes, hex, with a prefix that makes leaked keys
/// easy to find with secret scanners.
pub fn generate_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    // ThreadRng is a CSPRNG seeded from the OS.
    rand::rng().fill_bytes(&mut bytes);
    format!("berth_{}", hex::encode(bytes))
}

/// Keys found valid recently, by hash. Only valid keys are remembered, so
/// unknown keys cannot fill it.
#[derive(Default)]
pub(crate) struct KeyCache {
    valid: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

impl KeyCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], (String, Instant)>> {
        self.valid.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TaskManager {
    /// The tenant a presented key belongs to, if any: the one place a key
    /// is checked, for the API and the registry's login alike.
    pub async fn authenticate(&self, key: &str) -> Result<Option<String>, SchedError> {
        let key = key.trim();
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Ok(None);
        }
        let hash = hash_key(key);
        if let Some((tenant, at)) = self.keys.lock().get(&hash)
            && at.elapsed() < KEY_TTL
        {
            return Ok(Some(tenant.clone()));
        }
        let found = self.store.tenant_for_key(&hash).await?;
        let mut cache = self.keys.lock();
        match &found {
            Some(tenant) => {
                if cache.len() >= KEY_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(hash, (tenant.clone(), Instant::now()));
            }
            None => {
                cache.remove(&hash);
            }
        }
        Ok(found)
    }

    /// Forgets what this process remembers of a tenant's keys, after they
    /// were rotated or revoked (here, or elsewhere as the store's events
    /// tell); without events, other replicas follow within [`KEY_TTL`].
    pub(crate) fn forget_keys(&self, tenant: &str) {
        self.keys.lock().retain(|_, (t, _)| t != tenant);
    }

    pub(crate) fn keys_forget_all(&self) {
        self.keys.lock().clear();
    }

    /// Makes `key` the one admin key: the previous one stops working. One
    /// transaction, so a replica of a set starting with the set's key never
    /// leaves the others a moment without it.
    pub async fn set_admin_key(&self, key: &str) -> Result<(), SchedError> {
        let admin = berth_core::ADMIN_TENANT;
        self.store.ensure_tenant(admin).await?;
        self.store
            .replace_api_keys(admin, Some(&hash_key(key)), "admin")
            .await?;
        self.invalidate(berth_store::Invalidation::Keys {
            tenant: admin.to_owned(),
        })
        .await;
        Ok(())
    }

    /// Records the built-in admin tenant if it is missing (first start).
    pub async fn ensure_admin_tenant(&self) -> Result<(), SchedError> {
        Ok(self.store.ensure_tenant(berth_core::ADMIN_TENANT).await?)
    }
}
