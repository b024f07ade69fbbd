//! Events between replicas over `LISTEN/NOTIFY` on one channel, the
//! payload [`crate::events`]' text. Only ever a wake-up: PostgreSQL drops
//! notifications for a listener whose connection is down, so whoever acts
//! on one reads the truth from the store, and polls behind it.
//!
//! `notify` is one statement of its own, sent by the caller after the
//! commit it announces and never inside a transaction that inserts tasks:
//! a transaction that NOTIFYs takes a database-wide lock at commit, which
//! would serialise every submission behind it. Coalescing is the caller's
//! job too (one `Queued` for a burst of submissions, not one each):
//! PostgreSQL folds identical payloads only within one transaction.

use futures::StreamExt;
use sqlx::postgres::{PgListener, PgPoolOptions};

use super::PgStore;
use crate::events::{decode, encode};
use crate::{Event, Events, Result};

const CHANNEL: &str = "berth_events";

pub(super) async fn notify(s: &PgStore, event: &Event) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(encode(event))
        .execute(&s.pool)
        .await?;
    Ok(())
}

/// A listener on a connection of its own (a pool of one), outside the
/// store's pool so it never takes a slot from calls. The stream ends when
/// that connection is lost instead of reconnecting quietly: notifications
/// sent meanwhile are gone, and the caller must know to look again.
pub(super) async fn listen(s: &PgStore) -> Result<Events> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(s.options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    // The listener holds its pool: dropping the stream closes the
    // connection.
    let events = futures::stream::unfold(listener, |mut listener| async move {
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => match decode(n.payload()) {
                    Some(event) => return Some((event, listener)),
                    None => tracing::debug!(payload = n.payload(), "unknown event skipped"),
                },
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "event listener lost its connection");
                    return None;
                }
            }
        }
    });
    Ok(events.boxed())
}
