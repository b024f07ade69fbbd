//! `berth fn`: deploy, update, list, get, versions, delete.

use anyhow::{Context as _, Result, bail};
use berth_client::Client;
use berth_contract::{Deployed, Function, FunctionConfig, Version};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::conn::Global;
use crate::output::{Detail, NONE, Table, age};
use crate::progress;
use crate::units::{fmt_mib, fmt_secs, parse_mib, parse_secs_u32};

/// The settings `fn deploy` and `fn update` can change. Only the ones named
/// on the command line are sent: `--timeout 30s` changes the timeout and
/// keeps every other setting.
#[derive(Args, Debug)]
pub struct Settings {
    /// The image: NAME[:TAG] in your registry namespace, HOST:PORT/TENANT/NAME:TAG,
    /// or (admin) an image on the container engine. Needed to create a function.
    #[arg(long)]
    image: Option<String>,
    /// CPU in millicores: 500m or 500 (1000m = one core).
    #[arg(long, value_parser = parse_cpu, value_name = "MILLICORES")]
    cpu: Option<u32>,
    /// Memory limit: 512MiB, 1GiB, or a number of MiB.
    #[arg(long, value_parser = parse_mib, value_name = "SIZE")]
    memory: Option<u32>,
    /// How long a call may run: 30s, 5m, 1h, or a number of seconds.
    #[arg(long, value_parser = parse_secs_u32, value_name = "DURATION")]
    timeout: Option<u32>,
    /// Environment variable, KEY=VALUE; repeatable. Added to the ones the
    /// function has.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Removes an environment variable; repeatable.
    #[arg(long = "unset-env", value_name = "KEY")]
    unset_env: Vec<String>,
    /// Run as root (uid 0, still without capabilities) instead of the
    /// image's non-root user or nobody.
    #[arg(long, overrides_with = "no_run_as_root")]
    run_as_root: bool,
    /// Run as the image's non-root user or nobody again.
    #[arg(long)]
    no_run_as_root: bool,
    /// exec (warm, a process per request), http (warm, a long-lived HTTP
    /// server on $PORT) or fresh (a container per request).
    #[arg(long, value_parser = ["exec", "http", "fresh"])]
    mode: Option<String>,
    /// Requests one instance serves at once.
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
    /// Instances kept warm when idle.
    #[arg(long, value_name = "N")]
    min_instances: Option<u32>,
    /// Most instances running at once.
    #[arg(long, value_name = "N")]
    max_instances: Option<u32>,
    /// How long an idle instance is kept: 5m, 30s, or a number of seconds.
    #[arg(long, value_parser = parse_secs_u32, value_name = "DURATION")]
    idle_timeout: Option<u32>,
    /// Requests that may wait when every instance is busy.
    #[arg(long, value_name = "N")]
    max_queue: Option<u32>,
    /// How long a request may wait in that queue: 10s, or a number of
    /// seconds.
    #[arg(long, value_parser = parse_secs_u32, value_name = "DURATION")]
    queue_timeout: Option<u32>,
    /// Run the image's own ENTRYPOINT and CMD again, dropping a command set earlier.
    #[arg(long, conflicts_with = "command")]
    image_command: bool,
    /// The program and its arguments, replacing the image's ENTRYPOINT and
    /// CMD: everything after `--` (`berth fn deploy f --image i -- /bin/sh -c 'cat'`).
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Millicores: `500m` or `500`.
fn parse_cpu(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let n = t.strip_suffix('m').unwrap_or(t);
    n.parse()
        .map_err(|_| format!("{s:?} is not a CPU share in millicores (e.g. 500m, 2000m)"))
}

impl Settings {
    /// The named settings as a JSON merge patch.
    fn patch(&self) -> Result<Value> {
        let mut p = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                p.insert(k.to_owned(), v);
            }
        };
        put("image", self.image.as_ref().map(|i| json!(i)));
        put("cpu_millis", self.cpu.map(|v| json!(v)));
        put("memory_mb", self.memory.map(|v| json!(v)));
        put("timeout_secs", self.timeout.map(|v| json!(v)));
        put("mode", self.mode.as_ref().map(|v| json!(v)));
        put("concurrency", self.concurrency.map(|v| json!(v)));
        put("min_instances", self.min_instances.map(|v| json!(v)));
        put("max_instances", self.max_instances.map(|v| json!(v)));
        put("idle_timeout_secs", self.idle_timeout.map(|v| json!(v)));
        put("max_queue", self.max_queue.map(|v| json!(v)));
        put("queue_timeout_secs", self.queue_timeout.map(|v| json!(v)));
        if self.run_as_root {
            put("run_as_root", Some(json!(true)));
        } else if self.no_run_as_root {
            put("run_as_root", Some(json!(false)));
        }
        if !self.command.is_empty() {
            put("command", Some(json!(self.command)));
        } else if self.image_command {
            put("command", Some(Value::Null));
        }
        let mut env = Map::new();
        for kv in &self.env {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--env {kv:?} is not KEY=VALUE"))?;
            env.insert(k.to_owned(), json!(v));
        }
        for k in &self.unset_env {
            env.insert(k.clone(), Value::Null);
        }
        if !env.is_empty() {
            p.insert("env".into(), Value::Object(env));
        }
        Ok(Value::Object(p))
    }
}

#[derive(Subcommand, Debug)]
pub enum FnCommand {
    /// Create a function, or change the settings named (the others keep
    /// theirs); shows the version in force.
    Deploy {
        /// The function's name.
        name: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Change the settings named of an existing function; every other
    /// setting keeps its value.
    Update {
        /// The function's name.
        name: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// List functions with their version in force.
    List,
    /// Show a function's settings in force.
    Get {
        /// The function's name.
        name: String,
    },
    /// List every version of a function, newest first.
    Versions {
        /// The function's name.
        name: String,
    },
    /// Delete a function and its versions; its tasks stay readable.
    Delete {
        /// The function's name.
        name: String,
    },
}

pub async fn command(g: &Global, cmd: FnCommand) -> Result<u8> {
    let c = g.connect()?;
    let out = g.output;
    match cmd {
        FnCommand::Deploy { name, settings } => {
            let deployed = deploy(&c, &name, &settings).await?;
            out.print(&deployed, show_deployed)?;
        }
        FnCommand::Update { name, settings } => {
            let patch = settings.patch()?;
            if patch.as_object().is_some_and(Map::is_empty) {
                bail!("nothing to change: name a setting (see `berth fn update --help`)");
            }
            let bar = progress::spinner(format!("updating {name}"));
            let deployed = c.update(&name, &patch).await;
            bar.finish_and_clear();
            let deployed = deployed.map_err(|e| match e.code() {
                Some("function_not_found") => {
                    anyhow::anyhow!("{e}\ncreate it with `berth fn deploy {name} --image IMAGE`")
                }
                _ => e.into(),
            })?;
            out.print(&deployed, show_deployed)?;
        }
        FnCommand::List => {
            let list = c.functions().await?;
            out.print(&list, |l| {
                let mut t = Table::new(&[
                    "NAME", "VERSION", "MODE", "CPU", "MEMORY", "TIMEOUT", "IMAGE", "UPDATED",
                ]);
                for f in &l.functions {
                    let v = &f.latest.config;
                    t.row(vec![
                        f.name.clone(),
                        f.latest_version.to_string(),
                        v.mode.as_str().into(),
                        format!("{}m", v.cpu_millis),
                        fmt_mib(v.memory_mb),
                        fmt_secs(v.timeout_secs.into()),
                        v.image.clone(),
                        age(&f.updated_at),
                    ]);
                }
                t.render()
            })?;
        }
        FnCommand::Get { name } => {
            let f = c.function(&name).await?;
            out.print(&f, |f| function_detail(f).render())?;
        }
        FnCommand::Versions { name } => {
            let f = c.function(&name).await?;
            let mut versions = f.versions.clone().unwrap_or_default();
            versions.sort_by_key(|v| std::cmp::Reverse(v.version));
            let listed = VersionList { versions };
            out.print(&listed, |l| {
                let mut t = Table::new(&[
                    "VERSION", "MODE", "CPU", "MEMORY", "TIMEOUT", "IMAGE", "CREATED",
                ]);
                for v in &l.versions {
                    let c = &v.config;
                    t.row(vec![
                        v.version.to_string(),
                        c.mode.as_str().into(),
                        format!("{}m", c.cpu_millis),
                        fmt_mib(c.memory_mb),
                        fmt_secs(c.timeout_secs.into()),
                        c.image.clone(),
                        age(&v.created_at),
                    ]);
                }
                t.render()
            })?;
        }
        FnCommand::Delete { name } => {
            c.delete_function(&name).await?;
            out.print(&json!({ "deleted": name }), |_| {
                format!("function {name} deleted")
            })?;
        }
    }
    Ok(0)
}

#[derive(Serialize)]
struct VersionList {
    versions: Vec<Version>,
}

/// Changes what is named, or creates the function from it when there is
/// none yet.
async fn deploy(c: &Client, name: &str, settings: &Settings) -> Result<Deployed> {
    let patch = settings.patch()?;
    let bar = progress::spinner(format!(
        "deploying {name} (the server checks the image and pulls it if needed)"
    ));
    let result = match c.update(name, &patch).await {
        Ok(d) => Ok(d),
        Err(e) if e.code() == Some("function_not_found") => {
            if settings.image.is_none() {
                bar.finish_and_clear();
                bail!("function {name:?} does not exist yet: --image is needed to create it");
            }
            // A new function: what was named, defaults for the rest.
            let mut full = patch;
            if let Some(env) = full.get_mut("env").and_then(Value::as_object_mut) {
                env.retain(|_, v| !v.is_null());
            }
            if let Some(o) = full.as_object_mut() {
                o.retain(|_, v| !v.is_null());
            }
            let config: FunctionConfig =
                serde_json::from_value(full).context("these settings do not make a function")?;
            c.deploy(name, &config).await.map_err(Into::into)
        }
        Err(e) => Err(e.into()),
    };
    bar.finish_and_clear();
    result
}

fn show_deployed(d: &Deployed) -> String {
    let what = if d.created_version {
        "deployed"
    } else {
        "unchanged (the same settings as before)"
    };
    format!(
        "function {} version {} {what}\n\n{}",
        d.function.name,
        d.version,
        function_detail(&d.function).render()
    )
}

fn function_detail(f: &Function) -> Detail {
    let v = &f.latest;
    let c: &FunctionConfig = &v.config;
    let mut d = Detail::new();
    d.add("name", f.name.clone())
        .add(
            "version",
            format!("{} (of {})", f.latest_version, f.version_count),
        )
        .add("image", c.image.clone())
        .add("pinned", v.image_id.clone())
        .add(
            "command",
            c.command
                .as_deref()
                .map(shell_words)
                .unwrap_or_else(|| "(the image's)".into()),
        )
        .add("mode", c.mode.as_str())
        .add("cpu", format!("{}m", c.cpu_millis))
        .add("memory", fmt_mib(c.memory_mb))
        .add("timeout", fmt_secs(c.timeout_secs.into()))
        .add("concurrency", c.concurrency.to_string())
        .add(
            "instances",
            format!(
                "{} to {}, idle ones kept {}",
                c.min_instances,
                c.max_instances,
                fmt_secs(c.idle_timeout_secs.into())
            ),
        )
        .add(
            "queue",
            format!(
                "{} requests for at most {}",
                c.max_queue,
                fmt_secs(c.queue_timeout_secs.into())
            ),
        )
        .add("run as root", if c.run_as_root { "yes" } else { "no" })
        .add(
            "env",
            if c.env.is_empty() {
                NONE.to_owned()
            } else {
                c.env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            },
        )
        .add("created", f.created_at.clone())
        .add("updated", f.updated_at.clone());
    d
}

/// Words as a shell would read them back: quoted where needed.
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_shown_as_a_shell_reads_them() {
        let words: Vec<String> = ["/bin/sh", "-c", "tr a-z A-Z; echo it's"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            shell_words(&words),
            r"/bin/sh -c 'tr a-z A-Z; echo it'\''s'"
        );
    }

    #[test]
    fn cpu_in_millicores() {
        assert_eq!(parse_cpu("500m"), Ok(500));
        assert_eq!(parse_cpu("2000"), Ok(2000));
        assert!(parse_cpu("0.5").is_err());
    }
}
