//! Answers given without reading the request's body end the connection,
//! say so, and still let the client finish sending.
//!
//! Many answers come before the body is read: 413 on a declared length over
//! the limit, 401, 404 for a function that does not exist, 415, a function
//! that exits without reading its stdin. The unread bytes are still on the
//! connection, so hyper closes it after the answer, but its head says
//! `Connection: close` only if hyper noticed the abandoned body before
//! writing it, which is a race. A client that did not see it pools the
//! connection and sends its next request into a closed socket
//! (`IncompleteMessage`). So the answer says it whenever the body is left
//! unread, and clients open a new connection instead.
//!
//! Closing at once has a second failure: a client still writing its body
//! gets a broken pipe (the unread bytes make the close a reset) and often
//! reports that instead of the answer waiting in its socket. So the rest of
//! an abandoned body is read and thrown away in the background, up to
//! [`DRAIN_BYTES`] or [`DRAIN_TIME`], before the connection goes: what
//! servers call a lingering close. Past those bounds it closes anyway; a
//! body the size of the tenant's limit is not worth reading to say no.
//! A client that sent `Expect: 100-continue` and has not been asked for
//! its body is not drained: it sends nothing until told to.
//!
//! A body let go of after its answer went out (a streamed 200 whose
//! function stopped reading stdin) is drained the same way; if it ends
//! within the bounds, hyper keeps the connection as the answer promised.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use futures::{Stream, StreamExt};

/// Most of an abandoned body read to let its client finish sending.
const DRAIN_BYTES: u64 = 8 * 1024 * 1024;
/// Longest an abandoned body is read for.
const DRAIN_TIME: Duration = Duration::from_secs(2);

pub async fn close_if_body_unread(req: Request, next: Next) -> Response {
    let Some(declared) = declared_body(req.headers()) else {
        return next.run(req).await;
    };
    let expects_continue = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let seen = Arc::new(BodyUse {
        declared,
        ..BodyUse::default()
    });
    let req = req.map(|body| {
        Body::from_stream(Watched {
            inner: Some(body.into_data_stream()),
            seen: Arc::clone(&seen),
        })
    });
    let mut resp = next.run(req).await;
    let Ok(mut abandoned) = seen.abandoned.lock() else {
        return resp;
    };
    // From here on a body let go of is drained where it is dropped.
    abandoned.answered = true;
    if seen.left_unread(resp.status()) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        let asked_for = seen.polled.load(Ordering::Acquire);
        if let Some(rest) = abandoned
            .rest
            .take()
            .filter(|_| asked_for || !expects_continue)
        {
            tokio::spawn(drain(rest));
        }
    }
    resp
}

/// What the request says its body is: `Some(Some(n))` for a length,
/// `Some(None)` for chunked, `None` for no body at all.
fn declared_body(headers: &HeaderMap) -> Option<Option<u64>> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Some(None);
    }
    let len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    (len > 0).then_some(Some(len))
}

async fn drain(mut rest: BodyDataStream) {
    let mut read = 0u64;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = rest.next().await {
            read += chunk.len() as u64;
            if read > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

#[derive(Default)]
struct BodyUse {
    declared: Option<u64>,
    read: AtomicU64,
    polled: AtomicBool,
    finished: AtomicBool,
    dropped: AtomicBool,
    abandoned: Mutex<Abandoned>,
}

/// The rest of a body its handler let go of unread, kept (rather than
/// dropped, which would make hyper close at once) for the middleware to
/// drain once it knows the answer; after that, drained at once.
#[derive(Default)]
struct Abandoned {
    rest: Option<BodyDataStream>,
    answered: bool,
}

impl BodyUse {
    /// The body was not read to its end, and no one will: the handler let
    /// go of it, or answered with an error (a failed call reads no more,
    /// even if a task still holds the stream for a moment).
    fn left_unread(&self, status: StatusCode) -> bool {
        let finished = self.finished.load(Ordering::Acquire)
            || self
                .declared
                .is_some_and(|n| self.read.load(Ordering::Acquire) >= n);
        let abandoned = self.dropped.load(Ordering::Acquire)
            || status.is_client_error()
            || status.is_server_error();
        !finished && abandoned
    }
}

/// The request body as the handler reads it, telling [`BodyUse`] how far.
struct Watched {
    inner: Option<BodyDataStream>,
    seen: Arc<BodyUse>,
}

impl Stream for Watched {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        this.seen.polled.store(true, Ordering::Release);
        let polled = Pin::new(inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                this.seen
                    .read
                    .fetch_add(chunk.len() as u64, Ordering::AcqRel);
            }
            Poll::Ready(None) => this.seen.finished.store(true, Ordering::Release),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if !self.seen.finished.load(Ordering::Acquire)
            && let (Some(rest), Ok(mut abandoned)) = (self.inner.take(), self.seen.abandoned.lock())
        {
            if !abandoned.answered {
                abandoned.rest = Some(rest);
            } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(drain(rest));
            }
        }
        self.seen.dropped.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_that_carry_a_body_are_watched() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        };
        assert_eq!(declared_body(&headers(&[])), None);
        assert_eq!(declared_body(&headers(&[("content-length", "0")])), None);
        assert_eq!(
            declared_body(&headers(&[("content-length", "12")])),
            Some(Some(12))
        );
        assert_eq!(
            declared_body(&headers(&[("transfer-encoding", "chunked")])),
            Some(None)
        );
    }

    #[test]
    fn a_body_counts_as_unread_only_once_abandoned() {
        let seen = BodyUse {
            declared: Some(10),
            ..BodyUse::default()
        };
        // Still held by a streaming call: it may yet be read.
        assert!(!seen.left_unread(StatusCode::OK));
        assert!(seen.left_unread(StatusCode::PAYLOAD_TOO_LARGE));
        seen.dropped.store(true, Ordering::Release);
        assert!(seen.left_unread(StatusCode::OK));
        seen.read.store(10, Ordering::Release);
        assert!(!seen.left_unread(StatusCode::OK));
        assert!(!seen.left_unread(StatusCode::BAD_GATEWAY));
    }
}
