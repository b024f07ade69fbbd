//! Test support for the crates above the scheduler: a TaskManager over an
//! in-memory SQLite store and payload blobs in a temporary directory, its
//! executor the executor crate's scripted fake behind the fault-injecting
//! wrapper. Tests drive it through the TaskManager's methods, or through
//! the API's router on top, and look at what the fake ran.
//!
//! A set is more than one replica over one store: [`Manager::replica`]
//! makes another TaskManager, with its own node id and its own fake
//! executor, over the same store and the same blobs, as a second API
//! replica of a set would be.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_blobs::{Blobs, Payloads};
use berth_store::{SqliteStore, Store};
use tokio_util::sync::CancellationToken;

pub use berth_executor::testing::*;
pub use berth_executor::{ExecError, Executor, Exit, RunSpec};

use crate::{Config, TaskManager, hash_key};

pub struct Manager {
    pub tasks: Arc<TaskManager>,
    pub executor: Arc<FaultyExecutor<FakeExecutor>>,
    store: Arc<dyn Store>,
    cfg: Config,
    shutdown: CancellationToken,
    /// The blobs' root, shared with the replicas made from this one:
    /// removed when the last one goes.
    dir: Arc<tempfile::TempDir>,
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
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.expect("store"));
        Self::over(cfg, store)
    }

    /// A fresh TaskManager over `store` (e.g. PostgreSQL, or a wrapper
    /// a test controls), its blobs in a new temporary directory.
    pub fn over(cfg: Config, store: Arc<dyn Store>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::build(cfg, store, Arc::new(dir))
    }

    /// Another replica of the set: a TaskManager named `node_id`, with
    /// this one's configuration otherwise, its own fake executor, over the
    /// same store and the same blobs.
    pub fn replica(&self, node_id: &str) -> Self {
        let cfg = Config {
            node_id: node_id.to_owned(),
            ..self.cfg.clone()
        };
        self.replica_with(cfg, Arc::clone(&self.store))
    }

    /// Another replica with a configuration of its own, over `store`,
    /// which must lead to the same database as this one's (the same store,
    /// or a wrapper around it); the blobs are this one's.
    pub fn replica_with(&self, cfg: Config, store: Arc<dyn Store>) -> Self {
        Self::build(cfg, store, Arc::clone(&self.dir))
    }

    fn build(cfg: Config, store: Arc<dyn Store>, dir: Arc<tempfile::TempDir>) -> Self {
        let executor = Arc::new(FaultyExecutor::new(FakeExecutor::new()));
        let tasks = TaskManager::new(
            Arc::clone(&store),
            payloads_under(dir.path()),
            vec![executor.clone() as Arc<dyn Executor>],
            cfg.clone(),
        );
        Self {
            tasks,
            executor,
            store,
            cfg,
            shutdown: CancellationToken::new(),
            dir,
        }
    }

    pub fn fake(&self) -> &FakeExecutor {
        self.executor.inner()
    }

    /// The store this replica uses (as given: a wrapper stays a wrapper).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The payloads every replica of this set reads and writes, e.g. to
    /// look at an attempt's output by its epoch.
    pub fn payloads(&self) -> Payloads {
        payloads_under(self.dir.path())
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

    /// A clean shutdown, as the server does it: the background loops are
    /// told to stop, then the drain gives attempts still running `grace`
    /// and hands the rest back.
    pub async fn shut_down(&self, grace: Duration) {
        self.shutdown.cancel();
        self.tasks.drain(grace).await;
    }
}

fn payloads_under(root: &Path) -> Payloads {
    Payloads::new(Blobs::local(root.join("blobs")).expect("blobs"))
}
