//! One benchmark connection: a WebSocket from a chosen 127.0.0.x source
//! address, and the two dialects it speaks, Confab's protocol
//! (/work/shared/design/PROTOCOL.md) and Centrifugo's JSON protocol.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

/// How long connecting, authenticating and joining may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    Confab,
    Centrifugo,
}

/// An HS256 token for `user`, valid for a day: both servers verify tokens
/// signed with the secret the benchmark gave them.
pub fn token(secret: &str, user: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + 86_400;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

/// `ws://host:port/path` → the socket address to dial.
fn address(url: &str) -> Result<SocketAddr> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| anyhow!("{url}: only ws:// URLs are supported"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority.parse().with_context(|| format!("{url}: the host must be an IP address and port"))
}

/// A WebSocket to `url` from `source`, with small buffers: the benchmark
/// holds tens of thousands of these (tungstenite's default read buffer is
/// 128 KiB).
pub async fn open(url: &str, source: IpAddr) -> Result<Ws> {
    let addr = address(url)?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0)).with_context(|| format!("bind {source}"))?;
    let stream = socket.connect(addr).await.with_context(|| format!("connect {addr} from {source}"))?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    Ok(ws)
}

/// Connects `user`, authenticates and joins (Confab) or subscribes to
/// (Centrifugo) each of `rooms`. Returns the socket and the heartbeat.
pub async fn setup(
    dialect: Dialect,
    url: &str,
    source: IpAddr,
    token: &str,
    rooms: &[String],
) -> Result<(Ws, Duration)> {
    tokio::time::timeout(SETUP_TIMEOUT, async {
        match dialect {
            Dialect::Confab => {
                let mut ws = open(&format!("{url}?token={token}"), source).await?;
                let hello = next_json(&mut ws, |v| v["ev"] == "hello").await?;
                let heartbeat = Duration::from_millis(hello["heartbeat_ms"].as_u64().unwrap_or(25_000));
                for (i, room) in rooms.iter().enumerate() {
                    let id = format!("j{i}");
                    ws.send(Message::text(json!({"id": id, "op": "join", "room": room}).to_string())).await?;
                    let reply = next_json(&mut ws, |v| v["re"] == id.as_str()).await?;
                    if reply["ok"] != true {
                        bail!("join {room}: {}", reply["error"]);
                    }
                }
                Ok((ws, heartbeat))
            }
            Dialect::Centrifugo => {
                let mut ws = open(url, source).await?;
                ws.send(Message::text(json!({"id": 1, "connect": {"token": token}}).to_string())).await?;
                let reply = next_json(&mut ws, |v| v["id"] == 1).await?;
                if reply.get("error").is_some() {
                    bail!("connect: {}", reply["error"]);
                }
                let heartbeat = Duration::from_secs(reply["connect"]["ping"].as_u64().unwrap_or(25));
                for (i, room) in rooms.iter().enumerate() {
                    let id = 2 + i as u64;
                    ws.send(Message::text(json!({"id": id, "subscribe": {"channel": room}}).to_string())).await?;
                    let reply = next_json(&mut ws, |v| v["id"] == id).await?;
                    if reply.get("error").is_some() {
                        bail!("subscribe {room}: {}", reply["error"]);
                    }
                }
                Ok((ws, heartbeat))
            }
        }
    })
    .await
    .map_err(|_| anyhow!("setup took over {SETUP_TIMEOUT:?}"))?
}

/// Reads until a JSON object that `want` accepts; answers Centrifugo's pings
/// on the way. Centrifugo may put several objects in one frame, a line each.
async fn next_json(ws: &mut Ws, want: impl Fn(&Value) -> bool) -> Result<Value> {
    loop {
        let msg = ws.next().await.ok_or_else(|| anyhow!("the server closed the connection"))??;
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(frame) => bail!("the server closed the connection: {frame:?}"),
            _ => continue,
        };
        for line in text.as_str().lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
            if v.as_object().is_some_and(|o| o.is_empty()) {
                ws.send(Message::text("{}")).await?;
                continue;
            }
            if want(&v) {
                return Ok(v);
            }
        }
    }
}

/// Where a send goes.
pub enum To<'a> {
    Room(&'a str),
    User(&'a str),
}

/// The frame that sends `text`; its request id is `id`.
pub fn send_frame(dialect: Dialect, id: u64, to: To<'_>, text: &str, cid: &str) -> String {
    match (dialect, to) {
        (Dialect::Confab, To::Room(room)) => {
            json!({"id": id, "op": "send", "room": room, "text": text, "cid": cid}).to_string()
        }
        (Dialect::Confab, To::User(user)) => {
            json!({"id": id, "op": "send", "to": user, "text": text, "cid": cid}).to_string()
        }
        (Dialect::Centrifugo, To::Room(channel)) => {
            json!({"id": id, "publish": {"channel": channel, "data": {"t": text}}}).to_string()
        }
        (Dialect::Centrifugo, To::User(user)) => {
            json!({"id": id, "publish": {"channel": personal_channel(user), "data": {"t": text}}}).to_string()
        }
    }
}

/// A user's own channel on the Centrifugo peer: only that user may subscribe.
pub fn personal_channel(user: &str) -> String {
    format!("user:{user}")
}

/// The application-level keep-alive a client sends on the heartbeat.
pub fn ping_frame(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Confab => r#"{"id":"hb","op":"ping"}"#,
        // Centrifugo's clients answer the server's `{}` instead.
        Dialect::Centrifugo => "",
    }
}

/// What one JSON object from the server means to the benchmark.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A reply to a numbered request: ok, or the error code.
    Reply {
        id: u64,
        error: Option<String>,
    },
    /// Centrifugo's ping, to be answered with `{}`.
    Ping,
    Other,
}

/// Classifies one object (not a delivery: those are found by their stamp
/// before any JSON is decoded).
pub fn classify(dialect: Dialect, line: &str) -> Incoming {
    let Ok(v) = serde_json::from_str::<Value>(line) else { return Incoming::Other };
    match dialect {
        Dialect::Confab => match v["re"].as_u64() {
            Some(id) if v["ok"] == true => Incoming::Reply { id, error: None },
            Some(id) => Incoming::Reply { id, error: Some(code(&v["error"]["code"])) },
            None => Incoming::Other,
        },
        Dialect::Centrifugo => {
            if v.as_object().is_some_and(|o| o.is_empty()) {
                return Incoming::Ping;
            }
            match v["id"].as_u64() {
                Some(id) if v.get("error").is_some() => Incoming::Reply { id, error: Some(code(&v["error"]["code"])) },
                Some(id) => Incoming::Reply { id, error: None },
                None => Incoming::Other,
            }
        }
    }
}

fn code(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "unknown".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_in_both_dialects() {
        let ok = classify(Dialect::Confab, r#"{"re":7,"ok":true,"room":"r","seq":1}"#);
        assert_eq!(ok, Incoming::Reply { id: 7, error: None });
        let err = classify(Dialect::Confab, r#"{"re":8,"ok":false,"error":{"code":"rate_limited","message":"m"}}"#);
        assert_eq!(err, Incoming::Reply { id: 8, error: Some("rate_limited".into()) });
        assert_eq!(classify(Dialect::Confab, r#"{"ev":"member","room":"r"}"#), Incoming::Other);
        assert_eq!(classify(Dialect::Centrifugo, r#"{"id":9,"publish":{}}"#), Incoming::Reply { id: 9, error: None });
        let err = classify(Dialect::Centrifugo, r#"{"id":9,"error":{"code":103,"message":"permission denied"}}"#);
        assert_eq!(err, Incoming::Reply { id: 9, error: Some("103".into()) });
        assert_eq!(classify(Dialect::Centrifugo, "{}"), Incoming::Ping);
    }

    #[test]
    fn only_ws_urls_with_an_ip_address_are_dialed() {
        assert_eq!(address("ws://127.0.0.1:80/v1/ws?token=x").unwrap(), "127.0.0.1:80".parse().unwrap());
        assert!(address("wss://127.0.0.1:80/").is_err());
        assert!(address("ws://localhost:80/").is_err());
    }
}
