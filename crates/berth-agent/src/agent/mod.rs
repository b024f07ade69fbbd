//! The agent itself: the entrypoint of a warm function container.

mod exec;
mod http;
mod process;

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use futures::StreamExt;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::ChildStdin;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::protocol::{ExitReport, Frame, FrameCodec, FrameKind, ProtocolError, RequestHead};
use process::Children;

/// A client has this long to send its head after connecting.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests served at once; further connections wait in the listen queue.
/// Bounds the agent's memory and threads whatever the host sends.
const MAX_CONCURRENT_REQUESTS: usize = 256;

/// How often a connection whose input is stalled is checked for the client
/// having gone.
const CLOSE_POLL: Duration = Duration::from_millis(50);

/// Safety net for reaping orphans whose SIGCHLD was coalesced with another.
const ORPHAN_SWEEP: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run the program once per request, stdin to stdout.
    Exec,
    /// Run the program once as an HTTP server and proxy requests to it.
    Http,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub mode: Mode,
    pub port: u16,
    pub ready_timeout: Duration,
    pub grace: Duration,
    /// The program and its arguments; never empty.
    pub program: Vec<OsString>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no program to run")]
    NoProgram,
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] io::Error),
    #[error("the program did not accept connections on 127.0.0.1:{port} within {timeout:?}")]
    NotReady { port: u16, timeout: Duration },
    #[error("the program exited ({0})")]
    ProgramExited(String),
}

/// Runs the agent until it is told to stop (exec mode) or its program
/// exits (http mode). Returns the process exit code.
pub async fn run(config: Config) -> Result<i32, RunError> {
    if config.program.is_empty() {
        return Err(RunError::NoProgram);
    }
    let children = Arc::new(Children::default());
    let shutdown = CancellationToken::new();
    let _reaper = AbortOnDrop(tokio::spawn(reap_orphans(Arc::clone(&children))));
    let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let stop = shutdown.clone();
    let _signals = AbortOnDrop(tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        stop.cancel();
    }));
    let result = match config.mode {
        Mode::Exec => exec::run(&config, children, shutdown).await,
        Mode::Http => http::run(&config, children, shutdown).await,
    };
    remove_socket(&config.socket);
    result
}

/// Binds the socket under a temporary name, opens it to every uid, then
/// renames it into place: the socket appearing is the host's signal that
/// the agent is ready, so it must appear ready to use.
fn bind(path: &Path) -> Result<UnixListener, RunError> {
    let err = |source| RunError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!(".{}.tmp", std::process::id()));
    let staging = PathBuf::from(staging);
    remove_socket(&staging);
    remove_socket(path);
    let listener = UnixListener::bind(&staging).map_err(err)?;
    // The agent may run as any uid while the host connects as another.
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    std::fs::rename(&staging, path).map_err(err)?;
    Ok(listener)
}

fn remove_socket(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => eprintln!("berth-agent: cannot remove {}: {err}", path.display()),
    }
}

async fn reap_orphans(children: Arc<Children>) {
    // Only init inherits orphans; anywhere else every child is our own.
    if std::process::id() != 1 {
        return;
    }
    let Ok(mut sigchld) = signal(SignalKind::child()) else {
        return;
    };
    let mut sweep = tokio::time::interval(ORPHAN_SWEEP);
    loop {
        tokio::select! {
            _ = sigchld.recv() => {}
            _ = sweep.tick() => {}
        }
        let children = Arc::clone(&children);
        let _ = tokio::task::spawn_blocking(move || children.reap_orphans()).await;
    }
}

/// Waits up to `grace` for the requests holding `slots` to finish, so
/// they can send their exit reports before the agent exits.
async fn drain(slots: &tokio::sync::Semaphore, grace: Duration) {
    // Fits: the permit count is a small constant.
    let all = MAX_CONCURRENT_REQUESTS as u32;
    let _ = tokio::time::timeout(grace, slots.acquire_many(all)).await;
}

pub(super) type Input = FramedRead<OwnedReadHalf, FrameCodec>;
pub(super) type Output = FramedWrite<OwnedWriteHalf, FrameCodec>;

/// Opens a request on a new connection: its head, then its frames both
/// ways. `None` when there is no request to run: a bare connect (a
/// readiness probe) or a client that left, or a malformed head, which is
/// answered with an error report.
async fn open_request(stream: UnixStream) -> Option<(RequestHead, Input, Output)> {
    let (read, write) = stream.into_split();
    let mut input = FramedRead::new(read, FrameCodec);
    let mut output = FramedWrite::new(write, FrameCodec);
    match read_head(&mut input).await {
        Ok(head) => Some((head, input, output)),
        Err(ProtocolError::Closed(_)) => None,
        Err(err) => {
            send_exit(
                &mut output,
                ExitReport::failed(format!("bad request: {err}")),
            )
            .await;
            None
        }
    }
}

/// Ends a request with its report; a client that left gets nothing.
async fn send_exit(output: &mut Output, report: ExitReport) {
    if let Ok(frame) = Frame::json(FrameKind::Exit, &report) {
        let _ = output.send(frame).await;
    }
}

/// Reads the request head, the first frame of every connection.
async fn read_head(
    input: &mut FramedRead<OwnedReadHalf, FrameCodec>,
) -> Result<RequestHead, ProtocolError> {
    let frame = tokio::time::timeout(HEAD_TIMEOUT, input.next())
        .await
        .map_err(|_| ProtocolError::Closed("head"))?;
    match frame {
        None => Err(ProtocolError::Closed("head")),
        Some(Err(err)) => Err(err),
        Some(Ok(frame)) if frame.kind == FrameKind::Head => frame.parse(),
        Some(Ok(frame)) => Err(ProtocolError::Unexpected(frame.kind)),
    }
}

/// Where a request's input goes.
enum Sink {
    /// The child's stdin; `None` once the child closed it.
    Pipe(Option<ChildStdin>),
    /// The body of the proxied HTTP request; `None` once it is dropped.
    Body(Option<mpsc::Sender<Bytes>>),
}

impl Sink {
    /// Writes `data`, or discards it when the consumer has stopped reading:
    /// a child closing stdin early is no failure of the request.
    async fn write(&mut self, data: Bytes) {
        match self {
            Sink::Pipe(pipe) => {
                if let Some(stdin) = pipe
                    && stdin.write_all(&data).await.is_err()
                {
                    *pipe = None;
                }
            }
            Sink::Body(body) => {
                if let Some(sender) = body
                    && sender.send(data).await.is_err()
                {
                    *body = None;
                }
            }
        }
    }

    fn close(&mut self) {
        match self {
            Sink::Pipe(pipe) => *pipe = None,
            Sink::Body(body) => *body = None,
        }
    }
}

/// Feeds the request's `I` frames into `sink` until `E`, one frame at a
/// time, so nothing is read faster than the consumer takes it. Then it
/// keeps watching the connection: the client closing it, or breaking the
/// protocol, means the caller is gone, and `gone` is cancelled.
async fn pump_input(
    mut input: FramedRead<OwnedReadHalf, FrameCodec>,
    mut sink: Sink,
    gone: CancellationToken,
) {
    let mut ended = false;
    loop {
        match input.next().await {
            Some(Ok(frame)) if frame.kind == FrameKind::Stdin && !ended => {
                // A consumer that stops reading must not hide the client
                // leaving, so the connection is watched while writing.
                tokio::select! {
                    _ = sink.write(frame.payload) => {}
                    _ = read_closed(input.get_ref()) => break,
                }
            }
            Some(Ok(frame)) if frame.kind == FrameKind::StdinEnd && !ended => {
                ended = true;
                sink.close();
            }
            _ => break,
        }
    }
    sink.close();
    gone.cancel();
}

/// Resolves when the peer has closed the connection, without reading from
/// it (data may be queued in front of the close).
async fn read_closed(half: &OwnedReadHalf) {
    loop {
        match half.ready(Interest::READABLE).await {
            Ok(ready) if ready.is_read_closed() => return,
            // Readable with data we are not ready to take: look again later.
            Ok(_) => tokio::time::sleep(CLOSE_POLL).await,
            Err(_) => return,
        }
    }
}

/// Splits `data` into frames of at most [`crate::protocol::CHUNK`] bytes.
fn chunks(kind: FrameKind, mut data: Bytes) -> impl Iterator<Item = Frame> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let piece = data.split_to(data.len().min(crate::protocol::CHUNK));
        Some(Frame::new(kind, piece))
    })
}

/// Aborts a task when dropped, so a request's helpers end with it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}
