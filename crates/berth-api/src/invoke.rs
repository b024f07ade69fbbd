//! Synchronous invocation: the request body streams into the function's
//! stdin and its stdout streams back as the response body.
//!
//! The status line must be sent before the body, but whether the function
//! succeeds is known only when it exits. So the first 64 KiB of output are
//! held back: a function that exits within them gets an exact status (200,
//! 502, 504); one that writes more commits to 200 and streams, and if it
//! then fails the response is cut off mid-body (the client sees a transfer
//! error, never a clean truncated success), and the task records why.

use std::io;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use berth_core::{RequestMeta, TaskId, TaskStatus};
use berth_executor::{InputStream, ResponseHead};
use berth_scheduler::{CallResult, SyncCall};
use futures::{StreamExt, TryStreamExt, stream};

use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::extract::FnName;

const DECISION_WINDOW: usize = 64 * 1024;

pub const TASK_ID_HEADER: HeaderName = HeaderName::from_static("x-berth-task-id");
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("x-berth-version");

/// Headers that describe the connection or carry the caller's credentials;
/// neither is the function's business.
const HIDDEN_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-type",
    "expect",
];

pub fn request_meta(method: &Method, uri: &Uri, headers: &HeaderMap) -> RequestMeta {
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    RequestMeta {
        method: method.as_str().to_owned(),
        path: "/".to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        content_type: header_str(header::CONTENT_TYPE),
        content_length: header_str(header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
        headers: headers
            .iter()
            .filter(|(name, _)| !HIDDEN_HEADERS.contains(&name.as_str()))
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect(),
    }
}

fn body_stream(body: Body) -> InputStream {
    Box::pin(body.into_data_stream().map_err(io::Error::other))
}

/// A request addressed to a function (sync invoke or async submit): who
/// calls, which function, the request as the function will see it, and the
/// body as a stream.
pub struct FunctionCall {
    pub tenant: String,
    pub name: String,
    pub meta: RequestMeta,
    pub body: InputStream,
}

impl<S: Send + Sync> FromRequest<S> for FunctionCall {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let FnName(name) = FnName::from_request_parts(&mut parts, state).await?;
        // Everything after `/invoke/` is the function's own path.
        let sub_path =
            axum::extract::Path::<Vec<(String, String)>>::from_request_parts(&mut parts, state)
                .await
                .ok()
                .and_then(|p| p.0.into_iter().find(|(k, _)| k == "path"))
                .map(|(_, p)| format!("/{p}"));
        let Tenant(tenant) = parts
            .extensions
            .get::<Tenant>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)?;
        let mut meta = request_meta(&parts.method, &parts.uri, &parts.headers);
        if let Some(p) = sub_path {
            meta.path = p;
        }
        Ok(Self {
            tenant,
            name,
            meta,
            body: body_stream(body),
        })
    }
}

pub(crate) fn task_headers(resp: &mut Response, id: TaskId, version: i64) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        h.insert(TASK_ID_HEADER, v);
    }
    h.insert(VERSION_HEADER, HeaderValue::from(version));
}

/// The error a finished, unsuccessful call answers with.
pub fn call_error(result: &CallResult, id: TaskId) -> ApiError {
    let (status, code) = match result.status {
        TaskStatus::TimedOut => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        TaskStatus::Cancelled => (StatusCode::CONFLICT, "cancelled"),
        _ => match result.error.as_ref().map(|e| e.code.as_str()) {
            Some("oom") => (StatusCode::BAD_GATEWAY, "oom"),
            Some("exit") => (StatusCode::BAD_GATEWAY, "function_failed"),
            // The engine went away under the call: an outage, not the
            // function's failure.
            Some("engine_unavailable") => (StatusCode::SERVICE_UNAVAILABLE, "engine_unavailable"),
            _ => (StatusCode::BAD_GATEWAY, "function_error"),
        },
    };
    let message = result
        .error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_else(|| format!("task ended as {}", result.status));
    let mut err = ApiError::new(status, code, message).with("task_id", id.to_string());
    if let Some(code) = result.exit_code {
        err = err.with("exit_code", code);
    }
    if !result.stderr_tail.is_empty() {
        err = err.with("stderr", result.stderr_tail.clone());
    }
    err
}

pub async fn invoke(State(state): State<AppState>, req: FunctionCall) -> ApiResult<Response> {
    let call = state
        .tasks
        .invoke(&req.tenant, &req.name, req.meta, req.body)
        .await?;
    Ok(respond(call).await)
}

/// Turns a running call into the HTTP response: see the module comment.
pub async fn respond(mut call: SyncCall) -> Response {
    let (id, version) = (call.task_id, call.version);
    // An http-mode function answers with its own status and headers; when
    // none comes (the program failed first), the result decides.
    let fn_head = match call.head.take() {
        Some(rx) => rx.await.ok(),
        None => None,
    };

    let mut head: Vec<Bytes> = Vec::new();
    let mut held = 0;
    let exited = loop {
        match call.stdout.recv().await {
            Some(chunk) => {
                held += chunk.len();
                head.push(chunk);
                if held >= DECISION_WINDOW {
                    break false;
                }
            }
            None => break true,
        }
    };

    let overflow = call.input_overflow;
    let mut resp = if exited {
        let Ok(result) = call.result.await else {
            return ApiError::internal().into_response();
        };
        // The function saw a cut-off input, so whatever it made of it is
        // not the answer to this request.
        let mut resp = if let Some(limit) = overflow.get() {
            ApiError::from(berth_scheduler::SchedError::InputTooLarge(*limit))
                .with("task_id", id.to_string())
                .into_response()
        } else if result.status == TaskStatus::Succeeded {
            let body = Body::from_stream(stream::iter(head.into_iter().map(Ok::<_, io::Error>)));
            ok_response(body, fn_head.as_ref())
        } else {
            call_error(&result, id).into_response()
        };
        if let Ok(v) = HeaderValue::from_str(&server_timing(&result.timing)) {
            resp.headers_mut().insert(SERVER_TIMING, v);
        }
        resp
    } else {
        let rest = stream::unfold(call.stdout, |mut rx| async move {
            rx.recv().await.map(|chunk| (Ok::<_, io::Error>(chunk), rx))
        });
        let result = call.result;
        let verdict = stream::once(async move {
            let outcome = result.await;
            if let Some(limit) = overflow.get() {
                return Some(Err(io::Error::other(format!(
                    "request body is larger than the {limit} byte limit"
                ))));
            }
            match outcome {
                Ok(r) if r.status == TaskStatus::Succeeded => None,
                Ok(r) => Some(Err(io::Error::other(format!(
                    "function failed after its output began: {}",
                    r.error.map(|e| e.message).unwrap_or_default()
                )))),
                Err(_) => Some(Err(io::Error::other("function result lost"))),
            }
        })
        .filter_map(|x| async move { x });
        let body = Body::from_stream(
            stream::iter(head.into_iter().map(Ok::<_, io::Error>))
                .chain(rest)
                .chain(verdict),
        );
        ok_response(body, fn_head.as_ref())
    };
    task_headers(&mut resp, id, version);
    resp
}

const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// Headers of an http-mode function's answer that belong to its own
/// connection, or that would let it pose as the platform.
const DROPPED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "trailer",
    "upgrade",
    "server-timing",
    "x-berth-task-id",
    "x-berth-version",
];

/// `Server-Timing` (W3C) entries for where the call's time went.
fn server_timing(t: &berth_core::Timing) -> String {
    [
        ("queue", t.queued_ms),
        ("pull", t.pull_ms),
        ("start", t.start_ms),
        ("run", t.run_ms),
    ]
    .iter()
    .filter_map(|(name, ms)| ms.map(|ms| format!("{name};dur={ms}")))
    .collect::<Vec<_>>()
    .join(", ")
}

fn ok_response(body: Body, fn_head: Option<&ResponseHead>) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(h) = fn_head {
        if let Ok(status) = StatusCode::from_u16(h.status) {
            *resp.status_mut() = status;
        }
        for (name, value) in &h.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                continue;
            };
            if !DROPPED_RESPONSE_HEADERS.contains(&name.as_str()) {
                if name == header::CONTENT_TYPE {
                    resp.headers_mut().insert(name, value);
                } else {
                    resp.headers_mut().append(name, value);
                }
            }
        }
    }
    resp
}
