//! Confab's storage: the [`Store`] trait, spoken in the domain's words.
//!
//! * [`embedded`]: the standalone backend, a redb database on local disk.
//! * [`metered`]: a wrapper that times every operation into Prometheus.
//! * [`contract`]: the suite every backend passes (`store_contract_tests!`).
//!
//! Reads are served to gateways directly. Writes come only from the
//! dispatcher that owns a room, as one [`WriteBatch`] per group commit, which
//! also records how far into each ingress partition the store has applied.

use async_trait::async_trait;
use confab_protocol::{Message, RoomInfo};
use serde::{Deserialize, Serialize};

#[cfg(any(test, feature = "contract"))]
pub mod contract;
pub mod embedded;
pub mod metered;
#[cfg(feature = "scylla")]
pub mod scylla;

pub use embedded::EmbeddedStore;
pub use metered::Metered;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store cannot be reached or refused the operation for now; retrying
    /// later may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store holds data this code cannot read, or was set up differently.
    #[error("store data is inconsistent: {0}")]
    Corrupt(String),
    /// The store was created for another ingress partition count.
    #[error("the store was created for {stored} ingress partitions, not {wanted}; the count cannot change")]
    PartitionsChanged { stored: u32, wanted: u32 },
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    /// PHC string (argon2id).
    pub password_hash: String,
    /// Unix milliseconds.
    pub created_ms: u64,
}

/// What the store knows of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomMeta {
    pub last_seq: u64,
    pub members: u64,
}

/// The first message stored under a `(room, cid)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidHit {
    pub seq: u64,
    pub msg_id: String,
    pub ts: u64,
}

/// One write of a dispatcher's batch. Writes apply in order.
///
/// `at` is the write's place in the room's log (the seq its record would
/// get). Backends without transactions order the writes of one room by it
/// (as CQL write timestamps), so a replayed or stale write can never undo a
/// later one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Store the message, move the room's `last_seq` to its seq and index its cid.
    Message(Message),
    /// Make `user` a member, creating the room if it does not exist.
    Join {
        room: String,
        user: String,
        at: u64,
    },
    Leave {
        room: String,
        user: String,
        at: u64,
    },
    /// Set the user's read marker to `seq`. The dispatcher only moves it
    /// forward, and only for members.
    Read {
        room: String,
        user: String,
        seq: u64,
        at: u64,
    },
    /// Everything before `next_offset` in `partition` has been applied.
    Checkpoint {
        partition: u32,
        next_offset: u64,
    },
}

/// A group commit: every write lands, or none does.
pub type WriteBatch = Vec<Write>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Ok when the store answers.
    async fn ping(&self) -> Result<()>;

    /// Creates the account; `false` when the name is taken.
    async fn create_user(&self, user: &UserRecord) -> Result<bool>;
    async fn user(&self, name: &str) -> Result<Option<UserRecord>>;

    async fn room(&self, room: &str) -> Result<Option<RoomMeta>>;
    async fn is_member(&self, room: &str, user: &str) -> Result<bool>;
    async fn members(&self, room: &str) -> Result<Vec<String>>;
    /// Every room of the user, DMs included, with last and read seqs.
    async fn user_rooms(&self, user: &str) -> Result<Vec<RoomInfo>>;
    async fn read_marker(&self, room: &str, user: &str) -> Result<u64>;

    /// The `limit` newest messages with `seq < before` (all when `None`), oldest first.
    async fn history(&self, room: &str, before: Option<u64>, limit: u32) -> Result<Vec<Message>>;
    /// Messages with `seq > after`, oldest first, at most `limit`; `true` when more remain.
    async fn since(&self, room: &str, after: u64, limit: u32) -> Result<(Vec<Message>, bool)>;
    async fn cid(&self, room: &str, cid: &str) -> Result<Option<CidHit>>;

    /// Applies a batch atomically and durably.
    async fn apply(&self, batch: WriteBatch) -> Result<()>;
    /// The next offset to process, per ingress partition that has any.
    async fn checkpoints(&self) -> Result<Vec<(u32, u64)>>;
    /// Records the ingress partition count on first use and refuses another
    /// one later: seqs come from offsets, which a changed count would reorder.
    async fn bind_partitions(&self, partitions: u32) -> Result<()>;
}
