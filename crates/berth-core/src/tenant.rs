use serde::{Deserialize, Serialize};

use crate::function::{FunctionConfig, InvalidConfig};

/// What one tenant may use. The server has defaults; the admin can set any
/// of them per tenant, so one customer's burst never starves the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    /// Tasks (sync calls and async attempts) running at once.
    pub max_concurrent_tasks: u32,
    /// Async tasks accepted and not yet started.
    pub max_queued_tasks: u32,
    /// Ceilings on any one function's definition.
    pub max_cpu_millis: u32,
    pub max_memory_mb: u32,
    pub max_timeout_secs: u32,
    /// Largest request body of a call or a task, in bytes.
    pub max_body_bytes: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_concurrent_tasks: 64,
            max_queued_tasks: 10_000,
            max_cpu_millis: 4_000,
            max_memory_mb: 4_096,
            max_timeout_secs: 3_600,
            max_body_bytes: 256 * 1024 * 1024,
        }
    }
}

/// A tenant's own settings over the server's defaults; an absent field
/// follows the default, so changing a default reaches every tenant that
/// did not ask for something else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_tasks: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_tasks: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_millis: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timeout_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
}

/// Upper bound on any quota value: far past what one node offers, but
/// small enough that sums and conversions never overflow.
const MAX_QUOTA: u64 = 1 << 40;

impl QuotaOverrides {
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let fields = [
            (
                "max_concurrent_tasks",
                self.max_concurrent_tasks.map(u64::from),
            ),
            ("max_queued_tasks", self.max_queued_tasks.map(u64::from)),
            ("max_cpu_millis", self.max_cpu_millis.map(u64::from)),
            ("max_memory_mb", self.max_memory_mb.map(u64::from)),
            ("max_timeout_secs", self.max_timeout_secs.map(u64::from)),
            ("max_body_bytes", self.max_body_bytes),
        ];
        for (name, value) in fields {
            if let Some(v) = value
                && !(1..=MAX_QUOTA).contains(&v)
            {
                return Err(InvalidConfig(format!(
                    "{name} must be between 1 and {MAX_QUOTA}"
                )));
            }
        }
        Ok(())
    }
}

impl Quotas {
    /// These defaults with a tenant's overrides applied.
    pub fn with(&self, o: &QuotaOverrides) -> Quotas {
        Quotas {
            max_concurrent_tasks: o.max_concurrent_tasks.unwrap_or(self.max_concurrent_tasks),
            max_queued_tasks: o.max_queued_tasks.unwrap_or(self.max_queued_tasks),
            max_cpu_millis: o.max_cpu_millis.unwrap_or(self.max_cpu_millis),
            max_memory_mb: o.max_memory_mb.unwrap_or(self.max_memory_mb),
            max_timeout_secs: o.max_timeout_secs.unwrap_or(self.max_timeout_secs),
            max_body_bytes: o.max_body_bytes.unwrap_or(self.max_body_bytes),
        }
    }

    /// Whether a function definition fits the tenant's ceilings; the
    /// message names the field, the value and the quota.
    pub fn admit(&self, tenant: &str, c: &FunctionConfig) -> Result<(), InvalidConfig> {
        let checks = [
            (
                "cpu_millis",
                c.cpu_millis,
                "max_cpu_millis",
                self.max_cpu_millis,
            ),
            (
                "memory_mb",
                c.memory_mb,
                "max_memory_mb",
                self.max_memory_mb,
            ),
            (
                "timeout_secs",
                c.timeout_secs,
                "max_timeout_secs",
                self.max_timeout_secs,
            ),
        ];
        for (field, value, quota, max) in checks {
            if value > max {
                return Err(InvalidConfig(format!(
                    "{field} {value} is over tenant {tenant:?}'s quota {quota} of {max}"
                )));
            }
        }
        Ok(())
    }
}

/// A tenant as stored: its name, when it was made, its own quota settings
/// and how many API keys it holds (0 once revoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    pub name: String,
    pub created_at: i64,
    pub overrides: QuotaOverrides,
    pub keys: i64,
}

/// Tenant names are registry namespaces (`<tenant>/<repo>`), container
/// labels and login names, so they keep to the strictest of those
/// alphabets: lowercase letters and digits, single inner hyphens.
pub fn validate_tenant_name(name: &str) -> Result<(), InvalidConfig> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(InvalidConfig(format!(
            "tenant name {:?} must be 1-63 characters of a-z, 0-9 and single inner '-'",
            name.chars().take(80).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "alpha", "team-7", "0", &"x".repeat(63)] {
            assert!(validate_tenant_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a--b",
            "Alpha",
            "a_b",
            "a.b",
            "a/b",
            "..",
            "é",
            &"x".repeat(64),
        ] {
            assert!(validate_tenant_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let d = Quotas::default();
        let o = QuotaOverrides {
            max_memory_mb: Some(128),
            ..Default::default()
        };
        let q = d.with(&o);
        assert_eq!(q.max_memory_mb, 128);
        assert_eq!(q.max_cpu_millis, d.max_cpu_millis);
        assert!(
            QuotaOverrides {
                max_queued_tasks: Some(0),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        let parsed: Result<QuotaOverrides, _> = serde_json::from_str(r#"{"max_memroy_mb": 1}"#);
        assert!(parsed.is_err(), "unknown quota names are refused");
    }

    #[test]
    fn admit_names_the_quota() {
        let q = Quotas {
            max_memory_mb: 512,
            ..Default::default()
        };
        let mut c: FunctionConfig = serde_json::from_str(r#"{"image":"x"}"#).unwrap();
        assert!(q.admit("beta", &c).is_ok());
        c.memory_mb = 1024;
        let e = q.admit("beta", &c).unwrap_err();
        assert!(e.0.contains("max_memory_mb of 512"), "{e}");
    }
}
