//! Behaviour tests of the TaskManager, through its public methods only,
//! over a real SQLite store (PostgreSQL too for `set`) and real payload
//! blobs on the local filesystem, with the
//! executor crate's scripted fake behind its fault-injecting wrapper
//! (`crate::testing::Manager`; see `berth_executor::testing` for what each
//! `command` does and what each `Fault` does). No engine, no HTTP.
//!
//! Each test states what happened and that nothing else did: the attempt
//! count, the runs the fake saw, the faults that fired, the tasks stored.
//! Waiting loops are liveness bounds (they fail a hung test after
//! [`PATIENCE`]), never timing assertions.
//!
//! One file per job of the scheduler:
//! - `sync_calls`: invoke, its outcomes, its body limit, a failed start;
//! - `dispatch`: the async queue, its retries, refusals, cancels, limits;
//! - `follow`: a task's output and logs while it runs;
//! - `quotas`: concurrency and queue quotas, idempotency keys;
//! - `lifecycle`: drain and start-up recovery;
//! - `metrics`: what calls and the queue tell the metrics, and who may
//!   read them;
//! - `versions`: routing to versions, redeploys, deletes, image checks;
//! - `tenants`: who may manage tenants, and API keys;
//! - `set`: two replicas over one store (quotas, fencing, singletons,
//!   invalidation, drain), on SQLite and PostgreSQL.

mod dispatch;
mod follow;
mod gated;
mod lifecycle;
mod metrics;
mod quotas;
mod set;
mod sync_calls;
mod tenants;
mod versions;

use std::time::Duration;

use berth_core::{
    FunctionConfig, PayloadKind, QuotaOverrides, RequestMeta, TaskFilter, TaskId, TaskRecord,
    TaskStatus,
};
use futures::StreamExt;

use crate::testing::{Manager, input};
use crate::{CallResult, Config, SchedError, SyncCall};

/// Liveness bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(10);
/// The tenant most tests act as.
const ALPHA: &str = "alpha";
const ALPHA_KEY: &str = "berth_test_alpha_key";
/// Another tenant, to show what one tenant does leaves it alone.
const BETA: &str = "beta";
const BETA_KEY: &str = "berth_test_beta_key";

/// A configuration that keeps the queue tests fast: the dispatcher looks
/// at the queue every 20 ms besides its wake-ups.
fn cfg() -> Config {
    Config {
        poll_interval: Duration::from_millis(20),
        ..Default::default()
    }
}

/// A fresh TaskManager with tenants `alpha` and `beta`, each with a key.
/// Nothing claims async tasks until `start_background`.
async fn manager(cfg: Config) -> Manager {
    let m = Manager::new(cfg).await;
    m.add_key(ALPHA, ALPHA_KEY).await;
    m.add_key(BETA, BETA_KEY).await;
    m
}

/// A definition of image "img" running `command` (`None` when empty:
/// the fake then runs `echo-upper`), every other setting its default.
fn function(command: &[&str]) -> FunctionConfig {
    let mut c: FunctionConfig =
        serde_json::from_value(serde_json::json!({ "image": "img" })).expect("a valid definition");
    c.command = (!command.is_empty()).then(|| command.iter().map(|&w| w.into()).collect());
    c
}

/// Deploys `config` as the tenant's function `name`; panics if refused.
async fn deploy_config(m: &Manager, tenant: &str, name: &str, config: FunctionConfig) -> i64 {
    let deployed = m
        .tasks
        .deploy(tenant, name, config)
        .await
        .unwrap_or_else(|e| panic!("deploy {tenant}/{name}: {e}"));
    deployed.version.version
}

/// Deploys the tenant's function `name` running `command`.
async fn deploy(m: &Manager, tenant: &str, name: &str, command: &[&str]) -> i64 {
    deploy_config(m, tenant, name, function(command)).await
}

/// A POST to the function's root, with a `Content-Length` when given.
fn post(content_length: Option<u64>) -> RequestMeta {
    RequestMeta {
        method: "POST".into(),
        path: "/".into(),
        content_length,
        ..RequestMeta::default()
    }
}

/// A tenant made by the admin with these quota settings.
async fn tenant_with(m: &Manager, name: &str, quotas: QuotaOverrides) {
    m.tasks
        .create_tenant(berth_core::ADMIN_TENANT, name, &quotas)
        .await
        .unwrap_or_else(|e| panic!("create tenant {name}: {e}"));
}

/// Reads a sync call to its end: all of stdout, then its result.
async fn finish_call(call: SyncCall) -> (String, CallResult) {
    let SyncCall {
        mut stdout, result, ..
    } = call;
    within("the call to end", async {
        let mut out = Vec::new();
        while let Some(chunk) = stdout.recv().await {
            out.extend_from_slice(&chunk);
        }
        let result = result.await.expect("the call reports its result");
        (String::from_utf8_lossy(&out).into_owned(), result)
    })
    .await
}

/// Calls the tenant's function `name` with `body` (its length declared)
/// and reads the call to its end.
async fn call(
    m: &Manager,
    tenant: &str,
    name: &str,
    body: &str,
) -> Result<(TaskId, String, CallResult), SchedError> {
    let len = u64::try_from(body.len()).expect("small body");
    let call = m
        .tasks
        .invoke(tenant, name, post(Some(len)), input(body.to_owned()))
        .await?;
    let id = call.task_id;
    let (stdout, result) = finish_call(call).await;
    Ok((id, stdout, result))
}

/// Submits an async task of the tenant's function `name`; panics if
/// refused.
async fn submit(m: &Manager, tenant: &str, name: &str, body: &str) -> TaskRecord {
    let len = u64::try_from(body.len()).expect("small body");
    let submitted = m
        .tasks
        .submit(tenant, name, post(Some(len)), input(body.to_owned()), None)
        .await
        .unwrap_or_else(|e| panic!("submit to {tenant}/{name}: {e}"));
    assert!(!submitted.replayed, "a submission without a key is new");
    submitted.task
}

/// Waits for the task to finish; panics if it does not within patience.
async fn finished(m: &Manager, tenant: &str, id: TaskId) -> TaskRecord {
    m.tasks
        .wait_finished(tenant, id, PATIENCE)
        .await
        .expect("the task is readable")
        .unwrap_or_else(|| panic!("task {id} did not finish within {PATIENCE:?}"))
}

/// The task as stored now.
async fn task(m: &Manager, tenant: &str, id: TaskId) -> TaskRecord {
    m.tasks.task(tenant, id).await.expect("the task exists")
}

/// Every task of the tenant, newest first.
async fn all_tasks(m: &Manager, tenant: &str) -> Vec<TaskRecord> {
    let filter = TaskFilter {
        limit: 1_000,
        ..TaskFilter::default()
    };
    m.tasks.tasks(tenant, &filter).await.expect("tasks").tasks
}

/// A finished task's stored output or logs, as text.
async fn payload(m: &Manager, task: &TaskRecord, kind: PayloadKind) -> Result<String, SchedError> {
    let mut p = m.tasks.payload(task, kind).await?;
    let mut all = Vec::new();
    while let Some(chunk) = p.body.next().await {
        all.extend_from_slice(&chunk.expect("payload reads"));
    }
    assert_eq!(p.len, Some(all.len() as u64), "the announced length");
    Ok(String::from_utf8_lossy(&all).into_owned())
}

/// The name of an error's variant, so tables can say which error they
/// expect without matching on messages.
fn variant(e: &SchedError) -> String {
    let debug = format!("{e:?}");
    debug
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Runs `f` to its end; panics if that takes longer than [`PATIENCE`].
async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("waited {PATIENCE:?} for {what}"))
}

/// Polls `probe` until it holds; panics if it does not within
/// [`PATIENCE`].
async fn eventually(what: &str, mut probe: impl AsyncFnMut() -> bool) {
    within(what, async {
        while !probe().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Waits until nothing of the tenant runs here any more (the attempt's
/// bookkeeping is done, its quota slot given back) and the fake runs
/// nothing.
async fn settled(m: &Manager, tenant: &str) {
    eventually("every attempt to be over", async || {
        m.tasks.running_tasks(tenant) == 0 && m.fake().running().is_empty()
    })
    .await;
}

/// The version of `function` the latest (or only) attempts ran.
fn versions_run(m: &Manager, function: &str) -> Vec<i64> {
    m.fake()
        .started()
        .iter()
        .filter(|s| s.function == function)
        .map(|s| s.version)
        .collect()
}

/// Whether a task ended as expected: status, code, exit code.
#[track_caller]
fn assert_ended(
    t: &TaskRecord,
    status: TaskStatus,
    code: Option<berth_core::ErrorCode>,
    exit: Option<i64>,
) {
    assert_eq!(t.status, status, "{t:?}");
    assert_eq!(t.error.as_ref().map(|e| e.code), code, "{t:?}");
    assert_eq!(t.exit_code, exit, "{t:?}");
    assert!(t.finished_at.is_some(), "{t:?}");
}
