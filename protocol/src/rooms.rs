//! Rooms people own: visibility, roles, and the entries of the `members`
//! and `directory` replies (docs/protocol.md, "Rooms: ownership, roles and
//! moderation"). The store and the dispatcher use these same types.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// Longest room `name`, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest room `topic`, in bytes.
pub const MAX_TOPIC_BYTES: usize = 512;
/// Longest `reason` of a kick or ban, in bytes.
pub const MAX_REASON_BYTES: usize = 256;
/// Longest `query` of `directory`, in bytes.
pub const MAX_QUERY_BYTES: usize = 64;
pub const MAX_MEMBERS_LIMIT: u32 = 1000;
pub const DEFAULT_MEMBERS_LIMIT: u32 = 100;
pub const MAX_DIRECTORY_LIMIT: u32 = 100;
pub const DEFAULT_DIRECTORY_LIMIT: u32 = 50;

/// Who may join a room: anyone not banned, or invited users only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    #[default]
    Public,
    Private,
}

/// A member's role, highest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    #[default]
    Member,
}

impl Role {
    /// Higher outranks lower.
    pub fn rank(self) -> u8 {
        match self {
            Role::Owner => 2,
            Role::Admin => 1,
            Role::Member => 0,
        }
    }

    /// Admins and the owner moderate.
    pub fn moderates(self) -> bool {
        self.rank() >= Role::Admin.rank()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }

    pub fn parse(s: &str) -> Option<Visibility> {
        match s {
            "public" => Some(Visibility::Public),
            "private" => Some(Visibility::Private),
            _ => None,
        }
    }
}

/// One entry of the `members` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct MemberEntry {
    pub user: String,
    pub role: Role,
}

/// One entry of the `directory` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct DirectoryEntry {
    pub room: String,
    pub name: String,
    pub topic: String,
    pub members: u64,
}

/// A display string of at most `max` bytes (a name, topic or reason).
pub fn bounded(field: &str, value: &str, max: usize) -> Result<(), ProtocolError> {
    if value.len() > max {
        Err(ProtocolError::bad_request(format!("`{field}` is {} bytes; the limit is {max}", value.len())))
    } else {
        Ok(())
    }
}
