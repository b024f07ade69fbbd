//! A real `berth executor` daemon in a throwaway data directory, joined to
//! a replica. Dropping it stops the daemon and removes every container it
//! left, as dropping a [`BerthServer`] does.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::server::{self, BerthServer};

/// Longest the daemon may take to join and to be seen active; past it
/// something is broken, not slow.
const PATIENCE: Duration = Duration::from_secs(60);
/// What a stopping node gives its running calls; the benchmark's have all
/// been answered by then.
const GRACE_SECS: &str = "2";
/// Longer than one heartbeat interval: every replica refreshes its view of
/// the fleet once per heartbeat, and until then may not place on the node.
const REFRESH: Duration = Duration::from_secs(3);

pub struct ExecutorNode {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Its id in the set, and in the `dev.berth.node` label of its
    /// containers.
    pub id: String,
    /// Where replicas reach its data plane.
    pub url: String,
}

impl ExecutorNode {
    /// A node joined to `replica` with a join token made for it there,
    /// listening on a port of loopback.
    pub async fn join(
        berth: &Path,
        agent: &Path,
        replica: &BerthServer,
        max_containers: usize,
    ) -> Result<Self> {
        let token = replica
            .admin()?
            .create_join_token("bench")
            .await
            .context("making a join token")?
            .token;
        let dir = tempfile::Builder::new()
            .prefix("berth-bench-node.")
            .tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let log = std::fs::File::create(dir.path().join("node.log"))?;
        let child = Command::new(berth)
            .arg("--data-dir")
            .arg(&data)
            .arg("executor")
            .args(["--join", &format!("http://{}", replica.addr)])
            .args(["--token", &token])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--max-containers", &max_containers.to_string()])
            .args(["--grace-secs", GRACE_SECS])
            .arg("--agent")
            .arg(agent)
            // Nothing of the caller's environment chooses the setup.
            .env_remove("BERTH_ZONE")
            .env_remove("BERTH_ADVERTISE")
            .env_remove("BERTH_RUNTIME")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} executor", berth.display()))?;
        let mut node = Self {
            dir,
            child: Some(child),
            id: String::new(),
            url: String::new(),
        };
        let begun = Instant::now();
        // "berth: executor <id> serving <url> for <set>", once it has
        // joined and its data plane listens.
        let (id, url) = loop {
            let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
            let up = log.lines().find_map(|l| {
                let rest = l.strip_prefix("berth: executor ")?;
                let (id, rest) = rest.split_once(" serving ")?;
                let url = rest.split_whitespace().next()?;
                Some((id.to_owned(), url.to_owned()))
            });
            if let Some(up) = up {
                break up;
            }
            if let Some(child) = node.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "berth executor exited with {status}:\n{}",
                    node.log_tail(40)
                );
            }
            if begun.elapsed() > PATIENCE {
                bail!("berth executor did not come up:\n{}", node.log_tail(40));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        node.id = id;
        node.url = url;
        Ok(node)
    }

    /// Until the set lists the node as active with a recent heartbeat, and
    /// then long enough for every replica to have read it.
    pub async fn wait_active(&self, replica: &BerthServer) -> Result<()> {
        let begun = Instant::now();
        loop {
            let list = replica.admin()?.executors().await?;
            let active = list.executors.iter().any(|e| {
                e.id == self.id && e.state.to_string() == "active" && e.heartbeat_age_ms < 3000
            });
            if active {
                break;
            }
            if begun.elapsed() > PATIENCE {
                bail!(
                    "executor {} never became active: {list:?}\n{}",
                    self.id,
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(REFRESH).await;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("node.log")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        server::tail(&self.log_path(), lines)
    }

    /// The log's warnings and errors so far.
    pub fn log_problems(&self) -> Vec<String> {
        server::problems(&self.log_path())
    }

    /// SIGTERM, a bounded wait, then SIGKILL; then the containers go.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            server::terminate(&mut child);
        }
        if !self.id.is_empty() {
            server::remove_containers(&self.id);
        }
    }
}

impl Drop for ExecutorNode {
    fn drop(&mut self) {
        self.stop();
    }
}
