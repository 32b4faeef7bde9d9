//! Contacts and blocks (docs/protocol.md, "Accounts: contacts and blocks"):
//! a friend list whose entries are mutual once both sides asked, and the
//! users one will not hear from. The store and the gateway use these types.

use serde::{Deserialize, Serialize};

/// Where a contact relation stands, as the user who reads it sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ContactStatus {
    /// The other user asked; a `contact_add` back makes it mutual.
    PendingIn,
    /// This user asked; the other has not answered.
    PendingOut,
    /// Both asked.
    Mutual,
    /// No relation (any more): in `contact` events only.
    None,
}

impl ContactStatus {
    /// The status `user` sees of `other`, from who asked whom.
    pub fn of(user_asked: bool, other_asked: bool) -> ContactStatus {
        match (user_asked, other_asked) {
            (true, true) => ContactStatus::Mutual,
            (true, false) => ContactStatus::PendingOut,
            (false, true) => ContactStatus::PendingIn,
            (false, false) => ContactStatus::None,
        }
    }
}

/// One entry of the `contacts` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ContactEntry {
    pub user: String,
    pub status: ContactStatus,
    /// At least one live session. Always `false` unless `mutual`: online
    /// state is for those both sides agreed to share it with.
    pub online: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_who_asked_whom() {
        assert_eq!(ContactStatus::of(true, true), ContactStatus::Mutual);
        assert_eq!(ContactStatus::of(true, false), ContactStatus::PendingOut);
        assert_eq!(ContactStatus::of(false, true), ContactStatus::PendingIn);
        assert_eq!(serde_json::to_string(&ContactStatus::PendingIn).unwrap(), "\"pending_in\"");
    }
}
