//! Bearer API keys on every `/v1` call; the scheduler checks them.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;
use crate::error::ApiError;

/// The tenant a request acts as, put in the request extensions by [`require_key`].
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

/// The secret of an `Authorization: Bearer` header, if there is one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
}

pub async fn require_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = bearer(req.headers()).ok_or_else(ApiError::unauthorized)?;
    let tenant = state
        .tasks
        .authenticate(presented)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    // The request's log line names who made it (the server's access log
    // declares the field; without it this records nothing).
    tracing::Span::current().record("tenant", tenant.as_str());
    req.extensions_mut().insert(Tenant(tenant));
    Ok(next.run(req).await)
}
