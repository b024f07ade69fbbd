//! The SQLite store's tests. The whole conformance suite (see
//! [`crate::conformance`]) runs twice: each case on a fresh in-memory
//! database (the cases needing two handles on a temp file), then every case
//! on a temp file. Below it, only what SQLite alone has: a file that
//! outlives its handle, two pools over one file; and what takes writing a
//! row by hand, which the suite cannot: a node row that does not parse.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use berth_core::{ErrorCode, NewNode, NodeReport, RequestMeta, TaskError, TaskKind};
use sqlx::AssertSqlSafe;

use super::*;
use crate::StoreError;

mod registry;

type Opening = Pin<Box<dyn Future<Output = Arc<dyn Store>> + Send>>;

/// One temp-file database; every call opens another handle (its own pools)
/// on it, as a second server process would. The directory lives as long as
/// the factory, which the case holds to its end.
fn one_file() -> impl Fn() -> Opening {
    let dir = tempfile::tempdir().expect("create a temp dir");
    move || {
        let path = dir.path().join("berth.db");
        Box::pin(async move {
            let store = SqliteStore::open(&path).await.expect("open the database");
            Arc::new(store) as Arc<dyn Store>
        })
    }
}

crate::conformance_tests!(
    store: SqliteStore::in_memory().await.expect("open an in-memory database"),
    handles: one_file(),
);

/// The suite again on a file, where the relaxed pool is a pool of its own
/// and the WAL is real: the configuration a server runs.
mod on_file {
    use super::one_file;

    crate::conformance_tests!(handles: one_file());
}

fn task(kind: TaskKind) -> TaskRecord {
    TaskRecord::new("t", "f", 1, kind, RequestMeta::default())
}

#[tokio::test]
async fn reopening_the_file_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    let queued = task(TaskKind::Async);
    {
        let s = SqliteStore::open(&path).await.unwrap();
        assert!(
            s.create_tenant("t", &QuotaOverrides::default(), &[1; 32])
                .await
                .unwrap()
        );
        let config = serde_json::from_value(serde_json::json!({ "image": "a" })).unwrap();
        s.put_function("t", "f", &config, "sha256:1").await.unwrap();
        s.insert_task(&queued).await.unwrap();
        s.pool.close().await;
        s.relaxed.close().await;
    }
    let s = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        s.tenant_for_key(&[1; 32]).await.unwrap().as_deref(),
        Some("t")
    );
    assert_eq!(
        s.get_function("t", "f")
            .await
            .unwrap()
            .unwrap()
            .latest
            .version,
        1
    );
    assert_eq!(s.get_task("t", queued.id).await.unwrap(), Some(queued));
}

#[tokio::test]
async fn each_in_memory_store_is_its_own_database() {
    let a = SqliteStore::in_memory().await.unwrap();
    let b = SqliteStore::in_memory().await.unwrap();
    let t = task(TaskKind::Async);
    a.insert_task(&t).await.unwrap();
    assert!(b.get_task("t", t.id).await.unwrap().is_none());
    assert!(
        a.clone().get_task("t", t.id).await.unwrap().is_some(),
        "a clone shares its database"
    );
}

/// Sync calls are written through the relaxed pool and read, cancelled and
/// recovered through the durable one; neither may miss the other's rows.
#[tokio::test]
async fn the_relaxed_pool_and_the_durable_one_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("berth.db"))
        .await
        .unwrap();
    let mut call = task(TaskKind::Sync);
    call.status = TaskStatus::Running;
    call.attempt = 1;
    call.epoch = 1;
    call.node = Some("n".into());
    let lease = Lease {
        owner: "n".into(),
        duration_ms: 60_000,
    };
    assert!(s.insert_running(&call, &lease, 10).await.unwrap());
    assert_eq!(s.get_task("t", call.id).await.unwrap(), Some(call.clone()));
    let quick = Finish {
        durable: false,
        ..Finish::failed(TaskError::new(ErrorCode::Timeout, "slow"))
    };
    let fence = Fence {
        id: call.id,
        epoch: 1,
    };
    assert!(s.finish_task(fence, &quick).await.unwrap());
    assert_eq!(
        s.get_task("t", call.id).await.unwrap().unwrap().status,
        TaskStatus::TimedOut
    );
    assert_eq!(
        s.cancel_task("t", call.id).await.unwrap(),
        Some(Cancel::AlreadyFinished(TaskStatus::TimedOut))
    );
}

/// A database written before the set (migrations 1 and 2, by the code of
/// that time) opens: the moved migration files are recognised by version
/// and checksum, the new one runs, and every record reads back with an
/// epoch and a node. The fixture is that database's `.dump`.
#[tokio::test]
async fn a_database_from_before_the_set_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    {
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new().connect_with(opts).await.unwrap();
        sqlx::raw_sql(include_str!("tests/before_the_set.sql"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let s = SqliteStore::open(&path).await.unwrap();
    let id = |n: u8| {
        format!("01900000-0000-7000-8000-00000000000{n}")
            .parse()
            .unwrap()
    };
    let (queued, done, running) = (id(1), id(2), id(3));
    let get = |id| {
        let s = s.clone();
        async move { s.get_task("t", id).await.unwrap().unwrap() }
    };
    let q = get(queued).await;
    assert_eq!(
        (q.status, q.attempt, q.epoch, q.node),
        (TaskStatus::Queued, 0, 0, None)
    );
    let d = get(done).await;
    assert_eq!(
        (d.status, d.epoch),
        (TaskStatus::Succeeded, 0),
        "finished tasks keep epoch 0, where their payloads were moved"
    );
    let r = get(running).await;
    assert_eq!(
        (r.status, r.epoch, r.node.as_deref()),
        (TaskStatus::Running, 1, Some("old-node")),
        "the lease owner became the node"
    );
    assert_eq!(
        s.tenant_for_key(&[1; 32]).await.unwrap().as_deref(),
        Some("t")
    );

    // The old node restarts under its name: its task goes back to the
    // queue (it had no attempt row to close), and runs on.
    let recovered = s.recover(Some("old-node")).await.unwrap();
    assert_eq!(recovered.requeued, [running]);
    let lease = Lease {
        owner: "new-node".into(),
        duration_ms: 60_000,
    };
    let claimed = s.claim_queued(&lease, 10, &[]).await.unwrap();
    let epochs: Vec<_> = claimed.iter().map(|t| (t.id, t.attempt, t.epoch)).collect();
    assert_eq!(epochs, [(queued, 1, 1), (running, 2, 2)]);
}

/// A node row that does not parse is reported as corrupt, never read as
/// something else. The readers are shared, so this holds on PostgreSQL
/// too.
#[tokio::test]
async fn a_node_row_that_does_not_parse_is_corrupt() {
    let s = SqliteStore::in_memory().await.unwrap();
    s.create_join_token("tok", &[1; 32], "").await.unwrap();
    let node = NewNode {
        id: "n".into(),
        zone: None,
        labels: Default::default(),
        address: "http://n:1".into(),
        report: NodeReport::default(),
    };
    assert_eq!(
        s.join_node(&[1; 32], &node, &[2; 32]).await.unwrap(),
        Ok(())
    );
    let report = serde_json::to_string(&NodeReport::default()).unwrap();
    for (column, bad, good) in [
        ("labels", "not json", "{}"),
        ("labels", "[]", "{}"),
        ("state", "asleep", "active"),
        ("report", "{}", report.as_str()),
    ] {
        let set = |value: &str| {
            sqlx::query(AssertSqlSafe(format!("UPDATE nodes SET {column} = ?")))
                .bind(value.to_owned())
                .execute(&s.pool)
        };
        set(bad).await.unwrap();
        assert!(
            matches!(s.get_node("n").await, Err(StoreError::Corrupt(_))),
            "{column} = {bad}"
        );
        assert!(matches!(s.list_nodes().await, Err(StoreError::Corrupt(_))));
        set(good).await.unwrap();
        assert!(s.get_node("n").await.unwrap().is_some());
    }
}
