//! Conformance cases for the attempts of a task: a row for every claim,
//! naming its node and saying how it ended. A backend runs them through
//! [`conformance_tests!`](crate::conformance_tests) (see
//! [`crate::conformance`]).

use berth_core::{AttemptEnd, Outcome, TaskId, TaskKind};

use super::{TENANT, claim, fence, finish, get, insert, insert_sync_call, task, task_of};
use crate::Store;

/// Every way a claim can end, in turn on one task: released (its number
/// given back), requeued (lost), lapsed and recovered (expired), recovered
/// from a node that said it died (lost), finished; and cancelled on
/// another.
pub async fn every_claim_leaves_an_attempt_saying_how_it_ended(s: &dyn Store) {
    let mut t = task("f", TaskKind::Async);
    t.max_attempts = 5;
    insert(s, &t).await;
    assert!(s.list_attempts(TENANT, t.id).await.unwrap().is_empty());

    let mut claims = Vec::new();
    let c = claim(s, &t, "n1", 60_000).await;
    assert!(s.release_task(fence(&c)).await.unwrap());
    claims.push(c);
    let c = claim(s, &t, "n2", 60_000).await;
    assert!(s.requeue_task(fence(&c)).await.unwrap());
    claims.push(c);
    let c = claim(s, &t, "n3", -1).await;
    assert_eq!(s.recover(None).await.unwrap().requeued, [t.id]);
    claims.push(c);
    let c = claim(s, &t, "n4", 60_000).await;
    assert_eq!(s.recover(Some("n4")).await.unwrap().requeued, [t.id]);
    claims.push(c);
    let c = claim(s, &t, "n5", 60_000).await;
    let running = s.list_attempts(TENANT, t.id).await.unwrap().pop().unwrap();
    assert_eq!(
        (running.epoch, running.ended, running.finished_at),
        (5, None, None),
        "a running attempt has not ended"
    );
    assert!(
        s.finish_task(fence(&c), &finish(Outcome::succeeded()))
            .await
            .unwrap()
    );
    claims.push(c);

    let attempts = s.list_attempts(TENANT, t.id).await.unwrap();
    let seen: Vec<_> = attempts
        .iter()
        .map(|a| (a.attempt, a.epoch, a.node.as_str(), a.ended))
        .collect();
    assert_eq!(
        seen,
        [
            (1, 1, "n1", Some(AttemptEnd::Released)),
            (1, 2, "n2", Some(AttemptEnd::Lost)),
            (2, 3, "n3", Some(AttemptEnd::Expired)),
            (3, 4, "n4", Some(AttemptEnd::Lost)),
            (4, 5, "n5", Some(AttemptEnd::Finished)),
        ],
        "oldest first; a released attempt's number is run again"
    );
    for (a, c) in attempts.iter().zip(&claims) {
        assert_eq!(
            Some(a.started_at),
            c.started_at,
            "an attempt starts at its claim"
        );
        assert!(a.finished_at >= Some(a.started_at), "every one ended");
    }
    let counted = attempts
        .iter()
        .filter(|a| a.ended != Some(AttemptEnd::Released));
    assert_eq!(
        counted.count() as i64,
        get(s, &t).await.attempt,
        "every attempt but the released one counted"
    );

    let cancelled = task("f", TaskKind::Async);
    insert(s, &cancelled).await;
    claim(s, &cancelled, "n6", 60_000).await;
    s.cancel_task(TENANT, cancelled.id).await.unwrap();
    let ended: Vec<_> = s
        .list_attempts(TENANT, cancelled.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.ended)
        .collect();
    assert_eq!(ended, [Some(AttemptEnd::Cancelled)]);
}

/// Another tenant learns nothing, not even that the task exists; a sync
/// call has no attempts (its record is its one run).
pub async fn attempts_are_the_tasks_tenants_only(s: &dyn Store) {
    let t = task("f", TaskKind::Async);
    insert(s, &t).await;
    claim(s, &t, "n", 60_000).await;
    assert_eq!(s.list_attempts(TENANT, t.id).await.unwrap().len(), 1);
    assert!(s.list_attempts("other", t.id).await.unwrap().is_empty());
    assert!(
        s.list_attempts(TENANT, TaskId::new())
            .await
            .unwrap()
            .is_empty()
    );

    let theirs = task_of("other", "f", TaskKind::Async);
    insert(s, &theirs).await;
    claim(s, &theirs, "n", 60_000).await;
    assert_eq!(s.list_attempts("other", theirs.id).await.unwrap().len(), 1);
    assert!(s.list_attempts(TENANT, theirs.id).await.unwrap().is_empty());

    let call = insert_sync_call(s, "n").await;
    assert!(s.list_attempts(TENANT, call.id).await.unwrap().is_empty());
}
