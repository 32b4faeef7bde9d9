//! What the server API (docs/server-api.md) decides in a room's order:
//!
//! * `Command::Add`: the application adds a user to a room without an
//!   invitation (a private room too), as a member or an admin. A banned
//!   user is refused, as their own `join` would be.
//! * `Command::Remove`: the application removes a member; an owner's
//!   ownership passes on as when their account is erased.

use confab_bus::Record;
use confab_protocol::event::ReplyBody;
use confab_protocol::validate::dm_members;
use confab_protocol::{Audience, ErrorCode, Event, MemberAction, ProtocolError, Reply, Role};

use super::Batch;
use super::rooms::forbidden;

impl Batch {
    pub(super) fn server_add(&mut self, r: &Record, user: &str, role: Option<Role>) -> Result<Reply, ProtocolError> {
        let room = r.record.room.as_str();
        if dm_members(room).is_some() {
            return Err(ProtocolError::bad_request("direct-message rooms have no members to add"));
        }
        if role == Some(Role::Owner) {
            return Err(ProtocolError::bad_request("a room has one owner: add as `member` or `admin`"));
        }
        if !self.room(room).exists {
            return Err(ProtocolError::new(ErrorCode::NotFound, format!("no room '{room}'")));
        }
        if !self.is_member(room, user) {
            if self.view.bans.contains(&(room.to_owned(), user.to_owned())) {
                return Err(forbidden(format!("'{user}' is banned from '{room}'")));
            }
            self.check_room_count(user, &format!("'{user}' is"))?;
            self.add_member(r, room, user);
        }
        if let Some(role) = role {
            let current = self.standing(room, user).role;
            if current == Role::Owner {
                return Err(forbidden(format!("'{user}' owns '{room}': hand ownership over first")));
            }
            if current != role {
                self.set_role(r, room, user, role);
                let frame = Event::Member {
                    room: room.into(),
                    user: user.into(),
                    action: MemberAction::Role,
                    by: None,
                    reason: None,
                    role: Some(role),
                    until: None,
                }
                .encode();
                self.event(room, Audience::Members, None, frame);
            }
        }
        Ok(Reply::ok(None, ReplyBody::Join { room: room.into(), last_seq: self.room(room).last_seq }))
    }

    pub(super) fn server_remove(&mut self, r: &Record, user: &str) -> Result<Reply, ProtocolError> {
        let room = r.record.room.as_str();
        if dm_members(room).is_some() {
            return Err(ProtocolError::bad_request("direct-message rooms have no members to remove"));
        }
        if !self.is_member(room, user) {
            return Err(ProtocolError::new(ErrorCode::NotMember, format!("'{user}' is not a member of '{room}'")));
        }
        self.leave_passing_ownership(r, room, user);
        Ok(Reply::empty(None))
    }
}

#[cfg(test)]
mod tests {
    use confab_protocol::{Command, Role, Visibility};
    use confab_store::{MemberRecord, RoomSettings, Write};

    use super::super::tests::{events, record, replies, room_r, run};

    fn private_r(members: &[&str]) -> crate::pipeline::view::View {
        let mut view = room_r(members, 5);
        let state = view.rooms.get_mut("r").unwrap();
        state.settings = Some(RoomSettings {
            owner: Some("owner".into()),
            visibility: Visibility::Private,
            ..RoomSettings::default()
        });
        view
    }

    #[test]
    fn the_server_adds_to_a_private_room_without_an_invitation_and_tells_the_room() {
        let add = record(9, "r", Command::Add { user: "bob".into(), role: Some(Role::Admin) });
        let d = run(private_r(&["owner"]), &[add]);
        assert_eq!(replies(&d)[0]["ok"], true, "{:?}", replies(&d));
        assert_eq!(replies(&d)[0]["last_seq"], 5);
        assert!(d.writes.iter().any(|w| matches!(w, Write::Join { user, .. } if user == "bob")));
        assert!(d.writes.iter().any(|w| matches!(w, Write::Role { user, role: Role::Admin, .. } if user == "bob")));
        let actions: Vec<String> = events(&d).iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect();
        assert_eq!(actions, ["join", "role"]);
        assert_eq!(d.rooms["r"].members, 2);
    }

    #[test]
    fn the_server_refuses_a_missing_room_a_banned_user_an_owner_role_and_a_dm() {
        let missing = record(9, "nowhere", Command::Add { user: "bob".into(), role: None });
        assert_eq!(replies(&run(room_r(&["owner"], 5), &[missing]))[0]["error"]["code"], "not_found");
        let mut banned = room_r(&["owner"], 5);
        banned.bans.insert(("r".into(), "bob".into()));
        let add = record(9, "r", Command::Add { user: "bob".into(), role: None });
        assert_eq!(replies(&run(banned, &[add]))[0]["error"]["code"], "forbidden");
        let owner = record(9, "r", Command::Add { user: "bob".into(), role: Some(Role::Owner) });
        assert_eq!(replies(&run(room_r(&["owner"], 5), &[owner]))[0]["error"]["code"], "bad_request");
        let dm = record(9, "dm:a:b", Command::Add { user: "c".into(), role: None });
        assert_eq!(replies(&run(room_r(&[], 0), &[dm]))[0]["error"]["code"], "bad_request");
    }

    #[test]
    fn a_removed_owner_passes_the_room_on_and_a_non_member_is_not_removed() {
        let mut view = room_r(&["owner", "bob", "carol"], 5);
        view.standing.insert(("r".into(), "owner".into()), MemberRecord { role: Role::Owner, muted_until: 0 });
        view.successors.insert("r".into(), Some("carol".into()));
        let remove = record(9, "r", Command::Remove { user: "owner".into() });
        let again = record(10, "r", Command::Remove { user: "owner".into() });
        let d = run(view, &[remove, again]);
        let replies = replies(&d);
        assert_eq!((replies[0]["ok"].clone(), replies[1]["error"]["code"].clone()), (true.into(), "not_member".into()));
        assert_eq!(d.rooms["r"].settings.as_ref().unwrap().owner.as_deref(), Some("carol"));
        assert_eq!(d.rooms["r"].members, 2);
        let actions: Vec<String> = events(&d).iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect();
        assert_eq!(actions, ["leave", "role"]);
    }
}
