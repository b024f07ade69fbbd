//! The HTTP API of Berth.
//!
//! Architecture Invariant: only this crate knows HTTP and JSON errors.
//! Handlers translate requests into calls on the TaskManager and its typed
//! errors into JSON errors; they hold no state of their own, so any number
//! of API replicas can serve the same cluster. The API depends on the
//! scheduler and the shared types only: never on the store or an executor.

mod auth;
mod connection;
mod error;
mod executors;
mod extract;
mod functions;
mod invoke;
mod metrics;
mod openapi;
mod tasks;
mod tenants;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use berth_scheduler::TaskManager;

pub use error::ApiError;
pub use openapi::document;

#[derive(Clone)]
pub struct AppState {
    pub tasks: Arc<TaskManager>,
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/functions", get(functions::list))
        .route(
            "/functions/{name}",
            get(functions::get)
                .put(functions::put)
                .patch(functions::patch)
                .delete(functions::delete),
        )
        .route("/functions/{name}/invoke", invoke_methods())
        // The sub-path is the function's own (see `openapi::InvokeSubPath`).
        .route("/functions/{name}/invoke/{*path}", invoke_methods())
        .route("/functions/{name}/tasks", post(tasks::submit))
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}", get(tasks::get).delete(tasks::cancel))
        .route("/tasks/{id}/output", get(tasks::output))
        .route("/tasks/{id}/logs", get(tasks::logs))
        .route("/tenants", get(tenants::list).post(tenants::create))
        .route("/tenants/{name}", get(tenants::get))
        .route("/tenants/{name}/quotas", put(tenants::set_quotas))
        .route(
            "/tenants/{name}/keys",
            post(tenants::rotate_key).delete(tenants::revoke_keys),
        )
        .route("/executors", get(executors::list))
        .route("/executors/{id}", get(executors::get))
        .route("/executors/{id}/cordon", post(executors::cordon))
        .route("/executors/{id}/uncordon", post(executors::uncordon))
        .route("/executors/{id}/drain", post(executors::drain))
        .route(
            "/executor-tokens",
            get(executors::list_tokens).post(executors::create_token),
        )
        .route("/executor-tokens/{id}", delete(executors::revoke_token))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    // Behind a key like `/v1`: only the admin's may read it.
    let metrics = Router::new()
        .route("/metrics", get(metrics::serve))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    // Nodes present a join token or their own credential, not an API key.
    let nodes = Router::new()
        .route("/v1/executors/join", post(executors::join))
        .route("/v1/executors/{id}/heartbeat", put(executors::heartbeat));
    Router::new()
        .merge(nodes)
        .nest("/v1", v1)
        .merge(metrics)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::serve))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Outermost, so it sees every answer, the auth layer's and the
        // fallbacks' included.
        .layer(middleware::from_fn(connection::close_if_body_unread))
        .with_state(state)
}

/// A function is called with the method its caller chose: an http-mode
/// program routes on it, an exec-mode one reads `REQUEST_METHOD`. HEAD is
/// not a call (axum would otherwise answer it by running the GET handler,
/// that is the function); OPTIONS neither.
fn invoke_methods() -> axum::routing::MethodRouter<AppState> {
    post(invoke::invoke)
        .get(invoke::invoke)
        .put(invoke::invoke)
        .patch(invoke::invoke)
        .delete(invoke::invoke)
        .head(head_is_not_a_call)
}

async fn head_is_not_a_call() -> axum::response::Response {
    let mut resp = method_not_allowed().await.into_response();
    resp.headers_mut().insert(
        axum::http::header::ALLOW,
        axum::http::HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"),
    );
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}

#[utoipa::path(get, path = "/healthz", tag = "service", operation_id = "healthz",
    responses((status = 200, description = "the process serves requests", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the store answers and at least one executor is healthy.
#[utoipa::path(get, path = "/readyz", tag = "service", operation_id = "readyz",
    responses(
        (status = 200, description = "the store answers and an executor is healthy", body = berth_contract::Readiness),
        (status = 503, description = "not ready: what is missing", body = berth_contract::Readiness)))]
async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    let r = state.tasks.readiness().await;
    let body = berth_contract::Readiness {
        store: r.store,
        executors: r.executors,
        healthy_executors: r.healthy_executors,
    };
    let status = if r.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

#[cfg(test)]
mod tests;
