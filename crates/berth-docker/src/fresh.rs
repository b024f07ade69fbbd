//! Fresh mode: one container per attempt. It is created with the hardened
//! baseline, attached before it starts so no output is missed, driven
//! (stdin pumped, output forwarded, the timeout, a cancel and a vanished
//! caller enforced by signals) and removed on every path out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{AttachContainerOptionsBuilder, CreateContainerOptions};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::container::{Container, Tail, container_user, elapsed_ms, engine_error, is_not_found};
use crate::engine::{Engine, ImageConfig, LABEL_TASK, MakeRoom};
use berth_executor::{ExecError, Exit, InputStream, Invocation, RunOutcome, RunSpec};

/// Output chunks in flight per stream; with Docker's 32 KiB frames this
/// bounds buffered output to about 0.5 MiB per stream.
const CHANNEL_DEPTH: usize = 16;

/// Runs one attempt in a container of its own. `room` frees a slot when
/// the node is full.
pub(crate) async fn run(
    engine: &Arc<Engine>,
    room: &dyn MakeRoom,
    spec: RunSpec,
    stdin: InputStream,
) -> Result<Invocation, ExecError> {
    let permit = engine.slot(room, spec.cpu_millis, spec.memory_mb).await?;
    let docker = engine.client().await?.clone();
    let mut began = Instant::now();
    let mut pull_ms = None;
    let image = match engine.image_config(&spec.image).await {
        // Never pulled to this node: fetch it if it is ours to fetch.
        Err(ExecError::ImageNotFound(_)) => {
            pull_ms = engine.ensure_image(&spec.image).await?.1;
            began = Instant::now();
            engine.image_config(&spec.image).await?
        }
        other => other?,
    };
    let body = body(engine, &spec, &image);
    let mut created = docker
        .create_container(None::<CreateContainerOptions>, body.clone())
        .await;
    if let Err(e) = &created
        && is_not_found(e)
    {
        // Removed from the engine behind our back since it was
        // inspected: fetch it again.
        pull_ms = engine.ensure_image(&spec.image).await?.1;
        began = Instant::now();
        created = docker
            .create_container(None::<CreateContainerOptions>, body)
            .await;
    }
    let created = created.map_err(|e| {
        if is_not_found(&e) {
            ExecError::ImageNotFound(spec.image.clone())
        } else {
            engine_error(e)
        }
    })?;
    let container = Container {
        docker: docker.clone(),
        id: created.id,
    };
    let attach = docker
        .attach_container(
            &container.id,
            Some(
                AttachContainerOptionsBuilder::default()
                    .stdin(true)
                    .stdout(true)
                    .stderr(true)
                    .stream(true)
                    .logs(false)
                    .build(),
            ),
        )
        .await
        .map_err(engine_error);
    let attach = match attach {
        Ok(a) => a,
        Err(e) => {
            engine.remove(&container).await;
            return Err(e);
        }
    };
    if let Err(e) = docker.start_container(&container.id, None).await {
        engine.remove(&container).await;
        return Err(engine_error(e));
    }
    let start_ms = elapsed_ms(began);

    let (out_tx, out_rx) = mpsc::channel(CHANNEL_DEPTH);
    let (err_tx, err_rx) = mpsc::channel(CHANNEL_DEPTH);
    let (done_tx, done_rx) = oneshot::channel();
    let grace = engine.cfg.kill_grace;
    let engine = Arc::clone(engine);
    tokio::spawn(async move {
        let _permit = permit;
        let outcome = drive(&container, spec, attach, stdin, out_tx, err_tx, grace)
            .await
            .map(|mut o| {
                o.pull_ms = pull_ms;
                o.start_ms = start_ms;
                o
            });
        engine.remove(&container).await;
        let _ = done_tx.send(outcome);
    });
    Ok(Invocation {
        head: None,
        stdout: out_rx,
        stderr: err_rx,
        done: done_rx,
    })
}

fn body(engine: &Engine, spec: &RunSpec, image: &ImageConfig) -> ContainerCreateBody {
    let mut labels = engine.labels(spec);
    labels.insert(LABEL_TASK.to_owned(), spec.task_id.to_string());
    let mut env: Vec<String> = spec
        .env
        .iter()
        .chain(&spec.request_env)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.push(engine.node_env());
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        user: Some(container_user(spec.run_as_root, image.user.as_deref())),
        entrypoint: spec.command.clone(),
        env: Some(env),
        labels: Some(labels),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        network_disabled: Some(true),
        host_config: Some(engine.host_config(spec)),
        ..Default::default()
    }
}

/// Why forwarding stopped early.
#[derive(Clone, Copy)]
enum Interrupt {
    Deadline,
    Cancel,
    CallerGone,
}

/// What the forwarding loop does next.
enum Step {
    Frame(Option<Result<LogOutput, DockerError>>),
    /// Tell the function to stop (SIGTERM) and start its grace period.
    Stop(Interrupt),
    /// The grace period is over: SIGKILL.
    GraceOver,
}

async fn drive(
    container: &Container,
    spec: RunSpec,
    attach: bollard::container::AttachContainerResults,
    mut stdin: InputStream,
    out_tx: mpsc::Sender<Bytes>,
    err_tx: mpsc::Sender<Bytes>,
    grace: Duration,
) -> Result<RunOutcome, ExecError> {
    let running = Instant::now();
    let mut input = attach.input;
    let mut output = attach.output;
    let pump = tokio::spawn(async move {
        while let Some(chunk) = stdin.next().await {
            let Ok(chunk) = chunk else { break };
            // The function may exit without reading all its input.
            if input.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // Half-closing the attach connection is what gives the function EOF.
        let _ = input.shutdown().await;
    });

    // The run's deadline until it is interrupted, then the end of the
    // grace period between SIGTERM and SIGKILL.
    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let mut tail = Tail(Vec::new());
    let mut stderr_open = true;
    let mut stopping: Option<Interrupt> = None;
    let mut next: Option<Step> = None;
    let interrupted = loop {
        let step = match next.take() {
            Some(step) => step,
            None => tokio::select! {
                frame = output.next() => Step::Frame(frame),
                () = &mut deadline => match stopping {
                    Some(_) => Step::GraceOver,
                    None => Step::Stop(Interrupt::Deadline),
                },
                () = spec.cancel.cancelled(), if stopping.is_none() => Step::Stop(Interrupt::Cancel),
                () = out_tx.closed(), if stopping.is_none() => Step::Stop(Interrupt::CallerGone),
            },
        };
        let frame = match step {
            Step::Stop(why) => {
                // A function that handles SIGTERM gets the grace period to
                // finish up; its stderr is still collected meanwhile.
                container.signal("SIGTERM").await;
                stopping = Some(why);
                deadline.as_mut().reset(tokio::time::Instant::now() + grace);
                continue;
            }
            Step::GraceOver => {
                container.kill().await;
                break stopping;
            }
            Step::Frame(frame) => frame,
        };
        let (is_stdout, message) = match frame {
            Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                // Once stopping, the output is no answer any more.
                if stopping.is_some() {
                    continue;
                }
                (true, message)
            }
            Some(Ok(LogOutput::StdErr { message })) => {
                tail.push(&message);
                if !stderr_open {
                    continue;
                }
                (false, message)
            }
            Some(Ok(LogOutput::StdIn { .. })) => continue,
            Some(Err(e)) => {
                warn!(container = %container.id, error = %e, "attach stream failed");
                break stopping;
            }
            // The function has exited, on its own or after SIGTERM.
            None => break stopping,
        };
        let tx = if is_stdout { &out_tx } else { &err_tx };
        // A slow reader stalls the function (backpressure), but never past
        // its deadline, a cancel or the grace period. A stderr reader that
        // went away only stops log forwarding; a stdout reader that went
        // away ends the run.
        next = tokio::select! {
            sent = tx.send(message) => match sent {
                Ok(()) => None,
                Err(_) if is_stdout => Some(Step::Stop(Interrupt::CallerGone)),
                Err(_) => {
                    stderr_open = false;
                    None
                }
            },
            () = &mut deadline => Some(match stopping {
                Some(_) => Step::GraceOver,
                None => Step::Stop(Interrupt::Deadline),
            }),
            () = spec.cancel.cancelled(), if stopping.is_none() => Some(Step::Stop(Interrupt::Cancel)),
        };
    };
    pump.abort();

    let exit = match interrupted {
        Some(Interrupt::Deadline) => Exit::TimedOut,
        Some(Interrupt::Cancel) => Exit::Cancelled,
        Some(Interrupt::CallerGone) => Exit::CallerGone,
        None => {
            // Output has ended, so the process is exiting; the deadline
            // still bounds the wait in case the engine misbehaves.
            let code = tokio::select! {
                code = container.exit_code() => Some(code?),
                () = &mut deadline => None,
            };
            match code {
                None => {
                    container.kill().await;
                    Exit::TimedOut
                }
                // A zero exit is success even if some child hit the limit
                // and the function coped; otherwise the OOM kill is the
                // real cause, whatever code the shell made of it.
                Some(code) if code != 0 && container.oom_killed().await => {
                    debug!(code, "function was OOM-killed");
                    Exit::OomKilled
                }
                Some(code) => Exit::Code(code),
            }
        }
    };
    let run_ms = elapsed_ms(running);
    Ok(RunOutcome {
        exit,
        stderr_tail: tail.into_string(),
        queued_ms: 0,
        pull_ms: None,
        start_ms: 0,
        run_ms,
        cpu_ms: None,
        peak_memory_bytes: None,
    })
}
