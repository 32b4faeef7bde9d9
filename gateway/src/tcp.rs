//! The raw TCP listener (`tcp_listen`): the v1 session over newline-delimited
//! JSON, plain or TLS, for clients without a WebSocket library (bots, shells,
//! embedded devices). The first line must be `{"op":"auth","token":"..."}`;
//! it is answered with `hello`, after which the connection is a session like
//! a WebSocket's ([`crate::session::run`], over [`crate::session::tcp`]),
//! with the same limits, heartbeats, rate limits and events. A refused
//! `auth` is answered with an error reply, a `bye` whose reason is the
//! error's code, and a close.
//!
//! Connections count against [`ConnectionLimits`] of their own (the same
//! values as the public listener's); the `auth` line must come within the
//! header read timeout.

use std::time::Duration;

use confab_protocol::{ErrorCode, ProtocolError, Reply, RequestId};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Gateway;
use crate::auth::Claims;
use crate::serve::{Admission, ConnectionLimits, Counted};
use crate::session::tcp::{LineSink, Lines};
use crate::session::{Frame, ReadError};

/// How long the last words of a refused connection may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Accepts connections until `shutdown`. Sessions are not cut here: the
/// gateway's drain closes them with `bye server_restart`, as it does
/// WebSocket sessions.
pub async fn serve(
    listener: TcpListener,
    gw: Gateway,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let admission = Admission::new(limits);
    // Connections still authenticating; sessions are the gateway's to track.
    let pending = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = admission.admit(peer.ip()) else {
            tracing::debug!(%peer, "TCP connection refused: over the connection limits");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = Counted { stream, _admitted: admitted };
        let (gw, tls) = (gw.clone(), tls.clone());
        pending.spawn(async move {
            match tls {
                None => connection(gw, stream, limits).await,
                Some(tls) => match tokio::time::timeout(limits.header_read_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => connection(gw, stream, limits).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TCP TLS handshake failed"),
                    Err(_) => tracing::debug!("TCP TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    pending.close();
    let _ = tokio::time::timeout(limits.header_read_timeout, pending.wait()).await;
}

/// Authenticates one connection and, once it is, runs its session.
async fn connection<S>(gw: Gateway, stream: S, limits: ConnectionLimits)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut sink, mut lines) = crate::session::tcp::split(stream, gw.config().max_frame_bytes);
    let first = tokio::time::timeout(limits.header_read_timeout, async {
        loop {
            match lines.next().await {
                // Heartbeats before `auth` are allowed, and are nothing.
                Some(Ok(Frame::Pong)) => continue,
                other => return other,
            }
        }
    })
    .await;
    let text = match first {
        Ok(Some(Ok(Frame::Text(text)))) => text,
        Ok(Some(Ok(_))) => {
            let e = ProtocolError::new(ErrorCode::Unauthorized, "the first line must be an `auth` request");
            return refuse(sink, None, e).await;
        }
        Ok(Some(Err(ReadError::TooLarge))) => {
            let close = crate::session::Close::new(1009, "frame_too_large");
            let _ = tokio::time::timeout(REFUSAL_TIMEOUT, sink.send(Frame::Close(Some(close)))).await;
            return;
        }
        // The client left, or its connection broke.
        Ok(None | Some(Err(ReadError::Connection(_)))) => return,
        Err(_) => {
            let e = ProtocolError::new(ErrorCode::Unauthorized, "no `auth` request in time");
            return refuse(sink, None, e).await;
        }
    };
    let (id, token) = auth_request(text.as_str());
    let claims = match crate::http::authenticate_token(&gw, token.as_deref(), "tcp").await {
        Ok(claims) => claims,
        Err(e) => return refuse(sink, id, e).await,
    };
    admitted(gw, sink, lines, id, claims).await;
}

/// The `id` and `token` of an `auth` line, as far as it has them; anything
/// that is not an `auth` request has no token.
fn auth_request(text: &str) -> (Option<RequestId>, Option<String>) {
    let Ok(serde_json::Value::Object(mut request)) = serde_json::from_str(text) else { return (None, None) };
    let id = request.remove("id").and_then(|id| serde_json::from_value(id).ok());
    if request.get("op").and_then(|op| op.as_str()) != Some("auth") {
        return (id, None);
    }
    let token = match request.remove("token") {
        Some(serde_json::Value::String(token)) => Some(token),
        _ => None,
    };
    (id, token)
}

/// A user whose token is good: the checks the WebSocket upgrade makes
/// (draining, sessions per user), then the session.
async fn admitted<W>(gw: Gateway, sink: LineSink<W>, lines: Lines, id: Option<RequestId>, claims: Claims)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    if gw.is_draining() {
        return refuse(sink, id, ProtocolError::unavailable("this server is restarting; connect again")).await;
    }
    let Some(seat) = gw.inner.seats.take(&claims.sub) else {
        gw.inner.metrics.sessions_refused.with_label_values(&["too_many_sessions"]).inc();
        let max = gw.inner.seats.max();
        let message = format!("this user has {max} sessions on this server already; close one first");
        return refuse(sink, id, ProtocolError::new(ErrorCode::RateLimited, message)).await;
    };
    let tracker = gw.clone();
    tracker.spawn_session(async move {
        let _seat = seat;
        crate::session::run(gw, sink, lines, claims).await
    });
}

/// Refuses a connection: the error as the reply to its `auth` line, a `bye`
/// whose reason is the error's code, and the close.
async fn refuse<W: AsyncWrite + Unpin>(mut sink: LineSink<W>, id: Option<RequestId>, error: ProtocolError) {
    tracing::debug!(code = ?error.code, message = %error.message, "TCP session refused");
    let reason = serde_json::to_value(error.code).ok().and_then(|c| c.as_str().map(str::to_owned));
    let bye = serde_json::json!({ "ev": "bye", "reason": reason.as_deref().unwrap_or("unauthorized") });
    let last_words = async {
        sink.feed(Frame::Text(Reply::error(id, error).encode().into())).await?;
        sink.feed(Frame::Text(bye.to_string().into())).await?;
        sink.send(Frame::Close(None)).await
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, last_words).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_auth_line_gives_its_id_and_token_and_anything_else_no_token() {
        let id = |n: i64| Some(serde_json::from_value::<RequestId>(serde_json::json!(n)).unwrap());
        assert_eq!(auth_request(r#"{"op":"auth","id":1,"token":"t"}"#), (id(1), Some("t".into())));
        assert_eq!(auth_request(r#"{"op":"auth","token":7}"#), (None, None));
        assert_eq!(auth_request(r#"{"op":"join","id":2,"room":"x"}"#), (id(2), None));
        assert_eq!(auth_request(r#"[1,2]"#), (None, None));
        assert_eq!(auth_request("not json"), (None, None));
    }
}
