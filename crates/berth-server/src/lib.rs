//! The all-in-one server's wiring, as a library under the thin `berth`
//! binary: configuration, the data directory and the admin key, the
//! agent, the registry's adapters and the image admission rule, and
//! starting and stopping everything in order.
//!
//! Architecture Invariant: every rule here has one home: the admission
//! rule in `registry`, the agent checks in `agent`, the data directory's
//! layout and permissions in `data_dir`.

mod access_log;
mod agent;
mod data_dir;
mod node;
mod registry;
mod run;
mod tls;

use std::path::PathBuf;

pub use data_dir::default_data_dir;
pub use node::{NodeConfig, run_node};
pub use registry::collect_garbage;
pub use run::{Config, run};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening the database: {0}")]
    Store(#[from] berth_store::StoreError),
    #[error("opening the blob store: {0}")]
    Blobs(#[from] berth_blobs::BlobError),
    #[error("{0}")]
    Sched(#[from] berth_scheduler::SchedError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("registry: {0}")]
    Registry(#[from] berth_registry::RegistryError),
    #[error("no registry under {}", .0.display())]
    NoRegistry(PathBuf),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}
