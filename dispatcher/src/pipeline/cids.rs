//! The cids a dispatcher holds in memory, so a `send` costs no store read to
//! know whether its cid was used before (on a CQL store that read is a
//! statement per message).
//!
//! A room's cids are read once, when a send first reaches the room on this
//! dispatcher: its newest [`LOAD`] messages. The room is *known* when that
//! read covers every cid the store still remembers for it (the room has no
//! more messages, or the oldest one read is older than the store's
//! [`Store::cid_window`]); from then on every cid the dispatcher stores in
//! the room is added, and a cid that is not there was never used. A room
//! with more cids than that (a busy room on a store that keeps cids for
//! good, or one past [`ROOM_CAP`]) is *unknown*, and its sends read the
//! store as before.
//!
//! A room whose retention removed its older messages counts as having no
//! more: the cids of messages retention removed are forgotten with them,
//! as the embedded store's sweeper forgets them (a resend of such a cid is
//! a new message; retention is at least a day, past the 24 hours
//! `docs/protocol.md` promises).
//!
//! Only the dispatcher that owns a room's partition writes its cids, so the
//! memory is exact while it owns it; it is dropped with the room states when
//! the partitions move ([`super::Pipeline::forget_cached`]).
//!
//! On a store that does not index every message's cid (CQL, where the index
//! is a statement of its own: [`Store::indexes_cids`]), the memory also
//! decides which cids are indexed: those of rooms it does not know
//! ([`Cids::stored`] returns them, and they go into the batch as
//! `Write::CidIndex`). A known room's cids are read back from its messages,
//! [`ROOM_CAP`]` + 1` of them, so a known room must never hold more live
//! cids than that read sees: when it would, the room becomes unknown and
//! every cid it held is indexed in the same batch. Whoever reads the room
//! next (this dispatcher after [`Cids::clear`], or the next owner) either
//! reads every cid of its window from the messages, or finds more and asks
//! the index, which by then holds all that the read cannot see.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use confab_store::{CidHit, Store};
use futures_util::StreamExt;

/// Messages read when a room's cids are first needed.
pub const LOAD: u32 = 256;
/// Cids kept for one room; past it, those older than the store's window are
/// dropped, and if that is not enough the room becomes unknown.
pub const ROOM_CAP: usize = 4096;
/// Cids kept in all; past it the memory starts over.
pub const TOTAL_CAP: usize = 500_000;
/// Slack on the store's window: a cid row may be written a little after its
/// message's `ts` (a batch retried), so it outlives `ts + window` by as much.
const SLACK: Duration = Duration::from_secs(3600);

/// What the memory says about one cid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Used before, for this message.
    Hit(CidHit),
    /// Never used in the room (as far as the store remembers).
    Unused,
    /// The room is not known: ask the store.
    Ask,
}

#[derive(Debug)]
enum Room {
    Known(HashMap<String, CidHit>),
    Unknown,
}

#[derive(Debug, Default)]
pub struct Cids {
    rooms: HashMap<String, Room>,
    entries: usize,
}

impl Cids {
    pub fn lookup(&self, room: &str, key: &str) -> Lookup {
        match self.rooms.get(room) {
            Some(Room::Known(cids)) => cids.get(key).map_or(Lookup::Unused, |hit| Lookup::Hit(hit.clone())),
            _ => Lookup::Ask,
        }
    }

    /// Rooms among `rooms` whose cids have not been read yet.
    pub fn unread<'a>(&self, rooms: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut out: Vec<String> = rooms.into_iter().filter(|r| !self.rooms.contains_key(*r)).map(Into::into).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Reads the cids of `rooms` (one read each, together), adding those
    /// of `pending` (`(room, key, hit)` of batches not yet durable, which a
    /// store may not show yet). A read that fails leaves its room unread:
    /// its sends ask the store.
    pub async fn read(&mut self, store: &dyn Store, rooms: Vec<String>, pending: Vec<(String, String, CidHit)>) {
        let window = store.cid_window();
        // Without an index of every cid, a room is known only from a read
        // that sees all a known room can hold (see the module's docs).
        let load = if store.indexes_cids() { LOAD } else { ROOM_CAP as u32 + 1 };
        let reads = rooms.into_iter().map(|room| async move {
            let read = store.recent_cids(&room, load).await;
            (room, read)
        });
        let reads: Vec<_> = futures_util::stream::iter(reads).buffer_unordered(super::view::READ_AHEAD).collect().await;
        for (room, read) in reads {
            let (hits, oldest) = match read {
                Ok(read) => read,
                Err(e) => {
                    tracing::debug!(room, error = %e, "reading a room's cids failed; its sends read the store");
                    continue;
                }
            };
            let complete = match (oldest, window) {
                (None, _) => true,
                (Some(ts), Some(window)) => ts.saturating_add(millis(window + SLACK)) < now_ms(),
                (Some(_), None) => false,
            };
            let state = if complete {
                self.entries += hits.len();
                Room::Known(hits.into_iter().collect())
            } else {
                Room::Unknown
            };
            self.rooms.insert(room, state);
        }
        // Their batches indexed what needed indexing when they were staged.
        let _ = self.stored(window, pending);
        if self.entries > TOTAL_CAP {
            self.clear();
        }
    }

    /// Remembers cids about to be stored (`(room, key, hit)`), in known
    /// rooms. Returns the cids a store that does not index every message's
    /// cid must index in the same batch: those of rooms not known, and all
    /// of a room's when it stops being known (see the module's docs).
    #[must_use]
    pub fn stored(
        &mut self,
        window: Option<Duration>,
        stored: impl IntoIterator<Item = (String, String, CidHit)>,
    ) -> Vec<(String, String, CidHit)> {
        let mut index = Vec::new();
        for (room, key, hit) in stored {
            let Some(Room::Known(cids)) = self.rooms.get_mut(&room) else {
                index.push((room, key, hit));
                continue;
            };
            if cids.insert(key, hit).is_none() {
                self.entries += 1;
            }
            if cids.len() > ROOM_CAP {
                let before = cids.len();
                if let Some(window) = window {
                    let horizon = now_ms().saturating_sub(millis(window + SLACK));
                    cids.retain(|_, hit| hit.ts >= horizon);
                }
                self.entries -= before - cids.len();
                if cids.len() > ROOM_CAP {
                    self.entries -= cids.len();
                    if let Some(Room::Known(cids)) = self.rooms.insert(room.clone(), Room::Unknown) {
                        index.extend(cids.into_iter().map(|(key, hit)| (room.clone(), key, hit)));
                    }
                }
            }
        }
        if self.entries > TOTAL_CAP {
            self.clear();
        }
        index
    }

    pub fn clear(&mut self) {
        self.rooms.clear();
        self.entries = 0;
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(seq: u64, ts: u64) -> CidHit {
        CidHit { seq, msg_id: format!("m{seq}"), ts }
    }

    fn known(cids: &mut Cids, room: &str, hits: Vec<(String, CidHit)>) {
        cids.entries += hits.len();
        cids.rooms.insert(room.into(), Room::Known(hits.into_iter().collect()));
    }

    #[test]
    fn a_known_room_answers_without_the_store_and_an_unread_one_asks() {
        let mut cids = Cids::default();
        known(&mut cids, "r", vec![("alice:c1".into(), hit(1, 10))]);
        assert_eq!(cids.lookup("r", "alice:c1"), Lookup::Hit(hit(1, 10)));
        assert_eq!(cids.lookup("r", "alice:c2"), Lookup::Unused);
        assert_eq!(cids.lookup("other", "alice:c1"), Lookup::Ask);
        assert_eq!(cids.unread(["r", "other", "other"]), vec!["other".to_owned()]);
    }

    #[test]
    fn stored_cids_are_remembered_in_known_rooms_and_indexed_in_the_others() {
        let mut cids = Cids::default();
        known(&mut cids, "r", Vec::new());
        cids.rooms.insert("u".into(), Room::Unknown);
        let index = cids.stored(
            None,
            [
                ("r".into(), "bob:x".into(), hit(5, 1)),
                ("s".into(), "bob:y".into(), hit(6, 1)),
                ("u".into(), "bob:z".into(), hit(7, 1)),
            ],
        );
        assert_eq!(cids.lookup("r", "bob:x"), Lookup::Hit(hit(5, 1)));
        assert_eq!(cids.lookup("s", "bob:y"), Lookup::Ask, "an unread room stays unread");
        assert_eq!(cids.entries, 1);
        assert_eq!(
            index,
            vec![("s".into(), "bob:y".into(), hit(6, 1)), ("u".into(), "bob:z".into(), hit(7, 1))],
            "only the cids of the rooms the memory does not hold are indexed"
        );
    }

    #[test]
    fn a_room_past_its_cap_drops_expired_cids_then_becomes_unknown() {
        let now = now_ms();
        let old = now - millis(Duration::from_secs(30 * 86_400));
        let window = Some(Duration::from_secs(7 * 86_400));
        let mut cids = Cids::default();
        known(&mut cids, "r", (0..ROOM_CAP as u64).map(|i| (format!("a:{i}"), hit(i, old))).collect());
        let index = cids.stored(window, [("r".into(), "a:new".into(), hit(9_999, now))]);
        assert_eq!(cids.lookup("r", "a:new"), Lookup::Hit(hit(9_999, now)));
        assert_eq!(cids.lookup("r", "a:1"), Lookup::Unused, "expired in the store too");
        assert_eq!(cids.entries, 1);
        assert!(index.is_empty(), "the room is still known: nothing to index");

        let fresh: Vec<(String, String, CidHit)> =
            (0..=ROOM_CAP as u64).map(|i| ("r".into(), format!("b:{i}"), hit(i, now))).collect();
        let mut index = cids.stored(window, fresh);
        assert_eq!(cids.lookup("r", "b:1"), Lookup::Ask, "too many live cids to hold: the store is asked");
        assert_eq!(cids.entries, 0);
        // Every live cid the memory held is indexed as the room stops being
        // known: the store is asked from now on, and a read of the room's
        // newest messages could no longer see them all.
        index.sort_by_key(|(_, _, hit)| (hit.seq, hit.ts));
        let mut want: Vec<(String, String, CidHit)> = (0..=ROOM_CAP as u64)
            .map(|i| ("r".into(), format!("b:{i}"), hit(i, now)))
            .chain([("r".into(), "a:new".into(), hit(9_999, now))])
            .collect();
        want.sort_by_key(|(_, _, hit)| (hit.seq, hit.ts));
        assert_eq!(index, want);
    }
}
