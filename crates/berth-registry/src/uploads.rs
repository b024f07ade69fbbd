//! Chunked uploads across replicas. A load balancer may send the POST,
//! each PATCH and the PUT of one upload to different replicas, so a
//! session is nothing but its index record and its chunks' blobs:
//!
//! - POST records the session (repository, nothing received);
//! - each PATCH streams its body into a blob of its own
//!   (`<prefix>/uploads/<id>/<start>-<nonce>`), commits it, and only then
//!   appends it to the session with a conditional update on the offset it
//!   started at: of two replicas appending at one offset exactly one wins,
//!   and the other drops its chunk and answers 416 with the offset that
//!   won, as the spec says;
//! - PUT streams the chunks in order, then its own body, into the content
//!   key's writer while hashing, and makes the blob visible only if the
//!   digest matches;
//! - sessions idle past the expiry are removed, index record and chunks,
//!   by the maintenance pass (or by a POST that finds the set at its
//!   limit), and chunk blobs no session owns by the collection.
//!
//! A request streaming for a long time keeps its session marked active,
//! so an expiry on another replica never removes it mid-request.

use axum::body::Body;
use tracing::warn;

use crate::RegistryError;
use crate::digest::Digest;
use crate::index::{UploadChunk, UploadRecord};
use crate::names::{RepoName, truncate_for_message};
use crate::registry::Registry;
use crate::stream::{Heartbeat, Sink, pump_blob, pump_body};

/// The canonical text of an upload id, or `None` for anything that is not
/// one: only canonical ids ever reach a key.
pub(crate) fn canonical_id(id: &str) -> Option<String> {
    let parsed = uuid::Uuid::try_parse(id).ok()?;
    let canonical = parsed.hyphenated().to_string();
    (canonical == id).then_some(canonical)
}

/// An upload session as a request sees it.
pub(crate) struct Session {
    pub id: String,
    pub repo: RepoName,
    pub record: UploadRecord,
}

impl Registry {
    pub(crate) async fn start_upload(&self, repo: &RepoName) -> Result<String, RegistryError> {
        let max = self.config.max_upload_sessions.max(1) as u64;
        if self.index.count_uploads().await? >= max {
            self.expire_uploads_now().await?;
            if self.index.count_uploads().await? >= max {
                return Err(RegistryError::TooManyUploads);
            }
        }
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        self.index.create_upload(&id, repo.as_str()).await?;
        Ok(id)
    }

    /// The session `id` of `repo`, whichever replica started it.
    pub(crate) async fn upload_session(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> Result<Session, RegistryError> {
        let unknown = || RegistryError::BlobUploadUnknown(truncate_for_message(id));
        let id = canonical_id(id).ok_or_else(unknown)?;
        let record = self.index.upload(&id).await?.ok_or_else(unknown)?;
        // A session is only ever reachable through its own repository.
        if record.repo != repo.as_str() {
            return Err(unknown());
        }
        Ok(Session {
            id,
            repo: repo.clone(),
            record,
        })
    }

    /// Bytes received so far by an upload; asking keeps it alive.
    pub(crate) async fn upload_offset(&self, session: &Session) -> Result<u64, RegistryError> {
        if !self.index.touch_upload(&session.id).await? {
            return Err(RegistryError::BlobUploadUnknown(session.id.clone()));
        }
        Ok(session.record.received)
    }

    /// Where a chunk must start, or 416 with where the upload is.
    fn check_start(
        session: &Session,
        range: Option<(u64, u64)>,
        location: &str,
    ) -> Result<Option<u64>, RegistryError> {
        let start = session.record.received;
        match range {
            Some((first, _)) if first != start => Err(RegistryError::RangeInvalid {
                offset: start,
                location: location.to_owned(),
            }),
            Some((first, last)) => Ok(Some(last - first + 1)),
            None => Ok(None),
        }
    }

    /// Appends a chunk. `range` is the chunk's `Content-Range` (first and
    /// last byte), if the client sent one; without it the body is appended
    /// wherever the upload ends. Returns the new length.
    pub(crate) async fn append(
        &self,
        session: &Session,
        range: Option<(u64, u64)>,
        body: Body,
        location: &str,
    ) -> Result<u64, RegistryError> {
        let start = session.record.received;
        let limit = Self::check_start(session, range, location)?;
        let key = self.storage.chunk_key(&session.id, start);
        let writer = self.storage.blobs().writer(&key)?;
        let mut sink = Sink::new(writer, None);
        let mut beat = self.heartbeat(&session.id);
        let written = pump_body(body, &mut sink, limit, &mut beat).await?;
        if let Some(limit) = limit
            && written != limit
        {
            // The short chunk is dropped unwritten: the upload stays as it was.
            return Err(RegistryError::BlobUploadInvalid(format!(
                "Content-Range announced {limit} bytes, the body had {written}"
            )));
        }
        if written == 0 {
            return Ok(start);
        }
        let (writer, _) = sink.finish().await?;
        writer.commit().await?;
        let chunk = UploadChunk {
            start,
            len: written,
            key: key.clone(),
        };
        if self.index.append_chunk(&session.id, &chunk).await? {
            return Ok(start + written);
        }
        // Another request appended at this offset first (or the session
        // ended meanwhile): this chunk is not part of the upload.
        self.storage.blobs().delete(&key).await?;
        match self.index.upload(&session.id).await? {
            Some(now) => Err(RegistryError::RangeInvalid {
                offset: now.received,
                location: location.to_owned(),
            }),
            None => Err(RegistryError::BlobUploadUnknown(session.id.clone())),
        }
    }

    /// Completes an upload with its last chunk (possibly empty) and the
    /// digest the client claims for the whole: the stored chunks, then the
    /// body, stream into the content key while they are hashed. On a
    /// digest mismatch the upload is discarded and nothing is visible; on
    /// a failure of the storage the session stays, for the client to
    /// retry the PUT.
    pub(crate) async fn finish_upload(
        &self,
        session: &Session,
        range: Option<(u64, u64)>,
        body: Body,
        digest: &Digest,
        location: &str,
    ) -> Result<(), RegistryError> {
        let limit = Self::check_start(session, range, location)?;
        let mut sink = self.content_sink(digest)?;
        let mut beat = self.heartbeat(&session.id);
        for chunk in &session.record.chunks {
            let Some(blob) = self.storage.blobs().get(&chunk.key).await? else {
                // Expired and removed by another replica meanwhile.
                return Err(RegistryError::BlobUploadUnknown(session.id.clone()));
            };
            pump_blob(blob, &mut sink, &mut beat).await?;
        }
        let written = pump_body(body, &mut sink, limit, &mut beat).await?;
        if let Some(limit) = limit
            && written != limit
        {
            return Err(RegistryError::BlobUploadInvalid(format!(
                "Content-Range announced {limit} bytes, the body had {written}"
            )));
        }
        let result = self.commit(&session.repo, digest, sink).await;
        if !matches!(
            result,
            Err(RegistryError::Io(_) | RegistryError::Blob(_) | RegistryError::Index(_))
        ) {
            // Done, or wrong content: either way the session is over.
            self.remove_upload(&session.id).await;
        }
        result
    }

    pub(crate) async fn cancel_upload(&self, session: &Session) -> Result<(), RegistryError> {
        if !self.index.delete_upload(&session.id).await? {
            return Err(RegistryError::BlobUploadUnknown(session.id.clone()));
        }
        self.remove_chunks(&session.id).await;
        Ok(())
    }

    fn heartbeat(&self, id: &str) -> Heartbeat {
        Heartbeat::upload(self.index.clone(), id, self.config.upload_expiry)
    }

    /// Ends a session: its record, then its chunks.
    async fn remove_upload(&self, id: &str) {
        if let Err(e) = self.index.delete_upload(id).await {
            warn!(error = %e, upload = id, "removing an upload session");
        }
        self.remove_chunks(id).await;
    }

    /// Deletes an upload's chunk blobs; one left behind is swept by the
    /// collection once it is older than the expiry.
    async fn remove_chunks(&self, id: &str) {
        let prefix = self.storage.upload_prefix(id);
        if let Err(e) = self.storage.blobs().delete_prefix(&prefix).await {
            warn!(error = %e, upload = id, "removing an upload's chunks");
        }
    }

    /// Drops upload sessions idle past the expiry, across the set;
    /// returns how many.
    pub async fn expire_uploads(&self) -> usize {
        match self.expire_uploads_now().await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "expiring idle uploads");
                0
            }
        }
    }

    pub(crate) async fn expire_uploads_now(&self) -> Result<usize, RegistryError> {
        let expiry = i64::try_from(self.config.upload_expiry.as_millis()).unwrap_or(i64::MAX);
        let before = self.index.now_ms().await?.saturating_sub(expiry);
        let mut expired = 0;
        for id in self.index.idle_uploads(before).await? {
            // Only if still idle: a request may have just used it.
            if self.index.expire_upload(&id, before).await? {
                self.remove_chunks(&id).await;
                expired += 1;
            }
        }
        Ok(expired)
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
