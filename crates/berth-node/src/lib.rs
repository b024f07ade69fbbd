//! The protocol between a replica of the set and an executor node: the
//! node serves its [`Executor`] with [`router`], and a replica drives it
//! as a [`RemoteExecutor`], an `Executor` like any other.
//!
//! # Requests
//!
//! Everything is HTTP/1.1 under `/node/v1/`. Every request carries
//! `Authorization: Bearer <the set's shared secret>` (401 otherwise) and
//! `X-Berth-Node: <node id>`, which must be the node's own id (409
//! otherwise): a replica with a stale view of the set must never run work
//! on a node that took over another's address. Errors are JSON,
//! `{"error": {"code", "message", ...}}`, with a stable code per
//! [`ExecError`] variant ([`wire::WireError`]); a refusal is a 503, any
//! other executor error a 502.
//!
//! # Runs
//!
//! `POST /node/v1/run`'s body is a spec frame (the [`RunSpec`] as JSON
//! behind a big-endian u32 length, at most [`MAX_SPEC_BYTES`]) followed by
//! the raw stdin. The node starts the attempt on the spec alone and
//! answers 200 at once, or with the refusal. The replica holds stdin back
//! until that 200 arrives (the gate): a refused run goes to another node
//! with its input untouched. HTTP/1.1 is full duplex here, so the answer
//! arrives while the request body is still open.
//!
//! The 200's body is a sequence of frames, `[kind: u8][len: u32 BE]
//! [payload]`, none over [`MAX_FRAME_BYTES`]: HEAD (http mode's status and
//! headers), STDOUT, STDERR, KEEPALIVE (empty, sent after a second of
//! silence), and DONE (how the attempt ended), always last. Frames are
//! read only as the caller makes room for output, so a slow caller stalls
//! the function on the node instead of filling memory on either side.
//! After DONE (and after any error answer) the node ends its response only
//! once the request body has ended, reading and discarding what the
//! function left unread; the replica ends its request (or drops the
//! connection) once it has read DONE. Neither side then closes a socket
//! with unread data in it, which would reset the connection and could
//! destroy the last frames before they are read.
//!
//! A run whose response breaks, ends before DONE, or stays silent past
//! the idle timeout ends with [`ExecError::ExecutorLost`]. A run the
//! replica ends (its cancel token, or the caller dropping stdout) drops
//! the connection; the node notices at its next write at the latest (the
//! keepalives) and drops the attempt's stdout, which kills it.
//!
//! The other operations are small JSON calls: `resolve`, `prepare`,
//! `reap`, `retire` and `status`.

mod auth;
mod client;
mod server;
pub mod wire;

pub use auth::{NodeAuth, SharedSecret};
pub use client::{CHANNEL_DEPTH, ClientConfig, NodeError, RemoteExecutor};
pub use server::{ServerConfig, router, router_with_config};
pub use wire::{MAX_FRAME_BYTES, MAX_SPEC_BYTES};

/// Where the protocol's routes live.
pub const API_PREFIX: &str = "/node/v1";
/// The node a request is meant for.
pub const NODE_HEADER: &str = "x-berth-node";
/// The content type of a run's framed response.
pub const FRAMES_CONTENT_TYPE: &str = "application/vnd.berth.frames";

#[cfg(doc)]
use berth_executor::{ExecError, Executor, RunSpec};
