//! Child processes: spawning into their own process group, signalling the
//! group without racing pid reuse, reaping with per-child rusage, and what
//! the kernel tells about them under /proc and the cgroup.
//!
//! Children are spawned with `std::process` and reaped by our own `wait4`
//! on a blocking thread, not through `tokio::process`: tokio reaps its
//! children with `waitpid`, which discards the rusage we meter, and a second
//! reaper of the same pid would race it. `std` never reaps behind our back,
//! and its pipes convert to tokio's non-blocking ones.

use std::collections::HashSet;
use std::io;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, WaitOptions};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::oneshot;
use wait4::Wait4;

/// How a child ended and what it used, from `wait4`.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub status: ExitStatus,
    pub cpu: Duration,
    pub peak_memory_bytes: u64,
}

/// The pids of our children that are not reaped yet.
///
/// The lock is held while spawning, while reaping and while signalling, so
/// a pid in the set always names our own unreaped child (a zombie at worst)
/// and therefore its process group: a signal can never reach a recycled pid.
#[derive(Debug, Default)]
pub struct Children {
    live: Mutex<HashSet<u32>>,
}

impl Children {
    fn lock(&self) -> MutexGuard<'_, HashSet<u32>> {
        // A panic elsewhere while holding the lock leaves the set intact.
        self.live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Spawns `command` as the leader of a new process group, so that
    /// signals reach everything it forks.
    pub fn spawn(self: &Arc<Self>, mut command: Command) -> io::Result<Spawned> {
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = {
            let mut live = self.lock();
            let child = command.spawn()?;
            live.insert(child.id());
            child
        };
        let pid = child.id();
        let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());

        let (done, exit) = oneshot::channel();
        let children = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _ = done.send(reap(&children, child));
        });
        let group = Group {
            pid,
            children: Arc::clone(self),
        };

        let converted = (|| {
            Ok::<_, io::Error>((
                pipes.0.map(ChildStdin::from_std).transpose()?,
                pipes.1.map(ChildStdout::from_std).transpose()?,
                pipes.2.map(ChildStderr::from_std).transpose()?,
            ))
        })();
        match converted {
            Ok((stdin, stdout, stderr)) => Ok(Spawned {
                group,
                stdin,
                stdout,
                stderr,
                exit,
            }),
            Err(err) => {
                // The reaper thread collects it.
                group.signal(Signal::KILL);
                Err(err)
            }
        }
    }

    /// Signals the process group of every live child.
    pub fn signal_all(&self, signal: Signal) {
        let live = self.lock();
        for &pid in live.iter() {
            let _ = rustix::process::kill_process_group(as_pid(pid), signal);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Reaps exited processes that are our children without being spawned
    /// by us: as PID 1 in a container the agent inherits every orphan, and
    /// unreaped they would fill the pid space. Scanning /proc rather than
    /// `waitpid(-1)` leaves our own children to their `wait4`.
    pub fn reap_orphans(&self) {
        let me = std::process::id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        let live = self.lock();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if live.contains(&pid) {
                continue;
            }
            let Some(stat) = ProcStat::read(pid) else {
                continue;
            };
            if stat.ppid == me && stat.state == 'Z' {
                let _ = rustix::process::waitpid(Some(as_pid(pid)), WaitOptions::NOHANG);
            }
        }
    }
}

/// A child we spawned, with its pipes as tokio streams.
#[derive(Debug)]
pub struct Spawned {
    pub group: Group,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
    /// Resolves when the child has exited and been reaped.
    pub exit: oneshot::Receiver<io::Result<Exit>>,
}

/// The process group of one child.
#[derive(Debug, Clone)]
pub struct Group {
    pid: u32,
    children: Arc<Children>,
}

impl Group {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Signals the whole group, unless its leader has been reaped already.
    pub fn signal(&self, signal: Signal) {
        let live = self.children.lock();
        if live.contains(&self.pid) {
            let _ = rustix::process::kill_process_group(as_pid(self.pid), signal);
        }
    }
}

/// Blocks until `child` exits, kills what is left of its process group,
/// then reaps it with its rusage.
fn reap(children: &Children, child: Child) -> io::Result<Exit> {
    let raw = child.id();
    let pid = as_pid(raw);
    // Wait without reaping: while the leader is a zombie its pid still names
    // the group, so stragglers (background jobs, a fork bomb) can be killed
    // without any chance of hitting a recycled pid.
    loop {
        match rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => {
                // Only ECHILD can get here: the pid is no longer ours.
                children.lock().remove(&raw);
                return Err(err.into());
            }
            Ok(_) => break,
        }
    }
    let _ = rustix::process::kill_process_group(pid, Signal::KILL);
    let used = {
        let mut live = children.lock();
        // The child is a zombie: this returns at once.
        let used = child.wait4();
        live.remove(&raw);
        used?
    };
    Ok(Exit {
        status: used.status,
        cpu: used.rusage.utime + used.rusage.stime,
        peak_memory_bytes: used.rusage.maxrss,
    })
}

fn as_pid(pid: u32) -> Pid {
    // Child pids are positive and fit an i32 on Linux; the fallback is only
    // there to keep this total.
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .unwrap_or(Pid::INIT)
}

/// The fields of /proc/<pid>/stat the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub ppid: u32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

impl ProcStat {
    pub fn read(pid: u32) -> Option<ProcStat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        ProcStat::parse(&text)
    }

    pub fn parse(text: &str) -> Option<ProcStat> {
        // The command name is in parentheses and may itself contain spaces
        // and parentheses: the fields proper start after the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        let state = fields.first()?.chars().next()?;
        let ppid = fields.get(1)?.parse().ok()?;
        // Fields 14 and 15 of the man page: utime and stime.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(ProcStat {
            state,
            ppid,
            cpu_ticks: utime + stime,
        })
    }
}

/// CPU time (user + system) the process has used so far, in milliseconds.
pub fn cpu_ms(pid: u32) -> Option<u64> {
    let ticks = ProcStat::read(pid)?.cpu_ticks;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Some(ticks.saturating_mul(1000) / hz)
}

/// The process's peak resident set size (VmHWM), in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&text, "VmHWM:").map(|kib| kib.saturating_mul(1024))
}

fn status_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(key))?;
    line[key.len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The container cgroup's count of OOM kills, from cgroup v2's
/// memory.events or cgroup v1's memory.oom_control.
pub fn oom_kills() -> Option<u64> {
    const FILES: [&str; 2] = [
        "/sys/fs/cgroup/memory.events",
        "/sys/fs/cgroup/memory/memory.oom_control",
    ];
    FILES.iter().find_map(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        counter(&text, "oom_kill")
    })
}

fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_ascii_whitespace();
        (words.next()? == key).then_some(())?;
        words.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_odd_names() {
        let text = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 150 25 3 4 20 0 1 0 100 1000 10";
        assert_eq!(
            ProcStat::parse(text),
            Some(ProcStat {
                state: 'S',
                ppid: 1,
                cpu_ticks: 175
            })
        );
        assert_eq!(ProcStat::parse("garbage"), None);
        assert_eq!(ProcStat::parse("1 (x) S"), None);
    }

    #[test]
    fn parses_counters() {
        let v2 = "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(counter(v2, "oom_kill"), Some(2));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";
        assert_eq!(counter(v1, "oom_kill"), Some(7));
        assert_eq!(counter("oom_kill_disable 0\n", "oom_kill"), None);
    }

    #[test]
    fn parses_status() {
        let text = "Name:\tcat\nVmPeak:\t  9000 kB\nVmHWM:\t    1234 kB\n";
        assert_eq!(status_kib(text, "VmHWM:"), Some(1234));
        assert_eq!(status_kib(text, "VmRSS:"), None);
    }

    #[test]
    fn reads_own_stat() {
        let stat = ProcStat::read(std::process::id()).unwrap();
        assert_eq!(stat.ppid, std::os::unix::process::parent_id());
        assert!(peak_rss_bytes(std::process::id()).unwrap() > 0);
    }
}
