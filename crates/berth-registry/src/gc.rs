//! Garbage collection: mark every blob reachable from any repository's
//! manifests, sweep the rest, and clear abandoned uploads.
//!
//! Safety against pushes in progress. A push uploads blobs first and links
//! the manifest that makes them reachable last, so mid-push its blobs are
//! unreachable; and a push may finish after the mark has looked at its
//! repository. Two rules keep such blobs:
//!
//! - a blob is deleted only if its modification time is older than the
//!   mark's start minus a grace period. Uploading a blob, pushing content
//!   that already exists, mounting it, and pushing a manifest that refers
//!   to it all set its modification time to "now" before linking, so
//!   anything linked after the mark began is too young to delete, and a
//!   push slower than the grace period between its blob and its manifest
//!   is the only way to lose a blob (its manifest push then fails with
//!   MANIFEST_BLOB_UNKNOWN and can simply be retried);
//! - within one process, linking holds a shared lock and each deletion an
//!   exclusive one, so the check-then-delete of the sweep cannot interleave
//!   with the touch-then-link of a push. A collector in another process
//!   (`berth registry gc` next to a running server) relies on the grace
//!   period alone.
//!
//! Timestamps were chosen over a shared "pushes in progress" registry
//! because they work across processes and survive restarts with no state.

use std::collections::HashSet;
use std::fs;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::digest::{Algorithm, Digest};
use crate::manifest::{MAX_MANIFEST_BYTES, references};
use crate::names::RepoName;
use crate::registry::Registry;
use crate::storage::{Storage, prune_empty_dirs};
use crate::uploads::canonical_id;
use crate::{RegistryError, blocking};

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Unreachable blobs younger than this are kept: they may belong to a
    /// push whose manifest has not arrived yet.
    pub grace: Duration,
    /// Count what would be deleted, delete nothing.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(3600),
            dry_run: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Manifests found in repositories (the roots) and below them.
    pub manifests: u64,
    /// Blobs reachable from them, kept.
    pub reachable: u64,
    /// Unreachable blobs kept because they are younger than the grace.
    pub young: u64,
    /// Unreachable blobs deleted (or that would be, in a dry run).
    pub deleted: u64,
    pub bytes_freed: u64,
    /// Abandoned uploads removed.
    pub uploads_removed: u64,
    pub dry_run: bool,
}

impl Registry {
    /// One collection pass. Safe to run while the registry serves pushes
    /// and pulls; see the module documentation for why.
    pub async fn gc(&self, opts: GcOptions) -> Result<GcReport, RegistryError> {
        let started = SystemTime::now();
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };
        if !opts.dry_run {
            report.uploads_removed += self.expire_uploads().await as u64;
        }

        let st = Arc::clone(&self.storage);
        let (marked, manifests) = blocking(move || Ok(mark(&st)?)).await?;
        report.manifests = manifests;

        let st = Arc::clone(&self.storage);
        let stored = blocking(move || Ok(all_blobs(&st)?)).await?;
        let cutoff = started
            .checked_sub(opts.grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for d in stored {
            if marked.contains(&d) {
                report.reachable += 1;
                continue;
            }
            let _sweeping = self.gc_lock.write().await;
            let st = Arc::clone(&self.storage);
            let dry = opts.dry_run;
            let outcome = blocking(move || {
                let path = st.blob_path(&d);
                let meta = match fs::metadata(&path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                if meta.modified()? >= cutoff {
                    return Ok(Some((false, 0)));
                }
                if !dry {
                    fs::remove_file(&path)?;
                    if let Some(dir) = path.parent() {
                        prune_empty_dirs(dir, &st.blobs_dir());
                    }
                }
                Ok(Some((true, meta.len())))
            })
            .await?;
            match outcome {
                Some((true, size)) => {
                    report.deleted += 1;
                    report.bytes_freed += size;
                }
                Some((false, _)) => report.young += 1,
                None => {}
            }
        }

        if !opts.dry_run {
            report.uploads_removed += self.sweep_abandoned().await?;
        }
        Ok(report)
    }

    /// Upload directories no live session owns and nobody has written to
    /// for longer than the expiry (sessions of a previous process, and
    /// one-request uploads whose client vanished), plus stale temp files.
    async fn sweep_abandoned(&self) -> Result<u64, RegistryError> {
        let st = Arc::clone(&self.storage);
        let expiry = self.config.upload_expiry;
        let candidates = blocking(move || {
            let now = SystemTime::now();
            let old = |p: &std::path::Path| {
                fs::metadata(p)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > expiry)
            };
            let mut out = Vec::new();
            for entry in fs::read_dir(st.uploads_dir())? {
                let path = entry?.path();
                let data = path.join("data");
                let idle = old(&path) && (!data.exists() || old(&data));
                if idle {
                    out.push(path);
                }
            }
            for entry in fs::read_dir(st.tmp_dir())? {
                let path = entry?.path();
                if old(&path) {
                    let _ = fs::remove_file(&path);
                }
            }
            Ok(out)
        })
        .await?;
        let mut removed = 0;
        for path in candidates {
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if canonical_id(id).is_some_and(|id| self.uploads.is_active(&id)) {
                continue;
            }
            let gone = blocking(move || Ok(fs::remove_dir_all(&path)?)).await;
            match gone {
                Ok(()) => removed += 1,
                Err(e) => warn!(error = %e, "removing an abandoned upload"),
            }
        }
        Ok(removed)
    }
}

/// Every digest reachable from a manifest linked in any repository, and
/// how many manifests that was.
fn mark(st: &Storage) -> std::io::Result<(HashSet<Digest>, u64)> {
    let mut marked = HashSet::new();
    let mut pending: Vec<Digest> = Vec::new();
    for name in st.list_repositories()? {
        let Ok(repo) = RepoName::parse(&name) else {
            continue;
        };
        pending.extend(Storage::list_digest_files(&st.revisions_dir(&repo))?);
        for tag in st.list_tags(&repo)?.unwrap_or_default() {
            if let Ok(Some(d)) = st.read_tag(&repo, &tag) {
                pending.push(d);
            }
        }
    }
    let mut manifests = 0;
    while let Some(d) = pending.pop() {
        if !marked.insert(d.clone()) {
            continue;
        }
        let path = st.blob_path(&d);
        let small = fs::metadata(&path).is_ok_and(|m| m.len() <= MAX_MANIFEST_BYTES as u64);
        if !small {
            continue;
        }
        let Ok(bytes) = fs::read(&path) else {
            continue;
        };
        manifests += 1;
        let (blobs, children) = references(&bytes);
        marked.extend(blobs);
        pending.extend(children);
    }
    Ok((marked, manifests))
}

fn all_blobs(st: &Storage) -> std::io::Result<Vec<Digest>> {
    let mut out = Vec::new();
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        let dir = st.blobs_dir().join(alg.as_str());
        let Ok(shards) = fs::read_dir(&dir) else {
            continue;
        };
        for shard in shards {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(shard.path())? {
                if let Some(d) = f?
                    .file_name()
                    .to_str()
                    .and_then(|h| Digest::from_parts(alg, h))
                {
                    out.push(d);
                }
            }
        }
    }
    Ok(out)
}

/// Runs the registry's housekeeping until `shutdown`: idle uploads are
/// expired every minute, and a collection runs every `every`.
pub fn spawn_maintenance(
    reg: Arc<Registry>,
    every: Duration,
    opts: GcOptions,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut expire = tokio::time::interval(Duration::from_secs(60));
        expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let first = tokio::time::Instant::now() + every;
        let mut collect = tokio::time::interval_at(first, every.max(Duration::from_secs(1)));
        collect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = expire.tick() => {
                    let n = reg.expire_uploads().await;
                    if n > 0 {
                        info!(expired = n, "expired idle registry uploads");
                    }
                }
                _ = collect.tick() => match reg.gc(opts.clone()).await {
                    Ok(r) => info!(
                        deleted = r.deleted, bytes = r.bytes_freed, young = r.young,
                        uploads = r.uploads_removed, "registry garbage collection"
                    ),
                    Err(e) => warn!(error = %e, "registry garbage collection failed"),
                },
            }
        }
    })
}
