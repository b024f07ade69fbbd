//! Two replicas of a set over one store: `node-a` and `node-b`, two
//! TaskManagers with their own node ids and fake executors, sharing one
//! database and one blob root, as two API replicas of a set do. Each talks
//! to the store through its own [`GatedStore`], so a test can cut one off
//! (a partition, a long pause) and see which replica did what.
//!
//! Every case runs on SQLite (one file, a handle per replica) and on
//! PostgreSQL (a database of its own per case on the server
//! `BERTH_TEST_PG_URL` names; without it the PostgreSQL cases fail unless
//! `BERTH_TEST_PG=skip`, as the store's own do). The case about what
//! replicas tell each other also runs on SQLite with an [`EventBus`]
//! standing in for `LISTEN/NOTIFY`.
//!
//! One file per job:
//! - `quotas`: the running quota, counted across the set;
//! - `fencing`: a replica whose claim was taken over changes nothing;
//!   a restarted replica gives up its claims; attempts say who ran what;
//! - `singletons`: set-wide jobs run on one replica, and move;
//! - `invalidation`: a change made through one replica reaches the other;
//! - `drain`: a replica leaving hands its attempts to the others.

mod drain;
mod fencing;
mod invalidation;
mod quotas;
mod singletons;

use std::sync::Arc;

use berth_core::AttemptEnd;
use berth_store::{SqliteStore, Store};

use super::gated::{EventBus, GatedStore};
use super::*;
use crate::lifecycle::{REAPER, RETENTION};

/// The replicas' node ids.
const A: &str = "node-a";
const B: &str = "node-b";

/// Where the set's state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// One SQLite file; it carries no events.
    Sqlite,
    /// The same, with events carried between the replicas by an
    /// [`EventBus`].
    SqliteWithEvents,
    /// A PostgreSQL database of the case's own.
    Postgres,
}

impl Backend {
    fn has_events(self) -> bool {
        self != Backend::Sqlite
    }
}

struct Set {
    a: Manager,
    b: Manager,
    a_store: Arc<GatedStore>,
    b_store: Arc<GatedStore>,
    /// Where the database lives (a temporary directory, or a PostgreSQL
    /// database dropped with it): kept until the case ends.
    _home: Box<dyn std::any::Any + Send + Sync>,
}

impl Set {
    /// Replicas `node-a` (configured as `a` otherwise) and `node-b` (as
    /// `b`), each with its own handle on one fresh database, tenants
    /// `alpha` and `beta` with a key each. `None` when the backend is
    /// skipped on purpose (PostgreSQL with `BERTH_TEST_PG=skip`).
    async fn new(backend: Backend, a: Config, b: Config) -> Option<Self> {
        let (first, second, home): (_, _, Box<dyn std::any::Any + Send + Sync>) = match backend {
            Backend::Sqlite | Backend::SqliteWithEvents => {
                let dir = tempfile::tempdir().expect("tempdir");
                let path = dir.path().join("berth.db");
                let first = SqliteStore::open(&path).await.expect("store");
                let second = SqliteStore::open(&path).await.expect("store");
                let first: Arc<dyn Store> = Arc::new(first);
                (first, Arc::new(second) as Arc<dyn Store>, Box::new(dir))
            }
            Backend::Postgres => {
                let database = berth_store::conformance::TestDatabase::fresh().await?;
                let first = database.open().await;
                let second = database.open().await;
                (first, second, Box::new(database))
            }
        };
        let (a_store, b_store) = if backend == Backend::SqliteWithEvents {
            let bus = EventBus::new();
            (
                GatedStore::with_bus(first, bus.clone()),
                GatedStore::with_bus(second, bus),
            )
        } else {
            (GatedStore::new(first), GatedStore::new(second))
        };
        let (a_store, b_store) = (Arc::new(a_store), Arc::new(b_store));
        let a_cfg = Config {
            node_id: A.into(),
            ..a
        };
        let b_cfg = Config {
            node_id: B.into(),
            ..b
        };
        let a = Manager::over(a_cfg, Arc::clone(&a_store) as Arc<dyn Store>);
        let b = a.replica_with(b_cfg, Arc::clone(&b_store) as Arc<dyn Store>);
        a.add_key(ALPHA, ALPHA_KEY).await;
        a.add_key(BETA, BETA_KEY).await;
        Some(Self {
            a,
            b,
            a_store,
            b_store,
            _home: home,
        })
    }
}

/// Every claim of a task as `(attempt, epoch, node, how it ended)`.
async fn attempts(
    m: &Manager,
    tenant: &str,
    id: TaskId,
) -> Vec<(i64, i64, String, Option<AttemptEnd>)> {
    m.tasks
        .attempts(tenant, id)
        .await
        .expect("attempts")
        .into_iter()
        .map(|a| (a.attempt, a.epoch, a.node, a.ended))
        .collect()
}

/// The tasks the replica's fake executor started, in order.
fn started(m: &Manager) -> Vec<TaskId> {
    m.fake().started().iter().map(|s| s.task_id).collect()
}

/// The case list, written once; each backend's module expands it into one
/// test per case, named after it.
macro_rules! set_cases {
    ($backend:expr) => {
        set_cases!(@each $backend;
            quotas::sync_calls_past_the_quota_are_refused_on_every_replica,
            quotas::async_claims_on_every_replica_stay_within_the_quota,
            fencing::a_replica_whose_lease_lapsed_cannot_finish_what_another_ran,
            fencing::a_restarted_replica_gives_up_its_claims_to_the_others,
            singletons::set_wide_jobs_run_on_one_replica_and_move_when_it_leaves,
            invalidation::a_change_made_on_one_replica_reaches_the_other,
            drain::a_drained_attempt_goes_back_uncounted_and_another_replica_runs_it,
        );
    };
    (@each $backend:expr; $($module:ident::$case:ident),* $(,)?) => {
        $(
            // Several workers, so the replicas really act at once.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::$module::$case($backend).await;
            }
        )*
    };
}

mod sqlite {
    set_cases!(super::Backend::Sqlite);
}

mod postgres {
    set_cases!(super::Backend::Postgres);
}

mod sqlite_with_events {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_made_on_one_replica_reaches_the_other() {
        super::invalidation::a_change_made_on_one_replica_reaches_the_other(
            super::Backend::SqliteWithEvents,
        )
        .await;
    }
}
