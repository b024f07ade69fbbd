//! http mode: the program is a long-lived HTTP server on the container's
//! loopback, and each request is proxied to it.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame as BodyFrame;
use hyper::header::{CONNECTION, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustix::process::Signal;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::process::{Children, Exit, cpu_ms, peak_rss_bytes};
use super::{
    AbortOnDrop, Config, Output, RunError, Sink, bind, chunks, describe, open_request, pump_input,
    send_exit,
};
use crate::protocol::{ExitReport, Frame, FrameKind, HttpHead, RequestHead};

const READY_POLL: Duration = Duration::from_millis(5);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
const IDLE_CONNECTIONS: usize = 64;
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Headers that describe one connection rather than the request, per
/// RFC 9110 section 7.6.1; the proxy's own connection has its own.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

type Body = BoxBody<Bytes, std::io::Error>;

struct Proxy {
    client: Client<HttpConnector, Body>,
    port: u16,
    /// The program's pid, for its CPU time and peak memory.
    pid: u32,
}

pub(super) async fn run(
    config: &Config,
    children: Arc<Children>,
    shutdown: CancellationToken,
) -> Result<i32, RunError> {
    let mut command = Command::new(&config.program[0]);
    command
        .args(&config.program[1..])
        .env("PORT", config.port.to_string())
        .stdin(Stdio::null());
    let spawned = children.spawn(command).map_err(|source| RunError::Spawn {
        program: config.program[0].to_string_lossy().into_owned(),
        source,
    })?;
    let group = spawned.group;
    let mut exit = spawned.exit;

    let ready = wait_ready(config.port, config.ready_timeout);
    tokio::select! {
        exit = &mut exit => return Err(RunError::ProgramExited(exit_text(exit))),
        _ = shutdown.cancelled() => {
            group.signal(Signal::TERM);
            return Ok(finish(&group, &mut exit, config.grace, true).await);
        }
        ready = ready => {
            if !ready {
                group.signal(Signal::KILL);
                let _ = (&mut exit).await;
                return Err(RunError::NotReady {
                    port: config.port,
                    timeout: config.ready_timeout,
                });
            }
        }
    }

    let listener = bind(&config.socket)?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let proxy = Arc::new(Proxy {
        client: Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(connector),
        port: config.port,
        pid: group.pid(),
    });
    let slots = Arc::new(Semaphore::new(super::MAX_CONCURRENT_REQUESTS));
    let serve = async {
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            match listener.accept().await {
                Ok((stream, _)) => {
                    let proxy = Arc::clone(&proxy);
                    tokio::spawn(async move {
                        handle(stream, &proxy).await;
                        drop(permit);
                    });
                }
                Err(err) => {
                    eprintln!("berth-agent: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    let result = tokio::select! {
        exit = &mut exit => Err(RunError::ProgramExited(exit_text(exit))),
        _ = shutdown.cancelled() => {
            // Forwarded to the whole group, as the program's own workers
            // would get it from a terminal.
            group.signal(Signal::TERM);
            Ok(finish(&group, &mut exit, config.grace, true).await)
        }
        () = serve => Ok(finish(&group, &mut exit, config.grace, false).await),
    };
    // Requests in flight fail fast without the program; let them report.
    drop(listener);
    super::remove_socket(&config.socket);
    super::drain(&slots, config.grace).await;
    result
}

/// Polls until something accepts TCP connections on the port.
async fn wait_ready(port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let attempt =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(("127.0.0.1", port)));
        if let Ok(Ok(_)) = attempt.await {
            return true;
        }
        tokio::time::sleep(READY_POLL).await;
    }
    false
}

/// Waits for the program to end after it was asked to stop, killing it
/// after the grace period, and turns its status into the agent's exit code.
async fn finish(
    group: &super::process::Group,
    exit: &mut tokio::sync::oneshot::Receiver<std::io::Result<Exit>>,
    grace: Duration,
    asked: bool,
) -> i32 {
    let result = match tokio::time::timeout(grace, &mut *exit).await {
        Ok(result) => result,
        Err(_) => {
            group.signal(Signal::KILL);
            exit.await
        }
    };
    let code = match result {
        Ok(Ok(exit)) => exit
            .status
            .code()
            .or_else(|| exit.status.signal().map(|signal| 128 + signal))
            .unwrap_or(1),
        _ => 1,
    };
    if asked { code } else { code.max(1) }
}

fn exit_text(
    exit: Result<std::io::Result<Exit>, tokio::sync::oneshot::error::RecvError>,
) -> String {
    match exit {
        Ok(Ok(exit)) => describe(exit.status),
        Ok(Err(err)) => format!("waiting for it failed: {err}"),
        Err(_) => "waiting for it failed".to_owned(),
    }
}

async fn handle(stream: UnixStream, proxy: &Proxy) {
    let Some((head, input, mut output)) = open_request(stream).await else {
        return;
    };
    let timeout = Duration::from_millis(head.timeout_ms);
    let (body, body_rx) = mpsc::channel(1);
    let gone = CancellationToken::new();
    let _input = AbortOnDrop(tokio::spawn(pump_input(
        input,
        Sink::Body(Some(body)),
        gone.clone(),
    )));

    // The program serves every request, so its CPU time over the request is
    // only this request's when it was the only one in flight: approximate
    // under concurrency.
    let cpu_before = cpu_ms(proxy.pid);
    let outcome = tokio::select! {
        _ = gone.cancelled() => return,
        outcome = tokio::time::timeout(timeout, forward(proxy, head, body_rx, &mut output)) => outcome,
    };
    let mut report = match outcome {
        Err(_) => ExitReport {
            timed_out: true,
            ..ExitReport::default()
        },
        Ok(Ok(())) => ExitReport {
            exit_code: Some(0),
            ..ExitReport::default()
        },
        Ok(Err(Failure::ClientGone)) => return,
        Ok(Err(Failure::Proxy(message))) => {
            let line = format!("berth-agent: {message}\n");
            let _ = output.send(Frame::new(FrameKind::Stderr, line)).await;
            ExitReport::failed(message)
        }
    };
    report.cpu_ms = match (cpu_before, cpu_ms(proxy.pid)) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    report.peak_memory_bytes = peak_rss_bytes(proxy.pid);
    send_exit(&mut output, report).await;
}

enum Failure {
    ClientGone,
    Proxy(String),
}

/// Sends the request to the program and streams the response back.
async fn forward(
    proxy: &Proxy,
    head: RequestHead,
    mut body_rx: mpsc::Receiver<Bytes>,
    output: &mut Output,
) -> Result<(), Failure> {
    let mut request = build_request(proxy.port, &head).map_err(Failure::Proxy)?;
    // A request whose input is empty gets an empty body, so a GET goes out
    // without a chunked body the server might not expect.
    let body = match body_rx.recv().await {
        None => Empty::new().map_err(|never| match never {}).boxed(),
        Some(first) => {
            let rest = futures::stream::poll_fn(move |cx| body_rx.poll_recv(cx));
            let frames = futures::stream::once(async move { first })
                .chain(rest)
                .map(|data| Ok(BodyFrame::data(data)));
            BodyExt::boxed(StreamBody::new(frames))
        }
    };
    *request.body_mut() = body;

    let response = proxy.client.request(request).await.map_err(|err| {
        Failure::Proxy(format!("request to the function failed: {}", chain(&err)))
    })?;
    let (parts, mut body) = response.into_parts();
    let http = HttpHead {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .filter(|(name, _)| !is_hop_by_hop(name.as_str(), &parts.headers))
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let frame =
        Frame::json(FrameKind::Http, &http).map_err(|err| Failure::Proxy(err.to_string()))?;
    output.send(frame).await.map_err(|_| Failure::ClientGone)?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            Failure::Proxy(format!(
                "reading the function's response failed: {}",
                chain(&err)
            ))
        })?;
        if let Ok(data) = frame.into_data() {
            for frame in chunks(FrameKind::Stdout, data) {
                output.send(frame).await.map_err(|_| Failure::ClientGone)?;
            }
        }
    }
    Ok(())
}

fn build_request(port: u16, head: &RequestHead) -> Result<Request<Body>, String> {
    let method = Method::from_bytes(head.method.as_bytes())
        .map_err(|_| format!("invalid method {:?}", head.method))?;
    if !head.path.starts_with('/') {
        return Err(format!("invalid path {:?}", head.path));
    }
    let target = if head.query.is_empty() {
        format!("http://127.0.0.1:{port}{}", head.path)
    } else {
        format!("http://127.0.0.1:{port}{}?{}", head.path, head.query)
    };
    let uri: Uri = target.parse().map_err(|_| {
        format!(
            "invalid path or query {:?}",
            &target[target.find('/').unwrap_or(0)..]
        )
    })?;
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .map_err(|err| err.to_string())?;
    let mut headers = hyper::HeaderMap::new();
    for (name, value) in &head.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
        headers.append(name, value);
    }
    for (name, value) in &headers {
        if !is_hop_by_hop(name.as_str(), &headers) {
            request.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(request)
}

/// Whether `name` is hop-by-hop: one of the standard ones, or listed in the
/// message's own Connection header.
fn is_hop_by_hop(name: &str, headers: &hyper::HeaderMap) -> bool {
    HOP_BY_HOP.contains(&name)
        || headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case(name))
}

/// An error with its causes, which is where hyper puts the useful part.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "POST".into(),
            path: "/a/b".into(),
            query: "x=1".into(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            ..RequestHead::default()
        }
    }

    #[test]
    fn drops_hop_by_hop_headers() {
        let request = build_request(
            8080,
            &head(&[
                ("content-type", "text/plain"),
                ("connection", "close, x-private"),
                ("x-private", "1"),
                ("transfer-encoding", "chunked"),
                ("x-kept", "2"),
            ]),
        )
        .unwrap();
        assert_eq!(request.uri(), "http://127.0.0.1:8080/a/b?x=1");
        let names: Vec<_> = request.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-type", "x-kept"]);
    }

    #[test]
    fn rejects_bad_heads() {
        let mut bad = head(&[]);
        bad.method = "GE T".into();
        assert!(build_request(1, &bad).is_err());
        let mut bad = head(&[]);
        bad.path = "no-slash".into();
        assert!(build_request(1, &bad).is_err());
        assert!(build_request(1, &head(&[("bad name", "x")])).is_err());
        assert!(build_request(1, &head(&[("x", "line\nbreak")])).is_err());
    }
}
