//! Task payloads (input, output, logs) as files beside the database.
//!
//! Bodies can be large, so they never go through SQL; each is written to a
//! temporary name, synced and renamed into place so a reader sees either
//! nothing or the whole file, and an acknowledged input survives a crash.

use std::io;
use std::path::{Path, PathBuf};

use berth_core::{PayloadKind, TaskId};
use tokio::fs::{self, File};
use tokio::io::AsyncWriteExt;

fn suffix(kind: PayloadKind) -> &'static str {
    match kind {
        PayloadKind::Input => "in",
        PayloadKind::Output => "out",
        PayloadKind::Logs => "log",
    }
}

#[derive(Debug, Clone)]
pub struct Payloads {
    root: PathBuf,
}

impl Payloads {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// UUIDv7 ids start with a timestamp, so the shard comes from the random
    /// tail to spread files over directories.
    fn dir(&self, id: TaskId) -> PathBuf {
        let s = id.to_string();
        self.root.join(&s[s.len() - 2..])
    }

    pub fn path(&self, id: TaskId, kind: PayloadKind) -> PathBuf {
        self.dir(id).join(format!("{id}.{}", suffix(kind)))
    }

    /// Starts writing a payload; nothing is visible until [`PayloadWriter::commit`].
    pub async fn create(&self, id: TaskId, kind: PayloadKind) -> io::Result<PayloadWriter> {
        let dir = self.dir(id);
        fs::create_dir_all(&dir).await?;
        let final_path = self.path(id, kind);
        let tmp_path = dir.join(format!(".{id}.{}.tmp", suffix(kind)));
        let file = File::create(&tmp_path).await?;
        Ok(PayloadWriter {
            file: Some(file),
            tmp_path,
            final_path,
            dir,
            written: 0,
        })
    }

    pub async fn open(&self, id: TaskId, kind: PayloadKind) -> io::Result<Option<File>> {
        match File::open(self.path(id, kind)).await {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn remove(&self, id: TaskId) -> io::Result<()> {
        for kind in [PayloadKind::Input, PayloadKind::Output, PayloadKind::Logs] {
            match fs::remove_file(self.path(id, kind)).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

pub struct PayloadWriter {
    file: Option<File>,
    tmp_path: PathBuf,
    final_path: PathBuf,
    dir: PathBuf,
    written: u64,
}

impl PayloadWriter {
    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let file = self.file.as_mut().ok_or_else(closed)?;
        file.write_all(data).await?;
        self.written += data.len() as u64;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Syncs the data, renames it into place and syncs the directory, so
    /// the payload outlives a power loss once this returns.
    pub async fn commit(mut self) -> io::Result<u64> {
        let mut file = self.file.take().ok_or_else(closed)?;
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        fs::rename(&self.tmp_path, &self.final_path).await?;
        sync_dir(&self.dir).await?;
        Ok(self.written)
    }
}

impl Drop for PayloadWriter {
    fn drop(&mut self) {
        // An abandoned write (client went away, body too large) must not
        // leave a temporary file behind.
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

fn closed() -> io::Error {
    io::Error::other("payload writer already committed")
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn commit_makes_visible_and_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = Payloads::new(dir.path());
        let id = TaskId::new();
        let mut w = p.create(id, PayloadKind::Input).await.unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(b"world").await.unwrap();
        assert!(p.open(id, PayloadKind::Input).await.unwrap().is_none());
        assert_eq!(w.commit().await.unwrap(), 11);
        let mut s = String::new();
        p.open(id, PayloadKind::Input)
            .await
            .unwrap()
            .unwrap()
            .read_to_string(&mut s)
            .await
            .unwrap();
        assert_eq!(s, "hello world");

        let id2 = TaskId::new();
        let mut w = p.create(id2, PayloadKind::Output).await.unwrap();
        w.write(b"partial").await.unwrap();
        drop(w);
        let leftovers: Vec<_> = std::fs::read_dir(p.dir(id2)).unwrap().collect();
        assert!(
            leftovers.iter().all(|e| !e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")),
            "temporary file left behind"
        );
        p.remove(id).await.unwrap();
        assert!(p.open(id, PayloadKind::Input).await.unwrap().is_none());
    }
}
