//! exec mode: the program runs once per request, stdin to stdout.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use rustix::process::Signal;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::UnixStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::process::{Children, Exit, oom_kills};
use super::{
    AbortOnDrop, Config, Input, Output, RunError, Sink, bind, open_request, pump_input, send_exit,
};
use crate::protocol::{CHUNK, ExitReport, Frame, FrameKind, RequestHead};

/// Output frames buffered between the child's pipes and the connection.
const OUTPUT_BUFFER: usize = 16;

const SIGKILL: i32 = 9;

pub(super) async fn run(
    config: &Config,
    children: Arc<Children>,
    shutdown: CancellationToken,
) -> Result<i32, RunError> {
    let listener = bind(&config.socket)?;
    let config = Arc::new(config.clone());
    let slots = Arc::new(Semaphore::new(super::MAX_CONCURRENT_REQUESTS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Typically out of file descriptors: let requests finish.
                    eprintln!("berth-agent: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let config = Arc::clone(&config);
        let children = Arc::clone(&children);
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            handle(stream, &config, &children, &stopping).await;
            drop(permit);
        });
    }
    drop(listener);
    super::remove_socket(&config.socket);
    stop_all(&children, config.grace).await;
    super::drain(&slots, config.grace).await;
    Ok(0)
}

/// Stops every running request on shutdown: SIGTERM, then SIGKILL after
/// the grace period.
async fn stop_all(children: &Children, grace: Duration) {
    children.signal_all(Signal::TERM);
    let deadline = tokio::time::Instant::now() + grace;
    while !children.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    children.signal_all(Signal::KILL);
}

async fn handle(
    stream: UnixStream,
    config: &Config,
    children: &Arc<Children>,
    stopping: &CancellationToken,
) {
    let Some((head, input, mut output)) = open_request(stream).await else {
        return;
    };
    if let Some(mut report) = run_request(head, input, &mut output, config, children).await {
        // Stopped along with the instance (the engine shutting down, an
        // operator stopping the container), the request did not fail on
        // its own: saying so lets the host run it again elsewhere.
        if stopping.is_cancelled() && report.exit_code != Some(0) {
            report = ExitReport::failed("the instance was stopped during the request");
        }
        send_exit(&mut output, report).await;
    }
}

/// Runs one request to its end. Returns the report to send, or `None` when
/// the client is gone.
async fn run_request(
    head: RequestHead,
    input: Input,
    output: &mut Output,
    config: &Config,
    children: &Arc<Children>,
) -> Option<ExitReport> {
    if let Some((name, _)) = head
        .env
        .iter()
        .find(|(name, value)| name.is_empty() || name.contains(['=', '\0']) || value.contains('\0'))
    {
        return Some(ExitReport::failed(format!(
            "invalid environment variable {name:?}"
        )));
    }
    let mut command = Command::new(&config.program[0]);
    command
        .args(&config.program[1..])
        .envs(head.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let oom_before = oom_kills();
    let spawned = match children.spawn(command) {
        Ok(spawned) => spawned,
        Err(err) => {
            return Some(ExitReport::failed(format!(
                "cannot start {}: {err}",
                config.program[0].to_string_lossy()
            )));
        }
    };
    let group = spawned.group;
    let gone = CancellationToken::new();
    let _input = AbortOnDrop(tokio::spawn(pump_input(
        input,
        Sink::Pipe(spawned.stdin),
        gone.clone(),
    )));

    // Both pipes are drained at once so the child never blocks on one while
    // we wait on the other.
    let stop_reading = CancellationToken::new();
    let (frames, mut outgoing) = mpsc::channel(OUTPUT_BUFFER);
    let mut readers = Vec::new();
    for (pipe, kind) in [
        (
            spawned
                .stdout
                .map(|p| Box::new(p) as Box<dyn AsyncRead + Send + Unpin>),
            FrameKind::Stdout,
        ),
        (
            spawned
                .stderr
                .map(|p| Box::new(p) as Box<dyn AsyncRead + Send + Unpin>),
            FrameKind::Stderr,
        ),
    ] {
        if let Some(pipe) = pipe {
            readers.push(AbortOnDrop(tokio::spawn(read_pipe(
                pipe,
                kind,
                frames.clone(),
                stop_reading.clone(),
            ))));
        }
    }
    drop(frames);

    let exited = CancellationToken::new();
    let timed_out = Arc::new(AtomicBool::new(false));
    let _killer = AbortOnDrop(tokio::spawn({
        let (group, gone, exited, timed_out) = (
            group.clone(),
            gone.clone(),
            exited.clone(),
            Arc::clone(&timed_out),
        );
        let (timeout, grace) = (Duration::from_millis(head.timeout_ms), config.grace);
        async move {
            tokio::select! {
                _ = exited.cancelled() => return,
                _ = gone.cancelled() => {}
                _ = tokio::time::sleep(timeout) => timed_out.store(true, Ordering::SeqCst),
            }
            group.signal(Signal::TERM);
            tokio::select! {
                _ = exited.cancelled() => {}
                _ = tokio::time::sleep(grace) => group.signal(Signal::KILL),
            }
        }
    }));

    let mut client_here = true;
    let forward = async {
        while let Some(frame) = outgoing.recv().await {
            if client_here && output.send(frame).await.is_err() {
                client_here = false;
                gone.cancel();
            }
            // Without a client the output is drained and dropped, so the
            // child is not blocked while it is being stopped.
        }
    };
    let wait = async {
        let exit = spawned.exit.await;
        exited.cancel();
        // The rest of the group was killed when the leader exited, so the
        // pipes close at once unless a process escaped the group (setsid)
        // and holds them: reading stops after the grace period.
        let stop_reading = stop_reading.clone();
        let grace = config.grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            stop_reading.cancel();
        });
        exit
    };
    let ((), exit) = tokio::join!(forward, wait);
    drop(readers);
    if !client_here || gone.is_cancelled() {
        return None;
    }
    Some(report(exit, timed_out.load(Ordering::SeqCst), oom_before))
}

fn report(
    exit: Result<std::io::Result<Exit>, tokio::sync::oneshot::error::RecvError>,
    timed_out: bool,
    oom_before: Option<u64>,
) -> ExitReport {
    let exit = match exit {
        Ok(Ok(exit)) => exit,
        Ok(Err(err)) => {
            return ExitReport::failed(format!("waiting for the program failed: {err}"));
        }
        Err(_) => return ExitReport::failed("waiting for the program failed"),
    };
    let signal = exit.status.signal();
    // The cgroup's counter covers every process in the container, so with
    // concurrent requests an OOM kill is pinned on whichever failed request
    // looks first: a best-effort attribution.
    // A shell or other parent that survives its child's OOM kill exits
    // non-zero instead of dying of SIGKILL itself; both count.
    let failed = signal == Some(SIGKILL) || exit.status.code().is_some_and(|c| c != 0);
    let oom_killed = failed
        && !timed_out
        && matches!((oom_before, oom_kills()), (Some(before), Some(after)) if after > before);
    ExitReport {
        exit_code: exit.status.code(),
        signal,
        oom_killed,
        timed_out,
        cpu_ms: Some(u64::try_from(exit.cpu.as_millis()).unwrap_or(u64::MAX)),
        peak_memory_bytes: Some(exit.peak_memory_bytes),
        error: None,
    }
}

/// Reads a pipe into frames of at most [`CHUNK`] bytes until EOF, or until
/// `stop` while the pipe is idle.
async fn read_pipe(
    mut pipe: Box<dyn AsyncRead + Send + Unpin>,
    kind: FrameKind,
    frames: mpsc::Sender<Frame>,
    stop: CancellationToken,
) {
    let mut buf = vec![0; CHUNK];
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            read = pipe.read(&mut buf) => read,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let frame = Frame::new(kind, Bytes::copy_from_slice(&buf[..n]));
                if frames.send(frame).await.is_err() {
                    return;
                }
            }
        }
    }
}
