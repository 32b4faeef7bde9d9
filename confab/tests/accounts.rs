//! Accounts, tokens and the authenticated upgrade (PROTOCOL.md: HTTP, Connecting).

mod common;

use common::{SECRET, TestServer, refused_status};
use serde_json::json;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A token the tests mint themselves, as an application with its own accounts would.
fn mint(sub: &str, exp: u64, secret: &[u8]) -> String {
    let claims = json!({ "sub": sub, "exp": exp });
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(secret))
        .unwrap()
}

#[tokio::test]
async fn registering_validates_the_name_and_password_and_refuses_a_taken_name() {
    let s = TestServer::start().await;
    let (status, body) = s.post("/v1/auth/register", json!({"username": "alice", "password": "password-123"})).await;
    assert_eq!((status, body), (201, json!({"user": "alice"})));
    let (status, body) = s.post("/v1/auth/register", json!({"username": "alice", "password": "password-456"})).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "taken");
    assert!(body["error"]["message"].is_string());
    for (username, password) in
        [("Alice", "password-123"), ("_x", "password-123"), ("bob", "short"), ("", "password-123")]
    {
        let (status, body) = s.post("/v1/auth/register", json!({"username": username, "password": password})).await;
        assert_eq!(status, 400, "{username}/{password}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
    let long = "x".repeat(257);
    let (status, _) = s.post("/v1/auth/register", json!({"username": "bob", "password": long})).await;
    assert_eq!(status, 400);
    let (status, body) = s.post("/v1/auth/register", json!({"username": 5})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")));
}

#[tokio::test]
async fn login_returns_a_token_that_opens_a_session() {
    let s = TestServer::start().await;
    s.post("/v1/auth/register", json!({"username": "alice", "password": "password-123"})).await;
    let (status, body) = s.post("/v1/auth/login", json!({"username": "alice", "password": "password-123"})).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"], "alice");
    let expires_at = body["expires_at"].as_u64().unwrap();
    assert!(expires_at > now(), "expires in the future");
    let token = body["token"].as_str().unwrap();
    let c = s.connect(token).await;
    assert_eq!(c.hello["user"], "alice");
    assert_eq!(c.hello["server"], "confab-1");
    assert_eq!(c.hello["heartbeat_ms"], 25000);
    assert!(c.hello["session"].as_str().unwrap().starts_with("s-"));

    for (username, password) in [("alice", "wrong-password"), ("nobody", "password-123"), ("BAD NAME", "x")] {
        let (status, body) = s.post("/v1/auth/login", json!({"username": username, "password": password})).await;
        assert_eq!(status, 401, "{username}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}

#[tokio::test]
async fn the_upgrade_needs_a_valid_unexpired_token() {
    let s = TestServer::start().await;
    let token = s.user("alice").await;
    assert_eq!(refused_status(&s.ws).await, 401, "missing token");
    assert_eq!(refused_status(&format!("{}?token=garbage", s.ws)).await, 401);
    let mut tampered = token.clone();
    tampered.push('x');
    assert_eq!(refused_status(&format!("{}?token={tampered}", s.ws)).await, 401);
    let expired = mint("alice", now() - 10, SECRET.as_bytes());
    assert_eq!(refused_status(&format!("{}?token={expired}", s.ws)).await, 401);
    let foreign = mint("alice", now() + 60, b"another-secret-another-secret-another");
    assert_eq!(refused_status(&format!("{}?token={foreign}", s.ws)).await, 401);

    // The Authorization header works as well as the query.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = s.ws.as_str().into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let c = common::Client::from_stream(ws).await;
    assert_eq!(c.hello["user"], "alice");
}

#[tokio::test]
async fn an_applications_own_tokens_are_accepted_without_an_account() {
    let s = TestServer::start().await;
    let token = mint("app-user", now() + 60, SECRET.as_bytes());
    let mut c = s.connect(&token).await;
    assert_eq!(c.hello["user"], "app-user");
    c.join("lobby").await;
}

#[tokio::test]
async fn a_session_ends_with_bye_when_its_token_expires() {
    let s = TestServer::start().await;
    let token = mint("alice", now() + 2, SECRET.as_bytes());
    let mut c = s.connect(&token).await;
    let (code, frames) = c.closed().await;
    assert_eq!(code, 1008);
    assert_eq!(frames.last().unwrap(), &json!({"ev": "bye", "reason": "token_expired"}));
}

#[tokio::test]
async fn the_history_endpoint_needs_a_token_and_membership() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let mut a = s.connect(&alice).await;
    a.join("r").await;
    for i in 1..=5 {
        a.send("r", &format!("m{i}"), &format!("c{i}")).await;
    }
    let (status, body) = s.get("/v1/rooms/r/messages?limit=2", Some(&alice)).await;
    assert_eq!(status, 200);
    let texts: Vec<&str> = body["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["m4", "m5"]);
    let before = body["messages"][0]["seq"].as_u64().unwrap();
    let (_, body) = s.get(&format!("/v1/rooms/r/messages?before={before}&limit=2"), Some(&alice)).await;
    let texts: Vec<&str> = body["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["m2", "m3"]);
    assert_eq!(s.get("/v1/rooms/r/messages", None).await.0, 401);
    let (status, body) = s.get("/v1/rooms/r/messages", Some(&bob)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("not_member")));
    assert_eq!(s.get("/v1/rooms/r/messages?limit=0", Some(&alice)).await.0, 400);
    assert_eq!(s.get("/v1/rooms/r/messages?limit=101", Some(&alice)).await.0, 400);
    assert_eq!(s.get("/v1/rooms/r/messages?before=x", Some(&alice)).await.0, 400);
    assert_eq!(s.get("/v1/rooms/bad%20room/messages", Some(&alice)).await.0, 400);
}
