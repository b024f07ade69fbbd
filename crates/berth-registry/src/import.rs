//! The registry as it was before the index: every repository a directory
//! of links under `registry/repositories/`. Its blobs are already where
//! the blob store's local backend keeps them (`registry/blobs/...` under
//! the data directory), so upgrading a data directory is reading its links
//! into the index, once:
//!
//! ```text
//! repositories/<name>/_layers/<alg>/<hex>                  empty: the repository may read that blob
//! repositories/<name>/_manifests/revisions/<alg>/<hex>     the manifest's media type, size, subject, ...
//! repositories/<name>/_manifests/tags/<tag>                the digest the tag points at
//! repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>   empty: a manifest whose subject is <alg>:<hex>
//! ```
//!
//! Referrer links say nothing a revision's subject does not, so they are
//! not read. The files are left as they were: the index is the truth from
//! then on, and a later start finds it filled and reads nothing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::RegistryError;
use crate::digest::{Algorithm, Digest};
use crate::index::{LegacyIndex, ManifestRecord};
use crate::names::{is_valid_name, is_valid_tag};
use crate::registry::Registry;

/// What an older registry kept about a manifest, besides its bytes.
#[derive(Deserialize)]
struct Revision {
    media_type: String,
    size: u64,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: Option<Map<String, Value>>,
}

impl Registry {
    /// Reads the links of a registry directory written before the index
    /// (`root` is the old registry root, `DATA/registry`) into the index,
    /// unless the index already has repositories. Idempotent: the import
    /// is one transaction, and a filled index is never imported into.
    /// Returns how many repositories were imported.
    pub async fn import_legacy(&self, root: &Path) -> Result<usize, RegistryError> {
        let dir = root.join("repositories");
        if !dir.is_dir() || !self.index.repositories().await?.is_empty() {
            return Ok(0);
        }
        let legacy = tokio::task::spawn_blocking(move || read_legacy(&dir))
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        let count = legacy.repositories.len();
        if count == 0 || !self.index.import_legacy(&legacy).await? {
            return Ok(0);
        }
        info!(
            repositories = count,
            manifests = legacy.manifests.len(),
            tags = legacy.tags.len(),
            "imported the registry's repositories into the index"
        );
        Ok(count)
    }
}

/// Every repository under `dir` with its links.
pub(crate) fn read_legacy(dir: &Path) -> io::Result<LegacyIndex> {
    let mut legacy = LegacyIndex::default();
    for (name, path) in repositories(dir)? {
        for d in digest_files(&path.join("_layers"))? {
            legacy.layers.push((name.clone(), d.to_string()));
        }
        let revisions = path.join("_manifests").join("revisions");
        for d in digest_files(&revisions)? {
            let file = revisions.join(d.algorithm().as_str()).join(d.hex());
            let rev: Revision = match serde_json::from_slice(&fs::read(&file)?) {
                Ok(rev) => rev,
                Err(e) => {
                    // Unreadable before too: it answered 500, and stays out.
                    warn!(file = %file.display(), error = %e, "skipping a corrupt revision");
                    continue;
                }
            };
            let record = ManifestRecord {
                digest: d.to_string(),
                media_type: rev.media_type,
                size: rev.size,
                subject: rev.subject,
                artifact_type: rev.artifact_type,
                annotations: rev.annotations.map(|a| Value::Object(a).to_string()),
            };
            legacy.manifests.push((name.clone(), record));
        }
        for (tag, d) in tags(&path.join("_manifests").join("tags"))? {
            legacy.tags.push((name.clone(), tag, d.to_string()));
        }
        legacy.repositories.push(name);
    }
    Ok(legacy)
}

fn read_dir_if_any(dir: &Path) -> io::Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Ok(entries) => entries.collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Every repository name, with its directory: directories that hold
/// manifests or blob links.
fn repositories(root: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_owned(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut is_repo = false;
        for entry in read_dir_if_any(&dir)? {
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
            if is_valid_name(&name) {
                stack.push((entry.path(), name));
            }
        }
        if is_repo && !prefix.is_empty() {
            out.push((prefix, dir));
        }
    }
    out.sort();
    Ok(out)
}

/// Digests found as file names under `<dir>/<alg>/<hex>`.
fn digest_files(dir: &Path) -> io::Result<Vec<Digest>> {
    let mut out = Vec::new();
    for alg in read_dir_if_any(dir)? {
        let Some(algorithm) = alg.file_name().to_str().and_then(Algorithm::from_dir_name) else {
            continue;
        };
        for f in read_dir_if_any(&alg.path())? {
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

/// Every valid tag file and the digest it holds.
fn tags(dir: &Path) -> io::Result<Vec<(String, Digest)>> {
    let mut out = Vec::new();
    for entry in read_dir_if_any(dir)? {
        let Some(tag) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !is_valid_tag(&tag) {
            continue;
        }
        let text = fs::read(entry.path())?;
        match std::str::from_utf8(&text).map(|t| Digest::parse(t.trim())) {
            Ok(Ok(d)) => out.push((tag, d)),
            _ => warn!(file = %entry.path().display(), "skipping a corrupt tag"),
        }
    }
    out.sort();
    Ok(out)
}
