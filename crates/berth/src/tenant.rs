//! `berth tenant`: the admin's commands for tenants, their keys and quotas.

use anyhow::Result;
use berth_contract::CreateTenant;
use clap::Subcommand;

use crate::client::{Conn, print};
use crate::quota_flags::TenantQuotas;

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant; prints its API key, which is shown only this once.
    Create {
        name: String,
        #[command(flatten)]
        quotas: TenantQuotas,
    },
    /// List tenants with their quotas and how many keys they hold.
    List,
    /// Show one tenant.
    Get { name: String },
    /// Replace the tenant's key: the old one stops working.
    RotateKey { name: String },
    /// Revoke every key of the tenant; its functions and tasks stay.
    Revoke { name: String },
    /// Change the tenant's quotas; unnamed ones keep their setting.
    Quota {
        name: String,
        #[command(flatten)]
        quotas: TenantQuotas,
        /// Drop the tenant's own settings first, back to the defaults.
        #[arg(long)]
        reset: bool,
    },
}

pub async fn command(conn: Conn, cmd: TenantCommand) -> Result<u8> {
    let c = conn.connect()?;
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
            print(&created)?;
        }
        TenantCommand::List => print(&c.tenants().await?)?,
        TenantCommand::Get { name } => print(&c.tenant(&name).await?)?,
        TenantCommand::RotateKey { name } => print(&c.rotate_key(&name).await?)?,
        TenantCommand::Revoke { name } => print(&c.revoke_keys(&name).await?)?,
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
            for f in berth_core::QUOTA_FIELDS {
                if let Some(v) = quotas.0.get(f.name) {
                    q.set(f.name, v)?;
                }
            }
            print(&c.set_quotas(&name, &q).await?)?;
        }
    }
    Ok(0)
}
