//! exec mode, end to end: the real agent binary around real programs.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::{Duration, Instant};

use berth_agent::client::{self, Event};
use berth_agent::protocol::{ExitReport, RequestHead};
use bytes::Bytes;
use common::{Agent, Noise, head, process_gone, run};
use futures::StreamExt;
use sha2::{Digest, Sha256};

const TIMEOUT: u64 = 60_000;

#[tokio::test]
async fn cat_round_trips_50_mb_with_flat_memory() {
    const TOTAL: usize = 50 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let agent = Agent::exec(&["/bin/cat"]).await;

    let mut expected = Sha256::new();
    let mut noise = Noise::new(7);
    for _ in 0..TOTAL / CHUNK {
        expected.update(noise.chunk(CHUNK));
    }
    let mut noise = Noise::new(7);
    let input = futures::stream::iter(0..TOTAL / CHUNK).map(move |_| Ok(noise.chunk(CHUNK)));

    let mut call = client::call(&agent.socket, head(TIMEOUT), input)
        .await
        .unwrap();
    let mut got = Sha256::new();
    let mut len = 0;
    let exit = loop {
        match call.recv().await.unwrap().unwrap() {
            Event::Stdout(data) => {
                len += data.len();
                got.update(&data);
            }
            Event::Stderr(data) => panic!("stderr: {data:?}"),
            Event::Http(_) => panic!("http head in exec mode"),
            Event::Exit(exit) => break exit,
        }
    };
    assert_eq!(len, TOTAL);
    assert_eq!(got.finalize(), expected.finalize());
    assert_eq!(exit.exit_code, Some(0), "{exit:?}");
    assert!(!exit.timed_out);
    // Buffering the transfer would show here; the agent streams it.
    let peak = common::peak_rss(agent.pid());
    assert!(peak < 32 * 1024 * 1024, "agent peak RSS {peak} bytes");
}

#[tokio::test]
async fn child_sees_the_request_environment() {
    let agent = Agent::start(
        &[],
        &[
            "/bin/sh",
            "-c",
            r#"echo "$REQUEST_METHOD|$QUERY_STRING|$HTTP_X_TEST|$BERTH_TASK_ID|$AGENT_OWN|$OVERRIDDEN""#,
        ],
        &[("AGENT_OWN", "from-agent"), ("OVERRIDDEN", "agent")],
    )
    .await;
    let head = RequestHead {
        env: [
            ("REQUEST_METHOD", "PUT"),
            ("QUERY_STRING", "a=1&b=2"),
            ("HTTP_X_TEST", "yes please"),
            ("BERTH_TASK_ID", "task-1"),
            ("OVERRIDDEN", "request"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect(),
        ..head(TIMEOUT)
    };
    let outcome = run(&agent.socket, head, b"").await;
    assert_eq!(
        outcome.stdout_text(),
        "PUT|a=1&b=2|yes please|task-1|from-agent|request\n"
    );
    assert_eq!(outcome.exit.exit_code, Some(0));
}

#[tokio::test]
async fn nonzero_exit_reports_code_and_stderr() {
    let agent = Agent::exec(&["/bin/sh", "-c", "cat; echo oops >&2; exit 3"]).await;
    let outcome = run(&agent.socket, head(TIMEOUT), b"partial output\n").await;
    assert_eq!(outcome.stdout_text(), "partial output\n");
    assert_eq!(outcome.stderr_text(), "oops\n");
    assert_eq!(outcome.exit.exit_code, Some(3));
    assert_eq!(outcome.exit.signal, None);
    assert!(outcome.exit.error.is_none());
}

#[tokio::test]
async fn killed_by_a_signal_and_the_agent_survives() {
    let agent = Agent::exec(&["/bin/sh", "-c", "kill -9 $$"]).await;
    let outcome = run(&agent.socket, head(TIMEOUT), b"").await;
    assert_eq!(outcome.exit.exit_code, None);
    assert_eq!(outcome.exit.signal, Some(9));
    assert!(!outcome.exit.timed_out);
    // The crash was the child's: the agent serves the next request.
    let again = run(&agent.socket, head(TIMEOUT), b"").await;
    assert_eq!(again.exit.signal, Some(9));
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    // The shell prints its background sleep's pid, then waits on it.
    let agent = Agent::exec(&["/bin/sh", "-c", "sleep 30 & echo $!; wait"]).await;
    let start = Instant::now();
    let outcome = run(&agent.socket, head(300), b"").await;
    let elapsed = start.elapsed();
    assert!(outcome.exit.timed_out, "{:?}", outcome.exit);
    assert_eq!(outcome.exit.signal, Some(15));
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    let grandchild: u32 = outcome.stdout_text().trim().parse().unwrap();
    assert!(process_gone(grandchild, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn ignoring_sigterm_gets_sigkill_after_the_grace_period() {
    let agent = Agent::exec(&["/bin/sh", "-c", "trap '' TERM; sleep 30 & wait; wait"]).await;
    let outcome = run(&agent.socket, head(200), b"").await;
    assert!(outcome.exit.timed_out);
    assert_eq!(outcome.exit.signal, Some(9));
}

#[tokio::test]
async fn dropping_the_call_kills_the_child() {
    let agent = Agent::exec(&["/bin/sh", "-c", "sleep 30 & echo $!; wait"]).await;
    let mut call = client::call(&agent.socket, head(TIMEOUT), common::input(b""))
        .await
        .unwrap();
    let pid = match call.recv().await.unwrap().unwrap() {
        Event::Stdout(data) => String::from_utf8_lossy(&data)
            .trim()
            .parse::<u32>()
            .unwrap(),
        other => panic!("unexpected {other:?}"),
    };
    assert!(!process_gone(pid, Duration::ZERO).await);
    drop(call);
    assert!(process_gone(pid, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn dropping_the_call_mid_input_kills_the_child() {
    // The child never reads its input, so the agent is stuck writing it
    // when the caller leaves.
    let agent = Agent::exec(&["/bin/sh", "-c", "echo $$; exec sleep 30"]).await;
    let input = futures::stream::repeat_with(|| Ok(Bytes::from(vec![b'x'; 64 * 1024]))).take(64);
    let mut call = client::call(&agent.socket, head(TIMEOUT), input)
        .await
        .unwrap();
    let pid = match call.recv().await.unwrap().unwrap() {
        Event::Stdout(data) => String::from_utf8_lossy(&data)
            .trim()
            .parse::<u32>()
            .unwrap(),
        other => panic!("unexpected {other:?}"),
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(call);
    assert!(process_gone(pid, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn child_closing_stdin_early_is_not_a_failure() {
    let agent = Agent::exec(&["/bin/sh", "-c", "head -c 10; exec 0<&-; sleep 0.2"]).await;
    let data = vec![b'a'; 8 * 1024 * 1024];
    let outcome = run(&agent.socket, head(TIMEOUT), &data).await;
    assert_eq!(outcome.stdout, vec![b'a'; 10]);
    assert_eq!(outcome.exit.exit_code, Some(0), "{:?}", outcome.exit);
    assert!(outcome.exit.error.is_none());
}

#[tokio::test]
async fn twenty_concurrent_requests() {
    let agent = Agent::exec(&["/bin/sh", "-c", r#"cat; echo " $BERTH_TASK_ID""#]).await;
    let calls = (0..20).map(|i| {
        let socket = agent.socket.clone();
        async move {
            let head = RequestHead {
                env: vec![("BERTH_TASK_ID".into(), format!("task-{i}"))],
                ..head(TIMEOUT)
            };
            let outcome = run(&socket, head, format!("input-{i}").as_bytes()).await;
            (i, outcome)
        }
    });
    for (i, outcome) in futures::future::join_all(calls).await {
        assert_eq!(outcome.stdout_text(), format!("input-{i} task-{i}\n"));
        assert_eq!(outcome.exit.exit_code, Some(0));
    }
}

#[tokio::test]
async fn missing_program_is_reported_per_request() {
    let agent = Agent::exec(&["/nonexistent/program"]).await;
    let outcome = run(&agent.socket, head(TIMEOUT), b"").await;
    let error = outcome.exit.error.unwrap();
    assert!(error.contains("cannot start"), "{error}");
    assert_eq!(outcome.exit.exit_code, None);
}

#[tokio::test]
async fn malformed_clients_get_an_error_and_the_agent_survives() {
    let agent = Agent::exec(&["/bin/cat"]).await;
    let socket = agent.socket.clone();
    let replies = tokio::task::spawn_blocking(move || {
        let mut replies = Vec::new();
        for garbage in [
            &b"Zjunk"[..],                             // unknown frame type
            &[b'H', 0xff, 0xff, 0xff, 0xff][..],       // oversized frame
            &[b'H', 0, 0, 0, 3, b'{', b'x', b'}'][..], // bad JSON
            &[b'I', 0, 0, 0, 0][..],                   // stdin before the head
        ] {
            let mut stream = StdUnixStream::connect(&socket).unwrap();
            stream.write_all(garbage).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reply = Vec::new();
            let _ = stream.read_to_end(&mut reply);
            replies.push(reply);
        }
        replies
    })
    .await
    .unwrap();
    for reply in replies {
        assert_eq!(reply.first(), Some(&b'X'), "{reply:?}");
        let report: ExitReport = serde_json::from_slice(&reply[5..]).unwrap();
        assert!(report.error.unwrap().contains("bad request"));
    }
    let outcome = run(&agent.socket, head(TIMEOUT), b"still here").await;
    assert_eq!(outcome.stdout_text(), "still here");
}

#[tokio::test]
async fn sigterm_stops_the_agent_and_its_requests() {
    let mut agent = Agent::exec(&["/bin/sh", "-c", "sleep 30 & echo $!; wait"]).await;
    let mut call = client::call(&agent.socket, head(TIMEOUT), common::input(b""))
        .await
        .unwrap();
    let pid = match call.recv().await.unwrap().unwrap() {
        Event::Stdout(data) => String::from_utf8_lossy(&data)
            .trim()
            .parse::<u32>()
            .unwrap(),
        other => panic!("unexpected {other:?}"),
    };
    let agent_pid = rustix::process::Pid::from_raw(agent.pid() as i32).unwrap();
    rustix::process::kill_process(agent_pid, rustix::process::Signal::TERM).unwrap();
    // The request reports the instance stopping, not a failure of its own.
    let exit = loop {
        match call.recv().await.unwrap().unwrap() {
            Event::Exit(exit) => break exit,
            Event::Stdout(_) | Event::Stderr(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(exit.exit_code, None, "{exit:?}");
    assert!(
        exit.error.as_deref().is_some_and(|e| e.contains("stopped")),
        "{exit:?}"
    );
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("agent still running");
    assert!(status.success(), "{status:?}");
    assert!(process_gone(pid, Duration::from_secs(5)).await);
    assert!(!agent.socket.exists());
}
