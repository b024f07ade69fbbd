use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a function definition was refused; the message is shown to the user.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidConfig(pub String);

/// Upper bounds the server enforces on any single function. They keep one
/// definition from asking for the whole host.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_cpu_millis: u32,
    pub max_memory_mb: u32,
    pub max_timeout_secs: u32,
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_cpu_millis: 8_000,
            max_memory_mb: 16_384,
            max_timeout_secs: 3_600,
            max_instances: 100,
        }
    }
}

/// The body of `PUT /v1/functions/{name}`: what the user asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    pub image: String,
    /// Replaces the image's ENTRYPOINT and CMD when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_cpu")]
    pub cpu_millis: u32,
    #[serde(default = "default_memory")]
    pub memory_mb: u32,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u32,
    #[serde(default)]
    pub mode: Mode,
    /// Requests one instance serves at once (exec and http modes).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Instances kept warm even when idle.
    #[serde(default)]
    pub min_instances: u32,
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// Seconds an idle instance above `min_instances` is kept.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u32,
    /// Requests that may wait for a busy function; more get 429.
    #[serde(default = "default_max_queue")]
    pub max_queue: u32,
    /// Longest a request waits in that queue before it gets 429.
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout_secs: u32,
    /// Run as root (uid 0) inside the container, for images that need to
    /// own their files. Capabilities stay dropped either way. Otherwise the
    /// image's own non-root USER is kept, or uid 65534 ("nobody") used.
    #[serde(default)]
    pub run_as_root: bool,
}

/// How the function's program is run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A warm container runs the program once per request (fork/exec).
    #[default]
    Exec,
    /// A warm container runs the program once, as an HTTP server on
    /// `127.0.0.1:$PORT`; requests are proxied to it.
    Http,
    /// A new container per request, removed afterwards.
    Fresh,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Exec => "exec",
            Mode::Http => "http",
            Mode::Fresh => "fresh",
        }
    }
}

fn default_cpu() -> u32 {
    1_000
}
fn default_memory() -> u32 {
    256
}
fn default_timeout() -> u32 {
    60
}
fn default_concurrency() -> u32 {
    4
}
fn default_max_instances() -> u32 {
    10
}
fn default_idle_timeout() -> u32 {
    300
}
fn default_max_queue() -> u32 {
    64
}
fn default_queue_timeout() -> u32 {
    10
}

/// Environment names the platform sets itself; letting a function override
/// them would make the CGI contract lie.
const RESERVED_ENV_PREFIXES: &[&str] = &["HTTP_", "BERTH_"];
const RESERVED_ENV: &[&str] = &[
    "REQUEST_METHOD",
    "QUERY_STRING",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "GATEWAY_INTERFACE",
    "SERVER_PROTOCOL",
    "SERVER_SOFTWARE",
    "SCRIPT_NAME",
    "PATH_INFO",
];

impl FunctionConfig {
    pub fn validate(&self, limits: &Limits) -> Result<(), InvalidConfig> {
        let bad = |m: String| Err(InvalidConfig(m));
        let image = self.image.trim();
        if image.is_empty() || image.len() > 512 || image.chars().any(char::is_whitespace) {
            return bad("image must be a non-empty image reference without spaces".into());
        }
        if let Some(cmd) = &self.command {
            if cmd.is_empty() || cmd[0].is_empty() {
                return bad("command, when given, must name a program".into());
            }
            if cmd.len() > 256 || cmd.iter().any(|a| a.len() > 4096 || a.contains('\0')) {
                return bad("command has too many or too long arguments".into());
            }
        }
        if self.env.len() > 256 {
            return bad("env has more than 256 variables".into());
        }
        for (k, v) in &self.env {
            let valid_name = !k.is_empty()
                && k.len() <= 256
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return bad(format!("env name {k:?} is not a valid variable name"));
            }
            if RESERVED_ENV.contains(&k.as_str())
                || RESERVED_ENV_PREFIXES.iter().any(|p| k.starts_with(p))
            {
                return bad(format!("env name {k:?} is reserved for the platform"));
            }
            if v.len() > 32 * 1024 || v.contains('\0') {
                return bad(format!("env value of {k:?} is too long or contains NUL"));
            }
        }
        if !(10..=limits.max_cpu_millis).contains(&self.cpu_millis) {
            return bad(format!(
                "cpu_millis must be between 10 and {}",
                limits.max_cpu_millis
            ));
        }
        // Docker refuses memory limits under 6 MiB.
        if !(6..=limits.max_memory_mb).contains(&self.memory_mb) {
            return bad(format!(
                "memory_mb must be between 6 and {}",
                limits.max_memory_mb
            ));
        }
        if !(1..=limits.max_timeout_secs).contains(&self.timeout_secs) {
            return bad(format!(
                "timeout_secs must be between 1 and {}",
                limits.max_timeout_secs
            ));
        }
        if !(1..=1_000).contains(&self.concurrency) {
            return bad("concurrency must be between 1 and 1000".into());
        }
        if !(1..=limits.max_instances).contains(&self.max_instances) {
            return bad(format!(
                "max_instances must be between 1 and {}",
                limits.max_instances
            ));
        }
        if self.min_instances > self.max_instances {
            return bad("min_instances must not exceed max_instances".into());
        }
        if !(1..=86_400).contains(&self.idle_timeout_secs) {
            return bad("idle_timeout_secs must be between 1 and 86400".into());
        }
        if self.max_queue > 10_000 {
            return bad("max_queue must be at most 10000".into());
        }
        if !(1..=600).contains(&self.queue_timeout_secs) {
            return bad("queue_timeout_secs must be between 1 and 600".into());
        }
        Ok(())
    }
}

/// Function names appear in URLs, container labels and file names, so they
/// are kept to a conservative alphabet.
pub fn validate_name(name: &str) -> Result<(), InvalidConfig> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(InvalidConfig(format!(
            "function name {name:?} must be 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit"
        )))
    }
}

/// One immutable version of a function. Invocations always name a version,
/// so changing a function never changes what a running task executes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionVersion {
    pub tenant: String,
    pub function: String,
    pub version: i64,
    pub config: FunctionConfig,
    /// The content-addressed image id the reference resolved to at deploy
    /// time; containers are created from this, never from the mutable tag.
    pub image_id: String,
    pub created_at: i64,
}

/// A function as listed: its newest version.
#[derive(Debug, Clone)]
pub struct FunctionSummary {
    pub latest: FunctionVersion,
    pub version_count: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[cfg(test)]
mod tests;
