//! Berth's in-container agent and the host's client for it.
//!
//! The agent is the entrypoint of every warm function container. It listens
//! on a unix socket in a bind-mounted directory and runs one request per
//! connection: in exec mode by running the function's program with the
//! request as stdin, in http mode by proxying to the program's own HTTP
//! server on the container's loopback. [`protocol`] is the wire format and
//! [`client`] the host's side of it.

pub mod agent;
pub mod client;
pub mod protocol;
