//! Quotas and idempotency keys: one tenant at its limit is refused, and
//! only that tenant; a repeated submission under a key is answered with
//! the first task.

use berth_core::ErrorCode;

use super::*;

fn concurrency(n: u32) -> QuotaOverrides {
    QuotaOverrides {
        max_concurrent_tasks: Some(n),
        ..QuotaOverrides::default()
    }
}

/// Starts a call of the tenant's function `f` and keeps it running.
async fn hold(m: &Manager, tenant: &str) -> SyncCall {
    m.tasks
        .invoke(tenant, "f", post(Some(0)), input(""))
        .await
        .unwrap_or_else(|e| panic!("{tenant}'s call: {e}"))
}

#[tokio::test]
async fn a_tenant_at_its_concurrency_limit_is_refused_and_only_it() {
    let m = manager(cfg()).await;
    tenant_with(&m, "small", concurrency(1)).await;
    deploy(&m, "small", "f", &["sleep"]).await;
    deploy(&m, BETA, "f", &["sleep"]).await;

    let first = hold(&m, "small").await;
    let refused = m.tasks.invoke("small", "f", post(Some(0)), input("")).await;
    match refused {
        Err(SchedError::QuotaExceeded(msg)) => assert!(msg.contains("max_concurrent_tasks")),
        Err(e) => panic!("expected QuotaExceeded, got {e:?}"),
        Ok(_) => panic!("a call past the quota started"),
    }
    // Another tenant is unaffected.
    let other = hold(&m, BETA).await;
    assert_eq!(m.tasks.running_tasks("small"), 1);
    assert_eq!(m.tasks.running_tasks(BETA), 1);
    // The refused call ran nothing and recorded nothing.
    let started: Vec<_> = m.fake().started().iter().map(|s| s.task_id).collect();
    assert_eq!(started, [first.task_id, other.task_id]);
    assert_eq!(all_tasks(&m, "small").await.len(), 1);

    // Once the first call ends, its slot is free again.
    let (_, ended) = finish_call_dropping(first).await;
    assert_eq!(ended.outcome.code(), Some(ErrorCode::ClientDisconnected));
    eventually("the slot to be given back", async || {
        m.tasks.running_tasks("small") == 0
    })
    .await;
    let again = hold(&m, "small").await;
    assert_eq!(m.tasks.running_tasks("small"), 1);
    drop((again, other));
}

/// Ends a held call by going away, and waits for its result.
async fn finish_call_dropping(call: SyncCall) -> (TaskId, CallResult) {
    let SyncCall {
        task_id,
        stdout,
        result,
        ..
    } = call;
    drop(stdout);
    let result = within("the call to end", result).await.expect("result");
    (task_id, result)
}

#[tokio::test]
async fn a_tenant_at_its_limit_leaves_its_queue_waiting_and_others_run() {
    let m = manager(cfg()).await;
    tenant_with(&m, "small", concurrency(1)).await;
    deploy(&m, "small", "f", &["sleep"]).await;
    deploy(&m, "small", "g", &["echo-upper"]).await;
    deploy(&m, BETA, "g", &["echo-upper"]).await;
    let busy = hold(&m, "small").await;

    m.start_background();
    let waiting = submit(&m, "small", "g", "mine").await;
    let other = submit(&m, BETA, "g", "theirs").await;
    let done = finished(&m, BETA, other.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded);
    // The dispatcher has been round since; the full tenant's task was
    // left in the queue, its attempt not spent.
    let still = task(&m, "small", waiting.id).await;
    assert_eq!((still.status, still.attempt), (TaskStatus::Queued, 0));

    finish_call_dropping(busy).await;
    let done = finished(&m, "small", waiting.id).await;
    assert_eq!((done.status, done.attempt), (TaskStatus::Succeeded, 1));
    assert_eq!(
        payload(&m, &done, PayloadKind::Output).await.unwrap(),
        "MINE"
    );
    assert_eq!(m.fake().started().len(), 3);
}

#[tokio::test]
async fn a_full_queue_refuses_a_submission() {
    let m = manager(cfg()).await;
    let quotas = QuotaOverrides {
        max_queued_tasks: Some(2),
        ..QuotaOverrides::default()
    };
    tenant_with(&m, "small", quotas).await;
    deploy(&m, "small", "f", &["echo-upper"]).await;
    deploy(&m, BETA, "f", &["echo-upper"]).await;
    submit(&m, "small", "f", "1").await;
    submit(&m, "small", "f", "2").await;

    let refused = m
        .tasks
        .submit("small", "f", post(Some(1)), input("3"), None)
        .await;
    match refused {
        Err(SchedError::QuotaExceeded(msg)) => assert!(msg.contains("max_queued_tasks")),
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    assert_eq!(all_tasks(&m, "small").await.len(), 2, "nothing recorded");
    // Another tenant's queue is its own.
    submit(&m, BETA, "f", "fine").await;
    assert!(m.fake().started().is_empty(), "nothing ran");
}

async fn submit_keyed(
    m: &Manager,
    tenant: &str,
    body: &str,
    key: &str,
) -> Result<crate::Submitted, SchedError> {
    let len = u64::try_from(body.len()).expect("small body");
    m.tasks
        .submit(
            tenant,
            "f",
            post(Some(len)),
            input(body.to_owned()),
            Some(key),
        )
        .await
}

#[tokio::test]
async fn a_repeated_key_replays_the_first_task_and_a_different_request_conflicts() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &["echo-upper"]).await;
    deploy(&m, BETA, "f", &["echo-upper"]).await;

    let first = submit_keyed(&m, ALPHA, "body", "k1").await.expect("first");
    assert!(!first.replayed);
    let replay = submit_keyed(&m, ALPHA, "body", "k1").await.expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.task, first.task, "the first task, as recorded");

    let conflict = submit_keyed(&m, ALPHA, "other body", "k1").await;
    match conflict {
        Err(SchedError::IdempotencyConflict(key)) => assert_eq!(key, "k1"),
        other => panic!("expected IdempotencyConflict, got {other:?}"),
    }
    // A key is the tenant's own; another key is another task.
    let theirs = submit_keyed(&m, BETA, "body", "k1").await.expect("beta");
    assert!(!theirs.replayed);
    let second = submit_keyed(&m, ALPHA, "body", "k2").await.expect("k2");
    assert!(!second.replayed);

    let ids: Vec<_> = all_tasks(&m, ALPHA).await.iter().map(|t| t.id).collect();
    assert_eq!(ids, [second.task.id, first.task.id], "newest first");
    assert_eq!(all_tasks(&m, BETA).await.len(), 1);

    // The replay runs nothing twice: the first task runs once, on its input.
    m.start_background();
    let done = finished(&m, ALPHA, first.task.id).await;
    assert_eq!(
        payload(&m, &done, PayloadKind::Output).await.unwrap(),
        "BODY"
    );
    let runs_of_first = m
        .fake()
        .started()
        .iter()
        .filter(|s| s.task_id == first.task.id)
        .count();
    assert_eq!(runs_of_first, 1);
}

/// A client retrying an accepted submission while its tenant's queue is
/// full (its own task may be what fills it) gets its task back, not a
/// 429; a new key is still refused.
#[tokio::test]
async fn a_replay_is_answered_even_when_the_queue_is_full() {
    let m = manager(cfg()).await;
    let quotas = QuotaOverrides {
        max_queued_tasks: Some(1),
        ..QuotaOverrides::default()
    };
    tenant_with(&m, "small", quotas).await;
    deploy(&m, "small", "f", &["echo-upper"]).await;
    let first = submit_keyed(&m, "small", "body", "k1")
        .await
        .expect("first");
    let replay = submit_keyed(&m, "small", "body", "k1")
        .await
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.task.id, first.task.id);
    let fresh = submit_keyed(&m, "small", "body", "k2").await;
    assert!(
        matches!(fresh, Err(SchedError::QuotaExceeded(_))),
        "{:?}",
        fresh.map(|s| s.task.id)
    );
}
