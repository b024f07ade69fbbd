//! `berth executor`: run this machine as an executor node of a set, and
//! the admin's commands for the fleet: list, cordon, drain, join tokens.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use berth_contract::Executor;
use clap::{Args, Subcommand};

use crate::conn::Global;
use crate::output::{Detail, NONE, Table, age};
use crate::units::fmt_bytes;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ExecutorArgs {
    #[command(subcommand)]
    command: Option<ExecutorCommand>,
    #[command(flatten)]
    node: NodeArgs,
}

/// Running the node daemon (no subcommand).
#[derive(Args, Debug)]
struct NodeArgs {
    /// A replica of the set (or its load balancer) to join, http(s)://HOST:PORT.
    #[arg(long, env = "BERTH_JOIN")]
    join: Option<String>,
    /// A join token (`berth executor token create`); needed the first time only.
    #[arg(long, env = "BERTH_JOIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The availability zone this machine is in.
    #[arg(long, env = "BERTH_ZONE")]
    zone: Option<String>,
    /// A label placement can select on, KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Where the data plane listens, IP:PORT.
    #[arg(long, env = "BERTH_NODE_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// The URL replicas reach this node at [default: http:// and the listen address].
    #[arg(long, env = "BERTH_ADVERTISE")]
    advertise: Option<String>,
    /// Containers this node runs at once.
    #[arg(long, env = "BERTH_MAX_CONTAINERS", default_value_t = 32)]
    max_containers: usize,
    /// The agent warm instances run [default: berth-agent next to this binary].
    #[arg(long, env = "BERTH_AGENT")]
    agent: Option<PathBuf>,
    /// The engine's OCI runtime for function containers, e.g. `runsc`.
    #[arg(long, env = "BERTH_RUNTIME")]
    runtime: Option<String>,
    /// Seconds running work gets to finish when the node is drained or stopped.
    #[arg(long, env = "BERTH_GRACE_SECS", default_value_t = 30)]
    grace_secs: u64,
    /// Serve the data plane over TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "BERTH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "BERTH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A PEM CA certificate to trust for the set's https address (beside the system's).
    #[arg(long, env = "BERTH_CA")]
    ca: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ExecutorCommand {
    /// Every node of the set: zone, state, capacity, allocation, heartbeat.
    List,
    /// Show one node, with its labels, CPU flags and instances.
    Get {
        /// The node's id (`berth executor list`).
        id: String,
    },
    /// Place nothing new on the node; what it runs goes on.
    Cordon {
        /// The node's id.
        id: String,
    },
    /// Let the node take work again.
    Uncordon {
        /// The node's id.
        id: String,
    },
    /// Place nothing new on the node; it finishes what it runs and leaves.
    Drain {
        /// The node's id.
        id: String,
    },
    /// Join tokens: create (shown once), list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Make a single-use join token; it is shown only now.
    Create {
        /// What it is for, shown in the list.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Every token, with the node that used it.
    List,
    /// Make a token unusable.
    Revoke {
        /// The token's id (`berth executor token list`), not its secret.
        id: String,
    },
}

pub fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?}: write labels as KEY=VALUE"))
}

pub async fn command(g: &Global, args: ExecutorArgs) -> Result<u8> {
    let Some(cmd) = args.command else {
        return run_node(g, args.node).await;
    };
    let c = g.connect()?;
    let out = g.output;
    match cmd {
        ExecutorCommand::List => {
            let list = c.executors().await?;
            out.print(&list, |l| {
                let mut t = Table::new(&[
                    "ID",
                    "ZONE",
                    "STATE",
                    "CONTAINERS",
                    "CPU",
                    "MEMORY",
                    "ENGINE",
                    "HEARTBEAT",
                ]);
                for e in &l.executors {
                    let r = &e.report;
                    t.row(vec![
                        e.id.clone(),
                        e.zone.clone().unwrap_or_else(|| NONE.into()),
                        e.state.to_string(),
                        format!("{}/{}", r.running, r.slots),
                        format!("{}m/{}m", r.cpu_millis_allocated, r.cpu_millis),
                        format!(
                            "{}/{}",
                            fmt_bytes(r.memory_mb_allocated << 20),
                            fmt_bytes(r.memory_mb << 20)
                        ),
                        if r.engine_healthy { "ok" } else { "down" }.into(),
                        format!("{:.1}s ago", e.heartbeat_age_ms as f64 / 1000.0),
                    ]);
                }
                t.render()
            })?;
        }
        ExecutorCommand::Get { id } => out.print(&c.executor(&id).await?, detail)?,
        ExecutorCommand::Cordon { id } => {
            out.print(&c.executor_action(&id, "cordon").await?, detail)?;
        }
        ExecutorCommand::Uncordon { id } => {
            out.print(&c.executor_action(&id, "uncordon").await?, detail)?;
        }
        ExecutorCommand::Drain { id } => {
            out.print(&c.executor_action(&id, "drain").await?, detail)?;
        }
        ExecutorCommand::Token { command } => match command {
            TokenCommand::Create { label } => {
                let made = c.create_join_token(&label).await?;
                eprintln!(
                    "berth: join token {} made; it is shown only now and joins one node: \
                     berth executor --join {} --token <token>",
                    made.id,
                    c.base()
                );
                out.print(&made, |t| t.token.clone())?;
            }
            TokenCommand::List => {
                let list = c.join_tokens().await?;
                out.print(&list, |l| {
                    let mut t = Table::new(&["ID", "LABEL", "CREATED", "USED BY", "REVOKED"]);
                    for tok in &l.tokens {
                        t.row(vec![
                            tok.id.clone(),
                            tok.label.clone(),
                            age(&tok.created_at),
                            tok.used_by.clone().unwrap_or_else(|| NONE.into()),
                            if tok.revoked { "yes" } else { "no" }.into(),
                        ]);
                    }
                    t.render()
                })?;
            }
            TokenCommand::Revoke { id } => {
                c.revoke_join_token(&id).await?;
                eprintln!("berth: join token {id} revoked");
            }
        },
    }
    Ok(0)
}

fn detail(e: &Executor) -> String {
    let r = &e.report;
    let mut d = Detail::new();
    let labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    d.add("id", e.id.clone())
        .add("state", e.state.to_string())
        .add("zone", e.zone.clone().unwrap_or_else(|| NONE.into()))
        .add(
            "labels",
            if labels.is_empty() {
                NONE.into()
            } else {
                labels.join(",")
            },
        )
        .add(
            "address",
            if e.address.is_empty() {
                "(in-process)".into()
            } else {
                e.address.clone()
            },
        )
        .add("containers", format!("{}/{}", r.running, r.slots))
        .add(
            "cpu",
            format!("{}m of {}m allocated", r.cpu_millis_allocated, r.cpu_millis),
        )
        .add(
            "memory",
            format!(
                "{} of {} allocated",
                fmt_bytes(r.memory_mb_allocated << 20),
                fmt_bytes(r.memory_mb << 20)
            ),
        )
        .add("engine", if r.engine_healthy { "ok" } else { "down" })
        .add("cpu flags", r.cpu_flags.join(" "))
        .add("joined", e.joined_at.clone())
        .add(
            "last heartbeat",
            format!("{} ({} ms ago)", e.last_heartbeat, e.heartbeat_age_ms),
        );
    for i in &r.instances {
        d.add(
            "instances",
            format!(
                "{}/{} v{}: {} ready, {} busy, {} starting",
                i.tenant, i.function, i.version, i.ready, i.busy, i.starting
            ),
        );
    }
    d.render()
}

async fn run_node(g: &Global, a: NodeArgs) -> Result<u8> {
    let Some(join) = a.join else {
        bail!("say which set to join: berth executor --join http://HOST:PORT [--token T]");
    };
    crate::server::init_logging(crate::server::LogFormat::Text);
    let mut labels = BTreeMap::new();
    for (k, v) in a.labels {
        labels.insert(k, v);
    }
    berth_server::run_node(berth_server::NodeConfig {
        data_dir: g.data_dir(),
        join,
        token: a.token,
        zone: a.zone,
        labels,
        listen: a.listen,
        advertise: a.advertise,
        max_containers: a.max_containers,
        agent: a.agent,
        runtime: a.runtime,
        grace: Duration::from_secs(a.grace_secs),
        tls: a.tls_cert.zip(a.tls_key),
        ca: a.ca,
    })
    .await?;
    Ok(0)
}
