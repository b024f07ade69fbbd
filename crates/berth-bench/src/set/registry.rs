//! The registry with its blobs in S3 against the same server with them on
//! the local filesystem: blobs pushed the way Docker pushes them (POST, one
//! streamed chunked PATCH, PUT `?digest=`) and fetched, then a whole image
//! through `docker push` and `docker pull`. Both servers run at once on the
//! SQLite store, so the blob store is the only difference; the order of the
//! two alternates between runs.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use berth_client::reqwest::{self, StatusCode, header};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};

use super::SetArgs;
use crate::progress;
use crate::server::{BerthServer, Options};

/// Repositories of the admin tenant.
const BLOB_REPO: &str = "admin/blob";
const IMAGE_REPO: &str = "admin/bench";
/// The image built for each run, before it is tagged for a registry.
const LOCAL_IMAGE: &str = "berth-bench/set-img:latest";
/// Pieces of the streamed PATCH body.
pub const CHUNK: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct Timings {
    pub blob_push: Vec<Duration>,
    /// The same, the body sent with the closing PUT instead of a PATCH.
    pub blob_put: Vec<Duration>,
    pub blob_pull: Vec<Duration>,
    pub small_push: Vec<Duration>,
    pub small_pull: Vec<Duration>,
    pub docker_push: Vec<Duration>,
    pub docker_pull: Vec<Duration>,
}

#[derive(Debug, Default)]
pub struct Registry {
    pub fs: Timings,
    pub s3: Timings,
}

struct Side {
    server: BerthServer,
    http: reqwest::Client,
}

impl Side {
    fn host(&self) -> String {
        self.server.addr.to_string()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr)
    }

    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .basic_auth("admin", Some(&self.server.key))
    }

    /// POST, one streamed chunked PATCH, PUT `?digest=`: as Docker does.
    /// With `in_put`, the body goes with the PUT instead (no PATCH).
    async fn push(&self, data: &Bytes, digest: &str, in_put: bool) -> Result<Duration> {
        let begun = Instant::now();
        let resp = self
            .req(
                reqwest::Method::POST,
                &self.url(&format!("/v2/{BLOB_REPO}/blobs/uploads/")),
            )
            .send()
            .await?;
        let mut loc = self.location(resp, StatusCode::ACCEPTED, "POST").await?;
        if !in_put {
            let resp = self
                .req(reqwest::Method::PATCH, &loc)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(streamed(data))
                .send()
                .await?;
            loc = self.location(resp, StatusCode::ACCEPTED, "PATCH").await?;
        }
        let sep = if loc.contains('?') { '&' } else { '?' };
        let mut put = self.req(reqwest::Method::PUT, &format!("{loc}{sep}digest={digest}"));
        if in_put {
            put = put
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(streamed(data));
        }
        let resp = put.send().await?;
        expect(resp, StatusCode::CREATED, "PUT").await?;
        Ok(begun.elapsed())
    }

    /// GET to the last byte; the bytes are checked after the clock stops.
    async fn pull(&self, data: &Bytes, digest: &str) -> Result<Duration> {
        let begun = Instant::now();
        let resp = self
            .req(
                reqwest::Method::GET,
                &self.url(&format!("/v2/{BLOB_REPO}/blobs/{digest}")),
            )
            .send()
            .await?;
        let resp = expect(resp, StatusCode::OK, "GET").await?;
        let mut body = resp.bytes_stream();
        let mut got = Vec::with_capacity(data.len());
        while let Some(piece) = body.next().await {
            got.extend_from_slice(&piece?);
        }
        let took = begun.elapsed();
        ensure!(
            got.len() == data.len() && got == data[..],
            "the registry gave back {} bytes that differ from the {} pushed",
            got.len(),
            data.len()
        );
        Ok(took)
    }

    async fn location(
        &self,
        resp: reqwest::Response,
        want: StatusCode,
        what: &str,
    ) -> Result<String> {
        let resp = expect(resp, want, what).await?;
        let loc = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .with_context(|| format!("{what}: no Location"))?;
        Ok(if loc.starts_with("http") {
            loc.to_owned()
        } else {
            self.url(loc)
        })
    }
}

/// A body sent chunked, in [`CHUNK`] pieces, as a client streaming from a
/// pipe sends it.
fn streamed(data: &Bytes) -> reqwest::Body {
    let pieces: Vec<Result<Bytes, std::io::Error>> = (0..data.len())
        .step_by(CHUNK)
        .map(|at| Ok(data.slice(at..(at + CHUNK).min(data.len()))))
        .collect();
    reqwest::Body::wrap_stream(futures::stream::iter(pieces))
}

async fn expect(
    resp: reqwest::Response,
    want: StatusCode,
    what: &str,
) -> Result<reqwest::Response> {
    if resp.status() != want {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        bail!(
            "{what}: {status}, wanted {want}: {}",
            &body[..body.len().min(300)]
        );
    }
    Ok(resp)
}

pub async fn measure(args: &SetArgs, berth: &Path, agent: &Path, s3_url: &str) -> Result<Registry> {
    progress("registry: a server on local blobs and one on S3, both on SQLite");
    let start = |blob_store: Option<String>| async move {
        let options = Options {
            max_containers: 4,
            blob_store,
            ..Options::default()
        };
        let server = BerthServer::start_with(berth, agent, &options).await?;
        anyhow::Ok(Side {
            server,
            http: reqwest::Client::builder().build()?,
        })
    };
    let fs = start(None).await?;
    let s3 = start(Some(s3_url.to_owned())).await?;
    let mut out = Registry::default();
    let outcome = blobs(args, &fs, &s3, &mut out).await;
    let outcome = match outcome {
        Ok(()) if !args.no_docker => docker(args, &fs, &s3, &mut out).await,
        other => other,
    };
    for (name, side) in [("filesystem", &fs), ("S3", &s3)] {
        let problems = side.server.log_problems();
        if !problems.is_empty() {
            progress(format!(
                "registry: the {name} server logged {} warnings or errors; the first:\n{}",
                problems.len(),
                problems[..problems.len().min(5)].join("\n")
            ));
        }
    }
    if let Err(e) = outcome {
        eprintln!(
            "--- filesystem server log (tail) ---\n{}\n--- S3 server log (tail) ---\n{}",
            fs.server.log_tail(20),
            s3.server.log_tail(20)
        );
        return Err(e);
    }
    Ok(out)
}

/// Pseudo-random bytes (xorshift64*): incompressible, and quick to make.
fn random(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

async fn blobs(args: &SetArgs, fs: &Side, s3: &Side, out: &mut Registry) -> Result<()> {
    let size = args.blob_mb * 1024 * 1024;
    let base = seed();
    for run in 0..args.registry_runs {
        progress(format!(
            "registry: {} MiB blob, run {} of {}",
            args.blob_mb,
            run + 1,
            args.registry_runs
        ));
        // Fresh bytes each run: nothing is already there.
        let data = random(size, base + run as u64);
        let d = digest(&data);
        let order = if run % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for on_s3 in order {
            let (side, t) = if on_s3 {
                (s3, &mut out.s3)
            } else {
                (fs, &mut out.fs)
            };
            t.blob_push.push(side.push(&data, &d, false).await?);
        }
        // Then with the body in the PUT: fresh bytes of the same size, as
        // the first are already there.
        let again = random(size, !(base + run as u64));
        let d2 = digest(&again);
        for on_s3 in order {
            let (side, t) = if on_s3 {
                (s3, &mut out.s3)
            } else {
                (fs, &mut out.fs)
            };
            t.blob_put.push(side.push(&again, &d2, true).await?);
        }
        for on_s3 in order {
            let (side, t) = if on_s3 {
                (s3, &mut out.s3)
            } else {
                (fs, &mut out.fs)
            };
            t.blob_pull.push(side.pull(&data, &d).await?);
        }
    }
    progress(format!(
        "registry: {} blobs of {} KiB each way",
        args.small_blobs, args.small_kb
    ));
    let small: Vec<Bytes> = (0..args.small_blobs)
        .map(|i| random(args.small_kb * 1024, base ^ (0x5bd1_e995 + i as u64)))
        .collect();
    for (side, t) in [(fs, &mut out.fs), (s3, &mut out.s3)] {
        for data in &small {
            t.small_push
                .push(side.push(data, &digest(data), false).await?);
        }
        for data in &small {
            t.small_pull.push(side.pull(data, &digest(data)).await?);
        }
        let ms: Vec<String> = t
            .small_pull
            .iter()
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
            .collect();
        progress(format!(
            "registry: {} pulls (ms): {}",
            if std::ptr::eq(side, s3) {
                "S3"
            } else {
                "filesystem"
            },
            ms.join(" ")
        ));
    }
    Ok(())
}

async fn docker(args: &SetArgs, fs: &Side, s3: &Side, out: &mut Registry) -> Result<()> {
    let work = tempfile::Builder::new()
        .prefix("berth-bench-img.")
        .tempdir()?;
    let config = work.path().join("docker");
    std::fs::create_dir_all(&config)?;
    for side in [fs, s3] {
        login(&config, &side.host(), &side.server.key).await?;
    }
    let mut tags = vec![LOCAL_IMAGE.to_owned()];
    let outcome = async {
        for run in 0..args.registry_runs {
            progress(format!(
                "registry: docker push/pull of {} × {} MiB layers, run {} of {}",
                args.layers,
                args.layer_mb,
                run + 1,
                args.registry_runs
            ));
            build_image(work.path(), args.layers, args.layer_mb, seed()).await?;
            let order = if run % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for on_s3 in order {
                let (side, t) = if on_s3 {
                    (s3, &mut out.s3)
                } else {
                    (fs, &mut out.fs)
                };
                let tag = format!("{}/{IMAGE_REPO}:run{run}", side.host());
                docker_cmd(&config, &["tag", LOCAL_IMAGE, &tag]).await?;
                tags.push(tag.clone());
                sync().await;
                let begun = Instant::now();
                docker_cmd(&config, &["push", "-q", &tag]).await?;
                t.docker_push.push(begun.elapsed());
            }
            for on_s3 in order {
                let (side, t) = if on_s3 {
                    (s3, &mut out.s3)
                } else {
                    (fs, &mut out.fs)
                };
                let tag = format!("{}/{IMAGE_REPO}:run{run}", side.host());
                // Every tag goes, so the layers leave the engine and the pull
                // fetches them all.
                forget(&config, &tags).await;
                sync().await;
                let begun = Instant::now();
                docker_cmd(&config, &["pull", "-q", &tag]).await?;
                t.docker_pull.push(begun.elapsed());
            }
            forget(&config, &tags).await;
        }
        anyhow::Ok(())
    }
    .await;
    forget(&config, &tags).await;
    outcome
}

/// A fresh image of random layers, `FROM scratch`, nothing pulled.
async fn build_image(dir: &Path, layers: usize, layer_mb: usize, seed: u64) -> Result<()> {
    let ctx = dir.join("ctx");
    let _ = std::fs::remove_dir_all(&ctx);
    std::fs::create_dir_all(&ctx)?;
    let mut dockerfile = String::from("FROM scratch\n");
    for i in 0..layers {
        let data = random(layer_mb * 1024 * 1024, seed.wrapping_add(i as u64 * 7919));
        std::fs::write(ctx.join(format!("layer{i}")), &data)?;
        dockerfile.push_str(&format!("COPY layer{i} /layer{i}\n"));
    }
    std::fs::write(ctx.join("Dockerfile"), dockerfile)?;
    let out = tokio::process::Command::new("docker")
        .args(["build", "-q", "-t", LOCAL_IMAGE])
        .arg(&ctx)
        // The classic builder: what bench-registry.sh uses, and present
        // wherever the engine is.
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null())
        .output()
        .await
        .context("running docker build")?;
    if !out.status.success() {
        bail!(
            "docker build: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

async fn login(config: &Path, host: &str, key: &str) -> Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new("docker")
        .args(["login", host, "-u", "admin", "--password-stdin"])
        .env("DOCKER_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running docker login")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(key.as_bytes()).await?;
        stdin.shutdown().await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "docker login {host}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

async fn docker_cmd(config: &Path, args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .env("DOCKER_CONFIG", config)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running docker")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

async fn forget(config: &Path, tags: &[String]) {
    let _ = tokio::process::Command::new("docker")
        .args(["rmi", "-f"])
        .args(tags)
        .env("DOCKER_CONFIG", config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// Dirty pages of the last write are not left to slow the next timing.
async fn sync() {
    let _ = tokio::process::Command::new("sync").status().await;
}
