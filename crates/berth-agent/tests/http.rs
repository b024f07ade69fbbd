//! http mode, end to end: the real agent binary in front of a real HTTP
//! server.
//!
//! The server is this crate's `berth-echo-http` bin, enabled for tests by
//! the `echo-http` feature (see Cargo.toml). A bin, unlike an example, is
//! built before the tests run and its path is known at compile time, so the
//! tests need nothing outside the crate; the feature keeps it out of the
//! product.

mod common;

use std::time::Duration;

use berth_agent::protocol::RequestHead;
use common::{Agent, Noise, free_port, head, run};
use sha2::{Digest, Sha256};

const ECHO: &str = env!("CARGO_BIN_EXE_berth-echo-http");
const TIMEOUT: u64 = 60_000;

async fn echo_agent(env: &[(&str, &str)]) -> Agent {
    let port = free_port().to_string();
    Agent::start(&["--mode", "http", "--port", &port], &[ECHO], env).await
}

fn request(method: &str, path: &str, query: &str) -> RequestHead {
    RequestHead {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        ..head(TIMEOUT)
    }
}

#[tokio::test]
async fn waits_for_the_server_then_proxies_a_request() {
    // The server takes a while to listen; the socket must not appear
    // before it does, so the first request after it appears succeeds.
    let agent = echo_agent(&[("ECHO_STARTUP_DELAY_MS", "500")]).await;
    let head = RequestHead {
        headers: vec![
            ("x-test".into(), "hello header".into()),
            ("content-type".into(), "text/plain".into()),
            ("connection".into(), "x-test-private".into()),
            ("x-test-private".into(), "dropped".into()),
        ],
        ..request("POST", "/echo/path", "a=1&b=two")
    };
    let outcome = run(&agent.socket, head, b"request body").await;
    let http = outcome.http.as_ref().expect("no response head");
    assert_eq!(http.status, 200);
    assert_eq!(outcome.header("x-echo-test"), Some("hello header"));
    assert_eq!(outcome.header("x-echo-method"), Some("POST"));
    assert_eq!(outcome.header("x-echo-uri"), Some("/echo/path?a=1&b=two"));
    assert_eq!(outcome.stdout_text(), "request body");
    assert_eq!(outcome.exit.exit_code, Some(0));
    assert!(outcome.exit.error.is_none());
    assert!(outcome.exit.peak_memory_bytes.unwrap() > 0);
}

#[tokio::test]
async fn state_persists_across_requests() {
    let agent = echo_agent(&[]).await;
    let first = run(&agent.socket, request("GET", "/", ""), b"").await;
    let second = run(&agent.socket, request("GET", "/", ""), b"").await;
    assert_eq!(first.header("x-echo-count"), Some("1"));
    assert_eq!(second.header("x-echo-count"), Some("2"));
    assert_eq!(first.header("x-echo-pid"), second.header("x-echo-pid"));
    let concurrent = (0..10).map(|_| run(&agent.socket, request("GET", "/", ""), b""));
    let mut counts: Vec<u64> = futures::future::join_all(concurrent)
        .await
        .iter()
        .map(|o| o.header("x-echo-count").unwrap().parse().unwrap())
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, (3..=12).collect::<Vec<_>>());
}

#[tokio::test]
async fn status_and_large_bodies_pass_through() {
    let agent = echo_agent(&[]).await;
    let teapot = run(&agent.socket, request("GET", "/status/418", ""), b"").await;
    assert_eq!(teapot.http.as_ref().unwrap().status, 418);
    assert_eq!(teapot.exit.exit_code, Some(0));

    let body: Vec<u8> = Noise::new(3).chunk(8 * 1024 * 1024).to_vec();
    let outcome = run(&agent.socket, request("PUT", "/big", ""), &body).await;
    assert_eq!(outcome.stdout.len(), body.len());
    assert_eq!(Sha256::digest(&outcome.stdout), Sha256::digest(&body));
}

#[tokio::test]
async fn timeout_is_reported() {
    let agent = echo_agent(&[]).await;
    let outcome = run(
        &agent.socket,
        RequestHead {
            timeout_ms: 300,
            ..request("GET", "/sleep", "")
        },
        b"",
    )
    .await;
    assert!(outcome.exit.timed_out, "{:?}", outcome.exit);
    // The server is unharmed.
    let next = run(&agent.socket, request("GET", "/", ""), b"").await;
    assert_eq!(next.http.unwrap().status, 200);
}

#[tokio::test]
async fn cpu_time_is_the_servers_during_the_request() {
    let agent = echo_agent(&[]).await;
    let outcome = run(&agent.socket, request("GET", "/burn", "ms=300"), b"").await;
    let cpu_ms = outcome.exit.cpu_ms.unwrap();
    assert!(cpu_ms >= 100, "cpu {cpu_ms} ms");
    let idle = run(&agent.socket, request("GET", "/", ""), b"").await;
    assert!(idle.exit.cpu_ms.unwrap() < 50, "{:?}", idle.exit);
}

#[tokio::test]
async fn bad_heads_are_errors_not_crashes() {
    let agent = echo_agent(&[]).await;
    let outcome = run(&agent.socket, request("GET", "no-slash", ""), b"").await;
    assert!(outcome.exit.error.unwrap().contains("invalid path"));
    let outcome = run(&agent.socket, request("GET", "/", ""), b"").await;
    assert_eq!(outcome.http.unwrap().status, 200);
}

#[tokio::test]
async fn server_crash_fails_the_request_and_ends_the_agent() {
    let mut agent = echo_agent(&[]).await;
    let outcome = run(&agent.socket, request("GET", "/crash", ""), b"").await;
    assert!(outcome.exit.error.is_some(), "{:?}", outcome.exit);
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("the agent outlived its server");
    assert!(!status.success(), "{status:?}");
    assert!(!agent.socket.exists());
}

#[tokio::test]
async fn server_exiting_before_ready_ends_the_agent() {
    let mut agent = Agent::spawn(
        &["--mode", "http", "--port", &free_port().to_string()],
        &["/bin/sh", "-c", "exit 7"],
        &[],
    );
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("the agent outlived its server");
    assert!(!status.success(), "{status:?}");
    assert!(!agent.socket.exists());
}

#[tokio::test]
async fn server_that_never_listens_times_out() {
    let mut agent = Agent::spawn(
        &[
            "--mode",
            "http",
            "--port",
            &free_port().to_string(),
            "--ready-timeout-ms",
            "300",
        ],
        &["/bin/sleep", "30"],
        &[],
    );
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("the agent kept waiting");
    assert!(!status.success());
    assert!(!agent.socket.exists());
}

#[tokio::test]
async fn sigterm_is_forwarded_to_the_server() {
    let mut agent = echo_agent(&[]).await;
    let first = run(&agent.socket, request("GET", "/", ""), b"").await;
    let server: u32 = first.header("x-echo-pid").unwrap().parse().unwrap();
    let agent_pid = rustix::process::Pid::from_raw(agent.pid() as i32).unwrap();
    rustix::process::kill_process(agent_pid, rustix::process::Signal::TERM).unwrap();
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("the agent kept running");
    // The server died of the forwarded SIGTERM: 128 + 15.
    assert_eq!(status.code(), Some(143));
    assert!(common::process_gone(server, Duration::from_secs(5)).await);
}
