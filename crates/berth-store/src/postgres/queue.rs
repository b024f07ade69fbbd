//! The async queue of a set: claims that many replicas make at once, and
//! every transition of a running task. Each transition is fenced (it
//! changes the task only while it is still running at the epoch its
//! caller claimed) and closes that claim's attempt row in the same
//! statement. Row locks settle races: a claim skips rows another holds, a
//! finish waits for a cancel holding the row and then finds it cancelled.

use berth_core::{AttemptEnd, Cancel, ErrorCode, TaskId, TaskKind, TaskRecord, TaskStatus};
// Every dynamic statement below is assembled from constant fragments only;
// user values always travel as bind parameters.
use sqlx::types::Uuid;
use sqlx::{AssertSqlSafe, Row};

use super::PgStore;
use crate::policy::{self, CLAIM_WINDOW};
use crate::rows::{self, TASK_COLUMNS, corrupt};
use crate::{Fence, Finish, Lease, Recovered, Result};

/// One statement, so one transaction: rank the oldest [`CLAIM_WINDOW`]
/// queued async rows fairly (each tenant and function's oldest first,
/// oldest first within a round), lock as many as asked in that order,
/// skipping rows other claimers hold (a row another claim took since is
/// re-checked after the lock and dropped), move them to running on the
/// database's clock with the next epoch, and write their attempt rows.
///
/// `ranked` is sorted in its own query so the planner sees its order: it
/// then walks it row by row into the id index and stops at the limit
/// (a few ms on a queue of 200k), where joining first and sorting after
/// hashes the whole table (ten times that).
const CLAIM: &str = "WITH now AS (SELECT berth_now_ms() AS ms), \
    oldest AS ( \
        SELECT id, seq, tenant, function FROM tasks \
        WHERE status = $1 AND kind = $2 AND tenant <> ALL ($3) \
        ORDER BY seq LIMIT $4 \
    ), \
    ranked AS ( \
        SELECT id, seq, row_number() OVER (PARTITION BY tenant, function ORDER BY seq) AS turn \
        FROM oldest ORDER BY turn, seq \
    ), \
    picked AS ( \
        SELECT t.id FROM tasks t JOIN ranked r ON r.id = t.id \
        WHERE t.status = $1 \
        ORDER BY r.turn, r.seq LIMIT $5 \
        FOR UPDATE OF t SKIP LOCKED \
    ), \
    claimed AS ( \
        UPDATE tasks t SET status = $6, attempt = t.attempt + 1, epoch = t.epoch + 1, \
            node = $7, started_at = now.ms, queued_ms = GREATEST(now.ms - t.created_at, 0), \
            lease_expires = now.ms + $8 \
        FROM picked, now WHERE t.id = picked.id \
        RETURNING t.* \
    ), \
    attempts AS ( \
        INSERT INTO task_attempts (task_id, epoch, attempt, node, started_at) \
        SELECT id, epoch, attempt, node, started_at FROM claimed \
    )";

pub(super) async fn claim_queued(
    s: &PgStore,
    lease: &Lease,
    max: u32,
    skip: &[String],
) -> Result<Vec<TaskRecord>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(AssertSqlSafe(format!(
        "{CLAIM} SELECT {TASK_COLUMNS} FROM claimed ORDER BY seq"
    )))
    .bind(TaskStatus::Queued.as_str())
    .bind(TaskKind::Async.as_str())
    .bind(skip)
    .bind(CLAIM_WINDOW)
    .bind(i64::from(max))
    .bind(TaskStatus::Running.as_str())
    .bind(&lease.owner)
    .bind(lease.duration_ms)
    .fetch_all(&s.pool)
    .await?;
    rows.iter().map(rows::task).collect()
}

pub(super) async fn renew_leases(s: &PgStore, lease: &Lease, attempts: &[Fence]) -> Result<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = attempts.iter().map(|f| f.id.0).collect();
    let epochs: Vec<i64> = attempts.iter().map(|f| f.epoch).collect();
    sqlx::query(
        "UPDATE tasks t SET lease_expires = berth_now_ms() + $1 \
         FROM unnest($2::uuid[], $3::bigint[]) AS f(id, epoch) \
         WHERE t.id = f.id AND t.epoch = f.epoch AND t.status = $4 AND t.node = $5",
    )
    .bind(lease.duration_ms)
    .bind(ids)
    .bind(epochs)
    .bind(TaskStatus::Running.as_str())
    .bind(&lease.owner)
    .execute(&s.pool)
    .await?;
    Ok(())
}

/// Wraps an update of one task, conditional on `id = $1 AND epoch = $2
/// AND status = $4`, with the closing of that claim's attempt row as `$3`;
/// the statement returns how many tasks moved (0 or 1). The update's own
/// parameters start at `$5`.
fn fenced(update: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!(
        "WITH moved AS ({update} WHERE id = $1 AND epoch = $2 AND status = $4 \
             RETURNING id, epoch, COALESCE(finished_at, berth_now_ms()) AS at), \
         closed AS (UPDATE task_attempts a SET finished_at = moved.at, ended = $3 \
             FROM moved WHERE a.task_id = moved.id AND a.epoch = moved.epoch \
             AND a.ended IS NULL) \
         SELECT COUNT(*) FROM moved"
    ))
}

/// Puts a running attempt back in the queue; a release also gives its
/// attempt number back.
async fn hand_back(s: &PgStore, fence: Fence, ended: AttemptEnd) -> Result<bool> {
    let moved: i64 = sqlx::query_scalar(fenced(
        "UPDATE tasks SET status = $5, attempt = attempt - $6, started_at = NULL, \
         lease_expires = NULL",
    ))
    .bind(fence.id.0)
    .bind(fence.epoch)
    .bind(ended.as_str())
    .bind(TaskStatus::Running.as_str())
    .bind(TaskStatus::Queued.as_str())
    .bind(i64::from(ended == AttemptEnd::Released))
    .fetch_one(&s.pool)
    .await?;
    Ok(moved == 1)
}

pub(super) async fn release_task(s: &PgStore, fence: Fence) -> Result<bool> {
    hand_back(s, fence, AttemptEnd::Released).await
}

pub(super) async fn requeue_task(s: &PgStore, fence: Fence) -> Result<bool> {
    hand_back(s, fence, AttemptEnd::Lost).await
}

/// Always a durable commit: `durable: false` would cost a transaction
/// block (two more round trips) to say on PostgreSQL.
pub(super) async fn finish_task(s: &PgStore, fence: Fence, f: &Finish) -> Result<bool> {
    let moved: i64 = sqlx::query_scalar(fenced(
        "UPDATE tasks SET status = $5, exit_code = $6, error_code = $7, error_message = $8, \
         finished_at = berth_now_ms(), cpu_ms = $9, peak_memory_bytes = $10, wall_ms = $11, \
         pull_ms = $12, start_ms = $13, run_ms = $14, output_bytes = $15, \
         lease_expires = NULL, queued_ms = COALESCE(queued_ms, 0) + COALESCE($16, 0)",
    ))
    .bind(fence.id.0)
    .bind(fence.epoch)
    .bind(AttemptEnd::Finished.as_str())
    .bind(TaskStatus::Running.as_str())
    .bind(f.outcome.status.as_str())
    .bind(f.outcome.exit_code)
    .bind(f.outcome.error.as_ref().map(|e| e.code.as_str()))
    .bind(f.outcome.error.as_ref().map(|e| e.message.as_str()))
    .bind(f.usage.cpu_ms)
    .bind(f.usage.peak_memory_bytes)
    .bind(f.usage.wall_ms)
    .bind(f.timing.pull_ms)
    .bind(f.timing.start_ms)
    .bind(f.timing.run_ms)
    .bind(f.output_bytes)
    .bind(f.timing.queued_ms)
    .fetch_one(&s.pool)
    .await?;
    Ok(moved == 1)
}

/// Locks the task's row first: a finish racing the cancel waits for it and
/// then finds the task cancelled, or finished first and the cancel reads
/// its end.
pub(super) async fn cancel_task(s: &PgStore, tenant: &str, id: TaskId) -> Result<Option<Cancel>> {
    let mut tx = s.pool.begin().await?;
    let row = sqlx::query(
        "SELECT status, node, epoch FROM tasks WHERE id = $1 AND tenant = $2 FOR UPDATE",
    )
    .bind(id.0)
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let status: TaskStatus = row
        .try_get::<String, _>("status")?
        .parse()
        .map_err(corrupt)?;
    if status.is_terminal() {
        return Ok(Some(Cancel::AlreadyFinished(status)));
    }
    sqlx::query_scalar::<_, i64>(fenced(
        "UPDATE tasks SET status = $5, error_code = $6, error_message = $7, \
         finished_at = berth_now_ms(), lease_expires = NULL",
    ))
    .bind(id.0)
    .bind(row.try_get::<i64, _>("epoch")?)
    .bind(AttemptEnd::Cancelled.as_str())
    .bind(status.as_str())
    .bind(TaskStatus::Cancelled.as_str())
    .bind(ErrorCode::Cancelled.as_str())
    .bind("cancelled by request")
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(match status {
        TaskStatus::Queued => Cancel::Dequeued,
        _ => Cancel::Running {
            lease_owner: row.try_get("node")?,
        },
    }))
}

/// Locks the lapsed and orphaned running rows, skipping any another call
/// holds (a finish in flight wins; a later pass takes what it leaves),
/// decides each by [`policy::recovery`], and moves them all at once.
pub(super) async fn recover(s: &PgStore, dead_owner: Option<&str>) -> Result<Recovered> {
    let mut tx = s.pool.begin().await?;
    let rows = sqlx::query(
        "SELECT id, kind, attempt, max_attempts, epoch, node FROM tasks WHERE status = $1 \
         AND (lease_expires IS NULL OR lease_expires < berth_now_ms() OR node = $2) \
         ORDER BY seq FOR UPDATE SKIP LOCKED",
    )
    .bind(TaskStatus::Running.as_str())
    // NULL when no owner is named: `node = NULL` matches no row, where ""
    // would match an owner that happens to be named "".
    .bind(dead_owner)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(Recovered::default());
    }
    let mut out = Recovered::default();
    let mut moves = Moves::default();
    for row in &rows {
        let id = TaskId(row.try_get("id")?);
        let kind: TaskKind = row.try_get::<String, _>("kind")?.parse().map_err(corrupt)?;
        let node: Option<String> = row.try_get("node")?;
        let verdict = policy::recovery(
            kind,
            row.try_get("attempt")?,
            row.try_get("max_attempts")?,
            node.as_deref(),
            dead_owner,
        );
        let status = if verdict.fail.is_none() {
            out.requeued.push(id);
            TaskStatus::Queued
        } else {
            out.failed.push(id);
            TaskStatus::Failed
        };
        moves.ids.push(id.0);
        moves.epochs.push(row.try_get("epoch")?);
        moves.statuses.push(status.as_str());
        moves
            .codes
            .push(verdict.fail.as_ref().map(|e| e.code.as_str()));
        moves
            .messages
            .push(verdict.fail.as_ref().map(|e| e.message.clone()));
        moves.ended.push(verdict.ended.as_str());
    }
    sqlx::query(
        "WITH v AS ( \
             SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], \
                 $5::text[], $6::text[]) AS v(id, epoch, status, code, message, ended) \
         ), \
         moved AS ( \
             UPDATE tasks t SET status = v.status, error_code = v.code, \
                 error_message = v.message, lease_expires = NULL, \
                 started_at = CASE WHEN v.status = $7 THEN NULL ELSE t.started_at END, \
                 finished_at = CASE WHEN v.status = $7 THEN NULL ELSE berth_now_ms() END \
             FROM v WHERE t.id = v.id AND t.epoch = v.epoch AND t.status = $8 \
             RETURNING t.id, t.epoch, v.ended, berth_now_ms() AS at \
         ) \
         UPDATE task_attempts a SET ended = moved.ended, finished_at = moved.at \
         FROM moved WHERE a.task_id = moved.id AND a.epoch = moved.epoch AND a.ended IS NULL",
    )
    .bind(moves.ids)
    .bind(moves.epochs)
    .bind(moves.statuses)
    .bind(moves.codes)
    .bind(moves.messages)
    .bind(moves.ended)
    .bind(TaskStatus::Queued.as_str())
    .bind(TaskStatus::Running.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(out)
}

/// Recovery's decisions as columns, for one `unnest`.
#[derive(Default)]
struct Moves {
    ids: Vec<Uuid>,
    epochs: Vec<i64>,
    statuses: Vec<&'static str>,
    codes: Vec<Option<&'static str>>,
    messages: Vec<Option<String>>,
    ended: Vec<&'static str>,
}
