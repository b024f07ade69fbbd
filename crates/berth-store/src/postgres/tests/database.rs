//! A database per test case on the server `BERTH_TEST_PG_URL` names:
//! created on the first handle, dropped (with any session still on it)
//! when the case lets go of its factory, pass or fail.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::OnceCell;

use crate::{PgStore, Store};

type Opening = Pin<Box<dyn Future<Output = Arc<dyn Store>> + Send>>;

/// The server's admin database, or `None` when the PostgreSQL tests are
/// skipped on purpose. Panics when neither is said.
pub(super) fn admin_url() -> Option<String> {
    match std::env::var("BERTH_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("BERTH_TEST_PG").as_deref() == Ok("skip") => None,
        _ => panic!(
            "BERTH_TEST_PG_URL is not set: run scripts/test.sh (it starts a throwaway \
             PostgreSQL), or point it at a server you may create databases on; \
             BERTH_TEST_PG=skip skips the PostgreSQL tests"
        ),
    }
}

/// A factory opening handles (each its own pool, as a replica would) on
/// one new database; `None` when skipped.
pub(super) fn fresh() -> Option<impl Fn() -> Opening + Send + Sync + 'static> {
    let admin: PgConnectOptions = admin_url()?.parse().expect("BERTH_TEST_PG_URL parses");
    let database = Arc::new(TestDatabase {
        name: format!("test_{}", berth_core::TaskId::new().0.simple()),
        admin,
        created: OnceCell::new(),
    });
    Some(move || {
        let database = Arc::clone(&database);
        Box::pin(async move { Arc::new(database.open().await) as Arc<dyn Store> }) as Opening
    })
}

/// As [`fresh`], with handles of the concrete store, for the traits it
/// implements besides [`Store`] (the registry's index).
pub(super) fn fresh_pg() -> Option<impl Fn() -> PgOpening + Send + Sync + 'static> {
    let admin: PgConnectOptions = admin_url()?.parse().expect("BERTH_TEST_PG_URL parses");
    let database = Arc::new(TestDatabase {
        name: format!("test_{}", berth_core::TaskId::new().0.simple()),
        admin,
        created: OnceCell::new(),
    });
    Some(move || {
        let database = Arc::clone(&database);
        Box::pin(async move { database.open().await }) as PgOpening
    })
}

pub(super) type PgOpening = Pin<Box<dyn Future<Output = PgStore> + Send>>;

struct TestDatabase {
    admin: PgConnectOptions,
    /// `test_` and hex digits: safe to splice into a statement.
    name: String,
    created: OnceCell<()>,
}

impl TestDatabase {
    async fn open(&self) -> PgStore {
        self.created
            .get_or_init(|| async {
                let mut admin = PgConnection::connect_with(&self.admin)
                    .await
                    .expect("connect to BERTH_TEST_PG_URL");
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {}", self.name)))
                    .execute(&mut admin)
                    .await
                    .expect("create a test database");
                admin.close().await.ok();
            })
            .await;
        PgStore::connect_with(self.admin.clone().database(&self.name))
            .await
            .expect("open the test database")
    }
}

impl Drop for TestDatabase {
    /// On a thread and runtime of its own: this may run inside the case's
    /// runtime, which cannot be blocked on.
    fn drop(&mut self) {
        if self.created.get().is_none() {
            return;
        }
        let admin = self.admin.clone();
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            runtime.block_on(async move {
                let mut admin = PgConnection::connect_with(&admin).await?;
                sqlx::query(AssertSqlSafe(drop)).execute(&mut admin).await?;
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}
