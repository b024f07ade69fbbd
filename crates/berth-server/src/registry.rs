//! The server's side of the built-in registry: which images a tenant may
//! deploy and what a reference names (the one home of that rule), API keys
//! as registry credentials, the internal pull credential, opening the
//! registry over the server's store (its index) and blob store, and
//! garbage collection of a data directory's registry.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use berth_blobs::Blobs;
use berth_core::ADMIN_TENANT;
use berth_registry::{
    Authenticator, GcOptions, GcReport, NoAccess, Principal, Registry, RegistryIndex,
    parse_reference, reference_host,
};
use berth_scheduler::{AdmittedImage, ImageAdmission, SchedError, TaskManager, hash_key};
use berth_store::SqliteStore;
use tracing::warn;

use crate::ServerError;

/// The image admission rule. A reference names, in this order:
/// - with this registry's host (`127.0.0.1:8080/alpha/app:v1`): that
///   repository, which must be the caller's own (the admin may name any);
/// - without a host: the caller's own repository of that name
///   (`app:v1` and `ux/app:v1` are `alpha/app:v1` and `alpha/ux/app:v1`
///   for alpha; `alpha/app:v1` is that too), when the registry has it;
/// - otherwise an image on the container engine, which only the admin may
///   deploy: tenants run what they pushed.
///
/// A registry image is pinned to its manifest digest at deploy, so moving
/// the tag later changes nothing that runs.
pub struct RegistryAdmission {
    pub registry: Arc<Registry>,
    /// `host:port` the engine pulls from (loopback).
    pub pull_host: String,
    /// Every `host:port` a user may write for this registry.
    pub aliases: Vec<String>,
}

impl RegistryAdmission {
    /// An image on the engine, for whoever may run one.
    fn engine(
        tenant: &str,
        reference: &str,
        candidate: Option<String>,
    ) -> Result<AdmittedImage, SchedError> {
        if tenant != ADMIN_TENANT {
            // Images already in the engine were put there by the operator
            // or pulled for some tenant.
            return Err(SchedError::ImageNotAllowed(format!(
                "image {reference:?} is not in the registry namespace {tenant}/: push it with \
                 docker push <registry>/{tenant}/<name>:<tag> and deploy that"
            )));
        }
        Ok(AdmittedImage::Engine {
            reference: reference.to_owned(),
            registry_candidate: candidate,
        })
    }
}

#[async_trait]
impl ImageAdmission for RegistryAdmission {
    async fn admit(&self, tenant: &str, reference: &str) -> Result<AdmittedImage, SchedError> {
        let explicit = match reference_host(reference) {
            Some(h) if self.aliases.iter().any(|a| a == h) => true,
            // Another registry's host: never pulled from, so only an image
            // the engine already holds by that name.
            Some(_) => return Self::engine(tenant, reference, None),
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
            Err(_) => return Self::engine(tenant, reference, None),
        };
        let own_prefix = format!("{tenant}/");
        let repo = if explicit || parsed.repo.starts_with(&own_prefix) {
            parsed.repo.to_owned()
        } else {
            format!("{own_prefix}{}", parsed.repo)
        };
        if explicit && !repo.starts_with(&own_prefix) && tenant != ADMIN_TENANT {
            return Err(SchedError::Invalid(format!(
                "image {reference:?} is outside your registry namespace {own_prefix}"
            )));
        }
        match self.registry.resolve(&repo, parsed.reference).await {
            Ok(r) => Ok(AdmittedImage::Registry(format!(
                "{}/{repo}@{}",
                self.pull_host, r.digest
            ))),
            Err(e) if explicit => Err(SchedError::Invalid(format!(
                "image {reference:?} cannot be deployed from the registry: {e}"
            ))),
            Err(_) => {
                let candidate = format!("{repo}:{}", parsed.reference);
                Self::engine(tenant, reference, Some(candidate))
            }
        }
    }
}

/// Where the registry's files are inside the data directory: on the local
/// blob store, the blobs (`registry/blobs/...`, keys relative to the data
/// directory) and, from before the index, the repositories' links.
pub fn registry_root(data_dir: &Path) -> PathBuf {
    data_dir.join("registry")
}

/// The registry of a server: its index is the server's store (SQLite or
/// PostgreSQL, shared by a set), its bytes are in the server's blob store.
/// A registry written before the index, found in the data directory, is
/// imported into it first (once for the whole set).
pub async fn open_registry(
    data_dir: &Path,
    index: Arc<dyn RegistryIndex>,
    blobs: Blobs,
    auth: Arc<dyn Authenticator>,
) -> Result<Registry, ServerError> {
    let registry = Registry::new(berth_registry::Config::default(), index, blobs, auth);
    registry.import_legacy(&registry_root(data_dir)).await?;
    Ok(registry)
}

/// A credential that may pull any image, for the engine pulling function
/// images by digest. It exists only in this process's memory, new at
/// every boot.
#[derive(Clone)]
pub struct PullCredential {
    pub username: String,
    pub password: String,
}

/// Its tenant cannot own a repository (components never begin with `_`),
/// so the internal credential can only ever read.
const INTERNAL_USER: &str = "_berth-pull";

/// Node ids begin so (a tenant's name may too: its key is still tried).
const NODE_USER_PREFIX: &str = "node-";

impl PullCredential {
    pub fn generate() -> Self {
        Self {
            username: INTERNAL_USER.to_owned(),
            password: berth_scheduler::generate_key(),
        }
    }
}

/// Registry logins checked against the tenants' API keys: `docker login
/// -u <tenant> -p <key>`, or `Authorization: Bearer <key>`. The admin
/// tenant's key may do anything; the internal pull credential may read.
pub struct KeyAuthenticator {
    /// Set once the TaskManager exists (it needs the executor, which needs
    /// the pull credential first).
    tasks: OnceLock<Arc<TaskManager>>,
    internal_hash: [u8; 32],
}

impl KeyAuthenticator {
    pub fn new(internal: &PullCredential) -> Self {
        Self {
            tasks: OnceLock::new(),
            internal_hash: hash_key(&internal.password),
        }
    }

    pub fn set_tasks(&self, tasks: Arc<TaskManager>) {
        let _ = self.tasks.set(tasks);
    }
}

#[async_trait]
impl Authenticator for KeyAuthenticator {
    async fn authenticate(&self, user: Option<&str>, secret: &str) -> Option<Principal> {
        // Hashes are compared, never the secret bytes themselves.
        if hash_key(secret) == self.internal_hash {
            return user.is_none_or(|u| u == INTERNAL_USER).then(|| Principal {
                tenant: INTERNAL_USER.to_owned(),
                admin: false,
                pull_all: true,
            });
        }
        let tasks = self.tasks.get()?;
        // An executor node pulls the images it runs with its own
        // credential, under its own id.
        if let Some(node) = user.filter(|u| u.starts_with(NODE_USER_PREFIX)) {
            match tasks.node_of(secret).await {
                Ok(Some(id)) if id == node => {
                    return Some(Principal {
                        tenant: INTERNAL_USER.to_owned(),
                        admin: false,
                        pull_all: true,
                    });
                }
                // Not a node's credential: a tenant may be named so too.
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "registry login: node credential lookup failed");
                    return None;
                }
            }
        }
        let tenant = match tasks.authenticate(secret).await {
            Ok(t) => t?,
            Err(e) => {
                warn!(error = %e, "registry login: key lookup failed");
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

/// Deletes blobs no manifest refers to, and abandoned uploads, in a data
/// directory's registry (its database is the index, its files the blobs).
/// Safe while the server runs: recent blobs are kept for `grace` (a push
/// may still be on its way to the manifest that refers to them), and a
/// blob a push relies on is never deleted under it (see
/// `berth_registry`'s `gc`).
pub async fn collect_garbage(
    data_dir: &Path,
    grace: Duration,
    dry_run: bool,
) -> Result<GcReport, ServerError> {
    let database = data_dir.join("berth.db");
    if !database.is_file() && !registry_root(data_dir).is_dir() {
        return Err(ServerError::NoRegistry(data_dir.to_owned()));
    }
    let index: Arc<dyn RegistryIndex> = Arc::new(SqliteStore::open(&database).await?);
    let blobs = Blobs::local(data_dir)?;
    let registry = open_registry(data_dir, index, blobs, Arc::new(NoAccess)).await?;
    Ok(registry.gc(GcOptions { grace, dry_run }).await?)
}

#[cfg(test)]
mod tests;
