//! The registry's operations on blobs, independent of HTTP: what a push, a
//! pull, a mount or a deletion does to the blob store and the index, in an
//! order that never links content that is not fully stored, and never
//! relies on a blob a collection may be deleting (see `index` for the
//! protection rule). Manifests are in `manifests.rs`, upload sessions in
//! `uploads.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use berth_blobs::{Blob, BlobError, BlobWriter, Blobs};
use berth_metrics::RegistryMetrics;

use crate::RegistryError;
use crate::auth::{Authenticator, Principal};
use crate::digest::Digest;
use crate::index::{Protection, RegistryIndex};
use crate::names::{RepoName, is_valid_tag, truncate_for_message};
use crate::storage::Storage;
use crate::stream::{Heartbeat, Sink, pump_body};

/// How a registry is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the registry's objects live in the blob store: blobs under
    /// `<prefix>/blobs/`, upload chunks under `<prefix>/uploads/`.
    pub prefix: String,
    /// Chunked uploads open at once across the set; more are refused with
    /// 429.
    pub max_upload_sessions: usize,
    /// An upload untouched this long is abandoned and removed.
    pub upload_expiry: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            prefix: "registry".to_owned(),
            max_upload_sessions: 1024,
            upload_expiry: Duration::from_secs(3600),
        }
    }
}

/// A tag or a digest, as in `<name>:<tag>` or `<name>@<digest>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        if s.contains(':') {
            Digest::parse(s).map(Self::Digest)
        } else if is_valid_tag(s) {
            Ok(Self::Tag(s.to_owned()))
        } else {
            Err(RegistryError::TagInvalid(truncate_for_message(s)))
        }
    }
}

/// What a tag or digest stands for in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// How long a push waits for a collection that is deleting the very blob
/// it brings again (milliseconds, normally) before giving up.
const DOOM_WAIT: Duration = Duration::from_secs(30);
const DOOM_POLL: Duration = Duration::from_millis(50);

/// One replica's registry: its own handles on the shared blob store and
/// index, and nothing else. Any number of them may serve one set.
pub struct Registry {
    pub(crate) storage: Storage,
    pub(crate) index: Arc<dyn RegistryIndex>,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) config: Config,
    /// Pushes, pulls and bytes, as they happen.
    pub(crate) metrics: RegistryMetrics,
}

impl Registry {
    pub fn new(
        config: Config,
        index: Arc<dyn RegistryIndex>,
        blobs: Blobs,
        auth: Arc<dyn Authenticator>,
    ) -> Self {
        Self {
            storage: Storage::new(blobs, &config.prefix),
            index,
            auth,
            config,
            metrics: RegistryMetrics::default(),
        }
    }

    /// Records pushes, pulls and bytes into `metrics` from now on.
    pub fn with_metrics(mut self, metrics: RegistryMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) async fn authenticate(&self, user: Option<&str>, secret: &str) -> Option<Principal> {
        self.auth.authenticate(user, secret).await
    }

    /// The manifest digest and media type a tag or digest names in `repo`:
    /// what a deployment pins.
    pub async fn resolve(&self, repo: &str, reference: &str) -> Result<Resolved, RegistryError> {
        let repo = RepoName::parse(repo)?;
        let reference = Reference::parse(reference)?;
        let m = self.lookup_manifest(&repo, &reference).await?;
        Ok(Resolved {
            digest: m.digest,
            media_type: m.media_type,
            size: m.size,
        })
    }

    // ----- protection ------------------------------------------------------

    /// Stamps `d` as in use, so no collection deletes it for a grace
    /// period; false if one is deleting it right now.
    pub(crate) async fn protect_now(&self, d: &Digest) -> Result<bool, RegistryError> {
        Ok(self.index.protect_blob(&d.to_string()).await? == Protection::Protected)
    }

    /// As [`Registry::protect_now`], waiting out a collection that is
    /// deleting `d`: the push then writes it anew.
    async fn protect(&self, d: &Digest) -> Result<(), RegistryError> {
        let deadline = Instant::now() + DOOM_WAIT;
        while !self.protect_now(d).await? {
            if Instant::now() >= deadline {
                return Err(std::io::Error::other(format!(
                    "{d} is being deleted by garbage collection; retry the push"
                ))
                .into());
            }
            tokio::time::sleep(DOOM_POLL).await;
        }
        Ok(())
    }

    // ----- blobs -----------------------------------------------------------

    /// Whether `repo` may read blob `d`: a layer or config linked to it, or
    /// one of its manifests.
    async fn visible(&self, repo: &RepoName, d: &Digest) -> Result<bool, RegistryError> {
        let digest = d.to_string();
        Ok(self.index.has_layer(repo.as_str(), &digest).await?
            || self.index.manifest(repo.as_str(), &digest).await?.is_some())
    }

    /// The size of a blob `repo` may read. With `reusing` (a HEAD from
    /// someone who may push here, about to skip uploading it) the blob is
    /// protected first, and one a collection is deleting is not there.
    pub(crate) async fn blob_size(
        &self,
        repo: &RepoName,
        d: &Digest,
        reusing: bool,
    ) -> Result<u64, RegistryError> {
        let unknown = || RegistryError::BlobUnknown(d.to_string());
        if !self.visible(repo, d).await? {
            return Err(unknown());
        }
        if reusing && !self.protect_now(d).await? {
            return Err(unknown());
        }
        self.storage.size(d).await?.ok_or_else(unknown)
    }

    /// Opens a blob `repo` may read, whole or a range of it. The range is
    /// chosen once the size is known (`range(size)`); `Err(size)` from it
    /// means it cannot be satisfied.
    pub(crate) async fn open_blob(
        &self,
        repo: &RepoName,
        d: &Digest,
        range: Option<&RangeChoice<'_>>,
    ) -> Result<Opened, RegistryError> {
        let unknown = || RegistryError::BlobUnknown(d.to_string());
        if !self.visible(repo, d).await? {
            return Err(unknown());
        }
        let Some(range) = range else {
            let blob = self.storage.open(d).await?.ok_or_else(unknown)?;
            return Ok(Opened::Whole(blob));
        };
        let size = self.storage.size(d).await?.ok_or_else(unknown)?;
        let Some((first, last)) = range(size) else {
            return Ok(Opened::Unsatisfiable { size });
        };
        let key = self.storage.blob_key(d);
        match self
            .storage
            .blobs()
            .get_range(&key, first..last + 1)
            .await?
        {
            Some(blob) => Ok(Opened::Range { blob, first, size }),
            None => Err(unknown()),
        }
    }

    /// Unlinks a blob from a repository. The content stays until garbage
    /// collection finds nothing else using it.
    pub(crate) async fn delete_blob(
        &self,
        repo: &RepoName,
        d: &Digest,
    ) -> Result<(), RegistryError> {
        if self
            .index
            .unlink_layer(repo.as_str(), &d.to_string())
            .await?
        {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown(d.to_string()))
        }
    }

    /// Links a blob another repository has into `repo`. `false` when there
    /// is nothing to mount (the caller then opens an upload instead).
    pub(crate) async fn mount(
        &self,
        repo: &RepoName,
        d: &Digest,
        from: &RepoName,
    ) -> Result<bool, RegistryError> {
        if !self.visible(from, d).await? || !self.protect_now(d).await? {
            return Ok(false);
        }
        if self.storage.size(d).await?.is_none() {
            return Ok(false);
        }
        self.index.link_layer(repo.as_str(), &d.to_string()).await?;
        Ok(true)
    }

    /// A whole blob in one request (`POST ?digest=`), streamed straight to
    /// its content key while it is hashed.
    pub(crate) async fn upload_monolithic(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: Body,
    ) -> Result<(), RegistryError> {
        let mut sink = self.content_sink(digest)?;
        pump_body(body, &mut sink, None, &mut Heartbeat::none()).await?;
        self.commit(repo, digest, sink).await
    }

    /// A sink writing blob `d` and hashing with `d`'s algorithm.
    pub(crate) fn content_sink(&self, d: &Digest) -> Result<Sink, RegistryError> {
        let writer = self.storage.blobs().writer(&self.storage.blob_key(d))?;
        Ok(Sink::new(writer, Some(d.algorithm())))
    }

    /// Checks what went into `sink` against `expected`, then makes it
    /// visible under its content key and links it to `repo`. On a
    /// mismatch nothing becomes visible (the writer is dropped).
    pub(crate) async fn commit(
        &self,
        repo: &RepoName,
        expected: &Digest,
        sink: Sink,
    ) -> Result<(), RegistryError> {
        let (writer, actual) = sink.finish().await?;
        let actual = actual.ok_or_else(|| std::io::Error::other("the content was not hashed"))?;
        if actual != *expected {
            writer.abort().await;
            return Err(RegistryError::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        // Protected before it is relied on: a collection deleting an older
        // copy finishes first, and none starts until the grace has passed.
        self.protect(expected).await?;
        publish(writer).await?;
        self.index
            .link_layer(repo.as_str(), &expected.to_string())
            .await?;
        Ok(())
    }
}

/// Commits a content write. The key already taken means the same content
/// is already stored (by another push, or an earlier one): that will do.
async fn publish(writer: BlobWriter) -> Result<(), RegistryError> {
    match writer.commit().await {
        Ok(_) | Err(BlobError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Picks a byte range (first and last byte) once a blob's size is known;
/// `None` when it cannot be satisfied.
pub(crate) type RangeChoice<'a> = dyn Fn(u64) -> Option<(u64, u64)> + Send + Sync + 'a;

/// A blob opened for a GET.
pub(crate) enum Opened {
    Whole(Blob),
    Range { blob: Blob, first: u64, size: u64 },
    Unsatisfiable { size: u64 },
}

/// One page of a sorted list: entries after `last`, at most `n`, and
/// whether any remain.
pub(crate) fn page(sorted: Vec<String>, n: usize, last: Option<&str>) -> (Vec<String>, bool) {
    let mut rest: Vec<String> = match last {
        Some(last) => sorted.into_iter().filter(|s| s.as_str() > last).collect(),
        None => sorted,
    };
    let more = rest.len() > n;
    rest.truncate(n);
    (rest, more)
}
