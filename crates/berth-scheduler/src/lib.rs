//! The TaskManager: turns requests into tasks and tasks into container runs.
//!
//! It owns the decisions (which version runs, on which executor, when an
//! async task is claimed, retried or given up) and none of the mechanisms:
//! executors run containers, the store keeps state. Sync calls go straight
//! to an executor; async tasks go through the store's queue, claimed under
//! renewable leases so that a crashed process's work is found and re-run.

mod cgi;
mod dispatch;
mod logs;
mod quota;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::{
    ADMIN_TENANT, FunctionConfig, FunctionVersion, Limits, Quotas, RequestMeta, TaskError, TaskId,
    TaskKind, TaskRecord, TaskStatus, Timing, Usage, now_ms, validate_name,
};
use berth_executor::{
    ExecError, Executor, ExecutorStatus, InputStream, Invocation, PoolSettings, ResponseHead,
    RunSpec,
};
use berth_store::{Cancel, Finish, Idempotent, Lease, PayloadKind, Payloads, Store, StoreError};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use cgi::cgi_env;

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("{0}")]
    Invalid(String),
    #[error("function {0:?} not found")]
    FunctionNotFound(String),
    #[error("request body is larger than the {0} byte limit")]
    InputTooLarge(u64),
    #[error("request body could not be read: {0}")]
    InputAborted(std::io::Error),
    /// A running or queued limit of the tenant is reached; later may work.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A definition asks for more than the tenant may ever have.
    #[error("{0}")]
    OverQuota(String),
    #[error("{0}")]
    ImageNotAllowed(String),
    #[error("idempotency key {0:?} was already used with a different request")]
    IdempotencyConflict(String),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no executor is configured")]
    NoExecutor,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// This process's identity in leases and container labels.
    pub node_id: String,
    /// Async tasks run at once by this process.
    pub async_concurrency: usize,
    pub lease: Duration,
    /// Attempts an async task gets when the process running it is lost.
    pub max_attempts: i64,
    /// A task's stored stderr is cut at this size: the start is kept.
    pub max_log_bytes: u64,
    pub max_output_bytes: u64,
    pub max_async_input_bytes: u64,
    /// Longest pause allowed between two pieces of an async task's input.
    pub upload_idle_timeout: Duration,
    /// How often the queue is checked without a wake-up (other replicas'
    /// submissions, expired leases).
    pub poll_interval: Duration,
    /// How long finished tasks, their output and logs are kept.
    pub retention: Duration,
    pub limits: Limits,
    /// Every tenant's quotas unless the admin set its own.
    pub quotas: Quotas,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: "local".into(),
            async_concurrency: 4,
            lease: Duration::from_secs(30),
            max_attempts: 3,
            max_log_bytes: 1024 * 1024,
            max_output_bytes: 1024 * 1024 * 1024,
            max_async_input_bytes: 256 * 1024 * 1024,
            upload_idle_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            retention: Duration::from_secs(7 * 24 * 3600),
            limits: Limits::default(),
            quotas: Quotas::default(),
        }
    }
}

/// Maps a function's image reference to a pinned one that every executor
/// can pull: the built-in registry's tag → digest resolution. `Ok(None)`
/// means the reference is not the registry's (an engine-local image).
#[async_trait::async_trait]
pub trait ImageResolver: Send + Sync + 'static {
    async fn resolve(&self, tenant: &str, reference: &str) -> Result<Option<String>, SchedError>;
}

/// Passes a request body through until it exceeds `limit` bytes, then
/// ends it with an error and records the limit in `overflow`, so the caller can tell a
/// body cut for size from one the client broke off.
fn limit_input(
    body: InputStream,
    limit: u64,
    overflow: Arc<std::sync::OnceLock<u64>>,
) -> InputStream {
    let mut seen: u64 = 0;
    Box::pin(body.map(move |chunk| {
        let chunk = chunk?;
        seen = seen.saturating_add(chunk.len() as u64);
        if seen > limit {
            let _ = overflow.set(limit);
            return Err(std::io::Error::other(format!(
                "request body is larger than the {limit} byte limit"
            )));
        }
        Ok(chunk)
    }))
}

/// The end of a sync call, sent once the task record is final.
#[derive(Debug, Clone)]
pub struct CallResult {
    pub status: TaskStatus,
    pub exit_code: Option<i64>,
    pub error: Option<TaskError>,
    pub timing: Timing,
    pub usage: Usage,
    pub stderr_tail: String,
}

/// A sync call in flight. `stdout` must be drained (or dropped, which kills
/// the function); `result` resolves after the process exits.
pub struct SyncCall {
    pub task_id: TaskId,
    pub version: i64,
    /// http mode: the function's own status and headers, before stdout.
    pub head: Option<oneshot::Receiver<ResponseHead>>,
    pub stdout: mpsc::Receiver<Bytes>,
    pub result: oneshot::Receiver<CallResult>,
    /// The size limit, once the request body went past it while
    /// streaming; the function then saw its input end early.
    pub input_overflow: Arc<std::sync::OnceLock<u64>>,
}

/// An accepted async task, and whether it was accepted before under the
/// same idempotency key (then nothing new was recorded).
#[derive(Debug, Clone)]
pub struct Submitted {
    pub task: TaskRecord,
    pub replayed: bool,
}

struct Running {
    cancel: CancellationToken,
    kind: TaskKind,
    attempt: i64,
}

pub struct TaskManager {
    store: Arc<dyn Store>,
    payloads: Payloads,
    executors: Vec<Arc<dyn Executor>>,
    cfg: Config,
    /// Attempts running in this process, by task, so a cancel or a
    /// shutdown can reach them.
    running: Mutex<HashMap<TaskId, Running>>,
    wake: Notify,
    /// Whether every executor has had its orphans removed since start; an
    /// engine that was down at start is reaped once it answers.
    reaped: AtomicBool,
    /// Async tasks finished by this process, for callers waiting on them.
    finished: broadcast::Sender<TaskId>,
    resolver: std::sync::OnceLock<Arc<dyn ImageResolver>>,
    /// Latest versions recently read, by (tenant, name): every call needs
    /// one, and versions are immutable. Deploys and deletes here update it
    /// at once; another replica's within [`LATEST_TTL`].
    latest: Mutex<HashMap<(String, String), (FunctionVersion, std::time::Instant)>>,
    quotas: Arc<quota::QuotaBook>,
}

const LATEST_TTL: Duration = Duration::from_secs(1);

impl TaskManager {
    pub fn new(
        store: Arc<dyn Store>,
        payloads: Payloads,
        executors: Vec<Arc<dyn Executor>>,
        cfg: Config,
    ) -> Arc<Self> {
        let cfg_quotas = cfg.quotas;
        Arc::new(Self {
            store,
            payloads,
            executors,
            cfg,
            running: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            reaped: AtomicBool::new(false),
            finished: broadcast::channel(1024).0,
            resolver: std::sync::OnceLock::new(),
            latest: Mutex::new(HashMap::new()),
            quotas: quota::QuotaBook::new(cfg_quotas),
        })
    }

    /// Set once, when the server knows the registry's address.
    pub fn set_image_resolver(&self, resolver: Arc<dyn ImageResolver>) {
        let _ = self.resolver.set(resolver);
    }

    pub fn payloads(&self) -> &Payloads {
        &self.payloads
    }

    /// The quotas a tenant is held to now.
    pub async fn quotas_of(&self, tenant: &str) -> Result<Quotas, SchedError> {
        self.quotas.of(self.store.as_ref(), tenant).await
    }

    pub fn default_quotas(&self) -> Quotas {
        self.cfg.quotas
    }

    /// After the admin changed a tenant's quotas through this process.
    pub fn forget_quotas(&self, tenant: &str) {
        self.quotas.forget(tenant);
    }

    /// Tasks of the tenant running in this process.
    pub fn running_tasks(&self, tenant: &str) -> u32 {
        self.quotas.running(tenant)
    }

    fn concurrency_refusal(&self, tenant: &str, q: &Quotas) -> SchedError {
        SchedError::QuotaExceeded(format!(
            "tenant {tenant:?} already has {} tasks running, its max_concurrent_tasks quota",
            q.max_concurrent_tasks
        ))
    }

    pub async fn executor_status(&self) -> Vec<ExecutorStatus> {
        let mut all = Vec::with_capacity(self.executors.len());
        for e in &self.executors {
            all.push(e.status().await);
        }
        all
    }

    /// Validates a definition, pins its image to the content id the
    /// executors have, and records a version if anything changed.
    pub async fn deploy(
        &self,
        tenant: &str,
        name: &str,
        config: FunctionConfig,
    ) -> Result<(FunctionVersion, bool), SchedError> {
        validate_name(name).map_err(|e| SchedError::Invalid(e.0))?;
        config
            .validate(&self.cfg.limits)
            .map_err(|e| SchedError::Invalid(e.0))?;
        self.quotas_of(tenant)
            .await?
            .admit(tenant, &config)
            .map_err(|e| SchedError::OverQuota(e.0))?;
        let executor = self.executors.first().ok_or(SchedError::NoExecutor)?;
        let pinned = match self.resolver.get() {
            Some(r) => r.resolve(tenant, config.image.trim()).await?,
            None => None,
        };
        // Images already in the engine were put there by the operator or
        // pulled for some tenant; only the admin may run them by name.
        // Tenants run what they pushed into their own namespace.
        if pinned.is_none() && self.resolver.get().is_some() && tenant != ADMIN_TENANT {
            return Err(SchedError::ImageNotAllowed(format!(
                "image {:?} is not in the registry namespace {tenant}/: push it with \
                 docker push <registry>/{tenant}/<name>:<tag> and deploy that",
                config.image.trim()
            )));
        }
        // A registry image is pinned to its manifest digest, which any
        // executor can pull; an engine-local one to the engine's image id.
        let image_id = match pinned {
            Some(pinned) => {
                executor.resolve_image(&pinned).await?;
                pinned
            }
            None => executor.resolve_image(&config.image).await?.id,
        };
        let (version, new) = self
            .store
            .put_function(tenant, name, &config, &image_id)
            .await?;
        self.lock_latest()
            .remove(&(tenant.to_owned(), name.to_owned()));
        self.prepare(&version).await;
        Ok((version, new))
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
        for e in &self.executors {
            e.retire(&v.tenant, &v.function, Some(v.version));
            if let Err(err) = e.prepare(&spec).await {
                warn!(function = %v.function, version = v.version, error = %err,
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

    /// Lets a deleted function's instances go.
    pub fn retire(&self, tenant: &str, name: &str) {
        self.lock_latest()
            .remove(&(tenant.to_owned(), name.to_owned()));
        for e in &self.executors {
            e.retire(tenant, name, None);
        }
    }

    async fn latest(&self, tenant: &str, name: &str) -> Result<FunctionVersion, SchedError> {
        let key = (tenant.to_owned(), name.to_owned());
        if let Some((v, at)) = self.lock_latest().get(&key)
            && at.elapsed() < LATEST_TTL
        {
            return Ok(v.clone());
        }
        let v = self
            .store
            .get_function(tenant, name)
            .await?
            .map(|f| f.latest)
            .ok_or_else(|| SchedError::FunctionNotFound(name.to_owned()))?;
        let mut cache = self.lock_latest();
        if cache.len() >= 10_000 {
            cache.clear();
        }
        cache.insert(key, (v.clone(), std::time::Instant::now()));
        Ok(v)
    }

    fn lock_latest(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String), (FunctionVersion, std::time::Instant)>>
    {
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spec(&self, v: &FunctionVersion, task: &TaskRecord, cancel: CancellationToken) -> RunSpec {
        RunSpec {
            task_id: task.id,
            tenant: v.tenant.clone(),
            function: v.function.clone(),
            version: v.version,
            image: v.image_id.clone(),
            command: v.config.command.clone(),
            env: v
                .config
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            request_env: cgi_env(v, task),
            request: task.request.clone(),
            cpu_millis: v.config.cpu_millis,
            memory_mb: v.config.memory_mb,
            timeout: Duration::from_secs(u64::from(v.config.timeout_secs)),
            mode: v.config.mode,
            run_as_root: v.config.run_as_root,
            pool: PoolSettings {
                concurrency: v.config.concurrency,
                min_instances: v.config.min_instances,
                max_instances: v.config.max_instances,
                idle_timeout: Duration::from_secs(u64::from(v.config.idle_timeout_secs)),
                max_queue: v.config.max_queue,
                queue_timeout: Duration::from_secs(u64::from(v.config.queue_timeout_secs)),
            },
            cancel,
        }
    }

    /// First fit over executors that report room. The executor remains
    /// the judge of its own capacity and refuses if it filled up meanwhile.
    async fn place(&self, spec: RunSpec, stdin: InputStream) -> Result<Invocation, SchedError> {
        let executor = self
            .executors
            .iter()
            .find(|e| e.has_room(&spec))
            .or(self.executors.first())
            .ok_or(SchedError::NoExecutor)?;
        Ok(executor.run(spec, stdin).await?)
    }

    fn track(&self, id: TaskId, kind: TaskKind, attempt: i64) -> CancellationToken {
        let token = CancellationToken::new();
        let entry = Running {
            cancel: token.clone(),
            kind,
            attempt,
        };
        self.lock_running().insert(id, entry);
        token
    }

    fn untrack(&self, id: TaskId) {
        self.lock_running().remove(&id);
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Running>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single inserts and removes), so a poisoned lock is still usable.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a synchronous call: the task is recorded as running, the
    /// container started, and stdout handed back as it is produced.
    pub async fn invoke(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        request: RequestMeta,
        body: InputStream,
    ) -> Result<SyncCall, SchedError> {
        let v = self.latest(tenant, name).await?;
        let q = self.quotas_of(tenant).await?;
        if request.content_length.is_some_and(|n| n > q.max_body_bytes) {
            return Err(SchedError::InputTooLarge(q.max_body_bytes));
        }
        let slot = self
            .quotas
            .try_start(tenant, q.max_concurrent_tasks)
            .ok_or_else(|| self.concurrency_refusal(tenant, &q))?;
        let input_overflow = Arc::new(std::sync::OnceLock::new());
        let body = limit_input(body, q.max_body_bytes, Arc::clone(&input_overflow));
        let mut task = TaskRecord::new(&v.tenant, &v.function, v.version, TaskKind::Sync, request);
        task.status = TaskStatus::Running;
        task.attempt = 1;
        task.started_at = Some(task.created_at);
        task.timing.queued_ms = Some(0);
        task.input_bytes = task
            .request
            .content_length
            .and_then(|n| i64::try_from(n).ok());
        let lease = Lease {
            owner: self.cfg.node_id.clone(),
            expires_at: now_ms() + lease_ms(self.cfg.lease),
        };
        // Tracked before the row exists, so a cancel can never find the
        // task running without a way to reach it.
        let cancel = self.track(task.id, TaskKind::Sync, 1);
        if let Err(e) = self.store.insert_task(&task, Some(&lease)).await {
            self.untrack(task.id);
            return Err(e.into());
        }
        let inv = match self.place(self.spec(&v, &task, cancel), body).await {
            Ok(inv) => inv,
            Err(e) => {
                self.untrack(task.id);
                let finish = Finish::failed(start_error(&e));
                if let Err(se) = self.store.finish_task(task.id, 1, &finish).await {
                    warn!(task = %task.id, error = %se, "could not record failed start");
                }
                return Err(e);
            }
        };
        let (result_tx, result_rx) = oneshot::channel();
        let this = Arc::clone(self);
        let overflow = Arc::clone(&input_overflow);
        let Invocation {
            head,
            stdout,
            stderr,
            done,
        } = inv;
        let id = task.id;
        tokio::spawn(async move {
            let _slot = slot;
            let logs = this.collect_logs(id, stderr);
            let (outcome, logs) = tokio::join!(done, logs);
            let stderr_tail = match &outcome {
                Ok(Ok(o)) => o.stderr_tail.trim_end().to_owned(),
                _ => String::new(),
            };
            let mut finish = finish_from(outcome);
            finish.durable = false;
            if let Some(limit) = overflow.get() {
                finish.status = TaskStatus::Failed;
                finish.exit_code = None;
                finish.error = Some(TaskError::new(
                    "body_too_large",
                    format!("request body is larger than the {limit} byte limit"),
                ));
            }
            this.commit_logs(id, logs).await;
            match this.store.finish_task(id, 1, &finish).await {
                Ok(_) => {}
                Err(e) => warn!(task = %id, error = %e, "could not record sync result"),
            }
            this.untrack(id);
            let _ = result_tx.send(CallResult {
                status: finish.status,
                exit_code: finish.exit_code,
                error: finish.error,
                timing: finish.timing,
                usage: finish.usage,
                stderr_tail,
            });
        });
        Ok(SyncCall {
            task_id: task.id,
            version: v.version,
            head,
            stdout,
            result: result_rx,
            input_overflow,
        })
    }

    /// Accepts an async task: the input is written and synced, then the
    /// task row committed. Only then is the task acknowledged. With an
    /// idempotency key, a repeat of an accepted request returns the task
    /// it made instead of a new one.
    pub async fn submit(
        &self,
        tenant: &str,
        name: &str,
        request: RequestMeta,
        mut body: InputStream,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, SchedError> {
        use sha2::Digest as _;
        let v = self.latest(tenant, name).await?;
        let q = self.quotas_of(tenant).await?;
        let mut task = TaskRecord::new(&v.tenant, &v.function, v.version, TaskKind::Async, request);
        task.max_attempts = self.cfg.max_attempts;
        let limit = self.cfg.max_async_input_bytes.min(q.max_body_bytes);
        if task.request.content_length.is_some_and(|n| n > limit) {
            return Err(SchedError::InputTooLarge(limit));
        }
        let queued = self.store.count_tasks(tenant, TaskStatus::Queued).await?;
        if queued >= i64::from(q.max_queued_tasks) {
            return Err(SchedError::QuotaExceeded(format!(
                "tenant {tenant:?} already has {queued} tasks queued, its max_queued_tasks quota"
            )));
        }
        // What makes two submissions "the same request" for an idempotency
        // key: the function, what the function is told, and the body.
        let mut digest = sha2::Sha256::new();
        for part in [
            &task.function,
            &task.request.method,
            &task.request.path,
            &task.request.query,
            task.request.content_type.as_deref().unwrap_or_default(),
        ] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part.as_bytes());
        }
        let mut writer = self
            .payloads
            .create(task.id, PayloadKind::Input)
            .await
            .map_err(StoreError::Io)?;
        // A client that stops sending mid-upload must not hold a file and a
        // connection open forever.
        loop {
            let idle = self.cfg.upload_idle_timeout;
            let next = tokio::time::timeout(idle, body.next()).await;
            let chunk = match next {
                Ok(Some(chunk)) => chunk.map_err(SchedError::InputAborted)?,
                Ok(None) => break,
                Err(_) => {
                    return Err(SchedError::InputAborted(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no data for {}s", idle.as_secs_f32()),
                    )));
                }
            };
            if writer.written() + chunk.len() as u64 > limit {
                return Err(SchedError::InputTooLarge(limit));
            }
            digest.update(&chunk);
            writer.write(&chunk).await.map_err(StoreError::Io)?;
        }
        let size = writer.commit().await.map_err(StoreError::Io)?;
        task.input_bytes = i64::try_from(size).ok();
        task.request.content_length = Some(size);
        let inserted = match idempotency_key {
            None => self.store.insert_task(&task, None).await.map(|()| None),
            Some(key) => {
                let digest = hex::encode(digest.finalize());
                self.store
                    .insert_task_idempotent(&task, key, &digest)
                    .await
                    .map(Some)
            }
        };
        match inserted {
            Ok(None | Some(Idempotent::Inserted)) => {}
            Ok(Some(Idempotent::Existing {
                task: first,
                same_request,
            })) => {
                let _ = self.payloads.remove(task.id).await;
                if !same_request {
                    return Err(SchedError::IdempotencyConflict(
                        idempotency_key.unwrap_or_default().to_owned(),
                    ));
                }
                return Ok(Submitted {
                    task: *first,
                    replayed: true,
                });
            }
            Err(e) => {
                let _ = self.payloads.remove(task.id).await;
                return Err(e.into());
            }
        }
        self.wake.notify_one();
        Ok(Submitted {
            task,
            replayed: false,
        })
    }

    /// Waits up to `max` for a task to finish and returns it if it did.
    /// Finishes in this process wake the wait at once; the store is also
    /// polled, for tasks another replica runs.
    pub async fn wait_finished(
        &self,
        tenant: &str,
        id: TaskId,
        max: Duration,
    ) -> Result<Option<TaskRecord>, SchedError> {
        const POLL: Duration = Duration::from_millis(500);
        let mut finished = self.finished.subscribe();
        let deadline = tokio::time::Instant::now() + max;
        loop {
            match self.store.get_task(tenant, id).await? {
                Some(t) if t.status.is_terminal() => return Ok(Some(t)),
                Some(_) => {}
                None => return Ok(None),
            }
            let wake = async {
                loop {
                    match finished.recv().await {
                        Ok(done) if done == id => return,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            };
            tokio::select! {
                () = wake => {}
                () = tokio::time::sleep(POLL) => {}
                () = tokio::time::sleep_until(deadline) => return Ok(None),
            }
        }
    }

    /// Cancels a task of this tenant. A running attempt in this process is
    /// killed at once; one elsewhere sees its lease gone at finish.
    pub async fn cancel(&self, tenant: &str, id: TaskId) -> Result<Option<Cancel>, SchedError> {
        let result = self.store.cancel_task(tenant, id).await?;
        if let Some(Cancel::Running { .. }) = &result
            && let Some(running) = self.lock_running().get(&id)
        {
            running.cancel.cancel();
        }
        Ok(result)
    }

    /// Drains stderr into the task's log file, capped (see [`logs`]).
    async fn collect_logs(
        &self,
        id: TaskId,
        stderr: mpsc::Receiver<Bytes>,
    ) -> Option<berth_store::PayloadWriter> {
        logs::collect(&self.payloads, id, stderr, self.cfg.max_log_bytes).await
    }

    async fn commit_logs(&self, id: TaskId, logs: Option<berth_store::PayloadWriter>) {
        if let Some(w) = logs
            && let Err(e) = w.commit().await
        {
            warn!(task = %id, error = %e, "could not commit logs");
        }
    }

    /// Shutdown: async attempts get `grace` to finish; the rest go back to
    /// the queue without counting the attempt, and their containers are
    /// killed, so restarting the server costs no task an attempt. Call
    /// after stopping the dispatcher (the `spawn_background` token).
    pub async fn drain(&self, grace: Duration) {
        let async_running = || -> Vec<(TaskId, i64, CancellationToken)> {
            self.lock_running()
                .iter()
                .filter(|(_, r)| r.kind == TaskKind::Async)
                .map(|(id, r)| (*id, r.attempt, r.cancel.clone()))
                .collect()
        };
        let deadline = tokio::time::Instant::now() + grace;
        while !async_running().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = async_running();
        if left.is_empty() {
            self.shutdown_executors().await;
            return;
        }
        info!(
            tasks = left.len(),
            "handing unfinished async tasks back to the queue"
        );
        for (id, attempt, cancel) in &left {
            // Released first, so the killed attempt's result is refused.
            match self.store.release_task(*id, *attempt).await {
                Ok(_) => {}
                Err(e) => warn!(task = %id, error = %e, "could not release; its lease will lapse"),
            }
            cancel.cancel();
        }
        // Give the kills a moment to remove the containers; whatever is
        // left is reaped at the next start.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !async_running().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.shutdown_executors().await;
    }

    async fn shutdown_executors(&self) {
        for e in &self.executors {
            e.shutdown().await;
        }
    }

    /// Runs once at start: requeues what a previous life of this process
    /// left running and removes its orphaned containers.
    pub async fn recover_at_start(&self) -> Result<(), SchedError> {
        let r = self.store.recover(Some(&self.cfg.node_id)).await?;
        if !r.requeued.is_empty() || !r.failed.is_empty() {
            info!(
                requeued = r.requeued.len(),
                failed = r.failed.len(),
                "recovered tasks from a previous run"
            );
        }
        self.reap_orphans().await;
        Ok(())
    }

    /// Removes containers a previous life of this node left behind, unless
    /// that has already been done since start.
    async fn reap_orphans(&self) {
        if self.reaped.load(Ordering::Relaxed) {
            return;
        }
        let mut all = true;
        for e in &self.executors {
            match e.reap_orphans().await {
                Ok(0) => {}
                Ok(n) => info!(containers = n, "removed orphaned containers"),
                Err(err) => {
                    all = false;
                    warn!(error = %err, "could not reap orphaned containers; will retry");
                }
            }
        }
        self.reaped.store(all, Ordering::Relaxed);
    }
}

fn lease_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The task error recorded when a run could not even start.
fn start_error(e: &SchedError) -> TaskError {
    let code = match e {
        SchedError::Exec(ExecError::ImageNotFound(_)) => "image_missing",
        SchedError::Exec(ExecError::NoCapacity(_)) => "no_capacity",
        SchedError::Exec(ExecError::EngineUnavailable(_)) => "engine_unavailable",
        SchedError::Exec(ExecError::Busy(_)) => "busy",
        SchedError::Exec(ExecError::PullFailed { .. }) => "pull_failed",
        SchedError::Exec(ExecError::Instance(_)) => "instance_failed",
        _ => "start_failed",
    };
    TaskError::new(code, e.to_string())
}

/// The task error recorded when the engine failed under a running attempt.
fn run_error(e: &ExecError) -> TaskError {
    let code = match e {
        ExecError::EngineUnavailable(_) => "engine_unavailable",
        _ => "engine_error",
    };
    TaskError::new(code, e.to_string())
}

/// Turns an executor's account of an attempt into the task's final state.
fn finish_from(
    outcome: Result<Result<berth_executor::RunOutcome, ExecError>, oneshot::error::RecvError>,
) -> Finish {
    use berth_executor::Exit;
    let outcome = match outcome {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Finish::failed(run_error(&e)),
        Err(_) => {
            return Finish::failed(TaskError::new("lost", "the executor dropped the attempt"));
        }
    };
    let tail = outcome.stderr_tail.trim_end();
    let (status, exit_code, error) = match outcome.exit {
        Exit::Code(0) => (TaskStatus::Succeeded, Some(0), None),
        Exit::Code(code) => (
            TaskStatus::Failed,
            Some(code),
            Some(TaskError::new(
                "exit",
                if tail.is_empty() {
                    format!("function exited with code {code}")
                } else {
                    format!("function exited with code {code}: {tail}")
                },
            )),
        ),
        Exit::OomKilled => (
            TaskStatus::Failed,
            None,
            Some(TaskError::new(
                "oom",
                "function was killed for exceeding its memory limit",
            )),
        ),
        Exit::TimedOut => (
            TaskStatus::TimedOut,
            None,
            Some(TaskError::new(
                "timeout",
                "function exceeded its timeout and was killed",
            )),
        ),
        Exit::Cancelled => (
            TaskStatus::Cancelled,
            None,
            Some(TaskError::new("cancelled", "cancelled by request")),
        ),
        Exit::CallerGone => (
            TaskStatus::Failed,
            None,
            Some(TaskError::new(
                "client_disconnected",
                "the caller stopped reading the output; the function was killed",
            )),
        ),
        Exit::InstanceLost(why) => (
            TaskStatus::Failed,
            None,
            Some(TaskError::new(
                "instance_lost",
                format!("the function's instance failed during the request: {why}"),
            )),
        ),
    };
    Finish {
        status,
        exit_code,
        error,
        usage: Usage {
            cpu_ms: outcome.cpu_ms,
            peak_memory_bytes: outcome.peak_memory_bytes,
            wall_ms: Some(outcome.run_ms),
        },
        timing: Timing {
            queued_ms: Some(outcome.queued_ms),
            pull_ms: outcome.pull_ms,
            start_ms: Some(outcome.start_ms),
            run_ms: Some(outcome.run_ms),
        },
        output_bytes: None,
        durable: true,
    }
}
