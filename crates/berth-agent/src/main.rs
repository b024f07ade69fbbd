use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_agent::agent::{self, Config, Mode};
use clap::{Parser, ValueEnum};
use rustix::process::DumpableBehavior;

/// Runs a function's program per request (exec) or proxies to its HTTP
/// server (http), serving requests on a unix socket.
#[derive(Debug, Parser)]
#[command(name = "berth-agent", version)]
struct Args {
    /// The unix socket to serve requests on.
    #[arg(long)]
    socket: PathBuf,
    /// exec: run the program once per request, stdin to stdout; http: run
    /// it once as an HTTP server and proxy requests to it.
    #[arg(long, value_enum, default_value_t = ModeArg::Exec)]
    mode: ModeArg,
    /// http mode: the port the program's server listens on (given to it as
    /// PORT).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// http mode: how long the program may take to accept connections.
    #[arg(long, default_value_t = 30_000)]
    ready_timeout_ms: u64,
    /// How long a process has between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 2_000)]
    grace_ms: u64,
    /// The function's program and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    program: Vec<OsString>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Exec,
    Http,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The function runs as the agent's own uid, and dropped capabilities do
    // not stop ptrace between processes of one uid: only a non-dumpable
    // agent keeps the function from attaching to it (or reading its memory
    // through /proc/1) to forge the exit reports and usage it meters.
    if let Err(err) = rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        eprintln!("berth-agent: cannot make the agent non-dumpable: {err}");
    }
    let config = Config {
        socket: args.socket,
        mode: match args.mode {
            ModeArg::Exec => Mode::Exec,
            ModeArg::Http => Mode::Http,
        },
        port: args.port,
        ready_timeout: Duration::from_millis(args.ready_timeout_ms),
        grace: Duration::from_millis(args.grace_ms),
        program: args.program,
    };
    // Two workers are plenty for shuffling bytes; the runtime would
    // otherwise size itself to the host's cores, not the container's share.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("berth-agent: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(agent::run(config));
    // Anything still blocked waiting on a process that escaped its group
    // must not keep the agent alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            eprintln!("berth-agent: {err}");
            ExitCode::FAILURE
        }
    }
}
