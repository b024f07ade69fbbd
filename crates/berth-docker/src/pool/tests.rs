use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use berth_core::{Mode, RequestMeta, TaskId};
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
        self.alive.fetch_sub(1, Ordering::SeqCst);
        self.destroyed.fetch_add(1, Ordering::SeqCst);
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

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn sequential_requests_reuse_one_instance() {
    let pools = Pools::new(FakeLauncher::default());
    let s = spec("f", settings(1, 5, 0));
    for _ in 0..50 {
        let lease = pools.acquire(&s).await.unwrap();
        drop(lease);
    }
    assert_eq!(pools.launcher().launched.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_cold_burst_starts_only_what_it_needs() {
    let pools = Pools::new(FakeLauncher {
        delay_ms: 20,
        ..Default::default()
    });
    let s = spec("f", settings(4, 10, 0));
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let pools = Arc::clone(&pools);
            let s = s.clone();
            tokio::spawn(async move { pools.acquire(&s).await.map(|l| l.cold) })
        })
        .collect();
    let mut leases = Vec::new();
    for c in calls {
        leases.push(c.await.unwrap().unwrap());
    }
    // 10 requests at 4 per instance need 3 instances, not 10.
    assert_eq!(pools.launcher().launched.load(Ordering::SeqCst), 3);
    assert!(leases.iter().all(|cold| *cold));
}

#[tokio::test]
async fn a_full_queue_turns_requests_away() {
    let pools = Pools::new(FakeLauncher::default());
    let s = spec("f", settings(1, 2, 3));
    let a = pools.acquire(&s).await.unwrap();
    let b = pools.acquire(&s).await.unwrap();
    assert_ne!(a.instance.id(), b.instance.id());
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let pools = Arc::clone(&pools);
            let s = s.clone();
            tokio::spawn(async move { pools.acquire(&s).await.map(|l| l.instance.0.clone()) })
        })
        .collect();
    settle().await;
    match pools.acquire(&s).await {
        Err(ExecError::Busy(_)) => {}
        other => panic!("expected Busy, got {:?}", other.map(|l| l.cold)),
    }
    drop(a);
    drop(b);
    for w in waiting {
        w.await.unwrap().unwrap();
    }
    assert_eq!(pools.launcher().launched.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn queue_timeout_gives_busy() {
    let pools = Pools::new(FakeLauncher::default());
    let mut st = settings(1, 1, 5);
    st.queue_timeout = Duration::from_millis(50);
    let s = spec("f", st);
    let _held = pools.acquire(&s).await.unwrap();
    assert!(matches!(pools.acquire(&s).await, Err(ExecError::Busy(_))));
}

#[tokio::test]
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

#[tokio::test]
async fn a_failed_start_fails_the_waiters() {
    let pools = Pools::new(FakeLauncher::default());
    pools.launcher().fail.store(true, Ordering::SeqCst);
    let s = spec("f", settings(1, 1, 0));
    assert!(matches!(pools.acquire(&s).await, Err(ExecError::Engine(_))));
    pools.launcher().fail.store(false, Ordering::SeqCst);
    assert!(pools.acquire(&s).await.is_ok());
}

#[tokio::test]
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
    assert_eq!(pools.launcher().alive.load(Ordering::SeqCst), 1);
    pools.retire("t", "f", Some(2));
    pools.maintain();
    settle().await;
    assert_eq!(pools.launcher().alive.load(Ordering::SeqCst), 0);
    assert!(pools.counts().is_empty());
}

#[tokio::test]
async fn prepare_starts_min_instances() {
    let pools = Pools::new(FakeLauncher::default());
    let mut st = settings(1, 3, 0);
    st.min_instances = 2;
    pools.prepare(&spec("f", st));
    for _ in 0..200 {
        if pools.launcher().alive.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pools.launcher().alive.load(Ordering::SeqCst), 2);
}

#[tokio::test]
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
