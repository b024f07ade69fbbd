use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use berth_api::{AppState, generate_key, hash_key};
use berth_core::{ADMIN_TENANT, QuotaOverrides, Quotas};
use berth_executor::{DockerConfig, DockerExecutor, Executor, PullCredentials};
use berth_registry::{GcOptions, Registry};
use berth_scheduler::{Config, TaskManager};
use berth_store::{Payloads, SqliteStore, Store};
use clap::Args;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::registry::{RegistryResolver, StoreAuthenticator, registry_root};

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Directory for the database, task payloads and the admin key.
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Async tasks this server runs at once.
    #[arg(long, env = "BERTH_ASYNC_CONCURRENCY", default_value_t = 4)]
    async_concurrency: usize,
    /// Containers the local executor runs at once (sync and async).
    #[arg(long, env = "BERTH_MAX_CONTAINERS", default_value_t = 32)]
    max_containers: usize,
    /// Largest async task input, in MiB.
    #[arg(long, env = "BERTH_MAX_ASYNC_INPUT_MB", default_value_t = 256)]
    max_async_input_mb: u64,
    /// Seconds a claimed async task's lease lasts without renewal.
    #[arg(long, env = "BERTH_LEASE_SECS", default_value_t = 30)]
    lease_secs: u64,
    /// Seconds running async tasks get to finish at shutdown before they
    /// are handed back to the queue.
    #[arg(long, env = "BERTH_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    shutdown_grace_secs: u64,
    /// Hours finished tasks (status, output, logs) are kept.
    #[arg(long, env = "BERTH_RETENTION_HOURS", default_value_t = 168)]
    retention_hours: u64,
    /// The statically linked agent that warm (exec and http mode) instances
    /// run; by default `berth-agent` next to this binary. Without it only
    /// `fresh` mode works.
    #[arg(long, env = "BERTH_AGENT")]
    agent: Option<PathBuf>,
    /// Minutes between registry garbage collections (0: never).
    #[arg(long, env = "BERTH_REGISTRY_GC_MINUTES", default_value_t = 60)]
    registry_gc_minutes: u64,
    /// A task's stored stderr is cut at this many bytes; the start is kept
    /// and a last line tells how much was dropped.
    #[arg(long, env = "BERTH_MAX_LOG_BYTES", default_value_t = 1024 * 1024)]
    max_log_bytes: u64,
    /// The engine's OCI runtime for function containers, e.g. `runsc`
    /// (gVisor) once it is registered with the engine; by default the
    /// engine's own default (runc).
    #[arg(long, env = "BERTH_RUNTIME")]
    runtime: Option<String>,
    #[command(flatten)]
    quotas: QuotaArgs,
}

/// Every tenant's quotas unless the admin sets its own
/// (`PUT /v1/tenants/{name}/quotas`).
#[derive(Args, Debug)]
struct QuotaArgs {
    /// Tasks (sync calls and async attempts) one tenant runs at once.
    #[arg(long, env = "BERTH_QUOTA_CONCURRENT_TASKS", default_value_t = Quotas::default().max_concurrent_tasks)]
    quota_concurrent_tasks: u32,
    /// Async tasks one tenant may have waiting.
    #[arg(long, env = "BERTH_QUOTA_QUEUED_TASKS", default_value_t = Quotas::default().max_queued_tasks)]
    quota_queued_tasks: u32,
    /// Largest cpu_millis a tenant's function may ask for.
    #[arg(long, env = "BERTH_QUOTA_CPU_MILLIS", default_value_t = Quotas::default().max_cpu_millis)]
    quota_cpu_millis: u32,
    /// Largest memory_mb a tenant's function may ask for.
    #[arg(long, env = "BERTH_QUOTA_MEMORY_MB", default_value_t = Quotas::default().max_memory_mb)]
    quota_memory_mb: u32,
    /// Largest timeout_secs a tenant's function may ask for.
    #[arg(long, env = "BERTH_QUOTA_TIMEOUT_SECS", default_value_t = Quotas::default().max_timeout_secs)]
    quota_timeout_secs: u32,
    /// Largest request body of a call or task, in bytes.
    #[arg(long, env = "BERTH_QUOTA_BODY_BYTES", default_value_t = Quotas::default().max_body_bytes)]
    quota_body_bytes: u64,
}

impl QuotaArgs {
    fn quotas(&self) -> Result<Quotas> {
        let q = Quotas {
            max_concurrent_tasks: self.quota_concurrent_tasks,
            max_queued_tasks: self.quota_queued_tasks,
            max_cpu_millis: self.quota_cpu_millis,
            max_memory_mb: self.quota_memory_mb,
            max_timeout_secs: self.quota_timeout_secs,
            max_body_bytes: self.quota_body_bytes,
        };
        let as_overrides = QuotaOverrides {
            max_concurrent_tasks: Some(q.max_concurrent_tasks),
            max_queued_tasks: Some(q.max_queued_tasks),
            max_cpu_millis: Some(q.max_cpu_millis),
            max_memory_mb: Some(q.max_memory_mb),
            max_timeout_secs: Some(q.max_timeout_secs),
            max_body_bytes: Some(q.max_body_bytes),
        };
        as_overrides
            .validate()
            .map_err(|e| anyhow::anyhow!("default quotas: {e}"))?;
        Ok(q)
    }
}

const ADMIN_KEY_FILE: &str = "admin.key";
const ENDPOINT_FILE: &str = "endpoint";
const NODE_ID_FILE: &str = "node-id";

pub async fn run(args: ServerArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    raise_nofile_limit();

    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(crate::default_data_dir);
    create_private_dir(&data_dir)?;
    let node_id = node_id(&data_dir)?;

    let store = SqliteStore::open(&data_dir.join("berth.db"))
        .await
        .context("opening the database")?;
    let store: Arc<dyn Store> = Arc::new(store);
    ensure_admin_key(store.as_ref(), &data_dir).await?;
    store
        .ensure_tenant(ADMIN_TENANT)
        .await
        .context("recording the admin tenant")?;
    let quotas = args.quotas.quotas()?;

    let agent = find_agent(args.agent.clone());
    match &agent {
        Some(p) => info!(agent = %p.display(), "warm instances enabled"),
        None => warn!("no berth-agent found: only mode \"fresh\" functions can run (see --agent)"),
    }
    // Bound before anything else: the engine pulls function images from
    // this very address.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let loopback = std::net::SocketAddr::new(
        if addr.ip().is_unspecified() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            addr.ip()
        },
        addr.port(),
    );
    let executor = DockerExecutor::new(DockerConfig {
        node_id: node_id.clone(),
        boot_id: hex::encode(rand::random::<[u8; 8]>()),
        max_containers: args.max_containers,
        agent,
        run_dir: data_dir.join("run"),
        runtime: args.runtime.clone().filter(|r| !r.is_empty()),
        ..DockerConfig::default()
    });
    let registry_auth = Arc::new(StoreAuthenticator::new(Arc::clone(&store)));
    let pull = registry_auth.internal_pull_credential();
    executor.set_pull_credentials(PullCredentials {
        server: loopback.to_string(),
        username: pull.username.clone(),
        password: pull.password.clone(),
    });
    let executors: Vec<Arc<dyn Executor>> = vec![Arc::new(executor)];

    let cfg = Config {
        node_id: node_id.clone(),
        async_concurrency: args.async_concurrency.max(1),
        lease: std::time::Duration::from_secs(args.lease_secs.max(3)),
        max_async_input_bytes: args.max_async_input_mb * 1024 * 1024,
        max_log_bytes: args.max_log_bytes,
        retention: std::time::Duration::from_secs(args.retention_hours.saturating_mul(3600)),
        quotas,
        ..Config::default()
    };
    let tasks = TaskManager::new(
        Arc::clone(&store),
        Payloads::new(data_dir.join("tasks")),
        executors,
        cfg,
    );
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

    let registry = Arc::new(
        Registry::open(
            berth_registry::Config::new(registry_root(&data_dir)),
            registry_auth,
        )
        .context("opening the registry")?,
    );
    if args.registry_gc_minutes > 0 {
        berth_registry::spawn_maintenance(
            Arc::clone(&registry),
            std::time::Duration::from_secs(args.registry_gc_minutes.saturating_mul(60)),
            GcOptions::default(),
            shutdown.clone(),
        );
    }

    tasks.set_image_resolver(Arc::new(RegistryResolver {
        registry: Arc::clone(&registry),
        pull_host: loopback.to_string(),
        aliases: vec![
            addr.to_string(),
            loopback.to_string(),
            format!("localhost:{}", addr.port()),
        ],
    }));

    // The registry's routes carry their own (absent) body limit: image
    // layers are streamed to disk whatever their size.
    let app = berth_api::router(AppState {
        store,
        tasks: Arc::clone(&tasks),
    })
    .merge(berth_registry::router(registry));
    let url = format!("http://{addr}");
    write_private(&data_dir.join(ENDPOINT_FILE), &format!("{url}\n"))?;
    info!(%url, data_dir = %data_dir.display(), node = %node_id, "berth server listening");
    eprintln!("berth: listening on {url}");

    let grace = std::time::Duration::from_secs(args.shutdown_grace_secs);
    let draining = {
        let (tasks, shutdown) = (Arc::clone(&tasks), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tasks.drain(grace).await;
        })
    };
    // In-flight sync calls are drained by the HTTP server itself.
    axum::serve(listener, app)
        .with_graceful_shutdown(signal(shutdown.clone()))
        .await
        .context("serving HTTP")?;
    shutdown.cancel();
    let _ = draining.await;
    info!("stopped");
    Ok(())
}

/// Every connection and every call in flight holds descriptors; the usual
/// soft limit of 1024 would turn a burst of callers into accept errors, so
/// the server takes what the hard limit allows, as servers commonly do.
fn raise_nofile_limit() {
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

/// The admin key: `BERTH_ADMIN_KEY` when set; otherwise generated on first
/// start, printed once and left in `admin.key` (0600) for the local CLI.
/// Only its hash goes into the database.
async fn ensure_admin_key(store: &dyn Store, data_dir: &Path) -> Result<()> {
    if let Some(key) = std::env::var("BERTH_ADMIN_KEY")
        .ok()
        .filter(|k| !k.is_empty())
    {
        return replace_admin_key(store, key.trim()).await;
    }
    let path = data_dir.join(ADMIN_KEY_FILE);
    if path.exists() {
        return Ok(());
    }
    let key = generate_key();
    replace_admin_key(store, &key).await?;
    write_private(&path, &format!("{key}\n"))?;
    eprintln!(
        "berth: created the admin API key (shown once; also saved to {}):\n{key}",
        path.display()
    );
    Ok(())
}

/// There is one admin key at a time: setting it revokes the previous one.
async fn replace_admin_key(store: &dyn Store, key: &str) -> Result<()> {
    store
        .delete_api_keys_labelled(ADMIN_TENANT, "admin")
        .await?;
    store
        .put_api_key(ADMIN_TENANT, &hash_key(key), "admin")
        .await?;
    Ok(())
}

/// The agent given, else `berth-agent` beside this executable. It runs in
/// images that may hold no libc at all, so a dynamically linked build (a
/// plain `cargo build`) is refused with a pointer to the static build.
fn find_agent(given: Option<PathBuf>) -> Option<PathBuf> {
    let explicit = given.is_some();
    let candidate = given.or_else(|| {
        let exe = std::env::current_exe().ok()?;
        Some(exe.parent()?.join("berth-agent"))
    })?;
    let Ok(path) = candidate.canonicalize() else {
        if explicit {
            warn!(agent = %candidate.display(), "the agent does not exist");
        }
        return None;
    };
    match has_interpreter(&path) {
        Ok(false) => Some(path),
        Ok(true) => {
            warn!(agent = %path.display(),
                "the agent is dynamically linked; build it with scripts/build-agent.sh");
            None
        }
        Err(e) => {
            warn!(agent = %path.display(), error = %e, "cannot read the agent");
            None
        }
    }
}

/// Whether an ELF64 little-endian executable names a dynamic loader
/// (a `PT_INTERP` program header), i.e. is not statically linked.
fn has_interpreter(path: &Path) -> std::io::Result<bool> {
    use std::io::{Error, Read};
    const PT_INTERP: u32 = 3;
    let mut data = Vec::new();
    std::fs::File::open(path)?
        .take(64 * 1024)
        .read_to_end(&mut data)?;
    let bad = || Error::other("not an ELF64 little-endian executable");
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return Err(bad());
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[32..40].try_into().map_err(|_| bad())?) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let at = phoff.saturating_add(i.saturating_mul(phentsize));
        let Some(kind) = data.get(at..at.saturating_add(4)) else {
            return Err(bad());
        };
        if u32::from_le_bytes(kind.try_into().map_err(|_| bad())?) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

fn node_id(data_dir: &Path) -> Result<String> {
    let path = data_dir.join(NODE_ID_FILE);
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let bytes: [u8; 8] = rand::random();
    let id = format!("node-{}", hex::encode(bytes));
    write_private(&path, &format!("{id}\n"))?;
    Ok(id)
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
