//! Mentions, exact unread counts and notification levels, decided in the
//! room's order like everything else (docs/protocol.md, "Unread counts,
//! mentions, notification levels and retention"; `confab_store::unread`
//! says what is stored).
//!
//! The dispatcher that owns a room numbers its messages (`n`) and keeps
//! each member's running [`Tally`] of their own messages and of messages
//! that mention them; a `read` stores both as they stood at the marker. A
//! batch reads them as of just before its first record in the room (see
//! [`Counts`]), so deciding a record again after a CQL batch failed midway
//! counts it once.

use confab_bus::Record;
use confab_protocol::message::seq_of;
use confab_protocol::unread::{MAX_MENTIONS, mention_candidates};
use confab_protocol::validate::dm_members;
use confab_protocol::{Message, NotifyLevel, ProtocolError, Reply};
use confab_store::{Tally, Write};

use super::Batch;
#[allow(unused_imports)] // for the docs
use crate::pipeline::view::Counts;

impl Batch {
    /// The members among the names `text` mentions, at most [`MAX_MENTIONS`].
    pub(super) fn mentions_in(&self, room: &str, text: &str) -> Vec<String> {
        let dm = dm_members(room);
        mention_candidates(text)
            .into_iter()
            .filter(|user| match dm {
                Some((a, b)) => user == a || user == b,
                None => self.is_member(room, user),
            })
            .take(MAX_MENTIONS)
            .collect()
    }

    /// Counts a stored message: its ordinal and expiry, the sender's own
    /// messages and the mentioned members' mentions (not the sender's: one's
    /// own message is never unread).
    pub(super) fn count_message(&mut self, m: &Message) {
        let retention = self.retention;
        let state = self.room_mut(&m.room);
        state.messages += 1;
        let n = state.messages;
        let keep = retention.keep_ms(state.settings.as_ref().and_then(|s| s.retention_days));
        let expires_ms = keep.map(|keep| m.ts.saturating_add(keep));
        self.out.writes.push(Write::MessageMeta { room: m.room.clone(), seq: m.seq, n, expires_ms });
        self.view.counts.messages.push((m.room.clone(), m.seq, n));
        self.bump(&m.room, &m.from, m.seq, |t| t.own += 1);
        for user in m.mentions.iter().filter(|u| **u != m.from) {
            self.bump(&m.room, user, m.seq, |t| t.mentions += 1);
        }
    }

    fn bump(&mut self, room: &str, user: &str, seq: u64, change: impl FnOnce(&mut Tally)) {
        let key = (room.to_owned(), user.to_owned());
        let tally = self.view.counts.tallies.entry(key).or_default();
        change(tally);
        let tally = *tally;
        self.out.writes.push(Write::Tally { room: room.into(), user: user.into(), seq, tally });
        self.view.counts.points.push((room.into(), user.into(), seq, tally));
    }

    /// Stores the counts at `user`'s new read marker `seq` (at most the
    /// room's last seq).
    pub(super) fn count_read(&mut self, r: &Record, room: &str, user: &str, seq: u64) {
        let state = self.room(room);
        let counts = &self.view.counts;
        let key = (room.to_owned(), user.to_owned());
        let (n, tally) = if seq >= state.last_seq {
            (state.messages, counts.tallies.get(&key).copied().unwrap_or_default())
        } else {
            // The batch's own messages up to `seq`, else the store's.
            let stored = counts.at.get(&(room.to_owned(), user.to_owned(), seq)).copied().unwrap_or_default();
            let n = counts.messages.iter().rev().find(|(m, s, _)| m == room && *s <= seq).map_or(stored.0, |p| p.2);
            let tally = counts
                .points
                .iter()
                .rev()
                .find(|(m, u, s, _)| m == room && u == user && *s <= seq)
                .map_or(stored.1, |p| p.3);
            (n, tally)
        };
        self.out.writes.push(Write::ReadTally { room: room.into(), user: user.into(), n, tally, at: seq_of(r.offset) });
    }

    /// A membership ended: the next one counts from zero.
    pub(super) fn forget_counts(&mut self, room: &str, user: &str) {
        let counts = &mut self.view.counts;
        counts.tallies.insert((room.to_owned(), user.to_owned()), Tally::default());
        counts.points.retain(|(m, u, ..)| !(m == room && u == user));
        for ((m, u, _), (_, tally)) in counts.at.iter_mut() {
            if m == room && u == user {
                *tally = Tally::default();
            }
        }
    }

    /// `notify`: a member's own level for the room.
    pub(super) fn notify(&mut self, r: &Record, user: &str, level: NotifyLevel) -> Result<Reply, ProtocolError> {
        let room = r.record.room.as_str();
        self.require_member(room, user)?;
        self.out.writes.push(Write::Notify { room: room.into(), user: user.into(), level, at: seq_of(r.offset) });
        Ok(Reply::empty(None))
    }
}

#[cfg(test)]
mod tests {
    use confab_protocol::request::RequestId;
    use confab_protocol::{Command, IngressRecord, Origin, Retention, Role};
    use confab_store::{MemberRecord, RoomSettings};
    use serde_json::Value;

    use super::super::tests::{events, run_counted};
    use super::super::{Decided, Effect, decide_with};
    use super::*;
    use crate::pipeline::view::{RoomState, View};

    fn record(offset: u64, cmd: Command) -> Record {
        let origin = Origin { gateway: "gw-1".into(), session: 7, re: Some(RequestId::Int(offset as i64)), t0: 0 };
        Record {
            partition: 0,
            offset,
            record: IngressRecord { room: "r".into(), ts: 1_000_000 + offset, origin: Some(origin), cmd },
        }
    }

    fn send(offset: u64, from: &str, text: &str) -> Record {
        record(
            offset,
            Command::Send {
                from: from.into(),
                text: text.into(),
                cid: format!("c{offset}"),
                reply_to: None,
                attachments: vec![],
            },
        )
    }

    fn read(offset: u64, user: &str, seq: u64) -> Record {
        record(offset, Command::Read { user: user.into(), seq })
    }

    /// Room `r` with these members, last seq 5 and 2 messages so far;
    /// alice has sent one of them.
    fn room(members: &[&str]) -> View {
        let mut view = View::default();
        let settings = RoomSettings { owner: Some("alice".into()), ..RoomSettings::default() };
        let state = RoomState {
            last_seq: 5,
            exists: true,
            members: members.len() as u64,
            settings: Some(settings),
            messages: 2,
            ..RoomState::default()
        };
        view.rooms.insert("r".into(), state);
        view.members.extend(members.iter().map(|u| ("r".to_owned(), (*u).to_owned())));
        view.standing.insert(("r".into(), "alice".into()), MemberRecord { role: Role::Owner, muted_until: 0 });
        view.counts.tallies.insert(("r".into(), "alice".into()), Tally { own: 1, mentions: 0 });
        view
    }

    fn tally(user: &str, seq: u64, own: u64, mentions: u64) -> Write {
        Write::Tally { room: "r".into(), user: user.into(), seq, tally: Tally { own, mentions } }
    }

    fn counting(d: &Decided) -> Vec<Write> {
        d.writes
            .iter()
            .filter(|w| matches!(w, Write::MessageMeta { .. } | Write::Tally { .. } | Write::ReadTally { .. }))
            .cloned()
            .collect()
    }

    fn codes(d: &Decided) -> Vec<Value> {
        d.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Reply { delivery: confab_protocol::Delivery::Reply { frame, .. }, .. } => {
                    let v: Value = serde_json::from_str(frame).unwrap();
                    Some(v["error"]["code"].clone())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn messages_are_numbered_whatever_the_seq_gaps_and_tally_their_sender_and_the_mentioned_members() {
        let d = run_counted(
            room(&["alice", "bob", "carol"]),
            &[send(9, "bob", "@alice @dave @bob hi"), send(30, "alice", "@bob! @carol"), send(31, "alice", "x")],
        );
        let meta = |seq, n| Write::MessageMeta { room: "r".into(), seq, n, expires_ms: None };
        assert_eq!(
            counting(&d),
            [
                meta(10, 3),
                tally("bob", 10, 1, 0),
                tally("alice", 10, 1, 1),
                meta(31, 4),
                tally("alice", 31, 2, 1),
                tally("bob", 31, 1, 1),
                tally("carol", 31, 0, 1),
                meta(32, 5),
                tally("alice", 32, 3, 1),
            ],
            "dave is no member; bob's mention of himself is no mention"
        );
        let msgs = events(&d);
        assert_eq!(msgs[0]["mentions"], serde_json::json!(["alice", "bob"]), "members only, in order");
        assert_eq!(msgs[1]["mentions"], serde_json::json!(["bob", "carol"]));
        assert!(msgs[2].get("mentions").is_none(), "absent when none");
        assert_eq!(d.rooms["r"].messages, 5);
    }

    #[test]
    fn a_dms_parties_are_the_members_it_may_mention() {
        let dm = "dm:alice:bob";
        let mut r = send(0, "alice", "@bob @carol");
        r.record.room = dm.into();
        let d = run_counted(super::super::tests::with_accounts(&["alice", "bob"]), &[r]);
        assert_eq!(events(&d).last().unwrap()["mentions"], serde_json::json!(["bob"]));
    }

    #[test]
    fn a_read_stores_the_counts_at_its_marker_from_the_batch_or_the_store() {
        let mut view = room(&["alice", "bob"]);
        // As stored: at seq 4, the room had 1 message and alice's tally was (1, 0).
        view.counts.at.insert(("r".into(), "alice".into(), 4), (1, Tally { own: 1, mentions: 0 }));
        let d = run_counted(
            view,
            &[
                read(6, "alice", 4),
                send(7, "bob", "@alice"),
                send(8, "bob", "again"),
                read(9, "alice", 8),
                read(10, "bob", 99),
            ],
        );
        let read_tally = |user: &str, n, own, mentions, at| Write::ReadTally {
            room: "r".into(),
            user: user.into(),
            n,
            tally: Tally { own, mentions },
            at,
        };
        let reads: Vec<Write> = counting(&d).into_iter().filter(|w| matches!(w, Write::ReadTally { .. })).collect();
        assert_eq!(
            reads,
            [read_tally("alice", 1, 1, 0, 7), read_tally("alice", 3, 1, 1, 10), read_tally("bob", 4, 2, 0, 11),],
            "the stored counts at 4; the batch's message 8 with its mention; the newest for a marker past the end"
        );
    }

    #[test]
    fn a_new_membership_counts_from_zero() {
        let view = room(&["alice", "bob"]);
        let d = run_counted(
            view,
            &[
                record(6, Command::Leave { user: "bob".into() }),
                record(7, Command::Join { user: "bob".into() }),
                send(8, "bob", "back"),
            ],
        );
        assert_eq!(counting(&d)[1], tally("bob", 9, 1, 0));
    }

    #[test]
    fn a_message_in_a_room_with_retention_expires_with_it() {
        let mut view = room(&["alice"]);
        view.rooms.get_mut("r").unwrap().settings.as_mut().unwrap().retention_days = Some(2);
        let retention = Retention { default_days: Some(30), day_secs: 10 };
        let records = [send(9, "alice", "x")];
        let d = decide_with(view.clone(), &records.iter().collect::<Vec<_>>(), 1000, retention);
        let Write::MessageMeta { expires_ms, .. } = &d.writes[1] else { panic!("{:?}", d.writes) };
        assert_eq!(*expires_ms, Some(1_000_009 + 20_000), "two days of ten seconds after its ts");
        view.rooms.get_mut("r").unwrap().settings = None;
        let d = decide_with(view, &records.iter().collect::<Vec<_>>(), 1000, retention);
        let Write::MessageMeta { expires_ms, .. } = &d.writes[1] else { panic!("{:?}", d.writes) };
        assert_eq!(*expires_ms, Some(1_000_009 + 300_000), "else the cluster's default");
    }

    #[test]
    fn a_member_sets_their_own_level_and_no_one_else_does() {
        let d = run_counted(
            room(&["alice"]),
            &[
                record(6, Command::Notify { user: "alice".into(), level: NotifyLevel::Mentions }),
                record(7, Command::Notify { user: "mallory".into(), level: NotifyLevel::Nothing }),
            ],
        );
        assert_eq!(
            d.writes,
            [Write::Notify { room: "r".into(), user: "alice".into(), level: NotifyLevel::Mentions, at: 7 }]
        );
        assert_eq!(codes(&d), [Value::Null, serde_json::json!("not_member")]);
        assert!(events(&d).is_empty(), "a level is the user's own business");
    }

    #[test]
    fn admins_set_retention_and_zero_goes_back_to_the_default() {
        let update = |offset, by: &str, days| {
            record(
                offset,
                Command::UpdateRoom {
                    by: by.into(),
                    name: None,
                    topic: None,
                    visibility: None,
                    retention_days: Some(days),
                },
            )
        };
        let d =
            run_counted(room(&["alice", "bob"]), &[update(6, "bob", 1), update(7, "alice", 7), update(8, "alice", 0)]);
        assert_eq!(codes(&d), [serde_json::json!("forbidden"), Value::Null, Value::Null]);
        let days: Vec<Option<u32>> = d
            .writes
            .iter()
            .filter_map(|w| match w {
                Write::Settings { settings, .. } => Some(settings.retention_days),
                _ => None,
            })
            .collect();
        assert_eq!(days, [Some(7), None]);
        assert_eq!(events(&d)[0]["retention_days"], 7);
        assert!(events(&d)[1].get("retention_days").is_none());
    }
}
