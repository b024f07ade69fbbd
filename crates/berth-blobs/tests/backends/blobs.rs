//! Blob cases: each takes a fresh [`Backend`] and states one behaviour.

use std::time::{SystemTime, UNIX_EPOCH};

use berth_blobs::{BlobError, PART_SIZE};
use futures::StreamExt;

use crate::harness::{Backend, check_pattern, keys, pattern, read_all, write_pattern};

/// Over the multipart threshold by more than two parts and a bit, so the
/// first, middle and last parts all differ in how they are cut.
const LARGE: u64 = 2 * PART_SIZE as u64 + 3 * 1024 * 1024 + 123;

pub async fn a_small_blob_round_trips(b: Backend) {
    let mut w = b.blobs.writer("a/small").unwrap();
    w.write(b"hello ").await.unwrap();
    w.write(b"world").await.unwrap();
    assert_eq!(w.written(), 11);
    assert_eq!(w.commit().await.unwrap(), 11);
    assert_eq!(b.blobs.head("a/small").await.unwrap(), Some(11));
    let got = b.blobs.get("a/small").await.unwrap().unwrap();
    assert_eq!(read_all(got).await, b"hello world");

    b.blobs.put("a/put", &b"in one go"[..], true).await.unwrap();
    let got = b.blobs.get("a/put").await.unwrap().unwrap();
    assert_eq!(read_all(got).await, b"in one go");

    let w = b.blobs.writer("a/empty").unwrap();
    assert_eq!(w.commit().await.unwrap(), 0);
    assert_eq!(b.blobs.head("a/empty").await.unwrap(), Some(0));
    b.assert_no_staging().await;
}

pub async fn a_large_blob_round_trips_through_multipart(b: Backend) {
    let mut w = b.blobs.writer("a/large").unwrap();
    // An odd piece size, so parts never line up with writes.
    write_pattern(&mut w, 1, LARGE, 1024 * 1024 + 7).await;
    assert_eq!(w.written(), LARGE);
    assert_eq!(w.commit().await.unwrap(), LARGE);
    assert_eq!(b.blobs.head("a/large").await.unwrap(), Some(LARGE));
    let got = b.blobs.get("a/large").await.unwrap().unwrap();
    check_pattern(got, 1, 0, LARGE).await;
    b.assert_no_staging().await;
}

pub async fn nothing_is_visible_before_commit(b: Backend) {
    let mut small = b.blobs.writer("v/small").unwrap();
    small.write(b"not yet").await.unwrap();
    let mut large = b.blobs.writer("v/large").unwrap();
    write_pattern(&mut large, 2, LARGE, 512 * 1024).await;
    // The large one is past the threshold: its parts are in the store.
    assert!(!b.staging().await.is_empty(), "the large write is staged");

    for key in ["v/small", "v/large"] {
        assert_eq!(b.blobs.head(key).await.unwrap(), None, "{key}");
        assert!(b.blobs.get(key).await.unwrap().is_none(), "{key}");
    }
    assert!(keys(&b.blobs, "").await.is_empty());

    small.commit().await.unwrap();
    large.commit().await.unwrap();
    assert_eq!(keys(&b.blobs, "").await, ["v/large", "v/small"]);
    assert_eq!(b.blobs.head("v/large").await.unwrap(), Some(LARGE));
}

pub async fn a_dropped_writer_leaves_nothing(b: Backend) {
    let mut small = b.blobs.writer("d/small").unwrap();
    small.write(b"abandoned").await.unwrap();
    drop(small);

    let mut large = b.blobs.writer("d/large").unwrap();
    write_pattern(&mut large, 3, LARGE, 1024 * 1024).await;
    assert!(!b.staging().await.is_empty(), "the large write is staged");
    drop(large);
    b.assert_no_staging().await;

    let mut aborted = b.blobs.writer("d/aborted").unwrap();
    write_pattern(&mut aborted, 4, LARGE, 1024 * 1024).await;
    aborted.abort().await;
    assert!(b.staging().await.is_empty(), "abort waits for the cleanup");

    assert!(keys(&b.blobs, "").await.is_empty());
    for key in ["d/small", "d/large", "d/aborted"] {
        assert_eq!(b.blobs.head(key).await.unwrap(), None, "{key}");
    }
}

pub async fn create_only_refuses_a_second_create(b: Backend) {
    b.blobs.put("c/k", &b"first"[..], true).await.unwrap();
    let again = b.blobs.put("c/k", &b"second"[..], true).await;
    assert!(
        matches!(again, Err(BlobError::AlreadyExists { .. })),
        "{again:?}"
    );

    let mut w = b.blobs.writer("c/k").unwrap();
    w.write(b"small rival").await.unwrap();
    let small = w.commit().await;
    assert!(
        matches!(small, Err(BlobError::AlreadyExists { .. })),
        "{small:?}"
    );

    let mut w = b.blobs.writer("c/k").unwrap();
    write_pattern(&mut w, 5, LARGE, 1024 * 1024).await;
    let large = w.commit().await;
    assert!(
        matches!(large, Err(BlobError::AlreadyExists { .. })),
        "{large:?}"
    );

    let got = b.blobs.get("c/k").await.unwrap().unwrap();
    assert_eq!(read_all(got).await, b"first", "the first create stands");
    b.assert_no_staging().await;

    // Overwriting is a put's explicit choice.
    b.blobs.put("c/k", &b"replaced"[..], false).await.unwrap();
    let got = b.blobs.get("c/k").await.unwrap().unwrap();
    assert_eq!(read_all(got).await, b"replaced");
}

pub async fn concurrent_writers_of_different_keys(b: Backend) {
    let sizes = [100 * 1024, LARGE, 3 * 1024 * 1024, PART_SIZE as u64 + 1];
    let mut tasks = tokio::task::JoinSet::new();
    for (seed, len) in sizes.into_iter().enumerate() {
        let blobs = b.blobs.clone();
        tasks.spawn(async move {
            let mut w = blobs.writer(&format!("w/{seed}")).unwrap();
            write_pattern(&mut w, seed as u64, len, 256 * 1024).await;
            assert_eq!(w.commit().await.unwrap(), len);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    for (seed, len) in sizes.into_iter().enumerate() {
        let got = b.blobs.get(&format!("w/{seed}")).await.unwrap().unwrap();
        check_pattern(got, seed as u64, 0, len).await;
    }
    b.assert_no_staging().await;
}

pub async fn a_large_blob_reads_as_a_stream_of_chunks(b: Backend) {
    let mut w = b.blobs.writer("s/large").unwrap();
    write_pattern(&mut w, 6, LARGE, 4 * 1024 * 1024).await;
    w.commit().await.unwrap();
    let got = b.blobs.get("s/large").await.unwrap().unwrap();
    let streamed = check_pattern(got, 6, 0, LARGE).await;
    assert!(streamed.chunks >= 16, "{streamed:?}");
    assert!(streamed.largest <= 1024 * 1024, "{streamed:?}");
}

pub async fn ranges_read_a_slice(b: Backend) {
    b.blobs.put("r/k", pattern(7, 0..1000), true).await.unwrap();
    let got = b.blobs.get_range("r/k", 10..20).await.unwrap().unwrap();
    check_pattern(got, 7, 10, 10).await;
    let tail = b.blobs.get_range("r/k", 990..2000).await.unwrap().unwrap();
    check_pattern(tail, 7, 990, 10).await;
    assert!(
        b.blobs
            .get_range("r/missing", 0..1)
            .await
            .unwrap()
            .is_none()
    );
    assert!(b.blobs.get_range("r/k", 2000..3000).await.is_err());
}

pub async fn missing_blobs_read_as_none_and_delete_quietly(b: Backend) {
    assert!(b.blobs.get("m/none").await.unwrap().is_none());
    assert_eq!(b.blobs.head("m/none").await.unwrap(), None);
    b.blobs.delete("m/none").await.unwrap();
    let copy = b.blobs.copy("m/none", "m/other").await;
    assert!(matches!(copy, Err(BlobError::NotFound { .. })), "{copy:?}");
    for bad in ["", "/m", "m/", "m//x", "m/../x", "m/x#1"] {
        let got = b.blobs.head(bad).await;
        assert!(
            matches!(got, Err(BlobError::InvalidKey { .. })),
            "{bad:?}: {got:?}"
        );
    }
}

pub async fn delete_prefix_removes_only_what_is_under_it(b: Backend) {
    for key in ["a/1", "a/2", "a/b/3", "ab/4", "c"] {
        b.blobs.put(key, &b"x"[..], true).await.unwrap();
    }
    assert_eq!(b.blobs.delete_prefix("a").await.unwrap(), 3);
    assert_eq!(keys(&b.blobs, "").await, ["ab/4", "c"]);
    assert_eq!(b.blobs.delete_prefix("a/").await.unwrap(), 0);
    let everything = b.blobs.delete_prefix("").await;
    assert!(
        matches!(everything, Err(BlobError::InvalidKey { .. })),
        "{everything:?}"
    );
    b.blobs.delete("c").await.unwrap();
    assert_eq!(keys(&b.blobs, "").await, ["ab/4"]);
}

pub async fn list_reports_keys_sizes_and_times(b: Backend) {
    let before = now_ms();
    b.blobs.put("l/x/1", &b"abc"[..], true).await.unwrap();
    b.blobs.put("l/x/2", &b"abcde"[..], true).await.unwrap();
    b.blobs.put("l/y", &b""[..], true).await.unwrap();
    let after = now_ms();

    let mut listed: Vec<_> = b
        .blobs
        .list("l/x")
        .map(|m| m.unwrap())
        .collect::<Vec<_>>()
        .await;
    listed.sort_by(|p, q| p.key.cmp(&q.key));
    let brief: Vec<_> = listed.iter().map(|m| (m.key.as_str(), m.len)).collect();
    assert_eq!(brief, [("l/x/1", 3), ("l/x/2", 5)]);
    for meta in &listed {
        // S3 keeps whole seconds; the store runs on this machine's clock.
        assert!(
            meta.modified_ms >= before - 1000 && meta.modified_ms <= after + 1000,
            "{meta:?} outside {before}..{after}"
        );
    }
    assert_eq!(keys(&b.blobs, "l").await, ["l/x/1", "l/x/2", "l/y"]);
    assert!(keys(&b.blobs, "nothing").await.is_empty());
}

pub async fn copy_duplicates_a_blob(b: Backend) {
    b.blobs.put("p/src", &b"payload"[..], true).await.unwrap();
    b.blobs.copy("p/src", "p/dst").await.unwrap();
    b.blobs.delete("p/src").await.unwrap();
    let got = b.blobs.get("p/dst").await.unwrap().unwrap();
    assert_eq!(read_all(got).await, b"payload");
    assert_eq!(keys(&b.blobs, "p").await, ["p/dst"]);
}

fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_millis()).unwrap()
}
