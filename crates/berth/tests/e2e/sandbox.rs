use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Server, docker_inspect, wait_for_containers};

/// What a function can see of its own sandbox, from the inside.
#[tokio::test(flavor = "multi_thread")]
async fn function_runs_in_the_hardened_baseline() {
    let server = Server::start().await;
    let probe = r#"
grep -E '^(CapEff|NoNewPrivs):' /proc/self/status
echo "net: $(ls /sys/class/net | tr '\n' ' ')"
if touch /rootfs-write 2>/dev/null; then echo "rootfs: writable"; else echo "rootfs: read-only"; fi
if echo hi > /tmp/probe && [ "$(cat /tmp/probe)" = hi ]; then echo "tmp: writable"; fi
if dd if=/dev/zero of=/tmp/fill bs=1M count=100 2>/dev/null; then echo "tmp: unbounded"; else echo "tmp: bounded"; fi
"#;
    server.deploy_sh("probe", probe, json!({})).await;
    let (status, _, body) = server.invoke("probe", "", "").await;
    let out = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::OK, "{out}");
    for line in [
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
        "net: lo ",
        "rootfs: read-only",
        "tmp: writable",
        "tmp: bounded",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "expected {line:?} in:\n{out}"
        );
    }
}

/// The container's settings as the engine reports them, then a cancel.
#[tokio::test(flavor = "multi_thread")]
async fn container_limits_match_the_function() {
    let server = Server::start().await;
    server
        .deploy_sh(
            "limited",
            "sleep 600",
            json!({"cpu_millis": 500, "memory_mb": 64, "mode": "fresh"}),
        )
        .await;
    let id = server.submit("limited", "").await;
    server.wait_status(&id, "running").await;
    let label = format!("dev.berth.task={id}");
    let container = wait_for_containers(&label).await.remove(0);
    let info = docker_inspect(&container).expect("inspect");
    let hc = &info["HostConfig"];
    let mib64 = 64 * 1024 * 1024;
    assert_eq!(hc["NetworkMode"], "none");
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["CapDrop"], json!(["ALL"]));
    assert!(
        hc["SecurityOpt"]
            .as_array()
            .unwrap()
            .contains(&json!("no-new-privileges"))
    );
    assert_eq!(hc["Memory"], mib64);
    assert_eq!(hc["MemorySwap"], mib64, "no swap beyond the memory limit");
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert!(hc["PidsLimit"].as_i64().unwrap() > 0);
    assert!(hc["Tmpfs"]["/tmp"].as_str().unwrap().contains("size="));
    assert_eq!(hc["LogConfig"]["Type"], "none");
    assert_ne!(hc["Privileged"], true);
    let binds = hc["Binds"].as_array().cloned().unwrap_or_default();
    assert!(
        binds.is_empty(),
        "nothing from the host is mounted: {binds:?}"
    );
    let labels: &Value = &info["Config"]["Labels"];
    assert_eq!(labels["dev.berth.node"], server.node_id());
    assert_eq!(labels["dev.berth.function"], "limited");

    let resp = server
        .req(reqwest::Method::DELETE, &format!("/v1/tasks/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    crate::harness::assert_no_containers(&label).await;
    assert_eq!(server.task(&id).await["status"], "cancelled");
}

/// A function that outgrows its memory limit is killed by the kernel and
/// reported as `oom`, not as an ordinary failure, every time: in a warm
/// instance the agent reads the cgroup's own OOM-kill counter, which does
/// not miss kills the way the engine's notification can. The instance
/// survives the kill and serves the next run.
#[tokio::test(flavor = "multi_thread")]
async fn memory_hog_is_reported_as_oom() {
    let server = Server::start().await;
    // busybox sort holds a whole line in memory: 200 MB with no newline.
    server
        .deploy_sh(
            "hog",
            "head -c 200000000 /dev/zero | sort > /dev/null",
            json!({"memory_mb": 16, "concurrency": 1, "max_instances": 1}),
        )
        .await;
    for _ in 0..3 {
        let (status, headers, body) = server.invoke("hog", "", "").await;
        let text = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{text}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "oom", "{text}");
        let id = headers["x-berth-task-id"].to_str().unwrap();
        let t = server.task(id).await;
        assert_eq!(t["status"], "failed");
        assert_eq!(t["error"]["code"], "oom");
    }
    server.assert_no_panic();
}
