//! Real `confab` processes for the drills that stop and kill them
//! (`failures.rs`, `jepsen.rs`): a cluster of gateway and dispatcher
//! processes on the real Kafka and Cassandra, `scripts/infra` to stop and
//! start those, and a writer that retries each send with its cid until acked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{Client, SECRET};

pub const BIN: &str = env!("CARGO_BIN_EXE_confab");
pub const PARTITIONS: u32 = 4;
/// The gateways' `--produce-timeout-ms` and `--drain-grace-ms`.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_millis(2000);
pub const DRAIN_GRACE: Duration = Duration::from_millis(3000);
/// How long a client waits for a reply before it counts it as lost.
pub const REPLY_WAIT: Duration = Duration::from_secs(4);
/// The most one drill may take, start-up included; it fails after that
/// instead of hanging the run (a Kafka or Cassandra restart is most of it;
/// the Kafka drill took 149 s on a machine with a load of 14 on 2 cores).
pub const DRILL_LIMIT: Duration = Duration::from_secs(240);
/// How long any single thing a drill waits for may take.
pub const WAIT: Duration = Duration::from_secs(60);

/// One drill at a time: they stop servers the others use.
pub static DRILL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a drill within [`DRILL_LIMIT`]. Everything the drill holds (its
/// processes, a stopped server's [`Restore`]) is dropped when it fails or
/// times out, without a panic, so the drills after it run.
pub async fn drill(name: &str, body: impl std::future::Future<Output = ()>) {
    let _one = DRILL.lock().await;
    let started = Instant::now();
    tokio::time::timeout(DRILL_LIMIT, body)
        .await
        .unwrap_or_else(|_| panic!("drill `{name}` did not end within {DRILL_LIMIT:?}"));
    eprintln!("drill `{name}`: {:.1} s", started.elapsed().as_secs_f64());
}

pub fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run `scripts/infra up kafka cql` and `source target/infra/env`"))
}

pub fn try_infra(action: &str, what: &str) -> Result<(), String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/infra");
    match Command::new(script).args([action, what]).stdout(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("scripts/infra {action} {what}: {s}")),
        Err(e) => Err(format!("scripts/infra {action} {what}: {e}")),
    }
}

pub fn infra(action: &str, what: &str) {
    try_infra(action, what).unwrap_or_else(|e| panic!("{e}"));
}

/// Brings a stopped server back even when a drill fails half-way, so the
/// drills after it find it running. Never panics: a panic in `drop` while a
/// failed drill unwinds would abort the whole test binary.
pub struct Restore(pub &'static str);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = try_infra("up", self.0) {
            eprintln!("could not bring {} back after the drill: {e}", self.0);
        }
    }
}

/// A `confab` process whose addresses are read from its log.
pub struct Proc {
    pub child: Child,
    pub addrs: HashMap<&'static str, String>,
}

impl Proc {
    pub fn spawn(args: &[String], wants: &[&'static str]) -> Proc {
        Proc::spawn_env(args, wants, &[])
    }

    /// [`Proc::spawn`] with more environment variables.
    pub fn spawn_env(args: &[String], wants: &[&'static str], envs: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .env("NO_COLOR", "1")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("confab starts");
        // Lines are read on a thread of their own (for the process's whole
        // life: a full pipe would block it), and waited for with a deadline.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut addrs = HashMap::new();
        while addrs.len() < wants.len() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    for want in wants {
                        if let Some(rest) = line.split(&format!(": {want} on http://")).nth(1) {
                            addrs.insert(*want, rest.trim().to_owned());
                        }
                    }
                }
                Err(_) => {
                    let exited = child.try_wait();
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("confab {args:?} did not log {wants:?} within {WAIT:?} (exited: {exited:?})");
                }
            }
        }
        Proc { child, addrs }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.pid().to_string()]).status();
        assert!(status.as_ref().is_ok_and(|s| s.success()), "kill {signal} {}: {status:?}", self.pid());
    }

    /// The process's exit status, once it has exited; `None` if it is still
    /// running after `limit`.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.addrs["admin listening"]);
        let get = async { reqwest::get(url).await?.text().await };
        tokio::time::timeout(Duration::from_secs(10), get).await.expect("/metrics in time").expect("/metrics")
    }

    /// The value of one series (name and labels as printed), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
    }

    /// `confab_consumer_lag_records` by partition: the partitions a
    /// dispatcher owns, as it last reported them.
    pub async fn lag_by_partition(&self) -> BTreeMap<u32, f64> {
        let prefix = "confab_consumer_lag_records{partition=\"";
        let text = self.metrics().await;
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(prefix)?;
                let (p, v) = rest.split_once("\"}")?;
                Some((p.parse().ok()?, v.trim().parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Cluster {
    pub gateways: Vec<Proc>,
    pub dispatchers: Vec<Proc>,
    pub backend: Vec<String>,
    pub _keyspace: super::cluster::Keyspace,
    /// Gateway 0's link to Kafka, when it runs in a network namespace of
    /// its own ([`Cluster::start_partitionable`]).
    pub partition: Option<super::netns::Partition>,
}

impl Cluster {
    /// A cluster whose gateways queue at most 16 frames per session.
    pub async fn start(gateways: usize, dispatchers: usize) -> Cluster {
        Cluster::start_with(gateways, dispatchers, &["--outbound-queue", "16"]).await
    }

    /// A cluster with more flags for its gateways.
    pub async fn start_with(gateways: usize, dispatchers: usize, gateway_flags: &[&str]) -> Cluster {
        let (kafka, cql) = (env("KAFKA_BOOTSTRAP"), env("CQL_CONTACT_POINTS"));
        Cluster::start_on(&kafka, &cql, &[], gateways, dispatchers, gateway_flags).await
    }

    /// A cluster on the Kafka at `kafka` and the CQL nodes at `cql`,
    /// `confab migrate` given `migrate_flags` too.
    pub async fn start_on(
        kafka: &str,
        cql: &str,
        migrate_flags: &[&str],
        gateways: usize,
        dispatchers: usize,
        gateway_flags: &[&str],
    ) -> Cluster {
        Cluster::start_inner(kafka, cql, migrate_flags, gateways, dispatchers, gateway_flags, false).await
    }

    /// A cluster on `KAFKA_BOOTSTRAP` and `CQL_CONTACT_POINTS` whose gateway
    /// 0 runs in a network namespace of its own, its link to Kafka in
    /// [`Cluster::partition`] (see `netns.rs`; needs root).
    pub async fn start_partitionable(gateways: usize, dispatchers: usize, gateway_flags: &[&str]) -> Cluster {
        let (kafka, cql) = (env("KAFKA_BOOTSTRAP"), env("CQL_CONTACT_POINTS"));
        Cluster::start_inner(&kafka, &cql, &[], gateways, dispatchers, gateway_flags, true).await
    }

    async fn start_inner(
        kafka: &str,
        cql: &str,
        migrate_flags: &[&str],
        gateways: usize,
        dispatchers: usize,
        gateway_flags: &[&str],
        netns_gateway0: bool,
    ) -> Cluster {
        let (prefix, keyspace) = super::cluster::names_on("drill", cql);
        let backend: Vec<String> =
            ["--kafka", kafka, "--topic-prefix", &prefix, "--cql", cql, "--keyspace", &keyspace.name]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let mut migrate = vec!["migrate".to_owned(), "--partitions".into(), PARTITIONS.to_string()];
        migrate.extend(backend.iter().cloned());
        migrate.extend(migrate_flags.iter().map(|f| f.to_string()));
        let out = Command::new(BIN).args(&migrate).output().expect("confab migrate runs");
        assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
        let mut cluster =
            Cluster { gateways: Vec::new(), dispatchers: Vec::new(), backend, _keyspace: keyspace, partition: None };
        for _ in 0..dispatchers {
            cluster.add_dispatcher();
        }
        for i in 0..gateways {
            let mut args: Vec<String> = vec!["gateway".into(), "--jwt-secret".into(), SECRET.into()];
            args.extend(["--server-id".into(), format!("gw-{i}"), "--rate-burst".into(), "10000".into()]);
            args.extend(["--produce-timeout-ms".into(), PRODUCE_TIMEOUT.as_millis().to_string()]);
            args.extend(["--drain-grace-ms".into(), DRAIN_GRACE.as_millis().to_string()]);
            args.extend(["--rate-per-second", "10000"].map(String::from));
            args.extend(gateway_flags.iter().map(|f| f.to_string()));
            args.extend(cluster.backend.iter().cloned());
            if netns_gateway0 && i == 0 {
                let addrs = |list: &str| -> Vec<std::net::SocketAddr> {
                    list.split(',').map(|a| a.trim().parse().expect("an IP:port address")).collect()
                };
                let (proc, partition) = super::netns::spawn_gateway(&args, &addrs(kafka), &addrs(cql));
                cluster.gateways.push(proc);
                cluster.partition = Some(partition);
                continue;
            }
            args.extend(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"].map(String::from));
            args.extend(["--internal-listen", "127.0.0.1:0"].map(String::from));
            cluster.gateways.push(Proc::spawn(&args, &["listening", "admin listening"]));
        }
        cluster
    }

    pub fn add_dispatcher(&mut self) {
        let mut args: Vec<String> = ["dispatcher", "--admin-listen", "127.0.0.1:0", "--jwt-secret", SECRET]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(self.backend.iter().cloned());
        self.dispatchers.push(Proc::spawn(&args, &["admin listening"]));
    }

    /// The value of `flag` in the backend flags (`--topic-prefix`, ...).
    pub fn backend_flag(&self, flag: &str) -> &str {
        let at = self.backend.iter().position(|f| f == flag).expect("a backend flag");
        &self.backend[at + 1]
    }

    pub fn public(&self, g: usize) -> String {
        self.gateways[g].addrs["listening"].clone()
    }

    /// The dispatcher that owns `partition`, from the partitions each one
    /// reports lag for, once their reports agree: every partition owned by
    /// exactly one dispatcher (the gauges are refreshed every 10 s, so this
    /// waits out the consumer group's first rebalances).
    pub async fn owner_of(&self, partition: u32) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut owners: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
            for (d, proc) in self.dispatchers.iter().enumerate() {
                for p in proc.lag_by_partition().await.into_keys() {
                    owners.entry(p).or_default().push(d);
                }
            }
            let settled = owners.len() == PARTITIONS as usize && owners.values().all(|o| o.len() == 1);
            if settled {
                return owners[&partition][0];
            }
            assert!(Instant::now() < deadline, "the dispatchers never agreed on who owns what: {owners:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub async fn register(&self, g: usize, user: &str) -> String {
        let http = reqwest::Client::new();
        let base = format!("http://{}", self.public(g));
        let creds = json!({"username": user, "password": "password-123"});
        let deadline = Instant::now() + WAIT;
        // The cluster may still be settling (consumer group, push links).
        loop {
            let r = http.post(format!("{base}/v1/auth/register")).json(&creds).timeout(REPLY_WAIT).send().await;
            if r.is_ok_and(|r| r.status() == 201 || r.status() == 409) {
                break;
            }
            assert!(Instant::now() < deadline, "registration never worked");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let login = http.post(format!("{base}/v1/auth/login")).json(&creds).timeout(REPLY_WAIT).send();
        let login: Value = login.await.expect("login").json().await.expect("login reply");
        login["token"].as_str().expect("a token").to_owned()
    }
}

/// A client that sends a numbered stream and retries each message with its
/// cid until acked, moving to the next gateway when its own fails.
pub struct Writer {
    pub gateways: Vec<String>,
    pub current: usize,
    pub token: String,
    pub room: String,
    pub client: Option<Client>,
    pub acked: Vec<(String, u64)>,
    /// When each message of `acked` was acknowledged.
    pub acked_at: Vec<Instant>,
    /// Requests sent again after a lost reply, an `unavailable` or a lost connection.
    pub retries: usize,
    /// Connections opened (the first included).
    pub connects: usize,
    /// Put before each cid: cids are unique per room, not per sender, so
    /// writers in one room need cids of their own.
    pub cid_prefix: String,
}

impl Writer {
    pub async fn new(cluster: &Cluster, user: &str, room: &str) -> Writer {
        Writer::on(cluster, 0, user, room).await
    }

    /// A writer whose first connection is to gateway `g`.
    pub async fn on(cluster: &Cluster, g: usize, user: &str, room: &str) -> Writer {
        let token = cluster.register(g, user).await;
        let gateways = (0..cluster.gateways.len()).map(|g| cluster.public(g)).collect();
        let mut w = Writer {
            gateways,
            current: g,
            token,
            room: room.to_owned(),
            client: None,
            acked: Vec::new(),
            acked_at: Vec::new(),
            retries: 0,
            connects: 0,
            cid_prefix: String::new(),
        };
        w.request_until_ok(json!({"op": "join", "room": room})).await;
        w
    }

    pub async fn connect(&mut self) -> &mut Client {
        if self.client.is_none() {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let url = format!("ws://{}/v1/ws?token={}", self.gateways[self.current], self.token);
                if let Ok(Ok((ws, _))) =
                    tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url)).await
                    && let Some(client) = Client::try_from_stream(ws).await
                {
                    self.client = Some(client);
                    self.connects += 1;
                    break;
                }
                assert!(Instant::now() < deadline, "no gateway took a connection for 120 s");
                self.current = (self.current + 1) % self.gateways.len();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        self.client.as_mut().expect("connected")
    }

    /// Sends `req` once and waits for its reply; `None` when the reply or
    /// the connection was lost.
    pub async fn once(&mut self, req: &Value, id: &Value) -> Option<Value> {
        let mut frame = req.clone();
        frame["id"] = id.clone();
        let client = self.connect().await;
        client.ws.send(Message::Text(frame.to_string().into())).await.ok()?;
        tokio::time::timeout(REPLY_WAIT, reply(client, id)).await.ok()?
    }

    /// Sends until an `ok` reply; a lost reply, `unavailable` or a closed
    /// connection is retried, the connection moving on to the next gateway.
    pub async fn request_until_ok(&mut self, req: Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(150);
        let mut n = 0u64;
        loop {
            assert!(Instant::now() < deadline, "{req} was never acknowledged");
            n += 1;
            let id = json!(format!("r{n}"));
            match self.once(&req, &id).await {
                Some(r) if r["ok"] == true => return r,
                Some(r) => assert_eq!(r["error"]["code"], "unavailable", "{req} -> {r}"),
                None => self.lose_connection(),
            }
            self.retries += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A lost reply or connection: a new connection, maybe elsewhere.
    pub fn lose_connection(&mut self) {
        self.client = None;
        self.current = (self.current + 1) % self.gateways.len();
    }

    /// The cid of message `i`: `m{i}` after [`Writer::cid_prefix`].
    pub fn cid(&self, i: usize) -> String {
        format!("{}m{i}", self.cid_prefix)
    }

    pub fn send_request(&self, i: usize, text: &str) -> Value {
        json!({"op": "send", "room": self.room, "text": text, "cid": self.cid(i)})
    }

    pub async fn send(&mut self, i: usize) {
        self.send_text(i, &format!("message {i}")).await;
    }

    pub async fn send_text(&mut self, i: usize, text: &str) {
        let r = self.request_until_ok(self.send_request(i, text)).await;
        self.acked.push((self.cid(i), r["seq"].as_u64().expect("a seq")));
        self.acked_at.push(Instant::now());
    }

    /// Sends messages `range` on one connection with up to `window` sends
    /// in flight (pipelined cids), one every `pace` at most. A send whose
    /// reply is lost, or `unavailable`, or whose connection closes, is sent
    /// again with its cid (every one in flight on a lost connection, on the
    /// next gateway). `on_ack(acked, in_flight)` runs after each ack.
    pub async fn pipelined(
        &mut self,
        range: std::ops::Range<usize>,
        window: usize,
        pace: Duration,
        mut on_ack: impl FnMut(usize, usize),
    ) {
        let deadline = Instant::now() + Duration::from_secs(150);
        let mut next = range.start;
        let mut last_sent: Option<Instant> = None;
        let mut attempt = 0u64;
        // In flight: message -> when it was last sent; queued: to send again.
        let mut in_flight: BTreeMap<usize, Instant> = BTreeMap::new();
        let mut again: BTreeSet<usize> = BTreeSet::new();
        let mut acked: BTreeMap<usize, (u64, Instant)> = BTreeMap::new();
        while acked.len() < range.len() {
            assert!(Instant::now() < deadline, "{} of {} sends acked in 150 s", acked.len(), range.len());
            self.connect().await;
            // Fill the window: sends to repeat first, then new ones.
            let mut lost = false;
            while in_flight.len() < window && !lost {
                let i = match again.pop_first() {
                    Some(i) => i,
                    None if next < range.end && last_sent.is_none_or(|t| t.elapsed() >= pace) => {
                        next += 1;
                        next - 1
                    }
                    None => break,
                };
                attempt += 1;
                let mut frame = self.send_request(i, &format!("message {i}"));
                frame["id"] = json!(format!("p{i}.{attempt}"));
                let client = self.client.as_mut().expect("connected");
                in_flight.insert(i, Instant::now());
                last_sent = Some(Instant::now());
                lost = client.ws.send(Message::Text(frame.to_string().into())).await.is_err();
            }
            // Read what comes within a moment.
            if !lost {
                let client = self.client.as_mut().expect("connected");
                match tokio::time::timeout(Duration::from_millis(100), client.ws.next()).await {
                    Err(_) => {}
                    Ok(Some(Ok(Message::Text(t)))) => {
                        let v: Value = serde_json::from_str(&t).expect("server frames are JSON");
                        // Events, and late replies to earlier attempts, are skipped.
                        let i = v["re"].as_str().and_then(pipelined_index).filter(|i| in_flight.contains_key(i));
                        if let Some(i) = i
                            && v["ok"] == true
                        {
                            in_flight.remove(&i);
                            acked.insert(i, (v["seq"].as_u64().expect("a seq"), Instant::now()));
                            on_ack(acked.len(), in_flight.len());
                        } else if let Some(i) = i {
                            assert_eq!(v["error"]["code"], "unavailable", "m{i} -> {v}");
                            in_flight.remove(&i);
                            again.insert(i);
                            self.retries += 1;
                        }
                    }
                    Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => lost = true,
                    Ok(Some(Ok(_))) => {}
                }
            }
            let overdue = in_flight.values().any(|sent| sent.elapsed() > REPLY_WAIT);
            if lost || overdue {
                self.retries += in_flight.len();
                again.extend(std::mem::take(&mut in_flight).into_keys());
                self.lose_connection();
            }
        }
        for (i, (seq, at)) in acked {
            self.acked.push((self.cid(i), seq));
            self.acked_at.push(at);
        }
    }

    /// The room's whole history, oldest first, paged with `before`.
    pub async fn history(&mut self) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        let mut before: Option<u64> = None;
        loop {
            let mut req = json!({"op":"history","room": self.room,"limit":100});
            if let Some(b) = before {
                req["before"] = json!(b);
            }
            let page = self.request_until_ok(req).await;
            let msgs = page["messages"].as_array().expect("messages").clone();
            if msgs.is_empty() {
                break;
            }
            before = msgs[0]["seq"].as_u64();
            all.splice(0..0, msgs);
            assert!(all.len() <= 100_000, "history does not end");
        }
        all
    }

    /// Joins a room of every partition, so that every dispatcher reports
    /// lag for the partitions it owns (see [`Cluster::owner_of`]).
    pub async fn join_every_partition(&mut self) {
        for p in 0..PARTITIONS {
            let other = (0..).map(|k| format!("drill-{k}")).find(|r| confab_bus::partition_for(r, PARTITIONS) == p);
            self.request_until_ok(json!({"op": "join", "room": other.expect("a room of each partition")})).await;
        }
    }

    /// Every acked message is in history exactly once, with its seq, in order.
    pub async fn verify(&mut self) {
        let all = self.history().await;
        let seqs: Vec<u64> = all.iter().map(|m| m["seq"].as_u64().expect("seq")).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "history is in strictly increasing seq order");
        let mut by_cid: HashMap<&str, Vec<u64>> = HashMap::new();
        for m in &all {
            by_cid.entry(m["cid"].as_str().expect("cid")).or_default().push(m["seq"].as_u64().expect("seq"));
        }
        for (cid, seq) in &self.acked {
            assert_eq!(by_cid.get(cid.as_str()), Some(&vec![*seq]), "acked {cid} is stored once, as seq {seq}");
        }
        assert_eq!(all.len(), self.acked.len(), "nothing but the acked messages, no duplicates");
        let order: Vec<&str> = all.iter().map(|m| m["cid"].as_str().expect("cid")).collect();
        let sent: Vec<&str> = self.acked.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(order, sent, "stored in the order they were sent");
    }
}

/// `p{i}.{attempt}` -> i.
pub fn pipelined_index(id: &str) -> Option<usize> {
    id.strip_prefix('p')?.split_once('.')?.0.parse().ok()
}

pub async fn reply(client: &mut Client, id: &Value) -> Option<Value> {
    loop {
        match client.ws.next().await? {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).ok()?;
                if v.get("re") == Some(id) {
                    return Some(v);
                }
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Waits until the gateway's `/readyz` answers `status`.
pub async fn readyz(cluster: &Cluster, g: usize, status: u16) {
    let url = format!("http://{}/readyz", cluster.gateways[g].addrs["admin listening"]);
    let http = reqwest::Client::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let Ok(r) = http.get(&url).timeout(Duration::from_secs(5)).send().await
                && r.status().as_u16() == status
            {
                return;
            }
            // Often: a drain's 503 lasts about a second.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/readyz never answered {status}"));
}

/// The 3-node Kafka of `scripts/infra up kafka3`: its bootstrap list, which
/// node leads a partition, and each node's process.
pub mod kafka3 {
    use std::time::Duration;

    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};

    pub fn bootstrap() -> String {
        super::env("KAFKA3_BOOTSTRAP")
    }

    /// The node that leads `partition` of `topic`, from a metadata request;
    /// `None` while the partition has no leader or the request fails.
    pub async fn leader(topic: &str, partition: u32) -> Option<i32> {
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let client: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap()).create().ok()?;
            let metadata = client.fetch_metadata(Some(&topic), Duration::from_secs(5)).ok()?;
            let t = metadata.topics().iter().find(|t| t.name() == topic)?;
            let p = t.partitions().iter().find(|p| p.id() == partition as i32)?;
            (p.error().is_none() && p.leader() >= 0).then_some(p.leader())
        })
        .await
        .ok()
        .flatten()
    }

    /// The replicas of each partition of `topic`, and its
    /// `min.insync.replicas`, as the brokers report them.
    pub async fn durability(topic: &str) -> (Vec<usize>, String) {
        use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("an admin client");
        let t = topic.to_owned();
        let replicas = tokio::task::spawn_blocking(move || {
            let client: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap()).create().unwrap();
            let metadata = client.fetch_metadata(Some(&t), Duration::from_secs(10)).expect("metadata");
            let topic = metadata.topics().iter().find(|m| m.name() == t).expect("the topic");
            topic.partitions().iter().map(|p| p.replicas().len()).collect::<Vec<_>>()
        })
        .await
        .expect("the metadata task");
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let configs = admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &opts).await.expect("describe");
        let config = configs.into_iter().next().expect("one resource").expect("the topic's config");
        let min_isr = config.get("min.insync.replicas").and_then(|e| e.value.clone()).expect("min.insync.replicas");
        (replicas, min_isr)
    }

    /// The pid of node `node` (1 to 3), from scripts/infra's pid file.
    pub fn pid(node: i32) -> u32 {
        let file = format!("{}/kafka3-{node}.pid", super::env("KAFKA3_RUN"));
        let pid = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        pid.trim().parse().unwrap_or_else(|_| panic!("{file} holds no pid"))
    }
}

/// The 3-node Cassandra of `scripts/infra up cql3`.
pub mod cql3 {
    pub fn contact_points() -> String {
        super::env("CQL3_CONTACT_POINTS")
    }

    /// The pid of node `node` (1 to 3, on 127.0.0.`node`).
    pub fn pid(node: u32) -> u32 {
        let file = format!("{}/cql3-{node}.pid", super::env("CQL3_RUN"));
        let pid = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        pid.trim().parse().unwrap_or_else(|_| panic!("{file} holds no pid"))
    }
}

/// The state letter of process `pid` in /proc (`R`, `S`, `T` stopped, `Z`
/// zombie), `None` once it is gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Sends `signal` to a process the test did not start (a server of
/// `scripts/infra`).
pub fn signal_pid(pid: u32, signal: &str) {
    let status = Command::new("kill").args([signal, &pid.to_string()]).status();
    assert!(status.as_ref().is_ok_and(|s| s.success()), "kill {signal} {pid}: {status:?}");
}

/// Continues a process frozen with SIGSTOP when dropped, even when the drill
/// fails half-way. Never panics.
pub struct Thaw(pub u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}
