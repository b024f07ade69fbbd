//! Following a task: its output and logs stream while it runs, and the
//! stream ends with the task, holding exactly what was stored.

use berth_core::ErrorCode;
use bytes::Bytes;

use super::*;

/// Reads a followed payload to its end: its bytes, or the error it was
/// cut off with.
async fn read_to_end(mut body: crate::InputStream) -> (Vec<u8>, Option<std::io::Error>) {
    within("the followed stream to end", async {
        let mut all = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => all.extend_from_slice(&c),
                Err(e) => return (all, Some(e)),
            }
        }
        (all, None)
    })
    .await
}

#[tokio::test]
async fn output_followed_from_the_queue_is_what_was_stored() {
    let m = manager(Config {
        max_output_bytes: 200 * 1024,
        ..cfg()
    })
    .await;
    deploy(&m, ALPHA, "f", &["stream"]).await;
    let t = submit(&m, ALPHA, "f", "").await;
    assert_eq!(t.status, TaskStatus::Queued);
    let followed = m
        .tasks
        .follow(&t, PayloadKind::Output)
        .await
        .expect("follow");
    assert_eq!(followed.len, None, "the length is not known yet");
    m.start_background();
    let (bytes, error) = read_to_end(followed.body).await;
    assert!(error.is_none(), "{error:?}");

    let done = finished(&m, ALPHA, t.id).await;
    assert_ended(
        &done,
        TaskStatus::Failed,
        Some(ErrorCode::OutputTooLarge),
        None,
    );
    let stored = payload(&m, &done, PayloadKind::Output)
        .await
        .expect("stored");
    assert!(!stored.is_empty());
    assert_eq!(bytes, stored.as_bytes(), "followed and stored alike");
}

#[tokio::test]
async fn output_streams_while_the_task_runs() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &["sleep"]).await;
    m.start_background();
    let t = submit(&m, ALPHA, "f", "").await;
    eventually("the attempt to store its output", async || {
        m.tasks.taps.is_open(t.id, PayloadKind::Output)
    })
    .await;
    let running = task(&m, ALPHA, t.id).await;
    assert_eq!(running.status, TaskStatus::Running);
    // The function hangs and writes nothing itself: what its attempt
    // stores is played here, into a tap of the same attempt.
    let tap = m.tasks.taps.open(t.id, PayloadKind::Output, running.epoch);
    let mut followed = m
        .tasks
        .follow(&running, PayloadKind::Output)
        .await
        .expect("follow");
    for piece in ["partial ", "and more"] {
        tap.push(&Bytes::from(piece));
        let got = within("live output", followed.body.next())
            .await
            .expect("a chunk")
            .expect("bytes");
        assert_eq!(got, piece);
    }
    assert_eq!(task(&m, ALPHA, t.id).await.status, TaskStatus::Running);

    // A cancelled task has no output: the stream is cut off, never ended
    // as if complete.
    drop(tap);
    m.tasks.cancel(ALPHA, t.id).await.expect("cancel");
    let (rest, error) = read_to_end(followed.body).await;
    assert!(error.is_some(), "a cut-off stream, not {rest:?}");
    settled(&m, ALPHA).await;
}

#[tokio::test]
async fn a_finished_task_is_followed_as_it_is_read() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &["fail", "3", "bad input"]).await;
    m.start_background();
    let t = submit(&m, ALPHA, "f", "").await;
    let done = finished(&m, ALPHA, t.id).await;
    let followed = m
        .tasks
        .follow(&done, PayloadKind::Logs)
        .await
        .expect("follow");
    let (logs, error) = read_to_end(followed.body).await;
    assert!(error.is_none());
    assert_eq!(
        String::from_utf8(logs).unwrap(),
        payload(&m, &done, PayloadKind::Logs).await.unwrap()
    );
    assert!(
        !payload(&m, &done, PayloadKind::Logs)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_sync_call_has_no_output_to_follow() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &["sleep"]).await;
    let call = m
        .tasks
        .invoke(ALPHA, "f", post(Some(0)), input(""))
        .await
        .expect("invoke");
    let running = task(&m, ALPHA, call.task_id).await;
    let output = m.tasks.follow(&running, PayloadKind::Output).await;
    assert!(matches!(output, Err(SchedError::NoPayload(_))));
    // Its logs can be followed; the call ends when its caller goes.
    let logs = m
        .tasks
        .follow(&running, PayloadKind::Logs)
        .await
        .expect("logs");
    drop(call);
    let (logs, error) = read_to_end(logs.body).await;
    assert!(error.is_none(), "{error:?}");
    assert!(logs.is_empty(), "sleep writes nothing");
}

#[tokio::test]
async fn a_shutdown_lets_followers_go() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &["sleep"]).await;
    m.start_background();
    let t = submit(&m, ALPHA, "f", "").await;
    eventually("the attempt to run", async || {
        m.tasks.taps.is_open(t.id, PayloadKind::Logs)
    })
    .await;
    let running = task(&m, ALPHA, t.id).await;
    let followed = m
        .tasks
        .follow(&running, PayloadKind::Logs)
        .await
        .expect("follow");
    // The task goes back to the queue: its follower is cut off, not left
    // holding this server open.
    within("the shutdown", m.shut_down(Duration::ZERO)).await;
    let (_, error) = read_to_end(followed.body).await;
    assert!(error.is_some(), "cut off");
    assert_eq!(task(&m, ALPHA, t.id).await.status, TaskStatus::Queued);
}
