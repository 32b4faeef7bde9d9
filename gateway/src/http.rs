//! The public HTTP surface: accounts, message history, the WebSocket upgrade
//! (authenticated before it happens) and the web client.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use confab_protocol::error::HttpErrorBody;
use confab_protocol::validate;
use confab_protocol::{ErrorCode, ProtocolError};
use confab_store::UserRecord;
use serde::Deserialize;
use serde_json::json;

use crate::Gateway;
use crate::auth::{Claims, hash_password, on_hash_threads, verify_password};
use crate::ops::store_error;

/// A protocol error as an HTTP response: the code's status and
/// `{"error":{"code","message"}}`.
pub struct ApiError(pub ProtocolError);

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(HttpErrorBody { error: self.0 })).into_response()
    }
}

pub fn router(gw: Gateway) -> Router {
    Router::new()
        .route("/v1/auth/register", post(register))
        .route("/v1/auth/login", post(login))
        .route("/v1/rooms/{room}/messages", get(messages))
        .route("/v1/ws", get(upgrade))
        .fallback(crate::web::asset)
        .with_state(gw)
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

fn credentials(body: &[u8]) -> Result<Credentials, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ProtocolError::bad_request(format!("body must be {{\"username\",\"password\"}}: {e}")).into())
}

async fn register(State(gw): State<Gateway>, body: Bytes) -> Result<Response, ApiError> {
    let c = credentials(&body)?;
    validate::username(&c.username)?;
    validate::password(&c.password)?;
    let password = c.password;
    let password_hash = on_hash_threads(move || hash_password(&password)).await.ok_or_else(ProtocolError::internal)?;
    let created_ms = crate::auth::unix_now() * 1000;
    let user = UserRecord { name: c.username.clone(), password_hash, created_ms };
    if !gw.inner.store.create_user(&user).await.map_err(store_error)? {
        return Err(ProtocolError::new(ErrorCode::Taken, format!("the user name '{}' is taken", c.username)).into());
    }
    tracing::info!(user = %c.username, "registered");
    Ok((StatusCode::CREATED, Json(json!({ "user": c.username }))).into_response())
}

/// A well-formed hash of nothing anybody knows, so a login for a missing
/// user costs what a wrong password costs and does not reveal which it was.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$7b5Pz1JdPdGx4lJtZ9r2v8yR0HcN1bZk0Yt1cQ8sW2g";

async fn login(State(gw): State<Gateway>, body: Bytes) -> Result<Response, ApiError> {
    let c = credentials(&body)?;
    let user = if validate::is_username(&c.username) {
        gw.inner.store.user(&c.username).await.map_err(store_error)?
    } else {
        None
    };
    let phc = user.as_ref().map_or(DECOY_HASH.to_owned(), |u| u.password_hash.clone());
    let password = c.password;
    let matches =
        on_hash_threads(move || verify_password(&password, &phc)).await.ok_or_else(ProtocolError::internal)?;
    if !(matches && user.is_some()) {
        gw.inner.metrics.auth_failures.with_label_values(&["login"]).inc();
        return Err(ProtocolError::new(ErrorCode::Unauthorized, "wrong user name or password").into());
    }
    let (token, expires_at) = gw.inner.auth.issue(&c.username);
    Ok(Json(json!({ "token": token, "user": c.username, "expires_at": expires_at })).into_response())
}

/// The token of a request: `Authorization: Bearer` or, for browsers, `?token=`.
fn token<'a>(headers: &'a HeaderMap, query: &'a HashMap<String, String>) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .or_else(|| query.get("token").map(String::as_str))
}

fn authenticate(
    gw: &Gateway,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    place: &str,
) -> Result<Claims, ApiError> {
    let result = match token(headers, query) {
        None => Err(ProtocolError::new(ErrorCode::Unauthorized, "a bearer token is required")),
        Some(t) => gw.inner.auth.verify(t),
    };
    result.map_err(|e| {
        gw.inner.metrics.auth_failures.with_label_values(&[place]).inc();
        ApiError(e)
    })
}

fn number<T: std::str::FromStr>(query: &HashMap<String, String>, name: &str) -> Result<Option<T>, ApiError> {
    match query.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ProtocolError::bad_request(format!("{name} must be a non-negative integer")).into()),
    }
}

async fn messages(
    State(gw): State<Gateway>,
    Path(room): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = authenticate(&gw, &headers, &query, "http")?;
    let before = number::<u64>(&query, "before")?;
    let limit = number::<u32>(&query, "limit")?;
    validate::room_ref(&room)?;
    validate::history_limit(limit)?;
    let messages = gw.history(&claims.sub, &room, before, limit).await?;
    Ok(Json(json!({ "messages": messages })).into_response())
}

async fn upgrade(
    State(gw): State<Gateway>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let claims = authenticate(&gw, &headers, &query, "ws")?;
    if gw.is_draining() {
        return Err(ProtocolError::unavailable("this server is restarting; connect again").into());
    }
    let ws = ws.map_err(|e| ProtocolError::bad_request(format!("not a WebSocket upgrade: {e}")))?;
    let c = gw.config();
    let ws = ws
        .read_buffer_size(c.ws_read_buffer)
        .write_buffer_size(c.ws_write_buffer)
        // No cap on the write buffer: one reply (a page of history, a sync)
        // can be far larger than a client frame, and the session's bounded
        // queue is what limits memory.
        .max_message_size(c.max_frame_bytes)
        .max_frame_size(c.max_frame_bytes);
    Ok(ws.on_upgrade(move |socket| async move {
        let tracker = gw.clone();
        let (sink, stream) = crate::session::websocket::split(socket);
        tracker.spawn_session(crate::session::run(gw, sink, stream, claims));
    }))
}
