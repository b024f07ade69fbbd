use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_contract::{
    CreatedTenant, Deployed, Function, FunctionList, Mode, QuotaOverrides, RotatedKey, Task,
    TaskList, TaskStatus, Tenant, TenantList,
};
use serde::de::DeserializeOwned;

use crate::harness::{BUSYBOX, PATIENCE, Server, sh};

/// The CLI with no server, key, context or data directory from the
/// environment of the test run, and a config file of its own.
fn cli(config_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.env_remove("BERTH_URL")
        .env_remove("BERTH_API_KEY")
        .env_remove("BERTH_CONTEXT")
        .env_remove("BERTH_DATA_DIR")
        .env("BERTH_CONFIG", config_dir.join("config.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd.spawn().expect("spawn berth");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// Runs the `berth` CLI against the server, finding it the way a user on
/// the same machine would: through the server's data directory.
fn berth(server: &Server, args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = cli(server.data_dir());
    cmd.args(args).env("BERTH_DATA_DIR", server.data_dir());
    run(cmd, stdin)
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

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a successful command printed with `-o json`, read as the
/// contract's type.
fn json<T: DeserializeOwned>(server: &Server, args: &[&str]) -> T {
    // Before the subcommand: after `--` it would be the function's command.
    let args: Vec<&str> = ["-o", "json"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let text = ok(berth(server, &args, b""));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_deploys_invokes_and_follows_tasks() {
    let server = Server::start().await;
    let deployed: Deployed = json(
        &server,
        &[
            "fn",
            "deploy",
            "shout",
            "--image",
            BUSYBOX,
            "--memory",
            "32MiB",
            "--timeout",
            "20s",
            "--env",
            "SUFFIX=!",
            "--max-instances",
            "3",
            "--",
            "/bin/sh",
            "-c",
            "tr a-z A-Z; printf \"$SUFFIX\"; echo working >&2",
        ],
    );
    let latest = &deployed.function.latest.config;
    assert_eq!(deployed.version, 1);
    assert_eq!(latest.memory_mb, 32);
    assert_eq!(latest.timeout_secs, 20);
    assert_eq!(latest.max_instances, 3);
    assert_eq!(latest.mode, Mode::Exec);

    let out = ok(berth(&server, &["invoke", "shout"], b"hello"));
    assert_eq!(out, "HELLO!");

    let id = ok(berth(&server, &["invoke", "shout", "--async"], b"later"));
    let id = id.trim();
    let waited: Task = json(&server, &["task", "wait", id, "--timeout", "2m"]);
    assert_eq!(waited.status, TaskStatus::Succeeded);
    assert_eq!(ok(berth(&server, &["task", "output", id], b"")), "LATER!");
    assert_eq!(ok(berth(&server, &["task", "logs", id], b"")), "working\n");
    assert_eq!(ok(berth(&server, &["logs", id], b"")), "working\n");
    let listed: TaskList = json(&server, &["task", "list", "--function", "shout"]);
    assert_eq!(listed.tasks.len(), 2);

    // Errors come back as the server's message and a failing exit status.
    let failed = berth(&server, &["invoke", "missing"], b"");
    assert!(!failed.status.success());
    assert!(stderr(&failed).contains("function_not_found"), "{failed:?}");
    let cancel = berth(&server, &["task", "cancel", id], b"");
    assert!(
        !cancel.status.success(),
        "a finished task cannot be cancelled"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_shows_tables_or_json_and_updates_keep_what_they_do_not_name() {
    let server = Server::start().await;
    ok(berth(
        &server,
        &[
            "fn",
            "deploy",
            "keep",
            "--image",
            BUSYBOX,
            "--memory",
            "64MiB",
            "--timeout",
            "30s",
            "--env",
            "A=1",
            "--",
            "/bin/sh",
            "-c",
            "echo \"$A\"",
        ],
        b"",
    ));

    // `fn update` changes the timeout alone: memory, env and command stay.
    let out = ok(berth(
        &server,
        &["fn", "update", "keep", "--timeout", "2m"],
        b"",
    ));
    assert!(out.contains("function keep version 2 deployed"), "{out}");
    assert!(out.contains("timeout:") && out.contains("2m"), "{out}");
    let f: Function = json(&server, &["fn", "get", "keep"]);
    let c = &f.latest.config;
    assert_eq!(f.latest_version, 2);
    assert_eq!(c.timeout_secs, 120);
    assert_eq!(c.memory_mb, 64);
    assert_eq!(c.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(
        c.command.as_deref(),
        Some(&["/bin/sh".to_owned(), "-c".into(), "echo \"$A\"".into()][..])
    );
    assert_eq!(ok(berth(&server, &["invoke", "keep"], b"")), "1\n");
    let missing = berth(&server, &["fn", "update", "nope", "--timeout", "5s"], b"");
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("berth fn deploy nope"),
        "{missing:?}"
    );

    // Lists are aligned tables by default, the contract's JSON with -o json
    // (the flag anywhere on the line), YAML with -o yaml.
    let table = ok(berth(&server, &["fn", "list"], b""));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("NAME   VERSION   MODE   CPU     MEMORY   TIMEOUT   IMAGE"));
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row[..7],
        ["keep", "2", "exec", "1000m", "64MiB", "2m", BUSYBOX]
    );
    let image_at = lines[0].find("IMAGE").unwrap();
    assert_eq!(lines[1].find(BUSYBOX), Some(image_at), "aligned:\n{table}");
    for args in [
        &["fn", "list", "-o", "json"][..],
        &["-o", "json", "fn", "list"],
    ] {
        let list: FunctionList = serde_json::from_str(&ok(berth(&server, args, b""))).unwrap();
        assert_eq!(list.functions.len(), 1);
        assert_eq!(list.functions[0].latest.config.memory_mb, 64);
    }
    let yaml = ok(berth(&server, &["fn", "get", "keep", "-o", "yaml"], b""));
    assert!(yaml.contains("name: keep\n"), "{yaml}");
    assert!(yaml.contains("memory_mb: 64\n"), "{yaml}");

    let versions = ok(berth(&server, &["fn", "versions", "keep"], b""));
    let rows: Vec<Vec<&str>> = versions
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..3], ["VERSION", "MODE", "CPU"]);
    assert_eq!((rows[1][0], rows[1][4]), ("2", "2m"));
    assert_eq!((rows[2][0], rows[2][4]), ("1", "30s"));

    let id = ok(berth(&server, &["invoke", "keep", "--async"], b""));
    server.wait(id.trim()).await;
    let tasks = ok(berth(&server, &["task", "list"], b""));
    assert!(tasks.starts_with("ID "), "{tasks}");
    assert!(
        tasks.contains(id.trim()) && tasks.contains("succeeded"),
        "{tasks}"
    );
    let shown = ok(berth(&server, &["task", "get", id.trim()], b""));
    assert!(
        shown.contains("status:") && shown.contains("succeeded (exit 0)"),
        "{shown}"
    );

    let deleted = ok(berth(&server, &["fn", "delete", "keep"], b""));
    assert_eq!(deleted, "function keep deleted\n");
    assert_eq!(ok(berth(&server, &["fn", "list"], b"")).lines().count(), 1);
}

/// Reads lines from `reader` until one equals `want`; panics past patience.
fn read_until(reader: &mut impl BufRead, want: &str, seen: &mut String) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        seen.push_str(&line);
        if line.trim_end() == want {
            return;
        }
        assert!(
            n > 0 && Instant::now() < deadline,
            "no {want:?} in {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_follows_a_running_task_to_its_end() {
    let server = Server::start().await;
    // The task waits for a file the test makes, so it surely runs while
    // its first lines are read.
    let script = "echo one >&2; echo out-one; \
                  while [ ! -e /tmp/go ]; do sleep 0.1; done; \
                  echo two >&2; echo out-two";
    server.deploy("cli-follow", &sh(script)).await;
    let task = server.submit("cli-follow", "").await;
    let id = task.id.as_str();
    let running = server.wait_status(id, TaskStatus::Running).await;
    assert_eq!(running.status, TaskStatus::Running);

    let not_yet = berth(&server, &["logs", id], b"");
    assert!(!not_yet.status.success());
    assert!(
        stderr(&not_yet).contains(&format!("berth logs -f {id}")),
        "{not_yet:?}"
    );

    let spawn = |args: &[&str]| {
        let mut cmd = cli(server.data_dir());
        cmd.args(args).env("BERTH_DATA_DIR", server.data_dir());
        cmd.spawn().expect("spawn berth")
    };
    let mut logs = spawn(&["logs", "-f", id]);
    let mut output = spawn(&["task", "output", "-f", id]);
    let mut logs_out = BufReader::new(logs.stdout.take().unwrap());
    let mut output_out = BufReader::new(output.stdout.take().unwrap());
    let (mut seen_logs, mut seen_output) = (String::new(), String::new());
    read_until(&mut logs_out, "one", &mut seen_logs);
    read_until(&mut output_out, "out-one", &mut seen_output);
    assert_eq!(
        server.task(id).await.status,
        TaskStatus::Running,
        "the first lines came while the task ran"
    );

    // Let it go on: both follow it to its end, and exit when it ends.
    go("cli-follow").await;
    logs_out.read_to_string(&mut seen_logs).unwrap();
    output_out.read_to_string(&mut seen_output).unwrap();
    let logs = logs.wait_with_output().unwrap();
    let output = output.wait_with_output().unwrap();
    assert!(logs.status.success(), "{}", stderr(&logs));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(seen_logs, "one\ntwo\n");
    assert_eq!(seen_output, "out-one\nout-two\n");
    assert_eq!(server.task(id).await.status, TaskStatus::Succeeded);
    // Following a finished task reads it whole.
    assert_eq!(ok(berth(&server, &["logs", "-f", id], b"")), "one\ntwo\n");
}

/// Makes `/tmp/go` in the function's running container (its only
/// writable place).
async fn go(function: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ids = crate::harness::containers(&format!("dev.berth.function={function}"));
        let made = ids.iter().any(|c| {
            Command::new("docker")
                .args(["exec", c, "/bin/touch", "/tmp/go"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if made {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no container of {function} to touch"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_invoke_takes_headers_path_and_waits() {
    let server = Server::start().await;
    server
        .deploy(
            "env",
            &sh("echo \"$REQUEST_METHOD $PATH_INFO $QUERY_STRING $HTTP_X_COLOUR $CONTENT_TYPE\""),
        )
        .await;
    let out = ok(berth(
        &server,
        &[
            "invoke",
            "env",
            "--path",
            "/a/b",
            "-q",
            "w=1",
            "-H",
            "X-Colour: blue",
            "-H",
            "Content-Type: text/plain",
        ],
        b"",
    ));
    assert_eq!(out, "POST /a/b w=1 blue text/plain\n");
    // -X: the function sees the caller's method.
    server
        .deploy("method", &sh("echo \"$REQUEST_METHOD $PATH_INFO\""))
        .await;
    for method in ["GET", "PUT", "PATCH", "DELETE"] {
        let out = ok(berth(
            &server,
            &["invoke", "method", "-X", method, "--path", "/x"],
            b"",
        ));
        assert_eq!(out, format!("{method} /x\n"));
    }

    // --wait: the output when it ends in time; the same key, the same task.
    let waited = ok(berth(
        &server,
        &["invoke", "env", "--wait", "1m", "--idempotency-key", "k-1"],
        b"",
    ));
    assert_eq!(waited, "POST    \n");
    let again = berth(
        &server,
        &["invoke", "env", "--async", "--idempotency-key", "k-1"],
        b"",
    );
    let tasks: TaskList = json(&server, &["task", "list", "--function", "env"]);
    assert_eq!(tasks.tasks.len(), 2, "the sync call and one task");
    assert_eq!(ok(again).trim(), tasks.tasks[0].id);
    let refused = berth(&server, &["invoke", "env", "--idempotency-key", "k"], b"");
    assert!(
        stderr(&refused).contains("--async or --wait"),
        "{refused:?}"
    );

    // A failed call names its task and the command that shows its logs.
    server.deploy("fails", &sh("echo broken >&2; exit 3")).await;
    let failed = berth(&server, &["invoke", "fails"], b"");
    assert!(!failed.status.success());
    let err = stderr(&failed);
    assert!(err.contains("502"), "{err}");
    assert!(err.contains("broken"), "{err}");
    let id = err
        .split("berth logs ")
        .nth(1)
        .unwrap_or_else(|| panic!("no logs command in {err}"))
        .trim();
    assert_eq!(ok(berth(&server, &["logs", id], b"")), "broken\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_contexts_name_servers_and_keys() {
    let server = Server::start().await;
    let home = tempfile::tempdir().unwrap();
    let with = |args: &[&str], stdin: &[u8]| {
        let mut cmd = cli(home.path());
        cmd.args(args).env("HOME", home.path());
        run(cmd, stdin)
    };
    let url = server.url.as_str();
    ok(with(
        &["context", "add", "local", "--server", url, "--key-stdin"],
        server.key.as_bytes(),
    ));
    // Nothing listens on port 9 here.
    let other = [
        "context",
        "add",
        "other",
        "--server",
        "http://127.0.0.1:9",
        "--key",
        "k",
    ];
    ok(with(&other, b""));
    let listed = ok(with(&["context", "list"], b""));
    assert!(listed.starts_with("CURRENT   NAME    SERVER"), "{listed}");
    assert!(
        listed.contains(&format!("*         local   {url}   set")),
        "{listed}"
    );
    let list: FunctionList =
        serde_json::from_str(&ok(with(&["fn", "list", "-o", "json"], b""))).expect("json");
    assert!(list.functions.is_empty());

    ok(with(&["context", "use", "other"], b""));
    let shown = ok(with(&["context", "show"], b""));
    assert!(shown.contains("context:  other"), "{shown}");
    let unreachable = with(&["fn", "list"], b"");
    assert!(
        stderr(&unreachable).contains("context \"other\""),
        "{unreachable:?}"
    );
    ok(with(&["--context", "local", "fn", "list"], b""));
    let mode = std::fs::metadata(home.path().join("config.toml")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
}

#[test]
fn cli_prints_completions_and_man_pages() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F _berth"),
        ("zsh", "#compdef berth"),
        ("fish", "complete -c berth"),
    ] {
        let mut cmd = cli(dir.path());
        cmd.args(["completion", shell]);
        let script = ok(run(cmd, b""));
        assert!(script.contains(marker), "{shell}: {script}");
        for word in ["deploy", "versions", "idempotency-key", "context"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
    let mut cmd = cli(dir.path());
    cmd.arg("man");
    let page = ok(run(cmd, b""));
    assert!(page.contains(".TH berth 1"), "{page}");
    let pages = dir.path().join("man");
    let mut cmd = cli(dir.path());
    cmd.args(["man", "--dir"]).arg(&pages);
    ok(run(cmd, b""));
    let update = std::fs::read_to_string(pages.join("berth-fn-update.1")).unwrap();
    assert!(update.contains("\\-\\-timeout"), "{update}");
}

#[test]
fn cli_says_which_server_it_could_not_reach() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9 here.
    let mut cmd = cli(dir.path());
    cmd.args(["fn", "list", "--server", "http://127.0.0.1:9", "--key", "k"]);
    let out = run(cmd, b"");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the server at http://127.0.0.1:9"),
        "{err}"
    );
    assert!(err.contains("--server or BERTH_URL"), "{err}");
    assert!(err.contains("berth server"), "{err}");

    // A local server that is gone: the endpoint file it left is named.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("endpoint"), "http://127.0.0.1:9\n").unwrap();
    std::fs::write(data.join("admin.key"), "k\n").unwrap();
    let mut cmd = cli(dir.path());
    cmd.args(["task", "list"]).env("BERTH_DATA_DIR", &data);
    let err = stderr(&run(cmd, b""));
    assert!(
        err.contains(&data.join("endpoint").display().to_string()),
        "{err}"
    );

    // A URL without a scheme: taken as http:// on loopback, refused
    // elsewhere before anything is sent.
    let mut cmd = cli(dir.path());
    cmd.args(["fn", "list", "--server", "127.0.0.1:9", "--key", "k"]);
    let err = stderr(&run(cmd, b""));
    assert!(err.contains("http://127.0.0.1:9"), "{err}");
    let mut cmd = cli(dir.path());
    cmd.args(["fn", "list", "--server", "berth.example:8080", "--key", "k"]);
    let out = run(cmd, b"");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("no scheme") && err.contains("https://berth.example:8080"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_manages_tenants_keys_and_quotas() {
    let server = Server::start().await;
    let created: CreatedTenant = json(
        &server,
        &["tenant", "create", "delta", "--max-memory-mb", "512"],
    );
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
    let changed: Tenant = json(
        &server,
        &["tenant", "quota", "delta", "--max-concurrent-tasks", "3"],
    );
    assert_eq!(
        changed.overrides,
        QuotaOverrides {
            max_memory_mb: Some(512),
            max_concurrent_tasks: Some(3),
            ..Default::default()
        }
    );
    let listed: TenantList = json(&server, &["tenant", "list"]);
    let names: Vec<_> = listed.tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["admin", "delta"]);
    let table = ok(berth(&server, &["tenant", "list"], b""));
    assert!(table.starts_with("NAME    KEYS   CREATED"), "{table}");
    assert!(table.contains("max_concurrent_tasks=3"), "{table}");

    let rotated: RotatedKey = json(&server, &["tenant", "rotate-key", "delta"]);
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
    assert!(stderr(&out).contains("unauthorized"), "{}", stderr(&out));
}
