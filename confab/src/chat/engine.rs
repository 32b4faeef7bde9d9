//! The connection of `confab chat`: one task that owns the WebSocket,
//! reconnects with backoff, catches up and resends, and speaks to a front
//! end through two channels ([`Input`] in, [`Update`] out).
//!
//! What it keeps so that nothing is lost across reconnections: the last seq
//! shown of every room (a `msg` at or below it is a duplicate, one whose
//! `prev_seq` is above it reveals a gap, repaired with `sync`), and every
//! `send` without its reply yet, resent with its `cid` after each
//! reconnection (the server stores a cid once).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::Server;
use super::command::{HELP, Input};

/// What the front end shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Connected as `user`.
    Connected {
        user: String,
    },
    /// Not connected; trying again after `retry`.
    Reconnecting {
        why: String,
        retry: Duration,
    },
    /// A message, new or caught up (`older`: from `/history`, before what
    /// the room shows).
    Message {
        room: String,
        seq: u64,
        from: String,
        text: String,
        older: bool,
    },
    /// Where typed text goes now.
    Current(String),
    /// A room the user is in (joined, or found on connecting).
    Room(String),
    /// A room left.
    Left(String),
    Info(String),
    Error(String),
    /// The engine stopped (after `/quit`).
    Quit,
}

/// Where typed text goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Room(String),
    Dm(String),
}

impl Target {
    fn label(&self) -> String {
        match self {
            Target::Room(room) => room.clone(),
            Target::Dm(user) => format!("@{user}"),
        }
    }
}

/// A `send` not yet acknowledged.
#[derive(Debug, Clone)]
struct Pending {
    cid: String,
    target: Target,
    text: String,
}

/// What a request was, to handle its reply.
#[derive(Debug, Clone)]
enum Asked {
    Rooms { catch_up: bool },
    Sync,
    Send { cid: String },
    Join(String),
    Leave(String),
    Who(String),
    History(String),
    Ping,
}

/// Starts the engine; the front end's ends of its channels.
pub fn start(server: Server, token: String, room: Option<String>) -> (mpsc::Sender<Input>, mpsc::Receiver<Update>) {
    let (inputs_tx, inputs) = mpsc::channel(64);
    let (updates, updates_rx) = mpsc::channel(1024);
    let engine = Engine {
        server,
        token,
        updates,
        inputs,
        seen: BTreeMap::new(),
        oldest: HashMap::new(),
        current: room.clone().map(Target::Room),
        first_room: room,
        pending: Vec::new(),
        cid_prefix: format!("{:08x}", rand::random::<u32>()),
        next_cid: 0,
        connected_once: false,
        quitting: false,
    };
    tokio::spawn(engine.run());
    (inputs_tx, updates_rx)
}

struct Engine {
    server: Server,
    token: String,
    updates: mpsc::Sender<Update>,
    inputs: mpsc::Receiver<Input>,
    /// The last seq shown of each room the user is in.
    seen: BTreeMap<String, u64>,
    /// The oldest seq shown of each room, for `/history`.
    oldest: HashMap<String, u64>,
    current: Option<Target>,
    /// `--room`, joined on the first connection.
    first_room: Option<String>,
    pending: Vec<Pending>,
    cid_prefix: String,
    next_cid: u64,
    connected_once: bool,
    /// `/quit` (or the end of input) came: stop once nothing is pending.
    quitting: bool,
}

/// How a connection ended.
enum Ended {
    Quit,
    Lost {
        why: String,
        at_once: bool,
    },
    /// The token was refused: reconnecting cannot help.
    Refused(String),
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Engine {
    async fn say(&self, update: Update) {
        let _ = self.updates.send(update).await;
    }

    async fn run(mut self) {
        let mut backoff = Duration::from_millis(250);
        loop {
            let url = format!("{}?token={}", self.server.ws, self.token);
            let connected = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url)).await;
            let ended = match connected {
                Ok(Ok((ws, _))) => {
                    backoff = Duration::from_millis(250);
                    self.session(ws).await
                }
                Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) if r.status().as_u16() == 401 => {
                    Ended::Refused("the server refused the token (401): sign in again".into())
                }
                Ok(Err(e)) => Ended::Lost { why: e.to_string(), at_once: false },
                Err(_) => Ended::Lost { why: "connecting timed out".into(), at_once: false },
            };
            let retry = match ended {
                Ended::Quit => break,
                Ended::Refused(why) => {
                    self.say(Update::Error(why)).await;
                    break;
                }
                Ended::Lost { at_once: true, .. } => Duration::ZERO,
                Ended::Lost { why, .. } => {
                    let retry = backoff + Duration::from_millis(rand::random::<u64>() % 250);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    self.say(Update::Reconnecting { why, retry }).await;
                    retry
                }
            };
            if self.offline(retry).await {
                break;
            }
        }
        self.say(Update::Quit).await;
    }

    /// Takes input while disconnected, for `retry`; `true` to stop.
    async fn offline(&mut self, retry: Duration) -> bool {
        let until = tokio::time::Instant::now() + retry;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return false,
                input = self.inputs.recv() => match input {
                    None | Some(Input::Quit) if self.pending.is_empty() => return true,
                    None | Some(Input::Quit) => {
                        self.quitting = true;
                        self.say(Update::Info(format!("{} messages wait for the server; quitting once they are sent", self.pending.len()))).await;
                        if self.inputs.is_closed() { tokio::time::sleep_until(until).await; return false }
                    }
                    Some(Input::Say(text)) => {
                        // Queued: sent with its cid once connected again.
                        if let Some(p) = self.queue(text).await { self.pending.push(p) }
                    }
                    Some(Input::Help) => self.say(Update::Info(HELP.into())).await,
                    Some(Input::Invalid(m)) => self.say(Update::Error(m)).await,
                    Some(Input::Nothing) => {}
                    Some(_) => self.say(Update::Error("not connected; try again once reconnected".into())).await,
                },
            }
        }
    }

    /// A new `send` of `text` to the current target.
    async fn queue(&mut self, text: String) -> Option<Pending> {
        let Some(target) = self.current.clone() else {
            self.say(Update::Error("no room yet: /join ROOM or /dm USER first".into())).await;
            return None;
        };
        self.next_cid += 1;
        Some(Pending { cid: format!("{}-{}", self.cid_prefix, self.next_cid), target, text })
    }

    async fn session(&mut self, ws: Ws) -> Ended {
        let (mut tx, mut rx) = ws.split();
        let mut asked: HashMap<u64, Asked> = HashMap::new();
        let mut next_id = 0u64;
        macro_rules! request {
            ($body:expr, $asked:expr) => {{
                next_id += 1;
                let mut body: Value = $body;
                body["id"] = json!(next_id);
                asked.insert(next_id, $asked);
                if tx.send(Message::Text(body.to_string().into())).await.is_err() {
                    return Ended::Lost { why: "connection lost".into(), at_once: false };
                }
            }};
        }
        let hello = match tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<Value>(&t).unwrap_or_default(),
            _ => return Ended::Lost { why: "no hello from the server".into(), at_once: false },
        };
        let heartbeat = Duration::from_millis(hello["heartbeat_ms"].as_u64().unwrap_or(25_000).max(100));
        self.say(Update::Connected { user: hello["user"].as_str().unwrap_or("?").to_owned() }).await;
        request!(json!({"op": "rooms"}), Asked::Rooms { catch_up: true });
        if !self.connected_once
            && let Some(room) = self.first_room.take()
        {
            request!(json!({"op": "join", "room": room}), Asked::Join(room));
        }
        self.connected_once = true;
        // Everything not acknowledged, again, with its cid.
        for p in self.pending.clone() {
            request!(send_request(&p), Asked::Send { cid: p.cid.clone() });
        }
        let mut ticker = tokio::time::interval(heartbeat);
        ticker.tick().await;
        let mut last_heard = tokio::time::Instant::now();
        loop {
            if self.quitting && self.pending.is_empty() {
                let _ = tx.send(Message::Close(None)).await;
                return Ended::Quit;
            }
            tokio::select! {
                _ = ticker.tick() => {
                    if last_heard.elapsed() > heartbeat * 2 {
                        return Ended::Lost { why: "the server stopped answering".into(), at_once: false };
                    }
                    request!(json!({"op": "ping"}), Asked::Ping);
                }
                input = self.inputs.recv(), if !self.quitting => {
                    let input = input.unwrap_or(Input::Quit);
                    match input {
                        Input::Say(text) => {
                            if let Some(p) = self.queue(text).await {
                                request!(send_request(&p), Asked::Send { cid: p.cid.clone() });
                                self.pending.push(p);
                            }
                        }
                        Input::Join(room) => {
                            // Text typed after `/join` goes to the room at
                            // once, as the user expects; the join is ahead of
                            // it on the connection.
                            self.current = Some(Target::Room(room.clone()));
                            self.say(Update::Current(room.clone())).await;
                            request!(json!({"op": "join", "room": room}), Asked::Join(room));
                        }
                        Input::Dm(user) => {
                            self.current = Some(Target::Dm(user.clone()));
                            self.say(Update::Current(format!("@{user}"))).await;
                        }
                        Input::Leave => match self.current.clone() {
                            Some(Target::Room(room)) => request!(json!({"op": "leave", "room": room}), Asked::Leave(room)),
                            _ => self.say(Update::Error("not in a room (a DM cannot be left)".into())).await,
                        },
                        Input::Rooms => request!(json!({"op": "rooms"}), Asked::Rooms { catch_up: false }),
                        Input::Who => match self.current.clone() {
                            Some(Target::Room(room)) => request!(json!({"op": "presence", "room": room}), Asked::Who(room)),
                            _ => self.say(Update::Error("/who needs a room: /join ROOM first".into())).await,
                        },
                        Input::History => match self.current.clone() {
                            Some(Target::Room(room)) => {
                                let mut body = json!({"op": "history", "room": room, "limit": 20});
                                if let Some(oldest) = self.oldest.get(&room) {
                                    body["before"] = json!(oldest);
                                }
                                request!(body, Asked::History(room));
                            }
                            _ => self.say(Update::Error("/history needs a room: /join ROOM first".into())).await,
                        },
                        Input::Quit => {
                            self.quitting = true;
                            if !self.pending.is_empty() {
                                self.say(Update::Info(format!("waiting for {} messages to be acknowledged", self.pending.len()))).await;
                            }
                        }
                        Input::Help => self.say(Update::Info(HELP.into())).await,
                        Input::Invalid(m) => self.say(Update::Error(m)).await,
                        Input::Nothing => {}
                    }
                }
                frame = rx.next() => {
                    last_heard = tokio::time::Instant::now();
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(close))) => {
                            let why = close.map(|c| c.reason.to_string()).unwrap_or_default();
                            return Ended::Lost { at_once: why == "server_restart", why: format!("closed by the server {why}") };
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Ended::Lost { why: e.to_string(), at_once: false },
                        None => return Ended::Lost { why: "connection closed".into(), at_once: false },
                    };
                    let v: Value = serde_json::from_str(&text).unwrap_or_default();
                    if let Some(re) = v.get("re").and_then(Value::as_u64) {
                        let Some(what) = asked.remove(&re) else { continue };
                        for follow_up in self.reply(what, &v).await {
                            request!(follow_up, Asked::Sync);
                        }
                    } else if v["ev"] == "bye" {
                        let reason = v["reason"].as_str().unwrap_or("").to_owned();
                        if reason == "token_expired" || reason == "token_revoked" || reason == "disconnected" {
                            return Ended::Refused(format!("the server said bye: {reason}; sign in again"));
                        }
                        return Ended::Lost { at_once: reason == "server_restart", why: format!("bye {reason}") };
                    } else if let Some(sync) = self.event(&v).await {
                        request!(sync, Asked::Sync);
                    }
                }
            }
        }
    }

    /// Handles a reply; the `sync` requests it calls for.
    async fn reply(&mut self, what: Asked, v: &Value) -> Vec<Value> {
        let ok = v["ok"] == true;
        let error = || {
            format!(
                "{}: {}",
                v["error"]["code"].as_str().unwrap_or("error"),
                v["error"]["message"].as_str().unwrap_or("")
            )
        };
        match what {
            Asked::Ping => {}
            Asked::Send { cid } => {
                let code = v["error"]["code"].as_str().unwrap_or("");
                // `unavailable`: kept, resent with its cid on the next connection.
                if ok || code != "unavailable" {
                    self.pending.retain(|p| p.cid != cid);
                }
                if !ok {
                    self.say(Update::Error(format!("not sent: {}", error()))).await;
                }
            }
            _ if !ok => self.say(Update::Error(error())).await,
            Asked::Rooms { catch_up } => {
                let rooms = v["rooms"].as_array().cloned().unwrap_or_default();
                if !catch_up {
                    let list: Vec<String> = rooms
                        .iter()
                        .map(|r| format!("{} ({})", r["room"].as_str().unwrap_or("?"), r["last_seq"]))
                        .collect();
                    self.say(Update::Info(format!("rooms: {}", list.join(", ")))).await;
                    return Vec::new();
                }
                let first = self.seen.is_empty();
                for r in &rooms {
                    let (Some(room), Some(last)) = (r["room"].as_str(), r["last_seq"].as_u64()) else { continue };
                    // On the first connection the client starts at the newest
                    // message (`/history` shows older ones); a room found on a
                    // later one is caught up whole.
                    let start = if first { last } else { 0 };
                    if !self.seen.contains_key(room) {
                        self.seen.insert(room.to_owned(), start);
                        self.oldest.insert(room.to_owned(), start + 1);
                        self.say(Update::Room(room.to_owned())).await;
                    }
                }
                if let Some(current) = &self.current {
                    self.say(Update::Current(current.label())).await;
                }
                return self.sync(self.seen.keys().cloned().collect());
            }
            Asked::Sync => {
                let mut again = Vec::new();
                if let Some(rooms) = v["rooms"].as_object() {
                    for (room, r) in rooms {
                        for m in r["messages"].as_array().into_iter().flatten() {
                            self.show(m, false).await;
                        }
                        if r["more"] == true {
                            again.push(room.clone());
                        }
                    }
                }
                return self.sync(again);
            }
            Asked::Join(room) => {
                let last = v["last_seq"].as_u64().unwrap_or(0);
                if !self.seen.contains_key(&room) {
                    self.seen.insert(room.clone(), last);
                    self.oldest.insert(room.clone(), last + 1);
                    self.say(Update::Room(room.clone())).await;
                }
                self.current = Some(Target::Room(room.clone()));
                self.say(Update::Current(room)).await;
            }
            Asked::Leave(room) => {
                self.seen.remove(&room);
                self.current = None;
                self.say(Update::Left(room)).await;
            }
            Asked::Who(room) => {
                let online: Vec<&str> =
                    v["online"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                self.say(Update::Info(format!("online in {room}: {}", online.join(", ")))).await;
            }
            Asked::History(room) => {
                let messages = v["messages"].as_array().cloned().unwrap_or_default();
                if messages.is_empty() {
                    self.say(Update::Info(format!("no older messages in {room}"))).await;
                }
                // Newest first, so each is shown above the one before.
                for m in messages.iter().rev() {
                    self.show(m, true).await;
                }
            }
        }
        Vec::new()
    }

    /// A `sync` of `rooms` from what each shows, if any.
    fn sync(&self, rooms: Vec<String>) -> Vec<Value> {
        if rooms.is_empty() {
            return Vec::new();
        }
        let from: serde_json::Map<String, Value> =
            rooms.into_iter().map(|r| (r.clone(), json!(self.seen.get(&r).copied().unwrap_or(0)))).collect();
        vec![json!({"op": "sync", "rooms": from, "limit": 100})]
    }

    /// Handles an event; a `sync` when it reveals a gap.
    async fn event(&mut self, v: &Value) -> Option<Value> {
        match v["ev"].as_str()? {
            "msg" => {
                let room = v["room"].as_str()?.to_owned();
                let seen = self.seen.get(&room).copied();
                let prev = v["prev_seq"].as_u64().unwrap_or(0);
                if seen.is_none() {
                    self.seen.insert(room.clone(), 0);
                    self.say(Update::Room(room.clone())).await;
                }
                if prev > seen.unwrap_or(0) {
                    // Missed messages: the sync brings them, this one too.
                    return self.sync(vec![room]).pop();
                }
                self.show(v, false).await;
                None
            }
            "member" => {
                let (room, user, action) = (v["room"].as_str()?, v["user"].as_str()?, v["action"].as_str()?);
                self.say(Update::Info(format!("{user}: {action} {room}"))).await;
                None
            }
            _ => None,
        }
    }

    /// Shows a message unless the room already shows it.
    async fn show(&mut self, m: &Value, older: bool) {
        let (Some(room), Some(seq)) = (m["room"].as_str(), m["seq"].as_u64()) else { return };
        if older {
            let oldest = self.oldest.entry(room.to_owned()).or_insert(seq + 1);
            if seq >= *oldest {
                return;
            }
            *oldest = seq;
        } else {
            let seen = self.seen.entry(room.to_owned()).or_insert(0);
            if seq <= *seen {
                return;
            }
            *seen = seq;
            self.oldest.entry(room.to_owned()).or_insert(seq);
        }
        let update = Update::Message {
            room: room.to_owned(),
            seq,
            from: m["from"].as_str().unwrap_or("?").to_owned(),
            text: m["text"].as_str().unwrap_or("").to_owned(),
            older,
        };
        self.say(update).await;
    }
}

fn send_request(p: &Pending) -> Value {
    match &p.target {
        Target::Room(room) => json!({"op": "send", "room": room, "text": p.text, "cid": p.cid}),
        Target::Dm(user) => json!({"op": "send", "to": user, "text": p.text, "cid": p.cid}),
    }
}
