//! What a benchmark message carries, and what a receiver learns from it.
//!
//! The text of every message is `~B <sender> <seq> <sent_ns> ` padded with
//! `x` to the message size: the sender's index, its sequence number (per
//! receiver stream: per room in `fanout`, per recipient in `dm`) and the
//! time the open-loop schedule meant it to go, in Unix nanoseconds. The
//! receiver finds the marker anywhere in a frame, so the same parser reads
//! Confab's `msg` events and Centrifugo's publications without decoding JSON.

use std::collections::{BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

const MARKER: &[u8] = b"~B ";

/// Wall-clock Unix nanoseconds: senders and receivers live in different
/// processes of one machine, so they share this clock.
pub fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The message text for `sender`'s `seq`, `size` bytes long (longer if the
/// header alone is longer).
pub fn encode(sender: u32, seq: u64, sent_ns: u64, size: usize) -> String {
    let mut text = format!("~B {sender} {seq} {sent_ns} ");
    while text.len() < size {
        text.push('x');
    }
    text
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sender: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// The stamp in a frame, if it carries a benchmark message.
pub fn find(frame: &[u8]) -> Option<Stamp> {
    let at = memchr::memmem::find(frame, MARKER)? + MARKER.len();
    let mut fields = frame[at..].split(|&b| b == b' ');
    let mut next = || -> Option<u64> { std::str::from_utf8(fields.next()?).ok()?.parse().ok() };
    Some(Stamp { sender: u32::try_from(next()?).ok()?, seq: next()?, sent_ns: next()? })
}

/// What one arrival was, for one stream of sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    InOrder,
    /// Filled a gap left earlier: unique, but out of order.
    Late,
    Duplicate,
}

/// Sequence numbers seen from one sender on one receiver, starting at 0.
#[derive(Debug, Default)]
pub struct SeqTrack {
    next: u64,
    missing: BTreeSet<u64>,
}

/// Gaps larger than this are counted but not remembered one by one.
const MAX_GAP: u64 = 100_000;

impl SeqTrack {
    pub fn arrive(&mut self, seq: u64) -> Arrival {
        if seq == self.next {
            self.next += 1;
            Arrival::InOrder
        } else if seq > self.next {
            if seq - self.next <= MAX_GAP {
                self.missing.extend(self.next..seq);
            }
            self.next = seq + 1;
            Arrival::InOrder
        } else if self.missing.remove(&seq) {
            Arrival::Late
        } else {
            Arrival::Duplicate
        }
    }
}

/// Every sender's stream as one receiver sees it.
#[derive(Debug, Default)]
pub struct Streams(HashMap<u32, SeqTrack>);

impl Streams {
    pub fn arrive(&mut self, stamp: &Stamp) -> Arrival {
        self.0.entry(stamp.sender).or_default().arrive(stamp.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_the_trip_inside_json() {
        let text = encode(17, 42, 1_700_000_000_123_456_789, 150);
        assert_eq!(text.len(), 150);
        let frame = format!(r#"{{"ev":"msg","room":"r","text":"{text}","seq":3}}"#);
        let stamp = find(frame.as_bytes()).unwrap();
        assert_eq!(stamp, Stamp { sender: 17, seq: 42, sent_ns: 1_700_000_000_123_456_789 });
    }

    #[test]
    fn frames_without_a_marker_or_with_a_broken_one_carry_no_stamp() {
        assert_eq!(find(br#"{"re":1,"ok":true}"#), None);
        assert_eq!(find(b"~B 1 x 3 "), None);
    }

    #[test]
    fn gaps_filled_late_and_repeats_are_told_apart() {
        let mut t = SeqTrack::default();
        assert_eq!(t.arrive(0), Arrival::InOrder);
        assert_eq!(t.arrive(2), Arrival::InOrder);
        assert_eq!(t.arrive(1), Arrival::Late);
        assert_eq!(t.arrive(1), Arrival::Duplicate);
        assert_eq!(t.arrive(2), Arrival::Duplicate);
        assert_eq!(t.arrive(3), Arrival::InOrder);
    }
}
