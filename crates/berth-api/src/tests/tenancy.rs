//! Tenants, their keys and quotas, and idempotent submissions.

use super::*;

impl Harness {
    async fn send_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        json_body: Option<Value>,
    ) -> Reply {
        let (ct, body) = match json_body {
            Some(v) => (Some("application/json"), Body::from(v.to_string())),
            None => (None, Body::empty()),
        };
        call(&self.app, method, path, Some(&bearer(key)), ct, body).await
    }

    /// Creates a tenant as the admin and returns its key.
    async fn tenant(&self, name: &str, quotas: Value) -> String {
        let r = self
            .send_as(
                KEY,
                Method::POST,
                "/v1/tenants",
                Some(json!({"name": name, "quotas": quotas})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()["api_key"].as_str().expect("api_key").to_owned()
    }
}

#[tokio::test]
async fn tenants_are_made_by_the_admin_with_a_key_shown_once() {
    let h = harness(false).await;
    let key = h.tenant("alpha", json!({"max_memory_mb": 512})).await;
    assert!(key.starts_with("berth_") && key.len() > 60, "{key}");

    // The key works, and acts as the tenant.
    let r = h.get_as(&key, "/v1/tenants/alpha").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["quotas"]["max_memory_mb"], 512);
    assert_eq!(v["overrides"], json!({"max_memory_mb": 512}));
    assert_eq!(v["keys"], 1);
    assert!(v.get("api_key").is_none(), "the key is never shown again");

    let listed = h.get("/v1/tenants").await.json();
    let names: Vec<_> = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["admin", "alpha", "other"]);

    // Only the admin manages tenants.
    let r = h
        .send_as(
            &key,
            Method::POST,
            "/v1/tenants",
            Some(json!({"name": "x"})),
        )
        .await;
    check(&r, StatusCode::FORBIDDEN, "forbidden");
    check(
        &h.get_as(&key, "/v1/tenants").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let r = h
        .send_as(
            &key,
            Method::PUT,
            "/v1/tenants/alpha/quotas",
            Some(json!({})),
        )
        .await;
    check(&r, StatusCode::FORBIDDEN, "forbidden");

    // Bad requests change nothing.
    for (body, status, code) in [
        (
            json!({"name": "alpha"}),
            StatusCode::CONFLICT,
            "tenant_exists",
        ),
        (
            json!({"name": "Alpha"}),
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
        ),
        (
            json!({"name": "a/b"}),
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
        ),
        (
            json!({"name": "b", "quotas": {"max_memory_mb": 0}}),
            StatusCode::BAD_REQUEST,
            "invalid_quota",
        ),
        (
            json!({"name": "b", "quotas": {"max_ram": 1}}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json!({"name": "b", "extra": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ] {
        let r = h
            .send_as(KEY, Method::POST, "/v1/tenants", Some(body.clone()))
            .await;
        check(&r, status, code);
    }
    assert_eq!(
        h.get("/v1/tenants").await.json()["tenants"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "admin, other and alpha only: no refused tenant was made"
    );
}

#[tokio::test]
async fn another_tenants_record_answers_like_a_missing_one() {
    let h = harness(false).await;
    let alpha = h.tenant("alpha", json!({})).await;
    h.tenant("beta", json!({})).await;
    let theirs = h.get_as(&alpha, "/v1/tenants/beta").await;
    let missing = h.get_as(&alpha, "/v1/tenants/nobody").await;
    check(&theirs, StatusCode::NOT_FOUND, "tenant_not_found");
    assert_eq!(theirs.body, missing.body);
    let r = h
        .send_as(&alpha, Method::POST, "/v1/tenants/beta/keys", None)
        .await;
    assert_eq!(r.body, missing.body);
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rotation_and_revocation_take_effect_at_once() {
    let h = harness(false).await;
    let old = h.tenant("alpha", json!({})).await;
    assert_eq!(h.get_as(&old, "/v1/functions").await.status, StatusCode::OK);

    // A tenant may rotate its own key.
    let r = h
        .send_as(&old, Method::POST, "/v1/tenants/alpha/keys", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let new = r.json()["api_key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    check(
        &h.get_as(&old, "/v1/functions").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_eq!(h.get_as(&new, "/v1/functions").await.status, StatusCode::OK);

    // Revocation is the admin's; afterwards no key of the tenant works.
    let r = h
        .send_as(&new, Method::DELETE, "/v1/tenants/alpha/keys", None)
        .await;
    check(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = h
        .send_as(KEY, Method::DELETE, "/v1/tenants/alpha/keys", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["keys"], 0);
    check(
        &h.get_as(&new, "/v1/functions").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    // The admin can give it a key again; the admin's own key is not managed here.
    let r = h
        .send_as(KEY, Method::POST, "/v1/tenants/alpha/keys", None)
        .await;
    let again = r.json()["api_key"].as_str().unwrap().to_owned();
    assert_eq!(
        h.get_as(&again, "/v1/functions").await.status,
        StatusCode::OK
    );
    let r = h
        .send_as(KEY, Method::POST, "/v1/tenants/admin/keys", None)
        .await;
    check(&r, StatusCode::CONFLICT, "admin_key_fixed");
}

#[tokio::test]
async fn function_ceilings_are_checked_at_deploy() {
    let h = harness(false).await;
    let key = h
        .tenant(
            "alpha",
            json!({"max_memory_mb": 128, "max_timeout_secs": 30}),
        )
        .await;
    let r = h
        .put_json_as(
            &key,
            "/v1/functions/f",
            json!({"image": "img", "memory_mb": 256}).to_string(),
        )
        .await;
    let v = check(&r, StatusCode::BAD_REQUEST, "quota_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_memory_mb"),
        "{v}"
    );
    let r = h
        .put_json_as(
            &key,
            "/v1/functions/f",
            json!({"image": "img", "memory_mb": 128, "timeout_secs": 31}).to_string(),
        )
        .await;
    check(&r, StatusCode::BAD_REQUEST, "quota_exceeded");
    assert_eq!(
        h.get_as(&key, "/v1/functions").await.json(),
        json!({"functions": []})
    );
    let r = h
        .put_json_as(
            &key,
            "/v1/functions/f",
            json!({"image": "img", "memory_mb": 128, "timeout_secs": 30}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // Raising the quota lets the bigger definition in.
    let r = h
        .send_as(
            KEY,
            Method::PUT,
            "/v1/tenants/alpha/quotas",
            Some(json!({"max_memory_mb": 1024})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = h
        .put_json_as(
            &key,
            "/v1/functions/f",
            json!({"image": "img", "memory_mb": 256, "timeout_secs": 30}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

#[tokio::test]
async fn concurrency_quota_is_429_for_that_tenant_only() {
    let h = harness(false).await;
    let key = h.tenant("alpha", json!({"max_concurrent_tasks": 1})).await;
    let sleeper = json!({"image": "img", "command": ["sleep"], "timeout_secs": 3600});
    let r = h
        .put_json_as(&key, "/v1/functions/s", sleeper.to_string())
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    h.deploy("up", upper()).await;

    let app = h.app.clone();
    let k = key.clone();
    let first = tokio::spawn(async move {
        call(
            &app,
            Method::POST,
            "/v1/functions/s/invoke",
            Some(&bearer(&k)),
            None,
            "",
        )
        .await
    });
    let spec = h.wait_started("s").await;
    let r = h
        .send_as(&key, Method::POST, "/v1/functions/s/invoke", None)
        .await;
    let v = check(&r, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_concurrent_tasks")
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    // The refused call left no task behind.
    let tasks = h.get_as(&key, "/v1/tasks").await.json();
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1, "{tasks}");
    // Another tenant is unaffected.
    assert_eq!(
        h.post("/v1/functions/up/invoke", "x").await.status,
        StatusCode::OK
    );

    // The slot comes back when the call ends.
    let id = spec.task_id.to_string();
    let r = h
        .send_as(&key, Method::DELETE, &format!("/v1/tasks/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    first.await.unwrap();
    let up = json!({"image": "img", "command": ["echo-upper"]});
    h.put_json_as(&key, "/v1/functions/u", up.to_string()).await;
    let r = call(
        &h.app,
        Method::POST,
        "/v1/functions/u/invoke",
        Some(&bearer(&key)),
        None,
        "ok",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn queue_quota_and_body_size_refuse_before_anything_is_kept() {
    let h = harness(false).await;
    let key = h
        .tenant(
            "alpha",
            json!({"max_queued_tasks": 2, "max_body_bytes": 10}),
        )
        .await;
    let up = json!({"image": "img", "command": ["echo-upper"]});
    h.put_json_as(&key, "/v1/functions/u", up.to_string()).await;
    let auth = bearer(&key);
    let submit = |body: &'static str| {
        let req = request(
            Method::POST,
            "/v1/functions/u/tasks",
            Some(&auth),
            None,
            body,
        );
        let app = h.app.clone();
        async move { collect(send(&app, req).await).await }
    };
    // Too large, declared or streamed: 413, and no task.
    let r = submit("01234567890").await;
    check(&r, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let declared = Request::builder()
        .method(Method::POST)
        .uri("/v1/functions/u/invoke")
        .header(header::AUTHORIZATION, bearer(&key))
        .header(header::CONTENT_LENGTH, "11")
        .body(Body::from("01234567890"))
        .unwrap();
    let r = collect(send(&h.app, declared).await).await;
    check(&r, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let chunks = futures::stream::iter(
        ["0123456", "7890123"].map(|c| Ok::<_, std::io::Error>(Bytes::from(c))),
    );
    let r = call(
        &h.app,
        Method::POST,
        "/v1/functions/u/invoke",
        Some(&bearer(&key)),
        None,
        Body::from_stream(chunks),
    )
    .await;
    check(&r, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert_eq!(submit("a").await.status, StatusCode::ACCEPTED);
    assert_eq!(submit("b").await.status, StatusCode::ACCEPTED);
    let r = submit("c").await;
    let v = check(&r, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_queued_tasks")
    );
    assert!(r.header("retry-after").is_some());

    let tasks = h.get_as(&key, "/v1/tasks").await.json();
    let statuses: Vec<_> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].clone())
        .collect();
    // Only the two accepted tasks and the sync call whose body was cut
    // while it streamed are on record.
    assert_eq!(
        statuses.iter().filter(|s| **s == "queued").count(),
        2,
        "{tasks}"
    );
    assert_eq!(statuses.len(), 3, "{tasks}");
    let cut = &tasks["tasks"][2];
    assert_eq!(cut["status"], "failed", "{cut}");
    assert_eq!(cut["error"]["code"], "body_too_large", "{cut}");

    // Another tenant is held to the defaults.
    h.deploy("up", upper()).await;
    assert_eq!(
        h.post("/v1/functions/up/tasks", "01234567890").await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn idempotency_keys_give_back_the_first_task() {
    let h = harness(false).await;
    h.deploy("up", upper()).await;
    let post = |key: &'static str, body: &'static str| {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/functions/up/tasks")
            .header(header::AUTHORIZATION, bearer(KEY))
            .header("idempotency-key", key)
            .body(Body::from(body))
            .unwrap();
        let app = h.app.clone();
        async move { collect(send(&app, req).await).await }
    };
    let first = post("order-1", "abc").await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text());
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = post("order-1", "abc").await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text());
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let r = post("order-1", "abd").await;
    check(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    let r = post("bad key with spaces", "abc").await;
    check(&r, StatusCode::BAD_REQUEST, "bad_request");
    let other = post("order-2", "abc").await;
    assert_ne!(other.json()["id"], first.json()["id"]);
    let tasks = h.get("/v1/tasks").await.json();
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 2, "{tasks}");
}
