//! Whatever one replica stores, every other sees at once.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use berth_blobs::PART_SIZE;
use serde_json::json;

use super::{Node, Replicas, pattern};
use crate::OCI_MANIFEST;
use crate::digest::sha256_of;

/// An image pushed through one replica (one layer past the blob store's
/// multipart threshold) is pulled, listed, resolved, referred to, mounted
/// and deleted through another.
pub async fn a_push_through_one_replica_pulls_through_another(replicas: &Replicas) {
    let a = Node::open(replicas).await;
    let b = Node::open(replicas).await;
    let layer = pattern(1, PART_SIZE + 300_000);
    let (bytes, digest) = a.image("alpha/app", "v1", &layer).await;

    assert_eq!(b.pull("alpha/app", "v1").await, bytes);
    assert_eq!(b.pull("alpha/app", &digest).await, bytes);
    let head = b
        .call(
            Method::HEAD,
            "/v2/alpha/app/manifests/v1",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("docker-content-digest"), digest);
    let layer_d = sha256_of(&layer).to_string();
    let part = b
        .call(
            Method::GET,
            &format!("/v2/alpha/app/blobs/{layer_d}"),
            &[("range", "bytes=8388600-8388615")],
            Body::empty(),
        )
        .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body.as_ref(), &layer[8_388_600..8_388_616]);
    let tags = b.get("/v2/alpha/app/tags/list").await.json();
    assert_eq!(tags, json!({"name": "alpha/app", "tags": ["v1"]}));
    let catalog = b.get("/v2/_catalog").await.json();
    assert_eq!(catalog["repositories"], json!(["alpha/app"]));
    assert_eq!(
        b.reg.resolve("alpha/app", "v1").await.unwrap().digest,
        digest
    );

    // A signature pushed through the second is a referrer on the first.
    let config = b.blob("alpha/app", b"{}").await;
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [],
        "subject": {"mediaType": crate::DOCKER_MANIFEST, "digest": digest, "size": bytes.len()},
        "annotations": {"who": "b"},
    }))
    .unwrap();
    let sig_d = sha256_of(&sig).to_string();
    let r = b
        .put_manifest("alpha/app", &sig_d, OCI_MANIFEST, &sig)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let refs = a
        .get(&format!("/v2/alpha/app/referrers/{digest}"))
        .await
        .json();
    assert_eq!(refs["manifests"][0]["digest"], sig_d);
    assert_eq!(refs["manifests"][0]["annotations"], json!({"who": "b"}));

    // A mount through one, read through the other.
    let r = a
        .call(
            Method::POST,
            &format!("/v2/alpha/copy/blobs/uploads/?mount={layer_d}&from=alpha/app"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let copy = b.get(&format!("/v2/alpha/copy/blobs/{layer_d}")).await;
    assert_eq!(copy.status, StatusCode::OK);
    assert_eq!(copy.body.len(), layer.len());

    // A deletion through one is gone through the other at once.
    let r = a
        .call(
            Method::DELETE,
            "/v2/alpha/app/manifests/v1",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        b.get("/v2/alpha/app/manifests/v1").await.code(),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(
        b.get(&format!("/v2/alpha/app/manifests/{digest}"))
            .await
            .status,
        StatusCode::OK,
        "the manifest stays, by digest"
    );
}
