//! Deploying and routing: a change makes a new version that new calls run
//! at once, a queued task keeps the version it was accepted for, a delete
//! lets the function's instances go, and a deploy that cannot be served
//! is refused with nothing recorded.

use crate::testing::Retired;

use super::*;

#[tokio::test]
async fn a_redeploy_that_changes_the_config_serves_new_calls() {
    let m = manager(cfg()).await;
    let v1 = m.tasks.deploy(ALPHA, "f", function(&[])).await.expect("v1");
    assert_eq!((v1.version.version, v1.created), (1, true));
    call(&m, ALPHA, "f", "a").await.expect("call on v1");

    // The same definition again changes nothing.
    let same = m
        .tasks
        .deploy(ALPHA, "f", function(&[]))
        .await
        .expect("same");
    assert_eq!((same.version.version, same.created), (1, false));

    let mut changed = function(&[]);
    changed.env.insert("GREETING".into(), "hi".into());
    let v2 = m.tasks.deploy(ALPHA, "f", changed).await.expect("v2");
    assert_eq!((v2.version.version, v2.created), (2, true));
    let (_, _, result) = call(&m, ALPHA, "f", "b").await.expect("call on v2");
    assert_eq!(result.outcome.status, TaskStatus::Succeeded);

    assert_eq!(versions_run(&m, "f"), [1, 2]);
    let spec = m.fake().started().pop().expect("the second call");
    assert_eq!(spec.env, [("GREETING".to_owned(), "hi".to_owned())]);
    let summary = m.tasks.function(ALPHA, "f").await.expect("summary");
    assert_eq!((summary.latest.version, summary.version_count), (2, 2));
    let versions = m.tasks.versions(ALPHA, "f").await.expect("versions");
    assert_eq!(versions.len(), 2);
    // Each deploy readied its version and let the older ones go.
    let kept: Vec<_> = m.fake().retired().iter().map(|r| r.keep).collect();
    assert_eq!(kept, [Some(1), Some(1), Some(2)]);
    let prepared: Vec<_> = m.fake().prepared().iter().map(|s| s.version).collect();
    assert_eq!(prepared, [1, 1, 2]);
}

#[tokio::test]
async fn a_queued_task_runs_the_version_it_was_accepted_for() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &["echo-upper"]).await;
    let before = submit(&m, ALPHA, "f", "old").await;
    let mut changed = function(&["echo-upper"]);
    changed.memory_mb = 512;
    deploy_config(&m, ALPHA, "f", changed).await;
    let after = submit(&m, ALPHA, "f", "new").await;
    assert_eq!((before.version, after.version), (1, 2));

    m.start_background();
    for t in [&before, &after] {
        let done = finished(&m, ALPHA, t.id).await;
        assert_eq!(
            (done.status, done.version),
            (TaskStatus::Succeeded, t.version)
        );
    }
    let mut ran: Vec<_> = m
        .fake()
        .started()
        .iter()
        .map(|s| (s.task_id, s.version, s.memory_mb))
        .collect();
    ran.sort();
    assert_eq!(ran, [(before.id, 1, 256), (after.id, 2, 512)]);
}

#[tokio::test]
async fn deleting_a_function_retires_it_everywhere() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &[]).await;
    deploy(&m, BETA, "f", &[]).await;
    let retired_before = m.fake().retire_calls();

    m.tasks.delete_function(ALPHA, "f").await.expect("delete");

    let retired = m.fake().retired();
    assert_eq!(retired.len(), retired_before + 1, "one retire, no more");
    assert_eq!(
        retired.last(),
        Some(&Retired {
            tenant: ALPHA.into(),
            function: "f".into(),
            keep: None,
        })
    );
    for result in [
        m.tasks.function(ALPHA, "f").await.map(|_| ()),
        m.tasks.delete_function(ALPHA, "f").await,
        call(&m, ALPHA, "f", "x").await.map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(SchedError::FunctionNotFound(_))),
            "{result:?}"
        );
    }
    // The other tenant's function of the same name is untouched.
    let (_, stdout, _) = call(&m, BETA, "f", "x").await.expect("beta's call");
    assert_eq!(stdout, "X");
    assert_eq!(m.fake().started().len(), 1);
}

/// Deploys `config` as alpha's function `name`, expects the error named
/// `want`, and checks nothing was recorded or readied.
async fn check_refused(name: &str, config: FunctionConfig, want: &str) {
    let m = manager(cfg()).await;
    let small = QuotaOverrides {
        max_cpu_millis: Some(500),
        ..QuotaOverrides::default()
    };
    m.tasks
        .set_quotas(berth_core::ADMIN_TENANT, ALPHA, &small)
        .await
        .expect("quotas");
    let refused = m.tasks.deploy(ALPHA, name, config).await;
    match refused {
        Err(e) => assert_eq!(variant(&e), want, "{name}: {e}"),
        Ok(d) => panic!("{name}: deployed {:?}, expected {want}", d.version),
    }
    assert!(m.tasks.functions(ALPHA).await.expect("list").is_empty());
    assert_eq!((m.fake().prepare_calls(), m.fake().retire_calls()), (0, 0));
}

fn image(reference: &str) -> FunctionConfig {
    FunctionConfig {
        image: reference.into(),
        cpu_millis: 250,
        ..function(&[])
    }
}

#[tokio::test]
async fn a_deploy_that_cannot_be_served_is_refused() {
    check_refused("f", image("missing"), "ImageNotFound").await;
    check_refused("F!", image("img"), "Invalid").await;
    check_refused("f", image(""), "Invalid").await;
    check_refused(
        "f",
        FunctionConfig {
            cpu_millis: 5,
            ..image("img")
        },
        "Invalid",
    )
    .await;
    check_refused(
        "f",
        FunctionConfig {
            cpu_millis: 1000,
            ..image("img")
        },
        "OverQuota",
    )
    .await;
}

#[tokio::test]
async fn a_deploy_pins_the_image_the_executor_resolved() {
    let m = manager(cfg()).await;
    let d = m
        .tasks
        .deploy(ALPHA, "f", image("img:1"))
        .await
        .expect("deploy");
    assert_eq!(d.version.image_id, crate::testing::image_id("img:1"));
    call(&m, ALPHA, "f", "").await.expect("call");
    let spec = m.fake().started_for("f").expect("ran");
    assert_eq!(spec.image, crate::testing::image_id("img:1"));
}

#[tokio::test]
async fn another_tenants_functions_and_tasks_are_not_found() {
    let m = manager(cfg()).await;
    deploy(&m, ALPHA, "f", &[]).await;
    let t = submit(&m, ALPHA, "f", "x").await;

    let refusals = [
        ("call", call(&m, BETA, "f", "x").await.map(|_| ())),
        (
            "submit",
            m.tasks
                .submit(BETA, "f", post(Some(0)), input(""), None)
                .await
                .map(|_| ()),
        ),
        ("read", m.tasks.task(BETA, t.id).await.map(|_| ())),
        ("cancel", m.tasks.cancel(BETA, t.id).await.map(|_| ())),
        ("delete", m.tasks.delete_function(BETA, "f").await),
    ];
    let names: Vec<_> = refusals
        .iter()
        .map(|(what, r)| (*what, r.as_ref().map_err(variant).err()))
        .collect();
    let not_found = |what, v: &str| (what, Some(v.to_owned()));
    assert_eq!(
        names,
        [
            not_found("call", "FunctionNotFound"),
            not_found("submit", "FunctionNotFound"),
            not_found("read", "TaskNotFound"),
            not_found("cancel", "TaskNotFound"),
            not_found("delete", "FunctionNotFound"),
        ]
    );
    assert_eq!(task(&m, ALPHA, t.id).await, t, "alpha's task untouched");
    assert!(all_tasks(&m, BETA).await.is_empty());
    assert!(m.fake().started().is_empty());
}
