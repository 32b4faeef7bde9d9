//! Sessions over channels on a paused clock: heartbeats, idle sessions,
//! token expiry, rate limits, slow consumers and the closing handshake,
//! with no socket and no real time. The gateway is a real one, over the
//! embedded store in a tempdir and the in-memory bus; the sweeper runs as in
//! production.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use confab_bus::MemoryBus;
use confab_store::EmbeddedStore;
use futures_channel::mpsc;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Close, Frame, ReadError};
use crate::auth::Claims;
use crate::{Auth, Config, Gateway, Metrics};

/// Longer than anything a test waits for; on the paused clock, a test that
/// waits in vain fails at once instead of hanging.
const PATIENCE: Duration = Duration::from_secs(3600);

struct TestGateway {
    gw: Gateway,
    metrics: prometheus::Registry,
    _sweeper: DropGuard,
    _dir: tempfile::TempDir,
}

impl TestGateway {
    /// A gateway with its sweeper running.
    fn start(tweak: impl FnOnce(&mut Config)) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let bus = Arc::new(MemoryBus::new(1, &[]));
        let auth = Auth::new(&[7; 32], &[], Duration::from_secs(3600), Duration::from_secs(86_400)).unwrap();
        let registry = prometheus::Registry::new();
        // The documented defaults; each test changes what it is about.
        let mut config = Config {
            api_keys: Default::default(),
            id: "gw-test".into(),
            internal_addr: None,
            heartbeat: Duration::from_secs(25),
            max_frame_bytes: 64 * 1024,
            max_text_bytes: 4096,
            rate_per_second: 20,
            rate_burst: 40,
            outbound_queue: 256,
            outbound_queue_bytes: 4 << 20,
            reply_max_bytes: 1 << 20,
            sync_max_messages: 5000,
            presence_event_limit: 500,
            produce_timeout: Duration::from_secs(5),
            ws_read_buffer: Config::WS_READ_BUFFER,
            ws_write_buffer: Config::WS_WRITE_BUFFER,
            ws_compression: true,
            ws_compression_threshold: 512,
            auth_per_ip_per_minute: 60,
            auth_per_user_per_minute: 10,
            hash_queue: 64,
            open_registration: true,
            max_sessions_per_user: 16,
            typing_interval: Duration::from_secs(2),
            max_contacts: 1000,
            max_blocks: 1000,
            retention: confab_protocol::Retention::default(),
        };
        tweak(&mut config);
        let gw = Gateway::new(config, auth, store, bus, Metrics::new(&registry).unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::sweeper::run(gw.clone(), shutdown.clone()));
        TestGateway { gw, metrics: registry, _sweeper: shutdown.drop_guard(), _dir: dir }
    }

    /// A session of `user` whose token is valid for another hour.
    async fn connect(&self, user: &str) -> TestClient {
        self.connect_with(user, unix_now() + 3600, 64).await
    }

    /// A session whose token expires at `exp`; the client's end of the
    /// connection holds at most `buffer` frames it has not read. Returns
    /// once `hello` is read.
    async fn connect_with(&self, user: &str, exp: u64, buffer: usize) -> TestClient {
        let (sink, rx) = mpsc::channel(buffer);
        let (tx, stream) = mpsc::unbounded();
        let claims = Claims { sub: user.into(), exp, iat: None, jti: None, iat_ms: None };
        let task = tokio::spawn(super::run(self.gw.clone(), sink, stream, claims));
        let mut client = TestClient { tx, rx, task };
        let hello = client.json().await;
        assert_eq!(hello["ev"], "hello", "the server speaks first: {hello}");
        client
    }

    /// `confab_requests_total` of one op and result.
    fn requests(&self, op: &str, result: &str) -> u64 {
        let families = self.metrics.gather();
        let Some(family) = families.iter().find(|f| f.name() == "confab_requests_total") else { return 0 };
        let labels = |m: &prometheus::proto::Metric| {
            m.get_label().iter().map(|l| l.value().to_owned()).collect::<std::collections::HashSet<_>>()
        };
        let metric = family.get_metric().iter().find(|m| {
            let l = labels(m);
            l.contains(op) && l.contains(result)
        });
        metric.map_or(0, |m| m.get_counter().get_value() as u64)
    }

    fn sessions_closed(&self, reason: &str) -> u64 {
        let families = self.metrics.gather();
        let family = families.iter().find(|f| f.name() == "confab_sessions_closed_total").unwrap();
        let metric = family.get_metric().iter().find(|m| m.get_label().iter().any(|l| l.value() == reason));
        metric.map_or(0, |m| m.get_counter().get_value() as u64)
    }
}

struct TestClient {
    tx: mpsc::UnboundedSender<Result<Frame, ReadError>>,
    rx: mpsc::Receiver<Frame>,
    task: JoinHandle<()>,
}

impl TestClient {
    /// The next frame from the server; `None` once the session has let go of
    /// the connection.
    async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(PATIENCE, self.rx.next()).await.expect("the server says something in time")
    }

    async fn json(&mut self) -> Value {
        match self.next().await {
            Some(Frame::Text(text)) => serde_json::from_str(&text).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next frame that is not a ping; pings are answered, as a live
    /// client does.
    async fn next_answering_pings(&mut self) -> Option<Frame> {
        loop {
            match self.next().await {
                Some(Frame::Ping) => self.send(Frame::Pong),
                other => return other,
            }
        }
    }

    fn send(&self, frame: Frame) {
        self.tx.unbounded_send(Ok(frame)).expect("the session reads");
    }

    fn request(&self, req: Value) {
        self.send(Frame::Text(req.to_string().into()));
    }

    /// Frames up to the server's close frame: the texts before it, and its code.
    async fn until_close(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut texts = Vec::new();
        loop {
            match self.next_answering_pings().await {
                Some(Frame::Text(text)) => texts.push(serde_json::from_str(&text).unwrap()),
                Some(Frame::Close(close)) => return (texts, close.map(|c| c.code)),
                other => panic!("expected text or close, got {other:?}"),
            }
        }
    }

    /// Answers the server's close and waits for the session to end.
    async fn finish(mut self) {
        let _ = self.tx.unbounded_send(Ok(Frame::Close(Some(Close::new(1000, "")))));
        tokio::time::timeout(PATIENCE, &mut self.task).await.expect("the session ends").unwrap();
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(start_paused = true)]
async fn the_server_pings_every_heartbeat_while_the_client_answers() {
    let heartbeat = Duration::from_secs(10);
    let tick = heartbeat / 4;
    let g = TestGateway::start(|c| c.heartbeat = heartbeat);
    let mut c = g.connect("alice").await;
    let mut last = Instant::now();
    for _ in 0..5 {
        assert_eq!(c.next().await, Some(Frame::Ping));
        let gap = last.elapsed();
        assert!(gap >= heartbeat - tick && gap <= heartbeat + tick, "a ping after {gap:?}, every {heartbeat:?}");
        last = Instant::now();
        c.send(Frame::Pong);
    }
    c.request(json!({"id": 1, "op": "ping"}));
    assert_eq!(c.json().await, json!({"re": 1, "ok": true}), "five heartbeats later, the session is alive");
}

#[tokio::test(start_paused = true)]
async fn a_client_silent_for_two_and_a_half_heartbeats_is_closed_with_1001() {
    let heartbeat = Duration::from_secs(10);
    let g = TestGateway::start(|c| c.heartbeat = heartbeat);
    let mut silent = g.connect("alice").await;
    let mut live = g.connect("bob").await;
    let live = tokio::spawn(async move {
        // Answers five pings: longer than the silent one lasts.
        for _ in 0..5 {
            assert_eq!(live.next().await, Some(Frame::Ping));
            live.send(Frame::Pong);
        }
        live
    });
    let opened = Instant::now();
    let mut pings = 0;
    let code = loop {
        match silent.next().await {
            Some(Frame::Ping) => pings += 1,
            Some(Frame::Close(close)) => break close.map(|c| c.code),
            other => panic!("a silent client gets pings, then a close: {other:?}"),
        }
    };
    let silence = opened.elapsed();
    assert_eq!(code, Some(1001));
    assert_eq!(pings, 2, "pinged every heartbeat until closed");
    assert!(silence > heartbeat * 5 / 2 && silence <= heartbeat * 3, "closed after {silence:?} of silence");
    silent.finish().await;
    assert_eq!(g.sessions_closed("idle"), 1);
    let mut live = live.await.unwrap();
    live.request(json!({"id": 1, "op": "ping"}));
    assert_eq!(live.json().await["ok"], true, "the live client is still served");
}

#[tokio::test(start_paused = true)]
async fn a_session_whose_token_expires_gets_bye_token_expired_and_1008() {
    let g = TestGateway::start(|_| {});
    let exp = unix_now() + 60;
    let mut c = g.connect_with("alice", exp, 64).await;
    let opened = Instant::now();
    let (texts, code) = c.until_close().await;
    let lasted = opened.elapsed();
    assert_eq!(texts, [json!({"ev": "bye", "reason": "token_expired"})]);
    assert_eq!(code, Some(1008));
    // `exp` is in whole seconds: the token had between 59 and 60 s left.
    assert!(lasted >= Duration::from_secs(59) && lasted <= Duration::from_secs(61), "closed after {lasted:?}");
    c.finish().await;
    assert_eq!(g.sessions_closed("token_expired"), 1);
}

#[tokio::test(start_paused = true)]
async fn requests_over_the_burst_get_rate_limited_and_pass_again_once_the_rate_allows() {
    let g = TestGateway::start(|c| {
        c.rate_per_second = 2;
        c.rate_burst = 5;
    });
    let mut c = g.connect("alice").await;
    for id in 0..8 {
        c.request(json!({"id": id, "op": "ping"}));
    }
    for id in 0..8 {
        let reply = c.json().await;
        assert_eq!(reply["re"], id);
        if id < 5 {
            assert_eq!(reply["ok"], true, "within the burst: {reply}");
        } else {
            assert_eq!(reply["error"]["code"], "rate_limited", "over the burst: {reply}");
        }
    }
    // 2 per second: one more request every 500 ms.
    tokio::time::advance(Duration::from_millis(500)).await;
    c.request(json!({"id": "a", "op": "ping"}));
    c.request(json!({"id": "b", "op": "ping"}));
    assert_eq!(c.json().await, json!({"re": "a", "ok": true}));
    assert_eq!(c.json().await["error"]["code"], "rate_limited");
}

#[tokio::test(start_paused = true)]
async fn binary_frames_spend_the_request_budget() {
    let g = TestGateway::start(|c| {
        c.rate_per_second = 2;
        c.rate_burst = 5;
    });
    let mut c = g.connect("alice").await;
    for _ in 0..8 {
        c.send(Frame::Binary);
    }
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(c.json().await["error"]["code"].as_str().unwrap().to_owned());
    }
    assert_eq!(codes[..5], ["bad_request"; 5], "within the burst, a binary frame is refused as not text");
    assert_eq!(codes[5..], ["rate_limited"; 3], "past it, binary frames are over the budget like text ones");
    c.request(json!({"id": 1, "op": "ping"}));
    assert_eq!(c.json().await["error"]["code"], "rate_limited", "the binary frames spent what text would use");
}

#[tokio::test(start_paused = true)]
async fn a_sync_costs_one_unit_per_room_and_at_most_the_burst() {
    let g = TestGateway::start(|c| {
        c.rate_per_second = 2;
        c.rate_burst = 5;
    });
    let mut c = g.connect("alice").await;
    // Rooms alice is not in: the reply is `not_member`, but the reads were asked for.
    c.request(json!({"id": "s", "op": "sync", "rooms": {"a": 0, "b": 0, "c": 0}}));
    assert_eq!(c.json().await["error"]["code"], "not_member");
    for id in 0..3 {
        c.request(json!({"id": id, "op": "ping"}));
    }
    assert_eq!(c.json().await["ok"], true);
    assert_eq!(c.json().await["ok"], true);
    assert_eq!(c.json().await["error"]["code"], "rate_limited", "3 + 2 units spent a burst of 5");

    // A sync over more rooms than the burst passes on a full budget, and empties it.
    tokio::time::advance(Duration::from_secs(3)).await;
    let rooms: serde_json::Map<String, Value> = (0..20).map(|i| (format!("r{i}"), json!(0))).collect();
    c.request(json!({"id": "big", "op": "sync", "rooms": rooms}));
    assert_eq!(c.json().await["error"]["code"], "not_member", "not refused for its size");
    c.request(json!({"id": "p", "op": "ping"}));
    assert_eq!(c.json().await["error"]["code"], "rate_limited");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_read_is_closed_as_a_slow_consumer_with_1013() {
    let g = TestGateway::start(|c| {
        c.outbound_queue = 4;
        c.rate_burst = 1000;
    });
    let mut other = g.connect("bob").await;
    // After `hello`, the client sends 20 requests and reads nothing until the
    // server gives up on it: their replies overflow its queue of 4.
    let mut slow = g.connect_with("alice", unix_now() + 3600, 1).await;
    for id in 0..20 {
        slow.request(json!({"id": id, "op": "ping"}));
    }
    let (texts, code) = slow.until_close().await;
    assert_eq!(texts.last().unwrap(), &json!({"ev": "bye", "reason": "slow_consumer"}));
    assert!(texts.len() <= 4, "what did not fit was dropped: {texts:?}");
    assert_eq!(code, Some(1013));
    slow.finish().await;
    assert_eq!(g.sessions_closed("slow_consumer"), 1);
    other.request(json!({"id": 1, "op": "ping"}));
    assert_eq!(other.json().await["ok"], true, "other sessions are not affected");
}

#[tokio::test(start_paused = true)]
async fn a_client_close_is_answered_with_the_same_code_before_the_session_ends() {
    let g = TestGateway::start(|_| {});
    let mut c = g.connect("alice").await;
    c.send(Frame::Close(Some(Close::new(1000, "done"))));
    assert!(matches!(c.next().await, Some(Frame::Close(Some(Close { code: 1000, .. })))));
    assert_eq!(c.next().await, None, "nothing after the close");
    tokio::time::timeout(PATIENCE, c.task).await.expect("the session ends").unwrap();
    assert_eq!(g.sessions_closed("client_closed"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_frame_over_the_limit_closes_with_1009() {
    let g = TestGateway::start(|_| {});
    let mut c = g.connect("alice").await;
    c.tx.unbounded_send(Err(ReadError::TooLarge)).unwrap();
    let (texts, code) = c.until_close().await;
    assert!(texts.is_empty(), "no bye: {texts:?}");
    assert_eq!(code, Some(1009));
    c.finish().await;
    assert_eq!(g.sessions_closed("frame_too_large"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_read_is_closed_when_its_queued_bytes_pass_the_bound() {
    const BOUND: usize = 4096;
    let g = TestGateway::start(|c| {
        c.outbound_queue = 100_000;
        c.outbound_queue_bytes = BOUND;
        c.rate_burst = 100_000;
    });
    let mut other = g.connect("bob").await;
    let mut slow = g.connect_with("alice", unix_now() + 3600, 1).await;
    // A thousand replies of about 20 bytes: far fewer frames than the
    // frame bound, five times the byte bound.
    for id in 0..1000 {
        slow.request(json!({"id": id, "op": "ping"}));
    }
    let (texts, code) = slow.until_close().await;
    assert_eq!(texts.last().unwrap(), &json!({"ev": "bye", "reason": "slow_consumer"}));
    assert_eq!(code, Some(1013));
    let replies: Vec<&Value> = texts.iter().filter(|t| t.get("re").is_some()).collect();
    let bytes: usize = replies.iter().map(|t| t.to_string().len()).sum();
    // What the client got is what was queued (at most the bound) and the
    // frames its end of the connection held (2) when the queue filled.
    assert!(bytes <= BOUND + 64, "{bytes} bytes of replies for a bound of {BOUND}");
    assert!(replies.len() < 1000, "what did not fit was dropped");
    slow.finish().await;
    assert_eq!(g.sessions_closed("slow_consumer"), 1);
    other.request(json!({"id": 1, "op": "ping"}));
    assert_eq!(other.json().await["ok"], true, "other sessions are not affected");
}

#[tokio::test(start_paused = true)]
async fn a_large_read_waits_until_the_reply_of_the_one_before_is_written() {
    let g = TestGateway::start(|c| c.rate_burst = 1000);
    // The client's end holds two unread frames; its reads wait for it.
    let mut c = g.connect_with("alice", unix_now() + 3600, 1).await;
    for id in 0..10 {
        c.request(json!({"id": id, "op": "history", "room": "r"}));
    }
    c.request(json!({"id": "last", "op": "ping"}));
    // Once everything is idle: two replies in the client's end, one in the
    // writer's hands; the fourth read waits, and the requests after it too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let handled = g.requests("history", "not_member");
    assert!(handled <= 4, "{handled} reads handled while their replies wait to be written");
    assert_eq!(g.requests("ping", "ok"), 0, "requests after a waiting read wait with it");
    for id in 0..10 {
        let reply = c.json().await;
        assert_eq!(reply["re"], id, "every read is answered, in order: {reply}");
        assert_eq!(reply["error"]["code"], "not_member");
    }
    assert_eq!(c.json().await, json!({"re": "last", "ok": true}));
    assert_eq!(g.requests("history", "not_member"), 10);
    assert_eq!(g.sessions_closed("slow_consumer"), 0);
}
