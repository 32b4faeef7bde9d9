//! The kind suite (`e2e/kind/run.sh` runs it; CI only compiles it, having
//! no Docker): against a ChatCluster the real operator deployed on a real
//! cluster, with the real image, Kafka and Cassandra, two users on two
//! different gateways register, log in, join a room and chat.
//!
//! Environment: `KUBECONFIG` (the kind cluster), `CONFAB_KIND_GATEWAYS`
//! (comma-separated base URLs, one port-forward per gateway pod).

use std::time::Duration;

use anyhow::{Context, bail};
use confab_e2e::wait_for;
use confab_operator::crd::ChatCluster;
use futures_util::{SinkExt, StreamExt};
use kube::api::Api;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let gateways: Vec<String> = std::env::var("CONFAB_KIND_GATEWAYS")
        .context("CONFAB_KIND_GATEWAYS is not set: run e2e/kind/run.sh")?
        .split(',')
        .map(str::to_owned)
        .collect();
    let (first, second) = match gateways.as_slice() {
        [a, b, ..] => (a.clone(), b.clone()),
        [a] => (a.clone(), a.clone()),
        [] => bail!("CONFAB_KIND_GATEWAYS names no gateway"),
    };

    step("the ChatCluster reports every pod ready");
    confab_e2e::use_ring_crypto();
    let client = kube::Client::try_default().await?;
    let clusters: Api<ChatCluster> = Api::namespaced(client, "confab-kind");
    let cc = wait_for("chat to be Available with 2/2 gateways and 2/2 dispatchers", TIMEOUT, POLL, || async {
        let cc = clusters.get("chat").await?;
        let status = cc.status.clone().unwrap_or_default();
        let available = status.conditions.iter().any(|c| c.type_ == "Available" && c.status == "True");
        Ok((available && status.gateways.summary == "2/2" && status.dispatchers.summary == "2/2").then_some(cc))
    })
    .await?;
    println!("endpoint: {:?}", cc.status.and_then(|s| s.endpoint));

    let http = reqwest::Client::new();
    let suffix = std::process::id();
    let (alice, bob) = (format!("alice{suffix}"), format!("bob{suffix}"));
    step(&format!("{alice} on {first}, {bob} on {second}: register and log in"));
    let alice_token = account(&http, &first, &alice).await?;
    let bob_token = account(&http, &second, &bob).await?;

    step("both join a room over WebSocket");
    let mut a = connect(&first, &alice_token).await?;
    let mut b = connect(&second, &bob_token).await?;
    let room = format!("kind-{suffix}");
    request(&mut a, json!({"op": "join", "id": 1, "room": room})).await?;
    request(&mut b, json!({"op": "join", "id": 1, "room": room})).await?;

    step("a message from one gateway reaches the other");
    let sent =
        request(&mut a, json!({"op": "send", "id": 2, "room": room, "text": "hello from kind", "cid": "k1"})).await?;
    let seq = sent["seq"].as_i64().context("send reply without seq")?;
    let event = next_event(&mut b, |e| e["ev"] == "msg" && e["room"] == room.as_str()).await?;
    assert_eq!(event["text"], "hello from kind");
    assert_eq!(event["from"], alice.as_str());
    assert_eq!(event["seq"].as_i64(), Some(seq));

    step("history over HTTP from the other gateway");
    let history: Value = http
        .get(format!("{second}/v1/rooms/{room}/messages"))
        .bearer_auth(&bob_token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let texts: Vec<&str> =
        history["messages"].as_array().into_iter().flatten().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, ["hello from kind"]);

    step("kind suite: all checks passed");
    Ok(())
}

fn step(what: &str) {
    println!("[kind suite] {what}");
}

/// Registers `user` and returns a token (retrying while the port-forward
/// comes up).
async fn account(http: &reqwest::Client, base: &str, user: &str) -> anyhow::Result<String> {
    let body = json!({"username": user, "password": "correct horse battery"});
    wait_for("registration", TIMEOUT, POLL, || async {
        let r = http.post(format!("{base}/v1/auth/register")).json(&body).send().await?;
        Ok((r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT).then_some(()))
    })
    .await?;
    let login: Value =
        http.post(format!("{base}/v1/auth/login")).json(&body).send().await?.error_for_status()?.json().await?;
    Ok(login["token"].as_str().context("login without token")?.to_owned())
}

async fn connect(base: &str, token: &str) -> anyhow::Result<Socket> {
    let url = format!("{}/v1/ws?token={token}", base.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let hello = next_event(&mut socket, |e| e["ev"] == "hello").await?;
    println!("  connected to gateway {}", hello["server"]);
    Ok(socket)
}

async fn request(socket: &mut Socket, frame: Value) -> anyhow::Result<Value> {
    let id = frame["id"].clone();
    socket.send(Message::text(frame.to_string())).await?;
    let reply = next_event(socket, |e| e["re"] == id).await?;
    if reply["ok"] != true {
        bail!("{frame} failed: {reply}");
    }
    Ok(reply)
}

/// The next frame matching `wanted`, skipping others.
async fn next_event(socket: &mut Socket, wanted: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    tokio::time::timeout(TIMEOUT, async {
        while let Some(frame) = socket.next().await {
            if let Message::Text(text) = frame? {
                let value: Value = serde_json::from_str(&text)?;
                if wanted(&value) {
                    return Ok(value);
                }
            }
        }
        bail!("the connection closed")
    })
    .await
    .context("timed out waiting for a frame")?
}
