//! The protocol end to end: a node's router over real HTTP on 127.0.0.1,
//! driven by a RemoteExecutor. Each node runs on a runtime of its own, so
//! that a test can kill it (and every connection it holds) at once.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use berth_core::Mode;
use berth_executor::testing::{FakeExecutor, Retired, collect, image_id, input, run_spec};
use berth_executor::{
    ExecError, Executor, ExecutorStatus, Exit, ImageInfo, InputStream, Invocation, ResponseHead,
    RunOutcome, RunSpec,
};
use berth_node::{
    ClientConfig, NodeAuth, RemoteExecutor, ServerConfig, SharedSecret, router_with_config, wire,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot};

const SECRET: &str = "the-set-secret";
const NODE: &str = "node-1";
/// Only there so that a broken test fails instead of hanging; nothing
/// asserts how long anything took.
const GUARD: Duration = Duration::from_secs(30);

struct TestNode {
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl TestNode {
    async fn start(executor: Arc<dyn Executor>, auth: NodeAuth) -> Self {
        Self::start_with(executor, auth, None).await
    }

    /// `socket_buffers` caps the kernel's buffers on the node's side.
    async fn start_with(
        executor: Arc<dyn Executor>,
        auth: NodeAuth,
        socket_buffers: Option<u32>,
    ) -> Self {
        let config = ServerConfig {
            // Short, so that a replica that went away is noticed soon.
            keepalive: Duration::from_millis(100),
        };
        let app = router_with_config(executor, auth, config);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = oneshot::channel();
        rt.spawn(async move {
            let socket = TcpSocket::new_v4().unwrap();
            if let Some(size) = socket_buffers {
                socket.set_recv_buffer_size(size).unwrap();
                socket.set_send_buffer_size(size).unwrap();
            }
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let listener = socket.listen(64).unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        let addr = rx.await.unwrap();
        Self { addr, rt: Some(rt) }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The node process dies: its tasks and sockets go at once.
    fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

fn auth() -> NodeAuth {
    NodeAuth::new(NODE, SharedSecret::new(SECRET))
}

async fn fake_node() -> (Arc<FakeExecutor>, TestNode) {
    let fake = Arc::new(FakeExecutor::new());
    let node = TestNode::start(fake.clone(), auth()).await;
    (fake, node)
}

fn client_for(url: String) -> RemoteExecutor {
    RemoteExecutor::new(NODE, url, SharedSecret::new(SECRET), reqwest::Client::new())
}

fn client(node: &TestNode) -> RemoteExecutor {
    client_for(node.url())
}

async fn guarded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(GUARD, f).await.expect("the test hung")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let wait = async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(GUARD, wait)
        .await
        .unwrap_or_else(|_| panic!("never happened: {what}"));
}

/// A stdin that records whether anyone ever asked it for a chunk.
struct Untouchable(Arc<AtomicBool>);

impl Stream for Untouchable {
    type Item = Result<Bytes, io::Error>;
    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.store(true, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Bytes::from_static(b"must not be read"))))
    }
}

fn untouchable() -> (InputStream, Arc<AtomicBool>) {
    let polled = Arc::new(AtomicBool::new(false));
    (Box::pin(Untouchable(polled.clone())), polled)
}

#[tokio::test]
async fn echo_round_trip_with_stdin_sent_after_acceptance() {
    let (fake, node) = fake_node().await;
    let remote = client(&node);
    let mut spec = run_spec("echo", &["echo-upper"]);
    spec.env = vec![("A".into(), "1".into())];
    spec.request_env = vec![("QUERY_STRING".into(), "x=1".into())];
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, io::Error>>();
    // Nothing of stdin exists yet: `run` can only return because the
    // node's 200 arrived while the request body was still open.
    let inv = guarded(remote.run(spec.clone(), rx.boxed())).await.unwrap();
    tx.unbounded_send(Ok(Bytes::from_static(b"hello ")))
        .unwrap();
    tx.unbounded_send(Ok(Bytes::from_static(b"world"))).unwrap();
    drop(tx);
    let out = guarded(collect(inv)).await;
    assert_eq!(out.stdout_text(), "HELLO WORLD");
    assert_eq!(out.stderr_text(), "echo-upper: 11 bytes\n");
    assert!(out.head.is_none());
    let outcome = out.done.unwrap();
    assert_eq!(outcome.exit, Exit::Code(0));
    assert_eq!(outcome.stderr_tail, "echo-upper: 11 bytes\n");

    let seen = fake.started_for("echo").unwrap();
    assert_eq!(
        wire::WireRunSpec::from(&seen),
        wire::WireRunSpec::from(&spec)
    );
}

#[tokio::test]
async fn exit_codes_and_output_come_back() {
    let (_fake, node) = fake_node().await;
    let remote = client(&node);

    let inv = remote
        .run(run_spec("f", &["fail", "3", "oops"]), input(""))
        .await
        .unwrap();
    let out = guarded(collect(inv)).await;
    assert_eq!(out.stderr_text(), "oops");
    assert_eq!(out.done.unwrap().exit, Exit::Code(3));

    let inv = remote
        .run(run_spec("b", &["big"]), input(""))
        .await
        .unwrap();
    let out = guarded(collect(inv)).await;
    assert_eq!(out.stdout.len(), 200 * 1024, "{:?}", out.done);
    assert!(out.stdout.iter().all(|&b| b == b'x'));
    assert_eq!(out.stderr_text(), "boom after output");
    let outcome = out.done.unwrap();
    assert_eq!(outcome.exit, Exit::Code(1));
    assert_eq!(outcome.stderr_tail, "boom after output");

    let mut spec = run_spec("e", &["env"]);
    spec.env = vec![("A".into(), "1".into())];
    spec.request_env = vec![("B".into(), "2".into())];
    let out = guarded(collect(remote.run(spec, input("")).await.unwrap())).await;
    assert_eq!(out.stdout_text(), "A=1\nB=2\n");
}

#[tokio::test]
async fn http_mode_sends_its_head_first() {
    let (_fake, node) = fake_node().await;
    let remote = client(&node);
    let mut spec = run_spec("h", &["echo-upper"]);
    spec.mode = Mode::Http;
    let out = guarded(collect(remote.run(spec, input("hi")).await.unwrap())).await;
    assert_eq!(
        out.head,
        Some(ResponseHead {
            status: 200,
            headers: vec![("content-type".into(), "application/octet-stream".into())],
        })
    );
    assert_eq!(out.stdout_text(), "HI");
    assert_eq!(out.done.unwrap().exit, Exit::Code(0));
}

#[tokio::test]
async fn a_refusal_leaves_stdin_untouched() {
    let (fake, node) = fake_node().await;
    let remote = client(&node);

    fake.set_full(true);
    let (stdin, polled) = untouchable();
    let err = guarded(remote.run(run_spec("f", &[]), stdin))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ExecError::NoCapacity(0)), "{err:?}");
    assert_eq!(err.to_string(), ExecError::NoCapacity(0).to_string());
    assert!(err.is_refusal());
    assert!(!polled.load(Ordering::SeqCst), "stdin was polled");

    fake.set_full(false);
    let (stdin, polled) = untouchable();
    let err = remote
        .run(run_spec("f", &["busy"]), stdin)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, ExecError::Busy(m) if m == "2 instances busy and 3 requests queued"),
        "{err:?}"
    );
    assert!(!polled.load(Ordering::SeqCst), "stdin was polled");
    assert!(fake.started().is_empty());

    // The same client goes on working after refusals.
    let out = guarded(collect(
        remote.run(run_spec("f", &[]), input("ok")).await.unwrap(),
    ))
    .await;
    assert_eq!(out.stdout_text(), "OK");
}

#[tokio::test]
async fn credentials_and_node_id_are_checked_before_anything_runs() {
    let (fake, node) = fake_node().await;

    let wrong_secret = RemoteExecutor::new(
        NODE,
        node.url(),
        SharedSecret::new("not-it"),
        reqwest::Client::new(),
    );
    let (stdin, polled) = untouchable();
    let err = wrong_secret
        .run(run_spec("f", &[]), stdin)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, ExecError::ExecutorLost(m) if m.contains("401") && m.contains(NODE)),
        "{err:?}"
    );
    assert!(!polled.load(Ordering::SeqCst));
    assert!(matches!(
        wrong_secret.resolve_image("img").await,
        Err(ExecError::ExecutorLost(m)) if m.contains("401")
    ));

    let no_secret = RemoteExecutor::new(
        NODE,
        node.url(),
        SharedSecret::unset(),
        reqwest::Client::new(),
    );
    assert!(matches!(
        no_secret.run(run_spec("f", &[]), input("")).await,
        Err(ExecError::ExecutorLost(_))
    ));

    let stale = RemoteExecutor::new(
        "node-0",
        node.url(),
        SharedSecret::new(SECRET),
        reqwest::Client::new(),
    );
    let (stdin, polled) = untouchable();
    let err = stale.run(run_spec("f", &[]), stdin).await.err().unwrap();
    assert!(
        matches!(&err, ExecError::ExecutorLost(m) if m.contains("409") && m.contains(NODE)),
        "{err:?}"
    );
    assert!(!polled.load(Ordering::SeqCst));

    // A bare request: no credentials at all, then no node id.
    let http = reqwest::Client::new();
    let spec = wire::WireRunSpec::from(&run_spec("f", &[]));
    let url = format!("{}/node/v1/run", node.url());
    let resp = http
        .post(&url)
        .body(wire::spec_frame(&spec).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: wire::ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.error.code, "unauthorized");
    let resp = http
        .post(&url)
        .bearer_auth(SECRET)
        .body(wire::spec_frame(&spec).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let body: wire::ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.error.code, "wrong_node");

    assert!(
        fake.started().is_empty(),
        "a refused request reached the executor"
    );
}

#[tokio::test]
async fn an_oversized_spec_is_refused_unread() {
    let (fake, node) = fake_node().await;
    let mut body = ((berth_node::MAX_SPEC_BYTES + 1) as u32)
        .to_be_bytes()
        .to_vec();
    body.extend_from_slice(b"{");
    let resp = reqwest::Client::new()
        .post(format!("{}/node/v1/run", node.url()))
        .bearer_auth(SECRET)
        .header(berth_node::NODE_HEADER, NODE)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: wire::ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.error.code, "bad_request");
    assert!(fake.started().is_empty());
}

#[tokio::test]
async fn the_secret_can_be_replaced_at_runtime() {
    let fake = Arc::new(FakeExecutor::new());
    let node_auth = NodeAuth::new(NODE, SharedSecret::unset());
    let node = TestNode::start(fake.clone(), node_auth.clone()).await;
    let secret = SharedSecret::new(SECRET);
    let remote = RemoteExecutor::new(NODE, node.url(), secret.clone(), reqwest::Client::new());

    // Before the node has joined, nothing gets in.
    assert!(matches!(
        remote.resolve_image("img").await,
        Err(ExecError::ExecutorLost(m)) if m.contains("401")
    ));
    node_auth.set_secret(SECRET);
    assert!(remote.resolve_image("img").await.is_ok());
    node_auth.set_secret("rotated");
    assert!(remote.resolve_image("img").await.is_err());
    secret.set("rotated");
    assert!(remote.resolve_image("img").await.is_ok());
}

/// Copies stdin to stdout through a bounded channel, as a function that
/// echoes its input would.
struct Pipe;

#[async_trait]
impl Executor for Pipe {
    async fn resolve_image(&self, reference: &str) -> Result<ImageInfo, ExecError> {
        Ok(ImageInfo {
            id: image_id(reference),
        })
    }

    async fn run(&self, _spec: RunSpec, mut stdin: InputStream) -> Result<Invocation, ExecError> {
        let (out_tx, out_rx) = mpsc::channel(berth_node::CHANNEL_DEPTH);
        let (_, err_rx) = mpsc::channel(1);
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut code = 0;
            while let Some(chunk) = stdin.next().await {
                let Ok(chunk) = chunk else {
                    code = 1;
                    break;
                };
                if out_tx.send(chunk).await.is_err() {
                    code = 2;
                    break;
                }
            }
            drop(out_tx);
            let _ = done_tx.send(Ok(RunOutcome {
                exit: Exit::Code(code),
                stderr_tail: String::new(),
                queued_ms: 0,
                pull_ms: None,
                start_ms: 0,
                run_ms: 0,
                cpu_ms: None,
                peak_memory_bytes: None,
            }));
        });
        Ok(Invocation {
            head: None,
            stdout: out_rx,
            stderr: err_rx,
            done: done_rx,
        })
    }

    async fn reap_orphans(&self) -> Result<usize, ExecError> {
        Ok(0)
    }

    async fn prepare(&self, _spec: &RunSpec) -> Result<(), ExecError> {
        Ok(())
    }

    fn retire(&self, _tenant: &str, _function: &str, _keep: Option<i64>) {}

    async fn status(&self) -> ExecutorStatus {
        ExecutorStatus {
            id: "pipe".into(),
            capacity: 1,
            running: 0,
            cpu_millis_allocated: 0,
            memory_mb_allocated: 0,
            instances: Vec::new(),
            healthy: true,
        }
    }

    fn has_room(&self, _spec: &RunSpec) -> bool {
        true
    }
}

/// The most a TCP buffer of this kind may grow to here (the third figure
/// of `net.ipv4.tcp_wmem` / `tcp_rmem`).
fn kernel_max(name: &str, fallback: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(fallback)
}

#[tokio::test]
async fn a_slow_caller_stalls_the_stream_instead_of_filling_memory() {
    const NODE_SOCKET_BUFFER: u32 = 64 * 1024;
    const CHUNK: usize = 64 * 1024;
    // Besides the sockets, what may be in flight: both output channels'
    // chunks (each at most one of hyper's reads), hyper's buffers on
    // either side and a frame in the decoder.
    const APP_SLACK: u64 = 16 << 20;
    // The node's buffers are capped; the client's grow as the kernel
    // lets them, which is the bulk of what a correct pipeline holds.
    let bound = kernel_max("tcp_wmem", 4 << 20)
        + kernel_max("tcp_rmem", 6 << 20)
        + 4 * u64::from(NODE_SOCKET_BUFFER)
        + APP_SLACK;
    // Well past anything buffering could hide.
    let total = (64u64 << 20).max(2 * bound) / CHUNK as u64 * CHUNK as u64;

    let node = TestNode::start_with(Arc::new(Pipe), auth(), Some(NODE_SOCKET_BUFFER)).await;
    let remote = client(&node);
    let produced = Arc::new(AtomicU64::new(0));
    let counter = produced.clone();
    let chunk = Bytes::from(vec![b'z'; CHUNK]);
    let stdin = futures::stream::iter(0..total / CHUNK as u64)
        .map(move |_| {
            counter.fetch_add(CHUNK as u64, Ordering::SeqCst);
            Ok(chunk.clone())
        })
        .boxed();

    let mut inv = guarded(remote.run(run_spec("pipe", &[]), stdin))
        .await
        .unwrap();
    let mut consumed = 0u64;
    let mut max_gap = 0u64;
    let mut since_nap = 0u64;
    let read = async {
        while let Some(c) = inv.stdout.recv().await {
            assert!(c.iter().all(|&b| b == b'z'));
            consumed += c.len() as u64;
            max_gap = max_gap.max(produced.load(Ordering::SeqCst) - consumed);
            since_nap += c.len() as u64;
            if since_nap >= 64 * 1024 {
                since_nap = 0;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(300), read)
        .await
        .expect("the stream hung");
    let outcome = guarded(inv.done).await.unwrap().unwrap();
    assert_eq!(outcome.exit, Exit::Code(0));
    assert_eq!(consumed, total);
    assert!(
        max_gap <= bound,
        "{max_gap} bytes were in flight at once; at most {bound} may be buffered"
    );
}

#[tokio::test]
async fn a_node_that_dies_mid_run_is_lost_promptly() {
    let (fake, mut node) = fake_node().await;
    // Far longer than the guard: the end must come from the broken
    // connection, not from the silence.
    let remote = client(&node).with_config(ClientConfig {
        idle_timeout: Duration::from_secs(600),
        ..ClientConfig::default()
    });
    let inv = remote
        .run(run_spec("s", &["sleep"]), input(""))
        .await
        .unwrap();
    eventually("the attempt runs", || !fake.running().is_empty()).await;
    node.kill();
    let out = guarded(collect(inv)).await;
    let err = out.done.err().unwrap();
    assert!(
        matches!(&err, ExecError::ExecutorLost(m) if m.contains(NODE)),
        "{err:?}"
    );
}

/// Accepts, answers 200, then says nothing more, holding the connection.
async fn silent_node() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0);
                seen.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            held.push(conn);
        }
    });
    addr
}

#[tokio::test]
async fn a_silent_node_is_lost_after_the_idle_timeout() {
    let addr = silent_node().await;
    let remote = client_for(format!("http://{addr}")).with_config(ClientConfig {
        idle_timeout: Duration::from_millis(300),
        ..ClientConfig::default()
    });
    let inv = guarded(remote.run(run_spec("s", &["sleep"]), input("")))
        .await
        .unwrap();
    let out = guarded(collect(inv)).await;
    let err = out.done.err().unwrap();
    assert!(
        matches!(&err, ExecError::ExecutorLost(m) if m.contains(NODE) && m.contains("silent")),
        "{err:?}"
    );
}

#[tokio::test]
async fn no_answer_before_acceptance_is_a_refusal() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let remote = client_for(format!("http://{addr}")).with_config(ClientConfig {
        accept_timeout: Duration::from_millis(300),
        ..ClientConfig::default()
    });
    let mut spec = run_spec("s", &[]);
    spec.pool.queue_timeout = Duration::ZERO;
    let (stdin, polled) = untouchable();
    let err = guarded(remote.run(spec, stdin)).await.err().unwrap();
    assert!(matches!(&err, ExecError::ExecutorLost(_)), "{err:?}");
    assert!(err.is_refusal());
    assert!(!polled.load(Ordering::SeqCst));

    // Nothing listening at all.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (stdin, polled) = untouchable();
    let err = guarded(client_for(url).run(run_spec("s", &[]), stdin))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, ExecError::ExecutorLost(m) if m.contains(NODE)),
        "{err:?}"
    );
    assert!(!polled.load(Ordering::SeqCst));
}

async fn cancel_mid_run(stdin: InputStream) {
    let (fake, node) = fake_node().await;
    let remote = client(&node);
    let spec = run_spec("s", &["sleep"]);
    let task = spec.task_id;
    let cancel = spec.cancel.clone();
    let inv = remote.run(spec, stdin).await.unwrap();
    eventually("the attempt runs", || !fake.running().is_empty()).await;
    cancel.cancel();
    let out = guarded(collect(inv)).await;
    assert_eq!(out.done.unwrap().exit, Exit::Cancelled);
    // The node noticed the replica went and ended the attempt.
    eventually("the attempt ends on the node", || {
        fake.exit_of(task).is_some()
    })
    .await;
    assert_eq!(fake.exit_of(task), Some(Exit::CallerGone));
    assert!(fake.running().is_empty());
}

#[tokio::test]
async fn cancel_mid_run_ends_the_attempt_on_the_node() {
    cancel_mid_run(input("")).await;
}

#[tokio::test]
async fn cancel_mid_run_with_stdin_still_open_ends_the_attempt_on_the_node() {
    cancel_mid_run(futures::stream::pending().boxed()).await;
}

#[tokio::test]
async fn dropping_stdout_ends_the_attempt_on_the_node() {
    let (fake, node) = fake_node().await;
    let remote = client(&node);
    let spec = run_spec("st", &["stream"]);
    let task = spec.task_id;
    let mut inv = remote.run(spec, input("")).await.unwrap();
    for _ in 0..3 {
        let chunk = guarded(inv.stdout.recv()).await.unwrap();
        assert!(chunk.iter().all(|&b| b == b'y'));
    }
    drop(inv.stdout);
    let outcome = guarded(inv.done).await.unwrap().unwrap();
    assert_eq!(outcome.exit, Exit::CallerGone);
    eventually("the attempt ends on the node", || {
        fake.exit_of(task).is_some()
    })
    .await;
    assert_eq!(fake.exit_of(task), Some(Exit::CallerGone));
}

#[tokio::test]
async fn control_calls_round_trip() {
    let (fake, node) = fake_node().await;
    let remote = client(&node);

    assert_eq!(
        remote.resolve_image("img").await.unwrap().id,
        image_id("img")
    );
    let err = remote.resolve_image("missing").await.err().unwrap();
    assert!(
        matches!(&err, ExecError::ImageNotFound(r) if r == "missing"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        ExecError::ImageNotFound("missing".into()).to_string()
    );

    let mut spec = run_spec("p", &["echo-upper"]);
    spec.pool.min_instances = 2;
    remote.prepare(&spec).await.unwrap();
    let prepared = fake.prepared();
    assert_eq!(prepared.len(), 1);
    assert_eq!(
        wire::WireRunSpec::from(&prepared[0]),
        wire::WireRunSpec::from(&spec)
    );

    assert_eq!(remote.reap_orphans().await.unwrap(), 0);

    remote.retire("t", "p", Some(3));
    remote.retire("t", "q", None);
    eventually("both retires arrive", || fake.retire_calls() == 2).await;
    let mut retired = fake.retired();
    retired.sort_by(|a, b| a.function.cmp(&b.function));
    assert_eq!(
        retired,
        vec![
            Retired {
                tenant: "t".into(),
                function: "p".into(),
                keep: Some(3),
            },
            Retired {
                tenant: "t".into(),
                function: "q".into(),
                keep: None,
            },
        ]
    );

    let mut running = run_spec("busy-one", &["sleep"]);
    running.cpu_millis = 250;
    let inv = remote.run(running, input("")).await.unwrap();
    let status = remote.status().await;
    let local = fake.status().await;
    assert_eq!(
        wire::WireStatus::from(&status),
        wire::WireStatus::from(&local)
    );
    assert_eq!(status.running, 1);
    assert_eq!(status.cpu_millis_allocated, 250);
    assert_eq!(status.instances.len(), 1);
    drop(inv);
}

#[tokio::test]
async fn status_of_an_unreachable_node_is_unhealthy_with_the_cached_figures() {
    let (_fake, mut node) = fake_node().await;
    let remote = client(&node);
    remote.update(8, 3, true);
    assert!(remote.status().await.healthy);
    node.kill();
    let status = remote.status().await;
    assert!(!status.healthy);
    assert_eq!(status.id, NODE);
    assert_eq!((status.capacity, status.running), (8, 3));
}

#[tokio::test]
async fn has_room_follows_heartbeats_and_runs_started_since() {
    let (_fake, node) = fake_node().await;
    let remote = client(&node);
    let spec = run_spec("s", &["sleep"]);
    assert!(!remote.has_room(&spec));
    remote.update(2, 1, true);
    assert!(remote.has_room(&spec));
    let inv = remote.run(spec.clone(), input("")).await.unwrap();
    assert!(!remote.has_room(&spec));
    remote.update(2, 1, true);
    assert!(remote.has_room(&spec));
    drop(inv);
}
