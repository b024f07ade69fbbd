//! The queue's rules that every backend applies the same way: how far a
//! claim looks to be fair, what a sync call is recorded as, and what
//! recovery does with a task whose holder is gone.

use berth_core::{AttemptEnd, ErrorCode, TaskError, TaskKind, TaskRecord, TaskStatus};

use crate::Lease;

/// How many of the oldest queued async tasks a claim ranks for fairness
/// (each tenant and function's oldest first). Bounded so that a claim
/// costs the same however deep the queue: a tenant whose oldest task lies
/// past this many others' waits until the queue ahead of it shortens, as
/// it would in plain FIFO order.
pub(crate) const CLAIM_WINDOW: i64 = 1000;

/// A sync call as `insert_running` records it: running, held by the
/// lease's owner, as the task's first claim.
pub(crate) fn running_call(task: &TaskRecord, lease: &Lease) -> TaskRecord {
    TaskRecord {
        status: TaskStatus::Running,
        epoch: 1,
        node: Some(lease.owner.clone()),
        ..task.clone()
    }
}

/// What recovery does with one running task it found lapsed or orphaned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// `None`: back to the queue; otherwise the task fails with this.
    pub fail: Option<TaskError>,
    /// How the attempt it was running ends.
    pub ended: AttemptEnd,
}

/// An async task with attempts left runs again; a sync call's caller is
/// gone, and a task out of attempts has had its chances. The attempt was
/// `Lost` when its holder said it died (`dead_owner`), `Expired` when its
/// lease simply ran out.
pub(crate) fn recovery(
    kind: TaskKind,
    attempt: i64,
    max_attempts: i64,
    node: Option<&str>,
    dead_owner: Option<&str>,
) -> Verdict {
    let ended = if dead_owner.is_some() && node == dead_owner {
        AttemptEnd::Lost
    } else {
        AttemptEnd::Expired
    };
    let fail = match kind {
        TaskKind::Async if attempt < max_attempts => None,
        TaskKind::Async => Some(format!("the task was lost on all {max_attempts} attempts")),
        TaskKind::Sync => Some("the server running this call stopped".to_owned()),
    };
    Verdict {
        fail: fail.map(|message| TaskError::new(ErrorCode::Lost, message)),
        ended,
    }
}
