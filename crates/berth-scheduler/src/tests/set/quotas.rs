//! The running quota is the set's: counted in the store, so a tenant's
//! limit holds however its sync calls and async attempts spread over the
//! replicas.

use std::sync::atomic::{AtomicUsize, Ordering};

use berth_core::ErrorCode;

use super::*;

const SMALL: &str = "small";

fn at_most(running: u32) -> QuotaOverrides {
    QuotaOverrides {
        max_concurrent_tasks: Some(running),
        ..QuotaOverrides::default()
    }
}

/// Starts a call of the tenant's function `f` on `m` and keeps it
/// running.
async fn hold(m: &Manager, tenant: &str) -> SyncCall {
    m.tasks
        .invoke(tenant, "f", post(Some(0)), input(""))
        .await
        .unwrap_or_else(|e| panic!("{tenant}'s call: {e}"))
}

pub(super) async fn sync_calls_past_the_quota_are_refused_on_every_replica(backend: Backend) {
    let Some(set) = Set::new(backend, cfg(), cfg()).await else {
        return;
    };
    tenant_with(&set.a, SMALL, at_most(2)).await;
    deploy(&set.a, SMALL, "f", &["sleep"]).await;
    let on_a = hold(&set.a, SMALL).await;
    let on_b = hold(&set.b, SMALL).await;

    for m in [&set.a, &set.b] {
        match m.tasks.invoke(SMALL, "f", post(Some(0)), input("")).await {
            Err(SchedError::QuotaExceeded(msg)) => assert!(msg.contains("max_concurrent_tasks")),
            Err(e) => panic!("expected QuotaExceeded, got {e:?}"),
            Ok(_) => panic!("a call past the set's quota started"),
        }
    }
    // Each replica runs its one call; the refused ones ran and recorded
    // nothing.
    assert_eq!(started(&set.a), [on_a.task_id]);
    assert_eq!(started(&set.b), [on_b.task_id]);
    assert_eq!(all_tasks(&set.a, SMALL).await.len(), 2);

    // A call ending on one replica frees a place on the other.
    let SyncCall { stdout, result, .. } = on_a;
    drop(stdout);
    let ended = within("A's call to end", result).await.expect("result");
    assert_eq!(ended.outcome.code(), Some(ErrorCode::ClientDisconnected));
    let again = hold(&set.b, SMALL).await;
    assert_eq!(started(&set.b), [on_b.task_id, again.task_id]);
    assert_eq!(set.b.tasks.running_tasks(SMALL), 2);
    drop((again, on_b));
}

/// Both replicas claim from one queue of a tenant allowed two at once:
/// a claim racing another can take the tenant past its quota in the
/// store for a moment, but what went past is handed back, uncounted,
/// before it runs. What the two executors run together never exceeds the
/// quota, and every task runs once, as its first attempt.
pub(super) async fn async_claims_on_every_replica_stay_within_the_quota(backend: Backend) {
    let Some(set) = Set::new(backend, cfg(), cfg()).await else {
        return;
    };
    tenant_with(&set.a, SMALL, at_most(2)).await;
    // Each attempt runs until its timeout: a second, long enough for the
    // other replica's claims to meet it.
    let mut config = function(&["sleep"]);
    config.timeout_secs = 1;
    deploy_config(&set.a, SMALL, "f", config).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(submit(&set.a, SMALL, "f", &i.to_string()).await.id);
    }

    // Samples what the two executors run together, all along.
    let most = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let executors = [Arc::clone(&set.a.executor), Arc::clone(&set.b.executor)];
        let most = Arc::clone(&most);
        tokio::spawn(async move {
            loop {
                let now: usize = executors.iter().map(|e| e.inner().running().len()).sum();
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    set.a.start_background();
    set.b.start_background();
    let mut done = Vec::new();
    for id in &ids {
        done.push(finished(&set.a, SMALL, *id).await);
    }
    watcher.abort();

    let most = most.load(Ordering::SeqCst);
    assert!((1..=2).contains(&most), "{most} attempts ran at once");
    for t in &done {
        assert_ended(t, TaskStatus::TimedOut, Some(ErrorCode::Timeout), None);
        assert_eq!(t.attempt, 1, "a claim handed back is not an attempt");
        // Claims handed back, then the one that ran, all as attempt 1.
        let claims = attempts(&set.a, SMALL, t.id).await;
        let (last, handed_back) = claims.split_last().expect("claimed");
        assert_eq!(
            (last.0, last.1, last.3),
            (1, t.epoch, Some(AttemptEnd::Finished))
        );
        assert_eq!(Some(&last.2), t.node.as_ref());
        for c in handed_back {
            assert_eq!((c.0, c.3), (1, Some(AttemptEnd::Released)), "{claims:?}");
        }
    }
    let mut ran = started(&set.a);
    ran.extend(started(&set.b));
    ran.sort();
    ids.sort();
    assert_eq!(ran, ids, "every task ran once, on one replica or the other");
}
