//! `berth-bench fleet`: what placing calls on executor nodes costs, each
//! figure against a baseline measured in the same run.
//!
//! - The hop: warm sync calls through a replica that runs no containers
//!   of its own and an executor node on loopback (B), against the
//!   all-in-one server on SQLite with its local executor (A), and against
//!   the same replica on PostgreSQL with its local executor (C). B − C is
//!   the hop alone; C − A is what the database adds.
//! - Throughput: a closed loop through one replica against the same load
//!   dealt over two, with the same two executor nodes behind both.

mod node;
mod report;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use self::node::ExecutorNode;
use crate::client::{self, Conn, Series, Target};
use crate::cpu;
use crate::machine::{self, Machine};
use crate::pg::Databases;
use crate::server::{self, BerthServer, Options};
use crate::{BUSYBOX, ECHO_HTTP, WARM_EXEC, WARM_HTTP, progress};

/// Per server and per node; far above what the runs need, so capacity
/// never shapes a figure.
pub const MAX_CONTAINERS: usize = 32;
/// The goal for the hop, B − C at p50 (ms).
pub const GOAL_HOP_P50_MS: f64 = 0.5;
/// How long a replica may take to see a function another replica deployed.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct FleetArgs {
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
    /// Measured sequential calls per setup and mode, over all rounds.
    #[arg(long, default_value_t = 2000)]
    pub samples: usize,
    /// Unmeasured calls before the first round's series; later rounds,
    /// on instances already warm, take a tenth of it.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Rounds the sequential calls are split into, the setups taking turns
    /// in each, so that a change in the machine's load falls on all alike.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Calls per row of the throughput runs.
    #[arg(long, default_value_t = 6000)]
    pub throughput_requests: usize,
    /// Concurrency levels of the throughput runs (workers, each with its
    /// own connection).
    #[arg(long, value_delimiter = ',', default_values_t = [4, 16])]
    pub levels: Vec<usize>,
    /// A short smoke run: every phase, with tiny counts.
    #[arg(long)]
    pub quick: bool,
    /// The source revision benchmarked, shown in the report.
    #[arg(long)]
    pub revision: Option<String>,
}

impl FleetArgs {
    pub fn shrink(&mut self) {
        self.samples = self.samples.min(200);
        self.warmup = self.warmup.min(20);
        self.rounds = self.rounds.min(2);
        self.throughput_requests = self.throughput_requests.min(400);
    }

    fn rounds(&self) -> usize {
        self.rounds.clamp(1, self.samples.max(1))
    }
}

/// One measured series and what the berth processes, and the machine,
/// spent on it.
#[derive(Default)]
pub struct Measured {
    /// Its `server_cpu` is the replicas'.
    pub series: Series,
    pub node_cpu: Option<Duration>,
    pub usage: cpu::Use,
}

impl Measured {
    fn absorb(&mut self, later: Measured) {
        self.node_cpu = if self.series.latencies.is_empty() {
            later.node_cpu
        } else {
            self.node_cpu.zip(later.node_cpu).map(|(a, b)| a + b)
        };
        self.usage.absorb(&later.usage);
        self.series.absorb(later.series);
    }
}

/// One way a call can go, in both modes.
pub struct Route {
    pub exec: Measured,
    pub http: Measured,
}

pub struct Level {
    pub workers: usize,
    pub one: Measured,
    pub two: Measured,
}

pub struct Results {
    pub pg_version: String,
    pub pg_settings: String,
    /// A: one server on SQLite with its own executor.
    pub all_in_one: Route,
    /// C: one replica on PostgreSQL with its own executor.
    pub postgres: Route,
    /// B: one replica on PostgreSQL, its calls run on an executor node.
    pub remote: Route,
    pub levels: Vec<Level>,
    /// The 1-minute load average as each phase began, and at the end.
    pub loads: Vec<(String, f64)>,
}

pub async fn run(args: &FleetArgs) -> Result<String> {
    let berth = server::existing(&args.berth, "the berth binary")?;
    let agent = server::existing(&args.agent, "the agent")?;
    for image in [BUSYBOX, ECHO_HTTP] {
        crate::ensure_image(image).await?;
    }
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

async fn measure(args: &FleetArgs, berth: &Path, agent: &Path, pg: &Databases) -> Result<Results> {
    let mut loads = Vec::new();
    let mut mark = |phase: &str| {
        loads.push((
            phase.to_owned(),
            machine::load_average().unwrap_or(f64::NAN),
        ));
    };
    let (pg_version, pg_settings) = pg.describe().await?;

    mark("warm path");
    let [all_in_one, postgres, remote] = warm_path(args, berth, agent, pg).await?;
    mark("throughput");
    let levels = throughput(args, berth, agent, pg).await?;
    mark("end");
    Ok(Results {
        pg_version,
        pg_settings,
        all_in_one,
        postgres,
        remote,
        levels,
        loads,
    })
}

/// A setup's processes. The node is declared first so that it is
/// dropped first, while the replica it reports to still answers.
struct Setup {
    name: &'static str,
    nodes: Vec<ExecutorNode>,
    replicas: Vec<BerthServer>,
}

impl Setup {
    fn procs(&self) -> Procs {
        Procs {
            replicas: self.replicas.iter().filter_map(BerthServer::pid).collect(),
            nodes: self.nodes.iter().filter_map(ExecutorNode::pid).collect(),
        }
    }

    /// Warnings and errors its processes logged: a run with any is worth
    /// a look, whatever its figures.
    fn report_problems(&self) {
        let logs = self
            .replicas
            .iter()
            .map(|r| ("replica", r.log_problems()))
            .chain(self.nodes.iter().map(|n| ("executor", n.log_problems())));
        for (what, problems) in logs {
            if !problems.is_empty() {
                progress(format!(
                    "  {}: the {what} logged {} warnings or errors; the first:\n{}",
                    self.name,
                    problems.len(),
                    problems[..problems.len().min(5)].join("\n")
                ));
            }
        }
    }

    fn log_tails(&self) -> String {
        let replicas = self.replicas.iter().map(|r| {
            format!(
                "--- {}: replica log (tail) ---\n{}",
                self.name,
                r.log_tail(20)
            )
        });
        let nodes = self.nodes.iter().map(|n| {
            format!(
                "--- {}: executor log (tail) ---\n{}",
                self.name,
                n.log_tail(20)
            )
        });
        replicas.chain(nodes).collect::<Vec<_>>().join("\n")
    }
}

/// The pids whose CPU time a figure counts.
struct Procs {
    replicas: Vec<u32>,
    nodes: Vec<u32>,
}

fn cpu_of(pids: &[u32]) -> Option<Duration> {
    pids.iter().map(|&pid| server::process_cpu(pid)).sum()
}

/// The CPU probe of one series: it reads the replicas' time for the
/// series itself and notes the nodes' and the machine's at the same two
/// moments, outside the timed part.
struct Probe<'a> {
    procs: &'a Procs,
    marks: RefCell<Vec<(Option<Duration>, cpu::Snapshot)>>,
}

impl<'a> Probe<'a> {
    fn new(procs: &'a Procs) -> Self {
        Self {
            procs,
            marks: RefCell::new(Vec::new()),
        }
    }

    fn read(&self) -> Option<Duration> {
        let nodes = (!self.procs.nodes.is_empty())
            .then(|| cpu_of(&self.procs.nodes))
            .flatten();
        self.marks.borrow_mut().push((nodes, cpu::snapshot()));
        cpu_of(&self.procs.replicas)
    }

    fn finish(self, series: Series) -> Result<Measured> {
        let marks = self.marks.into_inner();
        let [(nodes_before, before), (nodes_after, after)] = &marks[..] else {
            bail!("the CPU probe was read {} times, not twice", marks.len());
        };
        Ok(Measured {
            series,
            node_cpu: nodes_after.zip(*nodes_before).map(|(a, b)| a - b),
            usage: before.until(after),
        })
    }
}

async fn sequential(target: &Target, procs: &Procs, warmup: usize, n: usize) -> Result<Measured> {
    let probe = Probe::new(procs);
    let series =
        client::sequential(target, crate::small_body(), warmup, n, &|| probe.read()).await?;
    probe.finish(series)
}

async fn closed_loop(
    targets: &[Target],
    procs: &Procs,
    workers: usize,
    total: usize,
    warmup_each: usize,
) -> Result<Measured> {
    let probe = Probe::new(procs);
    let series = client::closed_loop_over(
        targets,
        crate::small_body(),
        workers,
        total,
        warmup_each,
        &|| probe.read(),
    )
    .await?;
    probe.finish(series)
}

fn pg_options(store: String, key: &str, extra: &[&str]) -> Options {
    Options {
        max_containers: MAX_CONTAINERS,
        store: Some(store),
        admin_key: Some(key.to_owned()),
        args: extra.iter().map(|&a| a.to_owned()).collect(),
        ..Options::default()
    }
}

/// A, C and B, all up at once and measured in turns.
async fn warm_path(
    args: &FleetArgs,
    berth: &Path,
    agent: &Path,
    pg: &Databases,
) -> Result<[Route; 3]> {
    let key = server::random_key()?;
    let a = BerthServer::start(berth, agent, MAX_CONTAINERS).await?;
    progress(format!("A, all-in-one on SQLite: up on {}", a.addr));
    let options = pg_options(pg.create("postgres").await?, &key, &[]);
    let c = BerthServer::start_with(berth, agent, &options).await?;
    progress(format!("C, one replica on PostgreSQL: up on {}", c.addr));
    let options = pg_options(pg.create("remote").await?, &key, &["--no-local-executor"]);
    let b = BerthServer::start_with(berth, agent, &options).await?;
    let node = ExecutorNode::join(berth, agent, &b, MAX_CONTAINERS).await?;
    progress(format!(
        "B, a replica on PostgreSQL without containers: up on {}, its executor {} on {}",
        b.addr, node.id, node.url
    ));
    node.wait_active(&b).await?;
    let setups = [
        Setup {
            name: "A",
            nodes: Vec::new(),
            replicas: vec![a],
        },
        Setup {
            name: "C",
            nodes: Vec::new(),
            replicas: vec![c],
        },
        Setup {
            name: "B",
            nodes: vec![node],
            replicas: vec![b],
        },
    ];
    let outcome = warm_rounds(args, &setups).await;
    for s in &setups {
        s.report_problems();
    }
    if outcome.is_err() {
        for s in &setups {
            eprintln!("{}", s.log_tails());
        }
    }
    outcome
}

async fn warm_rounds(args: &FleetArgs, setups: &[Setup; 3]) -> Result<[Route; 3]> {
    for s in setups {
        crate::deploy_warm(&s.replicas[0]).await?;
    }
    let targets = setups
        .iter()
        .map(|s| {
            let r = &s.replicas[0];
            Ok([
                crate::invoke_target(r, WARM_EXEC, "")?,
                crate::invoke_target(r, WARM_HTTP, "")?,
            ])
        })
        .collect::<Result<Vec<_>>>()?;
    let procs: Vec<Procs> = setups.iter().map(Setup::procs).collect();
    let mut routes: [[Measured; 2]; 3] = Default::default();
    let rounds = args.rounds();
    let per_round = args.samples.div_ceil(rounds);
    for round in 0..rounds {
        let n = per_round.min(args.samples.saturating_sub(per_round * round));
        let warmup = if round == 0 {
            args.warmup
        } else {
            (args.warmup / 10).max(5)
        };
        progress(format!(
            "warm path: round {} of {rounds}, {n} sequential calls per setup and mode",
            round + 1
        ));
        for i in (0..3).map(|i| (i + round) % 3) {
            for (mode, target) in targets[i].iter().enumerate() {
                let m = sequential(target, &procs[i], warmup, n).await?;
                routes[i][mode].absorb(m);
            }
        }
    }
    Ok(routes.map(|[exec, http]| Route { exec, http }))
}

/// Two replicas on one database and two executor nodes, one joined
/// through each; the same processes serve both rows of a level.
async fn throughput(
    args: &FleetArgs,
    berth: &Path,
    agent: &Path,
    pg: &Databases,
) -> Result<Vec<Level>> {
    let key = server::random_key()?;
    let store = pg.create("throughput").await?;
    let mut setup = Setup {
        name: "throughput",
        nodes: Vec::new(),
        replicas: Vec::new(),
    };
    for i in 0..2 {
        let options = pg_options(store.clone(), &key, &["--no-local-executor"]);
        let replica = BerthServer::start_with(berth, agent, &options).await?;
        progress(format!(
            "throughput: replica {} up on {}",
            i + 1,
            replica.addr
        ));
        setup.replicas.push(replica);
    }
    for replica in &setup.replicas {
        let node = ExecutorNode::join(berth, agent, replica, MAX_CONTAINERS).await?;
        progress(format!("throughput: executor {} on {}", node.id, node.url));
        setup.nodes.push(node);
    }
    for node in &setup.nodes {
        node.wait_active(&setup.replicas[0]).await?;
    }
    let outcome = throughput_levels(args, &setup).await;
    setup.report_problems();
    if outcome.is_err() {
        eprintln!("{}", setup.log_tails());
    }
    outcome
}

async fn throughput_levels(args: &FleetArgs, setup: &Setup) -> Result<Vec<Level>> {
    // Deployed through the first replica; the second reads it from the
    // database.
    crate::deploy_warm(&setup.replicas[0]).await?;
    let targets = setup
        .replicas
        .iter()
        .map(|r| crate::invoke_target(r, WARM_HTTP, ""))
        .collect::<Result<Vec<_>>>()?;
    for t in &targets {
        wait_callable(t).await?;
    }
    let procs = setup.procs();
    let total = args.throughput_requests;
    let (first, second) = (total / 2, total - total / 2);
    let mut levels = Vec::new();
    for &workers in &args.levels {
        let workers = workers.max(1);
        let warm_each = (args.warmup / workers).max(5);
        progress(format!(
            "throughput: {workers} workers, {total} calls through one replica, then two"
        ));
        // Halves in the order one, two, two, one: a drift in the machine's
        // load falls on both alike.
        let mut one = closed_loop(&targets[..1], &procs, workers, first, warm_each).await?;
        let mut two = closed_loop(&targets, &procs, workers, first, warm_each).await?;
        two.absorb(closed_loop(&targets, &procs, workers, second, warm_each).await?);
        one.absorb(closed_loop(&targets[..1], &procs, workers, second, warm_each).await?);
        levels.push(Level { workers, one, two });
    }
    Ok(levels)
}

/// Until a call through `target` is answered: a replica learns of a
/// function deployed through another from the database.
async fn wait_callable(target: &Target) -> Result<()> {
    let begun = Instant::now();
    let mut conn = Conn::open(target.addr).await?;
    loop {
        match conn.echo(target, &crate::small_body()).await {
            Ok(_) => return Ok(()),
            Err(e) if begun.elapsed() > PATIENCE => {
                bail!("{} never answered: {e:#}", target.path)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
