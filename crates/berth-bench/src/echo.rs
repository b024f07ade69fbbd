//! The baseline: the least an HTTP echo can cost on this machine with this
//! client. Berth's overhead is whatever it adds on top.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Result;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves until the process exits; returns the address it listens on.
pub async fn start() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(echo))
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Reads the whole body before answering, as berth does for a small
/// response (it holds output back to pick the status), so neither side
/// gets a streaming head start.
async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match req.into_body().collect().await {
        Ok(body) => Response::new(Full::new(body.to_bytes())),
        Err(_) => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            resp
        }
    })
}
