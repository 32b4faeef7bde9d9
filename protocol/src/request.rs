//! Client requests: one JSON object per WebSocket text frame, `op` naming the
//! operation and `id` echoed back as `re` in the one reply.
//!
//! [`Request::decode`] is the only entry point for client bytes. It never
//! panics; every failure is a `bad_request` that carries the request id when
//! one could be read, so the reply can still be matched by the client.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::accounts;
use crate::error::ProtocolError;
use crate::lifecycle;
use crate::rooms::{self, Role, Visibility};
use crate::unread::{self, NotifyLevel};
use crate::validate;

/// Most rooms one `sync` may name; a larger request is `bad_request`.
pub const MAX_SYNC_ROOMS: usize = 1000;
/// Largest `limit` of `sync` (per room).
pub const MAX_SYNC_LIMIT: u32 = 1000;
pub const DEFAULT_SYNC_LIMIT: u32 = 100;
pub const MAX_HISTORY_LIMIT: u32 = 100;
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;

/// The client's request id: a string or an integer, echoed verbatim as `re`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(untagged)]
pub enum RequestId {
    Int(i64),
    /// Integers above `i64::MAX`: any JSON integer is a valid id. (One
    /// `number` in TypeScript, like `Int`.)
    #[cfg_attr(test, ts(skip))]
    UInt(u64),
    Str(String),
}

/// A decoded and validated client request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Option<RequestId>,
    pub op: Op,
}

/// Every operation of protocol v1 (docs/protocol.md). Unknown fields are ignored so that
/// clients written for later, additive versions still work.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Ping,
    Join {
        room: String,
    },
    Leave {
        room: String,
    },
    Rooms,
    Send {
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        room: Option<String>,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        to: Option<String>,
        /// May be empty (or absent) when `attachments` is not.
        #[serde(default)]
        #[cfg_attr(test, ts(as = "Option<String>", optional))]
        text: String,
        cid: String,
        /// The seq of a message of the same room this one replies to.
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        reply_to: Option<u64>,
        /// Upload ids (`POST /v1/uploads`) of the same room and sender.
        #[serde(default)]
        #[cfg_attr(test, ts(as = "Option<Vec<String>>", optional))]
        attachments: Vec<String>,
    },
    History {
        room: String,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        before: Option<u64>,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        limit: Option<u32>,
    },
    Sync {
        rooms: BTreeMap<String, u64>,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        limit: Option<u32>,
        /// Per room of `rooms`, the device's change position: the reply
        /// also holds the current state of earlier messages changed after it
        /// (crate::lifecycle).
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        changes: Option<BTreeMap<String, u64>>,
    },
    Typing {
        room: String,
    },
    Read {
        room: String,
        seq: u64,
    },
    Presence {
        room: String,
    },
    Create {
        room: String,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        visibility: Option<Visibility>,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        name: Option<String>,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        topic: Option<String>,
    },
    Invite {
        room: String,
        user: String,
    },
    Kick {
        room: String,
        user: String,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        reason: Option<String>,
    },
    Ban {
        room: String,
        user: String,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        reason: Option<String>,
    },
    Unban {
        room: String,
        user: String,
    },
    Mute {
        room: String,
        user: String,
        /// Unix seconds; without it, until `unmute`.
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        until: Option<u64>,
    },
    Unmute {
        room: String,
        user: String,
    },
    SetRole {
        room: String,
        user: String,
        role: Role,
    },
    UpdateRoom {
        room: String,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        name: Option<String>,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        topic: Option<String>,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        visibility: Option<Visibility>,
        /// Days the room keeps messages, 1 to 36500; 0: the cluster's default.
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        retention_days: Option<u32>,
    },
    RoomInfo {
        room: String,
    },
    Members {
        room: String,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        after: Option<String>,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        limit: Option<u32>,
    },
    Directory {
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        query: Option<String>,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        after: Option<String>,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        limit: Option<u32>,
    },
    Profile {
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        display_name: Option<String>,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        avatar: Option<String>,
    },
    Users {
        users: Vec<String>,
    },
    ContactAdd {
        user: String,
    },
    ContactRemove {
        user: String,
    },
    Contacts,
    Block {
        user: String,
    },
    Unblock {
        user: String,
    },
    Blocks,
    /// The caller's notification level for a room.
    Notify {
        room: String,
        level: NotifyLevel,
    },
    Edit {
        room: String,
        seq: u64,
        text: String,
    },
    /// A message's earlier versions.
    Edits {
        room: String,
        seq: u64,
    },
    Delete {
        room: String,
        seq: u64,
    },
    React {
        room: String,
        seq: u64,
        emoji: String,
        #[serde(default)]
        #[cfg_attr(test, ts(optional))]
        remove: Option<bool>,
    },
}

/// Where a `send` goes: a room the sender names, or a user for a DM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    Room(&'a str),
    User(&'a str),
}

/// A decoding failure: the error to send and the request id, when one was read.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub id: Option<RequestId>,
    pub error: ProtocolError,
}

impl Request {
    /// Decodes and validates one client frame.
    pub fn decode(frame: &str, max_text: usize) -> Result<Request, DecodeError> {
        let fail =
            |id: Option<RequestId>, message: String| DecodeError { id, error: ProtocolError::bad_request(message) };
        let value: Value =
            serde_json::from_str(frame).map_err(|e| fail(None, format!("frame is not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(fail(None, "a request must be a JSON object".into()));
        };
        let id = match map.get("id") {
            None | Some(Value::Null) => None,
            Some(v) => match RequestId::deserialize(v) {
                Ok(id) => Some(id),
                Err(_) => return Err(fail(None, "id must be a string or an integer".into())),
            },
        };
        match map.get("op") {
            None => return Err(fail(id, "missing field `op`".into())),
            Some(Value::String(_)) => {}
            Some(_) => return Err(fail(id, "op must be a string".into())),
        }
        // serde's messages quote the client's input: keep them short.
        let op = Op::deserialize(Value::Object(map)).map_err(|e| fail(id.clone(), validate::clip(&e.to_string())))?;
        op.validate(max_text).map_err(|error| DecodeError { id: id.clone(), error })?;
        Ok(Request { id, op })
    }
}

impl Op {
    /// The op's name, as on the wire; used for metrics labels and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Ping => "ping",
            Op::Join { .. } => "join",
            Op::Leave { .. } => "leave",
            Op::Rooms => "rooms",
            Op::Send { .. } => "send",
            Op::History { .. } => "history",
            Op::Sync { .. } => "sync",
            Op::Typing { .. } => "typing",
            Op::Read { .. } => "read",
            Op::Presence { .. } => "presence",
            Op::Create { .. } => "create",
            Op::Invite { .. } => "invite",
            Op::Kick { .. } => "kick",
            Op::Ban { .. } => "ban",
            Op::Unban { .. } => "unban",
            Op::Mute { .. } => "mute",
            Op::Unmute { .. } => "unmute",
            Op::SetRole { .. } => "set_role",
            Op::UpdateRoom { .. } => "update_room",
            Op::RoomInfo { .. } => "room_info",
            Op::Members { .. } => "members",
            Op::Directory { .. } => "directory",
            Op::Profile { .. } => "profile",
            Op::Users { .. } => "users",
            Op::ContactAdd { .. } => "contact_add",
            Op::ContactRemove { .. } => "contact_remove",
            Op::Contacts => "contacts",
            Op::Block { .. } => "block",
            Op::Unblock { .. } => "unblock",
            Op::Blocks => "blocks",
            Op::Notify { .. } => "notify",
            Op::Edit { .. } => "edit",
            Op::Edits { .. } => "edits",
            Op::Delete { .. } => "delete",
            Op::React { .. } => "react",
        }
    }

    /// The rules of PROTOCOL.md that do not need server state.
    fn validate(&self, max_text: usize) -> Result<(), ProtocolError> {
        match self {
            Op::Ping | Op::Rooms | Op::Contacts | Op::Blocks => Ok(()),
            Op::ContactAdd { user } | Op::ContactRemove { user } | Op::Block { user } | Op::Unblock { user } => {
                validate::username(user).map_err(|_| ProtocolError::bad_request("`user` is not a valid user name"))
            }
            Op::Join { room } | Op::Leave { room } => validate::joinable_room(room),
            Op::Typing { room } | Op::Read { room, .. } | Op::Presence { room } | Op::Notify { room, .. } => {
                validate::room_ref(room)
            }
            Op::Send { room, to, text, cid, attachments, .. } => {
                match (room, to) {
                    (Some(room), None) => validate::room_ref(room)?,
                    (None, Some(to)) => validate::username(to)
                        .map_err(|_| ProtocolError::bad_request("`to` is not a valid user name"))?,
                    _ => {
                        return Err(ProtocolError::bad_request("send takes exactly one of `room` and `to`"));
                    }
                }
                validate::cid(cid)?;
                crate::attachments::validate(attachments)?;
                if text.is_empty() && !attachments.is_empty() { Ok(()) } else { validate::text(text, max_text) }
            }
            Op::History { room, limit, .. } => {
                validate::room_ref(room)?;
                validate::history_limit(*limit)
            }
            Op::Create { room, name, topic, .. } => {
                validate::joinable_room(room)?;
                rooms::bounded("name", name.as_deref().unwrap_or(""), rooms::MAX_NAME_BYTES)?;
                rooms::bounded("topic", topic.as_deref().unwrap_or(""), rooms::MAX_TOPIC_BYTES)
            }
            Op::UpdateRoom { room, name, topic, retention_days, .. } => {
                validate::joinable_room(room)?;
                rooms::bounded("name", name.as_deref().unwrap_or(""), rooms::MAX_NAME_BYTES)?;
                rooms::bounded("topic", topic.as_deref().unwrap_or(""), rooms::MAX_TOPIC_BYTES)?;
                match retention_days {
                    Some(d) if *d > unread::MAX_RETENTION_DAYS => Err(ProtocolError::bad_request(format!(
                        "retention_days must be 1 to {} (0: the cluster's default)",
                        unread::MAX_RETENTION_DAYS
                    ))),
                    _ => Ok(()),
                }
            }
            Op::Invite { room, user }
            | Op::Unban { room, user }
            | Op::Unmute { room, user }
            | Op::Mute { room, user, .. }
            | Op::SetRole { room, user, .. } => {
                validate::joinable_room(room)?;
                validate::username(user).map_err(|_| ProtocolError::bad_request("`user` is not a valid user name"))
            }
            Op::Kick { room, user, reason } | Op::Ban { room, user, reason } => {
                validate::joinable_room(room)?;
                validate::username(user).map_err(|_| ProtocolError::bad_request("`user` is not a valid user name"))?;
                rooms::bounded("reason", reason.as_deref().unwrap_or(""), rooms::MAX_REASON_BYTES)
            }
            Op::RoomInfo { room } => validate::joinable_room(room),
            Op::Members { room, after, limit } => {
                validate::joinable_room(room)?;
                if after.as_deref().is_some_and(|a| !validate::is_username(a)) {
                    return Err(ProtocolError::bad_request("`after` is not a valid user name"));
                }
                page_limit(*limit, rooms::MAX_MEMBERS_LIMIT)
            }
            Op::Directory { query, after, limit } => {
                rooms::bounded("query", query.as_deref().unwrap_or(""), rooms::MAX_QUERY_BYTES)?;
                if after.as_deref().is_some_and(|a| !validate::is_room_name(a)) {
                    return Err(ProtocolError::bad_request("`after` is not a valid room name"));
                }
                page_limit(*limit, rooms::MAX_DIRECTORY_LIMIT)
            }
            Op::Profile { display_name, avatar } => {
                accounts::display_name(display_name.as_deref().unwrap_or(""))?;
                accounts::avatar(avatar.as_deref().unwrap_or(""))
            }
            Op::Users { users } => {
                if users.is_empty() || users.len() > accounts::MAX_USERS_LOOKUP {
                    return Err(ProtocolError::bad_request(format!(
                        "`users` names 1 to {} users",
                        accounts::MAX_USERS_LOOKUP
                    )));
                }
                if users.iter().any(|u| !validate::is_username(u)) {
                    return Err(ProtocolError::bad_request("`users` holds an invalid user name"));
                }
                Ok(())
            }
            Op::Edit { room, text, .. } => {
                validate::room_ref(room)?;
                validate::text(text, max_text)
            }
            Op::Edits { room, .. } | Op::Delete { room, .. } => validate::room_ref(room),
            Op::React { room, emoji, .. } => {
                validate::room_ref(room)?;
                lifecycle::emoji(emoji)
            }
            Op::Sync { rooms, limit, changes } => {
                if rooms.len() > MAX_SYNC_ROOMS {
                    return Err(ProtocolError::bad_request(format!("sync names at most {MAX_SYNC_ROOMS} rooms")));
                }
                if changes.iter().flat_map(|c| c.keys()).any(|room| !rooms.contains_key(room)) {
                    return Err(ProtocolError::bad_request("`changes` names only rooms of `rooms`"));
                }
                for room in rooms.keys() {
                    validate::room_ref(room)?;
                }
                match limit {
                    Some(l) if !(1..=MAX_SYNC_LIMIT).contains(l) => {
                        Err(ProtocolError::bad_request(format!("limit must be 1 to {MAX_SYNC_LIMIT}")))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// The room a room-management op names.
    pub fn managed_room(&self) -> Option<&str> {
        match self {
            Op::Create { room, .. }
            | Op::Invite { room, .. }
            | Op::Kick { room, .. }
            | Op::Ban { room, .. }
            | Op::Unban { room, .. }
            | Op::Mute { room, .. }
            | Op::Unmute { room, .. }
            | Op::SetRole { room, .. }
            | Op::UpdateRoom { room, .. } => Some(room),
            _ => None,
        }
    }

    /// Where a validated `send` goes.
    pub fn send_target(&self) -> Option<Target<'_>> {
        match self {
            Op::Send { room: Some(room), .. } => Some(Target::Room(room)),
            Op::Send { to: Some(to), .. } => Some(Target::User(to)),
            _ => None,
        }
    }
}

fn page_limit(limit: Option<u32>, max: u32) -> Result<(), ProtocolError> {
    match limit {
        Some(l) if !(1..=max).contains(&l) => Err(ProtocolError::bad_request(format!("limit must be 1 to {max}"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn room_management_ops_decode_and_check_their_fields() {
        let r = decode(r#"{"id":1,"op":"create","room":"team","visibility":"private","name":"The team"}"#).unwrap();
        assert_eq!(
            r.op,
            Op::Create {
                room: "team".into(),
                visibility: Some(Visibility::Private),
                name: Some("The team".into()),
                topic: None
            }
        );
        let r = decode(r#"{"id":1,"op":"set_role","room":"team","user":"bob","role":"owner"}"#).unwrap();
        assert_eq!(r.op.name(), "set_role");
        for frame in [
            r#"{"id":1,"op":"set_role","room":"team","user":"bob","role":"god"}"#,
            r#"{"id":1,"op":"create","room":"t","visibility":"secret"}"#,
            r#"{"id":1,"op":"kick","room":"dm:a:b","user":"bob"}"#,
            r#"{"id":1,"op":"ban","room":"t","user":"Bob"}"#,
            r#"{"id":1,"op":"members","room":"t","limit":1001}"#,
            r#"{"id":1,"op":"directory","limit":0}"#,
            r#"{"id":1,"op":"mute","room":"t","user":"bob","until":-1}"#,
        ] {
            assert_eq!(decode(frame).unwrap_err().error.code, ErrorCode::BadRequest, "{frame}");
        }
        let long = format!(r#"{{"id":1,"op":"kick","room":"t","user":"bob","reason":"{}"}}"#, "x".repeat(257));
        assert_eq!(decode(&long).unwrap_err().error.code, ErrorCode::BadRequest);
        let long = format!(r#"{{"id":1,"op":"update_room","room":"t","topic":"{}"}}"#, "x".repeat(513));
        assert_eq!(decode(&long).unwrap_err().error.code, ErrorCode::BadRequest);
    }

    #[test]
    fn profile_ops_decode_and_check_their_fields() {
        let r = decode(r#"{"id":1,"op":"profile","display_name":"Alice"}"#).unwrap();
        assert_eq!(r.op, Op::Profile { display_name: Some("Alice".into()), avatar: None });
        let r = decode(r#"{"id":1,"op":"users","users":["alice","bob"]}"#).unwrap();
        assert_eq!(r.op.name(), "users");
        let many = format!(r#"{{"id":1,"op":"users","users":{:?}}}"#, vec!["bob"; 101]);
        for frame in [
            r#"{"id":1,"op":"profile","avatar":"http://x/a.png"}"#,
            r#"{"id":1,"op":"profile","display_name":5}"#,
            r#"{"id":1,"op":"users","users":[]}"#,
            r#"{"id":1,"op":"users","users":["Bob"]}"#,
            r#"{"id":1,"op":"users"}"#,
            many.as_str(),
        ] {
            assert_eq!(decode(frame).unwrap_err().error.code, ErrorCode::BadRequest, "{frame}");
        }
    }

    #[test]
    fn lifecycle_ops_decode_and_check_their_fields() {
        let r = decode(r#"{"id":1,"op":"react","room":"r","seq":4,"emoji":"👍","remove":true}"#).unwrap();
        assert_eq!(r.op, Op::React { room: "r".into(), seq: 4, emoji: "👍".into(), remove: Some(true) });
        let r = decode(r#"{"id":1,"op":"send","room":"r","text":"x","cid":"c","reply_to":3}"#).unwrap();
        assert!(matches!(r.op, Op::Send { reply_to: Some(3), .. }));
        let long = format!(r#"{{"id":1,"op":"edit","room":"r","seq":1,"text":"{}"}}"#, "x".repeat(4097));
        assert_eq!(decode(&long).unwrap_err().error.code, ErrorCode::TooLarge);
        for frame in [
            r#"{"id":1,"op":"edit","room":"r","seq":-1,"text":"x"}"#,
            r#"{"id":1,"op":"edit","room":"r","seq":1,"text":""}"#,
            r#"{"id":1,"op":"delete","room":"r"}"#,
            r#"{"id":1,"op":"edits","room":"dm:a","seq":1}"#,
            r#"{"id":1,"op":"react","room":"r","seq":1,"emoji":""}"#,
            r#"{"id":1,"op":"react","room":"r","seq":1,"emoji":"a\u0000"}"#,
            r#"{"id":1,"op":"sync","rooms":{"r":0},"changes":{"s":0}}"#,
            r#"{"id":1,"op":"send","room":"r","text":"x","cid":"c","reply_to":"3"}"#,
        ] {
            assert_eq!(decode(frame).unwrap_err().error.code, ErrorCode::BadRequest, "{frame}");
        }
    }

    fn decode(s: &str) -> Result<Request, DecodeError> {
        Request::decode(s, 4096)
    }

    #[test]
    fn contact_and_block_ops_decode_and_check_their_fields() {
        let r = decode(r#"{"id":1,"op":"contact_add","user":"bob"}"#).unwrap();
        assert_eq!(r.op, Op::ContactAdd { user: "bob".into() });
        assert_eq!(decode(r#"{"id":1,"op":"contacts"}"#).unwrap().op.name(), "contacts");
        assert_eq!(decode(r#"{"id":1,"op":"blocks"}"#).unwrap().op.name(), "blocks");
        for frame in [
            r#"{"id":1,"op":"contact_add","user":"Bob"}"#,
            r#"{"id":1,"op":"contact_remove"}"#,
            r#"{"id":1,"op":"block","user":5}"#,
            r#"{"id":1,"op":"unblock","user":"dm:a:b"}"#,
        ] {
            assert_eq!(decode(frame).unwrap_err().error.code, ErrorCode::BadRequest, "{frame}");
        }
    }

    #[test]
    fn a_well_formed_send_decodes() {
        let r = decode(r#"{"id":7,"op":"send","room":"general","text":"hi","cid":"c1"}"#).unwrap();
        assert_eq!(r.id, Some(RequestId::Int(7)));
        assert_eq!(r.op.send_target(), Some(Target::Room("general")));
    }

    #[test]
    fn junk_is_a_bad_request_without_an_id() {
        for junk in
            ["", "nope", "[1,2]", "42", "\"op\"", "{\"id\":1.5,\"op\":\"ping\"}", "{\"id\":[1],\"op\":\"ping\"}"]
        {
            let e = decode(junk).unwrap_err();
            assert_eq!(e.error.code, ErrorCode::BadRequest, "{junk}");
            assert_eq!(e.id, None, "{junk}");
        }
    }

    #[test]
    fn errors_after_the_id_is_read_carry_it() {
        for (frame, id) in [
            (r#"{"id":"a"}"#, RequestId::Str("a".into())),
            (r#"{"id":3,"op":"fly"}"#, RequestId::Int(3)),
            (r#"{"id":3,"op":5}"#, RequestId::Int(3)),
            (r#"{"id":3,"op":"join","room":5}"#, RequestId::Int(3)),
            (r#"{"id":3,"op":"join","room":"dm:a:b"}"#, RequestId::Int(3)),
            (r#"{"id":3,"op":"send","room":"r","to":"bob","text":"x","cid":"c"}"#, RequestId::Int(3)),
            (r#"{"id":3,"op":"send","room":"r","text":"x","cid":"bad cid"}"#, RequestId::Int(3)),
            (r#"{"id":3,"op":"history","room":"r","limit":101}"#, RequestId::Int(3)),
            (r#"{"id":3,"op":"history","room":"r","before":-1}"#, RequestId::Int(3)),
        ] {
            let e = decode(frame).unwrap_err();
            assert_eq!(e.error.code, ErrorCode::BadRequest, "{frame}");
            assert_eq!(e.id, Some(id), "{frame}");
        }
    }

    #[test]
    fn text_over_the_limit_is_too_large() {
        let frame = format!(r#"{{"id":1,"op":"send","room":"r","text":"{}","cid":"c"}}"#, "x".repeat(4097));
        assert_eq!(decode(&frame).unwrap_err().error.code, ErrorCode::TooLarge);
    }

    #[test]
    fn any_json_integer_is_an_id_and_long_errors_are_clipped() {
        let r = decode(r#"{"id":18446744073709551615,"op":"ping"}"#).unwrap();
        assert_eq!(r.id, Some(RequestId::UInt(u64::MAX)));
        let long = format!(r#"{{"id":1,"op":"{}"}}"#, "x".repeat(60_000));
        assert!(decode(&long).unwrap_err().error.message.len() < 200);
    }

    #[test]
    fn notify_and_retention_decode_and_check_their_fields() {
        let r = decode(r#"{"id":1,"op":"notify","room":"team","level":"mentions"}"#).unwrap();
        assert_eq!(r.op, Op::Notify { room: "team".into(), level: NotifyLevel::Mentions });
        let r = decode(r#"{"id":1,"op":"notify","room":"dm:a:b","level":"none"}"#).unwrap();
        assert_eq!(r.op.name(), "notify");
        let r = decode(r#"{"id":1,"op":"update_room","room":"t","retention_days":0}"#).unwrap();
        assert!(matches!(r.op, Op::UpdateRoom { retention_days: Some(0), .. }));
        for frame in [
            r#"{"id":1,"op":"notify","room":"team","level":"loud"}"#,
            r#"{"id":1,"op":"notify","room":"team"}"#,
            r#"{"id":1,"op":"notify","room":"no room","level":"all"}"#,
            r#"{"id":1,"op":"update_room","room":"t","retention_days":36501}"#,
            r#"{"id":1,"op":"update_room","room":"t","retention_days":-1}"#,
            r#"{"id":1,"op":"update_room","room":"t","retention_days":1.5}"#,
        ] {
            assert_eq!(decode(frame).unwrap_err().error.code, ErrorCode::BadRequest, "{frame}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        assert!(decode(r#"{"id":1,"op":"ping","future":true}"#).is_ok());
    }
}
