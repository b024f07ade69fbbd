//! Executor nodes on the wire: the admin's view of the fleet, join tokens,
//! and what a node sends and gets when it joins and heartbeats.

use std::collections::BTreeMap;

use berth_core::{JoinTokenRecord, NodeRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use berth_core::{NodeInstances, NodeReport, NodeState};

use crate::timestamp;

/// A node of the set, as `GET /v1/executors` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Executor {
    pub id: String,
    pub zone: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Where replicas reach its data plane; empty for a replica's own
    /// in-process executor, which only that replica uses.
    pub address: String,
    pub state: NodeState,
    #[schema(format = DateTime)]
    pub joined_at: String,
    #[schema(format = DateTime)]
    pub last_heartbeat: String,
    /// Age of the last heartbeat on the database's clock when read.
    pub heartbeat_age_ms: i64,
    /// What it has and runs, from its last heartbeat.
    pub report: NodeReport,
}

impl From<&NodeRecord> for Executor {
    fn from(n: &NodeRecord) -> Self {
        Self {
            id: n.id.clone(),
            zone: n.zone.clone(),
            labels: n.labels.clone(),
            address: n.address.clone(),
            state: n.state,
            joined_at: timestamp(n.joined_at),
            last_heartbeat: timestamp(n.last_heartbeat),
            heartbeat_age_ms: n.heartbeat_age_ms,
            report: n.report.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecutorList {
    pub executors: Vec<Executor>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateJoinToken {
    /// What the token is for (a machine, a batch); shown in the list.
    #[serde(default)]
    pub label: String,
}

/// A join token as made: the secret is shown only here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedJoinToken {
    pub id: String,
    pub label: String,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JoinToken {
    pub id: String,
    pub label: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The node that joined with it (tokens are single-use).
    pub used_by: Option<String>,
    pub revoked: bool,
}

impl From<&JoinTokenRecord> for JoinToken {
    fn from(t: &JoinTokenRecord) -> Self {
        Self {
            id: t.id.clone(),
            label: t.label.clone(),
            created_at: timestamp(t.created_at),
            used_by: t.used_by.clone(),
            revoked: t.revoked,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JoinTokenList {
    pub tokens: Vec<JoinToken>,
}

/// A node joining (`Authorization: Bearer <join token>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `http://HOST:PORT` where replicas reach the node's data plane.
    pub address: String,
    pub report: NodeReport,
}

/// What a joined node gets, once: keep the credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Joined {
    pub node_id: String,
    /// The node's own credential for its heartbeats.
    pub credential: String,
    /// What replicas present to the node on the data plane.
    pub data_plane_secret: String,
    pub heartbeat_every_ms: u64,
    /// Heartbeats older than this and the node is lost to the set.
    pub lost_after_ms: u64,
}

/// A heartbeat (`Authorization: Bearer <node credential>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    pub address: String,
    pub report: NodeReport,
    /// The node is stopping (SIGTERM, reclaimed): place nothing new on it.
    #[serde(default)]
    pub draining: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAck {
    /// What the set holds the node to: `draining` means finish and leave.
    pub state: NodeState,
    pub data_plane_secret: String,
}
