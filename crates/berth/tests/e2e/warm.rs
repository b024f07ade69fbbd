//! Warm instances against the real engine: reuse, scale to zero, minimum
//! instances, crashes, backpressure, http mode and per-request metering.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use berth_contract::{FunctionConfig, Mode, Task, TaskStatus};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{
    BUSYBOX, ECHO_HTTP, PATIENCE, Server, api_error, assert_no_containers, containers,
    docker_inspect, error_code, image, sh, task_id, wait_for_containers,
};

fn instances_of(function: &str) -> Vec<String> {
    containers(&format!("dev.berth.function={function}"))
}

/// Polls until the function has exactly `n` containers.
async fn wait_instances(server: &Server, function: &str, n: usize) {
    let begun = Instant::now();
    loop {
        let now = instances_of(function);
        if now.len() == n {
            return;
        }
        assert!(
            begun.elapsed() < PATIENCE,
            "{function} kept {} instances, wanted {n}:\n{}",
            now.len(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sequential_calls_reuse_warm_instances() {
    let server = Server::start().await;
    let cat = FunctionConfig {
        command: Some(vec!["/bin/cat".into()]),
        ..image(BUSYBOX)
    };
    server.deploy("reuse", &cat).await;
    let mut seen = HashSet::new();
    for i in 0..200 {
        let body = format!("call {i}");
        let (status, headers, out) = server.invoke("reuse", "", body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&out));
        assert_eq!(out, body.into_bytes());
        if i == 0 {
            let timing = headers["server-timing"].to_str().unwrap();
            assert!(timing.contains("start;dur="), "{timing}");
        }
        seen.extend(instances_of("reuse"));
    }
    assert!(
        (1..=2).contains(&seen.len()),
        "200 sequential calls used {} containers",
        seen.len()
    );
    // The warm container carries the same hardening as a fresh one, plus
    // the agent, read-only.
    let id = seen.iter().next().unwrap();
    let info = docker_inspect(id).expect("inspect");
    let hc = &info["HostConfig"];
    assert_eq!(hc["NetworkMode"], "none");
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["CapDrop"], json!(["ALL"]));
    let binds: Vec<String> = serde_json::from_value(hc["Binds"].clone()).unwrap();
    assert!(
        binds.iter().any(|b| b.ends_with(":/berth/agent:ro")),
        "{binds:?}"
    );
    assert!(
        !binds.iter().any(|b| b.contains("docker.sock")),
        "{binds:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_instances_scale_to_zero_and_min_instances_stay() {
    let server = Server::start().await;
    let brief = FunctionConfig {
        idle_timeout_secs: 1,
        concurrency: 1,
        ..sh("cat")
    };
    server.deploy("brief", &brief).await;
    let kept = FunctionConfig {
        idle_timeout_secs: 1,
        min_instances: 1,
        concurrency: 1,
        ..sh("sleep 1; cat")
    };
    server.deploy("kept", &kept).await;
    // min_instances is honoured from the deploy on, before any call.
    wait_instances(&server, "kept", 1).await;

    let (status, _, _) = server.invoke("brief", "", "x").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(instances_of("brief").len(), 1);
    // Three overlapping calls need three instances of `kept`.
    let calls: Vec<_> = (0..3).map(|_| server.invoke("kept", "", "y")).collect();
    for (status, _, body) in futures::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!(instances_of("kept").len(), 3);

    assert_no_containers("dev.berth.function=brief").await;
    wait_instances(&server, "kept", 1).await;
    // ... and it stays at one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(instances_of("kept").len(), 1);
    let (status, headers, _) = server.invoke("kept", "", "z").await;
    assert_eq!(status, StatusCode::OK);
    let timing = headers["server-timing"].to_str().unwrap();
    assert!(timing.contains("start;dur=0"), "warm call: {timing}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_mid_request_is_502_and_the_next_call_works() {
    let server = Server::start().await;
    // Reads part of its input, then dies of SIGSEGV.
    let fragile =
        sh(r#"read line; if [ "$line" = crash ]; then kill -SEGV $$; fi; echo "ok $line""#);
    server.deploy("fragile", &fragile).await;
    let (status, _, body) = server.invoke("fragile", "", "crash\nmore\n").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let err = api_error(&body);
    assert_eq!(err.code, "function_failed", "{err:?}");
    assert_eq!(err.exit_code, Some(128 + 11), "{err:?}");
    let (status, _, body) = server.invoke("fragile", "", "fine\n").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"ok fine\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_in_a_warm_instance_kills_the_request_not_the_instance() {
    let server = Server::start().await;
    let napper = FunctionConfig {
        timeout_secs: 1,
        concurrency: 1,
        max_instances: 1,
        ..sh(r#"if [ "$QUERY_STRING" = nap ]; then sleep 600; fi; echo awake"#)
    };
    server.deploy("napper", &napper).await;
    let (status, _, body) = server.invoke("napper", "nap", "").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_code(&body), "timeout");
    // The one slot is free again and the same instance serves.
    let before = instances_of("napper");
    let (status, _, body) = server.invoke("napper", "", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"awake\n");
    assert_eq!(instances_of("napper"), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_function_answers_429_and_nothing_else_fails() {
    let server = Server::start().await;
    let narrow = FunctionConfig {
        max_instances: 2,
        concurrency: 1,
        max_queue: 3,
        queue_timeout_secs: 60,
        ..sh("sleep 1; echo done")
    };
    server.deploy("narrow", &narrow).await;
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let req = server.req(Method::POST, "/v1/functions/narrow/invoke");
            async move {
                let resp = req.send().await.expect("send");
                let status = resp.status();
                let retry = resp.headers().get("retry-after").cloned();
                let body = resp.bytes().await.unwrap();
                (status, retry, body)
            }
        })
        .collect();
    let results = futures::future::join_all(calls).await;
    let mut ok = 0;
    let mut busy = 0;
    for (status, retry, body) in &results {
        match *status {
            StatusCode::OK => {
                assert_eq!(&body[..], b"done\n");
                ok += 1;
            }
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(error_code(body), "busy");
                assert!(retry.is_some(), "429 without Retry-After");
                busy += 1;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(body)),
        }
    }
    assert!(ok >= 2 && busy > 0, "{ok} ok, {busy} busy");
    assert!(instances_of("narrow").len() <= 2);
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn http_mode_proxies_to_one_long_lived_program() {
    let server = Server::start().await;
    let echo = FunctionConfig {
        mode: Mode::Http,
        concurrency: 8,
        ..image(ECHO_HTTP)
    };
    server.deploy("echo", &echo).await;
    let mut pids = HashSet::new();
    for i in 1..=3 {
        let resp = server
            .req(Method::POST, "/v1/functions/echo/invoke/some/path?x=1")
            .header("x-test", "yes")
            .body(format!("hello {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers().clone();
        assert_eq!(h["x-echo-count"], i.to_string().as_str(), "same process");
        assert_eq!(h["x-echo-uri"], "/some/path?x=1");
        assert_eq!(h["x-echo-test"], "yes");
        assert!(h.contains_key("x-berth-task-id"));
        pids.insert(h["x-echo-pid"].to_str().unwrap().to_owned());
        assert_eq!(resp.bytes().await.unwrap(), format!("hello {i}").as_bytes());
    }
    assert_eq!(pids.len(), 1);
    let post = |path: &str| {
        server
            .req(Method::POST, &format!("/v1/functions/echo/invoke{path}"))
            .send()
    };
    // The program's own status is passed through.
    let resp = post("/status/418").await.unwrap();
    assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);

    // The program dying mid-request fails that request cleanly, and a new
    // instance serves the next one.
    let resp = post("/crash").await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let resp = server
        .req(Method::POST, "/v1/functions/echo/invoke")
        .body("again")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-echo-count"], "1", "a fresh process");
    server.assert_no_panic();
}

/// The agent meters each request's own CPU time from the kernel.
#[tokio::test(flavor = "multi_thread")]
async fn cpu_time_is_metered_per_request() {
    let server = Server::start().await;
    let burn = FunctionConfig {
        cpu_millis: 1000,
        ..sh("i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; echo $i")
    };
    server.deploy("burn", &burn).await;
    server.deploy("idle", &sh("sleep 1; echo rested")).await;
    let (status, headers, _) = server.invoke("burn", "", "").await;
    assert_eq!(status, StatusCode::OK);
    let t = server.task(&task_id(&headers)).await;
    let cpu = t.usage.cpu_ms.expect("cpu_ms recorded");
    let run = t.timing.run_ms.expect("run_ms");
    // The loop's CPU is its own work, whatever else shares the machine;
    // a single thread can never use more CPU than wall time. (Its share of
    // the wall time depends on the machine's load, so it is not checked.)
    assert!(cpu >= 100, "{t:?}");
    assert!(cpu <= run + 50, "cpu {cpu} ms vs run {run} ms: {t:?}");
    assert!(t.usage.peak_memory_bytes.unwrap() > 0, "{t:?}");

    let (status, headers, _) = server.invoke("idle", "", "").await;
    assert_eq!(status, StatusCode::OK);
    let t = server.task(&task_id(&headers)).await;
    let cpu = t.usage.cpu_ms.expect("cpu_ms recorded");
    assert!(cpu < 100, "sleeping costs little CPU: {t:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prefer_wait_returns_inline_or_falls_back_to_202() {
    let server = Server::start().await;
    server.deploy("quick", &sh("tr a-z A-Z")).await;
    server.deploy("slow", &sh("sleep 3; echo late")).await;
    let resp = server
        .req(Method::POST, "/v1/functions/quick/tasks")
        .header("prefer", "wait=20")
        .body("inline")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["preference-applied"], "wait=20");
    let id = task_id(resp.headers());
    assert_eq!(resp.bytes().await.unwrap(), "INLINE");
    assert_eq!(server.task(&id).await.status, TaskStatus::Succeeded);

    let resp = server
        .req(Method::POST, "/v1/functions/slow/tasks")
        .header("prefer", "respond-async, wait=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let accepted: Task = resp.json().await.unwrap();
    let t = server.wait(&accepted.id).await;
    assert_eq!(t.status, TaskStatus::Succeeded);
}

/// Stopping the server removes its warm instances.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_removes_warm_instances() {
    let mut server = Server::start().await;
    server.deploy("warm", &sh("cat")).await;
    let (status, _, _) = server.invoke("warm", "", "x").await;
    assert_eq!(status, StatusCode::OK);
    let label = format!("dev.berth.node={}", server.node_id());
    wait_for_containers(&label).await;
    let status = server.terminate().await;
    assert!(status.success(), "{}", server.log());
    assert_no_containers(&label).await;
}
