//! One log line per HTTP request, API and registry alike, under the
//! `berth::http` target: method, path, status, milliseconds until the
//! answer's head, the tenant the key belonged to, the function the path
//! names and the task the answer names (`X-Berth-Task-Id`). Query strings
//! and headers are never logged: both may carry the caller's secrets.
//!
//! The fields live on the request's span, so whatever else is logged
//! while the request is served carries them too; the API's and the
//! registry's authentication fill in `tenant` once they know it.

use std::time::Duration;

use axum::Router;
use axum::http::{Request, Response};
use tower_http::trace::TraceLayer;
use tracing::field::Empty;
use tracing::{Span, info, info_span};

pub(crate) fn layer(router: Router) -> Router {
    router.layer(
        TraceLayer::new_for_http()
            .make_span_with(|req: &Request<_>| {
                let path = req.uri().path();
                info_span!(
                    target: "berth::http",
                    "request",
                    method = %req.method(),
                    path,
                    tenant = Empty,
                    function = function_of(path),
                )
            })
            .on_request(())
            .on_response(|resp: &Response<_>, latency: Duration, _: &Span| {
                let task = resp
                    .headers()
                    .get("x-berth-task-id")
                    .and_then(|v| v.to_str().ok());
                info!(
                    target: "berth::http",
                    status = resp.status().as_u16(),
                    ms = round_ms(latency),
                    task,
                    "request"
                );
            })
            // A 5xx is already in the line above; a failure of the
            // connection mid-body is the task's to report.
            .on_failure(())
            .on_body_chunk(())
            .on_eos(()),
    )
}

/// Milliseconds with two decimals: warm calls take well under one.
fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// The function a `/v1/functions/{name}...` path names, as written.
fn function_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/functions/")?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_is_read_from_its_paths_only() {
        assert_eq!(function_of("/v1/functions/echo/invoke"), Some("echo"));
        assert_eq!(function_of("/v1/functions/echo"), Some("echo"));
        assert_eq!(function_of("/v1/functions/"), None);
        assert_eq!(function_of("/v1/functions"), None);
        assert_eq!(function_of("/v1/tasks/x"), None);
        assert_eq!(function_of("/v2/functions/echo"), None);
    }

    #[test]
    fn milliseconds_keep_two_decimals() {
        assert_eq!(round_ms(Duration::from_micros(1234)), 1.23);
        assert_eq!(round_ms(Duration::from_secs(2)), 2000.0);
    }
}
