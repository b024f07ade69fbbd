//! Executor nodes: the admin's view and control of the fleet, join tokens,
//! and the two calls nodes make themselves (join, heartbeat), which carry
//! a join token or the node's own credential instead of an API key.

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_contract::{
    CreateJoinToken, CreatedJoinToken, Executor, ExecutorList, HeartbeatAck, HeartbeatBody,
    JoinBody, JoinToken, JoinTokenList, Joined, NodeState,
};
use berth_scheduler::JoinRequest;

use crate::AppState;
use crate::auth::{Tenant, bearer};
use crate::error::{ApiError, ApiResult};
use crate::extract::json_body;

/// A node id or token id from the path; one that does not decode names
/// nothing.
pub struct NodePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for NodePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Self(id)),
            Err(_) => Err(ApiError::not_found("executor_not_found", "not found")),
        }
    }
}

fn node_unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid node credential is required: Authorization: Bearer <credential>",
    )
}

#[utoipa::path(get, path = "/v1/executors", tag = "executors", operation_id = "list_executors",
    responses(
        (status = 200, description = "every node of the set", body = ExecutorList),
        (status = 403, description = "needs the admin key", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
) -> ApiResult<Json<ExecutorList>> {
    let nodes = state.tasks.nodes(&caller).await?;
    Ok(Json(ExecutorList {
        executors: nodes.iter().map(Executor::from).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/executors/{id}", tag = "executors", operation_id = "get_executor",
    params(("id" = String, Path, description = "node id")),
    responses(
        (status = 200, description = "the node", body = Executor),
        (status = 403, description = "needs the admin key", body = berth_contract::ErrorBody),
        (status = 404, body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    NodePath(id): NodePath,
) -> ApiResult<Json<Executor>> {
    Ok(Json(Executor::from(&state.tasks.node(&caller, &id).await?)))
}

async fn set_state(
    state: &AppState,
    caller: &str,
    id: &str,
    to: NodeState,
) -> ApiResult<Json<Executor>> {
    let node = state.tasks.set_node_state(caller, id, to).await?;
    Ok(Json(Executor::from(&node)))
}

#[utoipa::path(post, path = "/v1/executors/{id}/cordon", tag = "executors", operation_id = "cordon_executor",
    params(("id" = String, Path, description = "node id")),
    responses(
        (status = 200, description = "the node takes no new work; what it runs goes on", body = Executor),
        (status = 403, description = "needs the admin key", body = berth_contract::ErrorBody),
        (status = 404, body = berth_contract::ErrorBody),
        (status = 409, description = "a replica's in-process executor", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn cordon(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    NodePath(id): NodePath,
) -> ApiResult<Json<Executor>> {
    set_state(&state, &caller, &id, NodeState::Cordoned).await
}

#[utoipa::path(post, path = "/v1/executors/{id}/uncordon", tag = "executors", operation_id = "uncordon_executor",
    params(("id" = String, Path, description = "node id")),
    responses(
        (status = 200, description = "the node takes work again", body = Executor),
        (status = 403, description = "needs the admin key", body = berth_contract::ErrorBody),
        (status = 404, body = berth_contract::ErrorBody),
        (status = 409, description = "a replica's in-process executor", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn uncordon(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    NodePath(id): NodePath,
) -> ApiResult<Json<Executor>> {
    set_state(&state, &caller, &id, NodeState::Active).await
}

#[utoipa::path(post, path = "/v1/executors/{id}/drain", tag = "executors", operation_id = "drain_executor",
    params(("id" = String, Path, description = "node id")),
    responses(
        (status = 200, description = "the node takes no new work, finishes what it runs and leaves", body = Executor),
        (status = 403, description = "needs the admin key", body = berth_contract::ErrorBody),
        (status = 404, body = berth_contract::ErrorBody),
        (status = 409, description = "a replica's in-process executor", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn drain(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    NodePath(id): NodePath,
) -> ApiResult<Json<Executor>> {
    set_state(&state, &caller, &id, NodeState::Draining).await
}

#[utoipa::path(post, path = "/v1/executor-tokens", tag = "executors", operation_id = "create_join_token",
    request_body = CreateJoinToken,
    responses(
        (status = 201, description = "made; its secret is shown only here", body = CreatedJoinToken),
        (status = 400, body = berth_contract::ErrorBody),
        (status = 403, description = "needs the admin key", body = berth_contract::ErrorBody),
        (status = 413, description = "the JSON body is over 1 MiB", body = berth_contract::ErrorBody),
        (status = 415, description = "the body is not JSON", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_token(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let req: CreateJoinToken = json_body(&headers, body).await?;
    let made = state.tasks.create_join_token(&caller, &req.label).await?;
    let body = CreatedJoinToken {
        id: made.id,
        label: made.label,
        token: made.token,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(get, path = "/v1/executor-tokens", tag = "executors", operation_id = "list_join_tokens",
    responses(
        (status = 200, description = "every join token, newest first (never a secret)", body = JoinTokenList),
        (status = 403, description = "needs the admin key", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_tokens(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
) -> ApiResult<Json<JoinTokenList>> {
    let tokens = state.tasks.join_tokens(&caller).await?;
    Ok(Json(JoinTokenList {
        tokens: tokens.iter().map(JoinToken::from).collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/executor-tokens/{id}", tag = "executors", operation_id = "revoke_join_token",
    params(("id" = String, Path, description = "token id")),
    responses(
        (status = 204, description = "revoked: no node can join with it"),
        (status = 403, description = "needs the admin key", body = berth_contract::ErrorBody),
        (status = 404, body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(Tenant(caller)): Extension<Tenant>,
    NodePath(id): NodePath,
) -> ApiResult<StatusCode> {
    state.tasks.revoke_join_token(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/executors/join", tag = "executors", operation_id = "join_executor",
    request_body = JoinBody,
    responses(
        (status = 201, description = "joined; keep the credential, it is shown only here", body = Joined),
        (status = 400, body = berth_contract::ErrorBody),
        (status = 401, description = "the join token is missing, wrong, revoked or used", body = berth_contract::ErrorBody),
        (status = 413, description = "the JSON body is over 1 MiB", body = berth_contract::ErrorBody),
        (status = 415, description = "the body is not JSON", body = berth_contract::ErrorBody)),
    security(("join_token" = [])))]
pub async fn join(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let token = bearer(&headers)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a join token is required: Authorization: Bearer <token>",
            )
        })?
        .to_owned();
    let req: JoinBody = json_body(&headers, body).await?;
    let joined = state
        .tasks
        .join(
            &token,
            JoinRequest {
                zone: req.zone,
                labels: req.labels,
                address: req.address,
                report: req.report,
            },
        )
        .await?;
    let body = Joined {
        node_id: joined.node_id,
        credential: joined.credential,
        data_plane_secret: joined.data_plane_secret,
        heartbeat_every_ms: joined.heartbeat_every_ms,
        lost_after_ms: joined.lost_after_ms,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(put, path = "/v1/executors/{id}/heartbeat", tag = "executors", operation_id = "heartbeat_executor",
    params(("id" = String, Path, description = "the node's own id")),
    request_body = HeartbeatBody,
    responses(
        (status = 200, description = "recorded; the state the set holds the node to", body = HeartbeatAck),
        (status = 400, body = berth_contract::ErrorBody),
        (status = 401, description = "the node credential is missing or wrong", body = berth_contract::ErrorBody),
        (status = 403, description = "the credential is another node's", body = berth_contract::ErrorBody),
        (status = 404, body = berth_contract::ErrorBody),
        (status = 413, description = "the JSON body is over 1 MiB", body = berth_contract::ErrorBody),
        (status = 415, description = "the body is not JSON", body = berth_contract::ErrorBody)),
    security(("node_credential" = [])))]
pub async fn heartbeat(
    State(state): State<AppState>,
    NodePath(id): NodePath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<HeartbeatAck>> {
    let credential = bearer(&headers).ok_or_else(node_unauthorized)?;
    let node = state
        .tasks
        .node_of(credential)
        .await?
        .ok_or_else(node_unauthorized)?;
    let req: HeartbeatBody = json_body(&headers, body).await?;
    let ack = state
        .tasks
        .heartbeat(&node, &id, &req.address, &req.report, req.draining)
        .await?;
    Ok(Json(HeartbeatAck {
        state: ack.state,
        data_plane_secret: ack.data_plane_secret,
    }))
}
