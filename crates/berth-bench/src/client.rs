//! The one HTTP client every figure goes through: a single HTTP/1.1
//! keep-alive connection per worker, so the baseline and berth pay exactly
//! the same client-side cost and the difference is the server's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One URL on one server, with the credentials it needs.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub auth: Option<HeaderValue>,
    pub content_type: &'static str,
}

impl Target {
    pub fn new(addr: SocketAddr, path: impl Into<String>, key: Option<&str>) -> Result<Self> {
        let auth = key
            .map(|k| HeaderValue::from_str(&format!("Bearer {k}")))
            .transpose()
            .context("admin key is not a valid header value")?;
        Ok(Self {
            addr,
            path: path.into(),
            auth,
            content_type: "application/octet-stream",
        })
    }

    pub fn with_content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = content_type;
        self
    }
}

/// The server's own account of a call (`Server-Timing`, whole ms).
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTiming {
    pub queue: Option<f64>,
    pub start: Option<f64>,
    pub run: Option<f64>,
}

impl ServerTiming {
    fn parse(headers: &HeaderMap) -> Self {
        let mut t = Self::default();
        let Some(v) = headers.get("server-timing").and_then(|v| v.to_str().ok()) else {
            return t;
        };
        for entry in v.split(',') {
            let mut parts = entry.trim().split(';');
            let name = parts.next().unwrap_or_default();
            let dur = parts
                .filter_map(|p| p.trim().strip_prefix("dur="))
                .find_map(|d| d.parse::<f64>().ok());
            match name {
                "queue" => t.queue = dur,
                "start" => t.start = dur,
                "run" => t.run = dur,
                _ => {}
            }
        }
        t
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub timing: ServerTiming,
    pub body: Bytes,
    /// From handing the request to the connection until the last byte of
    /// the response body.
    pub elapsed: Duration,
}

impl Reply {
    pub fn ensure_ok(&self, what: &str) -> Result<()> {
        ensure!(
            self.status.is_success(),
            "{what}: {} {}",
            self.status,
            String::from_utf8_lossy(&self.body[..self.body.len().min(500)])
        );
        Ok(())
    }
}

pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        // Nagle's algorithm would add delayed-ACK stalls to small requests
        // that have nothing to do with either server.
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            sender,
        })
    }

    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<Reply> {
        // A connection the server dropped while we were idle (the cold
        // start waits) is replaced outside the timed part.
        if self.sender.is_closed() {
            *self = Self::open(self.addr).await?;
        }
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, content_type);
        if let Some(auth) = auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let req = req.body(Full::new(body))?;
        self.sender.ready().await?;
        let begun = Instant::now();
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        let elapsed = begun.elapsed();
        Ok(Reply {
            status: parts.status,
            timing: ServerTiming::parse(&parts.headers),
            body,
            elapsed,
        })
    }

    pub async fn post(&mut self, target: &Target, body: Bytes) -> Result<Reply> {
        self.request(
            Method::POST,
            &target.path,
            target.auth.as_ref(),
            target.content_type,
            body,
        )
        .await
    }

    /// POST that must come back 200 with the request body echoed.
    pub async fn echo(&mut self, target: &Target, body: &Bytes) -> Result<Reply> {
        let reply = self.post(target, body.clone()).await?;
        reply.ensure_ok(&target.path)?;
        if reply.body != *body {
            bail!(
                "{}: echoed {} bytes that differ from the {} sent",
                target.path,
                reply.body.len(),
                body.len()
            );
        }
        Ok(reply)
    }
}

/// Latencies (and the server's timing) of one measured series.
#[derive(Default)]
pub struct Series {
    pub latencies: Vec<Duration>,
    pub timings: Vec<ServerTiming>,
    /// Wall time of the measured part, for throughput.
    pub wall: Duration,
    /// CPU time the server process spent during the measured part.
    pub server_cpu: Option<Duration>,
}

impl Series {
    /// Adds a later series of the same target: one figure from series
    /// measured in turns with other targets.
    pub fn absorb(&mut self, later: Series) {
        self.server_cpu = if self.latencies.is_empty() {
            later.server_cpu
        } else {
            self.server_cpu.zip(later.server_cpu).map(|(a, b)| a + b)
        };
        self.latencies.extend(later.latencies);
        self.timings.extend(later.timings);
        self.wall += later.wall;
    }
}

/// Reads a server's CPU time so far, where there is a process to read.
pub type CpuProbe<'a> = &'a dyn Fn() -> Option<Duration>;

/// `n` calls one after the other on one connection, after `warmup`
/// unmeasured ones.
pub async fn sequential(
    target: &Target,
    body: Bytes,
    warmup: usize,
    n: usize,
    cpu: CpuProbe<'_>,
) -> Result<Series> {
    let mut conn = Conn::open(target.addr).await?;
    for _ in 0..warmup {
        conn.echo(target, &body).await?;
    }
    let mut series = Series::default();
    let cpu_before = cpu();
    let begun = Instant::now();
    for _ in 0..n {
        let reply = conn.echo(target, &body).await?;
        series.latencies.push(reply.elapsed);
        series.timings.push(reply.timing);
    }
    series.wall = begun.elapsed();
    series.server_cpu = cpu().zip(cpu_before).map(|(after, before)| after - before);
    Ok(series)
}

/// A closed loop: `workers` clients, each on its own connection and
/// sending its next request as soon as the previous answer is in, until
/// `total` requests have been answered. Each worker first warms its
/// connection (and lets the function scale to the load) unmeasured.
pub async fn closed_loop(
    target: &Target,
    body: Bytes,
    workers: usize,
    total: usize,
    warmup_each: usize,
    cpu: CpuProbe<'_>,
) -> Result<Series> {
    closed_loop_over(
        std::slice::from_ref(target),
        body,
        workers,
        total,
        warmup_each,
        cpu,
    )
    .await
}

/// [`closed_loop`] with the workers dealt over several targets in turn
/// (the replicas of a set), all drawing on the one count of `total`.
pub async fn closed_loop_over(
    targets: &[Target],
    body: Bytes,
    workers: usize,
    total: usize,
    warmup_each: usize,
    cpu: CpuProbe<'_>,
) -> Result<Series> {
    ensure!(!targets.is_empty(), "a closed loop needs a target");
    let mut conns = Vec::with_capacity(workers);
    for i in 0..workers {
        let target = &targets[i % targets.len()];
        conns.push((Conn::open(target.addr).await?, target.clone()));
    }
    let warm = conns.iter_mut().map(|(c, target)| {
        let (target, body) = (target.clone(), body.clone());
        async move {
            for _ in 0..warmup_each {
                c.echo(&target, &body).await?;
            }
            anyhow::Ok(())
        }
    });
    // Together, so the pool sees concurrent waiters and scales as it
    // would under the measured load.
    futures::future::try_join_all(warm).await?;

    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu();
    let begun = Instant::now();
    let handles: Vec<_> = conns
        .into_iter()
        .map(|(mut conn, target)| {
            let (body, next) = (body.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let reply = conn.echo(&target, &body).await?;
                    mine.push((reply.elapsed, reply.timing));
                }
                anyhow::Ok(mine)
            })
        })
        .collect();
    let mut series = Series::default();
    for h in handles {
        for (latency, timing) in h.await.context("worker panicked")?? {
            series.latencies.push(latency);
            series.timings.push(timing);
        }
    }
    series.wall = begun.elapsed();
    series.server_cpu = cpu().zip(cpu_before).map(|(after, before)| after - before);
    Ok(series)
}
