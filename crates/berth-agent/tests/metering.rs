//! CPU time and peak memory as exec mode reports them.

mod common;

use std::time::Instant;

use common::{Agent, head, run};

const BUSY_LOOP: &str = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done";

#[tokio::test]
async fn cpu_time_of_a_busy_child_is_its_own() {
    let agent = Agent::exec(&["/bin/sh", "-c", BUSY_LOOP]).await;
    let start = Instant::now();
    let outcome = run(&agent.socket, head(60_000), b"").await;
    let wall_ms = u64::try_from(start.elapsed().as_millis()).unwrap();
    assert_eq!(outcome.exit.exit_code, Some(0));
    let cpu_ms = outcome.exit.cpu_ms.unwrap();
    assert!(cpu_ms > 100, "cpu {cpu_ms} ms");
    // A single-threaded process can't use more CPU than wall time (the
    // slack covers rounding to milliseconds and clock ticks).
    assert!(cpu_ms <= wall_ms + 20, "cpu {cpu_ms} ms, wall {wall_ms} ms");
    // How much of the wall time it got depends on what else the machine
    // runs, so the lower bound is the same work measured by the kernel
    // without the agent: deterministic, and unmoved by neighbours.
    let baseline = baseline_cpu_ms(BUSY_LOOP);
    assert!(
        cpu_ms * 2 >= baseline && cpu_ms <= baseline * 2,
        "cpu {cpu_ms} ms, the same work alone {baseline} ms"
    );
    assert!(outcome.exit.peak_memory_bytes.unwrap() > 0);
}

/// CPU time of `sh -c script` run directly, from its own rusage.
fn baseline_cpu_ms(script: &str) -> u64 {
    use wait4::Wait4;
    let child = std::process::Command::new("/bin/sh")
        .args(["-c", script])
        .spawn()
        .unwrap();
    let used = child.wait4().unwrap();
    assert!(used.status.success());
    u64::try_from((used.rusage.utime + used.rusage.stime).as_millis()).unwrap()
}

#[tokio::test]
async fn a_sleeping_child_uses_almost_no_cpu() {
    let agent = Agent::exec(&["/bin/sleep", "1"]).await;
    let outcome = run(&agent.socket, head(60_000), b"").await;
    assert_eq!(outcome.exit.exit_code, Some(0));
    let cpu_ms = outcome.exit.cpu_ms.unwrap();
    assert!(cpu_ms < 50, "cpu {cpu_ms} ms");
    assert!(outcome.exit.peak_memory_bytes.unwrap() > 0);
}

#[tokio::test]
async fn usage_is_per_child_under_concurrency() {
    // A busy child and a sleeping one at once: each report is its own.
    let script = format!(r#"if [ "$WORK" = busy ]; then {BUSY_LOOP}; else sleep 1; fi"#);
    let agent = Agent::exec(&["/bin/sh", "-c", &script]).await;
    let with = |work: &str| common::RequestHeadExt::with_env(head(60_000), "WORK", work);
    let (busy, idle) = tokio::join!(
        run(&agent.socket, with("busy"), b""),
        run(&agent.socket, with("idle"), b"")
    );
    assert!(busy.exit.cpu_ms.unwrap() > 100, "{:?}", busy.exit);
    assert!(idle.exit.cpu_ms.unwrap() < 50, "{:?}", idle.exit);
}

#[tokio::test]
async fn peak_memory_reflects_what_the_child_touched() {
    // Reading 64 MiB into a shell variable makes the shell hold it.
    let agent = Agent::exec(&[
        "/bin/sh",
        "-c",
        "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo ${#x}",
    ])
    .await;
    let outcome = run(&agent.socket, head(60_000), b"").await;
    assert_eq!(outcome.stdout_text(), "67108864\n");
    let peak = outcome.exit.peak_memory_bytes.unwrap();
    assert!(peak > 64 * 1024 * 1024, "peak {peak} bytes");
}
