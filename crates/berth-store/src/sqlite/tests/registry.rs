//! The registry's set suite (`berth_registry::testing`) on SQLite: every
//! replica opens its own store on one database file (its own pools, as a
//! second server process on the machine would) and its own handle on one
//! local blob directory.

use std::sync::Arc;

use berth_blobs::Blobs;
use berth_registry::RegistryIndex;
use berth_registry::testing::{Opening, Replica};

use crate::SqliteStore;

/// One data directory per case: `berth.db` and the blobs beside it, as a
/// server lays them out. It lives as long as the factory.
fn one_data_dir() -> impl Fn() -> Opening + Send + Sync {
    let dir = Arc::new(tempfile::tempdir().expect("a temp dir"));
    move || {
        let dir = Arc::clone(&dir);
        Box::pin(async move {
            let store = SqliteStore::open(&dir.path().join("berth.db"))
                .await
                .expect("open the database");
            let index: Arc<dyn RegistryIndex> = Arc::new(store);
            let blobs = Blobs::local(dir.path()).expect("local blobs");
            Replica { index, blobs }
        })
    }
}

berth_registry::registry_set_tests!(replicas: one_data_dir());
