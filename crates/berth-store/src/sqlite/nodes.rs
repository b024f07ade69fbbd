//! Executor nodes, their join tokens and the set's secrets (see
//! `crate::nodes`). The store's clock is the node's own, bound into each
//! statement that judges or records a time.

use berth_core::{JoinTokenRecord, NewNode, NodeRecord, NodeReport, NodeState, now_ms};
// Every dynamic statement below is assembled from constant fragments only;
// user values always travel as bind parameters.
use sqlx::AssertSqlSafe;

use super::SqliteStore;
use crate::nodes::{self as shared, NODE_COLUMNS};
use crate::rows::corrupt;
use crate::{JoinRefused, Result};

/// Binds now first; a negative age (the clock stepped back) reads as 0.
fn node_select() -> String {
    format!("SELECT {NODE_COLUMNS}, MAX(0, ?1 - last_heartbeat) AS heartbeat_age_ms FROM nodes")
}

pub(super) async fn create_join_token(
    s: &SqliteStore,
    id: &str,
    hash: &[u8; 32],
    label: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO join_tokens (id, hash, label, created_at) VALUES (?, ?, ?, ?)")
        .bind(id)
        .bind(&hash[..])
        .bind(label)
        .bind(now_ms())
        .execute(&s.pool)
        .await?;
    Ok(())
}

pub(super) async fn list_join_tokens(s: &SqliteStore) -> Result<Vec<JoinTokenRecord>> {
    let rows = sqlx::query(shared::LIST_JOIN_TOKENS)
        .fetch_all(&s.pool)
        .await?;
    rows.iter().map(shared::join_token).collect()
}

pub(super) async fn revoke_join_token(s: &SqliteStore, id: &str) -> Result<bool> {
    let done = sqlx::query(shared::REVOKE_JOIN_TOKEN)
        .bind(id)
        .execute(&s.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Under the write lock from the start, so the token read to explain a
/// refusal is the one the spend was refused on.
pub(super) async fn join_node(
    s: &SqliteStore,
    token_hash: &[u8; 32],
    node: &NewNode,
    credential_hash: &[u8; 32],
) -> Result<Result<(), JoinRefused>> {
    let labels = serde_json::to_string(&node.labels).map_err(corrupt)?;
    let report = serde_json::to_string(&node.report).map_err(corrupt)?;
    let now = now_ms();
    let mut tx = s.write_tx(true).await?;
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
    sqlx::query(
        "INSERT INTO nodes (id, zone, labels, address, state, report, credential_hash, \
         joined_at, last_heartbeat) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
    )
    .bind(&node.id)
    .bind(&node.zone)
    .bind(labels)
    .bind(&node.address)
    .bind(NodeState::Active.as_str())
    .bind(report)
    .bind(&credential_hash[..])
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(()))
}

pub(super) async fn node_for_credential(
    s: &SqliteStore,
    hash: &[u8; 32],
) -> Result<Option<String>> {
    let id = sqlx::query_scalar(shared::NODE_FOR_CREDENTIAL)
        .bind(&hash[..])
        .fetch_optional(&s.pool)
        .await?;
    Ok(id)
}

/// Through the relaxed pool: a heartbeat lost with the machine is
/// replaced by the node's next one, so it is not worth an fsync each.
pub(super) async fn heartbeat_node(
    s: &SqliteStore,
    id: &str,
    address: &str,
    report: &NodeReport,
) -> Result<Option<NodeState>> {
    let report = serde_json::to_string(report).map_err(corrupt)?;
    let state: Option<String> = sqlx::query_scalar(
        "UPDATE nodes SET address = ?2, report = ?3, last_heartbeat = ?4, \
         state = CASE WHEN state = ?5 THEN ?6 ELSE state END \
         WHERE id = ?1 RETURNING state",
    )
    .bind(id)
    .bind(address)
    .bind(report)
    .bind(now_ms())
    .bind(NodeState::Lost.as_str())
    .bind(NodeState::Active.as_str())
    .fetch_optional(s.pool_for(false))
    .await?;
    state.map(|s| s.parse().map_err(corrupt)).transpose()
}

pub(super) async fn list_nodes(s: &SqliteStore) -> Result<Vec<NodeRecord>> {
    let rows = sqlx::query(AssertSqlSafe(format!("{} ORDER BY id", node_select())))
        .bind(now_ms())
        .fetch_all(&s.pool)
        .await?;
    rows.iter().map(shared::node).collect()
}

pub(super) async fn get_node(s: &SqliteStore, id: &str) -> Result<Option<NodeRecord>> {
    let row = sqlx::query(AssertSqlSafe(format!("{} WHERE id = ?2", node_select())))
        .bind(now_ms())
        .bind(id)
        .fetch_optional(&s.pool)
        .await?;
    row.as_ref().map(shared::node).transpose()
}

pub(super) async fn set_node_state(s: &SqliteStore, id: &str, state: NodeState) -> Result<bool> {
    let done = sqlx::query(shared::SET_NODE_STATE)
        .bind(state.as_str())
        .bind(id)
        .execute(&s.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn mark_lost_nodes(s: &SqliteStore, max_age_ms: i64) -> Result<Vec<String>> {
    let mut lost: Vec<String> = sqlx::query_scalar(
        "UPDATE nodes SET state = ?1 WHERE state <> ?1 AND last_heartbeat < ?2 - ?3 \
         RETURNING id",
    )
    .bind(NodeState::Lost.as_str())
    .bind(now_ms())
    .bind(max_age_ms)
    .fetch_all(&s.pool)
    .await?;
    lost.sort_unstable();
    Ok(lost)
}

pub(super) async fn remove_node(s: &SqliteStore, id: &str) -> Result<bool> {
    let done = sqlx::query(shared::REMOVE_NODE)
        .bind(id)
        .execute(&s.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Two statements: the value never changes once stored, so whatever the
/// read finds is the one every other caller finds too.
pub(super) async fn set_secret(s: &SqliteStore, name: &str, candidate: &str) -> Result<String> {
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
