//! What a session reads and writes, whatever carries it: a WebSocket today
//! ([`super::websocket`]); the session logic sees only these frames, so any
//! `Sink`/`Stream` pair of them can carry a session (channels in tests).

use axum::extract::ws::Utf8Bytes;

/// One frame between a client and its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One JSON object: a request from the client, a reply or event from the server.
    Text(Utf8Bytes),
    /// Anything that is not text (a WebSocket binary frame): answered with
    /// `bad_request`, and counted by the rate limiter as a request.
    Binary,
    Ping,
    Pong,
    /// The closing handshake; `None` when no code was given.
    Close(Option<Close>),
}

/// The code and reason of a close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: Utf8Bytes,
}

impl Close {
    pub fn new(code: u16, reason: &'static str) -> Close {
        Close { code, reason: Utf8Bytes::from_static(reason) }
    }
}

/// Why the next frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Over `max_frame_bytes`: the session closes with 1009.
    #[error("a frame over the size limit")]
    TooLarge,
    /// The connection broke; the session ends without a closing handshake.
    #[error("connection lost: {0}")]
    Connection(#[source] Box<dyn std::error::Error + Send + Sync>),
}
