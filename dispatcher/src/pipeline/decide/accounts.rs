//! What account deletion and blocks decide in a room's order:
//!
//! * `Command::Erase`: a deleted account leaves the room, its ownership
//!   passing to the longest-standing admin, else member (the store's
//!   [`successor`](confab_store::Store::successor)), and its messages in
//!   the room lose their text and author (`Write::Erase`). The gateway
//!   produces one such record to every room of the user, so each room's
//!   dispatcher erases in the room's order: a message the user sent before
//!   the deletion is erased, and none can follow it.
//! * A DM `send` to a user who blocked the sender is `forbidden`, decided
//!   here with the DM's other writes.

use confab_bus::Record;
use confab_protocol::message::seq_of;
use confab_protocol::validate::dm_members;
use confab_protocol::{Audience, Event, MemberAction, ProtocolError, Reply, Role};
use confab_store::{RoomSettings, Write};

use super::Batch;
use super::rooms::forbidden;

impl Batch {
    pub(super) fn erase(&mut self, r: &Record, user: &str) -> Result<Reply, ProtocolError> {
        let room = r.record.room.as_str();
        // Always, even for a user no longer a member: their old messages
        // stay in the room's history.
        self.out.writes.push(Write::Erase { room: room.into(), user: user.into(), at: seq_of(r.offset) });
        self.erase_in_view(room, user);
        if !self.is_member(room, user) {
            return Ok(Reply::empty(None));
        }
        self.leave_passing_ownership(r, room, user);
        Ok(Reply::empty(None))
    }

    /// `user`, a member, leaves `room`; when they owned it, the ownership
    /// passes to the store's successor (none: whoever joins next owns it).
    pub(super) fn leave_passing_ownership(&mut self, r: &Record, room: &str, user: &str) {
        let owner = dm_members(room).is_none()
            && (self.standing(room, user).role == Role::Owner
                || self.room(room).settings.is_some_and(|s| s.owner.as_deref() == Some(user)));
        let frame = Event::member(room, user, MemberAction::Leave).encode();
        self.remove_member(r, room, user, frame);
        if owner {
            let successor = self.view.successors.get(room).cloned().flatten().filter(|s| self.is_member(room, s));
            let settings = RoomSettings { owner: successor.clone(), ..self.room(room).settings.unwrap_or_default() };
            self.set_settings(r, room, settings);
            if let Some(heir) = successor {
                self.set_role(r, room, &heir, Role::Owner);
                let frame = Event::Member {
                    room: room.into(),
                    user: heir.clone(),
                    action: MemberAction::Role,
                    by: None,
                    reason: None,
                    role: Some(Role::Owner),
                    until: None,
                }
                .encode();
                self.event(room, Audience::Members, None, frame);
            }
        }
    }

    /// What the store's erasure does, to the messages the batch read or
    /// sent: later records see them deleted and without the user's
    /// reactions (an erased message is neither edited nor reacted to).
    fn erase_in_view(&mut self, room: &str, user: &str) {
        let theirs: Vec<(u64, String)> = self
            .view
            .reacted
            .iter()
            .filter(|(r, _, _, by)| r == room && by == user)
            .map(|(_, seq, emoji, _)| (*seq, emoji.clone()))
            .collect();
        for (seq, emoji) in theirs {
            self.view.reacted.remove(&(room.to_owned(), seq, emoji.clone(), user.to_owned()));
            if let Some(state) = self.view.messages.get_mut(&(room.to_owned(), seq)) {
                let reactions = &mut state.message.reactions;
                if let Some(i) = reactions.iter().position(|x| x.emoji == emoji) {
                    reactions[i].count = reactions[i].count.saturating_sub(1);
                    reactions[i].users.retain(|u| u != user);
                    if reactions[i].count == 0 {
                        reactions.remove(i);
                    }
                }
            }
        }
        let mut erased = Vec::new();
        for ((r, seq), state) in self.view.messages.iter_mut() {
            if r == room && state.message.from == user {
                let m = &mut state.message;
                m.from.clear();
                m.text.clear();
                m.cid.clear();
                m.edited_ts = None;
                m.deleted = true;
                m.reactions.clear();
                state.versions = 0;
                erased.push(*seq);
            }
        }
        self.view.reacted.retain(|(r, seq, _, _)| !(r == room && erased.contains(seq)));
    }

    /// A DM from `from` to a user who blocked them is refused.
    pub(super) fn check_not_blocked(&self, room: &str, from: &str) -> Result<(), ProtocolError> {
        let Some((a, b)) = dm_members(room) else { return Ok(()) };
        let other = if from == a { b } else { a };
        if self.view.blocks.contains(&(other.to_owned(), from.to_owned())) {
            return Err(forbidden(format!("'{other}' does not take your direct messages")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use confab_protocol::request::RequestId;
    use confab_protocol::{Command, Delivery, IngressRecord, Origin};
    use confab_store::MemberRecord;
    use serde_json::Value;

    use super::super::{Decided, Effect, decide};
    use super::*;
    use crate::pipeline::view::{RoomState, View};

    fn record(room: &str, offset: u64, cmd: Command) -> Record {
        let origin = Origin { gateway: "gw-1".into(), session: 7, re: Some(RequestId::Int(offset as i64)), t0: 0 };
        Record {
            partition: 0,
            offset,
            record: IngressRecord { room: room.into(), ts: 1_000_000 + offset, origin: Some(origin), cmd },
        }
    }

    fn codes(d: &Decided) -> Vec<String> {
        d.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Reply { delivery: Delivery::Reply { frame, .. }, .. } => {
                    let v: Value = serde_json::from_str(frame).unwrap();
                    Some(v["error"]["code"].as_str().unwrap_or("ok").to_owned())
                }
                _ => None,
            })
            .collect()
    }

    fn view(members: &[(&str, Role)]) -> View {
        let mut view = View::default();
        let settings = RoomSettings { owner: Some("alice".into()), ..RoomSettings::default() };
        let state = RoomState {
            last_seq: 3,
            exists: true,
            members: members.len() as u64,
            settings: Some(settings),
            messages: 3,
            last_change: 0,
        };
        view.rooms.insert("r".into(), state);
        for (user, role) in members {
            view.members.insert(("r".into(), (*user).into()));
            if *role != Role::Member {
                view.standing.insert(("r".into(), (*user).into()), MemberRecord { role: *role, muted_until: 0 });
            }
        }
        view
    }

    #[test]
    fn an_erased_owner_leaves_and_the_successor_owns_the_room() {
        let mut v = view(&[("alice", Role::Owner), ("bob", Role::Member), ("carol", Role::Admin)]);
        v.successors.insert("r".into(), Some("carol".into()));
        let rec = record("r", 9, Command::Erase { user: "alice".into() });
        let d = decide(v, &[&rec], 100);
        assert_eq!(codes(&d), ["ok"]);
        assert!(d.writes.contains(&Write::Erase { room: "r".into(), user: "alice".into(), at: seq_of(9) }));
        assert!(d.writes.contains(&Write::Leave { room: "r".into(), user: "alice".into(), at: seq_of(9), members: 2 }));
        assert!(d.writes.contains(&Write::Role {
            room: "r".into(),
            user: "carol".into(),
            role: Role::Owner,
            at: seq_of(9)
        }));
        assert_eq!(d.rooms["r"].settings.as_ref().unwrap().owner.as_deref(), Some("carol"));
        assert_eq!(d.rooms["r"].members, 2);
    }

    #[test]
    fn an_erased_non_member_only_loses_their_messages() {
        let v = view(&[("alice", Role::Owner)]);
        let rec = record("r", 9, Command::Erase { user: "mallory".into() });
        let d = decide(v, &[&rec], 100);
        assert_eq!(d.writes, [Write::Erase { room: "r".into(), user: "mallory".into(), at: seq_of(9) }]);
    }

    #[test]
    fn a_dm_to_a_user_who_blocked_the_sender_is_forbidden_and_the_other_way_flows() {
        let mut v = View::default();
        let state = RoomState { last_seq: 3, exists: true, members: 2, settings: None, messages: 3, last_change: 0 };
        v.rooms.insert("dm:alice:bob".into(), state);
        v.blocks.insert(("alice".into(), "bob".into()));
        let send = |offset, from: &str| {
            record(
                "dm:alice:bob",
                offset,
                Command::Send {
                    from: from.into(),
                    text: "hi".into(),
                    cid: format!("c{offset}"),
                    reply_to: None,
                    attachments: vec![],
                },
            )
        };
        let (a, b) = (send(10, "bob"), send(11, "alice"));
        let d = decide(v.clone(), &[&a, &b], 100);
        assert_eq!(codes(&d), ["forbidden", "ok"]);

        // Bob's message 2 of before the block: he may delete it, not edit
        // it nor react to alice's message 3.
        let mine = |seq: u64, from: &str| confab_store::MessageState {
            message: confab_protocol::Message {
                room: "dm:alice:bob".into(),
                seq,
                from: from.into(),
                text: "old".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        for user in ["alice", "bob"] {
            v.members.insert(("dm:alice:bob".into(), user.into()));
        }
        v.messages.insert(("dm:alice:bob".into(), 2), mine(2, "bob"));
        v.messages.insert(("dm:alice:bob".into(), 3), mine(3, "alice"));
        let dm = |offset, cmd| record("dm:alice:bob", offset, cmd);
        let edit = dm(10, Command::Edit { by: "bob".into(), seq: 2, text: "new".into() });
        let react = dm(11, Command::React { user: "bob".into(), seq: 3, emoji: "👍".into(), remove: false });
        let delete = dm(12, Command::Delete { by: "bob".into(), seq: 2 });
        let theirs = dm(13, Command::React { user: "alice".into(), seq: 2, emoji: "👍".into(), remove: false });
        assert_eq!(super::super::needs("dm:alice:bob", &react.record.cmd).block, Some(("alice", "bob")));
        let d = decide(v, &[&edit, &react, &delete, &theirs], 100);
        assert_eq!(codes(&d), ["forbidden", "forbidden", "ok", "not_found"]);
    }
}
