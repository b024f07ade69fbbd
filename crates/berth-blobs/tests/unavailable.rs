//! A store that cannot be reached is reported as unavailable (a caller
//! answers 503 and retries later), not as a missing blob or a bug, and
//! within the client's bounded retries rather than after minutes.

use std::time::{Duration, Instant};

use berth_blobs::{BlobError, Blobs, PART_SIZE};

#[tokio::test]
async fn an_unreachable_s3_endpoint_is_unavailable() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{closed}");
    let settings = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "nobody"),
        ("AWS_SECRET_ACCESS_KEY", "nothing"),
    ];
    let blobs = Blobs::from_url_with("s3://bucket/prefix", settings).unwrap();
    let started = Instant::now();
    let head = blobs.head("k").await;
    assert!(matches!(head, Err(BlobError::Unavailable(_))), "{head:?}");
    let put = blobs.put("k", &b"x"[..], true).await;
    assert!(matches!(put, Err(BlobError::Unavailable(_))), "{put:?}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );

    // Past the threshold the writer must reach the store; when it cannot,
    // the writer is closed for good rather than carrying on with a hole.
    let mut w = blobs.writer("big").unwrap();
    let failed = w.write(&vec![0; PART_SIZE + 1]).await;
    assert!(
        matches!(failed, Err(BlobError::Unavailable(_))),
        "{failed:?}"
    );
    assert!(w.write(b"more").await.is_err());
    assert!(w.commit().await.is_err());
}
