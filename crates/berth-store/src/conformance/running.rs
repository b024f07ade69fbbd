//! Conformance cases for what runs now: the running limit a sync call is
//! recorded under, and the per-tenant counts async claims are checked
//! against. A backend runs them through
//! [`conformance_tests!`](crate::conformance_tests) (see
//! [`crate::conformance`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use berth_core::{Outcome, TaskKind, TaskStatus};
use tokio::task::JoinSet;

use super::{TENANT, claim, fence, finish, get, insert, lease, sync_call, task, task_of};
use crate::Store;

/// The limit counts the tenant's running tasks of both kinds, and nothing
/// else: not its queued or finished tasks, not other tenants'.
pub async fn a_sync_call_is_refused_past_the_running_limit(s: &dyn Store) {
    let limit = 2;
    let call = |tenant| async move {
        let t = sync_call(tenant, "n");
        let ok = s
            .insert_running(&t, &lease("n", 60_000), limit)
            .await
            .unwrap();
        (t, ok)
    };
    let queued: Vec<_> = (0..3).map(|_| task("f", TaskKind::Async)).collect();
    for t in &queued {
        insert(s, t).await;
    }

    let (first, ok) = call(TENANT).await;
    assert!(ok, "queued tasks do not count");
    assert_eq!(get(s, &first).await, first, "recorded running, at epoch 1");
    let claimed = claim(s, &queued[0], "n", 60_000).await;
    let (refused, ok) = call(TENANT).await;
    assert!(!ok, "a sync call and an async attempt make two");
    assert!(
        s.get_task(TENANT, refused.id).await.unwrap().is_none(),
        "a refused call leaves no record"
    );
    let (_, ok) = call("u").await;
    assert!(ok, "another tenant's limit is its own");

    assert!(
        s.finish_task(fence(&claimed), &finish(Outcome::succeeded()))
            .await
            .unwrap()
    );
    let (_, ok) = call(TENANT).await;
    assert!(ok, "a finished task frees its place");
    let (_, ok) = call(TENANT).await;
    assert!(!ok, "and only one");
    assert_eq!(s.count_tasks(TENANT, TaskStatus::Running).await.unwrap(), 2);
}

pub async fn running_counts_are_per_tenant(s: &dyn Store) {
    assert!(s.running_counts().await.unwrap().is_empty());
    for tenant in [TENANT, TENANT, "u"] {
        let t = sync_call(tenant, "n");
        assert!(
            s.insert_running(&t, &lease("n", 60_000), 100)
                .await
                .unwrap()
        );
    }
    let claimed = task("f", TaskKind::Async);
    let queued = task("f", TaskKind::Async);
    let done = task_of("u", "f", TaskKind::Async);
    for t in [&claimed, &queued, &done] {
        insert(s, t).await;
    }
    claim(s, &claimed, "n", 60_000).await;
    let finished = claim(s, &queued, "n", 60_000).await;
    assert!(
        s.finish_task(fence(&finished), &finish(Outcome::succeeded()))
            .await
            .unwrap()
    );
    insert(s, &task("f", TaskKind::Async)).await;

    let counts: BTreeMap<_, _> = s.running_counts().await.unwrap().into_iter().collect();
    assert_eq!(
        counts,
        BTreeMap::from([(TENANT.to_owned(), 3), ("u".to_owned(), 1)]),
        "running tasks of both kinds, per tenant; queued and finished ones not"
    );
}

pub async fn queued_counts_are_per_tenant(s: &dyn Store) {
    assert!(s.queued_counts().await.unwrap().is_empty());
    let claimed = task("f", TaskKind::Async);
    insert(s, &claimed).await;
    claim(s, &claimed, "n", 60_000).await;
    for t in [
        task("f", TaskKind::Async),
        task("g", TaskKind::Async),
        task_of("u", "f", TaskKind::Async),
    ] {
        insert(s, &t).await;
    }
    let running = sync_call(TENANT, "n");
    assert!(
        s.insert_running(&running, &lease("n", 60_000), 100)
            .await
            .unwrap()
    );
    let counts: BTreeMap<_, _> = s.queued_counts().await.unwrap().into_iter().collect();
    assert_eq!(
        counts,
        BTreeMap::from([(TENANT.to_owned(), 2), ("u".to_owned(), 1)]),
        "queued tasks of every function, per tenant; claimed and running ones not"
    );
}

/// Sync calls arriving at once on every replica: the limit holds across
/// the set, not per replica.
pub async fn concurrent_sync_calls_never_pass_the_running_limit<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    const LIMIT: u32 = 5;
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(open().await);
    }
    let mut calls = JoinSet::new();
    for i in 0..24 {
        let s = Arc::clone(&nodes[i % nodes.len()]);
        calls.spawn(async move {
            let t = sync_call(TENANT, &format!("node-{i}"));
            s.insert_running(&t, &lease("n", 60_000), LIMIT)
                .await
                .unwrap()
        });
    }
    let mut recorded = 0;
    while let Some(ok) = calls.join_next().await {
        recorded += u32::from(ok.expect("a caller panicked"));
    }
    assert_eq!(recorded, LIMIT, "exactly the limit was let in");
    let running = nodes[0]
        .count_tasks(TENANT, TaskStatus::Running)
        .await
        .unwrap();
    assert_eq!(running, i64::from(LIMIT), "and only those were recorded");
}
