//! One log line per transition of a task, under the `berth::task` target
//! (`BERTH_LOG=berth::task=info` keeps only these): queued, started,
//! ended, handed back. Each names the task, its tenant, function and
//! version, and never the request's body, headers or query, which may
//! carry the caller's secrets.

use berth_core::{TaskKind, TaskRecord};
use berth_store::Finish;
use tracing::info;

/// An async task was accepted and is in the queue.
pub(crate) fn queued(task: &TaskRecord) {
    info!(
        target: "berth::task",
        task = %task.id,
        tenant = %task.tenant,
        function = %task.function,
        version = task.version,
        kind = task.kind.as_str(),
        bytes_in = task.input_bytes,
        "task queued"
    );
}

/// An attempt began on this replica (a sync call, or a claimed async task).
pub(crate) fn started(task: &TaskRecord, node: &str) {
    info!(
        target: "berth::task",
        task = %task.id,
        tenant = %task.tenant,
        function = %task.function,
        version = task.version,
        kind = task.kind.as_str(),
        attempt = task.attempt,
        node,
        "task started"
    );
}

/// An attempt gave the task its final state.
pub(crate) fn ended(task: &TaskRecord, finish: &Finish) {
    let t = &finish.timing;
    info!(
        target: "berth::task",
        task = %task.id,
        tenant = %task.tenant,
        function = %task.function,
        version = task.version,
        kind = task.kind.as_str(),
        attempt = task.attempt,
        status = finish.outcome.status.as_str(),
        code = finish.outcome.error.as_ref().map(|e| e.code.as_str()),
        exit_code = finish.outcome.exit_code,
        queue_ms = t.queued_ms,
        pull_ms = t.pull_ms,
        start_ms = t.start_ms,
        run_ms = t.run_ms,
        cpu_ms = finish.usage.cpu_ms,
        "task ended"
    );
}

/// An attempt ended without a result of its own and the task went back
/// to the queue: `why` says whether it counted (lost) or not (refused,
/// drained).
pub(crate) fn requeued(task: &TaskRecord, why: &'static str) {
    info!(
        target: "berth::task",
        task = %task.id,
        tenant = %task.tenant,
        function = %task.function,
        version = task.version,
        kind = TaskKind::Async.as_str(),
        attempt = task.attempt,
        why,
        "task requeued"
    );
}
