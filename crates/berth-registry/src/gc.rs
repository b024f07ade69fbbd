//! Garbage collection: mark every blob reachable from any repository's
//! manifests (as the index lists them), sweep the rest, and clear
//! abandoned uploads. One replica of a set runs it (see `maintenance.rs`);
//! running two at once is safe too, only wasteful.
//!
//! Safety against pushes in progress, on any replica. A push uploads blobs
//! first and records the manifest that makes them reachable last, so
//! mid-push its blobs are unreachable; and a push may finish after the
//! mark has looked. A blob is deleted only if
//!
//! - its bytes were written before the cutoff (the collection's start,
//!   on the index's clock, minus the grace period), and
//! - the collection could *doom* it: no push protected it since the
//!   cutoff (see `index.rs`). Uploading a blob, pushing content that
//!   already exists, mounting it, a HEAD by someone who may push to its
//!   repository (a client checking what it can skip), and pushing a
//!   manifest that refers to it all protect it before relying on it.
//!
//! Dooming and protecting are each one atomic step of the index, so for
//! every blob either the push comes first (and the blob is young) or the
//! collection does (and the push waits until the bytes are gone and the
//! index has forgotten them, then stores them anew). A push slower than
//! the grace period between its blob and its manifest is the only way to
//! lose a blob: its manifest push then fails with MANIFEST_BLOB_UNKNOWN
//! and can simply be retried.
//!
//! The grace is judged between the index's clock and the blob store's
//! modification times; the two may disagree by as much as the machines'
//! clocks do, which a grace of minutes absorbs.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tracing::warn;

use crate::RegistryError;
use crate::digest::Digest;
use crate::manifest::{MAX_MANIFEST_BYTES, references};
use crate::registry::Registry;
use crate::uploads::canonical_id;

/// A doom older than this whose collection never finished (it crashed, or
/// lost its lease) is finished by the next collection. Younger ones are
/// left to their own collector, which may be deleting the bytes now.
const STALE_DOOM: Duration = Duration::from_secs(600);

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

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Registry {
    /// One collection pass. Safe to run while any replica serves pushes
    /// and pulls; see the module documentation for why.
    pub async fn gc(&self, opts: GcOptions) -> Result<GcReport, RegistryError> {
        let started = self.index.now_ms().await?;
        let cutoff = started.saturating_sub(ms(opts.grace));
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };
        if !opts.dry_run {
            report.uploads_removed += self.expire_uploads_now().await? as u64;
            self.finish_stale_dooms(started, &mut report).await?;
        }
        let marked = self.mark(&mut report).await?;
        self.sweep(&marked, cutoff, opts.dry_run, &mut report)
            .await?;
        if !opts.dry_run {
            report.uploads_removed += self.sweep_abandoned(started).await?;
        }
        Ok(report)
    }

    /// Every digest reachable from a manifest of any repository.
    async fn mark(&self, report: &mut GcReport) -> Result<HashSet<Digest>, RegistryError> {
        let mut marked = HashSet::new();
        let mut pending: Vec<Digest> = self
            .index
            .manifest_roots()
            .await?
            .iter()
            .filter_map(|d| Digest::parse(d).ok())
            .collect();
        while let Some(d) = pending.pop() {
            if !marked.insert(d.clone()) {
                continue;
            }
            let Some(bytes) = self.storage.read_small(&d, MAX_MANIFEST_BYTES).await? else {
                continue;
            };
            report.manifests += 1;
            let (blobs, children) = references(&bytes);
            marked.extend(blobs);
            pending.extend(children);
        }
        Ok(marked)
    }

    /// Deletes every stored blob that is neither marked nor young.
    async fn sweep(
        &self,
        marked: &HashSet<Digest>,
        cutoff: i64,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), RegistryError> {
        // Listed whole before anything is deleted: a directory emptied
        // under a local listing would cut it short.
        let listing: Vec<_> = self
            .storage
            .blobs()
            .list(&self.storage.blobs_prefix())
            .collect()
            .await;
        for meta in listing {
            let meta = meta?;
            let Some(d) = self.storage.digest_of_key(&meta.key) else {
                continue;
            };
            if marked.contains(&d) {
                report.reachable += 1;
                continue;
            }
            let old = meta.modified_ms < cutoff;
            let doomed = old && self.doom(&d, cutoff, dry_run).await?;
            if !doomed {
                report.young += 1;
                continue;
            }
            if !dry_run {
                self.storage.blobs().delete(&meta.key).await?;
                self.index.forget_blob(&d.to_string()).await?;
            }
            report.deleted += 1;
            report.bytes_freed += meta.len;
        }
        Ok(())
    }

    /// Whether `d` may go: in a dry run, whether it could be doomed now.
    async fn doom(&self, d: &Digest, cutoff: i64, dry_run: bool) -> Result<bool, RegistryError> {
        let digest = d.to_string();
        if !dry_run {
            return Ok(self.index.doom_blob(&digest, cutoff).await?);
        }
        Ok(self
            .index
            .blob_state(&digest)
            .await?
            .is_none_or(|b| b.doomed_ms.is_some() || b.touched_ms < cutoff))
    }

    /// Finishes the deletions a collection started and never finished.
    async fn finish_stale_dooms(
        &self,
        now: i64,
        report: &mut GcReport,
    ) -> Result<(), RegistryError> {
        for digest in self.index.doomed_blobs(now - ms(STALE_DOOM)).await? {
            let Ok(d) = Digest::parse(&digest) else {
                continue;
            };
            if let Some(size) = self.storage.size(&d).await? {
                self.storage
                    .blobs()
                    .delete(&self.storage.blob_key(&d))
                    .await?;
                report.deleted += 1;
                report.bytes_freed += size;
            }
            self.index.forget_blob(&digest).await?;
        }
        Ok(())
    }

    /// Upload blobs no session owns and nobody has written for longer than
    /// the expiry: chunks of sessions that ended without their cleanup
    /// finishing, a chunk whose append lost a race and whose replica died,
    /// and uploads left by a registry from before the index (their
    /// `data`, whatever their `repo` file says); plus stale temp files of
    /// that older layout. Returns how many uploads went.
    async fn sweep_abandoned(&self, now: i64) -> Result<u64, RegistryError> {
        let before = now.saturating_sub(ms(self.config.upload_expiry));
        let mut newest: HashMap<String, i64> = HashMap::new();
        let mut listing = self.storage.blobs().list(&self.storage.uploads_prefix());
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let Some((id, rest)) = self.storage.upload_of_key(&meta.key) else {
                continue;
            };
            let t = newest.entry(id.to_owned()).or_insert(i64::MIN);
            if rest != "repo" {
                *t = (*t).max(meta.modified_ms);
            }
        }
        let mut removed = 0;
        for (id, t) in newest {
            if t >= before {
                continue;
            }
            let live = match canonical_id(&id) {
                Some(id) => self.index.upload(&id).await?.is_some(),
                None => false,
            };
            if live {
                continue;
            }
            match self
                .storage
                .blobs()
                .delete_prefix(&self.storage.upload_prefix(&id))
                .await
            {
                Ok(_) => removed += 1,
                Err(e) => warn!(error = %e, upload = id, "removing an abandoned upload"),
            }
        }
        let tmp: Vec<_> = self
            .storage
            .blobs()
            .list(&self.storage.legacy_tmp_prefix())
            .collect()
            .await;
        for meta in tmp {
            let meta = meta?;
            if meta.modified_ms < before {
                self.storage.blobs().delete(&meta.key).await?;
            }
        }
        Ok(removed)
    }
}
