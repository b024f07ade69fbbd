//! Write and read throughput of one large blob, for the record:
//!
//! ```text
//! cargo run -p berth-blobs --release --example throughput -- local [MIB] [ROUNDS]
//! cargo run -p berth-blobs --release --example throughput -- s3://BUCKET/PREFIX [MIB] [ROUNDS]
//! ```
//!
//! `local` is a fresh temporary directory (durable commits: fsync included);
//! an `s3://` URL takes its endpoint and credentials from the `AWS_*`
//! environment (`. scripts/seaweed.sh && seaweed_start` sets them for a
//! loopback SeaweedFS). The write is timed until commit returns; the read
//! streams the blob and counts it, holding one chunk at a time.

use std::time::Instant;

use berth_blobs::Blobs;
use futures::StreamExt;

const MIB: usize = 1024 * 1024;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let target = args.first().map(String::as_str).unwrap_or("local");
    let mib: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let rounds: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);

    let tempdir = tempfile::tempdir()?;
    let blobs = if target == "local" {
        Blobs::local(tempdir.path())?
    } else {
        Blobs::from_url(target)?
    };
    println!("{blobs:?}: {mib} MiB, {rounds} rounds, written in 1 MiB pieces");

    // Bytes that do not compress or repeat within a part.
    let piece: Vec<u8> = (0..MIB as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    let prefix = format!("bench/{}", std::process::id());
    for round in 0..rounds {
        let key = format!("{prefix}/{round}");

        let started = Instant::now();
        let mut writer = blobs.writer(&key)?;
        for _ in 0..mib {
            writer.write(&piece).await?;
        }
        let len = writer.commit().await?;
        let write = started.elapsed();

        let started = Instant::now();
        let blob = blobs
            .get(&key)
            .await?
            .ok_or("the blob just written is gone")?;
        let (mut read, mut chunks) = (0u64, 0u64);
        let mut stream = blob.stream;
        while let Some(chunk) = stream.next().await {
            read += chunk?.len() as u64;
            chunks += 1;
        }
        let elapsed = started.elapsed();
        assert_eq!(read, len);

        let rate = |secs: f64| len as f64 / MIB as f64 / secs;
        println!(
            "round {round}: write {:>7.1} MiB/s ({:.2} s)   read {:>7.1} MiB/s ({:.2} s, {chunks} chunks)",
            rate(write.as_secs_f64()),
            write.as_secs_f64(),
            rate(elapsed.as_secs_f64()),
            elapsed.as_secs_f64(),
        );
    }
    blobs.delete_prefix(&prefix).await?;
    Ok(())
}
