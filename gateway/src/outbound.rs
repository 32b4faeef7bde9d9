//! A session's outbound queue: what deliveries, replies and the sweeper's
//! pings hand to the session's writer. Bounded in frames like the tokio
//! channel it replaces (`try_send` refuses with `Full` past the bound), but
//! small while it is empty: tokio's channel allocates its first block of 32
//! slots and its cache-padded state up front, about 1.5 KB in every idle
//! session. Here a queue that never held a frame is a `VecDeque` that has
//! not allocated, and a queue that emptied keeps at most [`KEEP`] slots,
//! giving back what a burst made it grow to.
//!
//! One sender (the session's handle) and one receiver (its writer).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
pub use tokio::sync::mpsc::error::{TryRecvError, TrySendError};

use crate::registry::Outbound;

/// Slots an emptied queue may keep; more are given back.
const KEEP: usize = 4;

struct Shared {
    queue: Mutex<VecDeque<Outbound>>,
    /// Wakes the receiver; a notification sent while it is not waiting is kept.
    ready: Notify,
    bound: usize,
    /// The receiver is gone (sends fail) or the sender is (receives end).
    receiver_gone: AtomicBool,
    sender_gone: AtomicBool,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Outbound>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A queue of at most `frames` frames (at least 1).
pub fn channel(frames: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        ready: Notify::new(),
        bound: frames.max(1),
        receiver_gone: AtomicBool::new(false),
        sender_gone: AtomicBool::new(false),
    });
    (Sender { shared: shared.clone() }, Receiver { shared })
}

pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// Queues `out` unless the queue is full or its receiver is gone.
    pub fn try_send(&self, out: Outbound) -> Result<(), TrySendError<Outbound>> {
        {
            let mut queue = self.shared.queue();
            // Checked under the lock the receiver's drop takes: a frame is
            // never queued after the receiver emptied the queue for good.
            if self.shared.receiver_gone.load(Ordering::Acquire) {
                return Err(TrySendError::Closed(out));
            }
            if queue.len() >= self.shared.bound {
                return Err(TrySendError::Full(out));
            }
            queue.push_back(out);
        }
        self.shared.ready.notify_one();
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.shared.sender_gone.store(true, Ordering::Release);
        self.shared.ready.notify_one();
    }
}

pub struct Receiver {
    shared: Arc<Shared>,
}

impl Receiver {
    /// The next frame; `None` once the queue is empty and its sender gone.
    /// Cancel-safe: a frame is taken only by the poll that returns it.
    pub async fn recv(&mut self) -> Option<Outbound> {
        loop {
            match self.try_recv() {
                Ok(out) => return Some(out),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => self.shared.ready.notified().await,
            }
        }
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Result<Outbound, TryRecvError> {
        let mut queue = self.shared.queue();
        match queue.pop_front() {
            Some(out) => {
                if queue.is_empty() && queue.capacity() > KEEP {
                    // A burst is over: an idle session keeps no room for the next one.
                    *queue = VecDeque::new();
                }
                Ok(out)
            }
            // Checked under the lock: a frame queued before the sender went is still received.
            None if self.shared.sender_gone.load(Ordering::Acquire) => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.shared.queue().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // What is queued is dropped now, not with the session's handle; the
        // flag is set under the lock (see `try_send`).
        let mut queue = self.shared.queue();
        self.shared.receiver_gone.store(true, Ordering::Release);
        *queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ws::Utf8Bytes;

    fn frame(s: &'static str) -> Outbound {
        Outbound::Frame(Utf8Bytes::from_static(s))
    }

    fn text(out: Outbound) -> String {
        match out {
            Outbound::Frame(f) => f.to_string(),
            Outbound::Ping => "ping".into(),
        }
    }

    #[tokio::test]
    async fn frames_come_out_in_order_and_a_full_queue_refuses() {
        let (tx, mut rx) = channel(3);
        tx.try_send(frame("a")).unwrap();
        tx.try_send(Outbound::Ping).unwrap();
        tx.try_send(frame("b")).unwrap();
        assert!(matches!(tx.try_send(frame("c")), Err(TrySendError::Full(_))));
        assert_eq!(rx.len(), 3);
        assert_eq!(text(rx.recv().await.unwrap()), "a");
        assert_eq!(text(rx.try_recv().unwrap()), "ping");
        // Room again for one.
        tx.try_send(frame("c")).unwrap();
        assert_eq!(text(rx.recv().await.unwrap()), "b");
        assert_eq!(text(rx.recv().await.unwrap()), "c");
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_frame_sent_later() {
        let (tx, mut rx) = channel(8);
        let waiting = tokio::spawn(async move { rx.recv().await.map(text) });
        tokio::task::yield_now().await;
        tx.try_send(frame("late")).unwrap();
        assert_eq!(waiting.await.unwrap().as_deref(), Some("late"));
    }

    #[tokio::test]
    async fn a_cancelled_receive_loses_nothing() {
        let (tx, mut rx) = channel(8);
        // Polled once and dropped while waiting, as a `select!` does.
        let cancelled = tokio::time::timeout(std::time::Duration::from_millis(1), rx.recv()).await;
        assert!(cancelled.is_err());
        tx.try_send(frame("kept")).unwrap();
        assert_eq!(text(rx.recv().await.unwrap()), "kept");
    }

    #[tokio::test]
    async fn the_senders_end_is_seen_after_what_it_queued() {
        let (tx, mut rx) = channel(8);
        tx.try_send(frame("last")).unwrap();
        drop(tx);
        assert_eq!(text(rx.recv().await.unwrap()), "last");
        assert!(rx.recv().await.is_none());
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));
    }

    #[test]
    fn sends_to_a_gone_receiver_fail_as_closed() {
        let (tx, rx) = channel(8);
        drop(rx);
        assert!(matches!(tx.try_send(frame("x")), Err(TrySendError::Closed(_))));
    }

    /// The sender checks for the receiver under the queue's lock: a frame
    /// sent while the receiver goes is refused, never left in a queue that
    /// nobody reads (held until the session's handle drops).
    #[test]
    fn a_frame_sent_while_the_receiver_goes_is_refused_not_stranded() {
        for _ in 0..200 {
            let (tx, rx) = channel(1 << 20);
            let sending = std::thread::spawn(move || {
                while tx.try_send(Outbound::Ping).is_ok() {}
                tx
            });
            drop(rx);
            let tx = sending.join().unwrap();
            assert!(tx.shared.queue().is_empty(), "a frame was queued after the receiver went");
        }
    }

    #[test]
    fn an_emptied_queue_gives_back_what_a_burst_grew_it_to() {
        let (tx, mut rx) = channel(1000);
        for _ in 0..500 {
            tx.try_send(Outbound::Ping).unwrap();
        }
        assert!(rx.shared.queue().capacity() >= 500);
        while rx.try_recv().is_ok() {}
        assert_eq!(rx.shared.queue().capacity(), 0, "an empty queue holds no slots");
        // And a queue that never grew past a few slots keeps them.
        tx.try_send(Outbound::Ping).unwrap();
        tx.try_send(Outbound::Ping).unwrap();
        while rx.try_recv().is_ok() {}
        assert!(rx.shared.queue().capacity() <= KEEP);
    }
}
