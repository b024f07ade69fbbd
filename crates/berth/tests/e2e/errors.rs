use berth_client::TaskQuery;
use reqwest::StatusCode;

use crate::harness::{Server, error_code, sh};

/// One line per bad request: what is sent, the status and error code that
/// must come back. None may change state or bring the server down.
#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_json_errors() {
    let server = Server::start().await;
    server.deploy("ok", &sh("cat")).await;
    let url = |p: &str| format!("{}{p}", server.url);
    let http = reqwest::Client::new();
    let key = server.key.clone();
    let json_put = |path: &str, body: &'static str| {
        http.put(url(path))
            .bearer_auth(&key)
            .header("Content-Type", "application/json")
            .body(body)
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "no key",
            http.get(url("/v1/functions")),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "wrong key",
            http.get(url("/v1/functions"))
                .bearer_auth("berth_not-a-key"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "basic auth",
            http.get(url("/v1/functions"))
                .basic_auth("admin", Some(&key)),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "unknown function",
            http.post(url("/v1/functions/nope/invoke"))
                .bearer_auth(&key),
            StatusCode::NOT_FOUND,
            "function_not_found",
        ),
        (
            "unknown function, async",
            http.post(url("/v1/functions/nope/tasks")).bearer_auth(&key),
            StatusCode::NOT_FOUND,
            "function_not_found",
        ),
        (
            "not an object",
            json_put("/v1/functions/f", "[1,2]"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "unknown field",
            json_put("/v1/functions/f", r#"{"image":"x","imgae":"y"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "unknown image",
            json_put(
                "/v1/functions/f",
                r#"{"image":"berth-test/does-not-exist:1"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "image_not_found",
        ),
        (
            "bad name",
            json_put("/v1/functions/Bad.Name", r#"{"image":"x"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_function",
        ),
        (
            "memory out of range",
            json_put("/v1/functions/f", r#"{"image":"x","memory_mb":1}"#),
            StatusCode::BAD_REQUEST,
            "invalid_function",
        ),
        (
            "unknown task",
            http.get(url("/v1/tasks/0190c8e4-5b4a-7c9e-8f00-000000000000"))
                .bearer_auth(&key),
            StatusCode::NOT_FOUND,
            "task_not_found",
        ),
        (
            "malformed task id",
            http.get(url("/v1/tasks/..%2f..%2fetc")).bearer_auth(&key),
            StatusCode::NOT_FOUND,
            "task_not_found",
        ),
        (
            "no such endpoint",
            http.get(url("/v1/nothing")).bearer_auth(&key),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (what, req, status, code) in cases {
        let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let got = resp.status();
        let body = resp.bytes().await.unwrap();
        assert_eq!(got, status, "{what}: {}", String::from_utf8_lossy(&body));
        assert_eq!(error_code(&body), code, "{what}");
    }

    // Nothing was created by any of it.
    let list = server.functions().await;
    let names: Vec<_> = list.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["ok"]);
    let tasks = server.tasks(&TaskQuery::default()).await;
    assert_eq!(tasks.tasks.len(), 0);
    server.assert_no_panic();
}
