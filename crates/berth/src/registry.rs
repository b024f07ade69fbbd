//! `berth registry gc` on a local data directory.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Delete blobs no manifest refers to, and abandoned uploads. Safe
    /// while the server runs: recent blobs are kept for a grace period.
    Gc(GcArgs),
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// The server's data directory [default: ~/.berth]
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Unreferenced blobs younger than this many minutes are kept (a push
    /// may still be on its way to the manifest that refers to them).
    #[arg(long, default_value_t = 60)]
    grace_minutes: u64,
    /// Report what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn command(cmd: RegistryCommand) -> Result<u8> {
    match cmd {
        RegistryCommand::Gc(args) => {
            let data_dir = args.data_dir.unwrap_or_else(berth_server::default_data_dir);
            let grace = Duration::from_secs(args.grace_minutes.saturating_mul(60));
            let report = berth_server::collect_garbage(&data_dir, grace, args.dry_run).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(0)
        }
    }
}
