//! A real `berth server` in a throwaway data directory. Dropping it stops
//! the server with SIGTERM and removes every container it left, so an
//! error halfway through a run leaves nothing behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_client::Client;
use berth_client::reqwest::Method;
use berth_contract::{Deployed, FunctionConfig};

/// Longest the server may take to come up or to stop on SIGTERM; past it
/// something is broken, not slow.
const PATIENCE: Duration = Duration::from_secs(60);

/// How to start a server; the default is `berth server`'s own default
/// (SQLite and blobs in the data directory) with a key of its own.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub max_containers: usize,
    /// `--store`: a postgres:// URL.
    pub store: Option<String>,
    /// `--blob-store`: an s3:// URL (credentials from the environment).
    pub blob_store: Option<String>,
    /// `BERTH_ADMIN_KEY`: the one key every replica of a set shares.
    pub admin_key: Option<String>,
    /// Any further flags.
    pub args: Vec<String>,
}

pub struct BerthServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub addr: SocketAddr,
    pub key: String,
    node: String,
    /// The typed client of the v1 contract, as the admin: for everything
    /// but the measured calls, which go through `crate::client`.
    admin: Option<Client>,
}

impl BerthServer {
    pub async fn start(berth: &Path, agent: &Path, max_containers: usize) -> Result<Self> {
        let options = Options {
            max_containers,
            ..Options::default()
        };
        Self::start_with(berth, agent, &options).await
    }

    /// A server as `options` describe it: which store and blob store, a
    /// shared admin key, any further flags.
    pub async fn start_with(berth: &Path, agent: &Path, options: &Options) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("berth-bench.").tempdir()?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut cmd = Command::new(berth);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(["--max-containers", &options.max_containers.to_string()])
            .arg("--agent")
            .arg(agent)
            .args(&options.args)
            // Nothing of the caller's environment chooses the setup: what
            // is not asked for here is the default.
            .env_remove("BERTH_ADMIN_KEY")
            .env_remove("BERTH_STORE")
            .env_remove("BERTH_BLOB_STORE");
        if let Some(store) = &options.store {
            cmd.args(["--store", store]);
        }
        if let Some(blobs) = &options.blob_store {
            cmd.args(["--blob-store", blobs]);
        }
        if let Some(key) = &options.admin_key {
            cmd.env("BERTH_ADMIN_KEY", key);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", berth.display()))?;
        // Owned from here on, so a failed start is cleaned up by Drop.
        let mut server = Self {
            dir,
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            key: String::new(),
            node: String::new(),
            admin: None,
        };
        let begun = Instant::now();
        let endpoint = server.dir.path().join("endpoint");
        let url = loop {
            if let Ok(url) = std::fs::read_to_string(&endpoint) {
                break url.trim().to_owned();
            }
            if let Some(child) = server.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "berth server exited with {status}:\n{}",
                    server.log_tail(40)
                );
            }
            if begun.elapsed() > PATIENCE {
                bail!("berth server did not come up:\n{}", server.log_tail(40));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        server.addr = url
            .strip_prefix("http://")
            .unwrap_or(&url)
            .parse()
            .with_context(|| format!("endpoint {url}"))?;
        let read = |name: &str| {
            std::fs::read_to_string(server.dir.path().join(name))
                .map(|s| s.trim().to_owned())
                .with_context(|| format!("{name} in the data directory"))
        };
        // A key from the environment is not written to the data directory.
        let key = match &options.admin_key {
            Some(key) => key.clone(),
            None => read("admin.key")?,
        };
        let node = read("node-id")?;
        let admin = Client::new(&url, &key)?;
        server.key = key;
        server.node = node;
        loop {
            let healthz = admin.request(Method::GET, &["healthz"])?;
            if admin.send(healthz).await.is_ok() {
                break;
            }
            if begun.elapsed() > PATIENCE {
                bail!("berth server is not healthy:\n{}", server.log_tail(40));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.admin = Some(admin);
        Ok(server)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.path().join("server.log"), lines)
    }

    /// The log's warnings and errors so far.
    pub fn log_problems(&self) -> Vec<String> {
        problems(&self.dir.path().join("server.log"))
    }

    /// The typed client of the v1 contract, as the admin.
    pub fn admin(&self) -> Result<&Client> {
        self.admin.as_ref().context("berth server is not up")
    }

    pub async fn deploy(&self, name: &str, config: &FunctionConfig) -> Result<Deployed> {
        self.admin()?
            .deploy(name, config)
            .await
            .with_context(|| format!("deploying {name}"))
    }

    /// Deletes the function and stops its instances at once, so one
    /// phase's containers are not torn down in the middle of the next
    /// phase's samples (a deleted function's idle instances would
    /// otherwise wait out their idle timeout). The server notices its
    /// instances die and removes them itself.
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.admin()?
            .delete_function(name)
            .await
            .with_context(|| format!("deleting {name}"))?;
        let ids = self.containers_of(name)?;
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .arg("kill")
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("docker kill")?;
        }
        self.wait_no_containers(name, PATIENCE).await
    }

    /// Containers (running or not) this server has for a function.
    pub fn containers_of(&self, function: &str) -> Result<Vec<String>> {
        docker_ps(&[
            &format!("label=dev.berth.node={}", self.node),
            &format!("label=dev.berth.function={function}"),
        ])
    }

    pub async fn wait_no_containers(&self, function: &str, limit: Duration) -> Result<()> {
        let begun = Instant::now();
        while !self.containers_of(function)?.is_empty() {
            if begun.elapsed() > limit {
                bail!("{function} still has containers after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// CPU time the server process has used so far (user + system).
    pub fn cpu_time(&self) -> Option<Duration> {
        process_cpu(self.pid()?)
    }

    /// SIGTERM, a bounded wait, then SIGKILL; then the containers go.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
        // Without a node id the server never got far enough to start any.
        if self.node.is_empty() {
            return;
        }
        remove_containers(&self.node);
    }
}

impl Drop for BerthServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU time a process has used so far (user + system).
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = rustix::param::clock_ticks_per_second();
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// SIGTERM, a bounded wait for the process to finish what it does on
/// SIGTERM, then SIGKILL.
pub fn terminate(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let pid = rustix::process::Pid::from_child(child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let begun = Instant::now();
        while begun.elapsed() < PATIENCE {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "berth-bench: process {} ignored SIGTERM; killing it",
            child.id()
        );
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Every container, running or not, labelled as the given node's.
pub fn remove_containers(node: &str) {
    match docker_ps(&[&format!("label=dev.berth.node={node}")]) {
        Ok(ids) if !ids.is_empty() => {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        Ok(_) => {}
        Err(e) => eprintln!("berth-bench: could not list containers to remove: {e:#}"),
    }
}

/// A log's warnings and errors.
pub fn problems(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(str::to_owned)
        .collect()
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn docker_ps(filters: &[&str]) -> Result<Vec<String>> {
    let mut cmd = Command::new("docker");
    cmd.args(["ps", "-aq", "--no-trunc"]);
    for f in filters {
        cmd.args(["--filter", f]);
    }
    let out = cmd.output().context("running docker ps")?;
    if !out.status.success() {
        bail!("docker ps: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// The path of a file that must exist, for error messages that say which.
pub fn existing(path: &Path, what: &str) -> Result<PathBuf> {
    path.canonicalize()
        .with_context(|| format!("{what} not found at {}", path.display()))
}

/// An admin key for the replicas of a set, which must all share one.
pub fn random_key() -> Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!(
        "berth_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}
