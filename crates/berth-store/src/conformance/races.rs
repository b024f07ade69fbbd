//! Conformance cases for nodes sharing one database: calls racing through
//! separate handles must settle each task exactly once. Each case takes a
//! factory opening another handle on the case's database (see
//! [`crate::conformance`]); a backend runs them through
//! [`conformance_tests!`](crate::conformance_tests).
//!
//! Races are not forced, only made likely, so a pass proves less than a
//! failure; but no outcome a correct backend can produce fails them.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use berth_core::{
    AttemptEnd, Cancel, ErrorCode, Outcome, TaskId, TaskKind, TaskRecord, TaskStatus,
};
use tokio::task::JoinSet;

use super::{TENANT, fence, finish, get, insert, lease, task};
use crate::Store;

const TASKS: usize = 40;

/// Opens two handles and queues [`TASKS`] tasks through the first. Borrows
/// the factory: it may own the database (a temp dir), which must outlive
/// the case.
async fn two_nodes<F, Fut>(open: &F) -> (Arc<dyn Store>, Arc<dyn Store>, Vec<TaskRecord>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let a = open().await;
    let b = open().await;
    let tasks: Vec<_> = (0..TASKS).map(|_| task("f", TaskKind::Async)).collect();
    for t in &tasks {
        insert(&*a, t).await;
    }
    (a, b, tasks)
}

async fn claim_all(s: &dyn Store, owner: &str) -> Vec<TaskRecord> {
    let claimed = s
        .claim_queued(&lease(owner, 60_000), TASKS as u32, &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), TASKS);
    claimed
}

pub async fn concurrent_claims_never_hand_out_a_task_twice<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let (a, b, tasks) = two_nodes(&open).await;
    // Four nodes, two claimers each, all at once.
    let nodes = [Arc::clone(&a), Arc::clone(&b), open().await, open().await];
    let mut claimers = JoinSet::new();
    for i in 0..8 {
        let s = Arc::clone(&nodes[i % nodes.len()]);
        claimers.spawn(async move {
            let owner = format!("node-{i}");
            let mut mine = Vec::new();
            loop {
                let batch = s
                    .claim_queued(&lease(&owner, 60_000), 3, &[])
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|t| (t.id, owner.clone())));
            }
        });
    }
    let mut handed_out = Vec::new();
    while let Some(mine) = claimers.join_next().await {
        handed_out.extend(mine.expect("a claimer panicked"));
    }

    let owners: BTreeMap<TaskId, String> = handed_out.iter().cloned().collect();
    assert_eq!(
        owners.len(),
        handed_out.len(),
        "a task was handed out twice"
    );
    let queued: BTreeSet<_> = tasks.iter().map(|t| t.id).collect();
    let claimed: BTreeSet<_> = owners.keys().copied().collect();
    assert_eq!(claimed, queued, "every queued task is handed out");
    for t in &tasks {
        let stored = get(&*b, t).await;
        assert_eq!(
            (stored.status, stored.attempt, stored.epoch),
            (TaskStatus::Running, 1, 1),
            "one claim, one attempt"
        );
        let owner = &owners[&t.id];
        let attempts = b.list_attempts(TENANT, t.id).await.unwrap();
        let nodes: Vec<_> = attempts.iter().map(|a| a.node.as_str()).collect();
        assert_eq!(nodes, [owner.as_str()], "one attempt row, the claimer's");
        // Only the claimer's lease lets it keep the task.
        assert_eq!(
            b.cancel_task(TENANT, t.id).await.unwrap(),
            Some(Cancel::Running {
                lease_owner: Some(owner.clone())
            }),
            "the task is leased to the node it was handed to"
        );
    }
}

/// Whichever of a cancel and a finish lands first wins; the other sees it
/// and changes nothing.
pub async fn a_cancel_racing_a_finish_has_one_winner<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let (a, b, _) = two_nodes(&open).await;
    let claimed = claim_all(&*a, "n").await;
    let mut races = JoinSet::new();
    for t in claimed {
        let (a, b) = (Arc::clone(&a), Arc::clone(&b));
        races.spawn(async move {
            let done = finish(Outcome::succeeded());
            let (finished, cancel) =
                tokio::join!(a.finish_task(fence(&t), &done), b.cancel_task(TENANT, t.id));
            (t, finished.unwrap(), cancel.unwrap())
        });
    }
    while let Some(race) = races.join_next().await {
        let (t, finished, cancel) = race.expect("a racer panicked");
        let stored = get(&*a, &t).await;
        let ended = a.list_attempts(TENANT, t.id).await.unwrap()[0].ended;
        let expected = if finished {
            AttemptEnd::Finished
        } else {
            AttemptEnd::Cancelled
        };
        assert_eq!(ended, Some(expected), "the winner closed the attempt");
        if finished {
            assert_eq!(
                cancel,
                Some(Cancel::AlreadyFinished(TaskStatus::Succeeded)),
                "a cancel after the finish sees it"
            );
            assert_eq!((stored.status, stored.error), (TaskStatus::Succeeded, None));
        } else {
            assert_eq!(
                cancel,
                Some(Cancel::Running {
                    lease_owner: Some("n".into())
                }),
                "a refused finish means the cancel came first"
            );
            assert_eq!(stored.status, TaskStatus::Cancelled);
            assert_eq!(stored.error.map(|e| e.code), Some(ErrorCode::Cancelled));
        }
    }
}

/// A node declared dead may still be finishing its tasks: each one is
/// either finished or requeued, never both and never neither.
pub async fn a_recovery_racing_a_finish_has_one_winner<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let (a, b, tasks) = two_nodes(&open).await;
    let claimed = claim_all(&*a, "dead").await;
    let mut finishes = JoinSet::new();
    let mut recovery = None;
    for (i, t) in claimed.iter().enumerate() {
        if i == TASKS / 2 {
            let b = Arc::clone(&b);
            recovery = Some(tokio::spawn(async move { b.recover(Some("dead")).await }));
        }
        let (a, fence) = (Arc::clone(&a), fence(t));
        finishes.spawn(async move {
            let done = finish(Outcome::succeeded());
            (fence.id, a.finish_task(fence, &done).await.unwrap())
        });
    }
    let recovered = recovery
        .expect("recovery was started")
        .await
        .expect("recovery panicked")
        .unwrap();
    let mut finished = BTreeMap::new();
    while let Some(f) = finishes.join_next().await {
        let (id, ok) = f.expect("a finisher panicked");
        finished.insert(id, ok);
    }

    assert!(recovered.failed.is_empty(), "every task had attempts left");
    let requeued: BTreeSet<_> = recovered.requeued.iter().copied().collect();
    for t in &tasks {
        let stored = get(&*b, t).await;
        let ended: Vec<_> = b
            .list_attempts(TENANT, t.id)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.ended)
            .collect();
        let expected = if finished[&t.id] {
            AttemptEnd::Finished
        } else {
            AttemptEnd::Lost
        };
        assert_eq!(ended, [Some(expected)], "the winner closed the attempt");
        if finished[&t.id] {
            assert!(
                !requeued.contains(&t.id),
                "task {} was finished and requeued",
                t.id
            );
            assert_eq!(stored.status, TaskStatus::Succeeded);
        } else {
            assert!(
                requeued.contains(&t.id),
                "task {} was neither finished nor requeued",
                t.id
            );
            assert_eq!((stored.status, stored.attempt), (TaskStatus::Queued, 1));
        }
    }
}
