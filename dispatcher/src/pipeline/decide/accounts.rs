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
        if !self.is_member(room, user) {
            return Ok(Reply::empty(None));
        }
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
        Ok(Reply::empty(None))
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
        let state = RoomState { last_seq: 3, exists: true, members: members.len() as u64, settings: Some(settings) };
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
        assert!(d.writes.contains(&Write::Leave { room: "r".into(), user: "alice".into(), at: seq_of(9) }));
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
        let state = RoomState { last_seq: 3, exists: true, members: 2, settings: None };
        v.rooms.insert("dm:alice:bob".into(), state);
        v.blocks.insert(("alice".into(), "bob".into()));
        let send = |offset, from: &str| {
            record(
                "dm:alice:bob",
                offset,
                Command::Send { from: from.into(), text: "hi".into(), cid: format!("c{offset}") },
            )
        };
        let (a, b) = (send(10, "bob"), send(11, "alice"));
        let d = decide(v, &[&a, &b], 100);
        assert_eq!(codes(&d), ["forbidden", "ok"]);
    }
}
