//! Tries, from inside a function container, what the sandbox must refuse
//! and prints one line per attempt: `NAME ok` if it was allowed, else
//! `NAME EPERM` (or the errno's name or number). The sandbox tests run it
//! in a FROM-scratch test image. First line: `uid N`.
//!
//! - `mount`: mount(2) of a tmpfs on /tmp; needs CAP_SYS_ADMIN.
//! - `raw_socket`: socket(AF_INET, SOCK_RAW, IPPROTO_ICMP); needs
//!   CAP_NET_RAW.
//! - `ptrace`: PTRACE_ATTACH to PID 1, which in a warm instance is the
//!   agent: it runs as the same uid as the function, so only its being
//!   non-dumpable (and CAP_SYS_PTRACE being dropped) stands in the way.

use std::io::Write;

use nix::sys::ptrace;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use rustix::mount::{MountFlags, mount};
use rustix::net::{AddressFamily, SocketType, ipproto, socket};

fn main() {
    let mut lines = vec![format!("uid {}", rustix::process::getuid().as_raw())];
    let mounted = mount("berth-probe", "/tmp", "tmpfs", MountFlags::empty(), None);
    lines.push(format!(
        "mount {}",
        outcome(mounted.map_err(|e| e.raw_os_error()))
    ));
    let raw = socket(AddressFamily::INET, SocketType::RAW, Some(ipproto::ICMP));
    lines.push(format!(
        "raw_socket {}",
        outcome(raw.map(drop).map_err(|e| e.raw_os_error()))
    ));
    let pid1 = Pid::from_raw(1);
    let traced = ptrace::attach(pid1);
    if traced.is_ok() {
        // Let PID 1 go again, so a sandbox that fails this check does not
        // leave its instance stopped.
        let _ = waitpid(pid1, Some(WaitPidFlag::__WALL));
        let _ = ptrace::detach(pid1, None);
    }
    lines.push(format!("ptrace {}", outcome(traced.map_err(|e| e as i32))));
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
}

fn outcome(result: Result<(), i32>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(1) => "EPERM".into(),
        Err(13) => "EACCES".into(),
        Err(n) => format!("errno {n}"),
    }
}
