//! The async side: claim queued tasks under leases and run them; a
//! refused start goes back to the queue uncounted, a lost run is retried
//! while attempts remain.

use std::sync::Arc;
use std::time::Duration;

use berth_blobs::PayloadWriter;
use berth_core::{ErrorCode, PayloadKind, TaskError, TaskKind, TaskRecord, TaskStatus};
use berth_store::{Fence, Finish};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::outcome::{finish_from, overrule, was_lost};
use crate::{SchedError, TaskManager};
use berth_executor::ExecError;

/// How long a slot stays idle after an executor refused a start, so a full
/// or absent engine is not hammered.
const REFUSAL_BACKOFF: Duration = Duration::from_secs(1);

impl TaskManager {
    pub(crate) async fn dispatch_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.cfg.async_concurrency));
        while !shutdown.is_cancelled() {
            let free = slots.available_permits();
            if free > 0 {
                match self.claim(u32::try_from(free).unwrap_or(u32::MAX)).await {
                    Ok(tasks) => {
                        for task in tasks {
                            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                                // Cannot happen (we claimed at most `free`),
                                // but a claimed task must never be dropped.
                                self.hand_back(&task).await;
                                continue;
                            };
                            tokio::spawn(Arc::clone(&self).run_async(task, permit));
                        }
                    }
                    Err(e) => warn!(error = %e, "claiming queued tasks failed"),
                }
            }
            // Shutdown first: a wake-up stored meanwhile (an attempt that
            // ended, a submission) must not buy one more claim once the
            // drain may have begun handing work back.
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.cfg.poll_interval) => {}
            }
        }
    }

    async fn run_async(self: Arc<Self>, task: TaskRecord, permit: OwnedSemaphorePermit) {
        self.run_claimed(&task).await;
        drop(permit);
        self.wake.notify_one();
    }

    /// The tenants whose running tasks, across the set, fill their
    /// concurrency quota, with how many each runs.
    async fn running_against_quotas(&self) -> Result<Vec<(String, i64, i64)>, SchedError> {
        let mut out = Vec::new();
        for (tenant, running) in self.store.running_counts().await? {
            let limit = match self.quotas_of(&tenant).await {
                Ok(q) => i64::from(q.max_concurrent_tasks),
                Err(e) => {
                    warn!(tenant, error = %e, "could not read quotas; using the defaults");
                    i64::from(self.cfg.quotas.max_concurrent_tasks)
                }
            };
            out.push((tenant, running, limit));
        }
        Ok(out)
    }

    /// Claims up to `want` tasks of tenants under their running quota. The
    /// quota counts the whole set's running tasks; a claim racing others
    /// (on this or another replica) can take a tenant past it, so what it
    /// took beyond is handed back at once, uncounted, newest first.
    async fn claim(&self, want: u32) -> Result<Vec<TaskRecord>, SchedError> {
        let saturated: Vec<String> = self
            .running_against_quotas()
            .await?
            .into_iter()
            .filter(|(_, running, limit)| running >= limit)
            .map(|(tenant, _, _)| tenant)
            .collect();
        let mut tasks = self
            .store
            .claim_queued(&self.lease(), want, &saturated)
            .await?;
        if tasks.is_empty() {
            return Ok(tasks);
        }
        let counts = match self.running_against_quotas().await {
            Ok(counts) => counts,
            Err(e) => {
                // Unchecked, they might take a tenant past its quota; and
                // dropped, they would sit claimed until their lease lapsed
                // and cost each an attempt. Handed back, they cost nothing.
                for task in &tasks {
                    self.hand_back(task).await;
                }
                return Err(e);
            }
        };
        for (tenant, running, limit) in counts {
            let mut over = running - limit;
            while over > 0 {
                let Some(i) = tasks.iter().rposition(|t| t.tenant == tenant) else {
                    break;
                };
                let task = tasks.remove(i);
                self.hand_back(&task).await;
                over -= 1;
            }
        }
        Ok(tasks)
    }

    /// Gives a claim that will not run here back to the queue, uncounted.
    async fn hand_back(&self, task: &TaskRecord) {
        if let Err(e) = self.store.release_task(fence_of(task)).await {
            warn!(task = %task.id, error = %e, "could not hand a claim back; its lease will lapse");
        }
    }

    async fn run_claimed(&self, task: &TaskRecord) {
        let id = task.id;
        let attempt = task.attempt;
        let fence = fence_of(task);
        // Registered before anything else so a cancel from here on reaches
        // the attempt; one that landed between the claim and now is caught
        // by re-reading the status.
        let cancel = self.track(id, &task.tenant, TaskKind::Async, task.epoch);
        match self.store.get_task(&task.tenant, id).await {
            Ok(Some(t)) if t.status == TaskStatus::Running && t.epoch == task.epoch => {
                crate::journal::started(task, &self.cfg.node_id);
            }
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
        // (cancelled), or a drain (back to the queue, uncounted). Either
        // way this attempt's end is nobody's to record; the epoch fence
        // would refuse it anyway.
        if cancel.is_cancelled() {
            debug!(task = %id, attempt, "attempt was cancelled or handed back; result discarded");
            return;
        }
        let finish = match result {
            Ok(finish) => finish,
            Err(Unfinished::Lost(error)) if attempt < task.max_attempts => {
                info!(task = %id, attempt, error = %error.message,
                    "attempt lost; the task goes back to the queue");
                crate::journal::requeued(task, "lost");
                self.count_requeue(task, "lost");
                if let Err(se) = self.store.requeue_task(fence).await {
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
                crate::journal::requeued(task, "refused");
                self.count_requeue(task, "refused");
                if let Err(se) = self.store.release_task(fence).await {
                    warn!(task = %id, error = %se, "could not release task");
                }
                // The slot stays taken meanwhile, so the refusal is not
                // retried at once.
                tokio::time::sleep(REFUSAL_BACKOFF).await;
                return;
            }
        };
        let mode = self.mode_of(task).await;
        match self.record(fence, &finish).await {
            Ok(true) => {
                crate::journal::ended(task, &finish);
                self.count_end(task, mode, &finish);
                let _ = self.finished.send(id);
            }
            // Cancelled, recovered or claimed again meanwhile: the other
            // writer's state wins, and this attempt's output (under its own
            // epoch) is never read.
            Ok(false) => {
                info!(task = %id, epoch = task.epoch, "attempt result refused by its fence")
            }
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
        let input = match self.payloads.open(task.id, PayloadKind::Input, 0).await {
            Ok(Some(blob)) => blob,
            Ok(None) => {
                return Ok(failed(ErrorCode::InputMissing, "the task's input is gone"));
            }
            // Blob storage unreachable: not the task's fault; try later.
            Err(e) => return Err(Unfinished::Refused(SchedError::Blobs(e))),
        };
        let stdin = input.stream;
        let run = self.place(self.spec(&version, task, cancel), stdin).await;
        let inv = match run {
            Ok(inv) => inv,
            Err(e) if e.is_refusal() => return Err(Unfinished::Refused(e)),
            Err(e) => return Ok(Finish::failed(e.task_error())),
        };
        let output = self.collect_output(task.id, task.epoch, inv.stdout);
        let logs = self.collect_logs(task.id, task.epoch, inv.stderr);
        let (done, (output, too_large), logs) = tokio::join!(inv.done, output, logs);
        // The node was taken back under it: neither the function's fault
        // nor a loss to count; it goes back to the queue as it was.
        if let Ok(Err(e @ ExecError::Reclaimed(_))) = &done {
            self.commit_logs(task.id, logs).await;
            return Err(Unfinished::Refused(e.clone().into()));
        }
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

    /// Writes stdout to the task's output file, and to a tap for those
    /// following it. Returns the writer (not yet
    /// committed) and whether the size cap was hit, in which case the
    /// receiver is dropped, which kills the function.
    async fn collect_output(
        &self,
        id: berth_core::TaskId,
        epoch: i64,
        mut stdout: mpsc::Receiver<Bytes>,
    ) -> (Option<PayloadWriter>, bool) {
        let mut writer = match self.payloads.create(id, PayloadKind::Output, epoch) {
            Ok(w) => w,
            Err(e) => {
                warn!(task = %id, error = %e, "cannot store output");
                return (None, false);
            }
        };
        let tap = self.taps.open(id, PayloadKind::Output, epoch);
        while let Some(chunk) = stdout.recv().await {
            if writer.written() + chunk.len() as u64 > self.cfg.max_output_bytes {
                return (Some(writer), true);
            }
            if let Err(e) = writer.write(&chunk).await {
                warn!(task = %id, error = %e, "output write failed");
                return (None, false);
            }
            tap.push(&chunk);
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

/// How long a finished attempt keeps trying to record its result while
/// the store is unreachable (a database restarting or failing over). Past
/// it the lease has long lapsed and the task runs again elsewhere; the
/// fence refuses a record that comes too late anyway.
const RECORD_PATIENCE: Duration = Duration::from_secs(120);

impl TaskManager {
    /// Records an attempt's end, retrying while the store is unreachable:
    /// the work is done and its output stored, so waiting for the database
    /// beats running it again.
    async fn record(&self, fence: Fence, finish: &Finish) -> Result<bool, berth_store::StoreError> {
        let deadline = tokio::time::Instant::now() + RECORD_PATIENCE;
        let mut pause = Duration::from_millis(200);
        loop {
            match self.store.finish_task(fence, finish).await {
                Err(e) if e.is_unavailable() && tokio::time::Instant::now() < deadline => {
                    debug!(task = %fence.id, error = %e, "store unreachable; recording later");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }
}

/// The fence of a claimed task's attempt.
pub(crate) fn fence_of(task: &TaskRecord) -> Fence {
    Fence {
        id: task.id,
        epoch: task.epoch,
    }
}
