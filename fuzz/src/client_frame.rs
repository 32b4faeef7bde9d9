//! Arbitrary client bytes into `Request::decode`, the one entry point for
//! what a WebSocket client sends.
//!
//! Checks, besides "never panics":
//! * decoding is deterministic;
//! * on `Ok`: `op.name()` is non-empty and is the frame's `op`; the request id
//!   is the frame's `id`; the rules of PROTOCOL.md hold on the decoded fields;
//!   a canonical re-encoding of the request decodes to the same request
//!   (re-validation is consistent);
//! * on `Err`: the code is `bad_request` or `too_large` (`too_large` only for a
//!   `send` or `edit` whose `text` is over the limit); the error carries the frame's id
//!   exactly when one could be read; `Reply::error(..).encode()` is valid JSON
//!   of the protocol's shape and parses back to the same `Reply`.

use std::borrow::Cow;

use confab_protocol::event::ReplyBody;
use confab_protocol::request::{DecodeError, MAX_HISTORY_LIMIT, MAX_SYNC_LIMIT, MAX_SYNC_ROOMS, Target};
use confab_protocol::{ErrorCode, Op, Reply, Request, RequestId};
use confab_protocol::{accounts, lifecycle, rooms, unread, validate};
use serde::Deserialize;
use serde_json::{Map, Value, json};

const MAX_TEXT: usize = 4096;

/// One input: the bytes as `&str` when they are UTF-8, else lossily converted.
pub fn run(data: &[u8]) {
    let text: Cow<'_, str> = match std::str::from_utf8(data) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(data),
    };
    check(&text);
}

/// What an independent parse of the frame says about it.
struct Oracle {
    /// The frame is a JSON object.
    object: Option<Map<String, Value>>,
    /// The id a reply must carry: `Some` when the frame is an object whose
    /// `id` is a string or an i64.
    id: Option<RequestId>,
}

fn oracle(frame: &str) -> Oracle {
    let object = match serde_json::from_str::<Value>(frame) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    };
    let id = object.as_ref().and_then(|m| match m.get("id") {
        Some(Value::String(s)) => Some(RequestId::Str(s.clone())),
        Some(Value::Number(n)) => n.as_i64().map(RequestId::Int),
        _ => None,
    });
    Oracle { object, id }
}

fn check(frame: &str) {
    let first = Request::decode(frame, MAX_TEXT);
    let again = Request::decode(frame, MAX_TEXT);
    assert_eq!(first, again, "decode is not deterministic");

    // A larger limit only ever accepts more, and never answers too_large.
    let unlimited = Request::decode(frame, usize::MAX);
    if let Err(e) = &unlimited {
        assert_ne!(e.error.code, ErrorCode::TooLarge, "too_large without a limit");
    }
    if let Ok(r) = &first {
        assert_eq!(unlimited.as_ref().ok(), Some(r), "a larger limit rejected a frame");
    }

    let o = oracle(frame);
    match first {
        Ok(req) => check_ok(frame, &req, &o),
        Err(e) => check_err(frame, e, &o),
    }
}

fn check_ok(frame: &str, req: &Request, o: &Oracle) {
    let name = req.op.name();
    assert!(!name.is_empty(), "empty op name");
    let map = o.object.as_ref().expect("an accepted frame must be a JSON object");
    assert_eq!(map.get("op").and_then(Value::as_str), Some(name), "op name differs from the frame's op");
    assert_eq!(req.id, o.id, "request id differs from the frame's id");

    // PROTOCOL.md's rules on the decoded fields.
    match &req.op {
        Op::Ping | Op::Rooms => {}
        Op::Join { room } | Op::Leave { room } => {
            assert!(validate::is_room_name(room), "joined a non-room {room:?}");
        }
        Op::Typing { room } | Op::Read { room, .. } | Op::Presence { room } | Op::Notify { room, .. } => {
            assert!(validate::room_ref(room).is_ok(), "bad room {room:?}");
        }
        Op::Send { room, to, text, cid, reply_to: _, attachments } => {
            match (room, to, req.op.send_target()) {
                (Some(r), None, Some(Target::Room(t))) => {
                    assert_eq!(r, t);
                    assert!(validate::room_ref(r).is_ok(), "bad room {r:?}");
                }
                (None, Some(u), Some(Target::User(t))) => {
                    assert_eq!(u, t);
                    assert!(validate::is_username(u), "bad user {u:?}");
                }
                other => panic!("send with room/to/target {other:?}"),
            }
            assert!(validate::is_cid(cid), "bad cid {cid:?}");
            assert!(text.len() <= MAX_TEXT, "text of {} bytes accepted", text.len());
            assert!(!text.is_empty() || !attachments.is_empty(), "empty text without attachments accepted");
            assert!(attachments.len() <= confab_protocol::attachments::MAX_ATTACHMENTS, "too many attachments");
            assert!(attachments.iter().all(|a| confab_protocol::attachments::is_upload_id(a)), "bad upload id");
        }
        Op::History { room, limit, .. } => {
            assert!(validate::room_ref(room).is_ok(), "bad room {room:?}");
            if let Some(l) = limit {
                assert!((1..=MAX_HISTORY_LIMIT).contains(l), "history limit {l}");
            }
        }
        Op::Sync { rooms, limit, changes } => {
            assert!(rooms.len() <= MAX_SYNC_ROOMS, "{} sync rooms", rooms.len());
            for room in rooms.keys() {
                assert!(validate::room_ref(room).is_ok(), "bad room {room:?}");
            }
            for room in changes.iter().flat_map(|c| c.keys()) {
                assert!(rooms.contains_key(room), "changes for {room:?}, not a room of `rooms`");
            }
            if let Some(l) = limit {
                assert!((1..=MAX_SYNC_LIMIT).contains(l), "sync limit {l}");
            }
        }
        Op::Create { room, name, topic, .. } | Op::UpdateRoom { room, name, topic, .. } => {
            assert!(validate::is_room_name(room), "managed a non-room {room:?}");
            assert!(name.as_ref().is_none_or(|n| n.len() <= rooms::MAX_NAME_BYTES), "name too long");
            assert!(topic.as_ref().is_none_or(|t| t.len() <= rooms::MAX_TOPIC_BYTES), "topic too long");
            if let Op::UpdateRoom { retention_days: Some(d), .. } = &req.op {
                assert!(*d <= unread::MAX_RETENTION_DAYS, "retention of {d} days");
            }
        }
        Op::Invite { room, user }
        | Op::Unban { room, user }
        | Op::Unmute { room, user }
        | Op::Mute { room, user, .. }
        | Op::SetRole { room, user, .. } => {
            assert!(validate::is_room_name(room), "managed a non-room {room:?}");
            assert!(validate::is_username(user), "bad user {user:?}");
        }
        Op::Kick { room, user, reason } | Op::Ban { room, user, reason } => {
            assert!(validate::is_room_name(room), "managed a non-room {room:?}");
            assert!(validate::is_username(user), "bad user {user:?}");
            assert!(reason.as_ref().is_none_or(|r| r.len() <= rooms::MAX_REASON_BYTES), "reason too long");
        }
        Op::RoomInfo { room } => assert!(validate::is_room_name(room), "bad room {room:?}"),
        Op::Members { room, after, limit } => {
            assert!(validate::is_room_name(room), "bad room {room:?}");
            assert!(after.as_deref().is_none_or(validate::is_username), "bad after {after:?}");
            assert!(limit.is_none_or(|l| (1..=rooms::MAX_MEMBERS_LIMIT).contains(&l)), "members limit {limit:?}");
        }
        Op::Directory { query, after, limit } => {
            assert!(query.as_ref().is_none_or(|q| q.len() <= rooms::MAX_QUERY_BYTES), "query too long");
            assert!(after.as_deref().is_none_or(validate::is_room_name), "bad after {after:?}");
            assert!(limit.is_none_or(|l| (1..=rooms::MAX_DIRECTORY_LIMIT).contains(&l)), "directory limit {limit:?}");
        }
        Op::Profile { display_name, avatar } => {
            assert!(
                display_name.as_deref().is_none_or(|n| accounts::display_name(n).is_ok()),
                "bad name {display_name:?}"
            );
            assert!(avatar.as_deref().is_none_or(|a| accounts::avatar(a).is_ok()), "bad avatar {avatar:?}");
        }
        Op::Users { users } => {
            assert!((1..=accounts::MAX_USERS_LOOKUP).contains(&users.len()), "{} users looked up", users.len());
            assert!(users.iter().all(|u| validate::is_username(u)), "bad user in {users:?}");
        }
        Op::ContactAdd { user } | Op::ContactRemove { user } | Op::Block { user } | Op::Unblock { user } => {
            assert!(validate::is_username(user), "bad user {user:?}");
        }
        Op::Contacts | Op::Blocks => {}
        Op::Edit { room, text, .. } => {
            assert!(validate::room_ref(room).is_ok(), "bad room {room:?}");
            assert!(!text.is_empty() && text.len() <= MAX_TEXT, "edit text of {} bytes accepted", text.len());
        }
        Op::Edits { room, .. } | Op::Delete { room, .. } => {
            assert!(validate::room_ref(room).is_ok(), "bad room {room:?}");
        }
        Op::React { room, emoji, .. } => {
            assert!(validate::room_ref(room).is_ok(), "bad room {room:?}");
            assert!(!emoji.is_empty() && emoji.len() <= lifecycle::MAX_EMOJI_BYTES, "emoji {emoji:?}");
            let bidi = |c: char| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            assert!(!emoji.chars().any(|c| c.is_control() || c.is_whitespace() || bidi(c)), "emoji {emoji:?}");
        }
    }
    if !matches!(req.op, Op::Send { .. }) {
        assert!(req.op.send_target().is_none());
    }

    // Re-validation: the canonical form of the request decodes to itself.
    let canonical = canonical(req).to_string();
    let re = Request::decode(&canonical, MAX_TEXT);
    assert_eq!(
        re.as_ref(),
        Ok(req),
        "canonical form {canonical:?} of accepted frame {frame:?} does not decode to the same request"
    );
}

/// The request written back as a frame with only the fields it has.
fn canonical(req: &Request) -> Value {
    let mut m = Map::new();
    if let Some(id) = &req.id {
        m.insert("id".into(), serde_json::to_value(id).unwrap());
    }
    m.insert("op".into(), json!(req.op.name()));
    let mut put = |k: &str, v: Value| {
        m.insert(k.into(), v);
    };
    match &req.op {
        Op::Ping | Op::Rooms | Op::Contacts | Op::Blocks => {}
        Op::ContactAdd { user } | Op::ContactRemove { user } | Op::Block { user } | Op::Unblock { user } => {
            put("user", json!(user))
        }
        Op::Join { room } | Op::Leave { room } | Op::Typing { room } | Op::Presence { room } => {
            put("room", json!(room))
        }
        Op::Read { room, seq } => {
            put("room", json!(room));
            put("seq", json!(seq));
        }
        Op::Send { room, to, text, cid, reply_to, attachments } => {
            if let Some(r) = room {
                put("room", json!(r));
            }
            if let Some(t) = to {
                put("to", json!(t));
            }
            put("text", json!(text));
            put("cid", json!(cid));
            put_some(&mut put, "reply_to", reply_to);
            if !attachments.is_empty() {
                put("attachments", json!(attachments));
            }
        }
        Op::History { room, before, limit } => {
            put("room", json!(room));
            if let Some(b) = before {
                put("before", json!(b));
            }
            if let Some(l) = limit {
                put("limit", json!(l));
            }
        }
        Op::Sync { rooms, limit, changes } => {
            put("rooms", json!(rooms));
            if let Some(l) = limit {
                put("limit", json!(l));
            }
            put_some(&mut put, "changes", changes);
        }
        Op::Create { room, visibility, name, topic } => {
            put("room", json!(room));
            put_some(&mut put, "visibility", visibility);
            put_some(&mut put, "name", name);
            put_some(&mut put, "topic", topic);
        }
        Op::UpdateRoom { room, visibility, name, topic, retention_days } => {
            put("room", json!(room));
            put_some(&mut put, "visibility", visibility);
            put_some(&mut put, "name", name);
            put_some(&mut put, "topic", topic);
            put_some(&mut put, "retention_days", retention_days);
        }
        Op::Notify { room, level } => {
            put("room", json!(room));
            put("level", json!(level.as_str()));
        }
        Op::Invite { room, user } | Op::Unban { room, user } | Op::Unmute { room, user } => {
            put("room", json!(room));
            put("user", json!(user));
        }
        Op::Kick { room, user, reason } | Op::Ban { room, user, reason } => {
            put("room", json!(room));
            put("user", json!(user));
            put_some(&mut put, "reason", reason);
        }
        Op::Mute { room, user, until } => {
            put("room", json!(room));
            put("user", json!(user));
            put_some(&mut put, "until", until);
        }
        Op::SetRole { room, user, role } => {
            put("room", json!(room));
            put("user", json!(user));
            put("role", json!(role));
        }
        Op::RoomInfo { room } => put("room", json!(room)),
        Op::Members { room, after, limit } => {
            put("room", json!(room));
            put_some(&mut put, "after", after);
            put_some(&mut put, "limit", limit);
        }
        Op::Directory { query, after, limit } => {
            put_some(&mut put, "query", query);
            put_some(&mut put, "after", after);
            put_some(&mut put, "limit", limit);
        }
        Op::Profile { display_name, avatar } => {
            put_some(&mut put, "display_name", display_name);
            put_some(&mut put, "avatar", avatar);
        }
        Op::Users { users } => put("users", json!(users)),
        Op::Edit { room, seq, text } => {
            put("room", json!(room));
            put("seq", json!(seq));
            put("text", json!(text));
        }
        Op::Edits { room, seq } | Op::Delete { room, seq } => {
            put("room", json!(room));
            put("seq", json!(seq));
        }
        Op::React { room, seq, emoji, remove } => {
            put("room", json!(room));
            put("seq", json!(seq));
            put("emoji", json!(emoji));
            put_some(&mut put, "remove", remove);
        }
    }
    Value::Object(m)
}

/// Puts an optional field when it is there.
fn put_some<T: serde::Serialize>(put: &mut impl FnMut(&str, Value), key: &str, value: &Option<T>) {
    if let Some(v) = value {
        put(key, serde_json::to_value(v).unwrap());
    }
}

fn check_err(frame: &str, e: DecodeError, o: &Oracle) {
    let code = e.error.code;
    assert!(matches!(code, ErrorCode::BadRequest | ErrorCode::TooLarge), "decode failed with {code:?} for {frame:?}");
    assert!(matches!(code.http_status(), 400 | 413));
    assert!(!e.error.message.is_empty(), "empty error message");
    if code == ErrorCode::TooLarge {
        let map = o.object.as_ref().expect("too_large for a non-object");
        let op = map.get("op").and_then(Value::as_str);
        assert!(matches!(op, Some("send" | "edit")), "too_large for op {op:?}");
        let len = map.get("text").and_then(Value::as_str).map(str::len);
        assert!(len.is_some_and(|n| n > MAX_TEXT), "too_large for a text of {len:?} bytes");
    }
    // The reply carries `re` exactly when an id could be read.
    assert_eq!(e.id, o.id, "error id differs from the frame's id");

    let reply = Reply::error(e.id.clone(), e.error.clone());
    let encoded = reply.encode();
    let v: Value = serde_json::from_str(&encoded).expect("an error reply is not valid JSON");
    let obj = v.as_object().expect("an error reply is not an object");
    assert_eq!(obj.get("ok"), Some(&Value::Bool(false)));
    match &e.id {
        None => assert!(!obj.contains_key("re"), "re without an id"),
        Some(id) => assert_eq!(obj.get("re"), Some(&serde_json::to_value(id).unwrap())),
    }
    let err = obj.get("error").and_then(Value::as_object).expect("no error object");
    assert_eq!(err.get("code").and_then(Value::as_str), Some(code.as_str()));
    assert_eq!(err.get("message").and_then(Value::as_str), Some(e.error.message.as_str()));
    assert_eq!(obj.len(), if e.id.is_some() { 3 } else { 2 }, "extra fields");
    let back = Reply::deserialize(&v).expect("an error reply does not parse back");
    assert_eq!(back, reply);
    assert!(matches!(back.body, ReplyBody::Error { .. }));
    let back: Reply = serde_json::from_str(&encoded).expect("an error reply does not parse back");
    assert_eq!(back, reply);
}
