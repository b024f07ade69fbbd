//! Garbage collection on one replica while others push.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};

use super::{Node, Replicas, blob_key, image_manifest, pattern};
use crate::digest::sha256_of;
use crate::{DOCKER_MANIFEST, GcOptions, GcReport, MAINTENANCE_LEASE};

const GRACE: Duration = Duration::from_secs(1);

/// Collections run over and over on one replica (grace: a second) while
/// another pushes images, and re-uses (HEAD, then a manifest naming it) a
/// blob older than the grace: every push succeeds and pulls whole; only
/// what nothing refers to goes.
pub async fn gc_on_one_replica_spares_what_another_pushes(replicas: &Replicas) {
    let pusher = Arc::new(Node::open(replicas).await);
    let collector = Arc::new(Node::open(replicas).await);
    let garbage = pusher.blob("alpha/app", b"nobody refers to this").await;
    let reused_bytes = b"an old layer, used again".to_vec();
    let reused = pusher.blob("alpha/app", &reused_bytes).await;
    tokio::time::sleep(GRACE + Duration::from_millis(1500)).await;

    // The client checks whether it can skip the old layer: it can, and
    // from then on the collections (starting now) must spare it, until the
    // manifest that names it arrives.
    let head = pusher
        .call(
            Method::HEAD,
            &format!("/v2/alpha/app/blobs/{reused}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(head.status, StatusCode::OK);
    let stop = tokio_util::sync::CancellationToken::new();
    let collecting = {
        let (collector, stop) = (Arc::clone(&collector), stop.clone());
        tokio::spawn(async move {
            let mut total = GcReport::default();
            let opts = GcOptions {
                grace: GRACE,
                dry_run: false,
            };
            while !stop.is_cancelled() {
                let r = collector.reg.gc(opts.clone()).await.expect("a collection");
                total.deleted += r.deleted;
                total.young += r.young;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            total
        })
    };
    // Passes go by between the check and the manifest naming the layer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let config = pusher.blob("alpha/app", b"{\"reused\":true}").await;
    let m = image_manifest(&config, 15, &reused, reused_bytes.len());
    let r = pusher
        .put_manifest("alpha/app", "reused", DOCKER_MANIFEST, &m)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let mut pushed = Vec::new();
    for i in 0..6u8 {
        let tag = format!("v{i}");
        pushed.push((
            tag.clone(),
            pusher.image("alpha/app", &tag, &pattern(i, 4000)).await,
        ));
    }
    stop.cancel();
    let total = collecting.await.unwrap();

    let last = collector
        .reg
        .gc(GcOptions {
            grace: GRACE,
            dry_run: false,
        })
        .await
        .unwrap();
    assert!(
        total.deleted + last.deleted >= 1,
        "the garbage went: {total:?} {last:?}"
    );
    for (tag, (bytes, _)) in &pushed {
        assert_eq!(&collector.pull("alpha/app", tag).await, bytes);
    }
    collector.pull("alpha/app", "reused").await;
    let gone = collector
        .get(&format!("/v2/alpha/app/blobs/{garbage}"))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(
        pusher
            .replica
            .blobs
            .head(&blob_key(&garbage))
            .await
            .unwrap()
            .is_none(),
        "its bytes are gone"
    );
}

/// A collection that has doomed a blob holds off every push that relies
/// on it until the bytes are gone: a HEAD says it is absent, a mount
/// falls back to an upload, and an upload waits, then stores it anew.
pub async fn a_push_waits_for_a_collection_deleting_its_blob(replicas: &Replicas) {
    let a = Node::open(replicas).await;
    let collector = Node::open(replicas).await;
    let data = b"a layer about to be collected";
    let d = a.blob("alpha/app", data).await;
    let index = &collector.replica.index;
    let far = index.now_ms().await.unwrap() + 60_000;
    assert!(index.doom_blob(&d, far).await.unwrap(), "doomed");

    let head = a
        .call(
            Method::HEAD,
            &format!("/v2/alpha/app/blobs/{d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(
        head.status,
        StatusCode::NOT_FOUND,
        "a client must upload it"
    );
    let mount = a
        .call(
            Method::POST,
            &format!("/v2/alpha/other/blobs/uploads/?mount={d}&from=alpha/app"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(
        mount.status,
        StatusCode::ACCEPTED,
        "no mount of a doomed blob"
    );

    let pushing = {
        let a = Arc::new(a);
        let push_a = Arc::clone(&a);
        let path = format!("/v2/alpha/other/blobs/uploads/?digest={d}");
        let task = tokio::spawn(async move {
            push_a
                .call(Method::POST, &path, &[], data.to_vec())
                .await
                .status
        });
        (a, task)
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !pushing.1.is_finished(),
        "the push waits for the collection"
    );

    // The collection finishes: bytes first, then the index forgets.
    collector.replica.blobs.delete(&blob_key(&d)).await.unwrap();
    index.forget_blob(&d).await.unwrap();
    let (a, task) = pushing;
    assert_eq!(task.await.unwrap(), StatusCode::CREATED);
    let got = a.get(&format!("/v2/alpha/other/blobs/{d}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(sha256_of(&got.body).to_string(), d);
    let old_link = a.get(&format!("/v2/alpha/app/blobs/{d}")).await;
    assert_eq!(
        old_link.status,
        StatusCode::NOT_FOUND,
        "the collected blob's old links went with it"
    );
}

/// The maintenance lease has one holder at a time; the next takes it once
/// the first gives it up.
pub async fn one_replica_at_a_time_runs_maintenance(replicas: &Replicas) {
    let a = Node::open(replicas).await;
    let b = Node::open(replicas).await;
    let (ia, ib) = (&a.replica.index, &b.replica.index);
    assert!(ia.hold_lease(MAINTENANCE_LEASE, "a", 60_000).await.unwrap());
    assert!(!ib.hold_lease(MAINTENANCE_LEASE, "b", 60_000).await.unwrap());
    assert!(
        ia.hold_lease(MAINTENANCE_LEASE, "a", 60_000).await.unwrap(),
        "renewed"
    );
    ia.release_lease(MAINTENANCE_LEASE, "a").await.unwrap();
    assert!(ib.hold_lease(MAINTENANCE_LEASE, "b", 60_000).await.unwrap());
    // A lapsed lease moves on by itself.
    assert!(ia.hold_lease("other", "a", 1).await.unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(ib.hold_lease("other", "b", 60_000).await.unwrap());
}
