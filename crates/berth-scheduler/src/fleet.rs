//! The executors this replica can place work on: its own in-process one
//! (the all-in-one server), and the executor nodes of the set, as the
//! store's `nodes` table says they are (joined, heartbeating, active).
//!
//! Every replica reads the table on its own each second; what is live is
//! judged by the heartbeat's age on the database's clock, never this
//! process's. A node that dies is seen here as soon as its streams break
//! (the data plane's keepalives), and in the table once its heartbeats
//! lapse; either way nothing new is placed on it until it heartbeats again.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_core::{NodeRecord, NodeReport, NodeState};
use berth_executor::host::HostFacts;
use berth_executor::{
    ExecError, Executor, ExecutorStatus, ImageInfo, InputStream, Invocation, RunSpec,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::TaskManager;

/// The name of the secret replicas present to nodes on the data plane.
pub const DATA_PLANE_SECRET: &str = "node-data-plane";

/// The data plane's secret as this replica knows it: read from the store,
/// presented by the connections it makes to nodes.
pub type DataPlaneSecret = Arc<RwLock<String>>;

/// Makes the executor that drives a node over the network (the data
/// plane's client); the server provides it. Without one, this replica
/// places work only on its in-process executor.
pub trait NodeConnector: Send + Sync + 'static {
    fn connect(&self, node: &NodeRecord, secret: DataPlaneSecret) -> Arc<dyn Executor>;
}

/// One executor placement can use.
#[derive(Clone)]
pub(crate) struct Member {
    pub id: String,
    pub executor: Arc<dyn Executor>,
    /// A node's last report, for judging its room without asking it.
    report: Option<NodeReport>,
    /// Whether its heartbeat is recent (always, in process).
    pub fresh: bool,
}

impl Member {
    /// A cheap guess at whether the run would be accepted now; the
    /// executor still judges for itself.
    pub fn has_room(&self, spec: &RunSpec) -> bool {
        match &self.report {
            None => self.executor.has_room(spec),
            Some(r) => r.engine_healthy && r.running < r.slots,
        }
    }
}

struct Remote {
    address: String,
    executor: Arc<dyn Executor>,
    report: NodeReport,
    state: NodeState,
    live: bool,
    /// Fired when the node stops being live: what this replica has in
    /// flight on it ends at once with `executor_lost`, rather than at its
    /// stream's idle timeout or never (a request no one will answer).
    lost: CancellationToken,
    /// Heartbeat within two intervals: preferred over a node that may be
    /// going.
    fresh: bool,
}

pub(crate) struct Fleet {
    local: Vec<Member>,
    remote: RwLock<HashMap<String, Remote>>,
    pub secret: DataPlaneSecret,
    connector: std::sync::OnceLock<Arc<dyn NodeConnector>>,
    /// Where the next placement starts among the nodes, so that nodes
    /// with room share the work rather than the first taking it all.
    turn: std::sync::atomic::AtomicUsize,
}

impl Fleet {
    pub fn new(local: Vec<Arc<dyn Executor>>, local_id: &str) -> Self {
        let local = local
            .into_iter()
            .enumerate()
            .map(|(i, executor)| Member {
                id: if i == 0 {
                    local_id.to_owned()
                } else {
                    format!("{local_id}-{i}")
                },
                executor,
                report: None,
                fresh: true,
            })
            .collect();
        Self {
            local,
            remote: RwLock::default(),
            secret: Arc::default(),
            connector: std::sync::OnceLock::new(),
            turn: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub fn set_connector(&self, connector: Arc<dyn NodeConnector>) {
        let _ = self.connector.set(connector);
    }

    pub fn local(&self) -> &[Member] {
        &self.local
    }

    /// Where new work may go: the in-process executors, then every live,
    /// active node.
    pub fn candidates(&self) -> Vec<Member> {
        let remote = self.read();
        let mut out = self.local.clone();
        let mut nodes: Vec<Member> = remote
            .iter()
            .filter(|(_, r)| r.live && r.state.takes_work())
            .map(|(id, r)| Member {
                id: id.clone(),
                executor: r.executor.clone(),
                report: Some(r.report.clone()),
                fresh: r.fresh,
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        if !nodes.is_empty() {
            let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let len = nodes.len();
            nodes.rotate_left(turn % len);
        }
        out.extend(nodes);
        out
    }

    /// Every executor that may hold instances: for preparing, retiring and
    /// reading status. A lost node is left out: it holds nothing of ours.
    pub fn all(&self) -> Vec<Member> {
        let remote = self.read();
        let mut out = self.local.clone();
        out.extend(remote.iter().filter(|(_, r)| r.live).map(|(id, r)| Member {
            id: id.clone(),
            executor: r.executor.clone(),
            report: Some(r.report.clone()),
            fresh: r.fresh,
        }));
        out
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Remote>> {
        // Only whole-entry inserts and removes happen under the lock.
        self.remote.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the view up to date with the store's nodes.
    fn apply(&self, nodes: &[NodeRecord], lost_after: Duration, fresh_within: Duration) {
        let Some(connector) = self.connector.get() else {
            return;
        };
        let lost_after_ms = i64::try_from(lost_after.as_millis()).unwrap_or(i64::MAX);
        let fresh_ms = i64::try_from(fresh_within.as_millis()).unwrap_or(i64::MAX);
        let local: Vec<&str> = self.local.iter().map(|m| m.id.as_str()).collect();
        let mut remote = self.remote.write().unwrap_or_else(|p| p.into_inner());
        remote.retain(|id, r| {
            let kept = nodes.iter().any(|n| &n.id == id);
            if !kept {
                r.lost.cancel();
            }
            kept
        });
        for node in nodes {
            // In-process executors are driven directly; a node without an
            // address is another replica's in-process one, out of reach.
            if local.contains(&node.id.as_str()) || node.address.is_empty() {
                continue;
            }
            let live = node.state != NodeState::Lost && node.heartbeat_age_ms <= lost_after_ms;
            let fresh = node.heartbeat_age_ms <= fresh_ms;
            match remote.get_mut(&node.id) {
                Some(r) if r.address == node.address && (r.live || !live) => {
                    if r.live != live || r.state != node.state {
                        info!(node = %node.id, state = %node.state, live, "node changed");
                    }
                    if r.live && !live {
                        r.lost.cancel();
                    }
                    r.state = node.state;
                    r.live = live;
                    r.fresh = fresh;
                    r.report = node.report.clone();
                }
                // New, moved, or back from the lost: a fresh connection
                // and a fresh watch.
                previous => {
                    if let Some(p) = previous {
                        p.lost.cancel();
                    }
                    info!(node = %node.id, address = %node.address, state = %node.state, live,
                        "node in view");
                    let lost = CancellationToken::new();
                    let executor = Arc::new(Watched {
                        id: node.id.clone(),
                        inner: connector.connect(node, Arc::clone(&self.secret)),
                        lost: lost.clone(),
                    });
                    remote.insert(
                        node.id.clone(),
                        Remote {
                            address: node.address.clone(),
                            executor,
                            report: node.report.clone(),
                            state: node.state,
                            live,
                            lost,
                            fresh,
                        },
                    );
                }
            }
        }
    }
}

/// What a node reports, from its executor's status and the host's facts.
pub fn node_report(status: &ExecutorStatus, host: &HostFacts) -> NodeReport {
    let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    NodeReport {
        cpu_millis: host.cpu_millis,
        memory_mb: host.memory_mb,
        cpu_millis_allocated: status.cpu_millis_allocated,
        memory_mb_allocated: status.memory_mb_allocated,
        slots: as_u64(status.capacity),
        running: as_u64(status.running),
        cpu_flags: host.cpu_flags.clone(),
        engine_healthy: status.healthy,
        instances: status
            .instances
            .iter()
            .map(|c| berth_core::NodeInstances {
                tenant: c.tenant.clone(),
                function: c.function.clone(),
                version: c.version,
                ready: as_u64(c.ready),
                busy: as_u64(c.busy),
                starting: as_u64(c.starting),
            })
            .collect(),
    }
}

impl TaskManager {
    /// Set once, by the server: how this replica reaches executor nodes.
    pub fn set_node_connector(&self, connector: Arc<dyn NodeConnector>) {
        self.fleet.set_connector(connector);
    }

    /// Keeps the fleet's view fresh, heartbeats this replica's in-process
    /// executors as nodes of the set, and marks nodes whose heartbeats
    /// lapsed as lost.
    pub(crate) async fn fleet_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let host = HostFacts::read();
        let every = self.cfg.heartbeat_every;
        loop {
            self.fleet_tick(&host).await;
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn fleet_tick(&self, host: &HostFacts) {
        let known = !self
            .fleet
            .secret
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if !known {
            let candidate = crate::generate_key();
            match self.store.set_secret(DATA_PLANE_SECRET, &candidate).await {
                Ok(s) => *self.fleet.secret.write().unwrap_or_else(|p| p.into_inner()) = s,
                Err(e) => debug!(error = %e, "cannot read the data plane's secret yet"),
            }
        }
        for m in self.fleet.local() {
            let report = node_report(&m.executor.status().await, host);
            if let Err(e) = self.heartbeat_local(&m.id, &report).await {
                debug!(node = %m.id, error = %e, "could not heartbeat the local executor");
            }
        }
        let lost_after = self.cfg.node_lost_after;
        match self
            .store
            .mark_lost_nodes(i64::try_from(lost_after.as_millis()).unwrap_or(i64::MAX))
            .await
        {
            Ok(lost) => {
                for id in lost {
                    warn!(node = %id, "node lost: its heartbeats lapsed");
                }
            }
            Err(e) => debug!(error = %e, "could not mark lost nodes"),
        }
        match self.store.list_nodes().await {
            Ok(nodes) => self
                .fleet
                .apply(&nodes, lost_after, self.cfg.heartbeat_every * 2),
            Err(e) => debug!(error = %e, "could not read the fleet"),
        }
    }

    /// The in-process executor joins its set like any node (with a token
    /// it makes itself) the first time, and heartbeats afterwards. It has
    /// no address: other replicas cannot reach it.
    async fn heartbeat_local(
        &self,
        id: &str,
        report: &NodeReport,
    ) -> Result<(), crate::SchedError> {
        if self.store.heartbeat_node(id, "", report).await?.is_some() {
            return Ok(());
        }
        let token = crate::generate_key();
        let token_hash = crate::hash_key(&token);
        let token_id = format!("local-{}", &hex::encode(token_hash)[..12]);
        self.store
            .create_join_token(
                &token_id,
                &token_hash,
                &format!("in-process executor of {id}"),
            )
            .await?;
        let credential = crate::hash_key(&crate::generate_key());
        let node = berth_core::NewNode {
            id: id.to_owned(),
            zone: self.cfg.zone.clone(),
            labels: self.cfg.labels.clone(),
            address: String::new(),
            report: report.clone(),
        };
        if let Err(why) = self
            .store
            .join_node(&token_hash, &node, &credential)
            .await?
        {
            warn!(node = %id, ?why, "the in-process executor could not join");
        }
        Ok(())
    }
}

/// A node's executor as long as the node is live: once it is not, every
/// call on it ends with `executor_lost` (an attempt not yet accepted is
/// a refusal, so the next node gets it; a running one is lost).
struct Watched {
    id: String,
    inner: Arc<dyn Executor>,
    lost: CancellationToken,
}

impl Watched {
    fn lost_error(&self) -> ExecError {
        ExecError::ExecutorLost(format!(
            "node {} stopped heartbeating and was taken out of the set",
            self.id
        ))
    }
}

#[async_trait::async_trait]
impl Executor for Watched {
    async fn resolve_image(&self, reference: &str) -> Result<ImageInfo, ExecError> {
        tokio::select! {
            r = self.inner.resolve_image(reference) => r,
            () = self.lost.cancelled() => Err(self.lost_error()),
        }
    }

    async fn run(&self, spec: RunSpec, stdin: InputStream) -> Result<Invocation, ExecError> {
        let mut inv = tokio::select! {
            r = self.inner.run(spec, stdin) => r?,
            () = self.lost.cancelled() => return Err(self.lost_error()),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done = std::mem::replace(&mut inv.done, rx);
        let lost = self.lost.clone();
        let error = self.lost_error();
        let (out_tx, out_rx) = tokio::sync::mpsc::channel(1);
        // stdout goes through here so that a lost node's attempt is let go
        // (its receiver dropped) at once.
        let mut stdout = std::mem::replace(&mut inv.stdout, out_rx);
        tokio::spawn(async move {
            let mut done = std::pin::pin!(done);
            let outcome = loop {
                tokio::select! {
                    chunk = stdout.recv() => match chunk {
                        Some(c) => {
                            tokio::select! {
                                sent = out_tx.send(c) => if sent.is_err() { break None },
                                () = lost.cancelled() => break Some(Err(error.clone())),
                            }
                        }
                        None => break None,
                    },
                    () = lost.cancelled() => break Some(Err(error.clone())),
                }
            };
            // Output over, or its reader gone (which must end the attempt
            // on the node, as dropping stdout does anywhere).
            drop(stdout);
            drop(out_tx);
            let outcome = match outcome {
                Some(lost) => lost,
                None => tokio::select! {
                    r = &mut done => r.unwrap_or_else(|_| Err(error.clone())),
                    () = lost.cancelled() => Err(error.clone()),
                },
            };
            let _ = tx.send(outcome);
        });
        Ok(inv)
    }

    async fn reap_orphans(&self) -> Result<usize, ExecError> {
        self.inner.reap_orphans().await
    }

    async fn prepare(&self, spec: &RunSpec) -> Result<(), ExecError> {
        tokio::select! {
            r = self.inner.prepare(spec) => r,
            () = self.lost.cancelled() => Err(self.lost_error()),
        }
    }

    fn retire(&self, tenant: &str, function: &str, keep: Option<i64>) {
        self.inner.retire(tenant, function, keep);
    }

    async fn status(&self) -> ExecutorStatus {
        self.inner.status().await
    }

    fn has_room(&self, spec: &RunSpec) -> bool {
        !self.lost.is_cancelled() && self.inner.has_room(spec)
    }
}
