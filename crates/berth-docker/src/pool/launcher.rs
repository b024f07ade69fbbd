//! What the pools ask of whatever starts instances, and how they name a
//! pool. The Docker launcher is `crate::warm`; the tests bring a fake.

use std::sync::Arc;

use async_trait::async_trait;

use berth_executor::{ExecError, RunSpec};

/// Identifies a pool: instances of one immutable function version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub tenant: String,
    pub function: String,
    pub version: i64,
}

impl PoolKey {
    pub fn of(spec: &RunSpec) -> Self {
        Self {
            tenant: spec.tenant.clone(),
            function: spec.function.clone(),
            version: spec.version,
        }
    }
}

/// What a launched instance must offer the pool.
pub(crate) trait Instance: Send + Sync + 'static {
    fn id(&self) -> &str;
}

/// Starts and removes instances.
#[async_trait]
pub(crate) trait Launcher: Send + Sync + 'static {
    type Instance: Instance;
    /// Starts an instance and waits until it accepts requests. `evict` is
    /// called when the node is full, to make room by removing an idle
    /// instance of another pool.
    async fn launch(
        &self,
        spec: &RunSpec,
        evict: &(dyn Fn() -> Option<Arc<Self::Instance>> + Send + Sync),
    ) -> Result<Arc<Self::Instance>, ExecError>;
    /// Removes an instance; its requests, if any, fail.
    async fn destroy(&self, instance: Arc<Self::Instance>);
}
