//! The async side: claim queued tasks under leases and run them; a
//! refused start goes back to the queue uncounted, a lost run is retried
//! while attempts remain.

use std::sync::Arc;
use std::time::Duration;

use berth_core::{ErrorCode, PayloadKind, TaskError, TaskKind, TaskRecord, TaskStatus};
use berth_store::{Finish, StoreError};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::outcome::{finish_from, overrule, was_lost};
use crate::quota::ActiveSlot;
use crate::{SchedError, TaskManager, lease_ms};

/// How long a slot stays idle after an executor refused a start, so a full
/// or absent engine is not hammered.
const REFUSAL_BACKOFF: Duration = Duration::from_secs(1);

impl TaskManager {
    pub(crate) async fn dispatch_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.cfg.async_concurrency));
        loop {
            let free = slots.available_permits();
            if free > 0 {
                let want = u32::try_from(free).unwrap_or(u32::MAX);
                let saturated = self.quotas.saturated();
                match self
                    .store
                    .claim_queued(
                        &self.cfg.node_id,
                        want,
                        lease_ms(self.cfg.lease),
                        &saturated,
                    )
                    .await
                {
                    Ok(tasks) => {
                        for task in tasks {
                            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                                // Cannot happen (we claimed at most `free`),
                                // but a claimed task must never be dropped.
                                let _ = self.store.release_task(task.id, task.attempt).await;
                                continue;
                            };
                            // The tenant may have filled its quota since
                            // the claim (sync calls, or several of its
                            // tasks in one claim): back to the queue,
                            // without spending the attempt.
                            let Some(quota_slot) = self.quota_slot(&task.tenant).await else {
                                let _ = self.store.release_task(task.id, task.attempt).await;
                                continue;
                            };
                            tokio::spawn(Arc::clone(&self).run_async(task, permit, quota_slot));
                        }
                    }
                    Err(e) => warn!(error = %e, "claiming queued tasks failed"),
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.cfg.poll_interval) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn run_async(
        self: Arc<Self>,
        task: TaskRecord,
        permit: OwnedSemaphorePermit,
        quota_slot: ActiveSlot,
    ) {
        self.run_claimed(&task).await;
        drop(quota_slot);
        drop(permit);
        self.wake.notify_one();
    }

    /// A place in the tenant's concurrency quota for a claimed task.
    async fn quota_slot(&self, tenant: &str) -> Option<ActiveSlot> {
        let limit = match self.quotas_of(tenant).await {
            Ok(q) => q.max_concurrent_tasks,
            Err(e) => {
                warn!(tenant, error = %e, "could not read quotas; using the defaults");
                self.cfg.quotas.max_concurrent_tasks
            }
        };
        self.quotas.try_start(tenant, limit)
    }

    async fn run_claimed(&self, task: &TaskRecord) {
        let id = task.id;
        let attempt = task.attempt;
        // Registered before anything else so a cancel from here on reaches
        // the attempt; one that landed between the claim and now is caught
        // by re-reading the status.
        let cancel = self.track(id, TaskKind::Async, attempt);
        match self.store.get_task(&task.tenant, id).await {
            Ok(Some(t)) if t.status == TaskStatus::Running && t.attempt == attempt => {}
            Ok(_) => {
                debug!(task = %id, "task changed hands before it started; skipping");
                self.untrack(id);
                return;
            }
            Err(e) => warn!(task = %id, error = %e, "could not re-read task; running it"),
        }
        let result = self.attempt(task, cancel.clone()).await;
        self.untrack(id);
        // Whoever fired the token wrote the task's state first: a cancel
        // (cancelled), or a drain (back to the queue with this attempt
        // uncounted, so the same attempt number may be claimed again at
        // once, by another replica). Either way this attempt's end is
        // nobody's to record, and the attempt number cannot tell.
        if cancel.is_cancelled() {
            debug!(task = %id, attempt, "attempt was cancelled or handed back; result discarded");
            return;
        }
        let finish = match result {
            Ok(finish) => finish,
            Err(Unfinished::Lost(error)) if attempt < task.max_attempts => {
                info!(task = %id, attempt, error = %error.message,
                    "attempt lost; the task goes back to the queue");
                if let Err(se) = self.store.requeue_task(id, attempt).await {
                    warn!(task = %id, error = %se, "could not requeue; its lease will lapse");
                }
                return;
            }
            Err(Unfinished::Lost(error)) => Finish::failed(TaskError::new(
                ErrorCode::Lost,
                format!(
                    "the task was lost on all {} attempts; the last: {}",
                    task.max_attempts, error.message
                ),
            )),
            Err(Unfinished::Refused(e)) => {
                debug!(task = %id, error = %e, "executor refused; task goes back to the queue");
                if let Err(se) = self.store.release_task(id, attempt).await {
                    warn!(task = %id, error = %se, "could not release task");
                }
                // The slot stays taken meanwhile, so the refusal is not
                // retried at once.
                tokio::time::sleep(REFUSAL_BACKOFF).await;
                return;
            }
        };
        match self.store.finish_task(id, attempt, &finish).await {
            Ok(true) => {
                let _ = self.finished.send(id);
            }
            // Cancelled or recovered meanwhile: the other writer's state wins.
            Ok(false) => debug!(task = %id, "attempt result discarded"),
            Err(e) => warn!(task = %id, error = %e, "could not record result; lease will lapse"),
        }
    }

    /// One attempt of an async task. A refusal to start and a run the
    /// executor lost are returned apart: neither is the task's result.
    async fn attempt(
        &self,
        task: &TaskRecord,
        cancel: CancellationToken,
    ) -> Result<Finish, Unfinished> {
        let failed = |code, message: &str| Finish::failed(TaskError::new(code, message));
        let version = match self
            .store
            .get_version(&task.tenant, &task.function, task.version)
            .await
        {
            Ok(Some(v)) => v,
            Ok(None) => {
                return Ok(failed(
                    ErrorCode::FunctionDeleted,
                    "the function was deleted before the task ran",
                ));
            }
            Err(e) => return Err(Unfinished::Refused(e.into())),
        };
        let input = match self.payloads.open(task.id, PayloadKind::Input).await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Ok(failed(ErrorCode::InputMissing, "the task's input is gone"));
            }
            Err(e) => return Err(Unfinished::Refused(StoreError::Io(e).into())),
        };
        let stdin = Box::pin(ReaderStream::new(input));
        let run = self.place(self.spec(&version, task, cancel), stdin).await;
        let inv = match run {
            Ok(inv) => inv,
            Err(e) if e.is_refusal() => return Err(Unfinished::Refused(e)),
            Err(e) => return Ok(Finish::failed(e.task_error())),
        };
        let output = self.collect_output(task.id, inv.stdout);
        let logs = self.collect_logs(task.id, inv.stderr);
        let (done, (output, too_large), logs) = tokio::join!(inv.done, output, logs);
        // The function did not fail: what ran it did. Its partial output
        // is dropped; its logs are kept, they may say what happened.
        let lost = was_lost(&done);
        let mut finish = finish_from(done);
        if lost && let Some(error) = finish.outcome.error.take() {
            self.commit_logs(task.id, logs).await;
            return Err(Unfinished::Lost(error));
        }
        if too_large {
            overrule(
                &mut finish,
                TaskError::new(
                    ErrorCode::OutputTooLarge,
                    format!(
                        "output exceeded the {} byte limit; the function was killed",
                        self.cfg.max_output_bytes
                    ),
                ),
            );
        }
        // A cancelled task has no output, not a partial one; its writer is
        // dropped, which discards what was written.
        let output = output.filter(|_| finish.outcome.status != TaskStatus::Cancelled);
        // Output and logs are durable before the status says the task ended.
        if let Some(w) = output {
            match w.commit().await {
                Ok(n) => finish.output_bytes = i64::try_from(n).ok(),
                Err(e) => {
                    warn!(task = %task.id, error = %e, "could not store output");
                    overrule(
                        &mut finish,
                        TaskError::new(ErrorCode::OutputLost, e.to_string()),
                    );
                }
            }
        }
        self.commit_logs(task.id, logs).await;
        Ok(finish)
    }

    /// Writes stdout to the task's output file. Returns the writer (not yet
    /// committed) and whether the size cap was hit, in which case the
    /// receiver is dropped, which kills the function.
    async fn collect_output(
        &self,
        id: berth_core::TaskId,
        mut stdout: mpsc::Receiver<Bytes>,
    ) -> (Option<berth_store::PayloadWriter>, bool) {
        let mut writer = match self.payloads.create(id, PayloadKind::Output).await {
            Ok(w) => w,
            Err(e) => {
                warn!(task = %id, error = %e, "cannot store output");
                return (None, false);
            }
        };
        while let Some(chunk) = stdout.recv().await {
            if writer.written() + chunk.len() as u64 > self.cfg.max_output_bytes {
                return (Some(writer), true);
            }
            if let Err(e) = writer.write(&chunk).await {
                warn!(task = %id, error = %e, "output write failed");
                return (None, false);
            }
        }
        (Some(writer), false)
    }
}

/// Why an attempt has no result of its own.
enum Unfinished {
    /// The executor would not start it (full, engine down): the attempt is
    /// not counted.
    Refused(SchedError),
    /// The executor lost it mid-run (its instance or engine died): the
    /// attempt counts, and the task runs again while attempts remain.
    Lost(TaskError),
}
