//! A set: several `berth server` replicas on one PostgreSQL and one
//! S3-compatible store (SeaweedFS), as `scripts/test.sh` provides them
//! (`BERTH_TEST_PG_URL`, `BERTH_TEST_S3_URL` and the `AWS_*` variables).
//! Each test gets a database and a blob prefix of its own.
//!
//! Without those variables these tests fail, unless `BERTH_TEST_SET=skip`
//! says to skip them (for quick local runs only).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_client::{Call, Client, ClientError};
use berth_contract::{AttemptEnd, FunctionConfig, Task, TaskStatus};
use serde_json::json;

use crate::harness::{BUSYBOX, PATIENCE, Server};

/// What the replicas of one test share.
pub struct SetEnv {
    db: String,
    admin_db: String,
    db_name: String,
    blobs: String,
    pub key: String,
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(rand::random::<[u8; 6]>()))
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The URL of another database on the same cluster as `admin`.
fn database_url(admin: &str, name: &str) -> String {
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{name}")
}

impl SetEnv {
    /// `None` when the run explicitly skips set tests.
    pub fn new() -> Option<Self> {
        let admin = std::env::var("BERTH_TEST_PG_URL").ok();
        let s3 = std::env::var("BERTH_TEST_S3_URL").ok();
        let (Some(admin_db), Some(s3)) = (admin, s3) else {
            if std::env::var("BERTH_TEST_SET").as_deref() == Ok("skip") {
                eprintln!("BERTH_TEST_SET=skip: not testing a set");
                return None;
            }
            panic!(
                "set tests need BERTH_TEST_PG_URL and BERTH_TEST_S3_URL (scripts/test.sh \
                 starts PostgreSQL and SeaweedFS); BERTH_TEST_SET=skip skips them"
            );
        };
        let db_name = unique("set");
        psql(&admin_db, &format!("CREATE DATABASE {db_name}"));
        Some(Self {
            db: database_url(&admin_db, &db_name),
            admin_db,
            blobs: format!("{}/{}", s3.trim_end_matches('/'), unique("set")),
            db_name,
            key: format!("berth_{}", hex::encode(rand::random::<[u8; 32]>())),
        })
    }

    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("BERTH_STORE", self.db.as_str()),
            ("BERTH_BLOB_STORE", self.blobs.as_str()),
            ("BERTH_ADMIN_KEY", self.key.as_str()),
        ]
    }

    /// A replica with the set's store, blobs and key.
    pub async fn replica(&self, args: &[&str]) -> Server {
        Server::start_with_env(args, &self.env()).await
    }

    async fn replicas(&self, n: usize, args: &[&str]) -> Vec<Server> {
        let mut all = Vec::new();
        for _ in 0..n {
            all.push(self.replica(args).await);
        }
        all
    }
}

impl Drop for SetEnv {
    fn drop(&mut self) {
        // Replicas are gone by now (they are dropped first); a database in
        // use could not be dropped, so force it.
        let _ = Command::new("psql")
            .args([
                &self.admin_db,
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name),
            ])
            .stdin(Stdio::null())
            .output();
    }
}

pub fn config(v: serde_json::Value) -> FunctionConfig {
    serde_json::from_value(v).expect("a function definition")
}

async fn body(resp: reqwest::Response) -> Vec<u8> {
    resp.bytes().await.expect("body").to_vec()
}

/// Polls until the task has finished, through any replica that answers.
pub async fn finished(clients: &[Client], id: &str) -> Task {
    let begun = Instant::now();
    let mut i = 0;
    loop {
        if let Ok(t) = clients[i % clients.len()].task(id).await
            && t.status.is_terminal()
        {
            return t;
        }
        i += 1;
        assert!(begun.elapsed() < PATIENCE, "task {id} never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn docker(config: &Path) -> Command {
    let mut c = Command::new("docker");
    c.env("DOCKER_CONFIG", config);
    c
}

pub fn host(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

/// Deploy through A, invoke through B, submit through C and read through
/// A; push an image through A and pull it through B; deploy it from the
/// registry through C and call it there.
#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_serve_one_set() {
    let Some(set) = SetEnv::new() else { return };
    let r = set.replicas(3, &[]).await;
    let (a, b, c) = (r[0].client(), r[1].client(), r[2].client());
    let nodes: BTreeSet<String> = r.iter().map(Server::node_id).collect();
    assert_eq!(nodes.len(), 3, "each replica is a node of its own");

    a.deploy(
        "echo",
        &config(json!({"image": BUSYBOX, "command": ["/bin/sh", "-c", "cat"]})),
    )
    .await
    .unwrap();
    let out = b
        .invoke("echo", None, Call::new("through b"))
        .await
        .unwrap();
    assert_eq!(body(out).await, b"through b");

    let task = c
        .submit("echo", None, Call::new("through c"))
        .await
        .unwrap();
    let done = finished(std::slice::from_ref(a), &task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(body(a.output(&task.id).await.unwrap()).await, b"through c");
    let seen = a.task(&task.id).await.unwrap();
    let attempts = seen.attempts.expect("one task's answer lists its attempts");
    assert_eq!(attempts.len(), 1);
    assert!(nodes.contains(&attempts[0].node));

    // The registry: push through A, pull through B, deploy through C.
    let cfg = tempfile::tempdir().unwrap();
    for server in [&r[0], &r[1]] {
        let mut login = docker(cfg.path());
        login.args(["login", &host(server), "-u", "admin", "--password-stdin"]);
        let mut child = login
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(set.key.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "docker login");
    }
    let name = unique("setimg");
    let pushed = format!("{}/admin/{name}:v1", host(&r[0]));
    let pulled = format!("{}/admin/{name}:v1", host(&r[1]));
    run(docker(cfg.path()).args(["tag", BUSYBOX, &pushed]));
    run(docker(cfg.path()).args(["push", &pushed]));
    run(docker(cfg.path()).args(["pull", &pulled]));
    let id =
        |image: &str| run(docker(cfg.path()).args(["image", "inspect", "-f", "{{.Id}}", image]));
    assert_eq!(id(&pushed), id(&pulled), "the same image through both");
    let deployed = c
        .deploy(
            "fromreg",
            &config(json!({"image": format!("{name}:v1"), "command": ["/bin/sh", "-c", "cat"]})),
        )
        .await
        .unwrap();
    assert!(
        deployed
            .function
            .latest
            .image_id
            .contains(&format!("/admin/{name}@sha256:")),
        "{}",
        deployed.function.latest.image_id
    );
    let out = c
        .invoke("fromreg", None, Call::new("pulled"))
        .await
        .unwrap();
    assert_eq!(body(out).await, b"pulled");
    for tag in [&pushed, &pulled] {
        let _ = docker(cfg.path()).args(["rmi", tag]).output();
    }
}

/// `Prefer: wait=N` on a submission to B is answered inline also for the
/// tasks A claimed and ran: B learns of their end through the store.
#[tokio::test(flavor = "multi_thread")]
async fn a_wait_is_answered_whichever_replica_runs_the_task() {
    let Some(set) = SetEnv::new() else { return };
    // One task at a time per replica, so B cannot run all of them itself
    // before A's claims take some.
    let args = ["--async-concurrency", "1"];
    let r = set.replicas(2, &args).await;
    let (a_node, b) = (r[0].node_id(), r[1].client().clone());
    b.deploy(
        "nap",
        &config(json!({"image": BUSYBOX, "command": ["/bin/sh", "-c", "sleep 1; cat"]})),
    )
    .await
    .unwrap();
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                let call = Call::new(format!("nap-{i}")).header("prefer", "wait=60");
                let resp = b.submit_raw("nap", None, call).await.unwrap();
                assert_eq!(resp.status().as_u16(), 200, "answered inline");
                assert_eq!(resp.headers().get("preference-applied").unwrap(), "wait=60");
                let id = resp.headers()["x-berth-task-id"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                assert_eq!(body(resp).await, format!("nap-{i}").into_bytes());
                id
            })
        })
        .collect();
    let mut by_a = 0;
    for call in calls {
        let id = call.await.unwrap();
        let t = b.task(&id).await.unwrap();
        assert_eq!(t.status, TaskStatus::Succeeded);
        if t.node.as_deref() == Some(a_node.as_str()) {
            by_a += 1;
        }
    }
    assert!(by_a > 0, "A ran none of the tasks submitted to B");
}

/// 2,000 async tasks submitted round-robin to three replicas while one
/// replica is SIGKILLed and restarted every 10 s: none is lost, every
/// output is its own input's, and a task has run more than once only if an
/// earlier attempt of it was on a replica that was killed.
#[tokio::test(flavor = "multi_thread")]
async fn no_task_is_lost_while_replicas_are_killed() {
    const TASKS: usize = 2_000;
    let Some(set) = SetEnv::new() else { return };
    let args = ["--lease-secs", "3", "--async-concurrency", "8"];
    let replicas = set.replicas(3, &args).await;
    let nodes: Vec<String> = replicas.iter().map(Server::node_id).collect();
    replicas[0]
        .client()
        .deploy(
            "echo",
            &config(json!({
                "image": BUSYBOX, "command": ["/bin/sh", "-c", "cat"],
                "max_instances": 4, "memory_mb": 32,
            })),
        )
        .await
        .unwrap();
    let clients: Arc<Mutex<Vec<Client>>> = Arc::new(Mutex::new(
        replicas.iter().map(|r| r.client().clone()).collect(),
    ));
    let replicas = Arc::new(tokio::sync::Mutex::new(replicas));

    // The killer: every 10 s the next replica is SIGKILLed and restarted
    // (same node id, new port), until the submitters are done and the
    // queue has drained.
    let stop = tokio_util::sync::CancellationToken::new();
    let killed: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let killer = {
        let (replicas, clients, stop, killed) = (
            Arc::clone(&replicas),
            Arc::clone(&clients),
            stop.clone(),
            Arc::clone(&killed),
        );
        tokio::spawn(async move {
            let mut next = 0;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(10)) => {}
                    () = stop.cancelled() => return,
                }
                let mut all = replicas.lock().await;
                let victim = &mut all[next % 3];
                killed.lock().unwrap().push(victim.node_id());
                victim.restart().await;
                clients.lock().unwrap()[next % 3] = victim.client().clone();
                next += 1;
            }
        })
    };

    // Submissions go round-robin; one that finds its replica dead goes to
    // the next under the same idempotency key, so an acceptance whose
    // answer was lost is not made twice.
    let ids: Arc<Mutex<BTreeMap<usize, String>>> = Arc::default();
    let submitters: Vec<_> = (0..4)
        .map(|w| {
            let (clients, ids) = (Arc::clone(&clients), Arc::clone(&ids));
            tokio::spawn(async move {
                for i in (w..TASKS).step_by(4) {
                    let begun = Instant::now();
                    let mut target = i;
                    let task = loop {
                        let c = clients.lock().unwrap()[target % 3].clone();
                        let call = Call::new(format!("input-{i}"))
                            .header("idempotency-key", &format!("k-{i}"));
                        match c.submit("echo", None, call).await {
                            Ok(t) => break t,
                            Err(e) => {
                                assert!(
                                    begun.elapsed() < PATIENCE,
                                    "task {i} could not be submitted: {e}"
                                );
                                target += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    };
                    ids.lock().unwrap().insert(i, task.id);
                }
            })
        })
        .collect();
    for s in submitters {
        s.await.unwrap();
    }
    let ids = ids.lock().unwrap().clone();
    assert_eq!(ids.len(), TASKS);
    let distinct: BTreeSet<&String> = ids.values().collect();
    assert_eq!(distinct.len(), TASKS, "no submission made two tasks");

    // Every task finishes, whichever replicas are up.
    let mut results = BTreeMap::new();
    for (i, id) in &ids {
        let all = clients.lock().unwrap().clone();
        results.insert(*i, finished(&all, id).await);
    }
    stop.cancel();
    killer.await.unwrap();
    let killed: BTreeSet<String> = killed.lock().unwrap().iter().cloned().collect();
    assert!(!killed.is_empty(), "the run outlasted a kill");

    let c = clients.lock().unwrap()[0].clone();
    let mut rerun = 0;
    for (i, t) in &results {
        assert_eq!(t.status, TaskStatus::Succeeded, "task {i}: {t:?}");
        let out = body(c.output(&t.id).await.unwrap()).await;
        assert_eq!(out, format!("input-{i}").into_bytes(), "task {i}'s output");
        if t.attempt > 1 {
            rerun += 1;
            let full = c.task(&t.id).await.unwrap();
            let attempts = full.attempts.unwrap();
            for earlier in &attempts[..attempts.len() - 1] {
                assert!(
                    killed.contains(&earlier.node),
                    "task {i} ran again after an attempt on {}, which was never killed: {attempts:?}",
                    earlier.node
                );
                assert!(
                    matches!(
                        earlier.ended,
                        Some(AttemptEnd::Lost | AttemptEnd::Expired | AttemptEnd::Released)
                    ),
                    "task {i}: {attempts:?}"
                );
            }
        }
    }
    eprintln!(
        "{TASKS} tasks, {} kills of {:?}, {rerun} ran more than once",
        killed.len(),
        nodes
    );
}

/// A replica frozen (SIGSTOP) while it runs an attempt, until its lease
/// lapses and the task runs elsewhere, then thawed (SIGCONT): its late
/// result is refused by the fence and recorded nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_replicas_late_result_is_refused() {
    let Some(set) = SetEnv::new() else { return };
    let args = ["--lease-secs", "3"];
    let a = set.replica(&args).await;
    let a_node = a.node_id();
    let ac = a.client().clone();
    // The first attempt is quick; the second outlives the thaw below, so
    // the frozen replica's finish arrives while the task still runs.
    ac.deploy(
        "which",
        &config(json!({
            "image": BUSYBOX, "mode": "fresh",
            "command": ["/bin/sh", "-c",
                "if [ \"$BERTH_ATTEMPT\" = 1 ]; then sleep 1; else sleep 8; fi; echo attempt $BERTH_ATTEMPT"],
        })),
    )
    .await
    .unwrap();
    let task = ac.submit("which", None, Call::new("")).await.unwrap();
    // Frozen once it holds the attempt.
    let begun = Instant::now();
    loop {
        let t = ac.task(&task.id).await.unwrap();
        if t.status == TaskStatus::Running && t.node.as_deref() == Some(a_node.as_str()) {
            break;
        }
        assert!(
            begun.elapsed() < PATIENCE,
            "replica A never claimed it: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.signal("STOP");
    let b = set.replica(&args).await;
    let bc = b.client().clone();
    let begun = Instant::now();
    let second = loop {
        let t = bc.task(&task.id).await.unwrap();
        if t.status == TaskStatus::Running && t.attempt == 2 {
            break t;
        }
        assert!(
            begun.elapsed() < PATIENCE,
            "the task was never run again: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(second.node.as_deref(), Some(b.node_id().as_str()));
    // A's own attempt ended long ago in its container; A now wakes and
    // tries to record it while attempt 2 runs.
    a.signal("CONT");
    let done = finished(std::slice::from_ref(&bc), &task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(done.attempt, 2);
    assert_eq!(
        body(bc.output(&task.id).await.unwrap()).await,
        b"attempt 2\n"
    );
    let attempts = bc.task(&task.id).await.unwrap().attempts.unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].node, a_node);
    assert_eq!(attempts[0].ended, Some(AttemptEnd::Expired));
    assert_eq!(attempts[1].ended, Some(AttemptEnd::Finished));
    // A did try, and was refused.
    let begun = Instant::now();
    while !a.log().contains("refused by its fence") {
        assert!(
            begun.elapsed() < PATIENCE,
            "replica A never tried to record its attempt:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = bc.task(&task.id).await.unwrap();
    assert_eq!(again.status, TaskStatus::Succeeded);
    assert_eq!(again.attempt, 2);
    assert_eq!(
        body(bc.output(&task.id).await.unwrap()).await,
        b"attempt 2\n"
    );
    a.assert_no_panic();
}

/// A PostgreSQL cluster of the test's own, to stop and start.
struct OwnPostgres {
    dir: tempfile::TempDir,
    port: String,
}

fn pg_script(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg.sh");
    run(Command::new("bash").arg(script).args(args))
}

impl OwnPostgres {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_owned();
        // The server runs as an unprivileged user when the tests run as root.
        let _ = Command::new("chmod").args(["755", &path]).status();
        pg_script(&["pg_init", &path]);
        let port = pg_script(&["pg_free_port"]);
        pg_script(&["pg_start", &path, &port]);
        Self { dir, port }
    }

    fn url(&self) -> String {
        format!("postgres://berth@127.0.0.1:{}/postgres", self.port)
    }

    fn stop(&self) {
        pg_script(&["pg_stop", self.dir.path().to_str().unwrap()]);
    }

    fn restart(&self) {
        pg_script(&["pg_start", self.dir.path().to_str().unwrap(), &self.port]);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg.sh"))
            .args(["pg_stop", self.dir.path().to_str().unwrap()])
            .output();
    }
}

/// PostgreSQL stopped mid-run: replicas answer 503 while it is down,
/// recover by themselves when it is back, and no accepted task is lost.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_ride_out_a_database_restart() {
    let Some(set) = SetEnv::new() else { return };
    let pg = OwnPostgres::start();
    let db = pg.url();
    let env = [
        ("BERTH_STORE", db.as_str()),
        ("BERTH_BLOB_STORE", set.blobs.as_str()),
        ("BERTH_ADMIN_KEY", set.key.as_str()),
    ];
    let args = ["--lease-secs", "3"];
    let a = Server::start_with_env(&args, &env).await;
    let b = Server::start_with_env(&args, &env).await;
    let clients = [a.client().clone(), b.client().clone()];
    clients[0]
        .deploy(
            "slowecho",
            &config(json!({"image": BUSYBOX, "command": ["/bin/sh", "-c", "sleep 0.3; cat"]})),
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        let t = clients[i % 2]
            .submit("slowecho", None, Call::new(format!("in-{i}")))
            .await
            .unwrap();
        ids.push((i, t.id));
    }

    pg.stop();
    // While it is down: 503, with Retry-After, on every replica.
    for c in &clients {
        let begun = Instant::now();
        loop {
            match c.functions().await {
                Err(e @ ClientError::Api { .. }) if e.status().map(|s| s.as_u16()) == Some(503) => {
                    assert_eq!(e.code(), Some("store_unavailable"), "{e}");
                    break;
                }
                other => assert!(
                    begun.elapsed() < PATIENCE,
                    "no 503 while the database is down: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let raw = reqwest::Client::new()
            .get(format!("{}/v1/functions", c.base()))
            .bearer_auth(&set.key)
            .send()
            .await
            .unwrap();
        assert_eq!(raw.status().as_u16(), 503);
        assert!(
            raw.headers().contains_key("retry-after"),
            "a 503 says when to retry: {:?}",
            raw.headers()
        );
        let ready = reqwest::get(format!("{}/readyz", c.base())).await.unwrap();
        assert_eq!(ready.status().as_u16(), 503);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.restart();

    // Back by themselves: the same processes, no restart.
    for c in &clients {
        let begun = Instant::now();
        while c.functions().await.is_err() {
            assert!(begun.elapsed() < PATIENCE, "a replica never came back");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for (i, id) in &ids {
        let t = finished(&clients, id).await;
        assert_eq!(t.status, TaskStatus::Succeeded, "task {i}: {t:?}");
        let out = body(clients[0].output(id).await.unwrap()).await;
        assert_eq!(out, format!("in-{i}").into_bytes());
    }
    a.assert_no_panic();
    b.assert_no_panic();
}
