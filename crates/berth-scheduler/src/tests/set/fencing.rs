//! A claim is fenced by its epoch: once another replica took a task over
//! (its lease lapsed, its replica restarted), nothing the first claim's
//! holder writes later changes the task, and its output, stored under its
//! own epoch, is never the task's. The task's attempts say who ran what
//! and how each claim ended.

use berth_core::{ErrorCode, TaskError};
use berth_store::{Fence, Finish};
use futures::TryStreamExt;

use super::*;
use crate::testing::Fault;

/// A committed payload read whole, by the epoch that wrote it.
async fn stored(m: &Manager, id: TaskId, kind: PayloadKind, epoch: i64) -> Option<String> {
    let blob = m.payloads().open(id, kind, epoch).await.expect("blobs")?;
    let bytes: Vec<u8> = blob
        .stream
        .map_ok(|b| b.to_vec())
        .try_concat()
        .await
        .expect("readable");
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// A runs a task to its end but is cut off before it can record it; its
/// lease lapses, B's reaper (A cannot hold the reaper while cut off)
/// requeues the task and B runs it again. When A comes back, its finish
/// is refused, and the task's output is B's.
pub(super) async fn a_replica_whose_lease_lapsed_cannot_finish_what_another_ran(backend: Backend) {
    let a = Config {
        // Short, so it lapses soon; one slot, so A claims nothing more
        // while its finish waits.
        lease: Duration::from_millis(500),
        async_concurrency: 1,
        ..cfg()
    };
    let b = Config {
        // Long enough that B's own claim never lapses under a loaded
        // machine; B's reaper looks every second.
        lease: Duration::from_secs(3),
        ..cfg()
    };
    let Some(set) = Set::new(backend, a, b).await else {
        return;
    };
    // `env` prints the attempt's variables, BERTH_ATTEMPT among them, so
    // each attempt's output is its own.
    deploy(&set.a, ALPHA, "f", &["env"]).await;
    let cut_off = set.a_store.close().await;
    set.a.start_background();
    let t = submit(&set.a, ALPHA, "f", "").await;
    eventually("A to run its attempt to the end", async || {
        set.a.fake().exit_of(t.id).is_some()
    })
    .await;

    set.b.start_background();
    let done = finished(&set.b, ALPHA, t.id).await;
    assert_ended(&done, TaskStatus::Succeeded, None, Some(0));
    assert_eq!((done.attempt, done.epoch), (2, 2), "{done:?}");
    assert_eq!(done.node.as_deref(), Some(B));

    drop(cut_off);
    let late = (Fence { id: t.id, epoch: 1 }, false);
    eventually("A's late finish to be refused", async || {
        set.a_store.record().finishes.contains(&late)
    })
    .await;
    assert_eq!(task(&set.a, ALPHA, t.id).await, done, "A changed nothing");
    let output = payload(&set.a, &done, PayloadKind::Output).await.unwrap();
    assert!(output.contains("BERTH_ATTEMPT=2\n"), "{output}");
    assert!(!output.contains("BERTH_ATTEMPT=1\n"), "{output}");
    // A did write its output, under its own epoch, where nobody reads.
    let a_output = stored(&set.a, t.id, PayloadKind::Output, 1).await;
    let a_output = a_output.expect("A's output is stored");
    assert!(a_output.contains("BERTH_ATTEMPT=1\n"), "{a_output}");

    assert_eq!(
        attempts(&set.b, ALPHA, t.id).await,
        [
            (1, 1, A.into(), Some(AttemptEnd::Expired)),
            (2, 2, B.into(), Some(AttemptEnd::Finished)),
        ]
    );
    // B's reaper did it; A, cut off, never held the reaper.
    assert!(set.b_store.record().recoveries >= 1);
    assert_eq!(set.a_store.record().recoveries, 0);
    assert!(!set.a_store.record().held(REAPER).0);
    assert_eq!((started(&set.a), started(&set.b)), (vec![t.id], vec![t.id]));
}

/// node-a dies running a task (its old life lingers, frozen, as a
/// process cut off from the set would); its next life recovers what it
/// held, the task goes to B, and when the old life finally shuts down,
/// what it hands back is refused.
pub(super) async fn a_restarted_replica_gives_up_its_claims_to_the_others(backend: Backend) {
    // One slot, which the hanging attempt keeps: the old life claims
    // nothing more.
    let a = Config {
        async_concurrency: 1,
        ..cfg()
    };
    let Some(set) = Set::new(backend, a, cfg()).await else {
        return;
    };
    let mut config = function(&["echo-upper"]);
    config.timeout_secs = 3_600;
    deploy_config(&set.a, ALPHA, "f", config).await;
    set.a.executor.inject(Fault::Hang, 1);
    set.a.start_background();
    let t = submit(&set.a, ALPHA, "f", "x").await;
    eventually("A's attempt to hang", async || set.a.executor.fired() == 1).await;

    let next_life = set.a.replica(A);
    next_life.tasks.recover_at_start().await.expect("recovery");
    let back = task(&set.b, ALPHA, t.id).await;
    assert_eq!((back.status, back.attempt), (TaskStatus::Queued, 1));

    set.b.start_background();
    let done = finished(&set.b, ALPHA, t.id).await;
    assert_ended(&done, TaskStatus::Succeeded, None, Some(0));
    assert_eq!((done.attempt, done.epoch), (2, 2), "{done:?}");
    assert_eq!(done.node.as_deref(), Some(B));
    assert_eq!(
        payload(&set.b, &done, PayloadKind::Output).await.unwrap(),
        "X"
    );

    // The old life's drain hands its attempt back: refused by the fence.
    within(
        "the old life's shutdown",
        set.a.shut_down(Duration::from_millis(50)),
    )
    .await;
    eventually("the old attempt to be over", async || {
        set.a.tasks.running_tasks(ALPHA) == 0
    })
    .await;
    assert_eq!(task(&set.a, ALPHA, t.id).await, done, "nothing changed");
    assert_eq!(
        attempts(&set.a, ALPHA, t.id).await,
        [
            (1, 1, A.into(), Some(AttemptEnd::Lost)),
            (2, 2, B.into(), Some(AttemptEnd::Finished)),
        ]
    );
    assert!(
        started(&set.a).is_empty(),
        "A's attempt hung before the fake"
    );
    assert_eq!(started(&set.b), [t.id]);
    assert!(started(&next_life).is_empty());
    let late = Finish::failed(TaskError::new(ErrorCode::Lost, "late"));
    let stale = Fence { id: t.id, epoch: 1 };
    assert!(
        !set.a
            .store()
            .finish_task(stale, &late)
            .await
            .expect("finish")
    );
}
