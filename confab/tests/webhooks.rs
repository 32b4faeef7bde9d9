//! Webhooks (`--webhook`, `--webhook-secret-file`): every stored message,
//! membership change, edit, deletion and reaction is POSTed, signed, at
//! least once and in order per room, across a receiver that fails.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use common::receiver::{Received, Receiver};
use serde_json::{Value, json};

const SECRET: &str = "whsec-test-0123456789";
/// Calls the receiver fails before it starts answering 2xx.
const FAILS: usize = 3;

/// Verifies `Confab-Signature` with Python's `hmac`, independently of the
/// server's implementation.
const VERIFY: &str = r#"
import hmac, hashlib, sys
secret, header, path = sys.argv[1], sys.argv[2], sys.argv[3]
body = open(path, "rb").read()
parts = dict(p.split("=", 1) for p in header.split(","))
want = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
sys.exit(0 if hmac.compare_digest(want, parts["v1"]) else 1)
"#;

fn events(got: &[Received]) -> Vec<Value> {
    got.iter().filter(|r| r.status == 200).map(|r| serde_json::from_slice(&r.body).unwrap()).collect()
}

/// Waits until `done` holds of the events delivered so far.
async fn until(r: &Receiver, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = events(&r.received());
        if done(&got) {
            return got;
        }
        assert!(tokio::time::Instant::now() < deadline, "webhook events so far: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn message_texts(events: &[Value]) -> Vec<String> {
    first_arrivals(events, "text")
}

fn first_arrivals(events: &[Value], field: &str) -> Vec<String> {
    // At least once: a text may come twice, but the first arrivals keep the room's order.
    let mut out: Vec<String> = Vec::new();
    for e in events.iter().filter(|e| e["type"] == "message") {
        let t = e["message"][field].as_str().unwrap().to_owned();
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

async fn webhook_setup() -> (Receiver, tempfile::TempDir, Vec<String>) {
    let receiver = Receiver::start(Arc::new(
        |n, _: &[u8]| {
            if n < FAILS { (503, String::new(), 0) } else { (200, String::new(), 0) }
        },
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let flags = vec![
        "--webhook".to_owned(),
        receiver.url.clone(),
        "--webhook-secret-file".to_owned(),
        secret.display().to_string(),
    ];
    (receiver, dir, flags)
}

async fn delivers_everything_in_order_across_failures(s: TestServer, receiver: Receiver) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    alice.join("r").await;
    bob.join("r").await;
    bob.ok(json!({"op": "leave", "room": "r"})).await;
    drop(bob);
    let texts: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    let mut seqs = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        seqs.push(alice.send("r", t, &format!("c{i}")).await["seq"].as_u64().unwrap());
    }
    alice.ok(json!({"op": "edit", "room": "r", "seq": seqs[0], "text": "m0 edited"})).await;
    alice.ok(json!({"op": "react", "room": "r", "seq": seqs[1], "emoji": "👍"})).await;
    alice.ok(json!({"op": "delete", "room": "r", "seq": seqs[2]})).await;
    let got = until(&receiver, |e| e.iter().any(|e| e["type"] == "delete")).await;
    // The text is the message's as the webhook read it (an edit or a
    // deletion may show already); the cids give the order.
    let cids: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    assert_eq!(first_arrivals(&got, "cid"), cids, "{got:?}");
    let kinds: Vec<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"member") && kinds.contains(&"edit") && kinds.contains(&"reaction"), "{kinds:?}");
    let leave = got.iter().find(|e| e["type"] == "member" && e["user"] == "bob" && e["action"] == "leave");
    assert!(leave.is_some(), "{got:?}");
    // Alice is online; the message payload names nobody else offline (bob left).
    let first = got.iter().find(|e| e["type"] == "message").unwrap();
    assert_eq!(first["offline"], json!([]), "{first}");
    let all = receiver.received();
    assert!(all.iter().filter(|r| r.status == 503).count() >= FAILS, "the first calls failed");
    if s.others.is_empty() {
        // Standalone: its one process serves the webhook's metrics.
        let text = s.metrics().await;
        let sample = |prefix: &str, label: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(prefix) && l.contains(label))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        assert!(sample("confab_webhook_deliveries_total{", "outcome=\"failed\"") >= FAILS as f64, "{text}");
        assert!(sample("confab_webhook_deliveries_total{", "outcome=\"ok\"") >= got.len() as f64, "{text}");
        assert!(sample("confab_webhook_retries_total{", "webhook=") >= FAILS as f64, "{text}");
        assert!(text.contains("confab_webhook_lag_seconds{"), "{text}");
    }
    // Every call carries a signature Python's hmac accepts; a wrong secret does not.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("verify.py");
    std::fs::write(&script, VERIFY).unwrap();
    for (i, r) in all.iter().enumerate().take(20) {
        let body = dir.path().join(format!("body-{i}"));
        std::fs::write(&body, &r.body).unwrap();
        let header = r.signature.clone().expect("signed");
        let ok = |secret: &str| {
            std::process::Command::new("python3")
                .args([script.to_str().unwrap(), secret, &header, body.to_str().unwrap()])
                .status()
                .unwrap()
                .success()
        };
        assert!(ok(SECRET), "signature of call {i}: {header}");
        assert!(!ok("another secret"), "a wrong secret is refused");
    }
}

#[tokio::test]
async fn standalone_delivers_every_event_in_order_signed_across_a_failing_receiver() {
    let (receiver, _dir, flags) = webhook_setup().await;
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let s = TestServer::start_with_flags(&flags).await;
    delivers_everything_in_order_across_failures(s, receiver).await;
}

#[tokio::test]
async fn distributed_delivers_every_event_in_order_signed_across_a_failing_receiver() {
    let (receiver, _dir, flags) = webhook_setup().await;
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let test = async {
        let s = TestServer::start_cluster_with_roles(&[], &flags).await;
        delivers_everything_in_order_across_failures(s, receiver).await;
    };
    tokio::time::timeout(common::CLUSTER_TEST, test).await.expect("the test ends in time");
}

/// The `offline` list of the message event for `text`, sent by alice.
async fn offline_of(alice: &mut common::Client, receiver: &Receiver, text: &str, cid: &str) -> Value {
    alice.send("r", text, cid).await;
    let got = until(receiver, |e| message_texts(e).contains(&text.to_owned())).await;
    let e = got.iter().find(|e| e["type"] == "message" && e["message"]["text"] == text).unwrap();
    e["offline"].clone()
}

async fn offline_members_are_named(s: TestServer, receiver: Receiver) {
    let mut alice = s.connected("alice").await;
    alice.join("r").await;
    // bob keeps the default level (all), carol wants mentions only, dave none.
    for (user, level) in [("bob", "all"), ("carol", "mentions"), ("dave", "none")] {
        let mut c = s.connected(user).await;
        c.join("r").await;
        c.ok(json!({"op": "notify", "room": "r", "level": level})).await;
    }
    // Their sessions ended; once the gateway has seen them go, they are offline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        let offline = offline_of(&mut alice, &receiver, &format!("ping {i}"), &format!("p{i}")).await;
        if offline == json!(["bob"]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "bob never offline: {offline}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let offline = offline_of(&mut alice, &receiver, "@carol @dave @alice look", "m1").await;
    assert_eq!(offline, json!(["bob", "carol"]), "a mention reaches carol's level, never dave's; not the sender");
}

#[tokio::test]
async fn standalone_names_members_without_a_live_session_as_offline() {
    let (receiver, _dir, flags) = webhook_setup().await;
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    offline_members_are_named(TestServer::start_with_flags(&flags).await, receiver).await;
}

#[tokio::test]
async fn distributed_names_members_without_a_live_session_as_offline() {
    let (receiver, _dir, flags) = webhook_setup().await;
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let test =
        async { offline_members_are_named(TestServer::start_cluster_with_roles(&[], &flags).await, receiver).await };
    tokio::time::timeout(common::CLUSTER_TEST, test).await.expect("the test ends in time");
}

/// Registers `name` on the gateway at `http` and connects there.
async fn connected_on(http: &str, name: &str) -> common::Client {
    let client = reqwest::Client::new();
    let creds = json!({"username": name, "password": "password-123"});
    client.post(format!("{http}/v1/auth/register")).json(&creds).send().await.unwrap();
    let login: Value =
        client.post(format!("{http}/v1/auth/login")).json(&creds).send().await.unwrap().json().await.unwrap();
    let ws = http.replace("http://", "ws://");
    common::Client::connect(&format!("{ws}/v1/ws?token={}", login["token"].as_str().unwrap())).await
}

#[tokio::test]
async fn distributed_delivers_the_backlog_of_a_receiver_that_was_down_across_a_dispatcher_restart() {
    use common::cluster;
    use std::sync::atomic::{AtomicBool, Ordering};
    let test = async {
        let down = Arc::new(AtomicBool::new(true));
        let is_down = down.clone();
        let receiver = Receiver::start(Arc::new(move |_, _: &[u8]| {
            if is_down.load(Ordering::SeqCst) { (503, String::new(), 0) } else { (200, String::new(), 0) }
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("webhook-secret");
        std::fs::write(&secret, SECRET).unwrap();
        let secret = secret.display().to_string();
        let hook = ["--webhook", &receiver.url, "--webhook-secret-file", &secret];
        let mut started = cluster::start_with(1, 1, &[], &hook).await;
        let http = format!("http://{}", started.gateways[0].public());
        let mut alice = connected_on(&http, "alice").await;
        alice.join("r").await;
        for i in 0..5 {
            alice.send("r", &format!("m{i}"), &format!("c{i}")).await;
        }
        // The receiver is down: the webhook keeps trying.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while receiver.received().len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "the webhook never called");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The dispatcher goes, with nothing delivered; another takes its place.
        started.dispatchers.remove(0).stop().await.expect("clean stop");
        let (kafka, cql) = (cluster::env("KAFKA_BOOTSTRAP"), cluster::env("CQL_CONTACT_POINTS"));
        let mut args = vec!["--kafka", &kafka, "--topic-prefix", &started.topic_prefix, "--cql", &cql];
        args.extend(["--keyspace", &started.keyspace.name, "--admin-listen", "127.0.0.1:0"]);
        args.extend(["--jwt-secret", common::SECRET]);
        args.extend(hook);
        let config = cluster::parse::<confab::config::DispatcherConfig>(&args);
        started.dispatchers.push(confab::distributed::start_dispatcher(config).await.expect("dispatcher starts"));
        for i in 5..8 {
            alice.send("r", &format!("m{i}"), &format!("c{i}")).await;
        }
        down.store(false, Ordering::SeqCst);
        let want: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
        let got = until(&receiver, |e| first_arrivals(e, "cid").len() == want.len()).await;
        assert_eq!(first_arrivals(&got, "cid"), want, "{got:?}");
        for d in started.dispatchers.drain(..) {
            d.stop().await.expect("clean stop");
        }
        for g in started.gateways.drain(..) {
            g.stop().await.expect("clean stop");
        }
    };
    tokio::time::timeout(common::CLUSTER_TEST, test).await.expect("the test ends in time");
}

/// Standalone keeps a webhook's backlog on disk: a receiver that is down
/// across a restart of the process gets every event when it returns, in
/// the room's order.
#[tokio::test]
async fn standalone_delivers_the_backlog_of_a_receiver_that_was_down_across_a_restart() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let down = Arc::new(AtomicBool::new(true));
    let is_down = down.clone();
    let receiver = Receiver::start(Arc::new(move |_, _: &[u8]| {
        if is_down.load(Ordering::SeqCst) { (503, String::new(), 0) } else { (200, String::new(), 0) }
    }))
    .await;
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("webhook-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let secret = secret.display().to_string();
    let hook = ["--webhook", &receiver.url, "--webhook-secret-file", &secret];
    let mut s = TestServer::start_with_flags(&hook).await;
    let token = s.user("alice").await;
    let mut alice = s.connect(&token).await;
    alice.join("r").await;
    for i in 0..5 {
        alice.send("r", &format!("m{i}"), &format!("c{i}")).await;
    }
    // The receiver is down: the webhook keeps trying.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while receiver.received().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the webhook never called");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(alice);
    s.running.take().unwrap().stop().await.expect("clean stop");

    // The same data directory, the same webhook.
    let running = confab::standalone::start(common::config_with(s.dir.path(), &hook)).await.expect("restarts");
    let mut alice = common::Client::connect(&format!("ws://{}/v1/ws?token={token}", running.public())).await;
    for i in 5..8 {
        alice.send("r", &format!("m{i}"), &format!("c{i}")).await;
    }
    down.store(false, Ordering::SeqCst);
    let want: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    let got = until(&receiver, |e| first_arrivals(e, "cid").len() == want.len()).await;
    assert_eq!(first_arrivals(&got, "cid"), want, "{got:?}");
    // Alice's join came before the restart too.
    assert!(got.iter().any(|e| e["type"] == "member" && e["user"] == "alice" && e["action"] == "join"), "{got:?}");
    running.stop().await.expect("clean stop");
}

/// A record produced before any webhook's consumer group existed is
/// delivered once the webhook starts: its group starts at a durable
/// position (the oldest record the topic keeps), not at the log's end.
#[tokio::test]
async fn distributed_delivers_what_was_sent_before_the_webhook_started() {
    use common::cluster;
    let test = async {
        let (receiver, _dir, hook) = webhook_setup().await;
        let mut started = cluster::start_with(1, 1, &[], &[]).await;
        let http = format!("http://{}", started.gateways[0].public());
        let mut alice = connected_on(&http, "alice").await;
        alice.join("r").await;
        for i in 0..3 {
            alice.send("r", &format!("m{i}"), &format!("c{i}")).await;
        }
        // Only now does a dispatcher with the webhook start.
        let (kafka, cql) = (cluster::env("KAFKA_BOOTSTRAP"), cluster::env("CQL_CONTACT_POINTS"));
        let mut args = vec!["--kafka", &kafka, "--topic-prefix", &started.topic_prefix, "--cql", &cql];
        args.extend(["--keyspace", &started.keyspace.name, "--admin-listen", "127.0.0.1:0"]);
        args.extend(["--jwt-secret", common::SECRET]);
        args.extend(hook.iter().map(String::as_str));
        let config = cluster::parse::<confab::config::DispatcherConfig>(&args);
        started.dispatchers.push(confab::distributed::start_dispatcher(config).await.expect("dispatcher starts"));
        alice.send("r", "m3", "c3").await;
        let want: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
        let got = until(&receiver, |e| first_arrivals(e, "cid").len() == want.len()).await;
        assert_eq!(first_arrivals(&got, "cid"), want, "{got:?}");
        for d in started.dispatchers.drain(..) {
            d.stop().await.expect("clean stop");
        }
        for g in started.gateways.drain(..) {
            g.stop().await.expect("clean stop");
        }
    };
    tokio::time::timeout(common::CLUSTER_TEST, test).await.expect("the test ends in time");
}

/// An `https://` webhook whose certificate `--webhook-ca-file` vouches for
/// gets every event; `ca` false: the same webhook without the CA file is
/// refused at the TLS handshake and nothing reaches the receiver.
async fn https_webhook(cluster: bool) {
    let (receiver, ca) = Receiver::start_tls(Arc::new(|_, _: &[u8]| (200, String::new(), 0))).await;
    let dir = tempfile::tempdir().unwrap();
    let (secret, ca_file) = (dir.path().join("webhook-secret"), dir.path().join("ca.pem"));
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::write(&ca_file, ca).unwrap();
    let (secret, ca_file) = (secret.display().to_string(), ca_file.display().to_string());
    let flags = ["--webhook", &receiver.url, "--webhook-secret-file", &secret, "--webhook-ca-file", &ca_file];
    let s = if cluster {
        TestServer::start_cluster_with_roles(&[], &flags).await
    } else {
        TestServer::start_with_flags(&flags).await
    };
    let mut alice = s.connected("alice").await;
    alice.join("r").await;
    alice.send("r", "over tls", "c1").await;
    let got = until(&receiver, |e| message_texts(e).contains(&"over tls".to_owned())).await;
    assert!(got.iter().all(|e| e["id"].is_string()), "{got:?}");
    assert!(receiver.received().iter().all(|r| r.signature.is_some()), "signed over TLS too");
}

#[tokio::test]
async fn standalone_delivers_to_an_https_webhook_its_ca_file_trusts() {
    https_webhook(false).await;
}

#[tokio::test]
async fn distributed_delivers_to_an_https_webhook_its_ca_file_trusts() {
    tokio::time::timeout(common::CLUSTER_TEST, https_webhook(true)).await.expect("the test ends in time");
}

#[tokio::test]
async fn an_https_webhook_with_an_untrusted_certificate_gets_nothing() {
    let (receiver, _ca) = Receiver::start_tls(Arc::new(|_, _: &[u8]| (200, String::new(), 0))).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let secret = secret.display().to_string();
    let s = TestServer::start_with_flags(&["--webhook", &receiver.url, "--webhook-secret-file", &secret]).await;
    let mut alice = s.connected("alice").await;
    alice.join("r").await;
    alice.send("r", "secret text", "c1").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = s.metrics().await;
        let failed = text
            .lines()
            .filter(|l| l.starts_with("confab_webhook_deliveries_total{") && l.contains("outcome=\"failed\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        if failed >= 2.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the webhook never failed: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(receiver.received().is_empty(), "no request crossed an untrusted handshake");
    // The chat itself is unaffected.
    let mut bob = s.connected("bob").await;
    bob.join("r").await;
    assert_eq!(bob.ok(json!({"op": "history", "room": "r"})).await["messages"][0]["text"], "secret text");
}

/// A receiver held down (503) until `up` is set.
async fn held_down() -> (Receiver, Arc<std::sync::atomic::AtomicBool>, tempfile::TempDir, Vec<String>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let up = Arc::new(AtomicBool::new(false));
    let is_up = up.clone();
    let receiver = Receiver::start(Arc::new(move |_, _: &[u8]| {
        if is_up.load(Ordering::SeqCst) { (200, String::new(), 0) } else { (503, String::new(), 0) }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let flags =
        vec!["--webhook".into(), receiver.url.clone(), "--webhook-secret-file".into(), secret.display().to_string()];
    (receiver, up, dir, flags)
}

/// Membership changes reach a receiver that was behind exactly as they
/// happened (each once, in order, with who kicked or banned), although
/// by the time the webhook reads them the membership changed again; and
/// refused ones (a banned user's join, a ban by a plain member) none.
async fn member_events_are_exact_for_a_receiver_behind(
    s: TestServer,
    receiver: Receiver,
    up: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut alice = s.connected("alice").await;
    alice.join("r").await;
    // The webhook is stuck on alice's join until the receiver comes up:
    // every later record of the room is read after all of this happened.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while receiver.received().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the webhook never called");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut bob = s.connected("bob").await;
    bob.join("r").await;
    bob.ok(json!({"op": "leave", "room": "r"})).await;
    bob.join("r").await;
    assert_eq!(bob.error(json!({"op": "ban", "room": "r", "user": "eve"})).await, "forbidden");
    alice.ok(json!({"op": "kick", "room": "r", "user": "bob"})).await;
    alice.ok(json!({"op": "ban", "room": "r", "user": "mallory"})).await;
    let mut mallory = s.connected("mallory").await;
    assert_eq!(mallory.error(json!({"op": "join", "room": "r"})).await, "forbidden");
    // Others are unaffected: carol joins and alice's message is stored.
    let mut carol = s.connected("carol").await;
    carol.join("r").await;
    alice.send("r", "the end", "c-end").await;
    up.store(true, std::sync::atomic::Ordering::SeqCst);
    let got = until(&receiver, |e| message_texts(e).contains(&"the end".to_owned())).await;
    // At least once: deduplicate by id, as a receiver does.
    let mut seen = std::collections::HashSet::new();
    let members: Vec<Value> = got
        .iter()
        .filter(|e| e["type"] == "member" && e["room"] == "r" && seen.insert(e["id"].as_str().unwrap().to_owned()))
        .map(|e| {
            let mut e = e.clone();
            e.as_object_mut().unwrap().retain(|k, _| ["user", "action", "by"].contains(&k.as_str()));
            e
        })
        .collect();
    assert_eq!(
        members,
        [
            json!({"user": "alice", "action": "join"}),
            json!({"user": "bob", "action": "join"}),
            json!({"user": "bob", "action": "leave"}),
            json!({"user": "bob", "action": "join"}),
            json!({"user": "bob", "action": "kick", "by": "alice"}),
            json!({"user": "mallory", "action": "ban", "by": "alice"}),
            json!({"user": "carol", "action": "join"}),
        ],
        "{got:?}"
    );
}

#[tokio::test]
async fn standalone_member_events_are_exact_for_a_receiver_behind() {
    let (receiver, up, _dir, flags) = held_down().await;
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let s = TestServer::start_with_flags(&flags).await;
    member_events_are_exact_for_a_receiver_behind(s, receiver, up).await;
}

#[tokio::test]
async fn distributed_member_events_are_exact_for_a_receiver_behind() {
    let (receiver, up, _dir, flags) = held_down().await;
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let test = async {
        let s = TestServer::start_cluster_with_roles(&[], &flags).await;
        member_events_are_exact_for_a_receiver_behind(s, receiver, up).await;
    };
    tokio::time::timeout(common::CLUSTER_TEST, test).await.expect("the test ends in time");
}
