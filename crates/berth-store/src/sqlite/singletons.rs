//! Singleton leases: a row per job naming its holder until it expires.

use berth_core::now_ms;

use super::SqliteStore;
use crate::Result;

/// One upsert: the row is taken when absent, kept when ours, and taken
/// over only once it expired, so two holders can never both see `true`.
pub(super) async fn hold(s: &SqliteStore, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
    let now = now_ms();
    let held: Option<i64> = sqlx::query_scalar(
        "INSERT INTO singletons (name, holder, expires_at) VALUES (?1, ?2, ?3 + ?4) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
         expires_at = excluded.expires_at \
         WHERE singletons.holder = excluded.holder OR singletons.expires_at < ?3 \
         RETURNING 1",
    )
    .bind(name)
    .bind(holder)
    .bind(now)
    .bind(ttl_ms)
    .fetch_optional(&s.pool)
    .await?;
    Ok(held.is_some())
}

pub(super) async fn release(s: &SqliteStore, name: &str, holder: &str) -> Result<()> {
    sqlx::query("DELETE FROM singletons WHERE name = ? AND holder = ?")
        .bind(name)
        .bind(holder)
        .execute(&s.pool)
        .await?;
    Ok(())
}
