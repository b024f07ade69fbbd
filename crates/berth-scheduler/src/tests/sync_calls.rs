//! Synchronous calls: what the caller gets, what is recorded, and that a
//! call runs exactly one attempt of exactly one task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use berth_core::{Cancel, ErrorCode, TaskKind};
use bytes::Bytes;

use super::*;
use crate::InputStream;
use crate::testing::{ExecError, Fault};

/// How a call should end. `stderr` is what the function wrote there: the
/// stored log, and (trimmed) the tail the result carries.
struct Want {
    status: TaskStatus,
    code: Option<ErrorCode>,
    exit: Option<i64>,
    stdout: &'static str,
    stderr: &'static str,
}

fn ok(stdout: &'static str, stderr: &'static str) -> Want {
    Want {
        status: TaskStatus::Succeeded,
        code: None,
        exit: Some(0),
        stdout,
        stderr,
    }
}

fn failed(code: ErrorCode, exit: Option<i64>, stderr: &'static str) -> Want {
    Want {
        status: code.status(),
        code: Some(code),
        exit,
        stdout: "",
        stderr,
    }
}

/// Calls a function running `command` (with `timeout_secs`) with `body`,
/// and checks the caller's result, the stored task and its logs, and that
/// the fake ran this one attempt and nothing else.
async fn check(command: &[&str], timeout_secs: u32, body: &str, want: Want) {
    let m = manager(cfg()).await;
    let mut config = function(command);
    config.timeout_secs = timeout_secs;
    let version = deploy_config(&m, ALPHA, "f", config).await;

    let (id, stdout, result) = call(&m, ALPHA, "f", body).await.expect("the call starts");

    let outcome = &result.outcome;
    assert_eq!(stdout, want.stdout, "{command:?}");
    assert_eq!(outcome.status, want.status, "{command:?}: {outcome:?}");
    assert_eq!(outcome.code(), want.code, "{command:?}: {outcome:?}");
    assert_eq!(outcome.exit_code, want.exit, "{command:?}: {outcome:?}");
    assert_eq!(result.stderr_tail, want.stderr.trim_end(), "{command:?}");
    // Recorded as the caller was told, on the one attempt of this version.
    let t = task(&m, ALPHA, id).await;
    assert_ended(&t, want.status, want.code, want.exit);
    assert_eq!(t.error, outcome.error, "{command:?}");
    assert_eq!((t.kind, t.attempt, t.version), (TaskKind::Sync, 1, version));
    assert_eq!(
        payload(&m, &t, PayloadKind::Logs).await.unwrap(),
        want.stderr
    );
    let output = payload(&m, &t, PayloadKind::Output).await;
    assert!(
        matches!(output, Err(SchedError::NoPayload(_))),
        "{output:?}"
    );
    // Nothing else ran, nothing else was recorded, nothing is left running.
    settled(&m, ALPHA).await;
    let started = m.fake().started();
    assert_eq!(started.len(), 1, "{command:?}");
    assert_eq!((started[0].task_id, started[0].version), (id, version));
    assert_eq!(all_tasks(&m, ALPHA).await, [t]);
    assert_eq!(m.executor.fired(), 0);
}

#[tokio::test]
async fn a_call_ends_as_its_function_does() {
    check(
        &["echo-upper"],
        60,
        "hello",
        ok("HELLO", "echo-upper: 5 bytes\n"),
    )
    .await;
    check(&[], 60, "abc", ok("ABC", "echo-upper: 3 bytes\n")).await;
    check(&[], 60, "", ok("", "echo-upper: 0 bytes\n")).await;
    let exit_3 = failed(ErrorCode::Exit, Some(3), "bad input");
    check(&["fail", "3", "bad input"], 60, "", exit_3).await;
    let exit_127 = failed(ErrorCode::Exit, Some(127), "fake: unknown command what");
    check(&["what"], 60, "", exit_127).await;
}

#[tokio::test]
async fn a_call_past_its_timeout_is_killed() {
    check(&["sleep"], 1, "", failed(ErrorCode::Timeout, None, "")).await;
}

#[tokio::test]
async fn a_failed_exit_says_why_in_its_message() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &["fail", "3", "bad input"]).await;
    let (_, _, result) = call(&m, ALPHA, "f", "").await.expect("the call starts");
    let error = result.outcome.error.expect("failed");
    assert_eq!(error.message, "function exited with code 3: bad input");
}

/// A body that records whether anyone read it, and ends at once.
fn watched_body() -> (InputStream, Arc<AtomicBool>) {
    let polled = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&polled);
    let body = futures::stream::poll_fn(move |_| {
        flag.store(true, Ordering::SeqCst);
        Poll::Ready(None)
    });
    (body.boxed(), polled)
}

/// A body sent in these pieces, its length not declared.
fn chunked(pieces: &[&'static str]) -> InputStream {
    let chunks: Vec<std::io::Result<Bytes>> = pieces
        .iter()
        .map(|p| Ok(Bytes::from_static(p.as_bytes())))
        .collect();
    futures::stream::iter(chunks).boxed()
}

async fn small_body_tenant() -> Manager {
    let m = manager(cfg()).await;
    let quotas = QuotaOverrides {
        max_body_bytes: Some(10),
        ..QuotaOverrides::default()
    };
    tenant_with(&m, "small", quotas).await;
    deploy(&m, "small", "f", &["echo-upper"]).await;
    m
}

#[tokio::test]
async fn a_body_past_the_limit_while_streaming_is_the_calls_verdict() {
    let m = small_body_tenant().await;
    let call = m
        .tasks
        .invoke("small", "f", post(None), chunked(&["012345", "6789a"]))
        .await
        .expect("nothing says the body is too large before it streams");
    let id = call.task_id;
    let (stdout, result) = finish_call(call).await;

    // The function saw a cut-off body: whatever it did with it (here: exit
    // 1) is not the answer, the platform's verdict is.
    assert_eq!(stdout, "");
    let outcome = &result.outcome;
    assert_eq!(outcome.status, TaskStatus::Failed, "{outcome:?}");
    assert_eq!(outcome.code(), Some(ErrorCode::BodyTooLarge), "{outcome:?}");
    assert_eq!(outcome.exit_code, None, "{outcome:?}");
    assert_eq!(result.stderr_tail, "");
    let t = task(&m, "small", id).await;
    assert_ended(&t, TaskStatus::Failed, Some(ErrorCode::BodyTooLarge), None);
    assert!(t.error.unwrap().message.contains("10 byte limit"));
    // The one attempt ran and is over; nothing else was recorded.
    settled(&m, "small").await;
    assert_eq!(m.fake().started().len(), 1);
    assert_eq!(all_tasks(&m, "small").await.len(), 1);
}

#[tokio::test]
async fn a_body_at_the_limit_is_whole() {
    let m = small_body_tenant().await;
    let call = m
        .tasks
        .invoke("small", "f", post(None), chunked(&["01234", "abcde"]))
        .await
        .expect("the call starts");
    let (stdout, result) = finish_call(call).await;
    assert_eq!(stdout, "01234ABCDE");
    assert_eq!(result.outcome.status, TaskStatus::Succeeded);
}

#[tokio::test]
async fn a_declared_length_past_the_limit_is_refused_before_anything_runs() {
    let m = small_body_tenant().await;
    let (body, polled) = watched_body();
    let refused = m.tasks.invoke("small", "f", post(Some(11)), body).await;
    match refused {
        Err(SchedError::InputTooLarge(10)) => {}
        Err(e) => panic!("expected InputTooLarge(10), got {e:?}"),
        Ok(_) => panic!("a body declared past the limit was accepted"),
    }
    assert!(!polled.load(Ordering::SeqCst), "the body was not read");
    assert!(m.fake().started().is_empty(), "nothing ran");
    assert!(all_tasks(&m, "small").await.is_empty(), "nothing recorded");
    assert_eq!(m.tasks.running_tasks("small"), 0, "no slot kept");
}

#[tokio::test]
async fn a_failed_start_is_the_calls_error_and_the_tasks_end() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &["echo-upper"]).await;
    m.executor.inject(
        Fault::FailStart(ExecError::EngineUnavailable("down".into())),
        1,
    );
    let (body, polled) = watched_body();
    let refused = m.tasks.invoke(ALPHA, "f", post(None), body).await;
    let error = match refused {
        Err(SchedError::Run(e)) => e,
        Err(e) => panic!("expected a Run error, got {e:?}"),
        Ok(_) => panic!("the call started on a failing executor"),
    };
    assert_eq!(error.code, ErrorCode::EngineUnavailable);

    // Recorded as failed with that code; the body was never read; the
    // slot is given back; nothing ran.
    let tasks = all_tasks(&m, ALPHA).await;
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    assert_ended(
        t,
        TaskStatus::Failed,
        Some(ErrorCode::EngineUnavailable),
        None,
    );
    assert_eq!((t.kind, t.attempt), (TaskKind::Sync, 1));
    assert_eq!(t.error.as_ref(), Some(&error));
    assert!(!polled.load(Ordering::SeqCst));
    assert_eq!(m.tasks.running_tasks(ALPHA), 0);
    assert!(m.fake().started().is_empty());
    assert_eq!(m.executor.fired(), 1);

    // The fault was for one run: the next call goes through.
    let (_, stdout, _) = call(&m, ALPHA, "f", "ok").await.expect("starts");
    assert_eq!(stdout, "OK");
    assert_eq!(m.fake().started().len(), 1);
}

#[tokio::test]
async fn a_caller_that_stops_reading_kills_the_call() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &["sleep"]).await;
    let call = m
        .tasks
        .invoke(ALPHA, "f", post(None), input(""))
        .await
        .expect("starts");
    let id = call.task_id;
    drop(call.stdout);
    let result = within("the call to end", call.result)
        .await
        .expect("result");
    assert_eq!(result.outcome.code(), Some(ErrorCode::ClientDisconnected));
    let t = task(&m, ALPHA, id).await;
    assert_ended(
        &t,
        TaskStatus::Failed,
        Some(ErrorCode::ClientDisconnected),
        None,
    );
    settled(&m, ALPHA).await;
    assert_eq!(m.fake().started().len(), 1);
}

#[tokio::test]
async fn cancelling_a_call_kills_it() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &["sleep"]).await;
    let call = m
        .tasks
        .invoke(ALPHA, "f", post(None), input(""))
        .await
        .expect("starts");
    let id = call.task_id;
    let cancelled = m.tasks.cancel(ALPHA, id).await.expect("cancel");
    assert_eq!(
        cancelled,
        Cancel::Running {
            lease_owner: Some("local".into())
        }
    );
    let (stdout, result) = finish_call(call).await;
    assert_eq!(stdout, "");
    assert_eq!(result.outcome.status, TaskStatus::Cancelled);
    let t = task(&m, ALPHA, id).await;
    assert_ended(&t, TaskStatus::Cancelled, Some(ErrorCode::Cancelled), None);
    settled(&m, ALPHA).await;
    assert_eq!(
        m.fake().exit_of(id),
        Some(crate::testing::Exit::Cancelled),
        "the attempt was killed, not left to run"
    );
    let again = m.tasks.cancel(ALPHA, id).await;
    assert!(
        matches!(again, Err(SchedError::TaskFinished(TaskStatus::Cancelled))),
        "{again:?}"
    );
}
