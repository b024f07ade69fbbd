//! A PostgreSQL database of the case's own, on the server
//! `BERTH_TEST_PG_URL` names (its admin database; `scripts/test.sh`
//! starts a throwaway cluster and sets it): created at the start, dropped
//! with any session still on it when the case lets go, pass or fail. The
//! same rule as the store's tests: without the variable a case fails,
//! unless `BERTH_TEST_PG=skip` says to skip them on purpose.
//!
//! Exported for the tests of the crates above (with the `conformance`
//! feature), so that they run against PostgreSQL without SQL of their own.

use std::sync::Arc;

use crate::{PgStore, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

pub struct TestDatabase {
    admin: PgConnectOptions,
    /// `test_` and hex digits: safe to splice into a statement.
    name: String,
}

/// The server's admin database, or `None` when the PostgreSQL cases are
/// skipped on purpose. Panics when neither is said.
fn admin_url() -> Option<String> {
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

impl TestDatabase {
    /// A new, empty database; `None` when skipped.
    pub async fn fresh() -> Option<Self> {
        let admin: PgConnectOptions = admin_url()?.parse().expect("BERTH_TEST_PG_URL parses");
        let name = format!("test_{}", berth_core::TaskId::new().0.simple());
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .expect("connect to BERTH_TEST_PG_URL");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        conn.close().await.ok();
        Some(Self { admin, name })
    }

    /// Another handle on it (a pool of its own, as a replica has).
    pub async fn open(&self) -> Arc<dyn Store> {
        let store = PgStore::connect_with(self.admin.clone().database(&self.name))
            .await
            .expect("open the test database");
        Arc::new(store)
    }
}

impl Drop for TestDatabase {
    /// On a thread and runtime of its own: this may run inside the case's
    /// runtime, which cannot be blocked on.
    fn drop(&mut self) {
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
