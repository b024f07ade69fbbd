//! Warm instance pools, one per function version.
//!
//! The pool decides, the launcher acts: which instance serves a request,
//! when another is started, who waits and who is turned away, when an idle
//! instance goes. Starting and removing containers is the launcher's job,
//! so this logic is tested without an engine.
//!
//! A request takes a free slot on a ready instance, packing onto the
//! busiest instance that has room so that idle ones can scale to zero.
//! Without one it waits in the version's bounded queue, first come first
//! served. Whether its wait starts another instance is decided in
//! [`queue`]: with no instance ready every waiter counts at once, so a cold
//! burst starts `ceil(waiters / concurrency)` instances; behind busy
//! instances a waiter counts only once it has waited longer than the busy
//! slots were expected to take to free up, so a burst that the running
//! instances serve within moments starts nothing. Instances on the way
//! cover the oldest waiters that count; nothing starts past
//! `max_instances`. Each lease tells how its wait divides between a busy
//! instance (`queue`) and an instance started for it (`start`).
//!
//! A clean stop ([`Pools::clear`]) first stops every start (upkeep,
//! refills, deploys), then removes the instances and waits for the launches
//! under way, whose instances are removed instead of filed: no container
//! of the node outlives it.

mod launcher;
mod queue;
mod version;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use berth_executor::{ExecError, InstanceCount, RunSpec};
use berth_metrics::PoolMetrics;

pub(crate) use launcher::{Instance, Launcher, PoolKey};
pub(crate) use queue::Wait;
use queue::Waiter;
use version::Pool;

pub(crate) struct Pools<L: Launcher> {
    launcher: L,
    pools: Mutex<HashMap<PoolKey, Pool<L::Instance>>>,
    /// Set by [`Pools::clear`]: nothing starts or is filed as ready after
    /// it. Written and read under the `pools` lock, so no decision taken
    /// under the lock misses it.
    stopping: AtomicBool,
    /// Launches and removals under way, which a clean stop waits for.
    tasks: TaskTracker,
    /// Handed to leases and background tasks, which must not keep the
    /// pools alive on their own.
    me: Weak<Self>,
    /// Scale events and 429s, as they happen.
    metrics: PoolMetrics,
}

/// A slot on an instance, held for one request. Dropping it frees the
/// slot; [`Lease::lost`] first marks the instance as broken.
pub(crate) struct Lease<L: Launcher> {
    pools: Weak<Pools<L>>,
    key: PoolKey,
    pub instance: Arc<L::Instance>,
    /// How the request's wait for this slot divides.
    pub wait: Wait,
    taken: Instant,
    lost: bool,
}

impl<L: Launcher> Lease<L> {
    /// The instance failed under this request: take it out of service.
    pub fn lost(mut self) {
        self.lost = true;
    }
}

impl<L: Launcher> Drop for Lease<L> {
    fn drop(&mut self) {
        if let Some(pools) = self.pools.upgrade() {
            pools.release(&self.key, &self.instance, self.lost, self.taken.elapsed());
        }
    }
}

/// The request never reached an instance: another executor may take it.
fn stopping_error() -> ExecError {
    ExecError::EngineUnavailable("the executor is stopping".into())
}

impl<L: Launcher> Pools<L> {
    #[cfg(test)]
    pub fn new(launcher: L) -> Arc<Self> {
        Self::with_metrics(launcher, PoolMetrics::default())
    }

    pub fn with_metrics(launcher: L, metrics: PoolMetrics) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            launcher,
            pools: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            tasks: TaskTracker::new(),
            me: me.clone(),
            metrics,
        })
    }

    pub fn launcher(&self) -> &L {
        &self.launcher
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PoolKey, Pool<L::Instance>>> {
        // Every critical section leaves the maps consistent before any
        // call that could panic, so a poisoned lock is still sound.
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Only meaningful under the `pools` lock.
    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// A slot for one request: at once when a ready instance has room,
    /// else after waiting in the version's bounded queue.
    pub async fn acquire(&self, spec: &RunSpec) -> Result<Lease<L>, ExecError> {
        let key = PoolKey::of(spec);
        let waiting = {
            let mut pools = self.lock();
            if self.is_stopping() {
                return Err(stopping_error());
            }
            let pool = pools.entry(key.clone()).or_insert_with(|| Pool::new(spec));
            if pool.settings != spec.pool {
                pool.settings = spec.pool.clone();
            }
            pool.retired = false;
            if let Some(i) = pool.pick() {
                let slot = &mut pool.ready[i];
                slot.in_flight += 1;
                return Ok(self.lease(key, Arc::clone(&slot.instance), Wait::default()));
            }
            pool.waiters.retain(Waiter::is_live);
            // Requests that instances yet to start will serve are not
            // queued behind busy ones, so they do not use up the queue.
            let unstarted = pool
                .settings
                .max_instances
                .saturating_sub(u32::try_from(pool.ready.len()).unwrap_or(u32::MAX));
            let room = pool.settings.max_queue + unstarted * pool.settings.concurrency;
            if u32::try_from(pool.waiters.len()).unwrap_or(u32::MAX) >= room {
                self.metrics.busy(&key.tenant, &key.function, "queue_full");
                return Err(ExecError::Busy(format!(
                    "{} instances busy and {} requests queued",
                    pool.total(),
                    pool.waiters.len()
                )));
            }
            let (waiter, rx) = Waiter::new(Instant::now(), pool.patience());
            pool.waiters.push_back(waiter);
            self.start_if_needed(&key, pool);
            rx
        };
        let queue_timeout = spec.pool.queue_timeout;
        match tokio::time::timeout(queue_timeout, waiting).await {
            Ok(Ok(Ok(served))) => Ok(self.lease(key, served.instance, served.wait)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(ExecError::Instance("the pool was shut down".into())),
            Err(_) => Err(self.busy(
                &key,
                "queue_timeout",
                format!(
                    "no instance became free within {}s",
                    queue_timeout.as_secs_f32()
                ),
            )),
        }
    }

    fn busy(&self, key: &PoolKey, reason: &'static str, message: String) -> ExecError {
        self.metrics.busy(&key.tenant, &key.function, reason);
        ExecError::Busy(message)
    }

    fn lease(&self, key: PoolKey, instance: Arc<L::Instance>, wait: Wait) -> Lease<L> {
        Lease {
            pools: self.me.clone(),
            key,
            instance,
            wait,
            taken: Instant::now(),
            lost: false,
        }
    }

    fn release(&self, key: &PoolKey, instance: &Arc<L::Instance>, lost: bool, held: Duration) {
        let mut pools = self.lock();
        let Some(pool) = pools.get_mut(key) else {
            return;
        };
        if lost {
            // Its exit may have been reported already; the waiters still
            // need looking after.
            self.take_out(pool, instance.id());
            self.start_if_needed(key, pool);
            return;
        }
        pool.held.add(held);
        pool.free_slot(instance.id());
    }

    /// An instance died on its own (its container exited).
    pub fn instance_exited(&self, id: &str) {
        let mut pools = self.lock();
        for (key, pool) in pools.iter_mut() {
            if self.take_out(pool, id) {
                debug!(instance = id, function = %key.function, "instance exited");
                self.start_if_needed(key, pool);
                return;
            }
        }
    }

    /// Takes a broken instance out of service and removes it. Returns
    /// whether the pool had it.
    fn take_out(&self, pool: &mut Pool<L::Instance>, id: &str) -> bool {
        let Some(gone) = pool.remove(id) else {
            return false;
        };
        let key = PoolKey::of(&pool.template);
        self.metrics
            .scaled_down(&key.tenant, &key.function, "failed");
        self.spawn_destroy(gone);
        true
    }

    /// Starts the instances that waiters need beyond those on the way
    /// (see [`queue::patience`]), and makes sure the pool is looked at
    /// again when the next waiter runs out of patience.
    fn start_if_needed(&self, key: &PoolKey, pool: &mut Pool<L::Instance>) {
        if self.is_stopping() {
            return;
        }
        let now = Instant::now();
        let needing = pool.needing(now);
        let per = pool.settings.concurrency.max(1) as usize;
        // Slots on the way serve the oldest needs first.
        let mut covered = pool.starting as usize * per;
        while covered < needing.len() && pool.total() < pool.settings.max_instances {
            // The first waiter that nothing on the way covers is the one
            // this instance is started for.
            let waiter = &mut pool.waiters[needing[covered]];
            waiter.started_for.get_or_insert(now);
            pool.starting += 1;
            covered += per;
            self.metrics.scaled_up(&key.tenant, &key.function, "demand");
            self.spawn_launch(key.clone(), pool.template.clone());
        }
        if let Some(next) = pool.next_due(now)
            && pool.recheck.is_none_or(|at| at > next)
        {
            pool.recheck = Some(next);
            self.spawn_recheck(key.clone(), next);
        }
    }

    fn spawn_recheck(&self, key: PoolKey, at: Instant) {
        let me = self.me.clone();
        // Not tracked: a stop need not wait for a timer that will find
        // nothing to do.
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let Some(this) = me.upgrade() else { return };
            let mut pools = this.lock();
            let Some(pool) = pools.get_mut(&key) else {
                return;
            };
            if pool.recheck == Some(at) {
                pool.recheck = None;
            }
            pool.waiters.retain(Waiter::is_live);
            this.start_if_needed(&key, pool);
        });
    }

    fn spawn_launch(&self, key: PoolKey, spec: RunSpec) {
        let me = self.me.clone();
        self.tasks.spawn(async move {
            let Some(this) = me.upgrade() else { return };
            let evict = {
                let me = me.clone();
                let key = key.clone();
                move || me.upgrade().and_then(|p| p.take_idle_elsewhere(Some(&key)))
            };
            let began = Instant::now();
            let launched = this.launcher.launch(&spec, &evict).await;
            let orphan = this.launched(&key, launched, began.elapsed());
            if let Some(instance) = orphan {
                this.launcher.destroy(instance).await;
            }
        });
    }

    /// Files a finished launch; returns the instance if it is not wanted
    /// (its pool is gone, or the pools are stopping).
    fn launched(
        &self,
        key: &PoolKey,
        launched: Result<Arc<L::Instance>, ExecError>,
        took: Duration,
    ) -> Option<Arc<L::Instance>> {
        let mut pools = self.lock();
        let Some(pool) = pools.get_mut(key) else {
            return launched.ok();
        };
        pool.starting -= 1;
        if self.is_stopping() {
            return launched.ok();
        }
        match launched {
            Ok(instance) => {
                pool.start.add(took);
                pool.add_ready(instance);
            }
            Err(e) => {
                warn!(function = %key.function, version = key.version, error = %e,
                    "could not start an instance");
                self.metrics.start_failed(&key.tenant, &key.function);
                // Waiters stay if some instance may still serve them.
                if pool.ready.is_empty() && pool.starting == 0 {
                    pool.fail_waiters(&e);
                }
            }
        }
        None
    }

    fn spawn_destroy(&self, instance: Arc<L::Instance>) {
        let me = self.me.clone();
        self.tasks.spawn(async move {
            if let Some(this) = me.upgrade() {
                this.launcher.destroy(instance).await;
            }
        });
    }

    /// Takes the longest-idle instance of another pool out of service, so
    /// a full node can start what is wanted now.
    pub fn take_idle_elsewhere(&self, except: Option<&PoolKey>) -> Option<Arc<L::Instance>> {
        let mut pools = self.lock();
        let (key, idx) = pools
            .iter()
            .filter(|(k, _)| Some(*k) != except)
            .flat_map(|(k, p)| {
                p.ready
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.in_flight == 0)
                    .map(move |(i, s)| (k, i, s.last_used))
            })
            .min_by_key(|(_, _, used)| *used)
            .map(|(k, i, _)| (k.clone(), i))?;
        let pool = pools.get_mut(&key)?;
        self.metrics
            .scaled_down(&key.tenant, &key.function, "evicted");
        Some(pool.ready.swap_remove(idx).instance)
    }

    /// Scales idle instances down to `min_instances` (zero once retired)
    /// and back up to it; forgets empty pools. Called periodically; does
    /// nothing once the pools are stopping.
    pub fn maintain(&self) {
        let mut pools = self.lock();
        if self.is_stopping() {
            return;
        }
        let mut gone = Vec::new();
        let mut launches = Vec::new();
        for (key, pool) in pools.iter_mut() {
            let (idle, starts) = pool.upkeep();
            for _ in &idle {
                self.metrics.scaled_down(&key.tenant, &key.function, "idle");
            }
            gone.extend(idle);
            for _ in 0..starts {
                self.metrics
                    .scaled_up(&key.tenant, &key.function, "minimum");
                launches.push((key.clone(), pool.template.clone()));
            }
        }
        pools.retain(|_, p| !p.is_spent());
        drop(pools);
        for instance in gone {
            self.spawn_destroy(instance);
        }
        for (key, spec) in launches {
            self.spawn_launch(key, spec);
        }
    }

    /// Makes sure a version's pool exists and will keep `min_instances`.
    pub fn prepare(&self, spec: &RunSpec) {
        let mut pools = self.lock();
        if self.is_stopping() {
            return;
        }
        let key = PoolKey::of(spec);
        let pool = pools.entry(key).or_insert_with(|| Pool::new(spec));
        pool.settings = spec.pool.clone();
        pool.template = spec.clone();
        pool.retired = false;
        drop(pools);
        self.maintain();
    }

    pub fn retire(&self, tenant: &str, function: &str, keep: Option<i64>) {
        let mut pools = self.lock();
        for (key, pool) in pools.iter_mut() {
            if key.tenant == tenant && key.function == function && Some(key.version) != keep {
                pool.retired = true;
                // Retired versions still serve requests already routed to
                // them; they only stop being kept warm.
            }
        }
    }

    /// Removes every instance for good (shutdown): stops every start
    /// first, so neither upkeep nor a lost instance refills a pool while
    /// it empties; fails the waiters; then waits, up to `wait`, for the
    /// launches and removals under way, removing what those launches
    /// produce.
    pub async fn clear(&self, wait: Duration) {
        let all: Vec<_> = {
            let mut pools = self.lock();
            self.stopping.store(true, Ordering::SeqCst);
            pools
                .values_mut()
                .flat_map(|p| {
                    p.fail_waiters(&stopping_error());
                    p.ready.drain(..).map(|s| s.instance).collect::<Vec<_>>()
                })
                .collect()
        };
        futures::future::join_all(all.into_iter().map(|i| self.launcher.destroy(i))).await;
        // What is tracked from now on is only what was under way: nothing
        // new starts.
        self.tasks.close();
        if tokio::time::timeout(wait, self.tasks.wait()).await.is_err() {
            warn!(
                under_way = self.tasks.len(),
                "launches still under way at stop; the next start reaps their containers"
            );
        }
    }

    /// Removes the idle instances and fails the waiters, now, without
    /// stopping the pools: a node cut off from its set gives up what it
    /// holds, and serves again once the link is back.
    pub async fn flush(&self) {
        let idle: Vec<_> = {
            let mut pools = self.lock();
            let gone = ExecError::EngineUnavailable("the node was cut off from its set".into());
            pools
                .values_mut()
                .flat_map(|p| {
                    p.fail_waiters(&gone);
                    p.ready.drain(..).map(|s| s.instance).collect::<Vec<_>>()
                })
                .collect()
        };
        futures::future::join_all(idle.into_iter().map(|i| self.launcher.destroy(i))).await;
    }

    pub fn counts(&self) -> Vec<InstanceCount> {
        self.lock().iter().map(|(k, p)| p.count(k)).collect()
    }

    /// Whether a request for this version would find a free slot now.
    pub fn has_free_slot(&self, spec: &RunSpec) -> bool {
        let pools = self.lock();
        pools
            .get(&PoolKey::of(spec))
            .is_some_and(|p| p.pick().is_some())
    }
}

/// Runs [`Pools::maintain`] every `every` until the pools are dropped.
pub(crate) fn spawn_maintenance<L: Launcher>(pools: &Arc<Pools<L>>, every: Duration) {
    let weak = Arc::downgrade(pools);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match weak.upgrade() {
                Some(p) => p.maintain(),
                None => return,
            }
        }
    });
}

#[cfg(test)]
mod tests;
