use serde::{Deserialize, Serialize};

use crate::function::{FunctionConfig, InvalidConfig};

/// Declares the quotas once: the effective values, the per-tenant
/// overrides, their defaults, validation, and the table that command-line
/// flags and documentation are made from. Adding a quota is one line here.
macro_rules! quotas {
    ($( $(#[doc = $doc:literal])+ $field:ident: $ty:ty = $default:expr, server_flag = $flag:literal; )+) => {
        /// What one tenant may use. The server has defaults; the admin can
        /// set any of them per tenant, so one customer's burst never
        /// starves the others.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
        pub struct Quotas {
            $( $(#[doc = $doc])+ pub $field: $ty, )+
        }

        impl Default for Quotas {
            fn default() -> Self {
                Self { $( $field: $default, )+ }
            }
        }

        /// A tenant's own settings over the server's defaults; an absent
        /// field follows the default, so changing a default reaches every
        /// tenant that did not ask for something else.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct QuotaOverrides {
            $(
                $(#[doc = $doc])+
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )+
        }

        /// Every quota, in declaration order.
        pub const QUOTA_FIELDS: &[QuotaField] = &[
            $( QuotaField {
                name: stringify!($field),
                help: concat!($($doc),+),
                server_flag: $flag,
            }, )+
        ];

        impl Quotas {
            /// These defaults with a tenant's overrides applied.
            pub fn with(&self, o: &QuotaOverrides) -> Quotas {
                Quotas { $( $field: o.$field.unwrap_or(self.$field), )+ }
            }

            /// Every value, as an override setting each one.
            pub fn as_overrides(&self) -> QuotaOverrides {
                QuotaOverrides { $( $field: Some(self.$field), )+ }
            }
        }

        impl QuotaOverrides {
            /// The setting named `name`, widened to u64.
            pub fn get(&self, name: &str) -> Option<u64> {
                match name {
                    $( stringify!($field) => self.$field.map(u64::from), )+
                    _ => None,
                }
            }

            /// Sets the quota named `name`; refuses unknown names and
            /// values its type cannot hold.
            pub fn set(&mut self, name: &str, value: u64) -> Result<(), InvalidConfig> {
                match name {
                    $( stringify!($field) => {
                        self.$field = Some(<$ty>::try_from(value).map_err(|_| {
                            InvalidConfig(format!("{name} must be between 1 and {MAX_QUOTA}"))
                        })?);
                        Ok(())
                    } )+
                    _ => Err(InvalidConfig(format!("unknown quota {name:?}"))),
                }
            }
        }
    };
}

/// One quota as flags and documentation show it.
#[derive(Debug, Clone, Copy)]
pub struct QuotaField {
    /// The JSON member and the tenant command's `--flag`.
    pub name: &'static str,
    pub help: &'static str,
    /// `berth server`'s flag for the default (`--quota-...`); its
    /// environment variable is the same in upper snake case after `BERTH_`.
    pub server_flag: &'static str,
}

quotas! {
    /// Tasks (sync calls and async attempts) running at once.
    max_concurrent_tasks: u32 = 64, server_flag = "quota-concurrent-tasks";
    /// Async tasks accepted and not yet started.
    max_queued_tasks: u32 = 10_000, server_flag = "quota-queued-tasks";
    /// Largest cpu_millis of any one function.
    max_cpu_millis: u32 = 4_000, server_flag = "quota-cpu-millis";
    /// Largest memory_mb of any one function.
    max_memory_mb: u32 = 4_096, server_flag = "quota-memory-mb";
    /// Largest timeout_secs of any one function.
    max_timeout_secs: u32 = 3_600, server_flag = "quota-timeout-secs";
    /// Largest request body of a call or a task, in bytes.
    max_body_bytes: u64 = 256 * 1024 * 1024, server_flag = "quota-body-bytes";
}

/// Upper bound on any quota value: far past what one node offers, but
/// small enough that sums and conversions never overflow.
const MAX_QUOTA: u64 = 1 << 40;

impl QuotaOverrides {
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        for f in QUOTA_FIELDS {
            if let Some(v) = self.get(f.name)
                && !(1..=MAX_QUOTA).contains(&v)
            {
                return Err(InvalidConfig(format!(
                    "{} must be between 1 and {MAX_QUOTA}",
                    f.name
                )));
            }
        }
        Ok(())
    }
}

impl Quotas {
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
