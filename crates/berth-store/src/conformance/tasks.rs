//! Conformance cases for task records: what an insert keeps, listing,
//! counting, idempotent submission and expiry. A backend runs them through
//! [`conformance_tests!`](crate::conformance_tests) (see
//! [`crate::conformance`]).

use std::collections::BTreeSet;

use berth_core::{Outcome, TaskFilter, TaskKind, TaskStatus, now_ms};

use super::{TENANT, claim, fence, finish, get, ids, insert, insert_sync_call, task, task_of};
use crate::{Idempotent, Store};

/// Every field a caller sets survives the trip, for a queued async task and
/// for a sync call recorded already running.
pub async fn a_task_reads_back_as_inserted(s: &dyn Store) {
    let queued = task("f", TaskKind::Async);
    insert(s, &queued).await;
    assert_eq!(get(s, &queued).await, queued);
    let call = insert_sync_call(s, "n").await;
    assert_eq!(get(s, &call).await, call);
    assert!(
        s.get_task(TENANT, berth_core::TaskId::new())
            .await
            .unwrap()
            .is_none()
    );
    s.ping().await.expect("a working store answers a ping");
}

pub async fn pagination_walks_every_task_once(s: &dyn Store) {
    let mut expected = Vec::new();
    for i in 0..25 {
        let t = task(if i % 2 == 0 { "even" } else { "odd" }, TaskKind::Async);
        expected.push(t.id);
        insert(s, &t).await;
        // Another tenant's tasks interleave and must not show.
        insert(s, &task_of("u", "even", TaskKind::Async)).await;
    }
    let mut seen = Vec::new();
    let mut filter = TaskFilter {
        limit: 10,
        ..Default::default()
    };
    let mut pages = 0;
    loop {
        let page = s.list_tasks(TENANT, &filter).await.unwrap();
        pages += 1;
        assert!(page.tasks.len() <= 10, "a page holds at most limit tasks");
        seen.extend(ids(&page.tasks));
        match page.next {
            Some(n) => filter.before = Some(n),
            None => break,
        }
    }
    expected.reverse();
    assert_eq!(seen, expected, "newest first, no gaps, no repeats");
    assert_eq!(pages, 3);

    let list = |function: Option<&str>, status: Option<TaskStatus>| TaskFilter {
        function: function.map(Into::into),
        status,
        limit: 100,
        ..Default::default()
    };
    let even = s
        .list_tasks(TENANT, &list(Some("even"), None))
        .await
        .unwrap();
    assert_eq!(even.tasks.len(), 13);
    assert!(even.tasks.iter().all(|t| t.function == "even"));
    assert!(even.next.is_none(), "one page holds them all");
    let running = s
        .list_tasks(TENANT, &list(None, Some(TaskStatus::Running)))
        .await
        .unwrap();
    assert!(running.tasks.is_empty());
    let queued = s
        .list_tasks(TENANT, &list(Some("odd"), Some(TaskStatus::Queued)))
        .await
        .unwrap();
    assert_eq!(queued.tasks.len(), 12, "filters combine");
}

/// Queue quotas are checked against these counts on every submission.
pub async fn count_tasks_counts_one_tenant_in_one_status(s: &dyn Store) {
    let tasks: Vec<_> = (0..3).map(|_| task("f", TaskKind::Async)).collect();
    for t in &tasks {
        insert(s, t).await;
    }
    insert(s, &task_of("u", "f", TaskKind::Async)).await;
    claim(s, &tasks[0], "n", 60_000).await;
    let second = claim(s, &tasks[1], "n", 60_000).await;
    assert!(
        s.finish_task(fence(&second), &finish(Outcome::succeeded()))
            .await
            .unwrap()
    );
    let count =
        |tenant: &'static str, status| async move { s.count_tasks(tenant, status).await.unwrap() };
    assert_eq!(count(TENANT, TaskStatus::Queued).await, 1);
    assert_eq!(count(TENANT, TaskStatus::Running).await, 1);
    assert_eq!(count(TENANT, TaskStatus::Succeeded).await, 1);
    assert_eq!(count(TENANT, TaskStatus::Failed).await, 0);
    assert_eq!(count("u", TaskStatus::Queued).await, 1);
    assert_eq!(count("nobody", TaskStatus::Queued).await, 0);
}

pub async fn idempotency_keys_return_the_first_task(s: &dyn Store) {
    assert!(!s.idempotency_key_used(TENANT, "k1").await.unwrap());
    let first = task("f", TaskKind::Async);
    assert!(matches!(
        s.insert_task_idempotent(&first, "k1", "d1").await.unwrap(),
        Idempotent::Inserted
    ));
    assert!(s.idempotency_key_used(TENANT, "k1").await.unwrap());
    assert!(
        !s.idempotency_key_used("u", "k1").await.unwrap(),
        "keys are per tenant"
    );
    let again = task("f", TaskKind::Async);
    match s.insert_task_idempotent(&again, "k1", "d1").await.unwrap() {
        Idempotent::Existing { task, same_request } => {
            assert_eq!(*task, first, "the retry gets the first task back");
            assert!(same_request);
        }
        other => panic!("expected the first task, got {other:?}"),
    }
    match s.insert_task_idempotent(&again, "k1", "d2").await.unwrap() {
        Idempotent::Existing { task, same_request } => {
            assert_eq!(task.id, first.id);
            assert!(
                !same_request,
                "another request under a used key is told apart"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(s.get_task(TENANT, again.id).await.unwrap().is_none());

    // Once the first task ran, a retry still finds it, with its result.
    let claimed = claim(s, &first, "n", 60_000).await;
    assert!(
        s.finish_task(fence(&claimed), &finish(Outcome::succeeded()))
            .await
            .unwrap()
    );
    match s.insert_task_idempotent(&again, "k1", "d1").await.unwrap() {
        Idempotent::Existing { task, .. } => assert_eq!(task.status, TaskStatus::Succeeded),
        other => panic!("expected the first task, got {other:?}"),
    }

    let other = task_of("u", "f", TaskKind::Async);
    assert!(
        matches!(
            s.insert_task_idempotent(&other, "k1", "d2").await.unwrap(),
            Idempotent::Inserted
        ),
        "keys are per tenant"
    );
    let fresh = task("f", TaskKind::Async);
    assert!(matches!(
        s.insert_task_idempotent(&fresh, "k2", "d1").await.unwrap(),
        Idempotent::Inserted
    ));
    assert_eq!(s.count_tasks(TENANT, TaskStatus::Queued).await.unwrap(), 1);
}

/// Expiry only reclaims what nobody waits on any more, and at most `max`
/// per pass so one pass never holds the database for long.
pub async fn expiry_removes_only_old_finished_tasks(s: &dyn Store) {
    let succeeded = task("f", TaskKind::Async);
    let failed = task_of("u", "f", TaskKind::Async);
    let running = task("f", TaskKind::Async);
    for (t, outcome) in [
        (&succeeded, Some(Outcome::succeeded())),
        (&failed, Some(Outcome::exited(1, ""))),
        (&running, None),
    ] {
        insert(s, t).await;
        let claimed = claim(s, t, "n", 60_000).await;
        if let Some(o) = outcome {
            assert!(s.finish_task(fence(&claimed), &finish(o)).await.unwrap());
        }
    }
    let cancelled = task("f", TaskKind::Async);
    insert(s, &cancelled).await;
    s.cancel_task(TENANT, cancelled.id).await.unwrap();
    let waiting = task("f", TaskKind::Async);
    insert(s, &waiting).await;

    assert!(
        s.expire_tasks(now_ms() - 60_000, 100)
            .await
            .unwrap()
            .is_empty(),
        "nothing ended that long ago"
    );
    let later = now_ms() + 60_000;
    let first = s.expire_tasks(later, 2).await.unwrap();
    assert_eq!(first.len(), 2, "a pass deletes at most max");
    let second = s.expire_tasks(later, 2).await.unwrap();
    assert_eq!(second.len(), 1);
    assert!(s.expire_tasks(later, 2).await.unwrap().is_empty());

    let gone: BTreeSet<_> = first.into_iter().chain(second).collect();
    assert_eq!(
        gone,
        BTreeSet::from([succeeded.id, failed.id, cancelled.id]),
        "every finished task of every tenant, each once"
    );
    for t in [&succeeded, &failed, &cancelled] {
        assert!(s.get_task(&t.tenant, t.id).await.unwrap().is_none());
    }
    assert_eq!(get(s, &running).await.status, TaskStatus::Running);
    assert_eq!(get(s, &waiting).await.status, TaskStatus::Queued);
}
