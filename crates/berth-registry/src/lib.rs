//! Berth's built-in OCI registry: the Distribution Spec v1.1 (Docker
//! Registry HTTP API V2) at `/v2/`, for any number of replicas at once.
//!
//! Repositories are namespaced per tenant (`<tenant>/<name>`); who may do
//! what is decided by the embedding server's [`Authenticator`]. Bytes
//! (layers, configs, manifests, upload chunks) live in a blob store
//! ([`berth_blobs::Blobs`]: the local filesystem, or S3 for a set), under
//! their digest and written create-only; everything else (repositories,
//! links, manifests' metadata, tags, upload sessions) lives in a
//! [`RegistryIndex`] the replicas share, so a push through one replica is
//! a pull through any other at once. Every blob and manifest is verified
//! against its digest as it streams in, and nothing is linked into a
//! repository until its content is fully stored, so a failed or malicious
//! push leaves no trace a pull could see.
//!
//! - `registry.rs`: the handle, blobs (pull, mount, monolithic push)
//! - `manifests.rs`: manifests, tags, listings
//! - `uploads.rs`: chunked uploads across replicas
//! - `gc.rs`, `maintenance.rs`: collection, and which replica runs it
//! - `index.rs`, `memory.rs`: the index's contract and its in-memory form
//! - `storage.rs`, `stream.rs`: blob keys, and bytes in and out
//! - `import.rs`: reading a registry written before the index
//! - `http.rs`, `error.rs`, `auth.rs`: the protocol's edge
//!
//! Architecture Invariant: this crate knows the registry protocol, its
//! blob keys and its index's contract, nothing of functions, tasks, SQL
//! or object_store; the server implements the index with its store,
//! adapts its keys to the [`Authenticator`] trait and pins images with
//! [`Registry::resolve`].

mod auth;
mod digest;
mod error;
mod gc;
mod http;
mod import;
mod index;
mod maintenance;
mod manifest;
mod manifests;
mod memory;
mod names;
mod reference;
mod registry;
mod storage;
mod stream;
mod uploads;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use auth::{Authenticator, NoAccess, Principal};
pub use digest::{Algorithm, Digest};
pub use error::RegistryError;
pub use gc::{GcOptions, GcReport};
pub use http::router;
pub use index::{
    BlobState, IndexError, IndexResult, LegacyIndex, ManifestRecord, Protection, RegistryIndex,
    UploadChunk, UploadRecord,
};
pub use maintenance::{MAINTENANCE_LEASE, spawn_maintenance};
pub use manifest::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST,
};
pub use memory::MemoryIndex;
pub use names::{RepoName, is_valid_name, is_valid_tag};
pub use reference::{ImageReference, parse_reference, reference_host};
pub use registry::{Config, Reference, Registry, Resolved};

#[cfg(test)]
mod tests;
