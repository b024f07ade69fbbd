//! A data directory written by the registry before it had an index
//! (`testdata/legacy-data-dir`, made by that code: two images under three
//! tags, a signature, a multi-arch index whose children lost their tags,
//! a mounted layer, a repository holding only a layer, an unreferenced
//! blob and an upload in progress) is imported into the index once and
//! then served and collected like anything pushed since.

use std::path::Path;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use super::{Node, Replica, Replicas};
use crate::digest::sha256_of;
use crate::{Config, GcOptions, OCI_INDEX};

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("a directory");
    for entry in std::fs::read_dir(from).expect("the fixture") {
        let entry = entry.expect("a fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("a copy");
        }
    }
}

pub async fn a_legacy_data_directory_is_imported_once(replicas: &Replicas) {
    let data = tempfile::tempdir().expect("a temp dir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/legacy-data-dir");
    copy_tree(&fixture, data.path());
    let root = data.path().join("registry");
    // The bytes stay where they are on the local backend; the index is
    // the set's.
    let local = berth_blobs::Blobs::local(data.path()).expect("local blobs");
    let config = Config {
        upload_expiry: Duration::from_millis(1),
        ..Config::default()
    };
    let open = |replica: Replica| {
        Node::over(
            Replica {
                index: replica.index,
                blobs: local.clone(),
            },
            config.clone(),
        )
    };
    let a = open(replicas().await);
    let b = open(replicas().await);

    assert_eq!(a.reg.import_legacy(&root).await.unwrap(), 4);
    assert_eq!(a.reg.import_legacy(&root).await.unwrap(), 0, "only once");
    assert_eq!(
        b.reg.import_legacy(&root).await.unwrap(),
        0,
        "by any replica"
    );

    let catalog = b.get("/v2/_catalog").await.json();
    assert_eq!(
        catalog["repositories"],
        json!(["alpha/app", "alpha/mounted", "alpha/multi", "beta/lib/base"])
    );
    let tags = b.get("/v2/alpha/app/tags/list").await.json();
    assert_eq!(tags["tags"], json!(["latest", "v1", "v2"]));
    let v1 = b.pull("alpha/app", "v1").await;
    assert_eq!(b.pull("alpha/app", "latest").await, v1);
    b.pull("alpha/app", "v2").await;
    let v1_digest = sha256_of(&v1);
    let refs = b
        .get(&format!("/v2/alpha/app/referrers/{v1_digest}"))
        .await
        .json();
    assert_eq!(refs["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        refs["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );
    assert_eq!(refs["manifests"][0]["annotations"], json!({"who": "me"}));
    let index = b.get("/v2/alpha/multi/manifests/latest").await;
    assert_eq!(index.header("content-type"), OCI_INDEX);
    b.pull("alpha/multi", "latest").await;
    let untagged = b.get("/v2/alpha/multi/tags/list").await.json();
    assert_eq!(untagged["tags"], json!(["latest"]));
    let layer_one = sha256_of(b"layer one");
    let mounted = b.get(&format!("/v2/alpha/mounted/blobs/{layer_one}")).await;
    assert_eq!(mounted.status, StatusCode::OK);
    let lone = sha256_of(b"a lone layer");
    let r = b.get(&format!("/v2/beta/lib/base/blobs/{lone}")).await;
    assert_eq!(r.status, StatusCode::OK);

    // Collected like anything else: what nothing refers to goes (with no
    // grace at all), the old upload too; every image still pulls.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = a
        .reg
        .gc(GcOptions {
            grace: Duration::ZERO,
            dry_run: false,
        })
        .await
        .unwrap();
    assert_eq!(report.deleted, 2, "{report:?}");
    assert_eq!(report.reachable, 13, "{report:?}");
    assert_eq!(report.uploads_removed, 1, "{report:?}");
    let garbage = sha256_of(b"garbage nobody refers to");
    let r = b.get(&format!("/v2/alpha/app/blobs/{garbage}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = b.get(&format!("/v2/beta/lib/base/blobs/{lone}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    for (repo, reference) in [
        ("alpha/app", "v1"),
        ("alpha/app", "v2"),
        ("alpha/multi", "latest"),
    ] {
        b.pull(repo, reference).await;
    }
    assert!(!root.join("uploads").exists(), "the old upload went");
}
