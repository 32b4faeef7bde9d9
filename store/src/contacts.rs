//! What the store keeps of contacts and blocks (docs/protocol.md,
//! "Accounts: contacts and blocks"), and of deleted accounts.
//!
//! A contact relation is kept as the asks it is made of: `alice` asked
//! `bob`, `bob` asked `alice`. Each side writes only its own ask, so two
//! users adding each other at once, on two gateways, always end mutual,
//! and no read-modify-write is needed on the CQL store. A block is one row
//! per (blocker, blocked). A deleted account keeps its name as a tombstone.

use confab_protocol::ContactStatus;

/// One of a user's contact relations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRecord {
    pub other: String,
    /// The user asked `other`.
    pub asked: bool,
    /// `other` asked the user.
    pub asked_by: bool,
}

impl ContactRecord {
    pub fn status(&self) -> ContactStatus {
        ContactStatus::of(self.asked, self.asked_by)
    }
}

/// Joins a user's asks (sorted) and the asks of others (sorted) into
/// relations sorted by name.
pub fn merge(asks: Vec<String>, asked_by: Vec<String>) -> Vec<ContactRecord> {
    let mut out: Vec<ContactRecord> = Vec::with_capacity(asks.len().max(asked_by.len()));
    let (mut a, mut b) = (asks.into_iter().peekable(), asked_by.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (None, None) => return out,
            (Some(x), Some(y)) if x == y => {
                b.next();
                ContactRecord { other: a.next().expect("peeked"), asked: true, asked_by: true }
            }
            (Some(x), Some(y)) if x < y => {
                ContactRecord { other: a.next().expect("peeked"), asked: true, asked_by: false }
            }
            (Some(_), None) => ContactRecord { other: a.next().expect("peeked"), asked: true, asked_by: false },
            _ => ContactRecord { other: b.next().expect("peeked"), asked: false, asked_by: true },
        };
        out.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_merge_into_relations_by_name() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let merged = merge(v(&["bob", "dave"]), v(&["bob", "carol", "erin"]));
        let statuses: Vec<(&str, ContactStatus)> = merged.iter().map(|c| (c.other.as_str(), c.status())).collect();
        assert_eq!(
            statuses,
            [
                ("bob", ContactStatus::Mutual),
                ("carol", ContactStatus::PendingIn),
                ("dave", ContactStatus::PendingOut),
                ("erin", ContactStatus::PendingIn)
            ]
        );
    }
}
