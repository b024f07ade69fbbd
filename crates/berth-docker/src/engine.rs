//! The engine connection and what every function container shares: the
//! node's settings, images (ensured, pulled from Berth's own registry only,
//! their configs cached), the node's container slots, labels, the hardened
//! baseline, and removal that outlasts an engine outage.
//!
//! Fresh runs ([`crate::fresh`]) and warm instances ([`crate::warm`]) are
//! built on this; it knows neither.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::models::{HostConfig, HostConfigLogConfig, ResourcesUlimits};
use bollard::query_parameters::{CreateImageOptionsBuilder, ListContainersOptionsBuilder};
use futures::StreamExt;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

use crate::container::{Container, elapsed_ms, engine_error, is_connect_error, is_not_found};
use berth_executor::{ExecError, ImageInfo, RunSpec};

const LABEL_MANAGED: &str = "dev.berth.managed";
const LABEL_NODE: &str = "dev.berth.node";
const LABEL_BOOT: &str = "dev.berth.boot";
pub(crate) const LABEL_TASK: &str = "dev.berth.task";
const LABEL_TENANT: &str = "dev.berth.tenant";
const LABEL_FUNCTION: &str = "dev.berth.function";
const LABEL_VERSION: &str = "dev.berth.version";
pub(crate) const LABEL_INSTANCE: &str = "dev.berth.instance";

/// How long a health check waits for the engine to answer a ping.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// How often removals that failed for want of an engine are retried.
const LEFTOVER_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Stable id of this executor; its containers carry it so a restart
    /// reaps only its own orphans.
    pub node_id: String,
    /// Unique to this process. Orphans are the node's containers from other
    /// boots, so a late reap never touches this process's own containers.
    pub boot_id: String,
    pub max_containers: usize,
    pub pids_limit: i64,
    pub tmp_size_mb: u32,
    pub nofile: i64,
    /// The statically linked agent on this host; warm modes need it.
    pub agent: Option<PathBuf>,
    /// Where instances' socket directories are made (short: a unix socket
    /// path is limited to 108 bytes).
    pub run_dir: PathBuf,
    /// Between SIGTERM and SIGKILL when a request times out or is cancelled.
    pub kill_grace: Duration,
    /// How long a new instance may take to accept requests.
    pub ready_timeout: Duration,
    /// The engine's OCI runtime for function containers (e.g. `runsc` for
    /// gVisor, once registered with the engine); `None` is the engine's
    /// default (runc).
    pub runtime: Option<String>,
    /// Where the warm pools record scale events and 429s.
    pub metrics: berth_metrics::PoolMetrics,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            node_id: "local".into(),
            boot_id: String::new(),
            max_containers: 32,
            pids_limit: 256,
            tmp_size_mb: 64,
            nofile: 1024,
            agent: None,
            run_dir: std::env::temp_dir().join("berth-run"),
            kill_grace: Duration::from_secs(2),
            ready_timeout: Duration::from_secs(30),
            runtime: None,
            metrics: berth_metrics::PoolMetrics::default(),
        }
    }
}

/// How the engine logs in to Berth's own registry to pull function images.
/// Images are pulled from that registry only: a user-supplied reference
/// must never make the engine fetch from an arbitrary host.
#[derive(Clone)]
pub struct PullCredentials {
    /// `host:port` as it appears in image references.
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for PullCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullCredentials")
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What fresh runs and warm instances share: the engine connection, the
/// node's settings and its container slots.
pub(crate) struct Engine {
    /// Connected and negotiated lazily, so the server starts (and answers
    /// 503) while the engine is down or its socket is missing, and speaks
    /// the engine's API version (1.41 on Debian's engine) rather than the
    /// client's newest.
    negotiated: OnceCell<Docker>,
    pub cfg: DockerConfig,
    slots: Arc<Semaphore>,
    allocated: Arc<Allocated>,
    pull: std::sync::RwLock<Option<PullCredentials>>,
    /// What containers need from images' configs, by image id (ids are
    /// immutable).
    images: std::sync::Mutex<HashMap<String, ImageConfig>>,
    /// Containers that could not be removed because the engine was
    /// unreachable. A restarted engine still has them (stopped), so they
    /// are removed once it answers again rather than left to the next
    /// start's reaper.
    unremoved: std::sync::Mutex<Vec<String>>,
}

/// The parts of an image's config that decide how its containers run.
#[derive(Debug, Clone)]
pub(crate) struct ImageConfig {
    /// ENTRYPOINT followed by CMD, as `docker run` would run them.
    pub program: Vec<String>,
    /// The image's USER, if it sets one.
    pub user: Option<String>,
}

/// What the containers holding slots were promised.
#[derive(Default)]
struct Allocated {
    cpu_millis: AtomicU64,
    memory_mb: AtomicU64,
}

/// One of the node's container slots, held for as long as its container
/// lives; what it promised is given back with it.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    allocated: Arc<Allocated>,
    cpu_millis: u64,
    memory_mb: u64,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, allocated: &Arc<Allocated>, cpu: u32, mem: u32) -> Self {
        let (cpu_millis, memory_mb) = (u64::from(cpu), u64::from(mem));
        allocated
            .cpu_millis
            .fetch_add(cpu_millis, Ordering::Relaxed);
        allocated.memory_mb.fetch_add(memory_mb, Ordering::Relaxed);
        Self {
            _permit: permit,
            allocated: Arc::clone(allocated),
            cpu_millis,
            memory_mb,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.allocated
            .cpu_millis
            .fetch_sub(self.cpu_millis, Ordering::Relaxed);
        self.allocated
            .memory_mb
            .fetch_sub(self.memory_mb, Ordering::Relaxed);
    }
}

/// Frees one of the node's container slots when it is full. What may go
/// is the pools' decision, so the engine only asks.
#[async_trait]
pub(crate) trait MakeRoom: Send + Sync {
    /// Removes one idle container; false when there is none to remove.
    async fn make_room(&self) -> bool;
}

impl Engine {
    /// Uses the usual `DOCKER_HOST` / local socket defaults; nothing is
    /// contacted until the first call.
    pub fn new(cfg: DockerConfig) -> Self {
        Self {
            negotiated: OnceCell::new(),
            slots: Arc::new(Semaphore::new(cfg.max_containers)),
            allocated: Arc::default(),
            cfg,
            pull: std::sync::RwLock::new(None),
            images: std::sync::Mutex::new(HashMap::new()),
            unremoved: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn set_pull_credentials(&self, creds: PullCredentials) {
        *self.pull.write().unwrap_or_else(|p| p.into_inner()) = Some(creds);
    }

    pub async fn client(&self) -> Result<&Docker, ExecError> {
        self.negotiated
            .get_or_try_init(|| async {
                let unavailable = |e: DockerError| ExecError::EngineUnavailable(e.to_string());
                Docker::connect_with_local_defaults()
                    .map_err(unavailable)?
                    .negotiate_version()
                    .await
                    .map_err(unavailable)
            })
            .await
    }

    /// Whether the engine answers a ping. Readiness probes must answer
    /// even when the engine accepts connections but does not respond.
    pub async fn healthy(&self) -> bool {
        match self.client().await {
            Ok(d) => matches!(
                tokio::time::timeout(PING_TIMEOUT, d.ping()).await,
                Ok(Ok(_))
            ),
            Err(_) => false,
        }
    }

    /// The image's id, pulling it first when it is missing and comes from
    /// Berth's own registry. Returns how long a pull took.
    pub async fn ensure_image(
        &self,
        reference: &str,
    ) -> Result<(ImageInfo, Option<i64>), ExecError> {
        let docker = self.client().await?;
        match inspect_id(docker, reference).await {
            Err(ExecError::ImageNotFound(_)) => {}
            other => return other.map(|i| (i, None)),
        }
        let creds = self
            .pull
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|c| registry_host(reference) == Some(c.server.as_str()));
        let Some(creds) = creds else {
            return Err(ExecError::ImageNotFound(reference.to_owned()));
        };
        let began = Instant::now();
        let failed = |message: String| ExecError::PullFailed {
            image: reference.to_owned(),
            message,
        };
        let opts = CreateImageOptionsBuilder::default()
            .from_image(reference)
            .build();
        let auth = DockerCredentials {
            username: Some(creds.username),
            password: Some(creds.password),
            serveraddress: Some(creds.server),
            ..Default::default()
        };
        let mut progress = docker.create_image(Some(opts), None, Some(auth));
        while let Some(step) = progress.next().await {
            match step {
                Ok(info) => {
                    if let Some(err) = info.error_detail.and_then(|d| d.message) {
                        return Err(failed(err));
                    }
                }
                Err(e) if is_connect_error(&e) => return Err(engine_error(e)),
                Err(e) => return Err(failed(e.to_string())),
            }
        }
        let info = inspect_id(docker, reference).await?;
        Ok((info, Some(elapsed_ms(began))))
    }

    /// The image's program and user, inspected once per image id.
    pub async fn image_config(&self, image: &str) -> Result<ImageConfig, ExecError> {
        if let Some(c) = self.lock_images().get(image) {
            return Ok(c.clone());
        }
        let docker = self.client().await?;
        let config = inspect(docker, image).await?.config.unwrap_or_default();
        let found = ImageConfig {
            program: config
                .entrypoint
                .unwrap_or_default()
                .into_iter()
                .chain(config.cmd.unwrap_or_default())
                .collect(),
            user: config.user.filter(|u| !u.trim().is_empty()),
        };
        self.lock_images().insert(image.to_owned(), found.clone());
        Ok(found)
    }

    fn lock_images(&self) -> std::sync::MutexGuard<'_, HashMap<String, ImageConfig>> {
        self.images.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One of the node's container slots. When the node is full, `room`
    /// is asked to remove something idle (a warm instance of another
    /// function): a request that can run now beats an instance that might
    /// be used later.
    /// The slot carries the CPU and memory promised to its container,
    /// which the node reports as allocated while the slot is held.
    pub async fn slot(
        &self,
        room: &dyn MakeRoom,
        cpu_millis: u32,
        memory_mb: u32,
    ) -> Result<Slot, ExecError> {
        loop {
            if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
                return Ok(Slot::new(permit, &self.allocated, cpu_millis, memory_mb));
            }
            if !room.make_room().await {
                return Err(ExecError::NoCapacity(self.cfg.max_containers));
            }
        }
    }

    /// CPU (millicores) and memory (MiB) promised to the containers
    /// holding slots now.
    pub fn allocated(&self) -> (u64, u64) {
        (
            self.allocated.cpu_millis.load(Ordering::Relaxed),
            self.allocated.memory_mb.load(Ordering::Relaxed),
        )
    }

    pub fn in_use(&self) -> usize {
        self.cfg.max_containers - self.slots.available_permits()
    }

    pub fn has_free_slot(&self) -> bool {
        self.slots.available_permits() > 0
    }

    /// Removes a container now, or once the engine answers again.
    pub async fn remove(&self, container: &Container) {
        if !container.remove().await {
            self.lock_unremoved().push(container.id.clone());
        }
    }

    async fn remove_leftovers(&self) {
        let ids = std::mem::take(&mut *self.lock_unremoved());
        if ids.is_empty() {
            return;
        }
        let docker = match self.client().await {
            Ok(d) => d.clone(),
            Err(_) => {
                self.lock_unremoved().extend(ids);
                return;
            }
        };
        for id in ids {
            let container = Container {
                docker: docker.clone(),
                id,
            };
            self.remove(&container).await;
        }
    }

    fn lock_unremoved(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.unremoved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes the node's containers from other boots (orphans of a
    /// crash); returns how many.
    pub async fn reap_orphans(&self) -> Result<usize, ExecError> {
        self.remove_labelled(false).await
    }

    /// Removes every container of the node, this boot's too: the set
    /// handed its work elsewhere.
    pub async fn remove_all(&self) -> Result<usize, ExecError> {
        self.remove_labelled(true).await
    }

    async fn remove_labelled(&self, this_boot_too: bool) -> Result<usize, ExecError> {
        let docker = self.client().await?;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_NODE}={}", self.cfg.node_id)],
        )]);
        let found = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(engine_error)?;
        let mut reaped = 0;
        for c in found {
            let this_boot = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_BOOT))
                .is_some_and(|b| *b == self.cfg.boot_id);
            if this_boot && !this_boot_too {
                continue;
            }
            if let Some(id) = c.id {
                Container {
                    docker: docker.clone(),
                    id,
                }
                .remove()
                .await;
                reaped += 1;
            }
        }
        Ok(reaped)
    }

    /// `BERTH_NODE=<id>` in every container: which node ran a call, for
    /// the function's own logs and for following work across a fleet.
    pub fn node_env(&self) -> String {
        format!("BERTH_NODE={}", self.cfg.node_id)
    }

    pub fn labels(&self, spec: &RunSpec) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_NODE.to_owned(), self.cfg.node_id.clone()),
            (LABEL_BOOT.to_owned(), self.cfg.boot_id.clone()),
            (LABEL_TENANT.to_owned(), spec.tenant.clone()),
            (LABEL_FUNCTION.to_owned(), spec.function.clone()),
            (LABEL_VERSION.to_owned(), spec.version.to_string()),
        ])
    }

    /// The hardened baseline every function container gets.
    pub fn host_config(&self, spec: &RunSpec) -> HostConfig {
        let memory = i64::from(spec.memory_mb) * 1024 * 1024;
        HostConfig {
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            // Sticky and world-writable: the function runs as whichever
            // uid the image or its config picks.
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                format!("rw,nosuid,nodev,size={}m,mode=1777", self.cfg.tmp_size_mb),
            )])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(memory),
            // Swap equal to memory means no swap: the limit is real.
            memory_swap: Some(memory),
            nano_cpus: Some(i64::from(spec.cpu_millis) * 1_000_000),
            pids_limit: Some(self.cfg.pids_limit),
            ulimits: Some(vec![
                ResourcesUlimits {
                    name: Some("nofile".into()),
                    soft: Some(self.cfg.nofile),
                    hard: Some(self.cfg.nofile),
                },
                ResourcesUlimits {
                    name: Some("core".into()),
                    soft: Some(0),
                    hard: Some(0),
                },
            ]),
            // stdout is the response and stderr goes to the task's logs; a
            // log driver would keep a second, unbounded copy on disk.
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            runtime: self.cfg.runtime.clone(),
            ..Default::default()
        }
    }
}

/// Retries removals deferred by an engine outage until the engine is
/// dropped.
pub(crate) fn spawn_leftover_retry(engine: &Arc<Engine>) {
    let engine = Arc::downgrade(engine);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(LEFTOVER_RETRY).await;
            match engine.upgrade() {
                Some(e) => e.remove_leftovers().await,
                None => return,
            }
        }
    });
}

async fn inspect_id(docker: &Docker, reference: &str) -> Result<ImageInfo, ExecError> {
    inspect(docker, reference)
        .await?
        .id
        .map(|id| ImageInfo { id })
        .ok_or_else(|| ExecError::Engine("image inspect returned no id".into()))
}

/// The engine's account of an image; a missing one is `ImageNotFound`, and
/// so is a reference the engine cannot even parse (it answers 400 "invalid
/// reference format"): no such image can exist, and it is the caller's
/// mistake, not an engine failure.
async fn inspect(
    docker: &Docker,
    reference: &str,
) -> Result<bollard::models::ImageInspect, ExecError> {
    docker.inspect_image(reference).await.map_err(|e| {
        let unparsable = matches!(
            e,
            DockerError::DockerResponseServerError {
                status_code: 400,
                ..
            }
        );
        if is_not_found(&e) || unparsable {
            ExecError::ImageNotFound(reference.to_owned())
        } else {
            engine_error(e)
        }
    })
}

/// The registry part of an image reference, if it names one: the first
/// path component when it looks like a host (has a dot or a port, or is
/// `localhost`), as Docker decides it.
/// The registry host an image reference names, if it names one
/// (`host:port/...`, `a.b/...`, `localhost/...`).
pub fn registry_host(reference: &str) -> Option<&str> {
    let (first, _) = reference.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts_are_told_from_repository_names() {
        assert_eq!(
            registry_host("127.0.0.1:8080/admin/x@sha256:ab"),
            Some("127.0.0.1:8080")
        );
        assert_eq!(registry_host("localhost/x:1"), Some("localhost"));
        assert_eq!(registry_host("berth-test/busybox:latest"), None);
        assert_eq!(registry_host("busybox"), None);
    }
}
