//! ARCHITECTURE.md's failure table, against real processes on real Kafka and
//! Cassandra. Each drill runs a steady stream of sends with cids, retries an
//! unacknowledged send with the same cid as a client would (on another
//! gateway when its own is gone), and checks afterwards, from history, that
//! every acknowledged message is there exactly once, with its seq, in order.
//!
//! The drills stop shared servers, so they run one at a time.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, SECRET};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_confab");
const PARTITIONS: &str = "4";

/// One drill at a time: they stop servers the others use.
static DRILL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run `scripts/infra up kafka cql` and `source target/infra/env`"))
}

fn infra(action: &str, what: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/infra");
    let status = Command::new(script).args([action, what]).stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "scripts/infra {action} {what}");
}

/// Brings a stopped server back even when a drill fails half-way, so the
/// drills after it find it running.
struct Restore(&'static str);

impl Drop for Restore {
    fn drop(&mut self) {
        infra("up", self.0);
    }
}

/// A `confab` process whose addresses are read from its log.
struct Proc {
    child: Child,
    addrs: HashMap<&'static str, String>,
}

impl Proc {
    fn spawn(args: &[String], wants: &[&'static str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addrs = HashMap::new();
        while addrs.len() < wants.len() {
            let line = lines.next().expect("the process logs its addresses").unwrap();
            for want in wants {
                if let Some(rest) = line.split(&format!(": {want} on http://")).nth(1) {
                    addrs.insert(*want, rest.trim().to_owned());
                }
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Proc { child, addrs }
    }

    fn signal(&self, signal: &str) {
        Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    gateways: Vec<Proc>,
    dispatchers: Vec<Proc>,
    backend: Vec<String>,
    _keyspace: common::cluster::Keyspace,
}

impl Cluster {
    async fn start(gateways: usize, dispatchers: usize) -> Cluster {
        let (prefix, keyspace) = common::cluster::names("drill");
        let backend: Vec<String> = [
            "--kafka",
            &env("KAFKA_BOOTSTRAP"),
            "--topic-prefix",
            &prefix,
            "--cql",
            &env("CQL_CONTACT_POINTS"),
            "--keyspace",
            &keyspace.0,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut migrate = vec!["migrate".to_owned(), "--partitions".into(), PARTITIONS.into()];
        migrate.extend(backend.iter().cloned());
        let out = Command::new(BIN).args(&migrate).output().unwrap();
        assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
        let mut cluster = Cluster { gateways: Vec::new(), dispatchers: Vec::new(), backend, _keyspace: keyspace };
        for _ in 0..dispatchers {
            cluster.add_dispatcher();
        }
        for i in 0..gateways {
            let mut args: Vec<String> = ["gateway", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            args.extend(["--internal-listen", "127.0.0.1:0", "--jwt-secret", SECRET].map(String::from));
            args.extend(["--server-id".into(), format!("gw-{i}"), "--rate-burst".into(), "10000".into()]);
            args.extend(["--produce-timeout-ms", "2000", "--drain-grace-ms", "3000"].map(String::from));
            args.extend(["--outbound-queue", "16", "--rate-per-second", "10000"].map(String::from));
            args.extend(cluster.backend.iter().cloned());
            cluster.gateways.push(Proc::spawn(&args, &["listening", "admin listening"]));
        }
        cluster
    }

    fn add_dispatcher(&mut self) {
        let mut args: Vec<String> = ["dispatcher", "--admin-listen", "127.0.0.1:0", "--jwt-secret", SECRET]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(self.backend.iter().cloned());
        self.dispatchers.push(Proc::spawn(&args, &["admin listening"]));
    }

    fn public(&self, g: usize) -> String {
        self.gateways[g].addrs["listening"].clone()
    }
}

/// A client that sends a numbered stream and retries each message with its
/// cid until acked, moving to the next gateway when its own fails.
struct Writer {
    gateways: Vec<String>,
    current: usize,
    token: String,
    room: String,
    client: Option<Client>,
    acked: Vec<(String, u64)>,
    retries: usize,
}

impl Writer {
    async fn new(cluster: &Cluster, user: &str, room: &str) -> Writer {
        let http = reqwest::Client::new();
        let base = format!("http://{}", cluster.public(0));
        let creds = json!({"username": user, "password": "password-123"});
        let deadline = Instant::now() + Duration::from_secs(60);
        // The cluster may still be settling (consumer group, push links).
        loop {
            let r = http.post(format!("{base}/v1/auth/register")).json(&creds).send().await;
            if r.is_ok_and(|r| r.status() == 201 || r.status() == 409) {
                break;
            }
            assert!(Instant::now() < deadline, "registration never worked");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let login: Value =
            http.post(format!("{base}/v1/auth/login")).json(&creds).send().await.unwrap().json().await.unwrap();
        let gateways = (0..cluster.gateways.len()).map(|g| cluster.public(g)).collect();
        let mut w = Writer {
            gateways,
            current: 0,
            token: login["token"].as_str().unwrap().to_owned(),
            room: room.to_owned(),
            client: None,
            acked: Vec::new(),
            retries: 0,
        };
        w.request_until_ok(json!({"op": "join", "room": room})).await;
        w
    }

    async fn connect(&mut self) -> &mut Client {
        if self.client.is_none() {
            loop {
                let url = format!("ws://{}/v1/ws?token={}", self.gateways[self.current], self.token);
                if let Ok(Ok((ws, _))) =
                    tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url)).await
                    && let Some(client) = Client::try_from_stream(ws).await
                {
                    self.client = Some(client);
                    break;
                }
                self.current = (self.current + 1) % self.gateways.len();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        self.client.as_mut().unwrap()
    }

    /// Sends until an `ok` reply; a lost reply, `unavailable` or a closed
    /// connection is retried, the connection moving on to the next gateway.
    async fn request_until_ok(&mut self, req: Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut n = 0u64;
        loop {
            assert!(Instant::now() < deadline, "{req} was never acknowledged");
            n += 1;
            let id = json!(format!("r{n}"));
            let mut frame = req.clone();
            frame["id"] = id.clone();
            let client = self.connect().await;
            let outcome = async {
                use futures_util::SinkExt;
                client.ws.send(tokio_tungstenite::tungstenite::Message::Text(frame.to_string().into())).await.ok()?;
                tokio::time::timeout(Duration::from_secs(4), reply(client, &id)).await.ok()?
            }
            .await;
            match outcome {
                Some(r) if r["ok"] == true => return r,
                Some(r) => assert_eq!(r["error"]["code"], "unavailable", "{req} -> {r}"),
                None => {
                    // Lost reply or connection: a new connection, maybe elsewhere.
                    self.client = None;
                    self.current = (self.current + 1) % self.gateways.len();
                }
            }
            self.retries += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn send(&mut self, i: usize) {
        self.send_text(i, &format!("message {i}")).await;
    }

    async fn send_text(&mut self, i: usize, text: &str) {
        let cid = format!("m{i}");
        let r = self.request_until_ok(json!({"op":"send","room": self.room,"text": text,"cid": cid})).await;
        self.acked.push((cid, r["seq"].as_u64().unwrap()));
    }

    /// Every acked message is in history exactly once, with its seq, in order.
    async fn verify(&mut self) {
        let mut all: Vec<Value> = Vec::new();
        let mut before: Option<u64> = None;
        loop {
            let mut req = json!({"op":"history","room": self.room,"limit":100});
            if let Some(b) = before {
                req["before"] = json!(b);
            }
            let page = self.request_until_ok(req).await;
            let msgs = page["messages"].as_array().unwrap().clone();
            if msgs.is_empty() {
                break;
            }
            before = msgs[0]["seq"].as_u64();
            all.splice(0..0, msgs);
        }
        let seqs: Vec<u64> = all.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "history is in strictly increasing seq order");
        let mut by_cid: HashMap<&str, Vec<u64>> = HashMap::new();
        for m in &all {
            by_cid.entry(m["cid"].as_str().unwrap()).or_default().push(m["seq"].as_u64().unwrap());
        }
        for (cid, seq) in &self.acked {
            assert_eq!(by_cid.get(cid.as_str()), Some(&vec![*seq]), "acked {cid} is stored once, as seq {seq}");
        }
        assert_eq!(all.len(), self.acked.len(), "nothing but the acked messages, no duplicates");
        let order: Vec<&str> = all.iter().map(|m| m["cid"].as_str().unwrap()).collect();
        let sent: Vec<&str> = self.acked.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(order, sent, "stored in the order they were sent");
    }
}

async fn reply(client: &mut Client, id: &Value) -> Option<Value> {
    use futures_util::StreamExt;
    loop {
        match client.ws.next().await? {
            Ok(tokio_tungstenite::tungstenite::Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).ok()?;
                if v.get("re") == Some(id) {
                    return Some(v);
                }
            }
            Ok(tokio_tungstenite::tungstenite::Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn a_dispatcher_killed_mid_stream_loses_and_duplicates_nothing() {
    let _one = DRILL.lock().await;
    let cluster = Cluster::start(2, 2).await;
    let mut w = Writer::new(&cluster, "writer", "drill-room").await;
    for i in 0..60 {
        if i == 20 {
            cluster.dispatchers[0].signal("-KILL");
        }
        w.send(i).await;
    }
    w.verify().await;
}

/// Loses gateway 0 to `signal` in the middle of a stream: its client moves
/// to gateway 1 and nothing acked is lost or doubled.
async fn gateway_loss_drill(signal: &str) {
    let cluster = Cluster::start(2, 1).await;
    let mut w = Writer::new(&cluster, "writer", "drill-room").await;
    for i in 0..40 {
        if i == 15 {
            cluster.gateways[0].signal(signal);
        }
        w.send(i).await;
    }
    assert_eq!(w.current, 1, "the writer moved to the surviving gateway");
    w.verify().await;
}

#[tokio::test]
async fn a_gateway_drained_by_sigterm_sends_its_clients_elsewhere() {
    let _one = DRILL.lock().await;
    gateway_loss_drill("-TERM").await;
}

#[tokio::test]
async fn a_gateway_killed_sends_its_clients_elsewhere_and_loses_no_acked_message() {
    let _one = DRILL.lock().await;
    gateway_loss_drill("-KILL").await;
}

#[tokio::test]
async fn a_slow_client_is_closed_and_the_room_keeps_its_pace() {
    let _one = DRILL.lock().await;
    let cluster = Cluster::start(2, 1).await;
    let mut w = Writer::new(&cluster, "writer", "drill-room").await;
    // The slow member sits on the other gateway, joins, and stops reading.
    let slow_token = {
        let http = reqwest::Client::new();
        let base = format!("http://{}", cluster.public(1));
        let creds = json!({"username": "slow", "password": "password-123"});
        assert_eq!(http.post(format!("{base}/v1/auth/register")).json(&creds).send().await.unwrap().status(), 201);
        let login: Value =
            http.post(format!("{base}/v1/auth/login")).json(&creds).send().await.unwrap().json().await.unwrap();
        login["token"].as_str().unwrap().to_owned()
    };
    let mut slow = Client::connect(&format!("ws://{}/v1/ws?token={slow_token}", cluster.public(1))).await;
    slow.join("drill-room").await;
    let text = "x".repeat(4000);
    let series = r#"confab_sessions_closed_total{reason="slow_consumer"}"#;
    let mut i = 0;
    while metric(&cluster, 1, series).await < 1.0 {
        for _ in 0..50 {
            w.send_text(i, &text).await;
            i += 1;
        }
        assert!(i < 20_000, "the slow client was never closed");
    }
    // The writer was served all along, and still is.
    for _ in 0..20 {
        w.send_text(i, &text).await;
        i += 1;
    }
    w.verify().await;
    drop(slow);
}

async fn metric(cluster: &Cluster, g: usize, series: &str) -> f64 {
    let url = format!("http://{}/metrics", cluster.gateways[g].addrs["admin listening"]);
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// Waits until the gateway's `/readyz` answers `status`.
async fn readyz(cluster: &Cluster, g: usize, status: u16) {
    let url = format!("http://{}/readyz", cluster.gateways[g].addrs["admin listening"]);
    let http = reqwest::Client::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let Ok(r) = http.get(&url).timeout(Duration::from_secs(5)).send().await
                && r.status().as_u16() == status
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/readyz never answered {status}"));
}

/// Stops `server` under a steady stream of sends and starts it again: sends
/// go unacknowledged meanwhile (`unavailable`, or no ack until the store is
/// back), `/readyz` says so, and nothing acked is lost or doubled.
async fn outage_drill(server: &'static str) {
    let cluster = Cluster::start(1, 1).await;
    let mut w = Writer::new(&cluster, "writer", "drill-room").await;
    for i in 0..10 {
        w.send(i).await;
    }
    readyz(&cluster, 0, 200).await;
    let _restore = Restore(server);
    infra("down", server);
    readyz(&cluster, 0, 503).await;
    let restart = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_secs(5));
        infra("up", server);
    });
    let before = w.retries;
    for i in 10..20 {
        w.send(i).await;
    }
    restart.await.unwrap();
    assert!(w.retries > before, "sends went unacknowledged while {server} was down");
    readyz(&cluster, 0, 200).await;
    w.verify().await;
}

#[tokio::test]
async fn kafka_stopped_and_restarted_loses_no_acked_message() {
    let _one = DRILL.lock().await;
    outage_drill("kafka").await;
}

#[tokio::test]
async fn the_store_stopped_and_restarted_holds_acks_until_it_returns() {
    let _one = DRILL.lock().await;
    outage_drill("cql").await;
}
