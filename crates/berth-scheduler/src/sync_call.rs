//! Synchronous calls: the task is recorded as running, the attempt placed
//! on an executor at once (no queue), stdout handed back as it is made,
//! and the record finished when the process exits.

use std::sync::{Arc, OnceLock};

use berth_core::{
    ErrorCode, Outcome, RequestMeta, TaskError, TaskId, TaskKind, TaskRecord, TaskStatus, Timing,
    Usage,
};
use berth_executor::{InputStream, Invocation, ResponseHead};
use berth_store::{Fence, Finish};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::outcome::{finish_from, overrule};
use crate::{SchedError, TaskManager};

/// The end of a sync call, sent once the task record is final.
#[derive(Debug, Clone)]
pub struct CallResult {
    pub outcome: Outcome,
    pub timing: Timing,
    pub usage: Usage,
    pub stderr_tail: String,
}

/// A sync call in flight. `stdout` must be drained (or dropped, which kills
/// the function); `result` resolves after the process exits.
pub struct SyncCall {
    pub task_id: TaskId,
    pub version: i64,
    /// http mode: the function's own status and headers, before stdout.
    pub head: Option<oneshot::Receiver<ResponseHead>>,
    pub stdout: mpsc::Receiver<Bytes>,
    pub result: oneshot::Receiver<CallResult>,
}

/// Passes a request body through until it exceeds `limit` bytes, then ends
/// it with an error and records the limit in `overflow`, so the call's
/// outcome can tell a body cut for size from one the client broke off.
fn limit_input(body: InputStream, limit: u64, overflow: Arc<OnceLock<u64>>) -> InputStream {
    let mut seen: u64 = 0;
    Box::pin(body.map(move |chunk| {
        let chunk = chunk?;
        seen = seen.saturating_add(chunk.len() as u64);
        if seen > limit {
            let _ = overflow.set(limit);
            return Err(std::io::Error::other(format!(
                "request body is larger than the {limit} byte limit"
            )));
        }
        Ok(chunk)
    }))
}

impl TaskManager {
    /// Starts a synchronous call: the task is recorded as running, the
    /// container started, and stdout handed back as it is produced.
    pub async fn invoke(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        request: RequestMeta,
        body: InputStream,
    ) -> Result<SyncCall, SchedError> {
        let v = self.route(tenant, name, &request).await?;
        let q = self.quotas_of(tenant).await?;
        if request.content_length.is_some_and(|n| n > q.max_body_bytes) {
            return Err(SchedError::InputTooLarge(q.max_body_bytes));
        }
        let overflow = Arc::new(OnceLock::new());
        let body = limit_input(body, q.max_body_bytes, Arc::clone(&overflow));
        let mut task = TaskRecord::new(&v.tenant, &v.function, v.version, TaskKind::Sync, request);
        task.status = TaskStatus::Running;
        task.attempt = 1;
        task.epoch = 1;
        task.node = Some(self.cfg.node_id.clone());
        task.started_at = Some(task.created_at);
        task.timing.queued_ms = Some(0);
        task.input_bytes = task
            .request
            .content_length
            .and_then(|n| i64::try_from(n).ok());
        let fence = Fence {
            id: task.id,
            epoch: 1,
        };
        // Tracked before the row exists, so a cancel can never find the
        // task running without a way to reach it.
        let cancel = self.track(task.id, tenant, TaskKind::Sync, 1);
        // The running quota is counted in the store, across every replica.
        match self
            .store
            .insert_running(&task, &self.lease(), q.max_concurrent_tasks)
            .await
        {
            Ok(true) => crate::journal::started(&task, &self.cfg.node_id),
            Ok(false) => {
                self.untrack(task.id);
                self.count_quota_refusal(&task, v.config.mode);
                return Err(self.concurrency_refusal(tenant, &q));
            }
            Err(e) => {
                self.untrack(task.id);
                return Err(e.into());
            }
        }
        let inv = match self.place(self.spec(&v, &task, cancel), body).await {
            Ok(inv) => inv,
            Err(e) => {
                self.untrack(task.id);
                let finish = Finish::failed(e.task_error());
                if let Err(se) = self.store.finish_task(fence, &finish).await {
                    warn!(task = %task.id, error = %se, "could not record failed start");
                }
                crate::journal::ended(&task, &finish);
                self.count_end(&task, Some(v.config.mode), &finish);
                return Err(e);
            }
        };
        let (result_tx, result_rx) = oneshot::channel();
        let this = Arc::clone(self);
        let Invocation {
            head,
            stdout,
            stderr,
            done,
        } = inv;
        let id = task.id;
        let record = task.clone();
        let mode = v.config.mode;
        tokio::spawn(async move {
            let logs = this.collect_logs(id, 1, stderr);
            let (reported, logs) = tokio::join!(done, logs);
            let mut stderr_tail = match &reported {
                Ok(Ok(o)) => o.stderr_tail.trim_end().to_owned(),
                _ => String::new(),
            };
            let mut finish = finish_from(reported);
            finish.durable = false;
            // The function saw a cut-off input, so whatever it made of it
            // is not the answer to this request.
            if let Some(limit) = overflow.get() {
                overrule(
                    &mut finish,
                    TaskError::new(
                        ErrorCode::BodyTooLarge,
                        format!("request body is larger than the {limit} byte limit"),
                    ),
                );
                finish.outcome.exit_code = None;
                stderr_tail.clear();
            }
            this.commit_logs(id, logs).await;
            if let Err(e) = this.store.finish_task(fence, &finish).await {
                warn!(task = %id, error = %e, "could not record sync result");
            }
            crate::journal::ended(&record, &finish);
            this.count_end(&record, Some(mode), &finish);
            this.untrack(id);
            let _ = result_tx.send(CallResult {
                outcome: finish.outcome,
                timing: finish.timing,
                usage: finish.usage,
                stderr_tail,
            });
        });
        Ok(SyncCall {
            task_id: task.id,
            version: v.version,
            head,
            stdout,
            result: result_rx,
        })
    }
}
