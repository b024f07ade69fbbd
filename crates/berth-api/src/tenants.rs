//! Tenants and their keys. The admin creates tenants, sets their quotas and
//! revokes their keys; a tenant may read its own record and rotate its own
//! key. Another tenant's record answers exactly like a missing one.

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_core::{ADMIN_TENANT, QuotaOverrides, Quotas, TenantRecord, validate_tenant_name};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::AppState;
use crate::auth::{Tenant, forget_tenant, generate_key, hash_key};
use crate::error::{ApiError, ApiResult};
use crate::extract::{TenantPath, json_body};
use crate::views::timestamp;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    name: String,
    #[serde(default)]
    quotas: QuotaOverrides,
}

#[derive(Serialize)]
pub struct TenantView {
    name: String,
    created_at: String,
    /// API keys the tenant holds; 0 after a revocation.
    keys: i64,
    /// What the tenant is held to: the defaults with its own settings.
    quotas: Quotas,
    /// Only the settings made for this tenant.
    overrides: QuotaOverrides,
}

impl TenantView {
    fn new(t: &TenantRecord, defaults: &Quotas) -> Self {
        Self {
            name: t.name.clone(),
            created_at: timestamp(t.created_at),
            keys: t.keys,
            quotas: defaults.with(&t.overrides),
            overrides: t.overrides.clone(),
        }
    }
}

fn tenant_not_found() -> ApiError {
    ApiError::not_found("tenant_not_found", "tenant not found")
}

fn require_admin(caller: &str) -> ApiResult<()> {
    if caller == ADMIN_TENANT {
        Ok(())
    } else {
        Err(ApiError::forbidden("managing tenants needs the admin key"))
    }
}

/// A tenant the caller may see: any for the admin, only itself otherwise.
async fn visible(state: &AppState, caller: &str, name: &str) -> ApiResult<TenantRecord> {
    if caller != ADMIN_TENANT && caller != name {
        return Err(tenant_not_found());
    }
    state
        .store
        .get_tenant(name)
        .await?
        .ok_or_else(tenant_not_found)
}

/// The admin's key is the server's own setting, not a record to rotate:
/// a rotation here would be undone at the next start.
fn refuse_admin_key(name: &str) -> ApiResult<()> {
    if name == ADMIN_TENANT {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "admin_key_fixed",
            "the admin key comes from BERTH_ADMIN_KEY or DIR/admin.key; change it there and restart",
        ));
    }
    Ok(())
}

pub async fn create(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require_admin(&caller)?;
    let req: CreateTenant = json_body(&headers, body).await?;
    validate_tenant_name(&req.name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_tenant", e.0))?;
    req.quotas
        .validate()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_quota", e.0))?;
    let key = generate_key();
    if !state
        .store
        .create_tenant(&req.name, &req.quotas, &hash_key(&key))
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "tenant_exists",
            format!("tenant {:?} already exists", req.name),
        ));
    }
    let record = state
        .store
        .get_tenant(&req.name)
        .await?
        .ok_or_else(ApiError::internal)?;
    let mut view = serde_json::to_value(TenantView::new(&record, &state.tasks.default_quotas()))
        .map_err(|_| ApiError::internal())?;
    // The only time the key is ever shown: the server keeps its hash.
    view["api_key"] = json!(key);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
) -> ApiResult<Json<serde_json::Value>> {
    require_admin(&caller)?;
    let defaults = state.tasks.default_quotas();
    let tenants: Vec<_> = state
        .store
        .list_tenants()
        .await?
        .iter()
        .map(|t| TenantView::new(t, &defaults))
        .collect();
    Ok(Json(json!({ "tenants": tenants })))
}

pub async fn get(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    TenantPath(name): TenantPath,
) -> ApiResult<Json<TenantView>> {
    let record = visible(&state, &caller, &name).await?;
    Ok(Json(TenantView::new(
        &record,
        &state.tasks.default_quotas(),
    )))
}

pub async fn set_quotas(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    TenantPath(name): TenantPath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<TenantView>> {
    require_admin(&caller)?;
    let quotas: QuotaOverrides = json_body(&headers, body).await?;
    quotas
        .validate()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_quota", e.0))?;
    if !state.store.set_tenant_quotas(&name, &quotas).await? {
        return Err(tenant_not_found());
    }
    state.tasks.forget_quotas(&name);
    let record = visible(&state, &caller, &name).await?;
    Ok(Json(TenantView::new(
        &record,
        &state.tasks.default_quotas(),
    )))
}

/// A new key for the tenant; every older key stops working at once here,
/// and on other replicas within the key cache's lifetime.
pub async fn rotate_key(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    TenantPath(name): TenantPath,
) -> ApiResult<Json<serde_json::Value>> {
    visible(&state, &caller, &name).await?;
    refuse_admin_key(&name)?;
    let key = generate_key();
    if !state
        .store
        .replace_api_keys(&name, Some(&hash_key(&key)), "primary")
        .await?
    {
        return Err(tenant_not_found());
    }
    forget_tenant(&name);
    Ok(Json(json!({ "name": name, "api_key": key })))
}

/// Revokes every key of the tenant. Its functions, tasks and images stay;
/// a later rotation by the admin gives it a key again.
pub async fn revoke_keys(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    TenantPath(name): TenantPath,
) -> ApiResult<Json<TenantView>> {
    require_admin(&caller)?;
    refuse_admin_key(&name)?;
    if !state.store.replace_api_keys(&name, None, "primary").await? {
        return Err(tenant_not_found());
    }
    forget_tenant(&name);
    let record = visible(&state, &caller, &name).await?;
    Ok(Json(TenantView::new(
        &record,
        &state.tasks.default_quotas(),
    )))
}
