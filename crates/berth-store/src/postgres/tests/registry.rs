//! The registry's set suite (`berth_registry::testing`) on PostgreSQL and
//! S3: every replica opens its own store on the case's database and its
//! own client of one bucket prefix, as the replicas of a set do.
//!
//! The blob store is the S3-compatible one `BERTH_TEST_S3_URL` names
//! (`scripts/seaweed.sh` starts SeaweedFS and sets it, with the `AWS_*`
//! variables); without it these tests fail, unless `BERTH_TEST_S3=skip`,
//! which runs them on a local blob directory instead (the index is still
//! PostgreSQL's). `BERTH_TEST_PG=skip` skips them, as every test here.

use std::sync::Arc;

use berth_blobs::Blobs;
use berth_registry::RegistryIndex;
use berth_registry::testing::{Opening, Replica};

use super::database::fresh_pg;

enum BlobPlace {
    S3(String),
    Local(tempfile::TempDir),
}

impl BlobPlace {
    /// A prefix no other case uses, or a local directory when S3 is
    /// skipped on purpose.
    fn new() -> Self {
        match std::env::var("BERTH_TEST_S3_URL") {
            Ok(url) if !url.is_empty() => {
                let prefix = berth_core::TaskId::new().0.simple().to_string();
                Self::S3(format!(
                    "{}/registry-set-{prefix}",
                    url.trim_end_matches('/')
                ))
            }
            _ if std::env::var("BERTH_TEST_S3").as_deref() == Ok("skip") => {
                eprintln!("BERTH_TEST_S3=skip: the registry's set suite runs on local blobs");
                Self::Local(tempfile::tempdir().expect("a temp dir"))
            }
            _ => panic!(
                "BERTH_TEST_S3_URL is not set: run scripts/test.sh, or source scripts/seaweed.sh \
                 and call seaweed_start; BERTH_TEST_S3=skip runs these on local blobs"
            ),
        }
    }

    fn open(&self) -> Blobs {
        match self {
            Self::S3(url) => Blobs::from_url(url).expect("s3 blobs"),
            Self::Local(dir) => Blobs::local(dir.path()).expect("local blobs"),
        }
    }
}

/// The case's database and blob place; `None` when PostgreSQL is skipped.
fn one_set() -> Option<impl Fn() -> Opening + Send + Sync> {
    let database = fresh_pg()?;
    let place = Arc::new(BlobPlace::new());
    Some(move || {
        let opening = database();
        let place = Arc::clone(&place);
        Box::pin(async move {
            let index: Arc<dyn RegistryIndex> = Arc::new(opening.await);
            Replica {
                index,
                blobs: place.open(),
            }
        }) as Opening
    })
}

berth_registry::registry_set_tests!(replicas: match one_set() {
    Some(set) => set,
    None => return,
});
