//! The on-disk layout. Everything is a plain file under one root:
//!
//! ```text
//! blobs/<alg>/<hh>/<hex>                           content, immutable, shared by all repositories
//! uploads/<uuid>/data, uploads/<uuid>/repo         an upload in progress and the repository it is for
//! tmp/                                             small files on their way to an atomic rename
//! repositories/<name>/_layers/<alg>/<hex>          empty: the repository may read that blob
//! repositories/<name>/_manifests/revisions/<alg>/<hex>   the manifest's media type, size, subject
//! repositories/<name>/_manifests/tags/<tag>        the digest the tag points at
//! repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>  empty: a manifest whose subject is <alg>:<hex>
//! ```
//!
//! Manifests are stored as blobs too, so a pull of `<name>@<digest>` and a
//! blob GET read the same bytes. Repository components never begin with
//! `_`, so the bookkeeping directories cannot collide with a nested
//! repository. Every file that is ever replaced is written to a temporary
//! file, fsynced and renamed over, so a reader (or a crash) sees the old
//! content or the new, never half of either.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::names::RepoName;

/// Reads and writes of blob data go in pieces this large: big enough that
/// per-call overhead vanishes, small enough to keep buffers bounded.
pub(crate) const IO_CHUNK: usize = 256 * 1024;

/// What a repository knows about one of its manifests, besides its bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Revision {
    pub media_type: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug)]
pub(crate) struct Storage {
    root: PathBuf,
}

impl Storage {
    pub fn open(root: &Path) -> io::Result<Self> {
        for sub in ["blobs", "uploads", "tmp", "repositories"] {
            fs::create_dir_all(root.join(sub))?;
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    pub fn upload_dir(&self, id: &str) -> PathBuf {
        self.uploads_dir().join(id)
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn repositories_dir(&self) -> PathBuf {
        self.root.join("repositories")
    }

    pub fn repo_dir(&self, name: &RepoName) -> PathBuf {
        // Safe to join: the grammar admits no `.`/`..` component, no empty
        // component and no leading `/`.
        self.repositories_dir().join(name.as_str())
    }

    pub fn layer_link(&self, name: &RepoName, d: &Digest) -> PathBuf {
        self.repo_dir(name)
            .join("_layers")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    pub fn revisions_dir(&self, name: &RepoName) -> PathBuf {
        self.repo_dir(name).join("_manifests").join("revisions")
    }

    pub fn revision_link(&self, name: &RepoName, d: &Digest) -> PathBuf {
        self.revisions_dir(name)
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    pub fn tags_dir(&self, name: &RepoName) -> PathBuf {
        self.repo_dir(name).join("_manifests").join("tags")
    }

    pub fn tag_link(&self, name: &RepoName, tag: &str) -> PathBuf {
        self.tags_dir(name).join(tag)
    }

    pub fn referrers_dir(&self, name: &RepoName, subject: &Digest) -> PathBuf {
        self.repo_dir(name)
            .join("_referrers")
            .join(subject.algorithm().as_str())
            .join(subject.hex())
    }

    pub fn referrer_link(&self, name: &RepoName, subject: &Digest, d: &Digest) -> PathBuf {
        self.referrers_dir(name, subject)
            .join(format!("{}-{}", d.algorithm().as_str(), d.hex()))
    }

    /// A fresh path in `tmp/` for a file on its way to an atomic rename.
    pub fn temp_path(&self) -> PathBuf {
        self.tmp_dir().join(uuid::Uuid::new_v4().to_string())
    }

    /// Replaces `path` with `contents` atomically: temp file, fsync, rename.
    pub fn write_atomic(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let tmp = self.temp_path();
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(contents)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// The blob's size, or `None` if it is not stored.
    pub fn blob_size(&self, d: &Digest) -> io::Result<Option<u64>> {
        match fs::metadata(self.blob_path(d)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Marks a blob as just used, so a garbage collection that is already
    /// running treats it as too young to delete. `false` if it is gone.
    pub fn touch_blob(&self, d: &Digest) -> io::Result<bool> {
        // The owner may set times through a read-only handle.
        match File::open(self.blob_path(d)) {
            Ok(f) => {
                f.set_modified(SystemTime::now())?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves a fully written, fsynced file into place as blob `d`. If the
    /// blob is already stored (the same content pushed before) the new copy
    /// is dropped and the stored one is touched instead.
    pub fn commit_blob(&self, data: &Path, d: &Digest) -> io::Result<()> {
        if self.touch_blob(d)? {
            let _ = fs::remove_file(data);
            return Ok(());
        }
        let dest = self.blob_path(d);
        let parent = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent)?;
        fs::rename(data, &dest)?;
        // The rename is durable only once the directory entry is.
        File::open(parent)?.sync_all()
    }

    /// Stores small content (a manifest) as a blob.
    pub fn put_small_blob(&self, d: &Digest, contents: &[u8]) -> io::Result<()> {
        if self.touch_blob(d)? {
            return Ok(());
        }
        let tmp = self.temp_path();
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(contents)?;
            f.sync_all()?;
            self.commit_blob(&tmp, d)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    pub fn read_revision(&self, name: &RepoName, d: &Digest) -> io::Result<Option<Revision>> {
        match fs::read(self.revision_link(name, d)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn read_tag(&self, name: &RepoName, tag: &str) -> io::Result<Option<Digest>> {
        match fs::read_to_string(self.tag_link(name, tag)) {
            Ok(s) => Digest::parse(s.trim())
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every tag of a repository, sorted.
    pub fn list_tags(&self, name: &RepoName) -> io::Result<Option<Vec<String>>> {
        let dir = self.tags_dir(name);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(self.repo_dir(name).is_dir().then(Vec::new));
            }
            Err(e) => return Err(e),
        };
        let mut tags = Vec::new();
        for entry in entries {
            if let Some(t) = entry?.file_name().to_str()
                && crate::names::is_valid_tag(t)
            {
                tags.push(t.to_owned());
            }
        }
        tags.sort();
        Ok(Some(tags))
    }

    /// Digests found as file names under `<dir>/<alg>/<hex>`.
    pub fn list_digest_files(dir: &Path) -> io::Result<Vec<Digest>> {
        let mut out = Vec::new();
        let algs = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for alg in algs {
            let alg = alg?;
            let Some(algorithm) = alg.file_name().to_str().and_then(Algorithm::from_dir_name)
            else {
                continue;
            };
            for f in fs::read_dir(alg.path())? {
                let f = f?;
                if let Some(d) = f
                    .file_name()
                    .to_str()
                    .and_then(|h| Digest::from_parts(algorithm, h))
                {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every repository name, sorted: directories under `repositories/`
    /// that hold manifests or blob links.
    pub fn list_repositories(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![(self.repositories_dir(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut is_repo = false;
            for entry in entries {
                let entry = entry?;
                let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if file_name == "_manifests" || file_name == "_layers" {
                    is_repo = true;
                    continue;
                }
                if !entry.file_type()?.is_dir() {
                    continue;
                }
                let name = if prefix.is_empty() {
                    file_name
                } else {
                    format!("{prefix}/{file_name}")
                };
                if crate::names::is_valid_name(&name) {
                    stack.push((entry.path(), name));
                }
            }
            if is_repo && !prefix.is_empty() {
                out.push(prefix);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Re-reads an upload's data to rebuild its hash, for a session whose
    /// in-memory state was lost (a restart).
    pub fn rehash(path: &Path, algorithm: Algorithm) -> io::Result<(Hasher, u64)> {
        let mut f = File::open(path)?;
        let mut h = algorithm.hasher();
        let mut buf = vec![0u8; IO_CHUNK];
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok((h, total));
            }
            h.update(&buf[..n]);
            total += n as u64;
        }
    }
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes empty parent directories of a removed file, up to `stop`.
pub(crate) fn prune_empty_dirs(mut dir: &Path, stop: &Path) {
    while dir != stop && dir.starts_with(stop) {
        if fs::remove_dir(dir).is_err() {
            break;
        }
        match dir.parent() {
            Some(p) => dir = p,
            None => break,
        }
    }
}
