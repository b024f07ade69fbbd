//! Regression tests for defects found by trying Berth from the outside,
//! one test (or more) per defect, each against the real binary and engine.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_client::{Call, Client};
use berth_contract::{FunctionConfig, TaskStatus};
use serde_json::json;

use crate::harness::{BUSYBOX, ECHO_HTTP, PATIENCE, Server, containers};

fn client(server: &Server) -> Client {
    Client::new(&server.url, &server.key).expect("client")
}

fn config(v: serde_json::Value) -> FunctionConfig {
    serde_json::from_value(v).expect("a function definition")
}

/// The CLI, found the way a user on the same machine finds the server.
fn berth(server: &Server, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("BERTH_DATA_DIR", server.data_dir())
        .env_remove("BERTH_URL")
        .env_remove("BERTH_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    drop(child.stdin.take());
    child.wait_with_output().expect("berth")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `berth fn get ../tasks` printed the task list, and `berth fn delete
/// "../tasks/ID"` cancelled a task while printing `{"deleted":...}`: names
/// went into URLs unescaped.
#[tokio::test(flavor = "multi_thread")]
async fn cli_names_stay_in_their_path_segment() {
    let server = Server::start().await;
    let c = client(&server);
    c.deploy(
        "slow",
        &config(json!({"image": BUSYBOX, "command": ["/bin/sh", "-c", "sleep 30"]})),
    )
    .await
    .unwrap();
    let task = c.submit("slow", None, Call::new("")).await.unwrap();

    let listed = berth(&server, &["fn", "get", "../tasks"]);
    assert!(!listed.status.success(), "{}", stdout(&listed));
    assert!(
        stderr(&listed).contains("function_not_found"),
        "{}",
        stderr(&listed)
    );
    assert!(!stdout(&listed).contains(&task.id), "no task list printed");

    let deleted = berth(&server, &["fn", "delete", &format!("../tasks/{}", task.id)]);
    assert!(!deleted.status.success(), "{}", stdout(&deleted));
    assert!(!stdout(&deleted).contains("deleted"));
    let after = c.task(&task.id).await.unwrap();
    assert_ne!(
        after.status,
        TaskStatus::Cancelled,
        "the task was not touched"
    );

    for dots in [".", ".."] {
        let out = berth(&server, &["fn", "get", dots]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("not a valid name"),
            "{}",
            stderr(&out)
        );
    }
    c.cancel(&task.id).await.unwrap();
}

/// `berth fn deploy --command /bin/busybox cat --memory 64` swallowed
/// `--memory 64` into the command. The command now follows `--`, and
/// flags after a program are refused rather than taken as its arguments.
#[tokio::test(flavor = "multi_thread")]
async fn cli_command_does_not_swallow_flags() {
    let server = Server::start().await;
    let swallowed = berth(
        &server,
        &[
            "fn",
            "deploy",
            "cat",
            "--image",
            BUSYBOX,
            "--command",
            "/bin/busybox",
            "cat",
            "--memory",
            "64",
        ],
    );
    assert!(!swallowed.status.success(), "{}", stdout(&swallowed));
    assert!(
        client(&server).function("cat").await.is_err(),
        "nothing was deployed"
    );

    let ok = berth(
        &server,
        &[
            "fn",
            "deploy",
            "cat",
            "--image",
            BUSYBOX,
            "--memory",
            "64",
            "--",
            "/bin/busybox",
            "cat",
        ],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let f = client(&server).function("cat").await.unwrap();
    assert_eq!(f.latest.config.memory_mb, 64);
    assert_eq!(
        f.latest.config.command,
        Some(vec!["/bin/busybox".to_owned(), "cat".to_owned()])
    );
}

/// Redeploying with only `--timeout` reset memory and every other setting
/// to the defaults. A redeploy now changes only what it names, over the
/// CLI and over `PATCH` (JSON merge patch); `PUT` stays a whole definition.
#[tokio::test(flavor = "multi_thread")]
async fn redeploying_one_setting_keeps_the_others() {
    let server = Server::start().await;
    let first = berth(
        &server,
        &[
            "fn",
            "deploy",
            "keep",
            "--image",
            BUSYBOX,
            "--memory",
            "64",
            "--cpu",
            "500",
            "--env",
            "A=1",
            "--env",
            "B=2",
            "--max-instances",
            "3",
            "--",
            "/bin/sh",
            "-c",
            "echo $A$B",
        ],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let again = berth(&server, &["fn", "deploy", "keep", "--timeout", "9"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let f = client(&server).function("keep").await.unwrap();
    let c = &f.latest.config;
    assert_eq!(f.latest_version, 2);
    assert_eq!(c.timeout_secs, 9);
    assert_eq!(c.memory_mb, 64);
    assert_eq!(c.cpu_millis, 500);
    assert_eq!(c.max_instances, 3);
    assert_eq!(c.image, BUSYBOX);
    assert_eq!(c.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(c.command.as_ref().map(Vec::len), Some(3));

    let env = berth(
        &server,
        &["fn", "deploy", "keep", "--env", "C=3", "--unset-env", "A"],
    );
    assert!(env.status.success(), "{}", stderr(&env));
    let f = client(&server).function("keep").await.unwrap();
    let names: Vec<_> = f.latest.config.env.keys().cloned().collect();
    assert_eq!(names, ["B", "C"]);
    assert_eq!(f.latest.config.memory_mb, 64);

    // The same through the API: a patch naming nothing new makes no version.
    let same = client(&server)
        .update("keep", &json!({"memory_mb": 64}))
        .await
        .unwrap();
    assert!(!same.created_version);
    let bad = client(&server)
        .update("keep", &json!({"memroy_mb": 64}))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some("invalid_json"), "{bad}");
    let missing = client(&server)
        .update("nope", &json!({"memory_mb": 64}))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some("function_not_found"));
    // A new function still needs its image.
    let none = berth(&server, &["fn", "deploy", "fresh-one", "--memory", "64"]);
    assert!(!none.status.success());
    assert!(stderr(&none).contains("--image"), "{}", stderr(&none));
}

fn skopeo_push(server: &Server, from: &str, to: &str) {
    let host = server.url.trim_start_matches("http://");
    let out = Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", "/dev/null")
        .args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("admin:{}", server.key),
            &format!("docker-daemon:{from}"),
            &format!("docker://{host}/{to}"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// After pushing `admin/ux/diff:v1`, deploying `ux/diff:v1` silently picked
/// a different image the engine had under that name. A short name means
/// the caller's own repository of that name, as the README says.
#[tokio::test(flavor = "multi_thread")]
async fn a_short_name_resolves_to_the_callers_repository() {
    let server = Server::start().await;
    let unique = format!("ux{}/diff", hex::encode(rand::random::<[u8; 4]>()));
    // An engine image of the same name, different content.
    let tag = format!("{unique}:v1");
    let tagged = Command::new("docker")
        .args(["tag", "berth-test/nonroot:latest", &tag])
        .status()
        .expect("docker tag");
    assert!(tagged.success());
    skopeo_push(&server, BUSYBOX, &format!("admin/{unique}:v1"));
    let c = client(&server);
    let deployed = c
        .deploy("diff", &config(json!({"image": tag})))
        .await
        .unwrap();
    let host = server.url.trim_start_matches("http://");
    assert!(
        deployed
            .function
            .latest
            .image_id
            .starts_with(&format!("{host}/admin/{unique}@sha256:")),
        "pinned to {}",
        deployed.function.latest.image_id
    );
    // What only the engine has stays the engine's (admin only).
    let engine = c
        .deploy(
            "engine",
            &config(json!({"image": "berth-test/nonroot:latest"})),
        )
        .await
        .unwrap();
    assert!(engine.function.latest.image_id.starts_with("sha256:"));
    // A name found nowhere names both places it was looked for.
    let err = c
        .deploy("none", &config(json!({"image": "ux/none:v9"})))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("image_not_found"));
    let msg = err.to_string();
    assert!(
        msg.contains("admin/ux/none:v9") && msg.contains("engine"),
        "{msg}"
    );
    let _ = Command::new("docker").args(["rmi", &tag]).output();
}

/// A clean stop (SIGTERM) left containers running: launches still in
/// flight survived, and the upkeep started replacements while shutdown
/// removed instances. No container of the node may survive a clean stop.
#[tokio::test(flavor = "multi_thread")]
async fn a_clean_stop_leaves_no_container() {
    let mut server = Server::start().await;
    let label = format!("dev.berth.node={}", server.node_id());
    let c = client(&server);
    c.deploy(
        "warm10",
        &config(json!({
            "image": BUSYBOX, "command": ["/bin/sh", "-c", "cat"],
            "min_instances": 10, "max_instances": 10, "memory_mb": 16,
        })),
    )
    .await
    .unwrap();
    for round in 0..3 {
        // The first round stops with the instances up; the others while
        // they are still being started at boot.
        if round == 0 {
            let begun = Instant::now();
            while containers(&label).len() < 10 {
                assert!(begun.elapsed() < PATIENCE, "10 instances never came up");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(300 * round)).await;
        }
        let status = server.terminate().await;
        assert!(
            status.success(),
            "round {round}: {status}\n{}",
            server.log()
        );
        let left = containers(&label);
        assert!(left.is_empty(), "round {round}: left running: {left:?}");
        server.restart().await;
    }
    server.terminate().await;
    assert!(containers(&label).is_empty());
}

/// The first-start admin key went into the 0644 server.log, and a data
/// directory made by someone else (as `scripts/up.sh` did) stayed 0755
/// with 0644 files. The key is shown only on a terminal; the directory is
/// 0700 and its files 0600 whoever made it.
#[tokio::test(flavor = "multi_thread")]
async fn the_data_directory_and_the_key_stay_private() {
    let server = Server::start().await;
    let key = server.key.clone();
    assert!(
        !server.log().contains(key.as_str()),
        "the admin key is in the server's log"
    );
    assert!(
        server.log().contains("admin.key"),
        "the log says where the key is"
    );
    let dir = server.data_dir();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700);
    // As if someone else had made it (up.sh's mkdir) and an older
    // version had left its files readable: stop, loosen, start again.
    let mut other = server;
    other.terminate().await;
    let data = other.data_dir().to_owned();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(&data).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    other.restart().await;
    let c = client(&other);
    c.deploy(
        "echo",
        &config(json!({"image": BUSYBOX, "command": ["/bin/sh", "-c", "cat; echo e >&2"]})),
    )
    .await
    .unwrap();
    let task = c.submit("echo", None, Call::new("hello")).await.unwrap();
    let begun = Instant::now();
    while !c.task(&task.id).await.unwrap().status.is_terminal() {
        assert!(begun.elapsed() < PATIENCE);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mode(&data), 0o700);
    let mut files = 0;
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            // Instances' socket directories are the containers' to use.
            if p.starts_with(data.join("run")) {
                continue;
            }
            if meta.is_dir() {
                assert_eq!(mode(&p) & 0o077, 0, "{} is {:o}", p.display(), mode(&p));
                stack.push(p);
            } else if meta.is_file() {
                assert_eq!(mode(&p) & 0o077, 0, "{} is {:o}", p.display(), mode(&p));
                files += 1;
            }
        }
    }
    assert!(
        files >= 5,
        "database, key, node id, endpoint, task payloads"
    );
    other.terminate().await;
}

/// `Server-Timing` reported waiting for a busy warm instance as `start`.
/// A call that got a warm instance reports `start` 0 and its wait as
/// `queue`, in the header and in the task record.
#[tokio::test(flavor = "multi_thread")]
async fn waiting_for_a_busy_instance_is_queue_not_start() {
    let server = Server::start().await;
    let c = client(&server);
    c.deploy(
        "one",
        &config(json!({
            "image": BUSYBOX, "command": ["/bin/sh", "-c", "sleep 1; cat"],
            "concurrency": 1, "max_instances": 1, "min_instances": 1,
        })),
    )
    .await
    .unwrap();
    // Warm it up, so neither call below starts anything.
    let warm = c.invoke("one", None, Call::new("x")).await.unwrap();
    warm.bytes().await.unwrap();
    let first = {
        let c = c.clone();
        tokio::spawn(async move { c.invoke("one", None, Call::new("a")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = c.invoke("one", None, Call::new("b")).await.unwrap();
    let timing = second
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let id = second
        .headers()
        .get("x-berth-task-id")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_owned();
    assert_eq!(second.bytes().await.unwrap().as_ref(), b"b");
    first.await.unwrap().unwrap().bytes().await.unwrap();
    assert!(timing.contains("start;dur=0"), "{timing}");
    let queued: i64 = timing
        .split(", ")
        .find_map(|p| p.strip_prefix("queue;dur="))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no queue entry: {timing}"));
    assert!(queued > 0, "it waited for the busy instance: {timing}");
    let task = c.task(&id).await.unwrap();
    assert_eq!(task.timing.start_ms, Some(0));
    assert_eq!(task.timing.queued_ms, Some(queued));
}

/// A burst that one warm instance already serves started four more
/// instances, each paying the full start (an http-mode function with a
/// 2 s model load got 4 extra instances for 20 fast calls). Instances are
/// started for waiters still waiting once busy slots should have freed,
/// not for requests those slots serve within milliseconds.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_one_warm_instance_serves_starts_no_other() {
    let server = Server::start().await;
    let label = format!("dev.berth.node={}", server.node_id());
    let c = client(&server);
    c.deploy(
        "model",
        &config(json!({
            "image": ECHO_HTTP, "mode": "http", "concurrency": 4,
            "min_instances": 1, "max_instances": 5,
            "env": {"ECHO_STARTUP_DELAY_MS": "2000"},
        })),
    )
    .await
    .unwrap();
    let begun = Instant::now();
    while containers(&label).is_empty() {
        assert!(
            begun.elapsed() < PATIENCE,
            "the warm instance never came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its first answer proves it ready (the model is loaded).
    let r = c.invoke("model", None, Call::new("ready")).await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"ready");
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let body = format!("call {i}");
                let r = c.invoke("model", None, Call::new(body.clone())).await?;
                let got = r
                    .bytes()
                    .await
                    .map_err(|e| berth_client::ClientError::Protocol(e.to_string()))?;
                assert_eq!(got.as_ref(), body.as_bytes());
                Ok::<_, berth_client::ClientError>(())
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // Anything started for the burst would be up or starting now: a start
    // (2 s of model load) could not have served any of these calls sooner,
    // however slowly a loaded machine ran them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = containers(&label).len();
    assert_eq!(n, 1, "{n} instances for a burst one instance served");
}
