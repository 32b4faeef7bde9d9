//! Signing out and changing a password (docs/protocol.md,
//! `POST /v1/auth/logout`, `/v1/auth/logout-all`, `/v1/auth/password`):
//! revoked tokens are refused at the upgrade and the live sessions using
//! them end with `bye token_revoked` on every gateway of the cluster.

#[macro_use]
mod common;

use common::{Client, TestServer, refused_status};
use serde_json::{Value, json};

/// A session of `token` on gateway `n` (of two in a cluster; the one otherwise).
async fn on(s: &TestServer, n: usize, token: &str) -> Client {
    Client::connect(&format!("{}?token={token}", s.gateways[n % s.gateways.len()])).await
}

/// The upgrade's status for `token` on gateway `n`.
async fn upgrade_status(s: &TestServer, n: usize, token: &str) -> u16 {
    refused_status(&format!("{}?token={token}", s.gateways[n % s.gateways.len()])).await
}

async fn post_as(s: &TestServer, n: usize, path: &str, token: &str, body: Value) -> (u16, Value) {
    let url = format!("{}{path}", s.https[n % s.https.len()]);
    let r = s.client.post(url).bearer_auth(token).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn revoked(c: &mut Client) {
    let (code, frames) = c.closed().await;
    assert_eq!(code, 1008);
    assert_eq!(frames.last().unwrap(), &json!({"ev": "bye", "reason": "token_revoked"}));
}

async fn logout_all_ends_every_session_of_the_user_on_every_gateway(s: TestServer) {
    let first = s.user("alice").await;
    let second = s.login("alice").await;
    let mut a0 = on(&s, 0, &first).await;
    let mut a1 = on(&s, 1, &second).await;
    let mut bob = s.connected("bob").await;

    let (status, _) = post_as(&s, 0, "/v1/auth/logout-all", &first, json!({})).await;
    assert_eq!(status, 200);
    revoked(&mut a0).await;
    revoked(&mut a1).await;
    for n in 0..2 {
        assert_eq!(upgrade_status(&s, n, &first).await, 401);
        assert_eq!(upgrade_status(&s, n, &second).await, 401);
    }
    let (status, body) = s.get("/v1/rooms/r/messages", Some(&second)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    // Bob is not affected, and alice signs in again.
    bob.ok(json!({"op":"ping"})).await;
    let fresh = s.login("alice").await;
    let mut again = on(&s, 1, &fresh).await;
    again.ok(json!({"op":"ping"})).await;
}

async fn logout_revokes_this_token_only(s: TestServer) {
    let first = s.user("alice").await;
    let second = s.login("alice").await;
    let mut a0 = on(&s, 1, &first).await;
    let mut a1 = on(&s, 0, &second).await;

    let (status, _) = post_as(&s, 0, "/v1/auth/logout", &first, json!({})).await;
    assert_eq!(status, 200);
    revoked(&mut a0).await;
    for n in 0..2 {
        assert_eq!(upgrade_status(&s, n, &first).await, 401);
    }
    // The other token and its session go on.
    a1.ok(json!({"op":"ping"})).await;
    let mut other = on(&s, 1, &second).await;
    other.ok(json!({"op":"ping"})).await;
    // A revoked token cannot sign out again.
    assert_eq!(post_as(&s, 1, "/v1/auth/logout", &first, json!({})).await.0, 401);
    assert_eq!(post_as(&s, 1, "/v1/auth/logout-all", &first, json!({})).await.0, 401);
}

async fn a_password_change_needs_the_old_password_and_revokes_every_token(s: TestServer) {
    let token = s.user("alice").await;
    let mut a0 = on(&s, 0, &token).await;
    let mut a1 = on(&s, 1, &token).await;

    // Refusals change nothing.
    let (status, body) =
        post_as(&s, 0, "/v1/auth/password", &token, json!({"old":"wrong-password","new":"new-password-1"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = post_as(&s, 0, "/v1/auth/password", &token, json!({"old":"password-123","new":"short"})).await;
    assert_eq!(status, 400);
    let (status, _) = post_as(&s, 0, "/v1/auth/password", &token, json!({"old":"password-123"})).await;
    assert_eq!(status, 400);
    let (status, _) = post_as(&s, 0, "/v1/auth/password", "garbage", json!({"old":"a","new":"b"})).await;
    assert_eq!(status, 401);
    a0.ok(json!({"op":"ping"})).await;
    a1.ok(json!({"op":"ping"})).await;
    s.login("alice").await;

    let (status, body) =
        post_as(&s, 0, "/v1/auth/password", &token, json!({"old":"password-123","new":"new-password-1"})).await;
    assert_eq!((status, &body["user"]), (200, &json!("alice")), "{body}");
    let fresh = body["token"].as_str().unwrap().to_owned();
    revoked(&mut a0).await;
    revoked(&mut a1).await;
    for n in 0..2 {
        assert_eq!(upgrade_status(&s, n, &token).await, 401);
    }
    let mut again = on(&s, 1, &fresh).await;
    again.ok(json!({"op":"ping"})).await;
    let (status, _) = s.post("/v1/auth/login", json!({"username":"alice","password":"password-123"})).await;
    assert_eq!(status, 401);
    let (status, _) = s.post("/v1/auth/login", json!({"username":"alice","password":"new-password-1"})).await;
    assert_eq!(status, 200);
}

on_every_mode!(
    logout_all_ends_every_session_of_the_user_on_every_gateway,
    logout_revokes_this_token_only,
    a_password_change_needs_the_old_password_and_revokes_every_token,
);
