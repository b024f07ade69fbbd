//! Domain types every Berth component agrees on.
//!
//! Architecture Invariant: this crate knows nothing of HTTP, SQL or Docker;
//! it is the vocabulary the other crates speak to each other.

mod function;
mod node;
mod outcome;
mod task;
mod tenant;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use function::{
    FunctionConfig, FunctionSummary, FunctionVersion, InvalidConfig, Limits, Mode, validate_name,
};
pub use node::{JoinTokenRecord, NewNode, NodeInstances, NodeRecord, NodeReport, NodeState};
pub use outcome::{ErrorCode, Outcome, TaskError, UnknownCode};
pub use task::{
    AttemptEnd, AttemptRecord, Cancel, PayloadKind, RequestMeta, TaskFilter, TaskId, TaskKind,
    TaskPage, TaskRecord, TaskStatus, Timing, Usage,
};
pub use tenant::{
    QUOTA_FIELDS, QuotaField, QuotaOverrides, Quotas, TenantRecord, validate_tenant_name,
};

/// The built-in tenant the admin key acts as; it also manages the others.
pub const ADMIN_TENANT: &str = "admin";

/// Milliseconds since the Unix epoch: the one clock format stored anywhere.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
