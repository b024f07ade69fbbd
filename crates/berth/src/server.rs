//! `berth server`: its flags, read into the server library's config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::quota_flags::ServerQuotas;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Where the control-plane state lives: a postgres:// URL shared by the
    /// replicas of a set [default: SQLite in the data directory]
    #[arg(long, env = "BERTH_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Where blobs (task inputs, outputs and logs, registry content) live:
    /// s3://BUCKET[/PREFIX], with AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION (and AWS_ALLOW_HTTP=true for a
    /// plain-HTTP endpoint) from the environment [default: the data directory]
    #[arg(long, env = "BERTH_BLOB_STORE")]
    blob_store: Option<String>,
    /// Address to listen on, IP:PORT.
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
    /// How log lines are written to stderr: `text` (coloured only on a
    /// terminal) or `json` (one object per line, for log collectors).
    /// Which lines: `BERTH_LOG`, e.g. `info` (the default),
    /// `berth::http=info,berth::task=off,warn`.
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Run no containers here: place every call and task on the set's
    /// executor nodes (`berth executor --join`).
    #[arg(long, env = "BERTH_NO_LOCAL_EXECUTOR")]
    no_local_executor: bool,
    /// The availability zone of this server's own executor.
    #[arg(long, env = "BERTH_ZONE")]
    zone: Option<String>,
    /// A label of this server's own executor, KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = crate::executor::parse_label)]
    labels: Vec<(String, String)>,
    /// A PEM CA certificate to trust for executor nodes that serve their
    /// data plane over TLS (beside the system's CAs).
    #[arg(long, env = "BERTH_NODE_CA")]
    node_ca: Option<PathBuf>,
    #[command(flatten)]
    quotas: ServerQuotas,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl ServerArgs {
    /// The server's config; `data_dir` is the global `--data-dir`: the
    /// directory for the database, task payloads, the registry and the
    /// admin key.
    pub fn into_config(self, data_dir: PathBuf) -> berth_server::Config {
        berth_server::Config {
            data_dir,
            store: self.store,
            blob_store: self.blob_store,
            listen: self.listen,
            async_concurrency: self.async_concurrency,
            max_containers: self.max_containers,
            max_async_input_bytes: self.max_async_input_mb.saturating_mul(1024 * 1024),
            lease: Duration::from_secs(self.lease_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            retention: Duration::from_secs(self.retention_hours.saturating_mul(3600)),
            agent: self.agent,
            registry_gc_every: (self.registry_gc_minutes > 0)
                .then(|| Duration::from_secs(self.registry_gc_minutes.saturating_mul(60))),
            max_log_bytes: self.max_log_bytes,
            runtime: self.runtime,
            quotas: self.quotas.0,
            local_executor: !self.no_local_executor,
            zone: self.zone,
            labels: self.labels.into_iter().collect(),
            node_ca: self.node_ca,
        }
    }
}

/// Logs go to stderr, filtered by `BERTH_LOG` (default `info`; the
/// request lines are `berth::http`, the task transitions `berth::task`).
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // The request's span fields (tenant, function, path) ride along in
        // `span`; the event's own are flattened to the top level.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
