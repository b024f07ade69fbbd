//! How the end of an attempt, as its executor reported it, becomes the
//! task's final state. The executor says what happened to the process
//! (`Exit`); the vocabulary of outcomes and codes is berth-core's.

use berth_core::{ErrorCode, Outcome, TaskError, Timing, Usage};
use berth_executor::{ExecError, RunOutcome};
use berth_store::Finish;
use tokio::sync::oneshot;

/// What the executor's `done` channel delivers.
pub(crate) type Reported = Result<Result<RunOutcome, ExecError>, oneshot::error::RecvError>;

/// The task error recorded when the engine failed under a running attempt.
fn run_error(e: &ExecError) -> TaskError {
    let code = match e {
        ExecError::EngineUnavailable(_) => ErrorCode::EngineUnavailable,
        // The node went, not the engine: 503 executor_lost to a caller.
        ExecError::ExecutorLost(_) | ExecError::Reclaimed(_) => ErrorCode::ExecutorLost,
        _ => ErrorCode::EngineError,
    };
    TaskError::new(code, e.to_string())
}

/// Turns an executor's account of an attempt into the task's final state.
pub(crate) fn finish_from(reported: Reported) -> Finish {
    let run = match reported {
        Ok(Ok(run)) => run,
        Ok(Err(e)) => return Finish::failed(run_error(&e)),
        Err(_) => {
            return Finish::failed(TaskError::new(
                ErrorCode::Lost,
                "the executor dropped the attempt",
            ));
        }
    };
    Finish {
        outcome: run.exit.outcome(&run.stderr_tail),
        usage: Usage {
            cpu_ms: run.cpu_ms,
            peak_memory_bytes: run.peak_memory_bytes,
            wall_ms: Some(run.run_ms),
        },
        timing: Timing {
            queued_ms: Some(run.queued_ms),
            pull_ms: run.pull_ms,
            start_ms: Some(run.start_ms),
            run_ms: Some(run.run_ms),
        },
        output_bytes: None,
        durable: true,
    }
}

/// Whether what ran the attempt failed, rather than the function: the
/// attempt is lost and may be tried again.
pub(crate) fn was_lost(reported: &Reported) -> bool {
    match reported {
        Ok(Ok(run)) => matches!(run.exit, berth_executor::Exit::InstanceLost(_)),
        Ok(Err(_)) | Err(_) => true,
    }
}

/// A verdict of the platform's that overrules what the function did (its
/// input or output went past a limit): the task failed, whatever its exit.
/// The exit code, if any, is kept: it is still what the program did.
pub(crate) fn overrule(finish: &mut Finish, error: TaskError) {
    finish.outcome = Outcome {
        exit_code: finish.outcome.exit_code,
        ..Outcome::failed(error)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_node_is_told_apart_from_a_failed_engine() {
        let code = |e: ExecError| run_error(&e).code;
        assert_eq!(
            code(ExecError::ExecutorLost("gone".into())),
            ErrorCode::ExecutorLost
        );
        assert_eq!(
            code(ExecError::Reclaimed("taken".into())),
            ErrorCode::ExecutorLost
        );
        assert_eq!(
            code(ExecError::Engine("oops".into())),
            ErrorCode::EngineError
        );
        assert_eq!(
            code(ExecError::EngineUnavailable("down".into())),
            ErrorCode::EngineUnavailable
        );
    }
}
