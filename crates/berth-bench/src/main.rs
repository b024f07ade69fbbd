//! Measures a real `berth server` on this machine, each figure against a
//! baseline taken in the same run, and prints a Markdown section for
//! docs/BENCHMARKS.md on stdout (progress goes to stderr). It is run by
//! hand, never by the test suite: the numbers depend on the machine and
//! take minutes to gather. Without a subcommand it measures one server's
//! warm path (scripts/bench.sh); `set` measures the async queue and the
//! registry of a set on PostgreSQL and S3 (scripts/bench-set.sh); `fleet`
//! measures what running calls on executor nodes adds
//! (scripts/bench-fleet.sh).

mod client;
mod cpu;
mod echo;
mod fleet;
mod machine;
mod pg;
mod photo;
mod report;
mod server;
mod set;
mod stats;

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use berth_contract::{FunctionConfig, Mode};
use bytes::Bytes;
use clap::Parser;
use tokio::io::AsyncWriteExt;

use crate::client::{Conn, Series, Target};
use crate::server::BerthServer;

const BUSYBOX: &str = "berth-test/busybox:latest";
const ECHO_HTTP: &str = "berth-test/echo-http:latest";
const IMAGE_OPS: &str = "berth-example/image-ops:latest";
const THUMBNAIL_QUERY: &str = "op=thumbnail&w=128";
const THUMBNAIL_WIDTH: u32 = 128;
/// Room for every instance the run starts, so capacity never shapes a figure.
const MAX_CONTAINERS: usize = 64;
/// What a trivial call carries: small enough to be all overhead.
const SMALL_BODY: usize = 64;
/// The stdin of every cold start.
const COLD_INPUT: &[u8] = b"a small stdin for a cold start\n";
/// The warm path's functions: busybox `cat` forked per call, and
/// echo-http proxied.
const WARM_EXEC: &str = "bench-exec";
const WARM_HTTP: &str = "bench-http";

#[derive(Parser, Debug)]
#[command(
    name = "berth-bench",
    about = "Benchmarks a berth server against baselines measured in the same run",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The warm path, throughput and cold starts of one server.
    #[command(flatten)]
    warm: Option<Args>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// The async queue of a set (SQLite, PostgreSQL, three replicas) against
    /// a bare SKIP LOCKED loop, and the registry on S3 against the filesystem.
    Set(set::SetArgs),
    /// The warm path through a replica and an executor node against an
    /// all-in-one server, and the throughput of two replicas against one.
    Fleet(fleet::FleetArgs),
}

/// The warm path benchmark's flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The berth binary to benchmark (a release build).
    #[arg(long)]
    berth: PathBuf,
    /// The statically linked agent that warm instances run.
    #[arg(long)]
    agent: PathBuf,
    /// The static image-ops binary, run directly as the thumbnail baseline.
    #[arg(long)]
    image_ops: PathBuf,
    /// Measured sequential calls per warm-path target.
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    /// Unmeasured calls before each sequential series.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Requests per concurrency level in the throughput runs.
    #[arg(long, default_value_t = 3000)]
    throughput_requests: usize,
    /// Concurrency levels (workers, each with its own connection).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16])]
    levels: Vec<usize>,
    /// Cold starts measured per kind.
    #[arg(long, default_value_t = 20)]
    cold_samples: usize,
    /// Thumbnails measured per kind.
    #[arg(long, default_value_t = 30)]
    image_samples: usize,
    /// A short smoke run: every phase, with tiny sample counts.
    #[arg(long)]
    quick: bool,
    /// The source revision benchmarked, shown in the report.
    #[arg(long)]
    revision: Option<String>,
}

impl Args {
    fn shrink(&mut self) {
        self.samples = self.samples.min(200);
        self.warmup = self.warmup.min(20);
        self.throughput_requests = self.throughput_requests.min(300);
        self.cold_samples = self.cold_samples.min(3);
        self.image_samples = self.image_samples.min(3);
    }
}

/// Sequential warm calls.
pub struct Warm {
    pub baseline: Series,
    pub exec: Series,
    pub http: Series,
}

pub struct Level {
    pub workers: usize,
    pub requests: usize,
    pub baseline: Series,
    pub http: Series,
    pub exec: Series,
}

pub struct Cold {
    pub docker_run: Vec<Duration>,
    pub fresh: Series,
    pub exec: Series,
}

pub struct Thumbnails {
    pub photo_bytes: usize,
    pub photo_ms: f64,
    pub thumb: (u32, u32, usize),
    pub direct: Vec<Duration>,
    pub warm: Series,
    pub fresh: Series,
}

pub struct Results {
    pub warm: Warm,
    pub levels: Vec<Level>,
    pub cold: Cold,
    pub thumbnails: Thumbnails,
    /// The 1-minute load average as each phase began, and at the end: the
    /// machine is not ours alone, and this shows when it was not.
    pub loads: Vec<(&'static str, f64)>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Dropping the run on ^C drops the server guards, which stop the
    // servers and remove their containers.
    let outcome = match (cli.command, cli.warm) {
        (Some(Command::Set(mut args)), _) => {
            if args.quick {
                args.shrink();
            }
            tokio::select! {
                r = set::run(&args) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            }
        }
        (Some(Command::Fleet(mut args)), _) => {
            if args.quick {
                args.shrink();
            }
            tokio::select! {
                r = fleet::run(&args) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            }
        }
        (None, Some(mut args)) => {
            if args.quick {
                args.shrink();
            }
            tokio::select! {
                r = run(&args) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            }
        }
        (None, None) => Err(anyhow!(
            "nothing to do: pass the warm path's flags (see --help) or a subcommand"
        )),
    };
    match outcome {
        Ok(markdown) => {
            print!("{markdown}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<String> {
    let berth = server::existing(&args.berth, "the berth binary")?;
    let agent = server::existing(&args.agent, "the agent")?;
    let image_ops = server::existing(&args.image_ops, "the image-ops binary")?;
    for image in [BUSYBOX, ECHO_HTTP, IMAGE_OPS] {
        ensure_image(image).await?;
    }
    let machine = machine::Machine::probe();
    progress(format!(
        "{} CPUs ({}), Linux {}, Docker {}",
        machine.cpus, machine.cpu_model, machine.kernel, machine.docker
    ));

    let baseline = echo::start().await?;
    let mut server = BerthServer::start(&berth, &agent, MAX_CONTAINERS).await?;
    progress(format!("berth server up on {}", server.addr));
    let results = match measure(args, &server, baseline, &image_ops).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("--- berth server log (tail) ---\n{}", server.log_tail(30));
            return Err(e);
        }
    };
    server.stop();
    Ok(report::render(args, &machine, &results))
}

async fn measure(
    args: &Args,
    server: &BerthServer,
    baseline: std::net::SocketAddr,
    image_ops: &std::path::Path,
) -> Result<Results> {
    let mut loads = Vec::new();
    let mut mark = |phase| loads.extend(machine::load_average().map(|l| (phase, l)));
    mark("warm path");
    let warm = warm_path(args, server, baseline).await?;
    mark("throughput");
    let levels = throughput(args, server, baseline).await?;
    server.delete(WARM_EXEC).await?;
    server.delete(WARM_HTTP).await?;
    mark("cold start");
    let cold = cold_starts(args, server).await?;
    mark("thumbnails");
    let thumbnails = thumbnails(args, server, image_ops).await?;
    mark("end");
    Ok(Results {
        warm,
        levels,
        cold,
        thumbnails,
        loads,
    })
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("berth-bench: {}", msg.as_ref());
}

fn small_body() -> Bytes {
    Bytes::from(
        (0..SMALL_BODY)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// A function of `image` with every other setting at its default.
fn function(image: &str) -> Result<FunctionConfig> {
    Ok(serde_json::from_value(
        serde_json::json!({ "image": image }),
    )?)
}

/// A busybox function that echoes its input.
fn cat() -> Result<FunctionConfig> {
    Ok(FunctionConfig {
        command: Some(vec!["/bin/cat".into()]),
        ..function(BUSYBOX)?
    })
}

fn invoke_target(server: &BerthServer, name: &str, query: &str) -> Result<Target> {
    let path = if query.is_empty() {
        format!("/v1/functions/{name}/invoke")
    } else {
        format!("/v1/functions/{name}/invoke?{query}")
    };
    Target::new(server.addr, path, Some(&server.key))
}

/// The warm path's two functions, [`WARM_EXEC`] and [`WARM_HTTP`], as
/// every benchmark of the warm path deploys them.
async fn deploy_warm(server: &BerthServer) -> Result<()> {
    let exec = FunctionConfig {
        concurrency: 16,
        max_instances: 2,
        ..cat()?
    };
    server.deploy(WARM_EXEC, &exec).await?;
    let http = FunctionConfig {
        mode: Mode::Http,
        concurrency: 64,
        ..function(ECHO_HTTP)?
    };
    server.deploy(WARM_HTTP, &http).await?;
    Ok(())
}

async fn warm_path(
    args: &Args,
    server: &BerthServer,
    baseline: std::net::SocketAddr,
) -> Result<Warm> {
    deploy_warm(server).await?;
    let base = Target::new(baseline, "/echo", None)?;
    let exec = invoke_target(server, WARM_EXEC, "")?;
    let http = invoke_target(server, WARM_HTTP, "")?;
    let none = || None;
    let cpu = || server.cpu_time();
    let (n, w) = (args.samples, args.warmup);

    progress(format!("warm path: baseline, {n} sequential calls"));
    let baseline = client::sequential(&base, small_body(), w, n, &none).await?;
    progress(format!("warm path: exec mode, {n} sequential calls"));
    let exec = client::sequential(&exec, small_body(), w, n, &cpu).await?;
    progress(format!("warm path: http mode, {n} sequential calls"));
    let http = client::sequential(&http, small_body(), w, n, &cpu).await?;
    Ok(Warm {
        baseline,
        exec,
        http,
    })
}

async fn throughput(
    args: &Args,
    server: &BerthServer,
    baseline: std::net::SocketAddr,
) -> Result<Vec<Level>> {
    let base = Target::new(baseline, "/echo", None)?;
    let exec = invoke_target(server, WARM_EXEC, "")?;
    let http = invoke_target(server, WARM_HTTP, "")?;
    let none = || None;
    let cpu = || server.cpu_time();
    let total = args.throughput_requests;
    let mut levels = Vec::new();
    for &workers in &args.levels {
        let workers = workers.max(1);
        let warm_each = (args.warmup / workers).max(5);
        progress(format!(
            "throughput: {workers} workers, {total} requests per target"
        ));
        let baseline =
            client::closed_loop(&base, small_body(), workers, total, warm_each, &none).await?;
        let http =
            client::closed_loop(&http, small_body(), workers, total, warm_each, &cpu).await?;
        let exec =
            client::closed_loop(&exec, small_body(), workers, total, warm_each, &cpu).await?;
        levels.push(Level {
            workers,
            requests: total,
            baseline,
            http,
            exec,
        });
    }
    Ok(levels)
}

async fn cold_starts(args: &Args, server: &BerthServer) -> Result<Cold> {
    let n = args.cold_samples;
    let input = COLD_INPUT;

    progress(format!("cold start: docker run, {n} runs (+1 unmeasured)"));
    let mut docker_run = Vec::new();
    for i in 0..=n {
        let begun = Instant::now();
        let out = pipe_through(
            tokio::process::Command::new("docker").args([
                "run",
                "--rm",
                "-i",
                "--network",
                "none",
                BUSYBOX,
                "cat",
            ]),
            input.to_vec(),
        )
        .await
        .context("docker run")?;
        let took = begun.elapsed();
        ensure!(out == input, "docker run echoed {out:?}");
        if i > 0 {
            docker_run.push(took);
        }
    }

    progress(format!("cold start: fresh mode, {n} calls (+1 unmeasured)"));
    let fresh_cat = FunctionConfig {
        mode: Mode::Fresh,
        ..cat()?
    };
    server.deploy("bench-fresh", &fresh_cat).await?;
    let target = invoke_target(server, "bench-fresh", "")?;
    let mut conn = Conn::open(server.addr).await?;
    let mut fresh = Series::default();
    for i in 0..=n {
        let reply = conn.echo(&target, &Bytes::from_static(input)).await?;
        if i > 0 {
            fresh.latencies.push(reply.elapsed);
            fresh.timings.push(reply.timing);
        }
    }
    server.delete("bench-fresh").await?;

    progress(format!(
        "cold start: exec mode after scale to zero, {n} calls (+1 unmeasured; ~3 s each)"
    ));
    let cold_cat = FunctionConfig {
        idle_timeout_secs: 1,
        ..cat()?
    };
    server.deploy("bench-cold", &cold_cat).await?;
    let target = invoke_target(server, "bench-cold", "")?;
    let mut exec = Series::default();
    for i in 0..=n {
        // Idle removal runs once a second after a 1 s idle timeout.
        server
            .wait_no_containers("bench-cold", Duration::from_secs(60))
            .await?;
        let reply = conn.echo(&target, &Bytes::from_static(input)).await?;
        if i > 0 {
            exec.latencies.push(reply.elapsed);
            exec.timings.push(reply.timing);
        }
    }
    server.delete("bench-cold").await?;
    Ok(Cold {
        docker_run,
        fresh,
        exec,
    })
}

async fn thumbnails(
    args: &Args,
    server: &BerthServer,
    image_ops: &std::path::Path,
) -> Result<Thumbnails> {
    let n = args.image_samples;
    progress(format!(
        "thumbnails: drawing the {}x{} test photo",
        photo::WIDTH,
        photo::HEIGHT
    ));
    let begun = Instant::now();
    let photo = Bytes::from(tokio::task::spawn_blocking(photo::jpeg).await??);
    let photo_ms = begun.elapsed().as_secs_f64() * 1e3;

    progress(format!(
        "thumbnails: direct subprocess, {n} runs (+1 unmeasured)"
    ));
    let mut direct = Vec::new();
    let mut thumb = (0, 0, 0);
    for i in 0..=n {
        let mut cmd = tokio::process::Command::new(image_ops);
        // What the function sees of the request, minus berth's own ids.
        cmd.env_clear()
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .env("REQUEST_METHOD", "POST")
            .env("QUERY_STRING", THUMBNAIL_QUERY)
            .env("CONTENT_TYPE", "image/jpeg")
            .env("CONTENT_LENGTH", photo.len().to_string());
        let begun = Instant::now();
        let out = pipe_through(&mut cmd, photo.to_vec()).await?;
        let took = begun.elapsed();
        if i == 0 {
            thumb = check_thumbnail(&out)?;
        } else {
            direct.push(took);
        }
    }

    progress(format!(
        "thumbnails: warm exec mode, {n} calls (+2 unmeasured)"
    ));
    let image_ops_fn = FunctionConfig {
        memory_mb: 512,
        ..function(IMAGE_OPS)?
    };
    server.deploy("bench-thumb", &image_ops_fn).await?;
    let warm = thumbnail_calls(server, "bench-thumb", &photo, 2, n).await?;
    server.delete("bench-thumb").await?;

    progress(format!("thumbnails: fresh mode, {n} calls (+1 unmeasured)"));
    let thumb_fresh = FunctionConfig {
        mode: Mode::Fresh,
        ..image_ops_fn
    };
    server.deploy("bench-thumb-fresh", &thumb_fresh).await?;
    let fresh = thumbnail_calls(server, "bench-thumb-fresh", &photo, 1, n).await?;
    server.delete("bench-thumb-fresh").await?;

    Ok(Thumbnails {
        photo_bytes: photo.len(),
        photo_ms,
        thumb,
        direct,
        warm,
        fresh,
    })
}

async fn thumbnail_calls(
    server: &BerthServer,
    name: &str,
    photo: &Bytes,
    warmup: usize,
    n: usize,
) -> Result<Series> {
    let target = invoke_target(server, name, THUMBNAIL_QUERY)?.with_content_type("image/jpeg");
    let mut conn = Conn::open(server.addr).await?;
    let mut series = Series::default();
    for i in 0..warmup + n {
        let reply = conn.post(&target, photo.clone()).await?;
        reply.ensure_ok(name)?;
        if i == 0 {
            check_thumbnail(&reply.body)?;
        }
        if i >= warmup {
            series.latencies.push(reply.elapsed);
            series.timings.push(reply.timing);
        }
    }
    Ok(series)
}

/// The thumbnail must be a JPEG of the asked width: a fast wrong answer
/// would make a fine benchmark.
fn check_thumbnail(jpeg: &[u8]) -> Result<(u32, u32, usize)> {
    let img = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
        .context("the thumbnail is not a JPEG")?;
    ensure!(
        img.width() == THUMBNAIL_WIDTH,
        "thumbnail is {}x{}, wanted width {THUMBNAIL_WIDTH}",
        img.width(),
        img.height()
    );
    Ok((img.width(), img.height(), jpeg.len()))
}

/// Runs a command with `input` on stdin and returns its stdout; fails on a
/// non-zero exit.
async fn pipe_through(cmd: &mut tokio::process::Command, input: Vec<u8>) -> Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    // Written alongside the wait so a program that answers before reading
    // everything cannot deadlock us on a full pipe.
    let writer = tokio::spawn(async move {
        let r = stdin.write_all(&input).await;
        drop(stdin);
        r
    });
    let out = child.wait_with_output().await?;
    let _ = writer.await;
    if !out.status.success() {
        bail!(
            "exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

async fn ensure_image(image: &str) -> Result<()> {
    let status = tokio::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .context("running docker")?;
    ensure!(
        status.success(),
        "image {image} is missing: run scripts/build-test-images.sh"
    );
    Ok(())
}
