use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::TaskError;

/// Task ids are UUIDv7: unguessable enough to share in URLs and ordered by
/// creation, which keeps index inserts append-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub uuid::Uuid);

impl TaskId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::try_parse(s).map(Self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 6] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

impl FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown task status {s:?}"))
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sync tasks live as long as their HTTP request; async tasks are durable
/// queue entries. Recovery treats them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Sync,
    Async,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Async => "async",
        }
    }
}

impl FromStr for TaskKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(Self::Sync),
            "async" => Ok(Self::Async),
            _ => Err(format!("unknown task kind {s:?}")),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// CPU time the function's processes consumed, when the runtime could
    /// measure it.
    pub cpu_ms: Option<i64>,
    pub peak_memory_bytes: Option<i64>,
    pub wall_ms: Option<i64>,
}

/// Where a task's time went, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Timing {
    pub queued_ms: Option<i64>,
    pub pull_ms: Option<i64>,
    pub start_ms: Option<i64>,
    pub run_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: TaskId,
    pub tenant: String,
    pub function: String,
    pub version: i64,
    pub kind: TaskKind,
    pub status: TaskStatus,
    pub attempt: i64,
    pub max_attempts: i64,
    /// The epoch of the latest claim: grows with every claim and never
    /// goes back, so a running attempt is named by (id, epoch) alone.
    pub epoch: i64,
    /// The replica (node) that holds or last held the task.
    pub node: Option<String>,
    pub exit_code: Option<i64>,
    pub error: Option<TaskError>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub usage: Usage,
    pub timing: Timing,
    pub input_bytes: Option<i64>,
    pub output_bytes: Option<i64>,
    /// Request metadata (method, query, headers) that becomes the CGI
    /// environment; kept so that an async retry sees the same request.
    pub request: RequestMeta,
}

impl TaskRecord {
    /// A new task of one version, queued as of now, with one attempt allowed.
    pub fn new(
        tenant: &str,
        function: &str,
        version: i64,
        kind: TaskKind,
        request: RequestMeta,
    ) -> Self {
        Self {
            id: TaskId::new(),
            tenant: tenant.to_owned(),
            function: function.to_owned(),
            version,
            kind,
            status: TaskStatus::Queued,
            attempt: 0,
            max_attempts: 1,
            epoch: 0,
            node: None,
            exit_code: None,
            error: None,
            created_at: crate::now_ms(),
            started_at: None,
            finished_at: None,
            usage: Usage::default(),
            timing: Timing::default(),
            input_bytes: None,
            output_bytes: None,
            request,
        }
    }
}

/// One claim of an async task: which replica ran it, when, and how it
/// ended. `outcome` is `None` while it runs; a lost attempt (its replica
/// or executor died under it) ends as `Lost` and the task runs again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: i64,
    pub epoch: i64,
    pub node: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub ended: Option<AttemptEnd>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptEnd {
    /// It gave the task its final status.
    Finished,
    /// What ran it was lost (replica, engine, instance); counted.
    Lost,
    /// Its lease lapsed and another replica's recovery took the task.
    Expired,
    /// Handed back before it started (executor full); not counted.
    Released,
    /// The task was cancelled under it.
    Cancelled,
}

impl AttemptEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Finished => "finished",
            Self::Lost => "lost",
            Self::Expired => "expired",
            Self::Released => "released",
            Self::Cancelled => "cancelled",
        }
    }
}

impl FromStr for AttemptEnd {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Finished,
            Self::Lost,
            Self::Expired,
            Self::Released,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
        .ok_or_else(|| format!("unknown attempt end {s:?}"))
    }
}

/// Which of a tenant's tasks to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub function: Option<String>,
    pub status: Option<TaskStatus>,
    /// Only tasks older than this cursor (a value from a previous page).
    pub before: Option<i64>,
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct TaskPage {
    pub tasks: Vec<TaskRecord>,
    /// Pass as `before` to get the next page; `None` on the last page.
    pub next: Option<i64>,
}

/// Outcome of a cancel request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// Was queued; it will never run.
    Dequeued,
    /// Is running; whoever holds the lease must kill it.
    Running { lease_owner: Option<String> },
    /// Had already finished; nothing changed.
    AlreadyFinished(TaskStatus),
}

/// The stored parts of a task besides its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    Input,
    Output,
    Logs,
}

/// The parts of the HTTP request a function sees besides its body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMeta {
    pub method: String,
    /// The path below the function's invoke URL (`/` when none), which an
    /// http-mode function routes on; CGI's `PATH_INFO`.
    #[serde(default)]
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    /// Header names lower-case, in request order; only headers that are
    /// safe to hand to user code (no Authorization, no hop-by-hop).
    pub headers: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips() {
        for st in TaskStatus::ALL {
            assert_eq!(st.as_str().parse::<TaskStatus>(), Ok(st));
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
        }
        assert!("done".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn ids_parse_and_order() {
        let a = TaskId::new();
        let b = TaskId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<TaskId>().unwrap(), a);
        assert!("nope".parse::<TaskId>().is_err());
    }
}
