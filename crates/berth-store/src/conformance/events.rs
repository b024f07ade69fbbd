//! Conformance case for events between replicas. A store that carries none
//! (one node) says so with `listen() == None`; one that does delivers
//! every event sent from any handle to every listener. A backend runs it
//! through [`conformance_tests!`](crate::conformance_tests) (see
//! [`crate::conformance`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::TENANT;
use crate::{Event, Invalidation, Store};

pub async fn an_event_reaches_every_listener<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let a = open().await;
    let b = open().await;
    let Some(mut heard) = a.listen().await.unwrap() else {
        assert!(
            b.listen().await.unwrap().is_none(),
            "no events: none anywhere"
        );
        b.notify(&Event::Queued)
            .await
            .expect("telling nobody succeeds");
        return;
    };
    let tenant = TENANT.to_owned();
    let sent = [
        Event::Queued,
        Event::Invalidate(Invalidation::Keys {
            tenant: tenant.clone(),
        }),
        Event::Invalidate(Invalidation::Quotas {
            tenant: tenant.clone(),
        }),
        Event::Invalidate(Invalidation::Function {
            tenant,
            name: "an \"odd\", name".into(),
        }),
    ];
    for e in &sent {
        b.notify(e).await.unwrap();
    }
    a.notify(&Event::Queued).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..=sent.len() {
        // A bound on a hang, not a measure of speed.
        let next = tokio::time::timeout(Duration::from_secs(30), heard.next()).await;
        got.push(
            next.expect("an event sent is received")
                .expect("the stream lasts while the store is up"),
        );
    }
    let mut expected = sent.to_vec();
    expected.push(Event::Queued);
    assert_eq!(
        got, expected,
        "another replica's, then this one's own, in order"
    );
}
