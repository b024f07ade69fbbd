//! Fault scenarios 20–25: the server's own process killed, the Docker
//! Engine gone, an image deleted behind Berth's back, containers dying under
//! tasks, cancels, and a thousand callers at once. Every test has its own
//! server; function names start with `flt-` so that label filters on the
//! shared engine never see another test's containers.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_client::TaskQuery;
use berth_contract::{ErrorCode, FunctionConfig, Mode, Task, TaskStatus};
use reqwest::{Method, StatusCode};

use crate::harness::{
    BUSYBOX, PATIENCE, Server, api_error, assert_no_containers, containers, error_code, image, sh,
    task_id, wait_for_containers,
};
use crate::registry::run;

/// Fails the test instead of hanging it when `fut` never completes.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {PATIENCE:?}"))
}

/// Polls `check` until it yields something.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let begun = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(begun.elapsed() < PATIENCE, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a process of the container has exactly `command` as its
/// command line, as `docker top` sees it; false once the container is
/// gone. Exactly: a warm instance's agent carries the whole script in its
/// own arguments.
fn runs(mut docker: Command, container: &str, command: &str) -> bool {
    docker
        .args(["top", container, "-o", "pid,args"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).lines().any(|l| {
                    l.trim()
                        .split_once(char::is_whitespace)
                        .is_some_and(|(_pid, args)| args.trim() == command)
                })
        })
}

fn shared_docker() -> Command {
    Command::new("docker")
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let resp = within("request", req.send()).await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = within("response body", resp.bytes())
        .await
        .expect("body")
        .to_vec();
    (status, headers, body)
}

async fn readyz(server: &Server) -> StatusCode {
    within("readyz", server.req(Method::GET, "/readyz").send())
        .await
        .expect("readyz")
        .status()
}

async fn tasks_of(server: &Server) -> HashMap<String, Task> {
    let page = server
        .tasks(&TaskQuery {
            limit: Some(100),
            ..Default::default()
        })
        .await;
    assert!(
        page.next_cursor.is_none(),
        "more tasks than expected: {page:?}"
    );
    page.tasks.into_iter().map(|t| (t.id.clone(), t)).collect()
}

/// The error of a task that has one, for a message.
fn error_code_of(t: &Task) -> Option<ErrorCode> {
    t.error.as_ref().map(|e| e.code)
}

/// Accepted async tasks that could not run yet (both dispatch slots held
/// by slow tasks) survive a SIGKILL: after the restart each runs exactly
/// once, to success, with its own output; the tasks interrupted mid-run
/// run again as attempt 2; nothing else about the tasks or the function
/// changes, and the killed server's containers are reaped.
#[tokio::test(flavor = "multi_thread")]
async fn s20_server_sigkilled_between_accepting_and_running_runs_after_restart() {
    let mut server = Server::start_with(&["--async-concurrency", "2"]).await;
    server
        .deploy(
            "flt-s20",
            &sh(r#"read x; case "$x" in slow*) sleep 5;; esac; echo "$x" | tr a-z A-Z"#),
        )
        .await;
    // Claimed oldest first, the slow ones take both slots, so the rest
    // stay queued for as long as the slow ones sleep.
    let mut inputs = Vec::new();
    for i in 0..2 {
        inputs.push(format!("slow {i}"));
    }
    for i in 0..6 {
        inputs.push(format!("job {i}"));
    }
    let mut ids = Vec::new();
    for input in &inputs {
        ids.push(server.submit("flt-s20", format!("{input}\n")).await.id);
    }
    let slow: HashSet<String> = ids[..2].iter().cloned().collect();
    for id in &slow {
        server.wait_status(id, TaskStatus::Running).await;
    }
    let label = format!("dev.berth.node={}", server.node_id());
    let before_kill = wait_for_containers(&label).await;
    let function_before = server.function("flt-s20").await;
    let before = tasks_of(&server).await;
    assert_eq!(before.len(), 8);
    for id in &ids[2..] {
        let t = &before[id];
        assert_eq!(
            (t.status, t.attempt),
            (TaskStatus::Queued, 0),
            "accepted but not yet run: {t:?}"
        );
    }

    server.kill();
    server.restart().await;

    for (id, input) in ids.iter().zip(&inputs) {
        let t = server.wait(id).await;
        assert_eq!(t.status, TaskStatus::Succeeded, "{t:?}");
        assert_eq!(
            server.output(id).await,
            format!("{}\n", input.to_uppercase()).into_bytes()
        );
        let runs = if slow.contains(id) { 2 } else { 1 };
        assert_eq!(t.attempt, runs, "{t:?}");
        let was = &before[id];
        let kept = |t: &Task| {
            (
                t.function.clone(),
                t.version,
                t.kind,
                t.created_at.clone(),
                t.input_bytes,
                t.max_attempts,
            )
        };
        assert_eq!(kept(&t), kept(was), "changed: {was:?} -> {t:?}");
    }
    let after: HashSet<String> = tasks_of(&server).await.into_keys().collect();
    let before: HashSet<String> = before.into_keys().collect();
    assert_eq!(after, before, "the restart made or lost tasks");
    assert_eq!(server.function("flt-s20").await, function_before);
    let now: HashSet<_> = containers(&label).into_iter().collect();
    for old in before_kill {
        assert!(
            !now.contains(&old),
            "container {old} of the killed server was not reaped"
        );
    }
    server.assert_no_panic();
}

/// A dockerd of this test's own, for a fault the shared engine must never
/// suffer. Its paths are short: a unix socket path, including containerd's
/// under the exec root, must fit in 108 bytes. Dropping it removes its
/// containers and stops it, however the test ended.
struct PrivateEngine {
    dir: tempfile::TempDir,
    daemon: Option<Child>,
}

impl PrivateEngine {
    async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bf")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let mut engine = Self { dir, daemon: None };
        engine.spawn().await;
        engine
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn host(&self) -> String {
        format!("unix://{}", self.path("d.sock").display())
    }

    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(self.host());
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("dockerd.log")).unwrap_or_default()
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("dockerd.log"))
            .expect("dockerd log");
        let child = Command::new("dockerd")
            .args(["--bridge=none", "--iptables=false"])
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(self.path("data"))
            .arg("--exec-root")
            .arg(self.path("x"))
            .arg("--pidfile")
            .arg(self.path("d.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        self.daemon = Some(child);
        let begun = Instant::now();
        loop {
            let up = self
                .docker()
                .arg("version")
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success());
            if up {
                return;
            }
            if let Some(Ok(Some(status))) = self.daemon.as_mut().map(|c| c.try_wait()) {
                panic!("dockerd exited with {status}:\n{}", self.log());
            }
            assert!(
                begun.elapsed() < PATIENCE,
                "dockerd did not come up:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, as a service manager stops it, and waits for the exit.
    async fn stop(&mut self) {
        let mut child = self.daemon.take().expect("dockerd running");
        run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
        let begun = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            assert!(
                begun.elapsed() < PATIENCE,
                "dockerd ignored SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn load(&self, image: &str) {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save");
        let loaded = self
            .docker()
            .arg("load")
            .stdin(save.stdout.take().expect("save stdout"))
            .output()
            .expect("docker load");
        assert!(save.wait().expect("save").success());
        assert!(
            loaded.status.success(),
            "{}",
            String::from_utf8_lossy(&loaded.stderr)
        );
    }

    /// Running containers matching `filter`, or all of them with `all`.
    fn containers(&self, filter: &str, all: bool) -> Vec<String> {
        let mut docker = self.docker();
        docker.args(["ps", "-q", "--no-trunc", "--filter", filter]);
        if all {
            docker.arg("--all");
        }
        let out = run(&mut docker);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        let Some(mut child) = self.daemon.take() else {
            return;
        };
        // Removed first: stopping the daemon would otherwise wait out
        // every container's stop grace period.
        if let Ok(out) = self.docker().args(["ps", "-aq"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.docker().args(["rm", "-f", id]).output();
            }
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let begun = Instant::now();
        while matches!(child.try_wait(), Ok(None)) {
            if begun.elapsed() > PATIENCE {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The engine stops under a running server: calls get a clear 503 at once,
/// the server stays up and says it is not ready, async work is accepted and
/// kept; once the engine is back, calls work again (the warm pool replaces
/// the instances that died with the engine), the queued work runs, and the
/// dead instances' containers are removed from the restarted engine.
#[tokio::test(flavor = "multi_thread")]
async fn s21_engine_stopped_is_503_and_the_server_recovers() {
    let mut engine = PrivateEngine::start().await;
    engine.load(BUSYBOX);
    let host = engine.host();
    let server = Server::start_with_env(&[], &[("DOCKER_HOST", &host)]).await;
    let node = format!("label=dev.berth.node={}", server.node_id());
    server.deploy("flt-s21-warm", &sh("cat")).await;
    let fresh = FunctionConfig {
        mode: Mode::Fresh,
        ..sh("cat")
    };
    server.deploy("flt-s21-fresh", &fresh).await;
    server.deploy("flt-s21-slow", &sh("sleep 3; cat")).await;
    for f in ["flt-s21-warm", "flt-s21-fresh"] {
        let (status, _, body) = server.invoke(f, "", "before").await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"before"[..]));
    }
    assert_eq!(readyz(&server).await, StatusCode::OK);
    assert_eq!(
        engine.containers(&node, false).len(),
        1,
        "one warm instance"
    );
    // Running when the engine stops: its instance goes down with it.
    let interrupted = server.submit("flt-s21-slow", "interrupted").await.id;
    eventually("the interrupted task runs", async || {
        engine
            .containers("label=dev.berth.function=flt-s21-slow", false)
            .into_iter()
            .find(|c| runs(engine.docker(), c, "sleep 3"))
    })
    .await;
    let died = engine.containers(&node, true);

    engine.stop().await;

    for f in ["flt-s21-warm", "flt-s21-fresh"] {
        let req = server
            .req(Method::POST, &format!("/v1/functions/{f}/invoke"))
            .body("during");
        let (status, headers, body) = send(req).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{f}: {}",
            String::from_utf8_lossy(&body)
        );
        let err = api_error(&body);
        assert_eq!(err.code, "engine_unavailable", "{err:?}");
        assert!(err.message.contains("Docker Engine"), "{}", err.message);
        assert!(headers.contains_key("retry-after"), "{headers:?}");
    }
    // The queue is durable without the engine: the task is accepted and
    // waits, no attempt spent on an engine that cannot run it.
    let queued = within("submit", server.submit("flt-s21-warm", "queued meanwhile"))
        .await
        .id;
    assert_eq!(readyz(&server).await, StatusCode::SERVICE_UNAVAILABLE);
    let t = server.task(&queued).await;
    assert!(
        matches!(t.status, TaskStatus::Queued | TaskStatus::Running),
        "{t:?}"
    );
    server.assert_no_panic();

    engine.spawn().await;
    eventually("the server is ready again", async || {
        (readyz(&server).await == StatusCode::OK).then_some(())
    })
    .await;
    for f in ["flt-s21-warm", "flt-s21-fresh"] {
        let (status, _, body) = server.invoke(f, "", "after").await;
        assert_eq!(
            (status, String::from_utf8_lossy(&body).as_ref()),
            (StatusCode::OK, "after")
        );
    }
    let t = server.wait(&queued).await;
    assert_eq!(t.status, TaskStatus::Succeeded, "{t:?}");
    assert_eq!(t.attempt, 1, "refusals while down spent no attempt: {t:?}");
    assert_eq!(server.output(&queued).await, b"queued meanwhile");
    let t = server.wait(&interrupted).await;
    assert_eq!(t.status, TaskStatus::Succeeded, "{t:?}");
    assert_eq!(t.attempt, 2, "the interrupted attempt counts: {t:?}");
    assert_eq!(server.output(&interrupted).await, b"interrupted");
    // The instances that died with the engine are removed from it once
    // it is back; only their running replacements are left.
    eventually("the dead instances are removed", async || {
        let left = engine.containers(&node, true);
        let running = engine.containers(&node, false);
        (left == running && !left.iter().any(|c| died.contains(c))).then_some(())
    })
    .await;
    server.assert_no_panic();
}

/// Removes image tags from the shared engine, however the test ends.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = shared_docker().args(["rmi", "-f", tag]).output();
        }
    }
}

/// A busybox image of its own (so removing it removes it), whose
/// `/version` says `text`.
fn unique_image(dir: &Path, tag: &str, text: &str, config: Option<&Path>) {
    let ctx = dir.join(format!("ctx-{text}"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("version"), text).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {BUSYBOX}\nCOPY version /version\n"),
    )
    .unwrap();
    let mut docker = shared_docker();
    if let Some(c) = config {
        docker.env("DOCKER_CONFIG", c);
    }
    run(docker
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", tag])
        .arg(&ctx));
}

fn image_exists(reference: &str) -> bool {
    shared_docker()
        .args(["image", "inspect", reference])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// An image removed from the engine behind Berth's back: one from Berth's
/// registry is pulled again by digest and the call answers as before; an
/// engine-local one cannot be, and the call gets a clear error that says
/// what to do, while the server and its other functions carry on.
#[tokio::test(flavor = "multi_thread")]
async fn s22_image_deleted_behind_our_back_is_repulled_or_clearly_refused() {
    let server = Server::start().await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("docker");
    let registry = server.url.trim_start_matches("http://").to_owned();
    let unique = hex::encode(rand::random::<[u8; 6]>());
    let pushed = format!("{registry}/admin/flt-s22:v1");
    let local = format!("berth-test/flt-gone:{unique}");
    let mut cleanup = Images(vec![pushed.clone(), local.clone()]);
    server.deploy("flt-s22-other", &sh("cat")).await;

    // (a) From the registry.
    run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["login", "--data-dir"])
        .arg(server.data_dir())
        .env("DOCKER_CONFIG", &config));
    let text = format!("pushed {unique}");
    unique_image(work.path(), &pushed, &text, Some(&config));
    run(shared_docker()
        .env("DOCKER_CONFIG", &config)
        .args(["push", &pushed]));
    let cat_version = |image_ref: &str| FunctionConfig {
        command: Some(vec!["/bin/cat".into(), "/version".into()]),
        mode: Mode::Fresh,
        ..image(image_ref)
    };
    let deployed = server
        .deploy("flt-s22-pushed", &cat_version("flt-s22:v1"))
        .await;
    let pinned = deployed.function.latest.image_id;
    cleanup.0.push(pinned.clone());
    let (status, _, body) = server.invoke("flt-s22-pushed", "", "").await;
    assert_eq!((status, body), (StatusCode::OK, text.clone().into_bytes()));
    let id = run(shared_docker().args(["image", "inspect", "-f", "{{.Id}}", &pinned])).stdout;
    run(shared_docker().args(["rmi", "-f", String::from_utf8_lossy(&id).trim()]));
    assert!(!image_exists(&pinned), "{pinned} is still on the engine");

    let (status, headers, body) = server.invoke("flt-s22-pushed", "", "").await;
    assert_eq!((status, body), (StatusCode::OK, text.clone().into_bytes()));
    let t = server.task(&task_id(&headers)).await;
    assert!(
        t.timing.pull_ms.is_some_and(|ms| ms > 0),
        "the call pulled the image again: {t:?}"
    );
    assert!(image_exists(&pinned));

    // (b) Engine-local: nothing to pull it from.
    let text = format!("local {unique}");
    unique_image(work.path(), &local, &text, None);
    server.deploy("flt-s22-local", &cat_version(&local)).await;
    let (status, _, body) = server.invoke("flt-s22-local", "", "").await;
    assert_eq!((status, body), (StatusCode::OK, text.clone().into_bytes()));
    run(shared_docker().args(["rmi", &local]));

    let (status, headers, body) = server.invoke("flt-s22-local", "", "").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(!headers.contains_key("retry-after"), "retrying cannot help");
    let err = api_error(&body);
    assert_eq!(err.code, "image_missing", "{err:?}");
    let message = &err.message;
    for says in [
        "not on the Docker Engine",
        "push",
        "deploy the function again",
    ] {
        assert!(message.contains(says), "{message}");
    }
    let id = server.submit("flt-s22-local", "").await.id;
    let t = server.wait(&id).await;
    assert_eq!((t.status, t.attempt), (TaskStatus::Failed, 1), "{t:?}");
    assert_eq!(error_code_of(&t), Some(ErrorCode::ImageMissing), "{t:?}");

    // Everything else works, and following the advice fixes the function.
    let (status, _, body) = server.invoke("flt-s22-other", "", "still here").await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"still here"[..])
    );
    unique_image(work.path(), &local, &text, None);
    server.deploy("flt-s22-local", &cat_version(&local)).await;
    let (status, _, body) = server.invoke("flt-s22-local", "", "").await;
    assert_eq!((status, body), (StatusCode::OK, text.into_bytes()));
    server.assert_no_panic();
}

/// A task whose instance dies under every attempt (its container killed
/// from outside, as a reclaimed node would) is run again, on a new
/// instance each time, until it has used its attempts; then it fails as
/// `lost` and says why. A function that merely exits non-zero is its own
/// verdict and is not retried.
#[tokio::test(flavor = "multi_thread")]
async fn s23_a_task_failing_every_attempt_ends_failed_after_bounded_retries() {
    let server = Server::start().await;
    server
        .deploy("flt-s23-exit", &sh("echo boom >&2; exit 3"))
        .await;
    let id = server.submit("flt-s23-exit", "").await.id;
    let t = server.wait(&id).await;
    assert_eq!(
        (t.status, t.attempt, t.exit_code),
        (TaskStatus::Failed, 1, Some(3)),
        "{t:?}"
    );
    assert_eq!(error_code_of(&t), Some(ErrorCode::Exit), "{t:?}");

    server.deploy("flt-s23-lost", &sh("sleep 600")).await;
    let label = "dev.berth.function=flt-s23-lost";
    let id = server.submit("flt-s23-lost", "").await.id;
    let max = server.task(&id).await.max_attempts;
    assert!(max > 1, "retries are possible at all");
    let mut killed = Vec::new();
    for attempt in 1..=max {
        // The attempt has reached the function when its instance runs it.
        let victim = eventually(&format!("attempt {attempt} runs"), async || {
            let t = server.task(&id).await;
            if t.status != TaskStatus::Running || t.attempt != attempt {
                return None;
            }
            containers(label)
                .into_iter()
                .find(|c| !killed.contains(c) && runs(shared_docker(), c, "sleep 600"))
        })
        .await;
        run(shared_docker().args(["kill", &victim]));
        killed.push(victim);
    }
    let t = server.wait(&id).await;
    assert_eq!((t.status, t.attempt), (TaskStatus::Failed, max), "{t:?}");
    assert_eq!(error_code_of(&t), Some(ErrorCode::Lost), "{t:?}");
    let message = &t.error.as_ref().unwrap().message;
    assert!(
        message.contains(&format!("all {max} attempts")) && message.contains("instance"),
        "{message}"
    );
    assert_eq!(
        killed.iter().collect::<HashSet<_>>().len() as i64,
        max,
        "each attempt ran on an instance of its own"
    );
    // Nothing runs it a further time: no instance is started for it again.
    assert_no_containers(label).await;
    assert_eq!(server.task(&id).await, t);
    server.assert_no_panic();
}

/// Cancelling a running task kills it in both ways of running: a fresh
/// container is removed, a warm instance's request process is killed while
/// the instance lives on for other calls. A cancelled task has no output;
/// a queued one never runs; cancelling again is a conflict.
#[tokio::test(flavor = "multi_thread")]
async fn s24_cancel_of_a_running_task_kills_it() {
    let server = Server::start_with(&["--async-concurrency", "2"]).await;
    let script = r#"read x; if [ "$x" = hold ]; then sleep 600; fi; echo "got $x""#;
    let fresh_config = FunctionConfig {
        mode: Mode::Fresh,
        ..sh(script)
    };
    server.deploy("flt-s24-fresh", &fresh_config).await;
    server.deploy("flt-s24-warm", &sh(script)).await;
    let fresh = server.submit("flt-s24-fresh", "hold\n").await.id;
    let warm = server.submit("flt-s24-warm", "hold\n").await.id;
    server.wait_status(&fresh, TaskStatus::Running).await;
    server.wait_status(&warm, TaskStatus::Running).await;
    // Both dispatch slots are taken: this one waits.
    let queued = server.submit("flt-s24-fresh", "hold\n").await.id;
    assert_eq!(server.task(&queued).await.status, TaskStatus::Queued);

    let fresh_label = format!("dev.berth.task={fresh}");
    let container = wait_for_containers(&fresh_label).await.remove(0);
    let instance = eventually("the warm request runs", async || {
        containers("dev.berth.function=flt-s24-warm")
            .into_iter()
            .find(|c| runs(shared_docker(), c, "sleep 600"))
    })
    .await;
    eventually("the fresh task runs", async || {
        runs(shared_docker(), &container, "sleep 600").then_some(())
    })
    .await;

    // Output of an unfinished task is a conflict, not an empty success.
    let resp = server
        .req(Method::GET, &format!("/v1/tasks/{fresh}/output"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);

    for id in [&queued, &fresh, &warm] {
        let t = within("cancel", server.cancel(id)).await;
        assert_eq!(t.status, TaskStatus::Cancelled, "{t:?}");
    }
    assert_no_containers(&fresh_label).await;
    eventually("the warm request's process is killed", async || {
        (!runs(shared_docker(), &instance, "sleep 600")).then_some(())
    })
    .await;
    let (status, _, body) = server.invoke("flt-s24-warm", "", "next\n").await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"got next\n"[..])
    );
    assert!(
        containers("dev.berth.function=flt-s24-warm").contains(&instance),
        "the instance itself serves on"
    );

    for id in [&queued, &fresh, &warm] {
        let t = server.task(id).await;
        assert_eq!(t.status, TaskStatus::Cancelled, "{t:?}");
        assert_eq!(error_code_of(&t), Some(ErrorCode::Cancelled), "{t:?}");
        let (status, _, body) =
            send(server.req(Method::GET, &format!("/v1/tasks/{id}/output"))).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, "no_payload".to_owned()),
            "a cancelled task has no output"
        );
        let (status, _, body) = send(server.req(Method::DELETE, &format!("/v1/tasks/{id}"))).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::CONFLICT, "task_finished".to_owned())
        );
    }
    assert_eq!(server.task(&queued).await.attempt, 0, "it never ran");
    server.assert_no_panic();
}

/// Lets this process hold a socket per concurrent call.
fn raise_nofile_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )
        .expect("raise RLIMIT_NOFILE");
    }
}

/// A thousand sync calls at once on a pool of two instances of two slots
/// with a queue of 16: every caller gets an answer (its own echo, or 429
/// `busy` or `quota_exceeded` with Retry-After, or 503), never a dropped connection; the pool
/// never grows past its maximum and the server's memory stays bounded.
#[tokio::test(flavor = "multi_thread")]
async fn s25_thousand_concurrent_sync_calls_all_answer_with_bounded_memory() {
    const CALLS: usize = 1000;
    const MAX_INSTANCES: usize = 2;
    // Generous for 1,000 connections and task records in flight (a few
    // KiB each) over a baseline of tens of MiB, yet far below what a leak
    // of one 64 KiB output window per call, or an unbounded queue, costs.
    const PEAK_RSS_BOUND_KIB: u64 = 300 * 1024;
    raise_nofile_limit();
    let server = Server::start().await;
    let pool = FunctionConfig {
        max_instances: MAX_INSTANCES as u32,
        concurrency: 2,
        max_queue: 16,
        ..sh("cat")
    };
    server.deploy("flt-s25", &pool).await;
    let (status, _, _) = server.invoke("flt-s25", "", "warm up").await;
    assert_eq!(status, StatusCode::OK);

    let label = "dev.berth.function=flt-s25";
    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, most) = (Arc::clone(&stop), Arc::clone(&most));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                most.fetch_max(containers(label).len(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let client = reqwest::Client::new();
    let url = format!("{}/v1/functions/flt-s25/invoke", server.url);
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let req = client
                .post(&url)
                .bearer_auth(&server.key)
                .body(format!("call {i}"));
            tokio::spawn(async move {
                let (status, headers, body) = match tokio::time::timeout(PATIENCE, async {
                    let resp = req.send().await?;
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    Ok::<_, reqwest::Error>((status, headers, resp.bytes().await?))
                })
                .await
                {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(e)) => return Err(format!("call {i}: {e}")),
                    Err(_) => return Err(format!("call {i}: no answer within {PATIENCE:?}")),
                };
                match status {
                    StatusCode::OK if body == format!("call {i}").as_bytes() => Ok(status),
                    StatusCode::TOO_MANY_REQUESTS
                        if matches!(error_code(&body).as_str(), "busy" | "quota_exceeded")
                            && headers.contains_key("retry-after") =>
                    {
                        Ok(status)
                    }
                    StatusCode::SERVICE_UNAVAILABLE if !error_code(&body).is_empty() => Ok(status),
                    _ => Err(format!(
                        "call {i}: {status} {}",
                        String::from_utf8_lossy(&body)
                    )),
                }
            })
        })
        .collect();
    let mut counts: HashMap<StatusCode, usize> = HashMap::new();
    let mut failures = Vec::new();
    for call in calls {
        match call.await.expect("call task") {
            Ok(status) => *counts.entry(status).or_default() += 1,
            Err(e) => failures.push(e),
        }
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    eprintln!("answers: {counts:?}; failures: {}", failures.len());

    assert!(
        failures.is_empty(),
        "{} bad answers: {failures:?}",
        failures.len()
    );
    assert_eq!(counts.values().sum::<usize>(), CALLS);
    assert!(
        counts.get(&StatusCode::OK).is_some_and(|&n| n > 0),
        "{counts:?}"
    );
    let most = most.load(Ordering::Relaxed);
    assert!(
        most <= MAX_INSTANCES,
        "{most} containers for a pool of {MAX_INSTANCES}"
    );
    let peak = server.peak_rss_kib();
    eprintln!("server peak RSS: {} MiB", peak / 1024);
    assert!(
        peak < PEAK_RSS_BOUND_KIB,
        "server peak RSS {peak} KiB over {PEAK_RSS_BOUND_KIB} KiB"
    );
    // Still healthy and serving.
    assert_eq!(readyz(&server).await, StatusCode::OK);
    let (status, _, body) = server.invoke("flt-s25", "", "after").await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"after"[..]));
    assert!(containers(label).len() <= MAX_INSTANCES);
    server.assert_no_panic();
}
