//! A replica that shuts down hands its unfinished attempts back to the
//! queue uncounted, and another replica runs them as the same attempt;
//! whatever the drained attempt would still write is refused by its
//! fence, and its output, under its own epoch, is never the task's.

use berth_core::{ErrorCode, TaskError};
use berth_store::{Fence, Finish};

use super::*;
use crate::testing::Fault;

pub(super) async fn a_drained_attempt_goes_back_uncounted_and_another_replica_runs_it(
    backend: Backend,
) {
    let Some(set) = Set::new(backend, cfg(), cfg()).await else {
        return;
    };
    deploy(&set.a, ALPHA, "f", &["echo-upper"]).await;
    set.a.executor.inject(Fault::Hang, 1);
    set.a.start_background();
    let t = submit(&set.a, ALPHA, "f", "x").await;
    eventually("A's attempt to hang", async || set.a.executor.fired() == 1).await;

    within("A's shutdown", set.a.shut_down(Duration::from_millis(50))).await;
    eventually("A's attempt to be over", async || {
        set.a.tasks.running_tasks(ALPHA) == 0
    })
    .await;
    let back = task(&set.b, ALPHA, t.id).await;
    assert_eq!(
        (back.status, back.attempt, back.epoch),
        (TaskStatus::Queued, 0, 1)
    );
    assert_eq!((back.started_at, &back.error), (None, &None));

    set.b.start_background();
    let done = finished(&set.b, ALPHA, t.id).await;
    assert_ended(&done, TaskStatus::Succeeded, None, Some(0));
    assert_eq!(
        (done.attempt, done.epoch),
        (1, 2),
        "the same attempt, a new claim"
    );
    assert_eq!(done.node.as_deref(), Some(B));

    // The drained claim writes late: its output goes under its own epoch,
    // its record changes are refused.
    let mut late_output = set
        .a
        .payloads()
        .create(t.id, PayloadKind::Output, 1)
        .expect("blobs");
    late_output.write(b"late").await.expect("write");
    late_output.commit().await.expect("commit");
    let stale = Fence { id: t.id, epoch: 1 };
    let store = set.a.store();
    let late = Finish::failed(TaskError::new(ErrorCode::Lost, "late"));
    assert!(!store.finish_task(stale, &late).await.expect("finish"));
    assert!(!store.requeue_task(stale).await.expect("requeue"));
    assert!(!store.release_task(stale).await.expect("release"));

    assert_eq!(task(&set.a, ALPHA, t.id).await, done, "nothing changed");
    assert_eq!(
        payload(&set.a, &done, PayloadKind::Output).await.unwrap(),
        "X"
    );
    assert_eq!(
        attempts(&set.a, ALPHA, t.id).await,
        [
            (1, 1, A.into(), Some(AttemptEnd::Released)),
            (1, 2, B.into(), Some(AttemptEnd::Finished)),
        ]
    );
    assert!(
        started(&set.a).is_empty(),
        "A's attempt hung before the fake"
    );
    assert_eq!(started(&set.b), [t.id]);
}
