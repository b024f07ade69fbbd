//! A TaskManager's life: at shutdown, unfinished async attempts go back
//! to the queue uncounted; at start, what this node left running is
//! requeued (or failed, when no attempt is left), and nothing of another
//! node's is touched.
//!
//! A previous life's leftovers are set up in the store directly (a claim
//! under this node's id that nobody finishes), which is exactly what a
//! crash leaves behind; everything checked goes through the TaskManager.

use std::sync::Arc;

use berth_blobs::{Blobs, Payloads};
use berth_core::{ErrorCode, TaskError, TaskKind};
use berth_store::{Fence, Finish, Lease, SqliteStore, Store};
use tokio_util::sync::CancellationToken;

use super::gated::GatedStore;
use super::*;
use crate::TaskManager;
use crate::testing::{Executor, Exit, FakeExecutor, Fault, FaultyExecutor};

const NODE: &str = "node-a";
/// A lease nobody's lease loop touches during a test.
const LONG_LEASE_MS: i64 = 60_000;

fn node_cfg() -> Config {
    Config {
        node_id: NODE.into(),
        ..cfg()
    }
}

#[tokio::test]
async fn drain_hands_an_unfinished_attempt_back_uncounted() {
    let m = manager(node_cfg()).await;
    let mut config = function(&["sleep"]);
    config.timeout_secs = 3_600;
    deploy_config(&m, ALPHA, "f", config).await;
    let dispatcher = CancellationToken::new();
    m.tasks.spawn_background(dispatcher.clone());
    let t = submit(&m, ALPHA, "f", "x").await;
    eventually("the attempt to run", async || m.fake().running().len() == 1).await;
    let running = task(&m, ALPHA, t.id).await;
    assert_eq!((running.status, running.attempt), (TaskStatus::Running, 1));

    // Shutdown: the dispatcher stops first, then the drain.
    dispatcher.cancel();
    within("the drain", m.tasks.drain(Duration::from_millis(50))).await;

    let back = task(&m, ALPHA, t.id).await;
    assert_eq!((back.status, back.attempt), (TaskStatus::Queued, 0));
    assert_eq!((back.started_at, back.finished_at), (None, None));
    assert_eq!((&back.error, back.exit_code), (&None, None));
    // Its container was killed, not left running; nothing else ran.
    assert_eq!(m.fake().exit_of(t.id), Some(Exit::Cancelled));
    settled(&m, ALPHA).await;
    assert_eq!(m.fake().started().len(), 1);
    assert_eq!(
        task(&m, ALPHA, t.id).await,
        back,
        "the attempt wrote nothing"
    );

    // The next life runs it again as its first attempt.
    m.start_background();
    eventually("the task to run again", async || {
        let now = task(&m, ALPHA, t.id).await;
        now.status == TaskStatus::Running && m.fake().running().len() == 1
    })
    .await;
    assert_eq!(task(&m, ALPHA, t.id).await.attempt, 1);
    assert_eq!(m.fake().started().len(), 2);
    m.tasks.cancel(ALPHA, t.id).await.expect("cancel");
    settled(&m, ALPHA).await;
}

#[tokio::test]
async fn drain_lets_a_finished_attempt_stand() {
    let m = manager(node_cfg()).await;
    deploy(&m, ALPHA, "f", &["echo-upper"]).await;
    let dispatcher = CancellationToken::new();
    m.tasks.spawn_background(dispatcher.clone());
    let t = submit(&m, ALPHA, "f", "x").await;
    let done = finished(&m, ALPHA, t.id).await;
    dispatcher.cancel();
    within("the drain", m.tasks.drain(Duration::from_millis(50))).await;
    assert_eq!(task(&m, ALPHA, t.id).await, done);
    assert_eq!(done.status, TaskStatus::Succeeded);
}

/// A lease of `owner`'s that nobody's lease loop touches during a test.
fn long_lease(owner: &str) -> Lease {
    Lease {
        owner: owner.into(),
        duration_ms: LONG_LEASE_MS,
    }
}

/// The server stops the dispatcher, then drains: from the stop on, the
/// dispatcher claims nothing, even with work queued and a wake-up
/// pending, or the drain's hand-back would not be final.
#[tokio::test]
async fn a_stopped_dispatcher_claims_nothing_more() {
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.expect("store"));
    let gated = Arc::new(GatedStore::new(sqlite));
    let m = Manager::over(node_cfg(), Arc::clone(&gated) as Arc<dyn Store>);
    m.add_key(ALPHA, ALPHA_KEY).await;
    deploy(&m, ALPHA, "f", &["echo-upper"]).await;
    // Queued, with nobody waiting yet: the wake-up is kept for later.
    let t = submit(&m, ALPHA, "f", "x").await;

    let stopped = CancellationToken::new();
    stopped.cancel();
    m.tasks.spawn_background(stopped);
    // The loops start in order and share the in-memory store's one
    // connection: by the time retention (started after the dispatcher)
    // has asked for its singleton, a claim would have been made.
    eventually("the background loops to run", async || {
        gated.record().held(crate::lifecycle::RETENTION).1 >= 1
    })
    .await;
    assert_eq!(gated.record().claims, 0, "no claim after the stop");
    let still = task(&m, ALPHA, t.id).await;
    assert_eq!((still.status, still.attempt), (TaskStatus::Queued, 0));
    assert!(m.fake().started().is_empty());
}

/// Claims the oldest queued task as `owner` would, leaving it running
/// under a long lease.
async fn claim_as(m: &Manager, owner: &str) -> TaskRecord {
    let claimed = m
        .tasks
        .store
        .claim_queued(&long_lease(owner), 1, &[])
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "one task claimed");
    claimed.into_iter().next().expect("one task")
}

#[tokio::test]
async fn start_up_requeues_what_this_node_left_running_and_nothing_else() {
    let m = manager(node_cfg()).await;
    deploy(&m, ALPHA, "f", &["echo-upper"]).await;
    let mine = submit(&m, ALPHA, "f", "mine").await;
    let theirs = submit(&m, ALPHA, "f", "theirs").await;
    // This node's previous life claimed `mine` and died; another node,
    // alive, holds `theirs`.
    assert_eq!(claim_as(&m, NODE).await.id, mine.id);
    assert_eq!(claim_as(&m, "node-b").await.id, theirs.id);
    let held = task(&m, ALPHA, theirs.id).await;

    m.tasks.recover_at_start().await.expect("recovery");

    let back = task(&m, ALPHA, mine.id).await;
    assert_eq!((back.status, back.attempt), (TaskStatus::Queued, 1));
    assert_eq!((back.started_at, &back.error), (None, &None));
    assert_eq!(task(&m, ALPHA, theirs.id).await, held, "not this node's");

    m.start_background();
    let done = finished(&m, ALPHA, mine.id).await;
    assert_ended(&done, TaskStatus::Succeeded, None, Some(0));
    assert_eq!(done.attempt, 2, "the lost attempt counts");
    assert_eq!(
        payload(&m, &done, PayloadKind::Output).await.unwrap(),
        "MINE"
    );
    settled(&m, ALPHA).await;
    let ran: Vec<_> = m.fake().started().iter().map(|s| s.task_id).collect();
    assert_eq!(ran, [mine.id]);
    assert_eq!(task(&m, ALPHA, theirs.id).await, held);
}

#[tokio::test]
async fn start_up_fails_what_cannot_run_again() {
    let m = manager(Config {
        max_attempts: 1,
        ..node_cfg()
    })
    .await;
    deploy(&m, ALPHA, "f", &["echo-upper"]).await;
    // An async task on its last attempt, and a sync call whose caller is
    // gone with the process.
    let last = submit(&m, ALPHA, "f", "x").await;
    claim_as(&m, NODE).await;
    let mut call = TaskRecord::new(ALPHA, "f", 1, TaskKind::Sync, post(Some(0)));
    call.status = TaskStatus::Running;
    call.attempt = 1;
    call.epoch = 1;
    call.node = Some(NODE.into());
    call.started_at = Some(call.created_at);
    let recorded = m
        .tasks
        .store
        .insert_running(&call, &long_lease(NODE), u32::MAX)
        .await
        .expect("insert");
    assert!(recorded, "no running limit in the way");

    m.tasks.recover_at_start().await.expect("recovery");

    for id in [last.id, call.id] {
        let t = task(&m, ALPHA, id).await;
        assert_ended(&t, TaskStatus::Failed, Some(ErrorCode::Lost), None);
        assert_eq!(t.attempt, 1);
    }
    assert!(m.fake().started().is_empty());
}

/// A node that drains hands its attempt back to the queue, where another
/// replica may claim it at once, as the same attempt number (a handed-back
/// attempt is not counted). The drained attempt's own end, reported a
/// moment later, must not be written over that claim.
#[tokio::test]
async fn a_drained_attempt_writes_nothing_over_the_next_claim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.expect("store"));
    let gated = Arc::new(GatedStore::new(Arc::clone(&sqlite)));
    let executor = Arc::new(FaultyExecutor::new(FakeExecutor::new()));
    let node = TaskManager::new(
        Arc::clone(&gated) as Arc<dyn Store>,
        Payloads::new(Blobs::local(dir.path()).expect("blobs")),
        vec![Arc::clone(&executor) as Arc<dyn Executor>],
        node_cfg(),
    );
    node.deploy(ALPHA, "f", function(&["echo-upper"]))
        .await
        .expect("deploy");
    executor.inject(Fault::Hang, 1);
    let dispatcher = CancellationToken::new();
    node.spawn_background(dispatcher.clone());
    let t = node
        .submit(ALPHA, "f", post(Some(1)), input("x"), None)
        .await
        .expect("submit")
        .task;
    eventually("the attempt to hang", async || executor.fired() == 1).await;

    // The node drains; whatever its killed attempt reports is held back...
    let closed = gated.close().await;
    dispatcher.cancel();
    within("the drain", node.drain(Duration::from_millis(50))).await;
    // ...until another replica has claimed the task.
    let claimed = sqlite
        .claim_queued(&long_lease("node-b"), 1, &[])
        .await
        .expect("claim");
    let ids: Vec<_> = claimed.iter().map(|c| (c.id, c.attempt, c.epoch)).collect();
    assert_eq!(ids, [(t.id, 1, 2)], "the same attempt number, a new epoch");
    drop(closed);
    eventually("the drained attempt to be over", async || {
        node.running_tasks(ALPHA) == 0
    })
    .await;

    let now = node.task(ALPHA, t.id).await.expect("task");
    assert_eq!(
        (now.status, now.attempt),
        (TaskStatus::Running, 1),
        "{now:?}"
    );
    assert_eq!(now.error, None, "{now:?}");
    assert!(executor.inner().started().is_empty());
    // The drained claim's fence opens nothing any more.
    let stale = Fence { id: t.id, epoch: 1 };
    let lost = Finish::failed(TaskError::new(ErrorCode::Lost, "late"));
    assert!(!sqlite.finish_task(stale, &lost).await.expect("finish"));
    assert!(!sqlite.requeue_task(stale).await.expect("requeue"));
    assert!(!sqlite.release_task(stale).await.expect("release"));
    assert_eq!(node.task(ALPHA, t.id).await.expect("task"), now);
    dispatcher.cancel();
}
