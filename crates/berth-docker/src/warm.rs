//! Warm instances: containers whose entrypoint is the agent, serving many
//! requests each over a unix socket in a bind-mounted directory, so a
//! request costs a fork/exec (exec mode) or a proxied HTTP request (http
//! mode) instead of a container start. The container keeps no network.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_agent::client::{self, AgentError, Event};
use berth_agent::protocol::{ExitReport, RequestHead};
use berth_core::Mode;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptions, WaitContainerOptionsBuilder};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::container::{Container, Tail, container_user, elapsed_ms, engine_error, is_not_found};
use crate::engine::{Engine, ImageConfig, LABEL_INSTANCE, MakeRoom};
use crate::pool::{Instance, Launcher, Pools};
use berth_executor::{ExecError, Exit, InputStream, Invocation, ResponseHead, RunOutcome, RunSpec};

/// Where the agent and its socket directory appear inside the container.
const AGENT_PATH: &str = "/berth/agent";
const RUN_DIR: &str = "/berth/run";
const SOCKET_NAME: &str = "agent.sock";
/// The port an http-mode program is told to listen on (`PORT`).
const HTTP_PORT: u16 = 8080;
const CHANNEL_DEPTH: usize = 16;
/// Beyond the agent's own timeout handling (SIGTERM, grace, SIGKILL): if
/// the agent does not answer by then, the host gives up on it.
const BACKSTOP: Duration = Duration::from_secs(5);

pub(crate) struct WarmInstance {
    id: String,
    container: Container,
    socket: PathBuf,
    dir: PathBuf,
    /// Fired by the watcher when the container exits.
    exited: CancellationToken,
    _slot: crate::engine::Slot,
}

impl Instance for WarmInstance {
    fn id(&self) -> &str {
        &self.id
    }
}

pub(crate) struct WarmLauncher {
    engine: Arc<Engine>,
    /// Instances whose container exited, reported to the pools.
    exited_tx: mpsc::Sender<String>,
}

impl WarmLauncher {
    pub fn new(engine: Arc<Engine>, exited_tx: mpsc::Sender<String>) -> Self {
        Self { engine, exited_tx }
    }

    /// What the agent runs: the function's command, else the image's
    /// ENTRYPOINT followed by its CMD, as `docker run` would.
    fn program(spec: &RunSpec, image: &ImageConfig) -> Result<Vec<String>, ExecError> {
        if let Some(cmd) = &spec.command {
            return Ok(cmd.clone());
        }
        if image.program.is_empty() {
            return Err(ExecError::Instance(
                "the image has no ENTRYPOINT or CMD and the function sets no command".into(),
            ));
        }
        Ok(image.program.clone())
    }

    fn body(
        &self,
        spec: &RunSpec,
        id: &str,
        dir: &Path,
        image: &ImageConfig,
        program: Vec<String>,
    ) -> ContainerCreateBody {
        let agent = self
            .engine
            .cfg
            .agent
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let grace_ms = self.engine.cfg.kill_grace.as_millis().to_string();
        let mut entrypoint: Vec<String> = [
            AGENT_PATH,
            "--socket",
            &format!("{RUN_DIR}/{SOCKET_NAME}"),
            "--mode",
            spec.mode.as_str(),
            "--grace-ms",
            &grace_ms,
            "--ready-timeout-ms",
            &self.engine.cfg.ready_timeout.as_millis().to_string(),
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(self.engine.node_env());
        if spec.mode == Mode::Http {
            entrypoint.extend(["--port".to_owned(), HTTP_PORT.to_string()]);
            env.push(format!("PORT={HTTP_PORT}"));
        }
        entrypoint.push("--".to_owned());
        entrypoint.extend(program);
        let mut labels = self.engine.labels(spec);
        labels.insert(LABEL_INSTANCE.to_owned(), id.to_owned());
        let mut host = self.engine.host_config(spec);
        host.binds = Some(vec![
            format!("{agent}:{AGENT_PATH}:ro"),
            format!("{}:{RUN_DIR}:rw", dir.display()),
        ]);
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            // The agent runs as the function's user: it needs no privilege
            // of its own (its socket directory is open to every uid).
            user: Some(container_user(spec.run_as_root, image.user.as_deref())),
            entrypoint: Some(entrypoint),
            // An explicit empty CMD: the image's CMD is already part of
            // the program the agent runs.
            cmd: Some(vec![]),
            env: Some(env),
            labels: Some(labels),
            tty: Some(false),
            network_disabled: Some(true),
            host_config: Some(host),
            ..Default::default()
        }
    }

    /// Takes an instance out of service and removes its container.
    pub async fn remove(&self, instance: Arc<WarmInstance>) {
        instance.exited.cancel();
        self.engine.remove(&instance.container).await;
        if let Err(e) = tokio::fs::remove_dir_all(&instance.dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(dir = %instance.dir.display(), error = %e, "could not remove instance directory");
        }
    }

    /// Socket directories of a previous life; their containers are reaped
    /// by label.
    pub async fn clear_stale_dirs(&self) {
        let dir = &self.engine.cfg.run_dir;
        let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
            return;
        };
        let boot = &self.engine.cfg.boot_id;
        while let Ok(Some(e)) = entries.next_entry().await {
            let name = e.file_name();
            if !name.to_string_lossy().starts_with(boot.as_str()) {
                let _ = tokio::fs::remove_dir_all(e.path()).await;
            }
        }
    }

    /// Reports the container's exit to the pools, once.
    fn watch(&self, id: String, container: Container, exited: CancellationToken) {
        let tx = self.exited_tx.clone();
        tokio::spawn(async move {
            let opts = WaitContainerOptionsBuilder::default()
                .condition("not-running")
                .build();
            let mut wait = container.docker.wait_container(&container.id, Some(opts));
            tokio::select! {
                _ = wait.next() => {}
                () = exited.cancelled() => return,
            }
            exited.cancel();
            let _ = tx.send(id).await;
        });
    }
}

/// Makes room on a full node by removing an idle instance that the pools
/// give up (`take`, which picks the longest-idle one they can spare).
pub(crate) struct EvictIdle<'a> {
    launcher: &'a WarmLauncher,
    take: &'a (dyn Fn() -> Option<Arc<WarmInstance>> + Send + Sync),
}

impl<'a> EvictIdle<'a> {
    pub fn new(
        launcher: &'a WarmLauncher,
        take: &'a (dyn Fn() -> Option<Arc<WarmInstance>> + Send + Sync),
    ) -> Self {
        Self { launcher, take }
    }
}

#[async_trait]
impl MakeRoom for EvictIdle<'_> {
    async fn make_room(&self) -> bool {
        match (self.take)() {
            Some(victim) => {
                self.launcher.remove(victim).await;
                true
            }
            None => false,
        }
    }
}

#[async_trait]
impl Launcher for WarmLauncher {
    type Instance = WarmInstance;

    async fn launch(
        &self,
        spec: &RunSpec,
        evict: &(dyn Fn() -> Option<Arc<WarmInstance>> + Send + Sync),
    ) -> Result<Arc<WarmInstance>, ExecError> {
        if self.engine.cfg.agent.is_none() {
            return Err(ExecError::Instance(
                "warm modes need the agent binary (berth server --agent); use mode \"fresh\""
                    .into(),
            ));
        }
        let began = Instant::now();
        // Cheap when present; a pull when the image was removed from the
        // engine behind our back.
        self.engine.ensure_image(&spec.image).await?;
        let image = self.engine.image_config(&spec.image).await?;
        let program = Self::program(spec, &image)?;
        let slot = self
            .engine
            .slot(
                &EvictIdle::new(self, evict),
                spec.cpu_millis,
                spec.memory_mb,
            )
            .await?;
        let docker = self.engine.client().await?.clone();
        // The boot id prefix tells this life's directories from stale ones.
        let id = format!(
            "{}-{:012x}",
            self.engine.cfg.boot_id,
            rand::random::<u64>() >> 16
        );
        let dir = self.engine.cfg.run_dir.join(&id);
        create_socket_dir(&dir).await?;
        let body = self.body(spec, &id, &dir, &image, program);
        let created = match docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&dir).await;
                return Err(if is_not_found(&e) {
                    ExecError::ImageNotFound(spec.image.clone())
                } else {
                    engine_error(e)
                });
            }
        };
        let exited = CancellationToken::new();
        let instance = Arc::new(WarmInstance {
            socket: dir.join(SOCKET_NAME),
            dir,
            container: Container {
                docker: docker.clone(),
                id: created.id,
            },
            id,
            exited: exited.clone(),
            _slot: slot,
        });
        if let Err(e) = docker.start_container(&instance.container.id, None).await {
            self.remove(instance).await;
            return Err(engine_error(e));
        }
        self.watch(
            instance.id.clone(),
            Container {
                docker,
                id: instance.container.id.clone(),
            },
            exited.clone(),
        );
        let ready = tokio::select! {
            r = client::wait_ready(&instance.socket, self.engine.cfg.ready_timeout) => r
                .map_err(|e| ExecError::Instance(format!("the instance did not become ready: {e}"))),
            () = exited.cancelled() => Err(ExecError::Instance(
                "the instance exited before it was ready (does the program start?)".into(),
            )),
        };
        if let Err(e) = ready {
            self.remove(instance).await;
            return Err(e);
        }
        let start_ms = elapsed_ms(began);
        debug!(instance = %instance.id, function = %spec.function, start_ms, "instance ready");
        Ok(instance)
    }

    async fn destroy(&self, instance: Arc<WarmInstance>) {
        self.remove(instance).await;
    }
}

async fn create_socket_dir(dir: &Path) -> Result<(), ExecError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| ExecError::Engine(format!("instance directory: {e}"));
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    // The function may run as any user; only its own container sees this
    // directory.
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
        .await
        .map_err(io)
}

/// Sends one request to a warm instance of the spec's function version.
pub(crate) async fn run(
    pools: &Arc<Pools<WarmLauncher>>,
    spec: RunSpec,
    stdin: InputStream,
) -> Result<Invocation, ExecError> {
    let lease = pools.acquire(&spec).await?;
    // The pool knows whether the wait was for a busy slot or for an
    // instance started for this request.
    let queued_ms = millis(lease.wait.queued);
    let start_ms = millis(lease.wait.start);
    // The API keeps the entity headers apart (CGI has its own variables for
    // them); an http-mode program gets them back as headers. With the
    // length known the body goes out with Content-Length, not chunked: a
    // program that does not set TCP_NODELAY would otherwise answer a
    // chunked request only after a 40 ms delayed ACK.
    let mut headers = spec.request.headers.clone();
    if let Some(ct) = &spec.request.content_type {
        headers.push(("content-type".into(), ct.clone()));
    }
    if let Some(len) = spec.request.content_length {
        headers.push(("content-length".into(), len.to_string()));
    }
    let head = RequestHead {
        env: spec.request_env.clone(),
        method: spec.request.method.clone(),
        path: if spec.request.path.is_empty() {
            "/".into()
        } else {
            spec.request.path.clone()
        },
        query: spec.request.query.clone(),
        headers,
        timeout_ms: u64::try_from(spec.timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let call = match client::call(&lease.instance.socket, head, stdin).await {
        Ok(c) => c,
        Err(e) => {
            lease.lost();
            return Err(ExecError::Instance(e.to_string()));
        }
    };
    let (out_tx, out_rx) = mpsc::channel(CHANNEL_DEPTH);
    let (err_tx, err_rx) = mpsc::channel(CHANNEL_DEPTH);
    let (head_tx, head_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let http = spec.mode == Mode::Http;
    tokio::spawn(async move {
        let running = Instant::now();
        let (exit, report, tail) = drive(call, &spec, out_tx, err_tx, head_tx).await;
        if matches!(exit, Exit::InstanceLost(_)) {
            lease.lost();
        } else {
            drop(lease);
        }
        let report = report.unwrap_or_default();
        let _ = done_tx.send(Ok(RunOutcome {
            exit,
            stderr_tail: tail.into_string(),
            queued_ms,
            pull_ms: None,
            start_ms,
            run_ms: elapsed_ms(running),
            cpu_ms: report.cpu_ms.and_then(|v| i64::try_from(v).ok()),
            peak_memory_bytes: report.peak_memory_bytes.and_then(|v| i64::try_from(v).ok()),
        }));
    });
    Ok(Invocation {
        head: http.then_some(head_rx),
        stdout: out_rx,
        stderr: err_rx,
        done: done_rx,
    })
}

enum Step {
    Go,
    Stop(Exit),
}

/// Forwards one request's events until its exit report, honouring the
/// deadline, a cancel and a caller that went away; dropping the call
/// closes the connection, which makes the agent kill the request.
async fn drive(
    mut call: client::Call,
    spec: &RunSpec,
    out_tx: mpsc::Sender<Bytes>,
    err_tx: mpsc::Sender<Bytes>,
    head_tx: oneshot::Sender<ResponseHead>,
) -> (Exit, Option<ExitReport>, Tail) {
    let backstop = tokio::time::sleep(spec.timeout + BACKSTOP);
    tokio::pin!(backstop);
    let mut tail = Tail(Vec::new());
    let mut head_tx = Some(head_tx);
    let mut stderr_open = true;
    loop {
        let event = tokio::select! {
            ev = call.recv() => ev,
            () = &mut backstop => return (Exit::TimedOut, None, tail),
            () = spec.cancel.cancelled() => return (Exit::Cancelled, None, tail),
            () = out_tx.closed() => return (Exit::CallerGone, None, tail),
        };
        let (tx, chunk, is_stdout) = match event {
            Some(Err(AgentError::Input(_))) => return (Exit::CallerGone, None, tail),
            Some(Err(e)) => return (Exit::InstanceLost(e.to_string()), None, tail),
            Some(Ok(Event::Http(h))) => {
                if let Some(tx) = head_tx.take() {
                    let _ = tx.send(ResponseHead {
                        status: h.status,
                        headers: h.headers,
                    });
                }
                continue;
            }
            Some(Ok(Event::Stdout(b))) => (&out_tx, b, true),
            Some(Ok(Event::Stderr(b))) => {
                tail.push(&b);
                if !stderr_open {
                    continue;
                }
                (&err_tx, b, false)
            }
            Some(Ok(Event::Exit(report))) => {
                let exit = exit_of(&report);
                return (exit, Some(report), tail);
            }
            None => {
                return (
                    Exit::InstanceLost("the instance closed the connection mid-request".into()),
                    None,
                    tail,
                );
            }
        };
        let step = tokio::select! {
            sent = tx.send(chunk) => match sent {
                Ok(()) => Step::Go,
                Err(_) if is_stdout => Step::Stop(Exit::CallerGone),
                Err(_) => {
                    stderr_open = false;
                    Step::Go
                }
            },
            () = &mut backstop => Step::Stop(Exit::TimedOut),
            () = spec.cancel.cancelled() => Step::Stop(Exit::Cancelled),
        };
        if let Step::Stop(exit) = step {
            return (exit, None, tail);
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn exit_of(r: &ExitReport) -> Exit {
    if r.timed_out {
        Exit::TimedOut
    } else if r.oom_killed {
        Exit::OomKilled
    } else if let Some(code) = r.exit_code {
        Exit::Code(i64::from(code))
    } else if let Some(sig) = r.signal {
        // The shell's convention, so a kill reads the same in every mode.
        Exit::Code(128 + i64::from(sig))
    } else {
        Exit::InstanceLost(
            r.error
                .clone()
                .unwrap_or_else(|| "the instance reported no exit status".into()),
        )
    }
}
