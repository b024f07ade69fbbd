use berth_contract::{ErrorCode, FunctionConfig, Mode, TaskKind, TaskStatus};
use reqwest::StatusCode;

use crate::harness::{
    Server, api_error, assert_no_containers, error_code, post_hashed, sh, task_id, write_filler,
};

/// 200 MB through a `cat` function with the real curl: the bytes come back
/// identical and the server never holds them: its peak RSS stays small.
#[tokio::test(flavor = "multi_thread")]
async fn large_body_streams_through_with_bounded_memory() {
    let server = Server::start().await;
    server.deploy("cat", &sh("exec cat")).await;

    const SIZE: usize = 200 * 1000 * 1000;
    let input = server.data_dir().join("input.bin");
    let expected = write_filler(&input, SIZE);
    let before = server.peak_rss_kib();

    let url = format!("{}/v1/functions/cat/invoke", server.url);
    let (hash, n) = post_hashed(&url, &server.key, &input).await;
    assert_eq!(n, SIZE, "byte count");
    assert_eq!(hash, expected, "output differs from input");

    let peak = server.peak_rss_kib();
    eprintln!("server peak RSS: {before} KiB before, {peak} KiB after 200 MB");
    assert!(
        peak < 150 * 1024,
        "server peak RSS {peak} KiB is over 150 MiB"
    );
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn function_sees_a_cgi_request() {
    let server = Server::start().await;
    let env = FunctionConfig {
        env: [("GREETING".to_owned(), "hi".to_owned())].into(),
        ..sh("env | sort; echo; cat")
    };
    server.deploy("env", &env).await;
    let resp = server
        .req(
            reqwest::Method::POST,
            "/v1/functions/env/invoke?op=thumbnail&w=128",
        )
        .header("Content-Type", "image/jpeg")
        .header("X-Trace-Id", "abc-123")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let task_id = task_id(resp.headers());
    assert_eq!(resp.headers()["x-berth-version"], "1");
    let text = resp.text().await.unwrap();
    for line in [
        "REQUEST_METHOD=POST",
        "QUERY_STRING=op=thumbnail&w=128",
        "CONTENT_TYPE=image/jpeg",
        "CONTENT_LENGTH=7",
        "HTTP_X_TRACE_ID=abc-123",
        "GATEWAY_INTERFACE=CGI/1.1",
        "GREETING=hi",
        &format!("BERTH_TASK_ID={task_id}"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(
        !text.contains(&server.key),
        "the API key leaked into the function"
    );
    assert!(text.ends_with("\npayload"), "stdin not delivered: {text}");

    let task = server.task(&task_id).await;
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert_eq!(task.kind, TaskKind::Sync);
    assert_eq!(task.exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_function_is_502_with_exit_code_and_stderr_tail() {
    let server = Server::start().await;
    server
        .deploy(
            "fails",
            &sh(
                "cat >/dev/null; i=0; while [ $i -lt 500 ]; do echo noise $i >&2; i=$((i+1)); done; echo 'disk on fire' >&2; exit 42",
            ),
        )
        .await;
    let (status, headers, body) = server.invoke("fails", "", "input").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let err = api_error(&body);
    assert_eq!(err.code, "function_failed");
    assert_eq!(err.exit_code, Some(42));
    let stderr = err.stderr.as_deref().unwrap();
    assert!(stderr.ends_with("disk on fire"), "{stderr}");
    assert!(
        stderr.len() <= 2048,
        "the tail is bounded, got {} bytes",
        stderr.len()
    );

    let id = task_id(&headers);
    let task = server.task(&id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.exit_code, Some(42));
    assert_eq!(task.error.map(|e| e.code), Some(ErrorCode::Exit));
    let logs = server.logs(&id).await;
    assert!(
        logs.starts_with("noise 0\n") && logs.ends_with("disk on fire\n"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_is_504_and_leaves_no_container() {
    let server = Server::start().await;
    let sleepy = FunctionConfig {
        timeout_secs: 1,
        mode: Mode::Fresh,
        ..sh("sleep 600")
    };
    server.deploy("sleepy", &sleepy).await;
    let (status, headers, body) = server.invoke("sleepy", "", "").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_code(&body), "timeout");
    let id = task_id(&headers);
    assert_no_containers(&format!("dev.berth.task={id}")).await;
    assert_eq!(server.task(&id).await.status, TaskStatus::TimedOut);
    // The slot is free again: the next call runs.
    server.deploy("quick", &sh("echo ok")).await;
    let (status, _, body) = server.invoke("quick", "", "").await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok\n"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_pin_config_and_each_call_names_its_version() {
    let server = Server::start().await;
    let v1 = server.deploy("greet", &sh("echo one")).await;
    assert_eq!(v1.version, 1);
    let again = server.deploy("greet", &sh("echo one")).await;
    assert_eq!(again.version, 1, "an identical deploy makes no version");
    let v2 = server.deploy("greet", &sh("echo two")).await;
    assert_eq!(v2.version, 2);
    let (status, headers, body) = server.invoke("greet", "", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"two\n");
    assert_eq!(headers["x-berth-version"], "2");
    let f = server.function("greet").await;
    let versions = f.versions.unwrap();
    assert_eq!(versions.len(), 2);
    assert!(versions[0].image_id.starts_with("sha256:"));
}
