//! Contacts and blocks (docs/protocol.md, "Accounts: contacts and blocks"):
//! requests seen live, mutual contacts sharing presence without a room,
//! and blocks that stop a user's DMs, typing and presence from reaching the
//! blocker while everyone else's flow.

#[macro_use]
mod common;

use common::{Client, TestServer};
use serde_json::{Value, json};

/// The limits these tests run with.
const MAX_CONTACTS: usize = 3;
const MAX_BLOCKS: usize = 2;

/// A session of `name` (registered already) on gateway `n` of the server.
async fn on(s: &TestServer, n: usize, token: &str) -> Client {
    Client::connect(&format!("{}?token={token}", s.gateways[n % s.gateways.len()])).await
}

fn contact(user: &str, status: &str) -> Value {
    json!({"ev": "contact", "user": user, "status": status})
}

async fn contacts(c: &mut Client) -> Value {
    c.ok(json!({"op": "contacts"})).await["contacts"].clone()
}

async fn a_contact_request_is_seen_live_and_accepting_makes_it_mutual(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let r = alice.ok(json!({"op": "contact_add", "user": "bob"})).await;
    assert_eq!((&r["user"], &r["status"]), (&json!("bob"), &json!("pending_out")));
    assert_eq!(bob.next_event("contact").await, contact("alice", "pending_in"));
    assert_eq!(alice.next_event("contact").await, contact("bob", "pending_out"), "the asker's devices too");
    assert_eq!(contacts(&mut bob).await, json!([{"user": "alice", "status": "pending_in", "online": false}]));

    let r = bob.ok(json!({"op": "contact_add", "user": "alice"})).await;
    assert_eq!(r["status"], "mutual");
    assert_eq!(alice.next_event("contact").await, contact("bob", "mutual"));
    assert_eq!(contacts(&mut alice).await, json!([{"user": "bob", "status": "mutual", "online": true}]));
    // Asking again changes nothing.
    assert_eq!(alice.ok(json!({"op": "contact_add", "user": "bob"})).await["status"], "mutual");

    bob.ok(json!({"op": "contact_remove", "user": "alice"})).await;
    assert_eq!(alice.next_event("contact").await, contact("bob", "none"));
    assert_eq!(contacts(&mut alice).await, json!([]));
    assert_eq!(contacts(&mut bob).await, json!([]));
}

async fn contacts_refuse_self_unknown_users_and_too_many(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut others = Vec::new();
    for name in ["bob", "carol", "dave", "erin"] {
        others.push(s.connected(name).await);
    }
    assert_eq!(alice.error(json!({"op": "contact_add", "user": "alice"})).await, "bad_request");
    assert_eq!(alice.error(json!({"op": "contact_add", "user": "nobody"})).await, "not_found");
    assert_eq!(alice.error(json!({"op": "contact_add", "user": "Not A Name"})).await, "bad_request");
    for name in ["bob", "carol", "dave"] {
        alice.ok(json!({"op": "contact_add", "user": name})).await;
    }
    assert_eq!(MAX_CONTACTS, 3);
    assert_eq!(alice.error(json!({"op": "contact_add", "user": "erin"})).await, "forbidden");
    // Alice is full both ways: erin's request is refused too.
    let erin = &mut others[3];
    assert_eq!(erin.error(json!({"op": "contact_add", "user": "alice"})).await, "forbidden");
    // Accepting an existing request is not a new relation.
    let bob = &mut others[0];
    assert_eq!(bob.ok(json!({"op": "contact_add", "user": "alice"})).await["status"], "mutual");
    // Others are unaffected: erin and bob befriend each other.
    let erin_asks = others[3].ok(json!({"op": "contact_add", "user": "bob"})).await;
    assert_eq!(erin_asks["status"], "pending_out");
    assert_eq!(contacts(&mut alice).await.as_array().unwrap().len(), 3);
}

async fn mutual_contacts_see_each_other_come_and_go_without_sharing_a_room(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let bob_token = s.user("bob").await;
    let mut bob = on(&s, 1, &bob_token).await;
    alice.ok(json!({"op": "contact_add", "user": "bob"})).await;
    bob.ok(json!({"op": "contact_add", "user": "alice"})).await;
    assert_eq!(alice.event(|e| e == &contact("bob", "mutual")).await, contact("bob", "mutual"));
    assert_eq!(alice.ok(json!({"op": "rooms"})).await["rooms"], json!([]), "no room is shared");

    drop(bob);
    let offline = json!({"ev": "presence", "user": "bob", "online": false});
    assert_eq!(alice.event(|e| e["ev"] == "presence").await, offline);
    let _bob = on(&s, 1, &bob_token).await;
    let online = json!({"ev": "presence", "user": "bob", "online": true});
    assert_eq!(alice.event(|e| e["ev"] == "presence").await, online);
    assert_eq!(contacts(&mut alice).await, json!([{"user": "bob", "status": "mutual", "online": true}]));
}

async fn a_blocked_users_dms_are_forbidden_while_other_dms_flow(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let mut mallory = s.connected("mallory").await;
    let dm = |to: &str, cid: &str| json!({"op": "send", "to": to, "text": "hi", "cid": cid});
    mallory.ok(dm("alice", "m1")).await;
    alice.ok(json!({"op": "block", "user": "mallory"})).await;
    assert_eq!(alice.ok(json!({"op": "blocks"})).await["blocked"], json!(["mallory"]));

    assert_eq!(mallory.error(dm("alice", "m2")).await, "forbidden");
    let by_id = json!({"op": "send", "room": "dm:alice:mallory", "text": "hi", "cid": "m3"});
    assert_eq!(mallory.error(by_id).await, "forbidden", "by the DM's id too");
    // Every other DM flows: mallory's to bob, bob's to alice, alice's to bob.
    mallory.ok(dm("bob", "m4")).await;
    bob.ok(dm("alice", "b1")).await;
    alice.ok(dm("bob", "a1")).await;
    let history = alice.ok(json!({"op": "history", "room": "dm:alice:mallory"})).await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1, "nothing from mallory after the block");

    assert_eq!(alice.error(json!({"op": "block", "user": "alice"})).await, "bad_request");
    assert_eq!(alice.error(json!({"op": "block", "user": "nobody"})).await, "not_found");
    alice.ok(json!({"op": "block", "user": "bob"})).await;
    assert_eq!(MAX_BLOCKS, 2);
    let _carol = s.connected("carol").await;
    assert_eq!(alice.error(json!({"op": "block", "user": "carol"})).await, "forbidden");
    alice.ok(json!({"op": "unblock", "user": "bob"})).await;
    alice.ok(json!({"op": "unblock", "user": "mallory"})).await;
    assert_eq!(alice.ok(json!({"op": "blocks"})).await["blocked"], json!([]));
    mallory.ok(dm("alice", "m5")).await;
}

/// A block covers what reaches the blocker through an old message too:
/// mallory can neither edit her DM into alice's view nor react in it (she
/// may still delete her own message), while bob's edits and reactions in
/// his DM with alice flow.
async fn a_blocked_user_cannot_edit_or_react_in_the_dm(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let mut mallory = s.connected("mallory").await;
    let dm = |to: &str, text: &str, cid: &str| json!({"op": "send", "to": to, "text": text, "cid": cid});
    let hers = mallory.ok(dm("alice", "harmless", "m1")).await["seq"].clone();
    let deleted = mallory.ok(dm("alice", "also mine", "m2")).await["seq"].clone();
    let alices = alice.ok(dm("mallory", "hello", "a1")).await["seq"].clone();
    let bobs = bob.ok(dm("alice", "from bob", "b1")).await["seq"].clone();
    alice.ok(json!({"op": "block", "user": "mallory"})).await;
    alice.take_events();

    let room = "dm:alice:mallory";
    let edit = json!({"op": "edit", "room": room, "seq": hers, "text": "something nasty"});
    assert_eq!(mallory.error(edit).await, "forbidden", "no edit into alice's view");
    for seq in [&hers, &alices] {
        let react = json!({"op": "react", "room": room, "seq": seq, "emoji": "👎"});
        assert_eq!(mallory.error(react).await, "forbidden", "no reaction in the DM");
    }
    mallory.ok(json!({"op": "delete", "room": room, "seq": deleted})).await;

    // Bob, untouched, edits and reacts in his DM with alice, and she sees it.
    let bob_room = "dm:alice:bob";
    bob.ok(json!({"op": "edit", "room": bob_room, "seq": bobs, "text": "from bob, edited"})).await;
    bob.ok(json!({"op": "react", "room": bob_room, "seq": bobs, "emoji": "👍"})).await;
    assert_eq!(alice.event(|e| e["ev"] == "delete" && e["room"] == room).await["seq"], deleted);
    alice.event(|e| e["ev"] == "react" && e["room"] == bob_room).await;
    let seen: Vec<Value> = alice.take_events();
    assert!(
        !seen.iter().any(|e| e["room"] == room && (e["ev"] == "edit" || e["ev"] == "react")),
        "nothing of mallory's edit or reactions reached alice: {seen:?}"
    );
    let history = alice.ok(json!({"op": "history", "room": room})).await;
    let messages = history["messages"].as_array().unwrap();
    let first = messages.iter().find(|m| m["seq"] == hers).unwrap();
    assert_eq!(first["text"], "harmless");
    assert!(first.get("edited_ts").is_none() && first.get("reactions").is_none(), "{first}");
    let mine = messages.iter().find(|m| m["seq"] == alices).unwrap();
    assert!(mine.get("reactions").is_none(), "{mine}");
    let bob_history = alice.ok(json!({"op": "history", "room": bob_room})).await;
    let edited = &bob_history["messages"][0];
    assert_eq!((&edited["text"], &edited["reactions"][0]["emoji"]), (&json!("from bob, edited"), &json!("👍")));
}

async fn a_blocked_users_typing_and_presence_do_not_reach_the_blocker(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    // Mallory and carol on one gateway: their comings and goings are
    // announced in order.
    let (mallory_token, carol_token) = (s.user("mallory").await, s.user("carol").await);
    let mut mallory = on(&s, 0, &mallory_token).await;
    let mut carol = on(&s, 0, &carol_token).await;
    for c in [&mut alice, &mut bob, &mut mallory, &mut carol] {
        c.join("r").await;
    }
    alice.ok(json!({"op": "contact_add", "user": "mallory"})).await;
    mallory.ok(json!({"op": "contact_add", "user": "alice"})).await;
    alice.ok(json!({"op": "block", "user": "mallory"})).await;
    assert_eq!(mallory.event(|e| e["ev"] == "contact" && e["status"] == "none").await, contact("alice", "none"));
    assert_eq!(contacts(&mut alice).await, json!([]), "a block ends the contact relation");
    assert_eq!(mallory.error(json!({"op": "contact_add", "user": "alice"})).await, "forbidden");

    let online = alice.ok(json!({"op": "presence", "room": "r"})).await["online"].clone();
    assert!(!online.as_array().unwrap().contains(&json!("mallory")), "{online}");
    let online = bob.ok(json!({"op": "presence", "room": "r"})).await["online"].clone();
    assert!(online.as_array().unwrap().contains(&json!("mallory")), "{online}");

    // Mallory types, then bob: alice hears bob only; bob hears mallory.
    mallory.ok(json!({"op": "typing", "room": "r"})).await;
    assert_eq!(bob.next_event("typing").await["user"], "mallory");
    bob.ok(json!({"op": "typing", "room": "r"})).await;
    assert_eq!(alice.next_event("typing").await["user"], "bob");

    // Mallory leaves, then carol: alice hears of carol only.
    drop(mallory);
    let gone = bob.event(|e| e["ev"] == "presence" && e["online"] == false).await;
    assert_eq!(gone["user"], "mallory");
    drop(carol);
    let gone = alice.event(|e| e["ev"] == "presence").await;
    assert_eq!(gone, json!({"ev": "presence", "user": "carol", "online": false}));
}

/// Runs each test on both modes with the limits above.
macro_rules! with_limits {
    ($($name:ident),* $(,)?) => {
        mod standalone {
            $(
                #[tokio::test]
                async fn $name() {
                    let (c, b) = (super::MAX_CONTACTS.to_string(), super::MAX_BLOCKS.to_string());
                    let flags = ["--max-contacts", c.as_str(), "--max-blocks", b.as_str()];
                    super::$name(super::TestServer::start_with_flags(&flags).await).await
                }
            )*
        }
        mod distributed {
            $(
                #[tokio::test]
                async fn $name() {
                    let (c, b) = (super::MAX_CONTACTS.to_string(), super::MAX_BLOCKS.to_string());
                    let flags = ["--max-contacts", c.as_str(), "--max-blocks", b.as_str()];
                    let test = async { super::$name(super::TestServer::start_cluster_with(&flags).await).await };
                    tokio::time::timeout(crate::common::CLUSTER_TEST, test).await.expect("the test ends in time")
                }
            )*
        }
    };
}

with_limits!(
    a_contact_request_is_seen_live_and_accepting_makes_it_mutual,
    contacts_refuse_self_unknown_users_and_too_many,
    mutual_contacts_see_each_other_come_and_go_without_sharing_a_room,
    a_blocked_users_dms_are_forbidden_while_other_dms_flow,
    a_blocked_user_cannot_edit_or_react_in_the_dm,
    a_blocked_users_typing_and_presence_do_not_reach_the_blocker,
);
