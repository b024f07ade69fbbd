//! `berth-bench set`: what a set adds to one server, each figure against a
//! baseline measured in the same run.
//!
//! - The async queue: how soon a submitted task starts and how many tasks
//!   a second drain, for one node on SQLite, one replica on PostgreSQL
//!   (with local and with S3 blobs) and several replicas on one
//!   PostgreSQL database, against a bare `FOR UPDATE SKIP LOCKED` claim
//!   loop on the same PostgreSQL server.
//! - The registry: blob and `docker` push and pull through a server whose
//!   blobs live in S3, against the same server on the local filesystem.

mod baseline;
mod queue;
mod registry;
mod report;

use std::path::PathBuf;

use anyhow::Result;

use crate::cpu;
use crate::machine::{self, Machine};
use crate::pg::Databases;
use crate::{BUSYBOX, progress, server};

pub use queue::Drain;

/// The function every queue figure runs: busybox `cat` in exec mode.
pub const FUNCTION: &str = "queue";
/// Requests one warm instance serves at once.
pub const INSTANCE_CONCURRENCY: u32 = 16;
/// Warm instances per replica from the start, and at most.
pub const MIN_INSTANCES: u32 = 2;
pub const MAX_INSTANCES: u32 = 4;
/// Per replica; far above what the runs need, so it never refuses.
pub const MAX_CONTAINERS: usize = 32;
/// The tenant's running-task quota (default 64 across the set), raised so
/// that it never holds the replicas' slots back.
pub const QUOTA_CONCURRENT: usize = 10_000;
/// What each task carries: small enough to be all overhead.
pub const BODY_BYTES: usize = 64;

#[derive(clap::Args, Debug)]
pub struct SetArgs {
    /// The berth binary to benchmark (a release build).
    #[arg(long)]
    pub berth: PathBuf,
    /// The statically linked agent that warm instances run.
    #[arg(long)]
    pub agent: PathBuf,
    /// A PostgreSQL URL whose user may create databases; each setup gets a
    /// new database, dropped at the end.
    #[arg(long, env = "BERTH_TEST_PG_URL", hide_env_values = true)]
    pub pg_url: String,
    /// s3://BUCKET/PREFIX for the S3 setups; AWS_ENDPOINT_URL and the
    /// credentials come from the environment. Each setup adds its own prefix.
    #[arg(long, env = "BERTH_TEST_S3_URL")]
    pub s3_url: String,
    /// Tasks in the bulk phase, submitted all at once.
    #[arg(long, default_value_t = 2000)]
    pub tasks: usize,
    /// Concurrent clients that submit the bulk phase (and insert the
    /// baseline's jobs).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Tasks in the paced phase.
    #[arg(long, default_value_t = 200)]
    pub paced_tasks: usize,
    /// Submissions per second in the paced phase.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Unmeasured tasks per replica before each setup's phases.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// `--async-concurrency` of every replica; the baseline runs as many
    /// workers as the setup it is set against has slots in all.
    #[arg(long, default_value_t = 32)]
    pub async_concurrency: usize,
    /// Replicas in the multi-replica setup.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Rows each baseline worker claims per statement.
    #[arg(long, default_value_t = 1)]
    pub baseline_batch: i64,
    /// How long a baseline worker sleeps after a claim found nothing (with
    /// ±50% jitter, so the workers do not poll in step).
    #[arg(long, default_value_t = 50)]
    pub baseline_idle_ms: u64,
    /// Size of the large blob, in MiB.
    #[arg(long, default_value_t = 100)]
    pub blob_mb: usize,
    /// Small blobs pushed and pulled one after another per store.
    #[arg(long, default_value_t = 50)]
    pub small_blobs: usize,
    /// Size of each small blob, in KiB.
    #[arg(long, default_value_t = 64)]
    pub small_kb: usize,
    /// Runs of the large blob and of the image, medians reported.
    #[arg(long, default_value_t = 3)]
    pub registry_runs: usize,
    /// Layers of the pushed image, and MiB of random data in each.
    #[arg(long, default_value_t = 5)]
    pub layers: usize,
    #[arg(long, default_value_t = 20)]
    pub layer_mb: usize,
    /// Skip the `docker push`/`docker pull` rows.
    #[arg(long)]
    pub no_docker: bool,
    /// Measure only the queue, or only the registry (a partial section,
    /// for trying things out).
    #[arg(long, value_parser = ["queue", "registry"])]
    pub only: Option<String>,
    /// A short smoke run: every phase, with tiny counts.
    #[arg(long)]
    pub quick: bool,
    /// The source revision benchmarked, shown in the report.
    #[arg(long)]
    pub revision: Option<String>,
}

impl SetArgs {
    pub fn shrink(&mut self) {
        self.tasks = self.tasks.min(200);
        self.paced_tasks = self.paced_tasks.min(20);
        self.warmup = self.warmup.min(20);
        self.blob_mb = self.blob_mb.min(8);
        self.small_blobs = self.small_blobs.min(5);
        self.registry_runs = self.registry_runs.min(1);
        self.layers = self.layers.min(2);
        self.layer_mb = self.layer_mb.min(2);
    }

    /// Slots of every replica together, in a setup of `replicas`.
    pub fn slots(&self, replicas: usize) -> usize {
        self.async_concurrency.max(1) * replicas
    }
}

/// One way of running Berth that the queue is measured on.
#[derive(Debug, Clone)]
pub struct Setup {
    pub label: String,
    pub replicas: usize,
    pub postgres: bool,
    pub s3: bool,
}

pub struct QueueResult {
    pub setup: Setup,
    pub paced: Drain,
    pub bulk: Drain,
}

pub struct BaselineResult {
    pub workers: usize,
    pub paced: Drain,
    pub bulk: Drain,
}

pub struct Results {
    pub pg_version: String,
    pub pg_settings: String,
    pub queue: Vec<QueueResult>,
    pub baselines: Vec<BaselineResult>,
    pub registry: registry::Registry,
    /// As each phase began: the 1-minute load average, and the p50 of a
    /// 4 KiB write and fsync (ms).
    pub loads: Vec<(String, f64, f64)>,
}

pub async fn run(args: &SetArgs) -> Result<String> {
    let berth = server::existing(&args.berth, "the berth binary")?;
    let agent = server::existing(&args.agent, "the agent")?;
    crate::ensure_image(BUSYBOX).await?;
    let machine = Machine::probe();
    progress(format!(
        "{} CPUs ({}), Linux {}, Docker {}",
        machine.cpus, machine.cpu_model, machine.kernel, machine.docker
    ));
    let pg = Databases::new(&args.pg_url);
    let outcome = measure(args, &berth, &agent, &pg).await;
    pg.drop_all().await;
    let results = outcome?;
    Ok(report::render(args, &machine, &results))
}

async fn measure(
    args: &SetArgs,
    berth: &std::path::Path,
    agent: &std::path::Path,
    pg: &Databases,
) -> Result<Results> {
    let mut loads = Vec::new();
    let mut mark = |phase: String| {
        let load = machine::load_average().unwrap_or(f64::NAN);
        loads.push((phase, load, cpu::fsync_probe(20)));
    };
    let (pg_version, pg_settings) = pg.describe().await?;
    let run_id = format!("{:x}", std::process::id());
    let s3_prefix = |name: &str| {
        format!(
            "{}/bench-{run_id}-{name}",
            args.s3_url.trim_end_matches('/')
        )
    };

    let setups = [
        Setup {
            label: "1 node, SQLite, local blobs (the default)".into(),
            replicas: 1,
            postgres: false,
            s3: false,
        },
        Setup {
            label: "1 replica, PostgreSQL, local blobs".into(),
            replicas: 1,
            postgres: true,
            s3: false,
        },
        Setup {
            label: "1 replica, PostgreSQL, S3 blobs".into(),
            replicas: 1,
            postgres: true,
            s3: true,
        },
        Setup {
            label: format!("{} replicas, PostgreSQL, S3 blobs", args.replicas),
            replicas: args.replicas,
            postgres: true,
            s3: true,
        },
    ];

    let mut baselines = Vec::new();
    let mut queue = Vec::new();
    let (do_queue, do_registry) = match args.only.as_deref() {
        Some("queue") => (true, false),
        Some("registry") => (false, true),
        _ => (true, true),
    };
    for (i, setup) in setups.iter().enumerate().filter(|_| do_queue) {
        let workers = args.slots(setup.replicas);
        if !baselines
            .iter()
            .any(|b: &BaselineResult| b.workers == workers)
        {
            mark(format!("baseline, {workers} workers"));
            let url = pg.create(&format!("baseline{workers}")).await?;
            baselines.push(baseline::measure(args, &url, workers).await?);
        }
        mark(setup.label.clone());
        let store = if setup.postgres {
            Some(pg.create(&format!("setup{i}")).await?)
        } else {
            None
        };
        let blobs = setup.s3.then(|| s3_prefix(&format!("setup{i}")));
        queue.push(queue::measure(args, berth, agent, setup, store, blobs).await?);
    }

    let mut registry = registry::Registry::default();
    if do_registry {
        mark("registry".into());
        registry = registry::measure(args, berth, agent, &s3_prefix("registry")).await?;
    }
    mark("end".into());
    Ok(Results {
        pg_version,
        pg_settings,
        queue,
        baselines,
        registry,
        loads,
    })
}
