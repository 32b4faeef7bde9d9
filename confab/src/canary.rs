//! `confab canary`: a synthetic chat user that proves, every few seconds,
//! that every gateway takes a message and every gateway delivers it.
//!
//! The canary keeps one WebSocket session of its user (`user`, registered
//! on first use) on each gateway, all members of one room. Each round, for
//! each gateway in turn, it sends a message through that gateway and waits
//! until every session, on every gateway, has received it as a `msg` event:
//! one probe. A probe fails when the gateway cannot be reached or refuses
//! the message, or when some gateway does not deliver it within
//! `timeout_ms`. The gateways are the addresses `gateway_dns` resolves to
//! (a headless Service: every gateway pod) or the `gateway` URLs.
//!
//! Metrics (on the admin port):
//! - `confab_canary_probes_total`: probes run;
//! - `confab_canary_probe_failures_total{reason}`: failed probes, `reason`
//!   `connect` (login, upgrade or join failed), `send` (the message was
//!   refused or not acknowledged in time) or `delivery` (a gateway did not
//!   deliver it in time);
//! - `confab_canary_delivery_seconds`: from sending a message to its `msg`
//!   event on each gateway;
//! - `confab_canary_gateways`: gateways found in the last round.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, LogFormat, OpsConfig, RoleConfig};

/// `confab canary`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct CanaryConfig {
    #[command(flatten)]
    #[serde(flatten)]
    pub ops: OpsConfig,

    /// A gateway's base URL (`http://host:8080`); repeat for each gateway.
    #[arg(long = "gateway", env = "CONFAB_CANARY_GATEWAYS", value_name = "URL", value_delimiter = ',')]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<String>,

    /// HOST:PORT whose every address is a gateway, resolved each round (a
    /// headless Service names every gateway pod).
    #[arg(long, env = "CONFAB_CANARY_GATEWAY_DNS", value_name = "HOST:PORT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_dns: Option<String>,

    /// The canary's user, registered on first use.
    #[arg(long, env = "CONFAB_CANARY_USER", value_name = "NAME", default_value = "confab-canary")]
    #[serde(default = "default_user")]
    pub user: String,

    /// The canary user's password (8 to 256 bytes).
    #[arg(long, env = "CONFAB_CANARY_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    #[serde(default)]
    pub password: String,

    /// The room the canary's messages go to.
    #[arg(long, env = "CONFAB_CANARY_ROOM", value_name = "ROOM", default_value = "confab-canary")]
    #[serde(default = "default_room")]
    pub room: String,

    /// Time between the starts of two rounds (one probe per gateway each).
    #[arg(long, env = "CONFAB_CANARY_INTERVAL_MS", value_name = "MS", default_value_t = 5000)]
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,

    /// How long a message may take to be acknowledged and delivered.
    #[arg(long, env = "CONFAB_CANARY_TIMEOUT_MS", value_name = "MS", default_value_t = 5000)]
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_user() -> String {
    "confab-canary".into()
}
fn default_room() -> String {
    "confab-canary".into()
}
fn default_interval_ms() -> u64 {
    5000
}
fn default_timeout_ms() -> u64 {
    5000
}

impl RoleConfig for CanaryConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| Err(ConfigError::Invalid { field, reason: reason.into() });
        if self.gateway.is_empty() == self.gateway_dns.is_none() {
            return invalid("gateway", "give exactly one of --gateway URLs and --gateway-dns HOST:PORT");
        }
        if let Some(url) = self.gateway.iter().find(|u| !u.starts_with("http://") && !u.starts_with("https://")) {
            return Err(ConfigError::Invalid { field: "gateway", reason: format!("{url}: not an http:// URL") });
        }
        if !(8..=256).contains(&self.password.len()) {
            return invalid("password", "8 to 256 bytes are required (CONFAB_CANARY_PASSWORD)");
        }
        if self.interval_ms == 0 || self.timeout_ms == 0 {
            return invalid("interval_ms", "interval_ms and timeout_ms must be positive");
        }
        Ok(())
    }
    fn log_format(&self) -> LogFormat {
        self.ops.log_format
    }
}

/// Every value of the `reason` label.
pub const FAILURE_REASONS: &[&str] = &["connect", "send", "delivery"];

/// The canary's metrics.
#[derive(Clone)]
pub struct CanaryMetrics {
    pub probes: IntCounter,
    pub failures: IntCounterVec,
    pub delivery: Histogram,
    pub gateways: IntGauge,
}

impl CanaryMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let probes = IntCounter::new(
            "confab_canary_probes_total",
            "Canary probes: a message sent through one gateway and awaited on every gateway",
        )?;
        let failures = IntCounterVec::new(
            Opts::new("confab_canary_probe_failures_total", "Canary probes that failed, by reason"),
            &["reason"],
        )?;
        let delivery = Histogram::with_opts(
            HistogramOpts::new(
                "confab_canary_delivery_seconds",
                "Time from sending a canary message to its msg event, on each gateway",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let gateways = IntGauge::new("confab_canary_gateways", "Gateways the canary found in its last round")?;
        for reason in FAILURE_REASONS {
            failures.with_label_values(&[*reason]);
        }
        registry.register(Box::new(probes.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(delivery.clone()))?;
        registry.register(Box::new(gateways.clone()))?;
        Ok(Self { probes, failures, delivery, gateways })
    }

    fn failed(&self, reason: &'static str) {
        self.failures.with_label_values(&[reason]).inc();
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a session's reader saw.
enum Seen {
    /// A `msg` event of the canary's room, by `cid`.
    Msg {
        gateway: String,
        cid: String,
        at: Instant,
    },
    /// A reply to a request: whether it was ok, and the error if not.
    Reply {
        gateway: String,
        id: String,
        error: Option<String>,
    },
    Closed {
        gateway: String,
    },
}

struct Session {
    sink: SplitSink<Ws, Message>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The canary: runs rounds until `stop`.
pub async fn run(config: CanaryConfig, metrics: CanaryMetrics, stop: CancellationToken) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_millis(config.timeout_ms)).build()?;
    let config = Arc::new(config);
    let (seen_tx, mut seen_rx) = mpsc::channel::<Seen>(1024);
    let mut sessions: BTreeMap<String, Session> = BTreeMap::new();
    let mut interval = tokio::time::interval(Duration::from_millis(config.interval_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = interval.tick() => {}
        }
        round += 1;
        let gateways = match gateways(&config).await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "canary: cannot find the gateways");
                metrics.gateways.set(0);
                metrics.probes.inc();
                metrics.failed("connect");
                continue;
            }
        };
        metrics.gateways.set(i64::try_from(gateways.len()).unwrap_or(i64::MAX));
        sessions.retain(|g, _| gateways.contains(g));
        // Readers of closed sessions said so; forget those sessions.
        while let Ok(seen) = seen_rx.try_recv() {
            if let Seen::Closed { gateway } = seen {
                sessions.remove(&gateway);
            }
        }
        for gateway in &gateways {
            if sessions.contains_key(gateway) {
                continue;
            }
            match connect(&config, &http, gateway, seen_tx.clone()).await {
                Ok(session) => drop(sessions.insert(gateway.clone(), session)),
                Err(e) => tracing::warn!(%gateway, error = %e, "canary: cannot open a session"),
            }
        }
        for gateway in &gateways {
            metrics.probes.inc();
            let cid = format!("canary-{round}-{:08x}", rand::random::<u32>());
            let Some(session) = sessions.get_mut(gateway) else {
                metrics.failed("connect");
                continue;
            };
            let sent = Instant::now();
            let request = json!({"op": "send", "id": cid, "room": config.room, "text": cid, "cid": cid});
            if let Err(e) = session.sink.send(Message::Text(request.to_string().into())).await {
                tracing::warn!(%gateway, error = %e, "canary: sending failed");
                sessions.remove(gateway);
                metrics.failed("send");
                continue;
            }
            let expected: BTreeSet<String> = sessions.keys().cloned().collect();
            let mut closed = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_millis(config.timeout_ms);
            let mut delivered = BTreeSet::new();
            let mut acked: Option<Result<(), String>> = None;
            while acked.is_none() || !expected.iter().all(|g| delivered.contains(g)) {
                let seen = tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    seen = tokio::time::timeout_at(deadline, seen_rx.recv()) => match seen {
                        Ok(Some(seen)) => seen,
                        _ => break,
                    },
                };
                match seen {
                    Seen::Msg { gateway: at_gateway, cid: got, at }
                        if got == cid && !delivered.contains(&at_gateway) =>
                    {
                        delivered.insert(at_gateway);
                        metrics.delivery.observe(at.duration_since(sent).as_secs_f64());
                    }
                    Seen::Reply { gateway: from, id, error } if id == cid && from == *gateway => {
                        acked = Some(error.map_or(Ok(()), Err));
                    }
                    Seen::Closed { gateway } => closed.push(gateway),
                    _ => {}
                }
            }
            for gateway in closed {
                tracing::warn!(%gateway, "canary: session closed");
                sessions.remove(&gateway);
            }
            let missing: Vec<&String> = expected.iter().filter(|g| !delivered.contains(*g)).collect();
            match acked {
                Some(Ok(())) if missing.is_empty() => {}
                Some(Ok(())) => {
                    tracing::warn!(%gateway, ?missing, "canary: message not delivered in time");
                    metrics.failed("delivery");
                }
                Some(Err(error)) => {
                    tracing::warn!(%gateway, %error, "canary: message refused");
                    metrics.failed("send");
                }
                None => {
                    tracing::warn!(%gateway, ?missing, "canary: message not acknowledged in time");
                    metrics.failed("send");
                    // A gateway that does not answer gets a new session.
                    sessions.remove(gateway);
                }
            }
        }
    }
}

/// The gateways' base URLs, sorted.
async fn gateways(config: &CanaryConfig) -> anyhow::Result<Vec<String>> {
    let Some(name) = &config.gateway_dns else {
        let mut urls: Vec<String> = config.gateway.iter().map(|u| u.trim_end_matches('/').to_owned()).collect();
        urls.sort();
        urls.dedup();
        return Ok(urls);
    };
    let addrs = tokio::net::lookup_host(name.as_str()).await?;
    let mut urls: Vec<String> = addrs.map(|a| format!("http://{a}")).collect();
    urls.sort();
    urls.dedup();
    anyhow::ensure!(!urls.is_empty(), "{name} resolves to no address");
    Ok(urls)
}

/// Logs in (registering the user the first time), opens a session, joins
/// the room, and starts the session's reader.
async fn connect(
    config: &Arc<CanaryConfig>,
    http: &reqwest::Client,
    gateway: &str,
    seen: mpsc::Sender<Seen>,
) -> anyhow::Result<Session> {
    let token = login(config, http, gateway).await?;
    let ws_url = format!("{}/v1/ws?token={token}", gateway.replacen("http", "ws", 1));
    let patience = Duration::from_millis(config.timeout_ms);
    let (mut ws, _) = tokio::time::timeout(patience, tokio_tungstenite::connect_async(ws_url.as_str()))
        .await
        .map_err(|_| anyhow::anyhow!("no upgrade within {patience:?}"))??;
    let join = json!({"op": "join", "id": "join", "room": config.room});
    ws.send(Message::Text(join.to_string().into())).await?;
    tokio::time::timeout(patience, async {
        while let Some(frame) = ws.next().await {
            if let Message::Text(text) = frame? {
                let v: Value = serde_json::from_str(&text).unwrap_or_default();
                if v["re"] == "join" {
                    anyhow::ensure!(v["ok"] == true, "join refused: {v}");
                    return Ok(());
                }
            }
        }
        anyhow::bail!("closed before the join reply")
    })
    .await
    .map_err(|_| anyhow::anyhow!("no join reply within {patience:?}"))??;
    let (sink, mut stream) = ws.split();
    let (gateway, room) = (gateway.to_owned(), config.room.clone());
    let reader = tokio::spawn(async move {
        while let Some(Ok(frame)) = stream.next().await {
            let Message::Text(text) = frame else { continue };
            let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
            let seen_now = if v["ev"] == "msg" && v["room"] == room.as_str() {
                let Some(cid) = v["cid"].as_str() else { continue };
                Seen::Msg { gateway: gateway.clone(), cid: cid.to_owned(), at: Instant::now() }
            } else if let Some(id) = v["re"].as_str() {
                let error = (v["ok"] != true).then(|| v["error"].to_string());
                Seen::Reply { gateway: gateway.clone(), id: id.to_owned(), error }
            } else {
                continue;
            };
            if seen.send(seen_now).await.is_err() {
                return;
            }
        }
        let _ = seen.send(Seen::Closed { gateway }).await;
    });
    Ok(Session { sink, reader })
}

/// A token for the canary's user: logs in, registering the user first if
/// it has no account yet.
async fn login(config: &CanaryConfig, http: &reqwest::Client, gateway: &str) -> anyhow::Result<String> {
    let creds = json!({"username": config.user, "password": config.password});
    let attempt = || async {
        let r = http.post(format!("{gateway}/v1/auth/login")).json(&creds).send().await?;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or_default();
        anyhow::Ok((status, body))
    };
    let (mut status, mut body) = attempt().await?;
    if status == 401 {
        let r = http.post(format!("{gateway}/v1/auth/register")).json(&creds).send().await?;
        let registered = r.status().as_u16();
        anyhow::ensure!(registered == 201 || registered == 409, "registering the canary user: HTTP {registered}");
        (status, body) = attempt().await?;
    }
    anyhow::ensure!(status == 200, "logging in the canary user: HTTP {status} {body}");
    body["token"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no token in {body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_reason_is_exported_from_the_start() {
        let registry = Registry::new();
        let _m = CanaryMetrics::new(&registry).unwrap();
        let mut out = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for reason in FAILURE_REASONS {
            assert!(text.contains(&format!("confab_canary_probe_failures_total{{reason=\"{reason}\"}} 0")), "{text}");
        }
        assert!(text.contains("confab_canary_probes_total 0"));
    }
}
