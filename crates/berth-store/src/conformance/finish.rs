//! Conformance cases for how a task ends: recording an outcome, refusing
//! a late writer, cancelling. A backend runs them through
//! [`conformance_tests!`](crate::conformance_tests) (see
//! [`crate::conformance`]).

use berth_core::{Cancel, ErrorCode, Outcome, TaskError, TaskKind, TaskStatus, Timing, Usage};

use super::{TENANT, claim, fence, finish, get, insert, insert_sync_call, lease, task};
use crate::{Fence, Finish, Store};

pub async fn a_finish_records_outcome_usage_and_timing(s: &dyn Store) {
    let t = task("f", TaskKind::Async);
    insert(s, &t).await;
    let claimed = s.claim_queued(&lease("n", 60_000), 1, &[]).await.unwrap();
    let store_wait = claimed[0].timing.queued_ms;
    assert!(
        store_wait.is_some(),
        "a claim records how long the task queued"
    );
    let usage = Usage {
        cpu_ms: Some(5),
        peak_memory_bytes: Some(1 << 20),
        wall_ms: Some(9),
    };
    let timing = Timing {
        queued_ms: Some(7),
        pull_ms: Some(1),
        start_ms: Some(2),
        run_ms: Some(3),
    };
    let end = Finish {
        outcome: Outcome::exited(3, "boom\n"),
        usage: usage.clone(),
        timing: timing.clone(),
        output_bytes: Some(42),
        durable: true,
    };
    assert!(s.finish_task(fence(&claimed[0]), &end).await.unwrap());

    let got = get(s, &t).await;
    assert_eq!(got.status, TaskStatus::Failed);
    assert_eq!(got.exit_code, Some(3));
    assert_eq!(got.error, end.outcome.error, "code and message read back");
    assert_eq!(got.usage, usage);
    assert_eq!(
        got.timing,
        Timing {
            queued_ms: store_wait.map(|q| q + 7),
            ..timing
        },
        "the executor's wait adds to the time spent in the store's queue"
    );
    assert_eq!(got.output_bytes, Some(42));
    assert_eq!(
        got.input_bytes, t.input_bytes,
        "a finish keeps the input size"
    );
    assert!(got.finished_at >= got.started_at && got.finished_at.is_some());

    // A sync call's end need not be durable, but must read back at once.
    let call = insert_sync_call(s, "n").await;
    let quick = Finish {
        durable: false,
        ..finish(Outcome::succeeded())
    };
    assert!(s.finish_task(fence(&call), &quick).await.unwrap());
    let got = get(s, &call).await;
    assert_eq!(
        (got.status, got.exit_code, got.error),
        (TaskStatus::Succeeded, Some(0), None)
    );
}

/// Codes are stored by name and parsed back: one the backend cannot hold
/// or read would turn a task's end into a corrupt record.
pub async fn every_error_code_round_trips(s: &dyn Store) {
    for &code in ErrorCode::ALL {
        let t = task("f", TaskKind::Async);
        insert(s, &t).await;
        let claimed = claim(s, &t, "n", 60_000).await;
        let error = TaskError::new(code, format!("{code}: it happened"));
        assert!(
            s.finish_task(fence(&claimed), &finish(Outcome::failed(error.clone())))
                .await
                .unwrap()
        );
        let got = get(s, &t).await;
        assert_eq!(got.error, Some(error), "{code} reads back as itself");
        assert_eq!(got.status, code.status(), "{code} keeps its status");
    }
}

/// The claim's epoch fences writers: an executor that lost its claim
/// (requeued, then claimed again) cannot write over the one running now.
pub async fn a_stale_attempt_cannot_finish_a_task(s: &dyn Store) {
    let t = task("f", TaskKind::Async);
    insert(s, &t).await;
    for epoch in [0, 1] {
        assert!(
            !s.finish_task(Fence { id: t.id, epoch }, &finish(Outcome::succeeded()))
                .await
                .unwrap(),
            "a queued task has no claim to finish"
        );
    }
    let first = claim(s, &t, "n", 60_000).await;
    assert!(s.requeue_task(fence(&first)).await.unwrap());
    let second = claim(s, &t, "n", 60_000).await;
    assert_eq!(second.attempt, 2);

    let late = finish(Outcome::exited(1, "late"));
    assert!(
        !s.finish_task(fence(&first), &late).await.unwrap(),
        "the first claim is stale once the second runs"
    );
    assert_eq!(get(s, &t).await.status, TaskStatus::Running);
    assert!(
        s.finish_task(fence(&second), &finish(Outcome::succeeded()))
            .await
            .unwrap()
    );
    assert!(
        !s.finish_task(fence(&second), &late).await.unwrap(),
        "a claim is finished once"
    );
    let got = get(s, &t).await;
    assert_eq!(
        (got.status, got.exit_code, got.error),
        (TaskStatus::Succeeded, Some(0), None),
        "the first finish stands"
    );
}

/// A cancel or a recovery wins against the executor still running the
/// attempt: its finish is refused and changes nothing.
pub async fn a_task_no_longer_running_cannot_be_finished(s: &dyn Store) {
    let ok = || finish(Outcome::succeeded());

    let cancelled = task("f", TaskKind::Async);
    insert(s, &cancelled).await;
    let claimed = claim(s, &cancelled, "n", 60_000).await;
    assert!(matches!(
        s.cancel_task(TENANT, cancelled.id).await.unwrap(),
        Some(Cancel::Running { .. })
    ));
    assert!(!s.finish_task(fence(&claimed), &ok()).await.unwrap());
    let got = get(s, &cancelled).await;
    assert_eq!(got.status, TaskStatus::Cancelled, "the cancel stands");
    assert_eq!(got.error.map(|e| e.code), Some(ErrorCode::Cancelled));

    let mut lost = task("f", TaskKind::Async);
    lost.max_attempts = 1;
    insert(s, &lost).await;
    let claimed = claim(s, &lost, "n", -1).await;
    assert_eq!(s.recover(None).await.unwrap().failed, [lost.id]);
    assert!(!s.finish_task(fence(&claimed), &ok()).await.unwrap());
    let got = get(s, &lost).await;
    assert_eq!(got.status, TaskStatus::Failed, "the recovery stands");
    assert_eq!(got.error.map(|e| e.code), Some(ErrorCode::Lost));

    let requeued = task("f", TaskKind::Async);
    let released = task("f", TaskKind::Async);
    insert(s, &requeued).await;
    insert(s, &released).await;
    let requeued_claim = claim(s, &requeued, "n", -1).await;
    let released_claim = claim(s, &released, "n", 60_000).await;
    assert!(s.release_task(fence(&released_claim)).await.unwrap());
    assert_eq!(s.recover(None).await.unwrap().requeued, [requeued.id]);
    for (t, c) in [(&requeued, &requeued_claim), (&released, &released_claim)] {
        assert!(
            !s.finish_task(fence(c), &ok()).await.unwrap(),
            "a task handed back to the queue is not finished"
        );
        let got = get(s, t).await;
        assert_eq!((got.status, got.error), (TaskStatus::Queued, None));
    }

    let call = insert_sync_call(s, "n").await;
    assert_eq!(s.recover(Some("n")).await.unwrap().failed, [call.id]);
    assert!(
        !s.finish_task(fence(&call), &ok()).await.unwrap(),
        "a sync call failed by recovery stays failed"
    );
}

pub async fn cancel_and_tenancy(s: &dyn Store) {
    let a = task("f", TaskKind::Async);
    let b = task("f", TaskKind::Async);
    insert(s, &a).await;
    insert(s, &b).await;
    assert_eq!(
        s.cancel_task("other", a.id).await.unwrap(),
        None,
        "another tenant cannot cancel, or learn the task exists"
    );
    assert!(s.get_task("other", a.id).await.unwrap().is_none());
    assert_eq!(s.count_tasks("other", TaskStatus::Queued).await.unwrap(), 0);
    let other = s
        .list_tasks(
            "other",
            &berth_core::TaskFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(other.tasks.is_empty() && other.next.is_none());

    assert_eq!(
        s.cancel_task(TENANT, a.id).await.unwrap(),
        Some(Cancel::Dequeued)
    );
    let got = get(s, &a).await;
    assert_eq!(got.status, TaskStatus::Cancelled);
    assert_eq!(got.error.map(|e| e.code), Some(ErrorCode::Cancelled));
    assert!(got.finished_at.is_some());

    let claimed = s.claim_queued(&lease("n", 60_000), 5, &[]).await.unwrap();
    assert_eq!(claimed.len(), 1, "a cancelled task is never claimed");
    assert_eq!(
        s.cancel_task(TENANT, b.id).await.unwrap(),
        Some(Cancel::Running {
            lease_owner: Some("n".into())
        }),
        "the lease owner is named so it can be told to stop"
    );
    assert!(
        !s.finish_task(fence(&claimed[0]), &finish(Outcome::succeeded()))
            .await
            .unwrap()
    );
    assert_eq!(
        s.cancel_task(TENANT, b.id).await.unwrap(),
        Some(Cancel::AlreadyFinished(TaskStatus::Cancelled))
    );

    let call = insert_sync_call(s, "node-7").await;
    assert_eq!(
        s.cancel_task(TENANT, call.id).await.unwrap(),
        Some(Cancel::Running {
            lease_owner: Some("node-7".into())
        })
    );

    let done = task("f", TaskKind::Async);
    insert(s, &done).await;
    let claimed = claim(s, &done, "n", 60_000).await;
    assert!(
        s.finish_task(fence(&claimed), &finish(Outcome::succeeded()))
            .await
            .unwrap()
    );
    assert_eq!(
        s.cancel_task(TENANT, done.id).await.unwrap(),
        Some(Cancel::AlreadyFinished(TaskStatus::Succeeded))
    );
    let got = get(s, &done).await;
    assert_eq!(
        (got.status, got.error),
        (TaskStatus::Succeeded, None),
        "a cancel after the end changes nothing"
    );
}
