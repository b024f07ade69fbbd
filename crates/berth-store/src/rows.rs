//! Records read back from rows, once for every backend. Both schemas give
//! the same columns the same names and kinds (text, 64-bit integers, times
//! as ms since the Unix epoch), so a record reads the same from SQLite and
//! PostgreSQL; only a task's id is stored natively by each.

use berth_core::{
    AttemptRecord, FunctionConfig, FunctionSummary, FunctionVersion, RequestMeta, TaskError,
    TaskId, TaskRecord, TenantRecord, Timing, Usage,
};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use crate::{Result, StoreError};

/// The columns [`task`] reads, named alike in every schema.
pub(crate) const TASK_COLUMNS: &str = "id, tenant, function, version, kind, status, attempt, \
    max_attempts, epoch, node, exit_code, error_code, error_message, created_at, started_at, \
    finished_at, cpu_ms, peak_memory_bytes, wall_ms, queued_ms, pull_ms, start_ms, run_ms, \
    input_bytes, output_bytes, request";

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// The column kinds the records need, by name.
pub(crate) trait StoreRow {
    fn text(&self, column: &str) -> Result<String>;
    fn text_opt(&self, column: &str) -> Result<Option<String>>;
    fn int(&self, column: &str) -> Result<i64>;
    fn int_opt(&self, column: &str) -> Result<Option<i64>>;
    /// A boolean: PostgreSQL's `boolean`, SQLite's integer 0 or 1.
    fn flag(&self, column: &str) -> Result<bool>;
    fn task_id(&self, column: &str) -> Result<TaskId>;
}

macro_rules! common_kinds {
    () => {
        fn text(&self, column: &str) -> Result<String> {
            Ok(self.try_get(column)?)
        }
        fn text_opt(&self, column: &str) -> Result<Option<String>> {
            Ok(self.try_get(column)?)
        }
        fn int(&self, column: &str) -> Result<i64> {
            Ok(self.try_get(column)?)
        }
        fn int_opt(&self, column: &str) -> Result<Option<i64>> {
            Ok(self.try_get(column)?)
        }
        fn flag(&self, column: &str) -> Result<bool> {
            Ok(self.try_get(column)?)
        }
    };
}

impl StoreRow for SqliteRow {
    common_kinds!();
    fn task_id(&self, column: &str) -> Result<TaskId> {
        self.text(column)?.parse().map_err(corrupt)
    }
}

impl StoreRow for PgRow {
    common_kinds!();
    fn task_id(&self, column: &str) -> Result<TaskId> {
        Ok(TaskId(self.try_get(column)?))
    }
}

/// Reads the columns every backend lists as its task columns.
pub(crate) fn task(row: &impl StoreRow) -> Result<TaskRecord> {
    let error_message = row.text_opt("error_message")?;
    Ok(TaskRecord {
        id: row.task_id("id")?,
        tenant: row.text("tenant")?,
        function: row.text("function")?,
        version: row.int("version")?,
        kind: row.text("kind")?.parse().map_err(corrupt)?,
        status: row.text("status")?.parse().map_err(corrupt)?,
        attempt: row.int("attempt")?,
        max_attempts: row.int("max_attempts")?,
        epoch: row.int("epoch")?,
        node: row.text_opt("node")?,
        exit_code: row.int_opt("exit_code")?,
        error: row
            .text_opt("error_code")?
            .map(|code| {
                Ok::<_, StoreError>(TaskError {
                    code: code.parse().map_err(corrupt)?,
                    message: error_message.unwrap_or_default(),
                })
            })
            .transpose()?,
        created_at: row.int("created_at")?,
        started_at: row.int_opt("started_at")?,
        finished_at: row.int_opt("finished_at")?,
        usage: Usage {
            cpu_ms: row.int_opt("cpu_ms")?,
            peak_memory_bytes: row.int_opt("peak_memory_bytes")?,
            wall_ms: row.int_opt("wall_ms")?,
        },
        timing: Timing {
            queued_ms: row.int_opt("queued_ms")?,
            pull_ms: row.int_opt("pull_ms")?,
            start_ms: row.int_opt("start_ms")?,
            run_ms: row.int_opt("run_ms")?,
        },
        input_bytes: row.int_opt("input_bytes")?,
        output_bytes: row.int_opt("output_bytes")?,
        request: serde_json::from_str::<RequestMeta>(&row.text("request")?).map_err(corrupt)?,
    })
}

pub(crate) fn attempt(row: &impl StoreRow) -> Result<AttemptRecord> {
    Ok(AttemptRecord {
        attempt: row.int("attempt")?,
        epoch: row.int("epoch")?,
        node: row.text("node")?,
        started_at: row.int("started_at")?,
        finished_at: row.int_opt("finished_at")?,
        ended: row
            .text_opt("ended")?
            .map(|e| e.parse().map_err(corrupt))
            .transpose()?,
    })
}

pub(crate) fn tenant(row: &impl StoreRow) -> Result<TenantRecord> {
    Ok(TenantRecord {
        name: row.text("name")?,
        created_at: row.int("created_at")?,
        overrides: serde_json::from_str(&row.text("quotas")?).map_err(corrupt)?,
        keys: row.int("keys")?,
    })
}

pub(crate) fn version(row: &impl StoreRow) -> Result<FunctionVersion> {
    Ok(FunctionVersion {
        tenant: row.text("tenant")?,
        function: row.text("name")?,
        version: row.int("version")?,
        config: serde_json::from_str::<FunctionConfig>(&row.text("config")?).map_err(corrupt)?,
        image_id: row.text("image_id")?,
        created_at: row.int("created_at")?,
    })
}

pub(crate) fn summary(row: &impl StoreRow) -> Result<FunctionSummary> {
    Ok(FunctionSummary {
        latest: version(row)?,
        version_count: row.int("version_count")?,
        created_at: row.int("f_created_at")?,
        updated_at: row.int("f_updated_at")?,
    })
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
