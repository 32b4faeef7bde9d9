//! A worker process: holds a share of the connections of a scenario, sends
//! on the open-loop schedule, and records what arrives.
//!
//! The coordinator (`scenario.rs`) talks to it in JSON lines: it writes the
//! [`Spec`] and then the commands `go <unix_ns>`, `expect <n> <ms>` and
//! `stop` to the worker's stdin; the worker answers `{"ready":..}`,
//! `{"sent":..}` and `{"report":..}` on stdout.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Dialect, Incoming, To, Ws};
use crate::payload::{self, Arrival, Streams};

/// Largest latency recorded, in microseconds (larger ones are clamped).
const MAX_LATENCY_US: u64 = 120_000_000;
/// How long a worker waits for the replies to its last sends.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections set up at once by one worker.
pub const SETUP_CONCURRENCY: usize = 64;
/// The idle plan's pushes (one per room) are spread over this long.
pub const PUSH_SPREAD_MS: u64 = 1000;
/// Text bytes of an idle plan's push.
const PUSH_SIZE: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub dialect: Dialect,
    /// Gateways' WebSocket URLs; connection `i` goes to `urls[i % len]`.
    pub urls: Vec<String>,
    pub secret: String,
    /// Source addresses; connection `i` binds `sources[i % len]`.
    pub sources: Vec<IpAddr>,
    /// Prefix of user and room names, unique per run.
    pub run: String,
    /// The global indices of the connections (and users) this worker holds.
    pub conns: Vec<u32>,
    pub plan: Plan,
    /// Connections this worker sets up at once.
    pub setup_concurrency: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// Connect, join the room of `room_size` neighbours, keep alive from
    /// `go` on; with `push`, the first member of each room sends one message
    /// to it at the time `go` names (spread over [`PUSH_SPREAD_MS`]), so
    /// every connection gets one delivery.
    Idle {
        room_size: u32,
        #[serde(default)]
        push: bool,
    },
    /// Everyone joins `room`; connections `0..publishers` each publish at `rate` per second.
    Fanout { room: String, publishers: u32, rate: f64, duration_ms: u64, size: usize },
    /// Each of `users` sends Poisson at `rate` per second to a random other user.
    Dm { users: u32, rate: f64, duration_ms: u64, size: usize },
}

pub fn user_name(run: &str, i: u32) -> String {
    format!("{run}u{i}")
}

impl Spec {
    fn rooms_of(&self, i: u32) -> Vec<String> {
        match &self.plan {
            Plan::Idle { room_size, .. } => vec![format!("{}-idle{}", self.run, i / room_size.max(&1))],
            Plan::Fanout { room, .. } => vec![room.clone()],
            Plan::Dm { .. } => match self.dialect {
                Dialect::Confab => vec![],
                Dialect::Centrifugo => vec![client::personal_channel(&user_name(&self.run, i))],
            },
        }
    }
}

/// A histogram as `(value, count)` pairs, to travel between processes.
pub type Buckets = Vec<(u64, u64)>;

pub fn buckets(h: &Histogram<u64>) -> Buckets {
    h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// What a worker reports at the end (and, partly, after its sends).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Report {
    pub connected: u64,
    pub failed: u64,
    pub setup_errors: Vec<String>,
    pub sent_ok: u64,
    pub unacked: u64,
    /// Refused sends by error code, and lost connections.
    pub errors: BTreeMap<String, u64>,
    /// Acknowledged sends per recipient (dm).
    pub sent_to: BTreeMap<u32, u64>,
    /// CQL statements per acknowledged message over the send phase
    /// (reads, writes, per table): measured by the lead, not a worker.
    #[serde(skip)]
    pub cql: Option<(f64, f64, String)>,
    /// Unique deliveries.
    pub deliveries: u64,
    pub duplicates: u64,
    /// Unique deliveries that arrived after a later one from the same sender.
    pub out_of_order: u64,
    /// A user's own direct messages echoed to its session (dm).
    pub echoes: u64,
    pub disconnects: u64,
    pub first_delivery_ns: u64,
    pub last_delivery_ns: u64,
    pub ack_us: Buckets,
    pub delivery_us: Buckets,
    /// CPU time this worker used (user + system) from `go` on, seconds: the
    /// load generator shares the machine with the server.
    #[serde(default)]
    pub cpu_secs: f64,
    /// The longest heartbeat the servers announced to this worker's connections (ms).
    #[serde(default)]
    pub heartbeat_ms: u64,
}

/// What every connection of the worker adds to.
struct Shared {
    stats: Mutex<Stats>,
    unique: AtomicU64,
    pending: AtomicU64,
    /// Connections whose schedule still has sends to make.
    sending: AtomicU64,
}

struct Stats {
    report: Report,
    ack: Histogram<u64>,
    delivery: Histogram<u64>,
}

/// The keep-alive timer of one connection: every `heartbeat`, at a phase of
/// its own, as real clients' are. In lockstep, all of them would land in
/// one instant of every heartbeat, and a measuring window would hold all of
/// them or none.
fn keepalive(heartbeat: Duration, rng: &mut impl Rng) -> tokio::time::Interval {
    let phase = heartbeat.mul_f64(rng.random::<f64>());
    tokio::time::interval_at(Instant::now() + phase.max(Duration::from_millis(1)), heartbeat)
}

/// Keeps a connection that is set up alive until `go`, and hands it back:
/// reads it (so that the WebSocket pings of the server are answered, and a
/// Centrifugo ping too) and sends the keep-alive every heartbeat. A large
/// phase takes longer to set up than a server waits for a silent client:
/// the connections set up first were closed as idle (`sessions_closed_total
/// {reason="idle"}`) before the last ones were up.
async fn hold(dialect: Dialect, mut ws: Ws, heartbeat: Duration, mut go: watch::Receiver<bool>) -> Result<Ws, String> {
    let mut keepalive = keepalive(heartbeat, &mut rand::rng());
    loop {
        tokio::select! {
            _ = go.changed() => return Ok(ws),
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let ping = text.as_str().split('\n').any(|l| matches!(client::classify(dialect, l), Incoming::Ping));
                    if ping {
                        ws.send(Message::text("{}")).await.map_err(|e| format!("answering a ping: {e}"))?;
                    }
                }
                Some(Ok(Message::Close(frame))) => return Err(format!("closed by the server: {frame:?}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("connection error: {e}")),
                None => return Err("connection closed".into()),
            },
            _ = keepalive.tick() => {
                let ping = client::ping_frame(dialect);
                if !ping.is_empty() {
                    ws.send(Message::text(ping)).await.map_err(|e| format!("keep-alive: {e}"))?;
                }
            }
        }
    }
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The worker's entry point: `confab-bench worker`, driven over stdin/stdout.
pub async fn run() -> Result<()> {
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let first = input.next_line().await?.context("no spec on stdin")?;
    let spec: Spec = serde_json::from_str(&first).context("bad spec")?;

    let mut held = Vec::new();
    let mut report = Report::default();
    // Until `go`, each connection set up is held alive (see `hold`).
    let (go_tx, go_rx) = watch::channel(false);
    {
        let setups = futures_util::stream::iter(spec.conns.iter().map(|&i| {
            let spec = &spec;
            async move {
                let url = &spec.urls[i as usize % spec.urls.len()];
                let source = spec.sources[i as usize % spec.sources.len()];
                let token = client::token(&spec.secret, &user_name(&spec.run, i));
                (i, client::setup(spec.dialect, url, source, &token, &spec.rooms_of(i)).await)
            }
        }))
        .buffer_unordered(spec.setup_concurrency.max(1));
        futures_util::pin_mut!(setups);
        while let Some((i, result)) = setups.next().await {
            match result {
                Ok((ws, heartbeat)) => {
                    held.push((i, tokio::spawn(hold(spec.dialect, ws, heartbeat, go_rx.clone())), heartbeat));
                }
                Err(e) => {
                    report.failed += 1;
                    if report.setup_errors.len() < 5 {
                        report.setup_errors.push(format!("connection {i}: {e:#}"));
                    }
                }
            }
        }
    }
    report.connected = held.len() as u64;
    report.heartbeat_ms = held.iter().map(|(_, _, hb)| hb.as_millis() as u64).max().unwrap_or(0);
    emit("ready", &report);

    let start = match command(&mut input).await?.as_slice() {
        [go, at] if go == "go" => at.parse::<u64>().context("go <unix_ns>")?,
        other => bail!("expected `go <unix_ns>`, got {other:?}"),
    };
    let _ = go_tx.send(true);
    let mut conns = Vec::with_capacity(held.len());
    for (i, task, heartbeat) in held {
        match task.await {
            Ok(Ok(ws)) => conns.push((i, ws, heartbeat)),
            Ok(Err(why)) => {
                report.disconnects += 1;
                *report.errors.entry(format!("disconnected before go: {why}")).or_default() += 1;
            }
            Err(e) => bail!("holding connection {i}: {e}"),
        }
    }
    let start = Instant::now() + Duration::from_nanos(start.saturating_sub(payload::unix_ns()));
    let cpu_at_go = crate::scenario::cpu(&[std::process::id()]);
    let shared = Arc::new(Shared {
        stats: Mutex::new(Stats { report, ack: histogram(), delivery: histogram() }),
        unique: AtomicU64::new(0),
        pending: AtomicU64::new(0),
        sending: AtomicU64::new(conns.len() as u64),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let spec = Arc::new(spec);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|(i, ws, heartbeat)| {
            let conn = Conn { i, spec: spec.clone(), shared: shared.clone(), heartbeat, start };
            tokio::spawn(conn.drive(ws, stop_rx.clone()))
        })
        .collect();

    if let Plan::Idle { push: false, .. } = spec.plan {
        match command(&mut input).await?.as_slice() {
            [stop] if stop == "stop" => {}
            other => bail!("expected `stop`, got {other:?}"),
        }
    } else {
        let duration = match spec.plan {
            Plan::Fanout { duration_ms, .. } | Plan::Dm { duration_ms, .. } => Duration::from_millis(duration_ms),
            Plan::Idle { .. } => Duration::from_millis(PUSH_SPREAD_MS),
        };
        tokio::time::sleep_until(start + duration).await;
        // The last sends, and the replies to them: wait for them, boundedly.
        let deadline = Instant::now() + ACK_TIMEOUT;
        let busy = || shared.sending.load(Ordering::Relaxed) > 0 || shared.pending.load(Ordering::Relaxed) > 0;
        while busy() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let sent = {
            let mut stats = shared.stats();
            stats.report.unacked = shared.pending.load(Ordering::Relaxed);
            stats.report.clone()
        };
        emit("sent", &sent);
        let (want, drain) = match command(&mut input).await?.as_slice() {
            [expect, n, ms] if expect == "expect" => (n.parse::<u64>()?, Duration::from_millis(ms.parse()?)),
            other => bail!("expected `expect <n> <ms>`, got {other:?}"),
        };
        let deadline = Instant::now() + drain;
        while shared.unique.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let stats = shared.stats();
    let mut report = stats.report.clone();
    report.ack_us = buckets(&stats.ack);
    report.delivery_us = buckets(&stats.delivery);
    report.sent_to.clear();
    report.cpu_secs = crate::scenario::cpu(&[std::process::id()]) - cpu_at_go;
    emit("report", &report);
    Ok(())
}

async fn command(input: &mut Lines<BufReader<Stdin>>) -> Result<Vec<String>> {
    let line = input.next_line().await?.context("the coordinator went away")?;
    Ok(line.split_whitespace().map(str::to_owned).collect())
}

fn emit(kind: &str, report: &Report) {
    let line = serde_json::to_string(&serde_json::json!({ kind: report })).expect("a report serializes");
    println!("{line}");
}

/// One connection after setup.
struct Conn {
    i: u32,
    spec: Arc<Spec>,
    shared: Arc<Shared>,
    heartbeat: Duration,
    start: Instant,
}

/// The next send of a connection: when, and to whom.
struct Next {
    at: Instant,
    to: Option<u32>,
}

impl Conn {
    fn dialect(&self) -> Dialect {
        self.spec.dialect
    }

    /// The first send of this connection, if it sends at all.
    fn first_send(&self, rng: &mut impl Rng) -> Option<Next> {
        match self.spec.plan {
            Plan::Idle { push: false, .. } => None,
            Plan::Idle { room_size, push: true } => {
                let room_size = room_size.max(1);
                self.i.is_multiple_of(room_size).then(|| {
                    // Rooms' pushes spread over PUSH_SPREAD_MS, not all at once.
                    let phase = u64::from(self.i / room_size) % PUSH_SPREAD_MS;
                    Next { at: self.start + Duration::from_millis(phase), to: None }
                })
            }
            Plan::Fanout { publishers, rate, .. } => (self.i < publishers && rate > 0.0).then(|| {
                // Publishers are spread over one interval, not in lockstep.
                let phase = f64::from(self.i) / f64::from(publishers) / rate;
                Next { at: self.start + Duration::from_secs_f64(phase), to: None }
            }),
            Plan::Dm { .. } => self.after(self.start, rng),
        }
    }

    /// The send after one scheduled at `at`, within the run's duration.
    fn after(&self, at: Instant, rng: &mut impl Rng) -> Option<Next> {
        let (next, to) = match self.spec.plan {
            Plan::Idle { .. } => return None,
            Plan::Fanout { rate, .. } => (at + Duration::from_secs_f64(1.0 / rate), None),
            Plan::Dm { users, rate, .. } => {
                if users < 2 || rate <= 0.0 {
                    return None;
                }
                // Poisson arrivals: exponential gaps.
                let gap = -(1.0 - rng.random::<f64>()).ln() / rate;
                let mut to = rng.random_range(0..users - 1);
                if to >= self.i {
                    to += 1;
                }
                (at + Duration::from_secs_f64(gap), Some(to))
            }
        };
        let end = match self.spec.plan {
            Plan::Fanout { duration_ms, .. } | Plan::Dm { duration_ms, .. } => {
                self.start + Duration::from_millis(duration_ms)
            }
            Plan::Idle { .. } => self.start,
        };
        (next < end).then_some(Next { at: next, to })
    }

    async fn drive(self, ws: Ws, mut stop: watch::Receiver<bool>) {
        let (mut sink, mut stream) = ws.split();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_rng(&mut rand::rng());
        let mut next = self.first_send(&mut rng);
        let mut scheduled = true;
        let mut done_sending = |next: &Option<Next>| {
            if next.is_none() && std::mem::take(&mut scheduled) {
                self.shared.sending.fetch_sub(1, Ordering::Relaxed);
            }
        };
        done_sending(&next);
        let size = match self.spec.plan {
            Plan::Fanout { size, .. } | Plan::Dm { size, .. } => size,
            Plan::Idle { .. } => PUSH_SIZE,
        };
        let room = match &self.spec.plan {
            Plan::Fanout { room, .. } => room.clone(),
            Plan::Idle { .. } => self.spec.rooms_of(self.i).pop().unwrap_or_default(),
            Plan::Dm { .. } => String::new(),
        };
        let me = user_name(&self.spec.run, self.i);
        // Request id → (scheduled time in Unix ns, recipient).
        let mut pending: HashMap<u64, (u64, Option<u32>)> = HashMap::new();
        let mut seq_to: HashMap<Option<u32>, u64> = HashMap::new();
        let mut streams = Streams::default();
        let mut id = 1_000u64;
        let mut heartbeat = keepalive(self.heartbeat, &mut rng);
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let lost = loop {
            let send_at = next.as_ref().map_or(far, |n| n.at);
            tokio::select! {
                _ = stop.changed() => break None,
                msg = stream.next() => {
                    let text = match msg {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(frame))) => break Some(format!("closed by the server: {frame:?}")),
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => break Some(format!("connection error: {e}")),
                        None => break Some("connection closed".into()),
                    };
                    let mut answered = true;
                    for line in text.as_str().split('\n').filter(|l| !l.is_empty()) {
                        if let Some(stamp) = payload::find(line.as_bytes()) {
                            self.delivered(&stamp, &mut streams);
                            continue;
                        }
                        match client::classify(self.dialect(), line) {
                            Incoming::Reply { id, error } => {
                                if let Some((sent_ns, to)) = pending.remove(&id) {
                                    self.shared.pending.fetch_sub(1, Ordering::Relaxed);
                                    self.replied(sent_ns, to, error);
                                }
                            }
                            Incoming::Ping => {
                                answered = sink.send(Message::text("{}")).await.is_ok();
                            }
                            Incoming::Other => {}
                        }
                    }
                    if !answered {
                        break Some("cannot answer the server's ping".into());
                    }
                }
                _ = tokio::time::sleep_until(send_at), if next.is_some() => {
                    let Some(n) = next.take() else { continue };
                    // The schedule's time, not the moment the loop got to it:
                    // a late send counts its lateness as latency.
                    let sent_ns = payload::unix_ns().saturating_sub(n.at.elapsed().as_nanos() as u64);
                    let seq = seq_to.entry(n.to).or_default();
                    let text = payload::encode(self.i, *seq, sent_ns, size);
                    *seq += 1;
                    id += 1;
                    let cid = format!("c{}x{id}", self.i);
                    let recipient = n.to.map(|t| user_name(&self.spec.run, t));
                    let to = recipient.as_deref().map_or(To::Room(&room), To::User);
                    let frame = client::send_frame(self.dialect(), id, to, &text, &cid);
                    pending.insert(id, (sent_ns, n.to));
                    self.shared.pending.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = sink.send(Message::text(frame)).await {
                        break Some(format!("send failed: {e}"));
                    }
                    next = self.after(n.at, &mut rng);
                    done_sending(&next);
                }
                _ = heartbeat.tick() => {
                    let ping = client::ping_frame(self.dialect());
                    if !ping.is_empty() && sink.send(Message::text(ping)).await.is_err() {
                        break Some(format!("{me}: heartbeat failed"));
                    }
                }
            }
        };
        done_sending(&None);
        if let Some(why) = lost {
            let mut stats = self.shared.stats();
            stats.report.disconnects += 1;
            *stats.report.errors.entry(format!("disconnected: {why}")).or_default() += 1;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    }

    fn delivered(&self, stamp: &payload::Stamp, streams: &mut Streams) {
        let now = payload::unix_ns();
        let mut stats = self.shared.stats();
        if matches!(self.spec.plan, Plan::Dm { .. }) && stamp.sender == self.i {
            stats.report.echoes += 1;
            return;
        }
        let arrival = streams.arrive(stamp);
        let r = &mut stats.report;
        match arrival {
            Arrival::Duplicate => {
                r.duplicates += 1;
                return;
            }
            Arrival::Late => r.out_of_order += 1,
            Arrival::InOrder => {}
        }
        r.deliveries += 1;
        if r.first_delivery_ns == 0 {
            r.first_delivery_ns = now;
        }
        r.last_delivery_ns = r.last_delivery_ns.max(now);
        let us = (now.saturating_sub(stamp.sent_ns) / 1000).clamp(1, MAX_LATENCY_US);
        stats.delivery.saturating_record(us);
        self.shared.unique.fetch_add(1, Ordering::Relaxed);
    }

    fn replied(&self, sent_ns: u64, to: Option<u32>, error: Option<String>) {
        let mut stats = self.shared.stats();
        match error {
            None => {
                let us = (payload::unix_ns().saturating_sub(sent_ns) / 1000).clamp(1, MAX_LATENCY_US);
                stats.ack.saturating_record(us);
                stats.report.sent_ok += 1;
                if let Some(to) = to {
                    *stats.report.sent_to.entry(to).or_default() += 1;
                }
                if let Plan::Idle { room_size, .. } = self.spec.plan {
                    // An idle plan's push: by room, for the members' expected deliveries.
                    *stats.report.sent_to.entry(self.i / room_size.max(1)).or_default() += 1;
                }
            }
            Some(code) => *stats.report.errors.entry(code).or_default() += 1,
        }
    }
}
