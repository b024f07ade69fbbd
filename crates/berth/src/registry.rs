//! `berth registry gc` on a local data directory.

use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::conn::Global;
use crate::output::Detail;
use crate::units::{fmt_bytes, fmt_secs, parse_secs};

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Delete blobs no manifest refers to, and abandoned uploads. Safe
    /// while the server runs: recent blobs are kept for a grace period.
    Gc(GcArgs),
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Unreferenced blobs younger than this many minutes are kept (a push
    /// may still be on its way to the manifest that refers to them).
    #[arg(long, default_value_t = 60, conflicts_with = "grace")]
    grace_minutes: u64,
    /// The same as a duration: 1h, 30m, 0s.
    #[arg(long, value_parser = parse_secs, value_name = "DURATION")]
    grace: Option<u64>,
    /// Report what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn command(g: &Global, cmd: RegistryCommand) -> Result<u8> {
    match cmd {
        RegistryCommand::Gc(args) => {
            let data_dir = g.data_dir();
            let grace = Duration::from_secs(
                args.grace
                    .unwrap_or_else(|| args.grace_minutes.saturating_mul(60)),
            );
            let report = berth_server::collect_garbage(&data_dir, grace, args.dry_run).await?;
            let report = serde_json::to_value(&report)?;
            g.output.print(&report, |r| {
                let mut d = Detail::new();
                d.add("data directory", data_dir.display().to_string());
                d.add("grace", fmt_secs(grace.as_secs()));
                for (k, v) in r.as_object().into_iter().flatten() {
                    let shown = match (k.as_str(), v.as_u64()) {
                        ("bytes_freed", Some(n)) => fmt_bytes(n),
                        _ => v.to_string(),
                    };
                    d.add(&k.replace('_', " "), shown);
                }
                d.render()
            })?;
            Ok(0)
        }
    }
}
