//! A real standalone server on port 0 (or a distributed cluster) and a
//! protocol client for tests.
#![allow(dead_code)]

pub mod cluster;
pub mod drill;
pub mod receiver;
#[macro_use]
pub mod tcp;
pub mod netns;

use std::collections::VecDeque;
use std::time::Duration;

use clap::Parser;
use confab::config::StandaloneConfig;
use confab::serving::Running;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that must happen.
pub const PATIENCE: Duration = Duration::from_secs(15);
pub const SECRET: &str = "test-secret-test-secret-test-secret!";

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    config: StandaloneConfig,
}

/// Standalone settings for a test: port 0 everywhere, a fresh data dir.
pub fn config(data: &std::path::Path) -> StandaloneConfig {
    config_with(data, &[])
}

/// [`config`] with more flags.
pub fn config_with(data: &std::path::Path, flags: &[&str]) -> StandaloneConfig {
    let data = data.to_str().unwrap();
    let mut args = vec!["confab", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data", data];
    args.extend(["--jwt-secret", SECRET]);
    args.extend(flags);
    with_test_budgets(&mut args, flags);
    Flags::parse_from(args).config
}

/// Every test user signs up from 127.0.0.1, so the per-address limits get
/// [`TEST_AUTH_BUDGET`] unless `flags` set them (security_limits tests them).
pub fn with_test_budgets(args: &mut Vec<&str>, flags: &[&str]) {
    for flag in ["--auth-per-ip-per-minute", "--auth-per-user-per-minute", "--max-connections-per-ip"] {
        let set = flags.iter().any(|f| *f == flag || f.strip_prefix(flag).is_some_and(|rest| rest.starts_with('=')));
        if !set {
            args.extend([flag, TEST_AUTH_BUDGET]);
        }
    }
}

/// The `/v1/auth/*` budgets and the per-address connection cap of test
/// servers, out of the way of the suites that do not test them.
pub const TEST_AUTH_BUDGET: &str = "1000000";

pub struct TestServer {
    pub running: Option<Running>,
    /// The other processes of a cluster (more gateways, the dispatchers).
    pub others: Vec<Running>,
    pub http: String,
    /// Every gateway's HTTP base URL; registrations and logins alternate
    /// between them, so an account made on one gateway logs in on another.
    pub https: Vec<String>,
    pub ws: String,
    /// Every gateway's WebSocket URL; connections alternate between them.
    pub gateways: Vec<String>,
    next: std::sync::atomic::AtomicUsize,
    next_http: std::sync::atomic::AtomicUsize,
    /// A cluster's keyspace, dropped with the server (declared last: it goes
    /// after the processes).
    keyspace: Option<cluster::Keyspace>,
    pub admin: String,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// A standalone server with more flags.
    pub async fn start_with_flags(flags: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let running = confab::standalone::start(config_with(dir.path(), flags)).await.expect("server starts");
        Self::around(running, Vec::new(), Vec::new(), dir)
    }

    pub async fn start_with(tweak: impl FnOnce(&mut StandaloneConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        tweak(&mut c);
        let running = confab::standalone::start(c).await.expect("server starts");
        Self::around(running, Vec::new(), Vec::new(), dir)
    }

    /// Two gateways and two dispatchers on the real Kafka and Cassandra;
    /// each new connection goes to the next gateway, so a test's users and
    /// devices are spread over both.
    pub async fn start_cluster() -> TestServer {
        Self::start_cluster_with(&[]).await
    }

    /// [`start_cluster`](Self::start_cluster) with more flags for the gateways.
    pub async fn start_cluster_with(gateway_flags: &[&str]) -> TestServer {
        Self::start_cluster_with_roles(gateway_flags, &[]).await
    }

    /// [`start_cluster`](Self::start_cluster) with more flags for the
    /// gateways and for the dispatchers.
    pub async fn start_cluster_with_roles(gateway_flags: &[&str], dispatcher_flags: &[&str]) -> TestServer {
        Self::cluster(cluster::start_roles(2, 2, gateway_flags, dispatcher_flags).await)
    }

    /// [`start_cluster`](Self::start_cluster) over the CQL database at `cql`
    /// with `cql_flags` (TLS options) for every process.
    #[allow(dead_code)] // not every test file uses it
    pub async fn start_cluster_on(cql: &str, cql_flags: &[&str]) -> TestServer {
        Self::cluster(cluster::start_on(cql, cql_flags, 2, 2, &[]).await)
    }

    fn cluster((mut gateways, dispatchers, keyspace): (Vec<Running>, Vec<Running>, cluster::Keyspace)) -> TestServer {
        let urls = gateways.iter().map(|g| format!("ws://{}/v1/ws", g.public())).collect();
        let https = gateways.iter().map(|g| format!("http://{}", g.public())).collect();
        let first = gateways.remove(0);
        gateways.extend(dispatchers);
        let mut server = Self::around(first, gateways, urls, tempfile::tempdir().unwrap());
        server.https = https;
        server.keyspace = Some(keyspace);
        server
    }

    fn around(running: Running, others: Vec<Running>, mut gateways: Vec<String>, dir: tempfile::TempDir) -> TestServer {
        let ws = format!("ws://{}/v1/ws", running.public());
        if gateways.is_empty() {
            gateways.push(ws.clone());
        }
        let http = format!("http://{}", running.public());
        TestServer {
            https: vec![http.clone()],
            http,
            ws,
            gateways,
            next: Default::default(),
            next_http: Default::default(),
            keyspace: None,
            admin: format!("http://{}", running.admin_addr),
            running: Some(running),
            others,
            dir,
            // Every request is bounded: a server that stops answering fails
            // the test instead of hanging it.
            client: reqwest::Client::builder().timeout(PATIENCE).build().unwrap(),
        }
    }

    pub async fn stop(&mut self) {
        self.running.take().unwrap().stop().await.expect("clean stop");
        for other in self.others.drain(..) {
            other.stop().await.expect("clean stop");
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.client.post(format!("{}{path}", self.http)).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(format!("{}{path}", self.http));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn metrics(&self) -> String {
        self.client.get(format!("{}/metrics", self.admin)).send().await.unwrap().text().await.unwrap()
    }

    /// The value of a metric sample line that starts with `series`, or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse::<f64>().ok()))
            .unwrap_or(0.0)
    }

    /// Waits until `series` reaches at least `want`.
    pub async fn await_metric(&self, series: &str, want: f64) {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if self.metric(series).await >= want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{series} never reached {want}"));
    }

    /// POSTs to the next gateway in turn.
    async fn post_anywhere(&self, path: &str, body: Value) -> (u16, Value) {
        let n = self.next_http.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r =
            self.client.post(format!("{}{path}", self.https[n % self.https.len()])).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Registers and logs in (on different gateways of a cluster); returns
    /// the token.
    pub async fn user(&self, name: &str) -> String {
        let (status, body) =
            self.post_anywhere("/v1/auth/register", json!({"username": name, "password": "password-123"})).await;
        assert_eq!(status, 201, "{body}");
        self.login(name).await
    }

    pub async fn login(&self, name: &str) -> String {
        let creds = json!({"username": name, "password": "password-123"});
        let (status, body) = self.post_anywhere("/v1/auth/login", creds).await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    pub async fn connect(&self, token: &str) -> Client {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ws = &self.gateways[n % self.gateways.len()];
        Client::connect(&format!("{ws}?token={token}")).await
    }

    /// Registers, logs in and connects.
    pub async fn connected(&self, name: &str) -> Client {
        let token = self.user(name).await;
        self.connect(&token).await
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub ws: Ws,
    pub hello: Value,
    next_id: u64,
    pub events: VecDeque<Value>,
}

/// A status the server answered an upgrade with, when it refused it.
/// `(seq, text)` of each message of a `history` reply, in order.
pub fn seqs_and_texts(history: &Value) -> Vec<(u64, String)> {
    history["messages"]
        .as_array()
        .expect("a history reply has messages")
        .iter()
        .map(|m| (m["seq"].as_u64().expect("seq"), m["text"].as_str().expect("text").to_owned()))
        .collect()
}

pub async fn refused_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let req = url.into_client_request().unwrap();
        let (ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(req))
            .await
            .expect("upgrade in time")
            .expect("upgrade");
        Self::from_stream(ws).await
    }

    pub async fn from_stream(ws: Ws) -> Client {
        let mut c = Client { ws, hello: Value::Null, next_id: 0, events: VecDeque::new() };
        let hello = c.next_json().await;
        assert_eq!(hello["ev"], "hello", "the server speaks first: {hello}");
        c.hello = hello;
        c
    }

    /// Like [`from_stream`](Self::from_stream), but `None` when the server
    /// closes instead of saying hello (e.g. its store is down).
    pub async fn try_from_stream(mut ws: Ws) -> Option<Client> {
        let first = tokio::time::timeout(PATIENCE, ws.next()).await.ok()??.ok()?;
        let hello: Value = match first {
            Message::Text(t) => serde_json::from_str(&t).ok()?,
            _ => return None,
        };
        (hello["ev"] == "hello").then(|| Client { ws, hello, next_id: 0, events: VecDeque::new() })
    }

    /// The next JSON frame, skipping pings.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("connection open")
                .expect("frame");
            match msg {
                Message::Text(t) => {
                    return serde_json::from_str(&t).expect("server frames are JSON");
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        tokio::time::timeout(PATIENCE, self.ws.send(Message::Text(text.into()))).await.expect("sent in time").unwrap();
    }

    /// Sends a request (an `id` is added) and returns its reply; events
    /// received meanwhile are kept for [`event`](Self::event).
    pub async fn request(&mut self, mut req: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        req["id"] = json!(id);
        self.send_text(&req.to_string()).await;
        self.reply_to(json!(id)).await
    }

    pub async fn reply_to(&mut self, id: Value) -> Value {
        loop {
            let v = self.next_json().await;
            if v.get("re") == Some(&id) {
                return v;
            }
            assert!(v.get("re").is_none(), "a reply to another request: {v}");
            self.events.push_back(v);
        }
    }

    /// Asserts the request succeeds; returns the reply.
    pub async fn ok(&mut self, req: Value) -> Value {
        let r = self.request(req.clone()).await;
        assert_eq!(r["ok"], true, "{req} -> {r}");
        r
    }

    /// The error code of a request that must fail.
    pub async fn error(&mut self, req: Value) -> String {
        let r = self.request(req.clone()).await;
        assert_eq!(r["ok"], false, "{req} -> {r}");
        r["error"]["code"].as_str().unwrap().to_owned()
    }

    pub async fn join(&mut self, room: &str) -> Value {
        self.ok(json!({"op": "join", "room": room})).await
    }

    pub async fn send(&mut self, room: &str, text: &str, cid: &str) -> Value {
        self.ok(json!({"op": "send", "room": room, "text": text, "cid": cid})).await
    }

    /// The first event (kept or new) that matches.
    pub async fn event(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.events.iter().position(&matches) {
            return self.events.remove(i).unwrap();
        }
        loop {
            let v = self.next_json().await;
            if v.get("ev").is_some() && matches(&v) {
                return v;
            }
            self.events.push_back(v);
        }
    }

    /// The next event of kind `ev`.
    pub async fn next_event(&mut self, ev: &str) -> Value {
        self.event(|v| v["ev"] == ev).await
    }

    /// The next event of any kind, in arrival order.
    pub async fn next_any_event(&mut self) -> Value {
        match self.events.pop_front() {
            Some(v) => v,
            None => self.next_json().await,
        }
    }

    /// For a client that has stopped reading (and so answered no ping): reads
    /// what is left on the raw socket, without writing (a pong written to a
    /// closed socket would reset it), and returns the close code the server
    /// sent.
    pub async fn raw_close_code(&mut self) -> Option<u16> {
        self.raw_frames().await.1
    }

    /// Like [`raw_close_code`](Self::raw_close_code), and the text frames
    /// before the close. Server frames are unmasked: header, length, payload.
    pub async fn raw_frames(&mut self) -> (Vec<String>, Option<u16>) {
        use tokio::io::AsyncReadExt;
        let MaybeTlsStream::Plain(tcp) = self.ws.get_mut() else { panic!("plain TCP only") };
        let mut bytes = Vec::new();
        let read =
            tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut bytes)).await.expect("the server closes in time");
        let (mut texts, mut rest) = (Vec::new(), bytes.as_slice());
        if read.is_err() {
            return (texts, None);
        }
        while rest.len() >= 2 {
            let opcode = rest[0] & 0x0f;
            let (len, header) = match rest[1] & 0x7f {
                126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
                127 if rest.len() >= 10 => (u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize, 10),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            let Some(payload) = rest.get(header..header + len) else { break };
            match opcode {
                0x1 => texts.push(String::from_utf8_lossy(payload).into_owned()),
                0x8 if payload.len() >= 2 => return (texts, Some(u16::from_be_bytes([payload[0], payload[1]]))),
                _ => {}
            }
            rest = &rest[header + len..];
        }
        (texts, None)
    }

    /// The events received so far and not yet looked at.
    pub fn take_events(&mut self) -> Vec<Value> {
        self.events.drain(..).collect()
    }

    /// Reads until the server closes; returns the close code and the frames before it.
    pub async fn closed(&mut self) -> (u16, Vec<Value>) {
        let mut frames: Vec<Value> = self.events.drain(..).collect();
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next()).await.expect("close in time");
            match msg {
                Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), frames),
                Some(Ok(Message::Close(None))) => return (u16::from(CloseCode::Status), frames),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection error before a close frame: {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }
}

/// How long a test on a cluster may take, start-up included, before it
/// fails instead of hanging the run.
pub const CLUSTER_TEST: std::time::Duration = std::time::Duration::from_secs(240);

/// [`on_every_mode!`] for tests that need settings, in module `$group`:
/// `$gateway()` and `$dispatcher()` return flags (`--name=value`); the
/// standalone server takes both, the cluster's gateways the first and its
/// dispatchers the second.
#[allow(unused_macros)]
macro_rules! on_every_mode_with {
    ($group:ident, gateway: $gateway:ident; $($name:ident),* $(,)?) => {
        on_every_mode_with!(@ $group, { super::$gateway() }, { Vec::new() }; $($name),*);
    };
    ($group:ident, gateway: $gateway:ident, dispatcher: $dispatcher:ident; $($name:ident),* $(,)?) => {
        on_every_mode_with!(@ $group, { super::$gateway() }, { super::$dispatcher() }; $($name),*);
    };
    (@ $group:ident, $gateway:block, $dispatcher:block; $($name:ident),*) => {
        mod $group {
            fn gateway() -> Vec<String> $gateway
            fn dispatcher() -> Vec<String> $dispatcher
            mod standalone {
                $(
                    #[tokio::test]
                    async fn $name() {
                        let flags = [super::gateway(), super::dispatcher()].concat();
                        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                        super::super::$name(super::super::TestServer::start_with_flags(&flags).await).await
                    }
                )*
            }
            mod distributed {
                $(
                    #[tokio::test]
                    async fn $name() {
                        let (gateway, dispatcher) = (super::gateway(), super::dispatcher());
                        let gateway: Vec<&str> = gateway.iter().map(String::as_str).collect();
                        let dispatcher: Vec<&str> = dispatcher.iter().map(String::as_str).collect();
                        let test = async {
                            let s = super::super::TestServer::start_cluster_with_roles(&gateway, &dispatcher).await;
                            super::super::$name(s).await
                        };
                        tokio::time::timeout($crate::common::CLUSTER_TEST, test).await.expect("the test ends in time")
                    }
                )*
            }
        }
    };
}

/// Runs each named test (an `async fn(TestServer)` of the test file) against
/// a standalone server, and again against two gateways and two dispatchers on
/// the real Kafka and Cassandra, with the test's connections, registrations
/// and logins spread over both gateways.
#[allow(unused_macros)] // not every test file runs on every mode
macro_rules! on_every_mode {
    ($($name:ident),* $(,)?) => {
        mod standalone {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::TestServer::start().await).await
                }
            )*
        }
        mod distributed {
            $(
                #[tokio::test]
                async fn $name() {
                    let test = async { super::$name(super::TestServer::start_cluster().await).await };
                    tokio::time::timeout($crate::common::CLUSTER_TEST, test).await.expect("the test ends in time")
                }
            )*
        }
    };
}
