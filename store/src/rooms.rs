//! What the store keeps of rooms people own: a room's settings (owner,
//! visibility, name, topic), each member's role and mute, invitations and
//! bans. The dispatcher alone writes them, as [`crate::Write`]s ordered by
//! their place in the room's log like every other write.

use confab_protocol::{Role, Visibility};
use serde::{Deserialize, Serialize};

/// A room's settings. Rooms created before rooms had owners have none
/// stored: they read as public, nameless and ownerless.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSettings {
    pub visibility: Visibility,
    pub name: String,
    pub topic: String,
    /// The one owner; `None` for a room without one (an old room, or one
    /// whose members all left).
    pub owner: Option<String>,
    /// Days the room keeps messages; `None`: the cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

/// `muted_until` of a member muted until unmuted.
pub const MUTED_FOREVER: u64 = i64::MAX as u64;

/// A member's standing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberRecord {
    pub role: Role,
    /// Unix seconds the mute ends at: 0 when not muted, [`MUTED_FOREVER`]
    /// until unmuted.
    pub muted_until: u64,
}

impl MemberRecord {
    /// Muted at `now` (unix seconds)?
    pub fn is_muted(&self, now: u64) -> bool {
        self.muted_until > now
    }
}

/// A public room in the directory, by room id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicRoom {
    pub room: String,
    pub name: String,
    pub topic: String,
}
