//! The Docker Engine implementation of [`Executor`](crate::Executor).
//!
//! One container per attempt for now: created with the hardened baseline,
//! attached before start so no output is missed, and removed on every path
//! out. Warm reuse comes with the in-container agent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptions, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OnceCell, Semaphore, mpsc, oneshot};
use tracing::{debug, warn};

use crate::{
    ExecError, Executor, ExecutorStatus, Exit, ImageInfo, InputStream, Invocation, RunOutcome,
    RunSpec,
};

const LABEL_MANAGED: &str = "dev.berth.managed";
const LABEL_NODE: &str = "dev.berth.node";
const LABEL_BOOT: &str = "dev.berth.boot";
const LABEL_TASK: &str = "dev.berth.task";
const LABEL_TENANT: &str = "dev.berth.tenant";
const LABEL_FUNCTION: &str = "dev.berth.function";
const LABEL_VERSION: &str = "dev.berth.version";

/// How much stderr is kept in memory for error messages.
const STDERR_TAIL: usize = 2048;
/// Output chunks in flight per stream; with Docker's 32 KiB frames this
/// bounds buffered output to about 0.5 MiB per stream.
const CHANNEL_DEPTH: usize = 16;

#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Stable id of this executor; its containers carry it so a restart
    /// reaps only its own orphans.
    pub node_id: String,
    /// Unique to this process. Orphans are the node's containers from other
    /// boots, so a late reap never touches this process's own containers.
    pub boot_id: String,
    pub max_containers: usize,
    pub pids_limit: i64,
    pub tmp_size_mb: u32,
    pub nofile: i64,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            node_id: "local".into(),
            boot_id: String::new(),
            max_containers: 32,
            pids_limit: 256,
            tmp_size_mb: 64,
            nofile: 1024,
        }
    }
}

pub struct DockerExecutor {
    /// Connected and negotiated lazily, so the server starts (and answers
    /// 503) while the engine is down or its socket is missing, and speaks
    /// the engine's API version (1.41 on Debian's engine) rather than the
    /// client's newest.
    negotiated: OnceCell<Docker>,
    cfg: DockerConfig,
    slots: Arc<Semaphore>,
}

impl DockerExecutor {
    /// Uses the usual `DOCKER_HOST` / local socket defaults; nothing is
    /// contacted until the first call.
    pub fn new(cfg: DockerConfig) -> Self {
        Self {
            negotiated: OnceCell::new(),
            slots: Arc::new(Semaphore::new(cfg.max_containers)),
            cfg,
        }
    }

    async fn client(&self) -> Result<&Docker, ExecError> {
        self.negotiated
            .get_or_try_init(|| async {
                let unavailable = |e: DockerError| ExecError::EngineUnavailable(e.to_string());
                Docker::connect_with_local_defaults()
                    .map_err(unavailable)?
                    .negotiate_version()
                    .await
                    .map_err(unavailable)
            })
            .await
    }

    fn container_body(&self, spec: &RunSpec) -> ContainerCreateBody {
        let labels = HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_NODE.to_owned(), self.cfg.node_id.clone()),
            (LABEL_BOOT.to_owned(), self.cfg.boot_id.clone()),
            (LABEL_TASK.to_owned(), spec.task_id.to_string()),
            (LABEL_TENANT.to_owned(), spec.tenant.clone()),
            (LABEL_FUNCTION.to_owned(), spec.function.clone()),
            (LABEL_VERSION.to_owned(), spec.version.to_string()),
        ]);
        let memory = i64::from(spec.memory_mb) * 1024 * 1024;
        let host_config = HostConfig {
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                format!("rw,nosuid,nodev,size={}m", self.cfg.tmp_size_mb),
            )])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(memory),
            // Swap equal to memory means no swap: the limit is real.
            memory_swap: Some(memory),
            nano_cpus: Some(i64::from(spec.cpu_millis) * 1_000_000),
            pids_limit: Some(self.cfg.pids_limit),
            ulimits: Some(vec![
                ResourcesUlimits {
                    name: Some("nofile".into()),
                    soft: Some(self.cfg.nofile),
                    hard: Some(self.cfg.nofile),
                },
                ResourcesUlimits {
                    name: Some("core".into()),
                    soft: Some(0),
                    hard: Some(0),
                },
            ]),
            // stdout is the response and stderr goes to the task's logs; a
            // log driver would keep a second, unbounded copy on disk.
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: spec.command.clone(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            network_disabled: Some(true),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

/// Errors of reaching the engine at all, as opposed to the engine
/// answering with a failure.
fn is_connect_error(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::IOError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::HyperLegacyError { .. }
            | DockerError::SocketNotFoundError(_)
            | DockerError::RequestTimeoutError
    )
}

fn engine_error(e: DockerError) -> ExecError {
    if is_connect_error(&e) {
        ExecError::EngineUnavailable(e.to_string())
    } else {
        ExecError::Engine(e.to_string())
    }
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

#[async_trait]
impl Executor for DockerExecutor {
    async fn resolve_image(&self, reference: &str) -> Result<ImageInfo, ExecError> {
        let docker = self.client().await?;
        match docker.inspect_image(reference).await {
            Ok(img) => img
                .id
                .map(|id| ImageInfo { id })
                .ok_or_else(|| ExecError::Engine("image inspect returned no id".into())),
            Err(e) if is_not_found(&e) => Err(ExecError::ImageNotFound(reference.to_owned())),
            Err(e) => Err(engine_error(e)),
        }
    }

    async fn run(&self, spec: RunSpec, stdin: InputStream) -> Result<Invocation, ExecError> {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ExecError::NoCapacity(self.cfg.max_containers))?;
        let docker = self.client().await?.clone();
        let began = Instant::now();
        let created = docker
            .create_container(None::<CreateContainerOptions>, self.container_body(&spec))
            .await
            .map_err(|e| {
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
                container.remove().await;
                return Err(e);
            }
        };
        if let Err(e) = docker.start_container(&container.id, None).await {
            container.remove().await;
            return Err(engine_error(e));
        }
        let start_ms = elapsed_ms(began);

        let (out_tx, out_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (err_tx, err_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn(async move {
            let _permit = permit;
            let outcome = drive(&container, spec, attach, stdin, out_tx, err_tx, start_ms).await;
            container.remove().await;
            let _ = done_tx.send(outcome);
        });
        Ok(Invocation {
            stdout: out_rx,
            stderr: err_rx,
            done: done_rx,
        })
    }

    async fn reap_orphans(&self) -> Result<usize, ExecError> {
        let docker = self.client().await?;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_NODE}={}", self.cfg.node_id)],
        )]);
        let found = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(engine_error)?;
        let mut reaped = 0;
        for c in found {
            let this_boot = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_BOOT))
                .is_some_and(|b| *b == self.cfg.boot_id);
            if this_boot {
                continue;
            }
            if let Some(id) = c.id {
                Container {
                    docker: docker.clone(),
                    id,
                }
                .remove()
                .await;
                reaped += 1;
            }
        }
        Ok(reaped)
    }

    async fn status(&self) -> ExecutorStatus {
        let healthy = match self.client().await {
            Ok(d) => d.ping().await.is_ok(),
            Err(_) => false,
        };
        ExecutorStatus {
            id: self.cfg.node_id.clone(),
            capacity: self.cfg.max_containers,
            running: self.cfg.max_containers - self.slots.available_permits(),
            healthy,
        }
    }

    fn has_room(&self) -> bool {
        self.slots.available_permits() > 0
    }
}

struct Container {
    docker: Docker,
    id: String,
}

impl Container {
    async fn kill(&self) {
        let opts = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        if let Err(e) = self.docker.kill_container(&self.id, Some(opts)).await {
            debug!(container = %self.id, error = %e, "kill failed (may have exited)");
        }
    }

    async fn remove(&self) {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(&self.id, Some(opts)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            // The reaper at the next start catches what is left.
            Err(e) => warn!(container = %self.id, error = %e, "could not remove container"),
        }
    }

    async fn exit_code(&self) -> Result<i64, ExecError> {
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        match self
            .docker
            .wait_container(&self.id, Some(opts))
            .next()
            .await
        {
            Some(Ok(resp)) => Ok(resp.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(engine_error(e)),
            None => Err(ExecError::Engine(
                "container wait ended without a status".into(),
            )),
        }
    }

    async fn oom_killed(&self) -> bool {
        match self.docker.inspect_container(&self.id, None).await {
            Ok(info) => info.state.and_then(|s| s.oom_killed).unwrap_or(false),
            Err(_) => false,
        }
    }
}

fn elapsed_ms(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
}

struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
        if self.0.len() > 2 * STDERR_TAIL {
            let cut = self.0.len() - STDERR_TAIL;
            self.0.drain(..cut);
        }
    }

    fn into_string(self) -> String {
        let start = self.0.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&self.0[start..]).into_owned()
    }
}

/// Why forwarding stopped early.
enum Interrupt {
    Deadline,
    Cancel,
    CallerGone,
}

async fn drive(
    container: &Container,
    spec: RunSpec,
    attach: bollard::container::AttachContainerResults,
    mut stdin: InputStream,
    out_tx: mpsc::Sender<Bytes>,
    err_tx: mpsc::Sender<Bytes>,
    start_ms: i64,
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

    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let mut tail = Tail(Vec::new());
    let mut stderr_open = true;
    let interrupted = loop {
        let frame = tokio::select! {
            frame = output.next() => frame,
            () = &mut deadline => break Some(Interrupt::Deadline),
            () = spec.cancel.cancelled() => break Some(Interrupt::Cancel),
            () = out_tx.closed() => break Some(Interrupt::CallerGone),
        };
        let (is_stdout, message) = match frame {
            Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
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
                break None;
            }
            None => break None,
        };
        let tx = if is_stdout { &out_tx } else { &err_tx };
        // A slow reader stalls the function (backpressure), but never past
        // its deadline or a cancel. A stderr reader that went away only
        // stops log forwarding; a stdout reader that went away ends the run.
        tokio::select! {
            sent = tx.send(message) => {
                if sent.is_err() {
                    if is_stdout {
                        break Some(Interrupt::CallerGone);
                    }
                    stderr_open = false;
                }
            }
            () = &mut deadline => break Some(Interrupt::Deadline),
            () = spec.cancel.cancelled() => break Some(Interrupt::Cancel),
        }
    };
    pump.abort();

    let exit = match interrupted {
        Some(why) => {
            container.kill().await;
            match why {
                Interrupt::Deadline => Exit::TimedOut,
                Interrupt::Cancel => Exit::Cancelled,
                Interrupt::CallerGone => Exit::CallerGone,
            }
        }
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
        start_ms,
        run_ms,
        cpu_ms: None,
        peak_memory_bytes: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end() {
        let mut t = Tail(Vec::new());
        for _ in 0..100 {
            t.push(&[b'a'; 100]);
        }
        t.push(b"the end");
        let s = t.into_string();
        assert_eq!(s.len(), STDERR_TAIL);
        assert!(s.ends_with("the end"));
    }
}
