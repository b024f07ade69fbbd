//! `berth`: the all-in-one server (`berth server`) and the client commands.
//!
//! Architecture Invariant: this binary is argument parsing and printing.
//! The server is `berth-server`; the commands speak to it through
//! `berth-client`.

mod client;
mod quota_flags;
mod registry;
mod server;
mod tenant;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Serverless compute: run container images as HTTP functions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the all-in-one server: API, scheduler, local executor, store.
    Server(server::ServerArgs),
    /// Manage functions.
    #[command(name = "fn")]
    Function {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: client::FnCommand,
    },
    /// Call a function: stdin is the request body, the output goes to stdout.
    Invoke {
        #[command(flatten)]
        conn: client::Conn,
        #[command(flatten)]
        args: client::InvokeArgs,
    },
    /// Inspect, wait for and cancel tasks.
    Task {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: client::TaskCommand,
    },
    /// Log Docker in to the server's registry, so `docker push HOST:PORT/<tenant>/...` works.
    Login {
        #[command(flatten)]
        conn: client::Conn,
        #[command(flatten)]
        args: client::LoginArgs,
    },
    /// Manage tenants, their API keys and quotas (admin).
    Tenant {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: tenant::TenantCommand,
    },
    /// Registry maintenance on a local data directory.
    Registry {
        #[command(subcommand)]
        command: registry::RegistryCommand,
    },
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
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => {
                server::init_logging();
                berth_server::run(args.into_config())
                    .await
                    .map(|()| 0)
                    .map_err(anyhow::Error::from)
            }
            Command::Function { conn, command } => client::function(conn, command).await,
            Command::Invoke { conn, args } => client::invoke(conn, args).await,
            Command::Task { conn, command } => client::task(conn, command).await,
            Command::Login { conn, args } => client::login(conn, args).await,
            Command::Tenant { conn, command } => tenant::command(conn, command).await,
            Command::Registry { command } => registry::command(command).await,
        }
    });
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("berth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
