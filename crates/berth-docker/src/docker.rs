//! The Docker Engine implementation of [`Executor`](crate::Executor).
//!
//! Two ways to run: `fresh` creates one container per attempt, attached
//! before start so no output is missed and removed on every path out; the
//! warm modes (`exec`, `http`) keep instances in per-version pools
//! ([`crate::pool`]) and send each request to the agent inside one over a
//! unix socket (see [`crate::warm`]). Both share the hardened baseline and
//! the node's container slots.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptions, CreateImageOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::{debug, warn};

use berth_core::Mode;

use crate::pool::{self, Pools};
use crate::warm::WarmLauncher;
use berth_executor::{
    ExecError, Executor, ExecutorStatus, Exit, ImageInfo, InputStream, Invocation, RunOutcome,
    RunSpec,
};

const LABEL_MANAGED: &str = "dev.berth.managed";
const LABEL_NODE: &str = "dev.berth.node";
const LABEL_BOOT: &str = "dev.berth.boot";
const LABEL_TASK: &str = "dev.berth.task";
const LABEL_TENANT: &str = "dev.berth.tenant";
const LABEL_FUNCTION: &str = "dev.berth.function";
const LABEL_VERSION: &str = "dev.berth.version";
pub(crate) const LABEL_INSTANCE: &str = "dev.berth.instance";

/// How much stderr is kept in memory for error messages.
const STDERR_TAIL: usize = 2048;
/// Output chunks in flight per stream; with Docker's 32 KiB frames this
/// bounds buffered output to about 0.5 MiB per stream.
const CHANNEL_DEPTH: usize = 16;

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

pub struct DockerExecutor {
    engine: Arc<Engine>,
    pools: Arc<Pools<WarmLauncher>>,
    background: AtomicBool,
    exited: std::sync::Mutex<Option<mpsc::Receiver<String>>>,
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

/// Who function containers run as unless told otherwise: the conventional
/// unprivileged "nobody", which owns no file in any image.
const NOBODY: &str = "65534:65534";

/// How long a health check waits for the engine to answer a ping.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// How often removals that failed for want of an engine are retried.
const LEFTOVER_RETRY: Duration = Duration::from_secs(2);

impl DockerExecutor {
    /// Uses the usual `DOCKER_HOST` / local socket defaults; nothing is
    /// contacted until the first call.
    pub fn new(cfg: DockerConfig) -> Self {
        let engine = Arc::new(Engine {
            negotiated: OnceCell::new(),
            slots: Arc::new(Semaphore::new(cfg.max_containers)),
            cfg,
            pull: std::sync::RwLock::new(None),
            images: std::sync::Mutex::new(HashMap::new()),
            unremoved: std::sync::Mutex::new(Vec::new()),
        });
        let (exited_tx, exited_rx) = mpsc::channel(64);
        Self {
            pools: Pools::new(WarmLauncher::new(Arc::clone(&engine), exited_tx)),
            engine,
            background: AtomicBool::new(false),
            exited: std::sync::Mutex::new(Some(exited_rx)),
        }
    }

    /// Known once the server has bound its address, after `new`.
    pub fn set_pull_credentials(&self, creds: PullCredentials) {
        *self.engine.pull.write().unwrap_or_else(|p| p.into_inner()) = Some(creds);
    }

    /// Background work needs a runtime, which `new` may not have.
    fn start_background(&self) {
        if self.background.swap(true, Ordering::SeqCst) {
            return;
        }
        pool::spawn_maintenance(&self.pools, Duration::from_secs(1));
        let engine = Arc::downgrade(&self.engine);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEFTOVER_RETRY).await;
                match engine.upgrade() {
                    Some(e) => e.remove_leftovers().await,
                    None => return,
                }
            }
        });
        let rx = self.exited.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut rx) = rx {
            let pools = Arc::downgrade(&self.pools);
            tokio::spawn(async move {
                while let Some(id) = rx.recv().await {
                    match pools.upgrade() {
                        Some(p) => p.instance_exited(&id),
                        None => return,
                    }
                }
            });
        }
    }

    async fn run_fresh(&self, spec: RunSpec, stdin: InputStream) -> Result<Invocation, ExecError> {
        let permit = self
            .engine
            .slot(
                &|| self.pools.take_idle_elsewhere(None),
                self.pools.launcher(),
            )
            .await?;
        let docker = self.engine.client().await?.clone();
        let mut began = Instant::now();
        let mut pull_ms = None;
        let image = match self.engine.image_config(&spec.image).await {
            // Never pulled to this node: fetch it if it is ours to fetch.
            Err(ExecError::ImageNotFound(_)) => {
                pull_ms = self.engine.ensure_image(&spec.image).await?.1;
                began = Instant::now();
                self.engine.image_config(&spec.image).await?
            }
            other => other?,
        };
        let body = self.engine.fresh_body(&spec, &image);
        let mut created = docker
            .create_container(None::<CreateContainerOptions>, body.clone())
            .await;
        if let Err(e) = &created
            && is_not_found(e)
        {
            // Removed from the engine behind our back since it was
            // inspected: fetch it again.
            pull_ms = self.engine.ensure_image(&spec.image).await?.1;
            began = Instant::now();
            created = docker
                .create_container(None::<CreateContainerOptions>, body)
                .await;
        }
        let created = created.map_err(|e| {
            if is_not_found(&e) {
                ExecError::ImageNotFound(spec.image.clone())
            } else {
                engine_error(e)
            }
        })?;
        let container = Container {
            docker: docker.clone(),
            id: created.id,
        };
        let attach = docker
            .attach_container(
                &container.id,
                Some(
                    AttachContainerOptionsBuilder::default()
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .logs(false)
                        .build(),
                ),
            )
            .await
            .map_err(engine_error);
        let attach = match attach {
            Ok(a) => a,
            Err(e) => {
                self.engine.remove(&container).await;
                return Err(e);
            }
        };
        if let Err(e) = docker.start_container(&container.id, None).await {
            self.engine.remove(&container).await;
            return Err(engine_error(e));
        }
        let start_ms = elapsed_ms(began);

        let (out_tx, out_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (err_tx, err_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (done_tx, done_rx) = oneshot::channel();
        let grace = self.engine.cfg.kill_grace;
        let engine = Arc::clone(&self.engine);
        tokio::spawn(async move {
            let _permit = permit;
            let outcome = drive(&container, spec, attach, stdin, out_tx, err_tx, grace)
                .await
                .map(|mut o| {
                    o.pull_ms = pull_ms;
                    o.start_ms = start_ms;
                    o
                });
            engine.remove(&container).await;
            let _ = done_tx.send(outcome);
        });
        Ok(Invocation {
            head: None,
            stdout: out_rx,
            stderr: err_rx,
            done: done_rx,
        })
    }
}

impl Engine {
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

    /// One of the node's container slots. When the node is full, idle warm
    /// instances of other functions are removed to make room: a request
    /// that can run now beats an instance that might be used later.
    pub async fn slot(
        &self,
        evict: &(dyn Fn() -> Option<Arc<crate::warm::WarmInstance>> + Send + Sync),
        launcher: &WarmLauncher,
    ) -> Result<OwnedSemaphorePermit, ExecError> {
        loop {
            if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
                return Ok(permit);
            }
            match evict() {
                Some(victim) => launcher.remove(victim).await,
                None => return Err(ExecError::NoCapacity(self.cfg.max_containers)),
            }
        }
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

    pub fn in_use(&self) -> usize {
        self.cfg.max_containers - self.slots.available_permits()
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

    fn fresh_body(&self, spec: &RunSpec, image: &ImageConfig) -> ContainerCreateBody {
        let mut labels = self.labels(spec);
        labels.insert(LABEL_TASK.to_owned(), spec.task_id.to_string());
        let env = spec.env.iter().chain(&spec.request_env);
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            user: Some(container_user(spec.run_as_root, image.user.as_deref())),
            entrypoint: spec.command.clone(),
            env: Some(env.map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            network_disabled: Some(true),
            host_config: Some(self.host_config(spec)),
            ..Default::default()
        }
    }
}

/// The user a function's container runs as: root only when the function
/// asks for it; else the image's own USER when that is not root, else
/// nobody. Images that say nothing run as root under plain Docker, which
/// is the default this replaces.
pub(crate) fn container_user(run_as_root: bool, image_user: Option<&str>) -> String {
    if run_as_root {
        return "0:0".into();
    }
    match image_user.map(str::trim) {
        Some(user) if !user.is_empty() && !names_root(user) => user.to_owned(),
        _ => NOBODY.into(),
    }
}

/// Whether a `user[:group]` names uid 0. Another name that the image's
/// /etc/passwd maps to uid 0 gets through, which grants nothing a function
/// could not ask for with `run_as_root`.
fn names_root(user: &str) -> bool {
    let uid = user.split(':').next().unwrap_or(user).trim();
    uid == "root" || uid.parse::<u32>() == Ok(0)
}

async fn inspect_id(docker: &Docker, reference: &str) -> Result<ImageInfo, ExecError> {
    inspect(docker, reference)
        .await?
        .id
        .map(|id| ImageInfo { id })
        .ok_or_else(|| ExecError::Engine("image inspect returned no id".into()))
}

/// The engine's account of an image; a missing one is `ImageNotFound`.
pub(crate) async fn inspect(
    docker: &Docker,
    reference: &str,
) -> Result<bollard::models::ImageInspect, ExecError> {
    docker.inspect_image(reference).await.map_err(|e| {
        if is_not_found(&e) {
            ExecError::ImageNotFound(reference.to_owned())
        } else {
            engine_error(e)
        }
    })
}

/// The registry part of an image reference, if it names one: the first
/// path component when it looks like a host (has a dot or a port, or is
/// `localhost`), as Docker decides it.
pub(crate) fn registry_host(reference: &str) -> Option<&str> {
    let (first, _) = reference.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

/// Errors of reaching the engine at all, as opposed to the engine
/// answering with a failure.
fn is_connect_error(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::IOError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::HyperLegacyError { .. }
            | DockerError::SocketNotFoundError(_)
            | DockerError::RequestTimeoutError
    )
}

pub(crate) fn engine_error(e: DockerError) -> ExecError {
    if is_connect_error(&e) {
        ExecError::EngineUnavailable(e.to_string())
    } else {
        ExecError::Engine(e.to_string())
    }
}

pub(crate) fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

#[async_trait]
impl Executor for DockerExecutor {
    async fn resolve_image(&self, reference: &str) -> Result<ImageInfo, ExecError> {
        Ok(self.engine.ensure_image(reference).await?.0)
    }

    async fn run(&self, spec: RunSpec, stdin: InputStream) -> Result<Invocation, ExecError> {
        self.start_background();
        match spec.mode {
            Mode::Fresh => self.run_fresh(spec, stdin).await,
            Mode::Exec | Mode::Http => crate::warm::run(&self.pools, spec, stdin).await,
        }
    }

    async fn prepare(&self, spec: &RunSpec) -> Result<(), ExecError> {
        self.start_background();
        self.resolve_image(&spec.image).await?;
        if spec.mode != Mode::Fresh {
            self.pools.prepare(spec);
        }
        Ok(())
    }

    fn retire(&self, tenant: &str, function: &str, keep: Option<i64>) {
        self.pools.retire(tenant, function, keep);
    }

    async fn shutdown(&self) {
        self.pools.clear().await;
    }

    async fn reap_orphans(&self) -> Result<usize, ExecError> {
        self.pools.launcher().clear_stale_dirs().await;
        let docker = self.engine.client().await?;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_NODE}={}", self.engine.cfg.node_id)],
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
                .is_some_and(|b| *b == self.engine.cfg.boot_id);
            if this_boot {
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

    async fn status(&self) -> ExecutorStatus {
        // Readiness probes must answer even when the engine accepts
        // connections but does not respond.
        let healthy = match self.engine.client().await {
            Ok(d) => matches!(
                tokio::time::timeout(PING_TIMEOUT, d.ping()).await,
                Ok(Ok(_))
            ),
            Err(_) => false,
        };
        ExecutorStatus {
            id: self.engine.cfg.node_id.clone(),
            capacity: self.engine.cfg.max_containers,
            running: self.engine.in_use(),
            instances: self.pools.counts(),
            healthy,
        }
    }

    fn has_room(&self, spec: &RunSpec) -> bool {
        self.engine.slots.available_permits() > 0
            || (spec.mode != Mode::Fresh && self.pools.has_free_slot(spec))
    }
}

pub(crate) struct Container {
    pub docker: Docker,
    pub id: String,
}

impl Container {
    /// Signals the container's main process. Only SIGKILL is sure to land:
    /// as PID 1 of its namespace, the function gets other signals only if
    /// it handles them.
    async fn signal(&self, signal: &str) {
        let opts = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        if let Err(e) = self.docker.kill_container(&self.id, Some(opts)).await {
            debug!(container = %self.id, signal, error = %e, "signal failed (may have exited)");
        }
    }

    async fn kill(&self) {
        self.signal("SIGKILL").await;
    }

    /// Removes the container; false when the engine could not be
    /// reached, so that the removal can be tried again later.
    pub async fn remove(&self) -> bool {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(&self.id, Some(opts)).await {
            Ok(()) => true,
            Err(e) if is_not_found(&e) => true,
            Err(e) if is_connect_error(&e) => {
                debug!(container = %self.id, error = %e, "engine unreachable; removal deferred");
                false
            }
            // The reaper at the next start catches what is left.
            Err(e) => {
                warn!(container = %self.id, error = %e, "could not remove container");
                true
            }
        }
    }

    async fn exit_code(&self) -> Result<i64, ExecError> {
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        match self
            .docker
            .wait_container(&self.id, Some(opts))
            .next()
            .await
        {
            Some(Ok(resp)) => Ok(resp.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(engine_error(e)),
            None => Err(ExecError::Engine(
                "container wait ended without a status".into(),
            )),
        }
    }

    async fn oom_killed(&self) -> bool {
        match self.docker.inspect_container(&self.id, None).await {
            Ok(info) => info.state.and_then(|s| s.oom_killed).unwrap_or(false),
            Err(_) => false,
        }
    }
}

pub(crate) fn elapsed_ms(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
}

pub(crate) struct Tail(pub Vec<u8>);

impl Tail {
    pub fn push(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
        if self.0.len() > 2 * STDERR_TAIL {
            let cut = self.0.len() - STDERR_TAIL;
            self.0.drain(..cut);
        }
    }

    pub fn into_string(self) -> String {
        let start = self.0.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&self.0[start..]).into_owned()
    }
}

/// Why forwarding stopped early.
#[derive(Clone, Copy)]
enum Interrupt {
    Deadline,
    Cancel,
    CallerGone,
}

/// What the forwarding loop does next.
enum Step {
    Frame(Option<Result<LogOutput, DockerError>>),
    /// Tell the function to stop (SIGTERM) and start its grace period.
    Stop(Interrupt),
    /// The grace period is over: SIGKILL.
    GraceOver,
}

async fn drive(
    container: &Container,
    spec: RunSpec,
    attach: bollard::container::AttachContainerResults,
    mut stdin: InputStream,
    out_tx: mpsc::Sender<Bytes>,
    err_tx: mpsc::Sender<Bytes>,
    grace: Duration,
) -> Result<RunOutcome, ExecError> {
    let running = Instant::now();
    let mut input = attach.input;
    let mut output = attach.output;
    let pump = tokio::spawn(async move {
        while let Some(chunk) = stdin.next().await {
            let Ok(chunk) = chunk else { break };
            // The function may exit without reading all its input.
            if input.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // Half-closing the attach connection is what gives the function EOF.
        let _ = input.shutdown().await;
    });

    // The run's deadline until it is interrupted, then the end of the
    // grace period between SIGTERM and SIGKILL.
    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let mut tail = Tail(Vec::new());
    let mut stderr_open = true;
    let mut stopping: Option<Interrupt> = None;
    let mut next: Option<Step> = None;
    let interrupted = loop {
        let step = match next.take() {
            Some(step) => step,
            None => tokio::select! {
                frame = output.next() => Step::Frame(frame),
                () = &mut deadline => match stopping {
                    Some(_) => Step::GraceOver,
                    None => Step::Stop(Interrupt::Deadline),
                },
                () = spec.cancel.cancelled(), if stopping.is_none() => Step::Stop(Interrupt::Cancel),
                () = out_tx.closed(), if stopping.is_none() => Step::Stop(Interrupt::CallerGone),
            },
        };
        let frame = match step {
            Step::Stop(why) => {
                // A function that handles SIGTERM gets the grace period to
                // finish up; its stderr is still collected meanwhile.
                container.signal("SIGTERM").await;
                stopping = Some(why);
                deadline.as_mut().reset(tokio::time::Instant::now() + grace);
                continue;
            }
            Step::GraceOver => {
                container.kill().await;
                break stopping;
            }
            Step::Frame(frame) => frame,
        };
        let (is_stdout, message) = match frame {
            Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                // Once stopping, the output is no answer any more.
                if stopping.is_some() {
                    continue;
                }
                (true, message)
            }
            Some(Ok(LogOutput::StdErr { message })) => {
                tail.push(&message);
                if !stderr_open {
                    continue;
                }
                (false, message)
            }
            Some(Ok(LogOutput::StdIn { .. })) => continue,
            Some(Err(e)) => {
                warn!(container = %container.id, error = %e, "attach stream failed");
                break stopping;
            }
            // The function has exited, on its own or after SIGTERM.
            None => break stopping,
        };
        let tx = if is_stdout { &out_tx } else { &err_tx };
        // A slow reader stalls the function (backpressure), but never past
        // its deadline, a cancel or the grace period. A stderr reader that
        // went away only stops log forwarding; a stdout reader that went
        // away ends the run.
        next = tokio::select! {
            sent = tx.send(message) => match sent {
                Ok(()) => None,
                Err(_) if is_stdout => Some(Step::Stop(Interrupt::CallerGone)),
                Err(_) => {
                    stderr_open = false;
                    None
                }
            },
            () = &mut deadline => Some(match stopping {
                Some(_) => Step::GraceOver,
                None => Step::Stop(Interrupt::Deadline),
            }),
            () = spec.cancel.cancelled(), if stopping.is_none() => Some(Step::Stop(Interrupt::Cancel)),
        };
    };
    pump.abort();

    let exit = match interrupted {
        Some(Interrupt::Deadline) => Exit::TimedOut,
        Some(Interrupt::Cancel) => Exit::Cancelled,
        Some(Interrupt::CallerGone) => Exit::CallerGone,
        None => {
            // Output has ended, so the process is exiting; the deadline
            // still bounds the wait in case the engine misbehaves.
            let code = tokio::select! {
                code = container.exit_code() => Some(code?),
                () = &mut deadline => None,
            };
            match code {
                None => {
                    container.kill().await;
                    Exit::TimedOut
                }
                // A zero exit is success even if some child hit the limit
                // and the function coped; otherwise the OOM kill is the
                // real cause, whatever code the shell made of it.
                Some(code) if code != 0 && container.oom_killed().await => {
                    debug!(code, "function was OOM-killed");
                    Exit::OomKilled
                }
                Some(code) => Exit::Code(code),
            }
        }
    };
    let run_ms = elapsed_ms(running);
    Ok(RunOutcome {
        exit,
        stderr_tail: tail.into_string(),
        queued_ms: 0,
        pull_ms: None,
        start_ms: 0,
        run_ms,
        cpu_ms: None,
        peak_memory_bytes: None,
    })
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

    #[test]
    fn functions_run_as_nobody_unless_the_image_or_config_says_otherwise() {
        assert_eq!(container_user(false, None), "65534:65534");
        assert_eq!(container_user(false, Some("")), "65534:65534");
        // An image that asks for root gets nobody too: root is opt-in.
        for root in ["root", "0", "0:0", "root:root", "0:1000", " 0 "] {
            assert_eq!(container_user(false, Some(root)), "65534:65534", "{root}");
        }
        for own in ["1000", "4321:4321", "app", "app:app", "1000:0"] {
            assert_eq!(container_user(false, Some(own)), own);
        }
        assert_eq!(container_user(true, None), "0:0");
        assert_eq!(container_user(true, Some("4321:4321")), "0:0");
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut t = Tail(Vec::new());
        for _ in 0..100 {
            t.push(&[b'a'; 100]);
        }
        t.push(b"the end");
        let s = t.into_string();
        assert_eq!(s.len(), STDERR_TAIL);
        assert!(s.ends_with("the end"));
    }
}
