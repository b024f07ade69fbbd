//! Which executor runs an attempt, and what it is told to run.
//!
//! Today: the first executor that reports room. The executor remains the
//! judge of its own capacity and refuses if it filled up meanwhile.

use std::time::Duration;

use berth_core::{FunctionVersion, TaskRecord};
use berth_executor::{InputStream, Invocation, PoolSettings, RunSpec};
use tokio_util::sync::CancellationToken;

use crate::{SchedError, TaskManager, cgi_env};

impl TaskManager {
    pub(crate) async fn place(
        &self,
        spec: RunSpec,
        stdin: InputStream,
    ) -> Result<Invocation, SchedError> {
        let executor = self
            .executors
            .iter()
            .find(|e| e.has_room(&spec))
            .or(self.executors.first())
            .ok_or(SchedError::NoExecutor)?;
        Ok(executor.run(spec, stdin).await?)
    }

    /// One attempt of a task on one version, as an executor runs it.
    pub(crate) fn spec(
        &self,
        v: &FunctionVersion,
        task: &TaskRecord,
        cancel: CancellationToken,
    ) -> RunSpec {
        self.modes.note(v);
        RunSpec {
            task_id: task.id,
            tenant: v.tenant.clone(),
            function: v.function.clone(),
            version: v.version,
            image: v.image_id.clone(),
            command: v.config.command.clone(),
            env: v
                .config
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            request_env: cgi_env(v, task),
            request: task.request.clone(),
            cpu_millis: v.config.cpu_millis,
            memory_mb: v.config.memory_mb,
            timeout: Duration::from_secs(u64::from(v.config.timeout_secs)),
            mode: v.config.mode,
            run_as_root: v.config.run_as_root,
            pool: PoolSettings {
                concurrency: v.config.concurrency,
                min_instances: v.config.min_instances,
                max_instances: v.config.max_instances,
                idle_timeout: Duration::from_secs(u64::from(v.config.idle_timeout_secs)),
                max_queue: v.config.max_queue,
                queue_timeout: Duration::from_secs(u64::from(v.config.queue_timeout_secs)),
            },
            cancel,
        }
    }
}
