//! Scenarios 13-19: a function that attacks or overloads its own sandbox
//! fails alone, and the node and the next call are fine.

use std::path::Path;
use std::process::Command;

use berth_contract::{ErrorCode, FunctionConfig, Mode, Task, TaskStatus};
use reqwest::StatusCode;

use crate::harness::{
    Server, assert_no_containers, containers, docker_inspect, error_code, image, sh, task_id,
    wait_for_containers,
};

/// Tries mount, a raw socket and ptrace; built by
/// `scripts/build-test-images.sh`.
const PROBE: &str = "berth-test/probe:latest";

/// The code of a task's error, if it has one.
fn error_of(t: &Task) -> Option<ErrorCode> {
    t.error.as_ref().map(|e| e.code)
}

/// Free bytes of the filesystem holding `path`, as statvfs(3) reports it.
fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .expect("df");
    assert!(out.status.success(), "df {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes")
}

fn docker_root() -> String {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.DockerRootDir}}"])
        .output()
        .expect("docker info");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The one container of a warm function on this server.
fn instance_of(server: &Server, function: &str) -> String {
    let node = server.node_id();
    let mine: Vec<String> = containers(&format!("dev.berth.function={function}"))
        .into_iter()
        .filter(|id| {
            docker_inspect(id)
                .is_some_and(|i| i["Config"]["Labels"]["dev.berth.node"] == node.as_str())
        })
        .collect();
    assert_eq!(mine.len(), 1, "instances of {function}: {mine:?}");
    mine[0].clone()
}

/// A call of an unrelated function, to show the node still serves.
async fn next_call_succeeds(server: &Server) {
    let fine = FunctionConfig {
        mode: Mode::Exec,
        ..sh("echo fine")
    };
    server.deploy("sbx-after", &fine).await;
    let (status, _, body) = server.invoke("sbx-after", "", "").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"fine\n");
}

/// Forks until fork fails: the leader itself recurses, so it is the one
/// that meets the limit and fails. `?check` reads the container's pids
/// cgroup instead (cgroup v1 path first, then v2).
const FORK_BOMB: &str = r#"
if [ "$QUERY_STRING" = check ]; then
  cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids/pids.events 2>/dev/null ||
    cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids.events
  exit 0
fi
bomb() { bomb & bomb; }
bomb
"#;

/// A fork bomb fails its task, with the shell's own account of fork
/// failing for want of pids (EAGAIN, which is what the pids cgroup
/// answers); the cgroup's counter shows its limit (256) was hit; a warm
/// instance serves on, a fresh container is gone, and another function
/// still runs.
#[tokio::test(flavor = "multi_thread")]
async fn s13_fork_bomb_hits_the_pids_limit() {
    let server = Server::start().await;
    for mode in [Mode::Exec, Mode::Fresh] {
        let name = format!("sbx-s13-{}", mode.as_str());
        let bomb = FunctionConfig {
            mode,
            max_instances: 1,
            concurrency: 1,
            timeout_secs: 60,
            ..sh(FORK_BOMB)
        };
        server.deploy(&name, &bomb).await;
        let (status, headers, body) = server.invoke(&name, "", "").await;
        let text = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{mode:?}: {text}");
        assert_eq!(error_code(&body), "function_failed", "{mode:?}: {text}");
        let id = task_id(&headers);
        let task = server.task(&id).await;
        assert_eq!(task.status, TaskStatus::Failed, "{mode:?}: {task:?}");
        assert_eq!(error_of(&task), Some(ErrorCode::Exit), "{mode:?}: {task:?}");
        let log = server.logs(&id).await;
        assert!(
            log.contains("can't fork: Resource temporarily unavailable"),
            "{mode:?}: the bomb should end on a refused fork:\n{log}"
        );
        match mode {
            Mode::Exec => {
                // The same instance answers, and its cgroup counted the
                // forks refused at the limit.
                let (status, _, body) = server.invoke(&name, "check", "").await;
                let out = String::from_utf8_lossy(&body).into_owned();
                assert_eq!(status, StatusCode::OK, "{out}");
                let mut lines = out.lines();
                assert_eq!(lines.next(), Some("256"), "pids.max: {out}");
                let refused: u64 = lines
                    .find_map(|l| l.strip_prefix("max "))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no max count in pids.events: {out}"));
                assert!(refused > 0, "no fork was refused at the limit: {out}");
            }
            _ => assert_no_containers(&format!("dev.berth.task={id}")).await,
        }
    }
    next_call_succeeds(&server).await;
    server.assert_no_panic();
}

/// A function that outgrows its memory limit is killed by the kernel and
/// reported as `oom`, not as an ordinary failure, every time: in a warm
/// instance the agent reads the cgroup's own OOM-kill counter, which does
/// not miss kills the way the engine's notification can. The instance
/// survives the kill and serves the next run.
#[tokio::test(flavor = "multi_thread")]
async fn s14_memory_hog_is_failed_oom() {
    let server = Server::start().await;
    // busybox sort holds a whole line in memory: 200 MB with no newline.
    let hog = FunctionConfig {
        memory_mb: 16,
        concurrency: 1,
        max_instances: 1,
        ..sh("head -c 200000000 /dev/zero | sort > /dev/null")
    };
    server.deploy("sbx-s14-hog", &hog).await;
    for _ in 0..3 {
        let (status, headers, body) = server.invoke("sbx-s14-hog", "", "").await;
        let text = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{text}");
        assert_eq!(error_code(&body), "oom", "{text}");
        let t = server.task(&task_id(&headers)).await;
        assert_eq!(t.status, TaskStatus::Failed);
        assert_eq!(error_of(&t), Some(ErrorCode::Oom));
    }
    server.assert_no_panic();
}

/// Filling /tmp ends in ENOSPC inside; the bytes went to the container's
/// tmpfs (memory), not to the host's disk or the container's own layer.
/// Other work on this host writes to the same disk meanwhile, so the host
/// check passes if one of three fills leaves the free space (nearly)
/// unchanged: writes that went to disk would show in every one.
#[tokio::test(flavor = "multi_thread")]
async fn s15_filling_tmp_is_enospc_inside_host_disk_unchanged() {
    let server = Server::start().await;
    let fill = "rm -f /tmp/fill; dd if=/dev/zero of=/tmp/fill bs=1M count=1024 2>&1; \
                echo \"filled $(du -k /tmp/fill | cut -f1) KiB\"";
    let filler = FunctionConfig {
        mode: Mode::Exec,
        max_instances: 1,
        ..sh(fill)
    };
    server.deploy("sbx-s15-fill", &filler).await;
    let docker_root = docker_root();
    let watched = [Path::new(&docker_root), server.data_dir()];
    let mut drops = Vec::new();
    for _ in 0..3 {
        let before: Vec<u64> = watched.iter().map(|p| free_bytes(p)).collect();
        let (status, _, body) = server.invoke("sbx-s15-fill", "", "").await;
        let after: Vec<u64> = watched.iter().map(|p| free_bytes(p)).collect();
        let out = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, StatusCode::OK, "the call still answers: {out}");
        assert!(out.contains("No space left on device"), "{out}");
        let kib: u64 = out
            .lines()
            .find_map(|l| {
                l.strip_prefix("filled ")?
                    .strip_suffix(" KiB")?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no fill size in: {out}"));
        // The default /tmp is 64 MiB; a full one holds about that much.
        assert!((60 * 1024..=64 * 1024).contains(&kib), "{out}");
        let filled = kib * 1024;
        let dropped = before
            .iter()
            .zip(&after)
            .map(|(b, a)| b.saturating_sub(*a))
            .max()
            .unwrap_or(0);
        drops.push(dropped);
        if dropped < filled / 2 {
            break;
        }
    }
    assert!(
        drops.iter().any(|d| *d < 32 * 1024 * 1024),
        "the host disk lost about the fill's size each time: {drops:?}"
    );
    // Nothing reached the container's writable layer either.
    let instance = instance_of(&server, "sbx-s15-fill");
    let out = Command::new("docker")
        .args(["inspect", "--size", "--format", "{{.SizeRw}}", &instance])
        .output()
        .expect("docker inspect --size");
    let size_rw: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(
        size_rw < 1024 * 1024,
        "container layer grew by {size_rw} bytes"
    );
    server.assert_no_panic();
}

/// An endless loop with `timeout_secs: 1` is a 504 and `timed_out`; its
/// container is gone (fresh) or its instance serves on (exec), and on a
/// node limited to one container slot the next calls still get it.
#[tokio::test(flavor = "multi_thread")]
async fn s16_infinite_loop_times_out_and_the_slot_is_reused() {
    let server = Server::start_with(&["--max-containers", "1"]).await;
    // The limit is in force: while a task holds the only slot, a call is
    // refused for capacity.
    let hold = FunctionConfig {
        mode: Mode::Fresh,
        ..sh("sleep 600")
    };
    server.deploy("sbx-s16-hold", &hold).await;
    let endless = |mode| FunctionConfig {
        mode,
        timeout_secs: 1,
        max_instances: 1,
        ..sh("while :; do :; done")
    };
    server.deploy("sbx-s16-fresh", &endless(Mode::Fresh)).await;
    let hold = server.submit("sbx-s16-hold", "").await.id;
    let held = format!("dev.berth.task={hold}");
    wait_for_containers(&held).await;
    let (status, _, body) = server.invoke("sbx-s16-fresh", "", "").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(error_code(&body), "no_capacity");
    server.cancel(&hold).await;
    assert_no_containers(&held).await;

    for mode in [Mode::Fresh, Mode::Exec] {
        let name = format!("sbx-s16-{}", mode.as_str());
        server.deploy(&name, &endless(mode)).await;
        // Twice: a slot kept by the first run would refuse the second.
        for _ in 0..2 {
            let (status, headers, body) = server.invoke(&name, "", "").await;
            let text = String::from_utf8_lossy(&body).into_owned();
            assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{mode:?}: {text}");
            assert_eq!(error_code(&body), "timeout", "{text}");
            let id = task_id(&headers);
            assert_eq!(server.task(&id).await.status, TaskStatus::TimedOut);
            if mode == Mode::Fresh {
                assert_no_containers(&format!("dev.berth.task={id}")).await;
            }
        }
        // Another function needs the only slot now.
        next_call_succeeds(&server).await;
    }
    server.assert_no_panic();
}

/// The only interface is loopback and there is no route: a connection to
/// TEST-NET-1 fails at once with ENETUNREACH, so no packet leaves.
#[tokio::test(flavor = "multi_thread")]
async fn s17_network_attempt_fails() {
    let server = Server::start().await;
    let script = r#"
echo "net: $(ls /sys/class/net | tr '\n' ' ')"
echo "routes: $(tail -n +2 /proc/net/route | wc -l)"
nc -w 2 192.0.2.1 80 </dev/null 2>&1
echo "nc: $?"
"#;
    for mode in [Mode::Exec, Mode::Fresh] {
        let name = format!("sbx-s17-{}", mode.as_str());
        let probe = FunctionConfig { mode, ..sh(script) };
        server.deploy(&name, &probe).await;
        let (status, _, body) = server.invoke(&name, "", "").await;
        let out = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, StatusCode::OK, "{mode:?}: {out}");
        for line in [
            "net: lo ",
            "routes: 0",
            "nc: can't connect to remote host (192.0.2.1): Network is unreachable",
            "nc: 1",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{mode:?}: expected {line:?} in:\n{out}"
            );
        }
    }
    server.assert_no_panic();
}

/// mount(2), a raw ICMP socket and ptrace of PID 1 (the agent, running as
/// the function's own uid) are all refused with EPERM: mount for want of
/// CAP_SYS_ADMIN (Docker's seccomp profile answers EPERM first), the raw
/// socket for want of CAP_NET_RAW, and ptrace because the agent is not
/// dumpable and CAP_SYS_PTRACE is dropped. Root gets the same answers:
/// capabilities are dropped for it too. None of them answers EACCES here.
#[tokio::test(flavor = "multi_thread")]
async fn s18_mount_raw_socket_and_ptrace_are_eperm() {
    let server = Server::start().await;
    let probe = |mode, run_as_root| FunctionConfig {
        mode,
        run_as_root,
        ..image(PROBE)
    };
    let cases = [
        ("sbx-s18-user", probe(Mode::Exec, false), "65534"),
        ("sbx-s18-root", probe(Mode::Exec, true), "0"),
        // A fresh container has no agent: PID 1 is the probe itself, so
        // its ptrace line says nothing and is not checked.
        ("sbx-s18-fresh", probe(Mode::Fresh, false), "65534"),
    ];
    for (name, config, uid) in cases {
        server.deploy(name, &config).await;
        let (status, _, body) = server.invoke(name, "", "").await;
        let out = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, StatusCode::OK, "{name}: {out}");
        let mut expected = vec![
            format!("uid {uid}"),
            "mount EPERM".to_owned(),
            "raw_socket EPERM".to_owned(),
        ];
        if name != "sbx-s18-fresh" {
            expected.push("ptrace EPERM".to_owned());
        }
        for line in expected {
            assert!(
                out.lines().any(|l| l == line),
                "{name}: expected {line:?} in:\n{out}"
            );
        }
    }
    // The warm instances survived being probed and still serve.
    let (status, _, _) = server.invoke("sbx-s18-root", "", "").await;
    assert_eq!(status, StatusCode::OK);
    server.assert_no_panic();
}

/// 50 MiB of stderr does not slow the function into a timeout or break
/// the call: it answers "done", and its stored log is the first
/// `--max-log-bytes` of stderr plus one line telling how much was dropped.
#[tokio::test(flavor = "multi_thread")]
async fn s19_huge_stderr_is_capped_and_the_task_is_fine() {
    const CAP: usize = 256 * 1024;
    const WRITTEN: usize = 50 * 1024 * 1024;
    let server = Server::start_with(&["--max-log-bytes", &CAP.to_string()]).await;
    let script = format!("yes eeeeeeee | head -c {WRITTEN} >&2; echo done");
    let line = "eeeeeeee\n";
    let kept: String = line.repeat(CAP / line.len() + 1)[..CAP].to_owned();
    // The cap falls mid-line, so the note starts a line of its own.
    assert!(!kept.ends_with('\n'));
    let note = format!(
        "\n[berth: log truncated at {CAP} bytes; {} bytes dropped]\n",
        WRITTEN - CAP
    );
    for mode in [Mode::Exec, Mode::Fresh] {
        let name = format!("sbx-s19-{}", mode.as_str());
        let noisy = FunctionConfig {
            mode,
            timeout_secs: 120,
            ..sh(&script)
        };
        server.deploy(&name, &noisy).await;
        let (status, headers, body) = server.invoke(&name, "", "").await;
        let out = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(
            status,
            StatusCode::OK,
            "{mode:?}: {}",
            &out[..out.len().min(500)]
        );
        assert_eq!(out, "done\n", "{mode:?}");
        let id = task_id(&headers);
        assert_eq!(server.task(&id).await.status, TaskStatus::Succeeded);
        let log = server.logs(&id).await;
        assert_eq!(log.len(), CAP + note.len(), "{mode:?}");
        assert!(log.starts_with(&kept), "{mode:?}: the start is kept");
        assert_eq!(&log[CAP..], note, "{mode:?}");
    }
    server.assert_no_panic();
}
