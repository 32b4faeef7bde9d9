//! Rooms people own: `create`, invitations, moderation, roles and settings,
//! decided like every other record, in the room's order. A `kick` and a
//! `send` racing from two devices are two records of one partition, so
//! whichever the log holds first is decided first, the same way for everyone.
//!
//! Who may do what (docs/protocol.md, "Rooms"): admins and the owner
//! moderate members of a lower role; the owner alone sets roles; in a private
//! room only they invite, and only invited users join.

use confab_bus::Record;
use confab_protocol::event::ReplyBody;
use confab_protocol::message::seq_of;
use confab_protocol::validate::dm_members;
use confab_protocol::{Act, Audience, ErrorCode, Event, MemberAction, ProtocolError, Reply, Role, Visibility};
use confab_store::{MUTED_FOREVER, MemberRecord, RoomSettings, Write};

use super::{Batch, Needs};

pub fn forbidden(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::Forbidden, message)
}

fn not_a_member(room: &str, user: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::NotMember, format!("'{user}' is not a member of '{room}'"))
}

/// What a moderation record reads besides its room's state: both users'
/// standing, and the target's ban (and invitation) where the act looks at it.
pub fn needs<'a>(by: &'a str, user: &'a str, act: &Act) -> Needs<'a> {
    let mut needs = Needs { member: Some(by), target: Some(user), ..Needs::default() };
    match act {
        Act::Invite => {
            needs.ban = Some(user);
            needs.invite = Some(user);
        }
        Act::Ban { .. } => {
            needs.ban = Some(user);
            needs.invite = Some(user);
        }
        Act::Unban => needs.ban = Some(user),
        Act::Kick { .. } | Act::Mute { .. } | Act::Unmute | Act::SetRole { .. } => {}
    }
    needs
}

pub fn act_name(act: &Act) -> &'static str {
    match act {
        Act::Invite => "invite",
        Act::Kick { .. } => "kick",
        Act::Ban { .. } => "ban",
        Act::Unban => "unban",
        Act::Mute { .. } => "mute",
        Act::Unmute => "unmute",
        Act::SetRole { .. } => "set_role",
    }
}

/// The optional fields of a `member` event.
#[derive(Default)]
struct Note {
    reason: Option<String>,
    role: Option<Role>,
    until: Option<u64>,
}

/// A `member` event about `user`, done by `by`.
fn member_event(room: &str, user: &str, action: MemberAction, by: &str, note: Note) -> String {
    Event::Member {
        room: room.into(),
        user: user.into(),
        action,
        by: Some(by.into()),
        reason: note.reason,
        role: note.role,
        until: note.until,
    }
    .encode()
}

impl Batch {
    /// A member's role and mute (the defaults for a plain member; only
    /// meaningful for members).
    pub(super) fn standing(&self, room: &str, user: &str) -> MemberRecord {
        self.view.standing.get(&(room.to_owned(), user.to_owned())).copied().unwrap_or_default()
    }

    /// The user's role, `None` when not a member.
    fn role_of(&self, room: &str, user: &str) -> Option<Role> {
        self.is_member(room, user).then(|| self.standing(room, user).role)
    }

    fn is_banned(&self, room: &str, user: &str) -> bool {
        self.view.bans.contains(&(room.to_owned(), user.to_owned()))
    }

    fn visibility(&self, room: &str) -> Visibility {
        self.room(room).settings.map(|s| s.visibility).unwrap_or_default()
    }

    /// A non-member's `join`: not banned, and invited to a private room.
    pub(super) fn may_join(&self, room: &str, user: &str) -> Result<(), ProtocolError> {
        if self.is_banned(room, user) {
            return Err(forbidden(format!("you are banned from '{room}'")));
        }
        let invited = self.view.invites.contains(&(room.to_owned(), user.to_owned()));
        if self.visibility(room) == Visibility::Private && !invited {
            return Err(forbidden(format!("'{room}' is private: joining it takes an invitation")));
        }
        Ok(())
    }

    pub(super) fn set_settings(&mut self, r: &Record, room: &str, settings: RoomSettings) {
        self.out.writes.push(Write::Settings { room: room.into(), settings: settings.clone(), at: seq_of(r.offset) });
        self.room_mut(room).settings = Some(settings);
    }

    pub(super) fn set_role(&mut self, r: &Record, room: &str, user: &str, role: Role) {
        self.out.writes.push(Write::Role { room: room.into(), user: user.into(), role, at: seq_of(r.offset) });
        let key = (room.to_owned(), user.to_owned());
        let standing = MemberRecord { role, ..self.standing(room, user) };
        if standing == MemberRecord::default() {
            self.view.standing.remove(&key);
        } else {
            self.view.standing.insert(key, standing);
        }
    }

    fn set_mute(&mut self, r: &Record, room: &str, user: &str, until: u64) {
        self.out.writes.push(Write::Mute { room: room.into(), user: user.into(), until, at: seq_of(r.offset) });
        let key = (room.to_owned(), user.to_owned());
        let standing = MemberRecord { muted_until: until, ..self.standing(room, user) };
        if standing == MemberRecord::default() {
            self.view.standing.remove(&key);
        } else {
            self.view.standing.insert(key, standing);
        }
    }

    pub(super) fn create(
        &mut self,
        r: &Record,
        user: &str,
        visibility: Visibility,
        name: &str,
        topic: &str,
    ) -> Result<Reply, ProtocolError> {
        let room = r.record.room.as_str();
        if dm_members(room).is_some() {
            return Err(ProtocolError::bad_request("direct-message rooms cannot be created"));
        }
        if self.room(room).exists {
            return Err(ProtocolError::new(ErrorCode::Taken, format!("room '{room}' exists")));
        }
        self.check_room_count(user, "you are")?;
        let settings = RoomSettings {
            visibility,
            name: name.into(),
            topic: topic.into(),
            owner: Some(user.into()),
            retention_days: None,
        };
        self.set_settings(r, room, settings);
        self.add_member(r, room, user);
        self.set_role(r, room, user, Role::Owner);
        Ok(Reply::ok(None, ReplyBody::Join { room: room.into(), last_seq: self.room(room).last_seq }))
    }

    pub(super) fn moderate(&mut self, r: &Record, by: &str, user: &str, act: &Act) -> Result<Reply, ProtocolError> {
        let room = r.record.room.as_str();
        let actor = self.role_of(room, by).ok_or_else(|| ProtocolError::not_member(room))?;
        let target = self.role_of(room, user);
        // Moderating someone takes a higher role than theirs.
        let outranks = |target: Role| {
            if actor.moderates() && actor.rank() > target.rank() {
                Ok(())
            } else if actor.moderates() {
                Err(forbidden(format!("'{user}' is {} of '{room}'", target.as_str())))
            } else {
                Err(forbidden(format!("only admins and the owner of '{room}' may do this")))
            }
        };
        let at = seq_of(r.offset);
        match act {
            Act::Invite => {
                if self.visibility(room) == Visibility::Private && !actor.moderates() {
                    return Err(forbidden(format!("only admins and the owner invite to the private room '{room}'")));
                }
                if self.is_banned(room, user) {
                    return Err(forbidden(format!("'{user}' is banned from '{room}'")));
                }
                if target.is_some() {
                    return Ok(Reply::empty(None));
                }
                if self.view.invites.insert((room.to_owned(), user.to_owned())) {
                    self.out.writes.push(Write::Invite { room: room.into(), user: user.into(), invited: true, at });
                }
                let frame = member_event(room, user, MemberAction::Invite, by, Note::default());
                self.event(room, Audience::MembersAnd(user.into()), None, frame);
            }
            Act::Kick { reason } => {
                outranks(target.ok_or_else(|| not_a_member(room, user))?)?;
                let note = Note { reason: reason.clone(), ..Note::default() };
                let frame = member_event(room, user, MemberAction::Kick, by, note);
                self.remove_member(r, room, user, frame);
            }
            Act::Ban { reason } => {
                outranks(target.unwrap_or(Role::Member))?;
                if self.is_banned(room, user) && target.is_none() {
                    return Ok(Reply::empty(None));
                }
                self.out.writes.push(Write::Ban { room: room.into(), user: user.into(), banned: true, at });
                self.view.bans.insert((room.to_owned(), user.to_owned()));
                if self.view.invites.remove(&(room.to_owned(), user.to_owned())) {
                    // A ban withdraws a pending invitation.
                    self.out.writes.push(Write::Invite { room: room.into(), user: user.into(), invited: false, at });
                }
                let note = Note { reason: reason.clone(), ..Note::default() };
                let frame = member_event(room, user, MemberAction::Ban, by, note);
                if target.is_some() {
                    self.remove_member(r, room, user, frame);
                } else {
                    self.event(room, Audience::Members, None, frame);
                }
            }
            Act::Unban => {
                outranks(Role::Member)?;
                if self.view.bans.remove(&(room.to_owned(), user.to_owned())) {
                    self.out.writes.push(Write::Ban { room: room.into(), user: user.into(), banned: false, at });
                    let frame = member_event(room, user, MemberAction::Unban, by, Note::default());
                    self.event(room, Audience::Members, None, frame);
                }
            }
            Act::Mute { until } => {
                outranks(target.ok_or_else(|| not_a_member(room, user))?)?;
                self.set_mute(r, room, user, until.unwrap_or(MUTED_FOREVER).clamp(1, MUTED_FOREVER));
                let frame = member_event(room, user, MemberAction::Mute, by, Note { until: *until, ..Note::default() });
                self.event(room, Audience::Members, None, frame);
            }
            Act::Unmute => {
                outranks(target.ok_or_else(|| not_a_member(room, user))?)?;
                if self.standing(room, user).muted_until > 0 {
                    self.set_mute(r, room, user, 0);
                    let frame = member_event(room, user, MemberAction::Unmute, by, Note::default());
                    self.event(room, Audience::Members, None, frame);
                }
            }
            Act::SetRole { role } => {
                if by == user {
                    return Err(ProtocolError::bad_request("set_role names another member"));
                }
                if actor != Role::Owner {
                    return Err(forbidden(format!("only the owner of '{room}' sets roles")));
                }
                let current = target.ok_or_else(|| not_a_member(room, user))?;
                if current == *role {
                    return Ok(Reply::empty(None));
                }
                let mut changed = vec![(user, *role)];
                if *role == Role::Owner {
                    // Exactly one owner: the old one steps down to admin.
                    changed.push((by, Role::Admin));
                    let settings =
                        RoomSettings { owner: Some(user.into()), ..self.room(room).settings.unwrap_or_default() };
                    self.set_settings(r, room, settings);
                }
                for (member, role) in changed {
                    self.set_role(r, room, member, role);
                    let note = Note { role: Some(role), ..Note::default() };
                    let frame = member_event(room, member, MemberAction::Role, by, note);
                    self.event(room, Audience::Members, None, frame);
                }
            }
        }
        Ok(Reply::empty(None))
    }

    pub(super) fn update_room(
        &mut self,
        r: &Record,
        by: &str,
        name: Option<&str>,
        topic: Option<&str>,
        visibility: Option<Visibility>,
        retention_days: Option<u32>,
    ) -> Result<Reply, ProtocolError> {
        let room = r.record.room.as_str();
        let actor = self.role_of(room, by).ok_or_else(|| ProtocolError::not_member(room))?;
        if !actor.moderates() {
            return Err(forbidden(format!("only admins and the owner of '{room}' change its settings")));
        }
        let mut settings = self.room(room).settings.unwrap_or_default();
        if let Some(name) = name {
            settings.name = name.into();
        }
        if let Some(topic) = topic {
            settings.topic = topic.into();
        }
        if let Some(visibility) = visibility {
            settings.visibility = visibility;
        }
        if let Some(days) = retention_days {
            // 0: back to the cluster's default.
            settings.retention_days = (days > 0).then_some(days);
        }
        self.set_settings(r, room, settings.clone());
        let frame = Event::Room {
            room: room.into(),
            name: settings.name,
            topic: settings.topic,
            visibility: settings.visibility,
            by: by.into(),
            retention_days: settings.retention_days,
        }
        .encode();
        self.event(room, Audience::Members, None, frame);
        Ok(Reply::empty(None))
    }
}

#[cfg(test)]
mod tests {
    use confab_protocol::request::RequestId;
    use confab_protocol::{Command, Delivery, IngressRecord, Origin};
    use serde_json::Value;

    use super::super::tests::{events, run};
    use super::super::{Decided, Effect};
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

    fn act(offset: u64, by: &str, user: &str, act: Act) -> Record {
        record(offset, Command::Moderate { by: by.into(), user: user.into(), act })
    }

    fn key(user: &str) -> (String, String) {
        ("r".into(), user.into())
    }

    /// Room `r`, owned by alice, with these members and roles.
    fn room(visibility: Visibility, members: &[(&str, Role)]) -> View {
        let mut view = View::default();
        let settings = RoomSettings { visibility, owner: Some("alice".into()), ..RoomSettings::default() };
        let state = RoomState {
            last_seq: 3,
            exists: true,
            members: members.len() as u64,
            settings: Some(settings),
            ..RoomState::default()
        };
        view.rooms.insert("r".into(), state);
        for (user, role) in members {
            view.members.insert(key(user));
            if *role != Role::Member {
                view.standing.insert(key(user), MemberRecord { role: *role, muted_until: 0 });
            }
        }
        view
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

    fn send(offset: u64, from: &str) -> Record {
        record(
            offset,
            Command::Send {
                from: from.into(),
                text: "hi".into(),
                cid: format!("c{offset}"),
                reply_to: None,
                attachments: vec![],
            },
        )
    }

    /// The membership outcomes a batch records for the webhooks: `(at, user, change, by)`.
    fn member_events(d: &Decided) -> Vec<(u64, String, &'static str, Option<String>)> {
        d.writes
            .iter()
            .filter_map(|w| match w {
                Write::MemberEvent { at, event, .. } => {
                    Some((*at, event.user.clone(), event.change.as_str(), event.by.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn each_membership_change_records_its_outcome_and_a_refusal_none() {
        let members = [("alice", Role::Owner), ("carol", Role::Member)];
        let join = |offset, user: &str| record(offset, Command::Join { user: user.into() });
        let leave = |offset, user: &str| record(offset, Command::Leave { user: user.into() });
        let d = run(
            room(Visibility::Public, &members),
            &[
                join(1, "bob"),
                leave(2, "bob"),
                join(3, "bob"),
                join(4, "bob"),
                act(5, "carol", "bob", Act::Kick { reason: None }),
                act(6, "alice", "bob", Act::Kick { reason: None }),
                act(7, "alice", "mallory", Act::Ban { reason: None }),
                join(8, "mallory"),
                act(9, "alice", "mallory", Act::Ban { reason: None }),
            ],
        );
        let alice = Some("alice".to_owned());
        assert_eq!(
            member_events(&d),
            [
                (2, "bob".into(), "join", None),
                (3, "bob".into(), "leave", None),
                (4, "bob".into(), "join", None),
                (7, "bob".into(), "kick", alice.clone()),
                (8, "mallory".into(), "ban", alice),
            ],
            "a repeated join, a kick by a member, a banned user's join and a repeated ban record nothing"
        );
        assert_eq!(codes(&d), ["ok", "ok", "ok", "ok", "forbidden", "ok", "ok", "forbidden", "ok"]);
    }

    #[test]
    fn a_kick_and_a_send_are_decided_in_log_order() {
        let members = [("alice", Role::Owner), ("bob", Role::Member)];
        let first_send = run(
            room(Visibility::Public, &members),
            &[send(10, "bob"), act(11, "alice", "bob", Act::Kick { reason: None })],
        );
        assert_eq!(codes(&first_send), ["ok", "ok"]);
        let first_kick = run(
            room(Visibility::Public, &members),
            &[act(10, "alice", "bob", Act::Kick { reason: None }), send(11, "bob")],
        );
        assert_eq!(codes(&first_kick), ["ok", "not_member"]);
        assert!(!first_kick.writes.iter().any(|w| matches!(w, Write::Message(_))));
        let kicked = &events(&first_kick)[0];
        assert_eq!((&kicked["action"], &kicked["by"]), (&Value::from("kick"), &Value::from("alice")));
    }

    #[test]
    fn moderation_takes_a_higher_role() {
        let members = [("alice", Role::Owner), ("bob", Role::Admin), ("carol", Role::Member), ("dave", Role::Admin)];
        let d = run(
            room(Visibility::Public, &members),
            &[
                act(1, "carol", "bob", Act::Kick { reason: None }),
                act(2, "bob", "alice", Act::Ban { reason: None }),
                act(3, "bob", "dave", Act::Mute { until: None }),
                act(4, "bob", "carol", Act::Mute { until: None }),
                act(5, "bob", "carol", Act::SetRole { role: Role::Admin }),
                act(6, "eve", "carol", Act::Kick { reason: None }),
                act(7, "bob", "eve", Act::Kick { reason: None }),
            ],
        );
        assert_eq!(codes(&d), ["forbidden", "forbidden", "forbidden", "ok", "forbidden", "not_member", "not_member"]);
        assert_eq!(d.writes, [Write::Mute { room: "r".into(), user: "carol".into(), until: MUTED_FOREVER, at: 5 }]);
    }

    #[test]
    fn a_muted_member_cannot_send_until_the_mute_ends() {
        let mut view = room(Visibility::Public, &[("alice", Role::Owner), ("bob", Role::Member)]);
        // Records are accepted at 1_000_000 + offset ms, i.e. 1000 s.
        view.standing.insert(key("bob"), MemberRecord { role: Role::Member, muted_until: 1001 });
        let d = run(view.clone(), &[send(1, "bob")]);
        assert_eq!(codes(&d), ["forbidden"]);
        view.standing.insert(key("bob"), MemberRecord { role: Role::Member, muted_until: 1000 });
        assert_eq!(codes(&run(view, &[send(1, "bob")])), ["ok"], "the mute ended at 1000 s");
    }

    #[test]
    fn a_private_room_takes_an_invitation_once_and_a_ban_keeps_out() {
        let view = room(Visibility::Private, &[("alice", Role::Owner), ("carol", Role::Member)]);
        let join = |offset, user: &str| record(offset, Command::Join { user: user.into() });
        let d = run(
            view,
            &[
                join(1, "bob"),
                act(2, "carol", "bob", Act::Invite),
                act(3, "alice", "bob", Act::Invite),
                join(4, "bob"),
                record(5, Command::Leave { user: "bob".into() }),
                join(6, "bob"),
                act(7, "alice", "dave", Act::Invite),
                act(8, "alice", "dave", Act::Ban { reason: None }),
                act(9, "alice", "dave", Act::Invite),
                join(10, "dave"),
            ],
        );
        assert!(
            d.writes.contains(&Write::Invite { room: "r".into(), user: "dave".into(), invited: false, at: 9 }),
            "the ban withdrew dave's invitation"
        );
        assert_eq!(
            codes(&d),
            ["forbidden", "forbidden", "ok", "ok", "ok", "forbidden", "ok", "ok", "forbidden", "forbidden"]
        );
        let invite = d.effects.iter().find_map(|e| match e {
            Effect::Event { audience: Audience::MembersAnd(user), .. } => Some(user.clone()),
            _ => None,
        });
        assert_eq!(invite.as_deref(), Some("bob"), "the invitee hears of it");
        assert!(d.writes.contains(&Write::Invite { room: "r".into(), user: "bob".into(), invited: false, at: 5 }));
    }

    #[test]
    fn handing_ownership_over_keeps_one_owner() {
        let view = room(Visibility::Public, &[("alice", Role::Owner), ("bob", Role::Member)]);
        let d = run(
            view,
            &[
                act(1, "alice", "bob", Act::SetRole { role: Role::Owner }),
                act(2, "alice", "bob", Act::SetRole { role: Role::Member }),
                record(3, Command::Leave { user: "bob".into() }),
                record(4, Command::Leave { user: "alice".into() }),
            ],
        );
        assert_eq!(codes(&d), ["ok", "forbidden", "forbidden", "ok"]);
        let roles: Vec<_> = d
            .writes
            .iter()
            .filter_map(|w| match w {
                Write::Role { user, role, .. } => Some((user.as_str(), *role)),
                _ => None,
            })
            .collect();
        assert_eq!(roles, [("bob", Role::Owner), ("alice", Role::Admin)]);
        assert_eq!(d.rooms["r"].settings.as_ref().unwrap().owner.as_deref(), Some("bob"));
    }

    #[test]
    fn the_first_joiner_of_an_empty_ownerless_room_owns_it() {
        let mut view = room(Visibility::Public, &[]);
        view.rooms.get_mut("r").unwrap().settings.as_mut().unwrap().owner = None;
        let d = run(view, &[record(1, Command::Join { user: "bob".into() })]);
        assert!(d.writes.contains(&Write::Role { room: "r".into(), user: "bob".into(), role: Role::Owner, at: 2 }));
        let create = record(
            2,
            Command::Create {
                user: "carol".into(),
                visibility: Visibility::Public,
                name: String::new(),
                topic: String::new(),
            },
        );
        assert_eq!(codes(&run(room(Visibility::Public, &[]), &[create])), ["taken"]);
    }
}
