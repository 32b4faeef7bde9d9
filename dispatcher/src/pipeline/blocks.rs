//! The blocks a dispatcher remembers, so a DM's messages cost no store read
//! to know whether the recipient blocked the sender.
//!
//! Blocks are stored by the gateway that takes `block` or `unblock`, which
//! then produces a [`Command::BlockChanged`](confab_protocol::Command) to
//! the two users' DM before it answers: the DM's dispatcher forgets the pair
//! there, in the DM's order, so every message sent after the answer is
//! decided by the new state. An entry is also forgotten after [`TTL`], in
//! case that record was never produced (the gateway answers `unavailable`
//! then, and the user's retry produces it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a remembered block (or its absence) is trusted.
pub const TTL: Duration = Duration::from_secs(300);
/// Pairs remembered; past it the memory starts over.
pub const CAP: usize = 200_000;

#[derive(Debug, Default)]
pub struct Blocks {
    pairs: HashMap<(String, String), (bool, Instant)>,
}

impl Blocks {
    /// Whether `user` blocked `other`, when remembered.
    pub fn get(&self, user: &str, other: &str) -> Option<bool> {
        let (blocked, at) = self.pairs.get(&(user.to_owned(), other.to_owned()))?;
        (at.elapsed() < TTL).then_some(*blocked)
    }

    /// Remembers what a batch read from the store.
    pub fn read(&mut self, read: Vec<((String, String), bool)>) {
        if self.pairs.len() + read.len() > CAP {
            self.pairs.clear();
        }
        let now = Instant::now();
        self.pairs.extend(read.into_iter().map(|(key, blocked)| (key, (blocked, now))));
    }

    /// `user`'s block of `other` changed: read it again.
    pub fn forget(&mut self, user: &str, other: &str) {
        self.pairs.remove(&(user.to_owned(), other.to_owned()));
    }

    pub fn clear(&mut self) {
        self.pairs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_remembered_until_it_changes() {
        let mut blocks = Blocks::default();
        assert_eq!(blocks.get("bob", "mallory"), None);
        blocks.read(vec![(("bob".into(), "mallory".into()), true), (("bob".into(), "alice".into()), false)]);
        assert_eq!(blocks.get("bob", "mallory"), Some(true));
        assert_eq!(blocks.get("bob", "alice"), Some(false));
        assert_eq!(blocks.get("mallory", "bob"), None, "a block goes one way");
        blocks.forget("bob", "mallory");
        assert_eq!(blocks.get("bob", "mallory"), None);
    }
}
