//! The server's side of the built-in registry: API keys as registry
//! credentials, the internal pull credential, and `berth registry gc`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use berth_api::{generate_key, hash_key, tenant_for_key};
use berth_core::ADMIN_TENANT;
use berth_registry::{
    Authenticator, GcOptions, NoAccess, Principal, Registry, parse_reference, reference_host,
};
use berth_scheduler::{ImageResolver, SchedError};
use berth_store::Store;
use clap::{Args, Subcommand};
use tracing::warn;

/// Resolves function image references that name this registry to their
/// manifest digest, so a version is pinned at deploy time and moving the
/// tag later changes nothing that runs.
pub struct RegistryResolver {
    pub registry: Arc<Registry>,
    /// `host:port` the engine pulls from (loopback).
    pub pull_host: String,
    /// Every `host:port` a user may write for this registry.
    pub aliases: Vec<String>,
}

#[async_trait]
impl ImageResolver for RegistryResolver {
    async fn resolve(&self, tenant: &str, reference: &str) -> Result<Option<String>, SchedError> {
        let explicit = match reference_host(reference) {
            Some(h) if self.aliases.iter().any(|a| a == h) => true,
            Some(_) => return Ok(None),
            None => false,
        };
        let parsed = match parse_reference(reference) {
            Ok(parsed) => parsed,
            // The engine pulls from this registry with a credential that
            // reads every repository, so a reference naming it must never
            // get past the namespace check below by being malformed.
            Err(e) if explicit => {
                return Err(SchedError::Invalid(format!(
                    "image {reference:?} cannot be deployed from the registry: {e}"
                )));
            }
            // Nothing the registry could hold: an image on the engine.
            Err(_) => return Ok(None),
        };
        // `name:tag` means the caller's own `<tenant>/name`.
        let repo = if parsed.repo.contains('/') {
            parsed.repo.to_owned()
        } else {
            format!("{tenant}/{}", parsed.repo)
        };
        let own = repo.starts_with(&format!("{tenant}/")) || tenant == ADMIN_TENANT;
        if !explicit && !repo.starts_with(&format!("{tenant}/")) {
            // Not this tenant's namespace: an image on the engine.
            return Ok(None);
        }
        if !own {
            return Err(SchedError::Invalid(format!(
                "image {reference:?} is outside your registry namespace {tenant}/"
            )));
        }
        match self.registry.resolve(&repo, parsed.reference).await {
            Ok(r) => Ok(Some(format!("{}/{repo}@{}", self.pull_host, r.digest))),
            Err(e) if explicit => Err(SchedError::Invalid(format!(
                "image {reference:?} cannot be deployed from the registry: {e}"
            ))),
            // A bare name that the registry does not have may still be an
            // image the engine has.
            Err(_) => Ok(None),
        }
    }
}

/// Where the registry keeps its files inside the data directory.
pub fn registry_root(data_dir: &Path) -> PathBuf {
    data_dir.join("registry")
}

/// A credential that may pull any image, for the engine pulling function
/// images by digest.
#[derive(Clone)]
pub struct PullCredential {
    pub username: String,
    pub password: String,
}

/// Registry logins checked against the store's API keys: `docker login
/// -u <tenant> -p <key>`, or `Authorization: Bearer <key>`. The admin
/// tenant's key may do anything. One more credential exists only in this
/// process's memory: the internal pull credential, new at every boot.
pub struct StoreAuthenticator {
    store: Arc<dyn Store>,
    internal: PullCredential,
    internal_hash: [u8; 32],
}

/// Its tenant cannot own a repository (components never begin with `_`),
/// so the internal credential can only ever read.
const INTERNAL_USER: &str = "_berth-pull";

impl StoreAuthenticator {
    pub fn new(store: Arc<dyn Store>) -> Self {
        let password = generate_key();
        Self {
            store,
            internal_hash: hash_key(&password),
            internal: PullCredential {
                username: INTERNAL_USER.to_owned(),
                password,
            },
        }
    }

    pub fn internal_pull_credential(&self) -> &PullCredential {
        &self.internal
    }
}

#[async_trait]
impl Authenticator for StoreAuthenticator {
    async fn authenticate(&self, user: Option<&str>, secret: &str) -> Option<Principal> {
        // Hashes are compared, never the secret bytes themselves.
        if hash_key(secret) == self.internal_hash {
            return user.is_none_or(|u| u == INTERNAL_USER).then(|| Principal {
                tenant: INTERNAL_USER.to_owned(),
                admin: false,
                pull_all: true,
            });
        }
        let tenant = match tenant_for_key(self.store.as_ref(), secret).await {
            Ok(t) => t?,
            Err(e) => {
                warn!(error = %e, "registry login: store lookup failed");
                return None;
            }
        };
        // The login name must be the key's tenant, so a leaked key cannot
        // be tried under every name.
        if user.is_some_and(|u| u != tenant) {
            return None;
        }
        Some(Principal {
            admin: tenant == ADMIN_TENANT,
            pull_all: false,
            tenant,
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Delete blobs no manifest refers to, and abandoned uploads. Safe
    /// while the server runs: recent blobs are kept for a grace period.
    Gc(GcArgs),
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// The server's data directory.
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Unreferenced blobs younger than this many minutes are kept (a push
    /// may still be on its way to the manifest that refers to them).
    #[arg(long, default_value_t = 60)]
    grace_minutes: u64,
    /// Report what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn command(cmd: RegistryCommand) -> Result<u8> {
    match cmd {
        RegistryCommand::Gc(args) => {
            let data_dir = args.data_dir.unwrap_or_else(crate::default_data_dir);
            let root = registry_root(&data_dir);
            if !root.is_dir() {
                bail!("no registry under {}", data_dir.display());
            }
            let config = berth_registry::Config::new(root);
            let reg = Registry::open(config, Arc::new(NoAccess)).context("opening the registry")?;
            let report = reg
                .gc(GcOptions {
                    grace: Duration::from_secs(args.grace_minutes.saturating_mul(60)),
                    dry_run: args.dry_run,
                })
                .await
                .context("garbage collection")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_registry::RepoName;
    use berth_store::SqliteStore;

    use super::*;

    #[tokio::test]
    async fn malformed_references_to_this_registry_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(berth_registry::Config::new(dir.path()), Arc::new(NoAccess));
        let resolver = RegistryResolver {
            registry: Arc::new(registry.unwrap()),
            pull_host: "127.0.0.1:5000".to_owned(),
            aliases: vec!["127.0.0.1:5000".to_owned()],
        };
        for own in [
            "127.0.0.1:5000/",
            "127.0.0.1:5000/alpha/app:",
            "127.0.0.1:5000/beta/app:v1@sha256:ab",
            "127.0.0.1:5000/Beta/app",
        ] {
            let got = resolver.resolve("alpha", own).await;
            assert!(matches!(got, Err(SchedError::Invalid(_))), "{own}: {got:?}");
        }
        // Anything else is left to the engine.
        for engine in ["Busybox", "docker.io/library/busybox:1", "app:v1@sha256:ab"] {
            assert_eq!(resolver.resolve("alpha", engine).await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn keys_are_registry_logins() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("berth.db"))
                .await
                .unwrap(),
        );
        store
            .put_api_key(ADMIN_TENANT, &hash_key("admin-key"), "admin")
            .await
            .unwrap();
        store
            .put_api_key("alpha", &hash_key("alpha-key"), "k")
            .await
            .unwrap();
        let auth = StoreAuthenticator::new(Arc::clone(&store));

        let admin = auth.authenticate(Some("admin"), "admin-key").await.unwrap();
        assert!(admin.admin);
        let alpha = auth.authenticate(None, "alpha-key").await.unwrap();
        assert_eq!(alpha.tenant, "alpha");
        assert!(!alpha.admin && !alpha.pull_all);
        // The login name must be the key's tenant.
        assert!(
            auth.authenticate(Some("admin"), "alpha-key")
                .await
                .is_none()
        );
        assert!(auth.authenticate(Some("alpha"), "wrong").await.is_none());
        assert!(auth.authenticate(None, "").await.is_none());

        let cred = auth.internal_pull_credential().clone();
        let internal = auth
            .authenticate(Some(&cred.username), &cred.password)
            .await
            .unwrap();
        assert!(internal.pull_all && !internal.admin);
        let repo = RepoName::parse("alpha/app").unwrap();
        assert!(internal.can_pull(&repo) && !internal.can_push(&repo));
        assert!(
            auth.authenticate(Some("admin"), &cred.password)
                .await
                .is_none()
        );
        // A new process has a new credential.
        let other = StoreAuthenticator::new(store);
        assert!(other.authenticate(None, &cred.password).await.is_none());
    }
}
