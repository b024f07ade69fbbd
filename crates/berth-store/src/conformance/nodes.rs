//! Conformance cases for executor nodes: single-use join tokens, the
//! credential a node authenticates with afterwards, heartbeats and
//! liveness judged on the store's clock, and the secrets every replica of
//! a set must share. A backend runs them through
//! [`conformance_tests!`](crate::conformance_tests) (see
//! [`crate::conformance`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use berth_core::{NewNode, NodeInstances, NodeReport, NodeState};
use tokio::task::JoinSet;

use crate::{JoinRefused, Store};

const HOUR: i64 = 3_600_000;

/// A join token's hash; credentials use [`credential`], so the two never
/// meet by accident.
fn token(n: u8) -> [u8; 32] {
    [n; 32]
}

fn credential(n: u8) -> [u8; 32] {
    [100 + n; 32]
}

/// A report with every field set, so that a backend dropping one shows.
fn report(running: u64) -> NodeReport {
    NodeReport {
        cpu_millis: 4_000,
        memory_mb: 8_192,
        cpu_millis_allocated: 500,
        memory_mb_allocated: 256,
        slots: 8,
        running,
        cpu_flags: vec!["avx2".into(), "sse4_2".into()],
        engine_healthy: true,
        instances: vec![NodeInstances {
            tenant: "t".into(),
            function: "f".into(),
            version: 3,
            ready: 1,
            busy: running,
            starting: 0,
        }],
    }
}

fn new_node(id: &str) -> NewNode {
    NewNode {
        id: id.into(),
        zone: Some("zone-a".into()),
        labels: BTreeMap::from([("disk".into(), "ssd".into()), ("gpu".into(), "none".into())]),
        address: format!("http://{id}.internal:7070"),
        report: report(0),
    }
}

async fn join(
    s: &dyn Store,
    token_hash: [u8; 32],
    id: &str,
    credential_hash: [u8; 32],
) -> Result<(), JoinRefused> {
    s.join_node(&token_hash, &new_node(id), &credential_hash)
        .await
        .expect("join a node")
}

/// Creates token `n` and joins node `id` with it, holding credential `n`.
async fn joined(s: &dyn Store, n: u8, id: &str) {
    s.create_join_token(&format!("tok-{n}"), &token(n), "test")
        .await
        .unwrap();
    assert_eq!(join(s, token(n), id, credential(n)).await, Ok(()));
}

/// Waits until the store's clock is past `after`, so a time recorded at or
/// before `after` is in its past.
async fn clock_past(s: &dyn Store, after: i64) {
    while s.now_ms().await.unwrap() <= after {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn ids(nodes: &[berth_core::NodeRecord]) -> Vec<&str> {
    nodes.iter().map(|n| n.id.as_str()).collect()
}

pub async fn a_join_token_joins_one_node_once(s: &dyn Store) {
    s.create_join_token("tok-1", &token(1), "rack 4")
        .await
        .unwrap();
    let before = s.now_ms().await.unwrap();
    assert_eq!(join(s, token(1), "n1", credential(1)).await, Ok(()));
    let after = s.now_ms().await.unwrap();

    let n = s.get_node("n1").await.unwrap().expect("the node joined");
    let expected = new_node("n1");
    assert_eq!(
        (&n.zone, &n.labels, &n.address, &n.report),
        (
            &expected.zone,
            &expected.labels,
            &expected.address,
            &expected.report
        ),
        "the node reads back as it joined"
    );
    assert_eq!(n.state, NodeState::Active);
    assert_eq!(
        n.last_heartbeat, n.joined_at,
        "joining is the first heartbeat"
    );
    assert!(
        (before..=after).contains(&n.joined_at),
        "joined on the store's clock: {before} <= {} <= {after}",
        n.joined_at
    );

    assert_eq!(
        join(s, token(1), "n2", credential(2)).await,
        Err(JoinRefused::Used),
        "a token joins once"
    );
    assert_eq!(s.get_node("n2").await.unwrap(), None);
    assert_eq!(s.node_for_credential(&credential(2)).await.unwrap(), None);
    assert_eq!(ids(&s.list_nodes().await.unwrap()), ["n1"]);
    assert_eq!(
        s.list_join_tokens().await.unwrap()[0].used_by.as_deref(),
        Some("n1"),
        "the refused join did not take the token over"
    );
}

pub async fn unknown_and_revoked_tokens_are_refused_recording_nothing(s: &dyn Store) {
    assert_eq!(
        join(s, token(9), "n1", credential(1)).await,
        Err(JoinRefused::Unknown)
    );
    s.create_join_token("tok-1", &token(1), "").await.unwrap();
    assert!(s.revoke_join_token("tok-1").await.unwrap());
    assert!(
        s.revoke_join_token("tok-1").await.unwrap(),
        "revoking twice still names a token"
    );
    assert!(!s.revoke_join_token("tok-9").await.unwrap());
    assert_eq!(
        join(s, token(1), "n1", credential(1)).await,
        Err(JoinRefused::Revoked)
    );
    assert_eq!(s.list_nodes().await.unwrap(), []);
    assert_eq!(s.node_for_credential(&credential(1)).await.unwrap(), None);
    let listed = s.list_join_tokens().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|t| (t.id.as_str(), t.used_by.as_deref(), t.revoked))
            .collect::<Vec<_>>(),
        [("tok-1", None, true)],
        "a refused join spends nothing"
    );

    // A spent token revoked afterwards: the revocation is what it says.
    joined(s, 2, "n2").await;
    assert!(s.revoke_join_token("tok-2").await.unwrap());
    assert_eq!(
        join(s, token(2), "n3", credential(3)).await,
        Err(JoinRefused::Revoked)
    );
    assert_eq!(ids(&s.list_nodes().await.unwrap()), ["n2"]);
}

/// Listed newest first, with who used them; a record has no field for the
/// token's secret or hash, so none can leak through a listing.
pub async fn join_tokens_are_listed_newest_first(s: &dyn Store) {
    assert_eq!(s.list_join_tokens().await.unwrap(), []);
    s.create_join_token("tok-a", &token(1), "first")
        .await
        .unwrap();
    let first = s.now_ms().await.unwrap();
    clock_past(s, first).await;
    s.create_join_token("tok-b", &token(2), "second")
        .await
        .unwrap();
    let second = s.now_ms().await.unwrap();
    clock_past(s, second).await;
    s.create_join_token("tok-c", &token(3), "third")
        .await
        .unwrap();
    assert_eq!(join(s, token(1), "n1", credential(1)).await, Ok(()));
    assert!(s.revoke_join_token("tok-b").await.unwrap());

    let listed = s.list_join_tokens().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|t| (
                t.id.as_str(),
                t.label.as_str(),
                t.used_by.as_deref(),
                t.revoked
            ))
            .collect::<Vec<_>>(),
        [
            ("tok-c", "third", None, false),
            ("tok-b", "second", None, true),
            ("tok-a", "first", Some("n1"), false),
        ]
    );
    assert!(listed[2].created_at <= first && listed[1].created_at <= second);
    assert!(listed[2].created_at < listed[1].created_at);
    assert!(listed[1].created_at < listed[0].created_at);
}

pub async fn a_credential_names_its_node(s: &dyn Store) {
    joined(s, 1, "n1").await;
    joined(s, 2, "n2").await;
    assert_eq!(
        s.node_for_credential(&credential(1))
            .await
            .unwrap()
            .as_deref(),
        Some("n1")
    );
    assert_eq!(
        s.node_for_credential(&credential(2))
            .await
            .unwrap()
            .as_deref(),
        Some("n2")
    );
    assert_eq!(s.node_for_credential(&credential(3)).await.unwrap(), None);
    assert_eq!(
        s.node_for_credential(&token(1)).await.unwrap(),
        None,
        "a join token is no credential"
    );
}

pub async fn a_heartbeat_records_report_and_address(s: &dyn Store) {
    joined(s, 1, "n1").await;
    let joined_at = s.get_node("n1").await.unwrap().unwrap().joined_at;
    clock_past(s, joined_at).await;

    let busy = report(5);
    assert_eq!(
        s.heartbeat_node("n1", "http://10.0.0.9:7070", &busy)
            .await
            .unwrap(),
        Some(NodeState::Active)
    );
    let n = s.get_node("n1").await.unwrap().unwrap();
    assert_eq!(
        (n.address.as_str(), &n.report),
        ("http://10.0.0.9:7070", &busy)
    );
    assert_eq!(n.joined_at, joined_at, "a heartbeat is not a join");
    assert!(
        n.last_heartbeat > joined_at,
        "the heartbeat is recorded at the store's now"
    );
    assert_eq!(
        n.labels,
        new_node("n1").labels,
        "labels are the join's to set"
    );

    assert_eq!(
        s.heartbeat_node("ghost", "http://x:1", &busy)
            .await
            .unwrap(),
        None,
        "an unknown node is not made up"
    );
    assert_eq!(s.get_node("ghost").await.unwrap(), None);
}

pub async fn a_lost_node_comes_back_and_a_cordoned_one_stays_cordoned(s: &dyn Store) {
    for (n, id) in [(1, "lost"), (2, "cordoned"), (3, "draining"), (4, "active")] {
        joined(s, n, id).await;
    }
    assert!(s.set_node_state("lost", NodeState::Lost).await.unwrap());
    assert!(
        s.set_node_state("cordoned", NodeState::Cordoned)
            .await
            .unwrap()
    );
    assert!(
        s.set_node_state("draining", NodeState::Draining)
            .await
            .unwrap()
    );
    for (id, after) in [
        ("lost", NodeState::Active),
        ("cordoned", NodeState::Cordoned),
        ("draining", NodeState::Draining),
        ("active", NodeState::Active),
    ] {
        assert_eq!(
            s.heartbeat_node(id, "http://n:1", &report(1))
                .await
                .unwrap(),
            Some(after),
            "{id} after a heartbeat"
        );
        assert_eq!(s.get_node(id).await.unwrap().unwrap().state, after);
    }
}

pub async fn lapsed_nodes_are_marked_lost_once(s: &dyn Store) {
    for (n, id) in [(1, "a"), (2, "b"), (3, "c"), (4, "gone")] {
        joined(s, n, id).await;
    }
    assert!(s.set_node_state("b", NodeState::Cordoned).await.unwrap());
    assert!(s.set_node_state("gone", NodeState::Lost).await.unwrap());
    let now = s.now_ms().await.unwrap();
    assert_eq!(
        s.mark_lost_nodes(HOUR).await.unwrap(),
        Vec::<String>::new(),
        "nobody is an hour late"
    );
    clock_past(s, now).await;

    assert_eq!(
        s.mark_lost_nodes(0).await.unwrap(),
        ["a", "b", "c"],
        "every node not already lost, whatever its state"
    );
    assert_eq!(
        s.mark_lost_nodes(0).await.unwrap(),
        Vec::<String>::new(),
        "a lost node is reported once"
    );
    for n in s.list_nodes().await.unwrap() {
        assert_eq!(n.state, NodeState::Lost, "{}", n.id);
    }

    assert_eq!(
        s.heartbeat_node("a", "http://a:1", &report(0))
            .await
            .unwrap(),
        Some(NodeState::Active)
    );
    assert_eq!(
        s.mark_lost_nodes(HOUR).await.unwrap(),
        Vec::<String>::new(),
        "a fresh heartbeat is not lapsed"
    );
    assert_eq!(
        s.get_node("a").await.unwrap().unwrap().state,
        NodeState::Active
    );
}

pub async fn heartbeat_age_is_read_on_the_store_clock(s: &dyn Store) {
    joined(s, 1, "n1").await;
    assert_eq!(
        s.heartbeat_node("n1", "http://n1:1", &report(0))
            .await
            .unwrap(),
        Some(NodeState::Active)
    );
    let fresh = s.get_node("n1").await.unwrap().unwrap();
    assert!(
        (0..10_000).contains(&fresh.heartbeat_age_ms),
        "just heartbeated: {} ms",
        fresh.heartbeat_age_ms
    );

    // The age grows with the store's clock, not with anything stored.
    clock_past(s, fresh.last_heartbeat + 20).await;
    let later = s.get_node("n1").await.unwrap().unwrap();
    assert_eq!(later.last_heartbeat, fresh.last_heartbeat);
    assert!(
        later.heartbeat_age_ms > 20,
        "aged on the store's clock: {} ms",
        later.heartbeat_age_ms
    );
    let listed = s.list_nodes().await.unwrap();
    assert_eq!(ids(&listed), ["n1"]);
    assert!(listed[0].heartbeat_age_ms >= later.heartbeat_age_ms);
}

pub async fn node_states_change_only_for_known_nodes(s: &dyn Store) {
    joined(s, 2, "n2").await;
    joined(s, 1, "n1").await;
    assert!(
        !s.set_node_state("ghost", NodeState::Cordoned)
            .await
            .unwrap()
    );
    assert_eq!(s.get_node("ghost").await.unwrap(), None);
    assert!(s.set_node_state("n2", NodeState::Cordoned).await.unwrap());
    let listed = s.list_nodes().await.unwrap();
    assert_eq!(ids(&listed), ["n1", "n2"], "listed by id");
    assert_eq!(
        listed.iter().map(|n| n.state).collect::<Vec<_>>(),
        [NodeState::Active, NodeState::Cordoned]
    );
    assert!(s.set_node_state("n2", NodeState::Active).await.unwrap());
    assert_eq!(
        s.get_node("n2").await.unwrap().unwrap().state,
        NodeState::Active,
        "uncordoned"
    );
}

pub async fn a_removed_node_loses_its_credential(s: &dyn Store) {
    joined(s, 1, "n1").await;
    joined(s, 2, "n2").await;
    assert!(s.remove_node("n1").await.unwrap());
    assert_eq!(s.node_for_credential(&credential(1)).await.unwrap(), None);
    assert_eq!(s.get_node("n1").await.unwrap(), None);
    assert_eq!(
        s.heartbeat_node("n1", "http://n1:1", &report(0))
            .await
            .unwrap(),
        None
    );
    assert!(!s.remove_node("n1").await.unwrap());
    assert_eq!(ids(&s.list_nodes().await.unwrap()), ["n2"]);
    assert_eq!(
        join(s, token(1), "n1", credential(1)).await,
        Err(JoinRefused::Used),
        "its token stays spent"
    );
}

pub async fn a_set_secret_is_chosen_once(s: &dyn Store) {
    assert_eq!(s.set_secret("signing", "first").await.unwrap(), "first");
    assert_eq!(s.set_secret("signing", "second").await.unwrap(), "first");
    assert_eq!(
        s.set_secret("other", "second").await.unwrap(),
        "second",
        "each name is its own secret"
    );
}

/// Every replica offers its own candidate, the first through one handle
/// and then all at once; every one of them ends up with the same secret.
pub async fn every_replica_gets_the_first_set_secret<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let a = open().await;
    let b = open().await;
    assert_eq!(a.set_secret("signing", "from-a").await.unwrap(), "from-a");
    assert_eq!(b.set_secret("signing", "from-b").await.unwrap(), "from-a");

    let nodes = [a, b, open().await, open().await];
    let mut offers = JoinSet::new();
    for i in 0..16 {
        let s = Arc::clone(&nodes[i % nodes.len()]);
        offers.spawn(async move { s.set_secret("racing", &format!("replica-{i}")).await });
    }
    let mut chosen = Vec::new();
    while let Some(value) = offers.join_next().await {
        chosen.push(value.expect("a replica panicked").unwrap());
    }
    chosen.sort();
    chosen.dedup();
    assert_eq!(chosen.len(), 1, "one secret for the set: {chosen:?}");
}

/// Joins with one token race through several handles; one node joins.
pub async fn concurrent_joins_spend_a_token_once<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(open().await);
    }
    nodes[0]
        .create_join_token("tok-1", &token(1), "")
        .await
        .unwrap();
    let mut joins = JoinSet::new();
    for i in 0..16u8 {
        let s = Arc::clone(&nodes[usize::from(i) % nodes.len()]);
        joins.spawn(async move {
            let id = format!("n{i}");
            let outcome = join(&*s, token(1), &id, credential(i)).await;
            (id, outcome)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = joins.join_next().await {
        match joined.expect("a join panicked") {
            (id, Ok(())) => winners.push(id),
            (_, Err(refused)) => assert_eq!(refused, JoinRefused::Used),
        }
    }
    assert_eq!(winners.len(), 1, "one join wins: {winners:?}");
    let listed = nodes[1].list_nodes().await.unwrap();
    assert_eq!(
        ids(&listed),
        [winners[0].as_str()],
        "only the winner joined"
    );
    assert_eq!(
        nodes[2].list_join_tokens().await.unwrap()[0].used_by,
        Some(winners[0].clone())
    );
}
