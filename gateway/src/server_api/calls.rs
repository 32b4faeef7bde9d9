//! Server API calls that wait for a dispatcher: each takes an id from the
//! sessions' id space, so the dispatcher's answer, addressed to that
//! "session" on this gateway, finds its way back here (`delivery`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

/// Calls waiting at most, per gateway; more are `unavailable`.
pub const MAX_CALLS: usize = 10_000;

#[derive(Default)]
pub struct Calls(Mutex<HashMap<u64, oneshot::Sender<String>>>);

impl Calls {
    /// Waits for the answer to `id`; `None` when too many calls wait.
    pub(crate) fn register(&self, id: u64) -> Option<oneshot::Receiver<String>> {
        let mut calls = self.0.lock().expect("calls lock");
        if calls.len() >= MAX_CALLS {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        calls.insert(id, tx);
        Some(rx)
    }

    /// The dispatcher answered `id` (nobody waits any more: dropped).
    pub(crate) fn answer(&self, id: u64, frame: String) {
        if let Some(tx) = self.0.lock().expect("calls lock").remove(&id) {
            let _ = tx.send(frame);
        }
    }

    pub(crate) fn forget(&self, id: u64) {
        self.0.lock().expect("calls lock").remove(&id);
    }
}

/// Seconds a [`RateMeter`] averages over.
pub const RATE_WINDOW_SECS: u64 = 10;

/// Events per second over the last [`RATE_WINDOW_SECS`] whole seconds.
#[derive(Default)]
pub struct RateMeter(Mutex<[(u64, u64); RATE_WINDOW_SECS as usize]>);

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl RateMeter {
    pub fn tick(&self) {
        self.tick_at(unix_secs());
    }

    fn tick_at(&self, now: u64) {
        let mut slots = self.0.lock().expect("rate lock");
        let slot = &mut slots[(now % RATE_WINDOW_SECS) as usize];
        if slot.0 != now {
            *slot = (now, 0);
        }
        slot.1 += 1;
    }

    pub fn per_second(&self) -> f64 {
        self.per_second_at(unix_secs())
    }

    fn per_second_at(&self, now: u64) -> f64 {
        let slots = self.0.lock().expect("rate lock");
        let n: u64 = slots.iter().filter(|(at, _)| *at + RATE_WINDOW_SECS > now && *at <= now).map(|(_, n)| n).sum();
        n as f64 / RATE_WINDOW_SECS as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_the_last_ten_seconds_only() {
        let m = RateMeter::default();
        for _ in 0..20 {
            m.tick_at(100);
        }
        m.tick_at(105);
        assert_eq!(m.per_second_at(105), 2.1);
        assert_eq!(m.per_second_at(110), 0.1, "second 100 has left the window");
        m.tick_at(110);
        assert_eq!(m.per_second_at(110), 0.2);
        assert_eq!(m.per_second_at(200), 0.0);
    }

    #[test]
    fn an_answer_reaches_its_call_once() {
        let calls = Calls::default();
        let mut rx = calls.register(7).unwrap();
        calls.answer(8, "other".into());
        assert!(rx.try_recv().is_err());
        calls.answer(7, "it".into());
        assert_eq!(rx.try_recv().unwrap(), "it");
        calls.answer(7, "again".into());
    }
}
