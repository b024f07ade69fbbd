//! Moving blob bytes between sockets and files without holding a whole
//! blob anywhere.
//!
//! Writes: the request body's frames go through a short bounded channel to
//! a blocking thread that writes them in large pieces and hashes exactly
//! what it wrote, so hashing and disk writes overlap with receiving the
//! next frames and never stall the async runtime.
//!
//! Reads: a blocking thread reads ahead into a short bounded channel that
//! the response body drains; Content-Length is known up front.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::digest::Hasher;
use crate::storage::IO_CHUNK;

/// Frames in flight between the socket and the writer thread. With
/// hyper's frames (at most a few hundred KiB) this bounds an upload's
/// memory to a few MiB.
const WRITE_DEPTH: usize = 16;
/// Chunks read ahead of the socket when serving a blob.
const READ_DEPTH: usize = 4;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AppendError {
    #[error("the request body failed: {0}")]
    Body(String),
    #[error("the body is longer than declared ({limit} bytes)")]
    TooLong { limit: u64 },
    #[error("writing the upload: {0}")]
    Io(#[from] io::Error),
}

/// Appends the whole body to the file at `path` from byte `start` on,
/// feeding `hasher`; returns the new hasher and the bytes written. At most
/// `limit` bytes are accepted. All or nothing: on any failure the file is
/// cut back to `start` bytes, and the caller keeps its copy of the hasher
/// from before.
pub(crate) async fn append_body(
    path: &Path,
    start: u64,
    hasher: Hasher,
    body: Body,
    limit: Option<u64>,
) -> Result<(Hasher, u64), AppendError> {
    let file = {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || -> io::Result<File> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            // Anything past `start` is the tail of an attempt that failed.
            f.set_len(start)?;
            f.seek(SeekFrom::Start(start))?;
            Ok(f)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))??
    };

    let (tx, rx) = mpsc::channel::<Bytes>(WRITE_DEPTH);
    let worker = tokio::task::spawn_blocking(move || write_loop(file, hasher, rx));
    let mut stream = body.into_data_stream();
    let mut received: u64 = 0;
    let mut failure = None;
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(bytes) => {
                received += bytes.len() as u64;
                if let Some(limit) = limit
                    && received > limit
                {
                    failure = Some(AppendError::TooLong { limit });
                    break;
                }
                if tx.send(bytes).await.is_err() {
                    // The writer stopped on an I/O error; it reports it.
                    break;
                }
            }
            Err(e) => {
                failure = Some(AppendError::Body(e.to_string()));
                break;
            }
        }
    }
    drop(tx);

    let outcome = worker.await.map_err(|e| io::Error::other(e.to_string()));
    let error = match outcome {
        Ok((_, hasher, written, Ok(()))) if failure.is_none() => return Ok((hasher, written)),
        Ok((_, _, _, Err(e))) => AppendError::Io(e),
        Ok(_) => failure.unwrap_or(AppendError::Body("aborted".into())),
        Err(e) => AppendError::Io(e),
    };
    let path = path.to_owned();
    let rolled_back = tokio::task::spawn_blocking(move || {
        OpenOptions::new().write(true).open(path)?.set_len(start)
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))
    .and_then(|r| r);
    match rolled_back {
        Ok(()) => Err(error),
        Err(e) => Err(AppendError::Io(e)),
    }
}

fn write_loop(
    mut file: File,
    mut hasher: Hasher,
    mut rx: mpsc::Receiver<Bytes>,
) -> (File, Hasher, u64, io::Result<()>) {
    let mut pending = BytesMut::with_capacity(IO_CHUNK);
    let mut written = 0u64;
    let mut flush = |file: &mut File, data: &[u8], hasher: &mut Hasher| -> io::Result<()> {
        file.write_all(data)?;
        hasher.update(data);
        written += data.len() as u64;
        Ok(())
    };
    let result = (|| {
        while let Some(frame) = rx.blocking_recv() {
            if pending.is_empty() && frame.len() >= IO_CHUNK {
                // Large frames go straight to the file: no copy.
                flush(&mut file, &frame, &mut hasher)?;
                continue;
            }
            pending.extend_from_slice(&frame);
            if pending.len() >= IO_CHUNK {
                flush(&mut file, &pending, &mut hasher)?;
                pending.clear();
            }
        }
        if !pending.is_empty() {
            flush(&mut file, &pending, &mut hasher)?;
        }
        Ok(())
    })();
    (file, hasher, written, result)
}

/// A response body streaming `len` bytes of `file` from `offset`.
pub(crate) fn file_body(mut file: File, offset: u64, len: u64) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(READ_DEPTH);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.seek(SeekFrom::Start(offset)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut left = len;
        while left > 0 {
            let want = left.min(IO_CHUNK as u64) as usize;
            let mut buf = BytesMut::zeroed(want);
            let mut filled = 0;
            while filled < want {
                match file.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if filled == 0 {
                // The file shrank under us; the response is cut short and
                // the client's length check catches it.
                let _ = tx.blocking_send(Err(io::Error::from(io::ErrorKind::UnexpectedEof)));
                return;
            }
            buf.truncate(filled);
            left -= filled as u64;
            if tx.blocking_send(Ok(buf.freeze())).is_err() {
                return; // the client went away
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}
