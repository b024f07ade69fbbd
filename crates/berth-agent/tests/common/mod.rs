//! Helpers shared by the integration tests: a real agent process on a
//! temporary socket, and a client that collects a whole call.

#![allow(dead_code)]

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use berth_agent::client::{self, Event};
use berth_agent::protocol::{ExitReport, HttpHead, RequestHead};
use bytes::Bytes;
use futures::stream;

pub const AGENT: &str = env!("CARGO_BIN_EXE_berth-agent");

/// A running agent, killed when dropped.
pub struct Agent {
    pub child: Child,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts an exec-mode agent around `program`.
    pub async fn exec(program: &[&str]) -> Agent {
        Agent::start(&["--mode", "exec"], program, &[]).await
    }

    pub async fn start(options: &[&str], program: &[&str], env: &[(&str, &str)]) -> Agent {
        let agent = Agent::spawn(options, program, env);
        client::wait_ready(&agent.socket, Duration::from_secs(20))
            .await
            .expect("the agent did not become ready");
        agent
    }

    /// Starts an agent without waiting for its socket.
    pub fn spawn(options: &[&str], program: &[&str], env: &[(&str, &str)]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let child = Command::new(AGENT)
            .arg("--socket")
            .arg(&socket)
            .args(["--grace-ms", "500"])
            .args(options)
            .arg("--")
            .args(program)
            .envs(env.iter().copied())
            .spawn()
            .unwrap();
        Agent {
            child,
            socket,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the agent to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGTERM lets the agent stop its program too; a SIGKILLed agent
        // would leave an http-mode server running.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Everything a call produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub http: Option<HttpHead>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: ExitReport,
}

impl Outcome {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.http
            .as_ref()?
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn head(timeout_ms: u64) -> RequestHead {
    RequestHead {
        method: "POST".into(),
        path: "/".into(),
        timeout_ms,
        ..RequestHead::default()
    }
}

pub fn input(
    data: &[u8],
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static {
    let chunks: Vec<io::Result<Bytes>> = data
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(chunks)
}

/// Runs one call to its end and collects it.
pub async fn run(socket: &Path, head: RequestHead, data: &[u8]) -> Outcome {
    let mut call = client::call(socket, head, input(data)).await.unwrap();
    let mut outcome = Outcome::default();
    while let Some(event) = call.recv().await {
        match event.unwrap() {
            Event::Http(http) => outcome.http = Some(http),
            Event::Stdout(data) => outcome.stdout.extend_from_slice(&data),
            Event::Stderr(data) => outcome.stderr.extend_from_slice(&data),
            Event::Exit(exit) => {
                outcome.exit = exit;
                return outcome;
            }
        }
    }
    panic!("the call ended without an exit report");
}

/// Whether `pid` is gone (or a zombie, which runs nothing), polling for up
/// to `timeout` since reaping an orphan may take a moment.
pub async fn process_gone(pid: u32, timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) => {
                let state = stat[stat.rfind(')').unwrap() + 1..]
                    .trim_start()
                    .chars()
                    .next();
                if state == Some('Z') {
                    return true;
                }
            }
        }
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deterministic pseudo-random bytes, generated chunk by chunk so large
/// inputs never sit in memory whole.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed | 1)
    }

    pub fn chunk(&mut self, len: usize) -> Bytes {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            // xorshift64
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            out.extend_from_slice(&self.0.to_le_bytes());
        }
        out.truncate(len);
        Bytes::from(out)
    }
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The peak resident set size of a process, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line["VmHWM:".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

pub trait RequestHeadExt {
    fn with_env(self, name: &str, value: &str) -> Self;
}

impl RequestHeadExt for RequestHead {
    fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }
}
