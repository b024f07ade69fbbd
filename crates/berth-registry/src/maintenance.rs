//! The registry's housekeeping in a set: one replica at a time holds the
//! `registry-gc` lease (an expiring row of the index, renewed while its
//! holder lives, taken over by another replica once it lapses) and only
//! it expires idle uploads and collects garbage.
//!
//! Collections run at most once per period across the set, whoever holds
//! the lease: the period is a second lease, `registry-gc-due`, taken under
//! a new holder name at each attempt, which succeeds only once the last
//! collection's period has run out. So a rolling restart that moves the
//! lease does not delay or repeat a collection.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::gc::GcOptions;
use crate::registry::Registry;

/// The lease naming the replica that runs the registry's housekeeping.
pub const MAINTENANCE_LEASE: &str = "registry-gc";
/// The lease that spaces collections out across the set.
const DUE_LEASE: &str = "registry-gc-due";
/// How often the holder renews the lease and expires idle uploads.
const TICK: Duration = Duration::from_secs(30);
/// A holder that stopped renewing loses the lease this long after.
const LEASE_TTL: Duration = Duration::from_secs(90);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Runs the registry's housekeeping until `shutdown`, on this replica
/// while it holds the lease as `holder` (its node id): idle uploads are
/// expired every 30 s, and a collection runs every `every` across the set.
/// At shutdown the lease is given up at once.
pub fn spawn_maintenance(
    reg: Arc<Registry>,
    holder: String,
    every: Duration,
    opts: GcOptions,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let every = every.max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            match reg
                .index
                .hold_lease(MAINTENANCE_LEASE, &holder, ms(LEASE_TTL))
                .await
            {
                Ok(true) => pass(&reg, every, &opts).await,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "registry maintenance: taking the lease"),
            }
        }
        if let Err(e) = reg.index.release_lease(MAINTENANCE_LEASE, &holder).await {
            warn!(error = %e, "registry maintenance: giving up the lease");
        }
    })
}

/// One turn of the lease holder.
async fn pass(reg: &Registry, every: Duration, opts: &GcOptions) {
    let n = reg.expire_uploads().await;
    if n > 0 {
        info!(expired = n, "expired idle registry uploads");
    }
    let once = uuid::Uuid::new_v4().to_string();
    match reg.index.hold_lease(DUE_LEASE, &once, ms(every)).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            warn!(error = %e, "registry maintenance: checking whether a collection is due");
            return;
        }
    }
    match reg.gc(opts.clone()).await {
        Ok(r) => info!(
            deleted = r.deleted,
            bytes = r.bytes_freed,
            young = r.young,
            uploads = r.uploads_removed,
            "registry garbage collection"
        ),
        Err(e) => warn!(error = %e, "registry garbage collection failed"),
    }
}
