//! One version's pool: its instances and their slots, its waiters, and
//! the decisions that need nothing else (which slot, who is served, who
//! counts towards a start, which idle instances go).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::launcher::{Instance, PoolKey};
use super::queue::{self, Average, Served, Waiter};
use berth_executor::{ExecError, InstanceCount, PoolSettings, RunSpec};

pub(super) struct Slot<I> {
    pub instance: Arc<I>,
    pub in_flight: u32,
    pub last_used: Instant,
    /// When it became ready: tells a newly started instance from one that
    /// was already running when a waiter began waiting for a start.
    ready_at: Instant,
}

pub(super) struct Pool<I> {
    /// The latest request's spec: what a new instance is started from.
    pub template: RunSpec,
    pub settings: PoolSettings,
    pub ready: Vec<Slot<I>>,
    pub starting: u32,
    pub waiters: VecDeque<Waiter<I>>,
    pub retired: bool,
    /// How long requests hold a slot, from lease taken to lease dropped.
    pub held: Average,
    /// How long a launch takes, from asking to ready.
    pub start: Average,
    /// When the pending re-check of waiters' patience fires, if one is.
    pub recheck: Option<Instant>,
}

impl<I: Instance> Pool<I> {
    pub fn new(template: &RunSpec) -> Self {
        Self {
            settings: template.pool.clone(),
            template: template.clone(),
            ready: Vec::new(),
            starting: 0,
            waiters: VecDeque::new(),
            retired: false,
            held: Average::default(),
            start: Average::default(),
            recheck: None,
        }
    }

    /// The busiest ready instance that still has a free slot.
    pub fn pick(&self) -> Option<usize> {
        let cap = self.settings.concurrency;
        self.ready
            .iter()
            .enumerate()
            .filter(|(_, s)| s.in_flight < cap)
            .max_by_key(|(_, s)| s.in_flight)
            .map(|(i, _)| i)
    }

    pub fn total(&self) -> u32 {
        u32::try_from(self.ready.len()).unwrap_or(u32::MAX) + self.starting
    }

    /// Files an instance that has just become ready and gives its slots
    /// to waiters.
    pub fn add_ready(&mut self, instance: Arc<I>) {
        let now = Instant::now();
        self.ready.push(Slot {
            instance,
            in_flight: 0,
            last_used: now,
            ready_at: now,
        });
        self.serve_waiters();
    }

    /// Frees one of an instance's slots and gives it to a waiter.
    pub fn free_slot(&mut self, id: &str) {
        if let Some(slot) = self.ready.iter_mut().find(|s| s.instance.id() == id) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
            slot.last_used = Instant::now();
        }
        self.serve_waiters();
    }

    /// Gives free slots of ready instances to waiters, oldest first.
    fn serve_waiters(&mut self) {
        let now = Instant::now();
        while !self.waiters.is_empty() {
            let Some(i) = self.pick() else { return };
            let slot = &mut self.ready[i];
            let Some(waiter) = self.waiters.pop_front() else {
                return;
            };
            slot.in_flight += 1;
            let served = Served {
                instance: Arc::clone(&slot.instance),
                wait: waiter.wait(slot.ready_at, now),
            };
            if waiter.tx.send(Ok(served)).is_err() {
                // That caller gave up meanwhile.
                slot.in_flight -= 1;
            }
        }
    }

    pub fn fail_waiters(&mut self, err: &ExecError) {
        for w in self.waiters.drain(..) {
            let _ = w.tx.send(Err(err.clone()));
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<Arc<I>> {
        let i = self.ready.iter().position(|s| s.instance.id() == id)?;
        Some(self.ready.swap_remove(i).instance)
    }

    /// How long a request joining the queue now waits before it counts
    /// towards another instance (see [`queue::patience`]).
    pub fn patience(&self) -> Duration {
        let per = self.settings.concurrency.max(1) as usize;
        queue::patience(
            self.ready.len() * per,
            self.waiters.len(),
            self.held.get(),
            self.start.get(),
        )
    }

    /// The waiters (by index, oldest first) that count towards starting
    /// another instance now: every live one when none is ready, else
    /// those past their patience that a start could still help (see
    /// [`queue::start_would_help`]); the others past theirs wait anew.
    pub fn needing(&mut self, now: Instant) -> Vec<usize> {
        let cold = self.ready.is_empty();
        let slots = self.ready.len() * self.settings.concurrency.max(1) as usize;
        let (held, start) = (self.held.get(), self.start.get());
        let mut out = Vec::new();
        let mut ahead = 0;
        for (i, w) in self.waiters.iter_mut().enumerate() {
            if !w.is_live() {
                continue;
            }
            if cold {
                out.push(i);
            } else if w.due() <= now {
                if queue::start_would_help(slots, ahead, held, start) {
                    out.push(i);
                } else {
                    w.renew(now, queue::patience(slots, ahead, held, start));
                }
            }
            ahead += 1;
        }
        out
    }

    /// When the next live waiter's patience runs out, if one's has not.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        self.waiters
            .iter()
            .filter(|w| w.is_live() && w.due() > now)
            .map(Waiter::due)
            .min()
    }

    /// Takes out of service the idle instances past their idle timeout
    /// beyond `min_instances` (every idle one once retired), longest idle
    /// first, and counts as starting the instances that bring the pool
    /// back to `min_instances`. Returns those taken out and how many to
    /// start.
    pub fn upkeep(&mut self) -> (Vec<Arc<I>>, u32) {
        let keep = if self.retired {
            0
        } else {
            self.settings.min_instances as usize
        };
        // A retired version (superseded or deleted) keeps nothing idle.
        let idle_timeout = if self.retired {
            Duration::ZERO
        } else {
            self.settings.idle_timeout
        };
        let mut idle: Vec<usize> = self
            .ready
            .iter()
            .enumerate()
            .filter(|(_, s)| s.in_flight == 0 && s.last_used.elapsed() >= idle_timeout)
            .map(|(i, _)| i)
            .collect();
        let surplus = self.ready.len().saturating_sub(keep).min(idle.len());
        // Longest idle first; remove from the back so indexes hold.
        idle.sort_by_key(|&i| self.ready[i].last_used);
        let mut doomed: Vec<usize> = idle.into_iter().take(surplus).collect();
        doomed.sort_unstable_by(|a, b| b.cmp(a));
        let gone = doomed
            .into_iter()
            .map(|i| self.ready.swap_remove(i).instance)
            .collect();
        let mut launches = 0;
        while (self.total() as usize) < keep {
            self.starting += 1;
            launches += 1;
        }
        (gone, launches)
    }

    /// Whether nothing is left that the pool must remember.
    pub fn is_spent(&self) -> bool {
        self.ready.is_empty()
            && self.starting == 0
            && self.waiters.is_empty()
            && (self.retired || self.settings.min_instances == 0)
    }

    pub fn count(&self, key: &PoolKey) -> InstanceCount {
        InstanceCount {
            tenant: key.tenant.clone(),
            function: key.function.clone(),
            version: key.version,
            ready: self.ready.len(),
            busy: self.ready.iter().filter(|s| s.in_flight > 0).count(),
            starting: self.starting as usize,
            queued: self.waiters.iter().filter(|w| w.is_live()).count(),
        }
    }
}
