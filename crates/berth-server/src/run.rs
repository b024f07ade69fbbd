//! Starting the all-in-one server: store, executor, TaskManager, registry
//! and HTTP, in the order each needs the others; and stopping them in the
//! reverse order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_api::AppState;
use berth_blobs::{Blobs, Payloads};
use berth_core::Quotas;
use berth_docker::{DockerConfig, DockerExecutor, PullCredentials};
use berth_executor::Executor;
use berth_registry::{GcOptions, RegistryIndex};
use berth_scheduler::TaskManager;
use berth_store::{PgStore, SqliteStore, Store};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::ServerError;
use crate::agent::find_agent;
use crate::data_dir::{self, ENDPOINT_FILE, write_private};
use crate::registry::{KeyAuthenticator, PullCredential, RegistryAdmission, open_registry};

/// Everything `berth server` can be told; the binary fills it from flags
/// and the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// This replica's own files: its node id, the admin key file, the
    /// endpoint for the local CLI, instances' socket directories; and, on
    /// one node, the database, task payloads and registry.
    pub data_dir: PathBuf,
    /// Where control-plane state lives: `None` for SQLite in the data
    /// directory, or a `postgres://` URL shared by the replicas of a set.
    pub store: Option<String>,
    /// Where blobs live (task payloads, registry content): `None` for the
    /// data directory, or `s3://BUCKET[/PREFIX]` (endpoint and credentials
    /// from the `AWS_*` environment) shared by the replicas of a set.
    pub blob_store: Option<String>,
    pub listen: SocketAddr,
    /// Async tasks this server runs at once.
    pub async_concurrency: usize,
    /// Containers the local executor runs at once (sync and async).
    pub max_containers: usize,
    pub max_async_input_bytes: u64,
    /// How long a claimed async task's lease lasts without renewal.
    pub lease: Duration,
    /// What running async tasks get to finish at shutdown before they are
    /// handed back to the queue.
    pub shutdown_grace: Duration,
    /// How long finished tasks (status, output, logs) are kept.
    pub retention: Duration,
    /// The static agent warm instances run; `None`: look beside this
    /// executable.
    pub agent: Option<PathBuf>,
    /// Between registry garbage collections; `None`: never.
    pub registry_gc_every: Option<Duration>,
    /// A task's stored stderr is cut here; the start is kept.
    pub max_log_bytes: u64,
    /// The engine's OCI runtime for function containers (e.g. `runsc`).
    pub runtime: Option<String>,
    /// Every tenant's quotas unless the admin sets its own.
    pub quotas: Quotas,
    /// Whether this replica runs containers itself (the all-in-one
    /// server) or only places them on the set's executor nodes.
    pub local_executor: bool,
    /// The in-process executor's zone and labels, as a node of the set.
    pub zone: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// A PEM CA certificate to trust for nodes whose data plane is served
    /// over TLS, beside the system's.
    pub node_ca: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: data_dir::default_data_dir(),
            store: None,
            blob_store: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            async_concurrency: 4,
            max_containers: 32,
            max_async_input_bytes: 256 * 1024 * 1024,
            lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            retention: Duration::from_secs(168 * 3600),
            agent: None,
            registry_gc_every: Some(Duration::from_secs(3600)),
            max_log_bytes: 1024 * 1024,
            runtime: None,
            quotas: Quotas::default(),
            local_executor: true,
            zone: None,
            labels: std::collections::BTreeMap::new(),
            node_ca: None,
        }
    }
}

/// Runs the server until SIGTERM or Ctrl-C, then stops it cleanly: no new
/// work, running async tasks get their grace, the rest go back to the
/// queue, and no container of this node is left behind.
pub async fn run(cfg: Config) -> Result<(), ServerError> {
    raise_nofile_limit();
    cfg.quotas
        .as_overrides()
        .validate()
        .map_err(|e| ServerError::Config(format!("default quotas: {e}")))?;
    let data_dir = cfg.data_dir.clone();
    data_dir::prepare(&data_dir)?;
    let node_id = data_dir::node_id(&data_dir)?;

    // The registry's index is the same database, whichever it is.
    let (store, index): (Arc<dyn Store>, Arc<dyn RegistryIndex>) = match cfg.store.as_deref() {
        None => {
            let sqlite = Arc::new(SqliteStore::open(&data_dir.join("berth.db")).await?);
            (sqlite.clone(), sqlite)
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let pg = Arc::new(PgStore::connect(url).await?);
            (pg.clone(), pg)
        }
        Some(other) => {
            return Err(ServerError::Config(format!(
                "--store {other:?}: expected a postgres:// URL (or nothing, for SQLite)"
            )));
        }
    };
    let blobs = match cfg.blob_store.as_deref() {
        None => Blobs::local(&data_dir)?,
        Some(url) => Blobs::from_url(url)?,
    };
    data_dir::upgrade_payload_layout(&data_dir)?;
    let (admin_key, new_key) = data_dir::admin_key(&data_dir)?;

    let agent = find_agent(cfg.agent.clone());
    match &agent {
        Some(p) => info!(agent = %p.display(), "warm instances enabled"),
        None => warn!("no berth-agent found: only mode \"fresh\" functions can run (see --agent)"),
    }
    // Bound before anything else: the engine pulls function images from
    // this very address.
    let (listener, addr) = bind(cfg.listen).await?;
    let loopback = SocketAddr::new(
        if addr.ip().is_unspecified() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            addr.ip()
        },
        addr.port(),
    );
    // One set of series for the whole process, served at `/metrics`.
    let metrics = Arc::new(berth_metrics::Metrics::new());
    let executor = DockerExecutor::new(DockerConfig {
        node_id: node_id.clone(),
        boot_id: hex::encode(rand::random::<[u8; 8]>()),
        max_containers: cfg.max_containers,
        agent,
        run_dir: data_dir.join("run"),
        runtime: cfg.runtime.clone().filter(|r| !r.is_empty()),
        metrics: metrics.pools().clone(),
        ..DockerConfig::default()
    });
    let pull = PullCredential::generate();
    executor.set_pull_credentials(PullCredentials {
        server: loopback.to_string(),
        username: pull.username.clone(),
        password: pull.password.clone(),
    });
    let executors: Vec<Arc<dyn Executor>> = if cfg.local_executor {
        vec![Arc::new(executor)]
    } else {
        info!("no local executor: work goes to the set's executor nodes");
        Vec::new()
    };

    let sched = berth_scheduler::Config {
        node_id: node_id.clone(),
        async_concurrency: cfg.async_concurrency.max(1),
        lease: cfg.lease.max(Duration::from_secs(3)),
        max_async_input_bytes: cfg.max_async_input_bytes,
        max_log_bytes: cfg.max_log_bytes,
        retention: cfg.retention,
        quotas: cfg.quotas,
        metrics: Arc::clone(&metrics),
        zone: cfg.zone.clone(),
        labels: cfg.labels.clone(),
        ..berth_scheduler::Config::default()
    };
    let tasks = TaskManager::new(
        Arc::clone(&store),
        Payloads::new(blobs.clone()),
        executors,
        sched,
    );
    tasks.set_admin_key(&admin_key).await?;
    if new_key {
        data_dir::announce_new_key(&data_dir, &admin_key);
    }
    if let Err(e) = tasks.recover_at_start().await {
        warn!(error = %e, "start-up recovery incomplete");
    }
    {
        // Warming up must not delay serving.
        let tasks = Arc::clone(&tasks);
        tokio::spawn(async move {
            if let Err(e) = tasks.prepare_all().await {
                warn!(error = %e, "could not warm up functions with min_instances");
            }
        });
    }
    let shutdown = CancellationToken::new();
    tasks.spawn_background(shutdown.clone());

    tasks.set_node_connector(Arc::new(NodeLink::new(cfg.node_ca.as_deref())?));

    let registry_auth = Arc::new(KeyAuthenticator::new(&pull));
    registry_auth.set_tasks(Arc::clone(&tasks));
    let registry = open_registry(&data_dir, index, blobs.clone(), registry_auth)
        .await?
        .with_metrics(metrics.registry().clone());
    let registry = Arc::new(registry);
    if let Some(every) = cfg.registry_gc_every {
        // Runs on the one replica holding the registry's maintenance lease.
        berth_registry::spawn_maintenance(
            Arc::clone(&registry),
            node_id.clone(),
            every,
            GcOptions::default(),
            shutdown.clone(),
        );
    }
    tasks.set_image_admission(Arc::new(RegistryAdmission {
        registry: Arc::clone(&registry),
        pull_host: loopback.to_string(),
        aliases: vec![
            addr.to_string(),
            loopback.to_string(),
            format!("localhost:{}", addr.port()),
        ],
    }));

    // The registry's routes carry their own (absent) body limit: image
    // layers are streamed to the blob store whatever their size. The
    // console's are static files that call the API from the browser.
    let app = crate::access_log::layer(
        berth_api::router(AppState {
            tasks: Arc::clone(&tasks),
        })
        .merge(berth_registry::router(registry))
        .merge(berth_console::router()),
    );
    let url = format!("http://{addr}");
    write_private(&data_dir.join(ENDPOINT_FILE), &format!("{url}\n"))?;
    info!(%url, data_dir = %data_dir.display(), node = %node_id, "berth server listening");
    eprintln!("berth: listening on {url}");

    let grace = cfg.shutdown_grace;
    let draining = {
        let (tasks, shutdown) = (Arc::clone(&tasks), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tasks.drain(grace).await;
        })
    };
    // In-flight sync calls are drained by the HTTP server itself.
    axum::serve(nodelay(listener), app)
        .with_graceful_shutdown(signal(shutdown.clone()))
        .await
        .map_err(ServerError::Serve)?;
    shutdown.cancel();
    let _ = draining.await;
    info!("stopped");
    Ok(())
}

/// Every connection and every call in flight holds descriptors; the usual
/// soft limit of 1024 would turn a burst of callers into accept errors, so
/// the server takes what the hard limit allows, as servers commonly do.
/// Without TCP_NODELAY a small write after another (a blob's tail after a
/// full buffer, a data plane frame after the last) waits for the peer's
/// delayed ACK: ~40 ms.
pub(crate) fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "could not set TCP_NODELAY");
        }
    })
}

/// The listener, and the address it got (a port 0 is chosen here).
pub(crate) async fn bind(
    at: SocketAddr,
) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .map_err(|source| ServerError::Bind { addr: at, source })?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    Ok((listener, addr))
}

pub(crate) fn raise_nofile_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let below_hard = match (limit.current, limit.maximum) {
        (Some(soft), Some(hard)) => soft < hard,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if !below_hard {
        return;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if let Err(e) = setrlimit(Resource::Nofile, raised) {
        warn!(error = %e, "could not raise the open file limit");
    }
}

async fn signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    info!("shutting down: no new work is taken; running work gets its grace period");
    shutdown.cancel();
}

/// How this replica reaches executor nodes: the data plane's client, one
/// connection pool for all of them.
struct NodeLink {
    http: reqwest::Client,
    secret: berth_node::SharedSecret,
}

impl NodeLink {
    fn new(ca: Option<&std::path::Path>) -> Result<Self, ServerError> {
        let mut builder = reqwest::Client::builder();
        if let Some(path) = ca {
            let bad = |e: &dyn std::fmt::Display| {
                ServerError::Config(format!("--node-ca {}: {e}", path.display()))
            };
            let pem = std::fs::read(path).map_err(|e| bad(&e))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(&e))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: builder
                .build()
                .map_err(|e| ServerError::Config(e.to_string()))?,
            secret: berth_node::SharedSecret::unset(),
        })
    }
}

impl berth_scheduler::NodeConnector for NodeLink {
    fn connect(
        &self,
        node: &berth_core::NodeRecord,
        secret: berth_scheduler::DataPlaneSecret,
    ) -> Arc<dyn Executor> {
        let current = secret.read().unwrap_or_else(|p| p.into_inner()).clone();
        if !current.is_empty() {
            self.secret.set(current);
        }
        let remote = berth_node::RemoteExecutor::new(
            node.id.clone(),
            node.address.clone(),
            self.secret.clone(),
            self.http.clone(),
        );
        remote.update(
            node.report.slots,
            node.report.running,
            node.report.engine_healthy,
        );
        Arc::new(remote)
    }
}
