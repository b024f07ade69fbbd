//! Moving blob bytes between sockets and the blob store without holding a
//! whole blob anywhere.
//!
//! Writes: request bodies (and, at the end of a chunked upload, the stored
//! chunks) go frame by frame into a [`Sink`]: a blob writer, which buffers
//! a part and sends the rest as a multipart upload, and a hasher on a
//! blocking thread behind a short bounded channel, so hashing overlaps
//! with receiving and never stalls the async runtime.
//!
//! Reads: a blob's stream becomes the response body as it is; its length
//! is known before the first byte.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use berth_blobs::{Blob, BlobWriter};
use berth_metrics::RegistryMetrics;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::RegistryError;
use crate::digest::{Algorithm, Digest, Hasher};
use crate::index::RegistryIndex;

/// Frames in flight between the socket and the hashing thread. With
/// hyper's frames (at most a few hundred KiB) this bounds the memory to a
/// few MiB besides the writer's own buffer.
const HASH_DEPTH: usize = 16;

/// A running hash on a blocking thread.
struct HashThread {
    tx: mpsc::Sender<Bytes>,
    done: tokio::task::JoinHandle<Hasher>,
}

impl HashThread {
    fn spawn(algorithm: Algorithm) -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(HASH_DEPTH);
        let done = tokio::task::spawn_blocking(move || {
            let mut hasher = algorithm.hasher();
            while let Some(piece) = rx.blocking_recv() {
                hasher.update(&piece);
            }
            hasher
        });
        Self { tx, done }
    }

    async fn update(&self, piece: Bytes) -> Result<(), RegistryError> {
        self.tx
            .send(piece)
            .await
            .map_err(|_| std::io::Error::other("the hashing thread stopped").into())
    }

    async fn finish(self) -> Result<Digest, RegistryError> {
        drop(self.tx);
        let hasher = self
            .done
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(hasher.finish())
    }
}

/// Where received bytes go: a blob writer, and a hasher when the digest
/// is to be checked.
pub(crate) struct Sink {
    writer: BlobWriter,
    hash: Option<HashThread>,
}

impl Sink {
    pub fn new(writer: BlobWriter, algorithm: Option<Algorithm>) -> Self {
        Self {
            writer,
            hash: algorithm.map(HashThread::spawn),
        }
    }

    pub async fn put(&mut self, piece: Bytes) -> Result<(), RegistryError> {
        if piece.is_empty() {
            return Ok(());
        }
        if let Some(hash) = &self.hash {
            hash.update(piece.clone()).await?;
        }
        self.writer.write(&piece).await?;
        Ok(())
    }

    /// The writer, to commit or drop, and the digest of everything put
    /// (when hashing).
    pub async fn finish(self) -> Result<(BlobWriter, Option<Digest>), RegistryError> {
        let digest = match self.hash {
            Some(hash) => Some(hash.finish().await?),
            None => None,
        };
        Ok((self.writer, digest))
    }
}

/// Keeps an upload session marked active while a long chunk streams in or
/// out, so that an expiry pass on any replica never takes it for
/// abandoned mid-request.
pub(crate) struct Heartbeat {
    session: Option<(Arc<dyn RegistryIndex>, String)>,
    every: Duration,
    last: Instant,
}

impl Heartbeat {
    pub fn none() -> Self {
        Self {
            session: None,
            every: Duration::MAX,
            last: Instant::now(),
        }
    }

    /// Beats a few times per expiry period, and at least once a minute.
    pub fn upload(index: Arc<dyn RegistryIndex>, id: &str, expiry: Duration) -> Self {
        Self {
            session: Some((index, id.to_owned())),
            every: (expiry / 4).min(Duration::from_secs(60)),
            last: Instant::now(),
        }
    }

    async fn beat(&mut self) -> Result<(), RegistryError> {
        let Some((index, id)) = &self.session else {
            return Ok(());
        };
        if self.last.elapsed() < self.every {
            return Ok(());
        }
        self.last = Instant::now();
        if !index.touch_upload(id).await? {
            // Cancelled or expired meanwhile: nothing to write to.
            return Err(RegistryError::BlobUploadUnknown(id.clone()));
        }
        Ok(())
    }
}

/// Puts a whole request body into `sink`; answers its length. At most
/// `limit` bytes are accepted.
pub(crate) async fn pump_body(
    body: Body,
    sink: &mut Sink,
    limit: Option<u64>,
    beat: &mut Heartbeat,
) -> Result<u64, RegistryError> {
    let mut stream = body.into_data_stream();
    let mut received: u64 = 0;
    while let Some(frame) = stream.next().await {
        let piece = frame.map_err(|e| {
            RegistryError::BlobUploadInvalid(format!("the request body failed: {e}"))
        })?;
        received += piece.len() as u64;
        if let Some(limit) = limit
            && received > limit
        {
            return Err(RegistryError::BlobUploadInvalid(format!(
                "the body is longer than declared ({limit} bytes)"
            )));
        }
        sink.put(piece).await?;
        beat.beat().await?;
    }
    Ok(received)
}

/// Puts a whole stored blob into `sink`; answers its length.
pub(crate) async fn pump_blob(
    blob: Blob,
    sink: &mut Sink,
    beat: &mut Heartbeat,
) -> Result<u64, RegistryError> {
    let mut stream = blob.stream;
    let mut copied = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        copied += piece.len() as u64;
        sink.put(piece).await?;
        beat.beat().await?;
    }
    Ok(copied)
}

/// A response body streaming a blob; what it sends is counted.
pub(crate) fn blob_body(blob: Blob, metrics: RegistryMetrics) -> Body {
    Body::from_stream(blob.stream.inspect(move |piece| {
        if let Ok(piece) = piece {
            metrics.sent(piece.len() as u64);
        }
    }))
}
