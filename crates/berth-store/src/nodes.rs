//! Executor nodes of a set, the single-use tokens they join with, and the
//! secrets every replica must share. Both backends implement them
//! (`sqlite/nodes.rs`, `postgres/nodes.rs`, tables `join_tokens`, `nodes`,
//! `set_secrets`); what they share is here: every statement that reads
//! the same in both dialects, and reading rows back. The statements left
//! to each backend are those that read the clock: SQLite's is the node's,
//! bound as a parameter; PostgreSQL's is `berth_now_ms()`.
//!
//! The statements here number their placeholders (`$1`), which sqlx's
//! SQLite driver binds by number just as PostgreSQL does.
//!
//! Spending a token is one conditional update, so of any number of joins
//! racing with one token exactly one changes the row; on PostgreSQL the
//! others wait for its commit and re-check the condition against it.

use berth_core::{JoinTokenRecord, NodeRecord};

use crate::rows::{StoreRow, corrupt};
use crate::{JoinRefused, Result};

pub(crate) const LIST_JOIN_TOKENS: &str = "SELECT id, label, created_at, used_by, revoked \
     FROM join_tokens ORDER BY created_at DESC, id DESC";

pub(crate) const REVOKE_JOIN_TOKEN: &str = "UPDATE join_tokens SET revoked = TRUE WHERE id = $1";

/// Binds the joining node's id, then the token's hash. Changes no row
/// unless the token is still good.
pub(crate) const SPEND_JOIN_TOKEN: &str = "UPDATE join_tokens SET used_by = $1 \
     WHERE hash = $2 AND used_by IS NULL AND NOT revoked";

/// Why [`SPEND_JOIN_TOKEN`] changed nothing; read with [`refusal`].
pub(crate) const JOIN_TOKEN_REVOKED: &str = "SELECT revoked FROM join_tokens WHERE hash = $1";

pub(crate) const NODE_FOR_CREDENTIAL: &str = "SELECT id FROM nodes WHERE credential_hash = $1";

/// Binds the state, then the node's id.
pub(crate) const SET_NODE_STATE: &str = "UPDATE nodes SET state = $1 WHERE id = $2";

pub(crate) const REMOVE_NODE: &str = "DELETE FROM nodes WHERE id = $1";

/// Binds the name, then the candidate; stores nothing if the name has a
/// value, which never changes once stored.
pub(crate) const OFFER_SECRET: &str =
    "INSERT INTO set_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";

pub(crate) const READ_SECRET: &str = "SELECT value FROM set_secrets WHERE name = $1";

/// The columns [`node`] reads besides `heartbeat_age_ms`, which each
/// backend computes on its own clock.
pub(crate) const NODE_COLUMNS: &str =
    "id, zone, labels, address, state, report, joined_at, last_heartbeat";

pub(crate) fn node(row: &impl StoreRow) -> Result<NodeRecord> {
    Ok(NodeRecord {
        id: row.text("id")?,
        zone: row.text_opt("zone")?,
        labels: serde_json::from_str(&row.text("labels")?).map_err(corrupt)?,
        address: row.text("address")?,
        state: row.text("state")?.parse().map_err(corrupt)?,
        report: serde_json::from_str(&row.text("report")?).map_err(corrupt)?,
        joined_at: row.int("joined_at")?,
        last_heartbeat: row.int("last_heartbeat")?,
        heartbeat_age_ms: row.int("heartbeat_age_ms")?,
    })
}

pub(crate) fn join_token(row: &impl StoreRow) -> Result<JoinTokenRecord> {
    Ok(JoinTokenRecord {
        id: row.text("id")?,
        label: row.text("label")?,
        created_at: row.int("created_at")?,
        used_by: row.text_opt("used_by")?,
        revoked: row.flag("revoked")?,
    })
}

/// From what [`JOIN_TOKEN_REVOKED`] found after the spend changed nothing.
/// A token is never un-revoked, un-used or deleted, so one that is there
/// and not revoked was used. Revocation wins over use: it is what the
/// operator said last.
pub(crate) fn refusal(revoked: Option<bool>) -> JoinRefused {
    match revoked {
        None => JoinRefused::Unknown,
        Some(true) => JoinRefused::Revoked,
        Some(false) => JoinRefused::Used,
    }
}
