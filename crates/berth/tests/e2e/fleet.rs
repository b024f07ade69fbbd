//! Executor nodes: `berth server` replicas that run no containers of their
//! own, and `berth executor` daemons, each in a network namespace of its
//! own with its own address on a veth pair this test makes (198.18.N.0/24,
//! the benchmarking range: never anyone's network). The replicas listen on
//! an address of the host's loopback, the nodes reach them through
//! their veth, and replicas reach the nodes' data plane the same way. All
//! nodes drive the host's Docker Engine (through its socket), each under
//! its own container labels.
//!
//! Needs root (namespaces, links) and what the set's tests need.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_client::{Call, Client};
use berth_contract::{AttemptEnd, TaskStatus};
use serde_json::json;

use crate::harness::{
    BUSYBOX, PATIENCE, Server, agent_path, containers, peak_rss_kib_of, post_hashed, write_filler,
};
use crate::set::{SetEnv, config, docker, finished, host, run, unique};

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A /24 of 198.18.0.0/15 that no other test holds (a lock file says so).
struct Subnet {
    octet: u16,
    lock: PathBuf,
}

impl Subnet {
    fn take() -> Self {
        for _ in 0..1000 {
            let octet = rand::random::<u16>() % 256;
            let lock = std::env::temp_dir().join(format!("berth-fleet-198.18.{octet}.lock"));
            if std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
                .is_ok()
            {
                return Self { octet, lock };
            }
        }
        panic!("no free 198.18.N.0/24 for the fleet's namespaces");
    }

    fn addr(&self, last: u16) -> String {
        format!("198.18.{}.{last}", self.octet)
    }
}

impl Drop for Subnet {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// The host's address for the replicas and one
/// namespace per node, linked to the host by a veth pair.
struct Network {
    subnet: Subnet,
    /// The replicas' address, on the host's loopback.
    host: String,
    /// The subnet's unreachable route.
    fence: String,
    namespaces: Vec<Namespace>,
}

struct Namespace {
    name: String,
    host_link: String,
    /// The node's end of the veth: taking it down cuts the node off.
    inner_link: String,
    gateway: String,
    /// The node's address inside.
    addr: String,
}

impl Namespace {
    fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Link down at the node's end: the host's end loses its carrier and
    /// keeps its route, so packets either way are dropped, as on a cut
    /// cable, rather than refused.
    fn cut(&self) {
        self.exec(&["link", "set", &self.inner_link, "down"]);
    }

    fn heal(&self) {
        self.exec(&["link", "set", &self.inner_link, "up"]);
        self.exec(&["route", "replace", "default", "via", &self.gateway]);
    }
}

impl Network {
    fn new(nodes: u16) -> Self {
        let subnet = Subnet::take();
        let n = subnet.octet;
        // On loopback: a local address the namespaces route to through
        // their veth, with no device of its own to make.
        let host = format!("{}/32", subnet.addr(1));
        let _ = Command::new("ip")
            .args(["addr", "del", &host, "dev", "lo"])
            .output();
        ip(&["addr", "add", &host, "dev", "lo"]);
        // Whatever happens to a link, nothing for this subnet leaves the
        // machine by the default route.
        let fence = format!("198.18.{n}.0/24");
        ip(&["route", "replace", "unreachable", &fence]);
        let mut namespaces = Vec::new();
        for i in 1..=nodes {
            let name = format!("bn{n}x{i}");
            let host_link = format!("bh{n}x{i}");
            let inner = format!("bv{n}x{i}");
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            let _ = Command::new("ip")
                .args(["link", "del", &host_link])
                .output();
            let gw = subnet.addr(4 * i + 1);
            let addr = subnet.addr(4 * i + 2);
            ip(&["netns", "add", &name]);
            ip(&[
                "link", "add", &host_link, "type", "veth", "peer", "name", &inner,
            ]);
            ip(&["link", "set", &inner, "netns", &name]);
            ip(&["addr", "add", &format!("{gw}/30"), "dev", &host_link]);
            ip(&["link", "set", &host_link, "up"]);
            let ns = Namespace {
                name,
                host_link,
                inner_link: inner,
                gateway: gw,
                addr,
            };
            ns.exec(&[
                "addr",
                "add",
                &format!("{}/30", ns.addr),
                "dev",
                &ns.inner_link,
            ]);
            ns.exec(&["link", "set", &ns.inner_link, "up"]);
            ns.exec(&["link", "set", "lo", "up"]);
            ns.exec(&["route", "add", "default", "via", &ns.gateway]);
            namespaces.push(ns);
        }
        Self {
            subnet,
            host,
            fence,
            namespaces,
        }
    }

    /// Where replicas listen.
    fn listen(&self) -> String {
        format!("{}:0", self.subnet.addr(1))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip")
                .args(["link", "del", &ns.host_link])
                .output();
            let _ = Command::new("ip").args(["netns", "del", &ns.name]).output();
        }
        let _ = Command::new("ip")
            .args(["addr", "del", &self.host, "dev", "lo"])
            .output();
        let _ = Command::new("ip")
            .args(["route", "del", "unreachable", &self.fence])
            .output();
    }
}

/// A `berth executor` daemon in its namespace.
struct Node {
    dir: tempfile::TempDir,
    child: Option<Child>,
    id: String,
}

impl Node {
    async fn start(ns: &Namespace, join: &str, token: &str, zone: &str, grace_secs: u32) -> Self {
        Self::start_with(ns, join, token, zone, grace_secs, &[]).await
    }

    async fn start_with(
        ns: &Namespace,
        join: &str,
        token: &str,
        zone: &str,
        grace_secs: u32,
        extra: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(env!("CARGO_BIN_EXE_berth"))
            .arg("--data-dir")
            .arg(&data)
            .args(["executor", "--join", join, "--token", token])
            .args(["--zone", zone, "--listen", &format!("{}:0", ns.addr)])
            .args(["--grace-secs", &grace_secs.to_string()])
            .arg("--agent")
            .arg(agent_path())
            .args(extra)
            .env("BERTH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn berth executor");
        let mut node = Self {
            dir,
            child: Some(child),
            id: String::new(),
        };
        let begun = Instant::now();
        while !node.log().contains(" serving http") {
            if let Some(Ok(Some(status))) = node.child.as_mut().map(|c| c.try_wait()) {
                panic!("executor exited with {status}:\n{}", node.log());
            }
            assert!(
                begun.elapsed() < PATIENCE,
                "executor did not come up:\n{}",
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let identity: serde_json::Value =
            serde_json::from_slice(&std::fs::read(data.join("node.json")).unwrap()).unwrap();
        node.id = identity["node_id"].as_str().unwrap().to_owned();
        node
    }

    fn identity(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir.path().join("data/node.json")).unwrap())
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib_of(self.pid())
    }

    /// Waits for the daemon to exit by itself; its status.
    async fn exited(&mut self) -> std::process::ExitStatus {
        let begun = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                begun.elapsed() < PATIENCE,
                "executor never exited:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if !self.id.is_empty() {
            for c in containers(&format!("dev.berth.node={}", self.id)) {
                let _ = Command::new("docker").args(["rm", "-f", &c]).output();
            }
        }
    }
}

/// Two replicas without executors of their own, on the test's network.
struct Fleet {
    net: Network,
    set: SetEnv,
    replicas: Vec<Server>,
    nodes: Vec<Node>,
}

impl Fleet {
    async fn new(nodes: u16, replica_args: &[&str]) -> Option<Self> {
        Self::with_grace(nodes, replica_args, 20).await
    }

    async fn with_grace(nodes: u16, replica_args: &[&str], grace_secs: u32) -> Option<Self> {
        let mut fleet = Self::bare(nodes, replica_args).await?;
        for i in 0..usize::from(nodes) {
            let token = fleet.admin().create_join_token("test").await.unwrap().token;
            let node = Node::start(
                &fleet.net.namespaces[i],
                &fleet.replicas[i % 2].url,
                &token,
                &format!("zone-{}", i + 1),
                grace_secs,
            )
            .await;
            fleet.nodes.push(node);
        }
        fleet.await_active(usize::from(nodes)).await;
        Some(fleet)
    }

    /// The network with `namespaces` namespaces and the two replicas; no
    /// node started.
    async fn bare(namespaces: u16, replica_args: &[&str]) -> Option<Self> {
        let set = SetEnv::new()?;
        let net = Network::new(namespaces);
        let listen = net.listen();
        // The quota is not what these tests are about.
        let mut args = vec![
            "--listen",
            listen.as_str(),
            "--no-local-executor",
            "--quota-concurrent-tasks",
            "1000",
        ];
        args.extend_from_slice(replica_args);
        let replicas = vec![set.replica(&args).await, set.replica(&args).await];
        Some(Self {
            net,
            set,
            replicas,
            nodes: Vec::new(),
        })
    }

    fn admin(&self) -> &Client {
        self.replicas[0].client()
    }

    fn clients(&self) -> Vec<Client> {
        self.replicas.iter().map(|r| r.client().clone()).collect()
    }

    /// Until the set lists `n` active, heartbeating nodes, and every
    /// replica has had the time to read them (a refresh is a heartbeat
    /// interval).
    async fn await_active(&self, n: usize) {
        let begun = Instant::now();
        loop {
            let list = self.admin().executors().await.unwrap();
            let active = list
                .executors
                .iter()
                .filter(|e| e.state.to_string() == "active" && e.heartbeat_age_ms < 3000)
                .count();
            if active == n {
                break;
            }
            assert!(
                begun.elapsed() < PATIENCE,
                "nodes never all active: {list:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
}

/// Prints which node ran it, then its input.
fn who() -> berth_contract::FunctionConfig {
    config(json!({
        "image": BUSYBOX,
        "command": ["/bin/sh", "-c", "printf '%s ' \"$BERTH_NODE\"; cat"],
        "concurrency": 8,
        "max_instances": 4,
    }))
}

async fn text(resp: reqwest::Response) -> String {
    String::from_utf8(resp.bytes().await.unwrap().to_vec()).unwrap()
}

/// The node that ran a call of `who`, and the rest of its output.
fn split(out: &str) -> (String, String) {
    let (node, rest) = out.split_once(' ').expect("node id, then the input");
    (node.to_owned(), rest.to_owned())
}

/// Joins refused as they must be, a node speaking only for itself, calls
/// and tasks over all three nodes through both replicas, and 200 MB
/// through a node with both hops' memory flat.
#[tokio::test(flavor = "multi_thread")]
async fn executors_join_and_serve_a_set() {
    let Some(fleet) = Fleet::new(3, &[]).await else {
        return;
    };
    let admin = fleet.admin();
    let url = &fleet.replicas[1].url;
    let http = reqwest::Client::new();
    let report = json!({
        "cpu_millis": 1000, "memory_mb": 1024, "cpu_millis_allocated": 0,
        "memory_mb_allocated": 0, "slots": 4, "running": 0, "cpu_flags": [],
        "engine_healthy": true, "instances": []
    });
    let join = |token: String| {
        let http = http.clone();
        let body = json!({"address": "http://127.0.0.1:1", "report": report.clone()});
        async move {
            http.post(format!("{url}/v1/executors/join"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Wrong, revoked and used tokens: 401, and no node is recorded.
    assert_eq!(join("berth_join_0123".into()).await, 401);
    let revoked = admin.create_join_token("revoked").await.unwrap();
    admin.revoke_join_token(&revoked.id).await.unwrap();
    assert_eq!(join(revoked.token).await, 401);
    let tokens = admin.join_tokens().await.unwrap();
    let used: Vec<_> = tokens
        .tokens
        .iter()
        .filter(|t| t.used_by.is_some())
        .collect();
    assert_eq!(used.len(), 3, "each node spent its token: {tokens:?}");
    // A used token's secret is gone with the node's start; spend a fresh
    // one by hand, then again.
    let once = admin.create_join_token("once").await.unwrap();
    assert_eq!(join(once.token.clone()).await, 201);
    assert_eq!(join(once.token).await, 401);
    let listed = admin.executors().await.unwrap().executors;
    assert_eq!(
        listed.len(),
        4,
        "three daemons and the one hand join: {listed:?}"
    );

    // A node's credential speaks for that node only.
    let a = fleet.nodes[0].identity();
    let credential = a["credential"].as_str().unwrap();
    let beat = |id: String, credential: String| {
        let http = http.clone();
        let body = json!({"address": "http://127.0.0.1:1", "report": report.clone()});
        async move {
            http.put(format!("{url}/v1/executors/{id}/heartbeat"))
                .bearer_auth(credential)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        beat(fleet.nodes[1].id.clone(), credential.to_owned()).await,
        403
    );
    assert_eq!(
        beat(fleet.nodes[1].id.clone(), fleet.set.key.clone()).await,
        401,
        "an API key is no node credential"
    );
    let hand_joined = listed
        .iter()
        .find(|e| !fleet.nodes.iter().any(|n| n.id == e.id))
        .unwrap()
        .id
        .clone();
    // The hand-joined node never answers: it is lost, and nothing goes to it.
    let begun = Instant::now();
    loop {
        let e = admin.executor(&hand_joined).await.unwrap();
        if e.state.to_string() == "lost" {
            break;
        }
        assert!(begun.elapsed() < PATIENCE, "silent node never lost");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Calls and tasks through both replicas land on all three nodes.
    admin.deploy("who", &who()).await.unwrap();
    let clients = fleet.clients();
    let mut sync_nodes = BTreeSet::new();
    for i in 0..30 {
        let c = &clients[i % 2];
        let out = text(
            c.invoke("who", None, Call::new(format!("call {i}")))
                .await
                .unwrap(),
        )
        .await;
        let (node, rest) = split(&out);
        assert_eq!(rest, format!("call {i}"));
        sync_nodes.insert(node);
    }
    let ids: BTreeSet<String> = fleet.nodes.iter().map(|n| n.id.clone()).collect();
    assert_eq!(sync_nodes, ids, "sync calls spread over every node");
    let mut tasks = Vec::new();
    for i in 0..30 {
        let t = clients[i % 2]
            .submit("who", None, Call::new(format!("task {i}")))
            .await
            .unwrap();
        tasks.push((i, t.id));
    }
    let mut async_nodes = BTreeSet::new();
    for (i, id) in &tasks {
        let t = finished(&clients, id).await;
        assert_eq!(t.status, TaskStatus::Succeeded, "{t:?}");
        let out = text(clients[0].output(id).await.unwrap()).await;
        let (node, rest) = split(&out);
        assert_eq!(rest, format!("task {i}"));
        async_nodes.insert(node);
    }
    assert_eq!(async_nodes, ids, "async tasks spread over every node");

    // The fleet as the admin sees it.
    let list = admin.executors().await.unwrap().executors;
    for n in &fleet.nodes {
        let e = list.iter().find(|e| e.id == n.id).expect("listed");
        assert!(e.zone.as_deref().unwrap().starts_with("zone-"));
        assert!(e.address.starts_with("http://198.18."));
        assert!(e.report.slots > 0 && e.report.cpu_millis >= 1000);
        assert!(
            e.report
                .cpu_flags
                .iter()
                .any(|f| f == "sse2" || f == "asimd"),
            "{:?}",
            e.report.cpu_flags
        );
    }
    let cli = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["executor", "list"])
        .env("BERTH_URL", &fleet.replicas[0].url)
        .env("BERTH_API_KEY", &fleet.set.key)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "{table}");
    for n in &fleet.nodes {
        assert!(table.contains(&n.id), "{table}");
    }

    // An image pushed to the set's registry reaches the nodes at deploy,
    // before any call: each pulls it by digest from the replica it
    // joined, as itself.
    let cfg = tempfile::tempdir().unwrap();
    let (a_host, b_host) = (host(&fleet.replicas[0]), host(&fleet.replicas[1]));
    let mut login = docker(cfg.path());
    login.args(["login", &a_host, "-u", "admin", "--password-stdin"]);
    let mut child = login
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(fleet.set.key.as_bytes()).unwrap();
    }
    assert!(child.wait().unwrap().success(), "docker login");
    let name = unique("fleetimg");
    let pushed = format!("{a_host}/admin/{name}:v1");
    run(docker(cfg.path()).args(["tag", BUSYBOX, &pushed]));
    run(docker(cfg.path()).args(["push", &pushed]));
    let deployed = admin
        .deploy(
            "fromreg",
            &config(json!({"image": pushed, "command": ["/bin/sh", "-c", "printf '%s ' \"$BERTH_NODE\"; cat"]})),
        )
        .await
        .unwrap();
    let pinned = deployed.function.latest.image_id.clone();
    let digest = pinned
        .split_once('@')
        .expect("pinned by digest")
        .1
        .to_owned();
    // Node 2 joined replica B: its copy is named by B's address, and only
    // its pull can have made it.
    let through_b = format!("{b_host}/admin/{name}@{digest}");
    let inspect = Command::new("docker")
        .args(["image", "inspect", &through_b])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{through_b} was not pulled at deploy: {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let mut reg_nodes = BTreeSet::new();
    for i in 0..9 {
        let out = text(
            clients[i % 2]
                .invoke("fromreg", None, Call::new(format!("reg {i}")))
                .await
                .unwrap(),
        )
        .await;
        let (node, rest) = split(&out);
        assert_eq!(rest, format!("reg {i}"));
        reg_nodes.insert(node);
    }
    assert_eq!(reg_nodes, ids, "the registry image ran on every node");
    for image in [
        &pushed,
        &through_b,
        &format!("{a_host}/admin/{name}@{digest}"),
    ] {
        let _ = Command::new("docker").args(["rmi", image]).output();
    }

    // 200 MB through replica B and a node, byte for byte, with both
    // processes' memory flat.
    admin
        .deploy(
            "cat",
            &config(
                json!({"image": BUSYBOX, "command": ["/bin/sh", "-c", "cat"],
                "timeout_secs": 120}),
            ),
        )
        .await
        .unwrap();
    const SIZE: usize = 200 * 1000 * 1000;
    let input = fleet.nodes[0].dir.path().join("input.bin");
    let expected = write_filler(&input, SIZE);
    let replica = &fleet.replicas[1];
    let replica_before = replica.peak_rss_kib();
    let node_before = fleet.nodes.iter().map(Node::peak_rss_kib).max().unwrap();
    let url = format!("{}/v1/functions/cat/invoke", replica.url);
    let (hash, n) = post_hashed(&url, &replica.key, &input).await;
    assert_eq!(n, SIZE, "byte count");
    assert_eq!(hash, expected, "output differs from input");
    let replica_peak = replica.peak_rss_kib();
    let node_peak = fleet.nodes.iter().map(Node::peak_rss_kib).max().unwrap();
    eprintln!(
        "peak RSS: replica {replica_before} KiB before, {replica_peak} KiB after 200 MB; \
         nodes up to {node_before} KiB before, {node_peak} KiB after"
    );
    assert!(
        replica_peak < 150 * 1024,
        "replica peak RSS {replica_peak} KiB"
    );
    assert!(node_peak < 150 * 1024, "node peak RSS {node_peak} KiB");
    for r in &fleet.replicas {
        r.assert_no_panic();
    }
    for n in &fleet.nodes {
        assert!(!n.log().contains("panicked"), "{}", n.log());
    }
}

/// p-th percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Submits `n` tasks of `who` (each sleeping `sleep` first) through both
/// replicas; returns (index, id).
async fn submit_many(clients: &[Client], n: usize, sleep: &str) -> Vec<(usize, String)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = clients[i % clients.len()]
            .submit("who", None, Call::new(format!("{sleep} task {i}")))
            .await
            .unwrap();
        out.push((i, t.id));
    }
    out
}

/// A function that sleeps as long as its input's first word says, then
/// prints its node and its input.
fn sleeper() -> berth_contract::FunctionConfig {
    config(json!({
        "image": BUSYBOX,
        "command": ["/bin/sh", "-c",
            "read -r s rest; sleep \"$s\"; printf '%s %s %s' \"$BERTH_NODE\" \"$s\" \"$rest\""],
        "concurrency": 32,
        "max_instances": 4,
        "timeout_secs": 60,
    }))
}

/// Checks every task succeeded with its own output; returns those that
/// lost an attempt (what ran it died or was cut off), with the node of
/// their final run and their attempts.
async fn all_correct(
    clients: &[Client],
    tasks: &[(usize, String)],
    sleep: &str,
) -> BTreeMap<String, (String, Vec<berth_contract::Attempt>)> {
    let mut rerun = BTreeMap::new();
    for (i, id) in tasks {
        let t = finished(clients, id).await;
        assert_eq!(t.status, TaskStatus::Succeeded, "task {i}: {t:?}");
        let out = text(clients[0].output(id).await.unwrap()).await;
        let (node, rest) = split(&out);
        assert_eq!(rest, format!("{sleep} task {i}"), "task {i}'s own output");
        let attempts = clients[0].task(id).await.unwrap().attempts.unwrap();
        assert_eq!(
            attempts.last().and_then(|a| a.ended),
            Some(AttemptEnd::Finished),
            "{attempts:?}"
        );
        // Released: a node was full or stopping and the task waited,
        // uncounted. Lost: what ran it went away.
        if attempts.iter().any(|a| a.ended == Some(AttemptEnd::Lost)) {
            rerun.insert(id.clone(), (node, attempts));
        }
    }
    rerun
}

/// SIGKILL of one node under a thousand async tasks: none is lost, each
/// output is its own, and what the node ran is run again elsewhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_executor_loses_nothing() {
    let Some(mut fleet) = Fleet::new(3, &["--async-concurrency", "96"]).await else {
        return;
    };
    let clients = fleet.clients();
    fleet.admin().deploy("who", &sleeper()).await.unwrap();
    // All submitted before the kill: a thousand accepted tasks, about two
    // hundred running at any moment, for some fifteen seconds.
    let tasks = submit_many(&clients, 1000, "3").await;
    // Until the victim is busy with some of them.
    let victim = fleet.nodes[1].id.clone();
    let begun = Instant::now();
    loop {
        let e = fleet.admin().executor(&victim).await.unwrap();
        if e.report.instances.iter().map(|i| i.busy).sum::<u64>() > 0 {
            break;
        }
        assert!(begun.elapsed() < PATIENCE, "the node never got work");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Sync calls in flight too, over every node: those on the victim must
    // end at once with 503 executor_lost, not hang, the others succeed.
    let mut calls = Vec::new();
    for k in 0..24 {
        let c = clients[k % 2].clone();
        calls.push(tokio::spawn(async move {
            let began = Instant::now();
            let r = c
                .invoke("who", None, Call::new(format!("6 sync {k}")))
                .await;
            let r = match r {
                Ok(resp) => Ok(text(resp).await),
                Err(e) => Err(e),
            };
            (k, r, began.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = time::OffsetDateTime::now_utc();
    fleet.nodes[1].kill();
    let mut lost_calls = 0;
    for call in calls {
        let (k, r, took) = call.await.unwrap();
        match r {
            Ok(out) => {
                let (node, rest) = split(&out);
                assert_ne!(node, victim, "call {k} answered from the killed node");
                assert_eq!(rest, format!("6 sync {k}"));
            }
            Err(e) => {
                assert_eq!(e.status().map(|s| s.as_u16()), Some(503), "call {k}: {e}");
                assert_eq!(e.code(), Some("executor_lost"), "call {k}: {e}");
                // Told before the function's own 6 s were up.
                assert!(took < Duration::from_secs(6), "call {k} took {took:?}");
                lost_calls += 1;
            }
        }
    }
    assert!(lost_calls > 0, "some sync calls were on the killed node");
    let rerun = all_correct(&clients, &tasks, "3").await;
    assert!(!rerun.is_empty(), "the killed node was running some tasks");
    let mut delays: Vec<f64> = Vec::new();
    for (id, (node, attempts)) in &rerun {
        assert_ne!(node, &victim, "task {id} finished on the killed node");
        let last = attempts.last().unwrap();
        let started = time::OffsetDateTime::parse(
            &last.started_at,
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        delays.push((started - killed_at).as_seconds_f64());
    }
    delays.sort_by(f64::total_cmp);
    eprintln!(
        "node killed under 1000 tasks: {} ran again; kill to restart p50 {:.2}s, p99 {:.2}s, max {:.2}s",
        delays.len(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().unwrap()
    );
    for r in &fleet.replicas {
        r.assert_no_panic();
    }
}

/// A node cut off mid-run: its attempts run again elsewhere, it removes
/// its own containers once its heartbeats go unanswered, and when the link
/// is back nothing it did counts.
#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_executor_is_replaced_and_cleans_up() {
    let Some(fleet) = Fleet::new(3, &["--async-concurrency", "32"]).await else {
        return;
    };
    let clients = fleet.clients();
    fleet.admin().deploy("who", &sleeper()).await.unwrap();
    let tasks = submit_many(&clients, 150, "3").await;
    let victim = &fleet.nodes[2];
    let label = format!("dev.berth.node={}", victim.id);
    let begun = Instant::now();
    loop {
        let e = fleet.admin().executor(&victim.id).await.unwrap();
        if e.report.instances.iter().map(|i| i.busy).sum::<u64>() > 0 {
            break;
        }
        assert!(begun.elapsed() < PATIENCE, "the node never got work");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ns = &fleet.net.namespaces[2];
    ns.cut();
    // The set calls it lost; the node, unanswered as long, removes every
    // container it had.
    let begun = Instant::now();
    loop {
        let lost = fleet
            .admin()
            .executor(&victim.id)
            .await
            .unwrap()
            .state
            .to_string()
            == "lost";
        if lost
            && containers(&label).is_empty()
            && victim.log().contains("removing every container")
        {
            break;
        }
        assert!(
            begun.elapsed() < PATIENCE,
            "cut-off node not lost or not cleaned up:\n{}",
            victim.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let healed_at = time::OffsetDateTime::now_utc();
    ns.heal();
    let rerun = all_correct(&clients, &tasks, "3").await;
    assert!(!rerun.is_empty(), "the cut-off node was running some tasks");
    for (id, (node, attempts)) in &rerun {
        assert!(attempts.len() > 1);
        // Run again on the healed node is fine; its run from before the
        // cut must not be what stood.
        if node == &victim.id {
            let last = time::OffsetDateTime::parse(
                &attempts.last().unwrap().started_at,
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            assert!(
                last > healed_at,
                "task {id}: a late result of the cut-off node stood: {attempts:?}"
            );
        }
    }
    // Healed, it heartbeats again and is taken back.
    let begun = Instant::now();
    while fleet
        .admin()
        .executor(&victim.id)
        .await
        .unwrap()
        .state
        .to_string()
        != "active"
    {
        assert!(begun.elapsed() < PATIENCE, "healed node never active again");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for r in &fleet.replicas {
        r.assert_no_panic();
    }
}

/// Draining a node under load: nothing new goes to it, nothing fails, and
/// the daemon leaves once its work is done.
#[tokio::test(flavor = "multi_thread")]
async fn a_drained_executor_loses_nothing() {
    let Some(mut fleet) = Fleet::new(3, &["--async-concurrency", "32"]).await else {
        return;
    };
    let clients = fleet.clients();
    fleet.admin().deploy("who", &sleeper()).await.unwrap();
    let tasks = submit_many(&clients, 200, "1").await;
    let victim = fleet.nodes[0].id.clone();
    // Sync calls go on through the drain.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for k in 0..4 {
        let c = clients[k % 2].clone();
        let stop = Arc::clone(&stop);
        callers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = format!("0 call {k}.{i}");
                let resp = c.invoke("who", None, Call::new(body)).await;
                let out = text(resp.expect("a sync call during the drain")).await;
                let (node, rest) = split(&out);
                assert_eq!(rest, format!("0 call {k}.{i}"));
                seen.push((Instant::now(), node));
                i += 1;
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let drained = fleet
        .admin()
        .executor_action(&victim, "drain")
        .await
        .unwrap();
    assert_eq!(drained.state.to_string(), "draining");
    let drained_at = Instant::now();
    let status = fleet.nodes[0].exited().await;
    assert!(status.success(), "drained node exits cleanly: {status}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut after = 0;
    for c in callers {
        for (at, node) in c.await.unwrap() {
            // A replica learns of the drain at its next refresh.
            if at > drained_at + Duration::from_secs(3) {
                assert_ne!(node, victim, "a call went to the drained node");
                after += 1;
            }
        }
    }
    assert!(after > 0, "calls went on after the drain");
    let rerun = all_correct(&clients, &tasks, "1").await;
    for (node, attempts) in rerun.values() {
        assert_ne!(node, &victim);
        assert!(
            attempts.iter().all(|a| a.ended != Some(AttemptEnd::Lost)),
            "the drain cost an attempt: {attempts:?}"
        );
    }
    for r in &fleet.replicas {
        r.assert_no_panic();
    }
}

/// A node taken back with work still running past its grace period: that
/// work goes back to the queue without costing an attempt, and runs
/// elsewhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_reclaimed_executor_hands_back_its_work_uncounted() {
    let Some(mut fleet) = Fleet::with_grace(3, &["--async-concurrency", "32"], 2).await else {
        return;
    };
    let clients = fleet.clients();
    fleet.admin().deploy("who", &sleeper()).await.unwrap();
    let tasks = submit_many(&clients, 60, "8").await;
    let victim = fleet.nodes[0].id.clone();
    let begun = Instant::now();
    loop {
        let e = fleet.admin().executor(&victim).await.unwrap();
        if e.report.instances.iter().map(|i| i.busy).sum::<u64>() > 0 {
            break;
        }
        assert!(begun.elapsed() < PATIENCE, "the node never got work");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SIGTERM: the machine is being taken back.
    let sent = Command::new("kill")
        .args(["-TERM", &fleet.nodes[0].pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = fleet.nodes[0].exited().await;
    assert!(status.success(), "reclaimed node exits cleanly: {status}");
    assert!(
        fleet.nodes[0]
            .log()
            .contains("handing back what still runs"),
        "{}",
        fleet.nodes[0].log()
    );
    let mut handed_back = 0;
    for (i, id) in &tasks {
        let t = finished(&clients, id).await;
        assert_eq!(t.status, TaskStatus::Succeeded, "task {i}: {t:?}");
        assert_eq!(t.attempt, 1, "the reclaim cost task {i} an attempt: {t:?}");
        let out = text(clients[0].output(id).await.unwrap()).await;
        let (node, rest) = split(&out);
        assert_eq!(rest, format!("8 task {i}"));
        let attempts = t.attempts.unwrap();
        assert!(
            attempts.iter().all(|a| a.ended != Some(AttemptEnd::Lost)),
            "{attempts:?}"
        );
        if attempts
            .iter()
            .any(|a| a.ended == Some(AttemptEnd::Released))
        {
            assert_ne!(node, victim, "task {i} finished on the reclaimed node");
            handed_back += 1;
        }
    }
    assert!(handed_back > 0, "the reclaimed node had work to hand back");
    for r in &fleet.replicas {
        r.assert_no_panic();
    }
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A node given a certificate serves its data plane over TLS, and the
/// replicas, told to trust its CA, reach it there; nothing answers it in
/// plain HTTP, and a client that does not trust the CA is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_serves_its_data_plane_over_tls() {
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=berth test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    let ca = dir.join("ca.pem").display().to_string();
    let Some(mut fleet) = Fleet::bare(1, &["--node-ca", &ca]).await else {
        return;
    };
    let ns = &fleet.net.namespaces[0];
    std::fs::write(
        dir.join("san.cnf"),
        format!(
            "subjectAltName=IP:{}\nextendedKeyUsage=serverAuth\n",
            ns.addr
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=berth node",
            "-keyout",
            "node.key",
            "-out",
            "node.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "node.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            "-out",
            "node.pem",
        ],
    );
    let token = fleet.admin().create_join_token("tls").await.unwrap().token;
    let (cert, key) = (dir.join("node.pem"), dir.join("node.key"));
    let node = Node::start_with(
        ns,
        &fleet.replicas[0].url,
        &token,
        "zone-1",
        20,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    let id = node.id.clone();
    fleet.nodes.push(node);
    fleet.await_active(1).await;
    let listed = fleet.admin().executor(&id).await.unwrap();
    assert!(
        listed.address.starts_with(&format!("https://{}:", ns.addr)),
        "{}",
        listed.address
    );

    fleet.admin().deploy("who", &who()).await.unwrap();
    for (i, c) in fleet.clients().iter().enumerate() {
        let out = text(
            c.invoke("who", None, Call::new(format!("over tls {i}")))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(split(&out), (id.clone(), format!("over tls {i}")));
    }

    // The port speaks TLS only, with a certificate only the CA vouches for.
    let port = listed.address.rsplit(':').next().unwrap().to_owned();
    let plain = reqwest::Client::new()
        .get(format!("http://{}:{port}/node/v1/status", ns.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let untrusted = reqwest::Client::new()
        .get(format!("{}/node/v1/status", listed.address))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect_err("a client without the CA must not connect");
    assert!(untrusted.is_connect(), "{untrusted:?}");
    for r in &fleet.replicas {
        r.assert_no_panic();
    }
}
