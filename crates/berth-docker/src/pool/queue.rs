//! Who waits, when their wait calls for another instance, and how the
//! wait reads afterwards.
//!
//! Starting an instance costs a full start (a container, and in http mode
//! the program's own start-up, a model load say), so it pays only for a
//! request that would otherwise wait longer. Each waiter therefore gets a
//! patience when it joins the queue:
//!
//! - no instance ready (cold): none; it counts towards a start at once;
//! - behind busy instances: the time the busy slots are expected to take
//!   to reach it — the moving average of how long requests hold a slot,
//!   times the rounds of slots ahead of it — doubled to absorb ordinary
//!   variance; at least 1 ms, at most the moving average of instance start
//!   times and never more than 1 s, so slow functions still scale
//!   promptly. Unknown request times count as that upper bound. When the
//!   expected wait is already longer than a start, a start is due at once.
//!
//! A waiter counts towards a start once its patience has run out, it is
//! still waiting (callers that gave up do not count), and a start could
//! still help it: when both averages are known, the busy slots ahead of it
//! must be expected to take at least as long as a start, measured from
//! where it stands in the queue now. Otherwise (a slow machine made the
//! first estimate short, say) its patience is renewed and the pool looks
//! again later. The pool looks again when the next waiter's patience runs
//! out. An instance is started for
//! the oldest waiter that counts and that the slots already on the way do
//! not cover; whichever instance becomes ready serves the oldest waiters.
//!
//! The wait is then reported as `queue` (a slot on an instance that was
//! already running, or that another request caused to start) or `start`
//! (an instance started for this request, from the moment it was asked
//! for): a waiter an instance was started for, served by an instance that
//! became ready after that, waited `queue` until the start was asked for
//! and `start` from then on; every other wait is all `queue`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use berth_executor::ExecError;

/// The least patience: re-checks never spin.
const MIN_PATIENCE: Duration = Duration::from_millis(1);
/// The most patience, whatever starts cost.
const MAX_PATIENCE: Duration = Duration::from_secs(1);
/// How many expected waits a waiter waits before it counts.
const SLACK: u32 = 2;

/// How a request's wait for its slot divides (Server-Timing's `queue` and
/// `start`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Wait {
    /// For a slot on an instance already running, or one that another
    /// request caused to start.
    pub queued: Duration,
    /// For an instance started for this request.
    pub start: Duration,
}

/// What a waiter is handed: an instance with a slot already counted for
/// it, and how its wait divides.
pub(super) struct Served<I> {
    pub instance: Arc<I>,
    pub wait: Wait,
}

/// A request waiting for a slot.
pub(super) struct Waiter<I> {
    pub tx: oneshot::Sender<Result<Served<I>, ExecError>>,
    /// When it joined the queue.
    since: Instant,
    /// From when it counts towards starting another instance.
    due: Instant,
    /// When an instance was first started for it, if one was.
    pub started_for: Option<Instant>,
}

impl<I> Waiter<I> {
    pub fn new(
        now: Instant,
        patience: Duration,
    ) -> (Self, oneshot::Receiver<Result<Served<I>, ExecError>>) {
        let (tx, rx) = oneshot::channel();
        let waiter = Self {
            tx,
            since: now,
            due: now + patience,
            started_for: None,
        };
        (waiter, rx)
    }

    /// Whether its caller still waits.
    pub fn is_live(&self) -> bool {
        !self.tx.is_closed()
    }

    /// When it starts to count towards another instance.
    pub fn due(&self) -> Instant {
        self.due
    }

    /// Waits `patience` more before counting again.
    pub fn renew(&mut self, now: Instant, patience: Duration) {
        self.due = now + patience.max(MIN_PATIENCE);
    }

    /// How its wait divides, served now by an instance ready since
    /// `ready_at`.
    pub fn wait(&self, ready_at: Instant, now: Instant) -> Wait {
        match self.started_for {
            Some(asked) if ready_at >= asked => Wait {
                queued: asked.saturating_duration_since(self.since),
                start: now.saturating_duration_since(asked),
            },
            _ => Wait {
                queued: now.saturating_duration_since(self.since),
                start: Duration::ZERO,
            },
        }
    }
}

/// A moving average that weighs each new sample 1/8.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Average(Option<Duration>);

impl Average {
    pub fn add(&mut self, sample: Duration) {
        self.0 = Some(match self.0 {
            None => sample,
            Some(avg) => avg.saturating_mul(7).saturating_add(sample) / 8,
        });
    }

    pub fn get(self) -> Option<Duration> {
        self.0
    }
}

/// Whether starting an instance now could serve a waiter with `ahead`
/// live waiters before it sooner than the `slots` busy slots will: only
/// when the rounds of requests ahead are expected to take at least a
/// start. Unknown averages give the start the benefit of the doubt.
pub(super) fn start_would_help(
    slots: usize,
    ahead: usize,
    held: Option<Duration>,
    start: Option<Duration>,
) -> bool {
    let (Some(held), Some(start)) = (held, start) else {
        return true;
    };
    if slots == 0 {
        return true;
    }
    let rounds = u32::try_from(ahead / slots + 1).unwrap_or(u32::MAX);
    held.saturating_mul(rounds) >= start
}

/// How long a request joining the queue waits before it counts towards
/// starting another instance, with `slots` busy slots on ready instances,
/// `ahead` waiters before it, requests holding a slot for `held` and
/// instances taking `start` to start, on average.
pub(super) fn patience(
    slots: usize,
    ahead: usize,
    held: Option<Duration>,
    start: Option<Duration>,
) -> Duration {
    if slots == 0 {
        return Duration::ZERO;
    }
    let most = start
        .unwrap_or(MAX_PATIENCE)
        .clamp(MIN_PATIENCE, MAX_PATIENCE);
    let Some(held) = held else {
        return most;
    };
    let rounds = u32::try_from(ahead / slots + 1).unwrap_or(u32::MAX);
    let expected = held.saturating_mul(rounds);
    if start.is_some_and(|start| expected >= start) {
        return Duration::ZERO;
    }
    expected.saturating_mul(SLACK).clamp(MIN_PATIENCE, most)
}
