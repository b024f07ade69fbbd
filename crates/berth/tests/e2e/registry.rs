//! The built-in registry against real clients: the Docker Engine (through
//! `berth login`, `docker push` and `docker pull`), skopeo, and plain HTTP.
//! Every test has its own server, so repository names only need to be
//! unique within a test; Docker credentials go to a per-test
//! `DOCKER_CONFIG` so parallel tests never share a config file.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use berth_contract::{FunctionConfig, Mode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{BUSYBOX, Server, image};

pub(crate) fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `127.0.0.1:PORT`: how Docker and skopeo name the server's registry.
pub(crate) fn host(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub(crate) fn docker(config: &Path) -> Command {
    let mut c = Command::new("docker");
    c.env("DOCKER_CONFIG", config).env("DOCKER_BUILDKIT", "0");
    c
}

fn skopeo() -> Command {
    let mut c = Command::new("skopeo");
    // skopeo reads registry settings from the user's config; none apply.
    c.env("REGISTRY_AUTH_FILE", "/dev/null");
    c
}

fn image_id(config: &Path, image: &str) -> String {
    let out = run(docker(config).args(["image", "inspect", "-f", "{{.Id}}", image]));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Removes the test's image tags from the engine, whatever happens.
pub(crate) struct Images<'a>(pub &'a Path, pub Vec<String>);

impl Drop for Images<'_> {
    fn drop(&mut self) {
        for tag in &self.1 {
            let _ = docker(self.0).args(["rmi", "-f", tag]).output();
        }
    }
}

/// The manifest an OCI layout's index names for `tag`, as raw bytes.
fn layout_manifest(layout: &Path) -> Vec<u8> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

fn inspect_raw(server: &Server, reference: &str) -> Vec<u8> {
    run(skopeo().args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &format!("admin:{}", server.key),
        &format!("docker://{}/{reference}", host(server)),
    ]))
    .stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_push_and_pull_round_trip() {
    let server = Server::start().await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("docker");
    let image = format!("{}/admin/bb:v1", host(&server));
    let _cleanup = Images(&config, vec![image.clone()]);

    // An image of its own (two layers of fresh content), so the pull below
    // really has to download it.
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let unique: [u8; 16] = rand::random();
    let mut big = hex::encode(unique).into_bytes();
    big.resize(3 * 1024 * 1024, b'z');
    std::fs::write(ctx.join("a"), &big).unwrap();
    std::fs::write(ctx.join("b"), hex::encode(unique)).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY a /a\nCOPY b /b\n",
    )
    .unwrap();
    run(docker(&config)
        .args(["build", "-q", "-t", &image])
        .arg(&ctx));
    let built = image_id(&config, &image);

    // Without credentials the engine is refused.
    let denied = docker(&config).args(["push", &image]).output().unwrap();
    assert!(!denied.status.success(), "push without login succeeded");

    // `berth login` finds the server and its admin key in the data dir.
    run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["login", "--data-dir"])
        .arg(server.data_dir())
        .env("DOCKER_CONFIG", &config)
        .env_remove("BERTH_URL")
        .env_remove("BERTH_API_KEY"));
    let auth: Value =
        serde_json::from_slice(&std::fs::read(config.join("config.json")).unwrap()).unwrap();
    assert!(auth["auths"][host(&server)].is_object(), "{auth}");

    run(docker(&config).args(["push", &image]));
    run(docker(&config).args(["rmi", &image]));
    run(docker(&config).args(["pull", &image]));
    assert_eq!(image_id(&config, &image), built);

    let tags = server
        .req(Method::GET, "/v2/admin/bb/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags.json::<Value>().await.unwrap(),
        json!({"name": "admin/bb", "tags": ["v1"]})
    );
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_round_trips_are_byte_identical() {
    let server = Server::start().await;
    let work = tempfile::tempdir().unwrap();
    let creds = format!("admin:{}", server.key);
    let registry = |reference: &str| format!("docker://{}/{reference}", host(&server));

    // From an OCI layout and back out.
    let layout = work.path().join("layout");
    run(skopeo().args([
        "copy",
        &format!("docker-daemon:{BUSYBOX}"),
        &format!("oci:{}:t", layout.display()),
    ]));
    let pushed = layout_manifest(&layout);
    run(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("oci:{}:t", layout.display()),
        &registry("admin/sk:oci"),
    ]));
    assert_eq!(inspect_raw(&server, "admin/sk:oci"), pushed);
    let out = work.path().join("out");
    run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &registry("admin/sk:oci"),
        &format!("oci:{}:t", out.display()),
    ]));
    assert_eq!(layout_manifest(&out), pushed);

    // From a `docker save` archive (skopeo writes a schema 2 manifest).
    let archive = work.path().join("bb.tar");
    run(Command::new("docker")
        .args(["save", "-o"])
        .arg(&archive)
        .arg(BUSYBOX));
    run(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("docker-archive:{}", archive.display()),
        &registry("admin/sk:archive"),
    ]));
    let raw = inspect_raw(&server, "admin/sk:archive");
    let m: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let dir = work.path().join("dir");
    run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &registry("admin/sk:archive"),
        &format!("dir:{}", dir.display()),
    ]));
    assert_eq!(std::fs::read(dir.join("manifest.json")).unwrap(), raw);
    // The digest the registry reports is that of those exact bytes.
    let resp = server
        .req(Method::HEAD, "/v2/admin/sk/manifests/archive")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["docker-content-digest"],
        sha256(&raw).as_str()
    );
    assert_eq!(
        resp.headers()["content-length"],
        raw.len().to_string().as_str()
    );
    server.assert_no_panic();
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .args(["-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Uploads a blob in one request through the API key.
pub(crate) async fn put_blob(server: &Server, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let resp = server
        .req(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        )
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_arch_index_over_http_and_skopeo() {
    let server = Server::start().await;
    let repo = "admin/multi";
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
        .unwrap();
        // Compressed, so skopeo copies the layer as it is rather than
        // compressing it (which would change every digest above it).
        let layer = gzip(format!("pretend layer for {arch}").as_bytes());
        let config_d = put_blob(&server, repo, &config).await;
        let layer_d = put_blob(&server, repo, &layer).await;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_d, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_d, "size": layer.len()}],
        }))
        .unwrap();
        let d = sha256(&manifest);
        let resp = server
            .req(Method::PUT, &format!("/v2/{repo}/manifests/{d}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        children.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d, "size": manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": children,
    }))
    .unwrap();
    let resp = server
        .req(Method::PUT, &format!("/v2/{repo}/manifests/latest"))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(index.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        resp.headers()["docker-content-digest"],
        sha256(&index).as_str()
    );

    let resp = server
        .req(Method::GET, &format!("/v2/{repo}/manifests/latest"))
        .header("accept", "application/vnd.oci.image.index.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), index.as_slice());

    // A real client copies every platform out of it.
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("multi");
    run(skopeo().args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--src-creds",
        &format!("admin:{}", server.key),
        &format!("docker://{}/{repo}:latest", host(&server)),
        &format!("oci:{}:m", out.display()),
    ]));
    // skopeo re-serializes a list it copies, so compare what it lists.
    let copied: Value = serde_json::from_slice(&layout_manifest(&out)).unwrap();
    let ours: Value = serde_json::from_slice(&index).unwrap();
    let digests = |v: &Value| {
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(digests(&copied), digests(&ours));
    for m in copied["manifests"].as_array().unwrap() {
        let hex = m["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        assert!(out.join("blobs/sha256").join(hex).exists());
    }
    assert_eq!(inspect_raw(&server, &format!("{repo}:latest")), index);
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_upload_over_http() {
    let server = Server::start().await;
    let resp = server
        .req(Method::POST, "/v2/admin/chunks/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let uuid = resp.headers()["docker-upload-uuid"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.ends_with(&uuid));

    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let (a, b) = data.split_at(1_000_000);
    for (start, chunk) in [(0usize, a), (a.len(), b)] {
        let range = format!("{start}-{}", start + chunk.len() - 1);
        let resp = server
            .req(Method::PATCH, &location)
            .header("content-range", &range)
            .header("content-type", "application/octet-stream")
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{range}");
        assert_eq!(
            resp.headers()["range"],
            range.replace(&format!("{start}-"), "0-").as_str()
        );
        location = resp.headers()["location"].to_str().unwrap().to_owned();
    }
    let status = server.req(Method::GET, &location).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(status.headers()["range"], "0-2999999");

    let d = sha256(&data);
    let resp = server
        .req(Method::PUT, &format!("{location}?digest={d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = server
        .req(Method::GET, &format!("/v2/admin/chunks/blobs/{d}"))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[1000..2000]);
    let resp = server
        .req(Method::GET, &format!("/v2/admin/chunks/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
}

/// A blob far larger than any API body limit streams through without the
/// server holding it in memory.
#[tokio::test(flavor = "multi_thread")]
async fn large_blobs_stream() {
    const SIZE: usize = 256 * 1024 * 1024;
    let server = Server::start().await;
    let piece: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 253) as u8).collect();
    let mut h = Sha256::new();
    for _ in 0..SIZE / piece.len() {
        h.update(&piece);
    }
    let d = format!("sha256:{}", hex::encode(h.finalize()));
    let body = futures::stream::iter(
        (0..SIZE / piece.len()).map(move |_| Ok::<_, std::io::Error>(piece.clone())),
    );
    let resp = server
        .req(
            Method::POST,
            &format!("/v2/admin/big/blobs/uploads/?digest={d}"),
        )
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = server
        .req(Method::HEAD, &format!("/v2/admin/big/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-length"], SIZE.to_string().as_str());
    let peak = server.peak_rss_kib();
    assert!(
        peak < 128 * 1024,
        "server peaked at {peak} KiB for a {SIZE}-byte blob"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_registry_requests_get_spec_errors() {
    let server = Server::start().await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.url);
    put_blob(&server, "admin/app", b"{}").await;
    let missing = sha256(b"never pushed");
    let huge = format!(
        "{{\"schemaVersion\":2,\"pad\":\"{}\"}}",
        "x".repeat(5 * 1024 * 1024)
    );
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "no credentials",
            http.get(url("/v2/")),
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        ),
        (
            "wrong key",
            http.get(url("/v2/"))
                .basic_auth("admin", Some("berth_nope")),
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        ),
        (
            "key under another name",
            http.get(url("/v2/")).basic_auth("alpha", Some(&server.key)),
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        ),
        (
            "unknown blob",
            server.req(Method::GET, &format!("/v2/admin/app/blobs/{missing}")),
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
        ),
        (
            "unknown upload",
            server.req(
                Method::PATCH,
                "/v2/admin/app/blobs/uploads/00000000-0000-4000-8000-000000000000",
            ),
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            "manifest that is not one",
            server
                .req(Method::PUT, "/v2/admin/app/manifests/v1")
                .header("content-type", oci)
                .body("[]"),
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
        ),
        (
            "oversized manifest",
            server
                .req(Method::PUT, "/v2/admin/app/manifests/v1")
                .header("content-type", oci)
                .body(huge),
            StatusCode::PAYLOAD_TOO_LARGE,
            "SIZE_INVALID",
        ),
        (
            "bad tag",
            server
                .req(Method::PUT, "/v2/admin/app/manifests/-v1")
                .header("content-type", oci)
                .body("{}"),
            StatusCode::BAD_REQUEST,
            "TAG_INVALID",
        ),
        (
            "unknown manifest",
            server.req(Method::GET, "/v2/admin/app/manifests/v9"),
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
        ),
        (
            "unknown repository",
            server.req(Method::GET, "/v2/admin/none/tags/list"),
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
        ),
    ];
    for (what, req, status, code) in cases {
        let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(resp.status(), status, "{what}");
        assert_eq!(
            resp.headers()["docker-distribution-api-version"],
            "registry/2.0",
            "{what}"
        );
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"berth\"");
        }
        let body: Value = resp.json().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(body["errors"][0]["code"], code, "{what}: {body}");
    }

    // Nothing but the one good push reached the registry.
    let catalog: Value = server
        .req(Method::GET, "/v2/_catalog")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(catalog["repositories"], json!(["admin/app"]));
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_gc_command_sweeps_unreferenced_blobs() {
    let server = Server::start().await;
    let (config_bytes, layer_bytes) = (b"{\"os\":\"linux\"}", b"referenced layer");
    let config = put_blob(&server, "admin/app", config_bytes).await;
    let layer = put_blob(&server, "admin/app", layer_bytes).await;
    let garbage = put_blob(&server, "admin/app", b"nobody refers to this").await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": config_bytes.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer, "size": layer_bytes.len()}],
    })
    .to_string();
    let resp = server
        .req(Method::PUT, "/v2/admin/app/manifests/v1")
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    let gc = |grace: &str| {
        let out = run(Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "registry",
                "gc",
                "-o",
                "json",
                "--grace-minutes",
                grace,
                "--data-dir",
            ])
            .arg(server.data_dir()));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    // Within the grace period nothing goes: it may be a push in progress.
    let report = gc("60");
    assert_eq!(report["deleted"], 0, "{report}");
    assert_eq!(report["young"], 1, "{report}");
    let report = gc("0");
    assert_eq!(report["deleted"], 1, "{report}");

    let blob = |d: String| server.req(Method::GET, &format!("/v2/admin/app/blobs/{d}"));
    assert_eq!(
        blob(garbage).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(blob(layer).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(blob(config).send().await.unwrap().status(), StatusCode::OK);
    let resp = server
        .req(Method::GET, "/v2/admin/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    server.assert_no_panic();
}

/// Builds a busybox image whose `/version` says `text`, tagged `tag`.
fn version_image(config: &Path, dir: &Path, tag: &str, text: &str) {
    let ctx = dir.join(text);
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("version"), text).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {BUSYBOX}\nCOPY version /version\n"),
    )
    .unwrap();
    run(docker(config).args(["build", "-q", "-t", tag]).arg(&ctx));
}

/// A function deployed from `admin/imgops:v1` is pinned to the digest the
/// tag had then: re-pushing the tag changes nothing that runs, and a new
/// deploy picks up the new digest. (An image removed from the engine behind
/// Berth's back: scenario 22.)
#[tokio::test(flavor = "multi_thread")]
async fn functions_deploy_from_the_registry_pinned_to_a_digest() {
    let server = Server::start().await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("docker");
    let tag = format!("{}/admin/imgops:v1", host(&server));
    let _cleanup = Images(&config, vec![tag.clone()]);
    run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["login", "--data-dir"])
        .arg(server.data_dir())
        .env("DOCKER_CONFIG", &config));

    version_image(&config, work.path(), &tag, "one");
    run(docker(&config).args(["push", &tag]));
    let imgops = FunctionConfig {
        command: Some(vec!["/bin/cat".into(), "/version".into()]),
        mode: Mode::Fresh,
        ..image("imgops:v1")
    };
    let deployed = server.deploy("imgops", &imgops).await;
    let pinned = deployed.function.latest.image_id.clone();
    assert!(
        pinned.starts_with(&format!("{}/admin/imgops@sha256:", host(&server))),
        "{deployed:?}"
    );
    let (status, _, body) = server.invoke("imgops", "", "").await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"one"[..]));

    // The tag moves; the deployed version does not.
    version_image(&config, work.path(), &tag, "two");
    run(docker(&config).args(["push", &tag]));
    let (status, _, body) = server.invoke("imgops", "", "").await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"one"[..]));

    // A new deploy resolves the tag again.
    let redeployed = FunctionConfig {
        env: [("REDEPLOYED".to_owned(), "1".to_owned())].into(),
        ..imgops
    };
    let v2 = server.deploy("imgops", &redeployed).await;
    assert_eq!(v2.version, 2);
    assert_ne!(v2.function.latest.image_id, pinned);
    let (status, _, body) = server.invoke("imgops", "", "").await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"two"[..]));

    // An explicit reference to this registry that it does not have is a
    // clear error, not a silent fallback.
    let resp = server
        .req(Method::PUT, "/v1/functions/nothing")
        .json(&json!({"image": format!("{}/admin/nothing:v9", host(&server))}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    server.assert_no_panic();
}
