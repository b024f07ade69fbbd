//! End-to-end tests: the real `berth` binary against the real Docker
//! Engine, driven over HTTP like a user would. They need the images built by
//! `scripts/build-test-images.sh` (the test script builds them first).

mod access_log;
mod async_tasks;
mod cli;
mod console;
mod defects;
mod errors;
mod fleet;
mod harness;
mod http_details;
mod image_ops;
mod metrics;
mod registry;
mod sandbox;
mod scenarios;
mod set;
mod sync_calls;
mod warm;
