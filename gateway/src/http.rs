//! The public HTTP surface: accounts, message history, the WebSocket upgrade
//! (authenticated before it happens) and the web client.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use confab_protocol::error::HttpErrorBody;
use confab_protocol::validate;
use confab_protocol::{ErrorCode, ProtocolError};
use confab_store::UserRecord;
use serde::Deserialize;
use serde_json::json;

use crate::Gateway;
use crate::auth::{Claims, Issuer, hash_password, verify_password};
use crate::hashing::HashError;
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
        .route("/v1/auth/password", post(change_password))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/logout-all", post(logout_all))
        .route("/v1/account", delete(delete_account))
        .route("/v1/rooms/{room}/messages", get(messages))
        .route("/v1/users/{user}", get(user_profile))
        .route("/v1/uploads", post(crate::uploads::upload))
        .route("/v1/uploads/{id}", get(crate::uploads::download))
        .route("/v1/uploads/{id}/thumbnail", get(crate::uploads::download_thumbnail))
        .route("/v1/uploads/{id}/sign", post(crate::uploads::sign))
        .route("/v1/ws", get(upgrade))
        .fallback(crate::web::asset)
        .with_state(gw.clone())
        .merge(crate::server_api::router(gw))
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

/// A refused `/v1/auth/*` request: an error with, where it helps the
/// client, a status of its own (415) and `Retry-After`.
struct Refusal {
    status: Option<StatusCode>,
    error: ProtocolError,
    retry_after: Option<Duration>,
}

impl From<ProtocolError> for Refusal {
    fn from(error: ProtocolError) -> Self {
        Refusal { status: None, error, retry_after: None }
    }
}

impl From<ApiError> for Refusal {
    fn from(ApiError(error): ApiError) -> Self {
        error.into()
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = ApiError(self.error).into_response();
        if let Some(status) = self.status {
            *response.status_mut() = status;
        }
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up: a client that waits this long gets in.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(header::RETRY_AFTER, secs.max(1).into());
        }
        response
    }
}

fn rate_limited(what: &str, wait: Duration) -> Refusal {
    Refusal {
        status: None,
        error: ProtocolError::new(ErrorCode::RateLimited, format!("too many attempts {what}; retry later")),
        retry_after: Some(wait),
    }
}

/// The checks every `/v1/auth/*` request passes before its body is read:
/// a JSON body, and the client address's attempt budget.
fn admit(gw: &Gateway, peer: Option<Extension<ConnectInfo<SocketAddr>>>, headers: &HeaderMap) -> Result<(), Refusal> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Refusal {
            status: Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            error: ProtocolError::bad_request("Content-Type must be application/json"),
            retry_after: None,
        });
    }
    // Without a peer address (a router used without `serve`), all share one budget.
    let ip = peer.map_or(Ipv4Addr::UNSPECIFIED.into(), |Extension(ConnectInfo(a))| a.ip());
    gw.inner.auth_limits.ip(ip).map_err(|wait| rate_limited("from this address", wait))
}

/// The user name's attempt budget.
fn admit_user(gw: &Gateway, user: &str) -> Result<(), Refusal> {
    gw.inner.auth_limits.user(user).map_err(|wait| rate_limited("for this user name", wait))
}

/// Runs a password hash on the gateway's hashing threads.
async fn hashed<T: Send + 'static>(gw: &Gateway, job: impl FnOnce() -> T + Send + 'static) -> Result<T, Refusal> {
    gw.inner.hashes.run(job).await.map_err(|e| match e {
        HashError::Busy => Refusal {
            status: None,
            error: ProtocolError::unavailable("too many sign-ins at once; retry shortly"),
            retry_after: Some(Duration::from_secs(1)),
        },
        HashError::Failed => ProtocolError::internal().into(),
    })
}

async fn register(
    State(gw): State<Gateway>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    admit(&gw, peer, &headers)?;
    if !gw.config().open_registration {
        return Err(ProtocolError::new(ErrorCode::Forbidden, "registration is closed on this server").into());
    }
    let c = credentials(&body)?;
    validate::username(&c.username)?;
    validate::password(&c.password)?;
    admit_user(&gw, &c.username)?;
    let password = c.password;
    let password_hash = hashed(&gw, move || hash_password(&password)).await?;
    let created_ms = crate::auth::unix_now() * 1000;
    let user = UserRecord { name: c.username.clone(), password_hash, created_ms, bot: false };
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

async fn login(
    State(gw): State<Gateway>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    admit(&gw, peer, &headers)?;
    let c = credentials(&body)?;
    // No account has a longer one, and hashing it would cost more.
    if c.password.len() > validate::MAX_PASSWORD_BYTES {
        return Err(validate::password(&c.password).unwrap_err().into());
    }
    let user = if validate::is_username(&c.username) {
        admit_user(&gw, &c.username)?;
        gw.inner.store.user(&c.username).await.map_err(store_error)?
    } else {
        None
    };
    // An application's user has no password here: they cost a decoy hash too.
    let user = user.filter(|u| !u.password_hash.is_empty());
    let phc = user.as_ref().map_or(DECOY_HASH.to_owned(), |u| u.password_hash.clone());
    let password = c.password;
    let matches = hashed(&gw, move || verify_password(&password, &phc)).await?;
    if !(matches && user.is_some()) {
        gw.inner.metrics.auth_failures.with_label_values(&["login"]).inc();
        return Err(ProtocolError::new(ErrorCode::Unauthorized, "wrong user name or password").into());
    }
    let (token, expires_at) = gw.inner.auth.issue(&c.username);
    Ok(Json(json!({ "token": token, "user": c.username, "expires_at": expires_at })).into_response())
}

#[derive(Deserialize)]
struct PasswordChange {
    old: String,
    new: String,
}

/// `POST /v1/auth/password`: checks the old password, stores the new one,
/// revokes every token of the user (this one too) and answers with a fresh
/// token, as login does.
async fn change_password(
    State(gw): State<Gateway>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, Refusal> {
    admit(&gw, peer, &headers)?;
    let claims = authenticate(&gw, &headers, &query, "password").await?;
    let c: PasswordChange = serde_json::from_slice(&body)
        .map_err(|e| ProtocolError::bad_request(format!("body must be {{\"old\",\"new\"}}: {e}")))?;
    if c.old.len() > validate::MAX_PASSWORD_BYTES {
        return Err(validate::password(&c.old).unwrap_err().into());
    }
    validate::password(&c.new)?;
    let user = claims.sub;
    admit_user(&gw, &user)?;
    let Some(account) = gw.inner.store.user(&user).await.map_err(store_error)? else {
        return Err(ProtocolError::new(ErrorCode::NotFound, format!("no user '{user}'")).into());
    };
    if account.password_hash.is_empty() {
        let message = "an application's user has no password here";
        return Err(ProtocolError::new(ErrorCode::Forbidden, message).into());
    }
    let (old, phc) = (c.old, account.password_hash);
    if !hashed(&gw, move || verify_password(&old, &phc)).await? {
        gw.inner.metrics.auth_failures.with_label_values(&["password"]).inc();
        return Err(ProtocolError::new(ErrorCode::Unauthorized, "wrong password").into());
    }
    let new = c.new;
    let password_hash = hashed(&gw, move || hash_password(&new)).await?;
    if !gw.inner.store.set_password(&user, &password_hash).await.map_err(store_error)? {
        return Err(ProtocolError::new(ErrorCode::NotFound, format!("no user '{user}'")).into());
    }
    gw.revoke(&user, now_ms(), None).await?;
    // Issued after the revocation, so it survives it.
    let (token, expires_at) = gw.inner.auth.issue(&user);
    tracing::info!(%user, "password changed");
    Ok(Json(json!({ "token": token, "user": user, "expires_at": expires_at })).into_response())
}

#[derive(Deserialize)]
struct AccountDeletion {
    password: String,
}

/// `DELETE /v1/account`: checks the password, then erases the account
/// (see [`Gateway::delete_account`]).
async fn delete_account(
    State(gw): State<Gateway>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, Refusal> {
    admit(&gw, peer, &headers)?;
    let claims = authenticate(&gw, &headers, &query, "account").await?;
    let c: AccountDeletion = serde_json::from_slice(&body)
        .map_err(|e| ProtocolError::bad_request(format!("body must be {{\"password\"}}: {e}")))?;
    if c.password.len() > validate::MAX_PASSWORD_BYTES {
        return Err(validate::password(&c.password).unwrap_err().into());
    }
    let user = claims.sub;
    admit_user(&gw, &user)?;
    let Some(account) = gw.inner.store.user(&user).await.map_err(store_error)? else {
        return Err(ProtocolError::new(ErrorCode::NotFound, format!("no user '{user}'")).into());
    };
    if account.password_hash.is_empty() {
        let message = "an application's user is deleted by the application, not here";
        return Err(ProtocolError::new(ErrorCode::Forbidden, message).into());
    }
    let (password, phc) = (c.password, account.password_hash);
    if !hashed(&gw, move || verify_password(&password, &phc)).await? {
        gw.inner.metrics.auth_failures.with_label_values(&["account"]).inc();
        return Err(ProtocolError::new(ErrorCode::Unauthorized, "wrong password").into());
    }
    gw.delete_account(&user, now_ms()).await?;
    Ok(Json(json!({})).into_response())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The checks of `/v1/auth/logout*`: the address's attempt budget (they
/// have no body to type).
fn admit_ip(gw: &Gateway, peer: Option<Extension<ConnectInfo<SocketAddr>>>) -> Result<(), Refusal> {
    let ip = peer.map_or(Ipv4Addr::UNSPECIFIED.into(), |Extension(ConnectInfo(a))| a.ip());
    gw.inner.auth_limits.ip(ip).map_err(|wait| rate_limited("from this address", wait))
}

/// `POST /v1/auth/logout`: revokes the request's token.
async fn logout(
    State(gw): State<Gateway>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    let claims = signed_out_by(&gw, peer, &headers, &query).await?;
    let Some(jti) = claims.jti.as_deref() else {
        let message = "this token has no `jti`, so it cannot be revoked alone; use /v1/auth/logout-all";
        return Err(ProtocolError::bad_request(message).into());
    };
    gw.revoke(&claims.sub, 0, Some((jti, claims.exp))).await?;
    Ok(Json(json!({})).into_response())
}

/// `POST /v1/auth/logout-all`: revokes every token of the user issued
/// before now.
async fn logout_all(
    State(gw): State<Gateway>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    let claims = signed_out_by(&gw, peer, &headers, &query).await?;
    gw.revoke(&claims.sub, now_ms(), None).await?;
    Ok(Json(json!({})).into_response())
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

/// The caller of `logout` or `logout-all`, admitted under the `/v1/auth/*`
/// limits of its address and of its user.
async fn signed_out_by(
    gw: &Gateway,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Claims, Refusal> {
    admit_ip(gw, peer)?;
    let claims = authenticate(gw, headers, query, "logout").await?;
    admit_user(gw, &claims.sub)?;
    Ok(claims)
}

/// The claims of the request's token; an application's user is created
/// in the store on first sight (see [`Gateway::application_user`]).
pub(crate) async fn authenticate(
    gw: &Gateway,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    place: &str,
) -> Result<Claims, ApiError> {
    authenticate_token(gw, token(headers, query), place).await.map_err(ApiError)
}

/// The claims of `token` (none is `unauthorized`), as [`authenticate`]
/// checks them; a refusal other than `unavailable` counts in
/// `confab_auth_failures_total{place}`.
pub(crate) async fn authenticate_token(
    gw: &Gateway,
    token: Option<&str>,
    place: &str,
) -> Result<Claims, ProtocolError> {
    let result = match token {
        None => Err(ProtocolError::new(ErrorCode::Unauthorized, "a bearer token is required")),
        Some(t) => gw.inner.auth.verify(t),
    };
    let result = match result {
        Ok((claims, Issuer::Application)) => gw.application_user(&claims.sub).await.map(|()| claims),
        Ok((claims, Issuer::Server)) => Ok(claims),
        Err(e) => Err(e),
    };
    let result = match result {
        Ok(claims) => gw.check_not_revoked(&claims).await.map(|()| claims),
        Err(e) => Err(e),
    };
    result.inspect_err(|e| {
        if e.code != ErrorCode::Unavailable {
            gw.inner.metrics.auth_failures.with_label_values(&[place]).inc();
        }
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
    let claims = authenticate(&gw, &headers, &query, "http").await?;
    let before = number::<u64>(&query, "before")?;
    let limit = number::<u32>(&query, "limit")?;
    validate::room_ref(&room)?;
    validate::history_limit(limit)?;
    let (messages, more) = gw.history(&claims.sub, &room, before, limit).await?;
    let body = match more {
        true => json!({ "messages": messages, "more": true }),
        false => json!({ "messages": messages }),
    };
    Ok(Json(body).into_response())
}

async fn user_profile(
    State(gw): State<Gateway>,
    Path(user): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authenticate(&gw, &headers, &query, "http").await?;
    validate::username(&user)?;
    Ok(Json(gw.profile(&user).await?).into_response())
}

async fn upgrade(
    State(gw): State<Gateway>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let claims = authenticate(&gw, &headers, &query, "ws").await?;
    if gw.is_draining() {
        return Err(ProtocolError::unavailable("this server is restarting; connect again").into());
    }
    let (mut parts, _body) = request.into_parts();
    // The connection's upgrade, kept for yawc: axum's extractor takes it out
    // of the request (and it is shared: whichever is awaited gets it).
    let on_upgrade = parts.extensions.get::<hyper::upgrade::OnUpgrade>().cloned();
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &gw)
        .await
        .map_err(|e| ProtocolError::bad_request(format!("not a WebSocket upgrade: {e}")))?;
    // Taken before the upgrade and held by the session: a user cannot open
    // sessions without bound, and two upgrades at once race for one seat.
    let Some(seat) = gw.inner.seats.take(&claims.sub) else {
        gw.inner.metrics.sessions_refused.with_label_values(&["too_many_sessions"]).inc();
        let max = gw.inner.seats.max();
        let message = format!("this user has {max} sessions on this server already; close one first");
        return Err(ProtocolError::new(ErrorCode::RateLimited, message).into());
    };
    let c = gw.config();
    let offered = crate::session::websocket_deflate::offered(
        parts.headers.get_all(axum::http::header::SEC_WEBSOCKET_EXTENSIONS).iter().map(|v| v.as_bytes()),
    );
    if let (true, true, Some(on_upgrade)) = (c.ws_compression, offered, on_upgrade) {
        // The client offers permessage-deflate: yawc upgrades, with the same
        // limits and buffers as below.
        drop(ws);
        parts.extensions.insert(on_upgrade);
        let mut request = axum::http::Request::from_parts(parts, ());
        let options = crate::session::websocket_deflate::options(
            c.max_frame_bytes,
            c.ws_compression_threshold,
            c.ws_read_buffer,
            c.ws_write_buffer,
        );
        let (response, upgraded) = yawc::WebSocket::upgrade_with_options(&mut request, options)
            .map_err(|e| ProtocolError::bad_request(format!("not a WebSocket upgrade: {e}")))?;
        tokio::spawn(async move {
            let socket = match upgraded.await {
                Ok(socket) => socket,
                Err(e) => return tracing::debug!(error = %e, "WebSocket upgrade failed"),
            };
            let tracker = gw.clone();
            let (sink, stream) = crate::session::websocket_deflate::split(socket);
            tracker.spawn_session(async move {
                let _seat = seat;
                crate::session::run(gw, sink, stream, claims).await
            });
        });
        return Ok(response.map(axum::body::Body::new));
    }
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
        tracker.spawn_session(async move {
            let _seat = seat;
            crate::session::run(gw, sink, stream, claims).await
        });
    }))
}
