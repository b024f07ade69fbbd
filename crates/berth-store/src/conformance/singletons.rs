//! Conformance cases for singletons: jobs (the lease reaper, retention,
//! registry GC) that one replica of a set runs at a time, held through an
//! expiring lease on the store's clock. A backend runs them through
//! [`conformance_tests!`](crate::conformance_tests) (see
//! [`crate::conformance`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::Store;

const HOUR: i64 = 3_600_000;

pub async fn a_singleton_has_one_holder_until_it_expires(s: &dyn Store) {
    assert!(
        s.hold_singleton("reaper", "a", HOUR).await.unwrap(),
        "free: taken"
    );
    assert!(
        !s.hold_singleton("reaper", "b", HOUR).await.unwrap(),
        "held: refused"
    );
    assert!(
        s.hold_singleton("reaper", "a", HOUR).await.unwrap(),
        "ours: kept"
    );
    assert!(
        s.hold_singleton("gc", "b", HOUR).await.unwrap(),
        "each name is its own singleton"
    );

    // A holder that stops renewing (here: renews into the past) loses it
    // to the next one that asks.
    assert!(s.hold_singleton("reaper", "a", -1).await.unwrap());
    assert!(
        s.hold_singleton("reaper", "b", HOUR).await.unwrap(),
        "expired: taken"
    );
    assert!(
        !s.hold_singleton("reaper", "a", HOUR).await.unwrap(),
        "b has it now"
    );

    // The same with a lease that runs out while we wait on the store's own
    // clock, the one expiry is judged by: it was taken before `now`, so it
    // has expired once the clock is past `now + 1`.
    assert!(s.hold_singleton("retention", "a", 1).await.unwrap());
    let now = s.now_ms().await.unwrap();
    assert!(
        now > 1_600_000_000_000,
        "the store's clock counts ms since 1970"
    );
    while s.now_ms().await.unwrap() <= now + 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(s.hold_singleton("retention", "b", HOUR).await.unwrap());
}

pub async fn a_released_singleton_is_free_at_once(s: &dyn Store) {
    assert!(s.hold_singleton("gc", "a", HOUR).await.unwrap());
    s.release_singleton("gc", "b").await.unwrap();
    assert!(
        !s.hold_singleton("gc", "b", HOUR).await.unwrap(),
        "only the holder can give it up"
    );
    s.release_singleton("gc", "a").await.unwrap();
    assert!(
        s.hold_singleton("gc", "b", HOUR).await.unwrap(),
        "free at once"
    );
    s.release_singleton("nothing", "a").await.unwrap();
}

/// Every replica asks at once; exactly one gets it.
pub async fn concurrent_holders_never_share_a_singleton<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(open().await);
    }
    let mut asks = JoinSet::new();
    for i in 0..16 {
        let s = Arc::clone(&nodes[i % nodes.len()]);
        asks.spawn(async move {
            s.hold_singleton("reaper", &format!("replica-{i}"), HOUR)
                .await
        });
    }
    let mut holders = 0;
    while let Some(held) = asks.join_next().await {
        holders += usize::from(held.expect("a replica panicked").unwrap());
    }
    assert_eq!(holders, 1, "one holder at a time");
}
