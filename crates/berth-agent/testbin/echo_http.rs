//! A long-lived HTTP server for exercising the agent's http mode, in tests
//! and in a FROM-scratch test image. It listens on 127.0.0.1:$PORT and:
//!
//! - echoes the request body, with `x-echo-count` (requests served by this
//!   process so far), `x-echo-pid`, `x-echo-method`, `x-echo-uri` and
//!   `x-echo-test` (the request's `x-test` header);
//! - `/status/N` answers with status N;
//! - `/burn?ms=N` spins until it has used N milliseconds of CPU time;
//! - `/sleep` answers after 30 seconds;
//! - `/crash` exits the process with code 3.
//!
//! `ECHO_STARTUP_DELAY_MS` delays listening, to exercise readiness waits.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

static SERVED: AtomicU64 = AtomicU64::new(0);

type Body = BoxBody<Bytes, hyper::Error>;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port: u16 = match std::env::var("PORT").ok().and_then(|p| p.parse().ok()) {
        Some(port) => port,
        None => {
            eprintln!("echo-http: PORT must be set to a port number");
            std::process::exit(2);
        }
    };
    if let Some(delay) = std::env::var("ECHO_STARTUP_DELAY_MS")
        .ok()
        .and_then(|d| d.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let listener = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("echo-http: cannot listen on 127.0.0.1:{port}: {err}");
            std::process::exit(2);
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // As production servers do: without it a response written in two
        // pieces waits for the peer's delayed ACK (40 ms) between them.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(serve))
                .await;
        });
    }
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

async fn serve(request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let count = SERVED.fetch_add(1, Ordering::SeqCst) + 1;
    let path = request.uri().path().to_owned();
    let mut response = Response::builder()
        .header("x-echo-count", count)
        .header("x-echo-pid", std::process::id())
        .header("x-echo-method", request.method().as_str())
        .header("x-echo-uri", request.uri().to_string());
    if let Some(test) = request.headers().get("x-test") {
        response = response.header("x-echo-test", test);
    }
    let body = if path == "/crash" {
        std::process::exit(3);
    } else if path == "/sleep" {
        tokio::time::sleep(Duration::from_secs(30)).await;
        full("slept\n")
    } else if path == "/burn" {
        let ms: u64 = request
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(300);
        // Spins until this process has used `ms` of CPU time, however long
        // that takes on a busy machine.
        let start = own_cpu_ms().unwrap_or(0);
        let mut spins = 0u64;
        // Without /proc there is nothing to measure: spin once.
        while let Some(now) = own_cpu_ms() {
            for _ in 0..100_000 {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
            if now.saturating_sub(start) >= ms {
                break;
            }
        }
        full(format!("{spins}\n"))
    } else if let Some(status) = path.strip_prefix("/status/") {
        let status = status
            .parse::<u16>()
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        response = response.status(status);
        full(format!("status {}\n", status.as_u16()))
    } else {
        request.into_body().boxed()
    };
    Ok(response
        .body(body)
        .unwrap_or_else(|_| Response::new(full("bad response\n"))))
}

/// This process's CPU time (user + system) from /proc/self/stat, assuming
/// the usual 100 clock ticks per second.
fn own_cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..]
        .split_ascii_whitespace()
        .collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10)
}
