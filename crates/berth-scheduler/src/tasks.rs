//! Reading, waiting for and cancelling tasks, and their stored output and
//! logs. Another tenant's task answers exactly like a missing one.

use std::time::Duration;

use berth_core::{
    AttemptRecord, Cancel, PayloadKind, TaskFilter, TaskId, TaskKind, TaskPage, TaskRecord,
};
use berth_executor::InputStream;
use berth_store::Event;
use tokio::sync::broadcast;
use tracing::warn;

use crate::{SchedError, TaskManager};

/// A task's stored output or logs, streamed.
pub struct Payload {
    pub len: Option<u64>,
    pub body: InputStream,
}

impl TaskManager {
    pub async fn task(&self, tenant: &str, id: TaskId) -> Result<TaskRecord, SchedError> {
        self.store
            .get_task(tenant, id)
            .await?
            .ok_or(SchedError::TaskNotFound)
    }

    pub async fn tasks(&self, tenant: &str, filter: &TaskFilter) -> Result<TaskPage, SchedError> {
        Ok(self.store.list_tasks(tenant, filter).await?)
    }

    /// A finished task's output or logs. A task that wrote nothing to
    /// stderr has empty logs (their file is made on the first byte).
    pub async fn payload(
        &self,
        task: &TaskRecord,
        kind: PayloadKind,
    ) -> Result<Payload, SchedError> {
        if !task.status.is_terminal() {
            return Err(SchedError::TaskNotFinished(task.status));
        }
        // An attempt's output and logs are named by its epoch: those of an
        // attempt that was replaced are never read.
        let blob = self.payloads.open(task.id, kind, task.epoch).await?;
        let Some(blob) = blob else {
            if kind == PayloadKind::Logs {
                return Ok(Payload {
                    len: Some(0),
                    body: Box::pin(futures::stream::empty()),
                });
            }
            return Err(SchedError::NoPayload(match (kind, task.kind) {
                (PayloadKind::Output, TaskKind::Sync) => {
                    "a sync call's output went to its caller and is not stored"
                }
                _ => "this task has none",
            }));
        };
        Ok(Payload {
            len: Some(blob.len),
            body: blob.stream,
        })
    }

    /// Kills the attempt of a task if it runs in this process.
    pub(crate) fn kill_local(&self, id: TaskId) {
        if let Some(running) = self.lock_running().get(&id) {
            running.cancel.cancel();
        }
    }

    /// Every claim of a task, oldest first: which replica ran it, and how
    /// each ended.
    pub async fn attempts(
        &self,
        tenant: &str,
        id: TaskId,
    ) -> Result<Vec<AttemptRecord>, SchedError> {
        Ok(self.store.list_attempts(tenant, id).await?)
    }

    /// Waits up to `max` for a task to finish and returns it if it did.
    /// Finishes in this process wake the wait at once; the store is also
    /// polled, for tasks another replica runs.
    pub async fn wait_finished(
        &self,
        tenant: &str,
        id: TaskId,
        max: Duration,
    ) -> Result<Option<TaskRecord>, SchedError> {
        const POLL: Duration = Duration::from_millis(500);
        let mut finished = self.finished.subscribe();
        let deadline = tokio::time::Instant::now() + max;
        loop {
            match self.store.get_task(tenant, id).await? {
                Some(t) if t.status.is_terminal() => return Ok(Some(t)),
                Some(_) => {}
                None => return Ok(None),
            }
            let wake = async {
                loop {
                    match finished.recv().await {
                        Ok(done) if done == id => return,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            };
            tokio::select! {
                () = wake => {}
                () = tokio::time::sleep(POLL) => {}
                () = tokio::time::sleep_until(deadline) => return Ok(None),
            }
        }
    }

    /// Cancels a task of this tenant. A running attempt in this process is
    /// killed at once; one elsewhere sees its lease gone at finish.
    pub async fn cancel(&self, tenant: &str, id: TaskId) -> Result<Cancel, SchedError> {
        let result = self
            .store
            .cancel_task(tenant, id)
            .await?
            .ok_or(SchedError::TaskNotFound)?;
        if let Cancel::AlreadyFinished(status) = result {
            return Err(SchedError::TaskFinished(status));
        }
        self.kill_local(id);
        self.count_cancel(tenant, id).await;
        // The attempt may run on another replica of the set.
        if let Err(e) = self.store.notify(&Event::Cancelled(id)).await {
            warn!(task = %id, error = %e, "could not tell other replicas of a cancel; \
                its attempt there runs on until it ends, and its result is refused");
        }
        Ok(result)
    }
}
