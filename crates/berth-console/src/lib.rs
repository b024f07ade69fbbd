//! The web console at `/console/`: a few static files (HTML, CSS, JavaScript
//! modules, an icon) compiled into the binary, and the routes that serve
//! them.
//!
//! Architecture Invariant: the console is a client like any other. It runs
//! in the browser and speaks only the public v1 API (with the key the user
//! signs in with, as `Authorization: Bearer`), from the same origin, so the
//! API needs no CORS. This crate depends on no other Berth crate; its
//! routes need no key, since they serve nothing but these files.
//!
//! Every answer carries a strict Content-Security-Policy (scripts and
//! styles from this origin only, no inline script, no framing), `nosniff`
//! and `no-referrer`. The files' names carry no version, so they are served
//! `no-cache` with an `ETag`: a browser revalidates and gets `304`, and a
//! new server never mixes with scripts cached from an older one.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Where the console lives; `/console` redirects here.
pub const BASE: &str = "/console/";

/// The policy of every page and file: nothing from another origin, no
/// inline script or style, no plugins, no framing. Images may also be
/// `blob:` URLs: the preview of a function's output made in the page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' blob:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    body: &'static [u8],
    etag: u64,
}

/// FNV-1a, at compile time: an `ETag` needs only to change with the bytes.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(Asset {
            path: $path,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $path)),
            etag: fnv1a(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $path))),
        }),*]
    };
}

/// Every file under `assets/` (a test checks that none is missing).
static ASSETS: &[Asset] = assets![
    "index.html",
    "console.css",
    "favicon.svg",
    "api.js",
    "app.js",
    "dom.js",
    "functions.js",
    "invoke.js",
    "output.js",
    "service.js",
    "tasks.js",
];

fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The media type of a file, by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The console's routes: `/console`, `/console/` and the files under it.
/// They carry no state and need no key; merge them into the server's app.
pub fn router() -> Router {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent(BASE) }))
        .route(BASE, get(index))
        .route("/console/{*path}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(asset) = asset(path) else {
        let mut resp = (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found\n",
        )
            .into_response();
        secure(resp.headers_mut());
        return resp;
    };
    let etag = HeaderValue::from_str(&format!("\"{:016x}\"", asset.etag))
        .expect("a quoted hex string is a header value");
    let mut resp = if matches(request, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut resp = asset.body.into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(asset.path)),
        );
        resp
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(h);
    resp
}

/// Whether `If-None-Match` names this version (or any, `*`).
fn matches(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

fn secure(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod tests;
