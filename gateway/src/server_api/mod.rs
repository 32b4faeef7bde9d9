//! The server API (docs/server-api.md): what the application around Confab
//! calls, with `Authorization: Bearer <API key>`, under `/v1/server/`.
//!
//! Writes take the path of a client's: an ingress record produced to the
//! room's partition, decided by the room's dispatcher in the room's order,
//! and answered once stored. The answer is addressed to a "session" of this
//! gateway whose id no session holds ([`Calls`]), so it comes back here in
//! every mode, across gateways and dispatchers alike.
//!
//! Without keys (`api_key_file` unset) every `/v1/server/*` route is 404.

mod calls;
mod keys;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, delete, get, post};
use axum::{Json, Router};
use confab_protocol::validate::{self, dm_members};
use confab_protocol::{Command, ErrorCode, IngressRecord, Origin, ProtocolError, Role, Visibility, accounts, rooms};
use confab_store::UserRecord;
use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use calls::{Calls, MAX_CALLS, RATE_WINDOW_SECS, RateMeter};
pub use keys::{ApiKeys, KeyFileError};

use crate::Gateway;
use crate::http::ApiError;
use crate::ops::store_error;

/// The largest request body; larger is `413`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a write waits for its dispatcher's answer before `unavailable`
/// (a `publish` retried with the same `cid` then gets the first result).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Rooms one `broadcast` names at most.
pub const MAX_BROADCAST_ROOMS: usize = 1000;
/// Users one `presence` asks about at most.
pub const MAX_PRESENCE_USERS: usize = 100;
/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route of the server API: method, path (as in the OpenAPI document).
pub fn routes() -> Vec<(&'static str, &'static str)> {
    table().into_iter().map(|(m, p, _)| (m, p)).collect()
}

fn table() -> Vec<(&'static str, &'static str, MethodRouter<Gateway>)> {
    vec![
        ("post", "/v1/server/publish", post(publish)),
        ("post", "/v1/server/broadcast", post(broadcast)),
        ("post", "/v1/server/rooms", post(create_room)),
        ("post", "/v1/server/rooms/{room}/members", post(add_member)),
        ("delete", "/v1/server/rooms/{room}/members/{user}", delete(remove_member)),
        ("get", "/v1/server/rooms/{room}/messages", get(messages)),
        ("post", "/v1/server/users", post(create_user)),
        ("delete", "/v1/server/users/{user}", delete(delete_user)),
        ("post", "/v1/server/users/{user}/disconnect", post(disconnect)),
        ("post", "/v1/server/users/{user}/revoke", post(revoke)),
        ("post", "/v1/server/tokens", post(token)),
        ("get", "/v1/server/presence", get(presence)),
        ("get", "/v1/server/stats", get(stats)),
        ("get", "/v1/server/openapi.json", get(openapi)),
    ]
}

/// The server API's routes, to merge into the public router.
pub fn router(gw: Gateway) -> Router {
    let mut router = Router::new();
    for (method, path, route) in table() {
        let endpoint = Endpoint { gw: gw.clone(), name: format!("{} {path}", method.to_uppercase()) };
        let allowed = method.to_uppercase();
        let route = route
            .route_layer(middleware::from_fn_with_state(endpoint, guard))
            .fallback(move |State(gw): State<Gateway>, method: Method| wrong_method(gw, method, allowed));
        router = router.route(path, route);
    }
    router
        .route("/v1/server", any(no_such_endpoint))
        .route("/v1/server/{*rest}", any(no_such_endpoint))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(gw)
}

fn error(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError(ProtocolError::new(code, message))
}

async fn no_such_endpoint(State(gw): State<Gateway>, method: Method) -> ApiError {
    if gw.config().api_keys.is_empty() {
        return off();
    }
    error(ErrorCode::NotFound, format!("no such server API endpoint for {method}; see /v1/server/openapi.json"))
}

/// A known path asked with another method: `405`, the API's JSON error
/// (`bad_request`) and `Allow`.
async fn wrong_method(gw: Gateway, method: Method, allowed: String) -> Response {
    if gw.config().api_keys.is_empty() {
        return off().into_response();
    }
    let message = format!("{method} is not allowed here; this endpoint takes {allowed}");
    let mut response = error(ErrorCode::BadRequest, message).into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    if let Ok(value) = header::HeaderValue::from_str(&allowed) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

fn off() -> ApiError {
    error(ErrorCode::NotFound, "the server API is off on this server (no api_key_file)")
}

/// The API key of a request: `Authorization: Bearer <key>`.
fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let key = value.strip_prefix(b"Bearer ").or_else(|| value.strip_prefix(b"bearer "))?;
    Some(key.trim_ascii())
}

/// A route, as its guard sees it: the `endpoint` label is `METHOD /path`.
#[derive(Clone)]
struct Endpoint {
    gw: Gateway,
    name: String,
}

/// Every call: the key checked (`401` without a right one), the call logged
/// with the key's name, and counted by endpoint and status.
async fn guard(State(Endpoint { gw, name: endpoint }): State<Endpoint>, req: Request, next: Next) -> Response {
    let keys = &gw.config().api_keys;
    let response = if keys.is_empty() {
        off().into_response()
    } else {
        match presented(req.headers()).map(|k| keys.check(k)) {
            None => {
                let message = "an API key is required: `Authorization: Bearer <key>`";
                error(ErrorCode::Unauthorized, message).into_response()
            }
            Some(None) => {
                tracing::warn!(%endpoint, "server API call with an unknown key");
                error(ErrorCode::Unauthorized, "this API key is not known here").into_response()
            }
            Some(Some(name)) if keys.admit(name).is_err() => {
                let wait = keys.admit(name).err().unwrap_or_default();
                tracing::warn!(key = %name, %endpoint, "server API call over the key's rate");
                let message = "too many server API calls with this key; retry after Retry-After seconds";
                let mut response = error(ErrorCode::RateLimited, message).into_response();
                // Whole seconds, rounded up: a caller that waits this long gets in.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                response.headers_mut().insert(header::RETRY_AFTER, secs.max(1).into());
                response
            }
            Some(Some(name)) => {
                let name = name.to_owned();
                let response = next.run(req).await;
                tracing::info!(key = %name, %endpoint, status = response.status().as_u16(), "server API call");
                response
            }
        }
    };
    let status = response.status();
    gw.inner.metrics.server_api_requests.with_label_values(&[&endpoint, status.as_str()]).inc();
    response
}

/// The body as `T`; bad JSON is `400` with what was wrong.
fn body<T: DeserializeOwned>(bytes: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError(ProtocolError::bad_request(format!("the body must be {shape}: {e}"))))
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn user_name(field: &str, name: &str) -> Result<(), ProtocolError> {
    validate::username(name).map_err(|_| ProtocolError::bad_request(format!("`{field}` is not a valid user name")))
}

impl Gateway {
    /// Produces `cmd` to `room` as a client write is produced, and waits for
    /// the dispatcher's answer (the reply a session would get).
    async fn call(&self, room: String, cmd: Command, timed: bool) -> Result<Value, ProtocolError> {
        let id = self.inner.registry.next_id();
        let Some(answer) = self.inner.calls.register(id) else {
            return Err(ProtocolError::unavailable("too many server API calls wait at once; retry shortly"));
        };
        let t0 = if timed { self.now_micros().max(1) } else { 0 };
        let record = IngressRecord {
            room,
            ts: unix_ms(),
            origin: Some(Origin { gateway: self.id().into(), session: id, re: None, t0 }),
            cmd,
        };
        let produced = tokio::time::timeout(self.config().produce_timeout, self.inner.bus.produce(&record)).await;
        if !matches!(produced, Ok(Ok(()))) {
            self.inner.calls.forget(id);
            self.inner.metrics.produce_errors.inc();
            return Err(ProtocolError::unavailable("the message bus did not accept the write; retry"));
        }
        let frame = match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(Ok(frame)) => frame,
            _ => {
                self.inner.calls.forget(id);
                return Err(ProtocolError::unavailable(
                    "the write was not answered in time; retry (with the same cid)",
                ));
            }
        };
        let unreadable = |e: serde_json::Error| {
            tracing::error!(error = %e, "a dispatcher's answer does not parse");
            ProtocolError::internal()
        };
        let mut reply: Value = serde_json::from_str(&frame).map_err(unreadable)?;
        if reply["ok"] == Value::Bool(true) {
            return Ok(reply);
        }
        Err(serde_json::from_value(reply["error"].take()).map_err(unreadable)?)
    }

    async fn check_room(&self, room: &str) -> Result<(), ProtocolError> {
        match self.inner.store.room(room).await.map_err(store_error)? {
            Some(_) => Ok(()),
            None => Err(ProtocolError::new(ErrorCode::NotFound, format!("no room '{room}'"))),
        }
    }
}

#[derive(Deserialize)]
struct Publish {
    room: String,
    from: String,
    text: String,
    cid: String,
    #[serde(default)]
    reply_to: Option<u64>,
}

async fn publish(State(gw): State<Gateway>, bytes: Bytes) -> Result<Response, ApiError> {
    let p: Publish = body(&bytes, r#"{"room","from","text","cid","reply_to"?}"#)?;
    validate::room_ref(&p.room)?;
    user_name("from", &p.from)?;
    validate::cid(&p.cid)?;
    validate::text(&p.text, gw.config().max_text_bytes)?;
    gw.check_user(&p.from).await?;
    gw.check_dm(&p.room, &p.from).await?;
    gw.inner.typing.forget(&p.from, &p.room);
    let cmd = Command::Send { from: p.from, text: p.text, cid: p.cid, reply_to: p.reply_to, attachments: vec![] };
    let sent = gw.call(p.room, cmd, true).await?;
    let reply = json!({"room": sent["room"], "seq": sent["seq"], "msg_id": sent["msg_id"], "ts": sent["ts"]});
    Ok(Json(reply).into_response())
}

#[derive(Deserialize)]
struct Broadcast {
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
    from: String,
    text: String,
}

/// Sends at once, per `broadcast`.
const BROADCAST_CONCURRENCY: usize = 32;

async fn broadcast(State(gw): State<Gateway>, bytes: Bytes) -> Result<Response, ApiError> {
    let b: Broadcast = body(&bytes, r#"{"rooms":[...] or "all":true,"from","text"}"#)?;
    user_name("from", &b.from)?;
    validate::text(&b.text, gw.config().max_text_bytes)?;
    gw.check_user(&b.from).await?;
    let rooms = match (b.rooms, b.all) {
        (Some(rooms), false) => {
            if rooms.is_empty() || rooms.len() > MAX_BROADCAST_ROOMS {
                return Err(
                    ProtocolError::bad_request(format!("`rooms` names 1 to {MAX_BROADCAST_ROOMS} rooms")).into()
                );
            }
            for room in &rooms {
                validate::joinable_room(room)?;
            }
            let mut rooms = rooms;
            rooms.sort();
            rooms.dedup();
            rooms
        }
        (None, true) => {
            let mine = gw.inner.store.user_room_names(&b.from).await.map_err(store_error)?;
            mine.into_iter().filter(|r| dm_members(r).is_none()).take(MAX_BROADCAST_ROOMS).collect()
        }
        _ => return Err(ProtocolError::bad_request("give exactly one of `rooms` and `all: true`").into()),
    };
    let results: Vec<Value> = futures_util::stream::iter(rooms)
        .map(|room| {
            let gw = gw.clone();
            let (from, text) = (b.from.clone(), b.text.clone());
            async move {
                let cid = format!("broadcast-{:024x}", rand::random::<u128>() >> 32);
                match gw
                    .call(room.clone(), Command::Send { from, text, cid, reply_to: None, attachments: vec![] }, true)
                    .await
                {
                    Ok(sent) => json!({"room": room, "seq": sent["seq"], "msg_id": sent["msg_id"]}),
                    Err(error) => json!({"room": room, "error": error}),
                }
            }
        })
        .buffered(BROADCAST_CONCURRENCY)
        .collect()
        .await;
    Ok(Json(json!({ "results": results })).into_response())
}

#[derive(Deserialize)]
struct CreateRoom {
    room: String,
    visibility: Visibility,
    owner: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    topic: Option<String>,
}

async fn create_room(State(gw): State<Gateway>, bytes: Bytes) -> Result<Response, ApiError> {
    let c: CreateRoom = body(&bytes, r#"{"room","visibility":"public"|"private","owner","name"?,"topic"?}"#)?;
    validate::joinable_room(&c.room)?;
    user_name("owner", &c.owner)?;
    let (name, topic) = (c.name.unwrap_or_default(), c.topic.unwrap_or_default());
    rooms::bounded("name", &name, rooms::MAX_NAME_BYTES)?;
    rooms::bounded("topic", &topic, rooms::MAX_TOPIC_BYTES)?;
    gw.check_user(&c.owner).await?;
    let cmd = Command::Create { user: c.owner.clone(), visibility: c.visibility, name, topic };
    gw.call(c.room.clone(), cmd, false).await?;
    let reply = json!({"room": c.room, "owner": c.owner, "visibility": c.visibility});
    Ok((StatusCode::CREATED, Json(reply)).into_response())
}

#[derive(Deserialize)]
struct AddMember {
    user: String,
    #[serde(default)]
    role: Option<Role>,
}

async fn add_member(State(gw): State<Gateway>, Path(room): Path<String>, bytes: Bytes) -> Result<Response, ApiError> {
    let a: AddMember = body(&bytes, r#"{"user","role"?:"member"|"admin"}"#)?;
    validate::joinable_room(&room)?;
    user_name("user", &a.user)?;
    if a.role == Some(Role::Owner) {
        return Err(ProtocolError::bad_request("a room has one owner: add as `member` or `admin`").into());
    }
    gw.check_user(&a.user).await?;
    let added = gw.call(room.clone(), Command::Add { user: a.user.clone(), role: a.role }, false).await?;
    Ok(Json(json!({"room": room, "user": a.user, "last_seq": added["last_seq"]})).into_response())
}

async fn remove_member(
    State(gw): State<Gateway>,
    Path((room, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    validate::joinable_room(&room)?;
    user_name("user", &user)?;
    gw.call(room, Command::Remove { user }, false).await?;
    Ok(Json(json!({})).into_response())
}

async fn messages(
    State(gw): State<Gateway>,
    Path(room): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let number = |name: &str| -> Result<Option<u64>, ProtocolError> {
        query
            .get(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ProtocolError::bad_request(format!("{name} must be a non-negative integer")))
            })
            .transpose()
    };
    let before = number("before")?;
    let limit = number("limit")?.map(|l| u32::try_from(l).unwrap_or(u32::MAX));
    validate::room_ref(&room)?;
    validate::history_limit(limit)?;
    if dm_members(&room).is_none() {
        gw.check_room(&room).await?;
    }
    let (messages, more) = gw.history_page(&room, before, limit).await?;
    let body = match more {
        true => json!({ "messages": messages, "more": true }),
        false => json!({ "messages": messages }),
    };
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
struct CreateUser {
    user: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    bot: bool,
}

async fn create_user(State(gw): State<Gateway>, bytes: Bytes) -> Result<Response, ApiError> {
    let c: CreateUser = body(&bytes, r#"{"user","password"?,"display_name"?,"bot"?}"#)?;
    user_name("user", &c.user)?;
    if let Some(p) = &c.password {
        validate::password(p)?;
    }
    if let Some(d) = &c.display_name {
        accounts::display_name(d)?;
    }
    let password_hash = match c.password {
        // An application's user: signs in with the application's tokens only.
        None => String::new(),
        Some(p) => gw
            .inner
            .hashes
            .run(move || crate::auth::hash_password(&p))
            .await
            .map_err(|_| ProtocolError::unavailable("too many password hashes at once; retry shortly"))?,
    };
    let record = UserRecord { name: c.user.clone(), password_hash, created_ms: unix_ms(), bot: c.bot };
    if !gw.inner.store.create_user(&record).await.map_err(store_error)? {
        return Err(error(ErrorCode::Taken, format!("the user name '{}' is taken", c.user)));
    }
    if let Some(d) = c.display_name.clone() {
        gw.set_profile(&c.user, Some(d), None).await?;
    }
    tracing::info!(user = %c.user, bot = c.bot, "user created by the server API");
    let mut reply = json!({"user": c.user, "display_name": c.display_name.unwrap_or_default()});
    if c.bot {
        reply["bot"] = json!(true);
    }
    Ok((StatusCode::CREATED, Json(reply)).into_response())
}

async fn delete_user(State(gw): State<Gateway>, Path(user): Path<String>) -> Result<Response, ApiError> {
    user_name("user", &user)?;
    gw.delete_account(&user, unix_ms()).await?;
    Ok(Json(json!({})).into_response())
}

async fn disconnect(State(gw): State<Gateway>, Path(user): Path<String>) -> Result<Response, ApiError> {
    user_name("user", &user)?;
    gw.check_user(&user).await?;
    let closed = gw.inner.registry.disconnect(&user);
    tracing::info!(%user, closed, "disconnected by the server API");
    let announcement = confab_protocol::Announcement::Disconnect { gateway: gw.id().into(), user };
    if let Err(e) = gw.inner.bus.announce(&announcement).await {
        tracing::warn!(error = %e, "cannot announce a disconnection");
        return Err(ProtocolError::unavailable(
            "this gateway's sessions are closed, but not every server heard; retry",
        )
        .into());
    }
    Ok(Json(json!({})).into_response())
}

async fn revoke(State(gw): State<Gateway>, Path(user): Path<String>) -> Result<Response, ApiError> {
    user_name("user", &user)?;
    gw.check_user(&user).await?;
    gw.revoke(&user, unix_ms().max(1), None).await?;
    Ok(Json(json!({})).into_response())
}

#[derive(Deserialize)]
struct TokenRequest {
    user: String,
    ttl_secs: u64,
}

async fn token(State(gw): State<Gateway>, bytes: Bytes) -> Result<Response, ApiError> {
    let t: TokenRequest = body(&bytes, r#"{"user","ttl_secs"}"#)?;
    user_name("user", &t.user)?;
    let max = gw.inner.auth.max_lifetime().as_secs();
    if t.ttl_secs == 0 || t.ttl_secs > max {
        return Err(
            ProtocolError::bad_request(format!("`ttl_secs` must be 1 to {max} (max_token_lifetime_secs)")).into()
        );
    }
    gw.check_user(&t.user).await?;
    let (token, expires_at) = gw.inner.auth.issue_for(&t.user, Duration::from_secs(t.ttl_secs));
    Ok(Json(json!({"token": token, "user": t.user, "expires_at": expires_at})).into_response())
}

async fn presence(State(gw): State<Gateway>, Query(query): Query<Vec<(String, String)>>) -> Result<Response, ApiError> {
    let mut online = BTreeMap::new();
    for (name, user) in query {
        if name != "user" {
            return Err(
                ProtocolError::bad_request(format!("unknown parameter `{name}`: give `user=NAME`, repeated")).into()
            );
        }
        user_name("user", &user)?;
        online.insert(user, false);
        if online.len() > MAX_PRESENCE_USERS {
            return Err(ProtocolError::bad_request(format!("at most {MAX_PRESENCE_USERS} users at once")).into());
        }
    }
    if online.is_empty() {
        return Err(ProtocolError::bad_request("name users with `user=NAME`, repeated").into());
    }
    for (user, is) in online.iter_mut() {
        *is = gw.is_online(user);
    }
    Ok(Json(json!({ "online": online })).into_response())
}

async fn stats(State(gw): State<Gateway>) -> Result<Response, ApiError> {
    let registry = &gw.inner.registry;
    let mut users: std::collections::HashSet<String> = gw.inner.presence.remote_users().into_iter().collect();
    for s in registry.sessions() {
        users.insert(s.user.to_string());
    }
    let reply = json!({
        "gateway": gw.id(),
        "connections": registry.len(),
        "users_online": users.len(),
        "rooms": registry.room_count(),
        "messages_per_second": gw.inner.message_rate.per_second(),
    });
    Ok(Json(reply).into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_openapi_document_lists_every_route_and_no_other() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let routed: BTreeSet<(String, String)> = routes().into_iter().map(|(m, p)| (m.into(), p.into())).collect();
        assert_eq!(documented, routed, "openapi.json and the router differ");
        for (method, path) in &documented {
            let op = &doc["paths"][path][method];
            assert!(op["responses"]["200"].is_object() || op["responses"]["201"].is_object(), "{method} {path}");
            assert!(op["responses"]["401"].is_object(), "{method} {path} documents the refusal");
        }
    }
}
