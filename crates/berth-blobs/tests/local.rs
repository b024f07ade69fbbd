//! The local backend's own promises: a commit is on disk (file and
//! directory synced) before it returns, and a blob is a plain file under
//! the root.
//!
//! Durability cannot be seen from inside the process (a synced and an
//! unsynced file read back alike until the power goes), so the first test
//! runs its writes again in a child process under `strace` and reads the
//! order of the system calls: the staged file is fsynced, then renamed or
//! linked into place, then its directory fsynced, all before commit
//! returns. Without strace it fails, unless `BERTH_TEST_STRACE=skip`.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_blobs::{Blobs, PART_SIZE};

const CHILD: &str = "BERTH_BLOBS_TRACED_ROOT";
const THIS_TEST: &str = "a_local_commit_is_synced_before_it_returns";

#[test]
fn a_local_commit_is_synced_before_it_returns() {
    if let Ok(root) = std::env::var(CHILD) {
        return write_under_trace(Path::new(&root));
    }
    if Command::new("strace").arg("-V").output().is_err() {
        if std::env::var("BERTH_TEST_STRACE").as_deref() == Ok("skip") {
            eprintln!("skipped: BERTH_TEST_STRACE=skip");
            return;
        }
        panic!(
            "strace is not installed (scripts/test.sh installs it); BERTH_TEST_STRACE=skip skips this"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap().join("blobs");
    let log = dir.path().join("strace.log");
    let traced = Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "signal=none"])
        .args([
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2,link,linkat",
        ])
        .arg("-o")
        .arg(&log)
        .arg(std::env::current_exe().unwrap())
        .args([THIS_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, &root)
        .output()
        .expect("strace runs");
    assert!(
        traced.status.success(),
        "the traced writes failed ({}):\n{}\n{}",
        traced.status,
        String::from_utf8_lossy(&traced.stdout),
        String::from_utf8_lossy(&traced.stderr)
    );
    let trace = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = trace.lines().collect();
    let root = root.display().to_string();
    // A small blob is one create-only put: published by a hard link.
    synced_before_return(&lines, &root, "small", "link", "committed-small");
    // A large one is a multipart upload: published by a rename.
    synced_before_return(&lines, &root, "large", "rename", "committed-large");
}

/// The child's part: two commits, each followed by a marker rename that
/// shows in the trace where commit had returned.
fn write_under_trace(root: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let blobs = Blobs::local(root).unwrap();
        let marker = |name: &str| root.parent().unwrap().join(name);
        std::fs::write(marker("marker"), b"").unwrap();

        let mut small = blobs.writer("small/blob").unwrap();
        small.write(b"a small blob").await.unwrap();
        small.commit().await.unwrap();
        std::fs::rename(marker("marker"), marker("committed-small")).unwrap();

        let mut large = blobs.writer("large/blob").unwrap();
        let piece = vec![7u8; 1024 * 1024];
        while large.written() <= PART_SIZE as u64 {
            large.write(&piece).await.unwrap();
        }
        large.commit().await.unwrap();
        std::fs::rename(marker("committed-small"), marker("committed-large")).unwrap();
    });
}

/// In the trace: the staged `<dir>/blob#N` fsynced, then published to
/// `<dir>/blob` by `publish`, then `<dir>` fsynced, then the marker.
fn synced_before_return(lines: &[&str], root: &str, dir: &str, publish: &str, marker: &str) {
    let find = |from: usize, what: &dyn Fn(&str) -> bool, name: &str| -> usize {
        lines[from..]
            .iter()
            .position(|l| what(l))
            .map(|i| from + i)
            .unwrap_or_else(|| {
                panic!(
                    "{dir}: no {name} after line {from} in:\n{}",
                    lines.join("\n")
                )
            })
    };
    let staged = format!("<{root}/{dir}/blob#");
    let target = format!("\"{root}/{dir}/blob\"");
    let directory = format!("<{root}/{dir}>)");
    let marker = format!("/{marker}\"");
    let file_sync = find(
        0,
        &|l| l.contains("fsync(") && l.contains(&staged),
        "fsync of the staged file",
    );
    let published = find(
        file_sync,
        &|l| l.contains(publish) && l.contains(&target),
        "publish",
    );
    let dir_sync = find(
        published,
        &|l| l.contains("fsync(") && l.contains(&directory),
        "fsync of the directory",
    );
    let returned = find(
        0,
        &|l| l.contains("rename") && l.contains(&marker),
        "return of commit",
    );
    assert!(
        dir_sync < returned,
        "{dir}: commit returned before the directory was synced"
    );
}

#[test]
fn a_local_blob_is_a_plain_file_under_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().join("store");
    let blobs = Blobs::from_url(&format!("file://{}", root.display())).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut w = blobs.writer("tasks/ab/id/input").unwrap();
        w.write(b"on disk").await.unwrap();
        w.commit().await.unwrap();
        let file = root.join("tasks/ab/id/input");
        assert_eq!(std::fs::read(&file).unwrap(), b"on disk");
        let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["input"], "no staged file is left beside it");

        // Deleting the last blob of a directory removes the empty
        // directories up to the root, so shards do not pile up empty.
        blobs.delete("tasks/ab/id/input").await.unwrap();
        assert!(!root.join("tasks").exists());
        assert!(root.is_dir());
    });
}
