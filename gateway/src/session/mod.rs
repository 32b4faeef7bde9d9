//! One client session: a reader task and a writer task joined by `select!`.
//! The reader decodes and handles requests in order; the writer drains the
//! session's bounded queue, coalescing whatever is queued into one flush,
//! and writes the server's side of every close.
//!
//! The session logic is generic over a `Sink`/`Stream` pair of [`Frame`]s,
//! so it runs over any transport: [`websocket`] adapts axum's WebSocket,
//! [`websocket_deflate`] yawc's (when permessage-deflate is negotiated),
//! [`tcp`] newline-delimited JSON over a TCP (or TLS) connection, and tests
//! drive sessions over channels.

pub mod frame;
pub mod tcp;
pub mod websocket;
pub mod websocket_deflate;

#[cfg(test)]
mod tests;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use confab_protocol::{ErrorCode, Event, Op, ProtocolError, Reply, Request, RequestId};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use governor::Quota;

use crate::Gateway;
use crate::auth::Claims;
use crate::ops::Outcome;
use crate::outbound;
use crate::registry::{Closing, Outbound, SessionHandle};
pub use frame::{Close, Frame, ReadError};

/// Most frames written between two flushes.
const COALESCE: usize = 64;
/// How long the server's last words (`bye`, close frame) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs one session of the user `claims` names, over a connection already
/// authenticated, until it closes.
pub async fn run<W, R>(gw: Gateway, mut sink: W, mut stream: R, claims: Claims)
where
    W: Sink<Frame> + Unpin,
    R: Stream<Item = Result<Frame, ReadError>> + Unpin,
{
    let config = gw.config();
    let user: Arc<str> = Arc::from(claims.sub.as_str());
    let store = &gw.inner.store;
    let loaded = match tokio::try_join!(store.user_room_names(&user), store.blocks(&user)) {
        Ok((rooms, blocked)) => {
            // Before the session is registered: no event reaches it unfiltered.
            gw.inner.blocks.set(&user, blocked.clone());
            (rooms, blocked)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot load the user's rooms; refusing the session");
            let close = Frame::Close(Some(Close::new(1011, "store unavailable")));
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(close)).await;
            return;
        }
    };

    let (tx, rx) = outbound::channel(config.outbound_queue.max(1));
    let nz = |n: u32| NonZeroU32::new(n.max(1)).expect("at least 1");
    let quota = Quota::per_second(nz(config.rate_per_second)).allow_burst(nz(config.rate_burst));
    let now_ms = gw.now_ms();
    let expires_ms = now_ms.saturating_add(token_left(claims.exp).as_millis() as u64);
    let session = Arc::new(
        SessionHandle::new(
            gw.inner.registry.next_id(),
            user.clone(),
            expires_ms,
            quota,
            tx,
            config.outbound_queue_bytes,
            now_ms,
        )
        .with_token(claims.issued_ms(), claims.jti.as_deref()),
    );
    // The server speaks first: `hello` is queued before the session is
    // registered, that is before any room event or presence can reach it.
    let hello = Event::Hello {
        user: user.to_string(),
        session: format!("s-{:x}", session.id),
        server: gw.id().into(),
        heartbeat_ms: config.heartbeat.as_millis() as u64,
    };
    session.send(hello.encode().into());
    // Not held for the session's life: what is alive across an `.await` is
    // memory in every idle session's task.
    drop(hello);

    let (rooms, blocked) = loaded;
    let was_online = gw.is_online(&user);
    let delta = gw.inner.registry.open(session.clone(), rooms);
    // Again, now that the session counts as local: another session of the
    // user closing meanwhile may have forgotten the list.
    gw.inner.blocks.set(&user, blocked);
    gw.announce(delta).await;
    if !was_online {
        gw.tell_presence(&user, true).await;
    }
    let metrics = &gw.inner.metrics;
    metrics.sessions_opened.inc();
    metrics.connections.inc();
    if gw.is_draining() {
        session.close(Closing::Bye(confab_protocol::ByeReason::ServerRestart));
    }

    let reason = tokio::select! {
        r = reader(&gw, &session, &mut stream) => r,
        r = writer(&gw, &session, sink, rx) => r,
    };
    if session.closing().is_some_and(|c| !matches!(c, Closing::ClientClosed(_))) {
        // The closing handshake the server began: read until the client's
        // close frame, so the socket is not torn down under frames the
        // client has yet to read.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(frame)) = stream.next().await {
                if let Frame::Close(_) = frame {
                    break;
                }
            }
        })
        .await;
    }

    let delta = gw.inner.registry.close(session.id);
    if !gw.inner.registry.is_local(&user) {
        gw.inner.blocks.forget(&user);
    }
    gw.announce(delta).await;
    if !gw.is_online(&user) {
        gw.tell_presence(&user, false).await;
    }
    metrics.connections.dec();
    metrics.sessions_closed.with_label_values(&[reason]).inc();
    tracing::debug!(session = session.id, %user, reason, "session closed");
}

/// How long until a token that expires at `exp` (unix seconds) expires.
fn token_left(exp: u64) -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Duration::from_secs(exp).saturating_sub(now)
}

async fn reader<R>(gw: &Gateway, session: &SessionHandle, stream: &mut R) -> &'static str
where
    R: Stream<Item = Result<Frame, ReadError>> + Unpin,
{
    while let Some(read) = stream.next().await {
        session.touch(gw.now_ms());
        match read {
            Ok(Frame::Text(text)) => {
                gw.inner.metrics.frames_in.inc();
                on_text(gw, session, text.as_str()).await;
            }
            Ok(Frame::Binary) => {
                gw.inner.metrics.frames_in.inc();
                // Refusing a frame costs the server too: binary ones spend
                // the budget as text ones do.
                if spend(gw, session, 1, None) {
                    reply(
                        session,
                        Reply::error(None, ProtocolError::bad_request("frames must be text, one JSON object each")),
                    );
                }
            }
            Ok(Frame::Ping | Frame::Pong) => {}
            // The writer answers it (RFC 6455 5.5.1), unless the server is
            // already closing, in which case its own close is the answer.
            Ok(Frame::Close(close)) => session.close(Closing::ClientClosed(close.map(|c| c.code))),
            Err(ReadError::TooLarge) => session.close(Closing::Code(1009, "frame_too_large")),
            Err(ReadError::Connection(e)) => {
                tracing::debug!(session = session.id, error = %e, "connection lost");
                return "connection_error";
            }
        }
        if session.closing().is_some() {
            // The writer is saying goodbye; let it finish.
            std::future::pending::<()>().await;
        }
    }
    "client_closed"
}

async fn on_text(gw: &Gateway, session: &SessionHandle, text: &str) {
    let decoded = Request::decode(text, gw.config().max_text_bytes);
    let (id, cost) = match &decoded {
        // A sync reads every room it names: one unit per room.
        Ok(Request { id, op: Op::Sync { rooms, .. } }) => (id, rooms.len()),
        Ok(r) => (&r.id, 1),
        Err(e) => (&e.id, 1),
    };
    if !spend(gw, session, cost, id.clone()) {
        return;
    }
    match decoded {
        Err(e) => {
            gw.inner.metrics.requests.with_label_values(&["invalid", "bad_request"]).inc();
            reply(session, Reply::error(e.id, e.error));
        }
        Ok(req) => {
            // At most one large read per session: the next waits until the
            // reply of the one before is written, so a client that reads
            // nothing has one such reply queued, not one per request.
            let large = matches!(req.op, Op::History { .. } | Op::Sync { .. } | Op::Edits { .. });
            // Boxed: handling a request (and waiting for a large read's turn)
            // is a large future, and inline it would make every session's
            // task that large, idle or not.
            let handled = Box::pin(async {
                if large {
                    session.large_read().await;
                }
                gw.handle(session, req).await
            });
            match handled.await {
                Outcome::Reply(r) if large => {
                    session.send_large_reply(r.encode().into());
                }
                Outcome::Reply(r) => reply(session, r),
                Outcome::Pending if large => session.large_read_done(),
                Outcome::Pending => {}
            }
        }
    }
}

/// Takes `cost` units of the session's request budget, at most a burst's
/// worth (a request that costs more empties it); `false`, and `id` answered
/// with `rate_limited`, when the budget has not that much left.
fn spend(gw: &Gateway, session: &SessionHandle, cost: usize, id: Option<RequestId>) -> bool {
    let burst = gw.config().rate_burst.max(1);
    let n = NonZeroU32::new(u32::try_from(cost).unwrap_or(u32::MAX).clamp(1, burst)).expect("at least 1");
    if let Ok(Ok(())) = session.limiter.check_n(n) {
        return true;
    }
    gw.inner.metrics.requests.with_label_values(&["any", "rate_limited"]).inc();
    let error = ProtocolError::new(ErrorCode::RateLimited, "too many requests; slow down");
    reply(session, Reply::error(id, error));
    false
}

fn reply(session: &SessionHandle, reply: Reply) {
    session.send(reply.encode().into());
}

async fn writer<W>(gw: &Gateway, session: &SessionHandle, mut sink: W, mut rx: outbound::Receiver) -> &'static str
where
    W: Sink<Frame> + Unpin,
{
    loop {
        let out = tokio::select! {
            biased;
            closing = session.closed() => return goodbye(&mut sink, closing).await,
            out = rx.recv() => match out {
                Some(out) => out,
                None => return "closed",
            },
        };
        let write = async {
            let (mut n, mut bytes, mut large) = (0u64, 0usize, false);
            let mut next = Some(out);
            while let Some(out) = next.take() {
                bytes += out.len();
                match out {
                    Outbound::Frame(f) => {
                        large |= session.is_large_reply(&f);
                        sink.feed(Frame::Text(f)).await?;
                        n += 1;
                    }
                    Outbound::Ping => sink.feed(Frame::Ping).await?,
                }
                if n < COALESCE as u64 {
                    next = rx.try_recv().ok();
                }
            }
            sink.flush().await?;
            Ok::<_, W::Error>((n, bytes, large))
        };
        tokio::select! {
            biased;
            closing = session.closed() => return goodbye(&mut sink, closing).await,
            written = write => match written {
                // Released once flushed, not once dequeued: until then the
                // bytes are still held, in the sink's buffer.
                Ok((n, bytes, large)) => {
                    gw.inner.metrics.frames_out.inc_by(n);
                    session.written(bytes);
                    if large {
                        session.large_read_done();
                    }
                }
                Err(_) => return "connection_error",
            },
        }
    }
}

/// The server's last words: `bye` when the reason has one, then the close
/// frame (the echo of the client's, when the client closed first).
async fn goodbye<W>(sink: &mut W, closing: Closing) -> &'static str
where
    W: Sink<Frame> + Unpin,
{
    let close = match closing {
        Closing::Bye(reason) => Some(Close::new(reason.close_code(), reason.as_str())),
        Closing::Code(code, reason) => Some(Close::new(code, reason)),
        Closing::ClientClosed(code) => code.map(|code| Close::new(code, "")),
    };
    let last_words = async {
        if let Closing::Bye(reason) = closing {
            sink.feed(Frame::Text(Utf8Bytes::from(Event::Bye { reason }.encode()))).await?;
        }
        sink.send(Frame::Close(close)).await
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, last_words).await;
    closing.label()
}
