//! Configuration: one typed struct per mode, each field settable by a flag,
//! a `CONFAB_*` environment variable, or a key of the TOML file given with
//! `--config`. Flags beat the environment, which beats the file, which beats
//! the defaults. The doc comments below are what `confab <mode> --help`
//! prints; the README's configuration reference follows them (a test checks
//! that it lists every option with its default).
//!
//! Each default is written once, as a function in [`default`] that both clap
//! (for `--help` and unset flags) and serde (for unset file keys) call. The
//! libraries' settings (`confab_gateway::Config`, `confab_dispatcher::Config`,
//! the Kafka and CQL configs) are built from these by `gateway()`,
//! `dispatcher()`, `kafka()` and `cql()`, which set every field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// librdkafka properties `kafka_properties` may not set: they would let an
/// acked write be lost or stored twice.
const FIXED_KAFKA_PROPERTIES: &[&str] = &["acks", "request.required.acks", "enable.idempotence"];

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Whether `/v1/auth/register` creates accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// `/v1/auth/register` answers `403 forbidden`; existing accounts still log in.
    Closed,
    /// Anyone may register a name nobody holds.
    Open,
}

/// An application's public key and the claims its tokens must carry. On
/// the command line `FILE` or `FILE#iss=ISSUER;aud=AUDIENCE` (either part
/// may be left out); in the file that string, or a table `{ path, issuer,
/// audience }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtKey {
    pub path: PathBuf,
    /// The `iss` its tokens must carry.
    pub issuer: Option<String>,
    /// The `aud` its tokens must carry.
    pub audience: Option<String>,
}

impl std::str::FromStr for JwtKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (path, claims) = s.split_once('#').unwrap_or((s, ""));
        if path.is_empty() {
            return Err(format!("'{s}' names no key file"));
        }
        let mut key = JwtKey { path: path.into(), issuer: None, audience: None };
        for part in claims.split(';').filter(|p| !p.is_empty()) {
            let slot = match part.split_once('=') {
                Some(("iss", v)) => (&mut key.issuer, v),
                Some(("aud", v)) => (&mut key.audience, v),
                _ => return Err(format!("'{part}' in '{s}' is neither iss=ISSUER nor aud=AUDIENCE")),
            };
            if slot.1.is_empty() {
                return Err(format!("'{part}' in '{s}' is empty"));
            }
            *slot.0 = Some(slot.1.to_owned());
        }
        Ok(key)
    }
}

impl std::fmt::Display for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        let claims: Vec<String> = [("iss", &self.issuer), ("aud", &self.audience)]
            .into_iter()
            .filter_map(|(name, v)| v.as_ref().map(|v| format!("{name}={v}")))
            .collect();
        if !claims.is_empty() {
            write!(f, "#{}", claims.join(";"))?;
        }
        Ok(())
    }
}

impl Serialize for JwtKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for JwtKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            path: PathBuf,
            #[serde(default)]
            issuer: Option<String>,
            #[serde(default)]
            audience: Option<String>,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JwtKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"FILE\", \"FILE#iss=ISSUER;aud=AUDIENCE\" or { path, issuer, audience }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<JwtKey, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<JwtKey, M::Error> {
                let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                for (what, v) in [("issuer", &t.issuer), ("audience", &t.audience)] {
                    if v.as_deref() == Some("") {
                        return Err(serde::de::Error::custom(format!("{what} must not be empty")));
                    }
                }
                Ok(JwtKey { path: t.path, issuer: t.issuer, audience: t.audience })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Every option's default, written once: clap and serde both call these.
/// Options without one here (`Option`s and lists) default to none.
pub mod default {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::path::PathBuf;

    use super::LogFormat;

    pub fn listen() -> SocketAddr {
        (Ipv4Addr::LOCALHOST, 8080).into()
    }
    pub fn admin_listen() -> SocketAddr {
        (Ipv4Addr::LOCALHOST, 9090).into()
    }
    pub fn internal_listen() -> SocketAddr {
        (Ipv4Addr::LOCALHOST, 7070).into()
    }
    pub fn token_ttl_secs() -> u64 {
        86_400
    }
    pub fn max_token_lifetime_secs() -> u64 {
        86_400
    }
    pub fn heartbeat_ms() -> u64 {
        25_000
    }
    pub fn max_frame_bytes() -> usize {
        65_536
    }
    pub fn max_text_bytes() -> usize {
        4096
    }
    pub fn filter_timeout_ms() -> u64 {
        500
    }
    pub fn rate_per_second() -> u32 {
        20
    }
    pub fn rate_burst() -> u32 {
        40
    }
    pub fn outbound_queue() -> usize {
        256
    }
    pub fn outbound_queue_bytes() -> usize {
        4 << 20
    }
    pub fn reply_max_bytes() -> usize {
        1 << 20
    }
    pub fn sync_max_messages() -> u32 {
        5000
    }
    pub fn presence_event_limit() -> u64 {
        500
    }
    pub fn drain_grace_ms() -> u64 {
        10_000
    }
    /// A standalone server is the only one of its kind.
    pub fn standalone_server_id() -> String {
        "confab-1".into()
    }
    /// A gateway's id without `server_id`: its host name and the address
    /// dispatchers reach it at, so two gateways started without one never
    /// share an id, and the id stays the same for the process's life.
    pub fn gateway_server_id(internal: &str) -> String {
        let host = hostname::get().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "confab".into());
        format!("{host}-{internal}")
    }
    pub fn log_format() -> LogFormat {
        LogFormat::Text
    }
    pub fn data() -> PathBuf {
        "./confab-data".into()
    }
    pub fn standalone_partitions() -> u32 {
        8
    }
    pub fn api_rate_per_second() -> u32 {
        100
    }
    pub fn api_rate_burst() -> u32 {
        200
    }
    /// 1 GiB.
    pub fn webhook_journal_bytes() -> u64 {
        1 << 30
    }
    pub fn kafka() -> String {
        "127.0.0.1:9092".into()
    }
    pub fn topic_prefix() -> String {
        "confab".into()
    }
    pub fn kafka_linger_ms() -> u64 {
        1
    }
    /// Also the gateway's deadline on a write in standalone mode.
    pub fn produce_timeout_ms() -> u64 {
        5000
    }
    pub fn cql() -> String {
        "127.0.0.1:9042".into()
    }
    pub fn keyspace() -> String {
        "confab".into()
    }
    pub fn cql_request_timeout_ms() -> u64 {
        10_000
    }
    /// Also the standalone dispatcher's.
    pub fn max_batch() -> usize {
        512
    }
    pub fn migrate_partitions() -> u32 {
        16
    }
    pub fn kafka_replication() -> i32 {
        1
    }
    /// `kafka_min_insync_replicas` when unset: one replica may be lost
    /// without refusing writes (2 of 3), never fewer than 1.
    pub fn kafka_min_insync_replicas(replication: i32) -> i32 {
        (replication - 1).max(1)
    }
    pub fn auth_per_ip_per_minute() -> u32 {
        60
    }
    pub fn auth_per_user_per_minute() -> u32 {
        10
    }
    pub fn hash_queue() -> usize {
        64
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn max_connections_per_ip() -> usize {
        256
    }
    pub fn header_read_timeout_ms() -> u64 {
        10_000
    }
    /// Several devices per user (phone, laptop, browser tabs) never come near it.
    pub fn max_sessions_per_user() -> usize {
        16
    }
    /// Within `sync`'s 1000 rooms: a user can always sync every room in one request.
    pub fn max_rooms_per_user() -> usize {
        1000
    }
    /// A day; tests set less.
    pub fn retention_day_secs() -> u64 {
        86_400
    }
    /// 25 MiB.
    pub fn max_upload_bytes() -> u64 {
        25 * 1024 * 1024
    }
    /// Above the web client's 3 at a time.
    pub fn max_concurrent_uploads() -> usize {
        4
    }
    /// Every type sniffing tells apart but `application/octet-stream`.
    pub fn upload_types() -> Vec<String> {
        confab_gateway::uploads::TYPES
            .iter()
            .filter(|t| **t != "application/octet-stream")
            .map(|t| t.to_string())
            .collect()
    }
    /// A day.
    pub fn upload_ttl_secs() -> u64 {
        86_400
    }
    /// An hour.
    pub fn signed_url_secs() -> u64 {
        3_600
    }
    /// A minute; tests set less.
    pub fn upload_sweep_ms() -> u64 {
        60_000
    }
    /// Below the SDK's 3 s between `typing` ops and its 6 s indicator.
    pub fn typing_interval_ms() -> u64 {
        2000
    }
    /// A large address book; each one costs a row per side and a line of
    /// the `contacts` reply.
    pub fn max_contacts() -> usize {
        1000
    }
    pub fn max_blocks() -> usize {
        1000
    }
    pub fn s3_region() -> String {
        "us-east-1".into()
    }
    pub fn s3_path_style() -> bool {
        true
    }
    pub fn ws_compression() -> bool {
        true
    }
    pub fn ws_compression_threshold() -> usize {
        512
    }
    pub fn cql_replication() -> String {
        "SimpleStrategy:1".into()
    }
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The cluster's HS256 secret: it signs and verifies client tokens, and the
/// dispatchers' connections to the gateways' internal port.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct SecretConfig {
    /// File holding the HS256 secret (at least 32 bytes). Standalone without
    /// it (and without CONFAB_JWT_SECRET) generates one into the data
    /// directory; gateways and dispatchers require one, the same on every
    /// process of the cluster.
    #[arg(long, env = "CONFAB_JWT_SECRET_FILE", value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret_file: Option<PathBuf>,

    /// The HS256 secret itself (prefer --jwt-secret-file; flags show in `ps`).
    #[arg(long, env = "CONFAB_JWT_SECRET", value_name = "SECRET", hide_env_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,
}

impl SecretConfig {
    fn validate(&self, required: bool) -> Result<(), ConfigError> {
        match (&self.jwt_secret, &self.jwt_secret_file) {
            (Some(_), Some(_)) => Err(invalid("jwt_secret", "give jwt_secret or jwt_secret_file, not both")),
            (None, None) if required => Err(invalid("jwt_secret_file", "the cluster's shared secret is required")),
            _ => Ok(()),
        }
    }
}

/// What every process that serves clients shares: listeners, tokens, the
/// protocol's limits and shutdown.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ServerConfig {
    /// Public listener: the HTTP API, WebSocket (/v1/ws) and the web client (/).
    #[arg(long, env = "CONFAB_LISTEN", value_name = "ADDR", default_value_t = default::listen())]
    #[serde(default = "default::listen")]
    pub listen: SocketAddr,

    /// PEM certificate chain; with --tls-key, the public listener speaks TLS.
    #[arg(long, env = "CONFAB_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "CONFAB_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,

    /// Raw TCP listener for clients: the v1 session as newline-delimited
    /// JSON, the first line `{"op":"auth","token":"..."}` (docs/protocol.md,
    /// Transports). Default: none (off).
    #[arg(long, env = "CONFAB_TCP_LISTEN", value_name = "ADDR")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_listen: Option<SocketAddr>,

    /// PEM certificate chain; with --tcp-tls-key, the TCP listener speaks TLS.
    #[arg(long, env = "CONFAB_TCP_TLS_CERT", value_name = "FILE", requires = "tcp_tls_key")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_tls_cert: Option<PathBuf>,

    /// PEM private key of --tcp-tls-cert.
    #[arg(long, env = "CONFAB_TCP_TLS_KEY", value_name = "FILE", requires = "tcp_tls_cert")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_tls_key: Option<PathBuf>,

    #[command(flatten)]
    #[serde(flatten)]
    pub secret: SecretConfig,

    #[command(flatten)]
    #[serde(flatten)]
    pub uploads: UploadsConfig,

    /// PEM public keys (RSA for RS256, EC P-256 for ES256) that also verify
    /// tokens, so an application can mint tokens for its own users:
    /// `FILE#iss=ISSUER;aud=AUDIENCE` requires that `iss` and `aud` of the
    /// key's tokens (a bare `FILE` requires neither, and is warned about).
    /// Repeat the flag, or separate with commas.
    #[arg(
        long = "jwt-public-key",
        env = "CONFAB_JWT_PUBLIC_KEYS",
        value_name = "FILE[#iss=ISSUER;aud=AUDIENCE]",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub jwt_public_keys: Vec<JwtKey>,

    /// Longest lifetime of an application's token (`exp` minus `iat`, or
    /// minus now without `iat`), in seconds; a longer one is refused.
    #[arg(long, env = "CONFAB_MAX_TOKEN_LIFETIME_SECS", value_name = "SECS", default_value_t = default::max_token_lifetime_secs())]
    #[serde(default = "default::max_token_lifetime_secs")]
    pub max_token_lifetime_secs: u64,

    /// File of server API keys, one `name:key` a line (docs/server-api.md):
    /// with it, the application calls /v1/server/* with `Authorization:
    /// Bearer <key>`. Default: none, and every /v1/server/* route is 404.
    #[arg(long, env = "CONFAB_API_KEY_FILE", value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,

    /// Server API calls one key may make per second, on average, on each
    /// gateway; over it a call is `429` `rate_limited` with `Retry-After`.
    #[arg(long, env = "CONFAB_API_RATE_PER_SECOND", value_name = "N", default_value_t = default::api_rate_per_second())]
    #[serde(default = "default::api_rate_per_second")]
    pub api_rate_per_second: u32,

    /// Server API calls one key may make at once before `api_rate_per_second` applies.
    #[arg(long, env = "CONFAB_API_RATE_BURST", value_name = "N", default_value_t = default::api_rate_burst())]
    #[serde(default = "default::api_rate_burst")]
    pub api_rate_burst: u32,

    /// Whether /v1/auth/register creates accounts: `open` or `closed`.
    /// Default: `open` without jwt_public_keys, `closed` with them, so
    /// nobody registers a name an application's user will need.
    #[arg(long, env = "CONFAB_REGISTRATION", value_name = "MODE", value_enum)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<Registration>,

    /// Lifetime of the tokens /v1/auth/login issues, in seconds.
    #[arg(long, env = "CONFAB_TOKEN_TTL_SECS", value_name = "SECS", default_value_t = default::token_ttl_secs())]
    #[serde(default = "default::token_ttl_secs")]
    pub token_ttl_secs: u64,

    /// Server ping interval, announced in `hello`; a session silent for 2.5
    /// times this is closed.
    #[arg(long, env = "CONFAB_HEARTBEAT_MS", value_name = "MS", default_value_t = default::heartbeat_ms())]
    #[serde(default = "default::heartbeat_ms")]
    pub heartbeat_ms: u64,

    /// Largest client frame; a larger one closes the connection with 1009.
    #[arg(long, env = "CONFAB_MAX_FRAME_BYTES", value_name = "BYTES", default_value_t = default::max_frame_bytes())]
    #[serde(default = "default::max_frame_bytes")]
    pub max_frame_bytes: usize,

    /// permessage-deflate (RFC 7692) on WebSocket sessions whose client
    /// offers it (browsers do); false: every session is uncompressed.
    #[arg(long, env = "CONFAB_WS_COMPRESSION", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = default::ws_compression())]
    #[serde(default = "default::ws_compression")]
    pub ws_compression: bool,

    /// On a compressed WebSocket session, frames under this many bytes are
    /// sent uncompressed (deflate saves little on them and costs CPU).
    #[arg(long, env = "CONFAB_WS_COMPRESSION_THRESHOLD", value_name = "BYTES", default_value_t = default::ws_compression_threshold())]
    #[serde(default = "default::ws_compression_threshold")]
    pub ws_compression_threshold: usize,

    /// Largest message text; a larger one is refused with `too_large`.
    #[arg(long, env = "CONFAB_MAX_TEXT_BYTES", value_name = "BYTES", default_value_t = default::max_text_bytes())]
    #[serde(default = "default::max_text_bytes")]
    pub max_text_bytes: usize,

    /// Requests per second each session may make on average.
    #[arg(long, env = "CONFAB_RATE_PER_SECOND", value_name = "N", default_value_t = default::rate_per_second())]
    #[serde(default = "default::rate_per_second")]
    pub rate_per_second: u32,

    /// Requests a session may make in a burst.
    #[arg(long, env = "CONFAB_RATE_BURST", value_name = "N", default_value_t = default::rate_burst())]
    #[serde(default = "default::rate_burst")]
    pub rate_burst: u32,

    /// Frames queued for one session before it is closed as a slow consumer.
    #[arg(long, env = "CONFAB_OUTBOUND_QUEUE", value_name = "FRAMES", default_value_t = default::outbound_queue())]
    #[serde(default = "default::outbound_queue")]
    pub outbound_queue: usize,

    /// Rooms with more members than this send no `presence` events.
    #[arg(long, env = "CONFAB_PRESENCE_EVENT_LIMIT", value_name = "MEMBERS", default_value_t = default::presence_event_limit())]
    #[serde(default = "default::presence_event_limit")]
    pub presence_event_limit: u64,

    /// On SIGTERM, how long sessions get to close after `bye server_restart`.
    #[arg(long, env = "CONFAB_DRAIN_GRACE_MS", value_name = "MS", default_value_t = default::drain_grace_ms())]
    #[serde(default = "default::drain_grace_ms")]
    pub drain_grace_ms: u64,

    /// This server's id, shown as `server` in `hello`; unique per gateway
    /// (a gateway refuses to start with the id of a live one). Default:
    /// `confab-1` for standalone; for a gateway, `<host name>-<internal
    /// address>`.
    #[arg(long, env = "CONFAB_SERVER_ID", value_name = "ID")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,

    #[command(flatten)]
    #[serde(flatten)]
    pub auth_limits: AuthLimitsConfig,

    #[command(flatten)]
    #[serde(flatten)]
    pub connection_limits: ConnectionLimitsConfig,

    #[command(flatten)]
    #[serde(flatten)]
    pub user_limits: UserLimitsConfig,

    #[command(flatten)]
    #[serde(flatten)]
    pub reply_limits: ReplyLimitsConfig,

    #[command(flatten)]
    #[serde(flatten)]
    pub retention: RetentionConfig,

    #[command(flatten)]
    #[serde(flatten)]
    pub object_store: ObjectStoreConfig,
}

/// Where attachment bytes live when not in the data directory: a bucket of
/// S3-compatible object storage (AWS S3, MinIO, SeaweedFS, Ceph RGW...).
/// With `s3_endpoint` unset, uploads are kept under the data directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct ObjectStoreConfig {
    /// Base URL of the S3 API (`https://s3.eu-west-1.amazonaws.com`,
    /// `http://minio:9000`): attachments go to the bucket --s3-bucket there.
    /// Credentials: --s3-credentials-file, or AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY. Default: none (attachments on local disk).
    #[arg(long, env = "CONFAB_S3_ENDPOINT", value_name = "URL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,

    /// The bucket attachments go to (it must exist); required with --s3-endpoint.
    #[arg(long, env = "CONFAB_S3_BUCKET", value_name = "BUCKET")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_bucket: Option<String>,

    /// The region requests are signed for.
    #[arg(long, env = "CONFAB_S3_REGION", value_name = "REGION", default_value_t = default::s3_region())]
    #[serde(default = "default::s3_region")]
    pub s3_region: String,

    /// Path-style URLs (ENDPOINT/BUCKET/KEY, what MinIO and SeaweedFS
    /// expect); false: virtual-hosted (BUCKET.ENDPOINT/KEY).
    #[arg(long, env = "CONFAB_S3_PATH_STYLE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = default::s3_path_style())]
    #[serde(default = "default::s3_path_style")]
    pub s3_path_style: bool,

    /// File with the S3 credentials, in the AWS shared credentials format
    /// (`aws_access_key_id = ...` and `aws_secret_access_key = ...` lines, a
    /// `[default]` header allowed). Without it, AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY are read from the environment.
    #[arg(long, env = "CONFAB_S3_CREDENTIALS_FILE", value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_credentials_file: Option<PathBuf>,
}

impl ObjectStoreConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.s3_options_with(|name| std::env::var(name).ok()).map(|_| ())
    }

    /// The bucket's settings when `s3_endpoint` is set (credentials read
    /// from `s3_credentials_file` or the environment); `None` without it.
    pub fn s3_options(&self) -> Result<Option<confab_blobs::S3Options>, ConfigError> {
        self.s3_options_with(|name| std::env::var(name).ok())
    }

    /// [`Self::s3_options`] with the environment given.
    pub fn s3_options_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<confab_blobs::S3Options>, ConfigError> {
        let Some(endpoint) = &self.s3_endpoint else {
            for (field, set) in
                [("s3_bucket", self.s3_bucket.is_some()), ("s3_credentials_file", self.s3_credentials_file.is_some())]
            {
                if set {
                    return Err(invalid(field, "needs s3_endpoint"));
                }
            }
            return Ok(None);
        };
        let url = endpoint.trim_end_matches('/');
        let host = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        match host {
            Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ', '@']) => {}
            _ => {
                return Err(invalid(
                    "s3_endpoint",
                    format!("`{endpoint}` is not an http:// or https:// URL of a host (and port), without a path"),
                ));
            }
        }
        let bucket = self.s3_bucket.as_deref().ok_or_else(|| invalid("s3_bucket", "required with s3_endpoint"))?;
        // S3's bucket naming rules: 3 to 63 of a-z 0-9 . -, starting and
        // ending with a letter or digit.
        if !(3..=63).contains(&bucket.len())
            || !bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            || !bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            return Err(invalid(
                "s3_bucket",
                format!("`{bucket}` is not a bucket name (3 to 63 of a-z, 0-9, '.', '-')"),
            ));
        }
        if self.s3_region.is_empty() || !self.s3_region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(invalid("s3_region", format!("`{}` is not a region name", self.s3_region)));
        }
        let (access_key_id, secret_access_key) = match &self.s3_credentials_file {
            Some(path) => read_s3_credentials(path)?,
            None => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => (id, secret),
                _ => {
                    return Err(invalid(
                        "s3_credentials_file",
                        "s3_endpoint needs credentials: set s3_credentials_file, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                    ));
                }
            },
        };
        Ok(Some(confab_blobs::S3Options {
            endpoint: url.to_owned(),
            bucket: bucket.to_owned(),
            region: self.s3_region.clone(),
            access_key_id,
            secret_access_key,
            path_style: self.s3_path_style,
        }))
    }
}

/// Reads `aws_access_key_id` and `aws_secret_access_key` from an AWS shared
/// credentials file: its `[default]` profile, or the keys outside any
/// profile; other keys and profiles are ignored.
fn read_s3_credentials(path: &Path) -> Result<(String, String), ConfigError> {
    let field = "s3_credentials_file";
    let text = std::fs::read_to_string(path).map_err(|e| invalid(field, format!("{}: {e}", path.display())))?;
    let (mut id, mut secret) = (None, None);
    let mut in_default = true;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(profile) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_default = profile.trim() == "default";
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(invalid(field, format!("{}: `{line}` is not key = value", path.display())));
        };
        let value = value.trim().to_owned();
        match key.trim() {
            "aws_access_key_id" if in_default => id = Some(value),
            "aws_secret_access_key" if in_default => secret = Some(value),
            _ => {}
        }
    }
    match (id, secret) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Ok((id, secret)),
        _ => Err(invalid(
            field,
            format!("{}: needs aws_access_key_id and aws_secret_access_key (in [default])", path.display()),
        )),
    }
}

/// How long rooms keep their messages: a room's admins set its own
/// `retention_days` (`update_room`); rooms without one keep them this
/// long. Gateways and dispatchers of one cluster need the same values.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct RetentionConfig {
    /// Days a room without its own `retention_days` keeps its messages, 1
    /// to 36500; unset: forever. Older messages leave `history` and `sync`
    /// and the store (a TTL in the CQL store, a sweeper in the embedded one).
    #[arg(long, env = "CONFAB_RETENTION_DAYS", value_name = "DAYS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,

    /// For tests only: the seconds one retention "day" lasts (86400), so a
    /// test of retention need not wait days.
    #[arg(long, env = "CONFAB_RETENTION_DAY_SECS", value_name = "SECS", default_value_t = default::retention_day_secs(), hide = true)]
    #[serde(default = "default::retention_day_secs")]
    pub retention_day_secs: u64,
}

impl RetentionConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let most = confab_protocol::unread::MAX_RETENTION_DAYS;
        if self.retention_days.is_some_and(|d| !(1..=most).contains(&d)) {
            return Err(invalid(
                "retention_days",
                format!("must be 1 to {most}; leave it unset to keep messages forever"),
            ));
        }
        if self.retention_day_secs == 0 {
            return Err(invalid("retention_day_secs", "must be at least 1"));
        }
        Ok(())
    }

    pub fn retention(&self) -> confab_protocol::Retention {
        confab_protocol::Retention { default_days: self.retention_days, day_secs: self.retention_day_secs }
    }
}

/// Attachments (docs/protocol.md, `POST /v1/uploads`): where their bytes
/// go and what is taken.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct UploadsConfig {
    /// Directory the uploads' bytes are kept in. Standalone default:
    /// `<data>/uploads`. A gateway has no default: without it, uploads are
    /// off (the upload routes answer 503); every gateway of a cluster
    /// needs the same storage (a shared directory, for now).
    #[arg(long, env = "CONFAB_UPLOADS_DIR", value_name = "DIR")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploads_dir: Option<PathBuf>,

    /// Largest upload, in bytes; a larger one is refused with 413.
    #[arg(long, env = "CONFAB_MAX_UPLOAD_BYTES", value_name = "BYTES", default_value_t = default::max_upload_bytes())]
    #[serde(default = "default::max_upload_bytes")]
    pub max_upload_bytes: u64,

    /// Uploads one user may have in flight at once on this gateway (not
    /// across a cluster); one more is refused with 429 and Retry-After.
    #[arg(long, env = "CONFAB_MAX_CONCURRENT_UPLOADS", value_name = "N", default_value_t = default::max_concurrent_uploads())]
    #[serde(default = "default::max_concurrent_uploads")]
    pub max_concurrent_uploads: usize,

    /// Types an upload may have, as sniffed from its bytes: any of
    /// image/png, image/jpeg, image/gif, image/webp, application/pdf,
    /// application/zip, text/plain, application/octet-stream (anything
    /// else). Default: all but application/octet-stream. Others get 415.
    #[arg(long, env = "CONFAB_UPLOAD_TYPES", value_name = "TYPE,...", value_delimiter = ',', default_values_t = default::upload_types())]
    #[serde(default = "default::upload_types")]
    pub upload_types: Vec<String>,

    /// Seconds an upload never attached to a message is kept.
    #[arg(long, env = "CONFAB_UPLOAD_TTL_SECS", value_name = "SECS", default_value_t = default::upload_ttl_secs())]
    #[serde(default = "default::upload_ttl_secs")]
    pub upload_ttl_secs: u64,

    /// Seconds a signed upload URL (`POST /v1/uploads/{id}/sign`) is valid.
    #[arg(long, env = "CONFAB_SIGNED_URL_SECS", value_name = "SECS", default_value_t = default::signed_url_secs())]
    #[serde(default = "default::signed_url_secs")]
    pub signed_url_secs: u64,

    /// For tests only: how often the sweeper looks for uploads to delete.
    #[arg(long, env = "CONFAB_UPLOAD_SWEEP_MS", value_name = "MS", default_value_t = default::upload_sweep_ms(), hide = true)]
    #[serde(default = "default::upload_sweep_ms")]
    pub upload_sweep_ms: u64,
}

impl UploadsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_upload_bytes == 0 {
            return Err(invalid("max_upload_bytes", "must be at least 1"));
        }
        if self.max_concurrent_uploads == 0 {
            return Err(invalid("max_concurrent_uploads", "must be at least 1"));
        }
        if let Some(t) = self.upload_types.iter().find(|t| !confab_gateway::uploads::TYPES.contains(&t.as_str())) {
            let known = confab_gateway::uploads::TYPES.join(", ");
            return Err(invalid("upload_types", format!("'{t}' is not one of {known}")));
        }
        if self.upload_ttl_secs == 0 {
            return Err(invalid("upload_ttl_secs", "must be at least 1"));
        }
        if self.signed_url_secs == 0 {
            return Err(invalid("signed_url_secs", "must be at least 1"));
        }
        if self.upload_sweep_ms == 0 {
            return Err(invalid("upload_sweep_ms", "must be at least 1"));
        }
        Ok(())
    }

    /// The gateway's upload settings; `secret` is the token secret the URL
    /// signing key is derived from.
    pub fn settings(&self, secret: &[u8]) -> confab_gateway::uploads::Settings {
        confab_gateway::uploads::Settings {
            max_upload_bytes: self.max_upload_bytes,
            max_concurrent: self.max_concurrent_uploads,
            types: self.upload_types.clone(),
            ttl: Duration::from_secs(self.upload_ttl_secs),
            signed_url_ttl: Duration::from_secs(self.signed_url_secs),
            sweep_interval: ms(self.upload_sweep_ms),
            url_key: confab_gateway::uploads::url_key(secret),
        }
    }
}

/// What one user may hold on a gateway and how often their `typing` goes
/// out. (Rooms per user are the dispatcher's: `max_rooms_per_user`.)
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct UserLimitsConfig {
    /// WebSocket sessions one user may hold on this gateway; another is
    /// refused at the upgrade with `429 rate_limited`. Per gateway: with
    /// several, a user may hold this many on each.
    #[arg(long, env = "CONFAB_MAX_SESSIONS_PER_USER", value_name = "N", default_value_t = default::max_sessions_per_user())]
    #[serde(default = "default::max_sessions_per_user")]
    pub max_sessions_per_user: usize,

    /// At most one `typing` per user and room goes out per this many
    /// milliseconds (per gateway); the others are answered and dropped.
    /// 0 sends them all.
    #[arg(long, env = "CONFAB_TYPING_INTERVAL_MS", value_name = "MS", default_value_t = default::typing_interval_ms())]
    #[serde(default = "default::typing_interval_ms")]
    pub typing_interval_ms: u64,

    /// Contact relations (asked, asking or mutual) one user may have; a
    /// `contact_add` that would pass it, on either side, is `forbidden`.
    #[arg(long, env = "CONFAB_MAX_CONTACTS", value_name = "N", default_value_t = default::max_contacts())]
    #[serde(default = "default::max_contacts")]
    pub max_contacts: usize,

    /// Users one user may block; a `block` past it is `forbidden`.
    #[arg(long, env = "CONFAB_MAX_BLOCKS", value_name = "N", default_value_t = default::max_blocks())]
    #[serde(default = "default::max_blocks")]
    pub max_blocks: usize,
}

impl UserLimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_sessions_per_user == 0 {
            return Err(invalid("max_sessions_per_user", "must be at least 1"));
        }
        Ok(())
    }
}

/// The rooms one user may be a member of: `join`, and the first message of
/// a DM, beyond it are `forbidden`. At most `sync`'s 1000 rooms, so that a
/// user can always sync every room at once.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct RoomLimitsConfig {
    /// Rooms (DMs included) one user may be a member of, 1 to 1000.
    #[arg(long, env = "CONFAB_MAX_ROOMS_PER_USER", value_name = "N", default_value_t = default::max_rooms_per_user())]
    #[serde(default = "default::max_rooms_per_user")]
    pub max_rooms_per_user: usize,
}

impl RoomLimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let most = confab_dispatcher::MAX_ROOMS_PER_USER;
        if !(1..=most).contains(&self.max_rooms_per_user) {
            return Err(invalid("max_rooms_per_user", format!("must be 1 to {most} (the rooms one sync may name)")));
        }
        Ok(())
    }
}

/// What the message filter's being down does to a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FilterWhenDown {
    /// The message is stored as sent.
    #[default]
    Allow,
    /// The sender gets `unavailable` and may resend with the same cid.
    Refuse,
}

/// Webhooks and the message filter: the application told of what is stored,
/// and asked before a message is (docs/webhooks.md).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct HooksConfig {
    /// POST every stored message, membership change, edit, deletion and
    /// reaction to this http:// or https:// URL, signed with --webhook-secret-file;
    /// `URL#message,member` sends only those events (message, member,
    /// edit, delete, reaction). Repeat the flag for more webhooks.
    #[arg(long = "webhook", env = "CONFAB_WEBHOOKS", value_name = "URL[#EVENTS]", value_delimiter = ' ')]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhook: Vec<String>,

    /// File holding the secret that signs webhook (and filter) calls
    /// (`Confab-Signature`); required with --webhook.
    #[arg(long, env = "CONFAB_WEBHOOK_SECRET_FILE", value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_file: Option<PathBuf>,

    /// PEM file of more root certificates trusted for https:// webhooks
    /// and the filter (a private CA), besides the system's.
    #[arg(long, env = "CONFAB_WEBHOOK_CA_FILE", value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_ca_file: Option<PathBuf>,

    /// http:// or https:// URL asked about each message before it is stored: it
    /// accepts, rejects (the sender gets `forbidden` with its reason) or
    /// rewrites the text.
    #[arg(long, env = "CONFAB_FILTER_URL", value_name = "URL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_url: Option<String>,

    /// Deadline of one filter call, in milliseconds; past it the filter is down.
    #[arg(long, env = "CONFAB_FILTER_TIMEOUT_MS", value_name = "MS", default_value_t = default::filter_timeout_ms())]
    #[serde(default = "default::filter_timeout_ms")]
    pub filter_timeout_ms: u64,

    /// What happens to a message while the filter is down (an error, a
    /// timeout, an answer it cannot read): `allow` stores it, `refuse`
    /// answers `unavailable`.
    #[arg(long, env = "CONFAB_FILTER_WHEN_DOWN", value_name = "MODE", value_enum, default_value_t = FilterWhenDown::Allow)]
    #[serde(default = "default_when_down")]
    pub filter_when_down: FilterWhenDown,
}

fn default_when_down() -> FilterWhenDown {
    FilterWhenDown::Allow
}

impl HooksConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for hook in &self.webhook {
            confab_dispatcher::webhooks::Hook::parse(hook).map_err(|e| invalid("webhook", e))?;
        }
        if !self.webhook.is_empty() && self.webhook_secret_file.is_none() {
            return Err(invalid("webhook_secret_file", "webhooks are signed: give the secret's file"));
        }
        if let Some(url) = &self.filter_url
            && !url.starts_with("http://")
            && !url.starts_with("https://")
        {
            return Err(invalid("filter_url", format!("'{url}' is not an http:// or https:// URL")));
        }
        if self.webhook_ca_file.is_some() {
            let pem = self.ca()?;
            confab_dispatcher::http_client(ms(1000), pem.as_deref()).map_err(|e| invalid("webhook_ca_file", e))?;
        }
        if !(1..=60_000).contains(&self.filter_timeout_ms) {
            return Err(invalid("filter_timeout_ms", "must be 1 to 60000"));
        }
        Ok(())
    }

    /// The webhook signing secret, read from its file.
    pub fn secret(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(path) = &self.webhook_secret_file else { return Ok(None) };
        let secret =
            std::fs::read(path).map_err(|e| invalid("webhook_secret_file", format!("{}: {e}", path.display())))?;
        let secret = secret.trim_ascii().to_vec();
        if secret.is_empty() {
            return Err(invalid("webhook_secret_file", format!("{} is empty", path.display())));
        }
        Ok(Some(secret))
    }

    /// The certificates of `webhook_ca_file`, read.
    pub fn ca(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(path) = &self.webhook_ca_file else { return Ok(None) };
        std::fs::read(path).map(Some).map_err(|e| invalid("webhook_ca_file", format!("{}: {e}", path.display())))
    }

    /// The webhooks, when any.
    pub fn webhooks(&self) -> Result<Option<confab_dispatcher::webhooks::WebhookConfig>, ConfigError> {
        if self.webhook.is_empty() {
            return Ok(None);
        }
        let hooks = self
            .webhook
            .iter()
            .map(|h| confab_dispatcher::webhooks::Hook::parse(h).map_err(|e| invalid("webhook", e)))
            .collect::<Result<_, _>>()?;
        let secret = self.secret()?.expect("validated: webhooks have a secret");
        Ok(Some(confab_dispatcher::webhooks::WebhookConfig { hooks, secret, ca_pem: self.ca()? }))
    }

    /// The message filter's settings, when one is configured.
    pub fn filter(
        &self,
        max_text_bytes: usize,
    ) -> Result<Option<confab_dispatcher::filter::FilterConfig>, ConfigError> {
        let Some(url) = &self.filter_url else { return Ok(None) };
        Ok(Some(confab_dispatcher::filter::FilterConfig {
            url: url.clone(),
            timeout: ms(self.filter_timeout_ms),
            when_down: match self.filter_when_down {
                FilterWhenDown::Allow => confab_dispatcher::filter::WhenDown::Allow,
                FilterWhenDown::Refuse => confab_dispatcher::filter::WhenDown::Refuse,
            },
            max_text_bytes,
            ca_pem: self.ca()?,
            secret: self.secret()?,
        }))
    }
}

/// What one session's replies and queue hold at most, in bytes, so that a
/// client that asks much and reads nothing costs the server little.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ReplyLimitsConfig {
    /// Bytes queued for one session and not yet written to its socket
    /// (replies and events) before it is closed as a slow consumer. At
    /// least twice `reply_max_bytes`.
    #[arg(long, env = "CONFAB_OUTBOUND_QUEUE_BYTES", value_name = "BYTES", default_value_t = default::outbound_queue_bytes())]
    #[serde(default = "default::outbound_queue_bytes")]
    pub outbound_queue_bytes: usize,

    /// Encoded bytes of messages in one `history` or `sync` reply; the reply
    /// stops before the message that would pass it (`more: true`), though
    /// it always holds one message when there is one.
    #[arg(long, env = "CONFAB_REPLY_MAX_BYTES", value_name = "BYTES", default_value_t = default::reply_max_bytes())]
    #[serde(default = "default::reply_max_bytes")]
    pub reply_max_bytes: usize,

    /// Messages in one `sync` reply, across all its rooms.
    #[arg(long, env = "CONFAB_SYNC_MAX_MESSAGES", value_name = "N", default_value_t = default::sync_max_messages())]
    #[serde(default = "default::sync_max_messages")]
    pub sync_max_messages: u32,
}

impl ReplyLimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.reply_max_bytes < 1024 {
            return Err(invalid("reply_max_bytes", "must be at least 1024"));
        }
        if self.outbound_queue_bytes < self.reply_max_bytes.saturating_mul(2) {
            return Err(invalid("outbound_queue_bytes", "must be at least twice reply_max_bytes"));
        }
        if self.sync_max_messages == 0 {
            return Err(invalid("sync_max_messages", "must be at least 1"));
        }
        Ok(())
    }
}

/// What the public listener holds at most. Over a cap, a new connection is
/// closed at once; a client that is slow to send its request headers (or
/// finish its TLS handshake) is cut off.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ConnectionLimitsConfig {
    /// Open client connections (HTTP and WebSocket) in all. Keep it below
    /// the file descriptor limit (raised to the hard limit at start).
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS", value_name = "N", default_value_t = default::max_connections())]
    #[serde(default = "default::max_connections")]
    pub max_connections: usize,

    /// Open client connections from one IP address. Behind a proxy or a
    /// large NAT every client shares one address: raise it there.
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS_PER_IP", value_name = "N", default_value_t = default::max_connections_per_ip())]
    #[serde(default = "default::max_connections_per_ip")]
    pub max_connections_per_ip: usize,

    /// Time a client gets to send a request's headers (and to finish the TLS
    /// handshake), in milliseconds.
    #[arg(long, env = "CONFAB_HEADER_READ_TIMEOUT_MS", value_name = "MS", default_value_t = default::header_read_timeout_ms())]
    #[serde(default = "default::header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
}

impl ConnectionLimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err(invalid("max_connections", "max_connections and max_connections_per_ip must be at least 1"));
        }
        if self.header_read_timeout_ms == 0 {
            return Err(invalid("header_read_timeout_ms", "must be at least 1"));
        }
        Ok(())
    }

    pub fn limits(&self) -> confab_gateway::serve::ConnectionLimits {
        confab_gateway::serve::ConnectionLimits {
            max_connections: self.max_connections,
            max_per_ip: self.max_connections_per_ip,
            header_read_timeout: ms(self.header_read_timeout_ms),
        }
    }
}

/// What `/v1/auth/register` and `/v1/auth/login` may cost the server: each
/// attempt is an argon2id hash, deliberately slow. Over a limit the answer is
/// `429 rate_limited` (or `503 unavailable` for a full queue) with `Retry-After`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct AuthLimitsConfig {
    /// Register and login attempts per minute from one client IP address
    /// (also the burst). Behind a proxy every client shares its address.
    #[arg(long, env = "CONFAB_AUTH_PER_IP_PER_MINUTE", value_name = "N", default_value_t = default::auth_per_ip_per_minute())]
    #[serde(default = "default::auth_per_ip_per_minute")]
    pub auth_per_ip_per_minute: u32,

    /// Register and login attempts per minute for one user name (also the burst).
    #[arg(long, env = "CONFAB_AUTH_PER_USER_PER_MINUTE", value_name = "N", default_value_t = default::auth_per_user_per_minute())]
    #[serde(default = "default::auth_per_user_per_minute")]
    pub auth_per_user_per_minute: u32,

    /// Password hashes that may wait for a hashing thread (one per core);
    /// more are refused with `unavailable`.
    #[arg(long, env = "CONFAB_HASH_QUEUE", value_name = "JOBS", default_value_t = default::hash_queue())]
    #[serde(default = "default::hash_queue")]
    pub hash_queue: usize,
}

impl AuthLimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.auth_per_ip_per_minute == 0 || self.auth_per_user_per_minute == 0 {
            return Err(invalid(
                "auth_per_ip_per_minute",
                "auth_per_ip_per_minute and auth_per_user_per_minute must be at least 1",
            ));
        }
        if self.hash_queue == 0 {
            return Err(invalid("hash_queue", "must be at least 1"));
        }
        Ok(())
    }
}

/// Every process's admin port and logs.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct OpsConfig {
    /// Admin listener: /metrics, /healthz, /readyz.
    #[arg(long, env = "CONFAB_ADMIN_LISTEN", value_name = "ADDR", default_value_t = default::admin_listen())]
    #[serde(default = "default::admin_listen")]
    pub admin_listen: SocketAddr,

    /// Log format. The level comes from RUST_LOG (default: info).
    #[arg(long, env = "CONFAB_LOG_FORMAT", value_name = "FORMAT", value_enum, default_value_t = default::log_format())]
    #[serde(default = "default::log_format")]
    pub log_format: LogFormat,
}

/// `confab standalone`: gateway and dispatcher in one process, an embedded
/// store on local disk and an in-process bus.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct StandaloneConfig {
    #[command(flatten)]
    #[serde(flatten)]
    pub server: ServerConfig,

    #[command(flatten)]
    #[serde(flatten)]
    pub ops: OpsConfig,

    /// Data directory: the embedded database and the generated JWT secret.
    #[arg(long, env = "CONFAB_DATA", value_name = "DIR", default_value_os_t = default::data())]
    #[serde(default = "default::data")]
    pub data: PathBuf,

    /// Ingress partitions of the in-process bus. Fixed when the data
    /// directory is created: seqs come from partition offsets.
    #[arg(long, env = "CONFAB_PARTITIONS", value_name = "N", default_value_t = default::standalone_partitions())]
    #[serde(default = "default::standalone_partitions")]
    pub partitions: u32,

    #[command(flatten)]
    #[serde(flatten)]
    pub room_limits: RoomLimitsConfig,

    #[command(flatten)]
    #[serde(flatten)]
    pub hooks: HooksConfig,

    /// Bytes of records the webhook journal (`<data>/webhooks.redb`) keeps
    /// for webhooks whose receiver is behind; past it the oldest are
    /// dropped undelivered (confab_webhook_journal_dropped_total).
    #[arg(long, env = "CONFAB_WEBHOOK_JOURNAL_BYTES", value_name = "BYTES", default_value_t = default::webhook_journal_bytes())]
    #[serde(default = "default::webhook_journal_bytes")]
    pub webhook_journal_bytes: u64,
}

/// Where the distributed mode's Kafka and CQL database are.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct BackendConfig {
    /// Kafka bootstrap servers, `host:port,host:port`.
    #[arg(long, env = "CONFAB_KAFKA", value_name = "HOSTS", default_value_t = default::kafka())]
    #[serde(default = "default::kafka")]
    pub kafka: String,

    /// Prefix of Confab's Kafka topics and consumer groups.
    #[arg(long, env = "CONFAB_TOPIC_PREFIX", value_name = "PREFIX", default_value_t = default::topic_prefix())]
    #[serde(default = "default::topic_prefix")]
    pub topic_prefix: String,

    /// Producer linger in milliseconds: how long a write may wait to share a
    /// request with others (latency against throughput).
    #[arg(long, env = "CONFAB_KAFKA_LINGER_MS", value_name = "MS", default_value_t = default::kafka_linger_ms())]
    #[serde(default = "default::kafka_linger_ms")]
    pub kafka_linger_ms: u64,

    /// How long Kafka may take to accept a write before `send` is `unavailable`.
    #[arg(long, env = "CONFAB_PRODUCE_TIMEOUT_MS", value_name = "MS", default_value_t = default::produce_timeout_ms())]
    #[serde(default = "default::produce_timeout_ms")]
    pub produce_timeout_ms: u64,

    /// Extra librdkafka properties, `key=value` (TLS, SASL); repeat or separate with commas.
    #[arg(long = "kafka-property", env = "CONFAB_KAFKA_PROPERTIES", value_name = "KEY=VALUE", value_delimiter = ',')]
    #[serde(default)]
    pub kafka_properties: Vec<String>,

    /// CQL contact points (ScyllaDB or Cassandra), `host:port,host:port`.
    #[arg(long, env = "CONFAB_CQL", value_name = "HOSTS", default_value_t = default::cql())]
    #[serde(default = "default::cql")]
    pub cql: String,

    /// CQL keyspace.
    #[arg(long, env = "CONFAB_KEYSPACE", value_name = "NAME", default_value_t = default::keyspace())]
    #[serde(default = "default::keyspace")]
    pub keyspace: String,

    /// CQL user name, if the database requires authentication.
    #[arg(long, env = "CONFAB_CQL_USERNAME", value_name = "USER")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cql_username: Option<String>,

    /// CQL password.
    #[arg(long, env = "CONFAB_CQL_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cql_password: Option<String>,

    /// How long the CQL driver waits for the answer to one request before it
    /// fails (a client's read gets `unavailable`; a dispatcher retries its write).
    #[arg(long, env = "CONFAB_CQL_REQUEST_TIMEOUT_MS", value_name = "MS", default_value_t = default::cql_request_timeout_ms())]
    #[serde(default = "default::cql_request_timeout_ms")]
    pub cql_request_timeout_ms: u64,

    /// Leave unwritten what rows already written give back: a room's `rooms`
    /// row (last seq, message count) is written once per 65,536 messages and
    /// for messages that expire, not with every batch, and a DM's second
    /// member writes no tally row for their own messages. Readers derive
    /// both. Turn on only once no gateway or dispatcher of a version without
    /// this option runs (docs/operator.md, "Derived counts").
    #[arg(long, env = "CONFAB_CQL_DERIVED_COUNTS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    #[serde(default)]
    pub cql_derived_counts: bool,

    #[command(flatten)]
    #[serde(flatten)]
    pub cql_tls: CqlTlsConfig,
}

/// TLS to the CQL database. On with `cql_tls = true` or any `cql_tls_*`
/// option; the nodes' certificates are then always verified (there is no
/// switch to skip it).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct CqlTlsConfig {
    /// Speak TLS to the CQL nodes, verifying their certificates against the
    /// system's trust store (or --cql-tls-ca) and their IP addresses (or
    /// --cql-tls-server-name).
    #[arg(long, env = "CONFAB_CQL_TLS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    #[serde(default)]
    pub cql_tls: bool,

    /// PEM CA certificate(s) the nodes' certificates must chain to (implies --cql-tls).
    #[arg(long, env = "CONFAB_CQL_TLS_CA", value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cql_tls_ca: Option<PathBuf>,

    /// PEM client certificate chain, for databases that require one (with --cql-tls-key).
    #[arg(long, env = "CONFAB_CQL_TLS_CERT", value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cql_tls_cert: Option<PathBuf>,

    /// PEM private key of --cql-tls-cert.
    #[arg(long, env = "CONFAB_CQL_TLS_KEY", value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cql_tls_key: Option<PathBuf>,

    /// The DNS name every node's certificate must carry, instead of the
    /// node's IP address (for certificates issued to a name).
    #[arg(long, env = "CONFAB_CQL_TLS_SERVER_NAME", value_name = "NAME")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cql_tls_server_name: Option<String>,
}

impl CqlTlsConfig {
    /// The store's TLS settings; `None` when TLS is off.
    pub fn tls(&self) -> Option<confab_store::scylla::CqlTls> {
        let on = self.cql_tls
            || self.cql_tls_ca.is_some()
            || self.cql_tls_cert.is_some()
            || self.cql_tls_key.is_some()
            || self.cql_tls_server_name.is_some();
        on.then(|| confab_store::scylla::CqlTls {
            ca: self.cql_tls_ca.clone(),
            cert: self.cql_tls_cert.clone(),
            key: self.cql_tls_key.clone(),
            server_name: self.cql_tls_server_name.clone(),
        })
    }

    /// Reads every file now, so a bad one stops the process at start with
    /// the option that names it.
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(tls) = self.tls() {
            tls.client_config().map_err(|e| invalid(e.setting, e.reason))?;
        }
        Ok(())
    }
}

impl BackendConfig {
    pub fn kafka(&self) -> Result<confab_bus::kafka::KafkaConfig, ConfigError> {
        let extra = self
            .kafka_properties
            .iter()
            .map(|kv| {
                let (k, v) = kv
                    .split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| invalid("kafka_properties", format!("'{kv}' is not key=value")))?;
                if FIXED_KAFKA_PROPERTIES.contains(&k.as_str()) {
                    let why = "is fixed: the producer uses acks=all with idempotence, so an acked write is on every in-sync replica once";
                    return Err(invalid("kafka_properties", format!("'{k}' {why}")));
                }
                Ok((k, v))
            })
            .collect::<Result<_, _>>()?;
        Ok(confab_bus::kafka::KafkaConfig {
            bootstrap: self.kafka.clone(),
            topic_prefix: self.topic_prefix.clone(),
            linger: ms(self.kafka_linger_ms),
            produce_timeout: ms(self.produce_timeout_ms),
            extra,
        })
    }

    /// The store's settings (replication is `migrate`'s: see [`MigrateConfig::cql`]).
    pub fn cql(&self) -> confab_store::scylla::CqlConfig {
        confab_store::scylla::CqlConfig {
            contact_points: self.cql.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
            keyspace: self.keyspace.clone(),
            replication: Default::default(),
            username: self.cql_username.clone(),
            password: self.cql_password.clone(),
            request_timeout: ms(self.cql_request_timeout_ms),
            tls: self.cql_tls.tls(),
            derived_counts: self.cql_derived_counts,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.trim().is_empty() {
            return Err(invalid("kafka", "must name at least one broker"));
        }
        if self.cql.trim().is_empty() {
            return Err(invalid("cql", "must name at least one contact point"));
        }
        if !self.keyspace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || !self.keyspace.starts_with(|c: char| c.is_ascii_alphabetic())
        {
            return Err(invalid("keyspace", "must be a CQL identifier: a letter, then letters, digits or _"));
        }
        if self.topic_prefix.is_empty()
            || !self.topic_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(invalid("topic_prefix", "must be letters, digits, '.', '_' or '-'"));
        }
        if self.produce_timeout_ms == 0 {
            return Err(invalid("produce_timeout_ms", "must be at least 1"));
        }
        if self.cql_request_timeout_ms == 0 {
            return Err(invalid("cql_request_timeout_ms", "must be at least 1"));
        }
        self.cql_tls.validate()?;
        self.kafka().map(|_| ())
    }
}

/// `confab gateway`: holds client sessions, produces writes to Kafka, reads
/// from the store, and takes pushes from dispatchers on its internal port.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct GatewayConfig {
    #[command(flatten)]
    #[serde(flatten)]
    pub server: ServerConfig,

    #[command(flatten)]
    #[serde(flatten)]
    pub ops: OpsConfig,

    #[command(flatten)]
    #[serde(flatten)]
    pub backend: BackendConfig,

    /// Internal listener where dispatchers push events (not for clients).
    #[arg(long, env = "CONFAB_INTERNAL_LISTEN", value_name = "ADDR", default_value_t = default::internal_listen())]
    #[serde(default = "default::internal_listen")]
    pub internal_listen: SocketAddr,

    /// The address dispatchers use to reach --internal-listen, when it differs
    /// (e.g. the pod IP when listening on 0.0.0.0).
    #[arg(long, env = "CONFAB_INTERNAL_ADVERTISE", value_name = "HOST:PORT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_advertise: Option<String>,

    /// PEM certificate chain of the internal listener; with
    /// --internal-tls-key, it speaks TLS only (dispatchers dial wss://). The
    /// certificate must name the host of the advertised address.
    #[arg(long, env = "CONFAB_INTERNAL_TLS_CERT", value_name = "FILE", requires = "internal_tls_key")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_tls_cert: Option<PathBuf>,

    /// PEM private key of --internal-tls-cert.
    #[arg(long, env = "CONFAB_INTERNAL_TLS_KEY", value_name = "FILE", requires = "internal_tls_cert")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_tls_key: Option<PathBuf>,

    /// PEM CA bundle: with it, the internal listener also requires each
    /// dispatcher to present a client certificate issued by one of these CAs
    /// (mutual TLS). Needs --internal-tls-cert.
    #[arg(long, env = "CONFAB_INTERNAL_TLS_CLIENT_CA", value_name = "FILE", requires = "internal_tls_cert")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_tls_client_ca: Option<PathBuf>,
}

/// `confab dispatcher`: consumes the ingress topic, persists, acks and pushes.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct DispatcherConfig {
    #[command(flatten)]
    #[serde(flatten)]
    pub ops: OpsConfig,

    #[command(flatten)]
    #[serde(flatten)]
    pub backend: BackendConfig,

    #[command(flatten)]
    #[serde(flatten)]
    pub secret: SecretConfig,

    /// Most records in one group commit.
    #[arg(long, env = "CONFAB_MAX_BATCH", value_name = "RECORDS", default_value_t = default::max_batch())]
    #[serde(default = "default::max_batch")]
    pub max_batch: usize,

    #[command(flatten)]
    #[serde(flatten)]
    pub room_limits: RoomLimitsConfig,

    #[command(flatten)]
    #[serde(flatten)]
    pub retention: RetentionConfig,

    #[command(flatten)]
    #[serde(flatten)]
    pub hooks: HooksConfig,

    /// Longest text a message filter may rewrite a message to: the
    /// gateways' `max_text_bytes`.
    #[arg(long, env = "CONFAB_MAX_TEXT_BYTES", value_name = "BYTES", default_value_t = default::max_text_bytes())]
    #[serde(default = "default::max_text_bytes")]
    pub max_text_bytes: usize,

    /// PEM CA bundle trusted for the push link: with it, the dispatcher
    /// dials every gateway over TLS (wss://, never plain ws://) and requires
    /// its certificate to name the host of the address the gateway announced.
    #[arg(long, env = "CONFAB_INTERNAL_TLS_CA", value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_tls_ca: Option<PathBuf>,

    /// The one name (DNS or IP) every gateway's certificate must carry,
    /// instead of the host of the address each gateway announces: for
    /// gateways that share a certificate (e.g. addressed by pod IP). Needs
    /// --internal-tls-ca.
    #[arg(long, env = "CONFAB_INTERNAL_TLS_SERVER_NAME", value_name = "NAME", requires = "internal_tls_ca")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_tls_server_name: Option<String>,

    /// PEM client certificate chain presented to gateways that require one
    /// (mutual TLS); with --internal-tls-client-key and --internal-tls-ca.
    #[arg(
        long,
        env = "CONFAB_INTERNAL_TLS_CLIENT_CERT",
        value_name = "FILE",
        requires_all = ["internal_tls_client_key", "internal_tls_ca"]
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_tls_client_cert: Option<PathBuf>,

    /// PEM private key of --internal-tls-client-cert.
    #[arg(long, env = "CONFAB_INTERNAL_TLS_CLIENT_KEY", value_name = "FILE", requires = "internal_tls_client_cert")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_tls_client_key: Option<PathBuf>,
}

/// `confab migrate`: creates Kafka topics and the CQL schema. Idempotent.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct MigrateConfig {
    #[command(flatten)]
    #[serde(flatten)]
    pub backend: BackendConfig,

    /// Ingress partitions. Fixed at creation: `migrate` refuses to change it.
    #[arg(long, env = "CONFAB_PARTITIONS", value_name = "N", default_value_t = default::migrate_partitions())]
    #[serde(default = "default::migrate_partitions")]
    pub partitions: u32,

    /// Replication factor of the Kafka topics.
    #[arg(long, env = "CONFAB_KAFKA_REPLICATION", value_name = "N", default_value_t = default::kafka_replication())]
    #[serde(default = "default::kafka_replication")]
    pub kafka_replication: i32,

    /// `min.insync.replicas` of the Kafka topics: how many replicas must
    /// have a write before it is acknowledged (the producer uses `acks=all`);
    /// with fewer in sync, sends are `unavailable`. Default: the replication
    /// factor minus 1, at least 1 (2 of 3).
    #[arg(long, env = "CONFAB_KAFKA_MIN_INSYNC_REPLICAS", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_min_insync_replicas: Option<i32>,

    /// Replication of the keyspace when migrate creates it:
    /// `SimpleStrategy:N` or `NetworkTopologyStrategy:dc1=N,dc2=M` (the CQL
    /// map literal `{'class': ..., ...}` is read too). Factors 1 to 64.
    #[arg(
        long,
        env = "CONFAB_CQL_REPLICATION",
        value_name = "MAP",
        default_value_t = default::cql_replication()
    )]
    #[serde(default = "default::cql_replication")]
    pub cql_replication: String,

    /// Log format.
    #[arg(long, env = "CONFAB_LOG_FORMAT", value_name = "FORMAT", value_enum, default_value_t = default::log_format())]
    #[serde(default = "default::log_format")]
    pub log_format: LogFormat,
}

impl ServerConfig {
    /// Checks what types alone cannot say, naming the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid("tls_cert", "tls_cert and tls_key go together"));
        }
        if self.tcp_tls_cert.is_some() != self.tcp_tls_key.is_some() {
            return Err(invalid("tcp_tls_cert", "tcp_tls_cert and tcp_tls_key go together"));
        }
        if self.tcp_tls_cert.is_some() && self.tcp_listen.is_none() {
            return Err(invalid("tcp_tls_cert", "needs tcp_listen"));
        }
        self.secret.validate(false)?;
        self.object_store.validate()?;
        if self.token_ttl_secs == 0 {
            return Err(invalid("token_ttl_secs", "must be at least 1"));
        }
        if self.max_token_lifetime_secs == 0 {
            return Err(invalid("max_token_lifetime_secs", "must be at least 1"));
        }
        if self.api_rate_per_second == 0 {
            return Err(invalid("api_rate_per_second", "must be at least 1"));
        }
        if self.api_rate_burst == 0 {
            return Err(invalid("api_rate_burst", "must be at least 1"));
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
        if self.server_id.as_deref() == Some("") {
            return Err(invalid("server_id", "must not be empty"));
        }
        self.auth_limits.validate()?;
        self.connection_limits.validate()?;
        self.user_limits.validate()?;
        self.reply_limits.validate()?;
        self.uploads.validate()?;
        self.retention.validate()
    }

    /// The gateway's settings from these; `produce_timeout` is its deadline
    /// on a write to the bus.
    fn gateway(&self, default_id: impl FnOnce() -> String, produce_timeout: Duration) -> confab_gateway::Config {
        confab_gateway::Config {
            id: self.server_id.clone().unwrap_or_else(default_id),
            internal_addr: None,
            heartbeat: ms(self.heartbeat_ms),
            max_frame_bytes: self.max_frame_bytes,
            max_text_bytes: self.max_text_bytes,
            rate_per_second: self.rate_per_second,
            rate_burst: self.rate_burst,
            outbound_queue: self.outbound_queue,
            outbound_queue_bytes: self.reply_limits.outbound_queue_bytes,
            reply_max_bytes: self.reply_limits.reply_max_bytes,
            sync_max_messages: self.reply_limits.sync_max_messages,
            presence_event_limit: self.presence_event_limit,
            produce_timeout,
            ws_read_buffer: confab_gateway::Config::WS_READ_BUFFER,
            ws_write_buffer: confab_gateway::Config::WS_WRITE_BUFFER,
            ws_compression: self.ws_compression,
            ws_compression_threshold: self.ws_compression_threshold,
            auth_per_ip_per_minute: self.auth_limits.auth_per_ip_per_minute,
            auth_per_user_per_minute: self.auth_limits.auth_per_user_per_minute,
            hash_queue: self.auth_limits.hash_queue,
            open_registration: self.open_registration(),
            max_sessions_per_user: self.user_limits.max_sessions_per_user,
            typing_interval: ms(self.user_limits.typing_interval_ms),
            max_contacts: self.user_limits.max_contacts,
            max_blocks: self.user_limits.max_blocks,
            retention: self.retention.retention(),
            // Read from `api_key_file` when the process starts (serving::api_keys).
            api_keys: Default::default(),
        }
    }

    /// `registration`, or its default: closed once an application's keys
    /// are configured.
    pub fn open_registration(&self) -> bool {
        match self.registration {
            Some(r) => r == Registration::Open,
            None => self.jwt_public_keys.is_empty(),
        }
    }
}

impl StandaloneConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        if !(1..=1024).contains(&self.partitions) {
            return Err(invalid("partitions", "must be 1 to 1024"));
        }
        if self.webhook_journal_bytes < 1 << 20 {
            return Err(invalid("webhook_journal_bytes", "must be at least 1048576 (1 MiB)"));
        }
        self.hooks.validate()?;
        self.room_limits.validate()
    }

    /// The gateway's settings. The in-process bus has no produce timeout
    /// option; the gateway keeps the distributed default as its deadline.
    pub fn gateway(&self) -> confab_gateway::Config {
        self.server.gateway(default::standalone_server_id, ms(default::produce_timeout_ms()))
    }

    /// The in-process dispatcher's settings.
    pub fn dispatcher(&self) -> confab_dispatcher::Config {
        confab_dispatcher::Config {
            max_batch: default::max_batch(),
            max_rooms_per_user: self.room_limits.max_rooms_per_user,
            retention: self.server.retention.retention(),
            ..Default::default()
        }
    }
}

impl GatewayConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.backend.validate()?;
        self.server.secret.validate(true)?;
        if self.internal_tls_cert.is_some() != self.internal_tls_key.is_some() {
            return Err(invalid("internal_tls_cert", "internal_tls_cert and internal_tls_key go together"));
        }
        if self.internal_tls_client_ca.is_some() && self.internal_tls_cert.is_none() {
            return Err(invalid("internal_tls_client_ca", "needs internal_tls_cert and internal_tls_key"));
        }
        Ok(())
    }

    /// The gateway's settings, for the internal port bound at `internal`:
    /// its deadline on a write is the Kafka producer's
    /// `produce_timeout_ms`, so neither cuts the other short.
    pub fn gateway(&self, internal: SocketAddr) -> confab_gateway::Config {
        let advertised = self.advertised_internal(internal);
        let mut config =
            self.server.gateway(|| default::gateway_server_id(&advertised), ms(self.backend.produce_timeout_ms));
        config.internal_addr = Some(advertised);
        config
    }

    /// Where dispatchers reach this gateway's internal port.
    pub fn advertised_internal(&self, bound: SocketAddr) -> String {
        self.internal_advertise.clone().unwrap_or_else(|| bound.to_string())
    }
}

impl DispatcherConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.backend.validate()?;
        self.secret.validate(true)?;
        if self.max_batch == 0 {
            return Err(invalid("max_batch", "must be at least 1"));
        }
        if self.internal_tls_client_cert.is_some() != self.internal_tls_client_key.is_some() {
            return Err(invalid(
                "internal_tls_client_cert",
                "internal_tls_client_cert and internal_tls_client_key go together",
            ));
        }
        if self.internal_tls_client_cert.is_some() && self.internal_tls_ca.is_none() {
            return Err(invalid("internal_tls_client_cert", "needs internal_tls_ca: a client certificate is for TLS"));
        }
        if let Some(name) = &self.internal_tls_server_name {
            if self.internal_tls_ca.is_none() {
                return Err(invalid("internal_tls_server_name", "needs internal_tls_ca"));
            }
            if tokio_rustls::rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                return Err(invalid("internal_tls_server_name", format!("`{name}` is not a DNS name or IP address")));
            }
        }
        self.retention.validate()?;
        self.hooks.validate()?;
        self.room_limits.validate()
    }

    pub fn dispatcher(&self) -> confab_dispatcher::Config {
        confab_dispatcher::Config {
            max_batch: self.max_batch,
            max_rooms_per_user: self.room_limits.max_rooms_per_user,
            retention: self.retention.retention(),
            ..Default::default()
        }
    }
}

impl MigrateConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.backend.validate()?;
        self.replication()?;
        if !(1..=1024).contains(&self.partitions) {
            return Err(invalid("partitions", "must be 1 to 1024"));
        }
        if self.kafka_replication < 1 {
            return Err(invalid("kafka_replication", "must be at least 1"));
        }
        if !(1..=self.kafka_replication).contains(&self.min_insync_replicas()) {
            return Err(invalid("kafka_min_insync_replicas", "must be 1 to kafka_replication"));
        }
        Ok(())
    }

    /// `kafka_min_insync_replicas`, or its default for `kafka_replication`.
    pub fn min_insync_replicas(&self) -> i32 {
        self.kafka_min_insync_replicas.unwrap_or_else(|| default::kafka_min_insync_replicas(self.kafka_replication))
    }

    fn replication(&self) -> Result<confab_store::scylla::Replication, ConfigError> {
        self.cql_replication
            .parse()
            .map_err(|e: confab_store::scylla::ReplicationError| invalid("cql_replication", e.to_string()))
    }

    /// The store's settings, with the keyspace's replication.
    pub fn cql(&self) -> Result<confab_store::scylla::CqlConfig, ConfigError> {
        Ok(confab_store::scylla::CqlConfig { replication: self.replication()?, ..self.backend.cql() })
    }
}

/// What `main` needs of every role's settings.
pub trait RoleConfig {
    fn check(&self) -> Result<(), ConfigError>;
    fn log_format(&self) -> LogFormat;
}

macro_rules! role_config {
    ($($config:ty => |$c:ident| $log_format:expr),* $(,)?) => {$(
        impl RoleConfig for $config {
            fn check(&self) -> Result<(), ConfigError> {
                self.validate()
            }
            fn log_format(&self) -> LogFormat {
                let $c = self;
                $log_format
            }
        }
    )*};
}

role_config!(
    StandaloneConfig => |c| c.ops.log_format,
    GatewayConfig => |c| c.ops.log_format,
    DispatcherConfig => |c| c.ops.log_format,
    MigrateConfig => |c| c.log_format,
);

/// Reads `T` from parsed flags and environment, layered over the TOML file
/// at `file`: a file key counts only where neither a flag nor a variable set
/// that field, and serde's defaults fill the rest.
///
/// Unknown keys are refused by name, against the options clap knows (the
/// same names as the fields): serde's `deny_unknown_fields` does not work
/// with the `flatten`ed groups these structs share.
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
    let mut merged: toml::Table = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
    let command = T::augment_args(clap::Command::new("config"));
    for (key, value) in &merged {
        if !command.get_arguments().any(|a| a.get_id() == key.as_str()) {
            return Err(file_error(format!("unknown key `{key}`")));
        }
        // Flattened settings lose field names in serde's errors: read each
        // key alone (over the defaults), so an error names its key.
        let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
        if let Err(e) = T::deserialize(alone) {
            return Err(file_error(format!("`{key}`: {}", e.message().trim())));
        }
    }
    let args = toml::Table::try_from(&from_args).map_err(|e| file_error(e.to_string()))?;
    for (key, value) in args {
        if matches!(matches.value_source(&key), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
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
        assert_eq!(c.server.heartbeat_ms, 1000, "a flag beats the file");
        assert_eq!(c.server.rate_burst, 7, "the file beats a default");
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn the_tcp_listener_is_off_by_default_and_its_tls_needs_it_and_both_files() {
        let c = load(&["confab"], "").unwrap();
        assert_eq!((c.server.tcp_listen, c.server.tcp_tls_cert.clone()), (None, None));
        let c = load(&["confab", "--tcp-listen", "127.0.0.1:7000"], "").unwrap();
        assert_eq!(c.server.tcp_listen.map(|a| a.port()), Some(7000));
        let c = load(&["confab"], "tcp_tls_cert = \"c.pem\"\ntcp_tls_key = \"k.pem\"\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("tcp_tls_cert") && e.contains("tcp_listen"), "{e}");
        let c = load(&["confab"], "tcp_listen = \"127.0.0.1:7000\"\ntcp_tls_cert = \"c.pem\"\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("tcp_tls_key"), "{e}");
    }

    #[test]
    fn object_storage_is_off_by_default_and_its_options_are_checked() {
        let no_env = |_: &str| None;
        let c = load(&["confab"], "").unwrap();
        assert_eq!(c.server.object_store.s3_options_with(no_env).unwrap(), None, "attachments on local disk");
        assert_eq!(
            (c.server.object_store.s3_region.as_str(), c.server.object_store.s3_path_style),
            ("us-east-1", true)
        );

        let env = |name: &str| match name {
            "AWS_ACCESS_KEY_ID" => Some("AKID".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("s3cr3t".to_owned()),
            _ => None,
        };
        let c = load(
            &["confab", "--s3-path-style", "false"],
            "s3_endpoint = \"https://s3.example.com/\"\ns3_bucket = \"chat-uploads\"\ns3_region = \"eu-west-1\"\n",
        )
        .unwrap();
        let o = c.server.object_store.s3_options_with(env).unwrap().unwrap();
        assert_eq!(
            (o.endpoint.as_str(), o.bucket.as_str(), o.region.as_str(), o.path_style),
            ("https://s3.example.com", "chat-uploads", "eu-west-1", false)
        );
        assert_eq!((o.access_key_id.as_str(), o.secret_access_key.as_str()), ("AKID", "s3cr3t"));
        let e = c.server.object_store.s3_options_with(no_env).unwrap_err().to_string();
        assert!(e.contains("AWS_ACCESS_KEY_ID") && e.contains("s3_credentials_file"), "no credentials: {e}");

        // A credentials file beats the environment.
        let dir = tempfile_dir();
        let creds = dir.join("credentials");
        std::fs::write(&creds, "[other]\naws_access_key_id = NOPE\n[default]\naws_access_key_id = FROMFILE\naws_secret_access_key = filesecret\n").unwrap();
        let c = load(
            &["confab", "--s3-credentials-file", creds.to_str().unwrap()],
            "s3_endpoint = \"http://127.0.0.1:8333\"\ns3_bucket = \"b12\"\n",
        )
        .unwrap();
        let o = c.server.object_store.s3_options_with(env).unwrap().unwrap();
        assert_eq!((o.access_key_id.as_str(), o.secret_access_key.as_str()), ("FROMFILE", "filesecret"));
        std::fs::write(&creds, "aws_access_key_id = X\n").unwrap();
        let e = c.server.object_store.s3_options_with(env).unwrap_err().to_string();
        assert!(e.contains("aws_secret_access_key"), "{e}");

        for (file, field) in [
            ("s3_bucket = \"b12\"\n", "s3_bucket: needs s3_endpoint"),
            ("s3_endpoint = \"http://127.0.0.1:8333\"\n", "s3_bucket: required"),
            ("s3_endpoint = \"127.0.0.1:8333\"\ns3_bucket = \"b12\"\n", "s3_endpoint"),
            ("s3_endpoint = \"http://h/path\"\ns3_bucket = \"b12\"\n", "s3_endpoint"),
            ("s3_endpoint = \"http://h\"\ns3_bucket = \"Bad_Bucket\"\n", "s3_bucket"),
            ("s3_endpoint = \"http://h\"\ns3_bucket = \"b12\"\ns3_region = \"\"\n", "s3_region"),
        ] {
            let c = load(&["confab"], file).unwrap();
            let e = c.server.object_store.s3_options_with(env).unwrap_err().to_string();
            assert!(e.starts_with(field), "{file:?}: {e}");
        }
        let c = load(&["confab"], "s3_bucket = \"b12\"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("s3_bucket"), "validate checks them");
    }

    #[test]
    fn an_unknown_key_or_a_bad_value_in_the_file_names_it() {
        let e = load(&["confab"], "heartbeat = 5\n").unwrap_err().to_string();
        assert!(e.contains("heartbeat"), "{e}");
        let e = load(&["confab"], "listen = \"nowhere\"\n").unwrap_err().to_string();
        assert!(e.contains("listen") || e.contains("nowhere"), "{e}");
    }

    #[test]
    fn reply_limits_come_from_the_file_and_a_queue_smaller_than_two_replies_is_refused() {
        let c = load(&["confab"], "reply_max_bytes = 65536\nsync_max_messages = 50\n").unwrap();
        let g = c.gateway();
        assert_eq!((g.reply_max_bytes, g.sync_max_messages), (65536, 50));
        assert_eq!(g.outbound_queue_bytes, default::outbound_queue_bytes());
        c.validate().unwrap();
        let c = load(&["confab", "--outbound-queue-bytes", "100000"], "reply_max_bytes = 65536\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("outbound_queue_bytes"), "{e}");
    }

    fn gateway(args: &[&str]) -> GatewayConfig {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: GatewayConfig,
        }
        Cli::parse_from(std::iter::once("confab").chain(args.iter().copied())).config
    }

    #[test]
    fn the_gateways_produce_deadline_is_the_produce_timeout() {
        let c = gateway(&["--produce-timeout-ms", "12000"]);
        let bound = "127.0.0.1:7070".parse().unwrap();
        assert_eq!(c.gateway(bound).produce_timeout, Duration::from_secs(12), "the gateway's own deadline");
        assert_eq!(c.backend.kafka().unwrap().produce_timeout, Duration::from_secs(12), "librdkafka's");
        assert_eq!(gateway(&[]).gateway(bound).produce_timeout, Duration::from_millis(default::produce_timeout_ms()));
    }

    #[test]
    fn gateways_without_a_server_id_get_distinct_ids_and_standalone_keeps_its_own() {
        let (one, two) = ("10.0.0.7:7070".parse().unwrap(), "10.0.0.7:7071".parse().unwrap());
        let first = gateway(&[]).gateway(one).id;
        assert_ne!(first, gateway(&[]).gateway(two).id, "two gateways on one host");
        assert_eq!(first, gateway(&[]).gateway(one).id, "stable for one address");
        assert!(first.ends_with("-10.0.0.7:7070"), "{first}");
        let advertised = gateway(&["--internal-advertise", "gw.example:7070"]).gateway(one).id;
        assert!(advertised.ends_with("-gw.example:7070"), "{advertised}");
        assert_eq!(gateway(&["--server-id", "gw-a"]).gateway(one).id, "gw-a");
        let standalone: StandaloneConfig = toml::from_str("").unwrap();
        assert_eq!(standalone.gateway().id, "confab-1");
    }

    #[test]
    fn derived_counts_are_off_unless_asked_for() {
        assert!(!gateway(&[]).backend.cql().derived_counts);
        assert!(gateway(&["--cql-derived-counts"]).backend.cql().derived_counts);
        assert!(!gateway(&["--cql-derived-counts", "false"]).backend.cql().derived_counts);
    }

    #[test]
    fn the_cql_request_timeout_reaches_the_store_config() {
        let c = gateway(&["--cql-request-timeout-ms", "2500"]);
        assert_eq!(c.backend.cql().request_timeout, Duration::from_millis(2500));
        assert_eq!(gateway(&[]).backend.cql().request_timeout, Duration::from_secs(10));
    }

    #[test]
    fn cql_tls_is_on_with_the_flag_or_any_tls_option_and_off_otherwise() {
        assert_eq!(gateway(&[]).backend.cql().tls, None);
        assert_eq!(gateway(&["--cql-tls"]).backend.cql().tls, Some(Default::default()));
        assert_eq!(gateway(&["--cql-tls", "false"]).backend.cql().tls, None);
        let tls = gateway(&["--cql-tls-ca", "ca.pem", "--cql-tls-server-name", "db.example"]).backend.cql().tls;
        let tls = tls.expect("a CA turns TLS on");
        assert_eq!((tls.ca.as_deref(), tls.server_name.as_deref()), (Some(Path::new("ca.pem")), Some("db.example")));
    }

    #[test]
    fn migrate_reads_both_replication_spellings_and_names_the_option_when_refused() {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: MigrateConfig,
        }
        let migrate = |r: &str| Cli::parse_from(["confab", "--cql-replication", r]).config;
        use confab_store::scylla::Replication;
        assert_eq!(migrate("SimpleStrategy:3").cql().unwrap().replication, Replication::Simple { factor: 3 });
        let old = migrate("{'class': 'NetworkTopologyStrategy', 'dc1': 3}").cql().unwrap().replication;
        assert_eq!(old.to_string(), "NetworkTopologyStrategy:dc1=3");
        let e = migrate("SimpleStrategy:1; DROP KEYSPACE confab").validate().unwrap_err().to_string();
        assert!(e.starts_with("cql_replication"), "{e}");
    }

    #[test]
    fn min_insync_replicas_defaults_to_one_less_than_the_replication_and_is_refused_above_it() {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: MigrateConfig,
        }
        let migrate = |args: &[&str]| Cli::parse_from(["confab"].iter().chain(args)).config;
        assert_eq!(migrate(&[]).min_insync_replicas(), 1);
        assert_eq!(migrate(&["--kafka-replication", "2"]).min_insync_replicas(), 1);
        assert_eq!(migrate(&["--kafka-replication", "3"]).min_insync_replicas(), 2);
        let three = ["--kafka-replication", "3", "--kafka-min-insync-replicas", "3"];
        assert_eq!(migrate(&three).min_insync_replicas(), 3);
        migrate(&three).validate().expect("3 of 3 is allowed");
        for n in ["0", "4"] {
            let e = migrate(&["--kafka-replication", "3", "--kafka-min-insync-replicas", n]).validate().unwrap_err();
            assert!(e.to_string().starts_with("kafka_min_insync_replicas"), "{e}");
        }
    }

    #[test]
    fn kafka_properties_may_not_weaken_acks_or_idempotence() {
        for kv in ["acks=1", "request.required.acks=0", " enable.idempotence = false"] {
            let e = gateway(&["--kafka-property", kv]).backend.kafka().unwrap_err().to_string();
            assert!(e.starts_with("kafka_properties") && e.contains("acks=all"), "{kv}: {e}");
        }
        let ok = gateway(&["--kafka-property", "security.protocol=SSL"]).backend.kafka().unwrap();
        assert_eq!(ok.extra, vec![("security.protocol".to_owned(), "SSL".to_owned())]);
    }

    /// serde fills what the file leaves out with the very defaults clap
    /// gives unset flags.
    #[test]
    fn an_empty_file_means_the_defaults() {
        let from_serde: StandaloneConfig = toml::from_str("").unwrap();
        let from_clap = Cli::command().try_get_matches_from(["confab"]).unwrap();
        let from_clap = StandaloneConfig::from_arg_matches(&from_clap).unwrap();
        assert_eq!(toml::Table::try_from(from_serde).unwrap(), toml::Table::try_from(from_clap).unwrap());
        let from_serde: GatewayConfig = toml::from_str("").unwrap();
        assert_eq!(toml::Table::try_from(from_serde).unwrap(), toml::Table::try_from(gateway(&[])).unwrap());
    }

    #[test]
    fn a_half_configured_push_link_tls_is_refused_naming_the_field() {
        const SECRET: &str = "jwt_secret = \"0123456789abcdef0123456789abcdef\"\n";
        let gateway = |file: &str| toml::from_str::<GatewayConfig>(&format!("{SECRET}{file}")).unwrap().validate();
        let dispatcher =
            |file: &str| toml::from_str::<DispatcherConfig>(&format!("{SECRET}{file}")).unwrap().validate();
        let field = |checked: Result<(), ConfigError>| match checked {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(field(gateway("internal_tls_cert = \"c.pem\"")), "internal_tls_cert");
        assert_eq!(field(gateway("internal_tls_key = \"k.pem\"")), "internal_tls_cert");
        assert_eq!(field(gateway("internal_tls_client_ca = \"ca.pem\"")), "internal_tls_client_ca");
        gateway("internal_tls_cert = \"c.pem\"\ninternal_tls_key = \"k.pem\"\ninternal_tls_client_ca = \"ca.pem\"")
            .expect("a certificate, its key and a client CA");
        let key_alone = "internal_tls_client_key = \"k.pem\"\ninternal_tls_ca = \"ca.pem\"";
        assert_eq!(field(dispatcher(key_alone)), "internal_tls_client_cert");
        // A client certificate without the CA would mean a plain link.
        let without_ca = "internal_tls_client_cert = \"c.pem\"\ninternal_tls_client_key = \"k.pem\"";
        assert_eq!(field(dispatcher(without_ca)), "internal_tls_client_cert");
        dispatcher("internal_tls_ca = \"ca.pem\"").expect("server-authenticated TLS alone");
        assert_eq!(field(dispatcher("internal_tls_server_name = \"gw.ns.svc\"")), "internal_tls_server_name");
        let bad_name = "internal_tls_ca = \"ca.pem\"\ninternal_tls_server_name = \"not a name\"";
        assert_eq!(field(dispatcher(bad_name)), "internal_tls_server_name");
        dispatcher("internal_tls_ca = \"ca.pem\"\ninternal_tls_server_name = \"gw.ns.svc\"").expect("a fixed name");
    }

    #[test]
    fn registration_is_closed_by_default_once_an_application_key_is_configured() {
        assert!(gateway(&[]).server.open_registration());
        assert!(!gateway(&["--jwt-public-key", "app.pem"]).server.open_registration());
        assert!(gateway(&["--jwt-public-key", "app.pem", "--registration", "open"]).server.open_registration());
        assert!(!gateway(&["--registration", "closed"]).server.open_registration());
    }

    #[test]
    fn a_key_names_its_issuer_and_audience_on_the_command_line_or_in_the_file() {
        let key = |path: &str, iss: Option<&str>, aud: Option<&str>| JwtKey {
            path: path.into(),
            issuer: iss.map(Into::into),
            audience: aud.map(Into::into),
        };
        let flags =
            ["--jwt-public-key", "a.pem#iss=https://idp.example/;aud=confab,b.pem", "--jwt-public-key", "c.pem#aud=x"];
        let c = gateway(&flags);
        assert_eq!(
            c.server.jwt_public_keys,
            [
                key("a.pem", Some("https://idp.example/"), Some("confab")),
                key("b.pem", None, None),
                key("c.pem", None, Some("x"))
            ]
        );
        let file = r#"
            jwt_public_keys = ["b.pem", { path = "a.pem", issuer = "https://idp.example/", audience = "confab" }]
        "#;
        let c = load(&["confab"], file).unwrap();
        assert_eq!(
            c.server.jwt_public_keys,
            [key("b.pem", None, None), key("a.pem", Some("https://idp.example/"), Some("confab"))]
        );
        let tables = "[[jwt_public_keys]]\npath = \"a.pem\"\nissuer = \"app\"\n";
        assert_eq!(load(&["confab"], tables).unwrap().server.jwt_public_keys, [key("a.pem", Some("app"), None)]);
        for bad in [
            r#"jwt_public_keys = [{ path = "a.pem", iss = "app" }]"#,
            r#"jwt_public_keys = [{ path = "a.pem", issuer = "" }]"#,
            r#"jwt_public_keys = ["a.pem#issuer=app"]"#,
        ] {
            let e = load(&["confab"], bad).unwrap_err().to_string();
            assert!(e.contains("jwt_public_keys"), "{bad}: {e}");
        }
        assert!(Cli::command().try_get_matches_from(["confab", "--jwt-public-key", "a.pem#aud="]).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let c = load(&["confab", "--max-text-bytes", "100000"], "").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("max_text_bytes"), "{e}");
    }

    #[test]
    fn rooms_per_user_stay_within_what_one_sync_may_name() {
        let e = load(&["confab", "--max-rooms-per-user", "1001"], "").unwrap().validate().unwrap_err().to_string();
        assert!(e.starts_with("max_rooms_per_user") && e.contains("1000"), "{e}");
        assert!(load(&["confab", "--max-rooms-per-user", "1000"], "").unwrap().validate().is_ok());
        let e = load(&["confab", "--max-sessions-per-user", "0"], "").unwrap().validate().unwrap_err().to_string();
        assert!(e.starts_with("max_sessions_per_user"), "{e}");
    }

    #[test]
    fn retention_is_forever_by_default_and_checked() {
        let c = load(&["confab"], "").unwrap();
        assert_eq!(c.dispatcher().retention, confab_protocol::Retention::default());
        let c = load(&["confab", "--retention-days", "30"], "retention_day_secs = 1\n").unwrap();
        assert!(c.validate().is_ok());
        let r = c.gateway().retention;
        assert_eq!((r.default_days, r.day_secs), (Some(30), 1));
        for days in ["0", "36501"] {
            let e = load(&["confab", "--retention-days", days], "").unwrap().validate().unwrap_err().to_string();
            assert!(e.starts_with("retention_days"), "{e}");
        }
    }
}
