//! A client that reconnects to another gateway while messages keep flowing
//! never misses one: `sync` says `more` whenever it did not return
//! everything, and `prev_seq` shows every live event that does not follow
//! what the client holds (docs/protocol.md, "Ordering, gaps and `sync`").
//! On both modes; on the cluster each reconnection goes to the other gateway.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, TestServer};
use futures_util::StreamExt;
use serde_json::{Value, json};

const ROOM: &str = "flowing";
/// The reader's `sync` limit: far fewer than what arrives between two of its connections.
const LIMIT: usize = 3;
const RECONNECTS: usize = 6;
/// How long the whole reader may take.
const READER_LIMIT: Duration = Duration::from_secs(120);

fn fast() -> Vec<String> {
    // The writer sends as fast as its acks come, the reader syncs often.
    vec!["--rate-per-second=1000".into(), "--rate-burst=1000".into()]
}

on_every_mode_with!(
    flowing,
    gateway: fast;
    a_reader_that_reconnects_while_messages_flow_misses_none,
    a_message_sent_as_a_reader_connects_reaches_it_or_shows_its_gap,
    sync_and_history_pages_have_no_hole_while_batches_land,
);

/// What the writer has had acknowledged so far: `(cid, seq)` in order.
type Acked = Arc<std::sync::Mutex<Vec<(String, u64)>>>;

fn highest(acked: &Acked) -> u64 {
    acked.lock().unwrap().last().map_or(0, |(_, s)| *s)
}

/// One `sync` reply as the reader got it.
struct SyncSeen {
    since: u64,
    seqs: Vec<u64>,
    more: bool,
    /// The highest seq acked to the writer before the request was sent:
    /// stored by then, so a reply without `more` must reach at least it.
    acked_before: u64,
}

/// The reader: it holds the room's seqs contiguously (as `prev_seq`
/// proves), syncs on a gap and on every new connection, follows `more`, and
/// acts on nothing else (no timed re-sync: a gap the protocol does not
/// signal stays a gap and fails the test).
#[derive(Default)]
struct Reader {
    got: BTreeMap<u64, String>,
    last: u64,
    syncs: Vec<SyncSeen>,
    /// Live events that did not follow `last` (prev_seq above it).
    gaps: usize,
    /// The highest seq of such an event, until `last` reaches it.
    gap_to_fill: u64,
    /// Events of one connection whose seq did not grow.
    out_of_order: usize,
    by_event: usize,
    /// The `server` of each connection's hello.
    servers: Vec<String>,
}

impl Reader {
    fn hold(&mut self, m: &Value) {
        let seq = m["seq"].as_u64().expect("seq");
        let cid = m["cid"].as_str().expect("cid").to_owned();
        if let Some(held) = self.got.insert(seq, cid.clone()) {
            assert_eq!(held, cid, "two messages at seq {seq}");
        }
        self.last = seq;
    }

    /// A live `msg` event, by the rules of docs/protocol.md.
    fn event(&mut self, v: &Value, last_event: &mut u64) {
        let seq = v["seq"].as_u64().expect("seq");
        let prev = v["prev_seq"].as_u64().expect("prev_seq");
        if seq <= *last_event {
            self.out_of_order += 1;
        }
        *last_event = seq.max(*last_event);
        if seq <= self.last {
            // Held already (from a sync): the same message.
            assert_eq!(self.got.get(&seq).map(String::as_str), v["cid"].as_str(), "seq {seq} held as another");
        } else if prev == self.last {
            self.hold(v);
            self.by_event += 1;
        } else {
            assert!(prev > self.last, "prev_seq {prev} below the last seq held {} for seq {seq}", self.last);
            self.gaps += 1;
            self.gap_to_fill = self.gap_to_fill.max(seq);
        }
    }

    /// Syncs until no reply says `more` and every gap seen meanwhile is
    /// filled; events that arrive meanwhile are handled as they come.
    async fn catch_up(&mut self, c: &mut Client, acked: &Acked, last_event: &mut u64, n: &mut u64) {
        loop {
            *n += 1;
            let id = json!(format!("s{n}"));
            let since = self.last;
            let acked_before = highest(acked);
            let req = json!({"id": id, "op": "sync", "rooms": {ROOM: since}, "limit": LIMIT});
            c.send_text(&req.to_string()).await;
            let reply = loop {
                let v = c.next_json().await;
                if v["re"] == id {
                    break v;
                }
                if v["ev"] == "msg" && v["room"] == ROOM {
                    self.event(&v, last_event);
                }
            };
            assert_eq!(reply["ok"], true, "sync -> {reply}");
            let page = &reply["rooms"][ROOM];
            let messages = page["messages"].as_array().expect("messages");
            assert!(messages.len() <= LIMIT, "at most `limit` messages: {page}");
            let seqs: Vec<u64> = messages.iter().map(|m| m["seq"].as_u64().expect("seq")).collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first: {seqs:?}");
            assert!(seqs.first().is_none_or(|s| *s > since), "only seqs above {since}: {seqs:?}");
            let more = page["more"] == true;
            self.syncs.push(SyncSeen { since, seqs, more, acked_before });
            for m in messages {
                // An event may have brought part of the page meanwhile.
                if m["seq"].as_u64().expect("seq") > self.last {
                    self.hold(m);
                }
            }
            // The rule: repeat while `more`; and a gap event that came while
            // the sync was in flight and that its reply did not cover is a
            // gap still (the reply was read before that message was stored).
            if !more && self.gap_to_fill <= self.last {
                return;
            }
        }
    }

    /// Follows the room live until `until` holds, syncing on every gap.
    async fn follow(
        &mut self,
        c: &mut Client,
        acked: &Acked,
        last_event: &mut u64,
        n: &mut u64,
        until: impl Fn(&Reader) -> bool,
    ) {
        while !until(self) {
            let v = c.next_json().await;
            if v["ev"] == "msg" && v["room"] == ROOM {
                self.event(&v, last_event);
                if self.gap_to_fill > self.last {
                    self.catch_up(c, acked, last_event, n).await;
                }
            }
        }
    }
}

async fn a_reader_that_reconnects_while_messages_flow_misses_none(s: TestServer) {
    let mut writer = s.connected("alice").await;
    writer.join(ROOM).await;
    let reader_token = s.user("bob").await;
    let mut first = s.connect(&reader_token).await;
    first.join(ROOM).await;
    drop(first);
    let distributed = s.gateways.len() > 1;

    // The writer sends one message after another until told to stop.
    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sending = tokio::spawn({
        let (acked, stop) = (acked.clone(), stop.clone());
        async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let cid = format!("m{i}");
                let r = writer.send(ROOM, &format!("message {i}"), &cid).await;
                acked.lock().unwrap().push((cid, r["seq"].as_u64().expect("seq")));
                i += 1;
            }
            writer
        }
    });

    let mut reader = Reader::default();
    let mut n = 0u64;
    let started = Instant::now();
    for round in 0..RECONNECTS {
        // Away long enough that one sync cannot bring everything.
        let behind = reader.last;
        while acked.lock().unwrap().iter().filter(|(_, s)| *s > behind).count() < 4 * LIMIT {
            assert!(started.elapsed() < READER_LIMIT, "the writer stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut c = s.connect(&reader_token).await;
        let server = c.hello["server"].as_str().expect("server").to_owned();
        if distributed && let Some(before) = reader.servers.last() {
            assert_ne!(*before, server, "round {round}: the reader moved to the other gateway");
        }
        reader.servers.push(server);
        let mut last_event = 0u64;
        if !round.is_multiple_of(2) {
            // Listen first: the first live event shows the gap (messages were
            // stored while away), and the sync fills it.
            let (gaps, before) = (reader.gaps, reader.last);
            reader.follow(&mut c, &acked, &mut last_event, &mut n, |r| r.gaps > gaps).await;
            assert!(reader.gap_to_fill > before, "round {round}: the first event is a gap");
            assert!(reader.last >= reader.gap_to_fill, "round {round}: the gap was filled by sync");
        }
        reader.catch_up(&mut c, &acked, &mut last_event, &mut n).await;
        // Then live for a while (gaps filled as they show).
        let at = reader.last;
        reader.follow(&mut c, &acked, &mut last_event, &mut n, |r| r.last >= at + LIMIT as u64).await;
        assert!(started.elapsed() < READER_LIMIT, "the reader took longer than {READER_LIMIT:?}");
    }
    // The writer stops; the reader, still connected elsewhere once more,
    // must end holding every acked seq through the protocol's signals alone.
    let mut c = s.connect(&reader_token).await;
    reader.servers.push(c.hello["server"].as_str().expect("server").to_owned());
    let mut last_event = 0u64;
    reader.catch_up(&mut c, &acked, &mut last_event, &mut n).await;
    stop.store(true, Ordering::SeqCst);
    let mut writer = tokio::time::timeout(PATIENCE, sending).await.expect("the writer stops").expect("the writer");
    let top = highest(&acked);
    let following = reader.follow(&mut c, &acked, &mut last_event, &mut n, |r| r.last >= top);
    if tokio::time::timeout(PATIENCE, following).await.is_err() {
        panic!("the reader holds up to seq {} of {top}, and nothing told it it lacks the rest", reader.last);
    }

    let acked = acked.lock().unwrap().clone();
    // Every acked message exactly once, at the seq its ack gave, and
    // nothing but the room's history.
    let mut history: Vec<Value> = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut req = json!({"op": "history", "room": ROOM, "limit": 100});
        if let Some(b) = before {
            req["before"] = json!(b);
        }
        let page = writer.ok(req).await;
        let msgs = page["messages"].as_array().expect("messages").clone();
        if msgs.is_empty() {
            break;
        }
        before = msgs[0]["seq"].as_u64();
        history.splice(0..0, msgs);
    }
    let stored: BTreeMap<u64, String> =
        history.iter().map(|m| (m["seq"].as_u64().unwrap(), m["cid"].as_str().unwrap().to_owned())).collect();
    assert_eq!(stored.len(), acked.len(), "one stored message per acked send");
    for (cid, seq) in &acked {
        assert_eq!(stored.get(seq), Some(cid), "acked {cid} stored as seq {seq}");
    }
    assert_eq!(reader.got, stored, "the reader holds every message of the room exactly once, at its seq");
    assert_eq!(reader.out_of_order, 0, "events of one connection in increasing seq order");

    // Every sync said `more` when it did not return everything: a reply
    // without it holds every message above its `since` up to the last one
    // acked before it was asked, with no hole.
    let all: Vec<u64> = stored.keys().copied().collect();
    let mut with_more = 0;
    for sync in &reader.syncs {
        let upto = sync.seqs.last().copied().unwrap_or(sync.since);
        let want: Vec<u64> = all.iter().copied().filter(|s| *s > sync.since && *s <= upto).collect();
        assert_eq!(sync.seqs, want, "a sync from {} returned a contiguous stretch", sync.since);
        if sync.more {
            with_more += 1;
            assert_eq!(sync.seqs.len(), LIMIT, "`more` only on a full page (no reply budget is near)");
        } else {
            assert!(
                upto >= sync.acked_before,
                "a sync from {} said no `more` but stopped at {upto}, below seq {} acked before it was asked",
                sync.since,
                sync.acked_before
            );
        }
    }
    assert!(with_more >= RECONNECTS, "each reconnection needed `more` ({with_more} replies said it)");
    assert!(reader.gaps >= RECONNECTS / 2, "a gap shown by prev_seq on every listening reconnection: {}", reader.gaps);
    assert!(reader.by_event > 0, "messages arrived live too");
    eprintln!(
        "{} messages; reader: {} syncs ({} with more), {} gaps shown by prev_seq, {} messages live, gateways {:?}",
        acked.len(),
        reader.syncs.len(),
        with_more,
        reader.gaps,
        reader.by_event,
        reader.servers
    );
}

/// The race of a new route: a reader connects to a gateway that hosts no
/// member of the room, and a message is sent at that moment. Its `sync` may
/// be read before the message is stored, and the dispatcher may store it
/// before it has learnt (from the gateway's announcement) that the gateway
/// now hosts the room: then neither the reply nor a push brings it, and in
/// a room that stays quiet nothing would ever show the gap. The dispatcher
/// hands a gateway that starts hosting a room the room's newest `msg` event
/// (dispatcher/src/pipeline/mod.rs, `Pipeline::learn`), so the reader gets
/// the message or a `prev_seq` that shows the gap. Before that, 4 of 80
/// tries here went silent.
async fn a_message_sent_as_a_reader_connects_reaches_it_or_shows_its_gap(s: TestServer) {
    const TRIES: usize = 30;
    let mut writer = s.connected("carol").await;
    writer.join(ROOM).await;
    let writer_on = writer.hello["server"].clone();
    let token = s.user("dave").await;
    let mut c = s.connect(&token).await;
    c.join(ROOM).await;
    drop(c);
    let distributed = s.gateways.len() > 1;
    let mut reader = Reader::default();
    let acked: Acked = Default::default();
    for i in 0..TRIES {
        // On the cluster, the gateway the writer is not on: it hosts no
        // member of the room once the reader's last connection is closed.
        let mut c = loop {
            let c = s.connect(&token).await;
            if !distributed || c.hello["server"] != writer_on {
                break c;
            }
        };
        let (mut last_event, mut n) = (0u64, 0u64);
        let cid = format!("race{i}");
        let (sent, ()) = tokio::join!(
            writer.send(ROOM, "racing a new route", &cid),
            reader.catch_up(&mut c, &acked, &mut last_event, &mut n)
        );
        let seq = sent["seq"].as_u64().expect("seq");
        acked.lock().unwrap().push((cid, seq));
        // Only what the protocol signals: events, and syncs on their gaps.
        let following = reader.follow(&mut c, &acked, &mut last_event, &mut n, |r| r.last >= seq);
        if tokio::time::timeout(PATIENCE, following).await.is_err() {
            panic!(
                "try {i}: seq {seq} was stored and acked, the reader holds up to {} and was told nothing",
                reader.last
            );
        }
        // Closed, and the close seen through, so the gateway drops the room.
        let _ = c.ws.close(None).await;
        let _ = tokio::time::timeout(PATIENCE, async { while c.ws.next().await.is_some() {} }).await;
    }
    let acked = acked.lock().unwrap().clone();
    for (cid, seq) in &acked {
        assert_eq!(reader.got.get(seq), Some(cid), "the reader holds {cid} at seq {seq}");
    }
    assert_eq!(reader.got.len(), acked.len(), "and nothing else");
    assert_eq!(reader.out_of_order, 0, "events of one connection in increasing seq order");
}

/// A dispatcher's group commit on CQL writes a batch's messages at once, not
/// in a transaction: a read while it lands could see a later message of the
/// batch and not an earlier one. A client appends such a page (the later
/// messages' `prev_seq` follow on) and never fills the hole. Reads stop at
/// what is committed (gateway/src/ops.rs, `Committed`). A writer keeps 32
/// sends in flight, so batches hold many messages, while a reader syncs and
/// reads the newest history page over and over; every page must be a
/// contiguous stretch of the room's final history. Before that, 18 of 790
/// sync pages on the cluster had a hole.
async fn sync_and_history_pages_have_no_hole_while_batches_land(s: TestServer) {
    const N: usize = 1500;
    const IN_FLIGHT: usize = 32;
    let mut writer = s.connected("erin").await;
    writer.join(ROOM).await;
    let mut c = s.connected("frank").await;
    c.join(ROOM).await;
    let sending = tokio::spawn(async move {
        let (mut sent, mut acked) = (0, 0);
        while acked < N {
            while sent < N && sent - acked < IN_FLIGHT {
                let f = json!({"id": format!("p{sent}"), "op": "send", "room": ROOM, "text": "x", "cid": format!("c{sent}")});
                writer.send_text(&f.to_string()).await;
                sent += 1;
            }
            let v = writer.next_json().await;
            if v.get("re").is_some() {
                assert_eq!(v["ok"], true, "{v}");
                acked += 1;
            }
        }
        writer
    });
    // (what the page was read after, its seqs)
    let mut pages: Vec<(u64, Vec<u64>)> = Vec::new();
    let mut last = 0u64;
    let mut n = 0u64;
    while !sending.is_finished() {
        n += 1;
        let r = c.request(json!({"op": "sync", "rooms": {ROOM: last}, "limit": 1000})).await;
        let seqs: Vec<u64> =
            r["rooms"][ROOM]["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        if let Some(&l) = seqs.last() {
            pages.push((last, seqs));
            // Every other time from a little further back: across commits again.
            last = if n.is_multiple_of(2) { l } else { last.max(l.saturating_sub(40)) };
        }
        let r = c.request(json!({"op": "history", "room": ROOM, "limit": 100})).await;
        let seqs: Vec<u64> = r["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        if let Some(&first) = seqs.first() {
            pages.push((first - 1, seqs));
        }
        c.take_events();
    }
    let mut writer = tokio::time::timeout(PATIENCE, sending).await.expect("the writer ends").expect("the writer");
    let mut all: Vec<u64> = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut req = json!({"op": "history", "room": ROOM, "limit": 100});
        if let Some(b) = before {
            req["before"] = json!(b);
        }
        let page = writer.ok(req).await;
        let seqs: Vec<u64> = page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        let Some(&first) = seqs.first() else { break };
        before = Some(first);
        all.splice(0..0, seqs);
    }
    assert_eq!(all.len(), N, "every acked message stored once");
    let mut holes = Vec::new();
    for (after, seqs) in &pages {
        let upto = *seqs.last().unwrap();
        let want: Vec<u64> = all.iter().copied().filter(|s| s > after && *s <= upto).collect();
        if *seqs != want {
            holes.push((*after, want.into_iter().filter(|s| !seqs.contains(s)).collect::<Vec<_>>()));
        }
    }
    assert!(pages.len() > 20, "pages read while the writer sent: {}", pages.len());
    assert!(
        holes.is_empty(),
        "{} of {} pages skipped messages (after, missing): {:?}",
        holes.len(),
        pages.len(),
        &holes[..holes.len().min(5)]
    );
}
