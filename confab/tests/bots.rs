//! The example bots (examples/bots/): the Rust robot on the server API and a
//! signed webhook answers `!time` and a mention in a room, never itself, and
//! refuses a webhook call it cannot verify; on standalone and on the
//! 2-gateway, 2-dispatcher cluster.

mod common;

use std::time::Duration;

use common::{Client, PATIENCE, TestServer};
use serde_json::{Value, json};

const KEY: &str = "bots-api-key-0123456789abcdef";
const SECRET: &str = "whsec-bots-0123456789";
const BOT: &str = "robo";

/// The flags of the gateways (API key) and of the dispatchers (webhook to
/// the bot at `bot`), and the bot's listener.
fn flags(dir: &std::path::Path, bot: std::net::SocketAddr) -> (Vec<String>, Vec<String>) {
    let keys = dir.join("keys");
    std::fs::write(&keys, format!("app:{KEY}\n")).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let gateway = vec![format!("--api-key-file={}", keys.display())];
    let dispatcher =
        vec![format!("--webhook=http://{bot}/confab"), format!("--webhook-secret-file={}", secret.display())];
    (gateway, dispatcher)
}

async fn api(s: &TestServer, path: &str, body: Value) -> Value {
    let r = s.client.post(format!("{}{path}", s.https[0])).bearer_auth(KEY).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!((200..300).contains(&status), "{path}: {status} {body}");
    body
}

/// The bot's answer to the message at `seq`, as `alice` sees it.
async fn answer_to(alice: &mut Client, seq: &Value) -> String {
    let ev = alice.event(|v| v["ev"] == "msg" && v["from"] == BOT && v["reply_to"] == *seq).await;
    ev["text"].as_str().unwrap().to_owned()
}

async fn the_bot_answers_in_a_room(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bot_addr = listener.local_addr().unwrap();
    let (gateway, dispatcher) = flags(dir.path(), bot_addr);
    let s = match mode {
        "standalone" => {
            let all: Vec<&str> = gateway.iter().chain(&dispatcher).map(String::as_str).collect();
            TestServer::start_with_flags(&all).await
        }
        _ => {
            let g: Vec<&str> = gateway.iter().map(String::as_str).collect();
            let d: Vec<&str> = dispatcher.iter().map(String::as_str).collect();
            TestServer::start_cluster_with_roles(&g, &d).await
        }
    };
    let config = confab_bot::BotConfig {
        user: BOT.into(),
        server: s.https[0].clone(),
        api_key: KEY.into(),
        webhook_secret: SECRET.into(),
    };
    let bot = tokio::spawn(confab_bot::serve(listener, config));

    api(&s, "/v1/server/users", json!({"user": BOT, "display_name": "Robo", "bot": true})).await;
    let mut alice = s.connected("alice").await;
    alice.join("lobby").await;
    api(&s, "/v1/server/rooms/lobby/members", json!({"user": BOT})).await;

    // Its own message is not a command to it: no loop.
    let own =
        api(&s, "/v1/server/publish", json!({"room": "lobby", "from": BOT, "text": "!help", "cid": "own-1"})).await;

    let sent = alice.send("lobby", "!time", "t-1").await;
    let text = answer_to(&mut alice, &sent["seq"]).await;
    assert!(text.starts_with("It is ") && text.ends_with(" UTC."), "{text}");
    let sent = alice.send("lobby", "are you there @robo?", "t-2").await;
    assert_eq!(answer_to(&mut alice, &sent["seq"]).await, "Hello @alice! I am a bot: try !help.");
    let sent = alice.send("lobby", "!help", "t-3").await;
    assert!(answer_to(&mut alice, &sent["seq"]).await.contains("!time"));

    // Webhooks come in the room's order: the bot saw its own `!help` before
    // alice's messages, and answered none of its own.
    let page = alice.ok(json!({"op": "history", "room": "lobby", "limit": 50})).await;
    let messages = page["messages"].as_array().unwrap();
    let from_bot: Vec<&Value> = messages.iter().filter(|m| m["from"] == BOT).collect();
    assert_eq!(from_bot.len(), 4, "{page}");
    assert!(messages.iter().all(|m| m["reply_to"] != own["seq"]), "the bot answered itself: {page}");

    // A call it cannot verify is refused, and answered by nobody.
    let http = reqwest::Client::new();
    let body = json!({"type": "message", "id": "0-ff", "ts": 0,
        "message": {"room": "lobby", "seq": 99, "from": "mallory", "text": "!help", "ts": 0, "cid": "x"}});
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for signature in [None, Some(format!("t={now},v1={}", "00".repeat(32))), Some("garbage".to_owned())] {
        let mut req = http.post(format!("http://{bot_addr}/confab")).json(&body);
        if let Some(sig) = signature.clone() {
            req = req.header("Confab-Signature", sig);
        }
        assert_eq!(req.send().await.unwrap().status().as_u16(), 401, "{signature:?}");
    }
    // The room is as it was: a probe mention is answered next, nothing before it.
    let probe = alice.send("lobby", "@robo ping", "t-4").await;
    answer_to(&mut alice, &probe["seq"]).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let page = loop {
        let page = alice.ok(json!({"op": "history", "room": "lobby", "limit": 50})).await;
        if page["messages"].as_array().unwrap().iter().any(|m| m["reply_to"] == probe["seq"]) {
            break page;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(page["messages"].as_array().unwrap().iter().all(|m| m["reply_to"] != 99), "{page}");
    let users = alice.ok(json!({"op": "users", "users": [BOT]})).await;
    assert_eq!(users["users"][0]["bot"], true);
    bot.abort();
}

#[tokio::test]
async fn standalone_the_rust_bot_answers_time_and_mentions() {
    the_bot_answers_in_a_room("standalone").await;
}

#[tokio::test]
async fn distributed_the_rust_bot_answers_time_and_mentions() {
    tokio::time::timeout(common::CLUSTER_TEST, the_bot_answers_in_a_room("distributed")).await.expect("in time");
}
