//! The set's own jobs (recovering lapsed leases, retention) run on the
//! one replica holding their singleton; the others keep asking and are
//! refused. A replica that shuts down gives its singletons up and asks no
//! more, so they move to another at its next try.

use super::gated::Record;
use super::*;

/// Whether A is the one replica that holds `name`: at each of its tries
/// the holder held it and the other did not. Panics when both held it or
/// it changed hands.
fn sole_holder(a: &Record, b: &Record, name: &str) -> bool {
    let tries = |r: &Record| -> Vec<bool> {
        r.holds
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, held)| *held)
            .collect()
    };
    let (a, b) = (tries(a), tries(b));
    let all = |v: &[bool], want: bool| v.iter().all(|h| *h == want);
    match (all(&a, true), all(&b, false), all(&a, false), all(&b, true)) {
        (true, true, _, _) => true,
        (_, _, true, true) => false,
        _ => panic!("{name} was held by both or changed hands: A {a:?}, B {b:?}"),
    }
}

pub(super) async fn set_wide_jobs_run_on_one_replica_and_move_when_it_leaves(backend: Backend) {
    // Tries every second, holds for three: a holder renews in time even
    // on a loaded machine.
    let lease = Duration::from_secs(3);
    let cfg = || Config { lease, ..cfg() };
    let Some(set) = Set::new(backend, cfg(), cfg()).await else {
        return;
    };
    set.a.start_background();
    set.b.start_background();
    eventually("both replicas to try for the reaper twice", async || {
        set.a_store.record().held(REAPER).1 >= 2 && set.b_store.record().held(REAPER).1 >= 2
    })
    .await;
    // Retention tries at start, then each minute; its holder then expires
    // old tasks at once.
    eventually(
        "both to try for retention, and its holder to run it",
        async || {
            let (a, b) = (set.a_store.record(), set.b_store.record());
            a.held(RETENTION).1 >= 1 && b.held(RETENTION).1 >= 1 && a.expiries + b.expiries >= 1
        },
    )
    .await;

    let (a, b) = (set.a_store.record(), set.b_store.record());
    let a_reaps = sole_holder(&a, &b, REAPER);
    let (holder, holder_store, other_store) = if a_reaps {
        (&set.a, &set.a_store, &set.b_store)
    } else {
        (&set.b, &set.b_store, &set.a_store)
    };
    assert!(holder_store.record().recoveries >= 1, "the holder reaps");
    assert_eq!(other_store.record().recoveries, 0, "the other never does");
    let a_retains = sole_holder(&a, &b, RETENTION);
    let (retainer, bystander) = if a_retains { (a, b) } else { (b, a) };
    assert!(retainer.expiries >= 1);
    assert_eq!(bystander.expiries, 0, "retention runs on one replica");

    // The reaper's holder leaves: the other takes the reaper at its next
    // try, and the one that left never holds it again.
    within(
        "the holder's shutdown",
        holder.shut_down(Duration::from_millis(50)),
    )
    .await;
    let tries_before = other_store.record().held(REAPER).1;
    let left_at = holder_store.record().holds.len();
    eventually(
        "the other replica to take the reaper and keep it",
        async || {
            let reaper: Vec<bool> = other_store
                .record()
                .holds
                .iter()
                .filter(|(n, _)| n == REAPER)
                .map(|(_, h)| *h)
                .collect();
            reaper.len() >= tries_before + 3 && reaper.ends_with(&[true, true])
        },
    )
    .await;
    let after: Vec<_> = holder_store.record().holds[left_at..].to_vec();
    assert!(
        after.iter().all(|(_, held)| !held),
        "a replica that left holds nothing: {after:?}"
    );
    let recoveries = other_store.record().recoveries;
    assert!(recoveries >= 1, "the new holder reaps");
}
