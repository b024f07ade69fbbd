//! Conformance cases for functions and their versions. A backend runs them
//! through [`conformance_tests!`](crate::conformance_tests), never one by
//! one (see [`crate::conformance`]).

use berth_core::{ErrorCode, TaskKind, TaskStatus};

use super::{TENANT, claim, config, get, insert, task, task_of};
use crate::Store;

/// A version number names one config and image forever; a put that changes
/// nothing must not spend a number, or every redeploy would look new.
pub async fn versions_are_immutable_and_only_made_on_change(s: &dyn Store) {
    let (v1, new) = s
        .put_function(TENANT, "f", &config("a"), "sha256:1")
        .await
        .unwrap();
    assert!(new, "the first put makes a version");
    assert_eq!(v1.version, 1, "numbering starts at 1");
    let (same, new) = s
        .put_function(TENANT, "f", &config("a"), "sha256:1")
        .await
        .unwrap();
    assert!(!new, "an unchanged put makes no version");
    assert_eq!(same, v1, "an unchanged put returns the version in force");

    // Same reference, new content behind it: a new version.
    let (v2, new) = s
        .put_function(TENANT, "f", &config("a"), "sha256:2")
        .await
        .unwrap();
    assert!(new && v2.version == 2, "a new image id makes version 2");
    let (v3, new) = s
        .put_function(TENANT, "f", &config("b"), "sha256:2")
        .await
        .unwrap();
    assert!(new && v3.version == 3, "a new config makes version 3");

    let old = s.get_version(TENANT, "f", 1).await.unwrap();
    assert_eq!(old, Some(v1), "version 1 reads back unchanged");
    let versions: Vec<_> = s
        .list_versions(TENANT, "f")
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(versions, [1, 2, 3], "versions are listed oldest first");
    let summary = s.get_function(TENANT, "f").await.unwrap().unwrap();
    assert_eq!(summary.latest, v3, "the summary shows the newest version");
    assert_eq!(summary.version_count, 3);
    assert!(summary.created_at <= summary.updated_at);

    assert!(
        s.get_function("other", "f").await.unwrap().is_none(),
        "another tenant does not see the function"
    );
    assert!(s.get_version("other", "f", 1).await.unwrap().is_none());
    assert!(s.list_versions("other", "f").await.unwrap().is_empty());
}

/// A tenant lists its own functions by name; the all-tenant listing (work
/// done at start) sees every one, in whatever order.
pub async fn functions_are_listed_per_tenant(s: &dyn Store) {
    for (tenant, name) in [(TENANT, "b"), (TENANT, "a"), ("u", "a")] {
        s.put_function(tenant, name, &config("i"), "sha256:1")
            .await
            .unwrap();
    }
    let names = |list: Vec<berth_core::FunctionSummary>| -> Vec<(String, String)> {
        list.into_iter()
            .map(|f| (f.latest.tenant, f.latest.function))
            .collect()
    };
    assert_eq!(
        names(s.list_functions(TENANT).await.unwrap()),
        [(TENANT.into(), "a".into()), (TENANT.into(), "b".into())],
        "a tenant's functions, by name"
    );
    assert_eq!(
        names(s.list_functions("u").await.unwrap()),
        [("u".into(), "a".into())]
    );
    assert!(s.list_functions("nobody").await.unwrap().is_empty());
    let mut all = names(s.list_all_functions().await.unwrap());
    all.sort();
    assert_eq!(
        all,
        [
            (TENANT.into(), "a".into()),
            (TENANT.into(), "b".into()),
            ("u".into(), "a".into())
        ],
        "every tenant's functions"
    );
}

/// Deleting a function strands its queued tasks, so they end at once with
/// a code saying why. A running task belongs to its executor, and other
/// functions (of this tenant or of another) are not touched.
pub async fn deleting_a_function_fails_only_its_queued_tasks(s: &dyn Store) {
    for (tenant, name, image) in [
        (TENANT, "f", "sha256:1"),
        (TENANT, "f", "sha256:2"),
        (TENANT, "g", "sha256:1"),
        ("u", "f", "sha256:1"),
    ] {
        s.put_function(tenant, name, &config("i"), image)
            .await
            .unwrap();
    }
    let running = task("f", TaskKind::Async);
    insert(s, &running).await;
    claim(s, &running, "n", 60_000).await;
    let queued = task("f", TaskKind::Async);
    let sibling = task("g", TaskKind::Async);
    let namesake = task_of("u", "f", TaskKind::Async);
    for t in [&queued, &sibling, &namesake] {
        insert(s, t).await;
    }

    assert!(s.delete_function(TENANT, "f").await.unwrap());
    assert!(
        !s.delete_function(TENANT, "f").await.unwrap(),
        "a second delete finds nothing"
    );

    let failed = get(s, &queued).await;
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(
        failed.error.map(|e| e.code),
        Some(ErrorCode::FunctionDeleted),
        "the queued task says why it ended"
    );
    assert!(
        failed.finished_at.is_some(),
        "a failed task has an end time"
    );
    assert_eq!(
        get(s, &running).await.status,
        TaskStatus::Running,
        "a running task is left to its executor"
    );
    assert_eq!(get(s, &sibling).await.status, TaskStatus::Queued);
    assert_eq!(get(s, &namesake).await.status, TaskStatus::Queued);

    assert!(s.get_function(TENANT, "f").await.unwrap().is_none());
    assert!(s.get_version(TENANT, "f", 1).await.unwrap().is_none());
    assert!(s.list_versions(TENANT, "f").await.unwrap().is_empty());
    assert_eq!(s.list_functions(TENANT).await.unwrap().len(), 1);
    assert!(
        s.get_function("u", "f").await.unwrap().is_some(),
        "another tenant's function of the same name stays"
    );

    let (again, new) = s
        .put_function(TENANT, "f", &config("i"), "sha256:1")
        .await
        .unwrap();
    assert!(new);
    assert_eq!(
        again.version, 3,
        "numbering continues after a delete, so a number never names two things"
    );
}
