//! Functions and their immutable versions.

use berth_core::{ErrorCode, FunctionConfig, FunctionSummary, FunctionVersion, TaskStatus, now_ms};
// Every dynamic statement below is assembled from constant fragments only;
// user values always travel as bind parameters.
use sqlx::{AssertSqlSafe, Sqlite, Transaction};

use super::SqliteStore;
use crate::Result;
use crate::rows::{self, corrupt};

const SUMMARY_SELECT: &str = "SELECT v.*, f.created_at AS f_created_at, f.updated_at AS f_updated_at, \
     (SELECT COUNT(*) FROM function_versions c WHERE c.tenant = f.tenant AND c.name = f.name) AS version_count \
     FROM functions f JOIN function_versions v \
     ON f.tenant = v.tenant AND f.name = v.name AND f.latest_version = v.version";

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
    row.as_ref().map(rows::version).transpose()
}

pub(super) async fn put_function(
    s: &SqliteStore,
    tenant: &str,
    name: &str,
    config: &FunctionConfig,
    image_id: &str,
) -> Result<(FunctionVersion, bool)> {
    let mut tx = s.write_tx(true).await?;
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

pub(super) async fn get_function(
    s: &SqliteStore,
    tenant: &str,
    name: &str,
) -> Result<Option<FunctionSummary>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "{SUMMARY_SELECT} WHERE f.tenant = ? AND f.name = ?"
    )))
    .bind(tenant)
    .bind(name)
    .fetch_optional(&s.pool)
    .await?;
    row.as_ref().map(rows::summary).transpose()
}

pub(super) async fn list_versions(
    s: &SqliteStore,
    tenant: &str,
    name: &str,
) -> Result<Vec<FunctionVersion>> {
    let rows = sqlx::query(
        "SELECT v.* FROM function_versions v JOIN functions f \
         ON f.tenant = v.tenant AND f.name = v.name \
         WHERE v.tenant = ? AND v.name = ? ORDER BY v.version",
    )
    .bind(tenant)
    .bind(name)
    .fetch_all(&s.pool)
    .await?;
    rows.iter().map(rows::version).collect()
}

pub(super) async fn get_version(
    s: &SqliteStore,
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
    .fetch_optional(&s.pool)
    .await?;
    row.as_ref().map(rows::version).transpose()
}

/// One tenant's functions by name, or (`None`) every tenant's.
pub(super) async fn list_functions(
    s: &SqliteStore,
    tenant: Option<&str>,
) -> Result<Vec<FunctionSummary>> {
    let rows = match tenant {
        Some(tenant) => {
            sqlx::query(AssertSqlSafe(format!(
                "{SUMMARY_SELECT} WHERE f.tenant = ? ORDER BY f.name"
            )))
            .bind(tenant)
            .fetch_all(&s.pool)
            .await?
        }
        None => {
            sqlx::query(AssertSqlSafe(format!(
                "{SUMMARY_SELECT} ORDER BY f.tenant, f.name"
            )))
            .fetch_all(&s.pool)
            .await?
        }
    };
    rows.iter().map(rows::summary).collect()
}

pub(super) async fn delete_function(s: &SqliteStore, tenant: &str, name: &str) -> Result<bool> {
    let mut tx = s.write_tx(true).await?;
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
