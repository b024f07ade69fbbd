//! The registry's operations, independent of HTTP: what a push, a pull, a
//! mount or a deletion does to the files, in an order that never leaves a
//! link to content that is not fully stored.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::auth::{Authenticator, Principal};
use crate::digest::{Digest, Hasher, sha256_of};
use crate::manifest::{self, MAX_MANIFEST_BYTES};
use crate::names::{RepoName, is_valid_tag, truncate_for_message};
use crate::storage::{Revision, Storage, prune_empty_dirs, remove_if_exists};
use crate::stream::{AppendError, append_body};
use crate::uploads::{SessionRef, State, Uploads};
use crate::{RegistryError, blocking};

/// How a registry is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding blobs, uploads and repository links.
    pub root: PathBuf,
    /// Chunked uploads open at once; more are refused with 429.
    pub max_upload_sessions: usize,
    /// An upload untouched this long is abandoned and removed.
    pub upload_expiry: Duration,
}

impl Config {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
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

/// A manifest as fetched: the exact bytes pushed and their type.
pub(crate) struct FetchedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

pub struct Registry {
    pub(crate) storage: Arc<Storage>,
    pub(crate) uploads: Uploads,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) config: Config,
    /// Linking (pushes, mounts) holds this shared; the collector's sweep
    /// holds it exclusively around each deletion, so within this process a
    /// blob is never deleted between being checked for and being linked.
    pub(crate) gc_lock: RwLock<()>,
}

impl Registry {
    /// Opens (creating if needed) a registry rooted at `config.root`.
    pub fn open(config: Config, auth: Arc<dyn Authenticator>) -> Result<Self, RegistryError> {
        let storage = Arc::new(Storage::open(&config.root)?);
        Ok(Self {
            storage,
            uploads: Uploads::new(config.max_upload_sessions, config.upload_expiry),
            auth,
            config,
            gc_lock: RwLock::new(()),
        })
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
        let (digest, rev) = self.lookup_manifest(&repo, &reference).await?;
        Ok(Resolved {
            digest: digest.to_string(),
            media_type: rev.media_type,
            size: rev.size,
        })
    }

    /// Drops upload sessions idle past the expiry; returns how many.
    pub async fn expire_uploads(&self) -> usize {
        self.uploads.expire(&self.storage).await
    }

    // ----- blobs -----------------------------------------------------------

    /// The size of a blob `repo` may read (a layer or config linked to it,
    /// or one of its manifests).
    pub(crate) async fn blob_size(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<u64, RegistryError> {
        let st = Arc::clone(&self.storage);
        let (repo, d) = (repo.clone(), digest.clone());
        blocking(move || {
            let linked = st.layer_link(&repo, &d).exists() || st.revision_link(&repo, &d).exists();
            match (linked, st.blob_size(&d)?) {
                (true, Some(size)) => Ok(size),
                _ => Err(RegistryError::BlobUnknown(d.to_string())),
            }
        })
        .await
    }

    pub(crate) async fn open_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(fs::File, u64), RegistryError> {
        let size = self.blob_size(repo, digest).await?;
        let path = self.storage.blob_path(digest);
        let d = digest.to_string();
        blocking(move || match fs::File::open(path) {
            Ok(f) => Ok((f, size)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(RegistryError::BlobUnknown(d)),
            Err(e) => Err(e.into()),
        })
        .await
    }

    /// Unlinks a blob from a repository. The content stays until garbage
    /// collection finds nothing else using it.
    pub(crate) async fn delete_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let link = self.storage.layer_link(repo, digest);
        let d = digest.to_string();
        blocking(move || match fs::remove_file(&link) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(RegistryError::BlobUnknown(d)),
            Err(e) => Err(e.into()),
        })
        .await
    }

    /// Links a blob another repository has into `repo`. `false` when there
    /// is nothing to mount (the caller then opens an upload instead).
    pub(crate) async fn mount(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<bool, RegistryError> {
        let _linking = self.gc_lock.read().await;
        let st = Arc::clone(&self.storage);
        let (repo, from, d) = (repo.clone(), from.clone(), digest.clone());
        blocking(move || {
            let visible = st.layer_link(&from, &d).exists() || st.revision_link(&from, &d).exists();
            if !visible || !st.touch_blob(&d)? {
                return Ok(false);
            }
            st.write_atomic(&st.layer_link(&repo, &d), b"")?;
            Ok(true)
        })
        .await
    }

    /// A whole blob in one request (`POST ?digest=`).
    pub(crate) async fn upload_monolithic(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: Body,
    ) -> Result<(), RegistryError> {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let dir = self.storage.upload_dir(&id);
        let data = dir.join("data");
        {
            let dir = dir.clone();
            blocking(move || Ok(fs::create_dir_all(dir)?)).await?;
        }
        let result = async {
            let (hasher, _) = append_body(&data, 0, digest.algorithm().hasher(), body, None)
                .await
                .map_err(append_error)?;
            self.commit(repo, digest, hasher, data.clone()).await
        }
        .await;
        let _ = blocking(move || Ok(fs::remove_dir_all(dir)?)).await;
        result
    }

    /// Verifies the uploaded data against `expected`, then moves it into
    /// place and links it to `repo`. On a mismatch nothing is stored.
    async fn commit(
        &self,
        repo: &RepoName,
        expected: &Digest,
        hasher: Hasher,
        data: PathBuf,
    ) -> Result<(), RegistryError> {
        let hasher = if hasher.algorithm() == expected.algorithm() {
            hasher
        } else {
            // Chunked uploads hash with SHA-256 as they go; a client that
            // names another algorithm only at the end pays for a re-read.
            let (path, alg) = (data.clone(), expected.algorithm());
            blocking(move || Ok(Storage::rehash(&path, alg)?.0)).await?
        };
        let actual = hasher.finish();
        if actual != *expected {
            return Err(RegistryError::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        {
            let data = data.clone();
            blocking(move || Ok(fs::File::open(data)?.sync_all()?)).await?;
        }
        let _linking = self.gc_lock.read().await;
        let st = Arc::clone(&self.storage);
        let (repo, d) = (repo.clone(), expected.clone());
        blocking(move || {
            st.commit_blob(&data, &d)?;
            st.write_atomic(&st.layer_link(&repo, &d), b"")?;
            Ok(())
        })
        .await
    }

    // ----- chunked uploads -------------------------------------------------

    pub(crate) async fn start_upload(&self, repo: &RepoName) -> Result<String, RegistryError> {
        let s = self.uploads.create(&self.storage, repo).await?;
        Ok(s.id.clone())
    }

    pub(crate) async fn upload_session(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> Result<SessionRef, RegistryError> {
        self.uploads.get(&self.storage, repo, id).await
    }

    /// Bytes received so far by an upload.
    pub(crate) async fn upload_offset(&self, session: &SessionRef) -> Result<u64, RegistryError> {
        let mut state = self.lock_session(session)?;
        state.last_active = Instant::now();
        Ok(state.offset)
    }

    fn lock_session<'a>(
        &self,
        session: &'a SessionRef,
    ) -> Result<tokio::sync::MutexGuard<'a, State>, RegistryError> {
        // A second request on a session that is busy receiving is out of
        // order by definition; waiting for the first could take as long as
        // the whole upload.
        session.state.try_lock().map_err(|_| {
            RegistryError::BlobUploadInvalid("another request is writing to this upload".into())
        })
    }

    /// Appends a chunk. `range` is the chunk's `Content-Range` (first and
    /// last byte), if the client sent one; without it the body is appended
    /// wherever the upload ends. Returns the new length.
    pub(crate) async fn append(
        &self,
        session: &SessionRef,
        range: Option<(u64, u64)>,
        body: Body,
        location: &str,
    ) -> Result<u64, RegistryError> {
        let mut state = self.lock_session(session)?;
        append_locked(session, &mut state, range, body, location).await
    }

    /// Completes an upload with its last chunk (possibly empty) and the
    /// digest the client claims for the whole. On a digest mismatch the
    /// upload is discarded and nothing is linked.
    pub(crate) async fn finish_upload(
        &self,
        session: &SessionRef,
        range: Option<(u64, u64)>,
        body: Body,
        digest: &Digest,
        location: &str,
    ) -> Result<(), RegistryError> {
        let mut state = self.lock_session(session)?;
        append_locked(session, &mut state, range, body, location).await?;
        let result = self
            .commit(
                &session.repo,
                digest,
                state.hasher.clone(),
                session.data.clone(),
            )
            .await;
        drop(state);
        if !matches!(result, Err(RegistryError::Io(_))) {
            // Done, or wrong content: either way the session is over. An
            // I/O failure leaves it for the client to retry the PUT.
            self.uploads.remove(&self.storage, &session.id).await;
        }
        result
    }

    pub(crate) async fn cancel_upload(&self, session: &SessionRef) -> Result<(), RegistryError> {
        let _state = self.lock_session(session)?;
        self.uploads.remove(&self.storage, &session.id).await;
        Ok(())
    }

    // ----- manifests -------------------------------------------------------

    async fn lookup_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(Digest, Revision), RegistryError> {
        let st = Arc::clone(&self.storage);
        let (repo, reference) = (repo.clone(), reference.clone());
        blocking(move || {
            let unknown = || {
                RegistryError::ManifestUnknown(match &reference {
                    Reference::Tag(t) => t.clone(),
                    Reference::Digest(d) => d.to_string(),
                })
            };
            let digest = match &reference {
                Reference::Digest(d) => d.clone(),
                Reference::Tag(t) => st.read_tag(&repo, t)?.ok_or_else(unknown)?,
            };
            let rev = st.read_revision(&repo, &digest)?.ok_or_else(unknown)?;
            Ok((digest, rev))
        })
        .await
    }

    pub(crate) async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<FetchedManifest, RegistryError> {
        let (digest, rev) = self.lookup_manifest(repo, reference).await?;
        let path = self.storage.blob_path(&digest);
        let d = digest.to_string();
        let bytes = blocking(move || match fs::read(path) {
            Ok(b) => Ok(Bytes::from(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(RegistryError::ManifestUnknown(d)),
            Err(e) => Err(e.into()),
        })
        .await?;
        Ok(FetchedManifest {
            digest,
            media_type: rev.media_type,
            bytes,
        })
    }

    /// Stores a manifest after checking it: its digest (when pushed by
    /// digest), its format, and that everything it refers to is in the
    /// repository. Links are written content first, tag last, so a failure
    /// at any step leaves no tag or revision pointing at missing content.
    /// Returns the manifest's digest and subject.
    pub(crate) async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        bytes: Bytes,
        content_type: Option<&str>,
    ) -> Result<(Digest, Option<Digest>), RegistryError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(RegistryError::ManifestTooLarge {
                max: MAX_MANIFEST_BYTES,
            });
        }
        let digest = match reference {
            Reference::Digest(d) => {
                let mut h = d.algorithm().hasher();
                h.update(&bytes);
                let actual = h.finish();
                if actual != *d {
                    return Err(RegistryError::DigestMismatch {
                        expected: d.to_string(),
                        actual: actual.to_string(),
                    });
                }
                actual
            }
            Reference::Tag(_) => sha256_of(&bytes),
        };
        let parsed = manifest::parse(&bytes, content_type)?;
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        let revision = Revision {
            media_type: parsed.media_type.clone(),
            size: bytes.len() as u64,
            subject: subject.as_ref().map(ToString::to_string),
            artifact_type: parsed.artifact_type.clone(),
            annotations: parsed.annotations.clone(),
        };
        let revision = serde_json::to_vec(&revision).map_err(io::Error::other)?;

        let _linking = self.gc_lock.read().await;
        let st = Arc::clone(&self.storage);
        let (repo, reference, d) = (repo.clone(), reference.clone(), digest.clone());
        let subject_link = subject.clone();
        blocking(move || {
            let refs = parsed.blobs.iter().map(|b| (b, false));
            let children = parsed.children.iter().map(|c| (c, true));
            for (desc, is_manifest) in refs.chain(children) {
                let unknown = || RegistryError::ManifestBlobUnknown(desc.digest.to_string());
                let linked = if is_manifest {
                    st.revision_link(&repo, &desc.digest).exists()
                } else {
                    st.layer_link(&repo, &desc.digest).exists()
                };
                if !linked {
                    return Err(unknown());
                }
                match st.blob_size(&desc.digest)? {
                    None => return Err(unknown()),
                    Some(size) if size != desc.size => {
                        return Err(RegistryError::ManifestInvalid(format!(
                            "{} is {size} bytes, the manifest says {}",
                            desc.digest, desc.size
                        )));
                    }
                    Some(_) => {}
                }
                // Touched so a collection already running keeps it.
                if !st.touch_blob(&desc.digest)? {
                    return Err(unknown());
                }
            }
            st.put_small_blob(&d, &bytes)?;
            st.write_atomic(&st.revision_link(&repo, &d), &revision)?;
            if let Some(s) = &subject_link {
                st.write_atomic(&st.referrer_link(&repo, s, &d), b"")?;
            }
            if let Reference::Tag(t) = &reference {
                st.write_atomic(&st.tag_link(&repo, t), d.to_string().as_bytes())?;
            }
            Ok(())
        })
        .await?;
        Ok((digest, subject))
    }

    /// By tag: removes the tag. By digest: removes the manifest from the
    /// repository with every tag pointing at it (tags first, so none ever
    /// points at a missing revision).
    pub(crate) async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(), RegistryError> {
        let st = Arc::clone(&self.storage);
        let (repo, reference) = (repo.clone(), reference.clone());
        blocking(move || match &reference {
            Reference::Tag(t) => match fs::remove_file(st.tag_link(&repo, t)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Err(RegistryError::ManifestUnknown(t.clone()))
                }
                Err(e) => Err(e.into()),
            },
            Reference::Digest(d) => {
                let rev = st
                    .read_revision(&repo, d)?
                    .ok_or_else(|| RegistryError::ManifestUnknown(d.to_string()))?;
                for tag in st.list_tags(&repo)?.unwrap_or_default() {
                    if st.read_tag(&repo, &tag)?.as_ref() == Some(d) {
                        remove_if_exists(&st.tag_link(&repo, &tag))?;
                    }
                }
                if let Some(subject) = rev.subject.as_deref().and_then(|s| Digest::parse(s).ok()) {
                    let link = st.referrer_link(&repo, &subject, d);
                    remove_if_exists(&link)?;
                    if let Some(dir) = link.parent() {
                        prune_empty_dirs(dir, &st.repo_dir(&repo));
                    }
                }
                remove_if_exists(&st.revision_link(&repo, d))?;
                Ok(())
            }
        })
        .await
    }

    /// Tags of `repo` after `last`, at most `n`; and whether more follow.
    pub(crate) async fn tags(
        &self,
        repo: &RepoName,
        n: usize,
        last: Option<&str>,
    ) -> Result<(Vec<String>, bool), RegistryError> {
        let st = Arc::clone(&self.storage);
        let name = repo.clone();
        let all = blocking(move || Ok(st.list_tags(&name)?))
            .await?
            .ok_or_else(|| RegistryError::NameUnknown(repo.to_string()))?;
        Ok(page(all, n, last))
    }

    /// Repositories the principal may pull, after `last`, at most `n`.
    pub(crate) async fn catalog(
        &self,
        who: &Principal,
        n: usize,
        last: Option<&str>,
    ) -> Result<(Vec<String>, bool), RegistryError> {
        let st = Arc::clone(&self.storage);
        let all = blocking(move || Ok(st.list_repositories()?)).await?;
        let visible = all
            .into_iter()
            .filter(|r| RepoName::parse(r).is_ok_and(|r| who.can_pull(&r)))
            .collect();
        Ok(page(visible, n, last))
    }

    /// The referrers of `subject` in `repo` as an OCI index.
    pub(crate) async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Value, RegistryError> {
        let st = Arc::clone(&self.storage);
        let (repo, subject) = (repo.clone(), subject.clone());
        let filter = artifact_type.map(str::to_owned);
        blocking(move || {
            let mut manifests = Vec::new();
            let dir = st.referrers_dir(&repo, &subject);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e.collect::<Result<Vec<_>, _>>()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            let mut digests: Vec<Digest> = entries
                .iter()
                .filter_map(|e| {
                    let name = e.file_name();
                    let (alg, hex) = name.to_str()?.split_once('-')?;
                    Digest::parse(&format!("{alg}:{hex}")).ok()
                })
                .collect();
            digests.sort();
            for d in digests {
                let Some(rev) = st.read_revision(&repo, &d)? else {
                    continue;
                };
                if filter.is_some() && rev.artifact_type != filter {
                    continue;
                }
                let mut desc = json!({
                    "mediaType": rev.media_type,
                    "digest": d.to_string(),
                    "size": rev.size,
                });
                if let Some(t) = rev.artifact_type {
                    desc["artifactType"] = json!(t);
                }
                if let Some(a) = rev.annotations {
                    desc["annotations"] = Value::Object(a);
                }
                manifests.push(desc);
            }
            Ok(json!({
                "schemaVersion": 2,
                "mediaType": manifest::OCI_INDEX,
                "manifests": manifests,
            }))
        })
        .await
    }
}

async fn append_locked(
    session: &SessionRef,
    state: &mut State,
    range: Option<(u64, u64)>,
    body: Body,
    location: &str,
) -> Result<u64, RegistryError> {
    state.last_active = Instant::now();
    let start = state.offset;
    let limit = match range {
        Some((first, _)) if first != start => {
            return Err(RegistryError::RangeInvalid {
                offset: start,
                location: location.to_owned(),
            });
        }
        Some((first, last)) => Some(last - first + 1),
        None => None,
    };
    let (hasher, written) = append_body(&session.data, start, state.hasher.clone(), body, limit)
        .await
        .map_err(append_error)?;
    if let Some(limit) = limit
        && written != limit
    {
        // Roll the short chunk back: the upload stays where it was.
        let path = session.data.clone();
        blocking(move || {
            Ok(fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(start)?)
        })
        .await?;
        return Err(RegistryError::BlobUploadInvalid(format!(
            "Content-Range announced {limit} bytes, the body had {written}"
        )));
    }
    state.offset = start + written;
    state.hasher = hasher;
    state.last_active = Instant::now();
    Ok(state.offset)
}

/// One page of a sorted list: entries after `last`, at most `n`, and
/// whether any remain.
fn page(sorted: Vec<String>, n: usize, last: Option<&str>) -> (Vec<String>, bool) {
    let mut rest: Vec<String> = match last {
        Some(last) => sorted.into_iter().filter(|s| s.as_str() > last).collect(),
        None => sorted,
    };
    let more = rest.len() > n;
    rest.truncate(n);
    (rest, more)
}

fn append_error(e: AppendError) -> RegistryError {
    match e {
        AppendError::Io(e) => RegistryError::Io(e),
        other => RegistryError::BlobUploadInvalid(other.to_string()),
    }
}
