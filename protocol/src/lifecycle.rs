//! Messages that live after they are sent (docs/protocol.md, "Message
//! lifecycle"): replies, edits with their earlier versions, deletion and
//! reactions, and the limits that keep each of them bounded.
//!
//! Every change is a record of the room's log, so it has a place there, its
//! `pos`, in the same space as message seqs (the record's offset + 1). Change
//! events carry `pos` and `prev_pos` (the room's change before it) so a
//! client detects a missed change the way `prev_seq` detects a missed message.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// Longest `emoji`, in bytes (a flag or a family sequence fits).
pub const MAX_EMOJI_BYTES: usize = 32;
/// Most distinct emojis on one message; a reaction with a new one past it is
/// `forbidden`.
pub const MAX_EMOJIS_PER_MESSAGE: usize = 20;
/// Most names a reaction lists in `users` (its `count` counts them all).
pub const MAX_REACTION_USERS: usize = 20;
/// Most earlier versions a message keeps; an edit past it is `forbidden`.
pub const MAX_VERSIONS: usize = 20;

/// One emoji's reactions on a message: `users` holds the first
/// [`MAX_REACTION_USERS`] names in name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Reaction {
    pub emoji: String,
    pub count: u64,
    pub users: Vec<String>,
}

/// An earlier version of an edited message: its text and when that text was
/// stored (the message's `ts`, or the `edited_ts` of the edit that wrote it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Version {
    pub text: String,
    pub ts: u64,
}

/// A reaction's emoji: 1 to [`MAX_EMOJI_BYTES`] bytes, no control
/// characters or whitespace (it is shown as is in every member's client).
pub fn emoji(emoji: &str) -> Result<(), ProtocolError> {
    if emoji.is_empty() || emoji.len() > MAX_EMOJI_BYTES {
        return Err(ProtocolError::bad_request(format!("`emoji` is 1 to {MAX_EMOJI_BYTES} bytes")));
    }
    // Bidirectional overrides would reorder the text around the emoji.
    let bidi = |c: char| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if emoji.chars().any(|c| c.is_control() || c.is_whitespace() || bidi(c)) {
        return Err(ProtocolError::bad_request("`emoji` holds a control, bidi or whitespace character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emojis_are_short_and_printable() {
        for ok in ["👍", "🇫🇷", "👨‍👩‍👧‍👦", "+1", ":tada:"] {
            assert!(emoji(ok).is_ok(), "{ok}");
        }
        for bad in ["", " ", "a b", "\u{0}", "\u{202e}x", &"x".repeat(33)] {
            assert!(emoji(bad).is_err(), "{bad:?}");
        }
    }
}
