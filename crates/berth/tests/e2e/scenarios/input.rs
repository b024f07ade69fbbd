//! Scenarios 3, 4 and 7: oversized bodies, malformed JSON and bad
//! pagination get clear errors and change nothing.

use berth_client::TaskQuery;
use berth_contract::QuotaOverrides;
use futures::StreamExt;
use reqwest::{Method, StatusCode};

use crate::harness::{PATIENCE, Server, error_code, sh};

/// Files under the server's task payload directory: what an accepted or
/// half-accepted task leaves on disk.
fn payload_files(server: &Server) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| {
                        let p = e.path();
                        if p.is_dir() { walk(&p) } else { 1 }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&server.data_dir().join("tasks"))
}

async fn task_count(server: &Server) -> usize {
    let all = TaskQuery {
        limit: Some(1000),
        ..Default::default()
    };
    server.tasks(&all).await.tasks.len()
}

/// A body that sends one piece and then nothing, ever: a server that
/// waited to buffer it would never answer.
fn stalled_body() -> reqwest::Body {
    let first = futures::stream::once(async { Ok::<_, std::io::Error>(vec![b'x'; 64 * 1024]) });
    reqwest::Body::wrap_stream(first.chain(futures::stream::pending()))
}

#[tokio::test(flavor = "multi_thread")]
async fn s03_body_over_the_limit_is_413_before_it_is_buffered() {
    let server = Server::start_with(&["--quota-body-bytes", "1048576"]).await;
    server.deploy("sink", &sh("wc -c")).await;
    let before = (task_count(&server).await, payload_files(&server));

    for path in ["/v1/functions/sink/tasks", "/v1/functions/sink/invoke"] {
        // Declared too large: answered at once, while the body is still
        // unsent; a server buffering it first would hang here.
        let resp = tokio::time::timeout(
            PATIENCE,
            server
                .req(Method::POST, path)
                .header("content-length", (1u64 << 30).to_string())
                .body(stalled_body())
                .send(),
        )
        .await
        .expect("answered without reading the body")
        .expect("response");
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let body = resp.bytes().await.unwrap();
        assert_eq!(error_code(&body), "body_too_large", "{path}");
        assert!(String::from_utf8_lossy(&body).contains("1048576"), "{path}");
    }
    // Not declared (chunked): cut off as soon as it passes the limit.
    let chunks =
        futures::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 64 * 1024])));
    let resp = server
        .req(Method::POST, "/v1/functions/sink/tasks")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&resp.bytes().await.unwrap()), "body_too_large");

    // Nothing was enqueued and no input file was left behind.
    assert_eq!((task_count(&server).await, payload_files(&server)), before);
    // A body within the limit still works.
    let (status, _, body) = server.invoke("sink", "", vec![b'z'; 1000]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(String::from_utf8_lossy(&body).trim(), "1000");
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn s04_malformed_json_wrong_type_bad_utf8_and_deep_nesting_are_refused() {
    let server = Server::start().await;
    let json_put = |path: &str, body: Vec<u8>| {
        server
            .req(Method::PUT, path)
            .header("content-type", "application/json")
            .body(body)
    };
    let json_post = |path: &str, body: Vec<u8>| {
        server
            .req(Method::POST, path)
            .header("content-type", "application/json")
            .body(body)
    };
    let invalid_utf8 = b"{\"image\": \"busy\xff\xfebox\"}".to_vec();
    let deep = "[".repeat(100_000).into_bytes();
    let deep_object = format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000)).into_bytes();
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "truncated JSON",
            json_put("/v1/functions/f", b"{\"image\": ".to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "trailing garbage",
            json_put("/v1/functions/f", b"{\"image\": \"x\"} x".to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "wrong types",
            json_put("/v1/functions/f", b"{\"image\": 7}".to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "invalid UTF-8",
            json_put("/v1/functions/f", invalid_utf8.clone()),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "deeply nested array",
            json_put("/v1/functions/f", deep.clone()),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "deeply nested object",
            json_put("/v1/functions/f", deep_object),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "no content type",
            server
                .req(Method::PUT, "/v1/functions/f")
                .body(r#"{"image":"x"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "text content type",
            server
                .req(Method::PUT, "/v1/functions/f")
                .header("content-type", "text/plain")
                .body(r#"{"image":"x"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "tenant: invalid UTF-8",
            json_post("/v1/tenants", b"{\"name\": \"a\xff\"}".to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "tenant: deep nesting",
            json_post("/v1/tenants", deep),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "tenant: form instead of JSON",
            server
                .req(Method::POST, "/v1/tenants")
                .header("content-type", "application/x-www-form-urlencoded")
                .body("name=a"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "quotas: malformed",
            json_put(
                "/v1/tenants/admin/quotas",
                b"{\"max_memory_mb\": -1}".to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ];
    for (what, req, status, code) in cases {
        let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let got = resp.status();
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        let body = resp.bytes().await.unwrap();
        assert_eq!(got, status, "{what}: {}", String::from_utf8_lossy(&body));
        assert!(ct.starts_with("application/json"), "{what}: {ct}");
        assert_eq!(error_code(&body), code, "{what}");
    }
    // Nothing was created or changed.
    let functions = server.functions().await.functions;
    assert!(functions.is_empty(), "{functions:?}");
    let tenants = server.client().tenants().await.expect("tenants").tenants;
    assert_eq!(tenants.len(), 1, "{tenants:?}");
    assert_eq!(tenants[0].overrides, QuotaOverrides::default());
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn s07_pagination_limits_that_are_huge_negative_or_text_are_400() {
    let server = Server::start().await;
    server.deploy("p", &sh("cat")).await;
    for _ in 0..3 {
        server.invoke("p", "", "x").await;
    }
    for query in [
        "limit=1000000000000",
        "limit=-1",
        "limit=0",
        "limit=ten",
        "limit=1.5",
        "limit=",
        "cursor=abc",
        "cursor=-5",
        "status=exploded",
        "colour=blue",
    ] {
        let resp = server
            .req(Method::GET, &format!("/v1/tasks?{query}"))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(error_code(&body), "bad_request", "{query}");
    }
    // The pages still walk as they should.
    let mut query = TaskQuery {
        limit: Some(2),
        ..Default::default()
    };
    let page = server.tasks(&query).await;
    assert_eq!(page.tasks.len(), 2);
    query.cursor = Some(page.next_cursor.expect("a next page"));
    let rest = server.tasks(&query).await;
    assert_eq!(rest.tasks.len(), 1);
    server.assert_no_panic();
}
