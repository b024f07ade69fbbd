//! The server's side of the built-in registry: API keys as registry
//! credentials, the internal pull credential, and `berth registry gc`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use berth_api::{generate_key, hash_key, tenant_for_key};
use berth_core::ADMIN_TENANT;
use berth_registry::{Authenticator, GcOptions, NoAccess, Principal, Registry};
use berth_store::Store;
use clap::{Args, Subcommand};
use tracing::warn;

/// Where the registry keeps its files inside the data directory.
pub fn registry_root(data_dir: &Path) -> PathBuf {
    data_dir.join("registry")
}

/// A credential that may pull any image, for the engine pulling function
/// images by digest.
#[derive(Clone)]
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "read by the executor once image pulls go through the registry"
    )
)]
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

    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "the executor takes it once image pulls go through the registry"
        )
    )]
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
