//! The server API (docs/server-api.md): what an application calls with an
//! API key under `/v1/server/`, on standalone and on the 2-gateway,
//! 2-dispatcher cluster.

#[macro_use]
mod common;

use common::{Client, PATIENCE, TestServer, refused_status};
use serde_json::{Value, json};

const KEY: &str = "test-api-key-0123456789abcdef";
const OTHER_KEY: &str = "second-api-key-abcdef0123456789";

/// The key file every server of this suite reads.
fn key_file() -> String {
    let path = std::env::temp_dir().join(format!("confab-server-api-keys-{}", std::process::id()));
    std::fs::write(&path, format!("# test keys\napp:{KEY}\nops:{OTHER_KEY}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

fn gateway() -> Vec<String> {
    vec![format!("--api-key-file={}", key_file())]
}

/// Calls the server API on gateway `n` with `key` (none: no header).
async fn call(
    s: &TestServer,
    n: usize,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{path}", s.https[n % s.https.len()]);
    let mut req = match method {
        "GET" => s.client.get(url),
        "POST" => s.client.post(url),
        "DELETE" => s.client.delete(url),
        _ => unreachable!(),
    };
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(s: &TestServer, n: usize, path: &str, body: Value) -> (u16, Value) {
    call(s, n, "POST", path, Some(KEY), Some(body)).await
}

async fn get(s: &TestServer, n: usize, path: &str) -> (u16, Value) {
    call(s, n, "GET", path, Some(KEY), None).await
}

async fn delete(s: &TestServer, n: usize, path: &str) -> (u16, Value) {
    call(s, n, "DELETE", path, Some(KEY), None).await
}

/// A session of `token` on gateway `n` (of two in a cluster; the one otherwise).
async fn on(s: &TestServer, n: usize, token: &str) -> Client {
    Client::connect(&format!("{}?token={token}", s.gateways[n % s.gateways.len()])).await
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Creates `user` through the API (no password) and connects a session of
/// theirs on gateway `n` with a token the API issues.
async fn api_user(s: &TestServer, n: usize, user: &str) -> Client {
    let (status, body) = post(s, n, "/v1/server/users", json!({"user": user})).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = post(s, n + 1, "/v1/server/tokens", json!({"user": user, "ttl_secs": 600})).await;
    assert_eq!(status, 200, "{body}");
    on(s, n, body["token"].as_str().unwrap()).await
}

async fn publish_goes_the_way_of_a_send_and_is_idempotent_by_cid(s: TestServer) {
    let mut bob = api_user(&s, 1, "bob").await;
    let (status, body) = post(&s, 0, "/v1/server/users", json!({"user": "helper", "display_name": "Helper"})).await;
    assert_eq!((status, &body), (201, &json!({"user": "helper", "display_name": "Helper"})));
    let (status, body) = post(
        &s,
        0,
        "/v1/server/rooms",
        json!({"room": "desk", "visibility": "private", "owner": "helper", "name": "Help desk"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // A private room: added without an invitation.
    let (status, body) = post(&s, 1, "/v1/server/rooms/desk/members", json!({"user": "bob"})).await;
    assert_eq!((status, body["room"].as_str()), (200, Some("desk")), "{body}");
    let joined = bob.next_event("member").await;
    assert_eq!((joined["user"].as_str(), joined["action"].as_str()), (Some("bob"), Some("join")));

    let message = json!({"room": "desk", "from": "helper", "text": "how can I help?", "cid": "q-1"});
    let (status, first) = post(&s, 0, "/v1/server/publish", message.clone()).await;
    assert_eq!(status, 200, "{first}");
    assert!(first["seq"].as_u64().unwrap() > 0 && first["msg_id"].is_string(), "{first}");
    let msg = bob.next_event("msg").await;
    assert_eq!((msg["from"].as_str(), msg["text"].as_str()), (Some("helper"), Some("how can I help?")));
    assert_eq!(msg["seq"], first["seq"]);
    // The same cid again, through the other gateway: the first message's answer, nothing new stored.
    let (status, again) = post(&s, 1, "/v1/server/publish", message).await;
    assert_eq!((status, &again["seq"], &again["msg_id"]), (200, &first["seq"], &first["msg_id"]));
    let (status, page) = get(&s, 1, "/v1/server/rooms/desk/messages").await;
    assert_eq!(status, 200, "{page}");
    let texts: Vec<&str> = page["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["how can I help?"]);
    // Bob answers as a client; the page reads oldest first, with `before` and `limit`.
    let answer = bob.send("desk", "my order is late", "b-1").await;
    let path = format!("/v1/server/rooms/desk/messages?before={}&limit=1", answer["seq"]);
    let (_, page) = get(&s, 0, &path).await;
    assert_eq!(page["messages"][0]["text"], "how can I help?");

    // What a client's send is refused, a publish is refused.
    let (status, body) =
        post(&s, 0, "/v1/server/publish", json!({"room": "desk", "from": "nobody", "text": "x", "cid": "c"})).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let _ = post(&s, 0, "/v1/server/users", json!({"user": "outsider"})).await;
    let (status, body) =
        post(&s, 1, "/v1/server/publish", json!({"room": "desk", "from": "outsider", "text": "x", "cid": "c"})).await;
    assert_eq!((status, code(&body)), (403, "not_member"), "{body}");
    let long = "x".repeat(5000);
    let (status, body) =
        post(&s, 0, "/v1/server/publish", json!({"room": "desk", "from": "helper", "text": long, "cid": "c"})).await;
    assert_eq!((status, code(&body)), (413, "too_large"), "{body}");
    let (status, body) = call(&s, 0, "POST", "/v1/server/publish", Some(KEY), Some(json!({"room": "desk"}))).await;
    assert_eq!((status, code(&body)), (400, "bad_request"), "{body}");
    let r =
        s.client.post(format!("{}/v1/server/publish", s.http)).bearer_auth(KEY).body("{not json").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("the body must be"), "{body}");

    // Removed: bob hears his own leave, and the room no more.
    let (status, body) = delete(&s, 1, "/v1/server/rooms/desk/members/bob").await;
    assert_eq!(status, 200, "{body}");
    let left = bob.event(|v| v["ev"] == "member" && v["action"] == "leave").await;
    assert_eq!(left["user"], "bob");
    let (status, body) = delete(&s, 1, "/v1/server/rooms/desk/members/bob").await;
    assert_eq!((status, code(&body)), (403, "not_member"), "{body}");
    assert_eq!(bob.error(json!({"op": "history", "room": "desk"})).await, "not_member");
}

async fn broadcast_posts_to_the_rooms_named_or_to_all_of_the_senders(s: TestServer) {
    let mut carol = api_user(&s, 0, "carol").await;
    let _ = post(&s, 1, "/v1/server/users", json!({"user": "notices"})).await;
    for room in ["north", "south"] {
        let (status, body) =
            post(&s, 0, "/v1/server/rooms", json!({"room": room, "visibility": "public", "owner": "notices"})).await;
        assert_eq!(status, 201, "{body}");
        let (status, _) = post(&s, 1, &format!("/v1/server/rooms/{room}/members"), json!({"user": "carol"})).await;
        assert_eq!(status, 200);
    }
    let (status, body) = post(
        &s,
        1,
        "/v1/server/broadcast",
        json!({"rooms": ["north", "south", "nowhere"], "from": "notices", "text": "maintenance at noon"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{body}");
    let by_room = |room: &str| results.iter().find(|r| r["room"] == room).unwrap().clone();
    assert!(by_room("north")["seq"].as_u64().is_some() && by_room("south")["seq"].as_u64().is_some(), "{body}");
    assert_eq!(by_room("nowhere")["error"]["code"], "not_member", "{body}");
    let mut heard = Vec::new();
    for _ in 0..2 {
        let m = carol.next_event("msg").await;
        assert_eq!(m["text"], "maintenance at noon");
        heard.push(m["room"].as_str().unwrap().to_owned());
    }
    heard.sort();
    assert_eq!(heard, ["north", "south"]);

    let (status, body) =
        post(&s, 0, "/v1/server/broadcast", json!({"all": true, "from": "notices", "text": "done"})).await;
    assert_eq!((status, body["results"].as_array().map(Vec::len)), (200, Some(2)), "{body}");
    for _ in 0..2 {
        assert_eq!(carol.next_event("msg").await["text"], "done");
    }
    let (status, body) =
        post(&s, 0, "/v1/server/broadcast", json!({"rooms": ["north"], "all": true, "from": "notices", "text": "x"}))
            .await;
    assert_eq!((status, code(&body)), (400, "bad_request"));
}

async fn disconnect_closes_every_session_of_the_user_on_every_gateway(s: TestServer) {
    let (status, _) = post(&s, 0, "/v1/server/users", json!({"user": "dan", "password": "password-123"})).await;
    assert_eq!(status, 201);
    let token = s.login("dan").await;
    let mut d0 = on(&s, 0, &token).await;
    let mut d1 = on(&s, 1, &token).await;
    let mut eve = s.connected("eve").await;
    let (status, body) = post(&s, 1, "/v1/server/users/dan/disconnect", json!({})).await;
    assert_eq!(status, 200, "{body}");
    for d in [&mut d0, &mut d1] {
        let (code, frames) = d.closed().await;
        assert_eq!(code, 1008);
        assert_eq!(frames.last().unwrap(), &json!({"ev": "bye", "reason": "disconnected"}));
    }
    eve.ok(json!({"op": "ping"})).await;
    // Disconnected, not revoked: the token still connects.
    on(&s, 0, &token).await.ok(json!({"op": "ping"})).await;
    let (status, body) = post(&s, 0, "/v1/server/users/nobody/disconnect", json!({})).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
}

async fn revoke_refuses_old_tokens_and_new_ones_work(s: TestServer) {
    let mut f0 = api_user(&s, 0, "fay").await;
    let (_, issued) = post(&s, 1, "/v1/server/tokens", json!({"user": "fay", "ttl_secs": 60})).await;
    let old = issued["token"].as_str().unwrap().to_owned();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expires = issued["expires_at"].as_u64().unwrap();
    assert!((now + 55..=now + 61).contains(&expires), "{issued}");
    let mut f1 = on(&s, 1, &old).await;
    let (status, body) = post(&s, 0, "/v1/server/users/fay/revoke", json!({})).await;
    assert_eq!(status, 200, "{body}");
    for f in [&mut f0, &mut f1] {
        let (_, frames) = f.closed().await;
        assert_eq!(frames.last().unwrap(), &json!({"ev": "bye", "reason": "token_revoked"}));
    }
    for n in 0..2 {
        assert_eq!(refused_status(&format!("{}?token={old}", s.gateways[n % s.gateways.len()])).await, 401);
    }
    let (status, fresh) = post(&s, 1, "/v1/server/tokens", json!({"user": "fay", "ttl_secs": 60})).await;
    assert_eq!(status, 200);
    on(&s, 0, fresh["token"].as_str().unwrap()).await.ok(json!({"op": "ping"})).await;
    for bad in [json!({"user": "fay", "ttl_secs": 0}), json!({"user": "fay", "ttl_secs": 10_000_000_000u64})] {
        let (status, body) = post(&s, 0, "/v1/server/tokens", bad).await;
        assert_eq!((status, code(&body)), (400, "bad_request"), "{body}");
    }
    let (status, body) = post(&s, 0, "/v1/server/tokens", json!({"user": "ghost", "ttl_secs": 60})).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
}

async fn users_are_created_and_erased(s: TestServer) {
    let (status, body) = post(&s, 0, "/v1/server/users", json!({"user": "gus", "password": "password-123"})).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = post(&s, 1, "/v1/server/users", json!({"user": "gus"})).await;
    assert_eq!((status, code(&body)), (409, "taken"));
    for bad in [
        json!({"user": "Not A Name"}),
        json!({"user": "hal", "password": "short"}),
        json!({"user": "hal", "bot": "yes"}),
    ] {
        let (status, body) = post(&s, 0, "/v1/server/users", bad.clone()).await;
        assert_eq!((status, code(&body)), (400, "bad_request"), "{bad}: {body}");
    }
    let token = s.login("gus").await;
    let mut gus = on(&s, 1, &token).await;
    gus.join("lobby").await;
    let sent = gus.send("lobby", "remember me", "g-1").await;
    let (status, body) = delete(&s, 0, "/v1/server/users/gus").await;
    assert_eq!(status, 200, "{body}");
    let (_, frames) = gus.closed().await;
    assert_eq!(frames.last().unwrap(), &json!({"ev": "bye", "reason": "token_revoked"}));
    let (status, _) = s.post("/v1/auth/login", json!({"username": "gus", "password": "password-123"})).await;
    assert_eq!(status, 401);
    // Erased as account deletion erases: the message keeps its place and loses its text.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, page) = get(&s, 1, "/v1/server/rooms/lobby/messages").await;
        let m = page["messages"].as_array().unwrap().iter().find(|m| m["seq"] == sent["seq"]).cloned().unwrap();
        if m["text"] == "" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never erased: {m}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, body) = delete(&s, 0, "/v1/server/users/gus").await;
    assert_eq!((status, code(&body)), (404, "not_found"));
}

async fn bot_accounts_are_shown_as_bots(s: TestServer) {
    let (status, body) =
        post(&s, 0, "/v1/server/users", json!({"user": "robo", "display_name": "Robo", "bot": true})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body, json!({"user": "robo", "display_name": "Robo", "bot": true}));
    let (status, body) = post(&s, 1, "/v1/server/users", json!({"user": "kim", "bot": false})).await;
    assert_eq!((status, &body), (201, &json!({"user": "kim", "display_name": ""})));
    // Every gateway shows the flag, and only on the bot.
    let mut kim = api_user(&s, 1, "kim2").await;
    let users = kim.ok(json!({"op": "users", "users": ["robo", "kim", "nobody"]})).await;
    assert_eq!(
        users["users"],
        json!([
            {"user": "robo", "display_name": "Robo", "avatar": "", "bot": true},
            {"user": "kim", "display_name": "", "avatar": ""},
        ])
    );
    let (_, issued) = post(&s, 0, "/v1/server/tokens", json!({"user": "kim2", "ttl_secs": 60})).await;
    let r = s
        .client
        .get(format!("{}/v1/users/robo", s.https[0]))
        .bearer_auth(issued["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["bot"], true);
    // The bot's own session: its profile says so, and a change of name keeps the flag.
    let (_, issued) = post(&s, 1, "/v1/server/tokens", json!({"user": "robo", "ttl_secs": 60})).await;
    let mut robo = on(&s, 0, issued["token"].as_str().unwrap()).await;
    let mine = robo.ok(json!({"op": "profile", "display_name": "Robo 2"})).await;
    assert_eq!((&mine["display_name"], &mine["bot"]), (&json!("Robo 2"), &json!(true)), "{mine}");
    // A user cannot make themselves a bot: the field is not theirs to set.
    let _ = kim.request(json!({"op": "profile", "bot": true})).await;
    let again = kim.ok(json!({"op": "users", "users": ["kim2"]})).await;
    assert_eq!(again["users"][0].get("bot"), None, "{again}");
}

async fn presence_and_stats_count_who_is_online(s: TestServer) {
    let mut ivy = s.connected("ivy").await;
    ivy.join("plaza").await;
    let _ = post(&s, 0, "/v1/server/users", json!({"user": "jon"})).await;
    // Ivy's session is on one gateway; both answer for her.
    for n in 0..2 {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (status, body) = get(&s, n, "/v1/server/presence?user=ivy&user=jon").await;
            assert_eq!(status, 200, "{body}");
            if body == json!({"online": {"ivy": true, "jon": false}}) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "presence on gateway {n}: {body}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let (status, body) = get(&s, 0, "/v1/server/presence").await;
    assert_eq!((status, code(&body)), (400, "bad_request"));
    let (status, body) = get(&s, 0, "/v1/server/presence?user=ivy&room=x").await;
    assert_eq!((status, code(&body)), (400, "bad_request"));

    ivy.send("plaza", "hello", "i-1").await;
    let (status, stats) = get(&s, 0, "/v1/server/stats").await;
    assert_eq!(status, 200, "{stats}");
    for field in ["connections", "users_online", "rooms"] {
        assert!(stats[field].is_u64(), "{field}: {stats}");
    }
    assert!(stats["users_online"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["messages_per_second"].is_number(), "{stats}");
    // The gateway ivy is on counts her session, her room and her message.
    let mut counted = false;
    for n in 0..s.https.len() {
        let (_, stats) = get(&s, n, "/v1/server/stats").await;
        if stats["connections"] == 1 && stats["rooms"] == 1 && stats["messages_per_second"].as_f64().unwrap() > 0.0 {
            counted = true;
        }
    }
    assert!(counted, "no gateway counts ivy's session, room and message");
}

/// Every route, with the path's parameters filled in.
fn every_route() -> Vec<(&'static str, String)> {
    confab_gateway::server_api::routes()
        .into_iter()
        .map(|(method, path)| (method, path.replace("{room}", "desk").replace("{user}", "kim")))
        .collect()
}

async fn every_endpoint_refuses_a_missing_or_wrong_key(s: TestServer) {
    let mut kim = s.connected("kim").await;
    kim.join("desk").await;
    let body = json!({"room": "desk", "from": "kim", "text": "forged", "cid": "f-1", "user": "kim", "ttl_secs": 60});
    for (method, path) in every_route() {
        let method = method.to_uppercase();
        for key in [None, Some("not-the-key-0123456789"), Some(""), Some(&KEY[..KEY.len() - 1])] {
            let (status, reply) = call(&s, 0, &method, &path, key, Some(body.clone())).await;
            assert_eq!((status, code(&reply)), (401, "unauthorized"), "{method} {path} with {key:?}: {reply}");
        }
    }
    // Nothing happened: kim is connected, not disconnected or revoked, and nothing was posted.
    kim.ok(json!({"op": "ping"})).await;
    let page = kim.ok(json!({"op": "history", "room": "desk"})).await;
    assert_eq!(page["messages"], json!([]));
    assert!(kim.take_events().iter().all(|e| e["ev"] != "msg"));
    // The second key works; the document is served with a key.
    let (status, doc) = call(&s, 1, "GET", "/v1/server/openapi.json", Some(OTHER_KEY), None).await;
    assert_eq!((status, doc["openapi"].as_str()), (200, Some("3.1.0")));
    let (status, body) = get(&s, 0, "/v1/server/nothing-here").await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    // Every call is counted by endpoint and status.
    let text = s.metrics().await;
    assert!(
        text.lines()
            .any(|l| l
                .starts_with("confab_server_api_requests_total{endpoint=\"POST /v1/server/publish\",status=\"401\"}")),
        "{text}"
    );
}

/// A known path with another method is `405` with the API's JSON error and
/// `Allow`; an unknown path is `404` JSON. Nothing happens either way.
async fn a_wrong_method_is_405_and_an_unknown_path_404_both_json(s: TestServer) {
    for (method, path) in every_route() {
        let wrong = if method == "get" { reqwest::Method::POST } else { reqwest::Method::GET };
        let url = format!("{}{path}", s.https[0]);
        let r = s.client.request(wrong.clone(), url).bearer_auth(KEY).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 405, "{wrong} {path}");
        let allow = r.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(allow.as_deref(), Some(method.to_uppercase().as_str()), "{wrong} {path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(code(&body), "bad_request", "{wrong} {path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("not allowed"), "{body}");
    }
    for path in ["/v1/server/rooms/desk/nothing", "/v1/server/users/kim/nothing", "/v1/server"] {
        let (status, body) = get(&s, 1, path).await;
        assert_eq!((status, code(&body)), (404, "not_found"), "{path}: {body}");
    }
    // The routes still answer their own method.
    let (status, body) = get(&s, 0, "/v1/server/stats").await;
    assert_eq!(status, 200, "{body}");
}

on_every_mode_with!(
    api,
    gateway: gateway;
    publish_goes_the_way_of_a_send_and_is_idempotent_by_cid,
    broadcast_posts_to_the_rooms_named_or_to_all_of_the_senders,
    disconnect_closes_every_session_of_the_user_on_every_gateway,
    revoke_refuses_old_tokens_and_new_ones_work,
    users_are_created_and_erased,
    bot_accounts_are_shown_as_bots,
    presence_and_stats_count_who_is_online,
    every_endpoint_refuses_a_missing_or_wrong_key,
    a_wrong_method_is_405_and_an_unknown_path_404_both_json,
);

/// Each key has its own budget (`api_rate_per_second`, `api_rate_burst`):
/// past it a call is `429` `rate_limited` with `Retry-After`, does nothing,
/// and another key and the chat are unaffected.
async fn a_key_over_its_rate_is_429_with_retry_after(s: TestServer) {
    let mut lou = s.connected("lou").await;
    lou.join("hall").await;
    // Gateway 0 only: the budget is per gateway.
    for i in 0..3 {
        let (status, body) = get(&s, 0, "/v1/server/stats").await;
        assert_eq!(status, 200, "call {i}: {body}");
    }
    let body = json!({"room": "hall", "from": "lou", "text": "over the rate", "cid": "r-1"});
    let r = s.client.post(format!("{}/v1/server/publish", s.https[0])).bearer_auth(KEY).json(&body).send().await;
    let r = r.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let reply: Value = r.json().await.unwrap();
    assert_eq!(code(&reply), "rate_limited", "{reply}");
    // The other key has its own budget; lou's session is untouched and the refused publish posted nothing.
    let (status, body) = call(&s, 0, "GET", "/v1/server/stats", Some(OTHER_KEY), None).await;
    assert_eq!(status, 200, "{body}");
    let page = lou.ok(json!({"op": "history", "room": "hall"})).await;
    assert_eq!(page["messages"], json!([]));
    let text = s.metrics().await;
    assert!(
        text.lines()
            .any(|l| l
                .starts_with("confab_server_api_requests_total{endpoint=\"POST /v1/server/publish\",status=\"429\"}")),
        "{text}"
    );
}

fn limited_gateway() -> Vec<String> {
    let mut flags = gateway();
    flags.extend(["--api-rate-per-second=1".to_owned(), "--api-rate-burst=3".to_owned()]);
    flags
}

on_every_mode_with!(
    rate,
    gateway: limited_gateway;
    a_key_over_its_rate_is_429_with_retry_after,
);

#[tokio::test]
async fn without_keys_every_route_is_404() {
    let s = TestServer::start().await;
    let mut lee = s.connected("lee").await;
    for (method, path) in every_route() {
        let method = method.to_uppercase();
        for key in [None, Some(KEY)] {
            let (status, body) = call(&s, 0, &method, &path, key, Some(json!({}))).await;
            assert_eq!((status, code(&body)), (404, "not_found"), "{method} {path}: {body}");
        }
    }
    lee.ok(json!({"op": "ping"})).await;
}

#[test]
fn a_bad_key_file_fails_the_start_naming_the_line_and_not_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    std::fs::write(&path, format!("app:{KEY}\nbroken {OTHER_KEY}\n")).unwrap();
    let flag = format!("--api-key-file={}", path.display());
    let config = common::config_with(dir.path(), &[&flag]);
    let e = confab::serving::api_keys(&config.server).unwrap_err().to_string();
    assert!(e.contains("line 2"), "{e}");
    assert!(!e.contains(OTHER_KEY) && !e.contains(KEY), "{e}");
    std::fs::write(&path, format!("app:{KEY}\n")).unwrap();
    assert_eq!(confab::serving::api_keys(&config.server).unwrap().len(), 1);
}
