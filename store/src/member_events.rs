//! What each membership record did, as its dispatcher applied it: the
//! webhooks' `member` events (docs/webhooks.md) read this instead of
//! guessing from the membership at the time they read.
//!
//! The dispatcher writes one [`Write::MemberEvent`](crate::Write::MemberEvent)
//! with the writes of a `join`, `add`, `leave`, `remove`, `erase`, `kick` or
//! `ban` record that took effect (in the same batch: the same redb
//! transaction in the embedded store, before the batch's checkpoint in the
//! CQL one), keyed by the record's position in the room's log
//! (`seq_of(offset)`); a refused or repeated one writes nothing. Entries
//! are kept [`MEMBER_EVENT_TTL_SECS`]: a TTL in the CQL store, pruned as
//! batches are applied in the embedded one.

use serde::{Deserialize, Serialize};

/// How long a membership record's outcome is kept (30 days): a webhook
/// further behind than this finds no `member` event for the record.
pub const MEMBER_EVENT_TTL_SECS: u64 = 30 * 24 * 3600;

/// The change a membership record made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberChange {
    /// The user joined.
    Join,
    /// The server API added the user.
    Add,
    /// The user left.
    Leave,
    /// The server API removed the user.
    Remove,
    /// The user's account was erased (they were a member).
    Erase,
    /// A moderator kicked the user.
    Kick,
    /// A moderator banned the user (a member, who left with it, or not).
    Ban,
}

impl MemberChange {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberChange::Join => "join",
            MemberChange::Add => "add",
            MemberChange::Leave => "leave",
            MemberChange::Remove => "remove",
            MemberChange::Erase => "erase",
            MemberChange::Kick => "kick",
            MemberChange::Ban => "ban",
        }
    }

    pub fn parse(s: &str) -> Option<MemberChange> {
        Some(match s {
            "join" => MemberChange::Join,
            "add" => MemberChange::Add,
            "leave" => MemberChange::Leave,
            "remove" => MemberChange::Remove,
            "erase" => MemberChange::Erase,
            "kick" => MemberChange::Kick,
            "ban" => MemberChange::Ban,
            _ => return None,
        })
    }
}

/// One membership record's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEvent {
    pub user: String,
    pub change: MemberChange,
    /// Who kicked or banned; `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The record's acceptance time (unix ms): the embedded store prunes by it.
    pub ts: u64,
}
