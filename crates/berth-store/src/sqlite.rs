use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use berth_core::{
    Cancel, ErrorCode, FunctionConfig, FunctionSummary, FunctionVersion, QuotaOverrides,
    RequestMeta, TaskError, TaskFilter, TaskId, TaskKind, TaskPage, TaskRecord, TaskStatus,
    TenantRecord, Timing, Usage, now_ms,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
// Every dynamic statement below is assembled from constant fragments only;
// user values always travel as bind parameters.
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};

use crate::{Finish, Idempotent, Lease, Recovered, Result, Store, StoreError};

/// The embedded store: one SQLite file in WAL mode with `synchronous=FULL`,
/// so a committed task survives power loss, not just a process crash.
/// Sync calls' rows go through a second pool with `synchronous=NORMAL`
/// (in WAL mode: durable against a crash of the process, not of the
/// machine), which saves two fsyncs on every call's path.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    relaxed: SqlitePool,
}

impl SqliteStore {
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Checkpoints run in the background (below): left automatic,
            // one in every few hundred commits pays for copying and
            // syncing the whole WAL, a tenth of a busy server's time.
            .pragma("wal_autocheckpoint", "0");
        let pool = Self::connect(opts.clone()).await?;
        let relaxed = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.synchronous(SqliteSynchronous::Normal))
            .await?;
        spawn_checkpoints(pool.clone());
        Ok(Self { pool, relaxed })
    }

    pub async fn in_memory() -> Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?;
        // One connection: every in-memory connection is its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self {
            relaxed: pool.clone(),
            pool,
        })
    }

    async fn connect(opts: SqliteConnectOptions) -> Result<SqlitePool> {
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(pool)
    }

    fn pool_for(&self, durable: bool) -> &SqlitePool {
        if durable { &self.pool } else { &self.relaxed }
    }

    /// A transaction that will write. It takes the write lock at BEGIN: a
    /// deferred one that reads first and then writes fails at once with
    /// "database is locked" (no busy wait) whenever another connection
    /// wrote in between, which a cancel racing a finish, or recovery
    /// racing a busy queue, hits as a matter of course.
    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Copies the WAL back into the database every second, off the request
/// path. PASSIVE never waits for readers or writers; a WAL that readers
/// kept from being reset is caught up by a later pass.
fn spawn_checkpoints(pool: SqlitePool) {
    tokio::spawn(async move {
        while !pool.is_closed() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
    });
}

const TASK_COLUMNS: &str = "id, tenant, function, version, kind, status, attempt, max_attempts, \
    exit_code, error_code, error_message, created_at, started_at, finished_at, cpu_ms, \
    peak_memory_bytes, wall_ms, queued_ms, pull_ms, start_ms, run_ms, input_bytes, output_bytes, \
    request";

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn task_from_row(row: &SqliteRow) -> Result<TaskRecord> {
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let request: String = row.try_get("request")?;
    let error_code: Option<String> = row.try_get("error_code")?;
    let error_message: Option<String> = row.try_get("error_message")?;
    Ok(TaskRecord {
        id: id.parse().map_err(corrupt)?,
        tenant: row.try_get("tenant")?,
        function: row.try_get("function")?,
        version: row.try_get("version")?,
        kind: kind.parse().map_err(corrupt)?,
        status: status.parse().map_err(corrupt)?,
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        exit_code: row.try_get("exit_code")?,
        error: error_code
            .map(|code| {
                Ok::<_, StoreError>(TaskError {
                    code: code.parse().map_err(corrupt)?,
                    message: error_message.unwrap_or_default(),
                })
            })
            .transpose()?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        usage: Usage {
            cpu_ms: row.try_get("cpu_ms")?,
            peak_memory_bytes: row.try_get("peak_memory_bytes")?,
            wall_ms: row.try_get("wall_ms")?,
        },
        timing: Timing {
            queued_ms: row.try_get("queued_ms")?,
            pull_ms: row.try_get("pull_ms")?,
            start_ms: row.try_get("start_ms")?,
            run_ms: row.try_get("run_ms")?,
        },
        input_bytes: row.try_get("input_bytes")?,
        output_bytes: row.try_get("output_bytes")?,
        request: serde_json::from_str::<RequestMeta>(&request).map_err(corrupt)?,
    })
}

const TENANT_SELECT: &str = "SELECT t.name, t.created_at, t.quotas, \
     (SELECT COUNT(*) FROM api_keys k WHERE k.tenant = t.name) AS keys FROM tenants t";

fn tenant_from_row(row: &SqliteRow) -> Result<TenantRecord> {
    let quotas: String = row.try_get("quotas")?;
    Ok(TenantRecord {
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        overrides: serde_json::from_str(&quotas).map_err(corrupt)?,
        keys: row.try_get("keys")?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn version_from_row(row: &SqliteRow) -> Result<FunctionVersion> {
    let config: String = row.try_get("config")?;
    Ok(FunctionVersion {
        tenant: row.try_get("tenant")?,
        function: row.try_get("name")?,
        version: row.try_get("version")?,
        config: serde_json::from_str::<FunctionConfig>(&config).map_err(corrupt)?,
        image_id: row.try_get("image_id")?,
        created_at: row.try_get("created_at")?,
    })
}

async fn latest_version(
    tx: &mut Transaction<'_, Sqlite>,
    tenant: &str,
    name: &str,
) -> Result<Option<FunctionVersion>> {
    let row = sqlx::query(
        "SELECT v.* FROM function_versions v JOIN functions f \
         ON f.tenant = v.tenant AND f.name = v.name AND f.latest_version = v.version \
         WHERE f.tenant = ? AND f.name = ?",
    )
    .bind(tenant)
    .bind(name)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(version_from_row).transpose()
}

fn summary_from_row(row: &SqliteRow) -> Result<FunctionSummary> {
    Ok(FunctionSummary {
        latest: version_from_row(row)?,
        version_count: row.try_get("version_count")?,
        created_at: row.try_get("f_created_at")?,
        updated_at: row.try_get("f_updated_at")?,
    })
}

const SUMMARY_SELECT: &str = "SELECT v.*, f.created_at AS f_created_at, f.updated_at AS f_updated_at, \
     (SELECT COUNT(*) FROM function_versions c WHERE c.tenant = f.tenant AND c.name = f.name) AS version_count \
     FROM functions f JOIN function_versions v \
     ON f.tenant = v.tenant AND f.name = v.name AND f.latest_version = v.version";

#[async_trait]
impl Store for SqliteStore {
    async fn put_api_key(&self, tenant: &str, hash: &[u8; 32], label: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (hash, tenant, label, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (hash) DO UPDATE SET tenant = excluded.tenant, label = excluded.label",
        )
        .bind(&hash[..])
        .bind(tenant)
        .bind(label)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_api_keys_labelled(&self, tenant: &str, label: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM api_keys WHERE tenant = ? AND label = ?")
            .bind(tenant)
            .bind(label)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn tenant_for_key(&self, hash: &[u8; 32]) -> Result<Option<String>> {
        let tenant = sqlx::query_scalar("SELECT tenant FROM api_keys WHERE hash = ?")
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await?;
        Ok(tenant)
    }

    async fn create_tenant(
        &self,
        name: &str,
        quotas: &QuotaOverrides,
        key_hash: &[u8; 32],
    ) -> Result<bool> {
        let quotas = serde_json::to_string(quotas).map_err(corrupt)?;
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let made = sqlx::query(
            "INSERT INTO tenants (name, created_at, quotas) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now)
        .bind(quotas)
        .execute(&mut *tx)
        .await?;
        if made.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("INSERT INTO api_keys (hash, tenant, label, created_at) VALUES (?, ?, ?, ?)")
            .bind(&key_hash[..])
            .bind(name)
            .bind("primary")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn ensure_tenant(&self, name: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO tenants (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_tenant(&self, name: &str) -> Result<Option<TenantRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!("{TENANT_SELECT} WHERE t.name = ?")))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!("{TENANT_SELECT} ORDER BY t.name")))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn set_tenant_quotas(&self, name: &str, quotas: &QuotaOverrides) -> Result<bool> {
        let quotas = serde_json::to_string(quotas).map_err(corrupt)?;
        let done = sqlx::query("UPDATE tenants SET quotas = ? WHERE name = ?")
            .bind(quotas)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn replace_api_keys(
        &self,
        tenant: &str,
        new_hash: Option<&[u8; 32]>,
        label: &str,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE name = ?")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM api_keys WHERE tenant = ?")
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        if let Some(hash) = new_hash {
            sqlx::query(
                "INSERT INTO api_keys (hash, tenant, label, created_at) VALUES (?, ?, ?, ?)",
            )
            .bind(&hash[..])
            .bind(tenant)
            .bind(label)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn count_tasks(&self, tenant: &str, status: TaskStatus) -> Result<i64> {
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE tenant = ? AND status = ?")
            .bind(tenant)
            .bind(status.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    async fn put_function(
        &self,
        tenant: &str,
        name: &str,
        config: &FunctionConfig,
        image_id: &str,
    ) -> Result<(FunctionVersion, bool)> {
        let mut tx = self.write_tx().await?;
        let latest = latest_version(&mut tx, tenant, name).await?;
        if let Some(latest) = latest
            && &latest.config == config
            && latest.image_id == image_id
        {
            return Ok((latest, false));
        }
        // Versions keep counting across a delete and re-create so that a
        // version number never names two different things.
        let max: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(version) FROM function_versions WHERE tenant = ? AND name = ?",
        )
        .bind(tenant)
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let now = now_ms();
        let version = FunctionVersion {
            tenant: tenant.to_owned(),
            function: name.to_owned(),
            version: max.unwrap_or(0) + 1,
            config: config.clone(),
            image_id: image_id.to_owned(),
            created_at: now,
        };
        let config_json = serde_json::to_string(config).map_err(corrupt)?;
        sqlx::query(
            "INSERT INTO function_versions (tenant, name, version, config, image_id, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant)
        .bind(name)
        .bind(version.version)
        .bind(config_json)
        .bind(image_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO functions (tenant, name, latest_version, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, name) DO UPDATE SET \
             latest_version = excluded.latest_version, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(name)
        .bind(version.version)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((version, true))
    }

    async fn get_function(&self, tenant: &str, name: &str) -> Result<Option<FunctionSummary>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "{SUMMARY_SELECT} WHERE f.tenant = ? AND f.name = ?"
        )))
        .bind(tenant)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(summary_from_row).transpose()
    }

    async fn list_versions(&self, tenant: &str, name: &str) -> Result<Vec<FunctionVersion>> {
        let rows = sqlx::query(
            "SELECT v.* FROM function_versions v JOIN functions f \
             ON f.tenant = v.tenant AND f.name = v.name \
             WHERE v.tenant = ? AND v.name = ? ORDER BY v.version",
        )
        .bind(tenant)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    async fn get_version(
        &self,
        tenant: &str,
        name: &str,
        version: i64,
    ) -> Result<Option<FunctionVersion>> {
        let row = sqlx::query(
            "SELECT v.* FROM function_versions v JOIN functions f \
             ON f.tenant = v.tenant AND f.name = v.name \
             WHERE v.tenant = ? AND v.name = ? AND v.version = ?",
        )
        .bind(tenant)
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn list_functions(&self, tenant: &str) -> Result<Vec<FunctionSummary>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{SUMMARY_SELECT} WHERE f.tenant = ? ORDER BY f.name"
        )))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn list_all_functions(&self) -> Result<Vec<FunctionSummary>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{SUMMARY_SELECT} ORDER BY f.tenant, f.name"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn delete_function(&self, tenant: &str, name: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let gone = sqlx::query("DELETE FROM functions WHERE tenant = ? AND name = ?")
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Ok(false);
        }
        // Version rows stay (unreachable through the functions table) so the
        // numbering continues if the name is reused.
        sqlx::query(
            "UPDATE tasks SET status = ?, error_code = ?, error_message = ?, finished_at = ? \
             WHERE tenant = ? AND function = ? AND status = ?",
        )
        .bind(TaskStatus::Failed.as_str())
        .bind(ErrorCode::FunctionDeleted.as_str())
        .bind("the function was deleted before the task ran")
        .bind(now_ms())
        .bind(tenant)
        .bind(name)
        .bind(TaskStatus::Queued.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_task(&self, t: &TaskRecord, lease: Option<&Lease>) -> Result<()> {
        insert_task_row(self.pool_for(t.kind == TaskKind::Async), t, lease, None).await?;
        Ok(())
    }

    async fn insert_task_idempotent(
        &self,
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
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = existing {
                let stored: Option<String> = row.try_get("request_digest")?;
                return Ok(Idempotent::Existing {
                    task: Box::new(task_from_row(&row)?),
                    same_request: stored.as_deref() == Some(digest),
                });
            }
            match insert_task_row(&self.pool, task, None, Some((key, digest))).await {
                Ok(()) => return Ok(Idempotent::Inserted),
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Corrupt(format!(
            "idempotency key {key:?} neither inserted nor found"
        )))
    }

    async fn idempotency_key_used(&self, tenant: &str, key: &str) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM tasks WHERE tenant = ? AND idempotency_key = ?")
                .bind(tenant)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    async fn get_task(&self, tenant: &str, id: TaskId) -> Result<Option<TaskRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ? AND tenant = ?"
        )))
        .bind(id.to_string())
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn list_tasks(&self, tenant: &str, f: &TaskFilter) -> Result<TaskPage> {
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
        let rows = q.bind(i64::from(f.limit) + 1).fetch_all(&self.pool).await?;
        let more = rows.len() > f.limit as usize;
        let mut tasks = Vec::with_capacity(rows.len());
        let mut last_seq = None;
        for row in rows.iter().take(f.limit as usize) {
            tasks.push(task_from_row(row)?);
            last_seq = Some(row.try_get::<i64, _>("seq")?);
        }
        Ok(TaskPage {
            tasks,
            next: if more { last_seq } else { None },
        })
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn claim_queued(
        &self,
        owner: &str,
        max: u32,
        lease_ms: i64,
        skip: &[String],
    ) -> Result<Vec<TaskRecord>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let skipped = if skip.is_empty() {
            String::new()
        } else {
            format!(" AND tenant NOT IN ({})", vec!["?"; skip.len()].join(", "))
        };
        let sql = format!(
            "UPDATE tasks SET status = ?, attempt = attempt + 1, started_at = ?, \
             queued_ms = ? - created_at, lease_owner = ?, lease_expires = ? \
             WHERE id IN (SELECT id FROM tasks WHERE status = ? AND kind = ?\
             {skipped} ORDER BY seq LIMIT ?) RETURNING seq, {TASK_COLUMNS}"
        );
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(TaskStatus::Running.as_str())
            .bind(now)
            .bind(now)
            .bind(owner)
            .bind(now + lease_ms)
            .bind(TaskStatus::Queued.as_str())
            .bind(TaskKind::Async.as_str());
        for tenant in skip {
            query = query.bind(tenant);
        }
        let rows = query.bind(i64::from(max)).fetch_all(&self.pool).await?;
        let mut claimed = rows
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>("seq")?, task_from_row(r)?)))
            .collect::<Result<Vec<_>>>()?;
        // RETURNING gives no order guarantee; the queue is FIFO.
        claimed.sort_by_key(|(seq, _)| *seq);
        Ok(claimed.into_iter().map(|(_, t)| t).collect())
    }

    async fn renew_leases(&self, owner: &str, ids: &[TaskId], lease_ms: i64) -> Result<()> {
        let expires = now_ms() + lease_ms;
        let mut tx = self.write_tx().await?;
        for id in ids {
            sqlx::query(
                "UPDATE tasks SET lease_expires = ? WHERE id = ? AND lease_owner = ? \
                 AND status = ?",
            )
            .bind(expires)
            .bind(id.to_string())
            .bind(owner)
            .bind(TaskStatus::Running.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn release_task(&self, id: TaskId, attempt: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tasks SET status = ?, attempt = attempt - 1, started_at = NULL, \
             lease_owner = NULL, lease_expires = NULL \
             WHERE id = ? AND status = ? AND attempt = ?",
        )
        .bind(TaskStatus::Queued.as_str())
        .bind(id.to_string())
        .bind(TaskStatus::Running.as_str())
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn requeue_task(&self, id: TaskId, attempt: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tasks SET status = ?, started_at = NULL, lease_owner = NULL, \
             lease_expires = NULL WHERE id = ? AND status = ? AND attempt = ?",
        )
        .bind(TaskStatus::Queued.as_str())
        .bind(id.to_string())
        .bind(TaskStatus::Running.as_str())
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_task(&self, id: TaskId, attempt: i64, f: &Finish) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tasks SET status = ?, exit_code = ?, error_code = ?, error_message = ?, \
             finished_at = ?, cpu_ms = ?, peak_memory_bytes = ?, wall_ms = ?, pull_ms = ?, \
             start_ms = ?, run_ms = ?, output_bytes = ?, lease_owner = NULL, lease_expires = NULL, \
             queued_ms = COALESCE(queued_ms, 0) + COALESCE(?, 0) \
             WHERE id = ? AND status = ? AND attempt = ?",
        )
        .bind(f.outcome.status.as_str())
        .bind(f.outcome.exit_code)
        .bind(f.outcome.error.as_ref().map(|e| e.code.as_str()))
        .bind(f.outcome.error.as_ref().map(|e| e.message.as_str()))
        .bind(now_ms())
        .bind(f.usage.cpu_ms)
        .bind(f.usage.peak_memory_bytes)
        .bind(f.usage.wall_ms)
        .bind(f.timing.pull_ms)
        .bind(f.timing.start_ms)
        .bind(f.timing.run_ms)
        .bind(f.output_bytes)
        .bind(f.timing.queued_ms)
        .bind(id.to_string())
        .bind(TaskStatus::Running.as_str())
        .bind(attempt)
        .execute(self.pool_for(f.durable))
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn cancel_task(&self, tenant: &str, id: TaskId) -> Result<Option<Cancel>> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query("SELECT status, lease_owner FROM tasks WHERE id = ? AND tenant = ?")
            .bind(id.to_string())
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let status: String = row.try_get("status")?;
        let status: TaskStatus = status.parse().map_err(corrupt)?;
        let lease_owner: Option<String> = row.try_get("lease_owner")?;
        if status.is_terminal() {
            return Ok(Some(Cancel::AlreadyFinished(status)));
        }
        sqlx::query(
            "UPDATE tasks SET status = ?, error_code = ?, error_message = ?, finished_at = ?, \
             lease_owner = NULL, lease_expires = NULL WHERE id = ?",
        )
        .bind(TaskStatus::Cancelled.as_str())
        .bind(ErrorCode::Cancelled.as_str())
        .bind("cancelled by request")
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(match status {
            TaskStatus::Queued => Cancel::Dequeued,
            _ => Cancel::Running { lease_owner },
        }))
    }

    async fn recover(&self, dead_owner: Option<&str>) -> Result<Recovered> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(
            "SELECT id, kind, attempt, max_attempts FROM tasks WHERE status = ? \
             AND (lease_expires IS NULL OR lease_expires < ? OR lease_owner = ?)",
        )
        .bind(TaskStatus::Running.as_str())
        .bind(now)
        // NULL when no owner is named: `lease_owner = NULL` matches no row,
        // where "" would match an owner that happens to be named "".
        .bind(dead_owner)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Recovered::default();
        for row in rows {
            let id: String = row.try_get("id")?;
            let kind: String = row.try_get("kind")?;
            let attempt: i64 = row.try_get("attempt")?;
            let max: i64 = row.try_get("max_attempts")?;
            let task_id: TaskId = id.parse().map_err(corrupt)?;
            let kind: TaskKind = kind.parse().map_err(corrupt)?;
            if kind == TaskKind::Async && attempt < max {
                sqlx::query(
                    "UPDATE tasks SET status = ?, started_at = NULL, lease_owner = NULL, \
                     lease_expires = NULL WHERE id = ?",
                )
                .bind(TaskStatus::Queued.as_str())
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                out.requeued.push(task_id);
            } else {
                let message = match kind {
                    TaskKind::Sync => "the server running this call stopped".to_owned(),
                    TaskKind::Async => format!("the task was lost on all {max} attempts"),
                };
                sqlx::query(
                    "UPDATE tasks SET status = ?, error_code = ?, error_message = ?, \
                     finished_at = ?, lease_owner = NULL, lease_expires = NULL WHERE id = ?",
                )
                .bind(TaskStatus::Failed.as_str())
                .bind(ErrorCode::Lost.as_str())
                .bind(message)
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                out.failed.push(task_id);
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn expire_tasks(&self, before: i64, max: u32) -> Result<Vec<TaskId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks \
             WHERE status NOT IN (?, ?) AND finished_at < ? LIMIT ?) RETURNING id",
        )
        .bind(TaskStatus::Queued.as_str())
        .bind(TaskStatus::Running.as_str())
        .bind(before)
        .bind(i64::from(max))
        .fetch_all(&self.pool)
        .await?;
        ids.iter().map(|id| id.parse().map_err(corrupt)).collect()
    }
}

async fn insert_task_row(
    pool: &SqlitePool,
    t: &TaskRecord,
    lease: Option<&Lease>,
    idempotency: Option<(&str, &str)>,
) -> std::result::Result<(), sqlx::Error> {
    let request = serde_json::to_string(&t.request).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query(
        "INSERT INTO tasks (id, tenant, function, version, kind, status, attempt, \
         max_attempts, created_at, started_at, queued_ms, input_bytes, request, lease_owner, \
         lease_expires, idempotency_key, request_digest) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(t.id.to_string())
    .bind(&t.tenant)
    .bind(&t.function)
    .bind(t.version)
    .bind(t.kind.as_str())
    .bind(t.status.as_str())
    .bind(t.attempt)
    .bind(t.max_attempts)
    .bind(t.created_at)
    .bind(t.started_at)
    .bind(t.timing.queued_ms)
    .bind(t.input_bytes)
    .bind(request)
    .bind(lease.map(|l| l.owner.as_str()))
    .bind(lease.map(|l| l.expires_at))
    .bind(idempotency.map(|(k, _)| k))
    .bind(idempotency.map(|(_, d)| d))
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
