//! Streaming a local blob in chunks large enough to be cheap.
//!
//! object_store streams a local file in 8 KiB chunks, each read on the
//! blocking pool: a 64 MiB blob is 8192 hand-offs between threads and reads
//! at about half the speed of S3 on loopback. Reading [`CHUNK`] at a time
//! keeps the memory per reader small and the hand-offs few.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

/// Bytes per read: one chunk is all a reader holds.
pub(crate) const CHUNK: u64 = 256 * 1024;

/// `range` of `file`, a chunk at a time. Positional reads (`pread`), so the
/// file's cursor does not matter.
pub(crate) fn file(file: File, range: Range<u64>) -> BoxStream<'static, io::Result<Bytes>> {
    futures::stream::try_unfold((file, range), |(file, range)| async move {
        if range.start >= range.end {
            return Ok(None);
        }
        let want = (range.end - range.start).min(CHUNK);
        let at = range.start;
        let (file, chunk) = tokio::task::spawn_blocking(move || {
            // `want` is at most CHUNK, so it fits in usize.
            let mut chunk = vec![0; want as usize];
            file.read_exact_at(&mut chunk, at).map(|()| (file, chunk))
        })
        .await
        .map_err(io::Error::other)??;
        Ok(Some((Bytes::from(chunk), (file, at + want..range.end))))
    })
    .boxed()
}
