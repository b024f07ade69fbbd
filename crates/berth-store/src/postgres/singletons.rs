//! Singleton leases: a row per job naming its holder until it expires on
//! the database's clock.

use super::PgStore;
use crate::Result;

/// One upsert: the row is taken when absent, kept when ours, and taken
/// over only once it expired. Two replicas inserting at once: the second
/// waits on the first's row and re-checks the condition against it, so
/// two holders can never both see `true`.
pub(super) async fn hold(s: &PgStore, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
    let held: Option<i32> = sqlx::query_scalar(
        "INSERT INTO singletons (name, holder, expires_at) VALUES ($1, $2, berth_now_ms() + $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
         expires_at = excluded.expires_at \
         WHERE singletons.holder = excluded.holder OR singletons.expires_at < berth_now_ms() \
         RETURNING 1",
    )
    .bind(name)
    .bind(holder)
    .bind(ttl_ms)
    .fetch_optional(&s.pool)
    .await?;
    Ok(held.is_some())
}

pub(super) async fn release(s: &PgStore, name: &str, holder: &str) -> Result<()> {
    sqlx::query("DELETE FROM singletons WHERE name = $1 AND holder = $2")
        .bind(name)
        .bind(holder)
        .execute(&s.pool)
        .await?;
    Ok(())
}
