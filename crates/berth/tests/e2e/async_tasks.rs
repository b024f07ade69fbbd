use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{PATIENCE, Server, containers, wait_for_containers};

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

/// SIGKILL the server while tasks are queued and running: after a restart
/// every accepted task still completes, the interrupted ones on attempt 2,
/// and the killed server's containers are reaped.
#[tokio::test(flavor = "multi_thread")]
async fn accepted_tasks_survive_a_sigkill() {
    let mut server = Server::start_with(&["--async-concurrency", "2"]).await;
    server
        .deploy_sh("slow", "sleep 2; tr a-z A-Z", json!({}))
        .await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push((i, server.submit("slow", format!("job {i}")).await));
    }
    // Wait until the first two are running (inside their 2 s sleep).
    let begun = Instant::now();
    let running = loop {
        let page: Value = server.get_json("/v1/tasks?status=running").await;
        let running: Vec<String> = page["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect();
        if running.len() == 2 {
            break running;
        }
        assert!(begun.elapsed() < PATIENCE, "tasks never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let label = format!("dev.berth.node={}", server.node_id());
    let before_kill = wait_for_containers(&label).await;

    server.kill();
    server.restart().await;

    for (i, id) in &ids {
        let t = server.wait_task(id).await;
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(server.output(id).await, format!("JOB {i}").into_bytes());
        if running.contains(id) {
            assert_eq!(
                t["attempt"], 2,
                "an interrupted task is re-run as attempt 2: {t}"
            );
        }
    }
    let now: HashSet<_> = containers(&label).into_iter().collect();
    for old in before_kill {
        assert!(
            !now.contains(&old),
            "container {old} of the killed server was not reaped"
        );
    }
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_dequeues_or_kills() {
    let server = Server::start_with(&["--async-concurrency", "1"]).await;
    server
        .deploy_sh("forever", "sleep 600", json!({"mode": "fresh"}))
        .await;
    let running = server.submit("forever", "").await;
    let queued = server.submit("forever", "").await;
    server.wait_status(&running, "running").await;
    assert_eq!(server.task(&queued).await["status"], "queued");

    // Output of an unfinished task is a conflict, not an empty success.
    let resp = server
        .req(Method::GET, &format!("/v1/tasks/{running}/output"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);

    for id in [&queued, &running] {
        let resp = server
            .req(Method::DELETE, &format!("/v1/tasks/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let t: Value = resp.json().await.unwrap();
        assert_eq!(t["status"], "cancelled");
    }
    crate::harness::assert_no_containers(&format!("dev.berth.task={running}")).await;
    let again = server
        .req(Method::DELETE, &format!("/v1/tasks/{running}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    // Neither ever reports anything but cancelled.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.task(&running).await["status"], "cancelled");
    assert_eq!(server.task(&queued).await["status"], "cancelled");
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
