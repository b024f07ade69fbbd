//! [`RegistryIndex`]: everything the registry knows besides blob bytes,
//! kept where every replica of a set sees it at once (the embedding
//! server's database; [`crate::MemoryIndex`] for one process).
//!
//! What lives here: which repositories exist; which blobs a repository may
//! read (its layer links); its manifests (media type, size, subject,
//! artifact type, annotations) and tags, the referrers being the manifests
//! with a subject; the upload sessions (repository, bytes received, where
//! each received chunk is); when each blob was last put to use, and which
//! blob a collection is deleting; and the leases that pick the one replica
//! running maintenance.
//!
//! The types are plain (digests and names as text, JSON as text) so a
//! backend needs nothing of this crate but the trait. Names and digests
//! reaching a backend have passed the grammars in `names` and `digest`.
//!
//! Two rules make garbage collection safe against pushes on any replica,
//! and both are single atomic statements of a backend:
//! - [`RegistryIndex::protect_blob`] stamps a blob as used now unless a
//!   collection has doomed it; every push protects a blob *before* it
//!   relies on the blob's bytes (writes, mounts, links or refers to it);
//! - [`RegistryIndex::doom_blob`] marks a blob as being deleted only if it
//!   has not been protected since the collection's cutoff.
//!
//! Whichever comes first wins: a protected blob cannot be doomed for a
//! grace period, and a doomed one cannot be protected until the collector
//! deleted its bytes and called [`RegistryIndex::forget_blob`], after
//! which a push writes it anew.

use async_trait::async_trait;

/// A backend's failure, with whether it is worth retrying.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct IndexError {
    /// The backend could not be reached (down, failing over, overloaded).
    pub unavailable: bool,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl IndexError {
    pub fn new(
        unavailable: bool,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            unavailable,
            source: source.into(),
        }
    }
}

pub type IndexResult<T> = Result<T, IndexError>;

/// One manifest of a repository, besides its bytes (which are a blob).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// The digest of the manifest this one refers to (`subject`).
    pub subject: Option<String>,
    /// `artifactType`, else the config's media type.
    pub artifact_type: Option<String>,
    /// The manifest's `annotations` object, as JSON text.
    pub annotations: Option<String>,
}

/// An upload session: a chunked upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: String,
    pub repo: String,
    /// Bytes received so far: where the next chunk must start.
    pub received: u64,
    /// The chunks received, in order, back to back from byte 0.
    pub chunks: Vec<UploadChunk>,
}

/// One received chunk of an upload, stored as a blob of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadChunk {
    /// Its first byte's position in the upload.
    pub start: u64,
    pub len: u64,
    /// The blob holding its bytes.
    pub key: String,
}

/// What [`RegistryIndex::protect_blob`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Stamped as used now: no collection deletes it for a grace period.
    Protected,
    /// A collection is deleting it; protect again once that is done.
    Doomed,
}

/// What the index knows of a blob's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobState {
    /// When a push last protected it (ms since the Unix epoch).
    pub touched_ms: i64,
    /// When a collection doomed it, if one did and has not finished.
    pub doomed_ms: Option<i64>,
}

/// A registry written before the index existed, read from its files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacyIndex {
    /// Every repository, with or without links.
    pub repositories: Vec<String>,
    /// (repository, digest) layer links.
    pub layers: Vec<(String, String)>,
    /// (repository, manifest).
    pub manifests: Vec<(String, ManifestRecord)>,
    /// (repository, tag, digest).
    pub tags: Vec<(String, String, String)>,
}

/// The registry's metadata store; see the module documentation. Every
/// method is one atomic step of the backend (a statement or a
/// transaction), safe to call from any number of replicas at once.
#[async_trait]
pub trait RegistryIndex: Send + Sync + 'static {
    // ----- repositories and links --------------------------------------

    /// Every repository (one that ever had a link, manifest or tag), in
    /// no particular order.
    async fn repositories(&self) -> IndexResult<Vec<String>>;
    /// Links blob `digest` into `repo` (creating the repository); linking
    /// twice is linking once.
    async fn link_layer(&self, repo: &str, digest: &str) -> IndexResult<()>;
    /// Whether `repo` has a layer link to `digest`.
    async fn has_layer(&self, repo: &str, digest: &str) -> IndexResult<bool>;
    /// Removes a layer link; false if there was none.
    async fn unlink_layer(&self, repo: &str, digest: &str) -> IndexResult<bool>;

    // ----- manifests and tags ------------------------------------------

    /// Records a manifest of `repo` (creating the repository) and, in the
    /// same transaction, points `tag` at it.
    async fn put_manifest(
        &self,
        repo: &str,
        manifest: &ManifestRecord,
        tag: Option<&str>,
    ) -> IndexResult<()>;
    async fn manifest(&self, repo: &str, digest: &str) -> IndexResult<Option<ManifestRecord>>;
    /// Removes a manifest and every tag pointing at it, in one
    /// transaction; false if the repository had no such manifest.
    async fn delete_manifest(&self, repo: &str, digest: &str) -> IndexResult<bool>;
    /// The digest a tag points at.
    async fn tag(&self, repo: &str, tag: &str) -> IndexResult<Option<String>>;
    /// Every tag of `repo`, in no particular order; `None` if there is no
    /// such repository.
    async fn tags(&self, repo: &str) -> IndexResult<Option<Vec<String>>>;
    /// Removes a tag; false if there was none.
    async fn delete_tag(&self, repo: &str, tag: &str) -> IndexResult<bool>;
    /// The manifests of `repo` whose subject is `subject`.
    async fn referrers(&self, repo: &str, subject: &str) -> IndexResult<Vec<ManifestRecord>>;
    /// The digest of every manifest of every repository and of every
    /// tag's target, duplicates allowed: where a collection marks from.
    async fn manifest_roots(&self) -> IndexResult<Vec<String>>;

    // ----- blob lifetimes ----------------------------------------------

    /// Stamps `digest` as used now, unless a collection has doomed it.
    async fn protect_blob(&self, digest: &str) -> IndexResult<Protection>;
    /// Marks `digest` as being deleted, unless it was protected at or
    /// after `cutoff_ms`; true if it is doomed now (also when it already
    /// was: a collection that stopped half way is finished by the next).
    async fn doom_blob(&self, digest: &str, cutoff_ms: i64) -> IndexResult<bool>;
    /// After a doomed blob's bytes are gone: drops its record and every
    /// layer link to it, so a later push starts afresh. Does nothing
    /// unless the blob is doomed (a second collector forgetting it again
    /// must not drop the links of a push that came in between).
    async fn forget_blob(&self, digest: &str) -> IndexResult<()>;
    async fn blob_state(&self, digest: &str) -> IndexResult<Option<BlobState>>;
    /// Blobs doomed before `before_ms` whose collection never finished.
    async fn doomed_blobs(&self, before_ms: i64) -> IndexResult<Vec<String>>;
    /// The index's clock, ms since the Unix epoch: what protections,
    /// dooms and upload idleness are judged by.
    async fn now_ms(&self) -> IndexResult<i64>;

    // ----- uploads -----------------------------------------------------

    /// Opens a session with nothing received.
    async fn create_upload(&self, id: &str, repo: &str) -> IndexResult<()>;
    /// Sessions open now, across the set.
    async fn count_uploads(&self) -> IndexResult<u64>;
    async fn upload(&self, id: &str) -> IndexResult<Option<UploadRecord>>;
    /// Appends a chunk only if the session has received exactly
    /// `chunk.start` bytes (so of two replicas appending at one offset,
    /// one wins); false otherwise, or if the session is gone.
    async fn append_chunk(&self, id: &str, chunk: &UploadChunk) -> IndexResult<bool>;
    /// Marks a session as active now; false if it is gone.
    async fn touch_upload(&self, id: &str) -> IndexResult<bool>;
    /// Removes a session and its chunk records; false if it was gone.
    async fn delete_upload(&self, id: &str) -> IndexResult<bool>;
    /// Sessions last active before `before_ms`.
    async fn idle_uploads(&self, before_ms: i64) -> IndexResult<Vec<String>>;
    /// Removes a session only if it is still idle since before
    /// `before_ms`; false if it was used meanwhile, or gone.
    async fn expire_upload(&self, id: &str, before_ms: i64) -> IndexResult<bool>;

    // ----- the set -----------------------------------------------------

    /// Takes or keeps the lease `name` for `holder` until `ttl_ms` from
    /// now; true while `holder` has it. Another holder gets it only once
    /// it expired.
    async fn hold_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> IndexResult<bool>;
    async fn release_lease(&self, name: &str, holder: &str) -> IndexResult<()>;

    /// Records a registry written before the index, in one transaction,
    /// unless the index already has a repository; true if it did.
    async fn import_legacy(&self, legacy: &LegacyIndex) -> IndexResult<bool>;
}
