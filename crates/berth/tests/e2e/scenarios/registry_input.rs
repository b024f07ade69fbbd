//! Scenarios 8 to 11: bad registry input gets the spec's error code and
//! leaves nothing behind in the storage tree.

use std::path::Path;
use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::Server;
use crate::registry::{put_blob, run, sha256};

/// Every path under the registry's storage root, sorted: the before and
/// after of a refused request must be equal.
fn tree(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                walk(&p, root, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    // Upload sessions come and go with every request; the content and
    // links are what must not change.
    out.retain(|p| !p.starts_with("uploads"));
    out.sort();
    out
}

fn registry_tree(server: &Server) -> Vec<String> {
    tree(&server.data_dir().join("registry"))
}

async fn spec_error(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let body: Value = resp.json().await.expect("spec error body");
    (
        status,
        body["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn s08_bad_repository_names_are_name_invalid() {
    let server = Server::start().await;
    put_blob(&server, "admin/app", b"{}").await;
    let before = registry_tree(&server);
    let long = format!("admin/{}", "a".repeat(300));
    for path in [
        "/v2/admin/App/tags/list".to_owned(),
        "/v2/admin//b/blobs/uploads/".to_owned(),
        "/v2/admin/a__-b/tags/list".to_owned(),
        format!("/v2/{long}/tags/list"),
        format!("/v2/{long}/blobs/uploads/"),
    ] {
        let method = if path.ends_with("uploads/") {
            Method::POST
        } else {
            Method::GET
        };
        let got = spec_error(server.req(method, &path).send().await.unwrap()).await;
        assert_eq!(
            got,
            (StatusCode::BAD_REQUEST, "NAME_INVALID".into()),
            "{path}"
        );
    }
    // Dot segments, raw or percent-encoded, sent as they are: an HTTP
    // library would resolve them before sending, so curl --path-as-is.
    for (method, path) in [
        ("GET", "/v2/admin/../x/tags/list"),
        ("POST", "/v2/admin/../../escape/blobs/uploads/"),
        ("POST", "/v2/admin/%2e%2e/blobs/uploads/"),
        ("POST", "/v2/admin/%2E%2E/%2e%2e/escape/blobs/uploads/"),
        ("PUT", "/v2/%2e%2e/manifests/v1"),
    ] {
        let out = run(Command::new("curl").args([
            "-s",
            "--path-as-is",
            "-X",
            method,
            "-u",
            &format!("admin:{}", server.key),
            "-w",
            "\n%{http_code}",
            &format!("{}{path}", server.url),
        ]));
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        assert_eq!(status, "400", "{method} {path}: {body}");
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["errors"][0]["code"], "NAME_INVALID", "{method} {path}");
    }
    assert!(!server.data_dir().join("escape").exists());
    assert!(!server.data_dir().join("registry/escape").exists());
    assert_eq!(registry_tree(&server), before);
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn s09_blob_with_a_wrong_digest_is_digest_invalid_and_not_linked() {
    let server = Server::start().await;
    let before = registry_tree(&server);
    let claimed = sha256(b"what the client says it sends");
    let resp = server
        .req(
            Method::POST,
            &format!("/v2/admin/app/blobs/uploads/?digest={claimed}"),
        )
        .body("something else entirely")
        .send()
        .await
        .unwrap();
    assert_eq!(
        spec_error(resp).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );
    // Neither under the claimed digest nor under the real one.
    for d in [claimed, sha256(b"something else entirely")] {
        let resp = server
            .req(Method::HEAD, &format!("/v2/admin/app/blobs/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{d}");
    }
    assert_eq!(registry_tree(&server), before);
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn s10_manifest_with_a_missing_blob_is_manifest_blob_unknown() {
    let server = Server::start().await;
    let config = put_blob(&server, "admin/app", b"{}").await;
    let before = registry_tree(&server);
    let missing = sha256(b"never pushed");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": missing, "size": 12}],
    })
    .to_string();
    let resp = server
        .req(Method::PUT, "/v2/admin/app/manifests/v1")
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        spec_error(resp).await,
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into())
    );
    let resp = server
        .req(Method::GET, "/v2/admin/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "the tag was not made");
    let resp = server
        .req(
            Method::GET,
            &format!("/v2/admin/app/manifests/{}", sha256(manifest.as_bytes())),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "nor the digest");
    assert_eq!(registry_tree(&server), before);
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn s11_out_of_order_chunk_is_416_and_the_upload_is_intact() {
    let server = Server::start().await;
    let resp = server
        .req(Method::POST, "/v2/admin/chunks/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let mut location = resp.headers()["location"].to_str().unwrap().to_owned();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let (a, b) = data.split_at(100_000);
    let resp = server
        .req(Method::PATCH, &location)
        .header("content-range", "0-99999")
        .body(a.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    location = resp.headers()["location"].to_str().unwrap().to_owned();

    // A chunk that leaves a gap, and one that overlaps what was sent.
    for range in ["100005-100009", "50-54"] {
        let resp = server
            .req(Method::PATCH, &location)
            .header("content-range", range)
            .body(vec![0u8; 5])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(resp.headers()["range"], "0-99999", "{range}");
    }
    let status = server.req(Method::GET, &location).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(status.headers()["range"], "0-99999");

    // The upload goes on from where it was and completes intact.
    let resp = server
        .req(Method::PATCH, &location)
        .header("content-range", "100000-299999")
        .body(b.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    location = resp.headers()["location"].to_str().unwrap().to_owned();
    let d = sha256(&data);
    let resp = server
        .req(Method::PUT, &format!("{location}?digest={d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let got = server
        .req(Method::GET, &format!("/v2/admin/chunks/blobs/{d}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), data.as_slice());
    server.assert_no_panic();
}
