//! `berth tenant`: the admin's commands for tenants, their keys and quotas.

use anyhow::Result;
use berth_contract::{CreateTenant, QUOTA_FIELDS, Tenant};
use clap::Subcommand;

use crate::conn::Global;
use crate::output::{Detail, Table, age};
use crate::quota_flags::TenantQuotas;
use crate::units::{fmt_bytes, fmt_secs};

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant; prints its API key, which is shown only this once.
    Create {
        /// The tenant's name: its registry namespace and login name.
        name: String,
        #[command(flatten)]
        quotas: TenantQuotas,
    },
    /// List tenants with their quotas and how many keys they hold.
    List,
    /// Show one tenant.
    Get {
        /// The tenant's name.
        name: String,
    },
    /// Replace the tenant's key: the old one stops working.
    RotateKey {
        /// The tenant's name.
        name: String,
    },
    /// Revoke every key of the tenant; its functions and tasks stay.
    Revoke {
        /// The tenant's name.
        name: String,
    },
    /// Change the tenant's quotas; unnamed ones keep their setting.
    Quota {
        /// The tenant's name.
        name: String,
        #[command(flatten)]
        quotas: TenantQuotas,
        /// Drop the tenant's own settings first, back to the defaults.
        #[arg(long)]
        reset: bool,
    },
}

pub async fn command(g: &Global, cmd: TenantCommand) -> Result<u8> {
    let c = g.connect()?;
    let out = g.output;
    match cmd {
        TenantCommand::Create { name, quotas } => {
            let created = c
                .create_tenant(&CreateTenant {
                    name: name.clone(),
                    quotas: quotas.0,
                })
                .await?;
            eprintln!(
                "berth: tenant created; its API key is shown only now. \
                 Registry login: docker login -u {name} --password-stdin"
            );
            out.print(&created, |t| {
                format!(
                    "api key:  {}\n\n{}",
                    t.api_key,
                    tenant_detail(&t.tenant).render()
                )
            })?;
        }
        TenantCommand::List => {
            let list = c.tenants().await?;
            out.print(&list, |l| {
                let mut t = Table::new(&["NAME", "KEYS", "CREATED", "OWN QUOTAS"]);
                for tenant in &l.tenants {
                    t.row(vec![
                        tenant.name.clone(),
                        tenant.keys.to_string(),
                        age(&tenant.created_at),
                        own_quotas(tenant),
                    ]);
                }
                t.render()
            })?;
        }
        TenantCommand::Get { name } => {
            out.print(&c.tenant(&name).await?, |t| tenant_detail(t).render())?;
        }
        TenantCommand::RotateKey { name } => {
            let rotated = c.rotate_key(&name).await?;
            eprintln!("berth: the old key no longer works; the new one is shown only now");
            out.print(&rotated, |r| format!("api key:  {}", r.api_key))?;
        }
        TenantCommand::Revoke { name } => {
            let t = c.revoke_keys(&name).await?;
            out.print(&t, |t| format!("every key of tenant {} revoked", t.name))?;
        }
        TenantCommand::Quota {
            name,
            quotas,
            reset,
        } => {
            let mut q = if reset {
                Default::default()
            } else {
                c.tenant(&name).await?.overrides
            };
            for f in QUOTA_FIELDS {
                if let Some(v) = quotas.0.get(f.name) {
                    q.set(f.name, v)?;
                }
            }
            out.print(&c.set_quotas(&name, &q).await?, |t| {
                tenant_detail(t).render()
            })?;
        }
    }
    Ok(0)
}

/// The quotas the tenant has set apart from the defaults, `k=v` joined.
fn own_quotas(t: &Tenant) -> String {
    let own: Vec<String> = QUOTA_FIELDS
        .iter()
        .filter_map(|f| Some(format!("{}={}", f.name, t.overrides.get(f.name)?)))
        .collect();
    if own.is_empty() {
        crate::output::NONE.into()
    } else {
        own.join(",")
    }
}

fn tenant_detail(t: &Tenant) -> Detail {
    let mut d = Detail::new();
    d.add("name", t.name.clone())
        .add("keys", t.keys.to_string())
        .add("created", t.created_at.clone());
    let in_force = t.quotas.as_overrides();
    for f in QUOTA_FIELDS {
        let value = in_force
            .get(f.name)
            .map_or_else(|| "-".to_owned(), |v| shown(f.name, v));
        let own = if t.overrides.get(f.name).is_some() {
            " (own)"
        } else {
            ""
        };
        d.add(f.name, format!("{value}{own}"));
    }
    d
}

/// A quota as people read it: sizes and durations with their units.
fn shown(name: &str, v: u64) -> String {
    if name.ends_with("_bytes") {
        fmt_bytes(v)
    } else if name.ends_with("_mb") {
        fmt_bytes(v.saturating_mul(1 << 20))
    } else if name.ends_with("_secs") {
        fmt_secs(v)
    } else if name.ends_with("_millis") {
        format!("{v}m")
    } else {
        v.to_string()
    }
}
