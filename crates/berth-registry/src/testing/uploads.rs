//! Chunked uploads whose requests a load balancer spreads over replicas.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode};
use berth_blobs::PART_SIZE;
use tokio::sync::Barrier;

use super::{Node, Replicas, pattern};
use crate::Config;
use crate::digest::sha256_of;

async fn start(node: &Node, repo: &str) -> String {
    let r = node
        .call(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json());
    r.header("location").to_owned()
}

/// POST on one replica, a PATCH on each, the status on a third handle,
/// the PUT (with a last chunk) back on the second; pulled through the
/// first. The first chunk is past the multipart threshold.
pub async fn a_chunked_upload_moves_between_replicas(replicas: &Replicas) {
    let a = Node::open(replicas).await;
    let b = Node::open(replicas).await;
    let c = Node::open(replicas).await;
    let data = pattern(2, PART_SIZE + 1_000_123);
    let (first, rest) = data.split_at(PART_SIZE + 1_000_000);
    let (second, last) = rest.split_at(100);

    let location = start(&a, "alpha/chunks").await;
    let range = format!("0-{}", first.len() - 1);
    let r = b
        .call(
            Method::PATCH,
            &location,
            &[("content-range", range.as_str())],
            first.to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json());
    assert_eq!(r.header("range"), range);
    let r = a.call(Method::PATCH, &location, &[], second.to_vec()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json());
    let so_far = format!("0-{}", first.len() + second.len() - 1);
    assert_eq!(r.header("range"), so_far);
    let status = c.get(&location).await;
    assert_eq!(status.status, StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), so_far);

    let d = sha256_of(&data);
    let last_range = format!("{}-{}", data.len() - last.len(), data.len() - 1);
    let r = b
        .call(
            Method::PUT,
            &format!("{location}?digest={d}"),
            &[("content-range", last_range.as_str())],
            last.to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let got = a.get(&format!("/v2/alpha/chunks/blobs/{d}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body.as_ref() == data.as_slice(), "the blob reads back");
    assert_eq!(c.get(&location).await.code(), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(
        a.keys("registry/uploads").await,
        Vec::<String>::new(),
        "no chunk is left"
    );
}

/// A body that starts only once `barrier` lets it: both PATCHes are past
/// their offset check before either appends.
fn held_body(barrier: Arc<Barrier>, data: &'static [u8]) -> Body {
    let stream = futures::stream::once(async move {
        barrier.wait().await;
        Ok::<_, std::io::Error>(Bytes::from_static(data))
    });
    Body::from_stream(stream)
}

/// Two replicas given a chunk for the same offset at the same moment:
/// one appends it, the other answers 416 with the offset that won and
/// leaves no trace; the upload completes with the winner's bytes.
pub async fn two_replicas_appending_at_one_offset_one_wins(replicas: &Replicas) {
    let a = Arc::new(Node::open(replicas).await);
    let b = Arc::new(Node::open(replicas).await);
    let location = start(&a, "alpha/race").await;
    let r = a
        .call(
            Method::PATCH,
            &location,
            &[("content-range", "0-3")],
            b"abcd".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    let barrier = Arc::new(Barrier::new(2));
    let patch = |node: Arc<Node>, data: &'static [u8]| {
        let (location, barrier) = (location.clone(), Arc::clone(&barrier));
        tokio::spawn(async move {
            let body = held_body(barrier, data);
            let r = node
                .call(Method::PATCH, &location, &[("content-range", "4-7")], body)
                .await;
            (
                r.status,
                r.header("range").to_owned(),
                r.header("location").to_owned(),
            )
        })
    };
    let on_a = patch(Arc::clone(&a), b"efgh");
    let on_b = patch(Arc::clone(&b), b"EFGH");
    let (on_a, on_b) = (on_a.await.unwrap(), on_b.await.unwrap());
    let winner: &[u8] = match (on_a.0, on_b.0) {
        (StatusCode::ACCEPTED, StatusCode::RANGE_NOT_SATISFIABLE) => b"efgh",
        (StatusCode::RANGE_NOT_SATISFIABLE, StatusCode::ACCEPTED) => b"EFGH",
        other => panic!("expected one 202 and one 416, got {other:?}"),
    };
    for (status, range, at) in [on_a, on_b] {
        assert_eq!(range, "0-7", "{status}");
        assert_eq!(at, location, "{status}");
    }
    assert_eq!(b.get(&location).await.header("range"), "0-7");
    let whole = [b"abcd".as_slice(), winner].concat();
    let d = sha256_of(&whole);
    let r = b
        .call(
            Method::PUT,
            &format!("{location}?digest={d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    assert_eq!(
        a.get(&format!("/v2/alpha/race/blobs/{d}"))
            .await
            .body
            .as_ref(),
        whole.as_slice()
    );
    assert_eq!(a.keys("registry/uploads").await, Vec::<String>::new());
}

/// A session abandoned on one replica is expired by another, record and
/// chunks; a chunk no session owns is swept by a collection.
pub async fn abandoned_uploads_expire_across_replicas(replicas: &Replicas) {
    let config = Config {
        upload_expiry: Duration::from_millis(300),
        ..Config::default()
    };
    let a = Node::with_config(replicas, config.clone()).await;
    let b = Node::with_config(replicas, config).await;
    let location = start(&a, "alpha/gone").await;
    let r = a
        .call(Method::PATCH, &location, &[], b"abandoned".to_vec())
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let orphan = format!("registry/uploads/{}/0-0000", uuid::Uuid::new_v4());
    a.replica
        .blobs
        .put(&orphan, Bytes::from_static(b"left by a dead replica"), true)
        .await
        .unwrap();
    let live = start(&a, "alpha/kept").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = a
        .call(Method::PATCH, &live, &[], b"still here".to_vec())
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "a used session stays");

    assert_eq!(b.reg.expire_uploads().await, 1);
    assert_eq!(a.get(&location).await.code(), "BLOB_UPLOAD_UNKNOWN");
    let report = b.reg.gc(crate::GcOptions::default()).await.unwrap();
    assert_eq!(report.uploads_removed, 1, "{report:?}");
    let left = a.keys("registry/uploads").await;
    let live_id = live.rsplit('/').next().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].contains(live_id), "{left:?}");
    assert_eq!(a.get(&live).await.status, StatusCode::NO_CONTENT);
}
