//! The WebSocket transport: axum's socket as a sink and a stream of
//! [`Frame`]s. tungstenite does the protocol's own work underneath (it
//! answers pings, and when the client closes first it queues the echo of
//! its close frame, which the session's close then flushes).

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{Sink, SinkExt, Stream, StreamExt, future};

use super::frame::{Close, Frame, ReadError};

/// Splits a socket into the session's sink and stream.
pub fn split(
    socket: WebSocket,
) -> (impl Sink<Frame, Error = axum::Error> + Unpin + Send, impl Stream<Item = Result<Frame, ReadError>> + Unpin + Send)
{
    let (sink, stream) = socket.split();
    let sink = sink.with(|frame| future::ready(Ok::<_, axum::Error>(message(frame))));
    let stream = stream.map(|read| read.map(frame).map_err(read_error));
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
