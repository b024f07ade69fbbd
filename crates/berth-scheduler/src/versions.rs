//! Deploying functions: each change of image or settings makes a new
//! immutable version pinned to an image id, readied on the executors
//! before the first call needs it; reading and deleting them.

use berth_core::{
    FunctionConfig, FunctionSummary, FunctionVersion, RequestMeta, TaskKind, TaskRecord,
    validate_name,
};
use berth_executor::ExecError;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{SchedError, TaskManager};

/// What an image reference names for a tenant, as the image admission
/// rule decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmittedImage {
    /// Pinned to a digest in the built-in registry: every executor can
    /// pull exactly this.
    Registry(String),
    /// An image the executors' engines hold under this name;
    /// `registry_candidate` is the repository the registry was asked for
    /// first, if any, so a miss on both can name both.
    Engine {
        reference: String,
        registry_candidate: Option<String>,
    },
}

/// The rule for which images a tenant may deploy, and what a reference
/// resolves to. The server implements it over its registry; without one,
/// every reference names an engine image.
#[async_trait::async_trait]
pub trait ImageAdmission: Send + Sync + 'static {
    async fn admit(&self, tenant: &str, reference: &str) -> Result<AdmittedImage, SchedError>;
}

/// The version a deploy left in force, and whether it made it.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub version: FunctionVersion,
    pub created: bool,
}

/// At deploy time a missing image is the caller's mistake, not an outage;
/// the message names every place it was looked for.
fn missing(e: ExecError, reference: &str, registry_candidate: Option<String>) -> SchedError {
    match e {
        ExecError::ImageNotFound(_) => SchedError::ImageNotFound(match registry_candidate {
            Some(repo) => format!(
                "image {reference:?} is neither in the registry (as {repo}) nor on the \
                 container engine; push or build it first"
            ),
            None => format!(
                "image {reference:?} is not present on the container engine; build, load or \
                 push it first"
            ),
        }),
        other => other.into(),
    }
}

impl TaskManager {
    /// Validates a definition, pins its image to the content id the
    /// executors have, and records a version if anything changed.
    pub async fn deploy(
        &self,
        tenant: &str,
        name: &str,
        config: FunctionConfig,
    ) -> Result<Deployed, SchedError> {
        validate_name(name).map_err(|e| SchedError::Invalid(e.0))?;
        config
            .validate(&self.cfg.limits)
            .map_err(|e| SchedError::Invalid(e.0))?;
        self.quotas_of(tenant)
            .await?
            .admit(tenant, &config)
            .map_err(|e| SchedError::OverQuota(e.0))?;
        let executor = self
            .fleet
            .candidates()
            .into_iter()
            .next()
            .ok_or(SchedError::NoExecutor)?
            .executor;
        let reference = config.image.trim();
        let admitted = match self.admission.get() {
            Some(a) => a.admit(tenant, reference).await?,
            None => AdmittedImage::Engine {
                reference: reference.to_owned(),
                registry_candidate: None,
            },
        };
        // A registry image is pinned to its manifest digest, which any
        // executor can pull; an engine-local one to the engine's image id.
        let image_id = match admitted {
            AdmittedImage::Registry(pinned) => {
                executor
                    .resolve_image(&pinned)
                    .await
                    .map_err(|e| missing(e, reference, None))?;
                pinned
            }
            AdmittedImage::Engine {
                reference: name,
                registry_candidate,
            } => {
                executor
                    .resolve_image(&name)
                    .await
                    .map_err(|e| missing(e, reference, registry_candidate))?
                    .id
            }
        };
        let (version, created) = self
            .store
            .put_function(tenant, name, &config, &image_id)
            .await?;
        self.invalidate(berth_store::Invalidation::Function {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
        })
        .await;
        self.prepare(&version).await;
        Ok(Deployed { version, created })
    }

    /// Readies a version on every executor (image present, minimum warm
    /// instances started) and lets the function's older versions cool
    /// down. Failures only cost the first call a cold start.
    pub async fn prepare(&self, v: &FunctionVersion) {
        let template = TaskRecord::new(
            &v.tenant,
            &v.function,
            v.version,
            TaskKind::Sync,
            RequestMeta::default(),
        );
        let spec = self.spec(v, &template, CancellationToken::new());
        for m in self.fleet.all() {
            m.executor.retire(&v.tenant, &v.function, Some(v.version));
            if let Err(err) = m.executor.prepare(&spec).await {
                warn!(function = %v.function, version = v.version, node = %m.id, error = %err,
                    "could not prepare the version; its first call will start cold");
            }
        }
    }

    /// Readies the latest version of every function (server start).
    pub async fn prepare_all(&self) -> Result<(), SchedError> {
        for f in self.store.list_all_functions().await? {
            if f.latest.config.min_instances > 0 {
                self.prepare(&f.latest).await;
            }
        }
        Ok(())
    }

    pub async fn function(&self, tenant: &str, name: &str) -> Result<FunctionSummary, SchedError> {
        self.store
            .get_function(tenant, name)
            .await?
            .ok_or_else(|| SchedError::FunctionNotFound(name.to_owned()))
    }

    pub async fn versions(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<FunctionVersion>, SchedError> {
        Ok(self.store.list_versions(tenant, name).await?)
    }

    pub async fn functions(&self, tenant: &str) -> Result<Vec<FunctionSummary>, SchedError> {
        Ok(self.store.list_functions(tenant).await?)
    }

    /// Removes a function and its versions; its queued tasks fail, its
    /// instances are let go.
    pub async fn delete_function(&self, tenant: &str, name: &str) -> Result<(), SchedError> {
        if !self.store.delete_function(tenant, name).await? {
            return Err(SchedError::FunctionNotFound(name.to_owned()));
        }
        self.invalidate(berth_store::Invalidation::Function {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
        })
        .await;
        for m in self.fleet.all() {
            m.executor.retire(tenant, name, None);
        }
        Ok(())
    }
}
