//! Synchronous invocation: the request body streams into the function's
//! stdin and its stdout streams back as the response body.
//!
//! The status line must be sent before the body, but whether the function
//! succeeds is known only when it exits. So the first 64 KiB of output are
//! held back: a function that exits within them gets an exact status (200,
//! 502, 504); one that writes more commits to 200 and streams, and if it
//! then fails the response is cut off mid-body (the client sees a transfer
//! error, never a clean truncated success), and the task records why.
//!
//! `Server-Timing` has the same problem: the durations are known when the
//! call ends. An answer that fits the window carries it as a header; a
//! streamed one carries it as a trailer after the last chunk, announced by
//! `Trailer: server-timing`, to callers that accept trailers (`TE:
//! trailers` on HTTP/1.1, which hyper requires before it sends any; HTTP/1.1
//! clients that do not say so would not read them). The task record's
//! `timing` always has them.

use std::io;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use berth_core::{RequestMeta, TaskId, TaskStatus};
use berth_scheduler::{InputStream, ResponseHead, SyncCall};
use futures::{StreamExt, TryStreamExt, stream};
use tokio::sync::oneshot;

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
    /// Whether a streamed answer may end with trailers.
    pub accepts_trailers: bool,
}

/// HTTP/2 always allows trailers; HTTP/1.1 only to a caller that sent
/// `TE: trailers` (RFC 9110, 6.5.1), and hyper drops them otherwise.
fn accepts_trailers(version: Version, headers: &HeaderMap) -> bool {
    version >= Version::HTTP_2
        || headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
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
            accepts_trailers: accepts_trailers(parts.version, &parts.headers),
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

#[utoipa::path(post, path = "/v1/functions/{name}/invoke", tag = "calls", operation_id = "invoke_function",
    params(
        ("name" = String, Path, description = "function name"),
        ("TE" = Option<String>, Header, description = "`trailers`: an answer longer than 64 KiB ends with a `Server-Timing` trailer"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "the function's stdin (any media type)"),
    responses(
        (status = 200, description = "the function's stdout (http mode: its own status and headers)",
            content_type = "application/octet-stream", body = Vec<u8>,
            headers(("x-berth-task-id" = String), ("x-berth-version" = i64),
                ("server-timing" = String, description = "queue, pull, start and run durations (ms), when the answer fits in the first 64 KiB; past that it streams and this is a trailer instead (only to callers that sent `TE: trailers`); always in the task's `timing`"),
                ("trailer" = String, description = "`server-timing` on a streamed answer to a caller that accepts trailers"))),
        (status = 400, description = "the name is not valid UTF-8, or the body was cut off", body = berth_contract::ErrorBody),
        (status = 404, body = berth_contract::ErrorBody),
        (status = 409, description = "the call was cancelled (`DELETE /v1/tasks/{id}`)", body = berth_contract::ErrorBody),
        (status = 413, body = berth_contract::ErrorBody),
        (status = 429, body = berth_contract::ErrorBody),
        (status = 502, description = "the function failed", body = berth_contract::ErrorBody),
        (status = 503, body = berth_contract::ErrorBody),
        (status = 504, description = "the function timed out", body = berth_contract::ErrorBody)),
    security(("bearer" = [])))]
pub async fn invoke(State(state): State<AppState>, req: FunctionCall) -> ApiResult<Response> {
    let call = state
        .tasks
        .invoke(&req.tenant, &req.name, req.meta, req.body)
        .await?;
    Ok(respond(call, req.accepts_trailers).await)
}

/// Turns a running call into the HTTP response: see the module comment.
pub async fn respond(mut call: SyncCall, accepts_trailers: bool) -> Response {
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

    let mut resp = if exited {
        let Ok(result) = call.result.await else {
            return ApiError::internal().into_response();
        };
        let mut resp = if result.outcome.status == TaskStatus::Succeeded {
            let body = Body::from_stream(stream::iter(head.into_iter().map(Ok::<_, io::Error>)));
            ok_response(body, fn_head.as_ref())
        } else {
            ApiError::of_call(&result, id).into_response()
        };
        if let Some(v) = server_timing(&result.timing) {
            resp.headers_mut().insert(SERVER_TIMING, v);
        }
        resp
    } else {
        let rest = stream::unfold(call.stdout, |mut rx| async move {
            rx.recv().await.map(|chunk| (Ok::<_, io::Error>(chunk), rx))
        });
        let result = call.result;
        // The verdict is the stream's last item, so the timing is in the
        // channel by the time the trailers are asked for.
        let (timing_tx, timing_rx) = oneshot::channel();
        let verdict = stream::once(async move {
            match result.await {
                Ok(r) if r.outcome.status == TaskStatus::Succeeded => {
                    let _ = timing_tx.send(r.timing);
                    None
                }
                Ok(r) => Some(Err(io::Error::other(format!(
                    "function failed after its output began: {}",
                    r.outcome.error.map(|e| e.message).unwrap_or_default()
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
        if accepts_trailers {
            let body = http_body_util::BodyExt::with_trailers(body, async move {
                let value = server_timing(&timing_rx.await.ok()?)?;
                Some(Ok(HeaderMap::from_iter([(SERVER_TIMING, value)])))
            });
            let mut resp = ok_response(Body::new(body), fn_head.as_ref());
            resp.headers_mut()
                .insert(header::TRAILER, HeaderValue::from_static("server-timing"));
            resp
        } else {
            ok_response(body, fn_head.as_ref())
        }
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

/// `Server-Timing` (W3C) entries for where the call's time went; none
/// when nothing was measured.
pub(crate) fn server_timing(t: &berth_core::Timing) -> Option<HeaderValue> {
    let entries = [
        ("queue", t.queued_ms),
        ("pull", t.pull_ms),
        ("start", t.start_ms),
        ("run", t.run_ms),
    ]
    .iter()
    .filter_map(|(name, ms)| ms.map(|ms| format!("{name};dur={ms}")))
    .collect::<Vec<_>>();
    if entries.is_empty() {
        return None;
    }
    HeaderValue::from_str(&entries.join(", ")).ok()
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
