//! The three scenarios, run by the coordinating process: start the target,
//! spread the connections over worker processes and source addresses, step
//! the workers through setup, sending and draining, and measure the server
//! processes from /proc.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::report::{Figures, Outcome};
use crate::target::Target;
use crate::worker::{self, Plan, Report, Spec};

#[derive(Debug, Clone, clap::Args)]
pub struct Spread {
    /// Worker processes the connections are spread over (each may hold at most
    /// 20,000 file descriptors here); `idle` adds more when a phase needs them.
    #[arg(long, default_value_t = 2)]
    pub processes: usize,

    /// Source addresses 127.0.0.2, 127.0.0.3, ...: each (source, server) pair
    /// has about 28k ephemeral ports.
    #[arg(long, default_value_t = 4)]
    pub sources: u8,

    /// Connections each worker process sets up at once. With many workers
    /// on a cluster sharing the machine's cores, fewer keep the setup from
    /// starving everything (sessions set up first were closed as idle).
    #[arg(long, default_value_t = crate::worker::SETUP_CONCURRENCY)]
    pub setup_concurrency: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// The two connection counts the memory slope is taken between.
    #[arg(long, value_delimiter = ',', default_value = "2000,19000")]
    pub connections: Vec<u32>,
    /// Connections per room.
    #[arg(long, default_value_t = 20)]
    pub room_size: u32,
    /// Most connections one worker process holds.
    #[arg(long, default_value_t = 5000)]
    pub per_process: u32,
    /// Seconds to let the server settle after connecting, before reading its memory.
    #[arg(long, default_value_t = 3.0)]
    pub settle_secs: f64,
    /// Seconds over which idle CPU is measured, rounded up to a whole number
    /// of the server's heartbeats: the server pings every session in one
    /// sweep per heartbeat, so a shorter window holds that sweep or not by
    /// chance (at 19,000 connections, 0.3% or 3-5% of a core).
    #[arg(long, default_value_t = 10.0)]
    pub idle_secs: f64,
    /// After the idle window, the first member of every room sends one
    /// message to it: every connection should get one delivery, counted.
    #[arg(long)]
    pub push: bool,
    /// Longest wait for the pushes' deliveries, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub push_drain_secs: f64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Members of the one room.
    #[arg(long, default_value_t = 1000)]
    pub members: u32,
    /// Members that publish.
    #[arg(long, default_value_t = 10)]
    pub publishers: u32,
    /// Messages per second, all publishers together (deliveries/s = rate × members).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    #[command(flatten)]
    pub sending: SendingArgs,
}

/// How long the sending scenarios send, how big a message is, and how long
/// they wait for the last deliveries.
#[derive(Debug, Clone, clap::Args)]
pub struct SendingArgs {
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Message text bytes.
    #[arg(long, default_value_t = 150)]
    pub size: usize,
    /// Longest wait for the last deliveries after sending stops, seconds.
    #[arg(long, default_value_t = 15.0)]
    pub drain_secs: f64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DmArgs {
    /// Users, one connection each.
    #[arg(long, default_value_t = 400)]
    pub users: u32,
    /// Messages per second, all users together (Poisson arrivals).
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    #[command(flatten)]
    pub sending: SendingArgs,
}

/// A worker process seen from the coordinator.
struct WorkerProc {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    conns: u64,
    /// The global indices of its connections.
    indices: Vec<u32>,
}

impl WorkerProc {
    async fn spawn(spec: &Spec) -> Result<WorkerProc> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        let lines = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        stdin.write_all(format!("{}\n", serde_json::to_string(spec)?).as_bytes()).await?;
        Ok(WorkerProc { child, stdin, lines, conns: spec.conns.len() as u64, indices: spec.conns.clone() })
    }

    async fn say(&mut self, line: &str) -> Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await.context("a worker went away")
    }

    /// The next `{"<kind>": Report}` line.
    async fn expect(&mut self, kind: &str) -> Result<Report> {
        let line = self.lines.next_line().await?;
        let Some(line) = line else {
            let status = self.child.wait().await?;
            bail!("a worker exited ({status}) before sending `{kind}`");
        };
        let mut v: Value = serde_json::from_str(&line).with_context(|| format!("worker said: {line}"))?;
        Report::deserialize(v[kind].take()).with_context(|| format!("worker said: {line}"))
    }
}

fn sources(n: u8) -> Vec<IpAddr> {
    (0..n.max(1)).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i))).collect()
}

/// Connection indices `range` dealt round-robin over `workers` processes.
fn deal(range: std::ops::Range<u32>, workers: usize) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); workers.max(1)];
    for (n, i) in range.enumerate() {
        let w = n % out.len();
        out[w].push(i);
    }
    out.retain(|v| !v.is_empty());
    out
}

/// Resident memory of the processes, bytes.
pub fn rss(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum::<u64>()
        * 1024
}

/// CPU time of the processes (user + system), seconds.
pub fn cpu(pids: &[u32]) -> f64 {
    let ticks = 100.0; // USER_HZ, 100 on Linux
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|s| {
            let after = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = after.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        / ticks
}

/// The load average (1, 5, 15 minutes), recorded next to every figure.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn ready_all(workers: &mut [WorkerProc]) -> Result<Report> {
    let mut total = Report::default();
    for w in workers.iter_mut() {
        let r = w.expect("ready").await?;
        total.connected += r.connected;
        total.failed += r.failed;
        total.setup_errors.extend(r.setup_errors);
        total.heartbeat_ms = total.heartbeat_ms.max(r.heartbeat_ms);
    }
    Ok(total)
}

fn merge(into: &mut Report, r: Report, ack: &mut Histogram<u64>, delivery: &mut Histogram<u64>) {
    into.sent_ok += r.sent_ok;
    into.unacked += r.unacked;
    for (k, v) in r.errors {
        *into.errors.entry(k).or_default() += v;
    }
    into.deliveries += r.deliveries;
    into.duplicates += r.duplicates;
    into.out_of_order += r.out_of_order;
    into.echoes += r.echoes;
    into.disconnects += r.disconnects;
    if r.first_delivery_ns > 0 && (into.first_delivery_ns == 0 || r.first_delivery_ns < into.first_delivery_ns) {
        into.first_delivery_ns = r.first_delivery_ns;
    }
    into.last_delivery_ns = into.last_delivery_ns.max(r.last_delivery_ns);
    into.cpu_secs += r.cpu_secs;
    for (v, n) in r.ack_us {
        let _ = ack.record_n(v, n);
    }
    for (v, n) in r.delivery_us {
        let _ = delivery.record_n(v, n);
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() { f64::NAN } else { h.value_at_quantile(q) as f64 / 1000.0 }
}

fn spec(target: &Target, run: &str, spread: &Spread, conns: Vec<u32>, plan: Plan) -> Spec {
    Spec {
        dialect: target.dialect,
        urls: target.urls.clone(),
        secret: target.secret.clone(),
        sources: sources(spread.sources),
        run: run.to_owned(),
        conns,
        plan,
        setup_concurrency: spread.setup_concurrency,
    }
}

/// How many of the connections `0..n` go to gateway `g` of `gateways`
/// (connection `i` goes to `urls[i % gateways]`).
fn share(n: u32, g: usize, gateways: usize) -> u64 {
    let (n, g, k) = (u64::from(n), g as u64, gateways.max(1) as u64);
    n / k + u64::from(g < n % k)
}

/// CPU seconds of each process.
fn cpus(procs: &[(String, u32)]) -> Vec<f64> {
    procs.iter().map(|(_, pid)| cpu(&[*pid])).collect()
}

/// Resident bytes of each process.
fn rsss(procs: &[(String, u32)]) -> Vec<u64> {
    procs.iter().map(|(_, pid)| rss(&[*pid])).collect()
}

pub async fn idle(target: &mut Target, run: &str, spread: &Spread, a: &IdleArgs) -> Result<Outcome> {
    let (n1, n2) = match a.connections.as_slice() {
        [n1, n2] if n1 < n2 => (*n1, *n2),
        _ => bail!("--connections takes two counts, the smaller first (e.g. 2000,19000)"),
    };
    let gateways = target.gateway_pids.clone();
    let servers = target.processes.clone();
    let mut f = Figures::default();
    let rss0 = rss(&gateways);
    f.add("gateway RSS before connecting", rss0 as f64 / 1e6, "MB");
    // The pushes wait until the idle window is over.

    let mut workers = Vec::new();
    let mut setup = Report::default();
    let mut at = Vec::new();
    let mut proc_rss = Vec::new();
    for (from, to) in [(0, n1), (n1, n2)] {
        let procs = (to - from).div_ceil(a.per_process.max(1)) as usize;
        let plan = Plan::Idle { room_size: a.room_size, push: a.push };
        let mut phase = Vec::new();
        for conns in deal(from..to, procs.max(spread.processes.min((to - from) as usize))) {
            phase.push(WorkerProc::spawn(&spec(target, run, spread, conns, plan.clone())).await?);
        }
        let r = ready_all(&mut phase).await?;
        setup.connected += r.connected;
        setup.failed += r.failed;
        setup.setup_errors.extend(r.setup_errors);
        setup.heartbeat_ms = setup.heartbeat_ms.max(r.heartbeat_ms);
        workers.extend(phase);
        tokio::time::sleep(Duration::from_secs_f64(a.settle_secs)).await;
        at.push((setup.connected, rss(&gateways)));
        proc_rss.push(rsss(&servers));
    }
    let rss_at = proc_rss[1].clone();
    // Whole heartbeats: each holds one sweep of the server's pings and one
    // keep-alive of every client.
    let idle_secs = match setup.heartbeat_ms {
        0 => a.idle_secs,
        hb => {
            let hb = hb as f64 / 1000.0;
            (a.idle_secs / hb).ceil().max(1.0) * hb
        }
    };
    // The pushes (if any) begin a second after the idle window.
    let push_at = crate::payload::unix_ns() + ((idle_secs + 1.0) * 1e9) as u64;
    for w in &mut workers {
        w.say(&format!("go {push_at}")).await?;
    }
    let cpu0 = cpu(&gateways);
    let proc_cpu0 = cpus(&servers);
    tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
    let idle_cpu_secs = cpu(&gateways) - cpu0;
    let proc_cpu1 = cpus(&servers);
    let idle_cpu = idle_cpu_secs / idle_secs * 100.0;
    let rss_end = rss(&gateways);
    let mut total = Report::default();
    let (mut h1, mut h2) = (worker::histogram(), worker::histogram());
    let mut pushed = None;
    if a.push {
        // Each worker expects one delivery per connection whose room's push was acknowledged.
        let mut sent = Report::default();
        let mut by_room: BTreeMap<u32, u64> = BTreeMap::new();
        for w in &mut workers {
            let r = w.expect("sent").await?;
            sent.sent_ok += r.sent_ok;
            sent.unacked += r.unacked;
            for (room, n) in r.sent_to {
                *by_room.entry(room).or_default() += n;
            }
        }
        let room_size = a.room_size.max(1);
        let drain = Duration::from_secs_f64(a.push_drain_secs);
        let mut expected = 0;
        for w in &mut workers {
            let want: u64 = w.indices.iter().map(|i| by_room.get(&(i / room_size)).copied().unwrap_or(0)).sum();
            expected += want;
            w.say(&format!("expect {want} {}", drain.as_millis())).await?;
        }
        for w in &mut workers {
            merge(&mut total, w.expect("report").await?, &mut h1, &mut h2);
        }
        pushed = Some((sent, expected, u64::from(n2.div_ceil(room_size)), cpus(&servers)));
    } else {
        for w in &mut workers {
            w.say("stop").await?;
        }
        for w in &mut workers {
            merge(&mut total, w.expect("report").await?, &mut h1, &mut h2);
        }
    }
    let [(c1, r1), (c2, r2)] = [at[0], at[1]];
    f.add(&format!("gateway RSS at {c1} connections"), r1 as f64 / 1e6, "MB");
    f.add(&format!("gateway RSS at {c2} connections"), r2 as f64 / 1e6, "MB");
    let slope = if c2 > c1 { (r2 as f64 - r1 as f64) / (c2 - c1) as f64 } else { f64::NAN };
    f.add("gateway RSS per connection (slope)", slope / 1000.0, "KB");
    f.add("gateway RSS after the idle window", rss_end as f64 / 1e6, "MB");
    f.add("gateway CPU while idle", idle_cpu, "% of a core");
    let per_conn = if c2 > 0 { idle_cpu_secs / idle_secs / c2 as f64 * 1e6 } else { f64::NAN };
    f.add("gateway CPU while idle, per connection", per_conn, "µs/s");
    f.add("connections set up", setup.connected as f64, "");
    f.add("connections refused or failed", setup.failed as f64, "");
    f.add("connections lost while idle", total.disconnects as f64, "");
    f.add("worker processes", workers.len() as f64, "");
    f.add("idle window (whole heartbeats)", idle_secs, "s");
    let mut ok = setup.failed == 0 && total.disconnects == 0 && setup.connected == u64::from(n2);
    if let Some((sent, expected, rooms, _)) = &pushed {
        let push_cpu = pushed.as_ref().map_or(0.0, |p| p.3.iter().sum::<f64>() - proc_cpu1.iter().sum::<f64>());
        f.add("push: messages acknowledged (one per room)", sent.sent_ok as f64, "");
        f.add("push: deliveries", total.deliveries as f64, "");
        f.add("push: lost", expected.saturating_sub(total.deliveries) as f64, "");
        f.add("push: duplicated", total.duplicates as f64, "");
        f.add("push: delivery latency p50", ms(&h2, 0.5), "ms");
        f.add("push: delivery latency p99", ms(&h2, 0.99), "ms");
        f.add("push: delivery latency max", ms(&h2, 1.0), "ms");
        let per = if total.deliveries > 0 { push_cpu / total.deliveries as f64 * 1e6 } else { f64::NAN };
        f.add("push: server CPU per delivery (all processes)", per, "µs");
        ok &= sent.sent_ok == *rooms && total.deliveries == *expected && *expected == u64::from(n2);
        ok &= total.duplicates == 0;
    }
    // Each process of a cluster on its own.
    if servers.len() > 1 {
        let g_count = gateways.len();
        let mut g = 0;
        for (k, (role, pid)) in servers.iter().enumerate() {
            let is_gateway = gateways.contains(pid);
            let idle = (proc_cpu1[k] - proc_cpu0[k]) / idle_secs;
            f.add(&format!("{role}: RSS at the end of setup"), rss_at[k] as f64 / 1e6, "MB");
            f.add(&format!("{role}: CPU while idle"), idle * 100.0, "% of a core");
            if is_gateway {
                let conns = share(n2, g, g_count);
                g += 1;
                f.add(&format!("{role}: connections"), conns as f64, "");
                let more = conns.saturating_sub(share(n1, g - 1, g_count));
                let grew = rss_at[k] as f64 - proc_rss[0][k] as f64;
                let per = if more > 0 { grew / more as f64 / 1000.0 } else { f64::NAN };
                f.add(&format!("{role}: RSS per connection (slope)"), per, "KB");
                let per = if conns > 0 { idle / conns as f64 * 1e6 } else { f64::NAN };
                f.add(&format!("{role}: CPU while idle, per connection"), per, "µs/s");
            }
            if let Some((_, _, _, after)) = &pushed {
                f.add(&format!("{role}: CPU for the push"), (after[k] - proc_cpu1[k]) * 1000.0, "ms");
            }
        }
    }
    Ok(Outcome { figures: f, errors: errors(&setup, &total), ok })
}

/// The counts every sending scenario ends its figures with, and whether the
/// run was clean: every expected delivery once, every connection set up.
fn outcome(mut f: Figures, setup: &Report, total: &Report, expected: u64, server_cpu: f64, wall: f64) -> Outcome {
    f.add("messages acknowledged", setup.sent_ok as f64, "");
    f.add("deliveries", total.deliveries as f64, "");
    f.add("lost", expected.saturating_sub(total.deliveries) as f64, "");
    f.add("duplicated", total.duplicates as f64, "");
    f.add("out of order", total.out_of_order as f64, "");
    f.add("sends refused or unanswered", (total.errors.values().sum::<u64>() + total.unacked) as f64, "");
    f.add("server CPU (all processes)", server_cpu, "% of a core");
    f.add("load generator CPU (all workers)", total.cpu_secs / wall * 100.0, "% of a core");
    if let Some((reads, writes, tables)) = &total.cql {
        f.add("CQL reads per message", *reads, "");
        f.add("CQL writes per message", *writes, "");
        eprintln!("bench: CQL statements per message by table: {tables}");
    }
    let ok = setup.failed == 0 && total.deliveries == expected && total.duplicates == 0 && expected > 0;
    Outcome { figures: f, errors: errors(setup, total), ok }
}

fn errors(setup: &Report, total: &Report) -> Vec<String> {
    let mut out = setup.setup_errors.clone();
    out.extend(total.errors.iter().map(|(k, v)| format!("{v} × {k}")));
    out
}

/// The part every sending scenario shares: set up, go, sent, expect, report.
async fn send_phase(
    target: &mut Target,
    workers: &mut [WorkerProc],
    drain: Duration,
    expected: impl Fn(usize, &WorkerProc, &Report) -> u64,
) -> Result<(Report, Report, Histogram<u64>, Histogram<u64>, f64, f64, f64)> {
    let setup = ready_all(workers).await?;
    let cql0 = target.cql_counts().await;
    let start = crate::payload::unix_ns() + 500_000_000;
    let cpu0 = cpu(&target.all_pids);
    let t0 = std::time::Instant::now();
    for w in workers.iter_mut() {
        w.say(&format!("go {start}")).await?;
    }
    let mut sent = Report::default();
    let mut sent_to: BTreeMap<u32, u64> = BTreeMap::new();
    let mut per_worker = Vec::new();
    for w in workers.iter_mut() {
        let r = w.expect("sent").await?;
        sent.sent_ok += r.sent_ok;
        sent.unacked += r.unacked;
        for (k, v) in &r.sent_to {
            *sent_to.entry(*k).or_default() += v;
        }
        per_worker.push(r);
    }
    sent.sent_to = sent_to;
    for (n, w) in workers.iter_mut().enumerate() {
        let want = expected(n, w, &sent);
        w.say(&format!("expect {want} {}", drain.as_millis())).await?;
    }
    let mut total = Report::default();
    let (mut ack, mut delivery) = (worker::histogram(), worker::histogram());
    for w in workers.iter_mut() {
        merge(&mut total, w.expect("report").await?, &mut ack, &mut delivery);
    }
    let wall = t0.elapsed().as_secs_f64();
    let server_cpu = (cpu(&target.all_pids) - cpu0) / wall * 100.0;
    if let (Some(before), Some(after)) = (cql0, target.cql_counts().await) {
        total.cql = cql_per_message(&before, &after, sent.sent_ok);
    }
    total.sent_to = sent.sent_to.clone();
    total.first_delivery_ns = total.first_delivery_ns.max(start);
    let mut setup = setup;
    setup.sent_ok = sent.sent_ok;
    Ok((setup, total, ack, delivery, server_cpu, start as f64, wall))
}

/// CQL statements per acknowledged message between two counts:
/// `(reads, writes, the tables written, most first)`.
fn cql_per_message(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
    messages: u64,
) -> Option<(f64, f64, String)> {
    if messages == 0 {
        return None;
    }
    let delta = |t: &String, c: &(u64, u64)| {
        let b = before.get(t).copied().unwrap_or_default();
        (c.0.saturating_sub(b.0), c.1.saturating_sub(b.1))
    };
    let mut tables: Vec<(String, u64, u64)> =
        after.iter().map(|(t, c)| (t.clone(), delta(t, c).0, delta(t, c).1)).collect();
    let reads: u64 = tables.iter().map(|t| t.1).sum();
    let writes: u64 = tables.iter().map(|t| t.2).sum();
    tables.retain(|t| t.1 + t.2 > 0);
    tables.sort_by_key(|t| std::cmp::Reverse(t.1 + t.2));
    let per = |n: u64| n as f64 / messages as f64;
    let named: Vec<String> = tables.iter().map(|(t, r, w)| format!("{t} r{:.2} w{:.2}", per(*r), per(*w))).collect();
    Some((per(reads), per(writes), named.join(", ")))
}

pub async fn fanout(target: &mut Target, run: &str, spread: &Spread, a: &FanoutArgs) -> Result<Outcome> {
    if a.publishers == 0 || a.publishers > a.members || a.rate <= 0.0 {
        bail!("fanout needs 1 ≤ --publishers ≤ --members and a positive --rate");
    }
    let plan = Plan::Fanout {
        room: format!("{run}-fan"),
        publishers: a.publishers,
        rate: a.rate / f64::from(a.publishers),
        duration_ms: (a.sending.duration_secs * 1000.0) as u64,
        size: a.sending.size,
    };
    let mut workers = Vec::new();
    for conns in deal(0..a.members, spread.processes) {
        workers.push(WorkerProc::spawn(&spec(target, run, spread, conns, plan.clone())).await?);
    }
    let drain = Duration::from_secs_f64(a.sending.drain_secs);
    let (setup, total, ack, delivery, server_cpu, start, wall) =
        send_phase(target, &mut workers, drain, |_, w, sent| w.conns * sent.sent_ok).await?;
    let expected = u64::from(a.members) * setup.sent_ok;
    let span = (total.last_delivery_ns as f64 - start) / 1e9;
    let mut f = Figures::default();
    f.add("offered deliveries/s", a.rate * f64::from(a.members), "/s");
    f.add("deliveries/s", if span > 0.0 { total.deliveries as f64 / span } else { 0.0 }, "/s");
    f.add("delivery latency p50", ms(&delivery, 0.5), "ms");
    f.add("delivery latency p99", ms(&delivery, 0.99), "ms");
    f.add("delivery latency p99.9", ms(&delivery, 0.999), "ms");
    f.add("delivery latency max", ms(&delivery, 1.0), "ms");
    f.add("send→ack p50", ms(&ack, 0.5), "ms");
    f.add("send→ack p99", ms(&ack, 0.99), "ms");
    Ok(outcome(f, &setup, &total, expected, server_cpu, wall))
}

pub async fn dm(target: &mut Target, run: &str, spread: &Spread, a: &DmArgs) -> Result<Outcome> {
    if a.users < 2 || a.rate <= 0.0 {
        bail!("dm needs at least 2 --users and a positive --rate");
    }
    let names: Vec<String> = (0..a.users).map(|i| worker::user_name(run, i)).collect();
    target.register(&names).await?;
    let plan = Plan::Dm {
        users: a.users,
        rate: a.rate / f64::from(a.users),
        duration_ms: (a.sending.duration_secs * 1000.0) as u64,
        size: a.sending.size,
    };
    let dealt = deal(0..a.users, spread.processes);
    let mut workers = Vec::new();
    let mut owned = Vec::new();
    for conns in dealt {
        owned.push(conns.clone());
        workers.push(WorkerProc::spawn(&spec(target, run, spread, conns, plan.clone())).await?);
    }
    let drain = Duration::from_secs_f64(a.sending.drain_secs);
    // Each worker expects the acknowledged messages addressed to its users.
    let index: std::collections::HashMap<u32, usize> =
        owned.iter().enumerate().flat_map(|(w, c)| c.iter().map(move |&i| (i, w))).collect();
    let (setup, total, ack, delivery, server_cpu, _start, wall) =
        send_phase(target, &mut workers, drain, |w, _, sent| {
            sent.sent_to.iter().filter(|(to, _)| index.get(to) == Some(&w)).map(|(_, n)| n).sum()
        })
        .await?;
    let expected: u64 = total.sent_to.values().sum();
    let mut f = Figures::default();
    f.add("offered messages/s", a.rate, "/s");
    f.add("send→ack p50", ms(&ack, 0.5), "ms");
    f.add("send→ack p99", ms(&ack, 0.99), "ms");
    f.add("send→ack p99.9", ms(&ack, 0.999), "ms");
    f.add("send→delivery p50", ms(&delivery, 0.5), "ms");
    f.add("send→delivery p99", ms(&delivery, 0.99), "ms");
    f.add("send→delivery p99.9", ms(&delivery, 0.999), "ms");
    f.add("send→delivery max", ms(&delivery, 1.0), "ms");
    Ok(outcome(f, &setup, &total, expected, server_cpu, wall))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_dealt_evenly_and_empty_workers_dropped() {
        assert_eq!(deal(0..5, 2), vec![vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(deal(0..1, 3), vec![vec![0]]);
        assert_eq!(deal(10..12, 1), vec![vec![10, 11]]);
    }

    #[test]
    fn each_gateway_gets_its_round_robin_share_of_the_connections() {
        // Connection i goes to gateway i % 3: 0..10 gives 4, 3, 3.
        assert_eq!((0..3).map(|g| share(10, g, 3)).collect::<Vec<_>>(), vec![4, 3, 3]);
        assert_eq!(share(100_000, 5, 6), 16_666);
        assert_eq!((0..6).map(|g| share(100_000, g, 6)).sum::<u64>(), 100_000);
        assert_eq!(share(7, 0, 1), 7);
        assert_eq!(share(7, 0, 0), 7, "no gateway count is one gateway");
    }

    #[test]
    fn the_servers_own_memory_and_cpu_are_read_from_proc() {
        let me = std::process::id();
        assert!(rss(&[me]) > 1_000_000);
        // CPU time grows with work: burn some, and the reading must follow.
        let before = cpu(&[me]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut x = 0u64;
        while cpu(&[me]) < before + 0.05 {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
            }
            assert!(std::time::Instant::now() < deadline, "/proc/{me}/stat never showed 50 ms more CPU time");
        }
        std::hint::black_box(x);
        assert_eq!(cpu(&[u32::MAX]), 0.0, "a process that does not exist used no CPU");
    }
}
