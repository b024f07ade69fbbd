//! Payload cases: task inputs, outputs and logs, named by task and epoch.

use berth_blobs::{BlobError, Payloads};
use berth_core::{PayloadKind, TaskId};

use crate::harness::{Backend, read_all};

async fn put(p: &Payloads, id: TaskId, kind: PayloadKind, epoch: i64, body: &[u8]) {
    let mut w = p.create(id, kind, epoch).unwrap();
    w.write(body).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), body.len() as u64);
}

async fn read(p: &Payloads, id: TaskId, kind: PayloadKind, epoch: i64) -> Option<Vec<u8>> {
    match p.open(id, kind, epoch).await.unwrap() {
        Some(blob) => Some(read_all(blob).await),
        None => None,
    }
}

pub async fn payloads_round_trip_once_committed(b: Backend) {
    let p = Payloads::new(b.blobs.clone());
    let id = TaskId::new();
    let mut w = p.create(id, PayloadKind::Input, 0).unwrap();
    w.write(b"hello ").await.unwrap();
    w.write(b"world").await.unwrap();
    assert_eq!(w.written(), 11);
    assert_eq!(read(&p, id, PayloadKind::Input, 0).await, None);
    assert_eq!(w.commit().await.unwrap(), 11);
    assert_eq!(
        read(&p, id, PayloadKind::Input, 0).await.unwrap(),
        b"hello world"
    );

    put(&p, id, PayloadKind::Output, 1, b"out").await;
    put(&p, id, PayloadKind::Logs, 1, b"log").await;
    assert_eq!(read(&p, id, PayloadKind::Output, 1).await.unwrap(), b"out");
    assert_eq!(read(&p, id, PayloadKind::Logs, 1).await.unwrap(), b"log");

    // A dropped writer leaves nothing, as an abandoned upload must.
    let mut w = p.create(TaskId::new(), PayloadKind::Input, 0).unwrap();
    w.write(b"partial").await.unwrap();
    drop(w);
    b.assert_no_staging().await;
}

pub async fn payload_epochs_are_read_separately(b: Backend) {
    let p = Payloads::new(b.blobs.clone());
    let id = TaskId::new();
    put(&p, id, PayloadKind::Output, 1, b"stale attempt").await;
    put(&p, id, PayloadKind::Output, 2, b"current attempt").await;
    put(&p, id, PayloadKind::Logs, 2, b"current logs").await;
    assert_eq!(
        read(&p, id, PayloadKind::Output, 1).await.unwrap(),
        b"stale attempt"
    );
    assert_eq!(
        read(&p, id, PayloadKind::Output, 2).await.unwrap(),
        b"current attempt"
    );
    assert_eq!(read(&p, id, PayloadKind::Output, 3).await, None);
    assert_eq!(read(&p, id, PayloadKind::Logs, 1).await, None);

    // One epoch is one attempt: a second output under it is refused.
    let mut w = p.create(id, PayloadKind::Output, 2).unwrap();
    w.write(b"rival").await.unwrap();
    let rival = w.commit().await;
    assert!(
        matches!(rival, Err(BlobError::AlreadyExists { .. })),
        "{rival:?}"
    );

    // The input is written once, before any attempt: no epoch in its name.
    put(&p, id, PayloadKind::Input, 5, b"input").await;
    assert_eq!(read(&p, id, PayloadKind::Input, 9).await.unwrap(), b"input");
}

pub async fn removing_a_task_removes_every_epoch(b: Backend) {
    let p = Payloads::new(b.blobs.clone());
    let (id, other) = (TaskId::new(), TaskId::new());
    put(&p, id, PayloadKind::Input, 0, b"in").await;
    for epoch in [1, 2] {
        put(&p, id, PayloadKind::Output, epoch, b"out").await;
        put(&p, id, PayloadKind::Logs, epoch, b"log").await;
    }
    put(&p, other, PayloadKind::Input, 0, b"other").await;

    p.remove(id).await.unwrap();
    assert_eq!(read(&p, id, PayloadKind::Input, 0).await, None);
    for epoch in [1, 2] {
        assert_eq!(read(&p, id, PayloadKind::Output, epoch).await, None);
        assert_eq!(read(&p, id, PayloadKind::Logs, epoch).await, None);
    }
    assert_eq!(
        read(&p, other, PayloadKind::Input, 0).await.unwrap(),
        b"other"
    );
    p.remove(id).await.unwrap();
    let left: Vec<_> = crate::harness::keys(&b.blobs, "").await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with(&format!("{other}/input")), "{left:?}");
}
