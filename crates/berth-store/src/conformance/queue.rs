//! Conformance cases for the durable async queue: claims, hand-backs,
//! leases and recovery. A backend runs them through
//! [`conformance_tests!`](crate::conformance_tests) (see
//! [`crate::conformance`]).

use std::collections::BTreeSet;

use berth_core::{ErrorCode, Outcome, TaskKind, TaskStatus};

use super::{TENANT, claim, finish, get, ids, insert, insert_sync_call, task, task_of};
use crate::{Recovered, Store};

pub async fn queue_claims_fifo_once(s: &dyn Store) {
    let tasks: Vec<_> = (0..5).map(|_| task("f", TaskKind::Async)).collect();
    for t in &tasks {
        insert(s, t).await;
    }
    let first = s.claim_queued("n1", 3, 60_000, &[]).await.unwrap();
    assert_eq!(ids(&first), ids(&tasks[..3]), "oldest first, at most max");
    for t in &first {
        assert_eq!(t.status, TaskStatus::Running, "a claimed task is running");
        assert_eq!(t.attempt, 1, "a claim counts the attempt");
        assert!(t.started_at.is_some(), "a claimed task has a start time");
    }
    let rest = s.claim_queued("n2", 10, 60_000, &[]).await.unwrap();
    assert_eq!(ids(&rest), ids(&tasks[3..]), "the rest, once");
    assert!(
        s.claim_queued("n2", 10, 60_000, &[])
            .await
            .unwrap()
            .is_empty(),
        "nothing is claimed twice"
    );
    let stored = get(s, &tasks[0]).await;
    assert_eq!((stored.status, stored.attempt), (TaskStatus::Running, 1));
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
        s.claim_queued("n", 0, 60_000, &[])
            .await
            .unwrap()
            .is_empty(),
        "max = 0 claims nothing"
    );
    let untouched = get(s, &a).await;
    assert_eq!(
        (untouched.status, untouched.attempt),
        (TaskStatus::Queued, 0)
    );

    let claimed = s.claim_queued("n", 10, 60_000, &[]).await.unwrap();
    assert_eq!(ids(&claimed), [a.id], "sync tasks are never claimed");
    assert_eq!(get(s, &queued_sync).await.status, TaskStatus::Queued);
    assert_eq!(get(s, &running_sync).await.attempt, 1);
}

pub async fn claims_skip_tenants_at_their_quota(s: &dyn Store) {
    let busy = task_of("busy", "f", TaskKind::Async);
    insert(s, &busy).await;
    let free = task("f", TaskKind::Async);
    insert(s, &free).await;
    let claimed = s
        .claim_queued("n", 10, 60_000, &["busy".to_owned()])
        .await
        .unwrap();
    assert_eq!(ids(&claimed), [free.id], "the skipped tenant's task waits");
    assert_eq!(s.count_tasks("busy", TaskStatus::Queued).await.unwrap(), 1);
    let later = s.claim_queued("n", 10, 60_000, &[]).await.unwrap();
    assert_eq!(ids(&later), [busy.id], "and is claimed once not skipped");
}

/// A requeue is an attempt lost mid-run and spends it; a release is an
/// attempt that never started and must not, or a busy executor would burn
/// through a task's retries.
pub async fn a_requeued_attempt_counts_and_a_released_one_does_not(s: &dyn Store) {
    let t = task("f", TaskKind::Async);
    insert(s, &t).await;

    assert_eq!(claim(s, &t, "n", 60_000).await, 1);
    assert!(s.requeue_task(t.id, 1).await.unwrap());
    let queued = get(s, &t).await;
    assert_eq!((queued.status, queued.attempt), (TaskStatus::Queued, 1));
    assert_eq!(queued.started_at, None, "a requeued task has not started");
    assert!(
        !s.requeue_task(t.id, 1).await.unwrap(),
        "only a running attempt is handed back"
    );
    assert!(!s.release_task(t.id, 1).await.unwrap());

    assert_eq!(claim(s, &t, "n", 60_000).await, 2, "the requeue counted");
    assert!(!s.release_task(t.id, 1).await.unwrap(), "stale attempt");
    assert!(s.release_task(t.id, 2).await.unwrap());
    let queued = get(s, &t).await;
    assert_eq!((queued.status, queued.attempt), (TaskStatus::Queued, 1));
    assert_eq!(queued.started_at, None, "a released task has not started");
    assert_eq!(
        claim(s, &t, "n", 60_000).await,
        2,
        "a release does not spend the attempt"
    );
    assert!(!s.requeue_task(t.id, 1).await.unwrap(), "stale attempt");
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
    assert_eq!(claim(s, &t, "other", -1).await, 2);
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

/// Only the node holding a task may keep it: a renewal by anyone else, or
/// of a task not named, leaves the lease to lapse and the task to recovery.
pub async fn renewal_extends_only_the_owners_leases(s: &dyn Store) {
    let tasks: Vec<_> = (0..4).map(|_| task("f", TaskKind::Async)).collect();
    for t in &tasks {
        insert(s, t).await;
    }
    let [kept, stolen, forgotten, done] = [0, 1, 2, 3].map(|i| tasks[i].id);
    // A negative lease has lapsed already: no sleeping.
    assert_eq!(s.claim_queued("n1", 4, -1, &[]).await.unwrap().len(), 4);
    assert!(
        s.finish_task(done, 1, &finish(Outcome::succeeded()))
            .await
            .unwrap()
    );

    s.renew_leases("n1", &[kept, done], 60_000).await.unwrap();
    s.renew_leases("n2", &[stolen], 60_000).await.unwrap();

    let r = s.recover(None).await.unwrap();
    let requeued: BTreeSet<_> = r.requeued.into_iter().collect();
    assert_eq!(
        requeued,
        BTreeSet::from([stolen, forgotten]),
        "only the owner's renewal of a named task extends its lease"
    );
    assert!(r.failed.is_empty());
    assert_eq!(get(s, &tasks[0]).await.status, TaskStatus::Running);
    assert_eq!(
        get(s, &tasks[3]).await.status,
        TaskStatus::Succeeded,
        "renewing a finished task does not revive it"
    );
    assert_eq!(
        s.get_task(TENANT, kept).await.unwrap().unwrap().attempt,
        1,
        "a renewal is not an attempt"
    );
}
