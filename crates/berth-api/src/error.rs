//! Every failure leaves the API as `{"error": {"code", "message", ...}}`
//! with a fitting status; internal details are logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_executor::ExecError;
use berth_scheduler::SchedError;
use berth_store::StoreError;
use serde_json::{Map, Value, json};
use tracing::error;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra members of the error object (exit code, stderr tail, task id).
    pub details: Map<String, Value>,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Map::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
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

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("code".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        body.extend(self.details);
        let mut resp = (self.status, Json(json!({ "error": body }))).into_response();
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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        error!(error = %e, "store failure");
        Self::internal()
    }
}

impl From<SchedError> for ApiError {
    fn from(e: SchedError) -> Self {
        let msg = e.to_string();
        match e {
            SchedError::Invalid(m) => Self::new(StatusCode::BAD_REQUEST, "invalid_function", m),
            SchedError::FunctionNotFound(_) => Self::not_found("function_not_found", msg),
            SchedError::InputTooLarge(_) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", msg)
            }
            SchedError::InputAborted(_) => Self::bad_request(msg),
            SchedError::QuotaExceeded(_) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", msg).retry_after(1)
            }
            // Retrying cannot help a definition over the tenant's ceilings,
            // so this is a bad request rather than a 429.
            SchedError::OverQuota(_) => Self::new(StatusCode::BAD_REQUEST, "quota_exceeded", msg),
            SchedError::ImageNotAllowed(_) => {
                Self::new(StatusCode::BAD_REQUEST, "image_not_allowed", msg)
            }
            SchedError::IdempotencyConflict(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                msg,
            ),
            SchedError::Exec(ExecError::ImageNotFound(_)) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "image_missing", msg)
            }
            SchedError::Exec(ExecError::NoCapacity(_)) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_capacity", msg).retry_after(1)
            }
            SchedError::Exec(ExecError::EngineUnavailable(_)) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "engine_unavailable", msg).retry_after(5)
            }
            SchedError::Exec(ExecError::PullFailed { .. }) => {
                Self::new(StatusCode::BAD_GATEWAY, "pull_failed", msg)
            }
            SchedError::Exec(ExecError::Busy(_)) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "busy", msg).retry_after(1)
            }
            SchedError::Exec(ExecError::Instance(_)) => {
                Self::new(StatusCode::BAD_GATEWAY, "instance_failed", msg)
            }
            SchedError::Exec(ExecError::Engine(_)) => {
                error!(error = %msg, "container engine failure");
                Self::new(StatusCode::BAD_GATEWAY, "engine_error", msg)
            }
            SchedError::NoExecutor => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_executor",
                "no executor is available",
            ),
            SchedError::Store(e) => e.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
