//! `berth tenant`: the admin's commands for tenants, their keys and quotas.

use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::client::{Conn, print};

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant; prints its API key, which is shown only this once.
    Create {
        name: String,
        #[command(flatten)]
        quotas: QuotaFlags,
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
        quotas: QuotaFlags,
        /// Drop the tenant's own settings first, back to the defaults.
        #[arg(long)]
        reset: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct QuotaFlags {
    /// Tasks running at once.
    #[arg(long)]
    max_concurrent_tasks: Option<u32>,
    /// Async tasks waiting at once.
    #[arg(long)]
    max_queued_tasks: Option<u32>,
    /// Largest cpu_millis of a function.
    #[arg(long)]
    max_cpu_millis: Option<u32>,
    /// Largest memory_mb of a function.
    #[arg(long)]
    max_memory_mb: Option<u32>,
    /// Largest timeout_secs of a function.
    #[arg(long)]
    max_timeout_secs: Option<u32>,
    /// Largest request body, in bytes.
    #[arg(long)]
    max_body_bytes: Option<u64>,
}

impl QuotaFlags {
    fn apply(&self, to: &mut Map<String, Value>) {
        let set = [
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
        for (name, value) in set {
            if let Some(v) = value {
                to.insert(name.to_owned(), json!(v));
            }
        }
    }
}

pub async fn command(conn: Conn, cmd: TenantCommand) -> Result<u8> {
    let c = conn.connect()?;
    let path = |name: &str, rest: &str| format!("/v1/tenants/{name}{rest}");
    let out = match cmd {
        TenantCommand::Create { name, quotas } => {
            let mut q = Map::new();
            quotas.apply(&mut q);
            let body = json!({ "name": name, "quotas": q });
            let created = c
                .json(c.request(Method::POST, "/v1/tenants").json(&body))
                .await?;
            eprintln!(
                "berth: tenant created; its API key is shown only now. \
                 Registry login: docker login -u {name} --password-stdin"
            );
            created
        }
        TenantCommand::List => c.json(c.request(Method::GET, "/v1/tenants")).await?,
        TenantCommand::Get { name } => c.json(c.request(Method::GET, &path(&name, ""))).await?,
        TenantCommand::RotateKey { name } => {
            c.json(c.request(Method::POST, &path(&name, "/keys")))
                .await?
        }
        TenantCommand::Revoke { name } => {
            c.json(c.request(Method::DELETE, &path(&name, "/keys")))
                .await?
        }
        TenantCommand::Quota {
            name,
            quotas,
            reset,
        } => {
            let current = c.json(c.request(Method::GET, &path(&name, ""))).await?;
            let mut q = match current.get("overrides") {
                Some(Value::Object(o)) if !reset => o.clone(),
                _ => Map::new(),
            };
            quotas.apply(&mut q);
            c.json(
                c.request(Method::PUT, &path(&name, "/quotas"))
                    .json(&Value::Object(q)),
            )
            .await?
        }
    };
    print(&out)?;
    Ok(0)
}
