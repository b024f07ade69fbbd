//! Functions and their immutable versions.

use berth_core::{ErrorCode, FunctionConfig, FunctionSummary, FunctionVersion, TaskStatus};
// Every dynamic statement below is assembled from constant fragments only;
// user values always travel as bind parameters.
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::{PgStore, lock};
use crate::Result;
use crate::rows::{self, corrupt};

const SUMMARY_SELECT: &str = "SELECT v.*, f.created_at AS f_created_at, f.updated_at AS f_updated_at, \
     (SELECT COUNT(*) FROM function_versions c WHERE c.tenant = f.tenant AND c.name = f.name) AS version_count \
     FROM functions f JOIN function_versions v \
     ON f.tenant = v.tenant AND f.name = v.name AND f.latest_version = v.version";

async fn latest_version(
    db: &mut PgConnection,
    tenant: &str,
    name: &str,
) -> Result<Option<FunctionVersion>> {
    let row = sqlx::query(
        "SELECT v.* FROM function_versions v JOIN functions f \
         ON f.tenant = v.tenant AND f.name = v.name AND f.latest_version = v.version \
         WHERE f.tenant = $1 AND f.name = $2",
    )
    .bind(tenant)
    .bind(name)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(rows::version).transpose()
}

/// Two deploys of one function on two replicas take turns on an advisory
/// lock, so each reads the latest version the other wrote and numbers
/// never collide (the function's row may not exist yet to lock).
pub(super) async fn put_function(
    s: &PgStore,
    tenant: &str,
    name: &str,
    config: &FunctionConfig,
    image_id: &str,
) -> Result<(FunctionVersion, bool)> {
    let mut tx = s.pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2 || '/' || $3))")
        .bind(lock::VERSIONS)
        .bind(tenant)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    let latest = latest_version(&mut tx, tenant, name).await?;
    if let Some(latest) = latest
        && &latest.config == config
        && latest.image_id == image_id
    {
        return Ok((latest, false));
    }
    // Versions keep counting across a delete and re-create so that a
    // version number never names two different things.
    let config_json = serde_json::to_string(config).map_err(corrupt)?;
    let row = sqlx::query(
        "INSERT INTO function_versions (tenant, name, version, config, image_id, created_at) \
         SELECT $1, $2, COALESCE(MAX(version), 0) + 1, $3, $4, berth_now_ms() \
         FROM function_versions WHERE tenant = $1 AND name = $2 \
         RETURNING version, created_at",
    )
    .bind(tenant)
    .bind(name)
    .bind(config_json)
    .bind(image_id)
    .fetch_one(&mut *tx)
    .await?;
    let version = FunctionVersion {
        tenant: tenant.to_owned(),
        function: name.to_owned(),
        version: row.try_get("version")?,
        config: config.clone(),
        image_id: image_id.to_owned(),
        created_at: row.try_get("created_at")?,
    };
    sqlx::query(
        "INSERT INTO functions (tenant, name, latest_version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4) ON CONFLICT (tenant, name) DO UPDATE SET \
         latest_version = excluded.latest_version, updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(name)
    .bind(version.version)
    .bind(version.created_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((version, true))
}

pub(super) async fn get_function(
    s: &PgStore,
    tenant: &str,
    name: &str,
) -> Result<Option<FunctionSummary>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "{SUMMARY_SELECT} WHERE f.tenant = $1 AND f.name = $2"
    )))
    .bind(tenant)
    .bind(name)
    .fetch_optional(&s.pool)
    .await?;
    row.as_ref().map(rows::summary).transpose()
}

pub(super) async fn list_versions(
    s: &PgStore,
    tenant: &str,
    name: &str,
) -> Result<Vec<FunctionVersion>> {
    let rows = sqlx::query(
        "SELECT v.* FROM function_versions v JOIN functions f \
         ON f.tenant = v.tenant AND f.name = v.name \
         WHERE v.tenant = $1 AND v.name = $2 ORDER BY v.version",
    )
    .bind(tenant)
    .bind(name)
    .fetch_all(&s.pool)
    .await?;
    rows.iter().map(rows::version).collect()
}

pub(super) async fn get_version(
    s: &PgStore,
    tenant: &str,
    name: &str,
    version: i64,
) -> Result<Option<FunctionVersion>> {
    let row = sqlx::query(
        "SELECT v.* FROM function_versions v JOIN functions f \
         ON f.tenant = v.tenant AND f.name = v.name \
         WHERE v.tenant = $1 AND v.name = $2 AND v.version = $3",
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
    s: &PgStore,
    tenant: Option<&str>,
) -> Result<Vec<FunctionSummary>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "{SUMMARY_SELECT} WHERE $1::text IS NULL OR f.tenant = $1 ORDER BY f.tenant, f.name"
    )))
    .bind(tenant)
    .fetch_all(&s.pool)
    .await?;
    rows.iter().map(rows::summary).collect()
}

/// Queued tasks of the function fail. A claim holding one of them locked
/// finishes first; the update then finds it running and leaves it.
pub(super) async fn delete_function(s: &PgStore, tenant: &str, name: &str) -> Result<bool> {
    let mut tx = s.pool.begin().await?;
    let gone = sqlx::query("DELETE FROM functions WHERE tenant = $1 AND name = $2")
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
        "UPDATE tasks SET status = $1, error_code = $2, error_message = $3, \
         finished_at = berth_now_ms() \
         WHERE tenant = $4 AND function = $5 AND status = $6",
    )
    .bind(TaskStatus::Failed.as_str())
    .bind(ErrorCode::FunctionDeleted.as_str())
    .bind("the function was deleted before the task ran")
    .bind(tenant)
    .bind(name)
    .bind(TaskStatus::Queued.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}
