//! What the store keeps so that `rooms` can give exact unread and mention
//! counts without reading history (docs/protocol.md, "Unread counts,
//! mentions, notification levels and retention"). Seqs have gaps (they are
//! log offsets), so counts cannot come from seqs; instead the dispatcher
//! that owns a room numbers its messages and keeps running counts:
//!
//! * each message's ordinal `n` among the room's messages (1, 2, 3, ...),
//!   and the room's message count ([`crate::RoomMeta::messages`]);
//! * per member, a [`Tally`] written at each message that is theirs or
//!   mentions them: their running counts of both;
//! * at the read marker, the room's count and the member's tally there.
//!
//! Then `unread = (messages - n at the marker) - (own - own at the marker)`
//! and `mentions = mentions - mentions at the marker`: a handful of reads
//! per room, however many messages there are.

/// A member's running counts in a room: messages they sent, and messages
/// (of others) that mention them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub own: u64,
    pub mentions: u64,
}
