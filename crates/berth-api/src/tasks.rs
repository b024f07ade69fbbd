use std::collections::HashMap;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_contract::{Task, TaskList};
use berth_core::{PayloadKind, TaskFilter, TaskId, TaskRecord, TaskStatus};
use berth_scheduler::{CallResult, Payload};

use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::extract::TaskPath;
use crate::invoke::{FunctionCall, TASK_ID_HEADER, server_timing, task_headers};

const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 100;

pub(crate) fn task_not_found() -> ApiError {
    ApiError::not_found("task_not_found", "task not found")
}

/// A malformed id and another tenant's id answer exactly like a missing
/// one, so ids cannot be probed.
async fn load(state: &AppState, tenant: &str, id: &str) -> ApiResult<TaskRecord> {
    let id: TaskId = id.parse().map_err(|_| task_not_found())?;
    Ok(state.tasks.task(tenant, id).await?)
}

/// Longest `Prefer: wait=N` honoured; past it a caller should poll.
const MAX_WAIT_SECS: u64 = 300;

/// The seconds of an RFC 7240 `Prefer: wait=N` preference, if any.
fn preferred_wait(meta: &berth_core::RequestMeta) -> Option<u64> {
    meta.headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("prefer"))
        .flat_map(|(_, value)| value.split([',', ';']))
        .filter_map(|pref| {
            let (k, v) = pref.split_once('=')?;
            (k.trim().eq_ignore_ascii_case("wait"))
                .then(|| v.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
        .next()
        .map(|n| n.min(MAX_WAIT_SECS))
}

/// Longest `Idempotency-Key` accepted; keys are meant to be UUIDs or
/// similar, and they are stored with the task.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The `Idempotency-Key` header (IETF httpapi draft), if the request has one.
fn idempotency_key(meta: &berth_core::RequestMeta) -> ApiResult<Option<String>> {
    let mut keys = meta
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("idempotency-key"));
    let Some((_, key)) = keys.next() else {
        return Ok(None);
    };
    if keys.next().is_some() {
        return Err(ApiError::bad_request(
            "send at most one Idempotency-Key header",
        ));
    }
    let key = key.trim();
    let valid = !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY
        && key.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(ApiError::bad_request(format!(
            "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

#[utoipa::path(post, path = "/v1/functions/{name}/tasks", tag = "calls", operation_id = "submit_task",
    params(
        ("name" = String, Path, description = "function name"),
        ("Prefer" = Option<String>, Header, description = "`wait=N`: answer inline if the task ends within N seconds (at most 300)"),
        ("Idempotency-Key" = Option<String>, Header, description = "a repeat of the same request returns the first task"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "the task's input, the function's stdin (any media type)"),
    responses(
        (status = 202, description = "accepted: on disk and queued", body = Task,
            headers(("location" = String), ("x-berth-task-id" = String))),
        (status = 200, description = "with `Prefer: wait`: the output, as from invoke",
            content_type = "application/octet-stream", body = Vec<u8>,
            headers(("x-berth-task-id" = String), ("x-berth-version" = i64),
                ("server-timing" = String, description = "queue, pull, start and run durations (ms)"))),
        (status = 400, body = berth_contract::ErrorBody),
        (status = 404, body = berth_contract::ErrorBody),
        (status = 413, body = berth_contract::ErrorBody),
        (status = 422, body = berth_contract::ErrorBody),
        (status = 429, body = berth_contract::ErrorBody),
        (status = 502, body = berth_contract::ErrorBody),
        (status = 504, body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn submit(State(state): State<AppState>, req: FunctionCall) -> ApiResult<Response> {
    let wait = preferred_wait(&req.meta);
    let key = idempotency_key(&req.meta)?;
    let submitted = state
        .tasks
        .submit(&req.tenant, &req.name, req.meta, req.body, key.as_deref())
        .await?;
    let task = submitted.task;
    if let Some(secs) = wait.filter(|s| *s > 0) {
        let done = state
            .tasks
            .wait_finished(&req.tenant, task.id, std::time::Duration::from_secs(secs))
            .await?;
        if let Some(done) = done {
            let mut resp = finished_response(&state, &done).await?;
            if let Ok(v) = HeaderValue::from_str(&format!("wait={secs}")) {
                resp.headers_mut().insert("preference-applied", v);
            }
            return Ok(resp);
        }
    }
    let mut resp = accepted(&task)?;
    if submitted.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// The inline answer to a task that finished while its caller waited: the
/// output as a sync call would give it, or the same error.
async fn finished_response(state: &AppState, task: &TaskRecord) -> ApiResult<Response> {
    let mut resp = if task.status == TaskStatus::Succeeded {
        payload_of(state, task, PayloadKind::Output, "application/octet-stream").await?
    } else {
        let result = CallResult {
            outcome: berth_core::Outcome {
                status: task.status,
                exit_code: task.exit_code,
                error: task.error.clone(),
            },
            timing: task.timing.clone(),
            usage: task.usage.clone(),
            stderr_tail: String::new(),
        };
        ApiError::of_call(&result, task.id).into_response()
    };
    task_headers(&mut resp, task.id, task.version);
    if let Some(v) = server_timing(&task.timing) {
        resp.headers_mut().insert("server-timing", v);
    }
    Ok(resp)
}

fn accepted(task: &TaskRecord) -> ApiResult<Response> {
    let mut resp = (StatusCode::ACCEPTED, Json(Task::from(task))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/tasks/{}", task.id)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    if let Ok(id) = HeaderValue::from_str(&task.id.to_string()) {
        resp.headers_mut().insert(TASK_ID_HEADER, id);
    }
    Ok(resp)
}

#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", operation_id = "get_task",
    params(("id" = String, Path, description = "task id")),
    responses(
        (status = 200, description = "the task's status, timing, usage and attempts", body = Task),
        (status = 404, body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    TaskPath(id): TaskPath,
) -> ApiResult<Json<Task>> {
    let task = load(&state, &tenant, &id).await?;
    let attempts = state.tasks.attempts(&tenant, task.id).await?;
    Ok(Json(Task::with_attempts(&task, &attempts)))
}

fn parse_filter(params: &HashMap<String, String>) -> ApiResult<TaskFilter> {
    for key in params.keys() {
        if !["function", "status", "limit", "cursor"].contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {key:?}; use function, status, limit, cursor"
            )));
        }
    }
    let limit = match params.get("limit") {
        None => DEFAULT_PAGE,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be an integer from 1 to {MAX_PAGE}"))
            })?,
    };
    let status = params
        .get("status")
        .map(|s| s.parse::<TaskStatus>())
        .transpose()
        .map_err(ApiError::bad_request)?;
    let before = params
        .get("cursor")
        .map(|c| c.parse::<i64>().ok().filter(|n| *n > 0))
        .map(|c| c.ok_or_else(|| ApiError::bad_request("cursor is not one this server issued")))
        .transpose()?;
    Ok(TaskFilter {
        function: params.get("function").cloned(),
        status,
        before,
        limit,
    })
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", operation_id = "list_tasks",
    params(
        ("function" = Option<String>, Query, description = "only this function's tasks"),
        ("status" = Option<TaskStatus>, Query, description = "only tasks in this status"),
        ("limit" = Option<u32>, Query, description = "tasks per page, 1 to 1000 (default 100)", minimum = 1, maximum = 1000),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "a page of tasks, newest first", body = TaskList),
        (status = 400, body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<TaskList>> {
    let filter = parse_filter(&params)?;
    let page = state.tasks.tasks(&tenant, &filter).await?;
    Ok(Json(TaskList {
        tasks: page.tasks.iter().map(Task::from).collect(),
        next_cursor: page.next.map(|n| n.to_string()),
    }))
}

#[utoipa::path(delete, path = "/v1/tasks/{id}", tag = "tasks", operation_id = "cancel_task",
    params(("id" = String, Path, description = "task id")),
    responses(
        (status = 200, description = "cancelled: a queued task never runs, a running one is killed", body = Task),
        (status = 404, body = berth_contract::ErrorBody),
        (status = 409, description = "it had already finished", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    TaskPath(id): TaskPath,
) -> ApiResult<Json<Task>> {
    let task_id: TaskId = id.parse().map_err(|_| task_not_found())?;
    state.tasks.cancel(&tenant, task_id).await?;
    let task = load(&state, &tenant, &id).await?;
    Ok(Json(Task::from(&task)))
}

/// `?follow=true`: a running task's payload streams until the task ends.
fn follow_param(params: &HashMap<String, String>) -> ApiResult<bool> {
    match params.get("follow").map(String::as_str) {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1" | "") => Ok(true),
        Some(_) => Err(ApiError::bad_request("follow must be true or false")),
    }
}

async fn payload(
    state: &AppState,
    tenant: &str,
    id: &str,
    kind: PayloadKind,
    content_type: &'static str,
    follow: bool,
) -> ApiResult<Response> {
    let task = load(state, tenant, id).await?;
    if follow && !task.status.is_terminal() {
        let followed = state.tasks.follow(&task, kind).await?;
        return Ok(payload_response(&task, followed, content_type));
    }
    payload_of(state, &task, kind, content_type).await
}

/// A loaded task's stored output or logs, once it has finished.
async fn payload_of(
    state: &AppState,
    task: &TaskRecord,
    kind: PayloadKind,
    content_type: &'static str,
) -> ApiResult<Response> {
    let payload = state.tasks.payload(task, kind).await?;
    Ok(payload_response(task, payload, content_type))
}

fn payload_response(task: &TaskRecord, payload: Payload, content_type: &'static str) -> Response {
    let mut resp = Response::new(Body::from_stream(payload.body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(len) = payload.len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if let Ok(v) = HeaderValue::from_str(task.status.as_str()) {
        h.insert("x-berth-task-status", v);
    }
    resp
}

#[utoipa::path(get, path = "/v1/tasks/{id}/output", tag = "tasks", operation_id = "get_task_output",
    params(("id" = String, Path, description = "task id"),
        ("follow" = Option<bool>, Query, description = "`true`: if the task is queued or running, stream its output as it is written until the task ends (live where the task runs on the replica answering)")),
    responses(
        (status = 200, description = "the finished task's stdout; with `follow=true`, a running task's, streamed to its end", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = berth_contract::ErrorBody),
        (status = 404, body = berth_contract::ErrorBody),
        (status = 409, description = "not finished yet (and not followed)", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn output(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    TaskPath(id): TaskPath,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let follow = follow_param(&params)?;
    payload(
        &state,
        &tenant,
        &id,
        PayloadKind::Output,
        "application/octet-stream",
        follow,
    )
    .await
}

#[utoipa::path(get, path = "/v1/tasks/{id}/logs", tag = "tasks", operation_id = "get_task_logs",
    params(("id" = String, Path, description = "task id"),
        ("follow" = Option<bool>, Query, description = "`true`: if the task is queued or running, stream its stderr as it is written until the task ends (live where the task runs on the replica answering)")),
    responses(
        (status = 200, description = "the finished task's stderr (capped; empty when it wrote none); with `follow=true`, a running task's, streamed to its end", content_type = "text/plain", body = String),
        (status = 400, body = berth_contract::ErrorBody),
        (status = 404, body = berth_contract::ErrorBody),
        (status = 409, description = "not finished yet (and not followed)", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn logs(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    TaskPath(id): TaskPath,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let follow = follow_param(&params)?;
    payload(
        &state,
        &tenant,
        &id,
        PayloadKind::Logs,
        "text/plain; charset=utf-8",
        follow,
    )
    .await
}
