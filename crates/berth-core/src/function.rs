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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_cpu_millis: 8_000,
            max_memory_mb: 16_384,
            max_timeout_secs: 3_600,
        }
    }
}

/// The body of `PUT /v1/functions/{name}`: what the user asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[cfg(test)]
mod tests;
