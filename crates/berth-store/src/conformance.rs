//! The behaviour every [`Store`] backend owes its callers, written once
//! against `dyn Store` so that SQLite, PostgreSQL and whatever comes next
//! are held to one contract instead of each to its own tests.
//!
//! A backend in another crate takes `berth-store` as a dev-dependency with
//! `features = ["conformance"]` (one in this crate needs nothing: the suite
//! is compiled for its tests) and runs the whole suite from its test
//! module in one line:
//!
//! ```text
//! berth_store::conformance_tests!(store: fresh_store().await, handles: fresh_database());
//! ```
//!
//! - `store` is an expression evaluated inside each case's async test; it
//!   must give a store on an empty database (an `impl Store`, or an
//!   `Arc<dyn Store>`).
//! - `handles` is also evaluated once per case and gives a factory
//!   (`Fn() -> impl Future<Output = Arc<dyn Store>>`) whose every call opens
//!   another handle on that case's one empty database, as a second node
//!   would. The cases of several replicas take it ([`races`], two in
//!   [`nodes`], and one each in [`running`], [`singletons`], [`events`]);
//!   they open their handles one after another, never at once, and then
//!   call through all of them at once.
//!
//! A backend whose factory serves both can write
//! `berth_store::conformance_tests!(handles: fresh_database());` and the
//! single-store cases run on its first handle. Either expression may
//! `return` to end every case early, which is how a backend whose server
//! is absent skips on purpose (see `postgres/tests.rs`); it must never do
//! so silently.
//!
//! Each case becomes its own `#[tokio::test]` named after it, so a failure
//! names the broken behaviour. The list of cases lives in one place (the
//! hidden `__store_conformance_cases!`, readable as [`CASES`]) and the macro
//! always expands all of it: a backend cannot leave a case out, and a unit
//! test here fails if a case is written but not listed. The crate invoking
//! the macro needs `tokio` with `macros` and `rt-multi-thread`.

pub mod attempts;
mod database;
pub mod events;
pub mod fencing;
pub mod finish;
pub mod functions;
pub mod nodes;
pub mod queue;
pub mod races;
pub mod running;
pub mod singletons;
pub mod tasks;
pub mod tenants;

pub use database::TestDatabase;

use std::future::Future;
use std::sync::Arc;

use berth_core::{
    FunctionConfig, Outcome, RequestMeta, TaskId, TaskKind, TaskRecord, TaskStatus, Timing, Usage,
};

use crate::{Fence, Finish, Lease, Store};

/// The suite's one list. Takes the name of a macro (exported from this
/// crate) and the tokens to hand it first, then appends both lists.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_cases {
    ($then:ident { $($ctx:tt)* }) => {
        $crate::$then! {
            $($ctx)*
            store: [
                functions::versions_are_immutable_and_only_made_on_change,
                functions::functions_are_listed_per_tenant,
                functions::deleting_a_function_fails_only_its_queued_tasks,
                queue::queue_claims_fifo_once,
                queue::claiming_zero_or_sync_tasks_claims_nothing,
                queue::claims_skip_tenants_at_their_quota,
                queue::claims_are_fair_across_tenants_and_functions,
                queue::a_requeued_attempt_counts_and_a_released_one_does_not,
                queue::recovery_requeues_then_gives_up,
                queue::renewal_extends_only_the_owners_leases,
                fencing::epochs_only_grow,
                fencing::a_stale_epoch_changes_nothing,
                fencing::a_task_keeps_its_last_node,
                attempts::every_claim_leaves_an_attempt_saying_how_it_ended,
                attempts::attempts_are_the_tasks_tenants_only,
                finish::a_finish_records_outcome_usage_and_timing,
                finish::every_error_code_round_trips,
                finish::a_stale_attempt_cannot_finish_a_task,
                finish::a_task_no_longer_running_cannot_be_finished,
                finish::cancel_and_tenancy,
                running::a_sync_call_is_refused_past_the_running_limit,
                running::running_counts_are_per_tenant,
                running::queued_counts_are_per_tenant,
                singletons::a_singleton_has_one_holder_until_it_expires,
                singletons::a_released_singleton_is_free_at_once,
                tasks::a_task_reads_back_as_inserted,
                tasks::pagination_walks_every_task_once,
                tasks::count_tasks_counts_one_tenant_in_one_status,
                tasks::idempotency_keys_return_the_first_task,
                tasks::expiry_removes_only_old_finished_tasks,
                tenants::keys_resolve_by_hash,
                tenants::tenants_own_their_keys_and_quotas,
                nodes::a_join_token_joins_one_node_once,
                nodes::unknown_and_revoked_tokens_are_refused_recording_nothing,
                nodes::join_tokens_are_listed_newest_first,
                nodes::a_credential_names_its_node,
                nodes::a_heartbeat_records_report_and_address,
                nodes::a_lost_node_comes_back_and_a_cordoned_one_stays_cordoned,
                nodes::lapsed_nodes_are_marked_lost_once,
                nodes::heartbeat_age_is_read_on_the_store_clock,
                nodes::node_states_change_only_for_known_nodes,
                nodes::a_removed_node_loses_its_credential,
                nodes::a_set_secret_is_chosen_once,
            ]
            handles: [
                races::concurrent_claims_never_hand_out_a_task_twice,
                races::a_cancel_racing_a_finish_has_one_winner,
                races::a_recovery_racing_a_finish_has_one_winner,
                running::concurrent_sync_calls_never_pass_the_running_limit,
                singletons::concurrent_holders_never_share_a_singleton,
                events::an_event_reaches_every_listener,
                nodes::every_replica_gets_the_first_set_secret,
                nodes::concurrent_joins_spend_a_token_once,
            ]
        }
    };
}

/// Expands the list into one test per case. Hidden: backends call
/// [`conformance_tests!`](crate::conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_expand {
    (
        ($store:expr) ($handles:expr)
        store: [$($smod:ident::$scase:ident),* $(,)?]
        handles: [$($hmod:ident::$hcase:ident),* $(,)?]
    ) => {
        $(
            #[::tokio::test]
            async fn $scase() {
                let store = $store;
                let store = $crate::conformance::AsStore::as_store(&store);
                $crate::conformance::$smod::$scase(store).await;
            }
        )*
        $(
            // Several workers, so racing calls really run at once.
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $hcase() {
                $crate::conformance::$hmod::$hcase($handles).await;
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_names {
    (
        store: [$($smod:ident::$scase:ident),* $(,)?]
        handles: [$($hmod:ident::$hcase:ident),* $(,)?]
    ) => {
        /// Every case of the suite, by name; the tests a backend gets are
        /// named the same.
        pub const CASES: &[&str] = &[$(stringify!($scase),)* $(stringify!($hcase),)*];
    };
}

/// Runs the whole conformance suite against a backend: one
/// `#[tokio::test]` per case. See the [module docs](crate::conformance).
#[macro_export]
macro_rules! conformance_tests {
    (store: $store:expr, handles: $handles:expr $(,)?) => {
        $crate::__store_conformance_cases! {
            __store_conformance_expand { ($store) ($handles) }
        }
    };
    (handles: $handles:expr $(,)?) => {
        $crate::conformance_tests!(
            store: $crate::conformance::FirstHandle::open($handles).await,
            handles: $handles,
        );
    };
}

/// The first handle a factory opens, kept together with the factory: a
/// factory may own its database (a temp dir), which must outlive the case.
#[doc(hidden)]
pub struct FirstHandle<F> {
    store: Arc<dyn Store>,
    _open: F,
}

impl<F, Fut> FirstHandle<F>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    pub async fn open(open: F) -> Self {
        Self {
            store: open().await,
            _open: open,
        }
    }
}

/// What the `store` expression may give: a store, an `Arc<dyn Store>`, or
/// a factory's first handle.
#[doc(hidden)]
pub trait AsStore {
    fn as_store(&self) -> &dyn Store;
}

impl<S: Store> AsStore for S {
    fn as_store(&self) -> &dyn Store {
        self
    }
}

impl AsStore for Arc<dyn Store> {
    fn as_store(&self) -> &dyn Store {
        &**self
    }
}

impl<F> AsStore for FirstHandle<F> {
    fn as_store(&self) -> &dyn Store {
        &*self.store
    }
}

crate::__store_conformance_cases!(__store_conformance_names {});

const TENANT: &str = "t";

fn config(image: &str) -> FunctionConfig {
    serde_json::from_value(serde_json::json!({ "image": image }))
        .expect("a config naming only its image is valid")
}

/// A queued task of tenant `t` allowed two attempts, carrying request
/// metadata so that a backend dropping some of it shows.
fn task(function: &str, kind: TaskKind) -> TaskRecord {
    task_of(TENANT, function, kind)
}

fn task_of(tenant: &str, function: &str, kind: TaskKind) -> TaskRecord {
    let request = RequestMeta {
        method: "POST".into(),
        path: "/p".into(),
        query: "a=1".into(),
        content_type: Some("text/plain".into()),
        content_length: Some(3),
        headers: vec![("x-one".into(), "1".into()), ("x-two".into(), "2".into())],
    };
    let mut t = TaskRecord::new(tenant, function, 1, kind, request);
    t.max_attempts = 2;
    t.input_bytes = Some(3);
    t
}

fn lease(owner: &str, duration_ms: i64) -> Lease {
    Lease {
        owner: owner.into(),
        duration_ms,
    }
}

/// The fence of the claim a record was read at.
fn fence(t: &TaskRecord) -> Fence {
    Fence {
        id: t.id,
        epoch: t.epoch,
    }
}

/// A sync call as the scheduler records it: running from the start, under
/// `owner`'s lease, as the first claim (epoch 1).
fn sync_call(tenant: &str, owner: &str) -> TaskRecord {
    let mut t = task_of(tenant, "f", TaskKind::Sync);
    t.status = TaskStatus::Running;
    t.attempt = 1;
    t.epoch = 1;
    t.node = Some(owner.into());
    t.started_at = Some(t.created_at);
    t.timing.queued_ms = Some(0);
    t
}

/// Records a [`sync_call`] of tenant `t` well under any running limit.
async fn insert_sync_call(s: &dyn Store, owner: &str) -> TaskRecord {
    let t = sync_call(TENANT, owner);
    assert!(
        s.insert_running(&t, &lease(owner, 60_000), 1_000)
            .await
            .expect("insert a sync call"),
        "a sync call under the running limit is recorded"
    );
    t
}

fn finish(outcome: Outcome) -> Finish {
    Finish {
        outcome,
        usage: Usage::default(),
        timing: Timing::default(),
        output_bytes: Some(1),
        durable: true,
    }
}

async fn insert(s: &dyn Store, t: &TaskRecord) {
    s.insert_task(t).await.expect("insert a task");
}

async fn get(s: &dyn Store, t: &TaskRecord) -> TaskRecord {
    s.get_task(&t.tenant, t.id)
        .await
        .expect("get a task")
        .unwrap_or_else(|| panic!("task {} is gone", t.id))
}

/// Claims the oldest queued task for `owner` and checks that it is `t`;
/// returns the task as claimed (its attempt, epoch and node).
async fn claim(s: &dyn Store, t: &TaskRecord, owner: &str, lease_ms: i64) -> TaskRecord {
    let mut claimed = s
        .claim_queued(&lease(owner, lease_ms), 1, &[])
        .await
        .expect("claim");
    assert_eq!(
        ids(&claimed),
        [t.id],
        "the oldest queued task is the one claimed"
    );
    claimed.remove(0)
}

fn ids(tasks: &[TaskRecord]) -> Vec<TaskId> {
    tasks.iter().map(|t| t.id).collect()
}

#[cfg(test)]
mod tests;
