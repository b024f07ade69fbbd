//! The flags every command takes, anywhere on the line, and how the CLI
//! finds its server and key.
//!
//! The server and key come from, first to last: `--server` and `--key`
//! (or `BERTH_URL` and `BERTH_API_KEY`); the context named by `--context`
//! (or `BERTH_CONTEXT`), else the config file's current one unless a data
//! directory is named; what a local `berth server` wrote in its data
//! directory (`endpoint`, `admin.key`); and `http://127.0.0.1:8080`.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use berth_client::{Client, ClientError};
use clap::Args;
use serde::Serialize;

use crate::context::{Config, config_path};
use crate::output::{Detail, Format};

pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Server URL: http://HOST:PORT or https://HOST[:PORT] (HOST:PORT alone
    /// is taken as http:// on this machine's loopback) [default: the
    /// context's, else the endpoint a local server wrote, else
    /// http://127.0.0.1:8080]
    #[arg(long, env = "BERTH_URL", global = true, value_name = "URL")]
    pub server: Option<String>,
    /// API key [default: the context's, else the admin key a local server
    /// wrote]
    #[arg(long, env = "BERTH_API_KEY", global = true, hide_env_values = true)]
    pub key: Option<String>,
    /// Use this context of the config file rather than the current one.
    #[arg(long, env = "BERTH_CONTEXT", global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The config file holding the contexts [default:
    /// $XDG_CONFIG_HOME/berth/config.toml, else ~/.config/berth/config.toml]
    #[arg(long, env = "BERTH_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory of a local server: where `berth server` keeps its
    /// state, and where the other commands find its endpoint and admin key
    /// [default: ~/.berth]
    #[arg(long, env = "BERTH_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Output format: table for people, json or yaml for scripts.
    #[arg(
        short,
        long = "output",
        global = true,
        value_enum,
        default_value_t,
        value_name = "FORMAT"
    )]
    pub output: Format,
}

/// Where the commands will go, and why there.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub server: String,
    /// Where the URL came from.
    pub server_from: String,
    #[serde(skip)]
    pub key: Option<String>,
    /// Where the key came from, if there is one.
    pub key_from: Option<String>,
    /// The context in use, if any.
    pub context: Option<String>,
}

impl Target {
    pub fn describe(&self) -> String {
        let mut d = Detail::new();
        d.add("context", self.context.as_deref().unwrap_or("(none)"));
        d.add(
            "server",
            format!("{} (from {})", self.server, self.server_from),
        );
        d.add(
            "key",
            match &self.key_from {
                Some(from) => format!("set (from {from})"),
                None => "none".into(),
            },
        );
        d.render()
    }
}

impl Global {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(berth_server::default_data_dir)
    }

    /// Resolves the server and key (see the module comment).
    pub fn target(&self) -> Result<Target> {
        let path = config_path(self.config.as_deref());
        let cfg = Config::load(&path)?;
        let name = self.context.clone().or_else(|| {
            // Naming a data directory names a local server.
            self.data_dir
                .is_none()
                .then(|| cfg.current.clone())
                .flatten()
        });
        let ctx = match &name {
            Some(n) => Some(cfg.get(n, &path)?.clone()),
            None => None,
        };
        let dir = self.data_dir();
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let (server, server_from) = if let Some(s) = &self.server {
            (s.clone(), "--server or BERTH_URL".to_owned())
        } else if let Some(c) = &ctx {
            (
                c.server.clone(),
                format!("context {:?}", name.as_deref().unwrap_or_default()),
            )
        } else if let Some(e) = read("endpoint") {
            let file = dir.join("endpoint");
            (e, format!("the local server's {}", file.display()))
        } else {
            (DEFAULT_URL.to_owned(), "the default".to_owned())
        };
        let (key, key_from) = if let Some(k) = &self.key {
            (Some(k.clone()), Some("--key or BERTH_API_KEY".to_owned()))
        } else if let Some(c) = &ctx {
            let from = format!("context {:?}", name.as_deref().unwrap_or_default());
            (c.key.clone(), c.key.as_ref().map(|_| from))
        } else if let Some(k) = read("admin.key") {
            let file = dir.join("admin.key");
            (
                Some(k),
                Some(format!("the local server's {}", file.display())),
            )
        } else {
            (None, None)
        };
        Ok(Target {
            server: normalize_url(&server)?,
            server_from,
            key,
            key_from,
            context: name,
        })
    }

    pub fn connect(&self) -> Result<Client> {
        let t = self.target()?;
        let Some(key) = &t.key else {
            bail!(
                "no API key: pass --key or set BERTH_API_KEY, save one in a context \
                 (`berth context add NAME --server URL --key KEY`), or run where {} \
                 holds a local server's admin.key",
                self.data_dir().display()
            );
        };
        Client::new(&t.server, key)
            .with_context(|| format!("the server URL came from {}", t.server_from))
    }

    /// What to say when the server could not be reached: which URL was
    /// tried, where it came from, how to start or point at a server.
    pub fn unreachable_hint(&self) -> String {
        let from = self
            .target()
            .map(|t| format!("that URL came from {}", t.server_from))
            .unwrap_or_default();
        format!(
            "{from}\nstart a server here with `berth server`, or point at one with \
             --server URL, BERTH_URL or `berth context use NAME`"
        )
    }
}

/// A server URL with its scheme. `HOST:PORT` alone is accepted for this
/// machine's loopback (as http://); any other host must say http:// or
/// https://, so a key never goes out unencrypted by a guess.
pub fn normalize_url(s: &str) -> Result<String> {
    let s = s.trim().trim_end_matches('/');
    if s.is_empty() {
        bail!("the server URL is empty");
    }
    if s.contains("://") {
        return Ok(s.to_owned());
    }
    let host = match s.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => s.split([':', '/']).next().unwrap_or_default(),
    };
    let loopback = host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return Ok(format!("http://{s}"));
    }
    bail!(
        "the server URL {s:?} has no scheme: write https://{s} \
         (or http://{s} for a server without TLS)"
    )
}

/// Whether an error is the server being out of reach.
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<ClientError>(),
            Some(ClientError::Unreachable { .. })
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_a_scheme() {
        for (given, url) in [
            ("127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("localhost:9000/", "http://localhost:9000"),
            ("[::1]:8080", "http://[::1]:8080"),
            ("https://berth.example/", "https://berth.example"),
            ("http://berth.example:8080", "http://berth.example:8080"),
        ] {
            assert_eq!(normalize_url(given).unwrap(), url, "{given}");
        }
        let err = normalize_url("berth.example:8080").unwrap_err().to_string();
        assert!(err.contains("https://berth.example:8080"), "{err}");
        assert!(normalize_url(" ").is_err());
    }
}
