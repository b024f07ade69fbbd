//! The async queue: fair claims, and every transition of a running task
//! (renew, release, requeue, finish, cancel, recover). Each transition is
//! fenced: it changes the task only if it is still running at the epoch
//! its caller claimed, and closes that claim's attempt row in the same
//! write transaction.

use berth_core::{AttemptEnd, Cancel, ErrorCode, TaskId, TaskKind, TaskRecord, TaskStatus, now_ms};
// Every dynamic statement below is assembled from constant fragments only;
// user values always travel as bind parameters.
use sqlx::{AssertSqlSafe, Row, SqliteConnection};

use super::SqliteStore;
use crate::policy::{self, CLAIM_WINDOW};
use crate::rows::{self, TASK_COLUMNS, corrupt};
use crate::{Fence, Finish, Lease, Recovered, Result};

/// Fairness: among the oldest [`CLAIM_WINDOW`] queued async tasks (of the
/// tenants not skipped), each tenant and function's oldest goes first,
/// then each one's second, and so on; oldest first within a round.
const CLAIM: &str = "UPDATE tasks SET status = ?1, attempt = attempt + 1, epoch = epoch + 1, \
    node = ?2, started_at = ?3, queued_ms = ?3 - created_at, lease_expires = ?3 + ?4 \
    WHERE id IN ( \
        SELECT id FROM ( \
            SELECT id, seq, \
                row_number() OVER (PARTITION BY tenant, function ORDER BY seq) AS turn \
            FROM ( \
                SELECT id, seq, tenant, function FROM tasks \
                WHERE status = ?5 AND kind = ?6 \
                    AND tenant NOT IN (SELECT value FROM json_each(?7)) \
                ORDER BY seq LIMIT ?8 \
            ) \
        ) \
        ORDER BY turn, seq LIMIT ?9 \
    )";

pub(super) async fn claim_queued(
    s: &SqliteStore,
    lease: &Lease,
    max: u32,
    skip: &[String],
) -> Result<Vec<TaskRecord>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let mut tx = s.write_tx(true).await?;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "{CLAIM} RETURNING seq, {TASK_COLUMNS}"
    )))
    .bind(TaskStatus::Running.as_str())
    .bind(&lease.owner)
    .bind(now)
    .bind(lease.duration_ms)
    .bind(TaskStatus::Queued.as_str())
    .bind(TaskKind::Async.as_str())
    .bind(serde_json::to_string(skip).map_err(corrupt)?)
    .bind(CLAIM_WINDOW)
    .bind(i64::from(max))
    .fetch_all(&mut *tx)
    .await?;
    let mut claimed = rows
        .iter()
        .map(|r| Ok((r.try_get::<i64, _>("seq")?, rows::task(r)?)))
        .collect::<Result<Vec<_>>>()?;
    let ids: Vec<String> = claimed.iter().map(|(_, t)| t.id.to_string()).collect();
    sqlx::query(
        "INSERT INTO task_attempts (task_id, epoch, attempt, node, started_at) \
         SELECT id, epoch, attempt, node, started_at FROM tasks \
         WHERE id IN (SELECT value FROM json_each(?))",
    )
    .bind(serde_json::to_string(&ids).map_err(corrupt)?)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    // RETURNING gives no order guarantee; callers start the oldest first.
    claimed.sort_by_key(|(seq, _)| *seq);
    Ok(claimed.into_iter().map(|(_, t)| t).collect())
}

pub(super) async fn renew_leases(s: &SqliteStore, lease: &Lease, attempts: &[Fence]) -> Result<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let fences: Vec<(String, i64)> = attempts
        .iter()
        .map(|f| (f.id.to_string(), f.epoch))
        .collect();
    sqlx::query(
        "UPDATE tasks SET lease_expires = ?1 WHERE status = ?2 AND node = ?3 \
         AND (id, epoch) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?4))",
    )
    .bind(now_ms() + lease.duration_ms)
    .bind(TaskStatus::Running.as_str())
    .bind(&lease.owner)
    .bind(serde_json::to_string(&fences).map_err(corrupt)?)
    .execute(&s.pool)
    .await?;
    Ok(())
}

/// Closes the attempt row of the claim `fence` names. Sync calls have
/// none, and then this changes nothing.
async fn close_attempt(
    db: &mut SqliteConnection,
    fence: Fence,
    ended: AttemptEnd,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE task_attempts SET finished_at = ?, ended = ? \
         WHERE task_id = ? AND epoch = ? AND ended IS NULL",
    )
    .bind(now)
    .bind(ended.as_str())
    .bind(fence.id.to_string())
    .bind(fence.epoch)
    .execute(db)
    .await?;
    Ok(())
}

/// Puts a running attempt back in the queue; a release also gives its
/// attempt number back.
async fn hand_back(s: &SqliteStore, fence: Fence, ended: AttemptEnd) -> Result<bool> {
    let given_back = i64::from(ended == AttemptEnd::Released);
    let mut tx = s.write_tx(true).await?;
    let moved = sqlx::query(
        "UPDATE tasks SET status = ?, attempt = attempt - ?, started_at = NULL, \
         lease_expires = NULL WHERE id = ? AND epoch = ? AND status = ?",
    )
    .bind(TaskStatus::Queued.as_str())
    .bind(given_back)
    .bind(fence.id.to_string())
    .bind(fence.epoch)
    .bind(TaskStatus::Running.as_str())
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        return Ok(false);
    }
    close_attempt(&mut tx, fence, ended, now_ms()).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn release_task(s: &SqliteStore, fence: Fence) -> Result<bool> {
    hand_back(s, fence, AttemptEnd::Released).await
}

pub(super) async fn requeue_task(s: &SqliteStore, fence: Fence) -> Result<bool> {
    hand_back(s, fence, AttemptEnd::Lost).await
}

pub(super) async fn finish_task(s: &SqliteStore, fence: Fence, f: &Finish) -> Result<bool> {
    let now = now_ms();
    let mut tx = s.write_tx(f.durable).await?;
    let done = sqlx::query(
        "UPDATE tasks SET status = ?, exit_code = ?, error_code = ?, error_message = ?, \
         finished_at = ?, cpu_ms = ?, peak_memory_bytes = ?, wall_ms = ?, pull_ms = ?, \
         start_ms = ?, run_ms = ?, output_bytes = ?, lease_expires = NULL, \
         queued_ms = COALESCE(queued_ms, 0) + COALESCE(?, 0) \
         WHERE id = ? AND epoch = ? AND status = ?",
    )
    .bind(f.outcome.status.as_str())
    .bind(f.outcome.exit_code)
    .bind(f.outcome.error.as_ref().map(|e| e.code.as_str()))
    .bind(f.outcome.error.as_ref().map(|e| e.message.as_str()))
    .bind(now)
    .bind(f.usage.cpu_ms)
    .bind(f.usage.peak_memory_bytes)
    .bind(f.usage.wall_ms)
    .bind(f.timing.pull_ms)
    .bind(f.timing.start_ms)
    .bind(f.timing.run_ms)
    .bind(f.output_bytes)
    .bind(f.timing.queued_ms)
    .bind(fence.id.to_string())
    .bind(fence.epoch)
    .bind(TaskStatus::Running.as_str())
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    close_attempt(&mut tx, fence, AttemptEnd::Finished, now).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn cancel_task(
    s: &SqliteStore,
    tenant: &str,
    id: TaskId,
) -> Result<Option<Cancel>> {
    let mut tx = s.write_tx(true).await?;
    let row = sqlx::query("SELECT status, node, epoch FROM tasks WHERE id = ? AND tenant = ?")
        .bind(id.to_string())
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let status: String = row.try_get("status")?;
    let status: TaskStatus = status.parse().map_err(corrupt)?;
    if status.is_terminal() {
        return Ok(Some(Cancel::AlreadyFinished(status)));
    }
    let now = now_ms();
    sqlx::query(
        "UPDATE tasks SET status = ?, error_code = ?, error_message = ?, finished_at = ?, \
         lease_expires = NULL WHERE id = ?",
    )
    .bind(TaskStatus::Cancelled.as_str())
    .bind(ErrorCode::Cancelled.as_str())
    .bind("cancelled by request")
    .bind(now)
    .bind(id.to_string())
    .execute(&mut *tx)
    .await?;
    if status == TaskStatus::Queued {
        tx.commit().await?;
        return Ok(Some(Cancel::Dequeued));
    }
    let fence = Fence {
        id,
        epoch: row.try_get("epoch")?,
    };
    close_attempt(&mut tx, fence, AttemptEnd::Cancelled, now).await?;
    tx.commit().await?;
    Ok(Some(Cancel::Running {
        lease_owner: row.try_get("node")?,
    }))
}

pub(super) async fn recover(s: &SqliteStore, dead_owner: Option<&str>) -> Result<Recovered> {
    let now = now_ms();
    let mut tx = s.write_tx(true).await?;
    let rows = sqlx::query(
        "SELECT id, kind, attempt, max_attempts, epoch, node FROM tasks WHERE status = ? \
         AND (lease_expires IS NULL OR lease_expires < ? OR node = ?) ORDER BY seq",
    )
    .bind(TaskStatus::Running.as_str())
    .bind(now)
    // NULL when no owner is named: `node = NULL` matches no row, where ""
    // would match an owner that happens to be named "".
    .bind(dead_owner)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Recovered::default();
    for row in rows {
        let fence = Fence {
            id: row.try_get::<String, _>("id")?.parse().map_err(corrupt)?,
            epoch: row.try_get("epoch")?,
        };
        let kind: TaskKind = row.try_get::<String, _>("kind")?.parse().map_err(corrupt)?;
        let node: Option<String> = row.try_get("node")?;
        let verdict = policy::recovery(
            kind,
            row.try_get("attempt")?,
            row.try_get("max_attempts")?,
            node.as_deref(),
            dead_owner,
        );
        let requeue = verdict.fail.is_none();
        let (status, finished_at) = if requeue {
            out.requeued.push(fence.id);
            (TaskStatus::Queued, None)
        } else {
            out.failed.push(fence.id);
            (TaskStatus::Failed, Some(now))
        };
        // A task back in the queue has not started; a failed one keeps
        // when its last attempt did.
        sqlx::query(
            "UPDATE tasks SET status = ?, error_code = ?, error_message = ?, finished_at = ?, \
             started_at = CASE WHEN ? THEN NULL ELSE started_at END, lease_expires = NULL \
             WHERE id = ? AND epoch = ? AND status = ?",
        )
        .bind(status.as_str())
        .bind(verdict.fail.as_ref().map(|e| e.code.as_str()))
        .bind(verdict.fail.as_ref().map(|e| e.message.as_str()))
        .bind(finished_at)
        .bind(requeue)
        .bind(fence.id.to_string())
        .bind(fence.epoch)
        .bind(TaskStatus::Running.as_str())
        .execute(&mut *tx)
        .await?;
        close_attempt(&mut tx, fence, verdict.ended, now).await?;
    }
    tx.commit().await?;
    Ok(out)
}
