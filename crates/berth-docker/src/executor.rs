//! [`DockerExecutor`]: the [`Executor`] the rest of Berth sees, wiring the
//! engine, fresh runs and the warm pools together.
//!
//! Two ways to run: `fresh` creates one container per attempt
//! ([`crate::fresh`]); the warm modes (`exec`, `http`) keep instances in
//! per-version pools ([`crate::pool`]) and send each request to the agent
//! inside one over a unix socket ([`crate::warm`]). Both share the hardened
//! baseline and the node's container slots ([`crate::engine`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use berth_core::Mode;

use crate::engine::{DockerConfig, Engine, PullCredentials};
use crate::pool::{self, Pools};
use crate::warm::{EvictIdle, WarmLauncher};
use crate::{engine, fresh, warm};
use berth_executor::{
    ExecError, Executor, ExecutorStatus, ImageInfo, InputStream, Invocation, RunSpec,
};

/// How long a clean stop waits for launches under way beyond the ready
/// timeout: the engine calls around the wait (create, start, remove).
const STOP_MARGIN: Duration = Duration::from_secs(5);

pub struct DockerExecutor {
    engine: Arc<Engine>,
    pools: Arc<Pools<WarmLauncher>>,
    background: AtomicBool,
    exited: std::sync::Mutex<Option<mpsc::Receiver<String>>>,
}

impl DockerExecutor {
    /// Uses the usual `DOCKER_HOST` / local socket defaults; nothing is
    /// contacted until the first call.
    pub fn new(cfg: DockerConfig) -> Self {
        let metrics = cfg.metrics.clone();
        let engine = Arc::new(Engine::new(cfg));
        let (exited_tx, exited_rx) = mpsc::channel(64);
        let launcher = WarmLauncher::new(Arc::clone(&engine), exited_tx);
        Self {
            pools: Pools::with_metrics(launcher, metrics),
            engine,
            background: AtomicBool::new(false),
            exited: std::sync::Mutex::new(Some(exited_rx)),
        }
    }

    /// Known once the server has bound its address, after `new`.
    pub fn set_pull_credentials(&self, creds: PullCredentials) {
        self.engine.set_pull_credentials(creds);
    }

    /// Removes every container of this node at once, running ones too:
    /// the node's set has given its work to others, so nothing it runs
    /// may finish. Idle warm instances go first, so none is handed out
    /// meanwhile; the pools stay open for when the set answers again.
    pub async fn kill_all(&self) {
        self.pools.flush().await;
        match self.engine.remove_all().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(containers = n, "removed every container of this node"),
            Err(e) => tracing::warn!(error = %e, "could not remove this node's containers"),
        }
    }

    /// Background work needs a runtime, which `new` may not have.
    fn start_background(&self) {
        if self.background.swap(true, Ordering::SeqCst) {
            return;
        }
        pool::spawn_maintenance(&self.pools, Duration::from_secs(1));
        engine::spawn_leftover_retry(&self.engine);
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
        // A fresh run may take the slot of any pool's idle instance.
        let take = || self.pools.take_idle_elsewhere(None);
        let room = EvictIdle::new(self.pools.launcher(), &take);
        fresh::run(&self.engine, &room, spec, stdin).await
    }
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
            Mode::Exec | Mode::Http => warm::run(&self.pools, spec, stdin).await,
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
        // A launch under way may take up to the ready timeout to produce
        // its instance, which is then removed too.
        let wait = self.engine.cfg.ready_timeout + STOP_MARGIN;
        self.pools.clear(wait).await;
    }

    async fn reap_orphans(&self) -> Result<usize, ExecError> {
        self.pools.launcher().clear_stale_dirs().await;
        self.engine.reap_orphans().await
    }

    async fn status(&self) -> ExecutorStatus {
        let healthy = self.engine.healthy().await;
        let (cpu_millis_allocated, memory_mb_allocated) = self.engine.allocated();
        ExecutorStatus {
            cpu_millis_allocated,
            memory_mb_allocated,
            id: self.engine.cfg.node_id.clone(),
            capacity: self.engine.cfg.max_containers,
            running: self.engine.in_use(),
            instances: self.pools.counts(),
            healthy,
        }
    }

    fn has_room(&self, spec: &RunSpec) -> bool {
        self.engine.has_free_slot() || (spec.mode != Mode::Fresh && self.pools.has_free_slot(spec))
    }
}
