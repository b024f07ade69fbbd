//! The Docker Engine implementation of [`berth_executor::Executor`].
//!
//! Architecture Invariant: only this crate knows Docker. Everything above
//! it sees the `Executor` trait.
//!
//! Inside, dependencies point one way: `executor` wires `fresh` and `warm`;
//! both build on `engine` and `container`; `warm` files its instances in
//! `pool`, which knows no engine at all.

mod container;
mod engine;
mod executor;
mod fresh;
mod pool;
mod warm;

pub use engine::{DockerConfig, PullCredentials, registry_host};
pub use executor::DockerExecutor;
