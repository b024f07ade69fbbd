//! Task records: inserting (queued, running under the tenant's limit,
//! idempotent), reading, listing, counting, their attempts, and retention.

use berth_core::{AttemptRecord, TaskFilter, TaskId, TaskPage, TaskRecord, TaskStatus};
// Every dynamic statement below is assembled from constant fragments only;
// user values always travel as bind parameters.
use sqlx::types::Uuid;
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row};

use super::{PgStore, lock};
use crate::policy;
use crate::rows::{self, TASK_COLUMNS, is_unique_violation};
use crate::{Idempotent, Lease, Result, StoreError};

/// Writes a task as given; a running one's lease lasts `lease_ms` from
/// now on the database's clock.
async fn insert_row<'e>(
    db: impl sqlx::Executor<'e, Database = Postgres>,
    t: &TaskRecord,
    lease_ms: Option<i64>,
    idempotency: Option<(&str, &str)>,
) -> std::result::Result<(), sqlx::Error> {
    let request = serde_json::to_string(&t.request).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query(
        "INSERT INTO tasks (id, tenant, function, version, kind, status, attempt, \
         max_attempts, epoch, node, created_at, started_at, queued_ms, input_bytes, request, \
         lease_expires, idempotency_key, request_digest) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
         berth_now_ms() + $16, $17, $18)",
    )
    .bind(t.id.0)
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
    .bind(lease_ms)
    .bind(idempotency.map(|(k, _)| k))
    .bind(idempotency.map(|(_, d)| d))
    .execute(db)
    .await?;
    Ok(())
}

/// A task's NOTIFY is not sent here: `notify` is a statement of its own,
/// after this commit (NOTIFY in a transaction serialises commits).
pub(super) async fn insert_task(s: &PgStore, t: &TaskRecord) -> Result<()> {
    insert_row(&s.pool, t, None, None).await?;
    Ok(())
}

/// Sync calls of one tenant take turns on an advisory lock, on any
/// replica, between counting the tenant's running tasks and recording
/// theirs: the limit holds across the set. Async claims do not take it;
/// their quota is the caller's `skip` list, read from `running_counts`.
pub(super) async fn insert_running(
    s: &PgStore,
    task: &TaskRecord,
    lease: &Lease,
    max_running: u32,
) -> Result<bool> {
    let t = policy::running_call(task, lease);
    let mut tx = s.pool.begin().await?;
    // Not waiting for the commit to reach disk, as SQLite's relaxed pool:
    // if the database loses it, the call's caller has lost the call too.
    sqlx::query(
        "SELECT set_config('synchronous_commit', 'off', true), \
         pg_advisory_xact_lock($1, hashtext($2))",
    )
    .bind(lock::RUNNING)
    .bind(&t.tenant)
    .execute(&mut *tx)
    .await?;
    let running: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE tenant = $1 AND status = $2")
            .bind(&t.tenant)
            .bind(TaskStatus::Running.as_str())
            .fetch_one(&mut *tx)
            .await?;
    if running >= i64::from(max_running) {
        return Ok(false);
    }
    insert_row(&mut *tx, &t, Some(lease.duration_ms), None).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn insert_task_idempotent(
    s: &PgStore,
    task: &TaskRecord,
    key: &str,
    digest: &str,
) -> Result<Idempotent> {
    // The unique index decides races between two submissions with the
    // same key; the loser reads what the winner recorded.
    for _ in 0..3 {
        let existing = sqlx::query(AssertSqlSafe(format!(
            "SELECT request_digest, {TASK_COLUMNS} FROM tasks \
             WHERE tenant = $1 AND idempotency_key = $2"
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

pub(super) async fn idempotency_key_used(s: &PgStore, tenant: &str, key: &str) -> Result<bool> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM tasks WHERE tenant = $1 AND idempotency_key = $2")
            .bind(tenant)
            .bind(key)
            .fetch_optional(&s.pool)
            .await?;
    Ok(found.is_some())
}

pub(super) async fn get_task(s: &PgStore, tenant: &str, id: TaskId) -> Result<Option<TaskRecord>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 AND tenant = $2"
    )))
    .bind(id.0)
    .bind(tenant)
    .fetch_optional(&s.pool)
    .await?;
    row.as_ref().map(rows::task).transpose()
}

pub(super) async fn list_attempts(
    s: &PgStore,
    tenant: &str,
    id: TaskId,
) -> Result<Vec<AttemptRecord>> {
    let rows = sqlx::query(
        "SELECT a.attempt, a.epoch, a.node, a.started_at, a.finished_at, a.ended \
         FROM task_attempts a JOIN tasks t ON t.id = a.task_id \
         WHERE t.id = $1 AND t.tenant = $2 ORDER BY a.epoch",
    )
    .bind(id.0)
    .bind(tenant)
    .fetch_all(&s.pool)
    .await?;
    rows.iter().map(rows::attempt).collect()
}

pub(super) async fn list_tasks(s: &PgStore, tenant: &str, f: &TaskFilter) -> Result<TaskPage> {
    let mut q = QueryBuilder::<Postgres>::new(format!("SELECT seq, {TASK_COLUMNS} FROM tasks"));
    q.push(" WHERE tenant = ").push_bind(tenant);
    if let Some(function) = &f.function {
        q.push(" AND function = ").push_bind(function);
    }
    if let Some(status) = f.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(before) = f.before {
        q.push(" AND seq < ").push_bind(before);
    }
    // One extra row tells whether another page exists.
    q.push(" ORDER BY seq DESC LIMIT ")
        .push_bind(i64::from(f.limit) + 1);
    let rows = q.build().fetch_all(&s.pool).await?;
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

pub(super) async fn count_tasks(s: &PgStore, tenant: &str, status: TaskStatus) -> Result<i64> {
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE tenant = $1 AND status = $2")
        .bind(tenant)
        .bind(status.as_str())
        .fetch_one(&s.pool)
        .await?;
    Ok(n)
}

/// Tasks in one status per tenant, in tenant order.
pub(super) async fn counts_in(s: &PgStore, status: TaskStatus) -> Result<Vec<(String, i64)>> {
    let counts = sqlx::query_as(
        "SELECT tenant, COUNT(*) FROM tasks WHERE status = $1 GROUP BY tenant ORDER BY tenant",
    )
    .bind(status.as_str())
    .fetch_all(&s.pool)
    .await?;
    Ok(counts)
}

/// A task's attempt rows go with it (`ON DELETE CASCADE`). Two replicas
/// expiring at once skip each other's rows rather than wait on them.
pub(super) async fn expire_tasks(s: &PgStore, before: i64, max: u32) -> Result<Vec<TaskId>> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks \
         WHERE status <> ALL ($1) AND finished_at < $2 \
         ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id",
    )
    .bind(vec![
        TaskStatus::Queued.as_str(),
        TaskStatus::Running.as_str(),
    ])
    .bind(before)
    .bind(i64::from(max))
    .fetch_all(&s.pool)
    .await?;
    Ok(ids.into_iter().map(TaskId).collect())
}
