//! Identity mistakes that cross users (issue #13, docs/security.md): each
//! test tries an attack over real WebSocket connections, asserts the
//! refusal, and that the other users' sessions go on as before. Every test
//! runs on a standalone server and on two gateways and two dispatchers.

#[macro_use]
mod common;

use common::TestServer;
use serde_json::json;

async fn a_dm_to_a_name_nobody_holds_is_refused_and_not_inherited(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let to_ghost = json!({"op":"send","room":"dm:alice:ghost","text":"for the ceo","cid":"g1"});
    assert_eq!(alice.error(to_ghost).await, "not_found", "a DM id names an account, as `to` does");
    assert_eq!(alice.error(json!({"op":"send","to":"ghost","text":"x","cid":"g2"})).await, "not_found");
    for req in [
        json!({"op":"history","room":"dm:alice:ghost"}),
        json!({"op":"sync","rooms":{"dm:alice:ghost":0}}),
        json!({"op":"presence","room":"dm:alice:ghost"}),
        json!({"op":"typing","room":"dm:alice:ghost"}),
        json!({"op":"read","room":"dm:alice:ghost","seq":1}),
    ] {
        assert_eq!(alice.error(req.clone()).await, "not_found", "{req}");
    }
    let (status, body) = s.get("/v1/rooms/dm:alice:ghost/messages", Some(&s.login("alice").await)).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")), "{body}");

    // Whoever registers the name later finds nothing addressed to it.
    let mut ghost = s.connected("ghost").await;
    assert_eq!(ghost.ok(json!({"op":"rooms"})).await["rooms"], json!([]));
    let h = ghost.ok(json!({"op":"history","room":"dm:alice:ghost"})).await;
    assert_eq!(h["messages"], json!([]), "the refused DM was never stored");

    // The others' DMs go on as before.
    let sent = alice.ok(json!({"op":"send","room":"dm:alice:bob","text":"still here","cid":"b1"})).await;
    let ev = bob.event(|e| e["ev"] == "msg" && e["room"] == "dm:alice:bob").await;
    assert_eq!((&ev["seq"], &ev["text"]), (&sent["seq"], &json!("still here")));
}

async fn presence_on_a_dm_needs_its_first_message(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let mut carol = s.connected("carol").await;
    // Naming a DM id with someone does not tell whether they are online.
    let ask = json!({"op":"presence","room":"dm:alice:bob"});
    assert_eq!(alice.error(ask.clone()).await, "not_member");
    assert_eq!(carol.error(json!({"op":"presence","room":"dm:bob:carol"})).await, "not_member");
    // Reading the not-yet-written DM stays an empty page.
    assert_eq!(alice.ok(json!({"op":"history","room":"dm:alice:bob"})).await["messages"], json!([]));

    alice.ok(json!({"op":"send","to":"bob","text":"hi","cid":"p1"})).await;
    bob.event(|e| e["ev"] == "msg" && e["room"] == "dm:alice:bob").await;
    // The DM exists from its first message. (Each asks the gateway it is
    // on; whether the other party shows up yet depends on announcements,
    // which the presence tests in messaging.rs cover.)
    for (c, me) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        let online = c.ok(ask.clone()).await;
        assert!(online["online"].as_array().unwrap().contains(&json!(me)), "{online}");
    }
    assert_eq!(carol.error(ask).await, "not_member", "a third user learns nothing");
}

on_every_mode!(a_dm_to_a_name_nobody_holds_is_refused_and_not_inherited, presence_on_a_dm_needs_its_first_message);
