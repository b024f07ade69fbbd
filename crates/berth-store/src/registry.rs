//! The registry's index ([`berth_registry::RegistryIndex`]) in the store's
//! database, so every replica of a set agrees at once on repositories,
//! links, manifests, tags, upload sessions and blob lifetimes. Both
//! backends implement it (`sqlite/registry.rs`, `postgres/registry.rs`,
//! tables `registry_*`); what they share is here: reading rows back and
//! telling the registry whether a failure is worth a retry.
//!
//! The registry's safety rules are single conditional statements here:
//! protecting a blob (an upsert that refuses a doomed row), dooming one
//! (an upsert that refuses a row protected since the cutoff), appending a
//! chunk (an update on the expected offset). On PostgreSQL a second
//! writer of the same row waits for the first and re-checks the condition
//! against what it committed; SQLite has one writer at a time.

use berth_registry::{BlobState, IndexError, ManifestRecord, UploadChunk, UploadRecord};

use crate::rows::{StoreRow, corrupt};
use crate::{Result, StoreError};

pub(crate) fn index_error(e: impl Into<StoreError>) -> IndexError {
    let e = e.into();
    IndexError::new(e.is_unavailable(), e)
}

fn size(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| corrupt(format!("negative size {n}")))
}

/// Sizes and offsets as the database stores them.
pub(crate) fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Reads `digest, media_type, size, subject, artifact_type, annotations`.
pub(crate) fn manifest(row: &impl StoreRow) -> Result<ManifestRecord> {
    Ok(ManifestRecord {
        digest: row.text("digest")?,
        media_type: row.text("media_type")?,
        size: size(row.int("size")?)?,
        subject: row.text_opt("subject")?,
        artifact_type: row.text_opt("artifact_type")?,
        annotations: row.text_opt("annotations")?,
    })
}

pub(crate) fn blob_state(row: &impl StoreRow) -> Result<BlobState> {
    Ok(BlobState {
        touched_ms: row.int("touched_at")?,
        doomed_ms: row.int_opt("doomed_at")?,
    })
}

/// An upload from the rows of `SELECT id, repo, received, first_byte,
/// len, blob_key` over the session left-joined with its chunks, in the
/// chunks' order: one statement, so one consistent view of both.
pub(crate) fn upload(rows: &[impl StoreRow]) -> Result<Option<UploadRecord>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut record = UploadRecord {
        id: first.text("id")?,
        repo: first.text("repo")?,
        received: size(first.int("received")?)?,
        chunks: Vec::new(),
    };
    for row in rows {
        let Some(start) = row.int_opt("first_byte")? else {
            continue;
        };
        record.chunks.push(UploadChunk {
            start: size(start)?,
            len: size(row.int_opt("len")?.unwrap_or_default())?,
            key: row.text_opt("blob_key")?.unwrap_or_default(),
        });
    }
    Ok(Some(record))
}
