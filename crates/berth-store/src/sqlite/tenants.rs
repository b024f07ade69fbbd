//! Tenants and their API keys (only hashes are stored).

use berth_core::{QuotaOverrides, TenantRecord, now_ms};
// Every dynamic statement below is assembled from constant fragments only;
// user values always travel as bind parameters.
use sqlx::AssertSqlSafe;

use super::SqliteStore;
use crate::Result;
use crate::rows::{self, corrupt};

const TENANT_SELECT: &str = "SELECT t.name, t.created_at, t.quotas, \
     (SELECT COUNT(*) FROM api_keys k WHERE k.tenant = t.name) AS keys FROM tenants t";

pub(super) async fn put_api_key(
    s: &SqliteStore,
    tenant: &str,
    hash: &[u8; 32],
    label: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (hash, tenant, label, created_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (hash) DO UPDATE SET tenant = excluded.tenant, label = excluded.label",
    )
    .bind(&hash[..])
    .bind(tenant)
    .bind(label)
    .bind(now_ms())
    .execute(&s.pool)
    .await?;
    Ok(())
}

pub(super) async fn delete_api_keys_labelled(
    s: &SqliteStore,
    tenant: &str,
    label: &str,
) -> Result<u64> {
    let done = sqlx::query("DELETE FROM api_keys WHERE tenant = ? AND label = ?")
        .bind(tenant)
        .bind(label)
        .execute(&s.pool)
        .await?;
    Ok(done.rows_affected())
}

pub(super) async fn tenant_for_key(s: &SqliteStore, hash: &[u8; 32]) -> Result<Option<String>> {
    let tenant = sqlx::query_scalar("SELECT tenant FROM api_keys WHERE hash = ?")
        .bind(&hash[..])
        .fetch_optional(&s.pool)
        .await?;
    Ok(tenant)
}

pub(super) async fn create_tenant(
    s: &SqliteStore,
    name: &str,
    quotas: &QuotaOverrides,
    key_hash: &[u8; 32],
) -> Result<bool> {
    let quotas = serde_json::to_string(quotas).map_err(corrupt)?;
    let now = now_ms();
    let mut tx = s.write_tx(true).await?;
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

pub(super) async fn ensure_tenant(s: &SqliteStore, name: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO tenants (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(now_ms())
    .execute(&s.pool)
    .await?;
    Ok(())
}

pub(super) async fn get_tenant(s: &SqliteStore, name: &str) -> Result<Option<TenantRecord>> {
    let row = sqlx::query(AssertSqlSafe(format!("{TENANT_SELECT} WHERE t.name = ?")))
        .bind(name)
        .fetch_optional(&s.pool)
        .await?;
    row.as_ref().map(rows::tenant).transpose()
}

pub(super) async fn list_tenants(s: &SqliteStore) -> Result<Vec<TenantRecord>> {
    let rows = sqlx::query(AssertSqlSafe(format!("{TENANT_SELECT} ORDER BY t.name")))
        .fetch_all(&s.pool)
        .await?;
    rows.iter().map(rows::tenant).collect()
}

pub(super) async fn set_tenant_quotas(
    s: &SqliteStore,
    name: &str,
    quotas: &QuotaOverrides,
) -> Result<bool> {
    let quotas = serde_json::to_string(quotas).map_err(corrupt)?;
    let done = sqlx::query("UPDATE tenants SET quotas = ? WHERE name = ?")
        .bind(quotas)
        .bind(name)
        .execute(&s.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn replace_api_keys(
    s: &SqliteStore,
    tenant: &str,
    new_hash: Option<&[u8; 32]>,
    label: &str,
) -> Result<bool> {
    let mut tx = s.write_tx(true).await?;
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
        sqlx::query("INSERT INTO api_keys (hash, tenant, label, created_at) VALUES (?, ?, ?, ?)")
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
