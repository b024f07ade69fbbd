//! Named contexts (a server and a key) in a config file, and `berth
//! context`: `add`, `use`, `list`, `show`, `remove`, as kubectl and docker
//! have them.
//!
//! The file is TOML, written 0600 because it holds keys:
//!
//! ```toml
//! current = "prod"
//!
//! [contexts.prod]
//! server = "https://berth.example"
//! key = "..."
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use serde::{Deserialize, Serialize};

use crate::conn::{Global, normalize_url};
use crate::output::{NONE, Table};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The context used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Ctx>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ctx {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `--config`, `BERTH_CONFIG`, else `$XDG_CONFIG_HOME/berth/config.toml`,
/// else `~/.config/berth/config.toml`.
pub fn config_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_owned();
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".config")
        });
    base.join("berth").join("config.toml")
}

impl Config {
    /// The file's contexts; none when there is no file.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the file whole, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = toml::to_string_pretty(self)?;
        let tmp = path.with_extension("toml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    pub fn get(&self, name: &str, path: &Path) -> Result<&Ctx> {
        self.contexts.get(name).with_context(|| {
            format!(
                "no context {name:?} in {}; see `berth context list`",
                path.display()
            )
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum ContextCommand {
    /// Save a server and key under a name: `berth context add prod --server
    /// https://berth.example --key KEY` (or `--key-stdin`).
    Add {
        /// The context's name.
        name: String,
        /// Read the key from stdin, so it shows in no process listing or
        /// shell history.
        #[arg(long, conflicts_with = "key")]
        key_stdin: bool,
        /// Make it the current context too.
        #[arg(long = "use")]
        make_current: bool,
    },
    /// Make a context the one used when none is named.
    Use {
        /// The context's name.
        name: String,
    },
    /// List the contexts; `*` marks the current one.
    List,
    /// Show which server and key the commands would use now, and why.
    Show,
    /// Remove a context.
    Remove {
        /// The context's name.
        name: String,
    },
}

#[derive(Serialize)]
struct Listed<'a> {
    name: &'a str,
    server: &'a str,
    current: bool,
    has_key: bool,
}

pub fn command(g: &Global, cmd: ContextCommand) -> Result<u8> {
    let path = config_path(g.config.as_deref());
    let mut cfg = Config::load(&path)?;
    match cmd {
        ContextCommand::Add {
            name,
            key_stdin,
            make_current,
        } => {
            if name.trim().is_empty() {
                bail!("a context needs a name");
            }
            let server = g
                .server
                .as_deref()
                .context("a context needs a server: add --server URL")?;
            let server = normalize_url(server)?;
            berth_client::Client::new(&server, "")?;
            let key = if key_stdin {
                let mut k = String::new();
                std::io::stdin().read_to_string(&mut k)?;
                Some(k.trim().to_owned()).filter(|k| !k.is_empty())
            } else {
                g.key.clone()
            };
            let replaced = cfg
                .contexts
                .insert(name.clone(), Ctx { server, key })
                .is_some();
            if make_current || cfg.current.is_none() {
                cfg.current = Some(name.clone());
            }
            cfg.save(&path)?;
            let what = if replaced { "updated" } else { "added" };
            eprintln!("berth: context {name:?} {what} in {}", path.display());
        }
        ContextCommand::Use { name } => {
            cfg.get(&name, &path)?;
            cfg.current = Some(name.clone());
            cfg.save(&path)?;
            eprintln!("berth: now using context {name:?}");
        }
        ContextCommand::List => {
            let listed: Vec<Listed> = cfg
                .contexts
                .iter()
                .map(|(name, c)| Listed {
                    name,
                    server: &c.server,
                    current: cfg.current.as_deref() == Some(name.as_str()),
                    has_key: c.key.is_some(),
                })
                .collect();
            g.output.print(&listed, |listed| {
                let mut t = Table::new(&["CURRENT", "NAME", "SERVER", "KEY"]);
                for c in listed {
                    t.row(vec![
                        if c.current { "*" } else { "" }.into(),
                        c.name.into(),
                        c.server.into(),
                        if c.has_key { "set" } else { NONE }.into(),
                    ]);
                }
                t.render()
            })?;
        }
        ContextCommand::Show => {
            let target = g.target()?;
            g.output.print(&target, |t| t.describe())?;
        }
        ContextCommand::Remove { name } => {
            if cfg.contexts.remove(&name).is_none() {
                bail!("no context {name:?} in {}", path.display());
            }
            if cfg.current.as_deref() == Some(name.as_str()) {
                cfg.current = None;
            }
            cfg.save(&path)?;
            eprintln!("berth: context {name:?} removed");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_stays_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.toml");
        assert!(Config::load(&path).unwrap().contexts.is_empty(), "no file");
        let mut cfg = Config::default();
        cfg.contexts.insert(
            "prod".into(),
            Ctx {
                server: "https://berth.example".into(),
                key: Some("k".into()),
            },
        );
        cfg.current = Some("prod".into());
        cfg.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = Config::load(&path).unwrap();
        assert_eq!(back.current.as_deref(), Some("prod"));
        assert_eq!(back.get("prod", &path).unwrap().key.as_deref(), Some("k"));
        assert!(back.get("dev", &path).is_err());
        std::fs::write(&path, "currrent = 1").unwrap();
        assert!(Config::load(&path).is_err(), "a typo is reported");
    }
}
