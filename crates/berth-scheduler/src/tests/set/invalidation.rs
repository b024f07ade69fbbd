//! What one replica changes reaches the other's caches: a rotated key, a
//! tenant's new quotas, a new version. Where the store carries events the
//! other replica forgets as soon as it hears of the change (and queued
//! work wakes its dispatcher); where it carries none (SQLite), within the
//! caches' lifetimes. Either way the replica that made the change forgets
//! at once.

use berth_core::ADMIN_TENANT;
use berth_store::{Event, Invalidation};

use super::*;

async fn who(m: &Manager, key: &str) -> Option<String> {
    m.tasks.authenticate(key).await.expect("authenticate")
}

async fn concurrency(m: &Manager) -> u32 {
    let q = m.tasks.quotas_of(ALPHA).await.expect("quotas");
    q.max_concurrent_tasks
}

async fn routed(m: &Manager) -> i64 {
    let v = m.tasks.route(ALPHA, "f", &post(None)).await.expect("route");
    v.version
}

pub(super) async fn a_change_made_on_one_replica_reaches_the_other(backend: Backend) {
    // A claims nothing; B polls its queue once an hour, so with events
    // only A's word can have B run what A queued.
    let a = Config {
        async_concurrency: 0,
        ..cfg()
    };
    let b = Config {
        poll_interval: Duration::from_secs(3_600),
        ..cfg()
    };
    let Some(set) = Set::new(backend, a, b).await else {
        return;
    };
    deploy(&set.a, ALPHA, "f", &["echo-upper"]).await;
    set.a.start_background();
    set.b.start_background();
    if backend.has_events() {
        eventually("B to listen", async || set.b_store.record().listening >= 1).await;
    }
    // B knows the key, the quotas and the version, and remembers them.
    assert_eq!(who(&set.b, ALPHA_KEY).await.as_deref(), Some(ALPHA));
    let quota = concurrency(&set.b).await;
    call(&set.b, ALPHA, "f", "v1").await.expect("B's call");
    assert_eq!(versions_run(&set.b, "f"), [1]);

    let new_key = set.a.tasks.rotate_key(ALPHA, ALPHA).await.expect("rotate");
    let raised = QuotaOverrides {
        max_concurrent_tasks: Some(quota + 1),
        ..QuotaOverrides::default()
    };
    set.a
        .tasks
        .set_quotas(ADMIN_TENANT, ALPHA, &raised)
        .await
        .expect("quotas");
    let mut changed = function(&["echo-upper"]);
    changed.memory_mb = 512;
    assert_eq!(deploy_config(&set.a, ALPHA, "f", changed).await, 2);

    // Where the change was made: at once.
    assert_eq!(who(&set.a, ALPHA_KEY).await, None);
    assert_eq!(who(&set.a, &new_key).await.as_deref(), Some(ALPHA));
    assert_eq!(concurrency(&set.a).await, quota + 1);
    assert_eq!(routed(&set.a).await, 2);
    // A key B never saw is read from the store.
    assert_eq!(who(&set.b, &new_key).await.as_deref(), Some(ALPHA));

    if backend.has_events() {
        let heard = [
            Invalidation::Keys {
                tenant: ALPHA.into(),
            },
            Invalidation::Quotas {
                tenant: ALPHA.into(),
            },
            Invalidation::Function {
                tenant: ALPHA.into(),
                name: "f".into(),
            },
        ]
        .map(Event::Invalidate);
        eventually("B to hear of every change", async || {
            let handled = set.b_store.record().handled;
            heard.iter().all(|e| handled.contains(e))
        })
        .await;
        // Heard: forgotten at once, not when the caches run out.
        assert_eq!(who(&set.b, ALPHA_KEY).await, None);
        assert_eq!(concurrency(&set.b).await, quota + 1);
        assert_eq!(routed(&set.b).await, 2);
    } else {
        // Nothing to hear: the caches' lifetimes bound how stale B is (a
        // bound on a hang here, not a measure).
        eventually("B to stop taking the old key", async || {
            who(&set.b, ALPHA_KEY).await.is_none()
        })
        .await;
        eventually("B to read the new quotas", async || {
            concurrency(&set.b).await == quota + 1
        })
        .await;
        eventually("B to route to the new version", async || {
            routed(&set.b).await == 2
        })
        .await;
    }
    call(&set.b, ALPHA, "f", "v2").await.expect("B's call");
    assert_eq!(versions_run(&set.b, "f"), [1, 2]);

    if backend.has_events() {
        // Queued on A, which claims nothing: B, which does not poll, runs
        // it because A told it.
        eventually("B to have looked at the queue", async || {
            set.b_store.record().claims >= 1
        })
        .await;
        let t = submit(&set.a, ALPHA, "f", "woken").await;
        let done = finished(&set.b, ALPHA, t.id).await;
        assert_eq!(done.node.as_deref(), Some(B));
        assert_eq!(
            payload(&set.b, &done, PayloadKind::Output).await.unwrap(),
            "WOKEN"
        );
        assert!(started(&set.a).is_empty());
    }
}
