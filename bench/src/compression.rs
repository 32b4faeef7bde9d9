//! `compression`: what WebSocket permessage-deflate costs and saves. One
//! room of M members on yawc clients that offer the extension (`--deflate`)
//! or not; a publisher sends K messages of a given size to the room. Figures:
//! bytes read from the socket per delivery, the server's CPU per delivery,
//! and the gateway's resident memory per connection once connected and
//! joined, and again after the fan-out (when every connection has inflated
//! and deflated: what idle compressed connections keep).
//!
//! Runs in the scenario's own process (no workers): yawc, not tungstenite,
//! is the client, since tungstenite cannot offer the extension.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use yawc::{Frame, OpCode, Options};

use crate::client;
use crate::report::{Figures, Outcome};
use crate::scenario::{Spread, cpu, rss};
use crate::target::Target;

#[derive(Debug, Clone, clap::Args)]
pub struct CompressionArgs {
    /// Offer permessage-deflate (as browsers do); without it, the same
    /// clients do not, and the server answers uncompressed.
    #[arg(long)]
    pub deflate: bool,
    /// Members of the room, each one connection.
    #[arg(long, default_value_t = 1000)]
    pub members: u32,
    /// Messages sent to the room.
    #[arg(long, default_value_t = 100)]
    pub messages: u32,
    /// Bytes of each message's text (chat-like words).
    #[arg(long, default_value_t = 1000)]
    pub text_bytes: usize,
    /// Connections set up at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

const TIMEOUT: Duration = Duration::from_secs(120);

/// A TCP stream that counts the bytes it reads.
struct Counted {
    inner: TcpStream,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.read.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

type Ws = yawc::WebSocket<Counted>;

async fn open(url: &str, source: IpAddr, deflate: bool, read: Arc<AtomicU64>) -> Result<Ws> {
    let parsed: url::Url = url.parse()?;
    let host: IpAddr = parsed.host_str().unwrap_or_default().parse().context("the host must be an IP address")?;
    let addr = SocketAddr::new(host, parsed.port().unwrap_or(80));
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0)).with_context(|| format!("bind {source}"))?;
    let stream = socket.connect(addr).await.with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    // What a browser offers: permessage-deflate, default level.
    let options = Options::default().with_read_buffer_capacity(4096).with_write_buffer_capacity(1024);
    let options = if deflate { options.with_balanced_compression() } else { options };
    Ok(yawc::WebSocket::handshake(parsed, Counted { inner: stream, read }, options).await?)
}

async fn next_json(ws: &mut Ws, want: impl Fn(&Value) -> bool) -> Result<Value> {
    loop {
        let frame = ws.next_frame().await?;
        match frame.opcode() {
            OpCode::Text => {
                let v: Value = serde_json::from_slice(frame.payload())?;
                if want(&v) {
                    return Ok(v);
                }
            }
            OpCode::Close => bail!("the server closed the connection"),
            _ => {}
        }
    }
}

async fn request(ws: &mut Ws, id: &str, mut req: Value) -> Result<Value> {
    req["id"] = json!(id);
    ws.send(Frame::text(req.to_string())).await?;
    let reply = tokio::time::timeout(TIMEOUT, next_json(ws, |v| v["re"] == id))
        .await
        .map_err(|_| anyhow!("no reply to {req}"))??;
    if reply["ok"] != true {
        bail!("{req}: {}", reply["error"]);
    }
    Ok(reply)
}

/// Chat-like text of `n` bytes: words drawn with a fixed seed.
fn text(n: usize, salt: u64) -> String {
    const WORDS: &[&str] = &[
        "the", "meeting", "is", "moved", "to", "tomorrow", "morning", "could", "you", "send", "me", "latest", "draft",
        "of", "report", "before", "lunch", "thanks", "I", "think", "we", "should", "ship", "release", "on", "friday",
        "after", "tests", "pass", "and", "review", "done", "sounds", "good", "let's", "talk",
    ];
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ salt.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut s = String::with_capacity(n + 16);
    while s.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
        s.push(if x.is_multiple_of(11) { '.' } else { ' ' });
    }
    s.truncate(n);
    s
}

/// Waits until the gateway's RSS stops moving (at most a few seconds).
async fn settled_rss(target: &Target) -> u64 {
    let mut last = rss(&target.gateway_pids);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = rss(&target.gateway_pids);
        if now.abs_diff(last) < 64 * 1024 {
            return now;
        }
        last = now;
    }
    last
}

pub async fn compression(target: &mut Target, run: &str, spread: &Spread, a: &CompressionArgs) -> Result<Outcome> {
    if a.members == 0 || a.messages == 0 || a.concurrency == 0 {
        bail!("compression needs positive --members, --messages and --concurrency");
    }
    let url = target.urls[0].clone();
    let secret = target.secret.clone();
    let room = format!("{run}-z");
    let source = |i: u32| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % u32::from(spread.sources.max(1))) as u8));
    let connect = |i: u32, name: String, read: Arc<AtomicU64>| {
        let (url, room, token) = (url.clone(), room.clone(), client::token(&secret, &name));
        async move {
            let mut ws = open(&format!("{url}?token={token}"), source(i), a.deflate, read).await?;
            tokio::time::timeout(TIMEOUT, next_json(&mut ws, |v| v["ev"] == "hello")).await??;
            request(&mut ws, "j", json!({"op":"join","room":room})).await?;
            Ok::<_, anyhow::Error>(ws)
        }
    };

    let rss_before = settled_rss(target).await;
    let read = Arc::new(AtomicU64::new(0));
    let members: Vec<Ws> = futures_util::stream::iter(0..a.members)
        .map(|i| connect(i, format!("{run}z{i}"), read.clone()))
        .buffer_unordered(a.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()
        .context("connecting the members")?;
    let mut publisher = connect(a.members, format!("{run}zpub"), Arc::default()).await.context("the publisher")?;
    let rss_connected = settled_rss(target).await;

    // Receivers: count the room's messages, stop at all of them. The first
    // is a marker: what was queued before it (the `member` events of the
    // joins) is not measured.
    let delivered = Arc::new(AtomicU64::new(0));
    let marked = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = members
        .into_iter()
        .map(|mut ws| {
            let (delivered, marked, want) = (delivered.clone(), marked.clone(), a.messages + 1);
            tokio::spawn(async move {
                let mut got = 0;
                while got < want {
                    match ws.next_frame().await {
                        Ok(f)
                            if f.opcode() == OpCode::Text
                                && memchr::memmem::find(f.payload(), b"\"ev\":\"msg\"").is_some() =>
                        {
                            if got == 0 {
                                marked.fetch_add(1, Ordering::Relaxed);
                            } else {
                                delivered.fetch_add(1, Ordering::Relaxed);
                            }
                            got += 1;
                        }
                        Ok(_) => {}
                        Err(_) => return None,
                    }
                }
                Some(ws)
            })
        })
        .collect();
    request(&mut publisher, "marker", json!({"op":"send","room":room,"text":"marker","cid":"marker"})).await?;
    let deadline = Instant::now() + TIMEOUT;
    while marked.load(Ordering::Relaxed) < u64::from(a.members) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let read_before = read.load(Ordering::Relaxed);
    let cpu_before = cpu(&target.all_pids);
    let started = Instant::now();
    for n in 0..a.messages {
        let req = json!({"op":"send","room":room,"text":text(a.text_bytes, u64::from(n)),"cid":format!("z{n}")});
        request(&mut publisher, &format!("s{n}"), req).await?;
    }
    let want = u64::from(a.members) * u64::from(a.messages);
    let deadline = Instant::now() + TIMEOUT;
    while delivered.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let server_cpu = cpu(&target.all_pids) - cpu_before;
    let got = delivered.load(Ordering::Relaxed);
    let bytes = read.load(Ordering::Relaxed) - read_before;
    let mut kept = Vec::new();
    for r in readers {
        if let Ok(Some(ws)) = r.await {
            kept.push(ws);
        }
    }
    // Idle now, every connection having inflated and deflated: what it keeps.
    let rss_after = settled_rss(target).await;

    let mut f = Figures::default();
    f.add("offers permessage-deflate", if a.deflate { 1.0 } else { 0.0 }, "");
    f.add("members", f64::from(a.members), "");
    f.add("message text", a.text_bytes as f64, "B");
    f.add("deliveries", got as f64, "");
    f.add("bytes read per delivery (frame and headers)", bytes as f64 / got.max(1) as f64, "B");
    f.add("server CPU per delivery", server_cpu / got.max(1) as f64 * 1e6, "us");
    f.add("deliveries/s", got as f64 / secs, "/s");
    f.add("gateway RSS before connecting", rss_before as f64 / 1e6, "MB");
    f.add(
        "gateway RSS per connection, connected and joined",
        (rss_connected.saturating_sub(rss_before)) as f64 / f64::from(a.members + 1) / 1e3,
        "KB",
    );
    f.add(
        "gateway RSS per connection, idle after the fan-out",
        (rss_after.saturating_sub(rss_before)) as f64 / f64::from(a.members + 1) / 1e3,
        "KB",
    );
    let mut errors = Vec::new();
    if got < want {
        errors.push(format!("{got} of {want} deliveries within {TIMEOUT:?}"));
    }
    if kept.len() < a.members as usize {
        errors.push(format!("{} of {} members lost their connection", a.members as usize - kept.len(), a.members));
    }
    drop(kept);
    let ok = errors.is_empty();
    Ok(Outcome { figures: f, errors, ok })
}
