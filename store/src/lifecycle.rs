//! What the store keeps of a message's life after it was sent (edits,
//! deletion, reactions; confab_protocol::lifecycle), as both backends share it.
//!
//! * A message row carries its current text, `edited_ts`, `deleted` and
//!   `change_pos`, the position of its latest change.
//! * Earlier versions are rows keyed by the position of the edit that
//!   replaced them; reactions are rows `(seq, emoji, user)`: adding one twice
//!   or removing one absent stores the same, so a replay converges.
//! * Every change is logged as `(room, pos) -> seq`, which `sync`'s
//!   `changes` reads, and moves the room's `last_change`.

use confab_protocol::Message;
use confab_protocol::lifecycle::{MAX_REACTION_USERS, Reaction};

/// A message as the dispatcher decides its changes by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageState {
    /// The current state, as `history` gives it.
    pub message: Message,
    /// How many earlier versions are kept.
    pub versions: u32,
    /// The position of the message's latest change; 0 when never changed.
    pub change_pos: u64,
}

/// Folds reaction rows `(emoji, user)`, in emoji then user order, into the
/// message's `reactions`.
pub fn fold_reactions<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<Reaction> {
    let mut out: Vec<Reaction> = Vec::new();
    for (emoji, user) in rows {
        match out.last_mut() {
            Some(r) if r.emoji == emoji => {
                r.count += 1;
                if r.users.len() < MAX_REACTION_USERS {
                    r.users.push(user.to_owned());
                }
            }
            _ => out.push(Reaction { emoji: emoji.to_owned(), count: 1, users: vec![user.to_owned()] }),
        }
    }
    out
}
