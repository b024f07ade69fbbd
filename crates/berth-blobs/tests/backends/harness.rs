//! A fresh, empty store per test on either backend, a look at what a
//! backend keeps of unfinished writes, and blob contents that can be
//! checked as they stream by.

use std::time::{Duration, Instant};

use berth_blobs::{Blob, BlobWriter, Blobs};
use futures::StreamExt;

/// Set by `scripts/seaweed.sh`: `s3://BUCKET/PREFIX`, with the `AWS_*`
/// variables beside it.
const S3_URL: &str = "BERTH_TEST_S3_URL";
/// `skip` is the only way to run without SeaweedFS, and says so.
const S3_SKIP: &str = "BERTH_TEST_S3";

pub struct Backend {
    pub blobs: Blobs,
    kind: Kind,
}

enum Kind {
    Local(tempfile::TempDir),
    S3 { bucket: String, prefix: String },
}

impl Backend {
    pub fn local() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = Blobs::local(dir.path()).expect("local blobs");
        Self {
            blobs,
            kind: Kind::Local(dir),
        }
    }

    /// A store under a prefix no other test uses; `None` only when the S3
    /// tests were skipped on purpose.
    pub fn s3() -> Option<Self> {
        let Ok(url) = std::env::var(S3_URL) else {
            if std::env::var(S3_SKIP).as_deref() == Ok("skip") {
                eprintln!("S3 backend skipped: {S3_SKIP}=skip");
                return None;
            }
            panic!(
                "{S3_URL} is not set: run the suite through scripts/test.sh, or source \
                 scripts/seaweed.sh and call seaweed_start; set {S3_SKIP}=skip to skip \
                 the S3 backend deliberately"
            );
        };
        let rest = url.strip_prefix("s3://").expect("an s3:// URL");
        let (bucket, base) = rest.split_once('/').unwrap_or((rest, ""));
        let fresh = uuid::Uuid::now_v7().simple().to_string();
        let prefix = [base.trim_matches('/'), &fresh]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        let blobs = Blobs::from_url(&format!("s3://{bucket}/{prefix}")).expect("s3 blobs");
        Some(Self {
            blobs,
            kind: Kind::S3 {
                bucket: bucket.into(),
                prefix,
            },
        })
    }

    /// What the backend keeps of writes not yet committed: the local
    /// store's staged `KEY#N` files, or S3's open multipart uploads.
    pub async fn staging(&self) -> Vec<String> {
        match &self.kind {
            Kind::Local(dir) => staged_files(dir.path()),
            Kind::S3 { bucket, prefix } => open_uploads(bucket, prefix).await,
        }
    }

    /// Waits (the abort of a dropped writer runs in the background) until
    /// no staging is left, and fails if some stays.
    pub async fn assert_no_staging(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.staging().await;
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "staging left behind: {left:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn staged_files(root: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().contains('#') {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// ListMultipartUploads under `prefix`, signed by curl (object_store has no
/// call for it). Query parameters in sorted order: SeaweedFS checks the
/// signature over them as sent.
async fn open_uploads(bucket: &str, prefix: &str) -> Vec<String> {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let url = format!(
        "{}/{bucket}?prefix={}%2F&uploads=",
        var("AWS_ENDPOINT_URL"),
        prefix.replace('/', "%2F")
    );
    let out = tokio::process::Command::new("curl")
        .arg("-sS")
        .arg("--fail-with-body")
        .arg("--aws-sigv4")
        .arg(format!("aws:amz:{}:s3", var("AWS_REGION")))
        .arg("--user")
        .arg(format!(
            "{}:{}",
            var("AWS_ACCESS_KEY_ID"),
            var("AWS_SECRET_ACCESS_KEY")
        ))
        .arg(&url)
        .output()
        .await
        .expect("curl (scripts/host.sh installs it)");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "listing uploads failed: {body}");
    assert!(body.contains("<ListMultipartUploadsResult"), "{body}");
    // Filtered here too, in case a store ignores `prefix`: other tests'
    // uploads in flight are none of this one's business.
    let mine = format!("{prefix}/");
    body.split("<Upload>")
        .skip(1)
        .map(|upload| {
            let key = upload.split("<Key>").nth(1).unwrap_or("");
            key.split("</Key>").next().unwrap_or("").to_owned()
        })
        .filter(|key| key.starts_with(&mine))
        .collect()
}

/// Byte `i` of the blob seeded `seed`: cheap, and different at every
/// offset and for every seed, so a misplaced or swapped part shows.
pub fn byte_at(seed: u64, i: u64) -> u8 {
    let x = (i ^ seed.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

pub fn pattern(seed: u64, range: std::ops::Range<u64>) -> Vec<u8> {
    range.map(|i| byte_at(seed, i)).collect()
}

/// Writes `len` bytes of `seed` in pieces of `piece` bytes.
pub async fn write_pattern(writer: &mut BlobWriter, seed: u64, len: u64, piece: u64) {
    let mut at = 0;
    while at < len {
        let end = (at + piece).min(len);
        writer.write(&pattern(seed, at..end)).await.expect("write");
        at = end;
    }
}

/// What streaming a blob showed: how many chunks, the largest one.
#[derive(Debug)]
pub struct Streamed {
    pub chunks: usize,
    pub largest: usize,
}

/// Checks a blob against `seed` from `start` chunk by chunk, never holding
/// more than one chunk.
pub async fn check_pattern(blob: Blob, seed: u64, start: u64, len: u64) -> Streamed {
    assert_eq!(blob.len, len, "announced length");
    let mut stream = blob.stream;
    let (mut at, mut chunks, mut largest) = (start, 0, 0);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        for (k, b) in chunk.iter().enumerate() {
            assert_eq!(*b, byte_at(seed, at + k as u64), "byte {}", at + k as u64);
        }
        at += chunk.len() as u64;
        chunks += 1;
        largest = largest.max(chunk.len());
    }
    assert_eq!(at - start, len, "bytes streamed");
    Streamed { chunks, largest }
}

/// A small blob's bytes.
pub async fn read_all(blob: Blob) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = blob.stream;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(out.len() as u64, blob.len, "announced length");
    out
}

/// Every key under `prefix`, sorted.
pub async fn keys(blobs: &Blobs, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = blobs
        .list(prefix)
        .map(|meta| meta.expect("list").key)
        .collect()
        .await;
    keys.sort();
    keys
}
