//! The SQLite store's tests. The whole conformance suite (see
//! [`crate::conformance`]) runs twice: each case on a fresh in-memory
//! database (the cases needing two handles on a temp file), then every case
//! on a temp file. Below it, only what SQLite alone has: a file that
//! outlives its handle, two pools over one file.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::*;

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
        s.insert_task(&queued, None).await.unwrap();
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
    a.insert_task(&t, None).await.unwrap();
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
    let lease = Lease {
        owner: "n".into(),
        expires_at: now_ms() + 60_000,
    };
    s.insert_task(&call, Some(&lease)).await.unwrap();
    assert_eq!(s.get_task("t", call.id).await.unwrap(), Some(call.clone()));
    let quick = Finish {
        durable: false,
        ..Finish::failed(TaskError::new(ErrorCode::Timeout, "slow"))
    };
    assert!(s.finish_task(call.id, 1, &quick).await.unwrap());
    assert_eq!(
        s.get_task("t", call.id).await.unwrap().unwrap().status,
        TaskStatus::TimedOut
    );
    assert_eq!(
        s.cancel_task("t", call.id).await.unwrap(),
        Some(Cancel::AlreadyFinished(TaskStatus::TimedOut))
    );
}
