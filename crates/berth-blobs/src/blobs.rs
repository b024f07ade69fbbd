//! [`Blobs`]: the handle every other crate holds, and the operations on
//! whole blobs (put, streamed get, head, list, copy, delete).

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::Path as FsPath;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload,
};

use crate::{BlobError, BlobWriter, open, read};

/// A blob store: the local filesystem or an S3-compatible bucket, behind
/// one `Arc`, so clones are cheap and share connections.
///
/// Keys are `/`-separated (`tasks/3f/<id>/input`); see [`BlobError::InvalidKey`]
/// for what a key may not contain.
#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// Where it points, for logs: the root or the URL (never credentials).
    name: Arc<str>,
}

/// A blob being read: its length (known before the first byte) and its
/// bytes as a stream, so a reader never holds the whole blob.
pub struct Blob {
    pub len: u64,
    pub stream: Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
}

/// One listed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    pub key: String,
    pub len: u64,
    /// When it was last written, in milliseconds since the Unix epoch (the
    /// one clock format Berth stores, `berth_core::now_ms`).
    pub modified_ms: i64,
}

impl Blobs {
    /// Blobs as files under `root` (created if missing; a relative path is
    /// taken from the current directory).
    /// A commit returns only once the file and its directory are synced.
    pub fn local(root: impl AsRef<FsPath>) -> Result<Self, BlobError> {
        let root = root.as_ref();
        Ok(Self {
            store: open::local(root)?,
            name: format!("file://{}", root.display()).into(),
        })
    }

    /// `file:///abs/path`, or `s3://BUCKET[/PREFIX]` configured from the
    /// environment: `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP=true` for a plain-HTTP
    /// endpoint (and the other `AWS_*` names object_store knows). Requests
    /// are path-style unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
    pub fn from_url(url: &str) -> Result<Self, BlobError> {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Self::from_url_with(url, env)
    }

    /// As [`Blobs::from_url`], with the `AWS_*` settings given rather than
    /// read from the environment (other names are ignored).
    pub fn from_url_with<K, V>(
        url: &str,
        settings: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, BlobError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        Ok(Self {
            store: open::url(url, settings)?,
            name: url.into(),
        })
    }

    /// Starts a create-only streaming write of `key`; nothing is visible
    /// until [`BlobWriter::commit`]. See [`BlobWriter`] for how it buffers.
    pub fn writer(&self, key: &str) -> Result<BlobWriter, BlobError> {
        Ok(BlobWriter::new(
            Arc::clone(&self.store),
            key.to_owned(),
            open::key(key)?,
        ))
    }

    /// Writes a small blob in one request, atomically. With `create_only`
    /// an existing key is refused with [`BlobError::AlreadyExists`]
    /// (`If-None-Match: *` on S3, a hard link on the local filesystem).
    pub async fn put(
        &self,
        key: &str,
        bytes: impl Into<Bytes>,
        create_only: bool,
    ) -> Result<(), BlobError> {
        let path = open::key(key)?;
        let mode = if create_only {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let payload = PutPayload::from(bytes.into());
        self.store
            .put_opts(&path, payload, PutOptions::from(mode))
            .await
            .map_err(|e| BlobError::from_store(e, key))?;
        Ok(())
    }

    /// Opens a blob for reading; `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Blob>, BlobError> {
        self.get_with(key, GetOptions::default()).await
    }

    /// Opens bytes `range` of a blob (clipped to its end); `None` when
    /// there is no blob. A range starting past the end is an error.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Blob>, BlobError> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        self.get_with(key, options).await
    }

    async fn get_with(&self, key: &str, options: GetOptions) -> Result<Option<Blob>, BlobError> {
        let path = open::key(key)?;
        match self.store.get_opts(&path, options).await {
            Ok(got) => {
                let range = got.range.clone();
                let stream = match got.payload {
                    GetResultPayload::File(file, _) => read::file(file, range.clone()),
                    GetResultPayload::Stream(stream) => stream.map_err(io::Error::from).boxed(),
                };
                Ok(Some(Blob {
                    len: range.end - range.start,
                    stream,
                }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(BlobError::from_store(e, key)),
        }
    }

    /// The length of a blob; `None` when there is none.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, BlobError> {
        let path = open::key(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(BlobError::from_store(e, key)),
        }
    }

    /// Deletes a blob; deleting one that is not there is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = open::key(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(BlobError::from_store(e, key)),
        }
    }

    /// Deletes every blob under `prefix` (whole segments: `a/b` covers
    /// `a/b/c`, not `a/bc`) and answers how many went. An empty prefix is
    /// refused: wiping the whole store is never meant.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, BlobError> {
        let Some(path) = open::prefix(prefix)? else {
            return Err(BlobError::InvalidKey {
                key: prefix.into(),
                reason: "deleting with an empty prefix would delete everything".into(),
            });
        };
        let locations = self.store.list(Some(&path)).map_ok(|meta| meta.location);
        let mut deleted = self.store.delete_stream(locations.boxed());
        let mut count = 0;
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) => count += 1,
                // Someone else deleted it between the listing and now.
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(BlobError::from_store(e, prefix)),
            }
        }
        Ok(count)
    }

    /// Every committed blob under `prefix` (whole segments, as in
    /// [`Blobs::delete_prefix`]; empty for all), in no particular order,
    /// as a stream so a large listing is never held at once.
    pub fn list(&self, prefix: &str) -> BoxStream<'static, Result<BlobMeta, BlobError>> {
        let path = match open::prefix(prefix) {
            Ok(path) => path,
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        };
        let prefix = prefix.to_owned();
        self.store
            .list(path.as_ref())
            .map(move |result| match result {
                Ok(meta) => Ok(BlobMeta {
                    key: meta.location.to_string(),
                    len: meta.size,
                    modified_ms: meta.last_modified.timestamp_millis(),
                }),
                Err(e) => Err(BlobError::from_store(e, &prefix)),
            })
            .boxed()
    }

    /// Copies a blob, replacing whatever is at `to`; a missing `from` is
    /// [`BlobError::NotFound`]. Server-side on S3 (single-request copy, so
    /// at most 5 GiB), a hard link on the local filesystem.
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), BlobError> {
        let (src, dst): (Path, Path) = (open::key(from)?, open::key(to)?);
        self.store
            .copy(&src, &dst)
            .await
            .map_err(|e| BlobError::from_store(e, from))
    }
}

impl fmt::Debug for Blobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blobs({})", self.name)
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blob")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}
