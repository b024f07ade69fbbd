//! One container as the engine sees it, and the small things every run
//! needs around it: which user it runs as, how the engine's errors read,
//! the stderr tail kept for error messages.

use std::time::Instant;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    KillContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use tracing::{debug, warn};

use berth_executor::ExecError;

/// How much stderr is kept in memory for error messages.
const STDERR_TAIL: usize = 2048;

/// Who function containers run as unless told otherwise: the conventional
/// unprivileged "nobody", which owns no file in any image.
const NOBODY: &str = "65534:65534";

pub(crate) struct Container {
    pub docker: Docker,
    pub id: String,
}

impl Container {
    /// Signals the container's main process. Only SIGKILL is sure to land:
    /// as PID 1 of its namespace, the function gets other signals only if
    /// it handles them.
    pub async fn signal(&self, signal: &str) {
        let opts = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        if let Err(e) = self.docker.kill_container(&self.id, Some(opts)).await {
            debug!(container = %self.id, signal, error = %e, "signal failed (may have exited)");
        }
    }

    pub async fn kill(&self) {
        self.signal("SIGKILL").await;
    }

    /// Removes the container; false when the engine could not be
    /// reached, so that the removal can be tried again later.
    pub async fn remove(&self) -> bool {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(&self.id, Some(opts)).await {
            Ok(()) => true,
            Err(e) if is_not_found(&e) => true,
            Err(e) if is_connect_error(&e) => {
                debug!(container = %self.id, error = %e, "engine unreachable; removal deferred");
                false
            }
            // The reaper at the next start catches what is left.
            Err(e) => {
                warn!(container = %self.id, error = %e, "could not remove container");
                true
            }
        }
    }

    pub async fn exit_code(&self) -> Result<i64, ExecError> {
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

    pub async fn oom_killed(&self) -> bool {
        match self.docker.inspect_container(&self.id, None).await {
            Ok(info) => info.state.and_then(|s| s.oom_killed).unwrap_or(false),
            Err(_) => false,
        }
    }
}

/// The user a function's container runs as: root only when the function
/// asks for it; else the image's own USER when that is not root, else
/// nobody. Images that say nothing run as root under plain Docker, which
/// is the default this replaces.
pub(crate) fn container_user(run_as_root: bool, image_user: Option<&str>) -> String {
    if run_as_root {
        return "0:0".into();
    }
    match image_user.map(str::trim) {
        Some(user) if !user.is_empty() && !names_root(user) => user.to_owned(),
        _ => NOBODY.into(),
    }
}

/// Whether a `user[:group]` names uid 0. Another name that the image's
/// /etc/passwd maps to uid 0 gets through, which grants nothing a function
/// could not ask for with `run_as_root`.
fn names_root(user: &str) -> bool {
    let uid = user.split(':').next().unwrap_or(user).trim();
    uid == "root" || uid.parse::<u32>() == Ok(0)
}

/// Errors of reaching the engine at all, as opposed to the engine
/// answering with a failure.
pub(crate) fn is_connect_error(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::IOError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::HyperLegacyError { .. }
            | DockerError::SocketNotFoundError(_)
            | DockerError::RequestTimeoutError
    )
}

pub(crate) fn engine_error(e: DockerError) -> ExecError {
    if is_connect_error(&e) {
        ExecError::EngineUnavailable(e.to_string())
    } else {
        ExecError::Engine(e.to_string())
    }
}

pub(crate) fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

pub(crate) fn elapsed_ms(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// The end of a stream's output, kept for error messages.
pub(crate) struct Tail(pub Vec<u8>);

impl Tail {
    pub fn push(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
        if self.0.len() > 2 * STDERR_TAIL {
            let cut = self.0.len() - STDERR_TAIL;
            self.0.drain(..cut);
        }
    }

    pub fn into_string(self) -> String {
        let start = self.0.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&self.0[start..]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_run_as_nobody_unless_the_image_or_config_says_otherwise() {
        assert_eq!(container_user(false, None), "65534:65534");
        assert_eq!(container_user(false, Some("")), "65534:65534");
        // An image that asks for root gets nobody too: root is opt-in.
        for root in ["root", "0", "0:0", "root:root", "0:1000", " 0 "] {
            assert_eq!(container_user(false, Some(root)), "65534:65534", "{root}");
        }
        for own in ["1000", "4321:4321", "app", "app:app", "1000:0"] {
            assert_eq!(container_user(false, Some(own)), own);
        }
        assert_eq!(container_user(true, None), "0:0");
        assert_eq!(container_user(true, Some("4321:4321")), "0:0");
    }

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
