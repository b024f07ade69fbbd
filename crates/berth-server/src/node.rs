//! `berth executor`: the node daemon. It drives this machine's container
//! engine with the same executor the all-in-one server uses, joins a set
//! once with a join token (and keeps the credential it gets in its data
//! directory), heartbeats what it has and runs, and serves the data plane
//! replicas place work through.
//!
//! Losing the set is the node's to notice too: when no heartbeat has been
//! acknowledged for as long as the set takes to call a node lost, its
//! work has been handed elsewhere, so it removes its containers rather
//! than let a late result race the re-run. SIGTERM (the machine being
//! reclaimed) drains: no new runs, what runs gets the grace period.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_client::Client;
use berth_contract::{HeartbeatBody, JoinBody, NodeState};
use berth_docker::{DockerConfig, DockerExecutor, PullCredentials};
use berth_executor::host::HostFacts;
use berth_executor::{
    ExecError, Executor, ExecutorStatus, ImageInfo, InputStream, Invocation, RunSpec,
};
use berth_scheduler::node_report;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ServerError;
use crate::agent::find_agent;
use crate::data_dir::{self, write_private};

/// Everything `berth executor` can be told.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's own files: its identity and credential, instances'
    /// socket directories.
    pub data_dir: PathBuf,
    /// A replica (or the load balancer) of the set to join.
    pub join: String,
    /// Needed the first time only; later starts use the credential kept.
    pub token: Option<String>,
    pub zone: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Where the data plane listens.
    pub listen: SocketAddr,
    /// The URL replicas reach it at; by default `http://` and the bound
    /// listen address.
    pub advertise: Option<String>,
    pub max_containers: usize,
    pub agent: Option<PathBuf>,
    pub runtime: Option<String>,
    /// What running attempts get to finish when the node is drained or
    /// stopped.
    pub grace: Duration,
    /// A PEM certificate chain and key: the data plane is served over TLS
    /// (and advertised as https://).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// A PEM CA certificate to trust for the set's https address, beside
    /// the system's.
    pub ca: Option<PathBuf>,
}

/// What a joined node keeps: who it is to its set.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Identity {
    set: String,
    node_id: String,
    credential: String,
    data_plane_secret: String,
    heartbeat_every_ms: u64,
    lost_after_ms: u64,
}

const IDENTITY_FILE: &str = "node.json";

/// Refuses new runs once the node is draining: the replica then offers
/// the run to another node, which is what a refusal means.
struct Gate {
    inner: Arc<DockerExecutor>,
    /// `host:port` of the set this node joined: every registry image is
    /// pulled from there, whichever replica pinned it (they share one
    /// registry, and a digest names the same bytes on any of them).
    registry: Option<String>,
    draining: AtomicBool,
    /// Attempts started and not yet ended: what a drain waits for (warm
    /// instances idle between calls are not work).
    in_flight: Arc<AtomicUsize>,
    /// Set when a drain's grace is over: what still runs is killed, and
    /// reported as reclaimed so that it goes back to the queue uncounted.
    reclaiming: Arc<AtomicBool>,
}

impl Gate {
    fn rehost(&self, reference: &str) -> String {
        rehost(reference, self.registry.as_deref())
    }
}

/// The reference with its registry host replaced by the set's; engine
/// images (no host) are left as they are.
fn rehost(reference: &str, registry: Option<&str>) -> String {
    match (berth_docker::registry_host(reference), registry) {
        (Some(host), Some(set)) => format!("{set}{}", &reference[host.len()..]),
        _ => reference.to_owned(),
    }
}

#[async_trait]
impl Executor for Gate {
    async fn resolve_image(&self, reference: &str) -> Result<ImageInfo, ExecError> {
        self.inner.resolve_image(&self.rehost(reference)).await
    }
    async fn run(&self, mut spec: RunSpec, stdin: InputStream) -> Result<Invocation, ExecError> {
        spec.image = self.rehost(&spec.image);
        if self.draining.load(Ordering::Acquire) {
            return Err(ExecError::EngineUnavailable(
                "this node is draining and takes no new work".into(),
            ));
        }
        let mut inv = self.inner.run(spec, stdin).await?;
        // Counted until its outcome is known, however the caller goes.
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done = std::mem::replace(&mut inv.done, rx);
        let in_flight = Arc::clone(&self.in_flight);
        let reclaiming = Arc::clone(&self.reclaiming);
        tokio::spawn(async move {
            let mut outcome = done
                .await
                .unwrap_or_else(|_| Err(ExecError::Engine("the attempt ended unreported".into())));
            if reclaiming.load(Ordering::Acquire) {
                outcome = Err(ExecError::Reclaimed(
                    "the node was drained and its grace period ran out".into(),
                ));
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
            let _ = tx.send(outcome);
        });
        Ok(inv)
    }
    async fn reap_orphans(&self) -> Result<usize, ExecError> {
        self.inner.reap_orphans().await
    }
    async fn prepare(&self, spec: &RunSpec) -> Result<(), ExecError> {
        if self.draining.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut spec = spec.clone();
        spec.image = self.rehost(&spec.image);
        self.inner.prepare(&spec).await
    }
    fn retire(&self, tenant: &str, function: &str, keep: Option<i64>) {
        self.inner.retire(tenant, function, keep);
    }
    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
    async fn status(&self) -> ExecutorStatus {
        self.inner.status().await
    }
    fn has_room(&self, spec: &RunSpec) -> bool {
        !self.draining.load(Ordering::Acquire) && self.inner.has_room(spec)
    }
}

/// Runs the node until SIGTERM or Ctrl-C (then drains), or until the set
/// refuses it.
pub async fn run_node(cfg: NodeConfig) -> Result<(), ServerError> {
    crate::run::raise_nofile_limit();
    data_dir::prepare(&cfg.data_dir)?;
    let host = HostFacts::read();
    let (listener, bound) = crate::run::bind(cfg.listen).await?;
    let acceptor = match &cfg.tls {
        Some((cert, key)) => Some(crate::tls::acceptor(cert, key)?),
        None => None,
    };
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let advertise = cfg
        .advertise
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{bound}"));
    let ca = match &cfg.ca {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| ServerError::Config(format!("--ca {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let set = cfg.join.trim_end_matches('/').to_owned();

    // The node's identity decides its container labels, so it comes
    // before the executor: a restart under the same id reaps what its
    // previous life left.
    let identity_path = cfg.data_dir.join(IDENTITY_FILE);
    let kept: Option<Identity> = std::fs::read(&identity_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|i: &Identity| i.set == set);
    let identity = match kept {
        Some(i) => i,
        None => {
            let token = cfg.token.clone().ok_or_else(|| {
                ServerError::Config(format!(
                    "this node has not joined {set} yet: give it a join token (--token; \
                     `berth executor token create` on the set makes one)"
                ))
            })?;
            let report = node_report(&empty_status(cfg.max_containers), &host);
            let client = Client::with_ca(&set, &token, ca.as_deref()).map_err(config_error)?;
            let joined = client
                .join(&JoinBody {
                    zone: cfg.zone.clone(),
                    labels: cfg.labels.clone(),
                    address: advertise.clone(),
                    report,
                })
                .await
                .map_err(|e| ServerError::Config(format!("joining {set}: {e}")))?;
            let identity = Identity {
                set: set.clone(),
                node_id: joined.node_id,
                credential: joined.credential,
                data_plane_secret: joined.data_plane_secret,
                heartbeat_every_ms: joined.heartbeat_every_ms,
                lost_after_ms: joined.lost_after_ms,
            };
            let json = serde_json::to_string_pretty(&identity)
                .map_err(|e| ServerError::Config(e.to_string()))?;
            write_private(&identity_path, &json)?;
            info!(node = %identity.node_id, %set, "joined the set");
            identity
        }
    };

    let agent = find_agent(cfg.agent.clone());
    if agent.is_none() {
        warn!("no berth-agent found: only mode \"fresh\" functions can run (see --agent)");
    }
    let docker = Arc::new(DockerExecutor::new(DockerConfig {
        node_id: identity.node_id.clone(),
        boot_id: hex::encode(rand::random::<[u8; 8]>()),
        max_containers: cfg.max_containers,
        agent,
        run_dir: cfg.data_dir.join("run"),
        runtime: cfg.runtime.clone().filter(|r| !r.is_empty()),
        ..DockerConfig::default()
    }));
    // Images come from the set's registry only, pulled as this node.
    let registry = registry_host(&set);
    if let Some(registry) = &registry {
        docker.set_pull_credentials(PullCredentials {
            server: registry.clone(),
            username: identity.node_id.clone(),
            password: identity.credential.clone(),
        });
    }
    match docker.reap_orphans().await {
        Ok(0) => {}
        Ok(n) => info!(containers = n, "removed containers a previous life left"),
        Err(e) => warn!(error = %e, "could not reap orphaned containers"),
    }
    let gate = Arc::new(Gate {
        inner: Arc::clone(&docker),
        registry,
        draining: AtomicBool::new(false),
        in_flight: Arc::default(),
        reclaiming: Arc::default(),
    });
    let auth = berth_node::NodeAuth::new(
        identity.node_id.clone(),
        berth_node::SharedSecret::new(identity.data_plane_secret.clone()),
    );
    let app = berth_node::router(gate.clone(), auth.clone());
    let stop = CancellationToken::new();
    let server = {
        let stop = stop.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => crate::tls::serve(listener, acceptor, app, stop).await,
                None => {
                    if let Err(e) = axum::serve(crate::run::nodelay(listener), app)
                        .with_graceful_shutdown(stop.cancelled_owned())
                        .await
                    {
                        warn!(error = %e, "data plane stopped");
                    }
                }
            }
        })
    };
    eprintln!(
        "berth: executor {} serving {advertise} for {set}",
        identity.node_id
    );
    info!(node = %identity.node_id, %advertise, %set, "executor node up");

    let client =
        Client::with_ca(&set, &identity.credential, ca.as_deref()).map_err(config_error)?;
    let every = Duration::from_millis(identity.heartbeat_every_ms.clamp(200, 60_000));
    let lost_after = Duration::from_millis(identity.lost_after_ms.max(1000));
    let mut last_ack = Instant::now();
    let mut cut_off = false;
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut draining_since: Option<Instant> = None;
    loop {
        let report = node_report(&gate.status().await, &host);
        let body = HeartbeatBody {
            address: advertise.clone(),
            report,
            draining: draining_since.is_some(),
        };
        match client.heartbeat(&identity.node_id, &body).await {
            Ok(ack) => {
                if cut_off {
                    info!("the set answers again; taking work");
                    cut_off = false;
                }
                last_ack = Instant::now();
                auth.set_secret(ack.data_plane_secret.clone());
                if ack.state == NodeState::Draining && draining_since.is_none() {
                    info!("drained by the set: finishing what runs, taking nothing new");
                    gate.draining.store(true, Ordering::Release);
                    draining_since = Some(Instant::now());
                }
            }
            Err(e)
                if e.status()
                    .is_some_and(|s| s.as_u16() == 401 || s.as_u16() == 404) =>
            {
                // Removed from the set, or its credential revoked: the
                // node is no one's now.
                gate.shutdown().await;
                stop.cancel();
                let _ = server.await;
                return Err(ServerError::Config(format!(
                    "the set no longer knows this node ({e}); remove {} to join again",
                    identity_path.display()
                )));
            }
            // The set answers but its database does not: the link is
            // fine, and no replica can call this node lost meanwhile, so
            // what runs goes on (its results wait for the database).
            Err(e) if e.status().is_some_and(|s| s.as_u16() == 503) => {
                warn!(error = %e, "heartbeat not recorded: the set's database is unreachable");
                last_ack = Instant::now();
            }
            Err(e) => {
                warn!(error = %e, "heartbeat failed");
                if !cut_off && last_ack.elapsed() >= lost_after {
                    // The set has called this node lost and handed its
                    // work elsewhere: nothing it runs may go on.
                    warn!("no heartbeat acknowledged for {lost_after:?}: removing every container");
                    cut_off = true;
                    docker.kill_all().await;
                }
            }
        }
        if let Some(since) = draining_since
            && (gate.in_flight.load(Ordering::Acquire) == 0 || since.elapsed() >= cfg.grace)
        {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = &mut signal, if draining_since.is_none() => {
                info!("stopping: draining, {:?} for running work", cfg.grace);
                gate.draining.store(true, Ordering::Release);
                draining_since = Some(Instant::now());
            }
        }
    }
    let left = gate.in_flight.load(Ordering::Acquire);
    if left > 0 {
        warn!(
            attempts = left,
            "grace period over: handing back what still runs"
        );
        gate.reclaiming.store(true, Ordering::Release);
    }
    info!("drained; removing what is left");
    gate.shutdown().await;
    docker.kill_all().await;
    // The replicas hear how those attempts ended before the data plane
    // goes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gate.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let _ = server.await;
    Ok(())
}

/// `host:port` of the set's registry: the set's own address.
fn registry_host(set: &str) -> Option<String> {
    let url = reqwest::Url::parse(set).ok()?;
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    Some(format!("{host}:{port}"))
}

fn empty_status(slots: usize) -> ExecutorStatus {
    ExecutorStatus {
        id: String::new(),
        capacity: slots,
        running: 0,
        cpu_millis_allocated: 0,
        memory_mb_allocated: 0,
        instances: Vec::new(),
        healthy: true,
    }
}

fn config_error(e: berth_client::ClientError) -> ServerError {
    ServerError::Config(e.to_string())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_images_are_pulled_from_the_set_joined() {
        let set = Some("198.18.0.1:8080");
        assert_eq!(
            rehost("127.0.0.1:41234/alpha/app@sha256:ab12", set),
            "198.18.0.1:8080/alpha/app@sha256:ab12"
        );
        // An engine image, or a node that knows no registry: as it is.
        assert_eq!(
            rehost("berth-test/busybox:latest", set),
            "berth-test/busybox:latest"
        );
        assert_eq!(rehost("sha256:ab12", set), "sha256:ab12");
        assert_eq!(
            rehost("127.0.0.1:1/a/b@sha256:00", None),
            "127.0.0.1:1/a/b@sha256:00"
        );
    }

    #[test]
    fn the_registry_is_the_set_url_host_and_port() {
        assert_eq!(
            registry_host("http://198.18.0.1:8080/").as_deref(),
            Some("198.18.0.1:8080")
        );
        assert_eq!(
            registry_host("https://berth.example").as_deref(),
            Some("berth.example:443")
        );
    }
}
