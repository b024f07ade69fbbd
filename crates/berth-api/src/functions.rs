use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_core::FunctionConfig;
use serde_json::json;

use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::extract::FnName;
use crate::extract::json_body;
use crate::views::FunctionView;
use berth_executor::ExecError;
use berth_scheduler::SchedError;

fn function_not_found(name: &str) -> ApiError {
    ApiError::not_found("function_not_found", format!("function {name:?} not found"))
}

pub async fn put(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    FnName(name): FnName,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let config: FunctionConfig = json_body(&headers, body).await?;
    let (version, created) = match state.tasks.deploy(&tenant, &name, config).await {
        Ok(v) => v,
        // At deploy time a missing image is the caller's mistake, not an
        // outage: say so plainly.
        Err(SchedError::Exec(ExecError::ImageNotFound(image))) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "image_not_found",
                format!(
                    "image {image:?} is not present on the container engine; build, load or push it first"
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let summary = state
        .store
        .get_function(&tenant, &name)
        .await?
        .ok_or_else(|| function_not_found(&name))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut view = serde_json::to_value(FunctionView::new(&summary, None))
        .map_err(|_| ApiError::internal())?;
    view["created_version"] = json!(created);
    view["version"] = json!(version.version);
    Ok((status, Json(view)).into_response())
}

pub async fn get(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    FnName(name): FnName,
) -> ApiResult<Json<FunctionView>> {
    let summary = state
        .store
        .get_function(&tenant, &name)
        .await?
        .ok_or_else(|| function_not_found(&name))?;
    let versions = state.store.list_versions(&tenant, &name).await?;
    Ok(Json(FunctionView::new(&summary, Some(&versions))))
}

pub async fn list(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
) -> ApiResult<Json<serde_json::Value>> {
    let all = state.store.list_functions(&tenant).await?;
    let views: Vec<_> = all.iter().map(|s| FunctionView::new(s, None)).collect();
    Ok(Json(json!({ "functions": views })))
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    FnName(name): FnName,
) -> ApiResult<StatusCode> {
    if state.store.delete_function(&tenant, &name).await? {
        state.tasks.retire(&tenant, &name);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(function_not_found(&name))
    }
}
