//! The server's own log: one structured line per request and per task
//! transition, as `--log-format json` writes them.

use std::time::{Duration, Instant};

use berth_client::TaskQuery;
use berth_contract::FunctionConfig;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::{PATIENCE, Server, sh, task_id};

/// Every JSON line of the log.
fn lines(server: &Server) -> Vec<Value> {
    server
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line.get(name)
        .or_else(|| line.get("span").and_then(|s| s.get(name)))
}

fn text(line: &Value, name: &str) -> Option<String> {
    field(line, name).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// The request lines for `path` answered with `status`.
fn requests(all: &[Value], path: &str, status: u16) -> Vec<Value> {
    all.iter()
        .filter(|l| l["target"] == "berth::http" && l["message"] == "request")
        .filter(|l| text(l, "path").as_deref() == Some(path))
        .filter(|l| field(l, "status").and_then(Value::as_u64) == Some(u64::from(status)))
        .cloned()
        .collect()
}

/// The task lines of one task, by message.
fn transitions(all: &[Value], task: &str) -> Vec<String> {
    all.iter()
        .filter(|l| l["target"] == "berth::task" && text(l, "task").as_deref() == Some(task))
        .map(|l| l["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until the log has what `enough` looks for (lines are written as
/// the server goes; the answer can reach the test first).
async fn log_until(server: &Server, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let begun = Instant::now();
    loop {
        let all = lines(server);
        if enough(&all) {
            return all;
        }
        assert!(
            begun.elapsed() < PATIENCE,
            "the log never had the expected lines:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_and_task_transition_is_one_structured_line() {
    let server = Server::start_with(&["--log-format", "json"]).await;
    server.deploy("fine", &sh("cat")).await;
    server.deploy("broken", &sh("echo nope >&2; exit 3")).await;
    let narrow = FunctionConfig {
        max_instances: 1,
        concurrency: 1,
        max_queue: 0,
        ..sh("sleep 3; echo slow")
    };
    server.deploy("narrow", &narrow).await;

    // 200
    let (status, headers, _) = server.invoke("fine", "", "hello").await;
    assert_eq!(status, StatusCode::OK);
    let ok_task = task_id(&headers);
    // 502
    let (status, headers, _) = server.invoke("broken", "", "").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let bad_task = task_id(&headers);
    // 429: a second call while the only slot is taken and no queue is allowed.
    let first = {
        let req = server.req(Method::POST, "/v1/functions/narrow/invoke");
        tokio::spawn(async move { req.send().await.expect("send").status() })
    };
    let begun = Instant::now();
    loop {
        let running = server
            .tasks(&TaskQuery {
                function: Some("narrow".into()),
                status: Some("running".into()),
                ..TaskQuery::default()
            })
            .await;
        if !running.tasks.is_empty() {
            break;
        }
        assert!(begun.elapsed() < PATIENCE, "the first call never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, _) = server.invoke("narrow", "", "").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    // An async task, to its end.
    let task = server.submit("fine", "later").await;
    server.wait(&task.id).await;

    let all = log_until(&server, |all| {
        transitions(all, &task.id).iter().any(|m| m == "task ended")
    })
    .await;

    let ok = requests(&all, "/v1/functions/fine/invoke", 200);
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(text(&ok[0], "method").as_deref(), Some("POST"));
    assert_eq!(text(&ok[0], "tenant").as_deref(), Some("admin"));
    assert_eq!(text(&ok[0], "function").as_deref(), Some("fine"));
    assert_eq!(text(&ok[0], "task").as_deref(), Some(ok_task.as_str()));
    assert!(field(&ok[0], "ms").and_then(Value::as_f64).is_some());

    let bad = requests(&all, "/v1/functions/broken/invoke", 502);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(text(&bad[0], "task").as_deref(), Some(bad_task.as_str()));
    assert_eq!(text(&bad[0], "tenant").as_deref(), Some("admin"));

    let busy = requests(&all, "/v1/functions/narrow/invoke", 429);
    assert_eq!(busy.len(), 1, "{busy:?}");
    assert_eq!(text(&busy[0], "function").as_deref(), Some("narrow"));

    let accepted = requests(&all, "/v1/functions/fine/tasks", 202);
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(
        text(&accepted[0], "task").as_deref(),
        Some(task.id.as_str())
    );

    // The tasks' transitions, one line each.
    assert_eq!(
        transitions(&all, &task.id),
        ["task queued", "task started", "task ended"]
    );
    assert_eq!(transitions(&all, &ok_task), ["task started", "task ended"]);
    let ended = all
        .iter()
        .find(|l| {
            text(l, "task").as_deref() == Some(bad_task.as_str()) && l["message"] == "task ended"
        })
        .expect("the failed call's end");
    assert_eq!(text(ended, "status").as_deref(), Some("failed"));
    assert_eq!(text(ended, "code").as_deref(), Some("exit"));
    assert_eq!(field(ended, "exit_code").and_then(Value::as_i64), Some(3));

    // Nothing secret: the admin key never appears.
    assert!(!server.log().contains(&server.key), "the key was logged");
    // No colour codes in a log that is not a terminal.
    assert!(!server.log().contains('\u{1b}'), "escape codes in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_text_log_to_a_file_has_no_colour() {
    let server = Server::start().await;
    server.deploy("fine", &sh("cat")).await;
    let (status, _, _) = server.invoke("fine", "", "x").await;
    assert_eq!(status, StatusCode::OK);
    let begun = Instant::now();
    while !server.log().contains("task ended") {
        assert!(
            begun.elapsed() < PATIENCE,
            "no task line:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = server.log();
    assert!(!text.contains('\u{1b}'), "escape codes in the log:\n{text}");
    assert!(
        text.contains(r#"path="/v1/functions/fine/invoke""#),
        "{text}"
    );
    assert!(text.contains("status=200"), "{text}");
}
