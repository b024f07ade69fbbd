//! Task payloads (input, output, logs) as blobs.
//!
//! Bodies can be large, so they never go through the database; each is a
//! blob, streamed in and visible only once committed, so a reader sees
//! nothing or the whole body, and a committed input survives a crash (the
//! local backend syncs file and directory before commit returns).
//!
//! Keys: `tasks/<shard>/<task id>/input`, `.../output.<epoch>` and
//! `.../logs.<epoch>`. An attempt's output and logs are named by its epoch,
//! the fencing number of its claim: a replica that wakes after its lease
//! lapsed writes under its own, stale epoch, which no reader opens, so it
//! can never overwrite the attempt that replaced it; and since one epoch
//! names one attempt, the create-only write never meets a rival.

use berth_core::{PayloadKind, TaskId};

use crate::{Blob, BlobError, BlobWriter, Blobs};

/// Task payloads over a blob store.
#[derive(Debug, Clone)]
pub struct Payloads {
    blobs: Blobs,
}

impl Payloads {
    pub fn new(blobs: Blobs) -> Self {
        Self { blobs }
    }

    /// Starts writing a payload (`epoch` names the attempt and is ignored
    /// for [`PayloadKind::Input`], which is written once, before any
    /// attempt); nothing is visible until [`PayloadWriter::commit`].
    pub fn create(
        &self,
        id: TaskId,
        kind: PayloadKind,
        epoch: i64,
    ) -> Result<PayloadWriter, BlobError> {
        let writer = self.blobs.writer(&key(id, kind, epoch))?;
        Ok(PayloadWriter { writer })
    }

    /// Opens a committed payload; `None` when there is none.
    pub async fn open(
        &self,
        id: TaskId,
        kind: PayloadKind,
        epoch: i64,
    ) -> Result<Option<Blob>, BlobError> {
        self.blobs.get(&key(id, kind, epoch)).await
    }

    /// Removes every payload of the task, of every epoch.
    pub async fn remove(&self, id: TaskId) -> Result<(), BlobError> {
        self.blobs.delete_prefix(&task_dir(id)).await?;
        Ok(())
    }
}

/// A payload being written; dropping it before commit leaves nothing.
#[derive(Debug)]
pub struct PayloadWriter {
    writer: BlobWriter,
}

impl PayloadWriter {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.writer.write(data).await
    }

    pub fn written(&self) -> u64 {
        self.writer.written()
    }

    /// Makes the payload visible, whole and durable, and answers its length.
    pub async fn commit(self) -> Result<u64, BlobError> {
        self.writer.commit().await
    }
}

/// `tasks/<shard>/<id>`. UUIDv7 ids start with a timestamp, so the shard
/// comes from the random tail: consecutive tasks spread over 256 shards
/// (directories locally, key ranges on S3) instead of piling into one.
fn task_dir(id: TaskId) -> String {
    let id = id.to_string();
    let shard = &id[id.len() - 2..];
    format!("tasks/{shard}/{id}")
}

fn key(id: TaskId, kind: PayloadKind, epoch: i64) -> String {
    let dir = task_dir(id);
    match kind {
        PayloadKind::Input => format!("{dir}/input"),
        PayloadKind::Output => format!("{dir}/output.{epoch}"),
        PayloadKind::Logs => format!("{dir}/logs.{epoch}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_task_its_shard_and_the_epoch() {
        let id: TaskId = "0192f3a4-5b6c-7d8e-9f01-23456789abcd".parse().unwrap();
        let dir = "tasks/cd/0192f3a4-5b6c-7d8e-9f01-23456789abcd";
        assert_eq!(key(id, PayloadKind::Input, 7), format!("{dir}/input"));
        assert_eq!(key(id, PayloadKind::Input, 0), format!("{dir}/input"));
        assert_eq!(key(id, PayloadKind::Output, 7), format!("{dir}/output.7"));
        assert_eq!(key(id, PayloadKind::Logs, 12), format!("{dir}/logs.12"));
    }
}
