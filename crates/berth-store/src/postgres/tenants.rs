//! Tenants and their API keys (only hashes are stored).

use berth_core::{QuotaOverrides, TenantRecord};
// Every dynamic statement below is assembled from constant fragments only;
// user values always travel as bind parameters.
use sqlx::AssertSqlSafe;

use super::PgStore;
use crate::Result;
use crate::rows::{self, corrupt};

const TENANT_SELECT: &str = "SELECT t.name, t.created_at, t.quotas, \
     (SELECT COUNT(*) FROM api_keys k WHERE k.tenant = t.name) AS keys FROM tenants t";

pub(super) async fn put_api_key(
    s: &PgStore,
    tenant: &str,
    hash: &[u8; 32],
    label: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (hash, tenant, label, created_at) \
         VALUES ($1, $2, $3, berth_now_ms()) \
         ON CONFLICT (hash) DO UPDATE SET tenant = excluded.tenant, label = excluded.label",
    )
    .bind(&hash[..])
    .bind(tenant)
    .bind(label)
    .execute(&s.pool)
    .await?;
    Ok(())
}

pub(super) async fn delete_api_keys_labelled(
    s: &PgStore,
    tenant: &str,
    label: &str,
) -> Result<u64> {
    let done = sqlx::query("DELETE FROM api_keys WHERE tenant = $1 AND label = $2")
        .bind(tenant)
        .bind(label)
        .execute(&s.pool)
        .await?;
    Ok(done.rows_affected())
}

pub(super) async fn tenant_for_key(s: &PgStore, hash: &[u8; 32]) -> Result<Option<String>> {
    let tenant = sqlx::query_scalar("SELECT tenant FROM api_keys WHERE hash = $1")
        .bind(&hash[..])
        .fetch_optional(&s.pool)
        .await?;
    Ok(tenant)
}

pub(super) async fn create_tenant(
    s: &PgStore,
    name: &str,
    quotas: &QuotaOverrides,
    key_hash: &[u8; 32],
) -> Result<bool> {
    let quotas = serde_json::to_string(quotas).map_err(corrupt)?;
    let mut tx = s.pool.begin().await?;
    // Two creations of one name: the second waits on the first's row and
    // then does nothing.
    let made = sqlx::query(
        "INSERT INTO tenants (name, created_at, quotas) VALUES ($1, berth_now_ms(), $2) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(quotas)
    .execute(&mut *tx)
    .await?;
    if made.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO api_keys (hash, tenant, label, created_at) \
         VALUES ($1, $2, $3, berth_now_ms())",
    )
    .bind(&key_hash[..])
    .bind(name)
    .bind("primary")
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn ensure_tenant(s: &PgStore, name: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO tenants (name, created_at) VALUES ($1, berth_now_ms()) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .execute(&s.pool)
    .await?;
    Ok(())
}

pub(super) async fn get_tenant(s: &PgStore, name: &str) -> Result<Option<TenantRecord>> {
    let row = sqlx::query(AssertSqlSafe(format!("{TENANT_SELECT} WHERE t.name = $1")))
        .bind(name)
        .fetch_optional(&s.pool)
        .await?;
    row.as_ref().map(rows::tenant).transpose()
}

pub(super) async fn list_tenants(s: &PgStore) -> Result<Vec<TenantRecord>> {
    let rows = sqlx::query(AssertSqlSafe(format!("{TENANT_SELECT} ORDER BY t.name")))
        .fetch_all(&s.pool)
        .await?;
    rows.iter().map(rows::tenant).collect()
}

pub(super) async fn set_tenant_quotas(
    s: &PgStore,
    name: &str,
    quotas: &QuotaOverrides,
) -> Result<bool> {
    let quotas = serde_json::to_string(quotas).map_err(corrupt)?;
    let done = sqlx::query("UPDATE tenants SET quotas = $1 WHERE name = $2")
        .bind(quotas)
        .bind(name)
        .execute(&s.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The tenant's row is locked first: two rotations at once run one after
/// the other, so neither leaves two valid keys.
pub(super) async fn replace_api_keys(
    s: &PgStore,
    tenant: &str,
    new_hash: Option<&[u8; 32]>,
    label: &str,
) -> Result<bool> {
    let mut tx = s.pool.begin().await?;
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM tenants WHERE name = $1 FOR UPDATE")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Ok(false);
    }
    sqlx::query("DELETE FROM api_keys WHERE tenant = $1")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    if let Some(hash) = new_hash {
        sqlx::query(
            "INSERT INTO api_keys (hash, tenant, label, created_at) \
             VALUES ($1, $2, $3, berth_now_ms())",
        )
        .bind(&hash[..])
        .bind(tenant)
        .bind(label)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}
