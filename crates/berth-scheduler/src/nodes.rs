//! Executor nodes joining and heartbeating, and the admin's view and
//! control of them: join tokens, the fleet's list, cordon, drain.
//!
//! Trust: a join token (made by the admin, shown once, stored hashed,
//! single use) buys a node its own credential, also stored hashed. Every
//! later request of the node carries that credential, and a credential
//! acts only for its own node. In return the node learns the set's data
//! plane secret, which replicas present on every request they send it.

use std::collections::BTreeMap;

use berth_core::{JoinTokenRecord, NewNode, NodeRecord, NodeReport, NodeState};
use berth_store::JoinRefused;
use tracing::{info, warn};

use crate::fleet::DATA_PLANE_SECRET;
use crate::{SchedError, TaskManager, generate_key, hash_key};

/// A join token as made: its secret is in `token`, shown only now.
#[derive(Debug, Clone)]
pub struct NewJoinToken {
    pub id: String,
    pub token: String,
    pub label: String,
}

/// What a node says about itself when it joins.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub zone: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Where replicas reach its data plane (`http://ADDR:PORT`).
    pub address: String,
    pub report: NodeReport,
}

/// What a joined node is given, once.
#[derive(Debug, Clone)]
pub struct Joined {
    pub node_id: String,
    pub credential: String,
    pub data_plane_secret: String,
    pub heartbeat_every_ms: u64,
    pub lost_after_ms: u64,
}

/// The set's answer to a heartbeat.
#[derive(Debug, Clone)]
pub struct HeartbeatAck {
    pub state: NodeState,
    pub data_plane_secret: String,
}

fn require_admin(caller: &str) -> Result<(), SchedError> {
    if caller == berth_core::ADMIN_TENANT {
        Ok(())
    } else {
        Err(SchedError::Forbidden(
            "managing executor nodes needs the admin key".into(),
        ))
    }
}

const JOIN_TOKEN_PREFIX: &str = "berth_join_";
const NODE_CREDENTIAL_PREFIX: &str = "berth_node_";

fn validate_address(address: &str) -> Result<(), SchedError> {
    let rest = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .ok_or_else(|| {
            SchedError::Invalid(format!(
                "address {address:?} must be an http:// or https:// URL"
            ))
        })?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) || address.len() > 255 {
        return Err(SchedError::Invalid(format!(
            "address {address:?} must be scheme://HOST:PORT, nothing after"
        )));
    }
    Ok(())
}

fn validate_labels(
    zone: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Result<(), SchedError> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
    };
    if let Some(z) = zone
        && !ok(z)
    {
        return Err(SchedError::Invalid(format!(
            "zone {z:?}: 1 to 63 letters, digits, '-', '_', '.' or '/'"
        )));
    }
    if labels.len() > 64 {
        return Err(SchedError::Invalid("at most 64 labels".into()));
    }
    for (k, v) in labels {
        if !ok(k) || !(v.is_empty() || ok(v)) {
            return Err(SchedError::Invalid(format!(
                "label {k}={v}: 1 to 63 letters, digits, '-', '_', '.' or '/' each side"
            )));
        }
    }
    Ok(())
}

impl TaskManager {
    pub async fn create_join_token(
        &self,
        caller: &str,
        label: &str,
    ) -> Result<NewJoinToken, SchedError> {
        require_admin(caller)?;
        if label.len() > 200 {
            return Err(SchedError::Invalid("label: at most 200 characters".into()));
        }
        let secret = generate_key();
        let token = format!("{JOIN_TOKEN_PREFIX}{}", &secret["berth_".len()..]);
        let hash = hash_key(&token);
        let id = hex::encode(&hash[..6]);
        self.store.create_join_token(&id, &hash, label).await?;
        info!(token = %id, %label, "join token created");
        Ok(NewJoinToken {
            id,
            token,
            label: label.to_owned(),
        })
    }

    pub async fn join_tokens(&self, caller: &str) -> Result<Vec<JoinTokenRecord>, SchedError> {
        require_admin(caller)?;
        Ok(self.store.list_join_tokens().await?)
    }

    pub async fn revoke_join_token(&self, caller: &str, id: &str) -> Result<(), SchedError> {
        require_admin(caller)?;
        if !self.store.revoke_join_token(id).await? {
            return Err(SchedError::JoinTokenNotFound(id.to_owned()));
        }
        info!(token = %id, "join token revoked");
        Ok(())
    }

    /// A node joins with a token: it is recorded, active, and given its
    /// own credential and the data plane's secret. A token that is wrong,
    /// revoked or spent records nothing.
    pub async fn join(&self, token: &str, req: JoinRequest) -> Result<Joined, SchedError> {
        let refused = || SchedError::NodeUnauthorized("the join token is not valid".into());
        if !token.starts_with(JOIN_TOKEN_PREFIX) {
            return Err(refused());
        }
        validate_address(&req.address)?;
        validate_labels(req.zone.as_deref(), &req.labels)?;
        let node_id = format!("node-{}", hex::encode(rand::random::<[u8; 8]>()));
        let credential = format!(
            "{NODE_CREDENTIAL_PREFIX}{}",
            &generate_key()["berth_".len()..]
        );
        let node = NewNode {
            id: node_id.clone(),
            zone: req.zone,
            labels: req.labels,
            address: req.address,
            report: req.report,
        };
        match self
            .store
            .join_node(&hash_key(token), &node, &hash_key(&credential))
            .await?
        {
            Ok(()) => {}
            Err(why) => {
                let why = match why {
                    JoinRefused::Unknown => "unknown",
                    JoinRefused::Revoked => "revoked",
                    JoinRefused::Used => "already used",
                };
                warn!(address = %node.address, token = why, "join refused");
                return Err(refused());
            }
        }
        info!(node = %node_id, address = %node.address, zone = ?node.zone, "node joined");
        Ok(Joined {
            node_id,
            credential,
            data_plane_secret: self.data_plane_secret().await?,
            heartbeat_every_ms: u64::try_from(self.cfg.heartbeat_every.as_millis())
                .unwrap_or(u64::MAX),
            lost_after_ms: u64::try_from(self.cfg.node_lost_after.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Which node a credential is; `None` when it is no node's.
    pub async fn node_of(&self, credential: &str) -> Result<Option<String>, SchedError> {
        if !credential.starts_with(NODE_CREDENTIAL_PREFIX) {
            return Ok(None);
        }
        Ok(self
            .store
            .node_for_credential(&hash_key(credential))
            .await?)
    }

    /// A heartbeat of `node` (whose credential was checked) for `id`: a
    /// node can only speak for itself.
    pub async fn heartbeat(
        &self,
        node: &str,
        id: &str,
        address: &str,
        report: &NodeReport,
        draining: bool,
    ) -> Result<HeartbeatAck, SchedError> {
        if node != id {
            return Err(SchedError::Forbidden(format!(
                "this credential is node {node:?}'s; it cannot report for {id:?}"
            )));
        }
        validate_address(address)?;
        let mut state = self
            .store
            .heartbeat_node(id, address, report)
            .await?
            .ok_or_else(|| SchedError::NodeNotFound(id.to_owned()))?;
        if draining && state != NodeState::Draining {
            info!(node = %id, "node is stopping: draining it");
            self.store.set_node_state(id, NodeState::Draining).await?;
            state = NodeState::Draining;
        }
        Ok(HeartbeatAck {
            state,
            data_plane_secret: self.data_plane_secret().await?,
        })
    }

    /// Every node of the set (admin).
    pub async fn nodes(&self, caller: &str) -> Result<Vec<NodeRecord>, SchedError> {
        require_admin(caller)?;
        Ok(self.store.list_nodes().await?)
    }

    pub async fn node(&self, caller: &str, id: &str) -> Result<NodeRecord, SchedError> {
        require_admin(caller)?;
        self.store
            .get_node(id)
            .await?
            .ok_or_else(|| SchedError::NodeNotFound(id.to_owned()))
    }

    /// Cordon (`Cordoned`), uncordon (`Active`) or drain (`Draining`).
    pub async fn set_node_state(
        &self,
        caller: &str,
        id: &str,
        state: NodeState,
    ) -> Result<NodeRecord, SchedError> {
        require_admin(caller)?;
        if state == NodeState::Lost {
            return Err(SchedError::Invalid(
                "a node is lost by its heartbeats lapsing, not by request".into(),
            ));
        }
        if self.node(caller, id).await?.address.is_empty() {
            return Err(SchedError::NodeInProcess(id.to_owned()));
        }
        if !self.store.set_node_state(id, state).await? {
            return Err(SchedError::NodeNotFound(id.to_owned()));
        }
        info!(node = %id, %state, "node state set");
        self.node(caller, id).await
    }

    async fn data_plane_secret(&self) -> Result<String, SchedError> {
        Ok(self
            .store
            .set_secret(DATA_PLANE_SECRET, &generate_key())
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_base_urls() {
        assert!(validate_address("http://198.18.0.2:7070").is_ok());
        assert!(validate_address("https://node-1.example:443").is_ok());
        for bad in [
            "198.18.0.2:7070",
            "http://",
            "http://a/b",
            "ftp://a:1",
            "http://a b",
        ] {
            assert!(validate_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_keep_to_a_safe_alphabet() {
        let mut labels = BTreeMap::new();
        labels.insert("gpu".to_owned(), "a100".to_owned());
        assert!(validate_labels(Some("eu-west-1a"), &labels).is_ok());
        labels.insert("bad key".to_owned(), "x".to_owned());
        assert!(validate_labels(None, &labels).is_err());
        assert!(validate_labels(Some(""), &BTreeMap::new()).is_err());
    }
}
