//! Request parsing that answers with the API's own JSON errors instead of
//! axum's plain-text rejections.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Function definitions are small; anything bigger is a mistake or abuse.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

pub async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim();
            m.eq_ignore_ascii_case("application/json")
                || (m.starts_with("application/") && m.ends_with("+json"))
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_JSON_BODY)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("JSON body must be at most {MAX_JSON_BODY} bytes"),
            )
        })?;
    // serde_json caps nesting depth (128), so deep documents fail here
    // rather than exhausting the stack.
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid JSON body: {e}"),
        )
    })
}

/// A function name from the path. A segment that does not even decode as
/// UTF-8 can never name a function; it gets the API's JSON error rather
/// than the framework's plain-text one.
pub struct FnName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for FnName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // Routes below a function carry more parameters (the invoke path),
        // so the name is picked out by its key.
        let params = Path::<Vec<(String, String)>>::from_request_parts(parts, state).await;
        match params.map(|Path(p)| p.into_iter().find(|(k, _)| k == "name")) {
            Ok(Some((_, name))) => Ok(Self(name)),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_function",
                "the function name in the path is not valid UTF-8",
            )),
        }
    }
}

/// A task id from the path. Anything undecodable answers exactly like a
/// task that does not exist, so ids cannot be probed.
pub struct TaskPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for TaskPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Self(id)),
            Err(_) => Err(crate::tasks::task_not_found()),
        }
    }
}

/// A tenant name from the path; an undecodable one names no tenant.
pub struct TenantPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for TenantPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(name)) => Ok(Self(name)),
            Err(_) => Err(ApiError::not_found("tenant_not_found", "tenant not found")),
        }
    }
}
