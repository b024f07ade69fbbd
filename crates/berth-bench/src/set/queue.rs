//! Berth's async queue: tasks submitted over the API, their times read
//! back from their own records, as Berth stamped them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use berth_client::{Call, Client, TaskQuery};
use berth_contract::{FunctionConfig, Task, TaskStatus};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    BODY_BYTES, FUNCTION, INSTANCE_CONCURRENCY, MAX_CONTAINERS, MAX_INSTANCES, MIN_INSTANCES,
    QUOTA_CONCURRENT, QueueResult, SetArgs, Setup,
};
use crate::cpu;
use crate::progress;
use crate::server::{self, BerthServer, Options};

/// Longest a phase may take to drain; past it something is stuck.
const DRAIN_PATIENCE: Duration = Duration::from_secs(300);
/// Task records read back at once.
const READERS: usize = 8;

/// One phase: its tasks' times, on the queue's own clock, and what the
/// submitting clients saw.
#[derive(Debug, Default, Clone)]
pub struct Drain {
    pub tasks: usize,
    /// From the first submission sent until the last one was accepted.
    pub submit_wall: Duration,
    /// Each submission's round trip (202 for Berth, the INSERT for the
    /// baseline).
    pub submit: Vec<Duration>,
    /// Enqueued to started, per task (ms).
    pub waits_ms: Vec<f64>,
    /// Started to finished, per task (ms).
    pub runs_ms: Vec<f64>,
    /// From the first task enqueued until the last one finished (ms).
    pub span_ms: f64,
    /// Most tasks enqueued and not yet started at any one time: near zero
    /// means the submitters, not the queue, set the pace.
    pub peak_queued: usize,
    /// Tasks each replica ran.
    pub per_node: BTreeMap<String, usize>,
    /// The machine's CPU over the phase, by process.
    pub cpu: cpu::Use,
}

impl Drain {
    pub fn drained_per_s(&self) -> f64 {
        self.tasks as f64 / (self.span_ms / 1e3)
    }

    pub fn accepted_per_s(&self) -> f64 {
        self.tasks as f64 / self.submit_wall.as_secs_f64()
    }

    /// From (enqueued, started, finished) times in ms.
    pub fn from_times(times: &[(f64, f64, f64)]) -> Self {
        let first = times.iter().map(|t| t.0).fold(f64::INFINITY, f64::min);
        let last = times.iter().map(|t| t.2).fold(f64::NEG_INFINITY, f64::max);
        Self {
            tasks: times.len(),
            waits_ms: times.iter().map(|t| t.1 - t.0).collect(),
            runs_ms: times.iter().map(|t| t.2 - t.1).collect(),
            span_ms: last - first,
            peak_queued: peak_queued(times),
            ..Self::default()
        }
    }
}

/// The largest number of tasks enqueued and not started at one moment; a
/// start stamped at the same instant as an enqueue counts first.
fn peak_queued(times: &[(f64, f64, f64)]) -> usize {
    let mut events: Vec<(f64, i64)> = Vec::with_capacity(times.len() * 2);
    for &(enqueued, started, _) in times {
        events.push((enqueued, 1));
        events.push((started, -1));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut peak) = (0i64, 0i64);
    for (_, step) in events {
        now += step;
        peak = peak.max(now);
    }
    usize::try_from(peak).unwrap_or(0)
}

/// The replicas of one setup, each with its admin client.
struct Replicas {
    servers: Vec<BerthServer>,
    clients: Vec<Client>,
}

impl Replicas {
    async fn start(
        args: &SetArgs,
        berth: &Path,
        agent: &Path,
        setup: &Setup,
        store: Option<String>,
        blobs: Option<String>,
    ) -> Result<Self> {
        // The replicas of a set share one admin key; one node makes its own.
        let key = if setup.replicas > 1 {
            Some(server::random_key()?)
        } else {
            None
        };
        let options = Options {
            max_containers: MAX_CONTAINERS,
            store,
            blob_store: blobs,
            admin_key: key,
            args: vec![
                "--async-concurrency".into(),
                args.async_concurrency.to_string(),
                "--quota-concurrent-tasks".into(),
                QUOTA_CONCURRENT.to_string(),
            ],
        };
        let mut replicas = Self {
            servers: Vec::new(),
            clients: Vec::new(),
        };
        let function = function()?;
        for i in 0..setup.replicas {
            let server = BerthServer::start_with(berth, agent, &options).await?;
            progress(format!("  replica {} up on {}", i + 1, server.addr));
            // Deployed on the first; the others warm its instances as
            // they start.
            if i == 0 {
                server.deploy(FUNCTION, &function).await?;
            }
            replicas.clients.push(server.admin()?.clone());
            replicas.servers.push(server);
        }
        Ok(replicas)
    }

    /// Warnings and errors the replicas logged: a run with any is worth
    /// a look, whatever its figures.
    fn report_problems(&self) {
        for (i, server) in self.servers.iter().enumerate() {
            let problems = server.log_problems();
            if !problems.is_empty() {
                progress(format!(
                    "  replica {} logged {} warnings or errors; the first:\n{}",
                    i + 1,
                    problems.len(),
                    problems[..problems.len().min(5)].join("\n")
                ));
            }
        }
    }

    fn log_tails(&self) -> String {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("--- replica {} log (tail) ---\n{}", i + 1, s.log_tail(20)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn function() -> Result<FunctionConfig> {
    Ok(FunctionConfig {
        concurrency: INSTANCE_CONCURRENCY,
        min_instances: MIN_INSTANCES,
        max_instances: MAX_INSTANCES,
        ..crate::cat()?
    })
}

pub async fn measure(
    args: &SetArgs,
    berth: &Path,
    agent: &Path,
    setup: &Setup,
    store: Option<String>,
    blobs: Option<String>,
) -> Result<QueueResult> {
    progress(format!("queue: {}", setup.label));
    let replicas = Replicas::start(args, berth, agent, setup, store, blobs).await?;
    let outcome = phases(args, &replicas, setup).await;
    if outcome.is_err() {
        eprintln!("{}", replicas.log_tails());
    }
    replicas.report_problems();
    drop(replicas);
    let (paced, bulk) = outcome?;
    Ok(QueueResult {
        setup: setup.clone(),
        paced,
        bulk,
    })
}

async fn phases(args: &SetArgs, r: &Replicas, setup: &Setup) -> Result<(Drain, Drain)> {
    let warmup = args.warmup * setup.replicas;
    progress(format!("  warm-up: {warmup} tasks, unmeasured"));
    let ids = bulk_submit(&r.clients, warmup, args.clients).await?.0;
    wait_drained(&r.clients[0]).await?;
    let tasks = read_tasks(&r.clients, &ids).await?;
    if let Some(first) = tasks.first() {
        check_output(&r.clients[0], first).await?;
    }

    progress(format!(
        "  paced: {} tasks at {}/s",
        args.paced_tasks, args.rate
    ));
    let before = cpu::snapshot();
    let (ids, submit, wall) = paced_submit(&r.clients, args.paced_tasks, args.rate).await?;
    wait_drained(&r.clients[0]).await?;
    let used = before.until(&cpu::snapshot());
    let mut paced = drain_of(&read_tasks(&r.clients, &ids).await?)?;
    paced.submit = submit;
    paced.submit_wall = wall;
    paced.cpu = used;

    progress(format!(
        "  bulk: {} tasks from {} clients at once",
        args.tasks, args.clients
    ));
    let before = cpu::snapshot();
    let (ids, submit, wall) = bulk_submit(&r.clients, args.tasks, args.clients).await?;
    wait_drained(&r.clients[0]).await?;
    let used = before.until(&cpu::snapshot());
    let mut bulk = drain_of(&read_tasks(&r.clients, &ids).await?)?;
    bulk.submit = submit;
    bulk.submit_wall = wall;
    bulk.cpu = used;
    progress(format!(
        "  bulk: accepted {:.0}/s, drained {:.0}/s",
        bulk.accepted_per_s(),
        bulk.drained_per_s()
    ));
    Ok((paced, bulk))
}

fn body() -> Bytes {
    Bytes::from(
        (0..BODY_BYTES)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}

async fn submit(client: &Client) -> Result<(String, Duration)> {
    let begun = Instant::now();
    let task = client
        .submit(FUNCTION, None, Call::new(body()))
        .await
        .context("submitting a task")?;
    Ok((task.id, begun.elapsed()))
}

type Submitted = (Vec<String>, Vec<Duration>, Duration);

/// `n` submissions by `clients` concurrent clients, spread over the
/// replicas, each sending its next as soon as the last was accepted.
async fn bulk_submit(replicas: &[Client], n: usize, clients: usize) -> Result<Submitted> {
    let next = Arc::new(AtomicUsize::new(0));
    let begun = Instant::now();
    let handles: Vec<_> = (0..clients.max(1))
        .map(|i| {
            let client = replicas[i % replicas.len()].clone();
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    mine.push(submit(&client).await?);
                }
                anyhow::Ok(mine)
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(n);
    let mut rtts = Vec::with_capacity(n);
    for h in handles {
        for (id, rtt) in h.await.context("a client panicked")?? {
            ids.push(id);
            rtts.push(rtt);
        }
    }
    Ok((ids, rtts, begun.elapsed()))
}

/// `n` submissions at a steady `rate`, each on time whatever the previous
/// one is doing, round-robin over the replicas.
async fn paced_submit(replicas: &[Client], n: usize, rate: f64) -> Result<Submitted> {
    let begun = tokio::time::Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(begun + Duration::from_secs_f64(i as f64 / rate)).await;
        let client = replicas[i % replicas.len()].clone();
        handles.push(tokio::spawn(async move { submit(&client).await }));
    }
    let mut ids = Vec::with_capacity(n);
    let mut rtts = Vec::with_capacity(n);
    for h in handles {
        let (id, rtt) = h.await.context("a submission panicked")??;
        ids.push(id);
        rtts.push(rtt);
    }
    Ok((ids, rtts, begun.elapsed()))
}

/// Until no task of the function is queued or running, anywhere in the
/// set (every replica reads the same store).
async fn wait_drained(client: &Client) -> Result<()> {
    let begun = Instant::now();
    loop {
        let mut busy = false;
        for status in [TaskStatus::Queued, TaskStatus::Running] {
            let page = client
                .tasks(&TaskQuery {
                    function: Some(FUNCTION.into()),
                    status: Some(status.as_str().into()),
                    limit: Some(1),
                    cursor: None,
                })
                .await?;
            busy |= !page.tasks.is_empty();
        }
        if !busy {
            return Ok(());
        }
        if begun.elapsed() > DRAIN_PATIENCE {
            bail!("tasks still queued or running after {DRAIN_PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn read_tasks(replicas: &[Client], ids: &[String]) -> Result<Vec<Task>> {
    futures::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| {
            let client = &replicas[i % replicas.len()];
            async move { client.task(id).await.with_context(|| format!("task {id}")) }
        })
        .buffered(READERS)
        .try_collect()
        .await
}

/// The function must really have run: a fast wrong answer would make a
/// fine benchmark.
async fn check_output(client: &Client, task: &Task) -> Result<()> {
    let out = client.output(&task.id).await?.bytes().await?;
    ensure!(
        out == body(),
        "task {} put out {} bytes that differ from its input",
        task.id,
        out.len()
    );
    Ok(())
}

fn drain_of(tasks: &[Task]) -> Result<Drain> {
    let mut times = Vec::with_capacity(tasks.len());
    let mut per_node = BTreeMap::new();
    for t in tasks {
        if t.status != TaskStatus::Succeeded {
            bail!(
                "task {} ended {}: {:?}",
                t.id,
                t.status.as_str(),
                t.error.as_ref().map(|e| &e.message)
            );
        }
        let started = t.started_at.as_deref().context("no started_at")?;
        let finished = t.finished_at.as_deref().context("no finished_at")?;
        times.push((ms(&t.created_at)?, ms(started)?, ms(finished)?));
        if let Some(node) = &t.node {
            *per_node.entry(node.clone()).or_insert(0) += 1;
        }
    }
    Ok(Drain {
        per_node,
        ..Drain::from_times(&times)
    })
}

/// Milliseconds since the epoch of an RFC 3339 time.
fn ms(rfc3339: &str) -> Result<f64> {
    let t =
        OffsetDateTime::parse(rfc3339, &Rfc3339).with_context(|| format!("time {rfc3339:?}"))?;
    Ok(t.unix_timestamp_nanos() as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog() {
        // Two waiting together, then one that starts as the next comes in.
        let times = [(0.0, 5.0, 6.0), (1.0, 7.0, 8.0), (7.0, 9.0, 9.5)];
        let d = Drain::from_times(&times);
        assert_eq!(d.peak_queued, 2);
        assert_eq!(d.span_ms, 9.5);
        assert_eq!(d.waits_ms, vec![5.0, 6.0, 2.0]);
        assert_eq!(peak_queued(&[]), 0);
    }
}
