//! The v1 HTTP contract as types. The API answers with these, the CLI, the
//! end-to-end harness and the benchmark parse them, and the OpenAPI
//! document is generated from them, so the three cannot drift apart.
//!
//! Architecture Invariant: these are wire shapes, mapped from the domain
//! records of `berth-core` here and only here, so that a change of storage
//! cannot leak into what clients parse. Additions are fine; renaming or
//! removing a member breaks users' scripts.

mod nodes;

pub use nodes::{
    CreateJoinToken, CreatedJoinToken, Executor, ExecutorList, HeartbeatAck, HeartbeatBody,
    JoinBody, JoinToken, JoinTokenList, Joined, NodeInstances, NodeReport, NodeState,
};

use berth_core::{AttemptRecord, FunctionSummary, FunctionVersion, TaskRecord, TenantRecord};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema};

/// Domain types that are part of the contract as they are.
pub use berth_core::{
    AttemptEnd, ErrorCode, FunctionConfig, Mode, QUOTA_FIELDS, QuotaOverrides, Quotas, TaskError,
    TaskKind, TaskStatus, Timing, Usage,
};

/// RFC 3339 in UTC, from the store's milliseconds since the epoch.
pub fn timestamp(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A task: one invocation, sync or async.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub id: String,
    pub function: String,
    pub version: i64,
    pub kind: TaskKind,
    pub status: TaskStatus,
    pub attempt: i64,
    pub max_attempts: i64,
    pub exit_code: Option<i64>,
    pub error: Option<TaskError>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    pub usage: Usage,
    pub timing: Timing,
    pub input_bytes: Option<i64>,
    pub output_bytes: Option<i64>,
    /// The replica (node) that runs or last ran the task.
    #[serde(default)]
    pub node: Option<String>,
    /// Every claim of an async task, oldest first: which node ran it and
    /// how it ended. Only in the answer about one task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<Attempt>>,
}

/// One claim of an async task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub attempt: i64,
    pub node: String,
    #[schema(format = DateTime)]
    pub started_at: String,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    /// How it ended; absent while it runs.
    pub ended: Option<AttemptEnd>,
}

impl From<&AttemptRecord> for Attempt {
    fn from(a: &AttemptRecord) -> Self {
        Self {
            attempt: a.attempt,
            node: a.node.clone(),
            started_at: timestamp(a.started_at),
            finished_at: a.finished_at.map(timestamp),
            ended: a.ended,
        }
    }
}

impl Task {
    /// The task with its attempts, for the answer about one task.
    pub fn with_attempts(t: &TaskRecord, attempts: &[AttemptRecord]) -> Self {
        Self {
            attempts: Some(attempts.iter().map(Attempt::from).collect()),
            ..Self::from(t)
        }
    }
}

impl From<&TaskRecord> for Task {
    fn from(t: &TaskRecord) -> Self {
        Self {
            id: t.id.to_string(),
            function: t.function.clone(),
            version: t.version,
            kind: t.kind,
            status: t.status,
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
            node: t.node.clone(),
            attempts: None,
        }
    }
}

/// A page of tasks, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<Task>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// A version as the user defined it (every setting, defaults filled in)
/// plus what the platform pinned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: i64,
    #[serde(flatten)]
    pub config: FunctionConfig,
    /// The image the version runs, pinned at deploy: a registry digest
    /// reference or the engine's image id.
    pub image_id: String,
    pub created_at: String,
}

/// Written by hand because the derived one would be wrong: a flattened
/// member becomes `allOf: [FunctionConfig, {version, ...}]`, and
/// `FunctionConfig`, as a request body, allows no other members
/// (`additionalProperties: false`), so no version would match it. The
/// schema is `FunctionConfig`'s properties, copied at run time so they
/// cannot drift, plus the version's own, in one open object.
impl utoipa::PartialSchema for Version {
    fn schema() -> RefOr<Schema> {
        use utoipa::openapi::schema::{KnownFormat, SchemaFormat, Type};
        let mut object = match <FunctionConfig as utoipa::PartialSchema>::schema() {
            RefOr::T(Schema::Object(object)) => object,
            _ => panic!("FunctionConfig's schema is no longer an inline object"),
        };
        object.additional_properties = None;
        object.description = Some(
            "A version as the user defined it (every setting, defaults filled in) \
             plus what the platform pinned."
                .to_owned(),
        );
        let member = |ty, format: Option<KnownFormat>, description: Option<&str>| {
            ObjectBuilder::new()
                .schema_type(ty)
                .format(format.map(SchemaFormat::KnownFormat))
                .description(description)
                .build()
        };
        for (name, schema) in [
            (
                "version",
                member(Type::Integer, Some(KnownFormat::Int64), None),
            ),
            (
                "image_id",
                member(
                    Type::String,
                    None,
                    Some(
                        "The image the version runs, pinned at deploy: a registry \
                         digest reference or the engine's image id.",
                    ),
                ),
            ),
            (
                "created_at",
                member(Type::String, Some(KnownFormat::DateTime), None),
            ),
        ] {
            object.properties.insert(name.to_owned(), schema.into());
            object.required.push(name.to_owned());
        }
        RefOr::T(Schema::Object(object))
    }
}

impl ToSchema for Version {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        // The copied properties refer to what FunctionConfig's do (`Mode`).
        <FunctionConfig as ToSchema>::schemas(schemas);
    }
}

impl From<&FunctionVersion> for Version {
    fn from(v: &FunctionVersion) -> Self {
        Self {
            version: v.version,
            config: v.config.clone(),
            image_id: v.image_id.clone(),
            created_at: timestamp(v.created_at),
        }
    }
}

/// A function: its newest version, and all of them when asked for one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Function {
    pub name: String,
    pub latest_version: i64,
    pub version_count: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    pub latest: Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<Version>>,
}

impl Function {
    pub fn new(s: &FunctionSummary, versions: Option<&[FunctionVersion]>) -> Self {
        Self {
            name: s.latest.function.clone(),
            latest_version: s.latest.version,
            version_count: s.version_count,
            created_at: timestamp(s.created_at),
            updated_at: timestamp(s.updated_at),
            latest: Version::from(&s.latest),
            versions: versions.map(|vs| vs.iter().map(Version::from).collect()),
        }
    }
}

/// The answer to a deploy: the function, the version now in force and
/// whether the deploy made it (an identical redeploy makes none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deployed {
    #[serde(flatten)]
    pub function: Function,
    pub version: i64,
    pub created_version: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FunctionList {
    pub functions: Vec<Function>,
}

/// A partial update of a function (`PATCH`, JSON merge patch, RFC 7396):
/// named settings change, unnamed ones keep their value; `null` puts a
/// setting back to its default (`env` members: removes the variable).
/// The members are those of the function body, all optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[schema(value_type = Option<Vec<String>>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_root: Option<bool>,
}

/// `POST /v1/tenants`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1-63 characters of a-z, 0-9 and single inner `-` (the server's rule:
    /// `berth_core::validate_tenant_name`).
    #[schema(pattern = "^[a-z0-9]+(-[a-z0-9]+)*$", min_length = 1, max_length = 63)]
    pub name: String,
    #[serde(default)]
    pub quotas: QuotaOverrides,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub name: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// API keys the tenant holds; 0 after a revocation.
    pub keys: i64,
    /// What the tenant is held to: the defaults with its own settings.
    pub quotas: Quotas,
    /// Only the settings made for this tenant.
    pub overrides: QuotaOverrides,
}

impl Tenant {
    pub fn new(t: &TenantRecord, defaults: &Quotas) -> Self {
        Self {
            name: t.name.clone(),
            created_at: timestamp(t.created_at),
            keys: t.keys,
            quotas: defaults.with(&t.overrides),
            overrides: t.overrides.clone(),
        }
    }
}

/// A tenant just created, with its API key: shown only here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedTenant {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub api_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TenantList {
    pub tenants: Vec<Tenant>,
}

/// A rotated key: shown only here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RotatedKey {
    pub name: String,
    pub api_key: String,
}

/// Every error the API answers with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorObject {
    /// Stable and machine-readable (`function_not_found`, `busy`, ...).
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// The task the failed call made, to look up its logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The function's exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The end of the function's stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

/// `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub store: bool,
    pub executors: usize,
    pub healthy_executors: usize,
}

#[cfg(test)]
mod tests;
