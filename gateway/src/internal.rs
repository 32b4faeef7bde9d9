//! The internal port: where dispatchers push deliveries to this gateway, one
//! persistent WebSocket per dispatcher, each binary frame a JSON array of
//! [`Delivery`] in order. Dispatchers authenticate with a token signed by the
//! cluster's secret for the audience [`INTERNAL_AUDIENCE`].

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use confab_protocol::Delivery;
use futures_util::StreamExt;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;

use crate::Gateway;
use crate::registry::HostsDelta;

/// The `aud` of tokens for the internal port; client tokens never carry it.
pub const INTERNAL_AUDIENCE: &str = "confab-internal";
/// Path of the push stream on the internal port.
pub const PUSH_PATH: &str = "/internal/v1/push";

#[derive(Clone)]
struct Internal {
    gateway: Gateway,
    key: DecodingKey,
}

#[derive(Deserialize)]
struct InternalClaims {
    #[allow(dead_code)]
    sub: String,
}

/// The internal router, verifying tokens against the cluster's HS256 secret.
pub fn router(gateway: Gateway, secret: &[u8]) -> Router {
    Router::new().route(PUSH_PATH, get(push)).with_state(Internal { gateway, key: DecodingKey::from_secret(secret) })
}

async fn push(State(internal): State<Internal>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&[INTERNAL_AUDIENCE]);
    if jsonwebtoken::decode::<InternalClaims>(token, &internal.key, &validation).is_err() {
        return (StatusCode::UNAUTHORIZED, "internal token required").into_response();
    }
    let gateway = internal.gateway;
    // Pushes are batches of many events: allow large frames here.
    ws.max_message_size(64 << 20).max_frame_size(64 << 20).on_upgrade(move |socket| receive(gateway, socket))
}

async fn receive(gateway: Gateway, mut socket: WebSocket) {
    tracing::info!("a dispatcher connected");
    while let Some(Ok(msg)) = socket.next().await {
        let bytes = match msg {
            Message::Binary(b) => b,
            Message::Text(t) => t.into(),
            Message::Close(_) => break,
            _ => continue,
        };
        match serde_json::from_slice::<Vec<Delivery>>(&bytes) {
            Ok(batch) => {
                let mut delta = HostsDelta::default();
                for d in batch {
                    delta.merge(gateway.deliver(d));
                }
                gateway.announce(delta).await;
            }
            Err(e) => tracing::warn!(error = %e, "dropping an unreadable push batch"),
        }
    }
    tracing::info!("a dispatcher disconnected");
}
