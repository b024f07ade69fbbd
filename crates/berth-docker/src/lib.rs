//! The Docker Engine implementation of [`berth_executor::Executor`].
//!
//! Architecture Invariant: only this crate knows Docker. Everything above
//! it sees the `Executor` trait.

mod docker;
mod pool;
mod warm;

pub use docker::{DockerConfig, DockerExecutor, PullCredentials};
