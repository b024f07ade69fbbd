//! The metrics: every call is counted once, where it ends, by how it
//! ended; only the admin may scrape.

use berth_core::{ADMIN_TENANT, ErrorCode};

use crate::testing::Fault;

use super::*;

/// The value of the sample `series` (name and labels as rendered), or 0
/// when there is none.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().expect("a number"))
}

fn invocations(function: &str, kind: &str, status: &str) -> String {
    format!(
        r#"berth_invocations_total{{function="{function}",kind="{kind}",mode="exec",status="{status}"}}"#
    )
}

/// Every call counted, whatever its labels.
fn ended(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("berth_invocations_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

async fn scrape(m: &Manager) -> String {
    m.tasks
        .metrics(ADMIN_TENANT)
        .await
        .expect("the admin scrapes")
}

#[tokio::test]
async fn calls_are_counted_once_where_they_end() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "up", &[]).await;
    deploy(&m, ALPHA, "bad", &["fail", "3", "no"]).await;
    deploy(&m, ALPHA, "full", &["busy"]).await;
    tenant_with(
        &m,
        "gamma",
        QuotaOverrides {
            max_queued_tasks: Some(1),
            ..QuotaOverrides::default()
        },
    )
    .await;
    deploy(&m, "gamma", "up", &[]).await;

    for _ in 0..2 {
        call(&m, ALPHA, "up", "hi").await.expect("a call");
    }
    let (_, _, bad) = call(&m, ALPHA, "bad", "").await.expect("a call");
    assert_eq!(bad.outcome.error.map(|e| e.code), Some(ErrorCode::Exit));
    let busy = call(&m, ALPHA, "full", "").await.expect_err("refused");
    assert_eq!(variant(&busy), "Run");
    let gamma = submit(&m, "gamma", "up", "g").await;
    let refused = m
        .tasks
        .submit("gamma", "up", post(Some(0)), input(String::new()), None)
        .await
        .expect_err("over the queue quota");
    assert_eq!(variant(&refused), "QuotaExceeded");
    // Cancelled while queued: nothing ran it, the cancel ends it.
    let dropped = submit(&m, ALPHA, "up", "x").await;
    m.tasks.cancel(ALPHA, dropped.id).await.expect("cancel");
    let queued = submit(&m, ALPHA, "up", "y").await;

    let text = scrape(&m).await;
    assert_eq!(sample(&text, r#"berth_tasks{state="queued"}"#), 2.0);
    assert_eq!(sample(&text, r#"berth_queue_depth{tenant="alpha"}"#), 1.0);
    assert_eq!(sample(&text, r#"berth_queue_depth{tenant="gamma"}"#), 1.0);

    m.start_background();
    finished(&m, ALPHA, queued.id).await;
    finished(&m, "gamma", gamma.id).await;
    settled(&m, ALPHA).await;
    settled(&m, "gamma").await;
    // An async end is counted just after it is recorded.
    eventually("every call to be counted", async || {
        ended(&scrape(&m).await) >= 8.0
    })
    .await;
    let text = scrape(&m).await;
    for (function, kind, status, n) in [
        ("alpha/up", "sync", "ok", 2.0),
        ("alpha/bad", "sync", "exit", 1.0),
        ("alpha/full", "sync", "busy", 1.0),
        ("gamma/up", "async", "quota_exceeded", 1.0),
        ("gamma/up", "async", "ok", 1.0),
        ("alpha/up", "async", "cancelled", 1.0),
        ("alpha/up", "async", "ok", 1.0),
    ] {
        assert_eq!(
            sample(&text, &invocations(function, kind, status)),
            n,
            "{function} {kind} {status}:\n{text}"
        );
    }
    assert_eq!(ended(&text), 8.0, "nothing else was counted:\n{text}");

    let runs = |kind: &str| {
        sample(
            &text,
            &format!(
                r#"berth_invocation_phase_duration_seconds_count{{function="alpha/up",kind="{kind}",phase="run"}}"#
            ),
        )
    };
    assert_eq!(runs("sync"), 2.0, "an attempt that ran has its phases");
    assert_eq!(runs("async"), 1.0);
    assert_eq!(
        sample(
            &text,
            r#"berth_invocation_phase_duration_seconds_count{function="alpha/full",kind="sync",phase="run"}"#
        ),
        0.0,
        "a refused call has none"
    );
    // Every sync call that passed routing asked the store for its row.
    assert_eq!(
        sample(
            &text,
            r#"berth_store_operation_duration_seconds_count{operation="insert_running"}"#
        ),
        4.0
    );
    assert_eq!(sample(&text, r#"berth_tasks{state="queued"}"#), 0.0);
    assert_eq!(sample(&text, r#"berth_queue_depth{tenant="alpha"}"#), 0.0);
    assert_eq!(
        sample(
            &text,
            r#"berth_executor_capacity_containers{executor="fake"}"#
        ),
        64.0
    );
    assert_eq!(
        sample(&text, r#"berth_executor_healthy{executor="fake"}"#),
        1.0
    );
}

#[tokio::test]
async fn lost_and_refused_attempts_are_requeues_not_ends() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "up", &[]).await;
    m.executor.inject(Fault::DieMidStream { after_bytes: 0 }, 1);
    let t = submit(&m, ALPHA, "up", "x").await;
    m.start_background();
    let t = finished(&m, ALPHA, t.id).await;
    assert_eq!(t.status, TaskStatus::Succeeded, "{t:?}");
    m.executor.inject(Fault::RefuseCapacity, 1);
    let t = submit(&m, ALPHA, "up", "y").await;
    let t = finished(&m, ALPHA, t.id).await;
    assert_eq!(t.status, TaskStatus::Succeeded, "{t:?}");
    eventually("both tasks to be counted", async || {
        ended(&scrape(&m).await) >= 2.0
    })
    .await;
    let text = scrape(&m).await;
    assert_eq!(
        sample(
            &text,
            r#"berth_task_requeues_total{function="alpha/up",reason="refused"}"#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"berth_task_requeues_total{function="alpha/up",reason="lost"}"#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(sample(&text, &invocations("alpha/up", "async", "ok")), 2.0);
}

#[tokio::test]
async fn only_the_admin_may_scrape() {
    let m = manager(cfg()).await;
    let e = m.tasks.metrics(ALPHA).await.expect_err("refused");
    assert_eq!(variant(&e), "Forbidden");
}
