//! Who is calling, and what they may do. The registry knows no keys: the
//! embedding server supplies an [`Authenticator`]. Repositories are
//! namespaced `<tenant>/<name>`; a principal pushes and pulls under its own
//! tenant's prefix only, unless it is an admin (everything) or may pull
//! everything (`pull_all`, e.g. the executor pulling function images).

use async_trait::async_trait;
use axum::http::{HeaderMap, header};
use base64::Engine as _;

use crate::names::RepoName;

/// Longest credential header accepted; longer ones are refused unread.
const MAX_AUTH_HEADER: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub admin: bool,
    pub pull_all: bool,
}

impl Principal {
    fn owns(&self, repo: &RepoName) -> bool {
        repo.is_namespaced() && repo.namespace() == self.tenant
    }

    pub fn can_pull(&self, repo: &RepoName) -> bool {
        self.admin || self.pull_all || self.owns(repo)
    }

    /// Push, delete and mount into.
    pub fn can_push(&self, repo: &RepoName) -> bool {
        self.admin || self.owns(repo)
    }
}

#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Checks a credential. `user` is the Basic-auth user name, `None` for
    /// a `Bearer` token. `None` means the credential is not valid.
    async fn authenticate(&self, user: Option<&str>, secret: &str) -> Option<Principal>;
}

/// Refuses everyone: for a registry opened only to collect garbage.
pub struct NoAccess;

#[async_trait]
impl Authenticator for NoAccess {
    async fn authenticate(&self, _user: Option<&str>, _secret: &str) -> Option<Principal> {
        None
    }
}

/// The credential in an `Authorization` header: `Basic` (what `docker
/// login` sends) or `Bearer <key>` (what API clients send).
pub(crate) fn credentials(headers: &HeaderMap) -> Option<(Option<String>, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if value.len() > MAX_AUTH_HEADER {
        return None;
    }
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        Some((Some(user.to_owned()), password.to_owned()))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        (!rest.is_empty()).then(|| (None, rest.to_owned()))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn parses_basic_and_bearer() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWRtaW46czNjcjp0"), // admin:s3cr:t
        );
        assert_eq!(
            credentials(&h),
            Some((Some("admin".into()), "s3cr:t".into()))
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        assert_eq!(credentials(&h), Some((None, "k".into())));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert_eq!(credentials(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Digest x"));
        assert_eq!(credentials(&h), None);
    }

    #[test]
    fn namespaces() {
        let p = Principal {
            tenant: "alpha".into(),
            admin: false,
            pull_all: false,
        };
        let own = RepoName::parse("alpha/x").unwrap();
        let other = RepoName::parse("beta/x").unwrap();
        let bare = RepoName::parse("alpha").unwrap();
        assert!(p.can_push(&own) && p.can_pull(&own));
        assert!(!p.can_push(&other) && !p.can_pull(&other));
        assert!(
            !p.can_push(&bare),
            "a bare tenant name is no repository of it"
        );
        let reader = Principal {
            pull_all: true,
            ..p.clone()
        };
        assert!(reader.can_pull(&other) && !reader.can_push(&other));
        let admin = Principal { admin: true, ..p };
        assert!(admin.can_push(&other) && admin.can_push(&bare));
    }
}
