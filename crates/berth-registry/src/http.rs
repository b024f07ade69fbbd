//! The Distribution API over HTTP. One catch-all route takes everything
//! under `/v2/`, because repository names contain slashes; the tail is
//! parsed from the raw, undecoded path, so a percent-encoded `..` is just
//! an invalid name and never a path component.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::json;

use crate::RegistryError;
use crate::auth::{Principal, credentials};
use crate::digest::Digest;
use crate::error::range_header;
use crate::manifest::{MAX_MANIFEST_BYTES, OCI_INDEX};
use crate::names::RepoName;
use crate::registry::{Opened, RangeChoice, Reference, Registry};
use crate::stream::blob_body;

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_FILTERS: HeaderName = HeaderName::from_static("oci-filters-applied");
/// Largest page of tags or repositories, also the default page size.
const MAX_PAGE: usize = 1000;

/// The registry's routes, to be merged into the server's router. Uploads
/// are streams of any size: no body limit applies here.
pub fn router(reg: Arc<Registry>) -> Router {
    Router::new()
        .route("/v2", any(handle))
        .route("/v2/", any(handle))
        .route("/v2/{*tail}", any(handle))
        .layer(DefaultBodyLimit::disable())
        .with_state(reg)
}

async fn handle(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let req = count_received(&reg, req);
    let mut resp = match serve(&reg, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

/// Counts the bytes of a body that may carry content (an upload, a
/// manifest) as they are read.
fn count_received(reg: &Registry, req: Request) -> Request {
    if !matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        return req;
    }
    let metrics = reg.metrics.clone();
    req.map(|body| {
        Body::from_stream(body.into_data_stream().inspect(move |piece| {
            if let Ok(piece) = piece {
                metrics.received(piece.len() as u64);
            }
        }))
    })
}

/// Where a request goes, parsed from the path after `/v2/`.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Base,
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    StartUpload(&'a str),
    Upload(&'a str, &'a str),
    Referrers(&'a str, &'a str),
}

fn route(path: &str) -> Option<Route<'_>> {
    let tail = path.strip_prefix("/v2")?;
    if tail.is_empty() || tail == "/" {
        return Some(Route::Base);
    }
    let tail = tail.strip_prefix('/')?;
    if tail == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = tail
        .strip_suffix("/blobs/uploads/")
        .or_else(|| tail.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::StartUpload(name));
    }
    let (rest, last) = tail.rsplit_once('/')?;
    let (name, kind) = rest.rsplit_once('/')?;
    match kind {
        "manifests" => Some(Route::Manifest(name, last)),
        "blobs" => Some(Route::Blob(name, last)),
        "tags" if last == "list" => Some(Route::Tags(name)),
        "referrers" => Some(Route::Referrers(name, last)),
        "uploads" => name
            .strip_suffix("/blobs")
            .map(|name| Route::Upload(name, last)),
        _ => None,
    }
}

async fn serve(reg: &Registry, req: Request) -> Result<Response, RegistryError> {
    let principal = match credentials(req.headers()) {
        Some((user, secret)) => reg.authenticate(user.as_deref(), &secret).await,
        None => None,
    }
    .ok_or(RegistryError::Unauthorized)?;
    // For the embedding server's request log, if it declares the field.
    tracing::Span::current().record("tenant", principal.tenant.as_str());

    let path = req.uri().path().to_owned();
    let Some(route) = route(&path) else {
        return Ok(not_found());
    };
    let method = req.method().clone();
    let pull = matches!(method, Method::GET | Method::HEAD);
    match route {
        Route::Base if pull => Ok(json_response(StatusCode::OK, json!({}))),
        Route::Catalog if method == Method::GET => catalog(reg, &principal, req).await,
        Route::Tags(name) if method == Method::GET => {
            let repo = authorize(&principal, name, true)?;
            tags(reg, &repo, req).await
        }
        Route::Manifest(name, reference) => {
            let repo = authorize(&principal, name, pull)?;
            let reference = Reference::parse(reference)?;
            match method {
                Method::GET | Method::HEAD => get_manifest(reg, &repo, &reference, &method).await,
                Method::PUT => put_manifest(reg, &repo, &reference, req).await,
                Method::DELETE => {
                    reg.delete_manifest(&repo, &reference).await?;
                    Ok(StatusCode::ACCEPTED.into_response())
                }
                _ => Err(unsupported(&method)),
            }
        }
        Route::Blob(name, digest) => {
            let repo = authorize(&principal, name, pull)?;
            let digest = Digest::parse(digest)?;
            match method {
                Method::GET | Method::HEAD => {
                    // A HEAD from someone who may push here is a client
                    // checking whether it can skip an upload: it will rely
                    // on the blob, so the blob is protected.
                    let reusing = method == Method::HEAD && principal.can_push(&repo);
                    get_blob(reg, &repo, &digest, reusing, req).await
                }
                Method::DELETE => {
                    reg.delete_blob(&repo, &digest).await?;
                    Ok(StatusCode::ACCEPTED.into_response())
                }
                _ => Err(unsupported(&method)),
            }
        }
        Route::StartUpload(name) if method == Method::POST => {
            let repo = authorize(&principal, name, false)?;
            start_upload(reg, &principal, &repo, req).await
        }
        Route::Upload(name, id) => {
            let repo = authorize(&principal, name, false)?;
            upload(reg, &repo, id, req).await
        }
        Route::Referrers(name, digest) if method == Method::GET => {
            let repo = authorize(&principal, name, true)?;
            let digest = Digest::parse(digest)?;
            let q = query(&req);
            let filter = q.get("artifactType").map(String::as_str);
            let index = reg.referrers(&repo, &digest, filter).await?;
            let mut resp = json_response(StatusCode::OK, index);
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
            if filter.is_some() {
                h.insert(OCI_FILTERS, HeaderValue::from_static("artifactType"));
            }
            Ok(resp)
        }
        _ => Err(unsupported(&method)),
    }
}

/// Checks the name's grammar first (so nothing invalid reaches a path),
/// then the principal's right to read (`pull`) or write it.
fn authorize(who: &Principal, name: &str, pull: bool) -> Result<RepoName, RegistryError> {
    let repo = RepoName::parse(name)?;
    let allowed = if pull {
        who.can_pull(&repo)
    } else {
        who.can_push(&repo)
    };
    if allowed {
        Ok(repo)
    } else {
        Err(RegistryError::Denied(repo.to_string()))
    }
}

fn unsupported(method: &Method) -> RegistryError {
    RegistryError::Unsupported(format!("{method} is not supported on this endpoint"))
}

fn not_found() -> Response {
    let body = json!({"errors": [{
        "code": "NAME_UNKNOWN",
        "message": "no such registry endpoint",
        "detail": null,
    }]});
    json_response(StatusCode::NOT_FOUND, body)
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn query(req: &Request) -> HashMap<String, String> {
    Query::<HashMap<String, String>>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default()
}

fn header_value(s: &str) -> HeaderValue {
    // Everything put in headers here is grammar-checked ASCII (names,
    // digests, ids); a failure would be a bug, answered with an empty value
    // rather than a panic.
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))
}

fn empty(status: StatusCode, headers: &[(HeaderName, HeaderValue)]) -> Response {
    let mut resp = (status, Body::empty()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    for (k, v) in headers {
        h.insert(k.clone(), v.clone());
    }
    resp
}

// ----- pagination ----------------------------------------------------------

/// `n` and `last` of a list request.
fn page_params(req: &Request) -> Result<(usize, Option<String>), RegistryError> {
    let q = query(req);
    let n = match q.get("n") {
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| RegistryError::PaginationInvalid(n.clone()))?
            .min(MAX_PAGE),
        None => MAX_PAGE,
    };
    Ok((n, q.get("last").cloned()))
}

fn with_next_link(resp: &mut Response, base: &str, n: usize, items: &[String], more: bool) {
    if let (true, Some(last)) = (more, items.last()) {
        let link = format!("<{base}?n={n}&last={last}>; rel=\"next\"");
        resp.headers_mut().insert(header::LINK, header_value(&link));
    }
}

async fn catalog(reg: &Registry, who: &Principal, req: Request) -> Result<Response, RegistryError> {
    let (n, last) = page_params(&req)?;
    let (repos, more) = reg.catalog(who, n, last.as_deref()).await?;
    let mut resp = json_response(StatusCode::OK, json!({ "repositories": repos }));
    with_next_link(&mut resp, "/v2/_catalog", n, &repos, more);
    Ok(resp)
}

async fn tags(reg: &Registry, repo: &RepoName, req: Request) -> Result<Response, RegistryError> {
    let (n, last) = page_params(&req)?;
    let (tags, more) = reg.tags(repo, n, last.as_deref()).await?;
    let mut resp = json_response(
        StatusCode::OK,
        json!({ "name": repo.as_str(), "tags": tags }),
    );
    with_next_link(&mut resp, &format!("/v2/{repo}/tags/list"), n, &tags, more);
    Ok(resp)
}

// ----- manifests -----------------------------------------------------------

async fn get_manifest(
    reg: &Registry,
    repo: &RepoName,
    reference: &Reference,
    method: &Method,
) -> Result<Response, RegistryError> {
    let m = reg.get_manifest(repo, reference).await?;
    let headers = [
        (header::CONTENT_TYPE, header_value(&m.media_type)),
        (CONTENT_DIGEST, header_value(&m.digest.to_string())),
        (header::ETAG, header_value(&format!("\"{}\"", m.digest))),
        (header::CONTENT_LENGTH, HeaderValue::from(m.bytes.len())),
    ];
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        reg.metrics.pulled();
        reg.metrics.sent(m.bytes.len() as u64);
        Body::from(m.bytes)
    };
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().extend(headers);
    Ok(resp)
}

async fn put_manifest(
    reg: &Registry,
    repo: &RepoName,
    reference: &Reference,
    req: Request,
) -> Result<Response, RegistryError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (parts, body) = req.into_parts();
    let bytes = read_capped(&parts.headers, body, MAX_MANIFEST_BYTES).await?;
    let (digest, subject) = reg
        .put_manifest(repo, reference, bytes, content_type.as_deref())
        .await?;
    reg.metrics.pushed();
    let mut headers = vec![
        (
            header::LOCATION,
            header_value(&format!("/v2/{repo}/manifests/{digest}")),
        ),
        (CONTENT_DIGEST, header_value(&digest.to_string())),
    ];
    if let Some(s) = subject {
        headers.push((OCI_SUBJECT, header_value(&s.to_string())));
    }
    Ok(empty(StatusCode::CREATED, &headers))
}

/// Reads a body of at most `max` bytes, refusing a larger one as soon as
/// its declared length or its running length says so.
async fn read_capped(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, RegistryError> {
    let too_large = || RegistryError::ManifestTooLarge { max };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > max as u64) {
        discard(&mut stream).await;
        return Err(too_large());
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = stream.next().await {
        let frame = frame
            .map_err(|e| RegistryError::ManifestInvalid(format!("the request body failed: {e}")))?;
        if buf.len() + frame.len() > max {
            discard(&mut stream).await;
            return Err(too_large());
        }
        buf.extend_from_slice(&frame);
    }
    Ok(buf.freeze())
}

/// Reads and drops the rest of a refused body, within bounds, so that a
/// client still sending it reads the error instead of a reset connection.
/// Past the bounds the connection is closed after the answer.
async fn discard(stream: &mut axum::body::BodyDataStream) {
    const MAX_DISCARD: usize = 64 * 1024 * 1024;
    const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
    let _ = tokio::time::timeout(MAX_WAIT, async {
        let mut dropped = 0;
        while let Some(Ok(frame)) = stream.next().await {
            dropped += frame.len();
            if dropped > MAX_DISCARD {
                break;
            }
        }
    })
    .await;
}

// ----- blobs ---------------------------------------------------------------

async fn get_blob(
    reg: &Registry,
    repo: &RepoName,
    digest: &Digest,
    reusing: bool,
    req: Request,
) -> Result<Response, RegistryError> {
    let base = [
        (CONTENT_DIGEST, header_value(&digest.to_string())),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ),
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
        (header::ETAG, header_value(&format!("\"{digest}\""))),
    ];
    if req.method() == Method::HEAD {
        let size = reg.blob_size(repo, digest, reusing).await?;
        let mut resp = empty(StatusCode::OK, &base);
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        return Ok(resp);
    }
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let choose = |size: u64| range.as_deref().and_then(|r| parse_byte_range(r, size));
    let choose: Option<&RangeChoice<'_>> = match range {
        Some(_) => Some(&choose),
        None => None,
    };
    let (status, blob, start, size) = match reg.open_blob(repo, digest, choose).await? {
        Opened::Whole(blob) => {
            let size = blob.len;
            (StatusCode::OK, blob, 0, size)
        }
        Opened::Range { blob, first, size } => (StatusCode::PARTIAL_CONTENT, blob, first, size),
        Opened::Unsatisfiable { size } => {
            let mut resp = empty(StatusCode::RANGE_NOT_SATISFIABLE, &[]);
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{size}")),
            );
            return Ok(resp);
        }
    };
    let len = blob.len;
    let mut resp = (status, blob_body(blob, reg.metrics.clone())).into_response();
    let h = resp.headers_mut();
    h.extend(base);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            header_value(&format!("bytes {start}-{}/{size}", start + len - 1)),
        );
    }
    Ok(resp)
}

/// A single `bytes=` range within a blob of `size` bytes, as the first
/// and last byte; `None` if it cannot be satisfied (or is several ranges).
fn parse_byte_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // A suffix: the last N bytes.
        let n: u64 = last.parse().ok()?;
        if n == 0 {
            return None;
        }
        return Some((size.saturating_sub(n), size - 1));
    }
    let first: u64 = first.parse().ok()?;
    let last = if last.is_empty() {
        size - 1
    } else {
        last.parse::<u64>().ok()?.min(size - 1)
    };
    (first <= last).then_some((first, last))
}

// ----- uploads -------------------------------------------------------------

fn upload_location(repo: &RepoName, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn blob_created(repo: &RepoName, digest: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        &[
            (
                header::LOCATION,
                header_value(&format!("/v2/{repo}/blobs/{digest}")),
            ),
            (CONTENT_DIGEST, header_value(&digest.to_string())),
        ],
    )
}

fn upload_progress(status: StatusCode, repo: &RepoName, id: &str, offset: u64) -> Response {
    empty(
        status,
        &[
            (header::LOCATION, header_value(&upload_location(repo, id))),
            (header::RANGE, range_header(offset)),
            (UPLOAD_UUID, header_value(id)),
        ],
    )
}

async fn start_upload(
    reg: &Registry,
    who: &Principal,
    repo: &RepoName,
    req: Request,
) -> Result<Response, RegistryError> {
    let q = query(&req);
    if let Some(mount) = q.get("mount") {
        let digest = Digest::parse(mount)?;
        // A mount the caller may not read from is answered like a blob
        // that is not there: an upload session, revealing nothing.
        let from = q
            .get("from")
            .and_then(|f| RepoName::parse(f).ok())
            .filter(|f| who.can_pull(f));
        if let Some(from) = from
            && reg.mount(repo, &digest, &from).await?
        {
            return Ok(blob_created(repo, &digest));
        }
    } else if let Some(digest) = q.get("digest") {
        let digest = Digest::parse(digest)?;
        reg.upload_monolithic(repo, &digest, req.into_body())
            .await?;
        return Ok(blob_created(repo, &digest));
    }
    let id = reg.start_upload(repo).await?;
    Ok(upload_progress(StatusCode::ACCEPTED, repo, &id, 0))
}

async fn upload(
    reg: &Registry,
    repo: &RepoName,
    id: &str,
    req: Request,
) -> Result<Response, RegistryError> {
    let session = reg.upload_session(repo, id).await?;
    let id = session.id.as_str();
    let location = upload_location(repo, id);
    let method = req.method().clone();
    match method {
        Method::GET => {
            let offset = reg.upload_offset(&session).await?;
            Ok(upload_progress(StatusCode::NO_CONTENT, repo, id, offset))
        }
        Method::PATCH => {
            let range = content_range(req.headers())?;
            let offset = reg
                .append(&session, range, req.into_body(), &location)
                .await?;
            Ok(upload_progress(StatusCode::ACCEPTED, repo, id, offset))
        }
        Method::PUT => {
            let q = query(&req);
            let digest = q.get("digest").ok_or_else(|| {
                RegistryError::DigestInvalid("the digest query parameter is required".into())
            })?;
            let digest = Digest::parse(digest)?;
            let range = content_range(req.headers())?;
            reg.finish_upload(&session, range, req.into_body(), &digest, &location)
                .await?;
            Ok(blob_created(repo, &digest))
        }
        Method::DELETE => {
            reg.cancel_upload(&session).await?;
            Ok(empty(StatusCode::NO_CONTENT, &[]))
        }
        _ => Err(unsupported(&method)),
    }
}

/// A chunk's `Content-Range: <first>-<last>` (a `bytes ` or `bytes=`
/// prefix and a `/<total>` suffix are tolerated), checked against
/// `Content-Length` when both are sent.
fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, RegistryError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let invalid = || RegistryError::BlobUploadInvalid("malformed Content-Range".into());
    let s = value.to_str().map_err(|_| invalid())?.trim();
    let s = s
        .strip_prefix("bytes")
        .map(|r| r.trim_start_matches([' ', '=']))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or_default();
    let (first, last) = s.split_once('-').ok_or_else(invalid)?;
    let first: u64 = first.trim().parse().map_err(|_| invalid())?;
    let last: u64 = last.trim().parse().map_err(|_| invalid())?;
    if last < first {
        return Err(invalid());
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n != last - first + 1) {
        return Err(RegistryError::BlobUploadInvalid(
            "Content-Length does not match Content-Range".into(),
        ));
    }
    Ok(Some((first, last)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(route("/v2/a/b/tags/list"), Some(Route::Tags("a/b")));
        assert_eq!(
            route("/v2/a/b/c/manifests/v1"),
            Some(Route::Manifest("a/b/c", "v1"))
        );
        assert_eq!(
            route("/v2/a/blobs/sha256:x"),
            Some(Route::Blob("a", "sha256:x"))
        );
        assert_eq!(route("/v2/a/blobs/uploads/"), Some(Route::StartUpload("a")));
        assert_eq!(
            route("/v2/a/blobs/uploads/u-1"),
            Some(Route::Upload("a", "u-1"))
        );
        // A repository may itself be called "blobs".
        assert_eq!(
            route("/v2/t/blobs/blobs/sha256:x"),
            Some(Route::Blob("t/blobs", "sha256:x"))
        );
        assert_eq!(
            route("/v2/%2e%2e/manifests/x"),
            Some(Route::Manifest("%2e%2e", "x"))
        );
        assert_eq!(route("/v2/a/whatever"), None);
        assert_eq!(route("/v1/x"), None);
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(parse_byte_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_byte_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_byte_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_byte_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_byte_range("bytes=100-", 100), None);
        assert_eq!(parse_byte_range("bytes=5-1", 100), None);
        assert_eq!(parse_byte_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_byte_range("items=0-1", 100), None);
    }

    #[test]
    fn content_ranges() {
        let mut h = HeaderMap::new();
        assert_eq!(content_range(&h).unwrap(), None);
        for (v, want) in [
            ("0-9", (0, 9)),
            ("bytes 10-19", (10, 19)),
            ("bytes=10-19/100", (10, 19)),
        ] {
            h.insert(header::CONTENT_RANGE, HeaderValue::from_static(v));
            assert_eq!(content_range(&h).unwrap(), Some(want), "{v}");
        }
        h.insert(header::CONTENT_RANGE, HeaderValue::from_static("9-0"));
        assert!(content_range(&h).is_err());
        h.insert(header::CONTENT_RANGE, HeaderValue::from_static("0-9"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(content_range(&h).is_err());
    }
}
