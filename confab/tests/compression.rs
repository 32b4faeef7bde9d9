//! WebSocket compression (permessage-deflate, RFC 7692): negotiated when the
//! client offers it and `ws_compression` is on; large frames compressed,
//! those under `ws_compression_threshold` not; a compressed frame that
//! inflates past `max_frame_bytes` closes with 1009. The client is yawc
//! (tungstenite cannot offer the extension) over a socket that records every
//! byte the server sends, so the tests read the 101 response and each
//! frame's RSV1 bit as they were on the wire.

#[macro_use]
mod common;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use common::{PATIENCE, TestServer};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use yawc::close::CloseCode;
use yawc::{Frame, OpCode, Options};

/// A TCP stream that keeps a copy of what it reads, and counts what it writes.
struct Tap {
    inner: TcpStream,
    read: Arc<Mutex<Vec<u8>>>,
    written: Arc<Mutex<usize>>,
}

impl AsyncRead for Tap {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.read.lock().unwrap().extend_from_slice(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Tap {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            *self.written.lock().unwrap() += n;
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A frame the server sent, as it was on the wire.
#[derive(Debug)]
struct WireFrame {
    rsv1: bool,
    opcode: u8,
    len: usize,
}

struct Deflating {
    ws: yawc::WebSocket<Tap>,
    read: Arc<Mutex<Vec<u8>>>,
    written: Arc<Mutex<usize>>,
    next_id: u64,
}

impl Deflating {
    /// Connects to the gateway at `ws` (its `/v1/ws` URL) as the holder of
    /// `token`, offering permessage-deflate when `offer`; waits for `hello`.
    async fn connect(ws: &str, token: &str, offer: bool) -> Deflating {
        let url: url::Url = format!("{ws}?token={token}").parse().unwrap();
        let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (read, written) = (Arc::default(), Arc::default());
        let tap = Tap { inner: tcp, read: Arc::clone(&read), written: Arc::clone(&written) };
        let options = if offer { Options::default().with_balanced_compression() } else { Options::default() };
        let ws = tokio::time::timeout(PATIENCE, yawc::WebSocket::handshake(url, tap, options))
            .await
            .expect("upgrade in time")
            .expect("upgrade");
        let mut c = Deflating { ws, read, written, next_id: 0 };
        let hello = c.next_json().await;
        assert_eq!(hello["ev"], "hello", "{hello}");
        c
    }

    /// The server's 101 response, as read.
    fn response_head(&self) -> String {
        let read = self.read.lock().unwrap();
        let end = read.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole response head") + 4;
        String::from_utf8_lossy(&read[..end]).to_ascii_lowercase()
    }

    /// Every frame the server has sent so far, as it was on the wire.
    fn wire_frames(&self) -> Vec<WireFrame> {
        let read = self.read.lock().unwrap();
        let mut at = read.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole response head") + 4;
        let mut frames = Vec::new();
        while at + 2 <= read.len() {
            let (b0, b1) = (read[at], read[at + 1]);
            assert_eq!(b1 & 0x80, 0, "server frames are not masked");
            let (len, head) = match b1 & 0x7f {
                126 => (u16::from_be_bytes([read[at + 2], read[at + 3]]) as usize, 4),
                127 => (u64::from_be_bytes(read[at + 2..at + 10].try_into().unwrap()) as usize, 10),
                n => (n as usize, 2),
            };
            if at + head + len > read.len() {
                break;
            }
            frames.push(WireFrame { rsv1: b0 & 0x40 != 0, opcode: b0 & 0x0f, len });
            at += head + len;
        }
        frames
    }

    fn written(&self) -> usize {
        *self.written.lock().unwrap()
    }

    /// The next text frame, as JSON (pings and pongs skipped).
    async fn next_json(&mut self) -> Value {
        loop {
            let frame =
                tokio::time::timeout(PATIENCE, self.ws.next_frame()).await.expect("a frame in time").expect("a frame");
            match frame.opcode() {
                OpCode::Text => return serde_json::from_slice(frame.payload()).unwrap(),
                OpCode::Ping | OpCode::Pong => {}
                other => panic!("unexpected {other:?} frame"),
            }
        }
    }

    async fn send_text(&mut self, text: String) {
        self.ws.send(Frame::text(text)).await.unwrap();
    }

    /// Sends `req` with a fresh id; returns the reply to it (events before it
    /// are skipped).
    async fn request(&mut self, mut req: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        req["id"] = json!(id);
        self.send_text(req.to_string()).await;
        loop {
            let v = self.next_json().await;
            if v["re"] == json!(id) {
                return v;
            }
        }
    }

    async fn ok(&mut self, req: Value) -> Value {
        let r = self.request(req.clone()).await;
        assert_eq!(r["ok"], true, "{req} -> {r}");
        r
    }

    async fn next_event(&mut self, ev: &str) -> Value {
        loop {
            let v = self.next_json().await;
            if v["ev"] == ev {
                return v;
            }
        }
    }

    /// The code of the server's close, reading past anything before it.
    async fn close_code(&mut self) -> u16 {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.ws.next_frame()).await.expect("a close in time");
            match frame {
                Ok(f) if f.opcode() == OpCode::Close => return f.close_code().map(u16::from).unwrap_or(1005),
                Ok(_) => {}
                Err(e) => panic!("the connection broke before a close: {e}"),
            }
        }
    }
}

/// The text of a message that deflates well and is far above the threshold.
fn chatty() -> String {
    "the quick brown fox jumps over the lazy dog; ".repeat(60)
}

async fn compressed_frames_both_ways(s: TestServer) {
    let (alice, bob) = (s.user("alice").await, s.user("bob").await);
    let last = s.gateways.len() - 1;
    let mut a = Deflating::connect(&s.gateways[0], &alice, true).await;
    let mut b = Deflating::connect(&s.gateways[last], &bob, true).await;
    let head = a.response_head();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-extensions: permessage-deflate"), "{head}");
    // No context kept between messages, either way: memory per idle connection.
    assert!(head.contains("server_no_context_takeover") && head.contains("client_no_context_takeover"), "{head}");

    a.ok(json!({"op":"join","room":"lobby"})).await;
    b.ok(json!({"op":"join","room":"lobby"})).await;
    let text = chatty();
    let before = a.written();
    a.ok(json!({"op":"send","room":"lobby","text":text,"cid":"c1"})).await;
    // The client compressed its request: fewer bytes on the wire than its text.
    assert!(a.written() - before < text.len() / 2, "{} bytes written for {}", a.written() - before, text.len());
    let event = b.next_event("msg").await;
    assert_eq!(event["text"], text.as_str());

    let frames = b.wire_frames();
    let hello = &frames[0];
    assert!(!hello.rsv1 && hello.len < 512, "hello is below the threshold, sent uncompressed: {hello:?}");
    let big = frames.iter().find(|f| f.opcode == 1 && f.rsv1).expect("a compressed text frame");
    assert!(big.len < text.len() / 2, "the message event is compressed on the wire: {big:?}");
    // Small replies stay uncompressed: every text frame under the threshold
    // has RSV1 clear.
    let small = frames.iter().filter(|f| f.opcode == 1 && !f.rsv1).count();
    assert!(small >= 2, "hello and the join reply are uncompressed: {frames:?}");
    assert!(frames.iter().filter(|f| f.opcode == 1 && f.len < 100).all(|f| !f.rsv1), "{frames:?}");

    // The tungstenite path is untouched: a client that does not offer the
    // extension chats with the compressed ones.
    let mut plain = s.connected("carol").await;
    plain.join("lobby").await;
    b.ok(json!({"op":"send","room":"lobby","text":text,"cid":"c2"})).await;
    let event = plain.next_event("msg").await;
    assert_eq!(event["text"], text.as_str());
}

async fn a_client_not_offering_it_gets_no_extension(s: TestServer) {
    let alice = s.user("alice").await;
    let mut a = Deflating::connect(&s.gateways[0], &alice, false).await;
    let head = a.response_head();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    a.ok(json!({"op":"join","room":"lobby"})).await;
    let text = chatty();
    a.ok(json!({"op":"send","room":"lobby","text":text,"cid":"c1"})).await;
    assert!(a.wire_frames().iter().all(|f| !f.rsv1));
}

async fn a_compressed_frame_inflating_past_the_limit_closes_with_1009(s: TestServer) {
    let (alice, bob) = (s.user("alice").await, s.user("bob").await);
    let mut a = Deflating::connect(&s.gateways[0], &alice, true).await;
    let mut b = Deflating::connect(&s.gateways[s.gateways.len() - 1], &bob, true).await;
    // 1 MiB of padding, over 64 KiB once inflated, a few KiB on the wire.
    let bomb = format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(1024 * 1024));
    let before = a.written();
    a.send_text(bomb).await;
    assert!(a.written() - before < 64 * 1024, "the bomb is small on the wire: {}", a.written() - before);
    assert_eq!(a.close_code().await, 1009);
    s.await_metric("confab_sessions_closed_total{reason=\"frame_too_large\"}", 1.0).await;
    // Other sessions are unaffected.
    b.ok(json!({"op":"ping"})).await;
    // A frame under the limit once inflated is fine.
    let mut c = Deflating::connect(&s.gateways[0], &s.login("alice").await, true).await;
    let pad = "x".repeat(32 * 1024);
    c.ok(json!({"op":"ping","pad":pad})).await;
}

async fn a_frame_over_the_limit_on_the_wire_closes_with_1009(s: TestServer) {
    let alice = s.user("alice").await;
    let mut a = Deflating::connect(&s.gateways[0], &alice, true).await;
    // Random-ish text deflates poorly: over 64 KiB even compressed.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let pad: String = (0..100 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .filter(|c| *c != '"' && *c != '\\')
        .collect();
    a.send_text(format!(r#"{{"op":"ping","pad":"{pad}"}}"#)).await;
    assert_eq!(a.close_code().await, 1009);
}

async fn a_clean_close_from_a_compressed_client(s: TestServer) {
    let alice = s.user("alice").await;
    let mut a = Deflating::connect(&s.gateways[0], &alice, true).await;
    a.ok(json!({"op":"ping"})).await;
    a.ws.send(Frame::close(CloseCode::Normal, b"bye")).await.unwrap();
    // The server echoes the close.
    assert_eq!(a.close_code().await, 1000);
    s.await_metric("confab_sessions_closed_total{reason=\"client_closed\"}", 1.0).await;
}

on_every_mode!(
    compressed_frames_both_ways,
    a_client_not_offering_it_gets_no_extension,
    a_compressed_frame_inflating_past_the_limit_closes_with_1009,
    a_frame_over_the_limit_on_the_wire_closes_with_1009,
    a_clean_close_from_a_compressed_client,
);

fn compression_off() -> Vec<String> {
    vec!["--ws-compression=false".into()]
}

async fn with_compression_off_no_extension_is_negotiated(s: TestServer) {
    let alice = s.user("alice").await;
    let mut a = Deflating::connect(&s.gateways[0], &alice, true).await;
    let head = a.response_head();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    a.ok(json!({"op":"join","room":"lobby"})).await;
    let text = chatty();
    let before = a.written();
    a.ok(json!({"op":"send","room":"lobby","text":text,"cid":"c1"})).await;
    assert!(a.written() - before > text.len(), "sent uncompressed");
    assert!(a.wire_frames().iter().all(|f| !f.rsv1));
}

on_every_mode_with!(off, gateway: compression_off; with_compression_off_no_extension_is_negotiated);
