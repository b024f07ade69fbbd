//! A replica's side: [`RemoteExecutor`], the [`Executor`] of one node,
//! driven over the node's API.

use std::error::Error as StdError;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_executor::{
    ExecError, Executor, ExecutorStatus, Exit, ImageInfo, InputStream, Invocation, ResponseHead,
    RunOutcome, RunSpec,
};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::auth::SharedSecret;
use crate::wire::{
    self, ErrorBody, Frame, FrameDecoder, FrameError, FrameKind, ReapResponse, ResolveRequest,
    ResolveResponse, RetireRequest, SpecError, WireDone, WireHead, WireRunSpec, WireStatus,
};
use crate::{API_PREFIX, NODE_HEADER};

/// The depth of the output channels a remote run hands out, as a local
/// executor's: what bounds the output held between the node and the
/// caller, besides the sockets.
pub const CHANNEL_DEPTH: usize = 16;
/// Error answers are short; a longer one is cut.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Status and the other control answers.
const MAX_REPLY_BODY: usize = 4 << 20;
/// The stderr a run keeps for an outcome it has to make up itself.
const TAIL_BYTES: usize = 4 * 1024;
/// A run's request lasts as long as the attempt; this only overrides a
/// total timeout the shared client may have been built with.
const RUN_REQUEST_CEILING: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The longest wait for a node to accept or refuse a run, on top of
    /// the spec's own queue timeout: a node answers once the attempt has
    /// a container, which may mean starting one (and pulling its image).
    pub accept_timeout: Duration,
    /// How long an accepted run's response may stay silent before the
    /// node counts as lost. The node writes a keepalive every second
    /// while its attempt says nothing.
    pub idle_timeout: Duration,
    /// For resolve, prepare and reap, which may pull images or remove
    /// containers.
    pub call_timeout: Duration,
    /// For status and retire.
    pub status_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            accept_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(600),
            status_timeout: Duration::from_secs(5),
        }
    }
}

/// Why talking to a node failed. At the [`Executor`] boundary it becomes
/// an [`ExecError`]: the node's own executor errors as they were, and
/// anything about reaching the node [`ExecError::ExecutorLost`].
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no shared secret is known for the set yet")]
    NoSecret,
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the set's credentials were refused (401): {0}")]
    Unauthorized(String),
    #[error("the address belongs to another node now (409): {0}")]
    WrongNode(String),
    #[error("unexpected answer {status}: {message}")]
    Status { status: u16, message: String },
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("protocol error: {0}")]
    Frame(#[from] FrameError),
    #[error("the connection broke mid-run: {0}")]
    Broken(String),
    #[error("the response ended before the attempt's outcome")]
    Truncated,
    #[error("silent for {0:?} mid-run")]
    Silent(Duration),
    #[error(transparent)]
    Exec(ExecError),
}

impl NodeError {
    fn from_reqwest(e: &reqwest::Error, timeout: Duration) -> Self {
        if e.is_timeout() {
            NodeError::Timeout(timeout)
        } else {
            NodeError::Unreachable(chain(e))
        }
    }

    /// The executor error this means for an attempt on `node`.
    pub fn into_exec_error(self, node: &str) -> ExecError {
        match self {
            NodeError::Exec(e) => e,
            // Neither would change on another node or on a later try:
            // failing beats requeueing forever.
            NodeError::Spec(e) => ExecError::Engine(format!("node {node}: {e}")),
            NodeError::Status { status, .. } if (400..500).contains(&status) => {
                ExecError::Engine(format!("node {node}: {self}"))
            }
            other => ExecError::ExecutorLost(format!("node {node}: {other}")),
        }
    }
}

/// reqwest's own message rarely says what happened; its sources do.
fn chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What the set's heartbeat records say of the node, and the runs this
/// client started since.
#[derive(Debug, Default)]
struct View {
    slots: u64,
    running: u64,
    healthy: bool,
    started: u64,
}

/// One executor node, as a replica of the set reaches it.
///
/// `has_room` is a guess from the node's last heartbeat record (see
/// [`update`](Self::update)): healthy, and its running containers plus
/// the runs this client started since then under its slots. Until the
/// first update it says no. Runs other replicas start, and warm instances
/// that take a run without a new container, are not counted: the node's
/// own refusal is the real admission.
///
/// `shutdown` does nothing: the node owns its instances.
pub struct RemoteExecutor {
    node_id: Arc<str>,
    base_url: Arc<str>,
    secret: SharedSecret,
    http: reqwest::Client,
    config: ClientConfig,
    view: Mutex<View>,
}

impl RemoteExecutor {
    /// `base_url` is `http://ADDR:PORT`. `http` is shared by all the
    /// nodes a replica talks to, for its connection pool. A total timeout
    /// it was built with is overridden per call; a read timeout, if any,
    /// must be longer than the nodes' keepalive interval.
    pub fn new(
        node_id: impl Into<String>,
        base_url: impl Into<String>,
        secret: SharedSecret,
        http: reqwest::Client,
    ) -> Self {
        let base_url: String = base_url.into();
        Self {
            node_id: Arc::from(node_id.into()),
            base_url: Arc::from(base_url.trim_end_matches('/')),
            secret,
            http,
            config: ClientConfig::default(),
            view: Mutex::default(),
        }
    }

    pub fn with_config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Takes the node's figures from a heartbeat record; runs started
    /// before it are in its `running`.
    pub fn update(&self, slots: u64, running: u64, healthy: bool) {
        *self.view() = View {
            slots,
            running,
            healthy,
            started: 0,
        };
    }

    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lost(&self, e: NodeError) -> ExecError {
        e.into_exec_error(&self.node_id)
    }

    fn request(&self, method: Method, path: &str) -> Result<RequestBuilder, NodeError> {
        let secret = self.secret.get().ok_or(NodeError::NoSecret)?;
        let url = format!("{}{API_PREFIX}{path}", self.base_url);
        Ok(self
            .http
            .request(method, url)
            .bearer_auth(&*secret)
            .header(NODE_HEADER, &*self.node_id))
    }

    /// A control call: its answer, checked, within `timeout`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        timeout: Duration,
    ) -> Result<Bytes, NodeError> {
        let mut req = self.request(method, path)?.timeout(timeout);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| NodeError::from_reqwest(&e, timeout))?;
        if !resp.status().is_success() {
            return Err(rejection(resp).await);
        }
        read_capped(resp, MAX_REPLY_BODY)
            .await
            .map_err(|e| NodeError::from_reqwest(&e, timeout))
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        timeout: Duration,
    ) -> Result<T, NodeError> {
        let bytes = self.call(method, path, body, timeout).await?;
        serde_json::from_slice(&bytes).map_err(|e| NodeError::Malformed(e.to_string()))
    }

    async fn start(&self, spec: RunSpec, stdin: InputStream) -> Result<Invocation, NodeError> {
        let began = Instant::now();
        let frame = wire::spec_frame(&WireRunSpec::from(&spec))?;
        let (gate_tx, gate_rx) = oneshot::channel();
        let abandon = CancellationToken::new();
        let sent = Arc::new(AtomicBool::new(false));
        let body = request_body(frame, gate_rx, stdin, abandon.clone(), Arc::clone(&sent));
        let req = self
            .request(Method::POST, "/run")?
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .timeout(RUN_REQUEST_CEILING)
            .body(reqwest::Body::wrap_stream(body));
        let wait = self.config.accept_timeout + spec.pool.queue_timeout;
        let resp = match tokio::time::timeout(wait, req.send()).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => return Err(NodeError::from_reqwest(&e, wait)),
            Err(_) => return Err(NodeError::Timeout(wait)),
        };
        if resp.status() != StatusCode::OK {
            // Dropping the gate ends the request body after the spec:
            // the caller's stdin was never polled.
            drop(gate_tx);
            return Err(rejection(resp).await);
        }
        let _ = gate_tx.send(());
        self.view().started += 1;

        let (out_tx, out_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (err_tx, err_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (done_tx, done_rx) = oneshot::channel();
        let (head_tx, head_rx) = match spec.mode {
            berth_core::Mode::Http => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            _ => (None, None),
        };
        let pump = Pump {
            node: Arc::clone(&self.node_id),
            reader: Reader {
                body: resp.bytes_stream().boxed(),
                decoder: FrameDecoder::default(),
                idle: self.config.idle_timeout,
            },
            cancel: spec.cancel.clone(),
            head: head_tx,
            stdout: out_tx,
            stderr: Some(err_tx),
            tail: Vec::new(),
            began,
        };
        tokio::spawn(async move {
            // Whatever way the run ends, the request body stops pulling
            // the caller's stdin and the connection goes with it.
            let _abandon = abandon.drop_guard();
            let (result, reader) = pump.run().await;
            let _ = done_tx.send(result);
            // With the whole request sent, the node ends its response
            // after DONE, and reading that end puts the connection back in
            // the pool. Otherwise the rest of stdin is of no use: the
            // request is abandoned, which closes the connection.
            if let Some(mut reader) = reader
                && sent.load(Ordering::SeqCst)
            {
                let _ = reader.next().await;
            }
        });
        Ok(Invocation {
            head: head_rx,
            stdout: out_rx,
            stderr: err_rx,
            done: done_rx,
        })
    }
}

/// A run request's body: the spec frame, then, once the node has accepted
/// the run, the caller's stdin. Nothing of stdin is polled before, so a
/// refused run leaves it untouched for another node.
fn request_body(
    spec_frame: Bytes,
    gate: oneshot::Receiver<()>,
    stdin: InputStream,
    abandon: CancellationToken,
    sent: Arc<AtomicBool>,
) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    enum Phase {
        Spec(Bytes, oneshot::Receiver<()>, InputStream),
        Gated(oneshot::Receiver<()>, InputStream),
        Input(InputStream),
        End,
    }
    let start = Phase::Spec(spec_frame, gate, stdin);
    futures::stream::unfold(start, move |phase| {
        let abandon = abandon.clone();
        let sent = Arc::clone(&sent);
        async move {
            let mut stdin = match phase {
                Phase::Spec(frame, gate, stdin) => {
                    return Some((Ok(frame), Phase::Gated(gate, stdin)));
                }
                Phase::Gated(gate, stdin) => {
                    // A dropped gate is a refusal: the body ends here.
                    gate.await.ok()?;
                    stdin
                }
                Phase::Input(stdin) => stdin,
                Phase::End => return None,
            };
            loop {
                let chunk = tokio::select! {
                    biased;
                    // An error, not an end: the node must not take a cut
                    // input for a whole one.
                    () = abandon.cancelled() => {
                        return Some((Err(io::Error::other("run abandoned")), Phase::End));
                    }
                    c = stdin.next() => c,
                };
                match chunk {
                    Some(Ok(c)) if c.is_empty() => continue,
                    Some(Ok(c)) => return Some((Ok(c), Phase::Input(stdin))),
                    // As a local executor does, the function gets an end
                    // of input.
                    Some(Err(e)) => {
                        debug!(error = %e, "stdin failed; the function gets end of input");
                        sent.store(true, Ordering::SeqCst);
                        return None;
                    }
                    None => {
                        sent.store(true, Ordering::SeqCst);
                        return None;
                    }
                }
            }
        }
    })
}

/// Reads an accepted run's response frames.
struct Reader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    decoder: FrameDecoder,
    idle: Duration,
}

impl Reader {
    /// The next frame. Silence is timed only while waiting on the
    /// network, never while the caller has no room for output.
    async fn next(&mut self) -> Result<Frame, NodeError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(frame);
            }
            match tokio::time::timeout(self.idle, self.body.next()).await {
                Err(_) => return Err(NodeError::Silent(self.idle)),
                Ok(None) => return Err(NodeError::Truncated),
                Ok(Some(Err(e))) => return Err(NodeError::Broken(chain(&e))),
                Ok(Some(Ok(chunk))) => self.decoder.push(&chunk),
            }
        }
    }
}

/// Carries an accepted run's frames to the caller's channels.
struct Pump {
    node: Arc<str>,
    reader: Reader,
    cancel: CancellationToken,
    head: Option<oneshot::Sender<ResponseHead>>,
    stdout: mpsc::Sender<Bytes>,
    /// `None` once the caller stopped reading it, which does not stop the
    /// function.
    stderr: Option<mpsc::Sender<Bytes>>,
    tail: Vec<u8>,
    began: Instant,
}

enum Step {
    Go,
    End(Exit),
}

impl Pump {
    /// How the run ended, and the reader when the node said so itself.
    async fn run(mut self) -> (Result<RunOutcome, ExecError>, Option<Reader>) {
        loop {
            let frame = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return (Ok(self.made_up(Exit::Cancelled)), None),
                () = self.stdout.closed() => return (Ok(self.made_up(Exit::CallerGone)), None),
                f = self.reader.next() => f,
            };
            let frame = match frame {
                Ok(f) => f,
                Err(e) => return (Err(self.lost(e)), None),
            };
            let step = match frame.kind {
                FrameKind::Head => match frame.json::<WireHead>() {
                    Ok(h) => {
                        if let Some(tx) = self.head.take() {
                            let _ = tx.send(h.into());
                        }
                        Step::Go
                    }
                    Err(e) => return (Err(self.lost(e.into())), None),
                },
                FrameKind::Stdout => self.stdout(frame.payload).await,
                FrameKind::Stderr => self.stderr(frame.payload).await,
                FrameKind::Keepalive => Step::Go,
                FrameKind::Done => {
                    let result = match frame.json::<WireDone>() {
                        Ok(done) => done.into_result().unwrap_or_else(|| {
                            Err(self.lost(NodeError::Malformed("an unknown error code".into())))
                        }),
                        Err(e) => Err(self.lost(e.into())),
                    };
                    return (result, Some(self.reader));
                }
            };
            if let Step::End(exit) = step {
                return (Ok(self.made_up(exit)), None);
            }
        }
    }

    async fn stdout(&mut self, chunk: Bytes) -> Step {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Step::End(Exit::Cancelled),
            sent = self.stdout.send(chunk) => match sent {
                Ok(()) => Step::Go,
                Err(_) => Step::End(Exit::CallerGone),
            },
        }
    }

    async fn stderr(&mut self, chunk: Bytes) -> Step {
        self.tail.extend_from_slice(&chunk);
        if self.tail.len() > TAIL_BYTES {
            self.tail.drain(..self.tail.len() - TAIL_BYTES);
        }
        let Some(tx) = &self.stderr else {
            return Step::Go;
        };
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Step::End(Exit::Cancelled),
            () = self.stdout.closed() => Step::End(Exit::CallerGone),
            sent = tx.send(chunk) => {
                if sent.is_err() {
                    self.stderr = None;
                }
                Step::Go
            }
        }
    }

    fn lost(&self, e: NodeError) -> ExecError {
        ExecError::ExecutorLost(format!("node {}: {e}", self.node))
    }

    /// The outcome of a run this side ended; the node's own is not
    /// waited for. Dropping the response is what ends it there.
    fn made_up(&self, exit: Exit) -> RunOutcome {
        RunOutcome {
            exit,
            stderr_tail: String::from_utf8_lossy(&self.tail).into_owned(),
            queued_ms: 0,
            pull_ms: None,
            start_ms: 0,
            run_ms: i64::try_from(self.began.elapsed().as_millis()).unwrap_or(i64::MAX),
            cpu_ms: None,
            peak_memory_bytes: None,
        }
    }
}

/// A body read up to `cap` bytes; the rest is left unread.
async fn read_capped(resp: Response, cap: usize) -> reqwest::Result<Bytes> {
    let mut body = resp.bytes_stream();
    let mut all = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let room = cap.saturating_sub(all.len());
        all.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if all.len() >= cap {
            break;
        }
    }
    Ok(all.into())
}

/// What a node's error answer means.
async fn rejection(resp: Response) -> NodeError {
    let status = resp.status();
    let body = read_capped(resp, MAX_ERROR_BODY).await.unwrap_or_default();
    let wire = serde_json::from_slice::<ErrorBody>(&body)
        .ok()
        .map(|b| b.error);
    let message = match &wire {
        Some(w) => w.message.clone(),
        None => String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    };
    match status {
        StatusCode::UNAUTHORIZED => NodeError::Unauthorized(message),
        StatusCode::CONFLICT => NodeError::WrongNode(message),
        _ => match wire.and_then(|w| w.into_exec_error()) {
            Some(e) => NodeError::Exec(e),
            None => NodeError::Status {
                status: status.as_u16(),
                message,
            },
        },
    }
}

#[async_trait]
impl Executor for RemoteExecutor {
    async fn resolve_image(&self, reference: &str) -> Result<ImageInfo, ExecError> {
        let req = ResolveRequest {
            reference: reference.to_owned(),
        };
        let resp: ResolveResponse = self
            .call_json(
                Method::POST,
                "/resolve",
                Some(&req),
                self.config.call_timeout,
            )
            .await
            .map_err(|e| self.lost(e))?;
        Ok(ImageInfo { id: resp.id })
    }

    async fn run(&self, spec: RunSpec, stdin: InputStream) -> Result<Invocation, ExecError> {
        self.start(spec, stdin).await.map_err(|e| self.lost(e))
    }

    async fn reap_orphans(&self) -> Result<usize, ExecError> {
        let resp: ReapResponse = self
            .call_json(Method::POST, "/reap", None::<&()>, self.config.call_timeout)
            .await
            .map_err(|e| self.lost(e))?;
        Ok(usize::try_from(resp.removed).unwrap_or(usize::MAX))
    }

    async fn prepare(&self, spec: &RunSpec) -> Result<(), ExecError> {
        let spec = WireRunSpec::from(spec);
        self.call(
            Method::POST,
            "/prepare",
            Some(&spec),
            self.config.call_timeout,
        )
        .await
        .map_err(|e| self.lost(e))?;
        Ok(())
    }

    fn retire(&self, tenant: &str, function: &str, keep: Option<i64>) {
        let node = Arc::clone(&self.node_id);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            warn!(node = %node, tenant, function, "retire outside a runtime; not sent");
            return;
        };
        let req = match self.request(Method::POST, "/retire") {
            Ok(req) => req
                .timeout(self.config.status_timeout)
                .json(&RetireRequest {
                    tenant: tenant.to_owned(),
                    function: function.to_owned(),
                    keep,
                }),
            Err(e) => {
                debug!(node = %node, tenant, function, error = %e, "retire not sent");
                return;
            }
        };
        let (tenant, function) = (tenant.to_owned(), function.to_owned());
        rt.spawn(async move {
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => {
                    let e = rejection(resp).await;
                    warn!(node = %node, tenant, function, error = %e, "node refused retire");
                }
                // The node's instances idle out anyway; one that is
                // unreachable has other problems.
                Err(e) => {
                    debug!(node = %node, tenant, function, error = %chain(&e), "retire failed")
                }
            }
        });
    }

    async fn status(&self) -> ExecutorStatus {
        let timeout = self.config.status_timeout;
        match self
            .call_json::<WireStatus>(Method::GET, "/status", None::<&()>, timeout)
            .await
        {
            Ok(status) => status.into(),
            Err(e) => {
                debug!(node = %self.node_id, error = %e, "status failed");
                let view = self.view();
                ExecutorStatus {
                    id: self.node_id.to_string(),
                    capacity: usize::try_from(view.slots).unwrap_or(usize::MAX),
                    running: usize::try_from(view.running).unwrap_or(usize::MAX),
                    cpu_millis_allocated: 0,
                    memory_mb_allocated: 0,
                    instances: Vec::new(),
                    healthy: false,
                }
            }
        }
    }

    fn has_room(&self, _spec: &RunSpec) -> bool {
        let view = self.view();
        view.healthy && view.running.saturating_add(view.started) < view.slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_executor::testing::run_spec;

    #[test]
    fn has_room_counts_runs_since_the_last_update() {
        let node = RemoteExecutor::new(
            "n1",
            "http://127.0.0.1:1/",
            SharedSecret::new("s"),
            reqwest::Client::new(),
        );
        assert_eq!(node.base_url(), "http://127.0.0.1:1");
        let spec = run_spec("f", &[]);
        assert!(!node.has_room(&spec), "no room before any heartbeat");
        node.update(2, 1, true);
        assert!(node.has_room(&spec));
        node.view().started += 1;
        assert!(!node.has_room(&spec));
        node.update(2, 1, true);
        assert!(node.has_room(&spec));
        node.update(2, 0, false);
        assert!(!node.has_room(&spec));
    }

    #[test]
    fn node_errors_become_exec_errors() {
        let lost = NodeError::Timeout(Duration::from_secs(1)).into_exec_error("n1");
        assert!(matches!(&lost, ExecError::ExecutorLost(m) if m.contains("n1")));
        assert!(lost.is_refusal());
        let exec = NodeError::Exec(ExecError::NoCapacity(3)).into_exec_error("n1");
        assert!(matches!(exec, ExecError::NoCapacity(3)));
        let bad = NodeError::Status {
            status: 400,
            message: "no".into(),
        }
        .into_exec_error("n1");
        assert!(matches!(bad, ExecError::Engine(_)));
        assert!(!bad.is_refusal());
    }
}
