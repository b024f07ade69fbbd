//! Accepting an async task: its input is on disk and its row committed
//! before the caller hears 202, so an accepted task is never lost.

use berth_core::{PayloadKind, RequestMeta, TaskKind, TaskRecord, TaskStatus};
use berth_executor::InputStream;
use berth_store::Idempotent;
use futures::StreamExt;

use crate::{SchedError, TaskManager};

/// An accepted async task, and whether it was accepted before under the
/// same idempotency key (then nothing new was recorded).
#[derive(Debug, Clone)]
pub struct Submitted {
    pub task: TaskRecord,
    pub replayed: bool,
}

impl TaskManager {
    /// Accepts an async task: the input is written and synced, then the
    /// task row committed. Only then is the task acknowledged. With an
    /// idempotency key, a repeat of an accepted request returns the task
    /// it made instead of a new one.
    pub async fn submit(
        &self,
        tenant: &str,
        name: &str,
        request: RequestMeta,
        mut body: InputStream,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, SchedError> {
        use sha2::Digest as _;
        let v = self.route(tenant, name, &request).await?;
        let q = self.quotas_of(tenant).await?;
        let mut task = TaskRecord::new(&v.tenant, &v.function, v.version, TaskKind::Async, request);
        task.max_attempts = self.cfg.max_attempts;
        let limit = self.cfg.max_async_input_bytes.min(q.max_body_bytes);
        if task.request.content_length.is_some_and(|n| n > limit) {
            return Err(SchedError::InputTooLarge(limit));
        }
        let queued = self.store.count_tasks(tenant, TaskStatus::Queued).await?;
        // A retry of an accepted submission is answered with its task
        // whatever the queue holds now (its own task may be what fills it).
        let replay = match idempotency_key {
            Some(key) => self.store.idempotency_key_used(tenant, key).await?,
            None => false,
        };
        if queued >= i64::from(q.max_queued_tasks) && !replay {
            self.count_quota_refusal(&task, v.config.mode);
            return Err(SchedError::QuotaExceeded(format!(
                "tenant {tenant:?} already has {queued} tasks queued, its max_queued_tasks quota"
            )));
        }
        // What makes two submissions "the same request" for an idempotency
        // key: the function, what the function is told, and the body.
        let mut digest = sha2::Sha256::new();
        for part in [
            &task.function,
            &task.request.method,
            &task.request.path,
            &task.request.query,
            task.request.content_type.as_deref().unwrap_or_default(),
        ] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part.as_bytes());
        }
        let mut writer = self.payloads.create(task.id, PayloadKind::Input, 0)?;
        // A client that stops sending mid-upload must not hold a file and a
        // connection open forever.
        loop {
            let idle = self.cfg.upload_idle_timeout;
            let next = tokio::time::timeout(idle, body.next()).await;
            let chunk = match next {
                Ok(Some(chunk)) => chunk.map_err(SchedError::InputAborted)?,
                Ok(None) => break,
                Err(_) => {
                    return Err(SchedError::InputAborted(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no data for {}s", idle.as_secs_f32()),
                    )));
                }
            };
            if writer.written() + chunk.len() as u64 > limit {
                return Err(SchedError::InputTooLarge(limit));
            }
            digest.update(&chunk);
            writer.write(&chunk).await?;
        }
        let size = writer.commit().await?;
        task.input_bytes = i64::try_from(size).ok();
        task.request.content_length = Some(size);
        let inserted = match idempotency_key {
            None => self.store.insert_task(&task).await.map(|()| None),
            Some(key) => {
                let digest = hex::encode(digest.finalize());
                self.store
                    .insert_task_idempotent(&task, key, &digest)
                    .await
                    .map(Some)
            }
        };
        match inserted {
            Ok(None | Some(Idempotent::Inserted)) => crate::journal::queued(&task),
            Ok(Some(Idempotent::Existing {
                task: first,
                same_request,
            })) => {
                let _ = self.payloads.remove(task.id).await;
                if !same_request {
                    return Err(SchedError::IdempotencyConflict(
                        idempotency_key.unwrap_or_default().to_owned(),
                    ));
                }
                return Ok(Submitted {
                    task: *first,
                    replayed: true,
                });
            }
            Err(e) => {
                let _ = self.payloads.remove(task.id).await;
                return Err(e.into());
            }
        }
        self.wake.notify_one();
        self.announce_queued();
        Ok(Submitted {
            task,
            replayed: false,
        })
    }
}
