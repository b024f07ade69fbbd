//! A store outlives its database's restart: while the server is down a
//! call fails with [`StoreError::Db`] (the layers above answer 503), and
//! once it is back the same store works again, without being recreated.
//!
//! The server here is one of the test's own, made and driven by
//! `scripts/pg.sh` like the suite's: stopping the shared one would fail
//! every case running beside this one.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_core::{RequestMeta, TaskKind, TaskRecord};
use futures::StreamExt;

use super::database::admin_url;
use crate::{Event, PgStore, Store, StoreError};

#[tokio::test]
async fn a_store_outlives_a_database_restart() {
    if admin_url().is_none() {
        return;
    }
    let cluster = Cluster::start();
    let store = PgStore::connect(&cluster.url()).await.expect("connect");
    let before = task();
    store.insert_task(&before).await.unwrap();
    let mut events = store
        .listen()
        .await
        .unwrap()
        .expect("PostgreSQL carries events");

    cluster.stop();
    let down = store
        .ping()
        .await
        .expect_err("a call fails while the server is down");
    assert!(matches!(down, StoreError::Db(_)), "{down:?}");
    let refused = task();
    let down = store
        .insert_task(&refused)
        .await
        .expect_err("and a write too");
    assert!(matches!(down, StoreError::Db(_)), "{down:?}");
    let end = tokio::time::timeout(Duration::from_secs(30), events.next()).await;
    assert_eq!(
        end.expect("the event stream does not hang"),
        None,
        "the event stream ends with its connection"
    );

    cluster.start_again();
    store.ping().await.expect("the same store answers again");
    assert_eq!(
        store.get_task("t", before.id).await.unwrap(),
        Some(before),
        "what was committed before the restart is there"
    );
    assert_eq!(store.get_task("t", refused.id).await.unwrap(), None);
    store
        .insert_task(&refused)
        .await
        .expect("writes work again");
    let mut events = store
        .listen()
        .await
        .unwrap()
        .expect("listening again works");
    store.notify(&Event::Queued).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), events.next()).await;
    assert_eq!(next.expect("an event arrives"), Some(Event::Queued));
}

fn task() -> TaskRecord {
    TaskRecord::new("t", "f", 1, TaskKind::Async, RequestMeta::default())
}

/// A throwaway server in a temp dir, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir for the cluster");
        // The kernel's pick of a free port, let go for postgres to take.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        pg_sh(&["pg_init", path(dir.path())]);
        let cluster = Self { dir, port };
        cluster.start_again();
        cluster
    }

    fn start_again(&self) {
        pg_sh(&["pg_start", path(self.dir.path()), &self.port.to_string()]);
    }

    fn stop(&self) {
        pg_sh(&["pg_stop", path(self.dir.path())]);
    }

    fn url(&self) -> String {
        format!("postgres://berth@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Already stopped on most paths; this is for a failed assertion.
        let _ = pg_sh_status(&["pg_stop", path(self.dir.path())]);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp dirs have UTF-8 paths")
}

fn pg_sh_status(args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg.sh");
    Command::new("bash").arg(script).args(args).status()
}

fn pg_sh(args: &[&str]) {
    let status = pg_sh_status(args).expect("run scripts/pg.sh");
    assert!(status.success(), "scripts/pg.sh {args:?} failed: {status}");
}
