//! Upload sessions: a chunked upload's data file on disk and its running
//! hash in memory. Bounded in number and expired when idle, so abandoned
//! pushes cannot pile up. A session whose memory was lost to a restart is
//! rebuilt from its files on first use (by re-reading the data).

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tracing::warn;

use crate::RegistryError;
use crate::digest::{Algorithm, Hasher};
use crate::names::RepoName;
use crate::storage::Storage;

pub(crate) struct Session {
    pub id: String,
    pub repo: RepoName,
    pub data: PathBuf,
    /// Held by the request working on the session, for as long as it does.
    pub state: Mutex<State>,
}

pub(crate) struct State {
    /// Bytes received so far; the next chunk must start here.
    pub offset: u64,
    /// SHA-256 of those bytes. Other algorithms re-read the file at the end.
    pub hasher: Hasher,
    pub last_active: Instant,
}

pub(crate) type SessionRef = Arc<Session>;

pub(crate) struct Uploads {
    sessions: StdMutex<HashMap<String, SessionRef>>,
    max: usize,
    expiry: Duration,
}

/// The canonical text of an upload id, or `None` for anything that is not
/// one: only canonical ids ever reach a path.
pub(crate) fn canonical_id(id: &str) -> Option<String> {
    let parsed = uuid::Uuid::try_parse(id).ok()?;
    let canonical = parsed.hyphenated().to_string();
    (canonical == id).then_some(canonical)
}

impl Uploads {
    pub fn new(max: usize, expiry: Duration) -> Self {
        Self {
            sessions: StdMutex::new(HashMap::new()),
            max: max.max(1),
            expiry,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionRef>> {
        // A panic while holding this lock cannot leave the map half
        // updated (every critical section is a single insert or remove),
        // so a poisoned lock is still safe to use.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_active(&self, id: &str) -> bool {
        self.map().contains_key(id)
    }

    /// Opens a new session for `repo`, its files created before it is
    /// visible.
    pub async fn create(
        &self,
        storage: &Arc<Storage>,
        repo: &RepoName,
    ) -> Result<SessionRef, RegistryError> {
        if self.map().len() >= self.max {
            self.expire(storage).await;
            if self.map().len() >= self.max {
                return Err(RegistryError::TooManyUploads);
            }
        }
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let dir = storage.upload_dir(&id);
        let data = dir.join("data");
        {
            let (dir, data, name) = (dir.clone(), data.clone(), repo.to_string());
            crate::blocking(move || {
                fs::create_dir_all(&dir)?;
                fs::File::create(&data)?;
                fs::write(dir.join("repo"), name)?;
                Ok(())
            })
            .await?;
        }
        let session = Arc::new(Session {
            id: id.clone(),
            repo: repo.clone(),
            data,
            state: Mutex::new(State {
                offset: 0,
                hasher: Algorithm::Sha256.hasher(),
                last_active: Instant::now(),
            }),
        });
        let mut map = self.map();
        if map.len() >= self.max {
            drop(map);
            let _ = fs::remove_dir_all(dir);
            return Err(RegistryError::TooManyUploads);
        }
        map.insert(id, Arc::clone(&session));
        Ok(session)
    }

    /// The session `id` of `repo`, rebuilt from disk if this process has
    /// not seen it (it was started before a restart).
    pub async fn get(
        &self,
        storage: &Arc<Storage>,
        repo: &RepoName,
        id: &str,
    ) -> Result<SessionRef, RegistryError> {
        let unknown = || RegistryError::BlobUploadUnknown(crate::names::truncate_for_message(id));
        let id = canonical_id(id).ok_or_else(unknown)?;
        let found = self.map().get(&id).cloned();
        if let Some(s) = found {
            // A session is only ever reachable through its own repository.
            if s.repo != *repo {
                return Err(unknown());
            }
            return Ok(s);
        }
        let dir = storage.upload_dir(&id);
        let expected = repo.to_string();
        let restored = crate::blocking(move || {
            match fs::read_to_string(dir.join("repo")) {
                Ok(r) if r == expected => {}
                _ => return Ok(None),
            }
            let data = dir.join("data");
            match Storage::rehash(&data, Algorithm::Sha256) {
                Ok((hasher, offset)) => Ok(Some((data, hasher, offset))),
                // Finished or removed meanwhile: the session is over.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
        let Some((data, hasher, offset)) = restored else {
            return Err(unknown());
        };
        let mut map = self.map();
        if let Some(s) = map.get(&id) {
            return Ok(Arc::clone(s));
        }
        if map.len() >= self.max {
            return Err(RegistryError::TooManyUploads);
        }
        let session = Arc::new(Session {
            id: id.clone(),
            repo: repo.clone(),
            data,
            state: Mutex::new(State {
                offset,
                hasher,
                last_active: Instant::now(),
            }),
        });
        map.insert(id, Arc::clone(&session));
        Ok(session)
    }

    /// Forgets a session and deletes its files.
    pub async fn remove(&self, storage: &Arc<Storage>, id: &str) {
        self.map().remove(id);
        let dir = storage.upload_dir(id);
        let _ = crate::blocking(move || match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        })
        .await
        .inspect_err(|e| warn!(error = %e, "removing an upload"));
    }

    /// Drops sessions idle for longer than the expiry; returns how many.
    /// A session in use (its lock held by a request) is never idle.
    pub async fn expire(&self, storage: &Arc<Storage>) -> usize {
        let now = Instant::now();
        let expired: Vec<String> = self
            .map()
            .iter()
            .filter(|(_, s)| {
                s.state
                    .try_lock()
                    .is_ok_and(|s| now.duration_since(s.last_active) > self.expiry)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove(storage, id).await;
        }
        expired.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_canonical() {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        assert_eq!(canonical_id(&id), Some(id.clone()));
        assert_eq!(canonical_id(&id.to_uppercase()), None);
        assert_eq!(canonical_id(&id.replace('-', "")), None);
        assert_eq!(canonical_id("../../etc"), None);
    }
}
