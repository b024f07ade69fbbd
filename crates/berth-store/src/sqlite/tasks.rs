//! Task records: inserting (queued, running, idempotent), reading,
//! listing, counting, their attempts, and retention.

use berth_core::{
    AttemptRecord, TaskFilter, TaskId, TaskKind, TaskPage, TaskRecord, TaskStatus, now_ms,
};
// Every dynamic statement below is assembled from constant fragments only;
// user values always travel as bind parameters.
use sqlx::{AssertSqlSafe, Row, Sqlite};

use super::SqliteStore;
use crate::policy;
use crate::rows::{self, TASK_COLUMNS, corrupt, is_unique_violation};
use crate::{Idempotent, Lease, Result, StoreError};

/// Writes a task as given; a running one's lease lasts until
/// `lease_expires`.
async fn insert_row<'e>(
    db: impl sqlx::Executor<'e, Database = Sqlite>,
    t: &TaskRecord,
    lease_expires: Option<i64>,
    idempotency: Option<(&str, &str)>,
) -> std::result::Result<(), sqlx::Error> {
    let request = serde_json::to_string(&t.request).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query(
        "INSERT INTO tasks (id, tenant, function, version, kind, status, attempt, \
         max_attempts, epoch, node, created_at, started_at, queued_ms, input_bytes, request, \
         lease_expires, idempotency_key, request_digest) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(t.id.to_string())
    .bind(&t.tenant)
    .bind(&t.function)
    .bind(t.version)
    .bind(t.kind.as_str())
    .bind(t.status.as_str())
    .bind(t.attempt)
    .bind(t.max_attempts)
    .bind(t.epoch)
    .bind(t.node.as_deref())
    .bind(t.created_at)
    .bind(t.started_at)
    .bind(t.timing.queued_ms)
    .bind(t.input_bytes)
    .bind(request)
    .bind(lease_expires)
    .bind(idempotency.map(|(k, _)| k))
    .bind(idempotency.map(|(_, d)| d))
    .execute(db)
    .await?;
    Ok(())
}

pub(super) async fn insert_task(s: &SqliteStore, t: &TaskRecord) -> Result<()> {
    insert_row(s.pool_for(t.kind == TaskKind::Async), t, None, None).await?;
    Ok(())
}

/// The count and the insert share one write transaction, and SQLite has
/// one writer at a time: no other call can slip in between.
pub(super) async fn insert_running(
    s: &SqliteStore,
    task: &TaskRecord,
    lease: &Lease,
    max_running: u32,
) -> Result<bool> {
    let t = policy::running_call(task, lease);
    let mut tx = s.write_tx(false).await?;
    let running: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE tenant = ? AND status = ?")
            .bind(&t.tenant)
            .bind(TaskStatus::Running.as_str())
            .fetch_one(&mut *tx)
            .await?;
    if running >= i64::from(max_running) {
        return Ok(false);
    }
    insert_row(&mut *tx, &t, Some(now_ms() + lease.duration_ms), None).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn insert_task_idempotent(
    s: &SqliteStore,
    task: &TaskRecord,
    key: &str,
    digest: &str,
) -> Result<Idempotent> {
    // The unique index decides races between two submissions with the
    // same key; the loser reads what the winner recorded.
    for _ in 0..3 {
        let existing = sqlx::query(AssertSqlSafe(format!(
            "SELECT request_digest, {TASK_COLUMNS} FROM tasks \
             WHERE tenant = ? AND idempotency_key = ?"
        )))
        .bind(&task.tenant)
        .bind(key)
        .fetch_optional(&s.pool)
        .await?;
        if let Some(row) = existing {
            let stored: Option<String> = row.try_get("request_digest")?;
            return Ok(Idempotent::Existing {
                task: Box::new(rows::task(&row)?),
                same_request: stored.as_deref() == Some(digest),
            });
        }
        match insert_row(&s.pool, task, None, Some((key, digest))).await {
            Ok(()) => return Ok(Idempotent::Inserted),
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Corrupt(format!(
        "idempotency key {key:?} neither inserted nor found"
    )))
}

pub(super) async fn idempotency_key_used(s: &SqliteStore, tenant: &str, key: &str) -> Result<bool> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM tasks WHERE tenant = ? AND idempotency_key = ?")
            .bind(tenant)
            .bind(key)
            .fetch_optional(&s.pool)
            .await?;
    Ok(found.is_some())
}

pub(super) async fn get_task(
    s: &SqliteStore,
    tenant: &str,
    id: TaskId,
) -> Result<Option<TaskRecord>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ? AND tenant = ?"
    )))
    .bind(id.to_string())
    .bind(tenant)
    .fetch_optional(&s.pool)
    .await?;
    row.as_ref().map(rows::task).transpose()
}

pub(super) async fn list_attempts(
    s: &SqliteStore,
    tenant: &str,
    id: TaskId,
) -> Result<Vec<AttemptRecord>> {
    let rows = sqlx::query(
        "SELECT a.attempt, a.epoch, a.node, a.started_at, a.finished_at, a.ended \
         FROM task_attempts a JOIN tasks t ON t.id = a.task_id \
         WHERE t.id = ? AND t.tenant = ? ORDER BY a.epoch",
    )
    .bind(id.to_string())
    .bind(tenant)
    .fetch_all(&s.pool)
    .await?;
    rows.iter().map(rows::attempt).collect()
}

pub(super) async fn list_tasks(s: &SqliteStore, tenant: &str, f: &TaskFilter) -> Result<TaskPage> {
    let mut sql = format!("SELECT seq, {TASK_COLUMNS} FROM tasks WHERE tenant = ?");
    if f.function.is_some() {
        sql.push_str(" AND function = ?");
    }
    if f.status.is_some() {
        sql.push_str(" AND status = ?");
    }
    if f.before.is_some() {
        sql.push_str(" AND seq < ?");
    }
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(tenant);
    if let Some(function) = &f.function {
        q = q.bind(function);
    }
    if let Some(status) = f.status {
        q = q.bind(status.as_str());
    }
    if let Some(before) = f.before {
        q = q.bind(before);
    }
    // One extra row tells whether another page exists.
    let rows = q.bind(i64::from(f.limit) + 1).fetch_all(&s.pool).await?;
    let more = rows.len() > f.limit as usize;
    let mut tasks = Vec::with_capacity(rows.len());
    let mut last_seq = None;
    for row in rows.iter().take(f.limit as usize) {
        tasks.push(rows::task(row)?);
        last_seq = Some(row.try_get::<i64, _>("seq")?);
    }
    Ok(TaskPage {
        tasks,
        next: if more { last_seq } else { None },
    })
}

pub(super) async fn count_tasks(s: &SqliteStore, tenant: &str, status: TaskStatus) -> Result<i64> {
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE tenant = ? AND status = ?")
        .bind(tenant)
        .bind(status.as_str())
        .fetch_one(&s.pool)
        .await?;
    Ok(n)
}

/// Tasks in one status per tenant, in tenant order.
pub(super) async fn counts_in(s: &SqliteStore, status: TaskStatus) -> Result<Vec<(String, i64)>> {
    let counts = sqlx::query_as(
        "SELECT tenant, COUNT(*) FROM tasks WHERE status = ? GROUP BY tenant ORDER BY tenant",
    )
    .bind(status.as_str())
    .fetch_all(&s.pool)
    .await?;
    Ok(counts)
}

/// A task's attempt rows go with it (`ON DELETE CASCADE`).
pub(super) async fn expire_tasks(s: &SqliteStore, before: i64, max: u32) -> Result<Vec<TaskId>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks \
         WHERE status NOT IN (?, ?) AND finished_at < ? LIMIT ?) RETURNING id",
    )
    .bind(TaskStatus::Queued.as_str())
    .bind(TaskStatus::Running.as_str())
    .bind(before)
    .bind(i64::from(max))
    .fetch_all(&s.pool)
    .await?;
    ids.iter().map(|id| id.parse().map_err(corrupt)).collect()
}
