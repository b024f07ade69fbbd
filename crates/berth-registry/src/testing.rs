//! The registry of a set, tested: several replicas, each a [`Registry`] of
//! its own (as each `berth server` has), on one index and one blob store,
//! driven through the real router. Written once against
//! [`RegistryIndex`] and [`Blobs`], so the in-memory index, SQLite and
//! PostgreSQL with S3 are all held to it.
//!
//! A backend runs the whole suite in one line, with an expression giving a
//! factory whose every call opens another replica's handles on that
//! case's one empty index and blob store:
//!
//! ```text
//! berth_registry::registry_set_tests!(replicas: fresh_set());
//! ```
//!
//! The expression is evaluated once per case and may `return` to skip the
//! case (a backend whose server is absent on purpose); it must never do
//! so silently. The crate invoking the macro needs `tokio` with `macros`
//! and `rt-multi-thread`, and this crate with the `testing` feature.

mod collection;
mod legacy;
mod pulls;
mod uploads;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use berth_blobs::Blobs;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub use collection::{
    a_push_waits_for_a_collection_deleting_its_blob, gc_on_one_replica_spares_what_another_pushes,
    one_replica_at_a_time_runs_maintenance,
};
pub use legacy::a_legacy_data_directory_is_imported_once;
pub use pulls::a_push_through_one_replica_pulls_through_another;
pub use uploads::{
    a_chunked_upload_moves_between_replicas, abandoned_uploads_expire_across_replicas,
    two_replicas_appending_at_one_offset_one_wins,
};

use crate::digest::sha256_of;
use crate::{Authenticator, Config, DOCKER_MANIFEST, Principal, Registry, RegistryIndex, router};

/// One replica's handles on the set's shared state.
pub struct Replica {
    pub index: Arc<dyn RegistryIndex>,
    pub blobs: Blobs,
}

pub type Opening = Pin<Box<dyn Future<Output = Replica> + Send>>;

/// Opens another replica's handles on one case's index and blob store.
pub type Replicas = dyn Fn() -> Opening + Send + Sync;

/// Every case of the suite, each as its own `#[tokio::test]`.
#[macro_export]
macro_rules! registry_set_tests {
    (replicas: $replicas:expr) => {
        $crate::__registry_set_case!($replicas;
            a_push_through_one_replica_pulls_through_another,
            a_chunked_upload_moves_between_replicas,
            two_replicas_appending_at_one_offset_one_wins,
            abandoned_uploads_expire_across_replicas,
            gc_on_one_replica_spares_what_another_pushes,
            a_push_waits_for_a_collection_deleting_its_blob,
            one_replica_at_a_time_runs_maintenance,
            a_legacy_data_directory_is_imported_once,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __registry_set_case {
    ($replicas:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let replicas = $replicas;
                $crate::testing::$case(&replicas).await;
            }
        )*
    };
}

/// Lets every credential do anything: these cases are about the set, not
/// about who may push.
struct Anyone;

#[async_trait]
impl Authenticator for Anyone {
    async fn authenticate(&self, _user: Option<&str>, _secret: &str) -> Option<Principal> {
        Some(Principal {
            tenant: "admin".into(),
            admin: true,
            pull_all: false,
        })
    }
}

/// A replica: its registry and its router.
pub struct Node {
    pub reg: Arc<Registry>,
    pub replica: Replica,
    app: Router,
}

/// An answer, read whole.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Node {
    pub async fn open(replicas: &Replicas) -> Self {
        Self::with_config(replicas, Config::default()).await
    }

    pub async fn with_config(replicas: &Replicas, config: Config) -> Self {
        let replica = replicas().await;
        Self::over(replica, config)
    }

    pub fn over(replica: Replica, config: Config) -> Self {
        let reg = Arc::new(Registry::new(
            config,
            Arc::clone(&replica.index),
            replica.blobs.clone(),
            Arc::new(Anyone),
        ));
        let app = router(Arc::clone(&reg));
        Self { reg, replica, app }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, "Bearer test");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body.into()).expect("a request"))
            .await
            .expect("the router answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("a body").to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, &[], Body::empty()).await
    }

    /// Pushes a blob in one request; returns its digest.
    pub async fn blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256_of(data).to_string();
        let r = self
            .call(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                &[],
                data.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
        d
    }

    /// Pushes a config and one layer, then an image manifest under `tag`;
    /// returns the manifest's bytes and digest.
    pub async fn image(&self, repo: &str, tag: &str, layer: &[u8]) -> (Vec<u8>, String) {
        let config = format!("{{\"architecture\":\"amd64\",\"layer\":{}}}", layer.len());
        let c = self.blob(repo, config.as_bytes()).await;
        let l = self.blob(repo, layer).await;
        let bytes = image_manifest(&c, config.len(), &l, layer.len());
        let r = self.put_manifest(repo, tag, DOCKER_MANIFEST, &bytes).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
        (bytes.clone(), sha256_of(&bytes).to_string())
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Resp {
        self.call(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            bytes.to_vec(),
        )
        .await
    }

    /// Pulls `repo:reference` whole through this replica: the manifest
    /// and every blob it names, checked against their digests.
    pub async fn pull(&self, repo: &str, reference: &str) -> Vec<u8> {
        let m = self.get(&format!("/v2/{repo}/manifests/{reference}")).await;
        assert_eq!(m.status, StatusCode::OK, "{repo}:{reference}: {}", m.json());
        let (blobs, children) = crate::manifest::references(&m.body);
        for d in blobs {
            let b = self.get(&format!("/v2/{repo}/blobs/{d}")).await;
            assert_eq!(b.status, StatusCode::OK, "{repo} {d}");
            assert_eq!(sha256_of(&b.body), d, "{repo} {d}");
        }
        for child in children {
            Box::pin(self.pull(repo, &child.to_string())).await;
        }
        m.body.to_vec()
    }

    /// Keys of the blobs under `prefix` of this replica's store.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .replica
            .blobs
            .list(prefix)
            .map(|m| m.expect("listing blobs").key)
            .collect()
            .await;
        keys.sort();
        keys
    }
}

/// An image manifest over one config and one layer.
pub fn image_manifest(config: &str, config_len: usize, layer: &str, layer_len: usize) -> Vec<u8> {
    let m = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": config, "size": config_len},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": layer, "size": layer_len}],
    });
    serde_json::to_vec_pretty(&m).expect("JSON")
}

/// `len` bytes of a pattern no two seeds share.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(31)
                .wrapping_add(u32::from(seed) * 7) as u8
        })
        .collect()
}

/// The key of blob `digest` under the default prefix.
pub fn blob_key(digest: &str) -> String {
    let (alg, hex) = digest.split_once(':').expect("a digest");
    format!("registry/blobs/{alg}/{}/{hex}", &hex[..2])
}

#[cfg(test)]
mod tests {
    //! The suite on the in-memory index and the local blob store.

    use super::*;
    use crate::MemoryIndex;

    fn memory_set() -> impl Fn() -> Opening + Send + Sync {
        let index = Arc::new(MemoryIndex::new());
        let dir = Arc::new(tempfile::tempdir().expect("a temp dir"));
        move || {
            let index: Arc<dyn RegistryIndex> = index.clone();
            let blobs = Blobs::local(dir.path()).expect("local blobs");
            Box::pin(async move { Replica { index, blobs } })
        }
    }

    crate::registry_set_tests!(replicas: memory_set());
}
