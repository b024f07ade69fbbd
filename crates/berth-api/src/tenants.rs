//! Tenants and their keys; who may do what is the scheduler's rule, this
//! is only its HTTP face.

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_contract::{CreateTenant, CreatedTenant, RotatedKey, Tenant as TenantView, TenantList};
use berth_core::QuotaOverrides;

use crate::AppState;
use crate::auth::Tenant;
use crate::error::ApiResult;
use crate::extract::{TenantPath, json_body};

#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", operation_id = "create_tenant",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "created; its API key is shown only here", body = CreatedTenant),
        (status = 400, body = berth_contract::ErrorBody),
        (status = 403, description = "needs the admin key", body = berth_contract::ErrorBody),
        (status = 409, body = berth_contract::ErrorBody),
        (status = 413, description = "the JSON body is over 1 MiB", body = berth_contract::ErrorBody),
        (status = 415, description = "the body is not JSON", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let req: CreateTenant = json_body(&headers, body).await?;
    let made = state
        .tasks
        .create_tenant(&caller, &req.name, &req.quotas)
        .await?;
    let body = CreatedTenant {
        tenant: TenantView::new(&made.record, &state.tasks.default_quotas()),
        api_key: made.api_key,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", operation_id = "list_tenants",
    responses(
        (status = 200, description = "every tenant", body = TenantList),
        (status = 403, description = "needs the admin key", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
) -> ApiResult<Json<TenantList>> {
    let defaults = state.tasks.default_quotas();
    let tenants = state.tasks.tenants(&caller).await?;
    Ok(Json(TenantList {
        tenants: tenants
            .iter()
            .map(|t| TenantView::new(t, &defaults))
            .collect(),
    }))
}

#[utoipa::path(get, path = "/v1/tenants/{name}", tag = "tenants", operation_id = "get_tenant",
    params(("name" = String, Path, description = "tenant name")),
    responses(
        (status = 200, description = "the tenant (the admin sees any, a tenant itself)", body = TenantView),
        (status = 404, body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    TenantPath(name): TenantPath,
) -> ApiResult<Json<TenantView>> {
    let record = state.tasks.tenant(&caller, &name).await?;
    Ok(Json(TenantView::new(
        &record,
        &state.tasks.default_quotas(),
    )))
}

#[utoipa::path(put, path = "/v1/tenants/{name}/quotas", tag = "tenants", operation_id = "set_tenant_quotas",
    params(("name" = String, Path, description = "tenant name")),
    request_body = QuotaOverrides,
    responses(
        (status = 200, description = "the tenant's own settings replaced", body = TenantView),
        (status = 400, body = berth_contract::ErrorBody),
        (status = 403, description = "needs the admin key", body = berth_contract::ErrorBody),
        (status = 404, body = berth_contract::ErrorBody),
        (status = 413, description = "the JSON body is over 1 MiB", body = berth_contract::ErrorBody),
        (status = 415, description = "the body is not JSON", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_quotas(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    TenantPath(name): TenantPath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<TenantView>> {
    let quotas: QuotaOverrides = json_body(&headers, body).await?;
    let record = state.tasks.set_quotas(&caller, &name, &quotas).await?;
    Ok(Json(TenantView::new(
        &record,
        &state.tasks.default_quotas(),
    )))
}

#[utoipa::path(post, path = "/v1/tenants/{name}/keys", tag = "tenants", operation_id = "rotate_tenant_key",
    params(("name" = String, Path, description = "tenant name")),
    responses(
        (status = 200, description = "a new key; every older one stops working", body = RotatedKey),
        (status = 404, body = berth_contract::ErrorBody),
        (status = 409, description = "the admin key is the server's setting", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate_key(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    TenantPath(name): TenantPath,
) -> ApiResult<Json<RotatedKey>> {
    let api_key = state.tasks.rotate_key(&caller, &name).await?;
    Ok(Json(RotatedKey { name, api_key }))
}

#[utoipa::path(delete, path = "/v1/tenants/{name}/keys", tag = "tenants", operation_id = "revoke_tenant_keys",
    params(("name" = String, Path, description = "tenant name")),
    responses(
        (status = 200, description = "every key revoked; functions and tasks stay", body = TenantView),
        (status = 403, description = "needs the admin key", body = berth_contract::ErrorBody),
        (status = 404, body = berth_contract::ErrorBody),
        (status = 409, description = "the admin key is the server's setting", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_keys(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    TenantPath(name): TenantPath,
) -> ApiResult<Json<TenantView>> {
    let record = state.tasks.revoke_keys(&caller, &name).await?;
    Ok(Json(TenantView::new(
        &record,
        &state.tasks.default_quotas(),
    )))
}
