use std::collections::HashSet;

use berth_client::TaskQuery;
use berth_contract::{FunctionConfig, Mode, TaskKind, TaskStatus};

use crate::harness::{Server, sh, wait_for_containers};

#[tokio::test(flavor = "multi_thread")]
async fn fifty_async_tasks_all_succeed_with_their_own_output() {
    let server = Server::start_with(&["--async-concurrency", "4"]).await;
    server.deploy("upper", &sh("tr a-z A-Z")).await;
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push((
            i,
            server.submit("upper", format!("task number {i}")).await.id,
        ));
    }
    for (i, id) in &ids {
        let t = server.wait(id).await;
        assert_eq!(t.status, TaskStatus::Succeeded, "{t:?}");
        assert_eq!(t.attempt, 1);
        assert_eq!(t.kind, TaskKind::Async);
        assert_eq!(
            server.output(id).await,
            format!("TASK NUMBER {i}").into_bytes()
        );
    }
    // The list agrees, page by page, with no task twice.
    let mut seen = HashSet::new();
    let mut query = TaskQuery {
        function: Some("upper".into()),
        status: Some("succeeded".into()),
        limit: Some(7),
        cursor: None,
    };
    loop {
        let page = server.tasks(&query).await;
        for t in page.tasks {
            assert!(seen.insert(t.id.clone()), "listed twice: {t:?}");
        }
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 50);
    server.assert_no_panic();
}

/// A normal stop (SIGTERM) hands unfinished async work back to the queue
/// without spending an attempt, kills its container, and a restart runs it.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_hands_running_tasks_back_without_spending_an_attempt() {
    let mut server = Server::start_with(&["--shutdown-grace-secs", "1"]).await;
    let long = FunctionConfig {
        mode: Mode::Fresh,
        ..sh("sleep 4; echo finished")
    };
    server.deploy("long", &long).await;
    let id = server.submit("long", "").await.id;
    server.wait_status(&id, TaskStatus::Running).await;
    let label = format!("dev.berth.task={id}");
    wait_for_containers(&label).await;

    let status = server.terminate().await;
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status}\n{}",
        server.log()
    );
    crate::harness::assert_no_containers(&label).await;

    server.restart().await;
    let t = server.wait(&id).await;
    assert_eq!(t.status, TaskStatus::Succeeded, "{t:?}");
    assert_eq!(t.attempt, 1, "the interrupted run was not counted: {t:?}");
    assert_eq!(server.output(&id).await, b"finished\n");
    server.assert_no_panic();
}
