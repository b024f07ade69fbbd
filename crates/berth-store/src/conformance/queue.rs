//! Conformance cases for the durable async queue: claims, fairness,
//! hand-backs, leases and recovery. A backend runs them through
//! [`conformance_tests!`](crate::conformance_tests) (see
//! [`crate::conformance`]).

use std::collections::BTreeSet;

use berth_core::{ErrorCode, Outcome, TaskKind, TaskStatus};

use super::{
    TENANT, claim, fence, finish, get, ids, insert, insert_sync_call, lease, task, task_of,
};
use crate::{Recovered, Store};

pub async fn queue_claims_fifo_once(s: &dyn Store) {
    let tasks: Vec<_> = (0..5).map(|_| task("f", TaskKind::Async)).collect();
    for t in &tasks {
        insert(s, t).await;
    }
    let first = s.claim_queued(&lease("n1", 60_000), 3, &[]).await.unwrap();
    assert_eq!(ids(&first), ids(&tasks[..3]), "oldest first, at most max");
    for t in &first {
        assert_eq!(t.status, TaskStatus::Running, "a claimed task is running");
        assert_eq!(t.attempt, 1, "a claim counts the attempt");
        assert_eq!(t.epoch, 1, "the first claim is epoch 1");
        assert_eq!(t.node.as_deref(), Some("n1"), "a claim names its node");
        assert!(t.started_at.is_some(), "a claimed task has a start time");
    }
    let rest = s.claim_queued(&lease("n2", 60_000), 10, &[]).await.unwrap();
    assert_eq!(ids(&rest), ids(&tasks[3..]), "the rest, once");
    assert!(
        s.claim_queued(&lease("n2", 60_000), 10, &[])
            .await
            .unwrap()
            .is_empty(),
        "nothing is claimed twice"
    );
    assert_eq!(
        get(s, &tasks[0]).await,
        first[0],
        "a claim returns the record stored"
    );
}

/// `max = 0` is what a full executor asks for; sync tasks belong to the
/// request that made them, never to the queue.
pub async fn claiming_zero_or_sync_tasks_claims_nothing(s: &dyn Store) {
    let queued_sync = task("f", TaskKind::Sync);
    insert(s, &queued_sync).await;
    let running_sync = insert_sync_call(s, "n").await;
    let a = task("f", TaskKind::Async);
    insert(s, &a).await;

    assert!(
        s.claim_queued(&lease("n", 60_000), 0, &[])
            .await
            .unwrap()
            .is_empty(),
        "max = 0 claims nothing"
    );
    assert_eq!(get(s, &a).await, a, "max = 0 changes nothing");

    let claimed = s.claim_queued(&lease("n", 60_000), 10, &[]).await.unwrap();
    assert_eq!(ids(&claimed), [a.id], "sync tasks are never claimed");
    assert_eq!(get(s, &queued_sync).await.status, TaskStatus::Queued);
    assert_eq!(get(s, &running_sync).await, running_sync);
}

pub async fn claims_skip_tenants_at_their_quota(s: &dyn Store) {
    let busy = task_of("busy", "f", TaskKind::Async);
    insert(s, &busy).await;
    let free = task("f", TaskKind::Async);
    insert(s, &free).await;
    let claimed = s
        .claim_queued(&lease("n", 60_000), 10, &["busy".to_owned()])
        .await
        .unwrap();
    assert_eq!(ids(&claimed), [free.id], "the skipped tenant's task waits");
    assert_eq!(s.count_tasks("busy", TaskStatus::Queued).await.unwrap(), 1);
    let later = s.claim_queued(&lease("n", 60_000), 10, &[]).await.unwrap();
    assert_eq!(ids(&later), [busy.id], "and is claimed once not skipped");
}

/// One tenant's backlog must not starve another's single task, nor one
/// function's backlog another function's: each tenant and function's
/// oldest task goes before anyone's second.
pub async fn claims_are_fair_across_tenants_and_functions(s: &dyn Store) {
    let backlog: Vec<_> = (0..100)
        .map(|_| task_of("a", "f", TaskKind::Async))
        .collect();
    for t in &backlog {
        insert(s, t).await;
    }
    let late = task_of("b", "f", TaskKind::Async);
    insert(s, &late).await;
    let claimed = s.claim_queued(&lease("n", 60_000), 2, &[]).await.unwrap();
    assert_eq!(
        ids(&claimed),
        [backlog[0].id, late.id],
        "one of each tenant, though 99 others queued first"
    );
    let next = s.claim_queued(&lease("n", 60_000), 2, &[]).await.unwrap();
    assert_eq!(
        ids(&next),
        ids(&backlog[1..3]),
        "with one tenant left, its oldest first"
    );

    // Rounds: every tenant and function's oldest, then every second, and
    // oldest first within a round.
    let [f1, g1, f2, other_f1, f3, g2] = [
        ("t", "f"),
        ("t", "g"),
        ("t", "f"),
        ("u", "f"),
        ("t", "f"),
        ("t", "g"),
    ]
    .map(|(tenant, function)| task_of(tenant, function, TaskKind::Async));
    for t in [&f1, &g1, &f2, &other_f1, &f3, &g2] {
        insert(s, t).await;
    }
    let round = |n| async move {
        let claimed = s
            .claim_queued(&lease("n", 60_000), n, &["a".to_owned()])
            .await;
        ids(&claimed.unwrap())
    };
    assert_eq!(round(3).await, [f1.id, g1.id, other_f1.id], "first round");
    assert_eq!(round(1).await, [f2.id], "then the oldest second");
    assert_eq!(round(5).await, [f3.id, g2.id], "and the rest");
}

/// A requeue is an attempt lost mid-run and spends it; a release is an
/// attempt that never started and must not, or a busy executor would burn
/// through a task's retries.
pub async fn a_requeued_attempt_counts_and_a_released_one_does_not(s: &dyn Store) {
    let t = task("f", TaskKind::Async);
    insert(s, &t).await;

    let first = claim(s, &t, "n", 60_000).await;
    assert_eq!(first.attempt, 1);
    assert!(s.requeue_task(fence(&first)).await.unwrap());
    let queued = get(s, &t).await;
    assert_eq!((queued.status, queued.attempt), (TaskStatus::Queued, 1));
    assert_eq!(queued.started_at, None, "a requeued task has not started");
    assert!(
        !s.requeue_task(fence(&first)).await.unwrap(),
        "only a running attempt is handed back"
    );
    assert!(!s.release_task(fence(&first)).await.unwrap());

    let second = claim(s, &t, "n", 60_000).await;
    assert_eq!(second.attempt, 2, "the requeue counted");
    assert!(!s.release_task(fence(&first)).await.unwrap(), "stale claim");
    assert!(s.release_task(fence(&second)).await.unwrap());
    let queued = get(s, &t).await;
    assert_eq!((queued.status, queued.attempt), (TaskStatus::Queued, 1));
    assert_eq!(queued.started_at, None, "a released task has not started");
    let third = claim(s, &t, "n", 60_000).await;
    assert_eq!(third.attempt, 2, "a release does not spend the attempt");
    assert!(
        !s.requeue_task(fence(&second)).await.unwrap(),
        "stale claim"
    );
}

pub async fn recovery_requeues_then_gives_up(s: &dyn Store) {
    let t = task("f", TaskKind::Async);
    insert(s, &t).await;
    let sync = insert_sync_call(s, "dead").await;
    claim(s, &t, "dead", 60_000).await;
    // An owner with an empty name is still an owner, not "no owner".
    let anonymous = insert_sync_call(s, "").await;

    assert_eq!(
        s.recover(None).await.unwrap(),
        Recovered::default(),
        "live leases are left alone"
    );
    assert_eq!(
        s.recover(Some("alive")).await.unwrap(),
        Recovered::default(),
        "live leases of other owners are left alone"
    );
    let r = s.recover(Some("dead")).await.unwrap();
    assert_eq!(r.requeued, [t.id], "an async task with attempts left waits");
    assert_eq!(r.failed, [sync.id], "a sync call's caller is gone");
    let lost = get(s, &sync).await;
    assert_eq!(lost.status, TaskStatus::Failed);
    assert_eq!(lost.error.map(|e| e.code), Some(ErrorCode::Lost));
    let requeued = get(s, &t).await;
    assert_eq!((requeued.status, requeued.attempt), (TaskStatus::Queued, 1));
    assert_eq!(
        requeued.started_at, None,
        "a task back in the queue has not started"
    );

    // Second attempt also lost, by lease expiry this time (a negative lease
    // has lapsed already): out of attempts.
    assert_eq!(claim(s, &t, "other", -1).await.attempt, 2);
    let r = s.recover(None).await.unwrap();
    assert_eq!(
        r,
        Recovered {
            requeued: vec![],
            failed: vec![t.id]
        }
    );
    let t = get(s, &t).await;
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.error.map(|e| e.code), Some(ErrorCode::Lost));
    assert!(t.finished_at.is_some());
    assert_eq!(s.recover(None).await.unwrap(), Recovered::default());
    assert_eq!(get(s, &anonymous).await.status, TaskStatus::Running);
}

/// Only the node holding a claim may keep it: a renewal by anyone else, or
/// of a claim not named, leaves the lease to lapse and the task to
/// recovery.
pub async fn renewal_extends_only_the_owners_leases(s: &dyn Store) {
    let tasks: Vec<_> = (0..4).map(|_| task("f", TaskKind::Async)).collect();
    for t in &tasks {
        insert(s, t).await;
    }
    // A negative lease has lapsed already: no sleeping.
    let claimed = s.claim_queued(&lease("n1", -1), 4, &[]).await.unwrap();
    assert_eq!(ids(&claimed), ids(&tasks));
    let [kept, stolen, forgotten, done] = [0, 1, 2, 3].map(|i| fence(&claimed[i]));
    assert!(
        s.finish_task(done, &finish(Outcome::succeeded()))
            .await
            .unwrap()
    );

    s.renew_leases(&lease("n1", 60_000), &[kept, done])
        .await
        .unwrap();
    s.renew_leases(&lease("n2", 60_000), &[stolen])
        .await
        .unwrap();
    s.renew_leases(&lease("n1", 60_000), &[]).await.unwrap();

    let r = s.recover(None).await.unwrap();
    let requeued: BTreeSet<_> = r.requeued.into_iter().collect();
    assert_eq!(
        requeued,
        BTreeSet::from([stolen.id, forgotten.id]),
        "only the owner's renewal of a named claim extends its lease"
    );
    assert!(r.failed.is_empty());
    let kept = s.get_task(TENANT, kept.id).await.unwrap().unwrap();
    assert_eq!(kept.status, TaskStatus::Running);
    assert_eq!(
        (kept.attempt, kept.epoch),
        (1, 1),
        "a renewal is neither an attempt nor a claim"
    );
    assert_eq!(
        get(s, &tasks[3]).await.status,
        TaskStatus::Succeeded,
        "renewing a finished task does not revive it"
    );
}
