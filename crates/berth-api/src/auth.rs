//! Bearer API keys. Keys are random 256-bit values shown once; only their
//! SHA-256 is stored, and a request is matched by hashing what it presents.
//! The lookup is by hash, so no comparison of secret bytes happens here.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use berth_store::{Store, StoreError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::AppState;
use crate::error::ApiError;

/// Longer keys are refused unhashed: no real key is anywhere near this.
const MAX_KEY_LEN: usize = 256;

/// The tenant a request acts as, put in the request extensions by [`require_key`].
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A fresh key: 32 random bytes, hex, with a prefix that makes leaked keys
/// easy to find with secret scanners.
pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand_bytes();
    format!("berth_{}", hex::encode(bytes))
}

fn rand_bytes() -> [u8; 32] {
    use rand::RngCore;
    let mut out = [0u8; 32];
    // ThreadRng is a CSPRNG seeded from the OS.
    rand::rng().fill_bytes(&mut out);
    out
}

/// How long a key found valid is trusted without asking the store again.
/// Every call checks its key, and the store round trip was a fifth of a
/// warm call's server time; a revoked key stops working within this.
const KEY_TTL: Duration = Duration::from_secs(2);
/// Bound on remembered keys; past it the memory starts over.
const KEY_CACHE_MAX: usize = 10_000;

type KeyCache = Mutex<HashMap<[u8; 32], (String, Instant)>>;

fn key_cache() -> &'static KeyCache {
    static CACHE: OnceLock<KeyCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The tenant a presented key belongs to, if any: the one place a key is
/// checked, shared by the API and the registry's login. Only valid keys
/// are remembered, so unknown keys cannot fill the cache.
pub async fn tenant_for_key(store: &dyn Store, key: &str) -> Result<Option<String>, StoreError> {
    let key = key.trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Ok(None);
    }
    let hash = hash_key(key);
    {
        let cache = key_cache().lock().unwrap_or_else(|p| p.into_inner());
        if let Some((tenant, at)) = cache.get(&hash)
            && at.elapsed() < KEY_TTL
        {
            return Ok(Some(tenant.clone()));
        }
    }
    let found = store.tenant_for_key(&hash).await?;
    let mut cache = key_cache().lock().unwrap_or_else(|p| p.into_inner());
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

/// Forgets what this process remembers of a tenant's keys, after they were
/// rotated or revoked here; other replicas follow within [`KEY_TTL`].
pub fn forget_tenant(tenant: &str) {
    key_cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|_, (t, _)| t != tenant);
}

pub async fn require_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(ApiError::unauthorized)?;
    let tenant = tenant_for_key(state.store.as_ref(), presented)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    req.extensions_mut().insert(Tenant(tenant));
    Ok(next.run(req).await)
}
