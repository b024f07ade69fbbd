use std::time::Duration;

use crate::{Call, ExecutorGauge, Functions, InstanceGauge, Metrics, OVERFLOW, Phases};

const SYNC: Call<'static> = Call {
    tenant: "acme",
    function: "resize",
    kind: "sync",
    mode: "exec",
};

/// The value of the one sample line that starts with `series ` exactly
/// (name and labels as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

fn check(text: &str, series: &str, expected: f64) {
    assert_eq!(value(text, series), Some(expected), "{series} in:\n{text}");
}

#[test]
fn counters_are_named_with_total_and_their_help_and_type_match() {
    let m = Metrics::new();
    m.tasks().ended(&SYNC, "ok");
    m.tasks().ended(&SYNC, "ok");
    m.tasks().ended(&SYNC, "exit");
    m.registry().received(10);
    let text = m.render();
    check(
        &text,
        r#"berth_invocations_total{function="acme/resize",kind="sync",mode="exec",status="ok"}"#,
        2.0,
    );
    check(
        &text,
        r#"berth_invocations_total{function="acme/resize",kind="sync",mode="exec",status="exit"}"#,
        1.0,
    );
    assert!(
        text.contains("# TYPE berth_invocations_total counter\n"),
        "{text}"
    );
    assert!(text.contains("# HELP berth_invocations_total "), "{text}");
    check(&text, "berth_registry_received_bytes_total", 10.0);
    assert!(
        !text.contains("# EOF"),
        "text format 0.0.4, not OpenMetrics"
    );
}

#[test]
fn phases_go_to_one_histogram_and_a_start_is_a_cold_start() {
    let m = Metrics::new();
    let warm = Phases {
        queue: Some(Duration::from_millis(2)),
        pull: None,
        start: Some(Duration::ZERO),
        run: Some(Duration::from_millis(30)),
    };
    let cold = Phases {
        start: Some(Duration::from_millis(400)),
        ..warm
    };
    m.tasks().attempt(&SYNC, &warm);
    m.tasks().attempt(&SYNC, &cold);
    let text = m.render();
    let phase = |p: &str, suffix: &str| {
        format!(
            r#"berth_invocation_phase_duration_seconds_{suffix}{{function="acme/resize",kind="sync",phase="{p}"{}}}"#,
            if suffix == "bucket" {
                r#",le="+Inf""#
            } else {
                ""
            }
        )
    };
    check(&text, &phase("run", "count"), 2.0);
    check(&text, &phase("queue", "bucket"), 2.0);
    check(&text, &phase("start", "count"), 2.0);
    assert_eq!(
        value(&text, &phase("pull", "count")),
        None,
        "no pull, no sample"
    );
    check(
        &text,
        r#"berth_cold_starts_total{function="acme/resize",mode="exec"}"#,
        1.0,
    );
    check(
        &text,
        r#"berth_invocation_phase_duration_seconds_bucket{function="acme/resize",kind="sync",phase="start",le="0.001"}"#,
        1.0,
    );
}

#[test]
fn function_labels_are_capped() {
    let functions = Functions::new(2);
    assert_eq!(functions.label("a", "f"), "a/f");
    assert_eq!(functions.label("a", "g"), "a/g");
    assert_eq!(functions.label("b", "f"), OVERFLOW);
    assert_eq!(functions.label("a", "f"), "a/f", "known names keep theirs");

    // The cap is shared by every handle of one registry.
    let m = Metrics::with_functions(Functions::new(1));
    m.tasks().ended(&SYNC, "ok");
    m.pools().scaled_up("other", "fn", "demand");
    let text = m.render();
    check(
        &text,
        &format!(
            r#"berth_scale_events_total{{function="{OVERFLOW}",direction="up",reason="demand"}}"#
        ),
        1.0,
    );
}

#[test]
fn gauges_set_at_a_scrape_replace_the_last_ones() {
    let m = Metrics::new();
    let v1 = InstanceGauge {
        tenant: "acme",
        function: "resize",
        ready: 3,
        busy: 1,
        starting: 1,
        waiting: 2,
    };
    let v2 = InstanceGauge {
        ready: 1,
        busy: 1,
        starting: 0,
        waiting: 0,
        ..v1
    };
    m.fleet().set_instances([v1, v2]);
    m.fleet().set_executors(&[ExecutorGauge {
        id: "n1".into(),
        capacity: 32,
        containers: 5,
        healthy: true,
    }]);
    m.tasks()
        .set_queue(&[("acme".into(), 4), ("beta".into(), 1)], 7);
    let text = m.render();
    let inst =
        |state: &str| format!(r#"berth_instances{{function="acme/resize",state="{state}"}}"#);
    check(&text, &inst("idle"), 2.0);
    check(&text, &inst("busy"), 2.0);
    check(&text, &inst("starting"), 1.0);
    check(
        &text,
        r#"berth_instance_waiting_requests{function="acme/resize"}"#,
        2.0,
    );
    check(
        &text,
        r#"berth_executor_capacity_containers{executor="n1"}"#,
        32.0,
    );
    check(
        &text,
        r#"berth_executor_allocated_containers{executor="n1"}"#,
        5.0,
    );
    check(&text, r#"berth_executor_healthy{executor="n1"}"#, 1.0);
    check(&text, r#"berth_tasks{state="queued"}"#, 5.0);
    check(&text, r#"berth_tasks{state="running"}"#, 7.0);
    check(&text, r#"berth_queue_depth{tenant="beta"}"#, 1.0);

    m.fleet().set_instances([]);
    m.tasks().set_queue(&[("acme".into(), 1)], 0);
    let text = m.render();
    assert_eq!(value(&text, &inst("idle")), None, "{text}");
    assert_eq!(value(&text, r#"berth_queue_depth{tenant="beta"}"#), None);
    check(&text, r#"berth_queue_depth{tenant="acme"}"#, 1.0);
    check(&text, r#"berth_tasks{state="queued"}"#, 1.0);
}

#[test]
fn store_operations_are_timed_and_failures_counted() {
    let m = Metrics::new();
    m.store()
        .observe("get_task", Duration::from_micros(300), true);
    m.store()
        .observe("get_task", Duration::from_millis(20), false);
    let text = m.render();
    check(
        &text,
        r#"berth_store_operation_duration_seconds_count{operation="get_task"}"#,
        2.0,
    );
    check(
        &text,
        r#"berth_store_operation_duration_seconds_bucket{operation="get_task",le="0.0005"}"#,
        1.0,
    );
    check(
        &text,
        r#"berth_store_operation_errors_total{operation="get_task"}"#,
        1.0,
    );
}

#[test]
fn handles_made_alone_record_into_nothing_exposed() {
    let m = Metrics::new();
    let alone = crate::TaskMetrics::default();
    alone.ended(&SYNC, "ok");
    assert_eq!(
        value(
            &m.render(),
            r#"berth_invocations_total{function="acme/resize",kind="sync",mode="exec",status="ok"}"#
        ),
        None
    );
    // A clone of a registered handle records into the registry.
    let tasks = m.tasks().clone();
    tasks.ended(&SYNC, "ok");
    check(
        &m.render(),
        r#"berth_invocations_total{function="acme/resize",kind="sync",mode="exec",status="ok"}"#,
        1.0,
    );
}
