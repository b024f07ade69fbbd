//! Conformance cases for fencing: every claim takes a new epoch, and a
//! replica holding an older one (it paused, its lease lapsed, the task
//! moved on) can change nothing. A backend runs them through
//! [`conformance_tests!`](crate::conformance_tests) (see
//! [`crate::conformance`]).

use berth_core::{AttemptEnd, Cancel, Outcome, TaskKind, TaskStatus};

use super::{TENANT, claim, fence, finish, get, insert, insert_sync_call, lease, task};
use crate::{Recovered, Store};

/// A release gives the attempt number back but never the epoch, so an
/// epoch names one claim forever.
pub async fn epochs_only_grow(s: &dyn Store) {
    let t = task("f", TaskKind::Async);
    insert(s, &t).await;
    assert_eq!(get(s, &t).await.epoch, 0, "a queued task was never claimed");

    let first = claim(s, &t, "n", 60_000).await;
    assert_eq!((first.attempt, first.epoch), (1, 1));
    assert!(s.release_task(fence(&first)).await.unwrap());
    let released = get(s, &t).await;
    assert_eq!(
        (released.attempt, released.epoch),
        (0, 1),
        "a release gives back the attempt, not the epoch"
    );

    let second = claim(s, &t, "n", 60_000).await;
    assert_eq!((second.attempt, second.epoch), (1, 2));
    assert!(s.requeue_task(fence(&second)).await.unwrap());
    assert_eq!(get(s, &t).await.epoch, 2, "a requeue keeps the epoch");

    let third = claim(s, &t, "n", 60_000).await;
    assert_eq!((third.attempt, third.epoch), (2, 3));
    assert!(matches!(
        s.cancel_task(TENANT, t.id).await.unwrap(),
        Some(Cancel::Running { .. })
    ));
    assert_eq!(get(s, &t).await.epoch, 3, "a cancel keeps the epoch");

    let call = insert_sync_call(s, "n").await;
    assert_eq!(
        get(s, &call).await.epoch,
        1,
        "a sync call is its first claim"
    );
}

/// The zombie: a replica claims, pauses past its lease, recovery hands
/// the task to the queue and another claim takes it. When the first wakes
/// up, nothing it sends under its old epoch lands, even under the same
/// node name; the attempts say what happened.
pub async fn a_stale_epoch_changes_nothing(s: &dyn Store) {
    let t = task("f", TaskKind::Async);
    insert(s, &t).await;
    let zombie = claim(s, &t, "n1", -1).await;
    assert_eq!(
        s.recover(None).await.unwrap(),
        Recovered {
            requeued: vec![t.id],
            failed: vec![]
        }
    );
    let current = claim(s, &t, "n1", 60_000).await;
    assert_eq!((current.attempt, current.epoch), (2, 2));

    let stale = fence(&zombie);
    let late = finish(Outcome::exited(1, "late"));
    assert!(
        !s.finish_task(stale, &late).await.unwrap(),
        "finish refused"
    );
    assert!(!s.requeue_task(stale).await.unwrap(), "requeue refused");
    assert!(!s.release_task(stale).await.unwrap(), "release refused");
    // A renewal is no answer either way; a stale one must not move the
    // current claim's lease (here: to the past, where recovery takes it).
    s.renew_leases(&lease("n1", -1), &[stale]).await.unwrap();
    assert_eq!(s.recover(None).await.unwrap(), Recovered::default());
    assert_eq!(get(s, &t).await, current, "the current claim is untouched");

    let attempts = s.list_attempts(TENANT, t.id).await.unwrap();
    let ends: Vec<_> = attempts
        .iter()
        .map(|a| (a.attempt, a.epoch, a.ended))
        .collect();
    assert_eq!(
        ends,
        [(1, 1, Some(AttemptEnd::Expired)), (2, 2, None)],
        "the zombie's attempt expired; the current one runs"
    );

    assert!(
        s.finish_task(fence(&current), &finish(Outcome::succeeded()))
            .await
            .unwrap()
    );
    let done = get(s, &t).await;
    assert_eq!(
        (done.status, done.exit_code),
        (TaskStatus::Succeeded, Some(0))
    );
    let last = s.list_attempts(TENANT, t.id).await.unwrap().pop().unwrap();
    assert_eq!(last.ended, Some(AttemptEnd::Finished));
}

/// The node of a task is its holder while it runs and its last holder
/// after, so a finished or requeued task still says where it last ran.
pub async fn a_task_keeps_its_last_node(s: &dyn Store) {
    let t = task("f", TaskKind::Async);
    insert(s, &t).await;
    assert_eq!(get(s, &t).await.node, None, "never claimed, never held");

    let first = claim(s, &t, "n1", 60_000).await;
    assert_eq!(first.node.as_deref(), Some("n1"));
    assert!(s.requeue_task(fence(&first)).await.unwrap());
    assert_eq!(
        get(s, &t).await.node.as_deref(),
        Some("n1"),
        "after a requeue"
    );

    let second = claim(s, &t, "n2", 60_000).await;
    assert_eq!(second.node.as_deref(), Some("n2"));
    assert!(
        s.finish_task(fence(&second), &finish(Outcome::succeeded()))
            .await
            .unwrap()
    );
    assert_eq!(
        get(s, &t).await.node.as_deref(),
        Some("n2"),
        "after a finish"
    );

    let call = insert_sync_call(s, "n3").await;
    assert_eq!(get(s, &call).await.node.as_deref(), Some("n3"));
    assert_eq!(
        s.recover(Some("n3")).await.unwrap().failed,
        [call.id],
        "a sync call of a dead node fails"
    );
    assert_eq!(
        get(s, &call).await.node.as_deref(),
        Some("n3"),
        "after recovery"
    );
}
