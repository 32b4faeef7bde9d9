//! Messages that live after they are sent (docs/protocol.md, "Message
//! lifecycle"): replies, edits with their earlier versions, deletion and
//! reactions, over real WebSocket connections, standalone and on the
//! two-gateway, two-dispatcher cluster. Every refusal is tried and shown to
//! change nothing; a seeded random run shows that devices which come and go
//! converge on `history` from live events and `sync` alone.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Client, TestServer};
use serde_json::{Value, json};

async fn seq_of_send(c: &mut Client, room: &str, text: &str, cid: &str) -> u64 {
    c.send(room, text, cid).await["seq"].as_u64().unwrap()
}

async fn history(c: &mut Client, room: &str) -> Vec<Value> {
    c.ok(json!({"op":"history","room":room,"limit":100})).await["messages"].as_array().unwrap().clone()
}

fn find(messages: &[Value], seq: u64) -> Value {
    messages.iter().find(|m| m["seq"] == seq).cloned().unwrap_or_else(|| panic!("no {seq} in {messages:?}"))
}

async fn replies_name_a_message_of_the_same_room(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    alice.join("r").await;
    bob.join("r").await;
    alice.join("other").await;
    let first = seq_of_send(&mut alice, "r", "lunch?", "c1").await;
    let elsewhere = seq_of_send(&mut alice, "other", "x", "c2").await;
    let reply = bob.ok(json!({"op":"send","room":"r","text":"yes","cid":"c3","reply_to":first})).await;
    let ev = alice.event(|v| v["ev"] == "msg" && v["cid"] == "c3").await;
    assert_eq!((&ev["reply_to"], &ev["text"]), (&json!(first), &json!("yes")));
    let h = history(&mut alice, "r").await;
    assert_eq!(find(&h, reply["seq"].as_u64().unwrap())["reply_to"], first);
    assert!(find(&h, first).get("reply_to").is_none(), "a message that replies to nothing has no reply_to");
    for missing in [elsewhere, 999_999] {
        let refused = json!({"op":"send","room":"r","text":"?","cid":format!("x{missing}"),"reply_to":missing});
        assert_eq!(bob.error(refused).await, "not_found", "reply_to {missing}");
    }
    assert_eq!(history(&mut alice, "r").await.len(), 2, "a refused reply stores nothing");
}

async fn only_the_author_edits_and_earlier_versions_are_kept(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let mut eve = s.connected("eve").await;
    alice.join("r").await;
    bob.join("r").await;
    let seq = seq_of_send(&mut alice, "r", "helo", "c1").await;
    let sent_ts = find(&history(&mut bob, "r").await, seq)["ts"].clone();

    assert_eq!(bob.error(json!({"op":"edit","room":"r","seq":seq,"text":"mine"})).await, "forbidden");
    assert_eq!(eve.error(json!({"op":"edit","room":"r","seq":seq,"text":"x"})).await, "not_member");
    assert_eq!(eve.error(json!({"op":"edits","room":"r","seq":seq})).await, "not_member");
    assert_eq!(alice.error(json!({"op":"edit","room":"r","seq":seq + 1000,"text":"x"})).await, "not_found");
    assert_eq!(alice.error(json!({"op":"edit","room":"r","seq":seq,"text":""})).await, "bad_request");

    let r = alice.ok(json!({"op":"edit","room":"r","seq":seq,"text":"hello"})).await;
    assert_eq!((&r["room"], &r["seq"]), (&json!("r"), &json!(seq)));
    let first = bob.next_event("edit").await;
    assert_eq!((&first["text"], &first["by"], &first["seq"]), (&json!("hello"), &json!("alice"), &json!(seq)));
    assert_eq!(first["prev_pos"], 0, "the room's first change");
    assert!(first["pos"].as_u64().unwrap() > seq, "a change's position is its place in the room's log");
    // The same edit again (a retry) changes nothing and tells nobody.
    alice.ok(json!({"op":"edit","room":"r","seq":seq,"text":"hello"})).await;
    alice.ok(json!({"op":"edit","room":"r","seq":seq,"text":"hello!"})).await;
    let second = bob.next_event("edit").await;
    assert_eq!((&second["text"], &second["prev_pos"]), (&json!("hello!"), &first["pos"]), "no change between");

    let m = find(&history(&mut bob, "r").await, seq);
    assert_eq!((&m["text"], &m["edited_ts"]), (&json!("hello!"), &second["edited_ts"]));
    let versions = bob.ok(json!({"op":"edits","room":"r","seq":seq})).await["versions"].clone();
    assert_eq!(versions, json!([{"text":"helo","ts":sent_ts},{"text":"hello","ts":first["edited_ts"]}]));
    let synced = bob.ok(json!({"op":"sync","rooms":{"r":0}})).await;
    assert_eq!(synced["rooms"]["r"]["messages"][0]["text"], "hello!", "sync gives the current state");
    assert!(synced["rooms"]["r"].get("changed").is_none(), "a v1 sync has no `changed`");
}

async fn the_author_or_a_moderator_deletes_and_the_text_and_versions_go(s: TestServer) {
    let mut carol = s.connected("carol").await;
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    carol.ok(json!({"op":"create","room":"r"})).await;
    alice.join("r").await;
    bob.join("r").await;
    let mine = seq_of_send(&mut alice, "r", "oops", "c1").await;
    let other = seq_of_send(&mut alice, "r", "rude", "c2").await;
    alice.ok(json!({"op":"edit","room":"r","seq":mine,"text":"oops!"})).await;
    bob.ok(json!({"op":"react","room":"r","seq":mine,"emoji":"👍"})).await;

    assert_eq!(bob.error(json!({"op":"delete","room":"r","seq":mine})).await, "forbidden");
    assert_eq!(bob.error(json!({"op":"delete","room":"r","seq":mine + 1000})).await, "not_found");
    assert_eq!(find(&history(&mut bob, "r").await, mine)["text"], "oops!", "a refused delete changes nothing");

    alice.ok(json!({"op":"delete","room":"r","seq":mine})).await;
    let ev = bob.next_event("delete").await;
    assert_eq!((&ev["seq"], &ev["by"]), (&json!(mine), &json!("alice")));
    carol.ok(json!({"op":"delete","room":"r","seq":other})).await;
    let ev = bob.event(|v| v["ev"] == "delete" && v["seq"] == other).await;
    assert_eq!(ev["by"], "carol", "the owner deletes anyone's message");
    alice.ok(json!({"op":"delete","room":"r","seq":mine})).await; // a retry is ok, and quiet

    let h = history(&mut bob, "r").await;
    for seq in [mine, other] {
        let m = find(&h, seq);
        assert_eq!((&m["deleted"], &m["text"], &m["from"]), (&json!(true), &json!(""), &json!("alice")), "{m}");
        assert!(m.get("edited_ts").is_none() && m.get("reactions").is_none(), "{m}");
    }
    assert_eq!(bob.ok(json!({"op":"edits","room":"r","seq":mine})).await["versions"], json!([]));
    assert_eq!(alice.error(json!({"op":"edit","room":"r","seq":mine,"text":"back"})).await, "not_found");
    assert_eq!(bob.error(json!({"op":"react","room":"r","seq":mine,"emoji":"👍"})).await, "not_found");
    let deletes: Vec<Value> = bob.take_events().into_iter().filter(|e| e["ev"] == "delete").collect();
    assert!(deletes.is_empty(), "the retried delete told nobody: {deletes:?}");
}

async fn a_reaction_counts_once_per_user_and_emoji(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    alice.join("r").await;
    bob.join("r").await;
    let seq = seq_of_send(&mut alice, "r", "ship it?", "c1").await;
    bob.ok(json!({"op":"react","room":"r","seq":seq,"emoji":"👍"})).await;
    bob.ok(json!({"op":"react","room":"r","seq":seq,"emoji":"👍"})).await;
    alice.ok(json!({"op":"react","room":"r","seq":seq,"emoji":"👍"})).await;
    alice.ok(json!({"op":"react","room":"r","seq":seq,"emoji":"🎉"})).await;
    alice.ok(json!({"op":"react","room":"r","seq":seq,"emoji":"🎉","remove":true})).await;
    alice.ok(json!({"op":"react","room":"r","seq":seq,"emoji":"👀","remove":true})).await;
    let reacts: Vec<Value> = {
        let mut got = Vec::new();
        while got.len() < 4 {
            got.push(bob.next_event("react").await);
        }
        got
    };
    let seen: Vec<(&str, &str, bool)> = reacts
        .iter()
        .map(|e| (e["user"].as_str().unwrap(), e["emoji"].as_str().unwrap(), e["remove"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [("bob", "👍", false), ("alice", "👍", false), ("alice", "🎉", false), ("alice", "🎉", true)],
        "the second 👍 of bob and the removal of a reaction nobody had told nothing"
    );
    for pair in reacts.windows(2) {
        assert_eq!(pair[1]["prev_pos"], pair[0]["pos"], "each change names the one before it");
    }
    let m = find(&history(&mut alice, "r").await, seq);
    assert_eq!(m["reactions"], json!([{"emoji":"👍","count":2,"users":["alice","bob"]}]));

    for bad in ["", "a b", "\u{7}", &"x".repeat(33)] {
        let code = bob.error(json!({"op":"react","room":"r","seq":seq,"emoji":bad})).await;
        assert_eq!(code, "bad_request", "{bad:?}");
    }
    for i in 1..20 {
        bob.ok(json!({"op":"react","room":"r","seq":seq,"emoji":format!("e{i}")})).await;
    }
    let code = bob.error(json!({"op":"react","room":"r","seq":seq,"emoji":"e20"})).await;
    assert_eq!(code, "forbidden", "a message carries at most 20 distinct emojis");
    bob.ok(json!({"op":"react","room":"r","seq":seq,"emoji":"e1","remove":true})).await;
    bob.ok(json!({"op":"react","room":"r","seq":seq,"emoji":"e20"})).await;
    let m = find(&history(&mut alice, "r").await, seq);
    assert_eq!(m["reactions"].as_array().unwrap().len(), 20);
}

async fn an_offline_device_learns_of_changes_on_sync_with_changes(s: TestServer) {
    let alice_token = s.user("alice").await;
    let mut alice = s.connect(&alice_token).await;
    let mut bob = s.connected("bob").await;
    alice.join("r").await;
    bob.join("r").await;
    let old = seq_of_send(&mut alice, "r", "old", "c1").await;
    let kept = seq_of_send(&mut alice, "r", "kept", "c2").await;
    bob.ok(json!({"op":"react","room":"r","seq":kept,"emoji":"👍"})).await;
    let seen = alice.next_event("react").await["pos"].as_u64().unwrap();
    let last_seq = kept;
    drop(alice);

    bob.ok(json!({"op":"react","room":"r","seq":old,"emoji":"🎉"})).await;
    bob.ok(json!({"op":"react","room":"r","seq":kept,"emoji":"👍","remove":true})).await;
    let new = seq_of_send(&mut bob, "r", "new", "c3").await;
    bob.ok(json!({"op":"react","room":"r","seq":new,"emoji":"👀"})).await;

    let mut alice = s.connect(&alice_token).await;
    let v1 = alice.ok(json!({"op":"sync","rooms":{"r":last_seq}})).await;
    assert_eq!(
        v1["rooms"]["r"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["messages", "more"],
        "a v1 client sees what it saw before"
    );
    let r = alice.ok(json!({"op":"sync","rooms":{"r":last_seq},"changes":{"r":seen}})).await;
    let room = &r["rooms"]["r"];
    let changed = room["changed"].as_array().unwrap();
    let seqs: Vec<u64> = changed.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [old, kept], "each changed message once, in seq order");
    assert_eq!(changed[0]["reactions"], json!([{"emoji":"🎉","count":1,"users":["bob"]}]));
    assert!(changed[1].get("reactions").is_none(), "the 👍 was taken back: {}", changed[1]);
    let newest = &room["messages"][0];
    assert_eq!((&newest["seq"], &newest["reactions"][0]["emoji"]), (&json!(new), &json!("👀")));
    let pos = room["change_pos"].as_u64().unwrap();
    // Nothing changed since: nothing comes again, and the next change continues from there.
    let again = alice.ok(json!({"op":"sync","rooms":{"r":new},"changes":{"r":pos}})).await;
    assert_eq!((&again["rooms"]["r"]["changed"], &again["rooms"]["r"]["change_pos"]), (&json!([]), &json!(pos)));
    bob.ok(json!({"op":"edit","room":"r","seq":new,"text":"newer"})).await;
    assert_eq!(alice.next_event("edit").await["prev_pos"], pos, "no gap between sync and the live change");
    assert_eq!(
        alice.error(json!({"op":"sync","rooms":{"r":0},"changes":{"elsewhere":0}})).await,
        "bad_request",
        "changes names rooms of `rooms` only"
    );
}

/// One device's view, built only from what it received.
#[derive(Default)]
struct Device {
    /// seq -> the message as the device shows it.
    messages: BTreeMap<u64, Shown>,
    last_seq: u64,
    change_pos: u64,
    /// Gaps found in `msg` and change events, each repaired by a `sync`.
    gaps: usize,
    /// Changed messages a `sync` brought.
    by_changes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    from: String,
    text: String,
    reply_to: Option<u64>,
    edited_ts: Option<u64>,
    deleted: bool,
    reactions: BTreeMap<String, BTreeSet<String>>,
}

impl Shown {
    fn of(m: &Value) -> Shown {
        let mut reactions = BTreeMap::new();
        for r in m["reactions"].as_array().into_iter().flatten() {
            let users: BTreeSet<String> =
                r["users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_owned()).collect();
            assert_eq!(r["count"], users.len() as u64, "fewer than 20 users are all named: {r}");
            reactions.insert(r["emoji"].as_str().unwrap().to_owned(), users);
        }
        Shown {
            from: m["from"].as_str().unwrap().to_owned(),
            text: m["text"].as_str().unwrap().to_owned(),
            reply_to: m["reply_to"].as_u64(),
            edited_ts: m["edited_ts"].as_u64(),
            deleted: m["deleted"] == true,
            reactions,
        }
    }
}

impl Device {
    /// Applies an event; `false` when it reveals a gap (the device must sync).
    fn apply(&mut self, ev: &Value) -> bool {
        let kind = ev["ev"].as_str().unwrap_or("");
        if kind == "msg" {
            if ev["prev_seq"].as_u64().unwrap() > self.last_seq {
                return false;
            }
            let seq = ev["seq"].as_u64().unwrap();
            if seq > self.last_seq {
                // (One at or below it came with a sync, in a newer state.)
                self.messages.insert(seq, Shown::of(ev));
                self.last_seq = seq;
            }
            return true;
        }
        if !matches!(kind, "edit" | "delete" | "react") {
            return true;
        }
        let pos = ev["pos"].as_u64().unwrap();
        if pos <= self.change_pos {
            return true; // already applied (it came with a sync)
        }
        if ev["prev_pos"].as_u64().unwrap() != self.change_pos {
            return false;
        }
        self.change_pos = pos;
        let seq = ev["seq"].as_u64().unwrap();
        let Some(m) = self.messages.get_mut(&seq) else { return true };
        match kind {
            "edit" => {
                m.text = ev["text"].as_str().unwrap().to_owned();
                m.edited_ts = ev["edited_ts"].as_u64();
            }
            "delete" => {
                (m.text, m.edited_ts, m.deleted) = (String::new(), None, true);
                m.reactions.clear();
            }
            _ => {
                let (emoji, user) = (ev["emoji"].as_str().unwrap(), ev["user"].as_str().unwrap().to_owned());
                let users = m.reactions.entry(emoji.to_owned()).or_default();
                if ev["remove"] == true {
                    users.remove(&user);
                } else {
                    users.insert(user);
                }
                m.reactions.retain(|_, users| !users.is_empty());
            }
        }
        true
    }

    /// `sync` with `changes` until nothing more remains.
    async fn sync(&mut self, c: &mut Client, room: &str) {
        loop {
            let req = json!({"op":"sync","rooms":{room:self.last_seq},"changes":{room:self.change_pos}});
            let r = c.ok(req).await;
            let page = &r["rooms"][room];
            self.by_changes += page["changed"].as_array().unwrap().len();
            for m in page["changed"].as_array().unwrap().iter().chain(page["messages"].as_array().unwrap()) {
                let seq = m["seq"].as_u64().unwrap();
                self.messages.insert(seq, Shown::of(m));
                self.last_seq = self.last_seq.max(seq);
            }
            self.change_pos = page["change_pos"].as_u64().unwrap();
            if page["more"] != true && page["changes_more"] != true {
                return;
            }
        }
    }

    /// Applies what `c` received so far, syncing at each gap.
    async fn catch_up(&mut self, c: &mut Client, room: &str) {
        for ev in c.take_events() {
            if !self.apply(&ev) {
                self.gaps += 1;
                self.sync(c, room).await;
                self.apply(&ev);
            }
        }
    }

    /// Reads events until the view is `expected` (or the client's patience ends).
    async fn converge(&mut self, c: &mut Client, room: &str, expected: &BTreeMap<u64, Shown>) {
        self.catch_up(c, room).await;
        while self.messages != *expected {
            let ev = c.next_any_event().await;
            c.events.push_back(ev);
            self.catch_up(c, room).await;
        }
    }
}

/// A small deterministic generator (xorshift64*), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

async fn devices_that_come_and_go_converge_on_history(s: TestServer) {
    let seed: u64 = std::env::var("CONFAB_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_11fe);
    eprintln!("seed {seed} (CONFAB_SEED replays it)");
    let mut rng = Rng(seed.wrapping_mul(2).wrapping_add(1));
    let room = "r";
    let alice_token = s.user("alice").await;
    let bob_token = s.user("bob").await;
    // On the cluster: alice's laptop on one gateway and bob on the other, so
    // both always host the room and the phone is routed wherever it lands.
    let mut laptop = s.connect(&alice_token).await;
    let mut bob = s.connect(&bob_token).await;
    laptop.ok(json!({"op":"create","room":room})).await;
    bob.join(room).await;
    let mut phone = Some(s.connect(&alice_token).await);
    let mut views = [Device::default(), Device::default(), Device::default()]; // laptop, phone, bob
    let emojis = ["👍", "🎉", "👀"];
    let mut sent: Vec<(u64, &str)> = Vec::new(); // (seq, author)
    let (mut offline_runs, mut actions) = (0, [0usize; 4]);
    for step in 0..80 {
        // The phone drops and comes back every few steps.
        if rng.below(6) == 0 {
            match phone.take() {
                Some(mut c) => {
                    views[1].catch_up(&mut c, room).await;
                    offline_runs += 1;
                }
                None => {
                    let mut c = s.connect(&alice_token).await;
                    views[1].sync(&mut c, room).await;
                    phone = Some(c);
                }
            }
        }
        let actor = rng.below(3);
        let (c, user): (&mut Client, &str) = match (actor, phone.as_mut()) {
            (1, Some(p)) => (p, "alice"),
            (2, _) => (&mut bob, "bob"),
            _ => (&mut laptop, "alice"),
        };
        let target = (!sent.is_empty()).then(|| sent[rng.below(sent.len())]);
        let kind = if target.is_none() { 0 } else { rng.below(4) };
        actions[kind] += 1;
        let req = match (kind, target) {
            (0, _) => {
                let mut req = json!({"op":"send","room":room,"text":format!("m{step}"),"cid":format!("c{step}")});
                if let Some((to, _)) = target.filter(|_| rng.below(2) == 0) {
                    req["reply_to"] = json!(to);
                }
                req
            }
            (1, Some((seq, _))) => json!({"op":"edit","room":room,"seq":seq,"text":format!("e{step}")}),
            (2, Some((seq, _))) => json!({"op":"delete","room":room,"seq":seq}),
            (_, Some((seq, _))) => {
                let emoji = emojis[rng.below(emojis.len())];
                json!({"op":"react","room":room,"seq":seq,"emoji":emoji,"remove":rng.below(3) == 0})
            }
            _ => unreachable!(),
        };
        let r = c.request(req.clone()).await;
        if r["ok"] == true {
            if kind == 0 {
                sent.push((r["seq"].as_u64().unwrap(), user));
            }
        } else {
            // Someone else's message (edit; delete for bob), or one deleted before.
            let code = r["error"]["code"].as_str().unwrap();
            assert!(matches!(code, "forbidden" | "not_found"), "step {step}: {req} -> {r}");
            let author = target.map(|(_, a)| a);
            assert!(code != "forbidden" || author != Some(user), "step {step}: {req} -> {r}");
        }
    }
    let mut phone = match phone {
        Some(p) => p,
        None => {
            let mut c = s.connect(&alice_token).await;
            views[1].sync(&mut c, room).await;
            c
        }
    };
    let expected: BTreeMap<u64, Shown> =
        history(&mut laptop, room).await.iter().map(|m| (m["seq"].as_u64().unwrap(), Shown::of(m))).collect();
    assert_eq!(expected.len(), sent.len());
    for (view, c) in views.iter_mut().zip([&mut laptop, &mut phone, &mut bob]) {
        view.converge(c, room, &expected).await;
    }
    eprintln!(
        "sends/edits/deletes/reacts {actions:?}, phone offline {offline_runs} times, \
         {} changed messages by sync, gaps repaired {:?}",
        views[1].by_changes,
        views.iter().map(|v| v.gaps).collect::<Vec<_>>()
    );
    assert!(offline_runs >= 3, "the phone went away several times");
    assert!(views[1].by_changes > 0, "the phone learnt of changes it missed by sync");
    assert_eq!((views[0].gaps, views[2].gaps), (0, 0), "devices that stayed saw every change in order");
}

on_every_mode!(
    replies_name_a_message_of_the_same_room,
    only_the_author_edits_and_earlier_versions_are_kept,
    the_author_or_a_moderator_deletes_and_the_text_and_versions_go,
    a_reaction_counts_once_per_user_and_emoji,
    an_offline_device_learns_of_changes_on_sync_with_changes,
    devices_that_come_and_go_converge_on_history,
);
