//! A task's stderr, stored with a size cap.
//!
//! The start of the log is kept, since that is where a program says what
//! it was doing when things began to go wrong; what comes past the cap is
//! counted and dropped, and one line at the end says how much. The stream
//! is drained to its end whatever the cap, so a function is never slowed
//! or stalled by its own logging.

use berth_blobs::{PayloadWriter, Payloads};
use berth_core::{PayloadKind, TaskId};
use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::warn;

use crate::TaskManager;
use crate::follow::TapWriter;

impl TaskManager {
    /// Drains stderr into the logs of this attempt (its epoch), capped
    /// (see [`collect`]), and into a tap for those following them.
    pub(crate) async fn collect_logs(
        &self,
        id: TaskId,
        epoch: i64,
        stderr: mpsc::Receiver<Bytes>,
    ) -> Option<PayloadWriter> {
        let tap = self.taps.open(id, PayloadKind::Logs, epoch);
        collect(
            &self.payloads,
            id,
            epoch,
            stderr,
            self.cfg.max_log_bytes,
            Some(&tap),
        )
        .await
    }

    pub(crate) async fn commit_logs(&self, id: TaskId, logs: Option<PayloadWriter>) {
        if let Some(w) = logs
            && let Err(e) = w.commit().await
        {
            warn!(task = %id, error = %e, "could not commit logs");
        }
    }
}

/// Drains `stderr` into the task's log payload, keeping at most `cap`
/// bytes of it plus the truncation line; what is written goes to `tap`
/// too. Returns the writer to commit, `None` when nothing was written (or
/// storing failed).
pub(crate) async fn collect(
    payloads: &Payloads,
    id: TaskId,
    epoch: i64,
    mut stderr: mpsc::Receiver<Bytes>,
    cap: u64,
    tap: Option<&TapWriter<'_>>,
) -> Option<PayloadWriter> {
    // The file is made on the first byte: most calls write no stderr,
    // and a file (with its fsyncs) per call is most of a warm call's
    // cost. A task without one has empty logs.
    let mut writer: Option<PayloadWriter> = None;
    let mut failed = false;
    let mut dropped: u64 = 0;
    let mut ends_a_line = true;
    while let Some(chunk) = stderr.recv().await {
        if chunk.is_empty() || failed {
            continue;
        }
        if dropped > 0 {
            dropped += chunk.len() as u64;
            continue;
        }
        if writer.is_none() {
            match payloads.create(id, PayloadKind::Logs, epoch) {
                Ok(w) => writer = Some(w),
                Err(e) => {
                    warn!(task = %id, error = %e, "cannot store logs");
                    failed = true;
                    continue;
                }
            }
        }
        let Some(w) = writer.as_mut() else { continue };
        let room = usize::try_from(cap.saturating_sub(w.written())).unwrap_or(usize::MAX);
        let part = chunk.slice(..chunk.len().min(room));
        if let Some(&last) = part.last() {
            if let Err(e) = w.write(&part).await {
                warn!(task = %id, error = %e, "log write failed");
                writer = None;
                failed = true;
                continue;
            }
            if let Some(tap) = tap {
                tap.push(&part);
            }
            ends_a_line = last == b'\n';
        }
        dropped += (chunk.len() - part.len()) as u64;
    }
    if dropped > 0
        && let Some(w) = writer.as_mut()
    {
        let line = Bytes::from(truncation_line(cap, dropped, ends_a_line));
        match w.write(&line).await {
            Ok(()) => {
                if let Some(tap) = tap {
                    tap.push(&line);
                }
            }
            Err(e) => {
                warn!(task = %id, error = %e, "log write failed");
                writer = None;
            }
        }
    }
    writer
}

/// The last line of a truncated log; it starts a line of its own even when
/// the cut fell mid-line.
pub(crate) fn truncation_line(cap: u64, dropped: u64, ends_a_line: bool) -> String {
    let sep = if ends_a_line { "" } else { "\n" };
    format!("{sep}[berth: log truncated at {cap} bytes; {dropped} bytes dropped]\n")
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;

    async fn run(chunks: &[&[u8]], cap: u64) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let payloads = Payloads::new(berth_blobs::Blobs::local(dir.path()).unwrap());
        let id = TaskId::new();
        let (tx, rx) = mpsc::channel(4);
        let owned: Vec<Bytes> = chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect();
        let feed = tokio::spawn(async move {
            for c in owned {
                tx.send(c).await.unwrap();
            }
        });
        let writer = collect(&payloads, id, 1, rx, cap, None).await;
        feed.await.unwrap();
        writer?.commit().await.unwrap();
        let blob = payloads.open(id, PayloadKind::Logs, 1).await.unwrap()?;
        let bytes: Vec<u8> = blob
            .stream
            .map_ok(|b| b.to_vec())
            .try_concat()
            .await
            .unwrap();
        Some(String::from_utf8(bytes).unwrap())
    }

    #[tokio::test]
    async fn logs_under_the_cap_are_kept_whole() {
        assert_eq!(run(&[b"one\n", b"two\n"], 8).await.unwrap(), "one\ntwo\n");
        assert_eq!(run(&[], 8).await, None, "no stderr, no file");
    }

    #[tokio::test]
    async fn the_start_is_kept_and_the_rest_counted() {
        let big = vec![b'x'; 10_000];
        let log = run(&[b"first\n", &big, b"last\n"], 100).await.unwrap();
        let (kept, note) = log.split_at(100);
        assert!(kept.starts_with("first\nxxx"));
        let dropped = 6 + 10_000 + 5 - 100;
        assert_eq!(note, truncation_line(100, dropped, false));
        assert_eq!(
            note,
            format!("\n[berth: log truncated at 100 bytes; {dropped} bytes dropped]\n")
        );
    }

    #[tokio::test]
    async fn a_cut_at_a_line_end_adds_no_blank_line() {
        let log = run(&[b"0123456789\n", b"more\n"], 11).await.unwrap();
        assert_eq!(
            log,
            "0123456789\n[berth: log truncated at 11 bytes; 5 bytes dropped]\n"
        );
    }
}
