//! The host's side of the protocol: one [`call`] per request.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::protocol::{
    CHUNK, ExitReport, Frame, FrameCodec, FrameKind, HttpHead, ProtocolError, RequestHead,
};

/// Frames buffered between the connection and the caller: a slow caller
/// stalls the agent (and so the function) rather than growing memory.
const EVENT_BUFFER: usize = 16;

const READY_POLL: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to the agent at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the agent at {path} did not accept connections within {timeout:?}")]
    NotReady { path: PathBuf, timeout: Duration },
    #[error("agent protocol error: {0}")]
    Protocol(ProtocolError),
    #[error("agent connection failed: {0}")]
    Io(#[source] io::Error),
    /// The caller's stdin stream failed; the request was abandoned.
    #[error("reading the request body failed: {0}")]
    Input(#[source] io::Error),
}

impl From<ProtocolError> for AgentError {
    fn from(err: ProtocolError) -> Self {
        match err {
            ProtocolError::Io(err) => AgentError::Io(err),
            other => AgentError::Protocol(other),
        }
    }
}

/// What the agent reports about a request, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// http mode: the function's response status and headers, before any
    /// body.
    Http(HttpHead),
    Stdout(Bytes),
    Stderr(Bytes),
    /// The last event of a successful call.
    Exit(ExitReport),
}

/// A request in flight. Events arrive through [`Call::recv`] (or the
/// `Stream` impl); the sequence ends after [`Event::Exit`] or an error.
/// A sequence that ends without either means the connection was lost.
///
/// Dropping a `Call` closes the connection, which makes the agent stop the
/// request (its process group is killed).
pub struct Call {
    events: mpsc::Receiver<Result<Event, AgentError>>,
    _close: DropGuard,
}

impl Call {
    pub async fn recv(&mut self) -> Option<Result<Event, AgentError>> {
        self.events.recv().await
    }
}

impl Stream for Call {
    type Item = Result<Event, AgentError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").finish_non_exhaustive()
    }
}

/// Starts a request on the agent listening at `socket`: sends `head`, then
/// pumps `stdin` in a background task. Returns once the head is sent.
pub async fn call<S>(socket: &Path, head: RequestHead, stdin: S) -> Result<Call, AgentError>
where
    S: Stream<Item = Result<Bytes, io::Error>> + Send + Unpin + 'static,
{
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| AgentError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    let (read, write) = stream.into_split();
    let mut writer = FramedWrite::new(write, FrameCodec);
    writer.send(Frame::json(FrameKind::Head, &head)?).await?;

    let close = CancellationToken::new();
    let (events, receiver) = mpsc::channel(EVENT_BUFFER);
    tokio::spawn(pump_stdin(writer, stdin, events.clone(), close.clone()));
    tokio::spawn(read_events(
        FramedRead::new(read, FrameCodec),
        events,
        close.clone(),
    ));
    Ok(Call {
        events: receiver,
        _close: close.drop_guard(),
    })
}

/// Waits until the agent at `socket` accepts connections: the socket only
/// appears once the agent (and in http mode, the function's server) is
/// ready.
pub async fn wait_ready(socket: &Path, timeout: Duration) -> Result<(), AgentError> {
    let start = Instant::now();
    loop {
        if UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(AgentError::NotReady {
                path: socket.to_path_buf(),
                timeout,
            });
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

async fn pump_stdin<S>(
    mut writer: FramedWrite<OwnedWriteHalf, FrameCodec>,
    mut stdin: S,
    events: mpsc::Sender<Result<Event, AgentError>>,
    close: CancellationToken,
) where
    S: Stream<Item = Result<Bytes, io::Error>> + Send + Unpin + 'static,
{
    let pump = async {
        while let Some(chunk) = stdin.next().await {
            let mut chunk = chunk.map_err(AgentError::Input)?;
            while !chunk.is_empty() {
                let piece = chunk.split_to(chunk.len().min(CHUNK));
                writer.send(Frame::new(FrameKind::Stdin, piece)).await?;
            }
        }
        writer
            .send(Frame::new(FrameKind::StdinEnd, Bytes::new()))
            .await?;
        Ok::<(), AgentError>(())
    };
    let result = tokio::select! {
        _ = close.cancelled() => return,
        result = pump => result,
    };
    match result {
        // The agent reads a closed connection as the caller being gone, so
        // the write half stays open (no half-close) until the call ends.
        Ok(()) => close.cancelled().await,
        Err(err @ AgentError::Input(_)) => {
            tokio::select! {
                _ = close.cancelled() => {}
                _ = events.send(Err(err)) => {}
            }
            close.cancel();
        }
        // The agent closed the connection (typically after the function
        // exited without reading all its input); the reader reports how it
        // ended.
        Err(_) => close.cancelled().await,
    }
}

async fn read_events(
    mut reader: FramedRead<OwnedReadHalf, FrameCodec>,
    events: mpsc::Sender<Result<Event, AgentError>>,
    close: CancellationToken,
) {
    loop {
        let frame = tokio::select! {
            _ = close.cancelled() => return,
            frame = reader.next() => frame,
        };
        let event = match frame {
            None => Err(ProtocolError::Closed("exit").into()),
            Some(Err(err)) => Err(err.into()),
            Some(Ok(frame)) => match frame.kind {
                FrameKind::Http => frame.parse().map(Event::Http).map_err(AgentError::from),
                FrameKind::Stdout => Ok(Event::Stdout(frame.payload)),
                FrameKind::Stderr => Ok(Event::Stderr(frame.payload)),
                FrameKind::Exit => frame.parse().map(Event::Exit).map_err(AgentError::from),
                kind => Err(AgentError::Protocol(ProtocolError::Unexpected(kind))),
            },
        };
        let last = matches!(event, Ok(Event::Exit(_)) | Err(_));
        tokio::select! {
            _ = close.cancelled() => return,
            sent = events.send(event) => if sent.is_err() { return },
        }
        if last {
            close.cancel();
            return;
        }
    }
}
