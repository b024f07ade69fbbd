//! [`BlobWriter`]: a streaming, create-only write that becomes visible all
//! at once on commit.
//!
//! A body arrives in pieces of unknown total size. The writer keeps the
//! first [`PART_SIZE`] bytes in memory; a blob that ends there is one
//! atomic conditional put. Past it the writer starts a multipart upload and
//! sends each further [`PART_SIZE`] bytes as a part, at most
//! [`PARTS_IN_FLIGHT`] at a time, so a writer holds at most
//! `(1 + PARTS_IN_FLIGHT) * PART_SIZE` however large the blob.
//!
//! Create-only, and what multipart can promise: a single put sends
//! `If-None-Match: *` (S3, SeaweedFS) or publishes by hard link (local), so
//! of two writers of one key exactly one wins. object_store completes a
//! multipart upload unconditionally on every backend (its public API has
//! no create mode for `CompleteMultipartUpload`, and the local backend
//! renames), so for a multipart blob the writer checks that the key is
//! free just before completing: a second writer that starts after the first
//! committed is refused, but two racing to complete can both succeed, the
//! last one replacing the first. Berth's keys make that race impossible
//! rather than unlikely: task payloads are named by task id and the
//! claim's epoch, which only one attempt ever holds, and registry blobs by
//! their digest, so two writers of one key write the same bytes.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};

use crate::BlobError;

/// Bytes kept before switching to a multipart upload, and the size of each
/// part after. S3 wants parts of at least 5 MiB (but the last) and at most
/// 10,000 of them: 8 MiB parts allow blobs up to 78 GiB.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts uploading at once per writer: enough to keep a connection busy
/// while the next part fills, few enough to bound memory.
pub const PARTS_IN_FLIGHT: usize = 2;

/// A streaming write of one blob; see the module documentation.
///
/// Dropping it before [`BlobWriter::commit`] abandons the write: nothing
/// becomes visible, a multipart upload is aborted in the background and
/// the local backend's staging file removed.
pub struct BlobWriter {
    store: Arc<dyn ObjectStore>,
    key: String,
    path: Path,
    state: State,
    written: u64,
}

enum State {
    /// Under [`PART_SIZE`] so far: all in memory, nothing sent.
    Buffering(Vec<u8>),
    /// Past it: parts uploading.
    Uploading(WriteMultipart),
    /// Committed, aborted or failed; the writer takes no more bytes.
    Closed,
}

impl BlobWriter {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, key: String, path: Path) -> Self {
        Self {
            store,
            key,
            path,
            state: State::Buffering(Vec::new()),
            written: 0,
        }
    }

    /// Appends bytes. Past [`PART_SIZE`] this starts or feeds the multipart
    /// upload and waits while [`PARTS_IN_FLIGHT`] parts are still sending.
    /// After an error the upload is aborted and the writer refuses more.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        match self.feed(data).await {
            Ok(()) => {
                self.written += data.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.abandon().await;
                Err(e)
            }
        }
    }

    async fn feed(&mut self, data: &[u8]) -> Result<(), BlobError> {
        if let State::Buffering(buf) = &mut self.state {
            if buf.len() + data.len() <= PART_SIZE {
                buf.extend_from_slice(data);
                return Ok(());
            }
            let first = Bytes::from(std::mem::take(buf));
            let upload = self
                .store
                .put_multipart(&self.path)
                .await
                .map_err(|e| BlobError::from_store(e, &self.key))?;
            let mut upload = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            upload.put(first);
            self.state = State::Uploading(upload);
        }
        match &mut self.state {
            State::Uploading(upload) => {
                // `WriteMultipart::write` starts every part it fills at
                // once; feeding it a part at a time keeps one large write
                // within PARTS_IN_FLIGHT too.
                for piece in data.chunks(PART_SIZE) {
                    upload
                        .wait_for_capacity(PARTS_IN_FLIGHT)
                        .await
                        .map_err(|e| BlobError::from_store(e, &self.key))?;
                    upload.write(piece);
                }
                Ok(())
            }
            _ => Err(closed(&self.key)),
        }
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes the blob visible, whole, and answers its length. Refuses with
    /// [`BlobError::AlreadyExists`] when the key is taken (see the module
    /// documentation for what a multipart blob can promise).
    pub async fn commit(mut self) -> Result<u64, BlobError> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Buffering(buf) => {
                let payload = PutPayload::from(Bytes::from(buf));
                self.store
                    .put_opts(&self.path, payload, PutOptions::from(PutMode::Create))
                    .await
                    .map_err(|e| BlobError::from_store(e, &self.key))?;
            }
            State::Uploading(upload) => {
                match self.store.head(&self.path).await {
                    Err(object_store::Error::NotFound { .. }) => {}
                    taken => {
                        abort(upload).await;
                        return Err(match taken {
                            Ok(_) => BlobError::AlreadyExists {
                                key: self.key.clone(),
                            },
                            Err(e) => BlobError::from_store(e, &self.key),
                        });
                    }
                }
                // `finish` aborts the upload itself when a part or the
                // completion fails.
                upload
                    .finish()
                    .await
                    .map_err(|e| BlobError::from_store(e, &self.key))?;
            }
            State::Closed => return Err(closed(&self.key)),
        }
        Ok(self.written)
    }

    /// Abandons the write now, waiting for the multipart upload's abort;
    /// dropping the writer does the same in the background.
    pub async fn abort(mut self) {
        self.abandon().await;
    }

    /// Closes the writer for good, whatever state it was in: after a failed
    /// write the bytes buffered so far may be gone, so carrying on would
    /// commit a blob with a hole in it.
    async fn abandon(&mut self) {
        if let State::Uploading(upload) = std::mem::replace(&mut self.state, State::Closed) {
            abort(upload).await;
        }
    }
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("key", &self.key)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        let State::Uploading(upload) = std::mem::replace(&mut self.state, State::Closed) else {
            // Buffered bytes were never sent: nothing to clean.
            return;
        };
        // Drop cannot wait, and an S3 upload left open keeps its parts
        // (billed, invisible) until a lifecycle rule reaps them.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(abort(upload))),
            Err(_) => tracing::warn!(
                key = %self.key,
                "blob writer dropped outside a runtime; its multipart upload stays open"
            ),
        }
    }
}

/// Aborts an upload: stops the parts in flight, then drops what the store
/// holds. A failure is logged, not returned: the caller is already giving
/// up, and a bucket lifecycle rule (`AbortIncompleteMultipartUpload`) is
/// the backstop for an abort that never arrives (a crash, a lost request).
async fn abort(upload: WriteMultipart) {
    if let Err(e) = upload.abort().await {
        tracing::warn!(error = %e, "aborting a multipart upload failed");
    }
}

fn closed(key: &str) -> BlobError {
    BlobError::Other(format!("the writer of {key} is already committed or failed").into())
}
