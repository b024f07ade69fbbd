//! Every failure leaves the API as `{"error": {"code", "message", ...}}`
//! with a fitting status; internal details are logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_contract::{ErrorBody, ErrorObject};
use berth_core::{ErrorCode, TaskId};
use berth_scheduler::{CallResult, SchedError};
use tracing::{error, warn};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub task_id: Option<TaskId>,
    pub exit_code: Option<i64>,
    pub stderr: Option<String>,
    pub retry_after: Option<u32>,
}

/// The one mapping from how a task ended, or why it could not start, to
/// the HTTP answer: status, the error code clients see, and when a retry
/// may work. A call's own failure is the function's (502), not the
/// gateway's; an outage or a full node is 503; a busy function is 429.
fn answer_for(code: ErrorCode) -> (StatusCode, &'static str, Option<u32>) {
    use ErrorCode as C;
    match code {
        C::Exit => (StatusCode::BAD_GATEWAY, "function_failed", None),
        C::Oom => (StatusCode::BAD_GATEWAY, "oom", None),
        C::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout", None),
        C::Cancelled => (StatusCode::CONFLICT, "cancelled", None),
        C::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", None),
        C::EngineUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "engine_unavailable",
            Some(5),
        ),
        C::ImageMissing => (StatusCode::SERVICE_UNAVAILABLE, "image_missing", None),
        C::NoCapacity => (StatusCode::SERVICE_UNAVAILABLE, "no_capacity", Some(1)),
        C::Busy => (StatusCode::TOO_MANY_REQUESTS, "busy", Some(1)),
        C::ExecutorLost => (StatusCode::SERVICE_UNAVAILABLE, "executor_lost", Some(1)),
        C::PullFailed => (StatusCode::BAD_GATEWAY, "pull_failed", None),
        C::InstanceFailed => (StatusCode::BAD_GATEWAY, "instance_failed", None),
        C::EngineError => (StatusCode::BAD_GATEWAY, "engine_error", None),
        C::ClientDisconnected
        | C::OutputTooLarge
        | C::OutputLost
        | C::InstanceLost
        | C::Lost
        | C::StartFailed
        | C::FunctionDeleted
        | C::InputMissing => (StatusCode::BAD_GATEWAY, "function_error", None),
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            task_id: None,
            exit_code: None,
            stderr: None,
            retry_after: None,
        }
    }

    /// A task that ended, or an attempt that could not start, for this
    /// reason.
    pub fn of_code(code: ErrorCode, message: impl Into<String>) -> Self {
        let (status, http_code, retry) = answer_for(code);
        if code == ErrorCode::EngineError {
            error!(code = %code, "container engine failure");
        }
        Self {
            retry_after: retry,
            ..Self::new(status, http_code, message)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: Authorization: Bearer <key>",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    pub fn task(mut self, id: TaskId) -> Self {
        self.task_id = Some(id);
        self
    }

    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The error a finished, unsuccessful call answers with.
    pub fn of_call(result: &CallResult, id: TaskId) -> Self {
        let o = &result.outcome;
        let mut err = match &o.error {
            Some(e) => Self::of_code(e.code, e.message.clone()),
            None => Self::new(
                StatusCode::BAD_GATEWAY,
                "function_error",
                format!("task ended as {}", o.status),
            ),
        }
        .task(id);
        err.exit_code = o.exit_code;
        if !result.stderr_tail.is_empty() {
            err.stderr = Some(result.stderr_tail.clone());
        }
        err
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code.to_owned(),
                message: self.message,
                task_id: self.task_id.map(|id| id.to_string()),
                exit_code: self.exit_code,
                stderr: self.stderr,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<SchedError> for ApiError {
    fn from(e: SchedError) -> Self {
        let msg = e.to_string();
        let status = |s, code| Self::new(s, code, msg.clone());
        match e {
            SchedError::Invalid(_) => status(StatusCode::BAD_REQUEST, "invalid_function"),
            SchedError::InvalidTenant(_) => status(StatusCode::BAD_REQUEST, "invalid_tenant"),
            SchedError::InvalidQuota(_) => status(StatusCode::BAD_REQUEST, "invalid_quota"),
            SchedError::FunctionNotFound(_) => status(StatusCode::NOT_FOUND, "function_not_found"),
            SchedError::TaskNotFound => status(StatusCode::NOT_FOUND, "task_not_found"),
            SchedError::TenantNotFound => status(StatusCode::NOT_FOUND, "tenant_not_found"),
            SchedError::TenantExists(_) => status(StatusCode::CONFLICT, "tenant_exists"),
            SchedError::Forbidden(_) => status(StatusCode::FORBIDDEN, "forbidden"),
            SchedError::AdminKeyFixed => status(StatusCode::CONFLICT, "admin_key_fixed"),
            SchedError::TaskFinished(_) => status(StatusCode::CONFLICT, "task_finished"),
            SchedError::TaskNotFinished(_) => status(StatusCode::CONFLICT, "task_not_finished"),
            SchedError::NoPayload(_) => status(StatusCode::NOT_FOUND, "no_payload"),
            SchedError::InputTooLarge(_) => Self::of_code(ErrorCode::BodyTooLarge, msg),
            SchedError::InputAborted(_) => Self::bad_request(msg),
            SchedError::QuotaExceeded(_) => {
                status(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").retry_after(1)
            }
            // Retrying cannot help a definition over the tenant's ceilings,
            // so this is a bad request rather than a 429.
            SchedError::OverQuota(_) => status(StatusCode::BAD_REQUEST, "quota_exceeded"),
            SchedError::ImageNotAllowed(_) => status(StatusCode::BAD_REQUEST, "image_not_allowed"),
            SchedError::ImageNotFound(_) => status(StatusCode::BAD_REQUEST, "image_not_found"),
            SchedError::IdempotencyConflict(_) => {
                status(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            SchedError::Run(e) => Self::of_code(e.code, e.message),
            SchedError::NoExecutor => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_executor", msg).retry_after(1)
            }
            SchedError::NodeUnauthorized(_) => status(StatusCode::UNAUTHORIZED, "unauthorized"),
            SchedError::NodeNotFound(_) => status(StatusCode::NOT_FOUND, "executor_not_found"),
            SchedError::NodeInProcess(_) => status(StatusCode::CONFLICT, "executor_in_process"),
            SchedError::JoinTokenNotFound(_) => {
                status(StatusCode::NOT_FOUND, "join_token_not_found")
            }
            SchedError::Store(e) if e.is_unavailable() => {
                warn!(error = %e, "the database is unreachable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the database is unreachable; try again shortly",
                )
                .retry_after(1)
            }
            SchedError::Store(e) => {
                error!(error = %e, "store failure");
                Self::internal()
            }
            SchedError::Blobs(e) if e.is_unavailable() => {
                warn!(error = %e, "blob storage is unreachable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "blob storage is unreachable; try again shortly",
                )
                .retry_after(1)
            }
            SchedError::Blobs(e) => {
                error!(error = %e, "blob storage failure");
                Self::internal()
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
