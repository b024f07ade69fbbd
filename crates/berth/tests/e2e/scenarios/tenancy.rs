//! Scenarios 1, 2, 5, 6 and 12: tenants cannot see or reach each other,
//! keys are checked, quotas hold per tenant, idempotency keys dedupe.

use std::path::Path;
use std::process::Stdio;

use berth_client::TaskQuery;
use berth_contract::{FunctionConfig, QuotaOverrides, Task, TaskStatus};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{BUSYBOX, Server, error_code, sh, task_id};
use crate::registry::{Images, docker, host, put_blob, run, sha256};

/// Logs Docker in as `tenant` (a per-test config) and pushes the busybox
/// test image to `<tenant>/<repo>:1`; returns the reference pushed.
fn push_busybox(server: &Server, config: &Path, tenant: &str, key: &str, repo: &str) -> String {
    use std::io::Write;
    let mut login = docker(config)
        .args(["login", "-u", tenant, "--password-stdin", &host(server)])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker login");
    login
        .stdin
        .take()
        .unwrap()
        .write_all(key.as_bytes())
        .unwrap();
    let out = login.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "login as {tenant}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tag = format!("{}/{tenant}/{repo}:1", host(server));
    run(docker(config).args(["tag", BUSYBOX, &tag]));
    run(docker(config).args(["push", &tag]));
    tag
}

async fn status_and_body(req: reqwest::RequestBuilder) -> (StatusCode, Vec<u8>) {
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.bytes().await.expect("body").to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn s01_another_tenants_task_and_function_answer_like_missing_ones() {
    let server = Server::start().await;
    server.deploy("mine", &sh("cat; echo to-stderr >&2")).await;
    let (status, headers, _) = server.invoke("mine", "", "hello").await;
    assert_eq!(status, StatusCode::OK);
    let sync_id = task_id(&headers);
    let async_id = server.submit("mine", "queued input").await.id;
    let done = server.wait(&async_id).await;
    assert_eq!(done.status, TaskStatus::Succeeded);

    let beta = server
        .create_tenant("beta", QuotaOverrides::default())
        .await;
    let missing_task = "0190c8e4-5b4a-7c9e-8f00-000000000000";
    for id in [&sync_id, &async_id] {
        for (method, suffix) in [
            (Method::GET, ""),
            (Method::GET, "/output"),
            (Method::GET, "/logs"),
            (Method::DELETE, ""),
        ] {
            let theirs = status_and_body(server.req_as(
                &beta,
                method.clone(),
                &format!("/v1/tasks/{id}{suffix}"),
            ))
            .await;
            let missing = status_and_body(server.req_as(
                &beta,
                method.clone(),
                &format!("/v1/tasks/{missing_task}{suffix}"),
            ))
            .await;
            assert_eq!(theirs.0, StatusCode::NOT_FOUND, "{method} {suffix}");
            assert_eq!(theirs, missing, "{method} {suffix}: same status and body");
            assert_eq!(error_code(&theirs.1), "task_not_found");
        }
    }
    let listed = server
        .client_as(&beta)
        .tasks(&TaskQuery::default())
        .await
        .expect("beta's tasks");
    assert!(listed.tasks.is_empty(), "{listed:?}");

    for (method, suffix) in [
        (Method::GET, ""),
        (Method::DELETE, ""),
        (Method::POST, "/invoke"),
        (Method::POST, "/tasks"),
    ] {
        let theirs = status_and_body(server.req_as(
            &beta,
            method.clone(),
            &format!("/v1/functions/mine{suffix}"),
        ))
        .await;
        let missing = status_and_body(server.req_as(
            &beta,
            method.clone(),
            &format!("/v1/functions/nothing{suffix}"),
        ))
        .await;
        assert_eq!(theirs.0, StatusCode::NOT_FOUND, "{method} {suffix}");
        assert_eq!(error_code(&theirs.1), "function_not_found");
        // The messages name the function asked for, so compare the rest.
        let strip = |b: &[u8], name: &str| String::from_utf8_lossy(b).replace(name, "NAME");
        assert_eq!(
            strip(&theirs.1, "mine"),
            strip(&missing.1, "nothing"),
            "{method} {suffix}"
        );
    }

    // None of it changed anything of the owner's.
    assert_eq!(server.task(&async_id).await, done);
    assert_eq!(server.task(&sync_id).await.status, TaskStatus::Succeeded);
    assert_eq!(server.output(&async_id).await, b"queued input");
    let (status, _, body) = server.invoke("mine", "", "still here").await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"still here"[..])
    );
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn s02_missing_malformed_and_revoked_keys_are_401() {
    let server = Server::start().await;
    server.deploy("f", &sh("cat")).await;
    let gamma = server
        .create_tenant("gamma", QuotaOverrides::default())
        .await;
    let resp = server
        .req(Method::DELETE, "/v1/tenants/gamma/keys")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let http = reqwest::Client::new();
    let url = format!("{}/v1/functions", server.url);
    let long = format!("Bearer berth_{}", "0".repeat(400));
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("empty bearer", Some("Bearer ".into())),
        ("scheme only", Some("Bearer".into())),
        ("unknown key", Some("Bearer berth_0123".into())),
        ("overlong key", Some(long)),
        (
            "basic instead of bearer",
            Some(format!("Basic {}", server.key)),
        ),
        ("revoked key", Some(format!("Bearer {gamma}"))),
    ];
    for (what, auth) in cases {
        let mut req = http.get(&url);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer", "{what}");
        assert_eq!(error_code(&resp.bytes().await.unwrap()), "unauthorized");
    }
    // A header that is not even text.
    let resp = http
        .get(&url)
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // The registry refuses the revoked key too.
    let resp = http
        .get(format!("{}/v2/", server.url))
        .basic_auth("gamma", Some(&gamma))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // An unauthenticated write changed nothing.
    let resp = http
        .delete(format!("{}/v1/functions/f", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (status, _, body) = server.invoke("f", "", "alive").await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"alive"[..]));
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn s05_a_tenant_over_its_quotas_gets_429_and_others_do_not() {
    let server = Server::start().await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("docker");
    let alpha = server
        .create_tenant(
            "alpha",
            QuotaOverrides {
                max_concurrent_tasks: Some(1),
                max_queued_tasks: Some(1),
                ..Default::default()
            },
        )
        .await;
    let image = push_busybox(&server, &config, "alpha", &alpha, "bb");
    let _cleanup = Images(&config, vec![image]);
    let resp = server
        .req_as(&alpha, Method::PUT, "/v1/functions/slow")
        .json(&FunctionConfig {
            image: "bb:1".into(),
            ..sh("sleep 600")
        })
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{:?}",
        resp.text().await
    );
    server.deploy("admin-fn", &sh("cat")).await;
    let as_alpha = server.client_as(&alpha);

    // One call runs: the tenant's whole concurrency.
    let running = {
        let req = server.req_as(&alpha, Method::POST, "/v1/functions/slow/invoke");
        tokio::spawn(async move { req.send().await.map(|r| r.status()) })
    };
    let running_tasks = TaskQuery {
        status: Some("running".into()),
        ..Default::default()
    };
    let first = loop {
        let page = as_alpha.tasks(&running_tasks).await.expect("alpha's tasks");
        if let Some(t) = page.tasks.into_iter().next() {
            break t.id;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let resp = server
        .req_as(&alpha, Method::POST, "/v1/functions/slow/invoke")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body = resp.bytes().await.unwrap();
    assert_eq!(error_code(&body), "quota_exceeded");
    assert!(String::from_utf8_lossy(&body).contains("max_concurrent_tasks"));

    // One async task may wait; the next is refused, and nothing is kept.
    let resp = server
        .req_as(&alpha, Method::POST, "/v1/functions/slow/tasks")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let queued: Task = resp.json().await.unwrap();
    let resp = server
        .req_as(&alpha, Method::POST, "/v1/functions/slow/tasks")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    let body = resp.bytes().await.unwrap();
    assert_eq!(error_code(&body), "quota_exceeded");
    assert!(String::from_utf8_lossy(&body).contains("max_queued_tasks"));
    let all = as_alpha
        .tasks(&TaskQuery::default())
        .await
        .expect("alpha's tasks");
    assert_eq!(all.tasks.len(), 2, "{all:?}");

    // The admin tenant is not held back by alpha's limits.
    for _ in 0..3 {
        let (status, _, body) = server.invoke("admin-fn", "", "free").await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"free"[..]));
    }

    // Cancelling the running call frees the slot: the queued task starts.
    let resp = server
        .req_as(&alpha, Method::DELETE, &format!("/v1/tasks/{first}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(running.await.unwrap().unwrap(), StatusCode::CONFLICT);
    let id = &queued.id;
    let begun = std::time::Instant::now();
    loop {
        let t = as_alpha.task(id).await.expect("alpha's task");
        if t.status == TaskStatus::Running {
            break;
        }
        assert!(
            begun.elapsed() < crate::harness::PATIENCE,
            "never started: {t:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let resp = server
        .req_as(&alpha, Method::DELETE, &format!("/v1/tasks/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn s06_idempotency_key_returns_the_same_task_or_422() {
    let server = Server::start().await;
    server.deploy("once", &sh("cat")).await;
    let submit = |key: &str, body: &'static str| {
        server
            .req(Method::POST, "/v1/functions/once/tasks")
            .header("idempotency-key", key)
            .body(body)
            .send()
    };
    let first = submit("payment-42", "amount=10").await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Task = first.json().await.unwrap();
    let again = submit("payment-42", "amount=10").await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Task = again.json().await.unwrap();
    assert_eq!(again.id, first.id);

    let conflict = submit("payment-42", "amount=99").await.unwrap();
    assert_eq!(conflict.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_code(&conflict.bytes().await.unwrap()),
        "idempotency_key_reused"
    );

    let id = &first.id;
    let t = server.wait(id).await;
    assert_eq!(t.status, TaskStatus::Succeeded);
    assert_eq!(server.output(id).await, b"amount=10");
    // After it ran, the same request still names the same task, which ran once.
    let late: Task = submit("payment-42", "amount=10")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(late.id, first.id);
    assert_eq!(late.status, TaskStatus::Succeeded);
    assert_eq!(late.attempt, 1);
    let all = server
        .tasks(&TaskQuery {
            function: Some("once".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(all.tasks.len(), 1, "{all:?}");
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn s12_cross_tenant_push_pull_and_mount_are_denied() {
    let server = Server::start().await;
    let work = tempfile::tempdir().unwrap();
    let alpha_cfg = work.path().join("alpha");
    let beta_cfg = work.path().join("beta");
    let alpha = server
        .create_tenant("alpha", QuotaOverrides::default())
        .await;
    let beta = server
        .create_tenant("beta", QuotaOverrides::default())
        .await;
    let image = push_busybox(&server, &alpha_cfg, "alpha", &alpha, "private");
    let _cleanup = Images(&alpha_cfg, vec![image.clone()]);
    let manifest_before = server
        .req_as(&alpha, Method::GET, "/v2/alpha/private/manifests/1")
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();

    // Beta, with its own valid login, pulls alpha's image: denied.
    let login = docker(&beta_cfg)
        .args(["login", "-u", "beta", "--password-stdin", &host(&server)])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut login = login;
        login
            .stdin
            .take()
            .unwrap()
            .write_all(beta.as_bytes())
            .unwrap();
        assert!(login.wait().unwrap().success());
    }
    run(docker(&beta_cfg).args(["rmi", &image]));
    let pulled = docker(&beta_cfg).args(["pull", &image]).output().unwrap();
    assert!(!pulled.status.success(), "beta pulled alpha's image");
    let denied = |resp: reqwest::Response| async move {
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
    };
    let as_beta = |method: Method, path: &str| {
        reqwest::Client::new()
            .request(method, format!("{}{path}", server.url))
            .basic_auth("beta", Some(&beta))
    };
    denied(
        as_beta(Method::GET, "/v2/alpha/private/manifests/1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    denied(
        as_beta(Method::GET, "/v2/alpha/private/tags/list")
            .send()
            .await
            .unwrap(),
    )
    .await;

    // Pushes into alpha's namespace: a blob, a manifest, a docker push.
    let blob = b"beta's layer";
    denied(
        as_beta(
            Method::POST,
            &format!("/v2/alpha/private/blobs/uploads/?digest={}", sha256(blob)),
        )
        .body(blob.to_vec())
        .send()
        .await
        .unwrap(),
    )
    .await;
    denied(
        as_beta(Method::PUT, "/v2/alpha/private/manifests/1")
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let retag = format!("{}/alpha/private:evil", host(&server));
    run(docker(&beta_cfg).args(["tag", BUSYBOX, &retag]));
    let _cleanup_beta = Images(&beta_cfg, vec![retag.clone()]);
    let pushed = docker(&beta_cfg).args(["push", &retag]).output().unwrap();
    assert!(!pushed.status.success(), "beta pushed into alpha/");

    // Mounting alpha's blob into beta's namespace gives no access to it:
    // the spec's fallback is a plain upload session (202), not a mount.
    let layer = put_blob(&server, "alpha/scratch", b"alpha's secret layer").await;
    let resp = as_beta(
        Method::POST,
        &format!("/v2/beta/copy/blobs/uploads/?mount={layer}&from=alpha/scratch"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "mount must not happen");
    let resp = as_beta(Method::HEAD, &format!("/v2/beta/copy/blobs/{layer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // And mounting into alpha's namespace is a push there: denied.
    denied(
        as_beta(
            Method::POST,
            &format!("/v2/alpha/other/blobs/uploads/?mount={layer}&from=alpha/scratch"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;

    // Deploying alpha's image as beta is refused too.
    let resp = server
        .req_as(&beta, Method::PUT, "/v1/functions/stolen")
        .json(&json!({"image": image}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Alpha's repository is exactly as it was.
    let manifest_after = server
        .req_as(&alpha, Method::GET, "/v2/alpha/private/manifests/1")
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(manifest_before, manifest_after);
    let tags: Value = server
        .req_as(&alpha, Method::GET, "/v2/alpha/private/tags/list")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["1"]));
    server.assert_no_panic();
}
