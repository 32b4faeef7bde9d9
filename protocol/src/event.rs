//! What the server sends: replies to requests (they carry `re`) and events
//! (they carry `ev`, never `re`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::accounts::Profile;
use crate::contacts::{ContactEntry, ContactStatus};
use crate::error::ProtocolError;
use crate::lifecycle::Version;
use crate::message::{Message, RoomInfo};
use crate::request::RequestId;
use crate::rooms::{DirectoryEntry, MemberEntry, Role, Visibility};

/// The one reply to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub re: Option<RequestId>,
    pub ok: bool,
    #[serde(flatten)]
    pub body: ReplyBody,
}

/// The op-specific fields of a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(untagged)]
pub enum ReplyBody {
    Error {
        error: ProtocolError,
    },
    Send {
        room: String,
        seq: u64,
        msg_id: String,
        ts: u64,
    },
    /// `room_info` (before `Join`: a client decoding untagged replies must
    /// not take it for a `join` reply).
    RoomInfo {
        room: String,
        name: String,
        topic: String,
        visibility: Visibility,
        members: u64,
        role: Option<Role>,
        /// Days the room keeps messages (its own setting, else the
        /// cluster's default); absent: forever.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        retention_days: Option<u32>,
    },
    Join {
        room: String,
        last_seq: u64,
    },
    Members {
        members: Vec<MemberEntry>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        next: Option<String>,
    },
    Directory {
        rooms: Vec<DirectoryEntry>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        next: Option<String>,
    },
    /// `profile`: the caller's profile as now stored.
    Profile {
        user: String,
        display_name: String,
        avatar: String,
        /// A bot account; absent when false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        #[cfg_attr(test, ts(as = "Option<bool>", optional))]
        bot: bool,
    },
    Users {
        users: Vec<Profile>,
    },
    Rooms {
        rooms: Vec<RoomInfo>,
    },
    Messages {
        messages: Vec<Message>,
        /// `true` when the page stopped short of `limit` at the reply's byte
        /// budget, so older messages remain; absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        more: Option<bool>,
    },
    Sync {
        rooms: BTreeMap<String, SyncRoom>,
    },
    Presence {
        online: Vec<String>,
    },
    /// `contact_add`: the relation as it now stands.
    Contact {
        user: String,
        status: ContactStatus,
    },
    Contacts {
        contacts: Vec<ContactEntry>,
    },
    /// `blocks`: the users the caller blocked, by name.
    Blocked {
        blocked: Vec<String>,
    },
    /// `edits`: a message's earlier versions, oldest first.
    Edits {
        versions: Vec<Version>,
    },
    /// `edit`, `delete` and `react`: the message changed (or already was as asked).
    Changed {
        room: String,
        seq: u64,
    },
    Empty {},
}

/// One room of a `sync` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SyncRoom {
    pub messages: Vec<Message>,
    pub more: bool,
    /// With the request's `changes` for this room: the current state of
    /// messages up to the room's `after` changed since the device's change
    /// position, in seq order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub changed: Option<Vec<Message>>,
    /// With `changes`: the change position the device has now reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub change_pos: Option<u64>,
    /// `true` when `changed` stopped short: sync again from `change_pos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub changes_more: Option<bool>,
}

impl Reply {
    pub fn ok(re: Option<RequestId>, body: ReplyBody) -> Reply {
        Reply { re, ok: true, body }
    }
    pub fn empty(re: Option<RequestId>) -> Reply {
        Reply::ok(re, ReplyBody::Empty {})
    }
    pub fn error(re: Option<RequestId>, error: ProtocolError) -> Reply {
        Reply { re, ok: false, body: ReplyBody::Error { error } }
    }
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a reply always serializes")
    }
}

/// Why the server is closing a session (`bye`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ByeReason {
    SlowConsumer,
    TokenExpired,
    ServerRestart,
    /// The session's token was revoked (`logout`, `logout-all`, a password change).
    TokenRevoked,
    /// The application disconnected the user (`POST /v1/server/users/{user}/disconnect`).
    Disconnected,
}

impl ByeReason {
    /// The WebSocket close code PROTOCOL.md pairs with the reason.
    pub fn close_code(self) -> u16 {
        match self {
            ByeReason::SlowConsumer => 1013,
            ByeReason::TokenExpired => 1008,
            ByeReason::ServerRestart => 1012,
            ByeReason::TokenRevoked => 1008,
            ByeReason::Disconnected => 1008,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ByeReason::SlowConsumer => "slow_consumer",
            ByeReason::TokenExpired => "token_expired",
            ByeReason::ServerRestart => "server_restart",
            ByeReason::TokenRevoked => "token_revoked",
            ByeReason::Disconnected => "disconnected",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum MemberAction {
    Join,
    Leave,
    Invite,
    Kick,
    Ban,
    Unban,
    Mute,
    Unmute,
    /// The member's role changed (the event's `role`).
    Role,
}

/// Server-to-client events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(rename = "ServerEvent"))]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    Hello {
        user: String,
        session: String,
        server: String,
        heartbeat_ms: u64,
    },
    Msg {
        #[serde(flatten)]
        message: Message,
        prev_seq: u64,
    },
    Member {
        room: String,
        user: String,
        action: MemberAction,
        /// Who did it, when it was not `user` (moderation, invitations, roles).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        by: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        reason: Option<String>,
        /// The new role (`role`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        role: Option<Role>,
        /// End of a mute, unix seconds (`mute`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        until: Option<u64>,
    },
    /// A room's settings after `update_room`.
    Room {
        room: String,
        name: String,
        topic: String,
        visibility: Visibility,
        by: String,
        /// The room's own `retention_days`, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        retention_days: Option<u32>,
    },
    Typing {
        room: String,
        user: String,
    },
    Read {
        room: String,
        user: String,
        seq: u64,
    },
    Presence {
        user: String,
        online: bool,
    },
    Bye {
        reason: ByeReason,
    },
    /// A contact relation of the session's user changed: `user` asked,
    /// accepted, or ended it (`status: none`), or the session's user did on
    /// another device.
    Contact {
        user: String,
        status: ContactStatus,
    },
    /// A message's text was edited. `pos` is the change's place in the
    /// room's log, `prev_pos` that of the room's change before it (0: none).
    Edit {
        room: String,
        seq: u64,
        text: String,
        edited_ts: u64,
        by: String,
        pos: u64,
        prev_pos: u64,
    },
    /// A message was deleted.
    Delete {
        room: String,
        seq: u64,
        by: String,
        pos: u64,
        prev_pos: u64,
    },
    /// `user` reacted to a message with `emoji`, or took it back (`remove`).
    React {
        room: String,
        seq: u64,
        emoji: String,
        user: String,
        remove: bool,
        pos: u64,
        prev_pos: u64,
    },
}

impl Event {
    /// A `member` event without the optional fields (`join`, `leave`).
    pub fn member(room: &str, user: &str, action: MemberAction) -> Event {
        Event::Member { room: room.into(), user: user.into(), action, by: None, reason: None, role: None, until: None }
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("an event always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use serde_json::json;

    #[test]
    fn replies_have_the_protocol_shape() {
        let ok = Reply::ok(Some(RequestId::Int(7)), ReplyBody::Join { room: "r".into(), last_seq: 0 });
        assert_eq!(serde_json::to_value(&ok).unwrap(), json!({"re":7,"ok":true,"room":"r","last_seq":0}));
        let err = Reply::error(Some(RequestId::Str("x".into())), ProtocolError::not_member("x"));
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            json!({"re":"x","ok":false,"error":{"code":"not_member","message":"join room 'x' first"}})
        );
        assert_eq!(serde_json::to_value(Reply::empty(None)).unwrap(), json!({"ok":true}));
        assert_eq!(ErrorCode::NotMember.as_str(), "not_member");
    }

    #[test]
    fn a_msg_event_flattens_the_message() {
        let ev = Event::Msg {
            message: Message {
                room: "r".into(),
                seq: 5,
                msg_id: "0-4".into(),
                from: "alice".into(),
                text: "hi".into(),
                ts: 1,
                cid: "c".into(),
                mentions: vec!["bob".into()],
                ..Message::default()
            },
            prev_seq: 3,
        };
        let v: serde_json::Value = serde_json::from_str(&ev.encode()).unwrap();
        assert_eq!(
            v,
            json!({"ev":"msg","room":"r","seq":5,"msg_id":"0-4","from":"alice","text":"hi","ts":1,"cid":"c","mentions":["bob"],"prev_seq":3})
        );
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), ev);
    }
}
