//! The message object and the per-room summary every client sees.

use serde::{Deserialize, Serialize};

use crate::attachments::Attachment;
use crate::lifecycle::Reaction;
use crate::unread::NotifyLevel;

/// A stored chat message (docs/protocol.md): `ts` is unix milliseconds at
/// acceptance, `msg_id` is unique across the cluster.
///
/// `reply_to`, `edited_ts`, `deleted` and `reactions` are a message's life
/// after it was sent (crate::lifecycle), `mentions` what it mentions
/// (crate::unread); each is absent while it has its default, so a message
/// nobody replied with, edited, deleted or reacted to and that mentions
/// nobody reads as in v1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Message {
    pub room: String,
    pub seq: u64,
    pub msg_id: String,
    pub from: String,
    pub text: String,
    pub ts: u64,
    pub cid: String,
    /// The seq of the message this one replies to, in the same room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub reply_to: Option<u64>,
    /// When the current `text` was stored by an `edit` (unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub edited_ts: Option<u64>,
    /// Deleted: `text` is empty and earlier versions and reactions are gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(test, ts(as = "Option<bool>", optional))]
    pub deleted: bool,
    /// By emoji, in emoji order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(test, ts(as = "Option<Vec<Reaction>>", optional))]
    pub reactions: Vec<Reaction>,
    /// Members the text mentions as `@name` (each once, at most
    /// [`MAX_MENTIONS`](crate::unread::MAX_MENTIONS)); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(test, ts(as = "Option<Vec<String>>", optional))]
    pub mentions: Vec<String>,
    /// Files sent with it (crate::attachments), in the order of `send`'s
    /// `attachments`; absent when none. A message with attachments may
    /// have an empty `text`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(test, ts(as = "Option<Vec<Attachment>>", optional))]
    pub attachments: Vec<Attachment>,
}

/// One entry of the `rooms` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Default)]
pub struct RoomInfo {
    pub room: String,
    pub last_seq: u64,
    pub read_seq: u64,
    /// A pending invitation rather than a membership (absent for members).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(test, ts(as = "Option<bool>", optional))]
    pub invited: bool,
    /// Messages after `read_seq` that are not the user's own (0 for an
    /// invitation). (Optional in TypeScript: servers before it omit it.)
    #[serde(default)]
    #[cfg_attr(test, ts(as = "Option<u64>", optional))]
    pub unread: u64,
    /// Of those, the messages that mention the user.
    #[serde(default)]
    #[cfg_attr(test, ts(as = "Option<u64>", optional))]
    pub mentions: u64,
    /// The user's notification level for the room.
    #[serde(default)]
    #[cfg_attr(test, ts(as = "Option<NotifyLevel>", optional))]
    pub notify: NotifyLevel,
}

/// The key a message's `cid` is deduplicated under: per room and per
/// sender, so that a member who guesses another's cid cannot make that
/// member's message be answered with theirs and never stored. `:` is in
/// neither a user name nor a cid, so the key is unambiguous.
pub fn cid_key(from: &str, cid: &str) -> String {
    format!("{from}:{cid}")
}

/// `msg_id` for the message stored from one ingress record. It is derived from
/// the record's place in the log, so a redelivered record yields the same id.
pub fn msg_id(partition: u32, offset: u64) -> String {
    format!("{partition:x}-{offset:x}")
}

/// `seq` for the message stored from one ingress record. A room's records all
/// live in one partition, so offsets increase strictly within a room; the `+1`
/// keeps 0 free to mean "no message yet".
pub fn seq_of(offset: u64) -> u64 {
    offset + 1
}
