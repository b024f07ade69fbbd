//! Where the machine's CPU went during a phase, by process: on a small
//! machine every component of a set shares the cores, so a throughput is
//! best read as CPU per task or call.
//!
//! Each process counts its own time (`utime + stime` in `/proc/PID/stat`),
//! all its threads included. An instance's agent also counts the children
//! it reaped (`cutime + cstime`): the `cat` it forks per task lives and
//! ends within the phase. Nothing else does, as a long-lived parent may
//! reap a child that ran mostly before the phase (a build tool, the
//! postmaster). Processes of no class here are "other processes" (another
//! workload on the machine, most likely). What no live process accounts
//! for (kernel threads, interrupts, processes that ended during the phase)
//! is the machine's busy time from `/proc/stat` minus all of them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The classes, in the order the report shows them.
pub const CLASSES: &[&str] = &[
    "berth",
    "PostgreSQL",
    "SeaweedFS",
    "Docker engine",
    "containers",
    "benchmark",
    "other processes",
];

#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    busy: f64,
    procs: BTreeMap<u32, (&'static str, f64)>,
}

/// CPU seconds by class over a phase, its wall time, and the machine's
/// busy seconds in all.
#[derive(Debug, Clone, Default)]
pub struct Use {
    pub wall: Duration,
    pub busy: f64,
    pub by_class: BTreeMap<&'static str, f64>,
}

impl Use {
    /// Busy time no live process accounts for.
    pub fn unattributed(&self) -> f64 {
        (self.busy - self.by_class.values().sum::<f64>()).max(0.0)
    }

    /// Adds a later part of the same phase, measured in turns with others.
    pub fn absorb(&mut self, later: &Use) {
        self.wall += later.wall;
        self.busy += later.busy;
        for (class, secs) in &later.by_class {
            *self.by_class.entry(class).or_insert(0.0) += secs;
        }
    }
}

fn class(comm: &str, pid: u32) -> &'static str {
    if pid == std::process::id() {
        return "benchmark";
    }
    match comm {
        "berth" => "berth",
        "weed" => "SeaweedFS",
        // The agent is mounted as /berth/agent; it reaps what it forks.
        "agent" => "containers",
        c if c.starts_with("postgres") => "PostgreSQL",
        c if c == "dockerd"
            || c == "docker"
            || c == "runc"
            || c == "docker-init"
            || c == "docker-proxy"
            || c.starts_with("containerd") =>
        {
            "Docker engine"
        }
        _ => "other processes",
    }
}

fn ticks() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// The machine's busy time so far (user, nice, system, irq, softirq,
/// steal), in seconds.
fn busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return f64::NAN;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal
    (at(0) + at(1) + at(2) + at(5) + at(6) + at(7)) / ticks()
}

/// A process's class and CPU time in seconds: its own, and for an agent
/// that of the children it reaped too.
fn process(pid: u32) -> Option<(&'static str, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let class = class(&stat[open + 1..close], pid);
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let last = if class == "containers" { 14 } else { 12 };
    let mut sum = 0.0;
    for i in 11..=last {
        sum += fields.get(i)?.parse::<f64>().ok()?;
    }
    Some((class, sum / ticks()))
}

pub fn snapshot() -> Snapshot {
    let mut procs = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(found) = process(pid) {
                procs.insert(pid, found);
            }
        }
    }
    Snapshot {
        at: Instant::now(),
        busy: busy(),
        procs,
    }
}

impl Snapshot {
    /// What was used between `self` and `later`.
    pub fn until(&self, later: &Snapshot) -> Use {
        let mut by_class: BTreeMap<&'static str, f64> = BTreeMap::new();
        for (pid, (class, secs)) in &later.procs {
            let before = match self.procs.get(pid) {
                Some((c, s)) if c == class => *s,
                _ => 0.0,
            };
            *by_class.entry(class).or_insert(0.0) += (secs - before).max(0.0);
        }
        Use {
            wall: later.at - self.at,
            busy: later.busy - self.busy,
            by_class,
        }
    }
}

/// Write and fsync 4 KiB, `n` times, in the directory the servers' data
/// directories are made in: the p50 in ms. What a durable write costs on
/// this filesystem at the moment, which other workloads change.
pub fn fsync_probe(n: usize) -> f64 {
    use std::io::Write as _;
    let mut took = Vec::with_capacity(n);
    let block = [0x5au8; 4096];
    for _ in 0..n {
        let Ok(mut file) = tempfile::NamedTempFile::new() else {
            return f64::NAN;
        };
        let begun = Instant::now();
        if file.write_all(&block).is_err() || file.as_file().sync_all().is_err() {
            return f64::NAN;
        }
        took.push(begun.elapsed());
    }
    crate::stats::Samples::from_durations(&took).p50()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_this_process() {
        let a = snapshot();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = a.until(&snapshot());
        assert!(used.by_class.contains_key("benchmark"));
        assert!(used.busy >= 0.0);
        assert!(fsync_probe(2) >= 0.0);
    }
}
