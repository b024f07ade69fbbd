//! The pool's policy over a fake launcher, in tokio's paused time: timers
//! fire in order and instantly, so the timings asserted are exact.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use berth_core::{Mode, RequestMeta, TaskId};
use berth_executor::PoolSettings;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;

struct FakeInstance(String);

impl Instance for FakeInstance {
    fn id(&self) -> &str {
        &self.0
    }
}

#[derive(Default)]
struct FakeLauncher {
    launched: AtomicUsize,
    destroyed: AtomicUsize,
    fail: AtomicBool,
    delay_ms: u64,
    destroy_delay_ms: u64,
    /// Instances an `evict` call must be able to take, beyond which the
    /// launch fails as the node being full.
    node_capacity: Option<usize>,
    alive: AtomicUsize,
}

#[async_trait]
impl Launcher for FakeLauncher {
    type Instance = FakeInstance;

    async fn launch(
        &self,
        _spec: &RunSpec,
        evict: &(dyn Fn() -> Option<Arc<FakeInstance>> + Send + Sync),
    ) -> Result<Arc<FakeInstance>, ExecError> {
        tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
        if self.fail.load(Ordering::SeqCst) {
            return Err(ExecError::Engine("boom".into()));
        }
        if let Some(cap) = self.node_capacity
            && self.alive.load(Ordering::SeqCst) >= cap
        {
            match evict() {
                Some(victim) => self.destroy(victim).await,
                None => return Err(ExecError::NoCapacity(cap)),
            }
        }
        self.alive.fetch_add(1, Ordering::SeqCst);
        let n = self.launched.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(FakeInstance(format!("i{n}"))))
    }

    async fn destroy(&self, _instance: Arc<FakeInstance>) {
        tokio::time::sleep(Duration::from_millis(self.destroy_delay_ms)).await;
        self.alive.fetch_sub(1, Ordering::SeqCst);
        self.destroyed.fetch_add(1, Ordering::SeqCst);
    }
}

impl FakeLauncher {
    fn slow(delay_ms: u64) -> Self {
        Self {
            delay_ms,
            ..Default::default()
        }
    }

    fn launched(&self) -> usize {
        self.launched.load(Ordering::SeqCst)
    }

    fn alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }
}

fn spec(function: &str, pool: PoolSettings) -> RunSpec {
    RunSpec {
        task_id: TaskId::new(),
        tenant: "t".into(),
        function: function.into(),
        version: 1,
        image: "sha256:x".into(),
        command: None,
        env: vec![],
        request_env: vec![],
        request: RequestMeta::default(),
        cpu_millis: 100,
        memory_mb: 64,
        timeout: Duration::from_secs(5),
        mode: Mode::Exec,
        run_as_root: false,
        pool,
        cancel: CancellationToken::new(),
    }
}

fn settings(concurrency: u32, max_instances: u32, max_queue: u32) -> PoolSettings {
    PoolSettings {
        concurrency,
        min_instances: 0,
        max_instances,
        idle_timeout: Duration::from_secs(300),
        max_queue,
        queue_timeout: Duration::from_secs(5),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A wait of `queued` ms for a busy or already starting instance and
/// `start` ms for one started for the request.
fn wait(queued: u64, start: u64) -> Wait {
    Wait {
        queued: ms(queued),
        start: ms(start),
    }
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// A request that holds its slot for `hold`; yields how its wait divided.
fn call(
    pools: &Arc<Pools<FakeLauncher>>,
    s: &RunSpec,
    hold: Duration,
) -> JoinHandle<Result<Wait, ExecError>> {
    let pools = Arc::clone(pools);
    let s = s.clone();
    tokio::spawn(async move {
        let lease = pools.acquire(&s).await?;
        tokio::time::sleep(hold).await;
        Ok(lease.wait)
    })
}

async fn all(calls: Vec<JoinHandle<Result<Wait, ExecError>>>) -> Vec<Wait> {
    let mut waits = Vec::new();
    for c in calls {
        waits.push(c.await.unwrap().unwrap());
    }
    waits
}

#[tokio::test(start_paused = true)]
async fn sequential_requests_reuse_one_instance() {
    let pools = Pools::new(FakeLauncher::default());
    let s = spec("f", settings(1, 5, 0));
    for _ in 0..50 {
        let lease = pools.acquire(&s).await.unwrap();
        drop(lease);
    }
    assert_eq!(pools.launcher().launched(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cold_burst_starts_only_what_it_needs() {
    let pools = Pools::new(FakeLauncher::slow(20));
    let s = spec("f", settings(4, 10, 0));
    let waits = all((0..10).map(|_| call(&pools, &s, ms(0))).collect()).await;
    // 10 requests at 4 per instance need 3 instances, not 10.
    assert_eq!(pools.launcher().launched(), 3);
    // Each started one of them; the others joined those starts.
    let starters = waits.iter().filter(|w| w.start == ms(20)).count();
    assert_eq!(starters, 3);
    assert!(waits.iter().all(|w| w.queued + w.start == ms(20)));
}

#[tokio::test(start_paused = true)]
async fn a_cold_burst_starts_no_more_than_max_instances() {
    let pools = Pools::new(FakeLauncher::slow(100));
    let s = spec("f", settings(2, 3, 10));
    let calls = (0..10).map(|_| call(&pools, &s, ms(1000))).collect();
    let waits = all(calls).await;
    // 10 at 2 per instance would need 5; the maximum is 3, and the rest
    // wait for slots to free.
    assert_eq!(pools.launcher().launched(), 3);
    assert_eq!(waits.iter().filter(|w| w.queued >= ms(1000)).count(), 4);
}

#[test]
fn patience_follows_the_busy_slots_within_bounds() {
    let check = |slots, ahead, held: Option<u64>, start: Option<u64>, expected: u64| {
        let got = queue::patience(slots, ahead, held.map(ms), start.map(ms));
        assert_eq!(
            got,
            ms(expected),
            "{slots} slots, {ahead} ahead, {held:?}, {start:?}"
        );
    };
    // Cold: counts at once.
    check(0, 5, Some(5), Some(2000), 0);
    // Request times unknown: as long as a start, at most a second.
    check(4, 0, None, Some(100), 100);
    check(4, 0, None, Some(2000), 1000);
    check(4, 0, None, None, 1000);
    // Twice the time the busy slots take to reach the waiter.
    check(4, 0, Some(5), Some(2000), 10);
    check(4, 15, Some(5), Some(2000), 40);
    check(1, 0, Some(0), Some(2000), 1);
    check(1, 0, Some(800), Some(2000), 1000);
    // Busy slots slower to free than a start: start at once.
    check(1, 0, Some(3000), Some(2000), 0);
    check(4, 40, Some(200), Some(2000), 0);
}

#[tokio::test(start_paused = true)]
async fn fast_requests_on_a_busy_instance_start_no_other() {
    // A slow start (a model load, say) and one warm instance with room
    // for 4, which serves 20 fast requests within milliseconds.
    let pools = Pools::new(FakeLauncher::slow(2000));
    let mut st = settings(4, 10, 20);
    st.min_instances = 1;
    let s = spec("f", st);
    pools.prepare(&s);
    tokio::time::sleep(ms(3000)).await;
    assert_eq!(pools.launcher().alive(), 1);
    // First with no request time known yet, then with one.
    for _ in 0..3 {
        let waits = all((0..20).map(|_| call(&pools, &s, ms(5))).collect()).await;
        assert!(waits.iter().all(|w| w.start.is_zero()));
        assert!(waits.iter().all(|w| w.queued <= ms(20)), "{waits:?}");
    }
    tokio::time::sleep(ms(5000)).await;
    assert_eq!(pools.launcher().launched(), 1);
}

#[tokio::test(start_paused = true)]
async fn requests_slower_than_estimated_still_start_nothing_a_start_cannot_beat() {
    // As on a loaded machine: the averages say 5 ms a request, then the
    // requests take eight times that, so waiters outlive their patience;
    // but the 16 behind 4 busy slots are still served long before a 2 s
    // start could serve them.
    let pools = Pools::new(FakeLauncher::slow(2000));
    let mut st = settings(4, 10, 20);
    st.min_instances = 1;
    let s = spec("f", st);
    pools.prepare(&s);
    tokio::time::sleep(ms(3000)).await;
    all((0..8).map(|_| call(&pools, &s, ms(5))).collect()).await;
    let waits = all((0..20).map(|_| call(&pools, &s, ms(40))).collect()).await;
    assert!(waits.iter().all(|w| w.start.is_zero()), "{waits:?}");
    tokio::time::sleep(ms(5000)).await;
    assert_eq!(pools.launcher().launched(), 1);
}

#[tokio::test(start_paused = true)]
async fn long_requests_start_the_instances_their_waiters_need() {
    let pools = Pools::new(FakeLauncher::slow(100));
    let s = spec("f", settings(1, 4, 0));
    let first = pools.acquire(&s).await.unwrap();
    let began = Instant::now();
    let waits = (0..3).map(|_| call(&pools, &s, ms(0))).collect();
    let waits = all(waits).await;
    drop(first);
    assert_eq!(pools.launcher().launched(), 4);
    // No request time is known: each waited at most as long as a start
    // takes, then for the instance started for it.
    assert_eq!(began.elapsed(), ms(200));
    for w in waits {
        assert_eq!(w, wait(100, 100));
    }
}

#[tokio::test(start_paused = true)]
async fn waiters_that_gave_up_start_nothing() {
    let pools = Pools::new(FakeLauncher::slow(2000));
    let mut st = settings(1, 3, 5);
    let _held = pools.acquire(&spec("f", st.clone())).await.unwrap();
    st.queue_timeout = ms(50);
    let s = spec("f", st);
    let gave_up = (0..3).map(|_| call(&pools, &s, ms(0)));
    for c in gave_up.collect::<Vec<_>>() {
        assert!(matches!(c.await.unwrap(), Err(ExecError::Busy(_))));
    }
    tokio::time::sleep(ms(5000)).await;
    assert_eq!(pools.launcher().launched(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_free_slot_reports_no_wait_and_a_start_for_the_request_reports_start() {
    let pools = Pools::new(FakeLauncher::slow(2000));
    let s = spec("f", settings(1, 1, 0));
    let cold = pools.acquire(&s).await.unwrap();
    assert_eq!(cold.wait, wait(0, 2000));
    drop(cold);
    let warm = pools.acquire(&s).await.unwrap();
    assert_eq!(warm.wait, Wait::default());
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_busy_instance_is_queue_not_start() {
    let pools = Pools::new(FakeLauncher::slow(131));
    let s = spec("f", settings(1, 1, 5));
    let busy = pools.acquire(&s).await.unwrap();
    let waiting = call(&pools, &s, ms(0));
    tokio::time::sleep(ms(800)).await;
    drop(busy);
    assert_eq!(waiting.await.unwrap().unwrap(), wait(800, 0));
}

#[tokio::test(start_paused = true)]
async fn joining_a_start_another_request_caused_is_queue() {
    let pools = Pools::new(FakeLauncher::slow(2000));
    let s = spec("f", settings(2, 1, 5));
    let first = call(&pools, &s, ms(0));
    settle().await;
    let second = call(&pools, &s, ms(0));
    assert_eq!(first.await.unwrap().unwrap(), wait(0, 2000));
    assert_eq!(second.await.unwrap().unwrap(), wait(2000, 0));
    assert_eq!(pools.launcher().launched(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_overdue_waiter_served_by_a_freed_slot_reports_queue() {
    let pools = Pools::new(FakeLauncher::slow(500));
    let s = spec("f", settings(1, 2, 5));
    let busy = pools.acquire(&s).await.unwrap();
    let waiting = call(&pools, &s, ms(0));
    // Past its patience (one start, 500 ms) an instance is started for
    // it; the busy slot frees first and serves it.
    tokio::time::sleep(ms(700)).await;
    drop(busy);
    assert_eq!(waiting.await.unwrap().unwrap(), wait(700, 0));
    assert_eq!(pools.launcher().launched(), 1);
    tokio::time::sleep(ms(500)).await;
    assert_eq!(pools.launcher().launched(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_turns_requests_away() {
    let pools = Pools::new(FakeLauncher::default());
    let s = spec("f", settings(1, 2, 3));
    let a = pools.acquire(&s).await.unwrap();
    let b = pools.acquire(&s).await.unwrap();
    assert_ne!(a.instance.id(), b.instance.id());
    let waiting: Vec<_> = (0..3).map(|_| call(&pools, &s, ms(0))).collect();
    settle().await;
    match pools.acquire(&s).await {
        Err(ExecError::Busy(_)) => {}
        other => panic!("expected Busy, got {:?}", other.map(|l| l.wait)),
    }
    drop(a);
    drop(b);
    all(waiting).await;
    assert_eq!(pools.launcher().launched(), 2);
}

#[tokio::test(start_paused = true)]
async fn queue_timeout_gives_busy() {
    let pools = Pools::new(FakeLauncher::default());
    let mut st = settings(1, 1, 5);
    st.queue_timeout = ms(50);
    let s = spec("f", st);
    let _held = pools.acquire(&s).await.unwrap();
    assert!(matches!(pools.acquire(&s).await, Err(ExecError::Busy(_))));
}

#[tokio::test(start_paused = true)]
async fn a_lost_instance_is_replaced() {
    let pools = Pools::new(FakeLauncher::default());
    let s = spec("f", settings(1, 1, 0));
    let lease = pools.acquire(&s).await.unwrap();
    let first = lease.instance.0.clone();
    lease.lost();
    settle().await;
    assert_eq!(pools.launcher().destroyed.load(Ordering::SeqCst), 1);
    let lease = pools.acquire(&s).await.unwrap();
    assert_ne!(lease.instance.0, first);
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_fails_the_waiters() {
    let pools = Pools::new(FakeLauncher::default());
    pools.launcher().fail.store(true, Ordering::SeqCst);
    let s = spec("f", settings(1, 1, 0));
    assert!(matches!(pools.acquire(&s).await, Err(ExecError::Engine(_))));
    pools.launcher().fail.store(false, Ordering::SeqCst);
    assert!(pools.acquire(&s).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn idle_instances_scale_to_min_then_zero_when_retired() {
    let pools = Pools::new(FakeLauncher::default());
    let mut st = settings(1, 3, 0);
    st.idle_timeout = Duration::ZERO;
    st.min_instances = 1;
    let s = spec("f", st);
    let leases = [
        pools.acquire(&s).await.unwrap(),
        pools.acquire(&s).await.unwrap(),
        pools.acquire(&s).await.unwrap(),
    ];
    drop(leases);
    pools.maintain();
    settle().await;
    assert_eq!(pools.launcher().alive(), 1);
    pools.retire("t", "f", Some(2));
    pools.maintain();
    settle().await;
    assert_eq!(pools.launcher().alive(), 0);
    assert!(pools.counts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn prepare_starts_min_instances() {
    let pools = Pools::new(FakeLauncher::default());
    let mut st = settings(1, 3, 0);
    st.min_instances = 2;
    pools.prepare(&spec("f", st));
    for _ in 0..200 {
        if pools.launcher().alive() == 2 {
            break;
        }
        tokio::time::sleep(ms(10)).await;
    }
    assert_eq!(pools.launcher().alive(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_full_node_evicts_another_pools_idle_instance() {
    let pools = Pools::new(FakeLauncher {
        node_capacity: Some(1),
        ..Default::default()
    });
    let a = spec("a", settings(1, 1, 0));
    let b = spec("b", settings(1, 1, 0));
    drop(pools.acquire(&a).await.unwrap());
    let held = pools.acquire(&b).await.unwrap();
    assert_eq!(pools.launcher().destroyed.load(Ordering::SeqCst), 1);
    // Now nothing is idle: a request for `a` cannot start anything.
    assert!(matches!(
        pools.acquire(&a).await,
        Err(ExecError::NoCapacity(1))
    ));
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn clear_removes_an_instance_whose_launch_was_under_way() {
    let pools = Pools::new(FakeLauncher::slow(500));
    let s = spec("f", settings(1, 1, 0));
    let waiting = call(&pools, &s, ms(0));
    settle().await;
    assert_eq!(pools.counts()[0].starting, 1);
    pools.clear(ms(5000)).await;
    // The launch finished during the stop, and its instance went with it
    // before the stop was over.
    assert_eq!(pools.launcher().launched(), 1);
    assert_eq!(pools.launcher().alive(), 0);
    // Never ran: a refusal another executor may take up.
    assert!(matches!(
        waiting.await.unwrap(),
        Err(ExecError::EngineUnavailable(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn nothing_starts_after_clear() {
    let pools = Pools::new(FakeLauncher::default());
    let mut st = settings(1, 5, 0);
    st.min_instances = 2;
    let s = spec("f", st);
    pools.prepare(&s);
    tokio::time::sleep(ms(10)).await;
    assert_eq!(pools.launcher().alive(), 2);
    pools.clear(ms(5000)).await;
    assert_eq!(pools.launcher().alive(), 0);
    pools.maintain();
    pools.prepare(&s);
    assert!(matches!(
        pools.acquire(&s).await,
        Err(ExecError::EngineUnavailable(_))
    ));
    tokio::time::sleep(ms(5000)).await;
    assert_eq!(pools.launcher().launched(), 2);
    assert_eq!(pools.launcher().alive(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_min_instances_pool_does_not_refill_while_clearing() {
    // Removals take a while, and upkeep runs often meanwhile.
    let pools = Pools::new(FakeLauncher {
        destroy_delay_ms: 300,
        ..Default::default()
    });
    let mut st = settings(1, 10, 0);
    st.min_instances = 10;
    let s = spec("f", st);
    spawn_maintenance(&pools, ms(10));
    pools.prepare(&s);
    tokio::time::sleep(ms(50)).await;
    assert_eq!(pools.launcher().alive(), 10);
    let clearing = {
        let pools = Arc::clone(&pools);
        tokio::spawn(async move { pools.clear(ms(5000)).await })
    };
    tokio::time::sleep(ms(100)).await;
    // An instance reported dead mid-stop is not replaced either.
    pools.instance_exited("i0");
    pools.maintain();
    clearing.await.unwrap();
    assert_eq!(pools.launcher().alive(), 0);
    tokio::time::sleep(ms(5000)).await;
    assert_eq!(pools.launcher().launched(), 10);
    assert_eq!(pools.launcher().alive(), 0);
}

#[tokio::test(start_paused = true)]
async fn scale_events_and_busy_refusals_are_counted() {
    let metrics = berth_metrics::Metrics::new();
    let pools = Pools::with_metrics(FakeLauncher::default(), metrics.pools().clone());
    let mut st = settings(1, 2, 0);
    st.idle_timeout = Duration::ZERO;
    let s = spec("f", st);
    let a = pools.acquire(&s).await.unwrap();
    let b = pools.acquire(&s).await.unwrap();
    assert!(matches!(pools.acquire(&s).await, Err(ExecError::Busy(_))));
    a.lost();
    drop(b);
    settle().await;
    pools.maintain();
    settle().await;
    let mut st = settings(1, 1, 1);
    st.queue_timeout = ms(50);
    let h = spec("h", st);
    let _held = pools.acquire(&h).await.unwrap();
    assert!(matches!(pools.acquire(&h).await, Err(ExecError::Busy(_))));

    let text = metrics.render();
    for (series, n) in [
        (
            r#"berth_scale_events_total{function="t/f",direction="up",reason="demand"}"#,
            2,
        ),
        (
            r#"berth_scale_events_total{function="t/f",direction="down",reason="failed"}"#,
            1,
        ),
        (
            r#"berth_scale_events_total{function="t/f",direction="down",reason="idle"}"#,
            1,
        ),
        (
            r#"berth_busy_rejections_total{function="t/f",reason="queue_full"}"#,
            1,
        ),
        (
            r#"berth_busy_rejections_total{function="t/h",reason="queue_timeout"}"#,
            1,
        ),
    ] {
        assert!(
            text.contains(&format!("{series} {n}\n")),
            "{series} {n} in:\n{text}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_flush_empties_the_pools_and_leaves_them_open() {
    let pools = Pools::new(FakeLauncher::default());
    let mut st = settings(1, 5, 0);
    st.min_instances = 2;
    let s = spec("f", st);
    pools.prepare(&s);
    tokio::time::sleep(ms(10)).await;
    assert_eq!(pools.launcher().alive(), 2);
    pools.flush().await;
    assert_eq!(pools.launcher().alive(), 0);
    // Still serving: the next request gets an instance.
    let lease = pools.acquire(&s).await.expect("pools stay open");
    drop(lease);
    tokio::time::sleep(ms(10)).await;
    assert!(pools.launcher().alive() >= 1);
}
