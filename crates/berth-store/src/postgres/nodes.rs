//! Executor nodes, their join tokens and the set's secrets (see
//! `crate::nodes`). Every time recorded or judged here is
//! `berth_now_ms()`, so nodes' liveness is one clock's verdict whichever
//! replica reads it.

use berth_core::{JoinTokenRecord, NewNode, NodeRecord, NodeReport, NodeState};
// Every dynamic statement below is assembled from constant fragments only;
// user values always travel as bind parameters.
use sqlx::AssertSqlSafe;

use super::PgStore;
use crate::nodes::{self as shared, NODE_COLUMNS};
use crate::rows::corrupt;
use crate::{JoinRefused, Result};

/// A negative age (the clock stepped back, or a failover to a server
/// whose clock is behind) reads as 0.
fn node_select() -> String {
    format!(
        "SELECT {NODE_COLUMNS}, GREATEST(0, berth_now_ms() - last_heartbeat) \
         AS heartbeat_age_ms FROM nodes"
    )
}

pub(super) async fn create_join_token(
    s: &PgStore,
    id: &str,
    hash: &[u8; 32],
    label: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO join_tokens (id, hash, label, created_at) \
         VALUES ($1, $2, $3, berth_now_ms())",
    )
    .bind(id)
    .bind(&hash[..])
    .bind(label)
    .execute(&s.pool)
    .await?;
    Ok(())
}

pub(super) async fn list_join_tokens(s: &PgStore) -> Result<Vec<JoinTokenRecord>> {
    let rows = sqlx::query(shared::LIST_JOIN_TOKENS)
        .fetch_all(&s.pool)
        .await?;
    rows.iter().map(shared::join_token).collect()
}

pub(super) async fn revoke_join_token(s: &PgStore, id: &str) -> Result<bool> {
    let done = sqlx::query(shared::REVOKE_JOIN_TOKEN)
        .bind(id)
        .execute(&s.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// A join racing this one with the same token waits on the token's row
/// until this transaction ends, then finds it spent (or, if this one
/// rolled back, spends it itself). The read explaining a refusal sees at
/// least what the spend was refused on, and a token only ever moves
/// towards used and revoked.
pub(super) async fn join_node(
    s: &PgStore,
    token_hash: &[u8; 32],
    node: &NewNode,
    credential_hash: &[u8; 32],
) -> Result<Result<(), JoinRefused>> {
    let labels = serde_json::to_string(&node.labels).map_err(corrupt)?;
    let report = serde_json::to_string(&node.report).map_err(corrupt)?;
    let mut tx = s.pool.begin().await?;
    let spent = sqlx::query(shared::SPEND_JOIN_TOKEN)
        .bind(&node.id)
        .bind(&token_hash[..])
        .execute(&mut *tx)
        .await?;
    if spent.rows_affected() == 0 {
        let revoked = sqlx::query_scalar(shared::JOIN_TOKEN_REVOKED)
            .bind(&token_hash[..])
            .fetch_optional(&mut *tx)
            .await?;
        return Ok(Err(shared::refusal(revoked)));
    }
    // berth_now_ms() read once, so the first heartbeat is the join itself.
    sqlx::query(
        "INSERT INTO nodes (id, zone, labels, address, state, report, credential_hash, \
         joined_at, last_heartbeat) \
         SELECT $1, $2, $3, $4, $5, $6, $7, now.ms, now.ms \
         FROM (SELECT berth_now_ms() AS ms) now",
    )
    .bind(&node.id)
    .bind(&node.zone)
    .bind(labels)
    .bind(&node.address)
    .bind(NodeState::Active.as_str())
    .bind(report)
    .bind(&credential_hash[..])
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(()))
}

pub(super) async fn node_for_credential(s: &PgStore, hash: &[u8; 32]) -> Result<Option<String>> {
    let id = sqlx::query_scalar(shared::NODE_FOR_CREDENTIAL)
        .bind(&hash[..])
        .fetch_optional(&s.pool)
        .await?;
    Ok(id)
}

/// One conditional update: against [`mark_lost_nodes`] at the same
/// moment, whichever commits second sees the other's row, so a node is
/// never left lost with a fresh heartbeat.
pub(super) async fn heartbeat_node(
    s: &PgStore,
    id: &str,
    address: &str,
    report: &NodeReport,
) -> Result<Option<NodeState>> {
    let report = serde_json::to_string(report).map_err(corrupt)?;
    let state: Option<String> = sqlx::query_scalar(
        "UPDATE nodes SET address = $2, report = $3, last_heartbeat = berth_now_ms(), \
         state = CASE WHEN state = $4 THEN $5 ELSE state END \
         WHERE id = $1 RETURNING state",
    )
    .bind(id)
    .bind(address)
    .bind(report)
    .bind(NodeState::Lost.as_str())
    .bind(NodeState::Active.as_str())
    .fetch_optional(&s.pool)
    .await?;
    state.map(|s| s.parse().map_err(corrupt)).transpose()
}

pub(super) async fn list_nodes(s: &PgStore) -> Result<Vec<NodeRecord>> {
    let rows = sqlx::query(AssertSqlSafe(format!("{} ORDER BY id", node_select())))
        .fetch_all(&s.pool)
        .await?;
    rows.iter().map(shared::node).collect()
}

pub(super) async fn get_node(s: &PgStore, id: &str) -> Result<Option<NodeRecord>> {
    let row = sqlx::query(AssertSqlSafe(format!("{} WHERE id = $1", node_select())))
        .bind(id)
        .fetch_optional(&s.pool)
        .await?;
    row.as_ref().map(shared::node).transpose()
}

pub(super) async fn set_node_state(s: &PgStore, id: &str, state: NodeState) -> Result<bool> {
    let done = sqlx::query(shared::SET_NODE_STATE)
        .bind(state.as_str())
        .bind(id)
        .execute(&s.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn mark_lost_nodes(s: &PgStore, max_age_ms: i64) -> Result<Vec<String>> {
    let mut lost: Vec<String> = sqlx::query_scalar(
        "UPDATE nodes SET state = $1 \
         WHERE state <> $1 AND last_heartbeat < berth_now_ms() - $2 RETURNING id",
    )
    .bind(NodeState::Lost.as_str())
    .bind(max_age_ms)
    .fetch_all(&s.pool)
    .await?;
    lost.sort_unstable();
    Ok(lost)
}

pub(super) async fn remove_node(s: &PgStore, id: &str) -> Result<bool> {
    let done = sqlx::query(shared::REMOVE_NODE)
        .bind(id)
        .execute(&s.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Two statements, each its own transaction: an offer racing another
/// waits for it to commit and then stores nothing, and the read after
/// starts late enough to see whichever value won.
pub(super) async fn set_secret(s: &PgStore, name: &str, candidate: &str) -> Result<String> {
    sqlx::query(shared::OFFER_SECRET)
        .bind(name)
        .bind(candidate)
        .execute(&s.pool)
        .await?;
    let value = sqlx::query_scalar(shared::READ_SECRET)
        .bind(name)
        .fetch_one(&s.pool)
        .await?;
    Ok(value)
}
