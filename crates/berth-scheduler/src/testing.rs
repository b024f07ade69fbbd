//! Test support for the crates above the scheduler: a TaskManager over an
//! in-memory SQLite store and payload files in a temporary directory, its
//! executor the executor crate's scripted fake behind the fault-injecting
//! wrapper. Tests drive it through the TaskManager's methods, or through
//! the API's router on top, and look at what the fake ran.

use std::sync::Arc;

use berth_store::{Payloads, SqliteStore, Store};
use tokio_util::sync::CancellationToken;

pub use berth_executor::testing::*;
pub use berth_executor::{ExecError, Executor, Exit, RunSpec};

use crate::{Config, TaskManager, hash_key};

pub struct Manager {
    pub tasks: Arc<TaskManager>,
    pub executor: Arc<FaultyExecutor<FakeExecutor>>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Manager {
    /// A fresh TaskManager; nothing claims async tasks until
    /// [`Manager::start_background`], so queue tests stay deterministic.
    pub async fn new(cfg: Config) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.expect("store"));
        let executor = Arc::new(FaultyExecutor::new(FakeExecutor::new()));
        let tasks = TaskManager::new(
            Arc::clone(&store),
            Payloads::new(dir.path()),
            vec![executor.clone() as Arc<dyn Executor>],
            cfg,
        );
        Self {
            tasks,
            executor,
            store,
            shutdown: CancellationToken::new(),
            _dir: dir,
        }
    }

    pub fn fake(&self) -> &FakeExecutor {
        self.executor.inner()
    }

    /// Gives `tenant` the API key `key` (and makes the tenant if needed).
    pub async fn add_key(&self, tenant: &str, key: &str) {
        self.store.ensure_tenant(tenant).await.expect("tenant");
        self.store
            .put_api_key(tenant, &hash_key(key), "test")
            .await
            .expect("key");
    }

    /// Starts dispatch, lease renewal and retention, until dropped.
    pub fn start_background(&self) {
        self.tasks.spawn_background(self.shutdown.clone());
    }
}
