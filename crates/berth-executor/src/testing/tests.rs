//! Each script of the fake and each fault of the wrapper does what its
//! doc says. Timeouts around waits are liveness bounds (they fail a hung
//! test), never timing assertions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures::StreamExt;

use super::*;
use crate::{Executor, Exit};

const PATIENCE: Duration = Duration::from_secs(10);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(PATIENCE, f)
        .await
        .expect("the attempt should have ended by now")
}

/// Runs `spec` to its end; panics if `run` refuses.
async fn run_to_end(exec: &impl Executor, spec: RunSpec, stdin: InputStream) -> Output {
    let inv = exec.run(spec, stdin).await.expect("run accepted");
    within(collect(inv)).await
}

fn exit_of(out: &Output) -> Exit {
    out.done
        .as_ref()
        .expect("the attempt reported")
        .exit
        .clone()
}

/// A body that records whether anyone polled it.
fn watched_stdin() -> (InputStream, Arc<AtomicBool>) {
    let polled = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&polled);
    let stream = futures::stream::poll_fn(move |_| {
        flag.store(true, Ordering::SeqCst);
        Poll::Ready(None)
    });
    (stream.boxed(), polled)
}

/// Waits until the fake has `n` attempts in flight.
async fn until_running(fake: &FakeExecutor, n: usize) {
    within(async {
        while fake.running().len() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// The fake's script
// ---------------------------------------------------------------------------

#[tokio::test]
async fn echo_upper_returns_the_uppercased_input() {
    let fake = FakeExecutor::new();
    let spec = run_spec("f", &["echo-upper"]);
    let task = spec.task_id;
    let out = run_to_end(&fake, spec, input("hello, world")).await;
    assert_eq!(out.stdout_text(), "HELLO, WORLD");
    assert_eq!(out.stderr_text(), "echo-upper: 12 bytes\n");
    assert_eq!(exit_of(&out), Exit::Code(0));
    assert_eq!(fake.exit_of(task), Some(Exit::Code(0)));
    assert_eq!(fake.started().len(), 1);
    assert!(fake.running().is_empty());
}

#[tokio::test]
async fn no_command_means_echo_upper() {
    let fake = FakeExecutor::new();
    let out = run_to_end(&fake, run_spec("f", &[]), input("abc")).await;
    assert_eq!(out.stdout_text(), "ABC");
    assert_eq!(exit_of(&out), Exit::Code(0));
}

#[tokio::test]
async fn fail_exits_with_its_code_and_message() {
    let fake = FakeExecutor::new();
    let out = run_to_end(&fake, run_spec("f", &["fail", "3", "bad input"]), input("")).await;
    assert!(out.stdout.is_empty());
    assert_eq!(out.stderr_text(), "bad input");
    let done = out.done.expect("reported");
    assert_eq!(done.exit, Exit::Code(3));
    assert_eq!(done.stderr_tail, "bad input");
}

#[tokio::test]
async fn sleep_ends_by_cancel() {
    let fake = FakeExecutor::new();
    let spec = run_spec("f", &["sleep"]);
    let (cancel, task) = (spec.cancel.clone(), spec.task_id);
    let inv = fake.run(spec, input("")).await.expect("run accepted");
    until_running(&fake, 1).await;
    cancel.cancel();
    let out = within(collect(inv)).await;
    assert_eq!(exit_of(&out), Exit::Cancelled);
    assert_eq!(fake.exit_of(task), Some(Exit::Cancelled));
}

#[tokio::test]
async fn sleep_ends_by_timeout() {
    let fake = FakeExecutor::new();
    let mut spec = run_spec("f", &["sleep"]);
    spec.timeout = Duration::from_millis(50);
    let out = run_to_end(&fake, spec, input("")).await;
    assert_eq!(exit_of(&out), Exit::TimedOut);
}

#[tokio::test]
async fn dropping_stdout_ends_sleep_with_caller_gone() {
    let fake = FakeExecutor::new();
    let inv = fake
        .run(run_spec("f", &["sleep"]), input(""))
        .await
        .expect("run accepted");
    drop(inv.stdout);
    let done = within(inv.done).await.expect("reported").expect("no error");
    assert_eq!(done.exit, Exit::CallerGone);
}

#[tokio::test]
async fn big_writes_200_kib_then_exits_1() {
    let fake = FakeExecutor::new();
    let out = run_to_end(&fake, run_spec("f", &["big"]), input("")).await;
    assert_eq!(out.stdout.len(), 200 * 1024);
    assert_eq!(exit_of(&out), Exit::Code(1));
}

#[tokio::test]
async fn stream_writes_until_the_caller_goes() {
    let fake = FakeExecutor::new();
    let mut inv = fake
        .run(run_spec("f", &["stream"]), input(""))
        .await
        .expect("run accepted");
    for _ in 0..3 {
        let chunk = within(inv.stdout.recv()).await.expect("more output");
        assert!(chunk.iter().all(|&b| b == b'y'));
    }
    drop(inv.stdout);
    let done = within(inv.done).await.expect("reported").expect("no error");
    assert_eq!(done.exit, Exit::CallerGone);
}

#[tokio::test]
async fn stream_ends_by_timeout() {
    let fake = FakeExecutor::new();
    let mut spec = run_spec("f", &["stream"]);
    spec.timeout = Duration::from_millis(50);
    let mut inv = fake.run(spec, input("")).await.expect("run accepted");
    let mut bytes = 0;
    while let Some(chunk) = within(inv.stdout.recv()).await {
        bytes += chunk.len();
    }
    assert!(bytes > 0);
    let done = within(inv.done).await.expect("reported").expect("no error");
    assert_eq!(done.exit, Exit::TimedOut);
}

#[tokio::test]
async fn env_lists_the_function_env_then_the_request_env() {
    let fake = FakeExecutor::new();
    let mut spec = run_spec("f", &["env"]);
    spec.env = vec![("GREETING".into(), "hi".into())];
    spec.request_env = vec![("REQUEST_METHOD".into(), "POST".into())];
    let out = run_to_end(&fake, spec, input("")).await;
    assert_eq!(out.stdout_text(), "GREETING=hi\nREQUEST_METHOD=POST\n");
}

#[tokio::test]
async fn busy_is_refused_without_starting() {
    let fake = FakeExecutor::new();
    let refused = fake.run(run_spec("f", &["busy"]), input("")).await;
    assert!(matches!(refused, Err(ExecError::Busy(_))));
    assert!(fake.started().is_empty());
}

#[tokio::test]
async fn unknown_commands_exit_127() {
    let fake = FakeExecutor::new();
    let out = run_to_end(&fake, run_spec("f", &["frobnicate"]), input("")).await;
    assert_eq!(exit_of(&out), Exit::Code(127));
}

#[tokio::test]
async fn missing_image_is_not_found_and_others_resolve_to_image_id() {
    let fake = FakeExecutor::new();
    let missing = fake.resolve_image("missing").await;
    assert!(matches!(missing, Err(ExecError::ImageNotFound(r)) if r == "missing"));
    let found = fake.resolve_image("hello:1").await.expect("resolves");
    assert_eq!(found.id, image_id("hello:1"));
    assert_eq!(image_id("ab"), "sha256:6162");
}

#[tokio::test]
async fn http_mode_sends_a_head_before_stdout() {
    let fake = FakeExecutor::new();
    let mut spec = run_spec("f", &[]);
    spec.mode = berth_core::Mode::Http;
    let out = run_to_end(&fake, spec, input("x")).await;
    assert_eq!(out.head.as_ref().map(|h| h.status), Some(200));
    assert_eq!(out.stdout_text(), "X");
}

// ---------------------------------------------------------------------------
// What a scheduler sees of the fake
// ---------------------------------------------------------------------------

#[tokio::test]
async fn capacity_limits_runs_and_status_shows_what_runs() {
    let fake = FakeExecutor::with_capacity(1);
    let spec = run_spec("f", &["sleep"]);
    assert!(fake.has_room(&spec));
    let cancel = spec.cancel.clone();
    let inv = fake
        .run(spec.clone(), input(""))
        .await
        .expect("run accepted");

    assert!(!fake.has_room(&spec));
    let refused = fake.run(run_spec("g", &[]), input("")).await;
    assert!(matches!(refused, Err(ExecError::NoCapacity(1))));
    let status = fake.status().await;
    assert_eq!((status.capacity, status.running), (1, 1));
    assert_eq!(status.instances.len(), 1);
    assert_eq!(
        (
            status.instances[0].function.as_str(),
            status.instances[0].busy
        ),
        ("f", 1)
    );

    cancel.cancel();
    within(collect(inv)).await;
    assert!(fake.has_room(&spec));
    assert_eq!(fake.status().await.running, 0);
}

#[tokio::test]
async fn a_full_fake_refuses_runs() {
    let fake = FakeExecutor::new();
    let spec = run_spec("f", &[]);
    fake.set_full(true);
    assert!(!fake.has_room(&spec));
    let refused = fake.run(spec.clone(), input("")).await;
    assert!(matches!(refused, Err(ExecError::NoCapacity(_))));
    fake.set_full(false);
    assert!(fake.has_room(&spec));
    run_to_end(&fake, spec, input("")).await;
}

#[tokio::test]
async fn prepare_and_retire_are_recorded() {
    let fake = FakeExecutor::new();
    fake.prepare(&run_spec("f", &[])).await.expect("prepared");
    fake.retire("t", "f", Some(2));
    fake.retire("t", "g", None);
    assert_eq!((fake.prepare_calls(), fake.retire_calls()), (1, 2));
    assert_eq!(fake.prepared()[0].function, "f");
    assert_eq!(
        fake.retired()[0],
        Retired {
            tenant: "t".into(),
            function: "f".into(),
            keep: Some(2),
        }
    );
    assert_eq!(fake.reap_orphans().await.expect("reaped"), 0);
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

fn faulty() -> FaultyExecutor<FakeExecutor> {
    FaultyExecutor::new(FakeExecutor::new())
}

#[tokio::test]
async fn fail_start_fails_without_reading_stdin() {
    for error in [
        ExecError::EngineUnavailable("down".into()),
        ExecError::ImageNotFound("gone".into()),
        ExecError::Engine("500".into()),
    ] {
        let exec = faulty();
        exec.inject(Fault::FailStart(error.clone()), 1);
        let (stdin, polled) = watched_stdin();
        let failed = exec.run(run_spec("f", &[]), stdin).await;
        assert_eq!(failed.err().map(|e| e.to_string()), Some(error.to_string()));
        assert!(!polled.load(Ordering::SeqCst));
        assert!(exec.inner().started().is_empty());
        assert_eq!(exec.fired(), 1);
    }
}

#[tokio::test]
async fn refuse_capacity_closes_room_and_reads_no_stdin() {
    let exec = faulty();
    let spec = run_spec("f", &[]);
    exec.inject(Fault::RefuseCapacity, 1);
    assert!(!exec.has_room(&spec));
    let (stdin, polled) = watched_stdin();
    let refused = exec.run(spec.clone(), stdin).await;
    assert!(matches!(refused, Err(ExecError::NoCapacity(_))));
    assert!(!polled.load(Ordering::SeqCst));
    // Used up: room again, and the next run goes through.
    assert!(exec.has_room(&spec));
    let out = run_to_end(&exec, spec, input("a")).await;
    assert_eq!(out.stdout_text(), "A");
}

#[tokio::test]
async fn die_mid_stream_delivers_after_bytes_then_instance_lost() {
    let exec = faulty();
    exec.inject(Fault::DieMidStream { after_bytes: 10 }, 1);
    let spec = run_spec("f", &["big"]);
    let task = spec.task_id;
    let out = run_to_end(&exec, spec, input("")).await;
    assert_eq!(out.stdout.len(), 10);
    assert!(matches!(exit_of(&out), Exit::InstanceLost(_)));
    // The inner attempt lost its reader, which is what killed it.
    assert_eq!(exec.inner().exit_of(task), Some(Exit::CallerGone));
}

#[tokio::test]
async fn die_mid_stream_with_less_output_dies_at_its_end() {
    let exec = faulty();
    exec.inject(Fault::DieMidStream { after_bytes: 100 }, 1);
    let out = run_to_end(&exec, run_spec("f", &[]), input("hi")).await;
    assert_eq!(out.stdout_text(), "HI");
    assert!(matches!(exit_of(&out), Exit::InstanceLost(_)));
}

#[tokio::test]
async fn hang_ends_by_cancel() {
    let exec = faulty();
    exec.inject(Fault::Hang, 1);
    let spec = run_spec("f", &[]);
    let cancel = spec.cancel.clone();
    let mut inv = exec.run(spec, input("x")).await.expect("run accepted");
    let early = tokio::time::timeout(Duration::from_millis(50), inv.stdout.recv()).await;
    assert!(early.is_err(), "a hung attempt writes nothing");
    cancel.cancel();
    let out = within(collect(inv)).await;
    assert!(out.stdout.is_empty());
    assert_eq!(exit_of(&out), Exit::Cancelled);
    assert!(exec.inner().started().is_empty());
}

#[tokio::test]
async fn hang_ends_by_timeout() {
    let exec = faulty();
    exec.inject(Fault::Hang, 1);
    let mut spec = run_spec("f", &[]);
    spec.timeout = Duration::from_millis(50);
    let out = run_to_end(&exec, spec, input("x")).await;
    assert!(out.stdout.is_empty());
    assert_eq!(exit_of(&out), Exit::TimedOut);
}

#[tokio::test]
async fn engine_lost_mid_run_fails_done_after_the_output() {
    let exec = faulty();
    exec.inject(Fault::EngineLostMidRun, 1);
    let out = run_to_end(&exec, run_spec("f", &[]), input("abc")).await;
    assert_eq!(out.stdout_text(), "ABC");
    assert!(matches!(out.done, Err(ExecError::EngineUnavailable(_))));
}

#[tokio::test]
async fn faults_last_for_the_given_runs() {
    let exec = faulty();
    exec.inject(Fault::FailStart(ExecError::Engine("boom".into())), 2);
    for _ in 0..2 {
        assert!(exec.run(run_spec("f", &[]), input("")).await.is_err());
    }
    run_to_end(&exec, run_spec("f", &[]), input("")).await;
    assert_eq!(exec.fired(), 2);
    assert_eq!(exec.inner().started().len(), 1);
}

#[tokio::test]
async fn faults_for_one_function_leave_others_alone() {
    let exec = faulty();
    exec.inject_for(
        "bad",
        Fault::FailStart(ExecError::ImageNotFound("x".into())),
    );
    for _ in 0..2 {
        assert!(exec.run(run_spec("bad", &[]), input("")).await.is_err());
        run_to_end(&exec, run_spec("good", &[]), input("")).await;
    }
    assert_eq!(exec.fired(), 2);
    exec.clear();
    run_to_end(&exec, run_spec("bad", &[]), input("")).await;
}

#[tokio::test]
async fn the_wrapper_delegates_everything_else() {
    let exec = FaultyExecutor::new(FakeExecutor::with_capacity(3));
    assert!(exec.resolve_image("missing").await.is_err());
    exec.prepare(&run_spec("f", &[])).await.expect("prepared");
    exec.retire("t", "f", None);
    assert_eq!(exec.status().await.capacity, 3);
    assert_eq!(exec.reap_orphans().await.expect("reaped"), 0);
    exec.shutdown().await;
    let inner = exec.inner();
    assert_eq!((inner.prepare_calls(), inner.retire_calls()), (1, 1));
    exec.inner().set_full(true);
    assert!(!exec.has_room(&run_spec("f", &[])));
}
