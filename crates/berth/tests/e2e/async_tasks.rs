use std::collections::HashSet;

use serde_json::json;

use crate::harness::{Server, wait_for_containers};

#[tokio::test(flavor = "multi_thread")]
async fn fifty_async_tasks_all_succeed_with_their_own_output() {
    let server = Server::start_with(&["--async-concurrency", "4"]).await;
    server.deploy_sh("upper", "tr a-z A-Z", json!({})).await;
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push((i, server.submit("upper", format!("task number {i}")).await));
    }
    for (i, id) in &ids {
        let t = server.wait_task(id).await;
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(t["attempt"], 1);
        assert_eq!(t["kind"], "async");
        assert_eq!(
            server.output(id).await,
            format!("TASK NUMBER {i}").into_bytes()
        );
    }
    // The list agrees, page by page, with no task twice.
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/tasks?function=upper&status=succeeded&limit=7".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = server.get_json(&path).await;
        for t in page["tasks"].as_array().unwrap() {
            assert!(
                seen.insert(t["id"].as_str().unwrap().to_owned()),
                "listed twice: {t}"
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 50);
    server.assert_no_panic();
}

/// A normal stop (SIGTERM) hands unfinished async work back to the queue
/// without spending an attempt, kills its container, and a restart runs it.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_hands_running_tasks_back_without_spending_an_attempt() {
    let mut server = Server::start_with(&["--shutdown-grace-secs", "1"]).await;
    server
        .deploy_sh("long", "sleep 4; echo finished", json!({"mode": "fresh"}))
        .await;
    let id = server.submit("long", "").await;
    server.wait_status(&id, "running").await;
    let label = format!("dev.berth.task={id}");
    wait_for_containers(&label).await;

    let status = server.terminate().await;
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status}\n{}",
        server.log()
    );
    crate::harness::assert_no_containers(&label).await;

    server.restart().await;
    let t = server.wait_task(&id).await;
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(t["attempt"], 1, "the interrupted run was not counted: {t}");
    assert_eq!(server.output(&id).await, b"finished\n");
    server.assert_no_panic();
}
