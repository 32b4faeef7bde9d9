//! Configuration: one typed struct per mode, each field settable by a flag,
//! a `CONFAB_*` environment variable, or a key of the TOML file given with
//! `--config`. Flags beat the environment, which beats the file, which beats
//! the defaults. The doc comments below are what `confab <mode> --help`
//! prints; the README's configuration reference follows them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, reason: reason.into() }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `confab standalone`: gateway and dispatcher in one process, an embedded
/// store on local disk and an in-process bus.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandaloneConfig {
    /// Public listener: the HTTP API, WebSocket (/v1/ws) and the web client (/).
    #[arg(long, env = "CONFAB_LISTEN", value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Admin listener: /metrics, /healthz, /readyz.
    #[arg(long, env = "CONFAB_ADMIN_LISTEN", value_name = "ADDR", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,

    /// Data directory: the embedded database and the generated JWT secret.
    #[arg(long, env = "CONFAB_DATA", value_name = "DIR", default_value = "./confab-data")]
    pub data: PathBuf,

    /// PEM certificate chain; with --tls-key, the public listener speaks TLS.
    #[arg(long, env = "CONFAB_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "CONFAB_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,

    /// File holding the HS256 secret (at least 32 bytes) that signs and
    /// verifies tokens. Without it (and without CONFAB_JWT_SECRET), a secret
    /// is generated once and kept in the data directory.
    #[arg(long, env = "CONFAB_JWT_SECRET_FILE", value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret_file: Option<PathBuf>,

    /// The HS256 secret itself (prefer --jwt-secret-file; flags show in `ps`).
    #[arg(long, env = "CONFAB_JWT_SECRET", value_name = "SECRET", hide_env_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,

    /// PEM public keys (RSA for RS256, EC P-256 for ES256) that also verify
    /// tokens, so an application can mint tokens for its own users.
    /// Repeat the flag, or separate with commas.
    #[arg(long = "jwt-public-key", env = "CONFAB_JWT_PUBLIC_KEYS", value_name = "FILE", value_delimiter = ',')]
    #[serde(default)]
    pub jwt_public_keys: Vec<PathBuf>,

    /// Lifetime of the tokens /v1/auth/login issues, in seconds.
    #[arg(long, env = "CONFAB_TOKEN_TTL_SECS", value_name = "SECS", default_value_t = 86_400)]
    pub token_ttl_secs: u64,

    /// Server ping interval, announced in `hello`; a session silent for 2.5
    /// times this is closed.
    #[arg(long, env = "CONFAB_HEARTBEAT_MS", value_name = "MS", default_value_t = 25_000)]
    pub heartbeat_ms: u64,

    /// Largest client frame; a larger one closes the connection with 1009.
    #[arg(long, env = "CONFAB_MAX_FRAME_BYTES", value_name = "BYTES", default_value_t = 65_536)]
    pub max_frame_bytes: usize,

    /// Largest message text; a larger one is refused with `too_large`.
    #[arg(long, env = "CONFAB_MAX_TEXT_BYTES", value_name = "BYTES", default_value_t = 4096)]
    pub max_text_bytes: usize,

    /// Requests per second each session may make on average.
    #[arg(long, env = "CONFAB_RATE_PER_SECOND", value_name = "N", default_value_t = 20)]
    pub rate_per_second: u32,

    /// Requests a session may make in a burst.
    #[arg(long, env = "CONFAB_RATE_BURST", value_name = "N", default_value_t = 40)]
    pub rate_burst: u32,

    /// Frames queued for one session before it is closed as a slow consumer.
    #[arg(long, env = "CONFAB_OUTBOUND_QUEUE", value_name = "FRAMES", default_value_t = 256)]
    pub outbound_queue: usize,

    /// Rooms with more members than this send no `presence` events.
    #[arg(long, env = "CONFAB_PRESENCE_EVENT_LIMIT", value_name = "MEMBERS", default_value_t = 500)]
    pub presence_event_limit: u64,

    /// On SIGTERM, how long sessions get to close after `bye server_restart`.
    #[arg(long, env = "CONFAB_DRAIN_GRACE_MS", value_name = "MS", default_value_t = 10_000)]
    pub drain_grace_ms: u64,

    /// Ingress partitions of the in-process bus. Fixed when the data
    /// directory is created: seqs come from partition offsets.
    #[arg(long, env = "CONFAB_PARTITIONS", value_name = "N", default_value_t = 8)]
    pub partitions: u32,

    /// This server's id, shown as `server` in `hello`.
    #[arg(long, env = "CONFAB_SERVER_ID", value_name = "ID", default_value = "confab-1")]
    pub server_id: String,

    /// Log format. The level comes from RUST_LOG (default: info).
    #[arg(long, env = "CONFAB_LOG_FORMAT", value_name = "FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

impl StandaloneConfig {
    /// Checks what types alone cannot say, naming the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid("tls_cert", "tls_cert and tls_key go together"));
        }
        if self.jwt_secret.is_some() && self.jwt_secret_file.is_some() {
            return Err(invalid("jwt_secret", "give jwt_secret or jwt_secret_file, not both"));
        }
        if self.token_ttl_secs == 0 {
            return Err(invalid("token_ttl_secs", "must be at least 1"));
        }
        if self.heartbeat_ms < 10 {
            return Err(invalid("heartbeat_ms", "must be at least 10"));
        }
        if self.max_frame_bytes < 1024 {
            return Err(invalid("max_frame_bytes", "must be at least 1024"));
        }
        if self.max_text_bytes == 0 || self.max_text_bytes >= self.max_frame_bytes {
            return Err(invalid("max_text_bytes", "must be at least 1 and below max_frame_bytes"));
        }
        if self.rate_per_second == 0 || self.rate_burst == 0 {
            return Err(invalid("rate_per_second", "rate_per_second and rate_burst must be at least 1"));
        }
        if self.outbound_queue == 0 {
            return Err(invalid("outbound_queue", "must be at least 1"));
        }
        if !(1..=1024).contains(&self.partitions) {
            return Err(invalid("partitions", "must be 1 to 1024"));
        }
        if self.server_id.is_empty() {
            return Err(invalid("server_id", "must not be empty"));
        }
        Ok(())
    }
}

/// Reads `T` from parsed flags and environment, layered over the TOML file
/// at `file`: a file key counts only where neither a flag nor a variable set
/// that field.
pub fn layered<T>(matches: &ArgMatches, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Args + FromArgMatches + Serialize + DeserializeOwned,
{
    let from_args = T::from_arg_matches(matches)?;
    let Some(path) = file else {
        return Ok(from_args);
    };
    let file_error = |reason: String| ConfigError::File { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let from_file: toml::Table = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
    let mut merged = toml::Table::try_from(&from_args).map_err(|e| file_error(e.to_string()))?;
    let ids: Vec<String> =
        T::augment_args(clap::Command::new("config")).get_arguments().map(|a| a.get_id().to_string()).collect();
    for (key, value) in from_file {
        let set_by_user = ids.contains(&key)
            && matches!(matches.value_source(&key), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
        if !set_by_user {
            merged.insert(key, value);
        }
    }
    T::deserialize(merged).map_err(|e| file_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: StandaloneConfig,
    }

    fn load(args: &[&str], file: &str) -> Result<StandaloneConfig, ConfigError> {
        let dir = tempfile_dir();
        let path = dir.join("confab.toml");
        std::fs::write(&path, file).unwrap();
        let matches = Cli::command().try_get_matches_from(args)?;
        layered::<StandaloneConfig>(&matches, Some(&path))
    }

    fn tempfile_dir() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("confab-config-test-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_file_fills_what_flags_leave_at_their_defaults() {
        let c = load(&["confab", "--heartbeat-ms", "1000"], "heartbeat_ms = 5\nrate_burst = 7\n").unwrap();
        assert_eq!(c.heartbeat_ms, 1000, "a flag beats the file");
        assert_eq!(c.rate_burst, 7, "the file beats a default");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn an_unknown_key_or_a_bad_value_in_the_file_names_it() {
        let e = load(&["confab"], "heartbeat = 5\n").unwrap_err().to_string();
        assert!(e.contains("heartbeat"), "{e}");
        let e = load(&["confab"], "listen = \"nowhere\"\n").unwrap_err().to_string();
        assert!(e.contains("listen") || e.contains("nowhere"), "{e}");
    }

    #[test]
    fn validation_names_the_field() {
        let c = load(&["confab", "--max-text-bytes", "100000"], "").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("max_text_bytes"), "{e}");
    }
}
