//! `GET /metrics` after a mixed workload: sync calls that succeed, fail,
//! time out and are turned away busy, an async task, and an image pushed
//! to and pulled from the registry. The scrape must pass `promtool check
//! metrics` (Debian's `prometheus` package) and its counters must say
//! exactly what was done. Only the admin key may scrape.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_client::TaskQuery;
use berth_contract::FunctionConfig;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{PATIENCE, Server, api_error, sh};
use crate::registry::{put_blob, sha256};

/// The scrape, as the admin; it must be served as Prometheus text.
async fn scrape(server: &Server) -> String {
    let resp = server.req(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    resp.text().await.unwrap()
}

/// The value of the sample `series` (its name and labels as rendered),
/// or 0 when the scrape has none.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().expect("a number"))
}

fn invocations(function: &str, kind: &str, status: &str) -> String {
    format!(
        r#"berth_invocations_total{{function="admin/{function}",kind="{kind}",mode="exec",status="{status}"}}"#
    )
}

/// `promtool check metrics` on the scrape: the format and Prometheus's
/// naming rules (units, `_total`, help text).
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/host.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{}{}\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_a_mixed_workload_and_pass_promtool() {
    let server = Server::start().await;
    server.deploy("ok", &sh("cat")).await;
    server.deploy("fail", &sh("echo no >&2; exit 1")).await;
    let slow = FunctionConfig {
        timeout_secs: 1,
        ..sh("sleep 5")
    };
    server.deploy("slow", &slow).await;
    let narrow = FunctionConfig {
        max_instances: 1,
        concurrency: 1,
        max_queue: 0,
        ..sh("sleep 2; echo done")
    };
    server.deploy("narrow", &narrow).await;

    for i in 0..3 {
        let (status, _, body) = server.invoke("ok", "", format!("call {i}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("call {i}").into_bytes());
    }
    let (status, _, body) = server.invoke("fail", "", "").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(api_error(&body).code, "function_failed");
    let (status, _, body) = server.invoke("slow", "", "").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(api_error(&body).code, "timeout");

    // Two calls at once of a function with one slot and no queue: one is
    // served, the other turned away (whichever reaches the pool second).
    let first = {
        let req = server.req(Method::POST, "/v1/functions/narrow/invoke");
        tokio::spawn(async move { req.send().await.unwrap().status() })
    };
    let running = TaskQuery {
        function: Some("narrow".into()),
        status: Some("running".into()),
        ..TaskQuery::default()
    };
    let begun = Instant::now();
    while server.tasks(&running).await.tasks.is_empty() {
        assert!(begun.elapsed() < PATIENCE, "the first call never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (second, _, body) = server.invoke("narrow", "", "").await;
    let first = first.await.unwrap();
    let mut statuses = [first, second];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS],
        "{}",
        String::from_utf8_lossy(&body)
    );

    let task = server.submit("ok", "later").await;
    let task = server.wait(&task.id).await;
    assert_eq!(task.status.as_str(), "succeeded", "{task:?}");

    // An image pushed over the registry's HTTP API, then pulled.
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"a layer of the metrics test".repeat(100);
    let config_digest = put_blob(&server, "admin/app", config).await;
    let layer_digest = put_blob(&server, "admin/app", &layer).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let resp = server
        .req(Method::PUT, "/v2/admin/app/manifests/v1")
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let pulled = server
        .req(Method::GET, "/v2/admin/app/manifests/v1")
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.status(), StatusCode::OK);
    assert_eq!(pulled.bytes().await.unwrap(), manifest);
    let blob = server
        .req(Method::GET, &format!("/v2/admin/app/blobs/{layer_digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(blob.bytes().await.unwrap(), layer);
    assert_eq!(sha256(&layer), layer_digest);

    // An async task's end is counted just after it is recorded.
    let begun = Instant::now();
    let text = loop {
        let text = scrape(&server).await;
        if sample(&text, &invocations("ok", "async", "ok")) >= 1.0 {
            break text;
        }
        assert!(
            begun.elapsed() < PATIENCE,
            "the async task was never counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    promtool_check(&text);

    let expected = [
        (invocations("ok", "sync", "ok"), 3.0),
        (invocations("fail", "sync", "exit"), 1.0),
        (invocations("slow", "sync", "timeout"), 1.0),
        (invocations("narrow", "sync", "ok"), 1.0),
        (invocations("narrow", "sync", "busy"), 1.0),
        (invocations("ok", "async", "ok"), 1.0),
        (
            r#"berth_busy_rejections_total{function="admin/narrow",reason="queue_full"}"#.into(),
            1.0,
        ),
        // The first call of `ok` started its instance; the rest reused it.
        (
            r#"berth_cold_starts_total{function="admin/ok",mode="exec"}"#.into(),
            1.0,
        ),
        (
            r#"berth_scale_events_total{function="admin/ok",direction="up",reason="demand"}"#.into(),
            1.0,
        ),
        (
            r#"berth_instances{function="admin/ok",state="idle"}"#.into(),
            1.0,
        ),
        (
            r#"berth_invocation_phase_duration_seconds_count{function="admin/ok",kind="sync",phase="run"}"#.into(),
            3.0,
        ),
        (
            r#"berth_invocation_phase_duration_seconds_count{function="admin/ok",kind="async",phase="queue"}"#.into(),
            1.0,
        ),
        // Every sync call that reached its quota check asked the store
        // for its row: 3 + 1 + 1 + 2.
        (
            r#"berth_store_operation_duration_seconds_count{operation="insert_running"}"#.into(),
            7.0,
        ),
        (r#"berth_tasks{state="queued"}"#.into(), 0.0),
        (r#"berth_tasks{state="running"}"#.into(), 0.0),
        ("berth_registry_pushes_total".into(), 1.0),
        ("berth_registry_pulls_total".into(), 1.0),
        (
            "berth_registry_received_bytes_total".into(),
            (config.len() + layer.len() + manifest.len()) as f64,
        ),
        (
            "berth_registry_sent_bytes_total".into(),
            (manifest.len() + layer.len()) as f64,
        ),
    ];
    for (series, n) in &expected {
        assert_eq!(sample(&text, series), *n, "{series} in:\n{text}");
    }
    let calls: f64 = text
        .lines()
        .filter(|l| l.starts_with("berth_invocations_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(calls, 8.0, "no call counted twice or made up:\n{text}");
    let node = server.node_id();
    assert_eq!(
        sample(
            &text,
            &format!(r#"berth_executor_healthy{{executor="{node}"}}"#)
        ),
        1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            &format!(r#"berth_executor_capacity_containers{{executor="{node}"}}"#)
        ) > 0.0,
        "{text}"
    );
    assert!(!text.contains(&task.id), "task ids are never label values");
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_admin_key_may_scrape_metrics() {
    let server = Server::start().await;
    let key = server.create_tenant("alpha", Default::default()).await;
    let resp = server
        .req_as(&key, Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(api_error(&resp.bytes().await.unwrap()).code, "forbidden");
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api_error(&resp.bytes().await.unwrap()).code, "unauthorized");
    // The admin's key still may.
    let text = scrape(&server).await;
    assert_eq!(sample(&text, r#"berth_tasks{state="queued"}"#), 0.0);
    assert!(text.contains("# TYPE berth_tasks gauge\n"), "{text}");
}
