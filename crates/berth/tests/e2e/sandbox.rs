use std::process::Command;

use berth_contract::{Deployed, FunctionConfig, Mode, TaskStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    BUSYBOX, Server, assert_no_containers, containers, docker_inspect, sh, task_id,
    wait_for_containers,
};

/// What a function can see of its own sandbox, from the inside, as the
/// default unprivileged user; then who it runs as when the image or the
/// function says otherwise.
#[tokio::test(flavor = "multi_thread")]
async fn function_runs_in_the_hardened_baseline() {
    let server = Server::start().await;
    let probe = r#"
echo "uid: $(id -u) gid: $(id -g)"
grep -E '^(CapEff|NoNewPrivs):' /proc/self/status
echo "net: $(ls /sys/class/net | tr '\n' ' ')"
if touch /rootfs-write 2>/dev/null; then echo "rootfs: writable"; else echo "rootfs: read-only"; fi
if echo hi > /tmp/probe && [ "$(cat /tmp/probe)" = hi ]; then echo "tmp: writable"; fi
if dd if=/dev/zero of=/tmp/fill bs=1M count=100 2>/dev/null; then echo "tmp: unbounded"; else echo "tmp: bounded"; fi
"#;
    server.deploy("probe", &sh(probe)).await;
    let (status, _, body) = server.invoke("probe", "", "").await;
    let out = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::OK, "{out}");
    for line in [
        "uid: 65534 gid: 65534",
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

    // The warm instance as the engine sees it: nobody, and nothing from
    // the host but the agent (read-only) and its own socket directory.
    let node = server.node_id();
    let instance = containers(&format!("dev.berth.node={node}"))
        .pop()
        .expect("the warm instance");
    let info = docker_inspect(&instance).expect("inspect");
    assert_eq!(info["Config"]["User"], "65534:65534");
    let binds: Vec<String> = serde_json::from_value(info["HostConfig"]["Binds"].clone()).unwrap();
    assert_eq!(binds.len(), 2, "{binds:?}");
    assert!(binds[0].ends_with(":/berth/agent:ro"), "{binds:?}");
    assert!(binds[1].ends_with(":/berth/run:rw"), "{binds:?}");
    assert_no_docker_socket(&info);

    // Root when the function asks for it, still without capabilities; an
    // image's own non-root USER is kept.
    let who = "echo \"$(id -u):$(id -g) $(grep CapEff /proc/self/status)\"";
    let root = FunctionConfig {
        run_as_root: true,
        ..sh(who)
    };
    server.deploy("sbx-root", &root).await;
    let own_user = FunctionConfig {
        image: "berth-test/nonroot:latest".into(),
        ..sh(who)
    };
    server.deploy("sbx-own-user", &own_user).await;
    for (name, expected) in [
        ("sbx-root", "0:0 CapEff:\t0000000000000000\n"),
        ("sbx-own-user", "4321:4321 CapEff:\t0000000000000000\n"),
    ] {
        let (status, _, body) = server.invoke(name, "", "").await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(String::from_utf8_lossy(&body), expected, "{name}");
    }
    let shown = server.function("sbx-root").await;
    assert!(shown.latest.config.run_as_root);

    // The CLI sets it too.
    let cli = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "fn",
            "deploy",
            "sbx-cli-root",
            "--image",
            BUSYBOX,
            "--run-as-root",
            "-o",
            "json",
        ])
        .args(["--", "/bin/sh", "-c", "id -u"])
        .env("BERTH_DATA_DIR", server.data_dir())
        .env_remove("BERTH_URL")
        .env_remove("BERTH_API_KEY")
        .output()
        .expect("berth fn deploy");
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let deployed: Deployed = serde_json::from_slice(&cli.stdout).unwrap();
    assert!(deployed.function.latest.config.run_as_root);
    let (status, _, body) = server.invoke("sbx-cli-root", "", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"0\n");
}

fn assert_no_docker_socket(info: &Value) {
    let mounts = info["Mounts"].to_string() + &info["HostConfig"]["Binds"].to_string();
    assert!(
        !mounts.contains("docker.sock"),
        "the engine's socket is mounted: {mounts}"
    );
}

/// The container's settings as the engine reports them, then a cancel.
#[tokio::test(flavor = "multi_thread")]
async fn container_limits_match_the_function() {
    let server = Server::start().await;
    let limited = FunctionConfig {
        cpu_millis: 500,
        memory_mb: 64,
        mode: Mode::Fresh,
        env: [("GREETING".to_owned(), "hi".to_owned())].into(),
        ..sh("sleep 600")
    };
    server.deploy("limited", &limited).await;
    let id = server.submit("limited", "").await.id;
    server.wait_status(&id, TaskStatus::Running).await;
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
    assert_eq!(
        hc["Tmpfs"]["/tmp"], "rw,nosuid,nodev,size=64m,mode=1777",
        "a bounded, world-writable /tmp"
    );
    assert_eq!(hc["LogConfig"]["Type"], "none");
    assert_ne!(hc["Privileged"], true);
    assert_eq!(info["Config"]["User"], "65534:65534");
    let ulimits: Vec<(String, i64, i64)> = hc["Ulimits"]
        .as_array()
        .expect("ulimits")
        .iter()
        .map(|u| {
            let n = |k: &str| u[k].as_i64().unwrap();
            (u["Name"].as_str().unwrap().to_owned(), n("Soft"), n("Hard"))
        })
        .collect();
    assert!(
        ulimits.contains(&("nofile".into(), 1024, 1024)),
        "{ulimits:?}"
    );
    assert!(ulimits.contains(&("core".into(), 0, 0)), "{ulimits:?}");
    let binds = hc["Binds"].as_array().cloned().unwrap_or_default();
    assert!(
        binds.is_empty(),
        "nothing from the host is mounted: {binds:?}"
    );
    assert_eq!(info["Mounts"], json!([]), "no volume either");
    assert_no_docker_socket(&info);
    // The environment is the image's, the function's and the request's
    // (CGI variables and the task's own ids): none of the server's, such
    // as its admin key or the engine's registry login.
    let env: Vec<String> = serde_json::from_value(info["Config"]["Env"].clone()).unwrap();
    let request_vars = [
        "GATEWAY_INTERFACE",
        "SERVER_PROTOCOL",
        "SERVER_SOFTWARE",
        "REQUEST_METHOD",
        "QUERY_STRING",
        "SCRIPT_NAME",
        "PATH_INFO",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "BERTH_TASK_ID",
        "BERTH_FUNCTION",
        "BERTH_VERSION",
        "BERTH_ATTEMPT",
        // Which executor node runs it: set per container, not per request.
        "BERTH_NODE",
    ];
    for var in &env {
        let (name, value) = var.split_once('=').expect("NAME=value");
        assert!(
            ["PATH", "GREETING"].contains(&name)
                || request_vars.contains(&name)
                || name.starts_with("HTTP_"),
            "{name} is not the function's to see: {env:?}"
        );
        assert!(
            !value.contains(&server.key),
            "the admin key leaked into {name}"
        );
    }
    assert!(env.contains(&"GREETING=hi".to_owned()), "{env:?}");
    let labels: &Value = &info["Config"]["Labels"];
    assert_eq!(labels["dev.berth.node"], server.node_id());
    assert_eq!(labels["dev.berth.function"], "limited");

    server.cancel(&id).await;
    assert_no_containers(&label).await;
    assert_eq!(server.task(&id).await.status, TaskStatus::Cancelled);
}

/// A timeout is SIGTERM, then SIGKILL once the grace period is over, in
/// warm and fresh containers alike: a function that handles SIGTERM gets
/// to say so on stderr before it ends, and one that handles it by carrying
/// on is killed anyway. Both are `timed_out`.
#[tokio::test(flavor = "multi_thread")]
async fn timeout_is_sigterm_then_sigkill_after_the_grace() {
    let server = Server::start().await;
    let cases = [
        (
            "stops",
            "trap 'echo \"got TERM\" >&2; exit 143' TERM; sleep 600 & wait",
            "got TERM",
        ),
        (
            "ignores",
            "trap 'echo \"ignoring TERM\" >&2' TERM; while :; do sleep 0.1; done",
            "ignoring TERM",
        ),
    ];
    for mode in [Mode::Exec, Mode::Fresh] {
        for (what, script, logged) in cases {
            let name = format!("sbx-term-{what}-{}", mode.as_str());
            let config = FunctionConfig {
                mode,
                timeout_secs: 1,
                ..sh(script)
            };
            server.deploy(&name, &config).await;
            let (status, headers, body) = server.invoke(&name, "", "").await;
            let text = String::from_utf8_lossy(&body).into_owned();
            assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{name}: {text}");
            let id = task_id(&headers);
            assert_eq!(
                server.task(&id).await.status,
                TaskStatus::TimedOut,
                "{name}"
            );
            // The shell may also report its `sleep` killed by SIGTERM.
            let log = server.logs(&id).await;
            assert!(log.lines().any(|l| l == logged), "{name}: {log:?}");
            if mode == Mode::Fresh {
                assert_no_containers(&format!("dev.berth.task={id}")).await;
            }
        }
    }
    server.assert_no_panic();
}

/// `--runtime` names the engine's OCI runtime for function containers
/// (here the runc shim every engine registers, since no other is
/// installed on test hosts).
#[tokio::test(flavor = "multi_thread")]
async fn runtime_flag_picks_the_engines_runtime() {
    let server = Server::start_with(&["--runtime", "io.containerd.runc.v2"]).await;
    server.deploy("sbx-runtime", &sh("echo ran")).await;
    let (status, _, body) = server.invoke("sbx-runtime", "", "").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"ran\n");
    let instance = containers(&format!("dev.berth.node={}", server.node_id()))
        .pop()
        .expect("the warm instance");
    let info = docker_inspect(&instance).expect("inspect");
    assert_eq!(info["HostConfig"]["Runtime"], "io.containerd.runc.v2");
}
