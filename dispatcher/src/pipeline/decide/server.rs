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
