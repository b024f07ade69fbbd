//! The set's shared secret, which both ends learn at runtime (a node at
//! join and on heartbeats, a replica from the set), and the node's own
//! identity.

use std::fmt;
use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq;

/// A secret that can be replaced while requests are in flight; clones
/// share it. Unset (or set to the empty string) it matches nothing.
#[derive(Clone, Default)]
pub struct SharedSecret {
    inner: Arc<RwLock<Option<Arc<str>>>>,
}

impl SharedSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        let s = Self::default();
        s.set(secret);
        s
    }

    /// No secret yet: every request is refused, and a client sends none.
    pub fn unset() -> Self {
        Self::default()
    }

    pub fn set(&self, secret: impl Into<String>) {
        let secret: String = secret.into();
        let value = (!secret.is_empty()).then(|| Arc::from(secret));
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = value;
    }

    pub fn clear(&self) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn get(&self) -> Option<Arc<str>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `presented` is the secret, in time that does not depend on
    /// how much of it matches (only on its length).
    pub fn verify(&self, presented: &[u8]) -> bool {
        match self.get() {
            Some(secret) => secret.as_bytes().ct_eq(presented).into(),
            None => false,
        }
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.get().is_some() {
            "<set>"
        } else {
            "<unset>"
        };
        f.debug_tuple("SharedSecret").field(&state).finish()
    }
}

/// What a node checks every request against: the set's secret, and its
/// own id, which a replica names in `X-Berth-Node` so that work meant for
/// a node that left never runs on the one that took over its address.
#[derive(Clone, Debug)]
pub struct NodeAuth {
    node_id: Arc<str>,
    secret: SharedSecret,
}

impl NodeAuth {
    pub fn new(node_id: impl Into<String>, secret: SharedSecret) -> Self {
        Self {
            node_id: Arc::from(node_id.into()),
            secret,
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn secret(&self) -> &SharedSecret {
        &self.secret
    }

    /// Replaces the secret for every request from now on.
    pub fn set_secret(&self, secret: impl Into<String>) {
        self.secret.set(secret);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_needs_the_exact_secret() {
        let s = SharedSecret::new("s3cret");
        assert!(s.verify(b"s3cret"));
        assert!(!s.verify(b"s3cre"));
        assert!(!s.verify(b"s3cret!"));
        assert!(!s.verify(b""));
        let other = s.clone();
        other.set("next");
        assert!(s.verify(b"next"));
        s.set("");
        assert!(!s.verify(b""));
        assert!(SharedSecret::unset().get().is_none());
        assert!(!format!("{:?}", SharedSecret::new("s3cret")).contains("s3cret"));
    }
}
