//! What a tenant may do with tenants: the admin creates them, sets their
//! quotas and revokes their keys; a tenant may read its own record and
//! rotate its own key. Another tenant's record answers exactly like a
//! missing one, so names cannot be probed.

use berth_core::{ADMIN_TENANT, QuotaOverrides, TenantRecord, validate_tenant_name};

use berth_store::Invalidation;

use crate::keys::{generate_key, hash_key};
use crate::{SchedError, TaskManager};

/// A tenant just made, with its key: the only time the key is known.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub record: TenantRecord,
    pub api_key: String,
}

/// Whether this replica can serve: its store answers and some executor is
/// healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub store: bool,
    pub executors: usize,
    pub healthy_executors: usize,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.store && self.healthy_executors > 0
    }
}

fn require_admin(caller: &str) -> Result<(), SchedError> {
    if caller == ADMIN_TENANT {
        Ok(())
    } else {
        Err(SchedError::Forbidden(
            "managing tenants needs the admin key".into(),
        ))
    }
}

/// The admin's key is the server's own setting, not a record to rotate: a
/// rotation here would be undone at the next start.
fn refuse_admin_key(name: &str) -> Result<(), SchedError> {
    if name == ADMIN_TENANT {
        return Err(SchedError::AdminKeyFixed);
    }
    Ok(())
}

impl TaskManager {
    pub async fn create_tenant(
        &self,
        caller: &str,
        name: &str,
        quotas: &QuotaOverrides,
    ) -> Result<NewTenant, SchedError> {
        require_admin(caller)?;
        validate_tenant_name(name).map_err(|e| SchedError::InvalidTenant(e.0))?;
        quotas
            .validate()
            .map_err(|e| SchedError::InvalidQuota(e.0))?;
        let key = generate_key();
        if !self
            .store
            .create_tenant(name, quotas, &hash_key(&key))
            .await?
        {
            return Err(SchedError::TenantExists(name.to_owned()));
        }
        let record = self
            .store
            .get_tenant(name)
            .await?
            .ok_or(SchedError::TenantNotFound)?;
        Ok(NewTenant {
            record,
            api_key: key,
        })
    }

    pub async fn tenants(&self, caller: &str) -> Result<Vec<TenantRecord>, SchedError> {
        require_admin(caller)?;
        Ok(self.store.list_tenants().await?)
    }

    /// A tenant the caller may see: any for the admin, only itself
    /// otherwise.
    pub async fn tenant(&self, caller: &str, name: &str) -> Result<TenantRecord, SchedError> {
        if caller != ADMIN_TENANT && caller != name {
            return Err(SchedError::TenantNotFound);
        }
        self.store
            .get_tenant(name)
            .await?
            .ok_or(SchedError::TenantNotFound)
    }

    /// Replaces the tenant's own quota settings.
    pub async fn set_quotas(
        &self,
        caller: &str,
        name: &str,
        quotas: &QuotaOverrides,
    ) -> Result<TenantRecord, SchedError> {
        require_admin(caller)?;
        quotas
            .validate()
            .map_err(|e| SchedError::InvalidQuota(e.0))?;
        if !self.store.set_tenant_quotas(name, quotas).await? {
            return Err(SchedError::TenantNotFound);
        }
        self.invalidate(Invalidation::Quotas {
            tenant: name.to_owned(),
        })
        .await;
        self.tenant(caller, name).await
    }

    /// A new key for the tenant; every older key stops working at once
    /// here, and on other replicas within the key cache's lifetime.
    pub async fn rotate_key(&self, caller: &str, name: &str) -> Result<String, SchedError> {
        self.tenant(caller, name).await?;
        refuse_admin_key(name)?;
        let key = generate_key();
        if !self
            .store
            .replace_api_keys(name, Some(&hash_key(&key)), "primary")
            .await?
        {
            return Err(SchedError::TenantNotFound);
        }
        self.invalidate(Invalidation::Keys {
            tenant: name.to_owned(),
        })
        .await;
        Ok(key)
    }

    /// Revokes every key of the tenant. Its functions, tasks and images
    /// stay; a later rotation by the admin gives it a key again.
    pub async fn revoke_keys(&self, caller: &str, name: &str) -> Result<TenantRecord, SchedError> {
        require_admin(caller)?;
        refuse_admin_key(name)?;
        if !self.store.replace_api_keys(name, None, "primary").await? {
            return Err(SchedError::TenantNotFound);
        }
        self.invalidate(Invalidation::Keys {
            tenant: name.to_owned(),
        })
        .await;
        self.tenant(caller, name).await
    }

    pub async fn readiness(&self) -> Readiness {
        let store = self.store.ping().await.is_ok();
        let mut healthy = 0;
        let all = self.fleet.all();
        for m in &all {
            if m.executor.status().await.healthy {
                healthy += 1;
            }
        }
        Readiness {
            store,
            executors: all.len(),
            healthy_executors: healthy,
        }
    }
}
