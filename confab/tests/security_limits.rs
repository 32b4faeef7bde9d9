//! The HTTP and auth boundary against a hostile client, over real sockets
//! (docs/security.md, docs/protocol.md: HTTP API, Limits): each refusal,
//! and that another, well-behaved client still gets in. Other clients are
//! other loopback addresses (127.0.0.2, 127.1.x.y, ...).

#[macro_use]
mod common;

use std::net::{IpAddr, SocketAddr};

use common::{Client, PATIENCE, TestServer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;

/// The limits every test here runs with, small enough to reach.
const PER_IP: u32 = 5;
const PER_USER: u32 = 4;
const HASH_QUEUE: usize = 1;
const PER_IP_CONNECTIONS: usize = 4;
const HEADER_READ_TIMEOUT_MS: u64 = 1000;

/// An HTTP client whose connections come from `ip`.
fn client_from(ip: &str) -> reqwest::Client {
    let ip: IpAddr = ip.parse().unwrap();
    reqwest::Client::builder().local_address(ip).timeout(PATIENCE).build().unwrap()
}

struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
}

async fn post(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Answer {
    let r = client.post(format!("{base}{path}")).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().unwrap());
    Answer { status, retry_after, body: r.json().await.unwrap_or(Value::Null) }
}

fn creds(user: &str, password: &str) -> Value {
    json!({"username": user, "password": password})
}

/// Registers and logs in `user` on every gateway from `ip`, asserting success.
async fn signs_up_and_in_everywhere(s: &TestServer, ip: &str, user: &str) {
    let client = client_from(ip);
    let r = post(&client, &s.https[0], "/v1/auth/register", creds(user, "password-123")).await;
    assert_eq!(r.status, 201, "{user} from {ip} registers: {}", r.body);
    for base in &s.https {
        let r = post(&client, base, "/v1/auth/login", creds(user, "password-123")).await;
        assert_eq!(r.status, 200, "{user} from {ip} logs in on {base}: {}", r.body);
        assert!(r.body["token"].is_string());
    }
}

fn assert_rate_limited(r: &Answer, what: &str) {
    assert_eq!(r.status, 429, "{what}: {}", r.body);
    assert_eq!(r.body["error"]["code"], "rate_limited", "{what}");
    let wait = r.retry_after.unwrap_or_else(|| panic!("{what}: no Retry-After"));
    assert!((1..=60).contains(&wait), "{what}: Retry-After {wait}");
}

async fn too_many_attempts_from_one_address_are_refused_and_other_addresses_get_in(s: TestServer) {
    let attacker = client_from("127.0.0.2");
    let base = &s.https[0];
    for i in 0..PER_IP {
        let r = post(&attacker, base, "/v1/auth/login", creds(&format!("victim{i}"), "guess-guess")).await;
        assert_eq!(r.status, 401, "attempt {i} within the budget is checked: {}", r.body);
    }
    for path in ["/v1/auth/login", "/v1/auth/register"] {
        let r = post(&attacker, base, path, creds("fresh", "password-123")).await;
        assert_rate_limited(&r, &format!("{path} over the address's budget"));
    }
    signs_up_and_in_everywhere(&s, "127.0.0.3", "bob").await;
}

async fn wrong_passwords_for_one_name_are_slowed_and_other_names_get_in(s: TestServer) {
    let r = post(&client_from("127.0.0.4"), &s.https[0], "/v1/auth/register", creds("alice", "password-123")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Guesses from ever new addresses: the name's budget still runs out.
    for i in 1..PER_USER {
        let guesser = client_from(&format!("127.0.1.{i}"));
        let r = post(&guesser, &s.https[0], "/v1/auth/login", creds("alice", &format!("guess-{i:04}"))).await;
        assert_eq!(r.status, 401, "guess {i}: {}", r.body);
    }
    let r = post(&client_from("127.0.1.100"), &s.https[0], "/v1/auth/login", creds("alice", "password-123")).await;
    assert_rate_limited(&r, "even the right password, once the name's budget is spent");
    signs_up_and_in_everywhere(&s, "127.0.0.5", "bob").await;
}

async fn a_full_hash_queue_is_refused_with_retry_after_and_later_sign_ins_succeed(s: TestServer) {
    // More registrations at once than the hashing threads and the queue
    // hold, each from its own address and name so that no budget is hit.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = (4 * cores + 8).min(1000);
    let answers = futures_util::future::join_all((0..n).map(|i| {
        let base = s.https[0].clone();
        async move {
            let ip = format!("127.2.{}.{}", i / 250, i % 250 + 1);
            post(&client_from(&ip), &base, "/v1/auth/register", creds(&format!("storm{i}"), "password-123")).await
        }
    }))
    .await;
    let busy: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    assert!(!busy.is_empty(), "{n} hashes at once overflow {cores} threads and a queue of {HASH_QUEUE}");
    for a in &answers {
        assert!(a.status == 201 || a.status == 503, "only created or busy: {} {}", a.status, a.body);
    }
    for a in busy {
        assert_eq!(a.body["error"]["code"], "unavailable");
        assert!(a.retry_after.is_some_and(|w| w >= 1), "503 carries Retry-After");
    }
    signs_up_and_in_everywhere(&s, "127.0.0.6", "bob").await;
}

async fn auth_bodies_must_be_json_and_passwords_short_before_any_hashing(s: TestServer) {
    let client = client_from("127.0.0.7");
    let base = &s.https[0];
    let body = creds("carol", "password-123").to_string();
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        for path in ["/v1/auth/register", "/v1/auth/login"] {
            let mut req = client.post(format!("{base}{path}")).body(body.clone());
            if let Some(t) = content_type {
                req = req.header("content-type", t);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 415, "{path} with {content_type:?}");
            let error: Value = r.json().await.unwrap();
            assert_eq!(error["error"]["code"], "bad_request", "{path} with {content_type:?}");
        }
    }
    let r = client
        .post(format!("{base}/v1/auth/register"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "a charset parameter is fine");

    let long = "x".repeat(257);
    let r = post(&client, base, "/v1/auth/login", creds("carol", &long)).await;
    assert_eq!((r.status, &r.body["error"]["code"]), (400, &json!("bad_request")), "{}", r.body);
    let r = post(&client, base, "/v1/auth/login", creds("carol", "password-123")).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn the_web_client_is_served_with_a_content_security_policy(s: TestServer) {
    for path in ["/", "/app.js", "/rooms/general"] {
        let r = s.client.get(format!("{}{path}", s.https[0])).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let header = |name| r.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        let csp = header("content-security-policy").unwrap_or_else(|| panic!("{path}: no CSP"));
        for directive in ["default-src 'self'", "connect-src 'self' ws: wss:", "frame-ancestors 'none'"] {
            assert!(csp.contains(directive), "{path}: {csp} lacks {directive}");
        }
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"), "{path}");
    }
}

/// A TCP connection from `ip` to the server behind `base` (`http://host:port`).
async fn tcp_from(ip: &str, base: &str) -> TcpStream {
    let to: SocketAddr = base.strip_prefix("http://").unwrap().parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip.parse().unwrap(), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// What the server sends before it closes the connection (bounded wait).
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server closes the connection (read so far: {:?})", String::from_utf8_lossy(&got));
    got
}

/// A WebSocket session of `token` from `ip` to the first gateway.
async fn session_from(ip: &str, s: &TestServer, token: &str) -> Client {
    let stream = tcp_from(ip, &s.https[0]).await;
    let url = format!("{}?token={token}", s.gateways[0]);
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await.expect("upgrade");
    Client::from_stream(ws).await
}

/// A GET of the web client from `ip` on a fresh connection: its status, or
/// `None` when the server closed the connection without answering.
async fn get_from(ip: &str, base: &str) -> Option<u16> {
    let mut stream = tcp_from(ip, base).await;
    // The server may have closed already: then writing fails, and that is the answer.
    if stream.write_all(b"GET / HTTP/1.1\r\nHost: confab\r\nConnection: close\r\n\r\n").await.is_err() {
        return None;
    }
    let answer = until_closed(&mut stream).await;
    let head = String::from_utf8_lossy(&answer);
    head.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)).map(|code| code.parse().unwrap())
}

/// Polls `get_from` until the server answers (a bounded wait for a freed place).
async fn served_again(ip: &str, base: &str) -> u16 {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(status) = get_from(ip, base).await {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a freed place is taken again")
}

async fn a_half_sent_request_is_cut_off_and_other_clients_are_served(s: TestServer) {
    let mut slow = tcp_from("127.0.0.9", &s.https[0]).await;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: confab\r\nX-Slow: ").await.unwrap();
    assert_eq!(get_from("127.0.0.10", &s.https[0]).await, Some(200), "another client is served meanwhile");
    let answer = until_closed(&mut slow).await;
    assert!(!String::from_utf8_lossy(&answer).contains(" 200 "), "no page for a request never finished");
}

async fn connections_over_the_per_address_cap_are_closed_and_other_addresses_get_in(s: TestServer) {
    let token = s.user("holder").await;
    let mut held = Vec::new();
    for _ in 0..PER_IP_CONNECTIONS {
        held.push(session_from("127.0.0.11", &s, &token).await);
    }
    assert_eq!(get_from("127.0.0.11", &s.https[0]).await, None, "one more from that address is closed at once");
    let mut other = session_from("127.0.0.12", &s, &token).await;
    other.ok(json!({"op":"ping"})).await;
    signs_up_and_in_everywhere(&s, "127.0.0.12", "bob").await;
    held.pop();
    assert_eq!(served_again("127.0.0.11", &s.https[0]).await, 200, "a place freed by a session is free again");
}

/// The limits under test, low enough to reach.
fn auth_and_connection_limits() -> Vec<String> {
    vec![
        format!("--auth-per-ip-per-minute={PER_IP}"),
        format!("--auth-per-user-per-minute={PER_USER}"),
        format!("--hash-queue={HASH_QUEUE}"),
        format!("--max-connections-per-ip={PER_IP_CONNECTIONS}"),
        format!("--header-read-timeout-ms={HEADER_READ_TIMEOUT_MS}"),
    ]
}

on_every_mode_with!(
    limits,
    gateway: auth_and_connection_limits;
    too_many_attempts_from_one_address_are_refused_and_other_addresses_get_in,
    wrong_passwords_for_one_name_are_slowed_and_other_names_get_in,
    a_full_hash_queue_is_refused_with_retry_after_and_later_sign_ins_succeed,
    auth_bodies_must_be_json_and_passwords_short_before_any_hashing,
    the_web_client_is_served_with_a_content_security_policy,
    a_half_sent_request_is_cut_off_and_other_clients_are_served,
    connections_over_the_per_address_cap_are_closed_and_other_addresses_get_in,
);

#[tokio::test]
async fn a_full_server_closes_new_connections_until_a_place_is_free() {
    let s = TestServer::start_with(|c| c.server.connection_limits.max_connections = 3).await;
    // A token without an HTTP request: no other connection takes a place.
    let claims = json!({"sub": "holder", "exp": 4_000_000_000u64});
    let key = jsonwebtoken::EncodingKey::from_secret(common::SECRET.as_bytes());
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let mut held = Vec::new();
    for ip in ["127.0.0.21", "127.0.0.22", "127.0.0.23"] {
        held.push(session_from(ip, &s, &token).await);
    }
    assert_eq!(get_from("127.0.0.24", &s.https[0]).await, None, "a connection over the cap is closed at once");
    held.pop();
    assert_eq!(served_again("127.0.0.24", &s.https[0]).await, 200, "a place freed by a session is free again");
    held[0].ok(json!({"op":"ping"})).await;
}

/// Standalone keeps its data on local disk: only its owner may read it.
#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_database_and_generated_secret_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("new").join("data");
    let mut s = TestServer::start_with(|c| {
        c.data = data.clone();
        c.server.secret.jwt_secret = None;
    })
    .await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory");
    assert_eq!(mode(&data.join("confab.redb")), 0o600, "the database");
    assert_eq!(mode(&data.join("jwt-secret")), 0o600, "the generated secret");
    signs_up_and_in_everywhere(&s, "127.0.0.8", "dave").await;
    s.stop().await;
}

// Per-user limits (docs/security.md, docs/protocol.md: Limits): sessions per
// user, rooms per user, `typing` per (user, room), binary frames and `sync`
// rooms counted by the request rate limiter.

/// The per-user limits of the tests below, small enough to reach.
const SESSIONS_PER_USER: usize = 3;
const ROOMS_PER_USER: usize = 5;
/// A slow refill, so that a test's requests hardly earn any budget back.
const RATE: u32 = 1;
const BURST: u32 = 20;
/// Longer than any test: one `typing` per (user, room) goes out in a test.
const TYPING_INTERVAL_MS: u64 = 600_000;

fn ping() -> Value {
    json!({"op": "ping"})
}

/// The status and body an upgrade was refused with.
async fn refused(url: &str) -> (u16, Value) {
    match tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url)).await.expect("an answer in time") {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body = r.body().as_deref().map_or(Value::Null, |b| serde_json::from_slice(b).unwrap());
            (r.status().as_u16(), body)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

/// Sends `n` requests at once, then returns their replies' outcomes in
/// order: "ok" or the error code.
async fn outcomes(c: &mut Client, n: usize, request: impl Fn(usize) -> Value) -> Vec<String> {
    for i in 0..n {
        let mut req = request(i);
        req["id"] = json!(format!("burst-{i}"));
        c.send_text(&req.to_string()).await;
    }
    // Replies come by `re`, not in order: a throttled `typing` is answered
    // by the gateway at once, the one passed on after the dispatcher's turn.
    let mut replies = std::collections::HashMap::new();
    while replies.len() < n {
        let v = c.next_json().await;
        match v.get("re").and_then(Value::as_str).and_then(|re| re.strip_prefix("burst-")) {
            Some(i) => {
                let i: usize = i.parse().expect("a burst id");
                assert!(replies.insert(i, v.clone()).is_none(), "two replies to burst-{i}: {v}");
            }
            None => c.events.push_back(v),
        }
    }
    (0..n)
        .map(|i| {
            let r = &replies[&i];
            if r["ok"] == true { "ok".to_owned() } else { r["error"]["code"].as_str().unwrap().to_owned() }
        })
        .collect()
}

fn count(outcomes: &[String], what: &str) -> usize {
    outcomes.iter().filter(|o| *o == what).count()
}

async fn a_users_sessions_past_the_limit_are_refused_and_the_first_ones_still_work(s: TestServer) {
    let token = s.user("alice").await;
    let url = format!("{}?token={token}", s.gateways[0]);
    let mut held = Vec::new();
    for _ in 0..SESSIONS_PER_USER {
        held.push(Client::connect(&url).await);
    }
    let (status, body) = refused(&url).await;
    assert_eq!((status, &body["error"]["code"]), (429, &json!("rate_limited")), "one session too many: {body}");
    for c in &mut held {
        c.ok(ping()).await;
    }
    let mut bob = Client::connect(&format!("{}?token={}", s.gateways[0], s.user("bob").await)).await;
    bob.ok(ping()).await;
    if let Some(other) = s.gateways.get(1) {
        // The limit is per gateway (docs/security.md says so).
        Client::connect(&format!("{other}?token={token}")).await.ok(ping()).await;
    }

    // A closed session gives its place back.
    let mut gone = held.pop().unwrap();
    gone.ws.close(None).await.unwrap();
    gone.closed().await;
    let again = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok((ws, _)) = tokio_tungstenite::connect_async(&url).await {
                return Client::from_stream(ws).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    again.await.expect("a freed place is taken again").ok(ping()).await;
}

async fn joining_past_the_rooms_limit_is_forbidden_and_other_users_are_unaffected(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    s.user("carol").await;
    for i in 0..ROOMS_PER_USER {
        alice.join(&format!("room{i}")).await;
    }
    let r = alice.request(json!({"op": "join", "room": "one-more"})).await;
    assert_eq!(r["error"]["code"], "forbidden", "room {} of a user: {r}", ROOMS_PER_USER + 1);
    let rooms = alice.ok(json!({"op": "rooms"})).await;
    assert_eq!(rooms["rooms"].as_array().unwrap().len(), ROOMS_PER_USER, "the refused join made nobody a member");

    // A DM's first message makes both users members: refused from her and to her.
    let dm = |to: &str, cid: &str| json!({"op": "send", "to": to, "text": "hi", "cid": cid});
    assert_eq!(alice.error(dm("bob", "a1")).await, "forbidden");
    assert_eq!(bob.error(dm("alice", "b1")).await, "forbidden");

    // Bob has rooms of his own: he joins the room she could not, and DMs carol.
    bob.join("one-more").await;
    bob.ok(dm("carol", "b2")).await;

    // A room left is a place free again.
    alice.ok(json!({"op": "leave", "room": "room1"})).await;
    alice.join("one-more").await;
}

async fn a_typing_flood_reaches_the_other_member_once(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    for room in ["general", "other"] {
        alice.join(room).await;
        bob.join(room).await;
    }
    let typing = |room: &str| json!({"op": "typing", "room": room});
    let flood = outcomes(&mut alice, 15, |_| typing("general")).await;
    assert_eq!(count(&flood, "ok"), 15, "every typing is answered ok: {flood:?}");
    alice.ok(typing("other")).await;
    alice.send("general", "done typing", "t1").await;

    // The room's events reach bob in order: the typings come before the message.
    bob.event(|v| v["ev"] == "msg" && v["room"] == "general").await;
    bob.event(|v| v["ev"] == "typing" && v["room"] == "other").await;
    let typed = bob.take_events().into_iter().filter(|v| v["ev"] == "typing" && v["room"] == "general").count();
    assert_eq!(typed, 1, "15 typings of one user in one room, one event");
    // The message ended her indicator: typing again at once is news.
    alice.ok(typing("general")).await;
    bob.event(|v| v["ev"] == "typing" && v["room"] == "general").await;

    // Throttled or not, typing in a room one is not in is `not_member`.
    let mut dave = s.connected("dave").await;
    assert_eq!(dave.error(typing("general")).await, "not_member");
    assert_eq!(dave.error(typing("general")).await, "not_member");
}

async fn a_binary_flood_spends_the_request_budget_and_other_sessions_are_unaffected(s: TestServer) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let n = 2 * BURST as usize;
    for _ in 0..n {
        alice.ws.send(Message::Binary(vec![0u8; 16].into())).await.unwrap();
    }
    let mut codes = Vec::new();
    for _ in 0..n {
        let r = alice.next_json().await;
        assert!(r.get("re").is_none(), "a binary frame has no id: {r}");
        codes.push(r["error"]["code"].as_str().unwrap().to_owned());
    }
    let (refused, limited) = (count(&codes, "bad_request"), count(&codes, "rate_limited"));
    assert_eq!(refused + limited, n, "{codes:?}");
    assert!(refused >= BURST as usize, "the burst's worth is refused as not text: {codes:?}");
    assert!(limited > 0, "binary frames past the budget are rate_limited, as text frames are: {codes:?}");
    bob.ok(ping()).await;

    // The connection stays, and the budget comes back.
    let back = tokio::time::timeout(PATIENCE, async {
        while alice.request(ping()).await["ok"] != true {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    back.await.expect("the budget refills");
}

async fn a_sync_costs_one_unit_per_room(s: TestServer) {
    let token = s.user("alice").await;
    let mut joiner = s.connect(&token).await;
    let rooms: Vec<String> = (0..ROOMS_PER_USER).map(|i| format!("room{i}")).collect();
    for room in &rooms {
        joiner.join(room).await;
    }
    // A fresh session has the whole burst.
    let mut alice = s.connect(&token).await;
    let since: serde_json::Map<String, Value> = rooms.iter().map(|r| (r.clone(), json!(0))).collect();
    let synced = alice.ok(json!({"op": "sync", "rooms": since})).await;
    assert_eq!(synced["rooms"].as_object().unwrap().len(), ROOMS_PER_USER);
    let pings = outcomes(&mut alice, BURST as usize, |_| ping()).await;
    let left = BURST as usize - ROOMS_PER_USER;
    // One unit may come back meanwhile (RATE a second).
    assert!(
        (left..=left + 1).contains(&count(&pings, "ok")),
        "a sync of {ROOMS_PER_USER} rooms cost as many: {pings:?}"
    );
    assert_eq!(pings[BURST as usize - 1], "rate_limited");
    joiner.ok(ping()).await;
}

/// The per-user limits under test: the gateway's, and the dispatcher's rooms limit.
fn user_limits() -> Vec<String> {
    vec![
        format!("--max-sessions-per-user={SESSIONS_PER_USER}"),
        format!("--typing-interval-ms={TYPING_INTERVAL_MS}"),
        format!("--rate-per-second={RATE}"),
        format!("--rate-burst={BURST}"),
    ]
}

fn rooms_limit() -> Vec<String> {
    vec![format!("--max-rooms-per-user={ROOMS_PER_USER}")]
}

on_every_mode_with!(
    per_user,
    gateway: user_limits,
    dispatcher: rooms_limit;
    a_users_sessions_past_the_limit_are_refused_and_the_first_ones_still_work,
    joining_past_the_rooms_limit_is_forbidden_and_other_users_are_unaffected,
    a_typing_flood_reaches_the_other_member_once,
    a_binary_flood_spends_the_request_budget_and_other_sessions_are_unaffected,
    a_sync_costs_one_unit_per_room,
);
