//! Deleting an account (docs/protocol.md, `DELETE /v1/account`): only with
//! its password; then its sessions end, its name is never handed out again,
//! its messages keep their seq but lose text and author in every room, its
//! rooms pass to an admin or else the oldest member, and its contacts go.

#[macro_use]
mod common;

use common::{Client, TestServer};
use serde_json::{Value, json};

async fn delete_account(s: &TestServer, n: usize, token: &str, password: &str) -> (u16, Value) {
    let url = format!("{}/v1/account", s.https[n % s.https.len()]);
    let r = s.client.delete(url).bearer_auth(token).json(&json!({"password": password})).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn on(s: &TestServer, n: usize, token: &str) -> Client {
    Client::connect(&format!("{}?token={token}", s.gateways[n % s.gateways.len()])).await
}

async fn deletion_needs_the_password_then_ends_sessions_and_retires_the_name(s: TestServer) {
    let token = s.user("alice").await;
    let mut a0 = on(&s, 0, &token).await;
    let mut a1 = on(&s, 1, &token).await;
    let mut bob = s.connected("bob").await;
    a0.ok(json!({"op": "contact_add", "user": "bob"})).await;
    bob.ok(json!({"op": "contact_add", "user": "alice"})).await;

    let (status, body) = delete_account(&s, 0, &token, "wrong-password").await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    a0.ok(json!({"op": "ping"})).await;
    a1.ok(json!({"op": "ping"})).await;
    // A wrong password changes nothing: alice still signs in.
    s.login("alice").await;
    let (status, _) = s.get("/v1/users/alice", Some(&token)).await;
    assert_eq!(status, 200);

    let (status, body) = delete_account(&s, 1, &token, "password-123").await;
    assert_eq!(status, 200, "{body}");
    for c in [&mut a0, &mut a1] {
        let (code, frames) = c.closed().await;
        assert_eq!(code, 1008);
        assert_eq!(frames.last().unwrap(), &json!({"ev": "bye", "reason": "token_revoked"}));
    }
    assert_eq!(bob.event(|e| e["ev"] == "contact" && e["status"] == "none").await["user"], "alice");
    assert_eq!(bob.ok(json!({"op": "contacts"})).await["contacts"], json!([]));

    let creds = json!({"username": "alice", "password": "password-123"});
    assert_eq!(s.post("/v1/auth/login", creds.clone()).await.0, 401);
    let (status, body) = s.post("/v1/auth/register", creds).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("taken")), "the name is never handed out again");
    let bob_token = s.login("bob").await;
    assert_eq!(s.get("/v1/users/alice", Some(&bob_token)).await.0, 404);
    let dm = json!({"op": "send", "to": "alice", "text": "hello?", "cid": "b1"});
    assert_eq!(bob.error(dm).await, "not_found");
    assert_eq!(bob.ok(json!({"op": "users", "users": ["alice", "bob"]})).await["users"].as_array().unwrap().len(), 1);
    bob.ok(json!({"op": "ping"})).await;
}

/// Waits until `c` sees `user` leave `room`.
async fn left(c: &mut Client, room: &str, user: &str) {
    c.event(|e| e["ev"] == "member" && e["room"] == room && e["user"] == user && e["action"] == "leave").await;
}

async fn erased_messages_keep_their_seq_and_lose_text_and_author_for_every_member(s: TestServer) {
    let token = s.user("alice").await;
    let mut alice = s.connect(&token).await;
    let mut bob = s.connected("bob").await;
    alice.join("r").await;
    bob.join("r").await;
    let first = alice.send("r", "mine", "a1").await["seq"].clone();
    let second = bob.send("r", "bob's", "b1").await["seq"].clone();
    let third = alice.send("r", "mine too", "a2").await["seq"].clone();
    let dm = alice.ok(json!({"op": "send", "to": "bob", "text": "secret", "cid": "a3"})).await;
    // An earlier version of alice's text, and reactions by and to her.
    alice.ok(json!({"op": "edit", "room": "r", "seq": first, "text": "mine, edited"})).await;
    alice.ok(json!({"op": "react", "room": "r", "seq": second, "emoji": "🎉"})).await;
    bob.ok(json!({"op": "react", "room": "r", "seq": third, "emoji": "👍"})).await;

    let (status, _) = delete_account(&s, 0, &token, "password-123").await;
    assert_eq!(status, 200);
    left(&mut bob, "r", "alice").await;
    left(&mut bob, "dm:alice:bob", "alice").await;
    // The DM they had ends with her account: nothing more is stored in it.
    assert_eq!(bob.error(json!({"op": "send", "to": "alice", "text": "still there?", "cid": "b3"})).await, "not_found");
    let again = json!({"op": "send", "room": "dm:alice:bob", "text": "hello?", "cid": "b4"});
    assert_eq!(bob.error(again).await, "not_found");

    let history = bob.ok(json!({"op": "history", "room": "r"})).await;
    let seen: Vec<(Value, Value, Value)> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["seq"].clone(), m["from"].clone(), m["text"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (first.clone(), json!(""), json!("")),
            (second.clone(), json!("bob"), json!("bob's")),
            (third.clone(), json!(""), json!(""))
        ]
    );
    // Erased messages read as deleted: no earlier versions, no reactions,
    // and they take no more; alice's reaction to bob's message went too.
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(
        messages.iter().map(|m| m["deleted"].clone()).collect::<Vec<_>>(),
        [json!(true), Value::Null, json!(true)]
    );
    assert!(messages.iter().all(|m| m.get("reactions").is_none() && m.get("edited_ts").is_none()), "{messages:?}");
    let edits = bob.ok(json!({"op": "edits", "room": "r", "seq": first})).await;
    assert_eq!(edits["versions"], json!([]));
    assert_eq!(bob.error(json!({"op": "react", "room": "r", "seq": third, "emoji": "👍"})).await, "not_found");
    let synced = bob.ok(json!({"op": "sync", "rooms": {"r": 0, "dm:alice:bob": 0}})).await;
    let texts: Vec<&Value> = synced["rooms"]["r"]["messages"].as_array().unwrap().iter().map(|m| &m["text"]).collect();
    assert_eq!(texts, [&json!(""), &json!("bob's"), &json!("")]);
    let dm_messages = &synced["rooms"]["dm:alice:bob"]["messages"];
    assert_eq!(dm_messages.as_array().map(Vec::len), Some(1), "{dm_messages}");
    assert_eq!(dm_messages[0]["seq"], dm["seq"]);
    assert_eq!((&dm_messages[0]["from"], &dm_messages[0]["text"]), (&json!(""), &json!("")));
    let (status, body) = s.get("/v1/rooms/r/messages", Some(&s.login("bob").await)).await;
    assert_eq!(status, 200);
    assert_eq!(body["messages"][0]["text"], "");
    let members = bob.ok(json!({"op": "members", "room": "r"})).await;
    assert_eq!(members["members"], json!([{"user": "bob", "role": "owner"}]), "bob, the only one left, owns r");
    bob.send("r", "still here", "b2").await;
}

async fn ownership_passes_to_an_admin_else_to_the_oldest_member(s: TestServer) {
    let token = s.user("alice").await;
    let mut alice = s.connect(&token).await;
    let mut bob = s.connected("bob").await;
    let mut carol = s.connected("carol").await;
    let mut dave = s.connected("dave").await;
    // "staffed": bob joined first, carol later but is an admin.
    alice.ok(json!({"op": "create", "room": "staffed"})).await;
    bob.join("staffed").await;
    carol.join("staffed").await;
    alice.ok(json!({"op": "set_role", "room": "staffed", "user": "carol", "role": "admin"})).await;
    // "plain": no admin; dave joined before bob.
    alice.ok(json!({"op": "create", "room": "plain"})).await;
    dave.join("plain").await;
    bob.join("plain").await;

    let (status, _) = delete_account(&s, 0, &token, "password-123").await;
    assert_eq!(status, 200);
    let heir = bob.event(|e| e["ev"] == "member" && e["room"] == "staffed" && e["role"] == "owner").await;
    assert_eq!((&heir["user"], &heir["role"]), (&json!("carol"), &json!("owner")));
    let heir = bob.event(|e| e["ev"] == "member" && e["room"] == "plain" && e["role"] == "owner").await;
    assert_eq!((&heir["user"], &heir["role"]), (&json!("dave"), &json!("owner")));
    assert_eq!(carol.ok(json!({"op": "room_info", "room": "staffed"})).await["role"], "owner");
    assert_eq!(dave.ok(json!({"op": "room_info", "room": "plain"})).await["role"], "owner");
    assert_eq!(bob.ok(json!({"op": "room_info", "room": "plain"})).await["members"], 2);
    // The new owner rules: dave kicks bob.
    dave.ok(json!({"op": "kick", "room": "plain", "user": "bob"})).await;
}

on_every_mode!(
    deletion_needs_the_password_then_ends_sessions_and_retires_the_name,
    erased_messages_keep_their_seq_and_lose_text_and_author_for_every_member,
    ownership_passes_to_an_admin_else_to_the_oldest_member,
);
