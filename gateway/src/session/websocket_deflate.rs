//! The WebSocket transport with permessage-deflate (RFC 7692): a yawc
//! socket as a sink and a stream of [`Frame`]s, the same shape as
//! [`super::websocket`]. The upgrade (`http.rs`) takes this path only when
//! compression is on and the client offers the extension; tungstenite, which
//! has no permessage-deflate, carries every other WebSocket session.
//!
//! yawc does the protocol's own work underneath, as tungstenite does: it
//! answers pings, echoes the client's close, and, when a frame is over the
//! limit (on the wire or once inflated), queues a close with 1009 itself.
//! After either, frames the session writes are dropped here and its flush
//! writes what yawc queued.
//!
//! Memory per idle connection: no context takeover in either direction (the
//! server imposes `client_no_context_takeover`, which RFC 7692 7.1.1.2
//! allows), so deflate state is needed only while a message is compressed or
//! inflated; between messages it waits in one pool per process. Frames below
//! the threshold are written uncompressed (RSV1 clear), which RFC 7692 allows
//! per message.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, Stream, StreamExt};
use yawc::close::CloseCode;
use tokio::io::{AsyncRead, AsyncWrite};
use yawc::{CompressionLevel, DeflatePool, OpCode, Options, WebSocketError};

use super::frame::{Close, Frame, ReadError};

/// Idle compressors (and, separately, decompressors) kept for reuse: about
/// the number of messages compressed at one moment, that is worker threads,
/// not connections. A message that finds none builds one.
const POOL: usize = 16;

/// Whether a `Sec-WebSocket-Extensions` header value offers permessage-deflate.
pub fn offered<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    values.into_iter().any(|value| {
        value.split(|&b| b == b',').any(|offer| {
            let name = offer.split(|&b| b == b';').next().unwrap_or_default();
            name.trim_ascii().eq_ignore_ascii_case(b"permessage-deflate")
        })
    })
}

/// The options of every compressed session: the same limits as the
/// tungstenite path (a frame, or a fragmented message, over `max_frame_bytes`
/// closes with 1009; an inflated one is bounded the same, while it inflates),
/// the same buffer sizes, and frames under `threshold` bytes uncompressed.
pub fn options(max_frame_bytes: usize, threshold: usize, read_buffer: usize, write_buffer: usize) -> Options {
    static SHARED: OnceLock<DeflatePool> = OnceLock::new();
    let pool = SHARED.get_or_init(|| DeflatePool::new(POOL)).clone();
    // yawc's limits are exclusive, tungstenite's (and `max_frame_bytes`) inclusive.
    let limit = max_frame_bytes.saturating_add(1);
    Options::default()
        .with_compression_level(CompressionLevel::fast())
        .server_no_context_takeover()
        .client_no_context_takeover()
        .with_deflate_pool(pool)
        .with_compression_threshold(threshold)
        .with_limits(limit, limit)
        .with_read_buffer_capacity(read_buffer)
        .with_write_buffer_capacity(write_buffer)
        .with_utf8()
}

/// Splits a socket into the session's sink and stream.
pub fn split<S>(socket: yawc::WebSocket<S>) -> (DeflateSink<S>, DeflateStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (inner, stream) = Transport(socket).split();
    let transport_closed = Arc::new(AtomicBool::new(false));
    let sink = DeflateSink { inner, transport_closed: transport_closed.clone() };
    (sink, DeflateStream { inner: stream, transport_closed })
}

/// yawc's socket with its errors: its own `Stream` ends on an error, where
/// the session needs to tell a frame over the limit from a lost connection.
struct Transport<S>(yawc::WebSocket<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for Transport<S> {
    type Item = Result<yawc::Frame, WebSocketError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_next_frame(cx).map(Some)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<yawc::Frame> for Transport<S> {
    type Error = WebSocketError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: yawc::Frame) -> Result<(), Self::Error> {
        Pin::new(&mut self.0).start_send(frame)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // What yawc queued itself (the echo of a close, a pong) is written
        // by `poll_ready`, which `SplitSink` skips when it holds no frame; an
        // error there is a close already sent, and the flush reports any other.
        if Pin::new(&mut self.0).poll_ready(cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// The session's stream over a compressed WebSocket.
pub struct DeflateStream<S> {
    inner: SplitStream<Transport<S>>,
    transport_closed: Arc<AtomicBool>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for DeflateStream<S> {
    type Item = Result<Frame, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let read = match self.inner.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(read)) => read,
        };
        let read = match read {
            Ok(frame) => frame_of(frame),
            Err(WebSocketError::FrameTooLarge) => Err(ReadError::TooLarge),
            Err(e) => Err(ReadError::Connection(Box::new(e))),
        };
        // yawc has queued a close of its own: the echo, or 1009.
        if matches!(read, Ok(Frame::Close(_)) | Err(ReadError::TooLarge)) {
            self.transport_closed.store(true, Ordering::Relaxed);
        }
        Poll::Ready(Some(read))
    }
}

/// The session's sink over a compressed WebSocket. A plain struct, as
/// [`super::websocket::WebSocketSink`] is: its size is memory per connection.
pub struct DeflateSink<S> {
    inner: SplitSink<Transport<S>, yawc::Frame>,
    /// Once yawc has queued a close of its own (the echo of the client's, or
    /// 1009) it refuses to send anything else: the session's frames after
    /// that are dropped here, and flushing writes yawc's close.
    transport_closed: Arc<AtomicBool>,
}

impl<S> DeflateSink<S> {
    fn closed(&self) -> bool {
        self.transport_closed.load(Ordering::Relaxed)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Frame> for DeflateSink<S> {
    type Error = WebSocketError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let closed = self.closed();
        match Pin::new(&mut self.inner).poll_ready(cx) {
            Poll::Ready(Err(_)) if closed => Poll::Ready(Ok(())),
            ready => ready,
        }
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        if self.closed() {
            return Ok(());
        }
        Pin::new(&mut self.inner).start_send(message(frame))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let closed = self.closed();
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Err(_)) if closed => Poll::Ready(Ok(())),
            ready => ready,
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

fn message(frame: Frame) -> yawc::Frame {
    match frame {
        Frame::Text(text) => yawc::Frame::text(Bytes::from(text)),
        Frame::Binary => yawc::Frame::binary(Bytes::new()),
        Frame::Ping => yawc::Frame::ping(Bytes::new()),
        Frame::Pong => yawc::Frame::pong(Bytes::new()),
        // Only the echo of a close without a code has none, and yawc writes
        // that echo itself.
        Frame::Close(None) => yawc::Frame::close(CloseCode::Normal, b""),
        Frame::Close(Some(c)) => yawc::Frame::close(CloseCode::from(c.code), c.reason.as_bytes()),
    }
}

fn frame_of(frame: yawc::Frame) -> Result<Frame, ReadError> {
    Ok(match frame.opcode() {
        // yawc has checked the text is UTF-8 (`with_utf8`).
        OpCode::Text => match Utf8Bytes::try_from(frame.into_payload()) {
            Ok(text) => Frame::Text(text),
            Err(e) => return Err(ReadError::Connection(Box::new(e))),
        },
        OpCode::Binary | OpCode::Continuation => Frame::Binary,
        OpCode::Ping => Frame::Ping,
        OpCode::Pong => Frame::Pong,
        OpCode::Close => {
            let close = frame.close_code().map(|code| Close {
                code: code.into(),
                reason: frame.close_reason().ok().flatten().map(Utf8Bytes::from).unwrap_or_default(),
            });
            Frame::Close(close)
        }
    })
}
