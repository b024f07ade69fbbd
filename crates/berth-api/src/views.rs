//! The JSON shapes of the v1 contract. Internal records are mapped here so
//! that storage changes cannot leak into what clients parse.

use berth_core::{FunctionVersion, TaskError, TaskRecord, Timing, Usage};
use berth_store::FunctionSummary;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn timestamp(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[derive(Serialize)]
pub struct TaskView {
    pub id: String,
    pub function: String,
    pub version: i64,
    pub kind: &'static str,
    pub status: &'static str,
    pub attempt: i64,
    pub max_attempts: i64,
    pub exit_code: Option<i64>,
    pub error: Option<TaskError>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub usage: Usage,
    pub timing: Timing,
    pub input_bytes: Option<i64>,
    pub output_bytes: Option<i64>,
}

impl From<&TaskRecord> for TaskView {
    fn from(t: &TaskRecord) -> Self {
        Self {
            id: t.id.to_string(),
            function: t.function.clone(),
            version: t.version,
            kind: t.kind.as_str(),
            status: t.status.as_str(),
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            exit_code: t.exit_code,
            error: t.error.clone(),
            created_at: timestamp(t.created_at),
            started_at: t.started_at.map(timestamp),
            finished_at: t.finished_at.map(timestamp),
            usage: t.usage.clone(),
            timing: t.timing.clone(),
            input_bytes: t.input_bytes,
            output_bytes: t.output_bytes,
        }
    }
}

/// A version as the user defined it (every config field, defaults filled
/// in) plus what the platform pinned.
#[derive(Serialize)]
pub struct VersionView {
    pub version: i64,
    #[serde(flatten)]
    pub config: berth_core::FunctionConfig,
    pub image_id: String,
    pub created_at: String,
}

impl From<&FunctionVersion> for VersionView {
    fn from(v: &FunctionVersion) -> Self {
        Self {
            version: v.version,
            config: v.config.clone(),
            image_id: v.image_id.clone(),
            created_at: timestamp(v.created_at),
        }
    }
}

#[derive(Serialize)]
pub struct FunctionView {
    pub name: String,
    pub latest_version: i64,
    pub version_count: i64,
    pub created_at: String,
    pub updated_at: String,
    pub latest: VersionView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<VersionView>>,
}

impl FunctionView {
    pub fn new(s: &FunctionSummary, versions: Option<&[FunctionVersion]>) -> Self {
        Self {
            name: s.latest.function.clone(),
            latest_version: s.latest.version,
            version_count: s.version_count,
            created_at: timestamp(s.created_at),
            updated_at: timestamp(s.updated_at),
            latest: VersionView::from(&s.latest),
            versions: versions.map(|vs| vs.iter().map(VersionView::from).collect()),
        }
    }
}
