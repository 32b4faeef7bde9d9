//! What tells a user where to look (docs/protocol.md, "Unread counts,
//! mentions, notification levels and retention"): `@name` mentions, the
//! per-room notification level, the exact unread count of `rooms`, and how
//! long a room keeps its messages.

use serde::{Deserialize, Serialize};

use crate::validate::is_username;

/// Most user names one message records in `mentions`.
pub const MAX_MENTIONS: usize = 20;
/// Most distinct `@name`s of one message looked up (members or not).
pub const MAX_MENTION_CANDIDATES: usize = 32;
/// Longest `retention_days` a room may set (about a hundred years); 0
/// clears the room's own setting (the cluster's default applies again).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// Which messages of a room a user wants to be told about: the web client
/// badges by it, and an outside push hand-off names only the offline
/// members whose level lets a message through ([`NotifyLevel::notifies`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum NotifyLevel {
    /// Every message (the default).
    #[default]
    All,
    /// Messages that mention the user.
    Mentions,
    /// Nothing (the room is muted for this user).
    #[serde(rename = "none")]
    Nothing,
}

impl NotifyLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyLevel::All => "all",
            NotifyLevel::Mentions => "mentions",
            NotifyLevel::Nothing => "none",
        }
    }

    pub fn parse(s: &str) -> Option<NotifyLevel> {
        match s {
            "all" => Some(NotifyLevel::All),
            "mentions" => Some(NotifyLevel::Mentions),
            "none" => Some(NotifyLevel::Nothing),
            _ => None,
        }
    }

    /// Whether a message (mentioning this user or not) is worth telling
    /// this user about at this level.
    pub fn notifies(self, mentioned: bool) -> bool {
        match self {
            NotifyLevel::All => true,
            NotifyLevel::Mentions => mentioned,
            NotifyLevel::Nothing => false,
        }
    }
}

/// The distinct user names written `@name` in `text`, in order of first
/// appearance, at most [`MAX_MENTION_CANDIDATES`]. An `@` counts at the
/// start of the text or after a character that cannot be part of an
/// address (so `bob@example.com` mentions nobody); the name is the longest
/// run of name characters after it, without trailing `.`, `-` or `_`
/// (`@bob.` at the end of a sentence is `bob`).
pub fn mention_candidates(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out: Vec<String> = Vec::new();
    let name_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-');
    let mut i = 0;
    while i < bytes.len() && out.len() < MAX_MENTION_CANDIDATES {
        if bytes[i] != b'@' || (i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'@')) {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while end < bytes.len() && end - start < 40 && name_char(bytes[end]) {
            end += 1;
        }
        // `@zoë` is not `@zo`: a name runs into a letter outside ASCII.
        let cut_short = end < bytes.len() && bytes[end] >= 0x80;
        let name = text[start..end].trim_end_matches(['.', '-', '_']);
        if !cut_short && is_username(name) && !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
        i = end.max(start);
    }
    out
}

/// Messages after the read marker that are not the user's own: the room's
/// messages counted past the marker, less the user's own among them.
/// Saturating: a room or marker stored before counts existed reads 0 rather
/// than wrapping.
pub fn unread(messages: u64, read_messages: u64, own: u64, read_own: u64) -> u64 {
    messages.saturating_sub(read_messages).saturating_sub(own.saturating_sub(read_own))
}

/// How long messages are kept: a room's `retention_days`, else the
/// cluster's default; `None` is forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The cluster-wide default (`retention_days` in the configuration).
    pub default_days: Option<u32>,
    /// Seconds in one retention "day": 86400, except in tests
    /// (`retention_day_secs`), which cannot wait days.
    pub day_secs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { default_days: None, day_secs: 86_400 }
    }
}

impl Retention {
    /// The days a room with its own setting `room_days` keeps messages.
    pub fn days(&self, room_days: Option<u32>) -> Option<u32> {
        room_days.filter(|d| *d > 0).or(self.default_days.filter(|d| *d > 0))
    }

    /// How long, in milliseconds, such a room keeps a message.
    pub fn keep_ms(&self, room_days: Option<u32>) -> Option<u64> {
        self.days(room_days).map(|d| u64::from(d).saturating_mul(self.day_secs).saturating_mul(1000))
    }

    /// Messages with `ts` below this (unix ms) are gone at `now_ms`.
    pub fn cutoff_ms(&self, room_days: Option<u32>, now_ms: u64) -> Option<u64> {
        self.keep_ms(room_days).map(|keep| now_ms.saturating_sub(keep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_at_names_deduplicated_and_bounded() {
        assert_eq!(mention_candidates("@bob hi @carol., and @bob again"), ["bob", "carol"]);
        assert_eq!(mention_candidates("mail bob@example.com"), Vec::<String>::new());
        assert_eq!(mention_candidates("@Bob @ @@x @-x"), Vec::<String>::new());
        assert_eq!(mention_candidates("(@dave) @e.f_"), ["dave", "e.f"]);
        let many: String = (0..100).map(|i| format!("@u{i} ")).collect();
        assert_eq!(mention_candidates(&many).len(), MAX_MENTION_CANDIDATES);
        let long = format!("@{}", "a".repeat(10_000));
        assert!(mention_candidates(&long).is_empty(), "a name is at most 32 bytes");
        assert_eq!(mention_candidates("é@bob ünïcode @zoë"), ["bob"]);
    }

    #[test]
    fn unread_leaves_out_the_users_own_and_never_wraps() {
        assert_eq!(unread(10, 4, 3, 1), 4);
        assert_eq!(unread(10, 10, 3, 3), 0);
        assert_eq!(unread(2, 5, 0, 0), 0);
        assert_eq!(unread(5, 0, 9, 0), 0);
    }

    #[test]
    fn a_rooms_setting_beats_the_default_and_none_is_forever() {
        let r = Retention { default_days: Some(30), day_secs: 1 };
        assert_eq!(r.days(None), Some(30));
        assert_eq!(r.days(Some(2)), Some(2));
        assert_eq!(r.days(Some(0)), Some(30), "0 is no setting of the room's own");
        assert_eq!(r.cutoff_ms(Some(2), 10_000), Some(8_000));
        assert_eq!(Retention::default().cutoff_ms(None, 10_000), None);
    }

    #[test]
    fn levels_have_their_wire_names() {
        for level in [NotifyLevel::All, NotifyLevel::Mentions, NotifyLevel::Nothing] {
            assert_eq!(serde_json::to_value(level).unwrap(), level.as_str());
            assert_eq!(NotifyLevel::parse(level.as_str()), Some(level));
        }
        assert!(NotifyLevel::Mentions.notifies(true) && !NotifyLevel::Mentions.notifies(false));
        assert!(!NotifyLevel::Nothing.notifies(true));
    }
}
