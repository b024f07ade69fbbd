//! The node's side: an HTTP router that serves its [`Executor`] to the
//! set's replicas.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_executor::{ExecError, Executor, InputStream, Invocation, ResponseHead, RunOutcome};
use bytes::{BufMut, BytesMut};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::auth::NodeAuth;
use crate::wire::{
    self, ErrorBody, FrameKind, ReapResponse, ResolveRequest, ResolveResponse, RetireRequest,
    WireDone, WireError, WireHead, WireRunSpec, WireStatus, codes,
};
use crate::{API_PREFIX, NODE_HEADER};

/// A replica that opened a run and sends no spec is not waited for
/// forever.
const SPEC_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Control requests carry a spec at most.
const MAX_CONTROL_BODY: usize = wire::MAX_SPEC_BYTES;
/// How long an answer waits for the rest of its request before the
/// connection closes anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A refused request is read to its end only if it is about this small (a
/// spec frame, a control body); anything bigger is not waited for.
const DRAIN_LIMIT: usize = 2 * wire::MAX_SPEC_BYTES;

/// How a node serves runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How long a run's response may stay silent before a KEEPALIVE frame
    /// goes out. Besides telling the replica the node is alive, the write
    /// is what reveals a replica that went away, which ends its attempt.
    /// Keep it well under the replicas' idle timeout.
    pub keepalive: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(1),
        }
    }
}

struct Node {
    id: Arc<str>,
    executor: Arc<dyn Executor>,
    config: ServerConfig,
}

/// The node's API under `/node/v1/`, every route behind [`NodeAuth`].
pub fn router(executor: Arc<dyn Executor>, auth: NodeAuth) -> Router {
    router_with_config(executor, auth, ServerConfig::default())
}

/// [`router`], with a configuration other than the default.
pub fn router_with_config(
    executor: Arc<dyn Executor>,
    auth: NodeAuth,
    config: ServerConfig,
) -> Router {
    let node = Arc::new(Node {
        id: Arc::from(auth.node_id()),
        executor,
        config,
    });
    let v1 = Router::new()
        .route("/run", post(run))
        .route("/resolve", post(resolve))
        .route("/prepare", post(prepare))
        .route("/reap", post(reap))
        .route("/retire", post(retire))
        .route("/status", get(status))
        .route_layer(middleware::from_fn_with_state(auth, authorize))
        .with_state(node);
    Router::new().nest(API_PREFIX, v1)
}

#[derive(Debug, thiserror::Error)]
enum Rejection {
    #[error("missing or wrong credentials for this node")]
    Unauthorized,
    #[error("this is node {ours}, not {theirs:?}")]
    WrongNode { ours: String, theirs: String },
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Exec(ExecError),
}

impl Rejection {
    fn parts(&self) -> (StatusCode, WireError) {
        let message = self.to_string();
        match self {
            Rejection::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                WireError::protocol(codes::UNAUTHORIZED, message),
            ),
            Rejection::WrongNode { .. } => (
                StatusCode::CONFLICT,
                WireError::protocol(codes::WRONG_NODE, message),
            ),
            Rejection::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                WireError::protocol(codes::BAD_REQUEST, message),
            ),
            // A refusal is worth trying elsewhere; anything else is what
            // the executor made of the request.
            Rejection::Exec(e) if e.is_refusal() => (StatusCode::SERVICE_UNAVAILABLE, e.into()),
            Rejection::Exec(e) => (StatusCode::BAD_GATEWAY, e.into()),
        }
    }

    /// The answer to a request whose body is still coming: its end waits
    /// for `body_end` (bounded), so that the connection is not closed on
    /// unread input. A socket closed with unread input is reset, and a
    /// reset can destroy the answer before the replica has read it.
    fn draining(self, body_end: impl Future<Output = ()> + Send + 'static) -> Response {
        let (status, error) = self.parts();
        let json = Bytes::from(serde_json::to_vec(&ErrorBody { error }).unwrap_or_default());
        let end = futures::stream::once(async move {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, body_end).await;
        })
        .filter_map(|()| std::future::ready(None));
        let body = futures::stream::once(std::future::ready(Ok::<_, Infallible>(json))).chain(end);
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from_stream(body),
        )
            .into_response()
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, error) = self.parts();
        json(status, &ErrorBody { error })
    }
}

/// Reads a request body to its end (or `DRAIN_LIMIT`), discarding it.
async fn drain<S, E>(mut body: S)
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut seen = 0;
    while let Some(Ok(chunk)) = body.next().await {
        seen += chunk.len();
        if seen > DRAIN_LIMIT {
            return;
        }
    }
}

impl From<ExecError> for Rejection {
    fn from(e: ExecError) -> Self {
        Rejection::Exec(e)
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}

/// The secret first, so that who this node is stays unknown to anyone
/// without it.
async fn authorize(State(auth): State<NodeAuth>, req: Request, next: Next) -> Response {
    let rejection = if !auth
        .secret()
        .verify(bearer(req.headers()).unwrap_or_default())
    {
        Rejection::Unauthorized
    } else {
        let theirs = req.headers().get(NODE_HEADER).map(|v| v.as_bytes());
        if theirs == Some(auth.node_id().as_bytes()) {
            return next.run(req).await;
        }
        Rejection::WrongNode {
            ours: auth.node_id().to_owned(),
            theirs: theirs
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default(),
        }
    };
    rejection.draining(drain(req.into_body().into_data_stream()))
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
}

async fn read_json<T: DeserializeOwned>(body: Body) -> Result<T, Rejection> {
    let bytes = axum::body::to_bytes(body, MAX_CONTROL_BODY)
        .await
        .map_err(|e| Rejection::BadRequest(format!("unreadable body: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Rejection::BadRequest(format!("malformed body: {e}")))
}

async fn resolve(State(node): State<Arc<Node>>, body: Body) -> Result<Response, Rejection> {
    let req: ResolveRequest = read_json(body).await?;
    let image = node.executor.resolve_image(&req.reference).await?;
    Ok(json(StatusCode::OK, &ResolveResponse { id: image.id }))
}

async fn prepare(State(node): State<Arc<Node>>, body: Body) -> Result<StatusCode, Rejection> {
    let spec: WireRunSpec = read_json(body).await?;
    let spec = spec.into_spec(CancellationToken::new());
    node.executor.prepare(&spec).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reap(State(node): State<Arc<Node>>) -> Result<Response, Rejection> {
    let removed = node.executor.reap_orphans().await?;
    Ok(json(
        StatusCode::OK,
        &ReapResponse {
            removed: removed as u64,
        },
    ))
}

async fn retire(State(node): State<Arc<Node>>, body: Body) -> Result<StatusCode, Rejection> {
    let req: RetireRequest = read_json(body).await?;
    node.executor.retire(&req.tenant, &req.function, req.keep);
    Ok(StatusCode::NO_CONTENT)
}

async fn status(State(node): State<Arc<Node>>) -> Response {
    let status = node.executor.status().await;
    json(StatusCode::OK, &WireStatus::from(&status))
}

async fn run(State(node): State<Arc<Node>>, body: Body) -> Response {
    let mut body = body.into_data_stream();
    let (spec, rest) = match tokio::time::timeout(SPEC_READ_TIMEOUT, read_spec(&mut body)).await {
        Ok(Ok(read)) => read,
        Ok(Err(rejection)) => return rejection.draining(drain(body)),
        Err(_) => {
            return Rejection::BadRequest("no run spec within 30 s".into()).draining(drain(body));
        }
    };
    let spec = spec.into_spec(CancellationToken::new());
    let (task, function) = (spec.task_id, spec.function.clone());
    let (stdin_tx, stdin_rx) = mpsc::channel(1);
    let feeder = Feeder(tokio::spawn(feed(rest, body, stdin_tx)));
    let stdin: InputStream = futures::stream::unfold(stdin_rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
    .boxed();
    let inv = match node.executor.run(spec, stdin).await {
        Ok(inv) => inv,
        Err(e) => {
            debug!(task = %task, function, error = %e, "run not started");
            // The replica ends its request when it sees the refusal.
            return Rejection::Exec(e).draining(feeder.finished());
        }
    };
    // Dropped with the response body when the replica goes away, which
    // drops the attempt's stdout receiver: that is what kills it.
    let attempt = Attempt::new(inv, &node, feeder);
    let frames = futures::stream::unfold(attempt, |mut a| async move {
        a.next_frame().await.map(|f| (Ok::<_, Infallible>(f), a))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, crate::FRAMES_CONTENT_TYPE)],
        Body::from_stream(frames),
    )
        .into_response()
}

/// The task that reads a run's request body; aborted with its owner.
struct Feeder(tokio::task::JoinHandle<()>);

impl Feeder {
    /// Once the request body has ended (or broken).
    async fn finished(mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Hands the request body to the attempt as its stdin, a chunk at a time
/// as it reads, then, once the attempt stops reading, reads the rest to
/// its end: the replica ends (or drops) its request when it has the
/// outcome, and until then the connection must stay open for it.
async fn feed(first: Bytes, mut body: BodyDataStream, tx: mpsc::Sender<io::Result<Bytes>>) {
    let mut tx = Some(tx);
    let mut pending = (!first.is_empty()).then_some(Ok(first));
    loop {
        let chunk = match pending.take() {
            Some(chunk) => chunk,
            None => match body.next().await {
                Some(chunk) => chunk.map_err(io::Error::other),
                None => return,
            },
        };
        let failed = chunk.is_err();
        if let Some(sender) = &tx
            && sender.send(chunk).await.is_err()
        {
            tx = None;
        }
        if failed {
            return;
        }
    }
}

/// Reads the spec frame off the front of a run request; returns what
/// came with it beyond the frame (the start of stdin).
async fn read_spec(body: &mut BodyDataStream) -> Result<(WireRunSpec, Bytes), Rejection> {
    let bad = |e: wire::SpecError| Rejection::BadRequest(e.to_string());
    let mut buf = BytesMut::new();
    let mut want: Option<usize> = None;
    loop {
        if want.is_none() && buf.len() >= 4 {
            let prefix = [buf[0], buf[1], buf[2], buf[3]];
            want = Some(4 + wire::spec_len(prefix).map_err(bad)?);
        }
        if let Some(n) = want
            && buf.len() >= n
        {
            let frame = buf.split_to(n);
            let spec =
                serde_json::from_slice(&frame[4..]).map_err(|e| bad(wire::SpecError::Json(e)))?;
            return Ok((spec, buf.freeze()));
        }
        match body.next().await {
            Some(Ok(chunk)) => buf.put(chunk),
            Some(Err(e)) => return Err(Rejection::BadRequest(format!("broken request: {e}"))),
            None => {
                return Err(Rejection::BadRequest(
                    "the request ended before its run spec".into(),
                ));
            }
        }
    }
}

/// An accepted attempt, read out as response frames.
struct Attempt {
    head: Option<oneshot::Receiver<ResponseHead>>,
    stdout: Option<mpsc::Receiver<Bytes>>,
    stderr: Option<mpsc::Receiver<Bytes>>,
    done: Option<oneshot::Receiver<Result<RunOutcome, ExecError>>>,
    ready: VecDeque<Bytes>,
    keepalive: Duration,
    node: Arc<str>,
    feeder: Option<Feeder>,
}

enum Event {
    Head(Option<ResponseHead>),
    Stdout(Option<Bytes>),
    Stderr(Option<Bytes>),
    Done(Result<RunOutcome, ExecError>),
    Quiet,
}

async fn recv(rx: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Attempt {
    fn new(inv: Invocation, node: &Node, feeder: Feeder) -> Self {
        Self {
            head: inv.head,
            stdout: Some(inv.stdout),
            stderr: Some(inv.stderr),
            done: Some(inv.done),
            ready: VecDeque::new(),
            keepalive: node.config.keepalive,
            node: Arc::clone(&node.id),
            feeder: Some(feeder),
        }
    }

    /// Only called when the connection can take more, so a replica that
    /// reads slowly stalls the attempt's channels, and so the function.
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Some(frame);
            }
            if self.done.is_none() {
                // DONE is out; the response ends once the request has.
                if let Some(feeder) = self.feeder.take() {
                    let _ = tokio::time::timeout(DRAIN_TIMEOUT, feeder.finished()).await;
                }
                return None;
            }
            let event = self.next_event().await;
            self.handle(event);
        }
    }

    async fn next_event(&mut self) -> Event {
        let Attempt {
            head,
            stdout,
            stderr,
            done,
            keepalive,
            node,
            ..
        } = self;
        tokio::select! {
            h = async { head.as_mut().expect("guarded").await }, if head.is_some() => {
                Event::Head(h.ok())
            }
            c = recv(stdout) => Event::Stdout(c),
            c = recv(stderr) => Event::Stderr(c),
            d = async { done.as_mut().expect("guarded").await }, if done.is_some() => {
                // The executor lost it (a panic, the node shutting
                // down): nothing says the function failed.
                Event::Done(d.unwrap_or_else(|_| {
                    Err(ExecError::ExecutorLost(format!(
                        "node {node}: the attempt ended without reporting"
                    )))
                }))
            }
            () = tokio::time::sleep(*keepalive) => Event::Quiet,
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Head(h) => {
                self.head = None;
                if let Some(h) = h {
                    self.push_head(&h);
                }
            }
            Event::Stdout(Some(chunk)) => {
                // The executor sends the head before any stdout, but the
                // two were polled apart: look again so the order holds.
                self.poll_head();
                self.push_output(FrameKind::Stdout, &chunk);
            }
            Event::Stdout(None) => self.stdout = None,
            Event::Stderr(Some(chunk)) => self.push_output(FrameKind::Stderr, &chunk),
            Event::Stderr(None) => self.stderr = None,
            Event::Done(result) => {
                // What the attempt wrote is in the channels by the time it
                // reports; it goes out before the outcome.
                self.poll_head();
                while let Some(c) = self.stdout.as_mut().and_then(|rx| rx.try_recv().ok()) {
                    self.push_output(FrameKind::Stdout, &c);
                }
                while let Some(c) = self.stderr.as_mut().and_then(|rx| rx.try_recv().ok()) {
                    self.push_output(FrameKind::Stderr, &c);
                }
                self.ready
                    .push_back(wire::json_frame(FrameKind::Done, &WireDone::from(&result)));
                self.head = None;
                self.stdout = None;
                self.stderr = None;
                self.done = None;
            }
            Event::Quiet => self
                .ready
                .push_back(wire::encode_frame(FrameKind::Keepalive, &[])),
        }
    }

    fn poll_head(&mut self) {
        let Some(rx) = self.head.as_mut() else { return };
        match rx.try_recv() {
            Ok(h) => {
                self.head = None;
                self.push_head(&h);
            }
            Err(oneshot::error::TryRecvError::Closed) => self.head = None,
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
    }

    fn push_head(&mut self, h: &ResponseHead) {
        self.ready
            .push_back(wire::json_frame(FrameKind::Head, &WireHead::from(h)));
    }

    fn push_output(&mut self, kind: FrameKind, chunk: &[u8]) {
        self.ready.extend(wire::output_frames(kind, chunk));
    }
}
