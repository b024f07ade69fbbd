//! What can go wrong with a blob, in the few kinds a caller acts on: the
//! blob is not there, is already there, the store cannot be reached (try
//! again later, answer 503), or anything else (a bug or a misconfiguration).
//!
//! `object_store`'s own error never leaves this crate: [`BlobError::from_store`]
//! sorts it into one of these kinds and keeps it only as the source.

use std::error::Error as StdError;

type Source = Box<dyn StdError + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The blob an operation needs (a copy's source) does not exist. Reads
    /// answer `None` instead.
    #[error("no blob at {key}")]
    NotFound { key: String },

    /// A create-only write found the key taken.
    #[error("a blob already exists at {key}")]
    AlreadyExists { key: String },

    /// The store did not answer (connection refused, timed out, or a 5xx or
    /// 429 after the client's retries): worth retrying later.
    #[error("blob store unavailable: {0}")]
    Unavailable(#[source] Source),

    /// A key or prefix that no backend can store: a programming error.
    #[error("invalid blob key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },

    /// The store's URL or settings are wrong.
    #[error("blob store configuration: {0}")]
    Config(String),

    /// Anything else: permission denied, a full disk, a malformed answer.
    #[error("blob store error: {0}")]
    Other(#[source] Source),
}

impl BlobError {
    /// Whether the storage could not be reached (down, overloaded) rather
    /// than refusing the request: worth a 503 and a retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, BlobError::Unavailable(_))
    }
}

impl BlobError {
    /// Sorts an `object_store` error about `key` into a kind.
    pub(crate) fn from_store(err: object_store::Error, key: &str) -> Self {
        use object_store::Error as E;
        match err {
            E::NotFound { .. } => Self::NotFound { key: key.into() },
            // A refused `If-None-Match: *` arrives as a failed precondition
            // on some S3 implementations and as a conflict on others.
            E::AlreadyExists { .. } | E::Precondition { .. } => {
                Self::AlreadyExists { key: key.into() }
            }
            E::InvalidPath { source } => Self::InvalidKey {
                key: key.into(),
                reason: source.to_string(),
            },
            other if is_unavailable(&other) => Self::Unavailable(Box::new(other)),
            other => Self::Other(Box::new(other)),
        }
    }
}

/// Whether the error says the store could not be reached rather than that
/// it refused the request.
///
/// A transport failure carries `object_store::client::HttpError` somewhere
/// in its chain. A server error (5xx, 429) carries only object_store's
/// private `RetryError`, whose status shows only in its message, so the
/// status is read from there (see [`status_in`]).
fn is_unavailable(err: &object_store::Error) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<object_store::client::HttpError>()
            .is_some()
        {
            return true;
        }
        if let Some(status) = status_in(&e.to_string()) {
            return status >= 500 || status == 429;
        }
        current = e.source();
    }
    false
}

/// The HTTP status in an object_store retry error's message ("Server
/// returned non-2xx status code: 503 Service Unavailable: ...").
fn status_in(message: &str) -> Option<u16> {
    const MARK: &str = "status code: ";
    let at = message.find(MARK)? + MARK.len();
    message.get(at..at + 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(source: impl StdError + Send + Sync + 'static) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(source),
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Message(&'static str);

    #[test]
    fn errors_sort_into_kinds() {
        let refused = object_store::client::HttpError::new(
            object_store::client::HttpErrorKind::Connect,
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        let cases: Vec<(object_store::Error, &str)> = vec![
            (generic(refused), "unavailable"),
            (
                generic(Message(
                    "Error performing PUT http://x/b/k in 3s - Server returned non-2xx status code: 503 Service Unavailable: ",
                )),
                "unavailable",
            ),
            (
                generic(Message(
                    "Server returned non-2xx status code: 429 Too Many Requests: ",
                )),
                "unavailable",
            ),
            (
                generic(Message(
                    "Server returned non-2xx status code: 400 Bad Request: ",
                )),
                "other",
            ),
            (generic(Message("disk full")), "other"),
            (
                object_store::Error::NotFound {
                    path: "k".into(),
                    source: Box::new(Message("gone")),
                },
                "not found",
            ),
            (
                object_store::Error::Precondition {
                    path: "k".into(),
                    source: Box::new(Message("412")),
                },
                "exists",
            ),
        ];
        for (err, want) in cases {
            let shown = err.to_string();
            let got = match BlobError::from_store(err, "k") {
                BlobError::Unavailable(_) => "unavailable",
                BlobError::Other(_) => "other",
                BlobError::NotFound { .. } => "not found",
                BlobError::AlreadyExists { .. } => "exists",
                e => panic!("unexpected {e}"),
            };
            assert_eq!(got, want, "{shown}");
        }
    }
}
