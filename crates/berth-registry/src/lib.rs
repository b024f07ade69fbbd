//! Berth's built-in OCI registry: the Distribution Spec v1.1 (Docker
//! Registry HTTP API V2) at `/v2/`, over content-addressed files.
//!
//! Repositories are namespaced per tenant (`<tenant>/<name>`); who may do
//! what is decided by the embedding server's [`Authenticator`]. Every blob
//! and manifest is verified against its digest as it streams in, and
//! nothing is linked into a repository until its content is fully stored,
//! so a failed or malicious push leaves no trace a pull could see.
//!
//! Architecture Invariant: this crate knows the registry protocol and its
//! files, nothing of functions, tasks or the store; the server adapts its
//! keys to the [`Authenticator`] trait and pins images with
//! [`Registry::resolve`].

mod auth;
mod digest;
mod error;
mod gc;
mod http;
mod manifest;
mod names;
mod reference;
mod registry;
mod storage;
mod stream;
mod uploads;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use auth::{Authenticator, NoAccess, Principal};
pub use digest::{Algorithm, Digest};
pub use error::RegistryError;
pub use gc::{GcOptions, GcReport, spawn_maintenance};
pub use http::router;
pub use manifest::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST,
};
pub use names::{RepoName, is_valid_name, is_valid_tag};
pub use reference::{ImageReference, parse_reference, reference_host};
pub use registry::{Config, Reference, Registry, Resolved};

/// Runs filesystem work off the async threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, RegistryError>
where
    F: FnOnce() -> Result<T, RegistryError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::Io(std::io::Error::other(e.to_string())))?
}

#[cfg(test)]
mod tests;
