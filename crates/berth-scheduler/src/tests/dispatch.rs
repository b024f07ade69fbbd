//! The async queue: a task is claimed, run and its output stored; a run
//! the executor lost is retried while attempts remain and counted; a start
//! the executor refused goes back to the queue uncounted; a start that
//! failed for good fails the task.

use std::sync::Arc;

use berth_core::{AttemptEnd, Cancel, ErrorCode, TaskKind};
use berth_store::{SqliteStore, Store};

use super::gated::GatedStore;
use super::*;
use crate::testing::{ExecError, Exit, Fault};

/// How a task should end. `output` is its stored output (`None`: none
/// stored); `runs` how many attempts the fake itself started.
#[derive(Debug, Clone, Copy)]
struct Want {
    status: TaskStatus,
    code: Option<ErrorCode>,
    exit: Option<i64>,
    attempt: i64,
    runs: usize,
    output: Option<&'static str>,
}

impl Want {
    fn succeeded(output: &'static str) -> Self {
        Self {
            status: TaskStatus::Succeeded,
            code: None,
            exit: Some(0),
            attempt: 1,
            runs: 1,
            output: Some(output),
        }
    }

    fn failed(code: ErrorCode) -> Self {
        Self {
            status: code.status(),
            code: Some(code),
            exit: None,
            attempt: 1,
            runs: 1,
            output: None,
        }
    }

    fn exit(self, exit: i64) -> Self {
        Self {
            exit: Some(exit),
            ..self
        }
    }

    fn output(self, output: &'static str) -> Self {
        Self {
            output: Some(output),
            ..self
        }
    }

    /// The attempt the task ended on, and the fake's runs.
    fn attempts(self, attempt: i64, runs: usize) -> Self {
        Self {
            attempt,
            runs,
            ..self
        }
    }
}

fn timeout(mut c: FunctionConfig, secs: u32) -> FunctionConfig {
    c.timeout_secs = secs;
    c
}

/// Submits "hello" to a function deployed as `config`, with `faults`
/// injected for the next runs, lets the dispatcher run it, and checks how
/// the task ended, its stored output, and that nothing else happened: the
/// fake ran only this task's attempts, every fault fired, no other task.
async fn check(config: FunctionConfig, faults: &[(Fault, usize)], want: Want) {
    let m = manager(cfg()).await;
    let version = deploy_config(&m, ALPHA, "f", config).await;
    for (fault, runs) in faults {
        m.executor.inject(fault.clone(), *runs);
    }
    m.start_background();
    let submitted = submit(&m, ALPHA, "f", "hello").await;
    assert_eq!(
        (submitted.status, submitted.attempt, submitted.kind),
        (TaskStatus::Queued, 0, TaskKind::Async)
    );

    let t = finished(&m, ALPHA, submitted.id).await;
    let case = format!("{faults:?} → {want:?}");
    assert_ended(&t, want.status, want.code, want.exit);
    assert_eq!((t.attempt, t.max_attempts), (want.attempt, 3), "{case}");
    let output = payload(&m, &t, PayloadKind::Output).await;
    match want.output {
        Some(out) => {
            assert_eq!(output.unwrap(), out, "{case}");
            assert_eq!(t.output_bytes, Some(out.len() as i64), "{case}");
        }
        None => {
            assert!(matches!(output, Err(SchedError::NoPayload(_))), "{case}");
            assert_eq!(t.output_bytes, None, "{case}");
        }
    }

    settled(&m, ALPHA).await;
    let started = m.fake().started();
    assert_eq!(started.len(), want.runs, "{case}");
    assert!(
        started
            .iter()
            .all(|s| s.task_id == t.id && s.version == version),
        "{case}"
    );
    let injected: usize = faults.iter().map(|(_, runs)| runs).sum();
    assert_eq!(m.executor.fired(), injected, "{case}");
    assert_eq!(
        all_tasks(&m, ALPHA).await,
        std::slice::from_ref(&t),
        "{case}"
    );
    assert_eq!(task(&m, ALPHA, t.id).await, t, "nothing changed since");
}

#[tokio::test]
async fn a_task_ends_as_its_function_does() {
    let echo = || function(&["echo-upper"]);
    check(echo(), &[], Want::succeeded("HELLO")).await;
    let fail = function(&["fail", "3", "bad input"]);
    let exit_3 = Want::failed(ErrorCode::Exit).exit(3).output("");
    check(fail, &[], exit_3).await;
    let slow = timeout(function(&["sleep"]), 1);
    check(slow, &[], Want::failed(ErrorCode::Timeout).output("")).await;
}

#[tokio::test]
async fn a_lost_attempt_is_counted_and_retried() {
    let echo = || function(&["echo-upper"]);
    let die = Fault::DieMidStream { after_bytes: 2 };
    let lost_once = Want::succeeded("HELLO").attempts(2, 2);
    check(echo(), &[(die.clone(), 1)], lost_once).await;
    check(echo(), &[(Fault::EngineLostMidRun, 1)], lost_once).await;
    let lost_twice = Want::succeeded("HELLO").attempts(3, 3);
    check(echo(), &[(die.clone(), 2)], lost_twice).await;
    let lost_always = Want::failed(ErrorCode::Lost).attempts(3, 3);
    check(echo(), &[(die, 3)], lost_always).await;
    check(echo(), &[(Fault::EngineLostMidRun, 3)], lost_always).await;
}

#[tokio::test]
async fn a_start_that_failed_for_good_fails_the_task_unretried() {
    let echo = || function(&["echo-upper"]);
    let cases = [
        (
            ExecError::ImageNotFound("img".into()),
            ErrorCode::ImageMissing,
        ),
        (
            ExecError::PullFailed {
                image: "img".into(),
                message: "denied".into(),
            },
            ErrorCode::PullFailed,
        ),
        (
            ExecError::Instance("agent".into()),
            ErrorCode::InstanceFailed,
        ),
        (ExecError::Engine("500".into()), ErrorCode::EngineError),
    ];
    for (error, code) in cases {
        let want = Want::failed(code).attempts(1, 0);
        check(echo(), &[(Fault::FailStart(error), 1)], want).await;
    }
}

#[tokio::test]
async fn an_engine_down_at_start_is_a_refusal_not_an_attempt() {
    let down = Fault::FailStart(ExecError::EngineUnavailable("down".into()));
    let want = Want::succeeded("HELLO");
    check(function(&["echo-upper"]), &[(down, 2)], want).await;
}

#[tokio::test]
async fn a_hung_attempt_ends_at_its_timeout() {
    let config = timeout(function(&["echo-upper"]), 1);
    let want = Want::failed(ErrorCode::Timeout).attempts(1, 0).output("");
    check(config, &[(Fault::Hang, 1)], want).await;
}

#[tokio::test]
async fn a_refused_start_goes_back_to_the_queue_uncounted_until_there_is_room() {
    // One slot, so the task sits in the queue while that slot backs off.
    let m = manager(Config {
        async_concurrency: 1,
        ..cfg()
    })
    .await;
    deploy(&m, ALPHA, "f", &["echo-upper"]).await;
    m.executor.inject_for("f", Fault::RefuseCapacity);
    m.start_background();
    let t = submit(&m, ALPHA, "f", "hello").await;

    eventually("a refusal to put the task back, uncounted", async || {
        let now = task(&m, ALPHA, t.id).await;
        m.executor.fired() >= 1 && now.status == TaskStatus::Queued && now.attempt == 0
    })
    .await;
    let queued = task(&m, ALPHA, t.id).await;
    assert_eq!(queued.started_at, None);
    assert_eq!(queued.error, None);
    assert!(m.fake().started().is_empty(), "nothing ran");

    m.executor.clear();
    let done = finished(&m, ALPHA, t.id).await;
    assert_ended(&done, TaskStatus::Succeeded, None, Some(0));
    assert_eq!(done.attempt, 1, "refusals never count");
    assert_eq!(
        payload(&m, &done, PayloadKind::Output).await.unwrap(),
        "HELLO"
    );
    settled(&m, ALPHA).await;
    assert_eq!(m.fake().started().len(), 1);
}

#[tokio::test]
async fn cancelling_a_running_task_kills_it_and_stores_no_output() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &["echo-upper"]).await;
    m.executor.inject(Fault::Hang, 1);
    m.start_background();
    let t = submit(&m, ALPHA, "f", "hello").await;
    eventually("the attempt to hang", async || m.executor.fired() == 1).await;

    let cancelled = m.tasks.cancel(ALPHA, t.id).await.expect("cancel");
    assert_eq!(
        cancelled,
        Cancel::Running {
            lease_owner: Some("local".into())
        }
    );
    let done = finished(&m, ALPHA, t.id).await;
    assert_ended(
        &done,
        TaskStatus::Cancelled,
        Some(ErrorCode::Cancelled),
        None,
    );
    assert_eq!(done.attempt, 1);
    // Once the attempt is over: no output, not even a partial one.
    settled(&m, ALPHA).await;
    let output = payload(&m, &done, PayloadKind::Output).await;
    assert!(
        matches!(output, Err(SchedError::NoPayload(_))),
        "{output:?}"
    );
    assert_eq!(task(&m, ALPHA, t.id).await, done, "the cancel stands");
    assert!(m.fake().started().is_empty());
    assert_eq!(m.executor.fired(), 1);
    let again = m.tasks.cancel(ALPHA, t.id).await;
    assert!(
        matches!(again, Err(SchedError::TaskFinished(_))),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_cancelled_queued_task_never_runs() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &["echo-upper"]).await;
    let doomed = submit(&m, ALPHA, "f", "doomed").await;
    let cancelled = m.tasks.cancel(ALPHA, doomed.id).await.expect("cancel");
    assert_eq!(cancelled, Cancel::Dequeued);

    // A later task runs; the queue is first in, first out, so had the
    // cancelled one been going to run, it would have by then.
    m.start_background();
    let later = submit(&m, ALPHA, "f", "later").await;
    finished(&m, ALPHA, later.id).await;
    settled(&m, ALPHA).await;
    let ran: Vec<_> = m.fake().started().iter().map(|s| s.task_id).collect();
    assert_eq!(ran, [later.id]);
    let t = task(&m, ALPHA, doomed.id).await;
    assert_ended(&t, TaskStatus::Cancelled, Some(ErrorCode::Cancelled), None);
    assert_eq!(t.attempt, 0);
}

#[tokio::test]
async fn output_past_the_limit_fails_the_task() {
    let limit = 20_000;
    let m = manager(Config {
        max_output_bytes: limit,
        ..cfg()
    })
    .await;
    deploy(&m, ALPHA, "f", &["big"]).await;
    m.start_background();
    let t = submit(&m, ALPHA, "f", "").await;
    let done = finished(&m, ALPHA, t.id).await;

    assert_ended(
        &done,
        TaskStatus::Failed,
        Some(ErrorCode::OutputTooLarge),
        None,
    );
    assert_eq!(done.attempt, 1, "a verdict, not a loss: no retry");
    // What was kept is within the limit, and is what the record says.
    let kept = payload(&m, &done, PayloadKind::Output).await.unwrap();
    assert!(kept.len() as u64 <= limit, "{} bytes kept", kept.len());
    assert_eq!(done.output_bytes, Some(kept.len() as i64));
    settled(&m, ALPHA).await;
    assert_eq!(m.fake().started().len(), 1);
    assert_eq!(
        m.fake().exit_of(t.id),
        Some(Exit::CallerGone),
        "the function was killed, not left to write"
    );
}

#[tokio::test]
async fn a_function_deleted_before_its_queued_task_runs_fails_it() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &["echo-upper"]).await;
    deploy(&m, ALPHA, "g", &["echo-upper"]).await;
    let orphan = submit(&m, ALPHA, "f", "x").await;
    m.tasks.delete_function(ALPHA, "f").await.expect("delete");

    let t = task(&m, ALPHA, orphan.id).await;
    assert_ended(
        &t,
        TaskStatus::Failed,
        Some(ErrorCode::FunctionDeleted),
        None,
    );
    assert_eq!(t.attempt, 0, "it never ran");

    // A later task of another function runs; the orphan does not.
    m.start_background();
    let later = submit(&m, ALPHA, "g", "y").await;
    finished(&m, ALPHA, later.id).await;
    settled(&m, ALPHA).await;
    let ran: Vec<_> = m.fake().started().iter().map(|s| s.task_id).collect();
    assert_eq!(ran, [later.id]);
    assert_eq!(task(&m, ALPHA, orphan.id).await, t, "nothing changed since");
}

#[tokio::test]
async fn the_queue_runs_oldest_first() {
    let m = manager(Config {
        async_concurrency: 1,
        ..cfg()
    })
    .await;
    deploy(&m, ALPHA, "f", &["echo-upper"]).await;
    let mut ids = Vec::new();
    for body in ["a", "b", "c", "d"] {
        ids.push(submit(&m, ALPHA, "f", body).await.id);
    }
    m.start_background();
    for id in &ids {
        let t = finished(&m, ALPHA, *id).await;
        assert_eq!((t.status, t.attempt), (TaskStatus::Succeeded, 1));
    }
    let ran: Vec<_> = m.fake().started().iter().map(|s| s.task_id).collect();
    assert_eq!(ran, ids);
}

#[tokio::test]
async fn an_unfinished_task_has_no_payload_yet() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &["echo-upper"]).await;
    let t = submit(&m, ALPHA, "f", "x").await;
    for kind in [PayloadKind::Output, PayloadKind::Logs] {
        let read = payload(&m, &t, kind).await;
        assert!(
            matches!(read, Err(SchedError::TaskNotFinished(TaskStatus::Queued))),
            "{read:?}"
        );
    }
    let waited = m
        .tasks
        .wait_finished(ALPHA, t.id, Duration::from_millis(50))
        .await
        .expect("readable");
    assert_eq!(waited, None, "nothing runs it");
}

/// A claim is checked against the tenants' running quotas once made; when
/// that check cannot be made (the store failed to count), what was
/// claimed goes back to the queue uncounted, rather than sit claimed and
/// unrun until its lease lapses and costs it an attempt.
#[tokio::test]
async fn a_claim_that_cannot_be_checked_is_handed_back_uncounted() {
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.expect("store"));
    let gated = Arc::new(GatedStore::new(sqlite));
    let m = Manager::over(cfg(), Arc::clone(&gated) as Arc<dyn Store>);
    m.add_key(ALPHA, ALPHA_KEY).await;
    deploy(&m, ALPHA, "f", &["echo-upper"]).await;
    let t = submit(&m, ALPHA, "f", "hello").await;
    gated.fail_the_check_after_the_next_claim();
    m.start_background();

    let done = finished(&m, ALPHA, t.id).await;
    assert_ended(&done, TaskStatus::Succeeded, None, Some(0));
    assert_eq!(done.attempt, 1, "the handed-back claim did not count");
    let ends: Vec<_> = m
        .tasks
        .attempts(ALPHA, t.id)
        .await
        .expect("attempts")
        .iter()
        .map(|a| (a.attempt, a.ended))
        .collect();
    assert_eq!(
        ends,
        [
            (1, Some(AttemptEnd::Released)),
            (1, Some(AttemptEnd::Finished))
        ]
    );
    settled(&m, ALPHA).await;
    assert_eq!(m.fake().started().len(), 1);
}
