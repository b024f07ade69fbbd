use std::io::Write;
use std::process::{Command, Output, Stdio};

use berth_contract::{
    CreatedTenant, Deployed, Mode, QuotaOverrides, RotatedKey, Task, TaskList, TaskStatus, Tenant,
    TenantList,
};
use serde::de::DeserializeOwned;

use crate::harness::{BUSYBOX, Server};

/// Runs the `berth` CLI against the server, finding it the way a user on
/// the same machine would: through the server's data directory.
fn berth(server: &Server, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("BERTH_DATA_DIR", server.data_dir())
        .env_remove("BERTH_URL")
        .env_remove("BERTH_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "berth failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What a successful command printed, read as the contract's type.
fn parsed<T: DeserializeOwned>(out: Output) -> T {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_deploys_invokes_and_follows_tasks() {
    let server = Server::start().await;
    let deployed: Deployed = parsed(berth(
        &server,
        &[
            "fn",
            "deploy",
            "shout",
            "--image",
            BUSYBOX,
            "--memory",
            "32",
            "--timeout",
            "20",
            "--env",
            "SUFFIX=!",
            "--max-instances",
            "3",
            "--",
            "/bin/sh",
            "-c",
            "tr a-z A-Z; printf \"$SUFFIX\"; echo working >&2",
        ],
        b"",
    ));
    let latest = &deployed.function.latest.config;
    assert_eq!(deployed.version, 1);
    assert_eq!(latest.memory_mb, 32);
    assert_eq!(latest.max_instances, 3);
    assert_eq!(latest.mode, Mode::Exec);

    let out = ok(berth(&server, &["invoke", "shout"], b"hello"));
    assert_eq!(out, "HELLO!");

    let id = ok(berth(&server, &["invoke", "shout", "--async"], b"later"));
    let id = id.trim();
    let waited: Task = parsed(berth(&server, &["task", "wait", id], b""));
    assert_eq!(waited.status, TaskStatus::Succeeded);
    assert_eq!(ok(berth(&server, &["task", "output", id], b"")), "LATER!");
    assert_eq!(ok(berth(&server, &["task", "logs", id], b"")), "working\n");
    let listed: TaskList = parsed(berth(
        &server,
        &["task", "list", "--function", "shout"],
        b"",
    ));
    assert_eq!(listed.tasks.len(), 2);

    // Errors come back as the server's message and a failing exit status.
    let failed = berth(&server, &["invoke", "missing"], b"");
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("function_not_found"), "{err}");
    let cancel = berth(&server, &["task", "cancel", id], b"");
    assert!(
        !cancel.status.success(),
        "a finished task cannot be cancelled"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_manages_tenants_keys_and_quotas() {
    let server = Server::start().await;
    let created: CreatedTenant = parsed(berth(
        &server,
        &["tenant", "create", "delta", "--max-memory-mb", "512"],
        b"",
    ));
    let key = created.api_key;
    assert!(!key.is_empty(), "key shown once");
    assert_eq!(created.tenant.quotas.max_memory_mb, 512);
    let status = |key: &str| {
        let server_url = server.url.clone();
        let key = key.to_owned();
        async move {
            reqwest::Client::new()
                .get(format!("{server_url}/v1/functions"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(&key).await, reqwest::StatusCode::OK);

    // Quota changes keep what was set before unless reset.
    let changed: Tenant = parsed(berth(
        &server,
        &["tenant", "quota", "delta", "--max-concurrent-tasks", "3"],
        b"",
    ));
    assert_eq!(
        changed.overrides,
        QuotaOverrides {
            max_memory_mb: Some(512),
            max_concurrent_tasks: Some(3),
            ..Default::default()
        }
    );
    let listed: TenantList = parsed(berth(&server, &["tenant", "list"], b""));
    let names: Vec<_> = listed.tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["admin", "delta"]);

    let rotated: RotatedKey = parsed(berth(&server, &["tenant", "rotate-key", "delta"], b""));
    let new_key = rotated.api_key;
    assert_eq!(status(&key).await, reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(status(&new_key).await, reqwest::StatusCode::OK);
    ok(berth(&server, &["tenant", "revoke", "delta"], b""));
    assert_eq!(status(&new_key).await, reqwest::StatusCode::UNAUTHORIZED);

    // A tenant's key cannot manage tenants; the CLI shows the server's reason.
    let out = berth(
        &server,
        &["tenant", "create", "epsilon", "--key", &key],
        b"",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unauthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
