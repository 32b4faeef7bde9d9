//! Unread counts, mentions, notification levels and retention
//! (docs/protocol.md, "Unread counts, mentions, notification levels and
//! retention"), over real WebSocket connections, standalone and on the
//! two-gateway, two-dispatcher cluster. Seqs are log offsets with gaps, so
//! every count here is checked where seqs and counts differ.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{Client, PATIENCE, TestServer};
use serde_json::{Value, json};

/// This user's entry of `rooms` for `room`.
async fn entry(c: &mut Client, room: &str) -> Value {
    let rooms = c.ok(json!({"op": "rooms"})).await;
    rooms["rooms"].as_array().unwrap().iter().find(|r| r["room"] == room).cloned().unwrap_or(Value::Null)
}

/// `(unread, mentions)` of `room` in this user's `rooms`.
async fn counts(c: &mut Client, room: &str) -> (u64, u64) {
    let e = entry(c, room).await;
    (e["unread"].as_u64().unwrap(), e["mentions"].as_u64().unwrap())
}

fn seq(reply: &Value) -> u64 {
    reply["seq"].as_u64().unwrap()
}

async fn unread_is_exact_across_seq_gaps_and_leaves_out_ones_own(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let mut carol = s.connected("carol").await;
    alice.join("team").await;
    bob.join("team").await;
    // Between the room's messages, records that take log offsets without
    // being messages (joins, typing, reads, other rooms' messages on the
    // same partitions): seqs have gaps, counts must not.
    let mut seqs = Vec::new();
    for (i, (who, text)) in
        [("bob", "b1"), ("alice", "a2"), ("bob", "b3"), ("bob", "b4"), ("alice", "a5")].iter().enumerate()
    {
        for other in ["r1", "r2", "r3"] {
            if i == 0 {
                carol.join(other).await;
            }
            carol.send(other, "elsewhere", &format!("e-{other}-{i}")).await;
        }
        carol.ok(json!({"op": "typing", "room": "r1"})).await;
        bob.ok(json!({"op": "typing", "room": "team"})).await;
        let sender = if *who == "alice" { &mut alice } else { &mut bob };
        seqs.push(seq(&sender.send("team", text, &format!("c{i}")).await));
        if i == 1 {
            carol.join("team").await;
        }
    }
    let last = *seqs.last().unwrap();
    assert!(last > 5 + 3, "seqs have gaps: {seqs:?}");
    let e = entry(&mut alice, "team").await;
    assert_eq!((&e["unread"], &e["mentions"], &e["notify"]), (&json!(3), &json!(0), &json!("all")), "bob's three: {e}");
    assert_eq!(counts(&mut bob, "team").await, (2, 0), "alice's two");
    assert_eq!(counts(&mut carol, "team").await, (5, 0), "a member counts from the room's start, not the join");

    // A read marker at b3 leaves b4 (a5 is alice's own).
    alice.ok(json!({"op": "read", "room": "team", "seq": seqs[2]})).await;
    assert_eq!(counts(&mut alice, "team").await, (1, 0));
    alice.ok(json!({"op": "read", "room": "team", "seq": last})).await;
    assert_eq!(counts(&mut alice, "team").await, (0, 0), "the read marker resets it");
    // A marker between seqs (a gap) counts like the message before it.
    bob.ok(json!({"op": "read", "room": "team", "seq": seqs[1] + 1})).await;
    assert_eq!(counts(&mut bob, "team").await, (1, 0), "a5 only");
    bob.send("team", "b6", "c6").await;
    assert_eq!(counts(&mut alice, "team").await, (1, 0));
    assert_eq!(counts(&mut bob, "team").await, (1, 0), "one's own message never counts");
    // DMs count the same way.
    bob.ok(json!({"op": "send", "to": "alice", "text": "psst", "cid": "d1"})).await;
    bob.ok(json!({"op": "send", "to": "alice", "text": "again", "cid": "d2"})).await;
    assert_eq!(counts(&mut alice, "dm:alice:bob").await, (2, 0));
    assert_eq!(counts(&mut bob, "dm:alice:bob").await, (0, 0));
}

async fn mentions_name_members_only_and_count_until_read(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let mut carol = s.connected("carol").await;
    alice.join("team").await;
    bob.join("team").await;
    carol.join("lobby").await;
    let sent = bob.send("team", "@alice look, @carol and @nobody and @bob, mail bob@example.com", "m1").await;
    let ev = alice.event(|v| v["ev"] == "msg" && v["seq"] == sent["seq"]).await;
    assert_eq!(ev["mentions"], json!(["alice", "bob"]), "carol is no member; nobody is nobody: {ev}");
    let history = alice.ok(json!({"op": "history", "room": "team"})).await;
    assert_eq!(history["messages"][0]["mentions"], json!(["alice", "bob"]), "kept with the message");
    bob.send("team", "plain", "m2").await;
    let third = bob.send("team", "@alice again @alice", "m3").await;
    assert_eq!(counts(&mut alice, "team").await, (3, 2));
    assert_eq!(counts(&mut bob, "team").await, (0, 0), "naming oneself is no mention");
    assert_eq!(entry(&mut carol, "team").await, Value::Null, "carol learns nothing of the room");
    alice.ok(json!({"op": "read", "room": "team", "seq": seq(&sent)})).await;
    assert_eq!(counts(&mut alice, "team").await, (2, 1));
    alice.ok(json!({"op": "read", "room": "team", "seq": seq(&third)})).await;
    assert_eq!(counts(&mut alice, "team").await, (0, 0));
    // In a DM, the other party is the member one may mention.
    bob.ok(json!({"op": "send", "to": "alice", "text": "@alice @carol", "cid": "d1"})).await;
    let ev = alice.event(|v| v["ev"] == "msg" && v["room"] == "dm:alice:bob").await;
    assert_eq!(ev["mentions"], json!(["alice"]));
    assert_eq!(counts(&mut alice, "dm:alice:bob").await, (1, 1));
}

async fn a_notification_level_is_each_users_own(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut alice_phone = s.connect(&s.login("alice").await).await;
    let mut bob = s.connected("bob").await;
    let mut carol = s.connected("carol").await;
    alice.join("team").await;
    bob.join("team").await;
    alice.ok(json!({"op": "notify", "room": "team", "level": "mentions"})).await;
    assert_eq!(entry(&mut alice_phone, "team").await["notify"], "mentions", "on every device");
    assert_eq!(entry(&mut bob, "team").await["notify"], "all", "bob's is his own");
    alice.ok(json!({"op": "notify", "room": "team", "level": "none"})).await;
    assert_eq!(entry(&mut alice, "team").await["notify"], "none");
    // Counting goes on whatever the level: the client decides what to badge.
    bob.send("team", "hi", "b1").await;
    assert_eq!(counts(&mut alice, "team").await, (1, 0));

    // Refusals: a level that does not exist, a room one is not in.
    assert_eq!(alice.error(json!({"op": "notify", "room": "team", "level": "loud"})).await, "bad_request");
    assert_eq!(alice.error(json!({"op": "notify", "room": "team"})).await, "bad_request");
    assert_eq!(carol.error(json!({"op": "notify", "room": "team", "level": "none"})).await, "not_member");
    assert_eq!(carol.error(json!({"op": "notify", "room": "dm:alice:bob", "level": "none"})).await, "not_member");
    assert_eq!(entry(&mut alice, "team").await["notify"], "none", "unchanged");
    assert_eq!(entry(&mut bob, "team").await["notify"], "all", "unchanged");
    bob.send("team", "still here", "b2").await;
    alice.event(|v| v["ev"] == "msg" && v["text"] == "still here").await;

    // A new membership starts over.
    bob.ok(json!({"op": "notify", "room": "team", "level": "mentions"})).await;
    bob.ok(json!({"op": "leave", "room": "team"})).await;
    bob.join("team").await;
    assert_eq!(entry(&mut bob, "team").await["notify"], "all");
}

async fn only_admins_set_retention_within_its_range(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    alice.ok(json!({"op": "create", "room": "team"})).await;
    bob.join("team").await;
    let info = alice.ok(json!({"op": "room_info", "room": "team"})).await;
    assert!(info.get("retention_days").is_none(), "forever by default: {info}");
    alice.ok(json!({"op": "update_room", "room": "team", "retention_days": 30})).await;
    let ev = bob.event(|v| v["ev"] == "room").await;
    assert_eq!(ev["retention_days"], 30);
    for attack in [json!(36_501), json!(-1), json!("30"), json!(1.5)] {
        let code = alice.error(json!({"op": "update_room", "room": "team", "retention_days": attack})).await;
        assert_eq!(code, "bad_request", "{attack}");
    }
    assert_eq!(bob.error(json!({"op": "update_room", "room": "team", "retention_days": 1})).await, "forbidden");
    let info = bob.ok(json!({"op": "room_info", "room": "team"})).await;
    assert_eq!(info["retention_days"], 30, "unchanged");
    bob.send("team", "hello", "b1").await;
    alice.event(|v| v["ev"] == "msg" && v["text"] == "hello").await;
    alice.ok(json!({"op": "update_room", "room": "team", "retention_days": 0})).await;
    let info = bob.ok(json!({"op": "room_info", "room": "team"})).await;
    assert!(info.get("retention_days").is_none(), "0: back to the default: {info}");
}

on_every_mode!(
    unread_is_exact_across_seq_gaps_and_leaves_out_ones_own,
    mentions_name_members_only_and_count_until_read,
    a_notification_level_is_each_users_own,
    only_admins_set_retention_within_its_range,
);

/// Waits until `history` of `room` holds exactly these texts.
async fn await_history(c: &mut Client, room: &str, texts: &[&str]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let h = c.ok(json!({"op": "history", "room": room})).await;
        let got: Vec<&str> = h["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
        if got == texts {
            return;
        }
        assert!(Instant::now() < deadline, "history of {room} is {got:?}, not {texts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With one-second "days" (`retention_day_secs`, for tests only), a room
/// that keeps messages one day loses them from `history`, `sync` and the
/// store a second after they were sent; a room without retention keeps its own.
async fn retention_removes_old_messages(s: TestServer) {
    let mut alice = s.connected("alice").await;
    alice.ok(json!({"op": "create", "room": "short"})).await;
    alice.join("long").await;
    alice.ok(json!({"op": "update_room", "room": "short", "retention_days": 1})).await;
    let info = alice.ok(json!({"op": "room_info", "room": "short"})).await;
    assert_eq!(info["retention_days"], 1);
    alice.send("long", "kept", "k1").await;
    let sent = alice.send("short", "fleeting", "f1").await;
    await_history(&mut alice, "short", &[]).await;
    let sync = alice.ok(json!({"op": "sync", "rooms": {"short": 0, "long": 0}})).await;
    assert_eq!(sync["rooms"]["short"]["messages"], json!([]), "{sync}");
    assert_eq!(sync["rooms"]["long"]["messages"][0]["text"], "kept");
    let (status, body) = s.get("/v1/rooms/short/messages", Some(&s.login("alice").await)).await;
    assert_eq!((status, &body["messages"]), (200, &json!([])), "the HTTP history too");
    await_history(&mut alice, "long", &["kept"]).await;
    // The message's cid is forgotten with it; the seq it had is not reused.
    let again = alice.send("short", "again", "f2").await;
    assert!(seq(&again) > seq(&sent));
}

mod retention {
    use super::*;

    const FLAGS: &[&str] = &["--retention-day-secs", "1"];

    #[tokio::test]
    async fn standalone() {
        retention_removes_old_messages(TestServer::start_with_flags(FLAGS).await).await
    }

    #[tokio::test]
    async fn distributed() {
        let test =
            async { retention_removes_old_messages(TestServer::start_cluster_with_roles(FLAGS, FLAGS).await).await };
        tokio::time::timeout(common::CLUSTER_TEST, test).await.expect("the test ends in time")
    }
}
