//! The baseline: a bare `FOR UPDATE SKIP LOCKED` queue on the same
//! PostgreSQL server. A table of jobs, clients that INSERT one job per
//! statement, and workers in this process that each loop: claim up to
//! `batch` of the oldest unclaimed jobs (stamping `started_at`), then mark
//! them done. Nothing runs between the two: it is the queue alone, the
//! least any PostgreSQL queue can cost on this machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::queue::Drain;
use super::{BODY_BYTES, BaselineResult, SetArgs};
use crate::cpu;
use crate::progress;

const SCHEMA: &[&str] = &[
    "CREATE TABLE jobs ( \
        id bigserial PRIMARY KEY, \
        payload bytea NOT NULL, \
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(), \
        started_at timestamptz, \
        done_at timestamptz)",
    // What a claim walks: the unclaimed jobs in id order.
    "CREATE INDEX jobs_unclaimed ON jobs (id) WHERE started_at IS NULL",
];

const INSERT: &str = "INSERT INTO jobs (payload) VALUES ($1)";

const CLAIM: &str = "UPDATE jobs SET started_at = clock_timestamp() \
    WHERE id IN (SELECT id FROM jobs WHERE started_at IS NULL \
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
    RETURNING id";

const DONE: &str = "UPDATE jobs SET done_at = clock_timestamp() WHERE id = ANY($1)";

/// Enqueued, started and done, in ms since the epoch (µs precision).
const TIMES: &str = "SELECT \
    (extract(epoch FROM created_at) * 1000)::float8, \
    (extract(epoch FROM started_at) * 1000)::float8, \
    (extract(epoch FROM done_at) * 1000)::float8 \
    FROM jobs";

pub async fn measure(args: &SetArgs, url: &str, workers: usize) -> Result<BaselineResult> {
    progress(format!(
        "baseline: SKIP LOCKED loop, {workers} workers claiming {} at a time",
        args.baseline_batch
    ));
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(workers + args.clients + 2)?)
        .connect(url)
        .await
        .context("connecting to the baseline's database")?;
    for statement in SCHEMA {
        sqlx::query(*statement).execute(&pool).await?;
    }
    let queue = Queue {
        pool,
        workers,
        batch: args.baseline_batch.max(1),
        idle: Duration::from_millis(args.baseline_idle_ms),
    };
    // The same unmeasured warm-up as Berth's, so every connection is open.
    queue.run(args.warmup, Submit::Bulk(args.clients)).await?;
    progress(format!(
        "  paced: {} jobs at {}/s",
        args.paced_tasks, args.rate
    ));
    let paced = queue
        .run(args.paced_tasks, Submit::Paced(args.rate))
        .await?;
    progress(format!(
        "  bulk: {} jobs from {} clients at once",
        args.tasks, args.clients
    ));
    let bulk = queue.run(args.tasks, Submit::Bulk(args.clients)).await?;
    progress(format!(
        "  bulk: accepted {:.0}/s, drained {:.0}/s",
        bulk.accepted_per_s(),
        bulk.drained_per_s()
    ));
    queue.pool.close().await;
    Ok(BaselineResult {
        workers,
        paced,
        bulk,
    })
}

#[derive(Clone, Copy)]
enum Submit {
    /// This many clients at once, each inserting its next job as soon as
    /// the last one is committed.
    Bulk(usize),
    /// One job at a time at this rate, each on time.
    Paced(f64),
}

struct Queue {
    pool: PgPool,
    workers: usize,
    batch: i64,
    idle: Duration,
}

impl Queue {
    /// Starts the workers, submits `n` jobs, waits until all are done, and
    /// reads their times back; the table is emptied first.
    async fn run(&self, n: usize, submit: Submit) -> Result<Drain> {
        sqlx::query("TRUNCATE jobs RESTART IDENTITY")
            .execute(&self.pool)
            .await?;
        let before = cpu::snapshot();
        let done = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..self.workers)
            .map(|i| {
                tokio::spawn(work(
                    self.pool.clone(),
                    self.batch,
                    self.idle,
                    i as u64,
                    Arc::clone(&done),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        let submitted = match submit {
            Submit::Bulk(clients) => bulk(&self.pool, n, clients).await,
            Submit::Paced(rate) => paced(&self.pool, n, rate).await,
        };
        let begun = Instant::now();
        while submitted.is_ok() && done.load(Ordering::Acquire) < n {
            // A worker that stopped early failed: its error is below.
            if begun.elapsed() > Duration::from_secs(120) || workers.iter().any(|w| w.is_finished())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::Release);
        for w in workers {
            w.await.context("a worker panicked")??;
        }
        let used = before.until(&cpu::snapshot());
        let (rtts, wall) = submitted?;
        let finished = done.load(Ordering::Acquire);
        ensure!(finished == n, "{finished} of {n} jobs done");
        let rows: Vec<(f64, f64, f64)> = sqlx::query_as(TIMES).fetch_all(&self.pool).await?;
        ensure!(rows.len() == n, "{} rows for {n} jobs", rows.len());
        Ok(Drain {
            submit: rtts,
            submit_wall: wall,
            cpu: used,
            ..Drain::from_times(&rows)
        })
    }
}

/// One worker: claim, mark done, again; a short jittered sleep when the
/// claim found nothing.
async fn work(
    pool: PgPool,
    batch: i64,
    idle: Duration,
    seed: u64,
    done: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while !stop.load(Ordering::Acquire) {
        let ids: Vec<i64> = sqlx::query_scalar(CLAIM)
            .bind(batch)
            .fetch_all(&pool)
            .await?;
        if ids.is_empty() {
            // xorshift64: 0.5 to 1.5 times the idle pause.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let jitter = 0.5 + (rng % 1000) as f64 / 1000.0;
            tokio::time::sleep(idle.mul_f64(jitter)).await;
            continue;
        }
        sqlx::query(DONE).bind(&ids).execute(&pool).await?;
        done.fetch_add(ids.len(), Ordering::AcqRel);
    }
    Ok(())
}

fn payload() -> Vec<u8> {
    (0..BODY_BYTES).map(|i| b'a' + (i % 26) as u8).collect()
}

async fn insert(pool: &PgPool) -> Result<Duration> {
    let begun = Instant::now();
    sqlx::query(INSERT).bind(payload()).execute(pool).await?;
    Ok(begun.elapsed())
}

async fn bulk(pool: &PgPool, n: usize, clients: usize) -> Result<(Vec<Duration>, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let begun = Instant::now();
    let handles: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let (pool, next) = (pool.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    mine.push(insert(&pool).await?);
                }
                anyhow::Ok(mine)
            })
        })
        .collect();
    let mut rtts = Vec::with_capacity(n);
    for h in handles {
        rtts.extend(h.await.context("a client panicked")??);
    }
    Ok((rtts, begun.elapsed()))
}

async fn paced(pool: &PgPool, n: usize, rate: f64) -> Result<(Vec<Duration>, Duration)> {
    let begun = tokio::time::Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(begun + Duration::from_secs_f64(i as f64 / rate)).await;
        let pool = pool.clone();
        handles.push(tokio::spawn(async move { insert(&pool).await }));
    }
    let mut rtts = Vec::with_capacity(n);
    for h in handles {
        rtts.push(h.await.context("an insert panicked")??);
    }
    Ok((rtts, begun.elapsed()))
}
