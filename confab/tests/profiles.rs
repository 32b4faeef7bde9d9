//! Profiles (docs/protocol.md, "Accounts: profiles"): `profile`, `users` and
//! `GET /v1/users/{user}`, standalone and on the two-gateway,
//! two-dispatcher cluster. Every refusal is tried and shown to change nothing.

#[macro_use]
mod common;

use common::TestServer;
use serde_json::{Value, json};

/// `GET path` on gateway `n` of the server (the one gateway when standalone).
async fn get_on(s: &TestServer, n: usize, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = s.client.get(format!("{}{path}", s.https[n % s.https.len()]));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn a_profile_is_set_by_its_user_and_read_by_anyone(s: TestServer) {
    let alice_token = s.user("alice").await;
    let mut alice = s.connect(&alice_token).await;
    let bob_token = s.user("bob").await;
    let mut bob = s.connect(&bob_token).await;

    // Unset fields are empty strings.
    let before = bob.ok(json!({"op":"users","users":["alice"]})).await;
    assert_eq!(before["users"], json!([{"user":"alice","display_name":"","avatar":""}]));

    let r = alice.ok(json!({"op":"profile","display_name":"Alice Liddell ✨"})).await;
    assert_eq!(
        (&r["user"], &r["display_name"], &r["avatar"]),
        (&json!("alice"), &json!("Alice Liddell ✨"), &json!(""))
    );
    // A field left out stays as it was.
    let r = alice.ok(json!({"op":"profile","avatar":"https://example.com/alice.png"})).await;
    assert_eq!(r["display_name"], "Alice Liddell ✨");
    let alice_profile =
        json!({"user":"alice","display_name":"Alice Liddell ✨","avatar":"https://example.com/alice.png"});

    // Bob (on the other gateway of a cluster) reads it, in the order asked,
    // each user once, without the names that have no account.
    let r = bob.ok(json!({"op":"users","users":["bob","nobody","alice","bob"]})).await;
    assert_eq!(r["users"], json!([{"user":"bob","display_name":"","avatar":""}, alice_profile]));
    // And over HTTP, on every gateway.
    for n in 0..s.https.len() {
        assert_eq!(get_on(&s, n, "/v1/users/alice", Some(&bob_token)).await, (200, alice_profile.clone()));
    }

    // `""` clears a field.
    let r = alice.ok(json!({"op":"profile","display_name":""})).await;
    assert_eq!((&r["display_name"], &r["avatar"]), (&json!(""), &json!("https://example.com/alice.png")));
    let r = bob.ok(json!({"op":"users","users":["alice"]})).await;
    assert_eq!(r["users"][0]["display_name"], "");
}

async fn profile_fields_and_lookups_out_of_bounds_are_refused(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    alice.ok(json!({"op":"profile","display_name":"Alice","avatar":"https://example.com/a.png"})).await;
    let many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    for bad in [
        json!({"op":"profile","display_name":"x".repeat(65)}),
        json!({"op":"profile","display_name":"two\nlines"}),
        json!({"op":"profile","avatar":"javascript:alert(1)"}),
        json!({"op":"profile","avatar":"http://example.com/a.png"}),
        json!({"op":"profile","avatar":format!("https://example.com/{}", "x".repeat(500))}),
        json!({"op":"profile","display_name":"Mallory","avatar":"https://a b"}),
        json!({"op":"profile","display_name":5}),
        json!({"op":"users","users":[]}),
        json!({"op":"users","users":["Alice"]}),
        json!({"op":"users","users":many}),
        json!({"op":"users"}),
    ] {
        assert_eq!(alice.error(bad.clone()).await, "bad_request", "{bad}");
    }
    // Nothing of the refused requests was stored, and the sessions go on.
    let r = bob.ok(json!({"op":"users","users":["alice"]})).await;
    assert_eq!(r["users"], json!([{"user":"alice","display_name":"Alice","avatar":"https://example.com/a.png"}]));
    alice.ok(json!({"op":"ping"})).await;
}

async fn the_profile_endpoint_needs_a_token_and_a_valid_name(s: TestServer) {
    let token = s.user("alice").await;
    assert_eq!(get_on(&s, 0, "/v1/users/alice", None).await.0, 401);
    assert_eq!(get_on(&s, 0, "/v1/users/alice", Some("garbage")).await.0, 401);
    let (status, body) = get_on(&s, 0, "/v1/users/nobody", Some(&token)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, body) = get_on(&s, 0, "/v1/users/Not%20A%20Name", Some(&token)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")));
    let (status, body) = get_on(&s, 0, &format!("/v1/users/alice?token={token}"), None).await;
    assert_eq!((status, &body["user"]), (200, &json!("alice")));
}

/// A token signed with the server's secret for a name nobody registered
/// opens a session, but there is no account to hold a profile.
async fn a_name_without_an_account_has_no_profile(s: TestServer) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({ "sub": "ghost", "exp": now + 600 });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(common::SECRET.as_bytes()),
    )
    .unwrap();
    let mut ghost = s.connect(&token).await;
    assert_eq!(ghost.error(json!({"op":"profile","display_name":"Boo"})).await, "not_found");
    let r = ghost.ok(json!({"op":"users","users":["ghost"]})).await;
    assert_eq!(r["users"], json!([]));
    assert_eq!(get_on(&s, 0, "/v1/users/ghost", Some(&token)).await.0, 404);
}

on_every_mode!(
    a_profile_is_set_by_its_user_and_read_by_anyone,
    profile_fields_and_lookups_out_of_bounds_are_refused,
    the_profile_endpoint_needs_a_token_and_a_valid_name,
    a_name_without_an_account_has_no_profile,
);
