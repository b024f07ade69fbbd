//! `berth`: the all-in-one server (`berth server`) and the client commands.
//!
//! Architecture Invariant: this binary is argument parsing and printing.
//! The server is `berth-server`; the commands speak to it through
//! `berth-client`.
//!
//! One file per job: `conn` (the global flags, finding the server and
//! key), `context` (named contexts), `output` (tables, `-o json|yaml`),
//! `units` (sizes and durations), `progress` (bars and spinners), and a
//! file per command group.

mod completion;
mod conn;
mod context;
mod executor;
mod functions;
mod invoke;
mod login;
mod output;
mod progress;
mod quota_flags;
mod registry;
mod server;
mod tasks;
mod tenant;
mod units;

use berth_client::ClientError;
use clap::{Parser, Subcommand};

use crate::conn::Global;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Serverless compute: run container images as HTTP functions",
    after_help = "The global options go anywhere on the line: \
        `berth fn list -o json` and `berth -o json fn list` are the same.\n\
        Contexts: `berth context add prod --server https://berth.example --key-stdin`, \
        then `berth context use prod`."
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the all-in-one server: API, scheduler, local executor, store.
    Server(server::ServerArgs),
    /// Manage functions: deploy, update, list, get, versions, delete.
    #[command(name = "fn")]
    Function {
        #[command(subcommand)]
        command: functions::FnCommand,
    },
    /// Call a function: stdin is the request body, the output goes to stdout.
    Invoke(invoke::InvokeArgs),
    /// Write a task's logs (stderr) to stdout; -f follows a running task.
    Logs(tasks::Payload),
    /// Inspect, wait for, follow and cancel tasks.
    Task {
        #[command(subcommand)]
        command: tasks::TaskCommand,
    },
    /// Named servers and keys: add, use, list, show, remove.
    Context {
        #[command(subcommand)]
        command: context::ContextCommand,
    },
    /// Log Docker in to the server's registry, so `docker push HOST:PORT/<tenant>/...` works.
    Login(login::LoginArgs),
    /// Manage tenants, their API keys and quotas (admin).
    Tenant {
        #[command(subcommand)]
        command: tenant::TenantCommand,
    },
    /// Run this machine as an executor node of a set (--join); or, with a
    /// subcommand, the fleet's nodes and join tokens (admin).
    Executor(executor::ExecutorArgs),
    /// Registry maintenance on a local data directory.
    Registry {
        #[command(subcommand)]
        command: registry::RegistryCommand,
    },
    /// Print a shell completion script: `berth completion bash > ~/.local/share/bash-completion/completions/berth`.
    Completion(completion::CompletionArgs),
    /// Print the man page, or write one per command with --dir.
    Man(completion::ManArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let g = cli.global;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => {
                server::init_logging(args.log_format);
                berth_server::run(args.into_config(g.data_dir()))
                    .await
                    .map(|()| 0)
                    .map_err(anyhow::Error::from)
            }
            Command::Function { command } => functions::command(&g, command).await,
            Command::Invoke(args) => invoke::command(&g, args).await,
            Command::Logs(args) => tasks::logs(&g, args).await,
            Command::Task { command } => tasks::command(&g, command).await,
            Command::Context { command } => context::command(&g, command),
            Command::Login(args) => login::command(&g, args).await,
            Command::Tenant { command } => tenant::command(&g, command).await,
            Command::Registry { command } => registry::command(&g, command).await,
            Command::Executor(args) => executor::command(&g, args).await,
            Command::Completion(args) => completion::completion(&args),
            Command::Man(args) => completion::man(&args),
        }
    });
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            report(&e, &g);
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prints an error on stderr: a function's failure with its stderr and
/// the way to its task's logs, an unreachable server with where its URL
/// came from and what to do.
fn report(e: &anyhow::Error, g: &Global) {
    let api = e
        .chain()
        .find_map(|c| match c.downcast_ref::<ClientError>() {
            Some(ClientError::Api { status, error }) => Some((*status, error)),
            _ => None,
        });
    if let Some((status, error)) = api
        && let Some(id) = &error.task_id
    {
        eprintln!("berth: {status}: {} ({})", error.message, error.code);
        if let Some(code) = error.exit_code {
            eprintln!("  exit code {code}");
        }
        if let Some(stderr) = error.stderr.as_deref().filter(|s| !s.is_empty()) {
            eprintln!("  stderr (its end):");
            for line in stderr.lines() {
                eprintln!("    {line}");
            }
        }
        eprintln!("  task {id}; its logs: berth logs {id}");
        return;
    }
    eprintln!("berth: {e:#}");
    if conn::is_unreachable(e) {
        for line in g.unreachable_hint().lines() {
            eprintln!("  {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Cli;

    /// Every command and every flag says what it is for.
    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "version"].contains(&id) {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(name.clone());
                }
                walk(sub, &name, missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "berth", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }

    #[test]
    fn global_flags_go_anywhere() {
        for args in [
            &["berth", "-o", "json", "fn", "list"][..],
            &["berth", "fn", "list", "-o", "json"],
            &[
                "berth",
                "fn",
                "--server",
                "http://h:1",
                "list",
                "--key",
                "k",
            ],
            &["berth", "task", "logs", "ID", "-f", "--output", "yaml"],
            &[
                "berth",
                "--data-dir",
                "/tmp/d",
                "server",
                "--listen",
                "127.0.0.1:0",
            ],
            &["berth", "server", "--data-dir", "/tmp/d"],
        ] {
            assert!(Cli::try_parse_from(args).is_ok(), "{args:?}");
        }
        assert!(Cli::try_parse_from(["berth", "fn", "list", "-o", "xml"]).is_err());
    }
}
