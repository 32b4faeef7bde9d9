//! Confab's raw TCP transport in tests: servers with `--tcp-listen`, a line
//! client ([`TcpClient`]), and a bridge that carries the WebSocket test
//! client's frames over a TCP session, so whole component suites run over
//! TCP unchanged ([`on_every_mode_and_tcp!`]).
//!
//! The bridge is a WebSocket server on loopback that, for each connection,
//! opens a TCP connection to a gateway's `tcp_listen`, sends the `auth` line
//! with the token of the upgrade's `?token=`, and then passes frames: a text
//! frame is a line, an empty line is a ping (a pong or ping back is an empty
//! line), a `bye` line and the server's close are the WebSocket close the
//! reason implies. The session is the server's TCP session; the bridge only
//! changes the framing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{PATIENCE, TestServer};

/// Flags that give a server (or each gateway) a TCP listener.
pub const TCP_FLAGS: [&str; 2] = ["--tcp-listen", "127.0.0.1:0"];

impl TestServer {
    /// A standalone server whose test clients connect over TCP.
    pub async fn start_over_tcp() -> TestServer {
        Self::start_with_flags(&TCP_FLAGS).await.over_tcp().await
    }

    /// A cluster whose test clients connect over TCP, alternating gateways.
    pub async fn start_cluster_over_tcp() -> TestServer {
        Self::start_cluster_with(&TCP_FLAGS).await.over_tcp().await
    }

    /// Every gateway's TCP listener, in the order of [`TestServer::gateways`].
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.running.iter().chain(&self.others).filter_map(|r| r.tcp_addr).collect()
    }

    /// Sends [`TestServer::connect`]'s connections over TCP, through bridges.
    pub async fn over_tcp(mut self) -> TestServer {
        let mut urls = Vec::new();
        for addr in self.tcp_addrs() {
            urls.push(bridge(addr).await);
        }
        assert!(!urls.is_empty(), "the server has no TCP listener");
        self.ws = urls[0].clone();
        self.gateways = urls;
        self
    }

    /// A line client on the next gateway's TCP listener, authenticated.
    pub async fn tcp(&self, token: &str) -> TcpClient<TcpStream> {
        let addrs = self.tcp_addrs();
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut c = TcpClient::connect(addrs[n % addrs.len()]).await;
        c.auth(token).await;
        c
    }
}

/// A client of the TCP transport: lines of JSON.
pub struct TcpClient<S> {
    pub read: BufReader<tokio::io::ReadHalf<S>>,
    pub write: tokio::io::WriteHalf<S>,
    pub hello: Value,
    next_id: u64,
    pub events: std::collections::VecDeque<Value>,
    /// Empty lines (server heartbeats) read so far.
    pub heartbeats: usize,
}

impl TcpClient<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> TcpClient<TcpStream> {
        let tcp = tokio::time::timeout(PATIENCE, TcpStream::connect(addr)).await.expect("connect in time").unwrap();
        TcpClient::over(tcp)
    }
}

impl<S: AsyncRead + AsyncWrite> TcpClient<S> {
    pub fn over(stream: S) -> TcpClient<S> {
        let (read, write) = tokio::io::split(stream);
        TcpClient {
            read: BufReader::new(read),
            write,
            hello: Value::Null,
            next_id: 0,
            events: Default::default(),
            heartbeats: 0,
        }
    }

    /// Sends the `auth` line; asserts `hello` comes back.
    pub async fn auth(&mut self, token: &str) {
        self.line(&json!({"op": "auth", "token": token}).to_string()).await;
        let hello = self.next_json().await;
        assert_eq!(hello["ev"], "hello", "auth is answered with hello: {hello}");
        self.hello = hello;
    }

    /// Writes `text` and a newline.
    pub async fn line(&mut self, text: &str) {
        self.raw(format!("{text}\n").as_bytes()).await;
    }

    pub async fn raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(PATIENCE, self.write.write_all(bytes)).await.expect("written in time").unwrap();
    }

    /// The next line, heartbeats (empty lines) included; `None` at the end
    /// of the stream.
    pub async fn next_line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(PATIENCE, self.read.read_line(&mut line)).await.expect("a line in time").ok()?;
        if n == 0 {
            return None;
        }
        assert!(line.ends_with('\n'), "every line ends with a newline: {line:?}");
        Some(line.trim_end_matches('\n').to_owned())
    }

    /// The next JSON line, counting heartbeats on the way.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let line = self.next_line().await.expect("the connection is open");
            if line.is_empty() {
                self.heartbeats += 1;
                continue;
            }
            return serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        }
    }

    /// Sends a request (an `id` is added) and returns its reply.
    pub async fn request(&mut self, mut req: Value) -> Value {
        self.next_id += 1;
        let id = json!(self.next_id);
        req["id"] = id.clone();
        self.line(&req.to_string()).await;
        loop {
            let v = self.next_json().await;
            if v.get("re") == Some(&id) {
                return v;
            }
            self.events.push_back(v);
        }
    }

    pub async fn ok(&mut self, req: Value) -> Value {
        let r = self.request(req.clone()).await;
        assert_eq!(r["ok"], true, "{req} -> {r}");
        r
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

    /// Reads until the server closes; the JSON lines before the close.
    pub async fn closed(&mut self) -> Vec<Value> {
        let mut lines: Vec<Value> = self.events.drain(..).collect();
        lines.extend(read_until_closed(&mut self.read).await);
        lines
    }

    /// Writes `bytes` while reading until the server closes (which it may do
    /// before it has read them all); the JSON lines before the close.
    pub async fn write_until_closed(&mut self, bytes: &[u8]) -> Vec<Value> {
        let write = async {
            let _ = tokio::time::timeout(PATIENCE, self.write.write_all(bytes)).await;
        };
        let ((), lines) = tokio::join!(write, read_until_closed(&mut self.read));
        lines
    }
}

async fn read_until_closed<R: AsyncRead>(read: &mut BufReader<tokio::io::ReadHalf<R>>) -> Vec<Value> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        match tokio::time::timeout(PATIENCE, read.read_line(&mut line)).await.expect("the server closes in time") {
            Ok(0) => return lines,
            Ok(_) if line.trim().is_empty() => {}
            Ok(_) => lines.push(serde_json::from_str(line.trim_end()).unwrap()),
            Err(e) => panic!("the connection broke instead of closing: {e} (after {lines:?})"),
        }
    }
}

/// A WebSocket endpoint that carries each connection over a TCP session on
/// `tcp`; its URL.
pub async fn bridge(tcp: SocketAddr) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(carry(client, tcp));
        }
    });
    format!("ws://{addr}/v1/ws")
}

/// The WebSocket close a TCP session's `bye` reason stands for.
fn close_code(reason: &str) -> u16 {
    match reason {
        "idle" => 1001,
        "token_expired" | "token_revoked" => 1008,
        "frame_too_large" => 1009,
        "unavailable" => 1011,
        "server_restart" => 1012,
        "slow_consumer" => 1013,
        _ => 1008,
    }
}

async fn carry(client: TcpStream, tcp: SocketAddr) {
    let token = Arc::new(Mutex::new(None::<String>));
    let seen = token.clone();
    #[allow(clippy::result_large_err, reason = "tungstenite's callback type")]
    let callback = move |req: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
        let query = req.uri().query().unwrap_or("");
        let t = query.split('&').find_map(|kv| kv.strip_prefix("token=")).map(str::to_owned);
        *seen.lock().unwrap() = t;
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(client, callback).await else { return };
    let Ok(server) = TcpStream::connect(tcp).await else { return };
    let (read, mut write) = server.into_split();
    let mut read = BufReader::new(read);
    let token = token.lock().unwrap().take();
    let auth = json!({"op": "auth", "token": token}).to_string() + "\n";
    if write.write_all(auth.as_bytes()).await.is_err() {
        return;
    }
    let (mut ws_tx, mut ws_rx) = ws.split();
    let mut bye = None;
    let mut client_closed = false;
    loop {
        let mut line = String::new();
        tokio::select! {
            read = read.read_line(&mut line) => match read {
                Ok(0) | Err(_) => {
                    // The server closed: the close its `bye` stands for, or a
                    // broken connection when it said none.
                    if let (Some(code), false) = (bye, client_closed) {
                        let frame = CloseFrame { code: CloseCode::from(code), reason: "".into() };
                        let _ = ws_tx.send(Message::Close(Some(frame))).await;
                        // The client's echo.
                        let _ = tokio::time::timeout(PATIENCE, ws_rx.next()).await;
                    }
                    let _ = ws_tx.close().await;
                    return;
                }
                Ok(_) => {
                    let line = line.trim_end_matches('\n');
                    let message = if line.is_empty() {
                        Message::Ping(Default::default())
                    } else {
                        let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                        if v["ev"] == "bye" {
                            bye = Some(close_code(v["reason"].as_str().unwrap_or("")));
                        }
                        Message::Text(line.to_owned().into())
                    };
                    if ws_tx.send(message).await.is_err() {
                        return;
                    }
                }
            },
            msg = ws_rx.next(), if !client_closed => {
                let written = match msg {
                    Some(Ok(Message::Text(t))) => write.write_all(format!("{t}\n").as_bytes()).await,
                    Some(Ok(Message::Binary(b))) => {
                        // Bytes that are not UTF-8: what a TCP client's binary is.
                        let mut line = vec![0xff];
                        line.extend(b.iter().filter(|&&b| b != b'\n'));
                        line.push(b'\n');
                        write.write_all(&line).await
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => write.write_all(b"\n").await,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        // The client closes: its side of the TCP connection
                        // ends; tungstenite echoes the close by itself.
                        client_closed = true;
                        let _ = ws_tx.flush().await;
                        write.shutdown().await
                    }
                    Some(Ok(Message::Frame(_))) => Ok(()),
                };
                if written.is_err() {
                    return;
                }
            }
        }
    }
}

/// [`on_every_mode!`], and the same tests again with every connection of
/// the test over TCP (through [`bridge`]s), standalone and distributed.
#[allow(unused_macros)]
macro_rules! on_every_mode_and_tcp {
    ($($name:ident),* $(,)?) => {
        on_every_mode!($($name),*);
        mod over_tcp {
            mod standalone {
                $(
                    #[tokio::test]
                    async fn $name() {
                        super::super::$name(super::super::TestServer::start_over_tcp().await).await
                    }
                )*
            }
            mod distributed {
                $(
                    #[tokio::test]
                    async fn $name() {
                        let test = async {
                            super::super::$name(super::super::TestServer::start_cluster_over_tcp().await).await
                        };
                        tokio::time::timeout($crate::common::CLUSTER_TEST, test).await.expect("the test ends in time")
                    }
                )*
            }
        }
    };
}
