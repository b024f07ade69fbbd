//! Behaviour tests of the HTTP API. Requests go through the real router
//! (`tower::ServiceExt::oneshot`, no sockets) over a real in-memory SQLite
//! store and real payload files; only the container engine is faked, by
//! the scheduler's test support (the executor crate's scripted fake: see
//! `berth_executor::testing` for what each `command` does).
//!
//! Waiting loops below are liveness bounds (they fail a hung test), never
//! timing assertions.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, header};
use berth_core::TaskId;
use berth_scheduler::Config;
use berth_scheduler::testing::{Exit, FakeExecutor, Manager, RunSpec, image_id};
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{AppState, router};

const KEY: &str = "berth_test_admin_key_0123456789";
const OTHER_KEY: &str = "berth_test_other_tenant_key_9876543210";
/// Liveness bound for anything the tests wait for.
const PATIENCE: Duration = Duration::from_secs(10);

struct Harness {
    app: Router,
    manager: Manager,
}

impl Harness {
    fn fake(&self) -> &FakeExecutor {
        self.manager.fake()
    }
}

/// A fresh API over a fresh store. Without `background` nothing claims
/// async tasks, so they stay queued: handy for deterministic queue tests.
async fn harness(background: bool) -> Harness {
    let manager = Manager::new(Config {
        poll_interval: Duration::from_millis(50),
        upload_idle_timeout: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    manager.add_key("admin", KEY).await;
    manager.add_key("other", OTHER_KEY).await;
    if background {
        manager.start_background();
    }
    Harness {
        app: router(AppState {
            tasks: manager.tasks.clone(),
        }),
        manager,
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// A request; `auth` is the whole Authorization header value.
fn request(
    method: Method,
    path: &str,
    auth: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        b = b.header(header::AUTHORIZATION, a);
    }
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    b.body(body.into()).expect("valid request")
}

async fn send(app: &Router, req: Request<Body>) -> Response<Body> {
    app.clone()
        .oneshot(req)
        .await
        .expect("the router never fails")
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn collect(resp: Response<Body>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn call(
    app: &Router,
    method: Method,
    path: &str,
    auth: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Reply {
    collect(send(app, request(method, path, auth, content_type, body)).await).await
}

/// Asserts an API error: status, JSON content type, `error.code`, and a
/// message. Returns the body for further checks.
#[track_caller]
fn check(r: &Reply, status: StatusCode, code: &str) -> Value {
    assert_eq!(r.status, status, "body: {}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "body: {v}");
    assert!(v["error"]["message"].is_string(), "body: {v}");
    v
}

impl Harness {
    async fn get(&self, path: &str) -> Reply {
        self.get_as(KEY, path).await
    }

    async fn get_as(&self, key: &str, path: &str) -> Reply {
        call(&self.app, Method::GET, path, Some(&bearer(key)), None, ()).await
    }

    async fn delete(&self, path: &str) -> Reply {
        call(
            &self.app,
            Method::DELETE,
            path,
            Some(&bearer(KEY)),
            None,
            (),
        )
        .await
    }

    async fn put_json(&self, path: &str, body: impl Into<Body>) -> Reply {
        self.put_json_as(KEY, path, body).await
    }

    async fn put_json_as(&self, key: &str, path: &str, body: impl Into<Body>) -> Reply {
        call(
            &self.app,
            Method::PUT,
            path,
            Some(&bearer(key)),
            Some("application/json"),
            body,
        )
        .await
    }

    async fn post(&self, path: &str, body: impl Into<Body>) -> Reply {
        call(
            &self.app,
            Method::POST,
            path,
            Some(&bearer(KEY)),
            None,
            body,
        )
        .await
    }

    /// Deploys a function and asserts that it worked.
    async fn deploy(&self, name: &str, config: Value) -> Value {
        let r = self
            .put_json(&format!("/v1/functions/{name}"), config.to_string())
            .await;
        assert!(
            r.status == StatusCode::CREATED || r.status == StatusCode::OK,
            "deploy {name}: {} {}",
            r.status,
            r.text()
        );
        r.json()
    }

    /// Submits an async task and returns its id.
    async fn submit(&self, function: &str, body: &'static str) -> String {
        let r = self
            .post(&format!("/v1/functions/{function}/tasks"), body)
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
        r.json()["id"].as_str().expect("task id").to_owned()
    }

    async fn task(&self, id: &str) -> Value {
        let r = self.get(&format!("/v1/tasks/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    }

    /// Polls a task until its status satisfies `done` (liveness-bounded).
    async fn wait_task(&self, id: &str, done: impl Fn(&str) -> bool) -> Value {
        let give_up = Instant::now() + PATIENCE;
        loop {
            let t = self.task(id).await;
            if done(t["status"].as_str().unwrap_or_default()) {
                return t;
            }
            assert!(Instant::now() < give_up, "task never got there: {t}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_terminal(&self, id: &str) -> Value {
        self.wait_task(id, |s| !matches!(s, "queued" | "running"))
            .await
    }

    /// Waits until the fake executor has started an attempt of `function`.
    async fn wait_started(&self, function: &str) -> RunSpec {
        wait_until("attempt to start", || self.fake().started_for(function)).await
    }

    /// Waits until the fake executor saw the attempt of `id` end.
    async fn wait_exit(&self, id: TaskId) -> Exit {
        wait_until("attempt to end", || self.fake().exit_of(id)).await
    }
}

async fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let give_up = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < give_up, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn upper() -> Value {
    json!({"image": "img", "command": ["echo-upper"]})
}

// ---------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------

#[tokio::test]
async fn requests_without_a_valid_key_are_refused() {
    let h = harness(false).await;
    h.deploy("up", upper()).await;
    let id = TaskId::new().to_string();

    let basic_with_key = format!("Basic {KEY}");
    let long_key = bearer(&"k".repeat(300));
    let bare_key = KEY.to_owned();
    let auths: &[(&str, Option<&str>)] = &[
        ("no header", None),
        ("wrong key", Some("Bearer not-the-key")),
        ("Basic scheme", Some("Basic YWRtaW46c2VjcmV0")),
        ("Basic scheme carrying the key", Some(&basic_with_key)),
        ("empty bearer", Some("Bearer ")),
        ("blank bearer", Some("Bearer    ")),
        ("scheme only", Some("Bearer")),
        ("key without scheme", Some(&bare_key)),
        ("oversized key", Some(&long_key)),
    ];
    let endpoints: &[(Method, String)] = &[
        (Method::GET, "/v1/functions".into()),
        (Method::GET, "/v1/functions/up".into()),
        (Method::PUT, "/v1/functions/up".into()),
        (Method::DELETE, "/v1/functions/up".into()),
        (Method::POST, "/v1/functions/up/invoke".into()),
        (Method::POST, "/v1/functions/up/tasks".into()),
        (Method::GET, "/v1/tasks".into()),
        (Method::GET, format!("/v1/tasks/{id}")),
        (Method::DELETE, format!("/v1/tasks/{id}")),
        (Method::GET, format!("/v1/tasks/{id}/output")),
        (Method::GET, format!("/v1/tasks/{id}/logs")),
    ];
    for (what, auth) in auths {
        for (method, path) in endpoints {
            let r = call(
                &h.app,
                method.clone(),
                path,
                *auth,
                Some("application/json"),
                upper().to_string(),
            )
            .await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{what}: {method} {path}: {}",
                r.text()
            );
            check(&r, StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
        }
    }

    // Nothing was run, submitted or deleted by the refused requests.
    assert!(h.fake().started().is_empty());
    assert_eq!(h.get("/v1/tasks").await.json()["tasks"], json!([]));
    assert_eq!(h.get("/v1/functions/up").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_valid_key_is_accepted_in_either_scheme_case() {
    let h = harness(false).await;
    let lower = format!("bearer {KEY}");
    let upper_scheme = bearer(KEY);
    for auth in [&upper_scheme, &lower] {
        let r = call(&h.app, Method::GET, "/v1/functions", Some(auth), None, ()).await;
        assert_eq!(r.status, StatusCode::OK, "{auth}: {}", r.text());
        assert_eq!(r.json(), json!({"functions": []}));
    }
}

#[tokio::test]
async fn health_needs_no_key() {
    let h = harness(false).await;
    let r = call(&h.app, Method::GET, "/healthz", None, None, ()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "ok\n");

    let r = call(&h.app, Method::GET, "/readyz", None, None, ()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["store"], true);
    assert_eq!(v["healthy_executors"], 1);
}

#[tokio::test]
async fn tenants_cannot_see_each_other() {
    let h = harness(false).await;
    h.deploy("hello", upper()).await;
    let r = h.post("/v1/functions/hello/invoke", "x").await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.header("x-berth-task-id").unwrap().to_owned();

    let r = h.get_as(OTHER_KEY, "/v1/functions/hello").await;
    check(&r, StatusCode::NOT_FOUND, "function_not_found");
    let r = h.get_as(OTHER_KEY, "/v1/functions").await;
    assert_eq!(r.json(), json!({"functions": []}));
    let r = h.get_as(OTHER_KEY, "/v1/tasks").await;
    assert_eq!(r.json()["tasks"], json!([]));

    // Another tenant's task answers exactly like one that does not exist.
    let unknown = TaskId::new().to_string();
    for suffix in ["", "/output", "/logs"] {
        let theirs = h
            .get_as(OTHER_KEY, &format!("/v1/tasks/{id}{suffix}"))
            .await;
        let missing = h
            .get_as(OTHER_KEY, &format!("/v1/tasks/{unknown}{suffix}"))
            .await;
        check(&theirs, StatusCode::NOT_FOUND, "task_not_found");
        assert_eq!(theirs.body, missing.body, "suffix {suffix:?}");
    }
    let r = call(
        &h.app,
        Method::DELETE,
        &format!("/v1/tasks/{id}"),
        Some(&bearer(OTHER_KEY)),
        None,
        (),
    )
    .await;
    check(&r, StatusCode::NOT_FOUND, "task_not_found");
    assert_eq!(h.task(&id).await["status"], "succeeded");

    // The same name is free for the other tenant, and independent.
    let r = h
        .put_json_as(
            OTHER_KEY,
            "/v1/functions/hello",
            json!({"image": "other"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["version"], 1);
    assert_eq!(
        h.get("/v1/functions/hello").await.json()["latest"]["image"],
        "img"
    );
}

// ---------------------------------------------------------------------------
// Functions
// ---------------------------------------------------------------------------

#[tokio::test]
async fn deploying_versions_a_function_only_when_it_changes() {
    let h = harness(false).await;
    let v1 = json!({"image": "img", "command": ["echo-upper"]});
    let v2 = json!({"image": "img", "command": ["echo-upper"], "env": {"GREETING": "hi"}});

    // (config, status, version, created_version)
    let steps = [
        (&v1, StatusCode::CREATED, 1, true),
        (&v1, StatusCode::OK, 1, false),
        (&v2, StatusCode::CREATED, 2, true),
        (&v2, StatusCode::OK, 2, false),
        (&v1, StatusCode::CREATED, 3, true),
    ];
    for (i, (config, status, version, created)) in steps.into_iter().enumerate() {
        let r = h.put_json("/v1/functions/hello", config.to_string()).await;
        assert_eq!(r.status, status, "step {i}: {}", r.text());
        let v = r.json();
        assert_eq!(v["version"], version, "step {i}: {v}");
        assert_eq!(v["created_version"], created, "step {i}: {v}");
        assert_eq!(v["name"], "hello");
        assert_eq!(v["latest_version"], version);
        assert!(v.get("versions").is_none(), "step {i}: {v}");
    }

    let r = h.get("/v1/functions/hello").await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["latest_version"], 3);
    assert_eq!(v["version_count"], 3);
    let versions: Vec<i64> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(v["versions"][1]["env"], json!({"GREETING": "hi"}));
    assert_eq!(v["versions"][0]["env"], json!({}));
    let latest = &v["latest"];
    assert_eq!(latest["image"], "img");
    assert_eq!(latest["image_id"], image_id("img"));
    assert_eq!(latest["command"], json!(["echo-upper"]));
    // Defaults are filled in and shown.
    assert_eq!(latest["cpu_millis"], 1000);
    assert_eq!(latest["memory_mb"], 256);
    assert_eq!(latest["timeout_secs"], 60);
    assert_eq!(latest["run_as_root"], false);
    assert!(latest["created_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn functions_are_listed_and_deleted() {
    let h = harness(false).await;
    for name in ["beta", "alpha", "gamma"] {
        h.deploy(name, upper()).await;
    }
    let r = h.get("/v1/functions").await;
    assert_eq!(r.status, StatusCode::OK);
    let names: Vec<String> = r.json()["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);

    let r = h.delete("/v1/functions/beta").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    for (method, path) in [
        (Method::GET, "/v1/functions/beta"),
        (Method::DELETE, "/v1/functions/beta"),
        (Method::POST, "/v1/functions/beta/invoke"),
        (Method::POST, "/v1/functions/beta/tasks"),
        (Method::GET, "/v1/functions/never-was"),
        (Method::DELETE, "/v1/functions/never-was"),
        (Method::POST, "/v1/functions/never-was/invoke"),
        (Method::POST, "/v1/functions/never-was/tasks"),
    ] {
        let r = call(&h.app, method.clone(), path, Some(&bearer(KEY)), None, "x").await;
        check(&r, StatusCode::NOT_FOUND, "function_not_found");
    }
    let names: Vec<Value> = h.get("/v1/functions").await.json()["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].clone())
        .collect();
    assert_eq!(names, [json!("alpha"), json!("gamma")]);
    assert!(h.fake().started().is_empty());

    // A re-created function keeps counting versions, so that a version
    // number never names two different definitions.
    let r = h.put_json("/v1/functions/beta", upper().to_string()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["version"], 2);
}

#[tokio::test]
async fn deleting_a_function_fails_its_queued_tasks() {
    let h = harness(false).await;
    h.deploy("doomed", upper()).await;
    let id = h.submit("doomed", "x").await;
    assert_eq!(
        h.delete("/v1/functions/doomed").await.status,
        StatusCode::NO_CONTENT
    );
    let t = h.task(&id).await;
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "function_deleted", "{t}");
}

/// (what, name, content type, body, status, code)
type BadDefinition<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    String,
    StatusCode,
    &'a str,
);

#[tokio::test]
async fn bad_function_definitions_are_refused() {
    let h = harness(false).await;
    let json_ct = Some("application/json");
    let deep = "[".repeat(10_000);
    let deep_obj = "{\"a\":".repeat(10_000);
    let cases: Vec<BadDefinition> = vec![
        (
            "malformed JSON",
            "f",
            json_ct,
            "{".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "empty body",
            "f",
            json_ct,
            String::new(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "not an object",
            "f",
            json_ct,
            "[]".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "wrong type",
            "f",
            json_ct,
            r#"{"image":5}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "missing image",
            "f",
            json_ct,
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "unknown field",
            "f",
            json_ct,
            r#"{"image":"img","imagee":"x"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "negative cpu",
            "f",
            json_ct,
            r#"{"image":"img","cpu_millis":-1}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "deeply nested arrays",
            "f",
            json_ct,
            deep,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "deeply nested objects",
            "f",
            json_ct,
            deep_obj,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "no content type",
            "f",
            None,
            upper().to_string(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "text content type",
            "f",
            Some("text/plain"),
            upper().to_string(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "json-ish but not json",
            "f",
            Some("application/jsonx"),
            upper().to_string(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "dotted name",
            "Bad.Name",
            json_ct,
            upper().to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_function",
        ),
        (
            "upper-case name",
            "Hello",
            json_ct,
            upper().to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_function",
        ),
        (
            "leading dash",
            "-x",
            json_ct,
            upper().to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_function",
        ),
        (
            "space in name",
            "a%20b",
            json_ct,
            upper().to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_function",
        ),
        (
            "64-character name",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            json_ct,
            upper().to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_function",
        ),
        (
            "cpu too low",
            "f",
            json_ct,
            r#"{"image":"img","cpu_millis":9}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_function",
        ),
        (
            "cpu too high",
            "f",
            json_ct,
            r#"{"image":"img","cpu_millis":8001}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_function",
        ),
        (
            "memory too low",
            "f",
            json_ct,
            r#"{"image":"img","memory_mb":5}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_function",
        ),
        (
            "zero timeout",
            "f",
            json_ct,
            r#"{"image":"img","timeout_secs":0}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_function",
        ),
        (
            "empty image",
            "f",
            json_ct,
            r#"{"image":" "}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_function",
        ),
        (
            "empty command",
            "f",
            json_ct,
            r#"{"image":"img","command":[]}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_function",
        ),
        (
            "reserved env",
            "f",
            json_ct,
            r#"{"image":"img","env":{"HTTP_HOST":"x"}}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_function",
        ),
        (
            "image not on the engine",
            "f",
            json_ct,
            r#"{"image":"missing"}"#.into(),
            StatusCode::BAD_REQUEST,
            "image_not_found",
        ),
    ];
    for (what, name, ct, body, status, code) in cases {
        let r = call(
            &h.app,
            Method::PUT,
            &format!("/v1/functions/{name}"),
            Some(&bearer(KEY)),
            ct,
            body,
        )
        .await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
        check(&r, status, code);
    }
    // None of them left a function behind.
    assert_eq!(
        h.get("/v1/functions").await.json(),
        json!({"functions": []})
    );
}

#[tokio::test]
async fn json_bodies_are_capped_at_one_mebibyte() {
    let h = harness(false).await;
    let limit = crate::extract::MAX_JSON_BODY;
    // A valid definition padded with whitespace to exactly the limit.
    let mut exact = upper().to_string().into_bytes();
    exact.resize(limit, b' ');
    let mut over = exact.clone();
    over.push(b' ');

    let r = h.put_json("/v1/functions/over", over).await;
    check(&r, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let r = h.put_json("/v1/functions/exact", exact).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    let r = h
        .put_json("/v1/functions/huge", vec![b'['; 8 * limit])
        .await;
    check(&r, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    // `+json` media types count as JSON.
    let r = call(
        &h.app,
        Method::PUT,
        "/v1/functions/vendor",
        Some(&bearer(KEY)),
        Some("application/vnd.berth+json; charset=utf-8"),
        upper().to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

// ---------------------------------------------------------------------------
// Sync invocation
// ---------------------------------------------------------------------------

#[tokio::test]
async fn invoke_round_trips_the_body_and_records_the_task() {
    let h = harness(false).await;
    h.deploy("up", upper()).await;
    let r = h.post("/v1/functions/up/invoke", "hello, berth").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.text(), "HELLO, BERTH");
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("x-berth-version"), Some("1"));
    let id = r
        .header("x-berth-task-id")
        .expect("task id header")
        .to_owned();
    assert!(id.parse::<TaskId>().is_ok(), "{id}");

    let t = h.task(&id).await;
    assert_eq!(t["id"], id);
    assert_eq!(t["function"], "up");
    assert_eq!(t["version"], 1);
    assert_eq!(t["kind"], "sync");
    assert_eq!(t["status"], "succeeded");
    assert_eq!(t["exit_code"], 0);
    assert_eq!(t["error"], Value::Null);
    assert_eq!(t["attempt"], 1);
    assert!(t["finished_at"].is_string(), "{t}");

    // The logs are kept; a sync call's output went to its caller.
    let r = h.get(&format!("/v1/tasks/{id}/logs")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "echo-upper: 12 bytes\n");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let r = h.get(&format!("/v1/tasks/{id}/output")).await;
    check(&r, StatusCode::NOT_FOUND, "no_payload");

    // An empty body is fine.
    let r = h.post("/v1/functions/up/invoke", "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn a_busy_function_is_429_with_retry_after_and_records_why() {
    let h = harness(false).await;
    h.deploy("full", json!({"image": "img", "command": ["busy"]}))
        .await;
    let r = h.post("/v1/functions/full/invoke", "x").await;
    check(&r, StatusCode::TOO_MANY_REQUESTS, "busy");
    assert_eq!(r.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn scaling_settings_are_validated_and_shown() {
    let h = harness(false).await;
    for (bad, fragment) in [
        (json!({"image": "i", "concurrency": 0}), "concurrency"),
        (
            json!({"image": "i", "min_instances": 3, "max_instances": 2}),
            "min_instances",
        ),
        (json!({"image": "i", "max_instances": 0}), "max_instances"),
        (
            json!({"image": "i", "queue_timeout_secs": 0}),
            "queue_timeout_secs",
        ),
    ] {
        let r = h.put_json("/v1/functions/f", bad.to_string()).await;
        let v = check(&r, StatusCode::BAD_REQUEST, "invalid_function");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(fragment), "{bad}: {msg}");
    }
    let r = h
        .put_json(
            "/v1/functions/f",
            json!({"image": "i", "mode": "turbo"}).to_string(),
        )
        .await;
    let v = check(&r, StatusCode::BAD_REQUEST, "invalid_json");
    assert!(v["error"]["message"].as_str().unwrap().contains("turbo"));
    let v = h
        .deploy(
            "f",
            json!({"image": "i", "mode": "http", "min_instances": 1}),
        )
        .await;
    assert_eq!(v["latest"]["mode"], "http");
    assert_eq!(v["latest"]["min_instances"], 1);
    assert_eq!(v["latest"]["concurrency"], 4);
    assert_eq!(v["latest"]["max_queue"], 64);
}

#[tokio::test]
async fn invoke_streams_output_larger_than_the_decision_window() {
    let h = harness(false).await;
    h.deploy("up", upper()).await;
    let input: String = (0..1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let r = call(
        &h.app,
        Method::POST,
        "/v1/functions/up/invoke",
        Some(&bearer(KEY)),
        None,
        input.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), input.len());
    assert!(r.body == input.to_ascii_uppercase().as_bytes());
    let id = r.header("x-berth-task-id").unwrap().to_owned();
    assert_eq!(h.task(&id).await["status"], "succeeded");
}

#[tokio::test]
async fn failing_function_answers_502_with_exit_code_and_stderr() {
    let h = harness(false).await;
    h.deploy(
        "bad",
        json!({"image": "img", "command": ["fail", "3", "it went wrong"]}),
    )
    .await;
    let r = h.post("/v1/functions/bad/invoke", "x").await;
    let v = check(&r, StatusCode::BAD_GATEWAY, "function_failed");
    assert_eq!(v["error"]["exit_code"], 3);
    assert!(
        v["error"]["stderr"]
            .as_str()
            .unwrap()
            .contains("it went wrong"),
        "{v}"
    );
    let id = r
        .header("x-berth-task-id")
        .expect("task id header")
        .to_owned();
    assert_eq!(v["error"]["task_id"], id);
    assert_eq!(r.header("x-berth-version"), Some("1"));

    let t = h.task(&id).await;
    assert_eq!(t["status"], "failed");
    assert_eq!(t["exit_code"], 3);
    assert_eq!(t["error"]["code"], "exit");
    assert_eq!(
        h.get(&format!("/v1/tasks/{id}/logs")).await.text(),
        "it went wrong"
    );
}

#[tokio::test]
async fn slow_function_answers_504() {
    let h = harness(false).await;
    h.deploy(
        "slow",
        json!({"image": "img", "command": ["sleep"], "timeout_secs": 1}),
    )
    .await;
    let r = h.post("/v1/functions/slow/invoke", "").await;
    let v = check(&r, StatusCode::GATEWAY_TIMEOUT, "timeout");
    let id = v["error"]["task_id"].as_str().unwrap().to_owned();
    assert_eq!(r.header("x-berth-task-id"), Some(id.as_str()));
    let spec = h.fake().started_for("slow").unwrap();
    assert_eq!(spec.timeout, Duration::from_secs(1));
    let t = h.task(&id).await;
    assert_eq!(t["status"], "timed_out");
    assert_eq!(t["error"]["code"], "timeout");
}

#[tokio::test]
async fn failure_after_output_began_cuts_the_body_off() {
    let h = harness(false).await;
    h.deploy("big", json!({"image": "img", "command": ["big"]}))
        .await;
    let resp = send(
        &h.app,
        request(
            Method::POST,
            "/v1/functions/big/invoke",
            Some(&bearer(KEY)),
            None,
            "",
        ),
    )
    .await;
    // The status was committed before the function failed...
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.headers()["x-berth-task-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // ...so the failure shows as a broken body, never a clean short one.
    let outcome = resp.into_body().collect().await;
    assert!(outcome.is_err(), "the body must not end cleanly");

    let t = h.task(&id).await;
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["exit_code"], 1);
    assert_eq!(t["error"]["code"], "exit");
}

#[tokio::test]
async fn a_caller_that_stops_reading_kills_the_function() {
    let h = harness(false).await;
    h.deploy("firehose", json!({"image": "img", "command": ["stream"]}))
        .await;
    let resp = send(
        &h.app,
        request(
            Method::POST,
            "/v1/functions/firehose/invoke",
            Some(&bearer(KEY)),
            None,
            "",
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.headers()["x-berth-task-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = resp.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert!(first.is_data());
    drop(body);

    let task_id: TaskId = id.parse().unwrap();
    assert_eq!(h.wait_exit(task_id).await, Exit::CallerGone);
    let t = h.wait_terminal(&id).await;
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "client_disconnected", "{t}");
}

#[tokio::test]
async fn cancelling_a_sync_call_answers_its_caller_409() {
    let h = harness(false).await;
    h.deploy(
        "sleeper",
        json!({"image": "img", "command": ["sleep"], "timeout_secs": 3600}),
    )
    .await;
    let app = h.app.clone();
    let pending = tokio::spawn(async move {
        let req = request(
            Method::POST,
            "/v1/functions/sleeper/invoke",
            Some(&bearer(KEY)),
            None,
            "",
        );
        collect(send(&app, req).await).await
    });
    let spec = h.wait_started("sleeper").await;
    let id = spec.task_id.to_string();
    assert_eq!(h.task(&id).await["status"], "running");

    let r = h.delete(&format!("/v1/tasks/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["status"], "cancelled");

    let r = pending.await.expect("invoke task");
    let v = check(&r, StatusCode::CONFLICT, "cancelled");
    assert_eq!(v["error"]["task_id"], id);
    assert_eq!(h.fake().exit_of(spec.task_id), Some(Exit::Cancelled));
    assert_eq!(h.task(&id).await["status"], "cancelled");
}

#[tokio::test]
async fn a_call_keeps_its_callers_method_but_head_is_not_a_call() {
    let h = harness(false).await;
    h.deploy("env", json!({"image": "img", "command": ["env"]}))
        .await;
    for method in [Method::GET, Method::PUT, Method::PATCH, Method::DELETE] {
        for uri in [
            "/v1/functions/env/invoke",
            "/v1/functions/env/invoke/items/7",
        ] {
            let req = Request::builder()
                .method(method.clone())
                .uri(uri)
                .header(header::AUTHORIZATION, bearer(KEY))
                .body(Body::empty())
                .unwrap();
            let r = collect(send(&h.app, req).await).await;
            assert_eq!(r.status, StatusCode::OK, "{method} {uri}: {}", r.text());
            let out = r.text();
            assert!(
                out.lines().any(|l| l == format!("REQUEST_METHOD={method}")),
                "{method} {uri}: {out}"
            );
        }
    }
    let req = Request::builder()
        .method(Method::HEAD)
        .uri("/v1/functions/env/invoke")
        .header(header::AUTHORIZATION, bearer(KEY))
        .body(Body::empty())
        .unwrap();
    let r = collect(send(&h.app, req).await).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("GET, POST, PUT, PATCH, DELETE"));
}

#[tokio::test]
async fn the_function_sees_the_request_as_cgi_variables() {
    let h = harness(false).await;
    h.deploy(
        "env",
        json!({"image": "img", "command": ["env"], "env": {"GREETING": "hi"}}),
    )
    .await;
    // A second version: invocations run the latest.
    h.deploy(
        "env",
        json!({"image": "img", "command": ["env"], "env": {"GREETING": "hello"}}),
    )
    .await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/functions/env/invoke?a=1&b=2")
        .header(header::AUTHORIZATION, bearer(KEY))
        .header(header::CONTENT_TYPE, "text/csv")
        .header("x-custom", "yes")
        .header(header::PROXY_AUTHORIZATION, "Basic cHJveHk6c2VjcmV0")
        .header(header::CONNECTION, "keep-alive")
        .body(Body::from("a,b\n"))
        .unwrap();
    let r = collect(send(&h.app, req).await).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-berth-version"), Some("2"));
    let out = r.text();
    let lines: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    for (k, v) in [
        ("REQUEST_METHOD", "POST"),
        ("QUERY_STRING", "a=1&b=2"),
        ("HTTP_X_CUSTOM", "yes"),
        ("CONTENT_TYPE", "text/csv"),
        ("GREETING", "hello"),
        ("BERTH_FUNCTION", "env"),
        ("BERTH_VERSION", "2"),
        ("BERTH_ATTEMPT", "1"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
    ] {
        assert_eq!(lines.get(k).copied(), Some(v), "{k} in {out}");
    }
    assert_eq!(
        lines.get("BERTH_TASK_ID").copied(),
        r.header("x-berth-task-id")
    );
    // Credentials and hop-by-hop headers never reach the function.
    assert!(!out.contains(KEY), "{out}");
    assert!(!out.contains("cHJveHk6c2VjcmV0"), "{out}");
    for hidden in [
        "HTTP_AUTHORIZATION",
        "HTTP_PROXY_AUTHORIZATION",
        "HTTP_CONNECTION",
    ] {
        assert!(!lines.contains_key(hidden), "{hidden} in {out}");
    }
}

// ---------------------------------------------------------------------------
// Async tasks
// ---------------------------------------------------------------------------

#[tokio::test]
async fn async_task_runs_and_keeps_its_output_and_logs() {
    let h = harness(true).await;
    h.deploy("up", upper()).await;
    let r = h.post("/v1/functions/up/tasks?x=1", "hello async").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let v = r.json();
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["kind"], "async");
    assert_eq!(v["function"], "up");
    assert_eq!(v["version"], 1);
    assert_eq!(v["input_bytes"], 11);
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/tasks/{id}").as_str())
    );
    assert_eq!(r.header("x-berth-task-id"), Some(id.as_str()));

    let t = h.wait_terminal(&id).await;
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(t["kind"], "async");
    assert_eq!(t["exit_code"], 0);
    assert_eq!(t["attempt"], 1);
    assert_eq!(t["output_bytes"], 11);

    let r = h.get(&format!("/v1/tasks/{id}/output")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "HELLO ASYNC");
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("content-length"), Some("11"));
    assert_eq!(r.header("x-berth-task-status"), Some("succeeded"));

    let r = h.get(&format!("/v1/tasks/{id}/logs")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "echo-upper: 11 bytes\n");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
}

#[tokio::test]
async fn async_tasks_end_as_failed_or_timed_out() {
    let h = harness(true).await;
    h.deploy(
        "bad",
        json!({"image": "img", "command": ["fail", "3", "msg"]}),
    )
    .await;
    h.deploy(
        "slow",
        json!({"image": "img", "command": ["sleep"], "timeout_secs": 1}),
    )
    .await;
    h.deploy("env", json!({"image": "img", "command": ["env"]}))
        .await;
    let bad = h.submit("bad", "").await;
    let slow = h.submit("slow", "").await;
    let env = {
        let req = Request::builder()
            .method(Method::PUT)
            .uri("/v1/functions/env/tasks?q=1")
            .header(header::AUTHORIZATION, bearer(KEY))
            .header("x-custom", "yes")
            .body(Body::from("12345"))
            .unwrap();
        // PUT is not a route for submissions; POST is.
        let r = collect(send(&h.app, req).await).await;
        check(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/functions/env/tasks?q=1")
            .header(header::AUTHORIZATION, bearer(KEY))
            .header("x-custom", "yes")
            .body(Body::from("12345"))
            .unwrap();
        let r = collect(send(&h.app, req).await).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_owned()
    };

    let t = h.wait_terminal(&bad).await;
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["exit_code"], 3);
    assert_eq!(t["error"]["code"], "exit");
    assert_eq!(h.get(&format!("/v1/tasks/{bad}/logs")).await.text(), "msg");
    let r = h.get(&format!("/v1/tasks/{bad}/output")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(r.header("x-berth-task-status"), Some("failed"));

    let t = h.wait_terminal(&slow).await;
    assert_eq!(t["status"], "timed_out", "{t}");
    assert_eq!(t["error"]["code"], "timeout");

    let t = h.wait_terminal(&env).await;
    assert_eq!(t["status"], "succeeded", "{t}");
    let out = h.get(&format!("/v1/tasks/{env}/output")).await.text();
    for line in [
        "REQUEST_METHOD=POST",
        "QUERY_STRING=q=1",
        "HTTP_X_CUSTOM=yes",
        "CONTENT_LENGTH=5",
        "BERTH_ATTEMPT=1",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} not in {out}");
    }
    assert!(!out.contains(KEY), "{out}");
}

#[tokio::test]
async fn queued_tasks_have_no_output_and_can_be_cancelled() {
    // No background loops: the task stays queued.
    let h = harness(false).await;
    h.deploy("up", upper()).await;
    let id = h.submit("up", "abc").await;
    assert_eq!(h.task(&id).await["status"], "queued");

    for suffix in ["output", "logs"] {
        let r = h.get(&format!("/v1/tasks/{id}/{suffix}")).await;
        check(&r, StatusCode::CONFLICT, "task_not_finished");
    }

    let r = h.delete(&format!("/v1/tasks/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "cancelled");
    assert_eq!(v["error"]["code"], "cancelled");

    let r = h.delete(&format!("/v1/tasks/{id}")).await;
    check(&r, StatusCode::CONFLICT, "task_finished");
    // Finished, but it never ran: there is nothing to fetch.
    let r = h.get(&format!("/v1/tasks/{id}/output")).await;
    check(&r, StatusCode::NOT_FOUND, "no_payload");
    assert!(h.fake().started().is_empty());
}

#[tokio::test]
async fn cancelling_a_running_async_task_kills_it() {
    let h = harness(true).await;
    h.deploy(
        "sleeper",
        json!({"image": "img", "command": ["sleep"], "timeout_secs": 3600}),
    )
    .await;
    let id = h.submit("sleeper", "").await;
    let spec = h.wait_started("sleeper").await;
    assert_eq!(spec.task_id.to_string(), id);
    assert_eq!(h.task(&id).await["status"], "running");

    for suffix in ["output", "logs"] {
        let r = h.get(&format!("/v1/tasks/{id}/{suffix}")).await;
        check(&r, StatusCode::CONFLICT, "task_not_finished");
    }

    let r = h.delete(&format!("/v1/tasks/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["status"], "cancelled");
    assert_eq!(h.wait_exit(spec.task_id).await, Exit::Cancelled);

    let r = h.delete(&format!("/v1/tasks/{id}")).await;
    let v = check(&r, StatusCode::CONFLICT, "task_finished");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    assert_eq!(h.task(&id).await["status"], "cancelled");
}

#[tokio::test]
async fn unknown_and_malformed_task_ids_answer_alike() {
    let h = harness(false).await;
    let unknown = TaskId::new().to_string();
    let ids = [
        unknown.as_str(),
        "nope",
        "123",
        "00000000-0000-0000-0000-000000000000",
        "%20",
        "..",
    ];
    for (method, suffix) in [
        (Method::GET, ""),
        (Method::DELETE, ""),
        (Method::GET, "/output"),
        (Method::GET, "/logs"),
    ] {
        let mut first: Option<Bytes> = None;
        for id in ids {
            let path = format!("/v1/tasks/{id}{suffix}");
            let r = call(&h.app, method.clone(), &path, Some(&bearer(KEY)), None, ()).await;
            check(&r, StatusCode::NOT_FOUND, "task_not_found");
            match &first {
                None => first = Some(r.body.clone()),
                Some(b) => assert_eq!(&r.body, b, "{method} {path}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Task listing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn bad_list_parameters_are_refused() {
    let h = harness(false).await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "limit=",
        "limit=1000000000000",
        "limit=99999999999999999999999",
        "status=bogus",
        "status=",
        "status=SUCCEEDED",
        "cursor=xyz",
        "cursor=",
        "cursor=0",
        "cursor=-5",
        "bogus=1",
        "limit=2&offset=4",
    ] {
        let r = h.get(&format!("/v1/tasks?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.text());
        check(&r, StatusCode::BAD_REQUEST, "bad_request");
    }
    for query in [
        "",
        "limit=1",
        "limit=1000",
        "status=timed_out",
        "function=nothing",
        "cursor=12345",
    ] {
        let r = h.get(&format!("/v1/tasks?{query}")).await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.text());
        assert_eq!(
            r.json(),
            json!({"tasks": [], "next_cursor": null}),
            "{query}"
        );
    }
}

#[tokio::test]
async fn undecodable_query_answers_json() {
    let h = harness(false).await;
    // Not UTF-8 once percent-decoded.
    let r = h.get("/v1/tasks?limit=%ff").await;
    check(&r, StatusCode::BAD_REQUEST, "bad_request");
}

/// KNOWN BUG (reported, not fixed here): a path segment that is not UTF-8
/// once percent-decoded is rejected by axum's `Path` extractor with a
/// plain-text 400 ("Invalid URL: Invalid UTF-8 in `name`"), breaking the
/// promise that every failure leaves the API as a JSON error, and, for task
/// ids, the promise that a malformed id answers exactly like a missing one.
#[tokio::test]
async fn undecodable_path_segment_answers_json() {
    let h = harness(false).await;
    let missing = h.get(&format!("/v1/tasks/{}", TaskId::new())).await;
    check(&missing, StatusCode::NOT_FOUND, "task_not_found");
    let mut wrong = Vec::new();
    for (method, path) in [
        (Method::GET, "/v1/functions/%ff"),
        (Method::PUT, "/v1/functions/%ff"),
        (Method::DELETE, "/v1/functions/%ff"),
        (Method::POST, "/v1/functions/%ff/invoke"),
        (Method::POST, "/v1/functions/%ff/tasks"),
        (Method::GET, "/v1/tasks/%ff"),
        (Method::DELETE, "/v1/tasks/%ff"),
        (Method::GET, "/v1/tasks/%ff/output"),
        (Method::GET, "/v1/tasks/%ff/logs"),
    ] {
        let r = call(
            &h.app,
            method.clone(),
            path,
            Some(&bearer(KEY)),
            Some("application/json"),
            upper().to_string(),
        )
        .await;
        let ct = r.header("content-type").unwrap_or_default().to_owned();
        let is_json_error =
            serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| v["error"]["code"].is_string());
        let ok = if path.starts_with("/v1/tasks/") {
            // Must be indistinguishable from a missing task.
            r.status == StatusCode::NOT_FOUND && r.body == missing.body
        } else {
            r.status.is_client_error() && ct.starts_with("application/json") && is_json_error
        };
        if !ok {
            wrong.push(format!(
                "{method} {path}: {} {ct:?} {:?}",
                r.status,
                r.text()
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
}

async fn walk(h: &Harness, query: &str) -> (Vec<String>, Vec<usize>) {
    let mut ids = Vec::new();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            None => format!("/v1/tasks?{query}"),
            Some(c) => format!("/v1/tasks?{query}&cursor={c}"),
        };
        let r = h.get(&path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        let v = r.json();
        let page = v["tasks"].as_array().unwrap();
        pages.push(page.len());
        ids.extend(page.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return (ids, pages),
        }
    }
    panic!("pagination did not end");
}

#[tokio::test]
async fn pagination_and_filters() {
    // No background loops: queued tasks stay put.
    let h = harness(false).await;
    h.deploy("a", upper()).await;
    h.deploy("b", upper()).await;
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 0..5 {
        if i % 2 == 0 {
            a.push(h.submit("a", "x").await);
        } else {
            b.push(h.submit("b", "x").await);
        }
    }
    // A sync call lands in the same list.
    let r = h.post("/v1/functions/a/invoke", "x").await;
    assert_eq!(r.status, StatusCode::OK);
    let sync_id = r.header("x-berth-task-id").unwrap().to_owned();
    a.push(sync_id.clone());
    let created: Vec<String> = {
        let mut all: Vec<_> = a.iter().chain(b.iter()).cloned().collect();
        // UUIDv7 ids order by creation.
        all.sort();
        all.reverse();
        all
    };

    let (ids, pages) = walk(&h, "limit=2").await;
    assert_eq!(pages, [2, 2, 2]);
    assert_eq!(ids, created, "newest first, each exactly once");
    let (ids, pages) = walk(&h, "limit=4").await;
    assert_eq!(pages, [4, 2]);
    assert_eq!(ids, created);
    let (ids, _) = walk(&h, "limit=1000").await;
    assert_eq!(ids, created);

    let (ids, pages) = walk(&h, "function=a&limit=1").await;
    assert_eq!(pages, [1, 1, 1, 1]);
    assert_eq!(
        ids.iter().cloned().collect::<HashSet<_>>(),
        a.iter().cloned().collect()
    );
    let (ids, _) = walk(&h, "function=b").await;
    assert_eq!(
        ids.iter().cloned().collect::<HashSet<_>>(),
        b.iter().cloned().collect()
    );
    let (ids, _) = walk(&h, "function=c").await;
    assert!(ids.is_empty());

    let r = h.delete(&format!("/v1/tasks/{}", b[0])).await;
    assert_eq!(r.status, StatusCode::OK);
    for (query, expected) in [
        ("status=succeeded", vec![sync_id.clone()]),
        ("status=cancelled", vec![b[0].clone()]),
        ("status=queued&function=b", vec![b[1].clone()]),
        ("status=cancelled&function=a", vec![]),
        ("status=failed", vec![]),
    ] {
        let (ids, _) = walk(&h, query).await;
        assert_eq!(ids, expected, "{query}");
    }
    let (ids, _) = walk(&h, "status=queued&limit=1").await;
    assert_eq!(ids.len(), 4);

    let r = h.get("/v1/tasks?function=a&status=succeeded").await;
    let t = &r.json()["tasks"][0];
    assert_eq!(t["kind"], "sync");
    assert_eq!(t["id"], sync_id);
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let h = harness(false).await;
    for (auth, method, path, status, code) in [
        (None, Method::GET, "/", StatusCode::NOT_FOUND, "not_found"),
        (
            None,
            Method::GET,
            "/nope",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Some(KEY),
            Method::GET,
            "/v1/nope",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Some(KEY),
            Method::GET,
            "/v2/functions",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Some(KEY),
            Method::GET,
            "/v1/functions/a/b/c",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            None,
            Method::POST,
            "/healthz",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Some(KEY),
            Method::POST,
            "/v1/functions",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Some(KEY),
            Method::PATCH,
            "/v1/tasks/x",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Some(KEY),
            Method::OPTIONS,
            "/v1/functions/x/invoke",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Some(KEY),
            Method::POST,
            "/v1/tasks",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Some(KEY),
            Method::DELETE,
            "/v1/tasks/x/output",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ] {
        let auth = auth.map(bearer);
        let r = call(&h.app, method.clone(), path, auth.as_deref(), None, ()).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        check(&r, status, code);
    }
}

#[tokio::test]
async fn a_stalled_async_upload_is_refused_and_leaves_nothing() {
    let h = harness(false).await;
    h.deploy("upper", upper()).await;
    let first = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("half of it")) });
    let body = Body::from_stream(first.chain(futures::stream::pending()));
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/functions/upper/tasks")
        .header("authorization", bearer(KEY))
        .body(body)
        .unwrap();
    let r = collect(send(&h.app, req).await).await;
    let v = check(&r, StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("no data"),
        "{v}"
    );
    let list = h.get("/v1/tasks").await;
    assert_eq!(list.json()["tasks"], json!([]), "nothing was enqueued");
}

mod http_details;
mod metrics;
mod tenancy;
