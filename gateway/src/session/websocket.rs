//! The WebSocket transport: axum's socket as a sink and a stream of
//! [`Frame`]s. tungstenite does the protocol's own work underneath: it
//! answers pings, and when the client closes first it queues the echo of
//! the client's close frame and writes it on the next flush.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{Sink, SinkExt, Stream, StreamExt, stream};

use super::frame::{Close, Frame, ReadError};

/// Splits a socket into the session's sink and stream.
pub fn split(
    socket: WebSocket,
) -> (impl Sink<Frame, Error = axum::Error> + Unpin + Send, impl Stream<Item = Result<Frame, ReadError>> + Unpin + Send)
{
    let (sink, stream) = socket.split();
    // Once the client has closed, tungstenite refuses to send anything but
    // the echo it queued itself: frames after that are dropped here, and the
    // flush of the session's own close writes the echo.
    let client_closed = Arc::new(AtomicBool::new(false));
    let closed = client_closed.clone();
    let sink = sink.with_flat_map(move |frame| {
        let send = !closed.load(Ordering::Relaxed);
        stream::iter(send.then(|| Ok(message(frame))))
    });
    let stream = stream.map(move |read| {
        if let Ok(Message::Close(_)) = read {
            client_closed.store(true, Ordering::Relaxed);
        }
        read.map(frame).map_err(read_error)
    });
    (sink, stream)
}

fn message(frame: Frame) -> Message {
    match frame {
        Frame::Text(text) => Message::Text(text),
        Frame::Binary => Message::Binary(Default::default()),
        Frame::Ping => Message::Ping(Default::default()),
        Frame::Pong => Message::Pong(Default::default()),
        Frame::Close(close) => Message::Close(close.map(|c| CloseFrame { code: c.code, reason: c.reason })),
    }
}

fn frame(message: Message) -> Frame {
    match message {
        Message::Text(text) => Frame::Text(text),
        Message::Binary(_) => Frame::Binary,
        Message::Ping(_) => Frame::Ping,
        Message::Pong(_) => Frame::Pong,
        Message::Close(close) => Frame::Close(close.map(|c| Close { code: c.code, reason: c.reason })),
    }
}

fn read_error(e: axum::Error) -> ReadError {
    use tokio_tungstenite::tungstenite::Error;
    let e = e.into_inner();
    match e.downcast_ref::<Error>() {
        Some(Error::Capacity(_)) => ReadError::TooLarge,
        _ => ReadError::Connection(e),
    }
}
