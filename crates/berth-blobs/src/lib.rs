//! Blobs: task inputs, outputs and logs now, registry layers and manifests
//! next, stored through the `object_store` crate on the local filesystem
//! (all-in-one) or an S3-compatible bucket (a set: SeaweedFS, Garage, a
//! cloud's S3).
//!
//! **Architecture Invariant:** only this crate knows `object_store`. Other
//! crates see [`Blobs`], [`BlobWriter`], [`Blob`] and [`BlobError`]; no
//! object_store type appears in this crate's public API, so the backend
//! (and the object_store version) can change without touching a caller.
//!
//! What every backend promises: writes are create-only where the backend
//! can enforce it and become visible whole, on commit, never in part
//! (see [`BlobWriter`]); large writes go up as multipart uploads, reads
//! come down as streams; a committed local write is on disk, file and
//! directory synced, before commit returns.
//!
//! - `open.rs`: opening a store from a path or URL, and what a key may be
//! - `blobs.rs`: the handle and whole-blob operations
//! - `writer.rs`: the streaming write, buffered then multipart
//! - `read.rs`: streaming a local file in large chunks
//! - `payloads.rs`: task payload keys (by task, shard and epoch)
//! - `error.rs`: the error kinds callers act on

mod blobs;
mod error;
mod open;
mod payloads;
mod read;
mod writer;

pub use blobs::{Blob, BlobMeta, Blobs};
pub use error::BlobError;
pub use payloads::{PayloadWriter, Payloads};
pub use writer::{BlobWriter, PART_SIZE, PARTS_IN_FLIGHT};
