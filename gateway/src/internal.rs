//! The internal port: where dispatchers push deliveries to this gateway, one
//! persistent WebSocket per dispatcher. The wire (path, credentials, frames)
//! is [`confab_bus::push`]'s; this is only its authentication and upgrade.
//! What arrives goes into the gateway's inbox, the same one that
//! [`delivery::run`](crate::delivery::run) drains in every mode.

use std::future::ready;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use confab_bus::push::{self, InternalKey, MAX_FRAME_BYTES, PUSH_PATH};
use confab_protocol::Delivery;
use futures_util::StreamExt;
use prometheus::IntCounter;
use tokio::sync::mpsc;

#[derive(Clone)]
struct Internal {
    key: InternalKey,
    gateway: Arc<str>,
    inbox: mpsc::Sender<Vec<Delivery>>,
    misdirected: IntCounter,
}

/// The internal router: takes push streams whose token was minted with the
/// key derived from the cluster's HS256 `secret` ([`InternalKey`]), and
/// feeds the batches meant for `gateway` (this gateway's id) into `inbox`;
/// batches for another id only count in `misdirected`.
pub fn router(secret: &[u8], gateway: &str, inbox: mpsc::Sender<Vec<Delivery>>, misdirected: IntCounter) -> Router {
    let internal = Internal { key: InternalKey::new(secret), gateway: gateway.into(), inbox, misdirected };
    Router::new().route(PUSH_PATH, get(upgrade)).with_state(internal)
}

async fn upgrade(State(internal): State<Internal>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    if internal.key.verify(&headers).is_err() {
        return (StatusCode::UNAUTHORIZED, "internal token required").into_response();
    }
    ws.max_message_size(MAX_FRAME_BYTES).max_frame_size(MAX_FRAME_BYTES).on_upgrade(move |socket| async move {
        tracing::info!("a dispatcher connected");
        let frames =
            socket.take_while(|m| ready(matches!(m, Ok(m) if !matches!(m, Message::Close(_))))).filter_map(|m| {
                ready(match m {
                    Ok(Message::Binary(b)) => Some(b),
                    Ok(Message::Text(t)) => Some(t.into()),
                    _ => None,
                })
            });
        push::receive(frames, &internal.gateway, &internal.inbox, || internal.misdirected.inc()).await;
        tracing::info!("a dispatcher disconnected");
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use confab_bus::push::{INTERNAL_AUDIENCE, TOKEN_LEEWAY, TOKEN_TTL, push_request};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use tokio_tungstenite::tungstenite;

    use super::*;
    use crate::auth::{Auth, unix_now};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// The internal port on a loopback port of its own.
    async fn internal_port() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (inbox, mut rx) = mpsc::channel(8);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let misdirected = IntCounter::new("misdirected", "test").unwrap();
        tokio::spawn(async move { axum::serve(listener, router(SECRET, "gw-1", inbox, misdirected)).await });
        addr
    }

    /// The HTTP status the internal port answers a push stream opened with `token`.
    async fn open_with(token: &str) -> StatusCode {
        let addr = internal_port().await;
        match tokio_tungstenite::connect_async(push_request(&addr, token, false).unwrap()).await {
            Ok((_, response)) => response.status(),
            Err(tungstenite::Error::Http(response)) => response.status(),
            Err(e) => panic!("the internal port answers: {e}"),
        }
    }

    fn signed_with_the_client_secret(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    #[tokio::test]
    async fn a_client_login_token_is_refused_at_the_internal_port() {
        let (login, _) =
            Auth::new(SECRET, &[], Duration::from_secs(3600), Duration::from_secs(3600)).unwrap().issue("alice");
        assert_eq!(open_with(&login).await, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_client_secret_token_with_the_internal_audience_is_refused() {
        let exp = unix_now() + 600;
        let forged = signed_with_the_client_secret(
            serde_json::json!({ "sub": "dispatcher", "aud": INTERNAL_AUDIENCE, "iat": exp - 600, "exp": exp }),
        );
        assert_eq!(open_with(&forged).await, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn an_expired_internal_token_is_refused() {
        let past = unix_now() - TOKEN_TTL.as_secs() - TOKEN_LEEWAY.as_secs() - 1;
        assert_eq!(open_with(&InternalKey::new(SECRET).mint_at(past)).await, StatusCode::UNAUTHORIZED);
    }

    /// With the internal key itself, another audience is refused too
    /// (`confab_bus::push` tests it, where the key is at hand).
    #[tokio::test]
    async fn a_token_for_another_audience_is_refused() {
        let exp = unix_now() + 600;
        let wrong = signed_with_the_client_secret(serde_json::json!({ "sub": "dispatcher", "aud": "web", "exp": exp }));
        assert_eq!(open_with(&wrong).await, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_fresh_internal_token_opens_the_push_stream() {
        assert_eq!(open_with(&InternalKey::new(SECRET).mint()).await, StatusCode::SWITCHING_PROTOCOLS);
    }
}
