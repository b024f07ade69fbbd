//! The wire below the JSON: when a connection is given up, where
//! `Server-Timing` goes, and whether the OpenAPI document describes the
//! routes that exist.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::http::Version;

use super::*;

/// A body that sends `first` and then never ends, declared `len` long: a
/// server that waited for it would hang the test.
fn stalled(first: &'static str, len: u64) -> (Body, u64) {
    let once = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(first)) });
    (
        Body::from_stream(once.chain(futures::stream::pending())),
        len,
    )
}

fn with_body(
    method: Method,
    path: &str,
    auth: Option<&str>,
    content_type: Option<&str>,
    (body, len): (Body, u64),
) -> Request<Body> {
    let mut req = request(
        method,
        path,
        auth.map(bearer).as_deref(),
        content_type,
        body,
    );
    req.headers_mut()
        .insert(header::CONTENT_LENGTH, len.to_string().parse().unwrap());
    req
}

#[tokio::test]
async fn answers_given_without_reading_the_body_close_the_connection() {
    let h = harness(false).await;
    h.deploy("up", upper()).await;
    h.deploy(
        "ignores-stdin",
        json!({"image": "img", "command": ["fail", "0"]}),
    )
    .await;
    let cases = [
        (
            "declared over the body limit",
            with_body(
                Method::POST,
                "/v1/functions/up/invoke",
                Some(KEY),
                None,
                stalled("x", 1 << 40),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "async, declared over the body limit",
            with_body(
                Method::POST,
                "/v1/functions/up/tasks",
                Some(KEY),
                None,
                stalled("x", 1 << 40),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "no key",
            with_body(
                Method::POST,
                "/v1/functions/up/invoke",
                None,
                None,
                stalled("x", 100),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no such function",
            with_body(
                Method::POST,
                "/v1/functions/nope/invoke",
                Some(KEY),
                None,
                stalled("x", 100),
            ),
            StatusCode::NOT_FOUND,
        ),
        (
            "not JSON",
            with_body(
                Method::PUT,
                "/v1/functions/f",
                Some(KEY),
                Some("text/plain"),
                stalled("x", 100),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "no such endpoint",
            with_body(Method::POST, "/nope", None, None, stalled("x", 100)),
            StatusCode::NOT_FOUND,
        ),
        (
            "wrong method",
            with_body(Method::POST, "/healthz", None, None, stalled("x", 100)),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (what, req, status) in cases {
        let resp = tokio::time::timeout(PATIENCE, send(&h.app, req))
            .await
            .unwrap_or_else(|_| panic!("{what}: waited for the body"));
        assert_eq!(resp.status(), status, "{what}");
        assert_eq!(
            resp.headers().get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"close"[..]),
            "{what}"
        );
    }

    // A function that exits without reading its stdin succeeds, and its
    // caller's body stays unread all the same.
    let req = with_body(
        Method::POST,
        "/v1/functions/ignores-stdin/invoke",
        Some(KEY),
        None,
        (Body::from(vec![b'z'; 100_000]), 100_000),
    );
    let r = collect(send(&h.app, req).await).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
}

/// A body of `chunks` pieces that records how many were read and when it
/// was dropped.
struct Counted {
    left: usize,
    read: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl futures::Stream for Counted {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        self.read.fetch_add(1, Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok(Bytes::from_static(&[b'x'; 1024]))))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn an_abandoned_body_is_drained_unless_the_client_awaits_100_continue() {
    let h = harness(false).await;
    h.deploy("up", upper()).await;
    for expect_continue in [false, true] {
        let (read, dropped) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let body = Body::from_stream(Counted {
            left: 3,
            read: Arc::clone(&read),
            dropped: Arc::clone(&dropped),
        });
        let mut req = with_body(
            Method::POST,
            "/v1/functions/up/invoke",
            Some(KEY),
            None,
            (body, 1 << 40),
        );
        if expect_continue {
            req.headers_mut()
                .insert(header::EXPECT, "100-continue".parse().unwrap());
        }
        let r = collect(send(&h.app, req).await).await;
        check(&r, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
        assert_eq!(r.header("connection"), Some("close"));
        if expect_continue {
            // Never asked for, so never read: the client sends nothing
            // until told to, and is told no.
            assert!(dropped.load(Ordering::SeqCst));
            assert_eq!(read.load(Ordering::SeqCst), 0);
        } else {
            // Read to its end in the background, so a client still
            // sending it is not cut off before it sees the answer.
            wait_until("the body to be drained", || {
                dropped.load(Ordering::SeqCst).then_some(())
            })
            .await;
            assert_eq!(read.load(Ordering::SeqCst), 3);
        }
    }
}

/// A body its handler lets go of only after the answer went out (a
/// streamed answer whose function stopped reading) is drained too: read to
/// its end, the connection can stay open, as that answer promised.
#[tokio::test]
async fn a_body_let_go_of_after_the_answer_is_drained() {
    let (handed_tx, mut handed) = tokio::sync::mpsc::unbounded_channel::<Body>();
    let app = Router::new()
        .route(
            "/",
            axum::routing::post(move |body: Body| {
                let handed_tx = handed_tx.clone();
                async move {
                    let _ = handed_tx.send(body);
                    "streaming"
                }
            }),
        )
        .layer(axum::middleware::from_fn(
            crate::connection::close_if_body_unread,
        ));
    let (read, dropped) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let body = Body::from_stream(Counted {
        left: 3,
        read: Arc::clone(&read),
        dropped: Arc::clone(&dropped),
    });
    let req = with_body(Method::POST, "/", None, None, (body, 3 * 1024));
    let r = collect(send(&app, req).await).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("connection"), None, "the body may yet be read");
    drop(handed.recv().await.expect("the handler's body"));
    wait_until("the body to be drained", || {
        dropped.load(Ordering::SeqCst).then_some(())
    })
    .await;
    assert_eq!(read.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn answers_after_the_body_was_read_keep_the_connection() {
    let h = harness(true).await;
    h.deploy("up", upper()).await;
    let sized = |body: &'static str| (Body::from(body), body.len() as u64);
    let json = Some("application/json");
    let cases = [
        (
            Method::POST,
            "/v1/functions/up/invoke",
            None,
            sized("hello"),
        ),
        (Method::POST, "/v1/functions/up/tasks", None, sized("hello")),
        // An error, but only once the whole body was read.
        (
            Method::PUT,
            "/v1/functions/bad",
            json,
            sized(r#"{"image": "img", "memory_mb": 0}"#),
        ),
        (
            Method::PUT,
            "/v1/functions/up",
            json,
            sized(r#"{"image": "img", "command": ["echo-upper"]}"#),
        ),
    ];
    for (method, path, content_type, body) in cases {
        let req = with_body(method.clone(), path, Some(KEY), content_type, body);
        let r = collect(send(&h.app, req).await).await;
        assert!(r.status.as_u16() < 500, "{method} {path}: {}", r.text());
        assert_eq!(
            r.header("connection"),
            None,
            "{method} {path}: {}",
            r.text()
        );
    }
    // No body, nothing left unread, whatever the answer.
    assert_eq!(h.get("/v1/functions/nope").await.header("connection"), None);
}

async fn invoke_up(
    h: &Harness,
    input: Vec<u8>,
    version: Version,
    te: Option<&str>,
) -> Response<Body> {
    let mut req = request(
        Method::POST,
        "/v1/functions/up/invoke",
        Some(&bearer(KEY)),
        None,
        input,
    );
    *req.version_mut() = version;
    if let Some(te) = te {
        req.headers_mut().insert(header::TE, te.parse().unwrap());
    }
    send(&h.app, req).await
}

fn assert_timing(value: Option<&axum::http::HeaderValue>, what: &str) {
    let value = value.unwrap_or_else(|| panic!("{what}: no server-timing"));
    let value = value.to_str().unwrap();
    assert!(value.contains("run;dur="), "{what}: {value}");
}

#[tokio::test]
async fn server_timing_is_a_header_or_a_trailer_by_where_the_answer_ends() {
    let h = harness(false).await;
    h.deploy("up", upper()).await;
    let big = vec![b'a'; 1024 * 1024];

    // Within the decision window: a header, no trailer.
    let resp = invoke_up(&h, b"small".to_vec(), Version::HTTP_11, Some("trailers")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_timing(resp.headers().get("server-timing"), "small answer");
    assert_eq!(resp.headers().get(header::TRAILER), None);
    let body = resp.into_body().collect().await.unwrap();
    assert!(body.trailers().is_none());

    // Streamed, to callers that accept trailers: announced, then sent
    // after the last byte.
    for (version, te) in [
        (Version::HTTP_11, Some("trailers")),
        (Version::HTTP_11, Some("gzip, Trailers")),
        (Version::HTTP_2, None),
    ] {
        let what = format!("{version:?} TE {te:?}");
        let resp = invoke_up(&h, big.clone(), version, te).await;
        assert_eq!(resp.status(), StatusCode::OK, "{what}");
        assert_eq!(resp.headers().get("server-timing"), None, "{what}");
        assert_eq!(
            resp.headers().get(header::TRAILER).map(|v| v.as_bytes()),
            Some(&b"server-timing"[..]),
            "{what}"
        );
        let body = resp.into_body().collect().await.unwrap();
        assert_timing(body.trailers().and_then(|t| t.get("server-timing")), &what);
        assert_eq!(body.to_bytes().len(), big.len(), "{what}");
    }

    // Streamed to an HTTP/1.1 caller that did not ask: nothing announced.
    let resp = invoke_up(&h, big.clone(), Version::HTTP_11, None).await;
    assert_eq!(resp.headers().get(header::TRAILER), None);
    let body = resp.into_body().collect().await.unwrap();
    assert!(body.trailers().is_none());
    assert_eq!(body.to_bytes().len(), big.len());
}

#[tokio::test]
async fn an_inline_task_answer_carries_server_timing() {
    let h = harness(true).await;
    h.deploy("up", upper()).await;
    let resp = send(
        &h.app,
        Request::builder()
            .method(Method::POST)
            .uri("/v1/functions/up/tasks")
            .header(header::AUTHORIZATION, bearer(KEY))
            .header("prefer", "wait=10")
            .body(Body::from("hi"))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_timing(resp.headers().get("server-timing"), "inline task answer");
}

// ---------------------------------------------------------------------------
// The OpenAPI document against the router
// ---------------------------------------------------------------------------

/// Every operation of the document: (method, path template, operation).
fn operations() -> Vec<(Method, String, Value)> {
    let doc = serde_json::to_value(crate::document()).unwrap();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            out.push((method, path.clone(), op.clone()));
        }
    }
    out
}

#[test]
fn operation_ids_are_unique() {
    let mut seen = HashSet::new();
    for (method, path, op) in operations() {
        let id = op["operationId"].as_str().unwrap_or_default().to_owned();
        assert!(!id.is_empty(), "{method} {path} has no operationId");
        assert!(seen.insert(id.clone()), "{method} {path}: {id} is taken");
    }
}

/// What needs a key: every `/v1` operation, and the metrics.
fn behind_a_key(path: &str) -> bool {
    path.starts_with("/v1/") || path == "/metrics"
}

#[test]
fn every_operation_behind_a_key_documents_401() {
    for (method, path, op) in operations() {
        let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
        assert_eq!(secured, behind_a_key(&path), "{method} {path}");
        if secured {
            assert!(
                op["responses"]["401"].is_object(),
                "{method} {path} does not document 401"
            );
        }
    }
}

/// Each documented operation is a route: without a key, one behind a key
/// gets the auth layer's 401 (which only matched routes reach), the
/// others their own answer; never the fallbacks' 404 or 405.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let h = harness(false).await;
    let ops = operations();
    assert!(ops.len() >= 22, "{} operations", ops.len());
    for (method, path, _) in ops {
        let concrete = path
            .replace("{name}", "f")
            .replace("{id}", "t")
            .replace("{path}", "a/b");
        let r = call(&h.app, method.clone(), &concrete, None, None, ()).await;
        let expected = if behind_a_key(&path) {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        };
        assert_eq!(r.status, expected, "{method} {path}: {}", r.text());
    }
}
