//! [`MemoryIndex`]: the index in this process's memory, for one process
//! and for tests. It keeps every promise of [`RegistryIndex`] (each call
//! is atomic under one lock) but nothing survives the process, and no
//! other process sees it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::index::{
    BlobState, IndexResult, LegacyIndex, ManifestRecord, Protection, RegistryIndex, UploadChunk,
    UploadRecord,
};

#[derive(Default)]
pub struct MemoryIndex {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    repositories: BTreeSet<String>,
    layers: BTreeSet<(String, String)>,
    manifests: BTreeMap<(String, String), ManifestRecord>,
    tags: BTreeMap<(String, String), String>,
    blobs: HashMap<String, BlobState>,
    uploads: HashMap<String, Upload>,
    leases: HashMap<String, (String, i64)>,
}

struct Upload {
    record: UploadRecord,
    active_ms: i64,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl MemoryIndex {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state whole, so a panic in
        // another thread holding the lock cannot have broken it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a blob look last protected at `ms`: how tests age what they
    /// pushed, beside the blob's modification time.
    pub fn set_touched(&self, digest: &str, ms: i64) {
        if let Some(b) = self.state().blobs.get_mut(digest) {
            b.touched_ms = ms;
        }
    }
}

#[async_trait]
impl RegistryIndex for MemoryIndex {
    async fn repositories(&self) -> IndexResult<Vec<String>> {
        Ok(self.state().repositories.iter().cloned().collect())
    }

    async fn link_layer(&self, repo: &str, digest: &str) -> IndexResult<()> {
        let mut s = self.state();
        s.repositories.insert(repo.to_owned());
        s.layers.insert((repo.to_owned(), digest.to_owned()));
        Ok(())
    }

    async fn has_layer(&self, repo: &str, digest: &str) -> IndexResult<bool> {
        Ok(self
            .state()
            .layers
            .contains(&(repo.to_owned(), digest.to_owned())))
    }

    async fn unlink_layer(&self, repo: &str, digest: &str) -> IndexResult<bool> {
        Ok(self
            .state()
            .layers
            .remove(&(repo.to_owned(), digest.to_owned())))
    }

    async fn put_manifest(
        &self,
        repo: &str,
        manifest: &ManifestRecord,
        tag: Option<&str>,
    ) -> IndexResult<()> {
        let mut s = self.state();
        s.repositories.insert(repo.to_owned());
        s.manifests
            .insert((repo.to_owned(), manifest.digest.clone()), manifest.clone());
        if let Some(tag) = tag {
            s.tags
                .insert((repo.to_owned(), tag.to_owned()), manifest.digest.clone());
        }
        Ok(())
    }

    async fn manifest(&self, repo: &str, digest: &str) -> IndexResult<Option<ManifestRecord>> {
        Ok(self
            .state()
            .manifests
            .get(&(repo.to_owned(), digest.to_owned()))
            .cloned())
    }

    async fn delete_manifest(&self, repo: &str, digest: &str) -> IndexResult<bool> {
        let mut s = self.state();
        if s.manifests
            .remove(&(repo.to_owned(), digest.to_owned()))
            .is_none()
        {
            return Ok(false);
        }
        s.tags.retain(|(r, _), d| !(r == repo && d == digest));
        Ok(true)
    }

    async fn tag(&self, repo: &str, tag: &str) -> IndexResult<Option<String>> {
        Ok(self
            .state()
            .tags
            .get(&(repo.to_owned(), tag.to_owned()))
            .cloned())
    }

    async fn tags(&self, repo: &str) -> IndexResult<Option<Vec<String>>> {
        let s = self.state();
        if !s.repositories.contains(repo) {
            return Ok(None);
        }
        let tags = s
            .tags
            .keys()
            .filter(|(r, _)| r == repo)
            .map(|(_, t)| t.clone())
            .collect();
        Ok(Some(tags))
    }

    async fn delete_tag(&self, repo: &str, tag: &str) -> IndexResult<bool> {
        Ok(self
            .state()
            .tags
            .remove(&(repo.to_owned(), tag.to_owned()))
            .is_some())
    }

    async fn referrers(&self, repo: &str, subject: &str) -> IndexResult<Vec<ManifestRecord>> {
        Ok(self
            .state()
            .manifests
            .iter()
            .filter(|((r, _), m)| r == repo && m.subject.as_deref() == Some(subject))
            .map(|(_, m)| m.clone())
            .collect())
    }

    async fn manifest_roots(&self) -> IndexResult<Vec<String>> {
        let s = self.state();
        let revisions = s.manifests.keys().map(|(_, d)| d.clone());
        Ok(revisions.chain(s.tags.values().cloned()).collect())
    }

    async fn protect_blob(&self, digest: &str) -> IndexResult<Protection> {
        let mut s = self.state();
        let entry = s.blobs.entry(digest.to_owned()).or_insert(BlobState {
            touched_ms: 0,
            doomed_ms: None,
        });
        if entry.doomed_ms.is_some() {
            return Ok(Protection::Doomed);
        }
        entry.touched_ms = entry.touched_ms.max(now());
        Ok(Protection::Protected)
    }

    async fn doom_blob(&self, digest: &str, cutoff_ms: i64) -> IndexResult<bool> {
        let mut s = self.state();
        let entry = s.blobs.entry(digest.to_owned()).or_insert(BlobState {
            touched_ms: 0,
            doomed_ms: None,
        });
        if entry.doomed_ms.is_some() {
            return Ok(true);
        }
        if entry.touched_ms >= cutoff_ms {
            return Ok(false);
        }
        entry.doomed_ms = Some(now());
        Ok(true)
    }

    async fn forget_blob(&self, digest: &str) -> IndexResult<()> {
        let mut s = self.state();
        if s.blobs.get(digest).is_some_and(|b| b.doomed_ms.is_some()) {
            s.blobs.remove(digest);
            s.layers.retain(|(_, d)| d != digest);
        }
        Ok(())
    }

    async fn blob_state(&self, digest: &str) -> IndexResult<Option<BlobState>> {
        Ok(self.state().blobs.get(digest).copied())
    }

    async fn doomed_blobs(&self, before_ms: i64) -> IndexResult<Vec<String>> {
        Ok(self
            .state()
            .blobs
            .iter()
            .filter(|(_, b)| b.doomed_ms.is_some_and(|t| t < before_ms))
            .map(|(d, _)| d.clone())
            .collect())
    }

    async fn now_ms(&self) -> IndexResult<i64> {
        Ok(now())
    }

    async fn create_upload(&self, id: &str, repo: &str) -> IndexResult<()> {
        let upload = Upload {
            record: UploadRecord {
                id: id.to_owned(),
                repo: repo.to_owned(),
                received: 0,
                chunks: Vec::new(),
            },
            active_ms: now(),
        };
        self.state().uploads.insert(id.to_owned(), upload);
        Ok(())
    }

    async fn count_uploads(&self) -> IndexResult<u64> {
        Ok(self.state().uploads.len() as u64)
    }

    async fn upload(&self, id: &str) -> IndexResult<Option<UploadRecord>> {
        Ok(self.state().uploads.get(id).map(|u| u.record.clone()))
    }

    async fn append_chunk(&self, id: &str, chunk: &UploadChunk) -> IndexResult<bool> {
        let mut s = self.state();
        let Some(u) = s.uploads.get_mut(id) else {
            return Ok(false);
        };
        if u.record.received != chunk.start {
            return Ok(false);
        }
        u.record.received += chunk.len;
        u.record.chunks.push(chunk.clone());
        u.active_ms = now();
        Ok(true)
    }

    async fn touch_upload(&self, id: &str) -> IndexResult<bool> {
        let mut s = self.state();
        let Some(u) = s.uploads.get_mut(id) else {
            return Ok(false);
        };
        u.active_ms = now();
        Ok(true)
    }

    async fn delete_upload(&self, id: &str) -> IndexResult<bool> {
        Ok(self.state().uploads.remove(id).is_some())
    }

    async fn idle_uploads(&self, before_ms: i64) -> IndexResult<Vec<String>> {
        Ok(self
            .state()
            .uploads
            .values()
            .filter(|u| u.active_ms < before_ms)
            .map(|u| u.record.id.clone())
            .collect())
    }

    async fn expire_upload(&self, id: &str, before_ms: i64) -> IndexResult<bool> {
        let mut s = self.state();
        if s.uploads.get(id).is_some_and(|u| u.active_ms < before_ms) {
            s.uploads.remove(id);
            return Ok(true);
        }
        Ok(false)
    }

    async fn hold_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> IndexResult<bool> {
        let now = now();
        let mut s = self.state();
        match s.leases.get(name) {
            Some((h, expires)) if h != holder && *expires >= now => Ok(false),
            _ => {
                s.leases
                    .insert(name.to_owned(), (holder.to_owned(), now + ttl_ms));
                Ok(true)
            }
        }
    }

    async fn release_lease(&self, name: &str, holder: &str) -> IndexResult<()> {
        let mut s = self.state();
        if s.leases.get(name).is_some_and(|(h, _)| h == holder) {
            s.leases.remove(name);
        }
        Ok(())
    }

    async fn import_legacy(&self, legacy: &LegacyIndex) -> IndexResult<bool> {
        let mut s = self.state();
        if !s.repositories.is_empty() {
            return Ok(false);
        }
        s.repositories.extend(legacy.repositories.iter().cloned());
        for (repo, digest) in &legacy.layers {
            s.repositories.insert(repo.clone());
            s.layers.insert((repo.clone(), digest.clone()));
        }
        for (repo, m) in &legacy.manifests {
            s.repositories.insert(repo.clone());
            s.manifests
                .insert((repo.clone(), m.digest.clone()), m.clone());
        }
        for (repo, tag, digest) in &legacy.tags {
            s.repositories.insert(repo.clone());
            s.tags.insert((repo.clone(), tag.clone()), digest.clone());
        }
        Ok(true)
    }
}
