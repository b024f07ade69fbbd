//! Executor nodes as the set knows them: what a node reports in its
//! heartbeat, the state the set holds it in, and join tokens.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a node stands with the set. Only `Active` nodes get new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Heartbeating and taking work.
    Active,
    /// Heartbeating, keeps what it runs, takes nothing new (`cordon`).
    Cordoned,
    /// Finishing what it runs within its grace, then leaving (`drain`,
    /// SIGTERM on the daemon).
    Draining,
    /// Its heartbeat lapsed on the database's clock: its work was handed
    /// elsewhere and nothing is placed on it until it heartbeats again.
    Lost,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Cordoned => "cordoned",
            NodeState::Draining => "draining",
            NodeState::Lost => "lost",
        }
    }

    /// Whether new placements may go to a node in this state.
    pub fn takes_work(self) -> bool {
        self == NodeState::Active
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(NodeState::Active),
            "cordoned" => Ok(NodeState::Cordoned),
            "draining" => Ok(NodeState::Draining),
            "lost" => Ok(NodeState::Lost),
            other => Err(format!("unknown node state {other:?}")),
        }
    }
}

/// What a node tells the set in every heartbeat: what it has and what it
/// runs. Stored as the node sent it; placement reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeReport {
    /// CPU the node offers, in millicores.
    pub cpu_millis: u64,
    /// Memory the node offers, in MiB.
    pub memory_mb: u64,
    /// CPU promised to the containers alive now, in millicores.
    pub cpu_millis_allocated: u64,
    /// Memory promised to the containers alive now, in MiB.
    pub memory_mb_allocated: u64,
    /// Containers the node runs at once.
    pub slots: u64,
    /// Containers alive now (warm instances and fresh runs).
    pub running: u64,
    /// CPU feature flags from `/proc/cpuinfo` (`avx2`, `sse4_2`, ...).
    pub cpu_flags: Vec<String>,
    /// Whether the node's container engine answers.
    pub engine_healthy: bool,
    /// Warm instances per function version.
    pub instances: Vec<NodeInstances>,
}

/// A node's warm instances of one function version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeInstances {
    pub tenant: String,
    pub function: String,
    pub version: i64,
    pub ready: u64,
    pub busy: u64,
    pub starting: u64,
}

/// A node as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// Given by the set at join; the node's name in leases and labels.
    pub id: String,
    pub zone: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Where replicas reach the node's data plane (`http://ADDR:PORT`).
    pub address: String,
    pub state: NodeState,
    pub report: NodeReport,
    pub joined_at: i64,
    /// The last heartbeat, on the database's clock.
    pub last_heartbeat: i64,
    /// How long ago that was, on the database's clock when read: what
    /// liveness is judged by, whatever the reader's own clock says.
    pub heartbeat_age_ms: i64,
}

/// What a node gives when it joins; the set adds its id and credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNode {
    pub id: String,
    pub zone: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub address: String,
    pub report: NodeReport,
}

/// A join token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenRecord {
    /// Public handle, for revoking.
    pub id: String,
    pub label: String,
    pub created_at: i64,
    /// Tokens are single-use: the node that joined with it.
    pub used_by: Option<String>,
    pub revoked: bool,
}
