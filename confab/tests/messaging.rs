//! Rooms, messages, DMs, dedupe, history, sync and read markers, over real
//! WebSocket connections to a real server (PROTOCOL.md: Requests and replies, Events),
//! and again over its raw TCP listener (`on_every_mode_and_tcp!`).

#[macro_use]
mod common;

use common::TestServer;
use futures_util::StreamExt;
use serde_json::{Value, json};

fn seqs(messages: &Value) -> Vec<u64> {
    messages.as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

fn texts(messages: &Value) -> Vec<String> {
    messages.as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap().to_owned()).collect()
}

async fn joining_creates_the_room_and_tells_every_member(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let r = alice.join("general").await;
    assert_eq!(r["room"], "general");
    assert_eq!(r["last_seq"], 0, "a new room has no message");
    assert_eq!(
        alice.next_event("member").await,
        json!({"ev":"member","room":"general","user":"alice","action":"join"})
    );
    bob.join("general").await;
    let joined = json!({"ev":"member","room":"general","user":"bob","action":"join"});
    assert_eq!(bob.next_event("member").await, joined);
    assert_eq!(alice.next_event("member").await, joined);
    let again = alice.join("general").await;
    assert_eq!(again["room"], "general", "joining twice is fine");
}

async fn a_message_reaches_every_session_of_every_member_once(s: TestServer) {
    let alice_token = s.user("alice").await;
    let mut phone = s.connect(&alice_token).await;
    let mut laptop = s.connect(&alice_token).await;
    let mut bob = s.connected("bob").await;
    let mut carol = s.connected("carol").await;
    phone.join("r").await;
    bob.join("r").await;
    let first = phone.send("r", "hello", "c-1").await;
    let seq = first["seq"].as_u64().unwrap();
    assert!(seq > 0);
    assert_eq!(first["room"], "r");
    assert!(first["msg_id"].is_string() && first["ts"].as_u64().unwrap() > 1_600_000_000_000);
    for c in [&mut phone, &mut laptop, &mut bob] {
        let ev = c.next_event("msg").await;
        assert_eq!(ev["room"], "r");
        assert_eq!(ev["seq"], seq);
        assert_eq!(ev["msg_id"], first["msg_id"]);
        assert_eq!(ev["from"], "alice");
        assert_eq!(ev["text"], "hello");
        assert_eq!(ev["cid"], "c-1");
        assert_eq!(ev["ts"], first["ts"]);
        assert_eq!(ev["prev_seq"], 0, "the first message of the room");
    }
    let second = bob.send("r", "hi alice", "b-1").await;
    let second_seq = second["seq"].as_u64().unwrap();
    assert!(second_seq > seq, "seqs increase");
    let ev = laptop.next_event("msg").await;
    assert_eq!((ev["seq"].as_u64(), ev["prev_seq"].as_u64()), (Some(second_seq), Some(seq)));
    // carol is not a member: the first thing she hears is her own join.
    carol.join("elsewhere").await;
    assert_eq!(carol.next_any_event().await["ev"], "member");
    assert_eq!(carol.error(json!({"op":"send","room":"r","text":"x","cid":"x"})).await, "not_member");
}

async fn a_resent_cid_returns_the_first_message_and_stores_nothing_new(s: TestServer) {
    let mut alice = s.connected("alice").await;
    alice.join("r").await;
    let first = alice.send("r", "once", "same-cid").await;
    let again = alice.send("r", "once, again", "same-cid").await;
    assert_eq!((&again["seq"], &again["msg_id"]), (&first["seq"], &first["msg_id"]));
    let h = alice.ok(json!({"op":"history","room":"r"})).await;
    assert_eq!(texts(&h["messages"]), ["once"]);
    // The same cid in another room is another message.
    alice.join("s").await;
    let other = alice.send("s", "other room", "same-cid").await;
    assert_ne!(other["msg_id"], first["msg_id"]);
}

async fn another_members_cid_never_swallows_a_message(s: TestServer) {
    // A member who guesses (or copies) another's cid must not make that
    // member's message be answered as a duplicate and never stored.
    let mut alice = s.connected("alice").await;
    let mut mallory = s.connected("mallory").await;
    alice.join("r").await;
    mallory.join("r").await;
    let planted = mallory.send("r", "first with this cid", "m-1").await;
    let mine = alice.send("r", "mine", "m-1").await;
    assert_ne!(mine["seq"], planted["seq"], "alice's message is her own: {mine}");
    let h = alice.ok(json!({"op":"history","room":"r"})).await;
    assert_eq!(texts(&h["messages"]), ["first with this cid", "mine"]);
    // Alice's own retry is still deduplicated.
    let again = alice.send("r", "mine", "m-1").await;
    assert_eq!(again["seq"], mine["seq"]);
}

async fn direct_messages_make_a_room_for_the_two_users(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let mut carol = s.connected("carol").await;
    let r = alice.ok(json!({"op":"send","to":"bob","text":"psst","cid":"d1"})).await;
    assert_eq!(r["room"], "dm:alice:bob");
    let ev = bob.next_event("msg").await;
    assert_eq!(
        (ev["room"].as_str(), ev["text"].as_str(), ev["from"].as_str()),
        (Some("dm:alice:bob"), Some("psst"), Some("alice"))
    );
    assert_eq!(alice.next_event("msg").await["text"], "psst", "the sender's sessions get it too");
    let reply = bob.ok(json!({"op":"send","room":"dm:alice:bob","text":"yes?","cid":"d2"})).await;
    assert_eq!(alice.next_event("msg").await["seq"], reply["seq"]);
    for c in [&mut alice, &mut bob] {
        let rooms = c.ok(json!({"op":"rooms"})).await;
        let names: Vec<&str> = rooms["rooms"].as_array().unwrap().iter().map(|r| r["room"].as_str().unwrap()).collect();
        assert_eq!(names, ["dm:alice:bob"]);
        let h = c.ok(json!({"op":"history","room":"dm:alice:bob"})).await;
        assert_eq!(texts(&h["messages"]), ["psst", "yes?"]);
    }
    assert_eq!(carol.error(json!({"op":"history","room":"dm:alice:bob"})).await, "not_member");
    assert_eq!(carol.error(json!({"op":"send","room":"dm:alice:bob","text":"hi","cid":"c"})).await, "not_member");
    assert_eq!(alice.error(json!({"op":"send","to":"nobody","text":"hi","cid":"c"})).await, "not_found");
    assert_eq!(alice.error(json!({"op":"send","to":"alice","text":"hi","cid":"c"})).await, "bad_request");
    assert_eq!(alice.error(json!({"op":"join","room":"dm:alice:bob"})).await, "bad_request");
    assert_eq!(alice.error(json!({"op":"leave","room":"dm:alice:bob"})).await, "bad_request");
    // A DM of two users who have not written yet is empty, not forbidden.
    let h = carol.ok(json!({"op":"history","room":"dm:alice:carol"})).await;
    assert_eq!(h["messages"], json!([]));
}

async fn send_validates_its_fields(s: TestServer) {
    let mut alice = s.connected("alice").await;
    alice.join("r").await;
    let cases = [
        (json!({"op":"send","room":"r","text":"","cid":"c"}), "bad_request"),
        (json!({"op":"send","room":"r","text":"x".repeat(4097),"cid":"c"}), "too_large"),
        (json!({"op":"send","room":"r","text":"x","cid":""}), "bad_request"),
        (json!({"op":"send","room":"r","text":"x","cid":"has space"}), "bad_request"),
        (json!({"op":"send","room":"r","text":"x","cid":"c".repeat(65)}), "bad_request"),
        (json!({"op":"send","room":"r","to":"bob","text":"x","cid":"c"}), "bad_request"),
        (json!({"op":"send","text":"x","cid":"c"}), "bad_request"),
        (json!({"op":"send","room":"r","text":"x"}), "bad_request"),
        (json!({"op":"send","room":"no such room!","text":"x","cid":"c"}), "bad_request"),
        (json!({"op":"send","room":"never-joined","text":"x","cid":"c"}), "not_member"),
    ];
    for (req, code) in cases {
        assert_eq!(alice.error(req.clone()).await, code, "{req}");
    }
    let max = alice.send("r", &"é".repeat(2048), "max").await;
    assert!(max["seq"].as_u64().is_some(), "4096 bytes is allowed");
}

async fn history_pages_backwards_oldest_first(s: TestServer) {
    let mut alice = s.connected("alice").await;
    alice.join("r").await;
    let mut sent = Vec::new();
    for i in 1..=7 {
        sent.push(alice.send("r", &format!("m{i}"), &format!("c{i}")).await["seq"].as_u64().unwrap());
    }
    let page = alice.ok(json!({"op":"history","room":"r","limit":3})).await;
    assert_eq!(seqs(&page["messages"]), sent[4..]);
    let page = alice.ok(json!({"op":"history","room":"r","limit":3,"before":sent[4]})).await;
    assert_eq!(seqs(&page["messages"]), sent[1..4]);
    let page = alice.ok(json!({"op":"history","room":"r","before":sent[1]})).await;
    assert_eq!(seqs(&page["messages"]), sent[..1]);
    let all = alice.ok(json!({"op":"history","room":"r"})).await;
    assert_eq!(seqs(&all["messages"]), sent);
    let m = &all["messages"][0];
    for field in ["room", "seq", "msg_id", "from", "text", "ts", "cid"] {
        assert!(!m[field].is_null(), "message has {field}: {m}");
    }
    assert_eq!(alice.error(json!({"op":"history","room":"r","limit":0})).await, "bad_request");
    assert_eq!(alice.error(json!({"op":"history","room":"r","limit":101})).await, "bad_request");
    assert_eq!(alice.error(json!({"op":"history","room":"other"})).await, "not_member");
}

async fn sync_returns_what_was_missed_and_says_when_more_remain(s: TestServer) {
    let mut alice = s.connected("alice").await;
    alice.join("a").await;
    alice.join("b").await;
    let mut a = Vec::new();
    for i in 1..=5 {
        a.push(alice.send("a", &format!("a{i}"), &format!("a{i}")).await["seq"].as_u64().unwrap());
    }
    let b1 = alice.send("b", "b1", "b1").await["seq"].as_u64().unwrap();
    let r = alice.ok(json!({"op":"sync","rooms":{"a": a[1], "b": 0},"limit":2})).await;
    assert_eq!(seqs(&r["rooms"]["a"]["messages"]), a[2..4]);
    assert_eq!(r["rooms"]["a"]["more"], true);
    assert_eq!(seqs(&r["rooms"]["b"]["messages"]), [b1]);
    assert_eq!(r["rooms"]["b"]["more"], false);
    let r = alice.ok(json!({"op":"sync","rooms":{"a": a[3]}})).await;
    assert_eq!(seqs(&r["rooms"]["a"]["messages"]), a[4..]);
    assert_eq!(r["rooms"]["a"]["more"], false);
    assert_eq!(alice.error(json!({"op":"sync","rooms":{"nope": 0}})).await, "not_member");
    assert_eq!(alice.error(json!({"op":"sync","rooms":{"a": "x"}})).await, "bad_request");
}

async fn read_markers_move_forward_only_and_are_told_to_members(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    alice.join("r").await;
    bob.join("r").await;
    let mut sent = Vec::new();
    for i in 1..=3 {
        sent.push(alice.send("r", "m", &format!("c{i}")).await["seq"].as_u64().unwrap());
    }
    bob.ok(json!({"op":"read","room":"r","seq":sent[2]})).await;
    assert_eq!(alice.next_event("read").await, json!({"ev":"read","room":"r","user":"bob","seq":sent[2]}));
    bob.ok(json!({"op":"read","room":"r","seq":sent[0]})).await;
    let rooms = bob.ok(json!({"op":"rooms"})).await;
    assert_eq!(
        rooms["rooms"],
        json!([{"room":"r","last_seq":sent[2],"read_seq":sent[2],"unread":0,"mentions":0,"notify":"all"}])
    );
    let rooms = alice.ok(json!({"op":"rooms"})).await;
    assert_eq!(
        rooms["rooms"],
        json!([{"room":"r","last_seq":sent[2],"read_seq":0,"unread":0,"mentions":0,"notify":"all"}])
    );
    assert_eq!(bob.error(json!({"op":"read","room":"elsewhere","seq":1})).await, "not_member");
}

async fn typing_reaches_the_other_members_only(s: TestServer) {
    let alice_token = s.user("alice").await;
    let mut alice = s.connect(&alice_token).await;
    let mut alice_laptop = s.connect(&alice_token).await;
    let mut bob = s.connected("bob").await;
    alice.join("r").await;
    bob.join("r").await;
    alice.ok(json!({"op":"typing","room":"r"})).await;
    assert_eq!(bob.next_event("typing").await, json!({"ev":"typing","room":"r","user":"alice"}));
    // Events of a room arrive in order: if the laptop had been sent the
    // typing event, it would come before this message.
    bob.send("r", "after typing", "b1").await;
    loop {
        let ev = alice_laptop.next_any_event().await;
        assert_ne!(ev["ev"], "typing", "the typist's own sessions are not told");
        if ev["ev"] == "msg" {
            break;
        }
    }
    assert_eq!(bob.error(json!({"op":"typing","room":"nowhere"})).await, "not_member");
}

async fn leaving_tells_the_members_and_ends_membership(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    alice.join("r").await;
    bob.join("r").await;
    bob.ok(json!({"op":"leave","room":"r"})).await;
    let left = json!({"ev":"member","room":"r","user":"bob","action":"leave"});
    assert_eq!(bob.event(|e| e["action"] == "leave").await, left);
    assert_eq!(alice.event(|e| e["action"] == "leave").await, left);
    assert_eq!(bob.error(json!({"op":"send","room":"r","text":"x","cid":"c"})).await, "not_member");
    assert_eq!(bob.ok(json!({"op":"rooms"})).await["rooms"], json!([]));
    assert_eq!(bob.error(json!({"op":"leave","room":"r"})).await, "not_member");
    // Bob hears nothing more from the room: by the time his own join of
    // another room reaches him, alice's message to "r" would have too.
    alice.send("r", "bye bob", "a1").await;
    // A room in the same partition as "r" (standalone's 8 or a cluster's 4),
    // so its events come after those of "r" on every path.
    let same = |o: &String, n| confab_bus::partition_for(o, n) == confab_bus::partition_for("r", n);
    let other = (0..).map(|i| format!("other-{i}")).find(|o| same(o, 8) && same(o, 4)).unwrap();
    bob.join(&other).await;
    bob.event(|e| e["room"] == other.as_str()).await;
    assert!(bob.take_events().iter().all(|e| e["ev"] != "msg"), "no message after leaving");
}

async fn presence_tells_who_is_online_and_follows_sessions(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let bob_token = s.user("bob").await;
    let mut bob = s.connect(&bob_token).await;
    alice.join("r").await;
    bob.join("r").await;
    let online = alice.ok(json!({"op":"presence","room":"r"})).await;
    let mut names: Vec<String> = serde_json::from_value(online["online"].clone()).unwrap();
    names.sort();
    assert_eq!(names, ["alice", "bob"]);
    bob.ws.close(None).await.unwrap();
    assert_eq!(alice.event(|e| e["ev"] == "presence").await, json!({"ev":"presence","user":"bob","online":false}));
    let online = alice.ok(json!({"op":"presence","room":"r"})).await;
    assert_eq!(online["online"], json!(["alice"]));
    let _bob = s.connect(&bob_token).await;
    assert_eq!(alice.event(|e| e["ev"] == "presence").await, json!({"ev":"presence","user":"bob","online":true}));
    assert_eq!(alice.error(json!({"op":"presence","room":"nowhere"})).await, "not_member");
}

async fn rooms_lists_every_room_with_last_and_read_seqs(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let _bob = s.connected("bob").await;
    alice.join("a").await;
    alice.join("b").await;
    let seq = alice.send("b", "x", "c").await["seq"].clone();
    let dm = alice.ok(json!({"op":"send","to":"bob","text":"x","cid":"c"})).await["seq"].clone();
    let mut rooms = alice.ok(json!({"op":"rooms"})).await["rooms"].as_array().unwrap().clone();
    rooms.sort_by_key(|r| r["room"].as_str().unwrap().to_owned());
    assert_eq!(
        rooms,
        [
            json!({"room":"a","last_seq":0,"read_seq":0,"unread":0,"mentions":0,"notify":"all"}),
            json!({"room":"b","last_seq":seq,"read_seq":0,"unread":0,"mentions":0,"notify":"all"}),
            json!({"room":"dm:alice:bob","last_seq":dm,"read_seq":0,"unread":0,"mentions":0,"notify":"all"}),
        ]
    );
}

async fn hello_comes_first_even_when_reconnecting_into_busy_rooms(s: TestServer) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let rooms: Vec<String> = (0..16).map(|i| format!("busy-{i}")).collect();
    let alice_token = s.user("alice").await;
    let mut alice = s.connect(&alice_token).await;
    for room in &rooms {
        alice.join(room).await;
    }
    alice.ws.close(None).await.unwrap();
    // Bob's sessions keep every room of alice's busy, each within its rate
    // limit, while alice reconnects.
    let bob_token = s.user("bob").await;
    let busy = Arc::new(AtomicBool::new(true));
    let mut bobs = Vec::new();
    for i in 0..4 {
        let mut bob = s.connect(&bob_token).await;
        for room in &rooms {
            bob.join(room).await;
        }
        let (rooms, busy) = (rooms.clone(), busy.clone());
        bobs.push(tokio::spawn(async move {
            let mut pace = tokio::time::interval(std::time::Duration::from_millis(60));
            let mut n = 0;
            while busy.load(Ordering::Relaxed) {
                pace.tick().await;
                n += 1;
                let room = &rooms[n % rooms.len()];
                let req = if n % 4 == 0 {
                    json!({"op": "send", "room": room, "text": "busy", "cid": format!("b{i}-{n}")})
                } else {
                    json!({"op": "typing", "room": room})
                };
                assert_eq!(bob.request(req).await["ok"], true);
                bob.take_events();
            }
        }));
    }
    for _ in 0..40 {
        // `connect` fails unless the first frame is `hello`.
        let mut alice = s.connect(&alice_token).await;
        alice.event(|e| e["ev"] == "typing" || e["ev"] == "msg").await;
        alice.ws.close(None).await.unwrap();
        while let Ok(Some(Ok(_))) = tokio::time::timeout(common::PATIENCE, alice.ws.next()).await {}
    }
    busy.store(false, Ordering::Relaxed);
    for bob in bobs {
        bob.await.unwrap();
    }
}

#[tokio::test]
async fn a_page_of_large_messages_fits_in_one_reply() {
    let s = TestServer::start_with(|c| c.server.rate_burst = 1000).await;
    let mut alice = s.connected("alice").await;
    alice.join("r").await;
    let text = "y".repeat(4096);
    for i in 0..100 {
        alice.send("r", &text, &format!("c{i}")).await;
    }
    let page = alice.ok(json!({"op":"history","room":"r","limit":100})).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 100, "a reply of over 400 KB arrives whole");
    let synced = alice.ok(json!({"op":"sync","rooms":{"r": 0},"limit":100})).await;
    assert_eq!(synced["rooms"]["r"]["messages"].as_array().unwrap().len(), 100);
}

on_every_mode_and_tcp!(
    joining_creates_the_room_and_tells_every_member,
    a_message_reaches_every_session_of_every_member_once,
    a_resent_cid_returns_the_first_message_and_stores_nothing_new,
    another_members_cid_never_swallows_a_message,
    direct_messages_make_a_room_for_the_two_users,
    send_validates_its_fields,
    history_pages_backwards_oldest_first,
    sync_returns_what_was_missed_and_says_when_more_remain,
    read_markers_move_forward_only_and_are_told_to_members,
    typing_reaches_the_other_members_only,
    leaving_tells_the_members_and_ends_membership,
    presence_tells_who_is_online_and_follows_sessions,
    rooms_lists_every_room_with_last_and_read_seqs,
    hello_comes_first_even_when_reconnecting_into_busy_rooms,
);
