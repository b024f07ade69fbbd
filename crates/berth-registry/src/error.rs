//! Every failure of the registry, and how the spec wants it answered:
//! `{"errors":[{"code","message","detail"}]}` with the code's status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tracing::error;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid repository name: {0:?}")]
    NameInvalid(String),
    #[error("repository not known: {0}")]
    NameUnknown(String),
    #[error("invalid tag: {0:?}")]
    TagInvalid(String),
    #[error("invalid digest: {0:?}")]
    DigestInvalid(String),
    #[error("the content does not match digest {expected} (it is {actual})")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob not known to this repository: {0}")]
    BlobUnknown(String),
    #[error("upload session not known: {0}")]
    BlobUploadUnknown(String),
    #[error("invalid upload: {0}")]
    BlobUploadInvalid(String),
    /// A chunk that does not start where the upload ends.
    #[error("the chunk does not continue the upload, which has {offset} bytes")]
    RangeInvalid { offset: u64, location: String },
    #[error("manifest not known: {0}")]
    ManifestUnknown(String),
    #[error("invalid manifest: {0}")]
    ManifestInvalid(String),
    #[error("the manifest refers to content this repository does not have: {0}")]
    ManifestBlobUnknown(String),
    #[error("the manifest is larger than {max} bytes")]
    ManifestTooLarge { max: usize },
    #[error("invalid size: {0}")]
    SizeInvalid(String),
    #[error("invalid page size n={0:?}")]
    PaginationInvalid(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("access to {0} is denied")]
    Denied(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("too many upload sessions in progress; retry later")]
    TooManyUploads,
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("blob storage: {0}")]
    Blob(#[from] berth_blobs::BlobError),
    #[error("registry index: {0}")]
    Index(#[from] crate::index::IndexError),
}

impl RegistryError {
    /// The spec's error code and the status it is sent with.
    pub fn code(&self) -> (StatusCode, &'static str) {
        use RegistryError::*;
        match self {
            NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            NameUnknown(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            TagInvalid(_) => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
            DigestInvalid(_) | DigestMismatch { .. } => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            BlobUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            BlobUploadUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            BlobUploadInvalid(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            RangeInvalid { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
            ManifestUnknown(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
            // 413 tells the client that retrying the same bytes is useless;
            // SIZE_INVALID is the spec code closest to "too big".
            ManifestTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
            SizeInvalid(_) => (StatusCode::BAD_REQUEST, "SIZE_INVALID"),
            PaginationInvalid(_) => (StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID"),
            Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            Denied(_) => (StatusCode::FORBIDDEN, "DENIED"),
            Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            TooManyUploads => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
            Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
            // A store that did not answer: worth a retry, unlike a bug.
            Blob(_) | Index(_) if self.is_unavailable() => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNKNOWN")
            }
            Blob(_) | Index(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        }
    }

    /// Whether the blob store or the index could not be reached (rather
    /// than refusing): the request may succeed if retried.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Blob(e) => e.is_unavailable(),
            Self::Index(e) => e.unavailable,
            _ => false,
        }
    }

    fn detail(&self) -> Value {
        use RegistryError::*;
        match self {
            NameInvalid(n) | NameUnknown(n) => json!({ "name": n }),
            TagInvalid(t) => json!({ "tag": t }),
            DigestInvalid(d) | BlobUnknown(d) | ManifestBlobUnknown(d) => json!({ "digest": d }),
            DigestMismatch { expected, actual } => {
                json!({ "expected": expected, "actual": actual })
            }
            ManifestUnknown(r) => json!({ "reference": r }),
            RangeInvalid { offset, .. } => json!({ "offset": offset }),
            ManifestTooLarge { max } => json!({ "max_bytes": max }),
            _ => Value::Null,
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.code();
        let message = match &self {
            Self::Io(_) | Self::Blob(_) | Self::Index(_) => {
                error!(error = %self, "registry storage failure");
                if self.is_unavailable() {
                    "storage unavailable; retry later".to_owned()
                } else {
                    "internal error; see the server log".to_owned()
                }
            }
            other => other.to_string(),
        };
        let body = json!({
            "errors": [{ "code": code, "message": message, "detail": self.detail() }]
        });
        let mut resp = (status, Json(body)).into_response();
        let headers = resp.headers_mut();
        match &self {
            Self::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"berth\""),
                );
            }
            Self::RangeInvalid { offset, location } => {
                if let Ok(v) = HeaderValue::from_str(location) {
                    headers.insert(header::LOCATION, v);
                }
                headers.insert(header::RANGE, range_header(*offset));
            }
            Self::TooManyUploads => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
            }
            e if e.is_unavailable() => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        resp
    }
}

/// `Range: 0-<last byte>` as upload responses report progress; an empty
/// upload reports `0-0`, as the reference implementation does.
pub(crate) fn range_header(offset: u64) -> HeaderValue {
    HeaderValue::try_from(format!("0-{}", offset.saturating_sub(1)))
        .unwrap_or(HeaderValue::from_static("0-0"))
}
