//! How a task ends: one vocabulary for the executor that reports it, the
//! scheduler that decides it, the store that records it and the API that
//! answers with it. Codes are stored and shown by their snake_case names;
//! nothing parses a message to learn what happened.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::TaskStatus;

macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, )*) => {
        /// Why a task (or an attempt to start one) did not succeed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }
        }
    };
}

error_codes! {
    /// The function exited with a non-zero code.
    Exit = "exit",
    /// The kernel killed the function at its memory limit.
    Oom = "oom",
    /// The function ran past its timeout and was killed.
    Timeout = "timeout",
    /// Someone cancelled the task.
    Cancelled = "cancelled",
    /// A sync caller stopped reading; the function was killed.
    ClientDisconnected = "client_disconnected",
    /// The request body went past the size limit while it streamed.
    BodyTooLarge = "body_too_large",
    /// An async task's output went past the size limit.
    OutputTooLarge = "output_too_large",
    /// An async task's output could not be stored.
    OutputLost = "output_lost",
    /// The function's warm instance died under the request.
    InstanceLost = "instance_lost",
    /// Every attempt was lost by what ran it (node, engine, instance).
    Lost = "lost",
    /// A warm instance failed before the request reached the program.
    InstanceFailed = "instance_failed",
    /// The container engine is down.
    EngineUnavailable = "engine_unavailable",
    /// The container engine failed the request.
    EngineError = "engine_error",
    /// The pinned image is gone and cannot be pulled.
    ImageMissing = "image_missing",
    /// Pulling the pinned image failed.
    PullFailed = "pull_failed",
    /// The executor is full.
    NoCapacity = "no_capacity",
    /// The function's instances and queue are full.
    Busy = "busy",
    /// The attempt could not be started for another reason.
    StartFailed = "start_failed",
    /// The function was deleted before the task ran.
    FunctionDeleted = "function_deleted",
    /// The task's stored input is gone.
    InputMissing = "input_missing",
    /// The executor node running the attempt was lost (killed, cut off,
    /// reclaimed) before it ended.
    ExecutorLost = "executor_lost",
}

impl ErrorCode {
    /// The terminal status a task ending with this code has.
    pub fn status(self) -> TaskStatus {
        match self {
            ErrorCode::Timeout => TaskStatus::TimedOut,
            ErrorCode::Cancelled => TaskStatus::Cancelled,
            _ => TaskStatus::Failed,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A code name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownCode(pub String);

impl FromStr for ErrorCode {
    type Err = UnknownCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCode(s.to_owned()))
    }
}

/// Why a task did not succeed: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskError {
    pub code: ErrorCode,
    pub message: String,
}

impl TaskError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// How a task ended: its terminal status, the program's exit code when it
/// exited, and why it did not succeed. Built only through the constructors,
/// so the status always agrees with the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: TaskStatus,
    pub exit_code: Option<i64>,
    pub error: Option<TaskError>,
}

impl Outcome {
    pub fn succeeded() -> Self {
        Self {
            status: TaskStatus::Succeeded,
            exit_code: Some(0),
            error: None,
        }
    }

    /// The program exited on its own; non-zero is a failure whose message
    /// carries the end of its stderr.
    pub fn exited(code: i64, stderr_tail: &str) -> Self {
        if code == 0 {
            return Self::succeeded();
        }
        let tail = stderr_tail.trim_end();
        let message = if tail.is_empty() {
            format!("function exited with code {code}")
        } else {
            format!("function exited with code {code}: {tail}")
        };
        Self {
            exit_code: Some(code),
            ..Self::failed(TaskError::new(ErrorCode::Exit, message))
        }
    }

    /// Ended without an exit code of its own.
    pub fn failed(error: TaskError) -> Self {
        Self {
            status: error.code.status(),
            exit_code: None,
            error: Some(error),
        }
    }

    pub fn code(&self) -> Option<ErrorCode> {
        self.error.as_ref().map(|e| e.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_by_name() {
        for &code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{code}\""));
        }
        assert!("nope".parse::<ErrorCode>().is_err());
    }

    #[test]
    fn status_follows_the_code() {
        assert_eq!(
            Outcome::failed(TaskError::new(ErrorCode::Timeout, "t")).status,
            TaskStatus::TimedOut
        );
        assert_eq!(
            Outcome::failed(TaskError::new(ErrorCode::Cancelled, "c")).status,
            TaskStatus::Cancelled
        );
        let exited = Outcome::exited(3, "boom\n");
        assert_eq!(exited.status, TaskStatus::Failed);
        assert_eq!(exited.exit_code, Some(3));
        assert_eq!(
            exited.error.unwrap().message,
            "function exited with code 3: boom"
        );
        assert_eq!(Outcome::exited(0, "noise"), Outcome::succeeded());
    }
}
