//! Records that travel between gateways and dispatchers.
//!
//! * [`IngressRecord`]: a client write, produced by a gateway to the ingress
//!   log keyed by room, consumed by the dispatcher that owns the room.
//! * [`Delivery`]: what a dispatcher pushes to a gateway after the write is
//!   stored: the reply to the origin session, and room events with the
//!   audience the gateway resolves against its local sessions.
//! * [`Announcement`]: what gateways tell every dispatcher and every other
//!   gateway about the rooms and users they host.

use serde::{Deserialize, Serialize};

use crate::request::RequestId;
use crate::rooms::{Role, Visibility};
use crate::unread::NotifyLevel;

/// Where the reply to a write goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub gateway: String,
    pub session: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re: Option<RequestId>,
    /// Gateway-local monotonic microseconds at acceptance, echoed back so the
    /// gateway can time accepted-to-acked without a table of pending requests.
    pub t0: u64,
}

/// One client write, keyed by `room` on the ingress log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressRecord {
    pub room: String,
    /// Unix milliseconds at acceptance by the gateway; becomes the message `ts`.
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    pub cmd: Command,
}

/// What a write asks for. DM rooms (`dm:a:b`) come into being with their
/// first `Send`, both users as members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Command {
    Send {
        from: String,
        text: String,
        cid: String,
        /// The seq of the message this one replies to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<u64>,
        /// Upload ids to attach, checked where the send is decided.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<String>,
    },
    Join {
        user: String,
    },
    Leave {
        user: String,
    },
    Read {
        user: String,
        seq: u64,
    },
    Typing {
        user: String,
    },
    /// `create`: a new room owned by `user`.
    Create {
        user: String,
        visibility: Visibility,
        name: String,
        topic: String,
    },
    /// A member's standing decided by the dispatcher in the room's order:
    /// `by` acts on `user`.
    Moderate {
        by: String,
        user: String,
        act: Act,
    },
    /// `update_room`: the fields to change.
    UpdateRoom {
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        visibility: Option<Visibility>,
        /// 0 clears the room's own setting.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retention_days: Option<u32>,
    },
    /// `notify`: `user`'s notification level for the room.
    Notify {
        user: String,
        level: NotifyLevel,
    },
    /// `user`'s account was deleted: they leave the room (ownership passes
    /// on) and their messages in it lose their text and author.
    Erase {
        user: String,
    },
    /// `user` blocked or unblocked `other` (stored already), produced to
    /// their DM so its dispatcher, which remembers blocks, reads it again
    /// for the DM's later messages. Nothing is written or sent.
    BlockChanged {
        user: String,
        other: String,
    },
    /// `edit`: `by` replaces the text of message `seq` (crate::lifecycle).
    Edit {
        by: String,
        seq: u64,
        text: String,
    },
    /// `delete`: `by` deletes message `seq`.
    Delete {
        by: String,
        seq: u64,
    },
    /// `react`: `user` adds (or with `remove`, takes back) a reaction.
    React {
        user: String,
        seq: u64,
        emoji: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        remove: bool,
    },
    /// The server API adds `user` to the room, without an invitation, as
    /// `role` (a member when absent; never the owner).
    Add {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
    },
    /// The server API removes `user` from the room; an owner's ownership
    /// passes on as when their account is erased.
    Remove {
        user: String,
    },
}

/// What a [`Command::Moderate`] does to its user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "a", rename_all = "snake_case")]
pub enum Act {
    Invite,
    Kick {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Ban {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Unban,
    /// Until `until` (unix seconds), or until unmuted.
    Mute {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<u64>,
    },
    Unmute,
    SetRole {
        role: Role,
    },
}

impl IngressRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record always serializes")
    }
    pub fn decode(bytes: &[u8]) -> Result<IngressRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Who, among a gateway's local sessions, receives a room event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", content = "user", rename_all = "snake_case")]
pub enum Audience {
    /// Every session of every member of the room.
    Members,
    /// Every session of every member but this user (typing).
    MembersExcept(String),
    /// Every session of every member, and every session of this user, who
    /// is not a member (an invitation).
    MembersAnd(String),
}

/// A change of membership the gateway applies to its local index: a joining
/// user is added before the event is delivered (so the joiner sees it), a
/// leaving one removed after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", content = "user", rename_all = "snake_case")]
pub enum RoomEffect {
    Joined(String),
    Left(String),
}

/// What a dispatcher pushes to one gateway. `frame` is the encoded JSON the
/// client receives, encoded once by the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Delivery {
    Reply {
        session: u64,
        t0: u64,
        frame: String,
    },
    Room {
        room: String,
        audience: Audience,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        effect: Option<RoomEffect>,
        frame: String,
    },
}

/// What a gateway tells the others about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Announcement {
    /// Rooms in which the gateway gained its first / lost its last local
    /// member, and users who gained their first / lost their last session.
    Hosts {
        gateway: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        rooms_added: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        rooms_removed: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        users_added: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        users_removed: Vec<String>,
    },
    /// Liveness; `addr` is the gateway's internal push address, if it has one.
    Heartbeat {
        gateway: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addr: Option<String>,
    },
    /// A user's tokens were revoked: every gateway closes that user's
    /// sessions whose token was issued before `before_ms` (unix
    /// milliseconds; 0: none) or has the id `jti`.
    Revoke {
        gateway: String,
        user: String,
        #[serde(default)]
        before_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jti: Option<String>,
    },
    /// The gateway is shutting down: forget its routes now.
    Gone { gateway: String },
    /// A process that just started (`gateway` names it) asks every gateway
    /// to announce everything it hosts, since announcements are deltas.
    Resync { gateway: String },
    /// `user`'s contacts or blocks changed: gateways hosting them re-read
    /// their blocks (when `blocks`) and hand `frame`, a `contact` event,
    /// to their sessions.
    Relations {
        gateway: String,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frame: Option<String>,
        #[serde(default)]
        blocks: bool,
    },
    /// The server API disconnected `user`: every gateway closes that
    /// user's sessions with `bye disconnected`.
    Disconnect { gateway: String, user: String },
}

impl Announcement {
    pub fn gateway(&self) -> &str {
        match self {
            Announcement::Hosts { gateway, .. }
            | Announcement::Heartbeat { gateway, .. }
            | Announcement::Revoke { gateway, .. }
            | Announcement::Gone { gateway }
            | Announcement::Resync { gateway }
            | Announcement::Relations { gateway, .. }
            | Announcement::Disconnect { gateway, .. } => gateway,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress_records_round_trip() {
        let r = IngressRecord {
            room: "dm:alice:bob".into(),
            ts: 1_700_000_000_000,
            origin: Some(Origin { gateway: "gw-1".into(), session: 9, re: Some(RequestId::Str("x".into())), t0: 5 }),
            cmd: Command::Send {
                from: "alice".into(),
                text: "hi".into(),
                cid: "c-1".into(),
                reply_to: None,
                attachments: vec![],
            },
        };
        assert_eq!(IngressRecord::decode(&r.encode()).unwrap(), r);
    }
}
