//! Functions: deploy (`PUT`, the whole definition; `PATCH`, only what
//! changes), read, list, delete.

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_contract::{Deployed, Function, FunctionList, FunctionPatch};
use berth_core::FunctionConfig;
use serde_json::Value;

use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::extract::{FnName, json_body};

/// `PUT`: the body is the whole definition; settings it leaves out take
/// their defaults.
#[utoipa::path(put, path = "/v1/functions/{name}", tag = "functions", operation_id = "deploy_function",
    params(("name" = String, Path, description = "function name")),
    request_body = FunctionConfig,
    responses(
        (status = 201, description = "a new version was made", body = Deployed),
        (status = 200, description = "nothing changed; the version in force", body = Deployed),
        (status = 400, body = berth_contract::ErrorBody),
        (status = 413, description = "the JSON body is over 1 MiB", body = berth_contract::ErrorBody),
        (status = 415, description = "the body is not JSON", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    FnName(name): FnName,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let config: FunctionConfig = json_body(&headers, body).await?;
    deploy(&state, &tenant, &name, config).await
}

/// `PATCH`: a JSON merge patch (RFC 7396) over the version in force, so a
/// redeploy that names only `timeout_secs` keeps every other setting.
#[utoipa::path(patch, path = "/v1/functions/{name}", tag = "functions", operation_id = "patch_function",
    params(("name" = String, Path, description = "function name")),
    request_body(content = FunctionPatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 201, description = "a new version was made", body = Deployed),
        (status = 200, description = "nothing changed; the version in force", body = Deployed),
        (status = 400, body = berth_contract::ErrorBody),
        (status = 404, body = berth_contract::ErrorBody),
        (status = 413, description = "the JSON body is over 1 MiB", body = berth_contract::ErrorBody),
        (status = 415, description = "the body is not JSON", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn patch(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    FnName(name): FnName,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let patch: Value = json_body(&headers, body).await?;
    // Checked against the contract's shape first, so a misspelt setting is
    // refused instead of silently ignored.
    serde_json::from_value::<FunctionPatch>(patch.clone()).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid patch: {e}"),
        )
    })?;
    let current = state.tasks.function(&tenant, &name).await?.latest.config;
    let mut merged = serde_json::to_value(current).map_err(|_| ApiError::internal())?;
    merge_patch(&mut merged, &patch);
    let config: FunctionConfig = serde_json::from_value(merged).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_function",
            format!("the patched definition is not valid: {e}"),
        )
    })?;
    deploy(&state, &tenant, &name, config).await
}

/// RFC 7396: members of the patch replace the target's, `null` removes
/// them, objects merge recursively.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in members {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

async fn deploy(
    state: &AppState,
    tenant: &str,
    name: &str,
    config: FunctionConfig,
) -> ApiResult<Response> {
    let deployed = state.tasks.deploy(tenant, name, config).await?;
    let summary = state.tasks.function(tenant, name).await?;
    let status = if deployed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = Deployed {
        function: Function::new(&summary, None),
        version: deployed.version.version,
        created_version: deployed.created,
    };
    Ok((status, Json(body)).into_response())
}

#[utoipa::path(get, path = "/v1/functions/{name}", tag = "functions", operation_id = "get_function",
    params(("name" = String, Path, description = "function name")),
    responses(
        (status = 200, description = "the function with every version", body = Function),
        (status = 400, description = "the name is not valid UTF-8", body = berth_contract::ErrorBody),
        (status = 404, body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    FnName(name): FnName,
) -> ApiResult<Json<Function>> {
    let summary = state.tasks.function(&tenant, &name).await?;
    let versions = state.tasks.versions(&tenant, &name).await?;
    Ok(Json(Function::new(&summary, Some(&versions))))
}

#[utoipa::path(get, path = "/v1/functions", tag = "functions", operation_id = "list_functions",
    responses((status = 200, description = "the caller's functions", body = FunctionList)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
) -> ApiResult<Json<FunctionList>> {
    let all = state.tasks.functions(&tenant).await?;
    Ok(Json(FunctionList {
        functions: all.iter().map(|s| Function::new(s, None)).collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/functions/{name}", tag = "functions", operation_id = "delete_function",
    params(("name" = String, Path, description = "function name")),
    responses(
        (status = 204, description = "deleted; its queued tasks fail"),
        (status = 400, description = "the name is not valid UTF-8", body = berth_contract::ErrorBody),
        (status = 404, body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    FnName(name): FnName,
) -> ApiResult<StatusCode> {
    state.tasks.delete_function(&tenant, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::merge_patch;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut t = json!({"a": 1, "env": {"X": "1", "Y": "2"}, "command": ["a", "b"]});
        merge_patch(
            &mut t,
            &json!({"a": 2, "env": {"Y": null, "Z": "3"}, "command": null}),
        );
        assert_eq!(t, json!({"a": 2, "env": {"X": "1", "Z": "3"}}));
        let mut t = json!({"a": 1});
        merge_patch(&mut t, &json!({"b": {"c": 1}}));
        assert_eq!(t, json!({"a": 1, "b": {"c": 1}}));
    }
}
