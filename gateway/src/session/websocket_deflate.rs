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
use tokio::io::{AsyncRead, AsyncWrite};
use yawc::close::CloseCode;
use yawc::{CompressionLevel, DeflatePool, OpCode, Options, WebSocketError};

use super::frame::{Close, Frame, ReadError};

/// Idle compressors (and, separately, decompressors) kept for reuse: about
/// the number of messages compressed at one moment, that is the runtime's
/// worker threads (one per core), not connections. A message that finds
/// none builds one; one returned to a full pool is dropped. Each compressor
/// is about 270 KiB, each decompressor about 40 KiB.
fn pool_size() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get()).clamp(1, 64)
}

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
    let pool = SHARED.get_or_init(|| DeflatePool::new(pool_size())).clone();
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
        // As tungstenite's: no write buffer until a frame is written, and a
        // flush once `write_buffer` bytes are waiting.
        .with_write_buffer_capacity(0)
        .with_backpressure_boundary(write_buffer)
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

#[cfg(test)]
mod tests {
    use futures_util::SinkExt;
    use yawc::{Role, WebSocket};

    use super::*;

    const AGREED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    /// A server socket with the gateway's options (frames at most 1024
    /// bytes, threshold 64) and a client, over an in-memory pipe.
    fn pair() -> (
        DeflateSink<tokio::io::DuplexStream>,
        DeflateStream<tokio::io::DuplexStream>,
        WebSocket<tokio::io::DuplexStream>,
    ) {
        let (server, client) = tokio::io::duplex(1 << 20);
        let server =
            WebSocket::from_stream_with_extensions(server, Role::Server, Some(AGREED), options(1024, 64, 1024, 4096))
                .unwrap();
        let client_options = Options::default().with_balanced_compression();
        let client =
            WebSocket::from_stream_with_extensions(client, Role::Client, Some(AGREED), client_options).unwrap();
        let (sink, stream) = split(server);
        (sink, stream, client)
    }

    async fn next_close_code(client: &mut WebSocket<tokio::io::DuplexStream>) -> u16 {
        loop {
            let frame = client.next_frame().await.expect("a frame");
            if frame.opcode() == OpCode::Close {
                return frame.close_code().map(u16::from).unwrap_or(1005);
            }
        }
    }

    #[test]
    fn an_offer_of_permessage_deflate_is_recognized() {
        let yes: &[&[u8]] = &[
            b"permessage-deflate",
            b"permessage-deflate; client_max_window_bits",
            b"x-webkit-deflate-frame, PerMessage-Deflate ; server_no_context_takeover",
        ];
        for offer in yes {
            assert!(offered([*offer]), "{}", String::from_utf8_lossy(offer));
        }
        let no: &[&[u8]] = &[b"", b"x-webkit-deflate-frame", b"permessage-deflate-2", b"foo; permessage-deflate"];
        for offer in no {
            assert!(!offered([*offer]), "{}", String::from_utf8_lossy(offer));
        }
        assert!(offered([b"foo".as_slice(), b"permessage-deflate".as_slice()]), "one header of several");
    }

    #[tokio::test]
    async fn text_both_ways_small_and_large() {
        let (mut sink, mut stream, mut client) = pair();
        let big = "compressible text ".repeat(40);
        client.send(yawc::Frame::text(big.clone())).await.unwrap();
        let Some(Ok(Frame::Text(got))) = stream.next().await else { panic!("a text frame") };
        assert_eq!(got.as_str(), big);
        for text in ["{\"ev\":\"small\"}".to_string(), big.clone()] {
            sink.send(Frame::Text(text.clone().into())).await.unwrap();
            let frame = client.next_frame().await.unwrap();
            assert_eq!((frame.opcode(), frame.payload().as_ref()), (OpCode::Text, text.as_bytes()));
        }
    }

    #[tokio::test]
    async fn a_frame_inflating_past_the_limit_is_refused_with_1009() {
        let (mut sink, mut stream, mut client) = pair();
        // 100 KiB once inflated, a few hundred bytes compressed.
        client.send(yawc::Frame::text("x".repeat(100 * 1024))).await.unwrap();
        assert!(matches!(stream.next().await, Some(Err(ReadError::TooLarge))));
        // The session's close after it: yawc has queued its own 1009, which
        // the flush writes; the session's is dropped, not written twice.
        sink.send(Frame::Close(Some(Close::new(1009, "frame_too_large")))).await.unwrap();
        assert_eq!(next_close_code(&mut client).await, 1009);
    }

    #[tokio::test]
    async fn the_clients_close_is_echoed_once() {
        let (mut sink, mut stream, mut client) = pair();
        client.send(yawc::Frame::close(CloseCode::Normal, b"done")).await.unwrap();
        let Some(Ok(Frame::Close(Some(close)))) = stream.next().await else { panic!("a close") };
        assert_eq!(close.code, 1000);
        // What the session sends after the client's close is dropped; its
        // flush writes yawc's echo.
        sink.feed(Frame::Text("{\"ev\":\"late\"}".into())).await.unwrap();
        sink.send(Frame::Close(Some(Close::new(1000, "")))).await.unwrap();
        assert_eq!(next_close_code(&mut client).await, 1000);
    }

    #[tokio::test]
    async fn a_server_close_reaches_the_client() {
        let (mut sink, _stream, mut client) = pair();
        sink.feed(Frame::Text("{\"ev\":\"bye\",\"reason\":\"server_restart\"}".into())).await.unwrap();
        sink.send(Frame::Close(Some(Close::new(1012, "server_restart")))).await.unwrap();
        let frame = client.next_frame().await.unwrap();
        assert_eq!(frame.opcode(), OpCode::Text);
        assert_eq!(next_close_code(&mut client).await, 1012);
    }
}
