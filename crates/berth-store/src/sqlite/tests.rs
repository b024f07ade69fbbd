use super::*;

fn config(image: &str) -> FunctionConfig {
    serde_json::from_value(serde_json::json!({ "image": image })).unwrap()
}

fn task(function: &str, kind: TaskKind) -> TaskRecord {
    let request = RequestMeta {
        method: "POST".into(),
        query: "a=1".into(),
        ..Default::default()
    };
    let mut t = TaskRecord::new("t", function, 1, kind, request);
    t.max_attempts = 2;
    t.input_bytes = Some(3);
    t
}

fn finish(status: TaskStatus) -> Finish {
    Finish {
        status,
        exit_code: Some(0),
        error: None,
        usage: Usage::default(),
        timing: Timing::default(),
        output_bytes: Some(1),
        durable: true,
    }
}

#[tokio::test]
async fn versions_are_immutable_and_only_made_on_change() {
    let s = SqliteStore::in_memory().await.unwrap();
    let (v1, new) = s
        .put_function("t", "f", &config("a"), "sha256:1")
        .await
        .unwrap();
    assert!(new);
    assert_eq!(v1.version, 1);
    let (same, new) = s
        .put_function("t", "f", &config("a"), "sha256:1")
        .await
        .unwrap();
    assert!(!new);
    assert_eq!(same.version, 1);
    // Same reference, new content behind it: a new version.
    let (v2, new) = s
        .put_function("t", "f", &config("a"), "sha256:2")
        .await
        .unwrap();
    assert!(new);
    assert_eq!(v2.version, 2);
    assert_eq!(
        s.get_version("t", "f", 1).await.unwrap().unwrap().image_id,
        "sha256:1"
    );
    assert_eq!(
        s.get_function("t", "f")
            .await
            .unwrap()
            .unwrap()
            .version_count,
        2
    );
    assert!(s.get_function("other", "f").await.unwrap().is_none());

    let queued = task("f", TaskKind::Async);
    s.insert_task(&queued, None).await.unwrap();
    assert!(s.delete_function("t", "f").await.unwrap());
    assert!(!s.delete_function("t", "f").await.unwrap());
    assert!(s.get_function("t", "f").await.unwrap().is_none());
    assert!(s.get_version("t", "f", 1).await.unwrap().is_none());
    let t = s.get_task("t", queued.id).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.error.unwrap().code, "function_deleted");
    let (v3, _) = s
        .put_function("t", "f", &config("a"), "sha256:1")
        .await
        .unwrap();
    assert_eq!(v3.version, 3, "numbering continues after delete");
}

#[tokio::test]
async fn queue_claims_fifo_once() {
    let s = SqliteStore::in_memory().await.unwrap();
    let tasks: Vec<_> = (0..5).map(|_| task("f", TaskKind::Async)).collect();
    for t in &tasks {
        s.insert_task(t, None).await.unwrap();
    }
    s.insert_task(&task("f", TaskKind::Sync), None)
        .await
        .unwrap();
    let first = s.claim_queued("n1", 3, 10_000, &[]).await.unwrap();
    let ids: Vec<_> = first.iter().map(|t| t.id).collect();
    assert_eq!(ids, tasks[..3].iter().map(|t| t.id).collect::<Vec<_>>());
    assert!(
        first
            .iter()
            .all(|t| t.attempt == 1 && t.status == TaskStatus::Running)
    );
    let rest = s.claim_queued("n2", 10, 10_000, &[]).await.unwrap();
    assert_eq!(rest.len(), 2, "sync tasks are never claimed by the queue");
    assert!(
        s.claim_queued("n2", 10, 10_000, &[])
            .await
            .unwrap()
            .is_empty()
    );

    assert!(
        s.finish_task(ids[0], 1, &finish(TaskStatus::Succeeded))
            .await
            .unwrap()
    );
    // A stale attempt cannot overwrite the result.
    assert!(
        !s.finish_task(ids[0], 1, &finish(TaskStatus::Failed))
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_task("t", ids[0]).await.unwrap().unwrap().status,
        TaskStatus::Succeeded
    );
}

#[tokio::test]
async fn recovery_requeues_then_gives_up() {
    let s = SqliteStore::in_memory().await.unwrap();
    let t = task("f", TaskKind::Async);
    s.insert_task(&t, None).await.unwrap();
    let mut sync = task("f", TaskKind::Sync);
    sync.status = TaskStatus::Running;
    sync.attempt = 1;
    let lease = Lease {
        owner: "dead".into(),
        expires_at: now_ms() + 60_000,
    };
    s.insert_task(&sync, Some(&lease)).await.unwrap();

    s.claim_queued("dead", 1, 60_000, &[]).await.unwrap();
    assert_eq!(
        s.recover(Some("alive")).await.unwrap(),
        Recovered::default()
    );
    let r = s.recover(Some("dead")).await.unwrap();
    assert_eq!(r.requeued, vec![t.id]);
    assert_eq!(r.failed, vec![sync.id]);
    assert_eq!(
        s.get_task("t", sync.id)
            .await
            .unwrap()
            .unwrap()
            .error
            .unwrap()
            .code,
        "lost"
    );

    // Second attempt also lost, by lease expiry this time: out of attempts.
    let again = s.claim_queued("other", 1, -1, &[]).await.unwrap();
    assert_eq!(again[0].attempt, 2);
    let r = s.recover(None).await.unwrap();
    assert_eq!(r.failed, vec![t.id]);
    let t = s.get_task("t", t.id).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.error.unwrap().code, "lost");
}

#[tokio::test]
async fn a_requeued_attempt_counts_and_a_released_one_does_not() {
    let s = SqliteStore::in_memory().await.unwrap();
    let t = task("f", TaskKind::Async);
    s.insert_task(&t, None).await.unwrap();

    let first = s.claim_queued("n", 1, 60_000, &[]).await.unwrap();
    assert_eq!(first[0].attempt, 1);
    assert!(s.requeue_task(t.id, 1).await.unwrap());
    let queued = s.get_task("t", t.id).await.unwrap().unwrap();
    assert_eq!((queued.status, queued.attempt), (TaskStatus::Queued, 1));
    assert!(
        !s.requeue_task(t.id, 1).await.unwrap(),
        "only a running attempt is handed back"
    );

    let second = s.claim_queued("n", 1, 60_000, &[]).await.unwrap();
    assert_eq!(second[0].attempt, 2);
    assert!(s.release_task(t.id, 2).await.unwrap());
    let third = s.claim_queued("n", 1, 60_000, &[]).await.unwrap();
    assert_eq!(third[0].attempt, 2, "a release does not spend the attempt");
    assert!(!s.requeue_task(t.id, 1).await.unwrap(), "stale attempt");
}

#[tokio::test]
async fn cancel_and_tenancy() {
    let s = SqliteStore::in_memory().await.unwrap();
    let a = task("f", TaskKind::Async);
    let b = task("f", TaskKind::Async);
    s.insert_task(&a, None).await.unwrap();
    s.insert_task(&b, None).await.unwrap();
    assert_eq!(s.cancel_task("other", a.id).await.unwrap(), None);
    assert_eq!(
        s.cancel_task("t", a.id).await.unwrap(),
        Some(Cancel::Dequeued)
    );
    let claimed = s.claim_queued("n", 5, 10_000, &[]).await.unwrap();
    assert_eq!(claimed.len(), 1, "a cancelled task is never claimed");
    assert_eq!(
        s.cancel_task("t", b.id).await.unwrap(),
        Some(Cancel::Running {
            lease_owner: Some("n".into())
        })
    );
    assert!(
        !s.finish_task(b.id, 1, &finish(TaskStatus::Succeeded))
            .await
            .unwrap()
    );
    assert_eq!(
        s.cancel_task("t", b.id).await.unwrap(),
        Some(Cancel::AlreadyFinished(TaskStatus::Cancelled))
    );
}

#[tokio::test]
async fn pagination_walks_every_task_once() {
    let s = SqliteStore::in_memory().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..25 {
        let t = task(if i % 2 == 0 { "even" } else { "odd" }, TaskKind::Async);
        ids.push(t.id);
        s.insert_task(&t, None).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut filter = TaskFilter {
        limit: 10,
        ..Default::default()
    };
    loop {
        let page = s.list_tasks("t", &filter).await.unwrap();
        seen.extend(page.tasks.iter().map(|t| t.id));
        match page.next {
            Some(n) => filter.before = Some(n),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, no gaps, no repeats");
    let even = s
        .list_tasks(
            "t",
            &TaskFilter {
                function: Some("even".into()),
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(even.tasks.len(), 13);
    let none = s
        .list_tasks(
            "t",
            &TaskFilter {
                status: Some(TaskStatus::Running),
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(none.tasks.is_empty());
}

#[tokio::test]
async fn keys_resolve_by_hash() {
    let s = SqliteStore::in_memory().await.unwrap();
    s.put_api_key("admin", &[7; 32], "admin").await.unwrap();
    assert_eq!(
        s.tenant_for_key(&[7; 32]).await.unwrap().as_deref(),
        Some("admin")
    );
    assert_eq!(s.tenant_for_key(&[8; 32]).await.unwrap(), None);
    assert_eq!(
        s.delete_api_keys_labelled("admin", "admin").await.unwrap(),
        1
    );
    assert_eq!(s.tenant_for_key(&[7; 32]).await.unwrap(), None);
}

#[tokio::test]
async fn expiry_removes_only_old_finished_tasks() {
    let s = SqliteStore::in_memory().await.unwrap();
    let done = task("f", TaskKind::Async);
    let waiting = task("f", TaskKind::Async);
    s.insert_task(&done, None).await.unwrap();
    s.claim_queued("n", 1, 10_000, &[]).await.unwrap();
    s.finish_task(done.id, 1, &finish(TaskStatus::Succeeded))
        .await
        .unwrap();
    s.insert_task(&waiting, None).await.unwrap();
    assert!(
        s.expire_tasks(now_ms() - 60_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let gone = s.expire_tasks(now_ms() + 1, 100).await.unwrap();
    assert_eq!(gone, vec![done.id]);
    assert!(s.get_task("t", done.id).await.unwrap().is_none());
    assert!(s.get_task("t", waiting.id).await.unwrap().is_some());
}

#[tokio::test]
async fn tenants_own_their_keys_and_quotas() {
    let s = SqliteStore::in_memory().await.unwrap();
    let quotas = QuotaOverrides {
        max_memory_mb: Some(128),
        ..Default::default()
    };
    assert!(s.create_tenant("alpha", &quotas, &[1; 32]).await.unwrap());
    assert!(
        !s.create_tenant("alpha", &QuotaOverrides::default(), &[2; 32])
            .await
            .unwrap(),
        "a taken name is refused"
    );
    assert_eq!(
        s.tenant_for_key(&[2; 32]).await.unwrap(),
        None,
        "the refused creation left no key behind"
    );
    let t = s.get_tenant("alpha").await.unwrap().unwrap();
    assert_eq!((t.overrides.max_memory_mb, t.keys), (Some(128), 1));

    // Rotation: the old key stops, the new one works, in one step.
    assert!(
        s.replace_api_keys("alpha", Some(&[3; 32]), "primary")
            .await
            .unwrap()
    );
    assert_eq!(s.tenant_for_key(&[1; 32]).await.unwrap(), None);
    assert_eq!(
        s.tenant_for_key(&[3; 32]).await.unwrap().as_deref(),
        Some("alpha")
    );
    // Revocation leaves the tenant with no key at all.
    assert!(s.replace_api_keys("alpha", None, "primary").await.unwrap());
    assert_eq!(s.tenant_for_key(&[3; 32]).await.unwrap(), None);
    assert_eq!(s.get_tenant("alpha").await.unwrap().unwrap().keys, 0);
    assert!(!s.replace_api_keys("nope", None, "primary").await.unwrap());

    assert!(
        s.set_tenant_quotas("alpha", &QuotaOverrides::default())
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_tenant("alpha").await.unwrap().unwrap().overrides,
        QuotaOverrides::default()
    );
    assert!(
        !s.set_tenant_quotas("nope", &QuotaOverrides::default())
            .await
            .unwrap()
    );
    s.ensure_tenant("admin").await.unwrap();
    s.ensure_tenant("admin").await.unwrap();
    let names: Vec<_> = s
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["admin", "alpha"]);
}

#[tokio::test]
async fn idempotency_keys_return_the_first_task() {
    let s = SqliteStore::in_memory().await.unwrap();
    let first = task("f", TaskKind::Async);
    assert!(matches!(
        s.insert_task_idempotent(&first, "k1", "d1").await.unwrap(),
        Idempotent::Inserted
    ));
    let again = task("f", TaskKind::Async);
    match s.insert_task_idempotent(&again, "k1", "d1").await.unwrap() {
        Idempotent::Existing { task, same_request } => {
            assert_eq!(task.id, first.id);
            assert!(same_request);
        }
        other => panic!("expected the first task, got {other:?}"),
    }
    match s.insert_task_idempotent(&again, "k1", "d2").await.unwrap() {
        Idempotent::Existing { same_request, .. } => assert!(!same_request),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(s.get_task("t", again.id).await.unwrap().is_none());
    // Keys are per tenant.
    let mut other = task("f", TaskKind::Async);
    other.tenant = "u".into();
    assert!(matches!(
        s.insert_task_idempotent(&other, "k1", "d2").await.unwrap(),
        Idempotent::Inserted
    ));
    assert_eq!(s.count_tasks("t", TaskStatus::Queued).await.unwrap(), 1);
}

#[tokio::test]
async fn claims_skip_tenants_at_their_quota() {
    let s = SqliteStore::in_memory().await.unwrap();
    let mut busy = task("f", TaskKind::Async);
    busy.tenant = "busy".into();
    s.insert_task(&busy, None).await.unwrap();
    let free = task("f", TaskKind::Async);
    s.insert_task(&free, None).await.unwrap();
    let claimed = s
        .claim_queued("n", 10, 10_000, &["busy".to_owned()])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, free.id);
    assert_eq!(s.count_tasks("busy", TaskStatus::Queued).await.unwrap(), 1);
}
