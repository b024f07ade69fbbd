//! Opening a store: the local filesystem (all-in-one) or an S3-compatible
//! bucket (a set), and the keys both accept.
//!
//! Configuration follows the AWS conventions every S3-compatible store and
//! its tooling already use (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`), so
//! pointing Berth at SeaweedFS, Garage or a cloud's S3 is a matter of the
//! environment, not of Berth's own settings.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, RetryConfig};

use crate::BlobError;

/// The local filesystem under `root`, durable on commit.
///
/// object_store's `LocalFileSystem` publishes every write by renaming (or,
/// create-only, hard-linking) a staged `KEY#N` file into place. With
/// `with_fsync(true)` it syncs the staged file before publishing and the
/// parent directory after, and syncs each directory it had to create, all
/// before the put or the multipart completion returns; so a committed blob
/// survives a power loss exactly as the old payload files did (write,
/// fsync, rename, fsync the directory). Staged files are not listed and
/// cannot be read by key, so nothing is visible before commit.
pub(crate) fn local(root: &FsPath) -> Result<Arc<dyn ObjectStore>, BlobError> {
    // A relative root (a data directory given on the command line) is taken
    // from where the process runs, once, here.
    let root = &std::path::absolute(root)
        .map_err(|e| BlobError::Config(format!("blob root {}: {e}", root.display())))?;
    std::fs::create_dir_all(root).map_err(|e| {
        BlobError::Config(format!("cannot create blob root {}: {e}", root.display()))
    })?;
    let fs = LocalFileSystem::new_with_prefix(root)
        .map_err(|e| BlobError::Config(format!("blob root {}: {e}", root.display())))?
        .with_fsync(true)
        // Removing a task's last payload removes its now empty directories,
        // so the tree does not fill with empty shards.
        .with_automatic_cleanup(true);
    Ok(Arc::new(fs))
}

/// `file:///abs/path` or `s3://BUCKET[/PREFIX]`; S3 settings are the
/// `AWS_*` pairs in `settings`.
pub(crate) fn url<K, V>(
    url: &str,
    settings: impl IntoIterator<Item = (K, V)>,
) -> Result<Arc<dyn ObjectStore>, BlobError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(BlobError::Config(format!(
                "a file URL names an absolute path (file:///ABS/PATH), not {url:?}"
            )));
        }
        return local(FsPath::new(path));
    }
    let Some(rest) = url.strip_prefix("s3://") else {
        return Err(BlobError::Config(format!(
            "unsupported blob store URL {url:?}: expected file:///ABS/PATH or s3://BUCKET[/PREFIX]"
        )));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(BlobError::Config(format!("no bucket in {url:?}")));
    }
    let s3 = s3(bucket, settings)?;
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        return Ok(s3);
    }
    let prefix = Path::parse(prefix).map_err(|e| BlobError::InvalidKey {
        key: prefix.into(),
        reason: e.to_string(),
    })?;
    Ok(Arc::new(PrefixStore::new(s3, prefix)))
}

fn s3<K, V>(
    bucket: &str,
    settings: impl IntoIterator<Item = (K, V)>,
) -> Result<Arc<dyn ObjectStore>, BlobError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    // Path-style addressing (`http://endpoint/bucket/key`) is the builder's
    // default and what SeaweedFS and Garage serve without DNS wildcards;
    // `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true` turns it off for a cloud.
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_retry(retry());
    for (key, value) in settings {
        let key = key.as_ref();
        if !key.starts_with("AWS_") {
            continue;
        }
        // Unknown AWS_* variables (a profile name, a CLI pager) are the
        // environment's business, not a mistake in ours.
        if let Ok(config) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(config, value.as_ref());
        }
    }
    let s3 = builder
        .build()
        .map_err(|e| BlobError::Config(format!("s3 bucket {bucket}: {e}")))?;
    Ok(Arc::new(s3))
}

/// Fewer and shorter retries than object_store's default (10 over up to
/// three minutes): a payload write sits behind a client's request, and a
/// store that has not answered in half a minute is better reported as
/// unavailable than waited on.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 5,
        retry_timeout: Duration::from_secs(30),
    }
}

/// A key as the stores take it: `/`-separated segments, none empty, `.` or
/// `..`, and no `#` (the local store's staging suffix).
pub(crate) fn key(key: &str) -> Result<Path, BlobError> {
    let invalid = |reason: String| BlobError::InvalidKey {
        key: key.into(),
        reason,
    };
    if key.is_empty() {
        return Err(invalid("empty".into()));
    }
    if key.contains('#') {
        return Err(invalid("'#' is reserved for staged writes".into()));
    }
    let path = Path::parse(key).map_err(|e| invalid(e.to_string()))?;
    // `parse` accepts and drops a leading or trailing '/', so `a/` and `a`
    // would name one blob; refuse rather than alias.
    if path.as_ref() != key {
        return Err(invalid("leading or trailing '/'".into()));
    }
    Ok(path)
}

/// A prefix for listing or deleting: a key, or nothing for everything.
pub(crate) fn prefix(prefix: &str) -> Result<Option<Path>, BlobError> {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    key(trimmed).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for good in ["a", "tasks/0f/x/input", "a/b.c-d_e"] {
            assert!(key(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", "a/../b", "a/./b", "a#1", "a\u{0}b"] {
            assert!(
                matches!(key(bad), Err(BlobError::InvalidKey { .. })),
                "{bad:?}"
            );
        }
        assert!(prefix("").unwrap().is_none());
        assert!(prefix("/").unwrap().is_none());
        assert_eq!(prefix("a/b/").unwrap().unwrap().as_ref(), "a/b");
    }

    #[test]
    fn urls_are_checked() {
        let none: [(&str, &str); 0] = [];
        for bad in ["http://x/y", "s3://", "s3:///p", "file://relative", "/abs"] {
            assert!(
                matches!(url(bad, none), Err(BlobError::Config(_))),
                "{bad:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let file_url = format!("file://{}", dir.path().join("sub").display());
        assert!(url(&file_url, none).is_ok());
        assert!(dir.path().join("sub").is_dir());
        let s3_url = url(
            "s3://bucket/some/prefix/",
            [
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
                ("AWS_ALLOW_HTTP", "true"),
            ],
        );
        assert!(s3_url.is_ok(), "{:?}", s3_url.err());
    }
}
