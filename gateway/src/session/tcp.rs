//! The raw TCP transport: newline-delimited JSON over any byte stream (a
//! TCP connection, plain or TLS) as a sink and a stream of [`Frame`]s.
//!
//! One line is one frame. An empty line is a heartbeat, either way: the
//! server writes one where a WebSocket would ping, and a client's empty line
//! shows it is alive as a pong does. There is no close frame: the server
//! ends with a `bye` line, then closes its side; a client closes its side.
//! A line longer than `max_frame_bytes` is never buffered whole: once the
//! bytes read without a newline pass the limit, the stream says
//! [`ReadError::TooLarge`] and reads nothing more.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::ws::Utf8Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::frame::{Close, Frame, ReadError};

/// How much a connection reads at a time, and the buffer an idle one holds.
const READ_CHUNK: usize = 1024;
/// Bytes the sink holds before it writes them out without waiting for a flush.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// The session's stream of frames over a byte stream.
pub type Lines = Pin<Box<dyn Stream<Item = Result<Frame, ReadError>> + Send>>;

/// Splits a byte stream into the session's sink and stream of frames, lines
/// of at most `max_line` bytes (the newline, and a `\r` before it, apart).
pub fn split<S>(stream: S, max_line: usize) -> (LineSink<tokio::io::WriteHalf<S>>, Lines)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    (LineSink::new(write), lines(read, max_line))
}

/// The frames of `read`, one per line.
pub fn lines<R>(read: R, max_line: usize) -> Lines
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let reader = LineReader { read, buf: Vec::new(), scanned: 0, max_line, done: false };
    Box::pin(futures_util::stream::unfold(reader, |mut r| async move { r.next().await.map(|f| (f, r)) }))
}

struct LineReader<R> {
    read: R,
    /// Bytes read and not yet returned as a line.
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
    max_line: usize,
    /// After end of stream or an error: nothing more is read.
    done: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    async fn next(&mut self) -> Option<Result<Frame, ReadError>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(i) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + i;
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.scanned = 0;
                if self.buf.capacity() > 4 * READ_CHUNK && self.buf.len() <= READ_CHUNK {
                    // A long line came and went: an idle connection holds a small buffer again.
                    self.buf.shrink_to(READ_CHUNK);
                }
                if line.len() > self.max_line {
                    self.done = true;
                    return Some(Err(ReadError::TooLarge));
                }
                return Some(Ok(frame(line)));
            }
            self.scanned = self.buf.len();
            // `+ 1`: room for the `\r` of a line of exactly the limit.
            if self.buf.len() > self.max_line + 1 {
                self.done = true;
                return Some(Err(ReadError::TooLarge));
            }
            self.buf.reserve(READ_CHUNK);
            let room = (self.max_line + 2 - self.buf.len()).min(self.buf.capacity() - self.buf.len()).max(1);
            let read = (&mut self.read).take(room as u64).read_buf(&mut self.buf).await;
            match read {
                Ok(0) => {
                    // End of stream: a last line without its newline is dropped
                    // (the client closed before it finished the frame).
                    self.done = true;
                    return None;
                }
                Ok(_) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(ReadError::Connection(Box::new(e))));
                }
            }
        }
    }
}

/// A line as a frame: empty is a heartbeat (a pong), text is a frame, and
/// bytes that are not UTF-8 are what a WebSocket's binary frame is.
fn frame(line: Vec<u8>) -> Frame {
    if line.is_empty() {
        return Frame::Pong;
    }
    match String::from_utf8(line) {
        Ok(text) => Frame::Text(Utf8Bytes::from(text)),
        Err(_) => Frame::Binary,
    }
}

/// The session's sink over a byte stream: each frame a line, buffered until
/// a flush (or until [`WRITE_HIGH_WATER`] bytes wait).
pub struct LineSink<W> {
    inner: W,
    buf: Vec<u8>,
    written: usize,
    /// A `bye` went out already: a close writes no second one.
    said_bye: bool,
    /// A close was queued: the next flush shuts the connection down after it.
    closing: bool,
    shut: bool,
}

impl<W> LineSink<W> {
    pub fn new(inner: W) -> LineSink<W> {
        LineSink { inner, buf: Vec::new(), written: 0, said_bye: false, closing: false, shut: false }
    }
}

impl<W: AsyncWrite + Unpin> LineSink<W> {
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        if self.buf.capacity() > WRITE_HIGH_WATER {
            self.buf.shrink_to(READ_CHUNK);
        }
        Poll::Ready(Ok(()))
    }
}

/// The `bye` line a close says on a connection without close frames, for
/// the closes that have no `bye` of their own (on a WebSocket, the close
/// code alone says why).
pub fn bye_of(close: &Close) -> String {
    let reason = match close.code {
        1011 => "unavailable",
        _ => close.reason.as_str(),
    };
    serde_json::json!({ "ev": "bye", "reason": reason }).to_string()
}

impl<W: AsyncWrite + Unpin> Sink<Frame> for LineSink<W> {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.buf.len() >= WRITE_HIGH_WATER {
            ready!(self.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        if self.closing {
            return Ok(());
        }
        match frame {
            Frame::Text(text) => {
                self.said_bye |= text.as_str().starts_with(r#"{"ev":"bye""#);
                self.buf.extend_from_slice(text.as_bytes());
                self.buf.push(b'\n');
            }
            Frame::Ping => self.buf.push(b'\n'),
            Frame::Pong | Frame::Binary => {}
            Frame::Close(close) => {
                if let Some(close) = close.filter(|_| !self.said_bye) {
                    let bye = bye_of(&close);
                    self.buf.extend_from_slice(bye.as_bytes());
                    self.buf.push(b'\n');
                }
                self.closing = true;
            }
        }
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.poll_write_out(cx))?;
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        if self.closing && !self.shut {
            ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            self.shut = true;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.closing = true;
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;

    use super::*;

    async fn read_all(input: &[u8], max: usize) -> Vec<Result<Frame, String>> {
        let (mut client, server) = tokio::io::duplex(64);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&input).await;
            let _ = client.shutdown().await;
            client
        });
        let frames: Vec<_> = lines(server, max).map(|r| r.map_err(|e| e.to_string())).collect().await;
        drop(writer.await);
        frames
    }

    fn text(s: &str) -> Result<Frame, String> {
        Ok(Frame::Text(Utf8Bytes::from(s.to_owned())))
    }

    #[tokio::test]
    async fn lines_are_frames_empty_lines_heartbeats_and_bytes_that_are_not_utf8_binary() {
        let frames = read_all(b"{\"op\":\"ping\"}\n\n{\"a\":1}\r\n\xff\xfe\nunfinished", 1024).await;
        assert_eq!(frames, vec![text("{\"op\":\"ping\"}"), Ok(Frame::Pong), text("{\"a\":1}"), Ok(Frame::Binary)]);
    }

    #[tokio::test]
    async fn a_line_over_the_limit_is_refused_once_without_being_read_whole() {
        let mut input = b"short\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
        input.extend(b"\nafter\n");
        let frames = read_all(&input, 2048).await;
        assert_eq!(frames, vec![text("short"), Err("a frame over the size limit".into())]);
        // A line of exactly the limit, with or without `\r`, passes.
        let line = "y".repeat(2048);
        let frames = read_all(format!("{line}\r\n{line}\n").as_bytes(), 2048).await;
        assert_eq!(frames, vec![text(&line), text(&line)]);
    }

    #[tokio::test]
    async fn the_sink_writes_lines_and_a_close_says_bye_once_then_shuts_the_stream() {
        for (frames, want) in [
            (
                vec![
                    Frame::Text(Utf8Bytes::from_static("{\"ev\":\"hello\"}")),
                    Frame::Ping,
                    Frame::Close(Some(Close::new(1009, "frame_too_large"))),
                    Frame::Text(Utf8Bytes::from_static("{\"ev\":\"late\"}")),
                ],
                "{\"ev\":\"hello\"}\n\n{\"ev\":\"bye\",\"reason\":\"frame_too_large\"}\n",
            ),
            (
                vec![
                    Frame::Text(Utf8Bytes::from_static("{\"ev\":\"bye\",\"reason\":\"server_restart\"}")),
                    Frame::Close(Some(Close::new(1012, "server_restart"))),
                ],
                "{\"ev\":\"bye\",\"reason\":\"server_restart\"}\n",
            ),
            (
                vec![Frame::Close(Some(Close::new(1011, "store unavailable")))],
                "{\"ev\":\"bye\",\"reason\":\"unavailable\"}\n",
            ),
        ] {
            let (client, mut server) = tokio::io::duplex(1 << 16);
            let mut sink = LineSink::new(client);
            for f in frames {
                sink.feed(f).await.unwrap();
            }
            sink.flush().await.unwrap();
            let mut out = String::new();
            server.read_to_string(&mut out).await.unwrap();
            assert_eq!(out, want);
        }
    }

    #[test]
    fn the_bye_event_encodes_with_ev_first_as_the_sink_expects() {
        let bye = confab_protocol::Event::Bye { reason: confab_protocol::ByeReason::ServerRestart }.encode();
        assert!(bye.starts_with(r#"{"ev":"bye""#), "{bye}");
    }
}
