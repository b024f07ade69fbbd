//! Behaviour tests of the registry: requests go through the real router
//! (`tower::ServiceExt::oneshot`, no sockets) onto real files in a temp
//! directory (the blob store's local backend) and the in-memory index;
//! only the authenticator is a table of keys.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine as _;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::digest::sha256_of;
use crate::*;

const ADMIN: &str = "admin-key";
const ALPHA: &str = "alpha-key";
const BETA: &str = "beta-key";
const READER: &str = "reader-key";

struct Keys;

#[async_trait]
impl Authenticator for Keys {
    async fn authenticate(&self, user: Option<&str>, secret: &str) -> Option<Principal> {
        let (tenant, admin, pull_all) = match secret {
            ADMIN => ("admin", true, false),
            ALPHA => ("alpha", false, false),
            BETA => ("beta", false, false),
            READER => ("internal", false, true),
            _ => return None,
        };
        if user.is_some_and(|u| u != tenant) {
            return None;
        }
        Some(Principal {
            tenant: tenant.into(),
            admin,
            pull_all,
        })
    }
}

struct T {
    // Kept alive for the test; `root` lives inside it.
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    index: Arc<MemoryIndex>,
    reg: Arc<Registry>,
    app: Router,
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

impl T {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("registry");
        Self::open(dir, root)
    }

    fn open(dir: tempfile::TempDir, root: std::path::PathBuf) -> Self {
        Self::open_on(dir, root, Arc::new(MemoryIndex::new()))
    }

    /// A registry over the blob store rooted in `dir` (the data directory:
    /// `root` is its `registry/`) and `index`.
    fn open_on(dir: tempfile::TempDir, root: std::path::PathBuf, index: Arc<MemoryIndex>) -> Self {
        Self::open_metered(dir, root, index, berth_metrics::RegistryMetrics::default())
    }

    /// As [`T::open_on`], recording into `metrics`.
    fn open_metered(
        dir: tempfile::TempDir,
        root: std::path::PathBuf,
        index: Arc<MemoryIndex>,
        metrics: berth_metrics::RegistryMetrics,
    ) -> Self {
        let blobs = berth_blobs::Blobs::local(dir.path()).unwrap();
        let reg = Arc::new(
            Registry::new(Config::default(), index.clone(), blobs, Arc::new(Keys))
                .with_metrics(metrics),
        );
        let app = router(Arc::clone(&reg));
        Self {
            _dir: dir,
            root,
            index,
            reg,
            app,
        }
    }

    /// The same storage and index, as a freshly started process (or
    /// another replica) would see them.
    fn restart(self) -> Self {
        let Self {
            _dir, root, index, ..
        } = self;
        Self::open_on(_dir, root, index)
    }

    /// Files in the upload area (which the blob store removes when empty).
    fn upload_files(&self) -> usize {
        self.tree()
            .iter()
            .filter(|p| {
                p.starts_with("registry/uploads/") && self.root.parent().unwrap().join(p).is_file()
            })
            .count()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            let tenant = match key {
                ADMIN => "admin",
                ALPHA => "alpha",
                BETA => "beta",
                READER => "internal",
                _ => "nobody",
            };
            req = req.header(header::AUTHORIZATION, basic(tenant, key));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            headers["docker-distribution-api-version"], "registry/2.0",
            "every response carries the API version"
        );
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str, key: &str) -> Resp {
        self.call(Method::GET, path, Some(key), &[], Body::empty())
            .await
    }

    /// Pushes a blob in one request; returns its digest.
    async fn blob(&self, key: &str, repo: &str, data: &[u8]) -> String {
        let d = sha256_of(data).to_string();
        let r = self
            .call(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                Some(key),
                &[],
                data.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        assert_eq!(r.header("location"), format!("/v2/{repo}/blobs/{d}"));
        assert_eq!(r.header("docker-content-digest"), d);
        d
    }

    async fn put_manifest(
        &self,
        key: &str,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Resp {
        self.call(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            Some(key),
            &[("content-type", media_type)],
            bytes.to_vec(),
        )
        .await
    }

    /// Pushes a config and one layer, then an image manifest under `tag`;
    /// returns the manifest's bytes and digest.
    async fn image(&self, key: &str, repo: &str, tag: &str, layer: &[u8]) -> (Vec<u8>, String) {
        let config = format!("{{\"architecture\":\"amd64\",\"layer\":{}}}", layer.len());
        let c = self.blob(key, repo, config.as_bytes()).await;
        let l = self.blob(key, repo, layer).await;
        let m = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": c, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "digest": l, "size": layer.len()}],
        });
        let bytes = serde_json::to_vec_pretty(&m).unwrap();
        let r = self
            .put_manifest(key, repo, tag, DOCKER_MANIFEST, &bytes)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
        let d = sha256_of(&bytes).to_string();
        assert_eq!(r.header("docker-content-digest"), d);
        (bytes, d)
    }

    /// Every path under the temp directory (the registry root's parent),
    /// so a test sees anything created inside the root or next to it.
    fn tree(&self) -> BTreeSet<String> {
        fn walk(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                out.insert(p.strip_prefix(base).unwrap().display().to_string());
                if p.is_dir() {
                    walk(&p, base, out);
                }
            }
        }
        let base = self.root.parent().unwrap();
        let mut out = BTreeSet::new();
        walk(base, base, &mut out);
        out
    }

    fn blob_files(&self) -> BTreeSet<String> {
        self.tree()
            .into_iter()
            .filter(|p| p.starts_with("registry/blobs/sha") && p.matches('/').count() == 4)
            .collect()
    }
}

fn set_mtime(path: &Path, ago: Duration) {
    // A read-only handle is enough for the owner, and works on directories.
    std::fs::File::open(path)
        .unwrap()
        .set_modified(SystemTime::now() - ago)
        .unwrap();
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn base_endpoint_and_auth() {
    let t = T::new();
    let r = t.call(Method::GET, "/v2/", None, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), "Basic realm=\"berth\"");
    assert_eq!(r.code(), "UNAUTHORIZED");
    let r = t
        .call(
            Method::GET,
            "/v2/",
            None,
            &[("authorization", &basic("alpha", "wrong"))],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The user name must match the key's tenant.
    let r = t
        .call(
            Method::GET,
            "/v2/",
            None,
            &[("authorization", &basic("beta", ALPHA))],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(t.get("/v2/", ALPHA).await.status, StatusCode::OK);
    // Bearer keys work as well.
    let r = t
        .call(
            Method::GET,
            "/v2/",
            None,
            &[("authorization", &format!("Bearer {ALPHA}"))],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Anonymous requests anywhere get the challenge, before any parsing.
    let r = t
        .call(
            Method::PUT,
            "/v2/alpha/x/manifests/v1",
            None,
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn namespaces_are_enforced() {
    let t = T::new();
    let d = t.blob(ALPHA, "alpha/app", b"alpha's layer").await;
    for (method, path) in [
        (Method::GET, format!("/v2/alpha/app/blobs/{d}")),
        (Method::HEAD, format!("/v2/alpha/app/blobs/{d}")),
        (Method::POST, "/v2/alpha/app/blobs/uploads/".into()),
        (Method::GET, "/v2/alpha/app/tags/list".into()),
        (Method::DELETE, format!("/v2/alpha/app/blobs/{d}")),
    ] {
        let r = t
            .call(method.clone(), &path, Some(BETA), &[], Body::empty())
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}");
        if method != Method::HEAD {
            assert_eq!(r.code(), "DENIED");
        }
    }
    // A bare tenant name is not a repository anybody but admin can push.
    let r = t
        .call(
            Method::POST,
            "/v2/alpha/blobs/uploads/",
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // pull_all reads everything, writes nothing; admin does everything.
    assert_eq!(
        t.get(&format!("/v2/alpha/app/blobs/{d}"), READER)
            .await
            .status,
        StatusCode::OK
    );
    let r = t
        .call(
            Method::POST,
            "/v2/alpha/app/blobs/uploads/",
            Some(READER),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        t.get(&format!("/v2/alpha/app/blobs/{d}"), ADMIN)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn monolithic_push_and_pull() {
    let t = T::new();
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let d = t.blob(ALPHA, "alpha/app", &data).await;
    let r = t
        .call(
            Method::HEAD,
            &format!("/v2/alpha/app/blobs/{d}"),
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), data.len().to_string());
    assert_eq!(r.header("docker-content-digest"), d);
    assert!(r.body.is_empty());
    let r = t.get(&format!("/v2/alpha/app/blobs/{d}"), ALPHA).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), data.len().to_string());
    assert_eq!(r.body.as_ref(), data.as_slice());
    // Another repository does not see it without a mount.
    let r = t.get(&format!("/v2/alpha/other/blobs/{d}"), ALPHA).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "BLOB_UNKNOWN");
    // The data sits content-addressed under the root.
    let hex = d.strip_prefix("sha256:").unwrap();
    let path = t.root.join("blobs/sha256").join(&hex[..2]).join(hex);
    assert_eq!(std::fs::read(path).unwrap(), data);
    // Nothing is left in the upload area.
    assert_eq!(t.upload_files(), 0);
}

#[tokio::test]
async fn post_then_put_upload() {
    let t = T::new();
    let r = t
        .call(
            Method::POST,
            "/v2/alpha/app/blobs/uploads/",
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let location = r.header("location").to_owned();
    let data = b"all in the PUT";
    let d = sha256_of(data);
    let r = t
        .call(
            Method::PUT,
            &format!("{location}?digest={d}"),
            Some(ALPHA),
            &[],
            data.to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = t.get(&format!("/v2/alpha/app/blobs/{d}"), ALPHA).await;
    assert_eq!(r.body.as_ref(), data);
}

#[tokio::test]
async fn chunked_upload_with_two_patches() {
    let t = T::new();
    let r = t
        .call(
            Method::POST,
            "/v2/alpha/app/blobs/uploads/",
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let location = r.header("location").to_owned();
    let id = r.header("docker-upload-uuid").to_owned();
    assert!(location.ends_with(&id));
    assert_eq!(r.header("range"), "0-0");

    let first = vec![b'a'; 300_000];
    let second = vec![b'b'; 123];
    let r = t
        .call(
            Method::PATCH,
            &location,
            Some(ALPHA),
            &[("content-range", "0-299999"), ("content-length", "300000")],
            first.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json());
    assert_eq!(r.header("range"), "0-299999");
    assert_eq!(r.header("docker-upload-uuid"), id);
    let location = r.header("location").to_owned();

    let status = t.get(&location, ALPHA).await;
    assert_eq!(status.status, StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), "0-299999");

    // The second chunk is streamed without a Content-Range.
    let r = t
        .call(Method::PATCH, &location, Some(ALPHA), &[], second.clone())
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.header("range"), "0-300122");

    let whole = [first, second].concat();
    let d = sha256_of(&whole);
    let r = t
        .call(
            Method::PUT,
            &format!("{location}?digest={d}"),
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let r = t.get(&format!("/v2/alpha/app/blobs/{d}"), ALPHA).await;
    assert_eq!(r.body.as_ref(), whole.as_slice());
    // The session is over.
    assert_eq!(t.get(&location, ALPHA).await.code(), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn out_of_order_chunk_is_416_and_harmless() {
    let t = T::new();
    let r = t
        .call(
            Method::POST,
            "/v2/alpha/app/blobs/uploads/",
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    let location = r.header("location").to_owned();
    let r = t
        .call(
            Method::PATCH,
            &location,
            Some(ALPHA),
            &[("content-range", "0-3")],
            b"abcd".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    for range in ["10-13", "0-3", "2-5"] {
        let r = t
            .call(
                Method::PATCH,
                &location,
                Some(ALPHA),
                &[("content-range", range)],
                b"efgh".to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(r.header("range"), "0-3");
        assert_eq!(r.header("location"), location);
    }
    // A chunk shorter than its Content-Range is rolled back.
    let r = t
        .call(
            Method::PATCH,
            &location,
            Some(ALPHA),
            &[("content-range", "4-9")],
            b"ef".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "BLOB_UPLOAD_INVALID");
    let r = t
        .call(
            Method::PATCH,
            &location,
            Some(ALPHA),
            &[("content-range", "4-7")],
            b"efgh".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let d = sha256_of(b"abcdefgh");
    let r = t
        .call(
            Method::PUT,
            &format!("{location}?digest={d}"),
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
}

#[tokio::test]
async fn wrong_digest_stores_and_links_nothing() {
    let t = T::new();
    let wrong = sha256_of(b"something else");
    // Monolithic.
    let r = t
        .call(
            Method::POST,
            &format!("/v2/alpha/app/blobs/uploads/?digest={wrong}"),
            Some(ALPHA),
            &[],
            b"the real content".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "DIGEST_INVALID");
    // Chunked.
    let r = t
        .call(
            Method::POST,
            "/v2/alpha/app/blobs/uploads/",
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    let location = r.header("location").to_owned();
    t.call(
        Method::PATCH,
        &location,
        Some(ALPHA),
        &[],
        b"the real content".to_vec(),
    )
    .await;
    let r = t
        .call(
            Method::PUT,
            &format!("{location}?digest={wrong}"),
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "DIGEST_INVALID");

    assert!(t.blob_files().is_empty(), "{:?}", t.blob_files());
    let tree = t.tree();
    assert!(
        !tree.iter().any(|p| p.contains("_layers/")),
        "no link: {tree:?}"
    );
    assert_eq!(t.upload_files(), 0);
    let real = sha256_of(b"the real content");
    let r = t.get(&format!("/v2/alpha/app/blobs/{real}"), ALPHA).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A malformed digest is refused the same way.
    let r = t
        .call(
            Method::POST,
            "/v2/alpha/app/blobs/uploads/?digest=sha256:nothex",
            Some(ALPHA),
            &[],
            b"x".to_vec(),
        )
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
}

#[tokio::test]
async fn bad_names_touch_no_files() {
    let t = T::new();
    let before = t.tree();
    let long = format!("admin/{}", "a".repeat(300));
    let names = [
        "..",
        "admin/..",
        "admin/../../escape",
        "%2e%2e",
        "admin/%2e%2e",
        "admin/%2E%2E/x",
        "Admin/x",
        "admin/X",
        "admin//b",
        "admin/a b",
        long.as_str(),
    ];
    let d = sha256_of(b"x");
    let mut tried = 0;
    for name in names {
        for (method, path, body) in [
            (
                Method::POST,
                format!("/v2/{name}/blobs/uploads/?digest={d}"),
                b"x".to_vec(),
            ),
            (
                Method::POST,
                format!("/v2/{name}/blobs/uploads/"),
                Vec::new(),
            ),
            (
                Method::PUT,
                format!("/v2/{name}/manifests/v1"),
                b"{}".to_vec(),
            ),
            (Method::GET, format!("/v2/{name}/tags/list"), Vec::new()),
            (Method::GET, format!("/v2/{name}/blobs/{d}"), Vec::new()),
        ] {
            let Ok(req) = Request::builder().uri(&path).body(()) else {
                continue; // not even a URI: no request could carry it
            };
            drop(req);
            tried += 1;
            let r = t.call(method.clone(), &path, Some(ADMIN), &[], body).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {path}");
            assert_eq!(r.code(), "NAME_INVALID", "{method} {path}");
        }
    }
    assert_eq!(
        tried,
        (names.len() - 1) * 5,
        "only the name with a space is no URI"
    );
    assert_eq!(t.tree(), before, "a bad name changed the filesystem");
}

#[tokio::test]
async fn bad_tags_and_digests_in_manifest_paths() {
    let t = T::new();
    let r = t
        .put_manifest(ADMIN, "admin/x", ".bad", OCI_MANIFEST, b"{}")
        .await;
    assert_eq!(r.code(), "TAG_INVALID");
    let r = t
        .put_manifest(ADMIN, "admin/x", "sha256:abc", OCI_MANIFEST, b"{}")
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    let r = t.get("/v2/admin/x/manifests/nope", ADMIN).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "MANIFEST_UNKNOWN");
    let r = t.get("/v2/admin/x/tags/list", ADMIN).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "NAME_UNKNOWN");
    let r = t.get("/v2/admin/x/nonsense", ADMIN).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn manifest_round_trip_is_byte_identical() {
    let t = T::new();
    let (bytes, d) = t.image(ALPHA, "alpha/app", "v1", b"layer one").await;
    for reference in ["v1", d.as_str()] {
        let r = t
            .get(&format!("/v2/alpha/app/manifests/{reference}"), ALPHA)
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body.as_ref(), bytes.as_slice());
        assert_eq!(r.header("content-type"), DOCKER_MANIFEST);
        assert_eq!(r.header("docker-content-digest"), d);
        let h = t
            .call(
                Method::HEAD,
                &format!("/v2/alpha/app/manifests/{reference}"),
                Some(ALPHA),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.header("content-length"), bytes.len().to_string());
        assert_eq!(h.header("docker-content-digest"), d);
    }
    // Pushing by digest checks the digest.
    let wrong = sha256_of(b"nope");
    let r = t
        .put_manifest(
            ALPHA,
            "alpha/app",
            &wrong.to_string(),
            DOCKER_MANIFEST,
            &bytes,
        )
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    let r = t
        .put_manifest(ALPHA, "alpha/app", &d, DOCKER_MANIFEST, &bytes)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/alpha/app/manifests/{d}"));
    // The resolver sees what a pull sees.
    let resolved = t.reg.resolve("alpha/app", "v1").await.unwrap();
    assert_eq!(resolved.digest, d);
    assert_eq!(resolved.media_type, DOCKER_MANIFEST);
    assert_eq!(t.reg.resolve("alpha/app", &d).await.unwrap().digest, d);
    assert!(matches!(
        t.reg.resolve("alpha/app", "v2").await,
        Err(RegistryError::ManifestUnknown(_))
    ));
    assert!(matches!(
        t.reg.resolve("alpha/../x", "v1").await,
        Err(RegistryError::NameInvalid(_))
    ));
}

#[tokio::test]
async fn manifest_with_missing_blob_is_refused() {
    let t = T::new();
    let config = t.blob(ALPHA, "alpha/app", b"{}").await;
    let missing = sha256_of(b"never pushed");
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": missing.to_string(), "size": 12}],
    });
    let r = t
        .put_manifest(
            ALPHA,
            "alpha/app",
            "v1",
            OCI_MANIFEST,
            m.to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN");
    // A blob pushed to another repository is not this one's either.
    let elsewhere = t.blob(ALPHA, "alpha/other", b"never pushed").await;
    assert_eq!(elsewhere, missing.to_string());
    let r = t
        .put_manifest(
            ALPHA,
            "alpha/app",
            "v1",
            OCI_MANIFEST,
            m.to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN");
    // Nothing was stored or tagged.
    assert_eq!(
        t.get("/v2/alpha/app/manifests/v1", ALPHA).await.status,
        StatusCode::NOT_FOUND
    );
    let tags = t.get("/v2/alpha/app/tags/list", ALPHA).await.json();
    assert_eq!(tags["tags"], json!([]));
    let md = sha256_of(m.to_string().as_bytes());
    assert!(!t.blob_files().iter().any(|p| p.ends_with(md.hex())));
    // Sizes must match what is stored.
    let wrong_size = json!({
        "schemaVersion": 2,
        "config": {"mediaType": "x", "digest": config, "size": 3},
        "layers": [],
    });
    let r = t
        .put_manifest(
            ALPHA,
            "alpha/app",
            "v1",
            OCI_MANIFEST,
            wrong_size.to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
    // Garbage is MANIFEST_INVALID.
    let r = t
        .put_manifest(ALPHA, "alpha/app", "v1", OCI_MANIFEST, b"not json")
        .await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
}

#[tokio::test]
async fn oversized_manifest_is_refused_unstored() {
    let t = T::new();
    let config = t.blob(ALPHA, "alpha/app", b"{}").await;
    let before = t.tree();
    let mut m = json!({
        "schemaVersion": 2,
        "config": {"mediaType": "x", "digest": config, "size": 2},
        "layers": [],
        "annotations": {"padding": "x".repeat(5 * 1024 * 1024)},
    })
    .to_string()
    .into_bytes();
    let r = t
        .put_manifest(ALPHA, "alpha/app", "big", OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.code(), "SIZE_INVALID");
    // Also when the length is not declared up front (a streamed body).
    m.truncate(MAX_MANIFEST_BYTES + 10);
    let stream = futures::stream::iter(
        m.chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let r = t
        .call(
            Method::PUT,
            "/v2/alpha/app/manifests/big",
            Some(ALPHA),
            &[("content-type", OCI_MANIFEST)],
            Body::from_stream(stream),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(t.tree(), before);
}

#[tokio::test]
async fn range_requests() {
    let t = T::new();
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let d = t.blob(ALPHA, "alpha/app", &data).await;
    let path = format!("/v2/alpha/app/blobs/{d}");
    let r = t
        .call(
            Method::GET,
            &path,
            Some(ALPHA),
            &[("range", "bytes=100-199")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.header("content-range"), "bytes 100-199/10000");
    assert_eq!(r.header("content-length"), "100");
    assert_eq!(r.body.as_ref(), &data[100..200]);
    let r = t
        .call(
            Method::GET,
            &path,
            Some(ALPHA),
            &[("range", "bytes=9990-")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.body.as_ref(), &data[9990..]);
    let r = t
        .call(
            Method::GET,
            &path,
            Some(ALPHA),
            &[("range", "bytes=20000-")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), "bytes */10000");
}

#[tokio::test]
async fn tags_are_paginated() {
    let t = T::new();
    let (bytes, _) = t.image(ALPHA, "alpha/app", "a", b"layer").await;
    for tag in ["b", "c", "d", "e"] {
        let r = t
            .put_manifest(ALPHA, "alpha/app", tag, DOCKER_MANIFEST, &bytes)
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let all = t.get("/v2/alpha/app/tags/list", ALPHA).await;
    assert_eq!(
        all.json(),
        json!({"name": "alpha/app", "tags": ["a", "b", "c", "d", "e"]})
    );
    assert!(all.headers.get("link").is_none());

    let mut seen = Vec::new();
    let mut next = "/v2/alpha/app/tags/list?n=2".to_owned();
    loop {
        let r = t.get(&next, ALPHA).await;
        assert_eq!(r.status, StatusCode::OK);
        let page: Vec<String> = serde_json::from_value(r.json()["tags"].clone()).unwrap();
        assert!(page.len() <= 2);
        seen.extend(page);
        let link = r.header("link");
        if link.is_empty() {
            break;
        }
        assert!(link.ends_with("; rel=\"next\""), "{link}");
        next = link[1..link.find('>').unwrap()].to_owned();
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    let r = t.get("/v2/alpha/app/tags/list?n=10&last=c", ALPHA).await;
    assert_eq!(r.json()["tags"], json!(["d", "e"]));
    let r = t.get("/v2/alpha/app/tags/list?n=x", ALPHA).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn catalog_is_paginated_and_filtered() {
    let t = T::new();
    for repo in ["alpha/a", "alpha/b/c", "alpha/d"] {
        t.blob(ALPHA, repo, b"x").await;
    }
    t.blob(BETA, "beta/secret", b"y").await;
    let r = t.get("/v2/_catalog", ALPHA).await;
    assert_eq!(
        r.json()["repositories"],
        json!(["alpha/a", "alpha/b/c", "alpha/d"])
    );
    let r = t.get("/v2/_catalog?n=2", ALPHA).await;
    assert_eq!(r.json()["repositories"], json!(["alpha/a", "alpha/b/c"]));
    assert_eq!(
        r.header("link"),
        "</v2/_catalog?n=2&last=alpha/b/c>; rel=\"next\""
    );
    let r = t.get("/v2/_catalog?n=2&last=alpha/b/c", ALPHA).await;
    assert_eq!(r.json()["repositories"], json!(["alpha/d"]));
    assert!(r.headers.get("link").is_none());
    let r = t.get("/v2/_catalog", ADMIN).await;
    assert_eq!(r.json()["repositories"].as_array().unwrap().len(), 4);
    let r = t.get("/v2/_catalog", BETA).await;
    assert_eq!(r.json()["repositories"], json!(["beta/secret"]));
}

#[tokio::test]
async fn mounts_within_a_tenant_only() {
    let t = T::new();
    let d = t.blob(ALPHA, "alpha/src", b"shared layer").await;
    let r = t
        .call(
            Method::POST,
            &format!("/v2/alpha/dst/blobs/uploads/?mount={d}&from=alpha/src"),
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/alpha/dst/blobs/{d}"));
    assert_eq!(
        t.get(&format!("/v2/alpha/dst/blobs/{d}"), ALPHA)
            .await
            .body
            .as_ref(),
        b"shared layer"
    );

    // beta cannot read alpha's repository, so nothing is mounted: it gets
    // an upload session, exactly as if the blob did not exist.
    let r = t
        .call(
            Method::POST,
            &format!("/v2/beta/dst/blobs/uploads/?mount={d}&from=alpha/src"),
            Some(BETA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(!r.header("docker-upload-uuid").is_empty());
    let r = t.get(&format!("/v2/beta/dst/blobs/{d}"), BETA).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // And mounting into another tenant's repository is denied outright.
    let r = t
        .call(
            Method::POST,
            &format!("/v2/alpha/dst2/blobs/uploads/?mount={d}&from=alpha/src"),
            Some(BETA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "DENIED");
    // A mount of something the source lacks also falls back to an upload.
    let absent = sha256_of(b"absent");
    let r = t
        .call(
            Method::POST,
            &format!("/v2/alpha/dst/blobs/uploads/?mount={absent}&from=alpha/src"),
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn oci_index_push_and_fetch() {
    let t = T::new();
    let (amd, amd_d) = t.image(ALPHA, "alpha/multi", "amd64", b"amd64 layer").await;
    let (arm, arm_d) = t.image(ALPHA, "alpha/multi", "arm64", b"arm64 layer").await;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": amd_d, "size": amd.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": DOCKER_MANIFEST, "digest": arm_d, "size": arm.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let r = t
        .put_manifest(ALPHA, "alpha/multi", "latest", OCI_INDEX, &bytes)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let r = t.get("/v2/alpha/multi/manifests/latest", ALPHA).await;
    assert_eq!(r.body.as_ref(), bytes.as_slice());
    assert_eq!(r.header("content-type"), OCI_INDEX);
    // A child may be fetched by digest from the index.
    let child = t
        .get(&format!("/v2/alpha/multi/manifests/{arm_d}"), ALPHA)
        .await;
    assert_eq!(child.body.as_ref(), arm.as_slice());

    // An index whose child is missing from the repository is refused.
    let r = t
        .put_manifest(ALPHA, "alpha/elsewhere", "latest", OCI_INDEX, &bytes)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(
        t.get("/v2/alpha/elsewhere/manifests/latest", ALPHA)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn subject_header_and_referrers() {
    let t = T::new();
    let (_, subject) = t.image(ALPHA, "alpha/app", "v1", b"layer").await;
    let config = t.blob(ALPHA, "alpha/app", b"{}").await;
    let sig = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [],
        "subject": {"mediaType": DOCKER_MANIFEST, "digest": subject, "size": 1},
        "annotations": {"who": "me"},
    });
    let bytes = serde_json::to_vec(&sig).unwrap();
    let d = sha256_of(&bytes);
    let r = t
        .put_manifest(ALPHA, "alpha/app", &d.to_string(), OCI_MANIFEST, &bytes)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    assert_eq!(r.header("oci-subject"), subject);
    let r = t
        .get(&format!("/v2/alpha/app/referrers/{subject}"), ALPHA)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), OCI_INDEX);
    let list = r.json()["manifests"].clone();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["digest"], d.to_string());
    assert_eq!(list[0]["artifactType"], "application/vnd.example.sig");
    let r = t
        .get(
            &format!("/v2/alpha/app/referrers/{subject}?artifactType=other"),
            ALPHA,
        )
        .await;
    assert_eq!(r.json()["manifests"], json!([]));
    assert_eq!(r.header("oci-filters-applied"), "artifactType");
}

#[tokio::test]
async fn deletes() {
    let t = T::new();
    let (bytes, d) = t.image(ALPHA, "alpha/app", "v1", b"layer").await;
    t.put_manifest(ALPHA, "alpha/app", "v2", DOCKER_MANIFEST, &bytes)
        .await;
    let r = t
        .call(
            Method::DELETE,
            "/v2/alpha/app/manifests/v2",
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        t.get("/v2/alpha/app/tags/list", ALPHA).await.json()["tags"],
        json!(["v1"])
    );
    let r = t
        .call(
            Method::DELETE,
            &format!("/v2/alpha/app/manifests/{d}"),
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        t.get("/v2/alpha/app/manifests/v1", ALPHA).await.code(),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(
        t.get("/v2/alpha/app/tags/list", ALPHA).await.json()["tags"],
        json!([])
    );
    let layer = sha256_of(b"layer");
    let r = t
        .call(
            Method::DELETE,
            &format!("/v2/alpha/app/blobs/{layer}"),
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        t.get(&format!("/v2/alpha/app/blobs/{layer}"), ALPHA)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = t
        .call(
            Method::DELETE,
            &format!("/v2/alpha/app/blobs/{layer}"),
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.code(), "BLOB_UNKNOWN");
}

#[tokio::test]
async fn uploads_survive_a_restart_and_can_be_cancelled() {
    let t = T::new();
    let r = t
        .call(
            Method::POST,
            "/v2/alpha/app/blobs/uploads/",
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    let location = r.header("location").to_owned();
    t.call(
        Method::PATCH,
        &location,
        Some(ALPHA),
        &[],
        b"before ".to_vec(),
    )
    .await;
    let t = t.restart();
    // Another repository cannot use the session.
    let id = location.rsplit('/').next().unwrap();
    let r = t
        .get(&format!("/v2/alpha/other/blobs/uploads/{id}"), ALPHA)
        .await;
    assert_eq!(r.code(), "BLOB_UPLOAD_UNKNOWN");
    let r = t.get(&location, ALPHA).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("range"), "0-6");
    let r = t
        .call(
            Method::PATCH,
            &location,
            Some(ALPHA),
            &[("content-range", "7-11")],
            b"after".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let d = sha256_of(b"before after");
    let r = t
        .call(
            Method::PUT,
            &format!("{location}?digest={d}"),
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());

    let r = t
        .call(
            Method::POST,
            "/v2/alpha/app/blobs/uploads/",
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    let location = r.header("location").to_owned();
    let r = t
        .call(Method::DELETE, &location, Some(ALPHA), &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(t.get(&location, ALPHA).await.code(), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(t.upload_files(), 0);
    // Ids that are not canonical never reach the filesystem.
    let r = t
        .get("/v2/alpha/app/blobs/uploads/..%2f..%2fx", ALPHA)
        .await;
    assert_eq!(r.code(), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn upload_sessions_are_bounded_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        max_upload_sessions: 2,
        upload_expiry: Duration::from_millis(50),
        ..Config::default()
    };
    let blobs = berth_blobs::Blobs::local(dir.path()).unwrap();
    let index = Arc::new(MemoryIndex::new());
    let reg = Arc::new(Registry::new(cfg, index.clone(), blobs, Arc::new(Keys)));
    let app = router(Arc::clone(&reg));
    let post = || {
        Request::post("/v2/alpha/app/blobs/uploads/")
            .header(header::AUTHORIZATION, basic("alpha", ALPHA))
            .body(Body::empty())
            .unwrap()
    };
    for _ in 0..2 {
        let r = app.clone().oneshot(post()).await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let r = app.clone().oneshot(post()).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // Once idle past the expiry they make room (and their records go).
    tokio::time::sleep(Duration::from_millis(80)).await;
    let r = app.clone().oneshot(post()).await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(index.count_uploads().await.unwrap(), 1);
}

#[tokio::test]
async fn gc_keeps_what_is_referenced_or_young() {
    let t = T::new();
    let (_, manifest) = t.image(ALPHA, "alpha/app", "v1", b"kept layer").await;
    let (idx_child, child_d) = t.image(ALPHA, "alpha/multi", "child", b"child layer").await;
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": DOCKER_MANIFEST, "digest": child_d, "size": idx_child.len()}]});
    let r = t
        .put_manifest(
            ALPHA,
            "alpha/multi",
            "idx",
            OCI_INDEX,
            index.to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // The child's tag goes: it stays reachable through the index.
    t.call(
        Method::DELETE,
        "/v2/alpha/multi/manifests/child",
        Some(ALPHA),
        &[],
        Body::empty(),
    )
    .await;
    let garbage = t.blob(ALPHA, "alpha/app", b"unreferenced").await;
    let fresh = t.blob(ALPHA, "alpha/app", b"just uploaded").await;

    // Everything but `fresh` is made old: its bytes, and its last use.
    let old = Duration::from_secs(7200);
    let old_ms = (SystemTime::now() - old)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for p in t.blob_files() {
        if !p.ends_with(&fresh["sha256:".len()..]) {
            set_mtime(&t.root.parent().unwrap().join(&p), old);
            let hex = p.rsplit('/').next().unwrap();
            t.index.set_touched(&format!("sha256:{hex}"), old_ms);
        }
    }
    let dry = t
        .reg
        .gc(GcOptions {
            dry_run: true,
            ..GcOptions::default()
        })
        .await
        .unwrap();
    assert_eq!(dry.deleted, 1);
    let before = t.blob_files().len();
    let report = t.reg.gc(GcOptions::default()).await.unwrap();
    assert_eq!(report.deleted, 1, "{report:?}");
    assert_eq!(report.young, 1, "{report:?}");
    assert_eq!(t.blob_files().len(), before - 1);
    assert_eq!(report.bytes_freed, b"unreferenced".len() as u64);

    let gone = t
        .get(&format!("/v2/alpha/app/blobs/{garbage}"), ALPHA)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    for (repo, d) in [
        ("alpha/app", fresh.as_str()),
        ("alpha/app", manifest.as_str()),
        ("alpha/multi", child_d.as_str()),
    ] {
        let r = t.get(&format!("/v2/{repo}/blobs/{d}"), ALPHA).await;
        assert_eq!(r.status, StatusCode::OK, "{repo} {d}");
    }
    // Pulls still work end to end.
    for (repo, reference) in [("alpha/app", "v1"), ("alpha/multi", "idx")] {
        let r = t
            .get(&format!("/v2/{repo}/manifests/{reference}"), ALPHA)
            .await;
        assert_eq!(r.status, StatusCode::OK);
        for d in crate::manifest::references(&r.body).0 {
            let b = t.get(&format!("/v2/{repo}/blobs/{d}"), ALPHA).await;
            assert_eq!(b.status, StatusCode::OK);
        }
    }
    let layer = sha256_of(b"child layer");
    assert_eq!(
        t.get(&format!("/v2/alpha/multi/blobs/{layer}"), ALPHA)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn gc_removes_abandoned_uploads() {
    let t = T::new();
    // An upload left by a previous process: files on disk, no session.
    let stale = t
        .root
        .join("uploads")
        .join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("data"), b"partial").unwrap();
    std::fs::write(stale.join("repo"), b"alpha/app").unwrap();
    set_mtime(&stale.join("data"), Duration::from_secs(7200));
    set_mtime(&stale, Duration::from_secs(7200));
    // A live one.
    let r = t
        .call(
            Method::POST,
            "/v2/alpha/app/blobs/uploads/",
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    let live = r.header("docker-upload-uuid").to_owned();
    let report = t.reg.gc(GcOptions::default()).await.unwrap();
    assert_eq!(report.uploads_removed, 1);
    assert!(!stale.exists());
    let r = t
        .get(&format!("/v2/alpha/app/blobs/uploads/{live}"), ALPHA)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "the live session stays");
}

#[tokio::test]
async fn sha512_digests_are_accepted() {
    let t = T::new();
    let data = b"hashed the long way";
    let mut h = Algorithm::Sha512.hasher();
    h.update(data);
    let d = h.finish();
    assert!(d.to_string().starts_with("sha512:"));
    let r = t
        .call(
            Method::POST,
            &format!("/v2/alpha/app/blobs/uploads/?digest={d}"),
            Some(ALPHA),
            &[],
            data.to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    assert_eq!(
        t.get(&format!("/v2/alpha/app/blobs/{d}"), ALPHA)
            .await
            .body
            .as_ref(),
        data
    );
    // A chunked upload hashes with SHA-256 as it goes; naming SHA-512 at
    // the end still works.
    let r = t
        .call(
            Method::POST,
            "/v2/alpha/other/blobs/uploads/",
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    let location = r.header("location").to_owned();
    t.call(Method::PATCH, &location, Some(ALPHA), &[], data.to_vec())
        .await;
    let r = t
        .call(
            Method::PUT,
            &format!("{location}?digest={d}"),
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
}

#[tokio::test]
async fn pushes_pulls_and_bytes_are_counted() {
    let metrics = berth_metrics::Metrics::new();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("registry");
    let t = T::open_metered(
        dir,
        root,
        Arc::new(MemoryIndex::new()),
        metrics.registry().clone(),
    );
    let layer = b"some layer bytes".to_vec();
    let (manifest, digest) = t.image(ALPHA, "alpha/app", "v1", &layer).await;
    // `T::image`'s config blob.
    let config = format!("{{\"architecture\":\"amd64\",\"layer\":{}}}", layer.len());
    let r = t
        .call(
            Method::HEAD,
            "/v2/alpha/app/manifests/v1",
            Some(ALPHA),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = t.get("/v2/alpha/app/manifests/v1", ALPHA).await;
    assert_eq!(r.body, manifest);
    let layer_digest = sha256_of(&layer).to_string();
    let r = t
        .get(&format!("/v2/alpha/app/blobs/{layer_digest}"), ALPHA)
        .await;
    assert_eq!(r.body, layer);
    assert!(!digest.is_empty());

    let text = metrics.render();
    for (series, n) in [
        ("berth_registry_pushes_total", 1),
        ("berth_registry_pulls_total", 1),
        (
            "berth_registry_received_bytes_total",
            config.len() + layer.len() + manifest.len(),
        ),
        (
            "berth_registry_sent_bytes_total",
            manifest.len() + layer.len(),
        ),
    ] {
        assert!(
            text.contains(&format!("\n{series} {n}\n")),
            "{series} {n} in:\n{text}"
        );
    }
}
