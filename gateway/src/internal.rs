//! The internal port: where dispatchers push deliveries to this gateway, one
//! persistent WebSocket per dispatcher. The wire (path, credentials, frames)
//! is [`confab_bus::push`]'s; this is only its authentication and upgrade.
//! What arrives goes into the gateway's inbox, the same one that
//! [`delivery::run`](crate::delivery::run) drains in every mode.

use std::future::ready;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use confab_bus::push::{self, InternalKey, MAX_FRAME_BYTES, PUSH_PATH};
use confab_protocol::Delivery;
use futures_util::StreamExt;
use tokio::sync::mpsc;

#[derive(Clone)]
struct Internal {
    key: InternalKey,
    inbox: mpsc::Sender<Vec<Delivery>>,
}

/// The internal router: takes push streams whose token was minted with the
/// cluster's HS256 `secret`, and feeds them into `inbox`.
pub fn router(secret: &[u8], inbox: mpsc::Sender<Vec<Delivery>>) -> Router {
    Router::new().route(PUSH_PATH, get(upgrade)).with_state(Internal { key: InternalKey::new(secret), inbox })
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
        push::receive(frames, &internal.inbox).await;
        tracing::info!("a dispatcher disconnected");
    })
}
