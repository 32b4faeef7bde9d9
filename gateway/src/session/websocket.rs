//! The WebSocket transport: axum's socket as a sink and a stream of
//! [`Frame`]s. tungstenite does the protocol's own work underneath: it
//! answers pings, and when the client closes first it queues the echo of
//! the client's close frame and writes it on the next flush.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{Sink, Stream, StreamExt};

use super::frame::{Close, Frame, ReadError};

/// Splits a socket into the session's sink and stream.
pub fn split(socket: WebSocket) -> (WebSocketSink, impl Stream<Item = Result<Frame, ReadError>> + Unpin + Send) {
    let (inner, stream) = socket.split();
    let client_closed = Arc::new(AtomicBool::new(false));
    let sink = WebSocketSink { inner, client_closed: client_closed.clone() };
    let stream = stream.map(move |read| {
        if let Ok(Message::Close(_)) = read {
            client_closed.store(true, Ordering::Relaxed);
        }
        read.map(frame).map_err(read_error)
    });
    (sink, stream)
}

/// The session's sink over a WebSocket. A plain struct rather than a
/// combinator: every idle session's task holds it (twice, as the session's
/// argument and its local), so its size is memory per connection.
pub struct WebSocketSink {
    inner: SplitSink<WebSocket, Message>,
    /// Once the client has closed, tungstenite refuses to send anything but
    /// the echo it queued itself: frames after that are dropped here, and the
    /// flush of the session's own close writes the echo.
    client_closed: Arc<AtomicBool>,
}

impl WebSocketSink {
    fn client_closed(&self) -> bool {
        self.client_closed.load(Ordering::Relaxed)
    }
}

impl Sink<Frame> for WebSocketSink {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.client_closed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        if self.client_closed() {
            return Ok(());
        }
        Pin::new(&mut self.inner).start_send(message(frame))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
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
