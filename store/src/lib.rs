//! Confab's storage: the [`Store`] trait, spoken in the domain's words.
//!
//! * [`embedded`]: the standalone backend, a redb database on local disk.
//! * [`metered`]: a wrapper that times every operation into Prometheus.
//! * [`contract`]: the suite every backend passes (`store_contract_tests!`).
//!
//! Reads are served to gateways directly. Writes come only from the
//! dispatcher that owns a room, as one [`WriteBatch`] per group commit, which
//! also records how far into each ingress partition the store has applied.
//! The embedded backend applies a batch atomically, the CQL one write by
//! write ([`Store::apply`]); both order a room's writes by their place in the
//! log, so a stale dispatcher cannot undo a later write.

use std::path::PathBuf;

use async_trait::async_trait;
use confab_protocol::lifecycle::Version;
use confab_protocol::rooms::MemberEntry;
use confab_protocol::{Message, NotifyLevel, Profile, Role, RoomInfo};
use serde::{Deserialize, Serialize};

pub mod contacts;
#[cfg(any(test, feature = "contract"))]
pub mod contract;
pub mod embedded;
pub mod lifecycle;
pub mod member_events;
pub mod metered;
pub mod rooms;
#[cfg(feature = "scylla")]
pub mod scylla;
pub mod unread;
pub mod uploads;

pub use contacts::ContactRecord;
pub use embedded::EmbeddedStore;
pub use lifecycle::MessageState;
pub use member_events::{MEMBER_EVENT_TTL_SECS, MemberChange, MemberEvent};
pub use metered::Metered;
pub use rooms::{MUTED_FOREVER, MemberRecord, PublicRoom, RoomSettings};
pub use unread::Tally;
pub use uploads::UploadRecord;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A staged batch's way to durability ([`Store::stage`]): resolves once the
/// batch is stored durably, or with the error that kept it from the disk.
pub type Durable = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// What failed in the store, with its cause (boxed where it is large, so
/// every `Result` stays small). Clients see every one as `unavailable` (the
/// gateway maps them in one place).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the store directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the embedded database {}: {source}", path.display())]
    Open { path: PathBuf, source: redb::DatabaseError },
    /// A transaction, table or commit of the embedded database failed.
    #[error("embedded database: {0}")]
    Embedded(#[from] redb::Error),
    /// A record the embedded store keeps as JSON does not decode (or encode).
    #[error("{what}: {source}")]
    Json { what: String, source: serde_json::Error },
    /// The blocking task that ran an embedded operation panicked or was cancelled.
    #[error("store task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[cfg(feature = "scylla")]
    #[error("cannot connect to CQL nodes {contact_points:?}: {source}")]
    Connect { contact_points: Vec<String>, source: Box<::scylla::errors::NewSessionError> },
    #[cfg(feature = "scylla")]
    #[error("preparing `{cql}`: {source}")]
    Prepare { cql: String, source: Box<::scylla::errors::PrepareError> },
    /// A CQL statement failed (node down, timeout, not enough replicas, ...).
    #[cfg(feature = "scylla")]
    #[error("CQL `{cql}`: {source}")]
    Cql { cql: String, source: Box<::scylla::errors::ExecutionError> },
    /// A CQL result does not have the shape this code reads.
    #[cfg(feature = "scylla")]
    #[error("reading the result of CQL `{cql}`: {source}")]
    CqlResult { cql: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[cfg(feature = "scylla")]
    #[error("using keyspace {keyspace}: {source}")]
    UseKeyspace { keyspace: String, source: Box<::scylla::errors::UseKeyspaceError> },
    #[cfg(feature = "scylla")]
    #[error("waiting for the nodes to agree on the schema: {0}")]
    SchemaAgreement(#[source] Box<::scylla::errors::SchemaAgreementError>),
    /// A CQL TLS file is missing or unusable.
    #[cfg(feature = "scylla")]
    #[error("CQL TLS: {0}")]
    CqlTls(#[from] crate::scylla::TlsError),
    #[cfg(feature = "scylla")]
    #[error("keyspace name '{0}' is not a CQL identifier")]
    KeyspaceName(String),
    /// The keyspace has no Confab tables (or cannot be read).
    #[cfg(feature = "scylla")]
    #[error("keyspace {keyspace} has no Confab schema ({source}); run `confab migrate`")]
    NoSchema { keyspace: String, source: Box<::scylla::errors::ExecutionError> },
    #[cfg(feature = "scylla")]
    #[error("keyspace {keyspace} lacks schema version {version}; run `confab migrate`")]
    SchemaVersion { keyspace: String, version: i32 },
    /// The store holds data that contradicts itself.
    #[error("store data is inconsistent: {0}")]
    Corrupt(String),
    /// The store was created for another ingress partition count.
    #[error("the store was created for {stored} ingress partitions, not {wanted}; the count cannot change")]
    PartitionsChanged { stored: u32, wanted: u32 },
    /// A failure of a [`Store`] implemented outside this crate (a wrapper,
    /// a test double).
    #[error("store: {0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    /// PHC string (argon2id). Empty for an application's user (one whose
    /// tokens an application's key signs), created on their first
    /// connection: they have no password here.
    pub password_hash: String,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// A bot account (the server API's `POST /v1/server/users` with
    /// `bot: true`): shown as a bot to clients in its profile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bot: bool,
}

/// What the store knows of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomMeta {
    pub last_seq: u64,
    /// How many members it has: the count the room's dispatcher keeps
    /// (written with every [`Write::Join`] and [`Write::Leave`]), never a
    /// scan of the members.
    pub members: u64,
    /// The log position of the write that stored `members` (CQL: its write
    /// time); 0 on the embedded store, whose batches land whole. A count
    /// written at or after a batch's first record was stored by an earlier
    /// attempt of that batch that failed midway.
    pub members_at: u64,
    /// How many messages the room has had (the last one's ordinal; 0 for
    /// a room whose messages were all stored before they were counted).
    pub messages: u64,
    /// The position of the room's latest edit, deletion or reaction; 0 before the first.
    pub last_change: u64,
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
    /// Store the message and move the room's `last_seq` to its seq. A
    /// store whose [`Store::indexes_cids`] is true also indexes its cid for
    /// [`Store::cid`]; the others leave that to [`Write::CidIndex`].
    Message(Message),
    /// Index the cid of a message of the batch (`key` is
    /// [`cid_key`](confab_protocol::message::cid_key)`(from, cid)`) for
    /// [`Store::cid`]. The dispatcher writes it only on a store that does not
    /// index every message's cid ([`Store::indexes_cids`]), and only for the
    /// rooms whose cids it does not hold in memory (`confab_dispatcher`'s
    /// `pipeline::cids` says why that is exact); the other stores ignore it.
    CidIndex { room: String, key: String, hit: CidHit },
    /// Make `user` a member, creating the room if it does not exist.
    /// `members` is the room's member count with them, as the dispatcher
    /// keeps it: the CQL store stores it with the membership (the room's
    /// one writer, so a plain column); the embedded store counts in the
    /// same transaction and arrives at the same number.
    Join { room: String, user: String, at: u64, members: u64 },
    /// End `user`'s membership (a leave, kick, ban or account erasure);
    /// `members` is the room's count without them (see [`Write::Join`]).
    Leave { room: String, user: String, at: u64, members: u64 },
    /// Set the user's read marker to `seq`. The dispatcher only moves it
    /// forward, and only for members.
    Read { room: String, user: String, seq: u64, at: u64 },
    /// Replace the room's settings (a room created, updated, or handed over).
    Settings { room: String, settings: RoomSettings, at: u64 },
    /// Set a member's role (members only; a leave resets it).
    Role { room: String, user: String, role: Role, at: u64 },
    /// Mute a member until `until` (unix seconds; 0 unmutes).
    Mute { room: String, user: String, until: u64, at: u64 },
    /// Invite a user; `invited: false` withdraws the invitation (a join uses it up).
    Invite { room: String, user: String, invited: bool, at: u64 },
    /// Ban (`banned: true`) or unban a user.
    Ban { room: String, user: String, banned: bool, at: u64 },
    /// `user`'s account was deleted: their messages in `room` keep their
    /// seq and lose their text, author and cid (`from`, `text` and `cid`
    /// read `""`), and their cids are forgotten.
    Erase { room: String, user: String, at: u64 },
    /// Everything before `next_offset` in `partition` has been applied.
    Checkpoint { partition: u32, next_offset: u64 },
    /// What a message (its [`Write::Message`] comes first in the batch)
    /// adds: its ordinal `n` among the room's messages, which becomes the
    /// room's message count, and when it expires (unix ms; `None`: kept
    /// forever). The CQL store writes the message with the matching TTL.
    MessageMeta { room: String, seq: u64, n: u64, expires_ms: Option<u64> },
    /// `user`'s running counts in the room as of message `seq`, which is
    /// theirs or mentions them (members only; a leave clears them).
    Tally { room: String, user: String, seq: u64, tally: Tally },
    /// The counts at `user`'s read marker, written with each
    /// [`Write::Read`]: the room's message count up to the marker and the
    /// user's tally there.
    ReadTally { room: String, user: String, n: u64, tally: Tally, at: u64 },
    /// `user`'s notification level in the room (the dispatcher writes it
    /// for members only; a new membership starts at `all`).
    Notify { room: String, user: String, level: NotifyLevel, at: u64 },
    /// Replace message `seq`'s text, keeping `previous` as an earlier
    /// version. Like every change below, it is logged at its position `at`,
    /// which becomes the message's `change_pos` and the room's `last_change`.
    Edit { room: String, seq: u64, text: String, edited_ts: u64, previous: Version, at: u64 },
    /// Delete message `seq`: its text, earlier versions and reactions go.
    Delete { room: String, seq: u64, at: u64 },
    /// Add (or with `remove`, take back) `user`'s `emoji` on message `seq`.
    React { room: String, seq: u64, emoji: String, user: String, remove: bool, at: u64 },
    /// Attach uploads (`(id, created_ms)`, uploaded to `room`) to message
    /// `seq` (its [`Write::Message`] carries them as attachments).
    Attach { room: String, seq: u64, uploads: Vec<(String, u64)>, at: u64 },
    /// Drop uploads with their deleted message: they are served no more
    /// and the sweeper deletes them ([`uploads`]).
    DropUploads { room: String, ids: Vec<String>, at: u64 },
    /// What the membership record at `at` did ([`member_events`]), for
    /// [`Store::member_event`]; written only when it took effect.
    MemberEvent { room: String, at: u64, event: MemberEvent },
}

/// A group commit; [`Store::apply`] says what each backend promises of it.
pub type WriteBatch = Vec<Write>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Ok when the store answers.
    async fn ping(&self) -> Result<()>;

    /// Creates the account; `false` when the name is taken.
    async fn create_user(&self, user: &UserRecord) -> Result<bool>;
    async fn user(&self, name: &str) -> Result<Option<UserRecord>>;
    /// Replaces a user's profile (`profile.user` names them); `false` when
    /// there is no such user.
    async fn set_profile(&self, profile: &Profile) -> Result<bool>;
    /// The profiles of those of `users` who have an account, in the order
    /// asked, each once (an unset field is `""`).
    async fn profiles(&self, users: &[String]) -> Result<Vec<Profile>>;
    /// Replaces a password account's hash; `false` when there is no such user.
    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool>;
    /// The user's tokens issued before this (unix milliseconds) are
    /// revoked; 0 when none is.
    async fn tokens_valid_after(&self, user: &str) -> Result<u64>;
    /// Moves [`tokens_valid_after`](Store::tokens_valid_after) forward (never back).
    async fn revoke_tokens_before(&self, user: &str, before_ms: u64) -> Result<()>;
    /// Revokes one token by its id until it expires (`exp`, unix seconds).
    async fn revoke_token(&self, jti: &str, exp: u64) -> Result<()>;
    async fn is_token_revoked(&self, jti: &str) -> Result<bool>;

    async fn room(&self, room: &str) -> Result<Option<RoomMeta>>;
    async fn is_member(&self, room: &str, user: &str) -> Result<bool>;
    async fn members(&self, room: &str) -> Result<Vec<String>>;
    /// Counts the room's members one by one (a scan: [`RoomMeta::members`]
    /// is the kept count). The dispatcher recounts only after a batch that
    /// failed midway stored a count of its own (see [`RoomMeta::members_at`]).
    async fn count_members(&self, room: &str) -> Result<u64> {
        Ok(self.members(room).await?.len() as u64)
    }
    /// Every room of the user, DMs included, with last and read seqs,
    /// unread and mention counts and notification level (see [`unread`]).
    async fn user_rooms(&self, user: &str) -> Result<Vec<RoomInfo>>;
    /// How many rooms the user is a member of, DMs included: what
    /// [`user_rooms`](Store::user_rooms) would list, without reading each room.
    async fn user_room_count(&self, user: &str) -> Result<usize> {
        Ok(self.user_room_names(user).await?.len())
    }
    /// The names of the rooms [`user_rooms`](Store::user_rooms) would list,
    /// without reading each room (on a CQL store: one partition read, where
    /// `user_rooms` reads two rows per room).
    async fn user_room_names(&self, user: &str) -> Result<Vec<String>> {
        Ok(self.user_rooms(user).await?.into_iter().map(|r| r.room).collect())
    }
    async fn read_marker(&self, room: &str, user: &str) -> Result<u64>;
    /// `user`'s notification level in the room (`notify`; `all` when never
    /// set or not a member): what a push hand-off names them for.
    async fn notify_level(&self, room: &str, user: &str) -> Result<confab_protocol::NotifyLevel> {
        let rooms = self.user_rooms(user).await?;
        Ok(rooms.into_iter().find(|r| r.room == room).map(|r| r.notify).unwrap_or_default())
    }

    /// The `limit` newest messages with `seq < before` (all when `None`), oldest first.
    async fn history(&self, room: &str, before: Option<u64>, limit: u32) -> Result<Vec<Message>>;
    /// Messages with `seq > after`, oldest first, at most `limit`; `true` when more remain
    /// (with `limit` 0: no message, and whether any is newer than `after`).
    async fn since(&self, room: &str, after: u64, limit: u32) -> Result<(Vec<Message>, bool)>;
    /// The message first stored in `room` under `key`, which is
    /// [`cid_key`](confab_protocol::message::cid_key)`(from, cid)`: cids are
    /// per sender.
    async fn cid(&self, room: &str, key: &str) -> Result<Option<CidHit>>;
    /// How long [`Store::cid`] remembers a cid after its message was sent;
    /// `None`: as long as the message is kept.
    fn cid_window(&self) -> Option<std::time::Duration> {
        None
    }
    /// Whether each [`Write::Message`] indexes its cid for [`Store::cid`]
    /// (true: the embedded store, in the same transaction). When false (the
    /// CQL store, where the index is a statement of its own per message),
    /// only [`Write::CidIndex`] does, and [`Store::recent_cids`] reads the
    /// cids from the messages themselves.
    fn indexes_cids(&self) -> bool {
        true
    }
    /// The cids of the room's newest `limit` messages (newest first), as
    /// [`Store::cid`] would answer them: `(cid_key, hit)`; a message without
    /// a cid (its sender's account was erased) is left out. The second value
    /// is the `ts` of the oldest message read, when `limit` were read.
    async fn recent_cids(&self, room: &str, limit: u32) -> Result<(Vec<(String, CidHit)>, Option<u64>)> {
        let page = self.history(room, None, limit).await?;
        let oldest = (page.len() >= limit as usize).then(|| page.first().map_or(0, |m| m.ts));
        let hits = page
            .into_iter()
            .rev()
            .filter(|m| !m.cid.is_empty() && !m.from.is_empty())
            .map(|m| {
                let key = confab_protocol::message::cid_key(&m.from, &m.cid);
                (key, CidHit { seq: m.seq, msg_id: m.msg_id, ts: m.ts })
            })
            .collect();
        Ok((hits, oldest))
    }

    /// The seq and ordinal of the room's newest message with a seq of at
    /// most `seq`; `None` when there is none. (The ordinal is 0 for a
    /// message stored before messages were counted.)
    async fn ordinal_at(&self, room: &str, seq: u64) -> Result<Option<(u64, u64)>>;
    /// `user`'s [`Tally`] in the room as of message `seq`: the last one
    /// written at a seq of at most `seq` in their current membership.
    async fn tally(&self, room: &str, user: &str, seq: u64) -> Result<Tally>;

    /// The room's settings; `None` for a room that has none stored.
    async fn room_settings(&self, room: &str) -> Result<Option<RoomSettings>>;
    /// A member's role and mute; `None` for a non-member. It costs what
    /// [`Store::is_member`] costs: the dispatcher reads it for every `send`.
    async fn member(&self, room: &str, user: &str) -> Result<Option<MemberRecord>>;
    /// Members ordered by name, after `after`, at most `limit`.
    async fn members_page(&self, room: &str, after: Option<&str>, limit: u32) -> Result<Vec<MemberEntry>>;
    async fn is_invited(&self, room: &str, user: &str) -> Result<bool>;
    async fn is_banned(&self, room: &str, user: &str) -> Result<bool>;
    /// Rooms the user is invited to (and has not joined since).
    async fn invitations(&self, user: &str) -> Result<Vec<String>>;
    /// Public rooms ordered by id, after `after`, at most `limit`.
    async fn public_rooms(&self, after: Option<&str>, limit: u32) -> Result<Vec<PublicRoom>>;

    /// Stores a batch durably: `Ok` means every write of it is stored.
    ///
    /// What a failed call leaves behind differs by backend:
    ///
    /// * Embedded: the batch is one redb transaction, fsynced before `Ok`;
    ///   after an error nothing of it is stored.
    /// * CQL: there is no transaction. Each write is applied on its own as
    ///   idempotent statements whose values and `USING TIMESTAMP` (the
    ///   write's `at`, a message's seq, a checkpoint's offset) come from the
    ///   batch alone. All writes but the checkpoints go out at once and land
    ///   in any order (a room's writes are ordered by their timestamps, not
    ///   by arrival); within a join or leave, the membership row that
    ///   [`Store::is_member`] reads goes last. The checkpoints go out only
    ///   once every other write has landed. After an error any part of the
    ///   other writes may be stored, and readable, but no checkpoint that
    ///   covers a write which is not.
    ///
    /// So callers rely on this much only: after an error, retry the same
    /// batch (on CQL this rewrites the same cells with the same timestamps,
    /// which converges on what one successful call stores) and act on
    /// nothing it covers before `Ok`. And a record past its partition's
    /// checkpoint may find its own writes stored in part when it is
    /// processed again (after a crash or a rebalance): deciding it must not
    /// take that part for the whole.
    async fn apply(&self, batch: WriteBatch) -> Result<()>;
    /// Stores a batch in two steps, so that a caller can decide its next
    /// batch while this one reaches the disk: `Ok` means every write of it
    /// is readable through this store now; the returned [`Durable`]
    /// resolves `Ok` once it is stored as [`Store::apply`] stores it.
    ///
    /// Batches staged one after another become durable in that order: one
    /// is durable only once every batch staged before it is. When a
    /// `Durable` fails, neither that batch nor any staged after it may be
    /// acted on; the store shows none of them again only once it has
    /// recovered (the embedded store fails every call until it is opened
    /// again, which rolls it back to its last durable commit). An `Err` from
    /// `stage` itself is an error of [`Store::apply`]: retry the same batch.
    ///
    /// By default, [`Store::apply`] then an already-resolved `Durable`.
    async fn stage(&self, batch: WriteBatch) -> Result<Durable> {
        self.apply(batch).await?;
        Ok(Box::pin(std::future::ready(Ok(()))))
    }
    /// The next offset to process, per ingress partition that has any.
    async fn checkpoints(&self) -> Result<Vec<(u32, u64)>>;
    /// Records the ingress partition count on first use and refuses another
    /// one later: seqs come from offsets, which a changed count would reorder.
    async fn bind_partitions(&self, partitions: u32) -> Result<()>;

    // Contacts, blocks and account deletion (see [`contacts`]). Written by
    // the gateway, outside any room's order.

    /// Records that `user` asks `other` to be a contact. `false`, and
    /// nothing stored, when the two have no relation yet and either has
    /// `max` relations (asks either way) already.
    async fn contact_ask(&self, user: &str, other: &str, max: usize) -> Result<bool>;
    /// Ends whatever relation `a` and `b` have: both asks.
    async fn contact_end(&self, a: &str, b: &str) -> Result<()>;
    /// `user`'s relations by the other's name: `(other, user asked, other asked)`.
    async fn contacts(&self, user: &str) -> Result<Vec<ContactRecord>>;
    /// `user` blocks `other`; `false`, and nothing stored, when `user` has
    /// `max` blocks already and `other` is not among them.
    async fn block(&self, user: &str, other: &str, max: usize) -> Result<bool>;
    async fn unblock(&self, user: &str, other: &str) -> Result<()>;
    /// The users `user` blocked, by name.
    async fn blocks(&self, user: &str) -> Result<Vec<String>>;
    async fn is_blocked(&self, user: &str, other: &str) -> Result<bool>;
    /// Deletes the account: its password and profile go, and the name
    /// stays taken (a tombstone: [`Store::create_user`] refuses it) while
    /// [`Store::user`] and [`Store::profiles`] no longer find it. `false`
    /// when there is no such user.
    async fn delete_user(&self, name: &str) -> Result<bool>;
    /// Who owns `room` once `leaving` (its owner) is gone: its
    /// longest-standing admin, else its longest-standing member; `None`
    /// when nobody else is in it.
    async fn successor(&self, room: &str, leaving: &str) -> Result<Option<String>>;
    /// A message in its current state, with what the dispatcher decides
    /// its changes by (crate::lifecycle).
    async fn message(&self, room: &str, seq: u64) -> Result<Option<MessageState>>;
    /// Whether `user` reacted to message `seq` with `emoji`.
    async fn reacted(&self, room: &str, seq: u64, emoji: &str, user: &str) -> Result<bool>;
    /// Message `seq`'s earlier versions, oldest first (none once deleted).
    async fn edits(&self, room: &str, seq: u64) -> Result<Vec<Version>>;
    /// The room's changes at positions `> after`, oldest first, as `(pos,
    /// seq)`, at most `limit`; `true` when more remain.
    async fn changes(&self, room: &str, after: u64, limit: u32) -> Result<(Vec<(u64, u64)>, bool)>;
    /// What the membership record at position `at` of `room` did
    /// ([`Write::MemberEvent`]); `None` when it changed nothing (refused,
    /// repeated), when it is no membership record, or once it is older
    /// than [`MEMBER_EVENT_TTL_SECS`].
    async fn member_event(&self, room: &str, at: u64) -> Result<Option<MemberEvent>>;

    // Uploads (see [`uploads`]). Written by the gateway, outside any room's
    // order, except attaching and dropping with a message (batch writes).

    /// Stores a new upload (unattached).
    async fn put_upload(&self, upload: &UploadRecord) -> Result<()>;
    async fn upload(&self, id: &str) -> Result<Option<UploadRecord>>;
    /// Drops every upload of `user` (their account was deleted).
    async fn drop_user_uploads(&self, user: &str) -> Result<()>;
    /// Up to `limit` uploads due for deletion: dropped ones, and those never
    /// attached that were created before `before_ms`.
    async fn due_uploads(&self, before_ms: u64, limit: u32) -> Result<Vec<UploadRecord>>;
    /// Removes an upload's metadata (its bytes are deleted first).
    async fn delete_upload(&self, upload: &UploadRecord) -> Result<()>;
}
