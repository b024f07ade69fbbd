//! `berth login`: Docker logged in to the server's registry.

use anyhow::{Context as _, Result, bail};
use clap::Args;
use tokio::io::AsyncWriteExt;

use crate::conn::Global;

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The tenant the key belongs to (the registry login name).
    #[arg(long, short = 'u', default_value = berth_core::ADMIN_TENANT)]
    username: String,
}

/// Runs `docker login HOST:PORT` with the key on stdin, so the key never
/// shows in a process listing and Docker stores it the way it stores any
/// registry credential.
pub async fn command(g: &Global, args: LoginArgs) -> Result<u8> {
    let c = g.connect()?;
    let host = registry_host(c.base())?;
    let mut child = tokio::process::Command::new("docker")
        .args(["login", &host, "-u", &args.username, "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running docker (is the Docker CLI installed?)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(c.key().as_bytes()).await?;
        stdin.shutdown().await?;
    }
    let status = child.wait().await?;
    if !status.success() {
        bail!("docker login {host} failed ({status})");
    }
    Ok(0)
}

/// `host:port` of a server URL, as Docker names registries.
fn registry_host(base: &str) -> Result<String> {
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))
        .unwrap_or(base);
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        bail!("cannot tell the registry host from {base:?}");
    }
    Ok(host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::registry_host;

    #[test]
    fn registry_hosts() {
        assert_eq!(
            registry_host("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            registry_host("https://berth.example:443/base").unwrap(),
            "berth.example:443"
        );
        assert!(registry_host("http://").is_err());
    }
}
