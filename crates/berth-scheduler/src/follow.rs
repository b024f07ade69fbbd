//! Following a task's logs or output while it runs.
//!
//! An attempt running in this process tees what it stores into a tap: the
//! last [`TAP_WINDOW`] bytes stay in memory (the executor's own frames,
//! shared, not copied) for whoever follows. A follower gets what the tap
//! holds from where it is, then each new piece as it is stored; once the
//! attempt is over, the rest comes from the stored payload, which holds
//! the same bytes. A follower that fell behind the window, or follows a
//! task another replica of a set runs, gets the rest from the stored
//! payload when the task ends. The tap never waits for a follower: a
//! function is never slowed by someone watching it.
//!
//! If the attempt followed ends without ending the task (its executor was
//! lost; the task runs again), the logs go on with a line that says so and
//! the logs of the attempt that ends the task; output cannot be taken
//! back, so its stream is cut off instead.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::{PayloadKind, TaskId, TaskKind, TaskRecord};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::{Payload, SchedError, TaskManager};

/// What a tap keeps for followers, per payload of a running attempt.
pub(crate) const TAP_WINDOW: u64 = 1024 * 1024;

/// How often a follower looks at the store while nothing runs here.
const POLL: Duration = Duration::from_millis(500);

/// The taps of the attempts running in this process.
#[derive(Default)]
pub(crate) struct Taps {
    map: Mutex<HashMap<Key, Arc<Tap>>>,
    /// Fired at shutdown: a follower of a task that goes on elsewhere
    /// must not hold the server open.
    closing: CancellationToken,
}

/// A task and which of its payloads: output 0, logs 1.
type Key = (TaskId, u8);

fn key(id: TaskId, kind: PayloadKind) -> Key {
    (id, u8::from(kind == PayloadKind::Logs))
}

struct Tap {
    epoch: i64,
    state: Mutex<TapState>,
    /// Bumped on every push and at the close.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct TapState {
    chunks: VecDeque<Bytes>,
    /// The offset of the first byte held.
    start: u64,
    /// The offset past the last byte held.
    end: u64,
    closed: bool,
}

/// The writing end of a tap; dropping it closes the tap.
pub(crate) struct TapWriter<'a> {
    taps: &'a Taps,
    key: Key,
    tap: Arc<Tap>,
}

impl Taps {
    pub(crate) fn open(&self, id: TaskId, kind: PayloadKind, epoch: i64) -> TapWriter<'_> {
        let tap = Arc::new(Tap {
            epoch,
            state: Mutex::new(TapState::default()),
            changed: watch::channel(0).0,
        });
        self.lock().insert(key(id, kind), Arc::clone(&tap));
        TapWriter {
            taps: self,
            key: key(id, kind),
            tap,
        }
    }

    /// Ends every follower's stream (cut off: their tasks have not ended
    /// here); at shutdown, once running work was handed back.
    pub(crate) fn close(&self) {
        self.closing.cancel();
    }

    fn get(&self, id: TaskId, kind: PayloadKind) -> Option<Arc<Tap>> {
        self.lock().get(&key(id, kind)).cloned()
    }

    /// Whether an attempt of the task stores that payload here now.
    #[cfg(test)]
    pub(crate) fn is_open(&self, id: TaskId, kind: PayloadKind) -> bool {
        self.get(id, kind).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Tap>>> {
        // Single inserts and removes: a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TapWriter<'_> {
    /// Adds what was just stored; the oldest pieces past the window go.
    pub(crate) fn push(&self, chunk: &Bytes) {
        if chunk.is_empty() {
            return;
        }
        {
            let mut s = self.tap.lock();
            s.end += chunk.len() as u64;
            s.chunks.push_back(chunk.clone());
            while s.end - s.start > TAP_WINDOW && s.chunks.len() > 1 {
                if let Some(old) = s.chunks.pop_front() {
                    s.start += old.len() as u64;
                }
            }
        }
        self.tap.changed.send_modify(|n| *n += 1);
    }
}

impl Drop for TapWriter<'_> {
    fn drop(&mut self) {
        self.tap.lock().closed = true;
        self.tap.changed.send_modify(|n| *n += 1);
        let mut map = self.taps.lock();
        if map
            .get(&self.key)
            .is_some_and(|t| Arc::ptr_eq(t, &self.tap))
        {
            map.remove(&self.key);
        }
    }
}

/// What a follower found in a tap.
enum Read {
    /// The bytes from its offset on (possibly none yet).
    Bytes(Vec<Bytes>),
    /// Its offset is no longer held.
    Behind,
}

impl Tap {
    fn lock(&self) -> std::sync::MutexGuard<'_, TapState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bytes held from `offset` on, and whether the tap is closed.
    fn read(&self, offset: u64) -> (Read, bool) {
        let s = self.lock();
        if offset < s.start {
            return (Read::Behind, s.closed);
        }
        let mut pos = s.start;
        let mut out = Vec::new();
        for c in &s.chunks {
            let len = c.len() as u64;
            if pos + len > offset {
                let skip = usize::try_from(offset.saturating_sub(pos)).unwrap_or(0);
                out.push(c.slice(skip..));
            }
            pos += len;
        }
        (Read::Bytes(out), s.closed)
    }
}

type Sender = mpsc::Sender<io::Result<Bytes>>;

/// How following a tap ended.
enum TapEnd {
    /// The attempt's stream ended: what comes next is in the store.
    Closed,
    /// The follower is behind the window.
    Behind,
    /// The follower went away.
    Gone,
    /// This server is stopping.
    ShuttingDown,
}

fn shutting_down() -> io::Error {
    io::Error::other("the server is shutting down before the task ended; follow it again")
}

impl TaskManager {
    /// A task's output or logs, followed while it runs: the answer
    /// streams until the task ends. A finished task's are its stored ones.
    pub async fn follow(
        self: &Arc<Self>,
        task: &TaskRecord,
        kind: PayloadKind,
    ) -> Result<Payload, SchedError> {
        if task.status.is_terminal() {
            return self.payload(task, kind).await;
        }
        if kind == PayloadKind::Output && task.kind == TaskKind::Sync {
            return Err(SchedError::NoPayload(
                "a sync call's output goes to its caller and is not stored",
            ));
        }
        let (tx, mut rx) = mpsc::channel(16);
        let this = Arc::clone(self);
        let (tenant, id) = (task.tenant.clone(), task.id);
        tokio::spawn(async move {
            let mut f = Follower {
                tm: &this,
                tenant,
                id,
                kind,
                tx,
                sent: 0,
                epoch: None,
                behind: false,
            };
            if let Err(e) = f.run().await {
                let _ = f.tx.send(Err(e)).await;
            }
        });
        Ok(Payload {
            len: None,
            body: Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx))),
        })
    }
}

struct Follower<'a> {
    tm: &'a TaskManager,
    tenant: String,
    id: TaskId,
    kind: PayloadKind,
    tx: Sender,
    /// Bytes of `epoch`'s payload sent so far.
    sent: u64,
    epoch: Option<i64>,
    /// Fell behind the tap of `epoch`: the rest comes from the store.
    behind: bool,
}

impl Follower<'_> {
    async fn run(&mut self) -> io::Result<()> {
        let mut finished = self.tm.finished.subscribe();
        loop {
            let task = self
                .tm
                .store
                .get_task(&self.tenant, self.id)
                .await
                .map_err(io::Error::other)?
                .ok_or_else(|| io::Error::other("the task is gone"))?;
            if task.status.is_terminal() {
                return self.rest_from_store(&task).await;
            }
            if let Some(tap) = self.tm.taps.get(self.id, self.kind) {
                if self.epoch != Some(tap.epoch) {
                    self.next_attempt().await?;
                    self.epoch = Some(tap.epoch);
                    self.behind = false;
                }
                if !self.behind {
                    match self.follow_tap(&tap).await {
                        TapEnd::Closed => continue,
                        TapEnd::Behind => self.behind = true,
                        TapEnd::Gone => return Ok(()),
                        TapEnd::ShuttingDown => return Err(shutting_down()),
                    }
                }
            }
            // Nothing to follow here: wait for the end, or for an attempt
            // to start in this process.
            let id = self.id;
            let wake = async {
                loop {
                    match finished.recv().await {
                        Ok(done) if done == id => return,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            };
            tokio::select! {
                () = wake => {}
                () = tokio::time::sleep(POLL) => {}
                () = self.tx.closed() => return Ok(()),
                () = self.tm.taps.closing.cancelled() => return Err(shutting_down()),
            }
        }
    }

    /// Another attempt is about to be followed than the one whose bytes
    /// were sent.
    async fn next_attempt(&mut self) -> io::Result<()> {
        if self.sent == 0 {
            return Ok(());
        }
        if self.kind == PayloadKind::Output {
            return Err(io::Error::other(
                "the attempt followed ended without a result and the task runs again; \
                 its output so far is not the task's",
            ));
        }
        let line = "\n[berth: the attempt ended without a result; \
                    the logs of the next attempt follow]\n";
        self.send(Bytes::from_static(line.as_bytes())).await;
        self.sent = 0;
        Ok(())
    }

    async fn follow_tap(&mut self, tap: &Tap) -> TapEnd {
        let mut changed = tap.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let (read, closed) = tap.read(self.sent);
            match read {
                Read::Behind => return TapEnd::Behind,
                Read::Bytes(chunks) => {
                    for c in chunks {
                        let len = c.len() as u64;
                        if !self.send(c).await {
                            return TapEnd::Gone;
                        }
                        self.sent += len;
                    }
                }
            }
            if closed {
                return TapEnd::Closed;
            }
            tokio::select! {
                r = changed.changed() => {
                    if r.is_err() {
                        return TapEnd::Closed;
                    }
                }
                () = self.tx.closed() => return TapEnd::Gone,
                () = self.tm.taps.closing.cancelled() => return TapEnd::ShuttingDown,
            }
        }
    }

    /// The stored payload of the attempt that ended the task, past what
    /// was sent live.
    async fn rest_from_store(&mut self, task: &TaskRecord) -> io::Result<()> {
        if self.epoch.is_some_and(|e| e != task.epoch) {
            self.next_attempt().await?;
        }
        let payload = self
            .tm
            .payload(task, self.kind)
            .await
            .map_err(io::Error::other)?;
        let mut skip = self.sent;
        let mut body = payload.body;
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk?;
            if skip > 0 {
                let n = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
                chunk = chunk.slice(n..);
                skip -= n as u64;
            }
            if !chunk.is_empty() && !self.send(chunk).await {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Whether the follower is still there.
    async fn send(&self, chunk: Bytes) -> bool {
        self.tx.send(Ok(chunk)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(chunks: Vec<Bytes>) -> String {
        String::from_utf8(chunks.concat()).unwrap()
    }

    #[test]
    fn a_tap_holds_a_window_and_reads_from_any_offset_in_it() {
        let taps = Taps::default();
        let id = TaskId::new();
        let w = taps.open(id, PayloadKind::Logs, 3);
        w.push(&Bytes::from_static(b"hello "));
        w.push(&Bytes::from_static(b"world"));
        let tap = taps.get(id, PayloadKind::Logs).unwrap();
        assert_eq!(tap.epoch, 3);
        match tap.read(3) {
            (Read::Bytes(c), false) => assert_eq!(text(c), "lo world"),
            _ => panic!("expected bytes"),
        }
        match tap.read(11) {
            (Read::Bytes(c), false) => assert!(c.is_empty()),
            _ => panic!("expected nothing yet"),
        }
        let big = Bytes::from(vec![b'x'; usize::try_from(TAP_WINDOW).unwrap()]);
        w.push(&big);
        assert!(matches!(tap.read(0), (Read::Behind, false)));
        match tap.read(11) {
            (Read::Bytes(c), false) => assert_eq!(c.concat().len(), big.len()),
            _ => panic!("the newest window is held"),
        }
        drop(w);
        assert!(tap.read(11).1, "closed");
        assert!(taps.get(id, PayloadKind::Logs).is_none(), "removed");
    }

    #[test]
    fn a_newer_tap_is_not_removed_by_an_older_one() {
        let taps = Taps::default();
        let id = TaskId::new();
        let old = taps.open(id, PayloadKind::Output, 1);
        let new = taps.open(id, PayloadKind::Output, 2);
        drop(old);
        assert_eq!(taps.get(id, PayloadKind::Output).unwrap().epoch, 2);
        drop(new);
        assert!(taps.get(id, PayloadKind::Output).is_none());
    }
}
