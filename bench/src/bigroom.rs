//! `bigroom`: one room of many members (issue 14's 100,000), created with
//! `create` and filled with `join`s, one short connection per member, then
//! timed: `room_info`, `directory`, `members` pages at its start and deep
//! in it, and messages fanned out to the members kept online.
//!
//! Runs in the scenario's own process (no workers): joining is the slow part
//! and the server's, and the online subset is small.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Ws};
use crate::report::{Figures, Outcome};
use crate::scenario::{Spread, cpu};
use crate::target::Target;

#[derive(Debug, Clone, clap::Args)]
pub struct BigRoomArgs {
    /// Members joined to the room (the owner besides).
    #[arg(long, default_value_t = 100_000)]
    pub members: u32,
    /// Of them, how many stay connected and receive the timed messages.
    #[arg(long, default_value_t = 1_000)]
    pub online: u32,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How many times each read is timed.
    #[arg(long, default_value_t = 200)]
    pub reads: u32,
    /// Messages sent to the room, one at a time, each timed until every
    /// online member has it.
    #[arg(long, default_value_t = 20)]
    pub messages: u32,
}

/// How long one request, one join or one message's fan-out may take.
const TIMEOUT: Duration = Duration::from_secs(60);

fn member_name(run: &str, i: u32) -> String {
    format!("{run}m{i}")
}

/// Sends `req` with `id` and waits for its reply.
async fn request(ws: &mut Ws, id: &str, mut req: Value) -> Result<Value> {
    req["id"] = json!(id);
    ws.send(Message::text(req.to_string())).await?;
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let msg = ws.next().await.ok_or_else(|| anyhow!("the server closed the connection"))??;
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(text.as_str()).with_context(|| format!("not JSON: {text}"))?;
            if v["re"] == id {
                if v["ok"] != true {
                    bail!("{req}: {}", v["error"]);
                }
                return Ok(v);
            }
        }
    })
    .await
    .map_err(|_| anyhow!("no reply to {req} within {TIMEOUT:?}"))?
}

/// Microseconds of each of `n` runs of `req`.
async fn timed(
    ws: &mut Ws,
    name: &str,
    n: u32,
    req: Value,
    check: impl Fn(&Value) -> Result<()>,
) -> Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new(3)?;
    for i in 0..n {
        let start = Instant::now();
        let reply = request(ws, &format!("{name}{i}"), req.clone()).await?;
        h.record(start.elapsed().as_micros() as u64)?;
        check(&reply)?;
    }
    Ok(h)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() { f64::NAN } else { h.value_at_quantile(q) as f64 / 1000.0 }
}

fn add(f: &mut Figures, what: &str, h: &Histogram<u64>) {
    f.add(&format!("{what} p50"), ms(h, 0.5), "ms");
    f.add(&format!("{what} p99"), ms(h, 0.99), "ms");
}

pub async fn bigroom(target: &mut Target, run: &str, spread: &Spread, a: &BigRoomArgs) -> Result<Outcome> {
    if a.online > a.members || a.members == 0 || a.concurrency == 0 {
        bail!("bigroom needs 1 ≤ --members, --online ≤ --members and a positive --concurrency");
    }
    let url = target.urls[0].clone();
    // Members alternate between the gateways (one, standalone), as the
    // idle scenario's connections do; the owner is on the first.
    let urls = target.urls.clone();
    let gateway_of = |i: u32| &urls[i as usize % urls.len()];
    let (dialect, secret) = (target.dialect, target.secret.clone());
    let room = format!("{run}-big");
    let source = |i: u32| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % u32::from(spread.sources.max(1))) as u8));
    let owner_token = client::token(&secret, &format!("{run}owner"));
    let (mut owner, _) = client::setup(dialect, &url, source(0), &owner_token, &[]).await?;
    request(&mut owner, "create", json!({"op":"create","room":room,"name":format!("{run} big room")})).await?;
    // Idle through the joins, it would miss its heartbeats: connect again after.
    owner.close(None).await.ok();

    // Join everyone: a connection, a `join`, and (beyond the online subset) a close.
    let started = Instant::now();
    let cpu_before = cpu(&target.all_pids);
    let joined: Vec<Result<()>> = futures_util::stream::iter(0..a.members)
        .map(|i| {
            let (url, room, token) = (gateway_of(i), &room, client::token(&secret, &member_name(run, i)));
            async move {
                let (mut ws, _) = client::setup(dialect, url, source(i), &token, std::slice::from_ref(room))
                    .await
                    .with_context(|| format!("member {i}"))?;
                ws.close(None).await.ok();
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(a.concurrency)
        .collect()
        .await;
    let join_secs = started.elapsed().as_secs_f64();
    let join_cpu = cpu(&target.all_pids) - cpu_before;
    joined.into_iter().collect::<Result<Vec<()>>>()?;
    let (mut owner, _) = client::setup(dialect, &url, source(0), &owner_token, &[]).await.context("the owner")?;
    // The online subset: members already, they connect and get the room's events.
    let online: Vec<(u32, Ws)> = futures_util::stream::iter(0..a.online)
        .map(|i| {
            let (url, token) = (gateway_of(i), client::token(&secret, &member_name(run, i)));
            async move {
                let (ws, _) = client::setup(dialect, url, source(i), &token, &[]).await?;
                Ok::<_, anyhow::Error>((i, ws))
            }
        })
        .buffer_unordered(a.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()
        .context("connecting the online members")?;
    let want = u64::from(a.members) + 1;

    let mut f = Figures::default();
    f.add("members joined", a.members as f64, "");
    f.add("gateways the members are spread over", urls.len() as f64, "");
    f.add("joins/s", f64::from(a.members) / join_secs, "/s");
    f.add("server CPU while joining", join_cpu / join_secs * 100.0, "% of a core");
    let count = |v: &Value| -> Result<()> {
        if v["members"].as_u64() != Some(want) {
            bail!("room_info counts {} members, not {want}", v["members"]);
        }
        Ok(())
    };
    let info = timed(&mut owner, "info", a.reads, json!({"op":"room_info","room":room}), count).await?;
    add(&mut f, "room_info", &info);
    let listed = |v: &Value| -> Result<()> {
        let entry = v["rooms"].as_array().and_then(|r| r.iter().find(|r| r["room"] == room.as_str()));
        match entry {
            Some(e) if e["members"].as_u64() == Some(want) => Ok(()),
            _ => bail!("the directory lists {v} for {room}"),
        }
    };
    let dir = timed(&mut owner, "dir", a.reads, json!({"op":"directory","query":room}), listed).await?;
    add(&mut f, "directory (query)", &dir);
    let full = |v: &Value| -> Result<()> {
        if v["members"].as_array().map_or(0, Vec::len) != 1000 {
            bail!("a members page of {} entries, not 1000", v["members"].as_array().map_or(0, Vec::len));
        }
        Ok(())
    };
    let first =
        timed(&mut owner, "first", a.reads, json!({"op":"members","room":room,"limit":1000}), |_| Ok(())).await?;
    add(&mut f, "members, first page of 1000", &first);
    let middle = member_name(run, a.members / 2);
    let deep = json!({"op":"members","room":room,"after":middle,"limit":1000});
    let check = if a.members >= 2000 { full } else { |_: &Value| Ok(()) };
    let deep = timed(&mut owner, "deep", a.reads, deep, check).await?;
    add(&mut f, "members, a page from the middle", &deep);

    // Fan-out: each message until every online member has it.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u32, u64, Instant)>();
    let mut readers = Vec::new();
    for (i, mut ws) in online {
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let mut heartbeat = tokio::time::interval(Duration::from_secs(10));
            loop {
                let text = tokio::select! {
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(_)) => continue,
                        _ => break,
                    },
                    _ = heartbeat.tick() => {
                        if ws.send(Message::text(client::ping_frame(dialect))).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if v["ev"] == "msg" {
                    let seq = v["message"]["seq"].as_u64().or(v["seq"].as_u64()).unwrap_or(0);
                    if tx.send((i, seq, Instant::now())).is_err() {
                        break;
                    }
                }
            }
        }));
    }
    drop(tx);
    let mut first_delivery = Histogram::<u64>::new(3)?;
    let mut last_delivery = Histogram::<u64>::new(3)?;
    let mut ack = Histogram::<u64>::new(3)?;
    let mut errors = Vec::new();
    for n in 0..a.messages {
        let sent = Instant::now();
        let req = json!({"op":"send","room":room,"text":format!("to all {n}"),"cid":format!("big-{n}")});
        request(&mut owner, &format!("send{n}"), req).await?;
        ack.record(sent.elapsed().as_micros() as u64)?;
        let mut got = 0;
        let mut earliest = None;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while got < a.online {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((_, _, at))) => {
                    got += 1;
                    earliest.get_or_insert(at);
                    if got == a.online {
                        last_delivery.record(at.duration_since(sent).as_micros() as u64)?;
                    }
                }
                _ => {
                    errors.push(format!("message {n}: {got} of {} online members had it after {TIMEOUT:?}", a.online));
                    break;
                }
            }
        }
        if let Some(at) = earliest {
            first_delivery.record(at.duration_since(sent).as_micros() as u64)?;
        }
    }
    for r in readers {
        r.abort();
    }
    add(&mut f, "send→ack", &ack);
    f.add("online members", a.online as f64, "");
    add(&mut f, "send→first online member", &first_delivery);
    add(&mut f, "send→last online member", &last_delivery);
    let ok = errors.is_empty();
    Ok(Outcome { figures: f, errors, ok })
}
