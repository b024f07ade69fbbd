//! `GET /metrics`: the server's Prometheus series (docs/METRICS.md). They
//! name every tenant's functions, so only the admin key reads them; the
//! scheduler says so.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use berth_scheduler::METRICS_CONTENT_TYPE;

use crate::AppState;
use crate::auth::Tenant;
use crate::error::ApiResult;

// utoipa takes only a literal content type; a test checks that it is
// the one served.
#[utoipa::path(get, path = "/metrics", tag = "service", operation_id = "metrics",
    responses(
        (status = 200, description = "every series of this replica, in Prometheus's text format 0.0.4 \
            (see docs/METRICS.md)",
            content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 403, description = "needs the admin key", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn serve(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
) -> ApiResult<Response> {
    let text = state.tasks.metrics(&caller).await?;
    let content_type = HeaderValue::from_static(METRICS_CONTENT_TYPE);
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}
