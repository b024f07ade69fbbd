//! The data directory: its layout, who may read it, and the files the
//! server keeps there besides the database and payloads (the admin key,
//! the node's id, the endpoint the local CLI reads).
//!
//! Everything in it is the server's alone: the directory is 0700 and every
//! file 0600, whoever created the directory (a script that made
//! `~/.berth` first leaves it 0755; the server tightens it at start, and
//! its umask keeps new files private).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::ServerError;

pub(crate) const ADMIN_KEY_FILE: &str = "admin.key";
pub(crate) const ENDPOINT_FILE: &str = "endpoint";
const NODE_ID_FILE: &str = "node-id";

/// Where `berth server` keeps its state unless told otherwise.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".berth")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::DataDir {
        path: path.to_owned(),
        source,
    }
}

/// Makes the directory (and parents) if needed and makes it, and the
/// files already in it, private to this user. From here on the process
/// creates files 0600 and directories 0700.
pub(crate) fn prepare(dir: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
    // Files an earlier version (or another umask) left readable.
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        let private = if meta.is_dir() { 0o700 } else { 0o600 };
        if meta.is_file() || meta.is_dir() {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & private))
                    .map_err(io_err(&path))?;
            }
        }
    }
    Ok(())
}

/// Writes a small file atomically, readable by this user only.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), ServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(io_err(path))
}

/// This node's stable identity in leases and container labels.
pub(crate) fn node_id(data_dir: &Path) -> Result<String, ServerError> {
    let path = data_dir.join(NODE_ID_FILE);
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let bytes: [u8; 8] = rand::random();
    let id = format!("node-{}", hex::encode(bytes));
    write_private(&path, &format!("{id}\n"))?;
    Ok(id)
}

/// The admin key: `BERTH_ADMIN_KEY` when set; otherwise the one in
/// `admin.key`, or a new one generated on first start and left there
/// (0600) for the local CLI. Returns the key and whether it was made now.
pub(crate) fn admin_key(data_dir: &Path) -> Result<(String, bool), ServerError> {
    if let Some(key) = std::env::var("BERTH_ADMIN_KEY")
        .ok()
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
    {
        return Ok((key, false));
    }
    let path = data_dir.join(ADMIN_KEY_FILE);
    if let Ok(key) = std::fs::read_to_string(&path) {
        let key = key.trim();
        if !key.is_empty() {
            return Ok((key.to_owned(), false));
        }
    }
    let key = berth_scheduler::generate_key();
    write_private(&path, &format!("{key}\n"))?;
    Ok((key, true))
}

/// Says where a new admin key is. The key itself is shown only on a
/// terminal: a server started by a script writes its stderr to a log file
/// that others may read, and the key is in `admin.key` anyway.
pub(crate) fn announce_new_key(data_dir: &Path, key: &str) {
    let path = data_dir.join(ADMIN_KEY_FILE);
    if std::io::stderr().is_terminal() {
        eprintln!(
            "berth: created the admin API key (shown once; also saved to {}):\n{key}",
            path.display()
        );
    } else {
        eprintln!(
            "berth: created the admin API key; it is in {} (readable by this user only)",
            path.display()
        );
    }
}

/// Moves task payloads from the layout of earlier versions (one file per
/// payload, `tasks/<xx>/<id>.in|.out|.log`) to the blob store's
/// (`tasks/<xx>/<id>/input`, `output.0`, `logs.0`: records of that time
/// have epoch 0). Idempotent, and quick when there is nothing to move.
pub(crate) fn upgrade_payload_layout(data_dir: &Path) -> Result<(), ServerError> {
    let tasks = data_dir.join("tasks");
    let Ok(shards) = std::fs::read_dir(&tasks) else {
        return Ok(());
    };
    for shard in shards.flatten() {
        let shard = shard.path();
        let Ok(files) = std::fs::read_dir(&shard) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some((id, suffix)) = name.rsplit_once('.') else {
                continue;
            };
            let new_name = match suffix {
                "in" => "input",
                "out" => "output.0",
                "log" => "logs.0",
                _ => continue,
            };
            if id.starts_with('.') || !path.is_file() {
                continue;
            }
            let dir = shard.join(id);
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            let to = dir.join(new_name);
            std::fs::rename(&path, &to).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_directory_made_by_someone_else_becomes_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = dir.join("berth.db");
        std::fs::write(&db, b"x").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
        // New files follow the umask set by `prepare`.
        let later = dir.join("later");
        std::fs::write(&later, b"x").unwrap();
        assert_eq!(mode(&later), 0o600);
        write_private(&dir.join("k"), "v").unwrap();
        assert_eq!(mode(&dir.join("k")), 0o600);
    }

    #[test]
    fn payloads_of_earlier_versions_move_to_the_blob_layout() {
        let root = tempfile::tempdir().unwrap();
        let shard = root.path().join("tasks/ab");
        std::fs::create_dir_all(&shard).unwrap();
        for (f, body) in [
            ("x.in", "i"),
            ("x.out", "o"),
            ("x.log", "l"),
            (".x.out.tmp", "t"),
        ] {
            std::fs::write(shard.join(f), body).unwrap();
        }
        upgrade_payload_layout(root.path()).unwrap();
        upgrade_payload_layout(root.path()).unwrap();
        let read = |p: &str| std::fs::read_to_string(shard.join(p)).unwrap();
        assert_eq!(read("x/input"), "i");
        assert_eq!(read("x/output.0"), "o");
        assert_eq!(read("x/logs.0"), "l");
        assert!(!shard.join("x.in").exists());
    }
}
