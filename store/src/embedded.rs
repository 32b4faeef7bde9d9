//! The embedded backend: one redb database file on local disk.
//!
//! redb commits are atomic and, with its default durability, fsynced before
//! `commit` returns, which is what makes the dispatcher's acks honest. Every
//! call runs on tokio's blocking pool so a slow disk never stalls the
//! sessions' executor threads.
//!
//! Writes are ordered by their `at` like the CQL backend's timestamps
//! (`membership_at`, checkpoints that only move forward), so both hold the
//! same stale-write fence.

mod contacts;
mod writer;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use confab_protocol::message::cid_key;
use confab_protocol::{Message, RoomInfo};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{
    CidHit, Error, MemberRecord, MessageState, PublicRoom, Result, RoomMeta, RoomSettings, Store, Tally, UserRecord,
    Write, WriteBatch,
};
use confab_protocol::lifecycle::Version;

mod lifecycle;
mod member_events;
mod uploads;
use confab_protocol::rooms::MemberEntry;
use confab_protocol::unread::unread;
use confab_protocol::{NotifyLevel, Profile, Retention, Role, Visibility};

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// user -> (display_name, avatar) of users who set a profile
const PROFILES: TableDefinition<&str, (&str, &str)> = TableDefinition::new("profiles");
/// user -> unix ms before which their tokens are revoked
const TOKEN_FLOORS: TableDefinition<&str, u64> = TableDefinition::new("token_floors");
/// token id -> its `exp` (unix seconds); expired entries go at the next revocation
const REVOKED_TOKENS: TableDefinition<&str, u64> = TableDefinition::new("revoked_tokens");
/// room -> (last_seq, member count)
const ROOMS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("rooms");
/// (room, user) -> read seq
const MEMBERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("members");
/// (user, room) -> ()
const USER_ROOMS: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_rooms");
/// (room, seq) -> StoredMessage as JSON
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
/// (room, cid) -> seq
const CIDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("cids");
/// (room, user) -> `at` of the latest join or leave applied, kept after a
/// leave: a join or leave from earlier in the log cannot undo it.
const MEMBERSHIP_AT: TableDefinition<(&str, &str), u64> = TableDefinition::new("membership_at");
/// partition -> next offset
const CHECKPOINTS: TableDefinition<u32, u64> = TableDefinition::new("checkpoints");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// room -> StoredSettings as JSON
const ROOM_SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("room_settings");
/// public room -> ()
const PUBLIC_ROOMS: TableDefinition<&str, ()> = TableDefinition::new("public_rooms");
/// (room, user) -> (role, muted_until) of members with other than the defaults
const MEMBER_STATE: TableDefinition<(&str, &str), (u8, u64)> = TableDefinition::new("member_state");
/// (room, user) -> (`at` of the latest invite write, invited); kept when
/// withdrawn, as a fence like `membership_at`
const INVITES: TableDefinition<(&str, &str), (u64, bool)> = TableDefinition::new("invites");
/// (user, room) -> () of live invitations
const USER_INVITES: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_invites");
/// (room, user) -> (`at` of the latest ban write, banned)
const BANS: TableDefinition<(&str, &str), (u64, bool)> = TableDefinition::new("bans");
/// room -> how many messages it has had (see `crate::unread`)
const ROOM_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("room_counts");
/// (room, seq) -> the message's ordinal among the room's messages
const ORDINALS: TableDefinition<(&str, u64), u64> = TableDefinition::new("ordinals");
/// (room, user, seq) -> (own, mentions): the member's running counts as of
/// that message; cleared by a leave
const TALLIES: TableDefinition<(&str, &str, u64), (u64, u64)> = TableDefinition::new("tallies");
/// (room, user) -> (messages, own, mentions) at the member's read marker
const READ_TALLIES: TableDefinition<(&str, &str), (u64, u64, u64)> = TableDefinition::new("read_tallies");
/// (room, user) -> notification level, of members who chose another than `all`
const NOTIFY: TableDefinition<(&str, &str), &str> = TableDefinition::new("notify");

/// Sorts after every character allowed in user and room names, so
/// `(prefix, "")..(prefix, END)` spans one prefix of a tuple key.
const END: &str = "~";

/// The second parts of the keys under `first` in a table keyed by two names
/// (a room's members, a user's rooms), in order.
fn second_keys<V: redb::Value + 'static>(
    table: &impl ReadableTable<(&'static str, &'static str), V>,
    first: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in table.range((first, "")..(first, END))? {
        out.push(entry?.0.value().1.to_owned());
    }
    Ok(out)
}

#[derive(Serialize, Deserialize)]
struct StoredSettings {
    settings: RoomSettings,
    /// The `at` of the write that stored them.
    at: u64,
}

fn role_code(role: Role) -> u8 {
    role.rank()
}

fn role_of(code: u8) -> Role {
    match code {
        2 => Role::Owner,
        1 => Role::Admin,
        _ => Role::Member,
    }
}

#[derive(Serialize, Deserialize)]
struct StoredMessage {
    msg_id: String,
    from: String,
    text: String,
    ts: u64,
    cid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply_to: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    edited_ts: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
    /// The position of the latest change (lifecycle); 0: never changed.
    #[serde(default, skip_serializing_if = "is_zero")]
    change_pos: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mentions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<confab_protocol::Attachment>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A cheap handle on the database; clones share it, and its writer thread.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: Arc<writer::Writer>,
}

/// redb's error types all convert into [`redb::Error`]; these let `?` take them.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Embedded(e.into())
            }
        }
    )*};
}
from_redb!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

impl EmbeddedStore {
    /// Opens (or creates) the database at `dir/confab.redb`. What it
    /// creates only its owner may read: the directory 0700, the file 0600
    /// (it holds every message and password hash).
    pub fn open(dir: &Path) -> Result<EmbeddedStore> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|source| Error::CreateDir { path: dir.to_owned(), source })?;
        let path = dir.join("confab.redb");
        // redb initializes an empty file; creating it first sets its mode.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&path).map_err(|e| Error::Open { path: path.clone(), source: e.into() })?;
        let db = Database::create(&path).map_err(|source| Error::Open { path, source })?;
        let txn = db.begin_write()?;
        {
            txn.open_table(USERS)?;
            txn.open_table(PROFILES)?;
            txn.open_table(TOKEN_FLOORS)?;
            txn.open_table(REVOKED_TOKENS)?;
            txn.open_table(ROOMS)?;
            txn.open_table(MEMBERS)?;
            txn.open_table(MEMBERSHIP_AT)?;
            txn.open_table(USER_ROOMS)?;
            txn.open_table(MESSAGES)?;
            txn.open_table(CIDS)?;
            txn.open_table(CHECKPOINTS)?;
            txn.open_table(META)?;
            txn.open_table(ROOM_SETTINGS)?;
            txn.open_table(PUBLIC_ROOMS)?;
            txn.open_table(MEMBER_STATE)?;
            txn.open_table(INVITES)?;
            txn.open_table(USER_INVITES)?;
            txn.open_table(BANS)?;
            contacts::create_tables(&txn)?;
            txn.open_table(ROOM_COUNTS)?;
            txn.open_table(ORDINALS)?;
            txn.open_table(TALLIES)?;
            txn.open_table(READ_TALLIES)?;
            txn.open_table(NOTIFY)?;
            txn.open_table(lifecycle::VERSIONS)?;
            txn.open_table(lifecycle::REACTIONS)?;
            txn.open_table(lifecycle::CHANGES)?;
            txn.open_table(lifecycle::LAST_CHANGE)?;
            uploads::create_tables(&txn)?;
            member_events::create_tables(&txn)?;
        }
        txn.commit()?;
        let db = Arc::new(db);
        let checkpoints = {
            let txn = db.begin_read()?;
            let table = txn.open_table(CHECKPOINTS)?;
            let mut out = std::collections::BTreeMap::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                out.insert(k.value(), v.value());
            }
            out
        };
        let writer = writer::Writer::start(db.clone(), checkpoints)
            .map_err(|e| Error::Other(format!("starting the embedded store's writer thread: {e}").into()))?;
        Ok(EmbeddedStore { db, writer: Arc::new(writer) })
    }

    /// Removes the messages that retention no longer keeps at `now_ms`
    /// (`ts` older than the room's `retention_days`, else `retention`'s
    /// default), at most `max` of them; returns how many it removed, so a
    /// caller repeats while that is `max`. The CQL store needs no sweeper:
    /// its messages carry a TTL.
    pub async fn sweep(&self, retention: Retention, now_ms: u64, max: usize) -> Result<usize> {
        let doomed = self.blocking(move |db| doomed(db, retention, now_ms, max)).await?;
        if doomed.is_empty() {
            return Ok(0);
        }
        self.write(move |db| sweep(db, &doomed)).await
    }

    /// Runs a read on tokio's blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T> + Send + 'static,
    {
        if self.writer.failed() {
            return Err(writer::failed_error());
        }
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await?
    }

    /// Runs a write transaction on the writer thread, in turn with the others.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T> + Send + 'static,
    {
        self.writer.write(f).await
    }
}

fn decode_stored(room: &str, seq: u64, bytes: &[u8]) -> Result<StoredMessage> {
    serde_json::from_slice(bytes)
        .map_err(|source| Error::Json { what: format!("decoding message {room}/{seq}"), source })
}

fn encode_stored(room: &str, seq: u64, m: &StoredMessage) -> Result<Vec<u8>> {
    serde_json::to_vec(m).map_err(|source| Error::Json { what: format!("encoding message {room}/{seq}"), source })
}

/// What a sweep removes: `(room, seq, cid key)` of at most `max` messages,
/// found in a read transaction (on the blocking pool), so the writer waits
/// for the removal only.
fn doomed(db: &Database, retention: Retention, now_ms: u64, max: usize) -> Result<Vec<(String, u64, String)>> {
    let mut doomed: Vec<(String, u64, String)> = Vec::new();
    {
        let txn = db.begin_read()?;
        let rooms = txn.open_table(ROOMS)?;
        let settings = txn.open_table(ROOM_SETTINGS)?;
        let messages = txn.open_table(MESSAGES)?;
        for entry in rooms.iter()? {
            let room = entry?.0.value().to_owned();
            let days = match settings.get(room.as_str())? {
                Some(g) => {
                    let stored: StoredSettings = serde_json::from_slice(g.value())
                        .map_err(|source| Error::Json { what: format!("decoding the settings of {room}"), source })?;
                    stored.settings.retention_days
                }
                None => None,
            };
            let Some(cutoff) = retention.cutoff_ms(days, now_ms) else { continue };
            // Oldest first; `ts` grows with seq, so the first kept one ends the room.
            for entry in messages.range((room.as_str(), 0)..=(room.as_str(), u64::MAX))? {
                if doomed.len() >= max {
                    break;
                }
                let (k, v) = entry?;
                let seq = k.value().1;
                let m = decode_stored(&room, seq, v.value())?;
                if m.ts >= cutoff {
                    break;
                }
                doomed.push((room.clone(), seq, cid_key(&m.from, &m.cid)));
            }
            if doomed.len() >= max {
                break;
            }
        }
    }
    Ok(doomed)
}

/// Removes the `doomed` messages. One found in the read may be gone by now
/// (an erase); removing it again changes nothing.
fn sweep(db: &Database, doomed: &[(String, u64, String)]) -> Result<usize> {
    let txn = db.begin_write()?;
    {
        let mut messages = txn.open_table(MESSAGES)?;
        let mut ordinals = txn.open_table(ORDINALS)?;
        let mut cids = txn.open_table(CIDS)?;
        let mut lifecycle = lifecycle::Tables::open(&txn)?;
        for (room, seq, cid) in doomed {
            messages.remove((room.as_str(), *seq))?;
            ordinals.remove((room.as_str(), *seq))?;
            // Its earlier versions and reactions go with it; its entries in
            // the change log stay (a `sync` skips a change to a message gone).
            lifecycle.forget(room, *seq)?;
            // The cid names this message only (a later one would have its own seq).
            if cids.get((room.as_str(), cid.as_str()))?.is_some_and(|g| g.value() == *seq) {
                cids.remove((room.as_str(), cid.as_str()))?;
            }
        }
    }
    txn.commit()?;
    Ok(doomed.len())
}

/// Applies a batch in one write transaction: all of it lands, or none;
/// fsynced before it returns with `Durability::Immediate`, readable only
/// (until the next durable commit) with `None`.
fn apply_batch(db: &Database, batch: &WriteBatch, durability: redb::Durability) -> Result<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability).map_err(|e| Error::Embedded(e.into()))?;
    {
        let mut rooms = txn.open_table(ROOMS)?;
        let mut members = txn.open_table(MEMBERS)?;
        let mut membership_at = txn.open_table(MEMBERSHIP_AT)?;
        let mut user_rooms = txn.open_table(USER_ROOMS)?;
        let mut messages = txn.open_table(MESSAGES)?;
        let mut cids = txn.open_table(CIDS)?;
        let mut checkpoints = txn.open_table(CHECKPOINTS)?;
        let mut room_settings = txn.open_table(ROOM_SETTINGS)?;
        let mut public_rooms = txn.open_table(PUBLIC_ROOMS)?;
        let mut member_state = txn.open_table(MEMBER_STATE)?;
        let mut invites = txn.open_table(INVITES)?;
        let mut user_invites = txn.open_table(USER_INVITES)?;
        let mut bans = txn.open_table(BANS)?;
        let mut room_counts = txn.open_table(ROOM_COUNTS)?;
        let mut ordinals = txn.open_table(ORDINALS)?;
        let mut tallies = txn.open_table(TALLIES)?;
        let mut read_tallies = txn.open_table(READ_TALLIES)?;
        let mut notify = txn.open_table(NOTIFY)?;
        let mut lifecycle = lifecycle::Tables::open(&txn)?;
        for write in batch {
            match write {
                Write::Message(m) => {
                    let stored = StoredMessage {
                        msg_id: m.msg_id.clone(),
                        from: m.from.clone(),
                        text: m.text.clone(),
                        ts: m.ts,
                        cid: m.cid.clone(),
                        reply_to: m.reply_to,
                        edited_ts: None,
                        deleted: false,
                        change_pos: 0,
                        mentions: m.mentions.clone(),
                        attachments: m.attachments.clone(),
                    };
                    let bytes = encode_stored(&m.room, m.seq, &stored)?;
                    messages.insert((m.room.as_str(), m.seq), bytes.as_slice())?;
                    cids.insert((m.room.as_str(), cid_key(&m.from, &m.cid).as_str()), m.seq)?;
                    let (last, count) = rooms.get(m.room.as_str())?.map(|g| g.value()).unwrap_or((0, 0));
                    rooms.insert(m.room.as_str(), (last.max(m.seq), count))?;
                }
                Write::Join { room, user, at, .. } => {
                    let key = (room.as_str(), user.as_str());
                    if membership_at.get(key)?.is_some_and(|g| g.value() > *at) {
                        continue; // a later leave (or join) stands
                    }
                    membership_at.insert(key, *at)?;
                    let is_member = members.get(key)?.is_some();
                    let (last, count) = rooms.get(room.as_str())?.map(|g| g.value()).unwrap_or((0, 0));
                    if !is_member {
                        members.insert(key, 0)?;
                        user_rooms.insert((user.as_str(), room.as_str()), ())?;
                    }
                    rooms.insert(room.as_str(), (last, count + u64::from(!is_member)))?;
                }
                Write::Leave { room, user, at, .. } => {
                    let key = (room.as_str(), user.as_str());
                    if membership_at.get(key)?.is_some_and(|g| g.value() > *at) {
                        continue;
                    }
                    membership_at.insert(key, *at)?;
                    member_state.remove(key)?;
                    read_tallies.remove(key)?;
                    notify.remove(key)?;
                    tallies.retain_in(
                        (room.as_str(), user.as_str(), 0)..=(room.as_str(), user.as_str(), u64::MAX),
                        |_, _| false,
                    )?;
                    if members.remove(key)?.is_some() {
                        user_rooms.remove((user.as_str(), room.as_str()))?;
                        let (last, count) = rooms.get(room.as_str())?.map(|g| g.value()).unwrap_or((0, 1));
                        rooms.insert(room.as_str(), (last, count.saturating_sub(1)))?;
                    }
                }
                Write::Read { room, user, seq, at } => {
                    let key = (room.as_str(), user.as_str());
                    // A marker from before the current membership began
                    // belongs to an earlier one.
                    if membership_at.get(key)?.is_some_and(|g| g.value() > *at) {
                        continue;
                    }
                    let current = members.get(key)?.map(|g| g.value());
                    if current.is_some_and(|current| *seq > current) {
                        members.insert(key, *seq)?;
                    }
                }
                Write::Settings { room, settings, at } => {
                    let stored = room_settings.get(room.as_str())?.map(|g| g.value().to_vec());
                    if let Some(bytes) = stored {
                        let stored: StoredSettings = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                            what: format!("decoding the settings of {room}"),
                            source,
                        })?;
                        if stored.at > *at {
                            continue;
                        }
                    }
                    let stored = StoredSettings { settings: settings.clone(), at: *at };
                    let bytes = serde_json::to_vec(&stored)
                        .map_err(|source| Error::Json { what: format!("encoding the settings of {room}"), source })?;
                    room_settings.insert(room.as_str(), bytes.as_slice())?;
                    match settings.visibility {
                        Visibility::Public => public_rooms.insert(room.as_str(), ())?,
                        Visibility::Private => public_rooms.remove(room.as_str())?,
                    };
                }
                Write::Role { room, user, role, at } => {
                    let key = (room.as_str(), user.as_str());
                    if membership_at.get(key)?.is_some_and(|g| g.value() > *at) || members.get(key)?.is_none() {
                        continue; // not a member (any more)
                    }
                    let muted = member_state.get(key)?.map_or(0, |g| g.value().1);
                    member_state.insert(key, (role_code(*role), muted))?;
                }
                Write::Mute { room, user, until, at } => {
                    let key = (room.as_str(), user.as_str());
                    if membership_at.get(key)?.is_some_and(|g| g.value() > *at) || members.get(key)?.is_none() {
                        continue;
                    }
                    let role = member_state.get(key)?.map_or(role_code(Role::Member), |g| g.value().0);
                    member_state.insert(key, (role, *until))?;
                }
                Write::Invite { room, user, invited, at } => {
                    let key = (room.as_str(), user.as_str());
                    if invites.get(key)?.is_some_and(|g| g.value().0 > *at) {
                        continue;
                    }
                    invites.insert(key, (*at, *invited))?;
                    if *invited {
                        user_invites.insert((user.as_str(), room.as_str()), ())?;
                    } else {
                        user_invites.remove((user.as_str(), room.as_str()))?;
                    }
                }
                Write::Ban { room, user, banned, at } => {
                    let key = (room.as_str(), user.as_str());
                    if bans.get(key)?.is_some_and(|g| g.value().0 > *at) {
                        continue;
                    }
                    bans.insert(key, (*at, *banned))?;
                }
                Write::Erase { room, user, .. } => {
                    contacts::erase(&mut messages, &mut cids, &mut lifecycle, room, user)?
                }
                Write::Checkpoint { partition, next_offset } => {
                    let stored = checkpoints.get(*partition)?.map_or(0, |g| g.value());
                    checkpoints.insert(*partition, stored.max(*next_offset))?;
                }
                // Indexed with its message, above.
                Write::CidIndex { .. } => {}
                // Expiry is the sweeper's (`sweep`), by the room's retention.
                Write::MessageMeta { room, seq, n, expires_ms: _ } => {
                    ordinals.insert((room.as_str(), *seq), *n)?;
                    let stored = room_counts.get(room.as_str())?.map_or(0, |g| g.value());
                    room_counts.insert(room.as_str(), stored.max(*n))?;
                }
                Write::Tally { room, user, seq, tally } => {
                    let key = (room.as_str(), user.as_str());
                    if membership_at.get(key)?.is_some_and(|g| g.value() > *seq) || members.get(key)?.is_none() {
                        continue;
                    }
                    tallies.insert((room.as_str(), user.as_str(), *seq), (tally.own, tally.mentions))?;
                }
                Write::ReadTally { room, user, n, tally, at } => {
                    let key = (room.as_str(), user.as_str());
                    if membership_at.get(key)?.is_some_and(|g| g.value() > *at) || members.get(key)?.is_none() {
                        continue;
                    }
                    read_tallies.insert(key, (*n, tally.own, tally.mentions))?;
                }
                Write::Notify { room, user, level, at } => {
                    let key = (room.as_str(), user.as_str());
                    if membership_at.get(key)?.is_some_and(|g| g.value() > *at) || members.get(key)?.is_none() {
                        continue;
                    }
                    match level {
                        NotifyLevel::All => notify.remove(key)?,
                        other => notify.insert(key, other.as_str())?,
                    };
                }
                Write::Edit { .. } | Write::Delete { .. } | Write::React { .. } => {
                    lifecycle.apply(&mut messages, write)?;
                }
                Write::Attach { room, seq, uploads, .. } => uploads::attach(&txn, room, *seq, uploads)?,
                Write::DropUploads { ids, .. } => uploads::drop_uploads(&txn, ids.iter().map(String::as_str))?,
                Write::MemberEvent { room, at, event } => member_events::put(&txn, room, *at, event)?,
            }
        }
    }
    Ok(txn.commit()?)
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn ping(&self) -> Result<()> {
        self.blocking(|db| {
            db.begin_read()?;
            Ok(())
        })
        .await
    }

    async fn create_user(&self, user: &UserRecord) -> Result<bool> {
        let user = user.clone();
        self.write(move |db| {
            let bytes = serde_json::to_vec(&user)
                .map_err(|source| Error::Json { what: format!("encoding user {}", user.name), source })?;
            let txn = db.begin_write()?;
            let created = {
                let mut users = txn.open_table(USERS)?;
                if users.get(user.name.as_str())?.is_some() {
                    false
                } else {
                    users.insert(user.name.as_str(), bytes.as_slice())?;
                    true
                }
            };
            txn.commit()?;
            Ok(created)
        })
        .await
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        let name = name.to_owned();
        self.blocking(move |db| {
            if contacts::is_deleted(db, &name)? {
                return Ok(None);
            }
            let txn = db.begin_read()?;
            let users = txn.open_table(USERS)?;
            match users.get(name.as_str())? {
                None => Ok(None),
                Some(g) => serde_json::from_slice(g.value())
                    .map(Some)
                    .map_err(|source| Error::Json { what: format!("decoding user {name}"), source }),
            }
        })
        .await
    }

    async fn set_profile(&self, profile: &Profile) -> Result<bool> {
        let p = profile.clone();
        self.write(move |db| {
            let txn = db.begin_write()?;
            let found = {
                if txn.open_table(USERS)?.get(p.user.as_str())?.is_none() {
                    false
                } else {
                    txn.open_table(PROFILES)?.insert(p.user.as_str(), (p.display_name.as_str(), p.avatar.as_str()))?;
                    true
                }
            };
            txn.commit()?;
            Ok(found)
        })
        .await
    }

    async fn profiles(&self, users: &[String]) -> Result<Vec<Profile>> {
        let users = users.to_vec();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let (accounts, profiles) = (txn.open_table(USERS)?, txn.open_table(PROFILES)?);
            let deleted = txn.open_table(contacts::DELETED_USERS)?;
            let mut seen = std::collections::HashSet::new();
            let mut found = Vec::new();
            for user in users {
                if !seen.insert(user.clone()) || deleted.get(user.as_str())?.is_some() {
                    continue;
                }
                let Some(account) = accounts.get(user.as_str())? else {
                    continue;
                };
                let bot = serde_json::from_slice::<UserRecord>(account.value())
                    .map_err(|source| Error::Json { what: format!("decoding user {user}"), source })?
                    .bot;
                let (display_name, avatar) = match profiles.get(user.as_str())? {
                    Some(g) => {
                        let (d, a) = g.value();
                        (d.to_owned(), a.to_owned())
                    }
                    None => Default::default(),
                };
                found.push(Profile { user, display_name, avatar, bot });
            }
            Ok(found)
        })
        .await
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool> {
        let (name, hash) = (name.to_owned(), password_hash.to_owned());
        self.write(move |db| {
            let txn = db.begin_write()?;
            let found = {
                let mut users = txn.open_table(USERS)?;
                let user = match users.get(name.as_str())? {
                    None => None,
                    Some(g) => Some(
                        serde_json::from_slice::<UserRecord>(g.value())
                            .map_err(|source| Error::Json { what: format!("decoding user {name}"), source })?,
                    ),
                };
                match user {
                    None => false,
                    Some(mut user) => {
                        user.password_hash = hash;
                        let bytes = serde_json::to_vec(&user)
                            .map_err(|source| Error::Json { what: format!("encoding user {name}"), source })?;
                        users.insert(name.as_str(), bytes.as_slice())?;
                        true
                    }
                }
            };
            txn.commit()?;
            Ok(found)
        })
        .await
    }

    async fn tokens_valid_after(&self, user: &str) -> Result<u64> {
        let user = user.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            Ok(txn.open_table(TOKEN_FLOORS)?.get(user.as_str())?.map_or(0, |g| g.value()))
        })
        .await
    }

    async fn revoke_tokens_before(&self, user: &str, before_ms: u64) -> Result<()> {
        let user = user.to_owned();
        self.write(move |db| {
            let txn = db.begin_write()?;
            {
                let mut floors = txn.open_table(TOKEN_FLOORS)?;
                let old = floors.get(user.as_str())?.map_or(0, |g| g.value());
                floors.insert(user.as_str(), old.max(before_ms))?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn revoke_token(&self, jti: &str, exp: u64) -> Result<()> {
        let jti = jti.to_owned();
        self.write(move |db| {
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let txn = db.begin_write()?;
            {
                let mut revoked = txn.open_table(REVOKED_TOKENS)?;
                // Expired tokens are refused anyway: forget them.
                revoked.retain(|_, exp| exp >= now)?;
                revoked.insert(jti.as_str(), exp)?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn is_token_revoked(&self, jti: &str) -> Result<bool> {
        let jti = jti.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            Ok(txn.open_table(REVOKED_TOKENS)?.get(jti.as_str())?.is_some())
        })
        .await
    }

    async fn room(&self, room: &str) -> Result<Option<RoomMeta>> {
        let room = room.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let rooms = txn.open_table(ROOMS)?;
            let Some((last_seq, members)) = rooms.get(room.as_str())?.map(|g| g.value()) else { return Ok(None) };
            let messages = txn.open_table(ROOM_COUNTS)?.get(room.as_str())?.map_or(0, |g| g.value());
            let last_change = txn.open_table(lifecycle::LAST_CHANGE)?.get(room.as_str())?.map_or(0, |g| g.value());
            Ok(Some(RoomMeta { last_seq, members, members_at: 0, messages, last_change }))
        })
        .await
    }

    async fn is_member(&self, room: &str, user: &str) -> Result<bool> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let members = txn.open_table(MEMBERS)?;
            Ok(members.get((room.as_str(), user.as_str()))?.is_some())
        })
        .await
    }

    async fn members(&self, room: &str) -> Result<Vec<String>> {
        let room = room.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            second_keys(&txn.open_table(MEMBERS)?, &room)
        })
        .await
    }

    async fn user_rooms(&self, user: &str) -> Result<Vec<RoomInfo>> {
        let user = user.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let user_rooms = txn.open_table(USER_ROOMS)?;
            let rooms = txn.open_table(ROOMS)?;
            let members = txn.open_table(MEMBERS)?;
            let counts = txn.open_table(ROOM_COUNTS)?;
            let tallies = txn.open_table(TALLIES)?;
            let read_tallies = txn.open_table(READ_TALLIES)?;
            let notify = txn.open_table(NOTIFY)?;
            let mut out = Vec::new();
            for entry in user_rooms.range((user.as_str(), "")..(user.as_str(), END))? {
                let (k, _) = entry?;
                let room = k.value().1;
                let key = (room, user.as_str());
                let last_seq = rooms.get(room)?.map(|g| g.value().0).unwrap_or(0);
                let read_seq = members.get(key)?.map(|g| g.value()).unwrap_or(0);
                let messages = counts.get(room)?.map_or(0, |g| g.value());
                let (read_n, read_own, read_mentions) = read_tallies.get(key)?.map_or((0, 0, 0), |g| g.value());
                let (own, mentions) =
                    match tallies.range((room, user.as_str(), 0)..=(room, user.as_str(), u64::MAX))?.next_back() {
                        Some(entry) => entry?.1.value(),
                        None => (0, 0),
                    };
                let level = notify.get(key)?.and_then(|g| NotifyLevel::parse(g.value())).unwrap_or_default();
                out.push(RoomInfo {
                    room: room.to_owned(),
                    last_seq,
                    read_seq,
                    invited: false,
                    unread: unread(messages, read_n, own, read_own),
                    mentions: mentions.saturating_sub(read_mentions),
                    notify: level,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn user_room_count(&self, user: &str) -> Result<usize> {
        let user = user.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let user_rooms = txn.open_table(USER_ROOMS)?;
            let mut n = 0;
            for entry in user_rooms.range((user.as_str(), "")..(user.as_str(), END))? {
                entry?;
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn user_room_names(&self, user: &str) -> Result<Vec<String>> {
        let user = user.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            second_keys(&txn.open_table(USER_ROOMS)?, &user)
        })
        .await
    }

    async fn read_marker(&self, room: &str, user: &str) -> Result<u64> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let members = txn.open_table(MEMBERS)?;
            Ok(members.get((room.as_str(), user.as_str()))?.map(|g| g.value()).unwrap_or(0))
        })
        .await
    }

    async fn notify_level(&self, room: &str, user: &str) -> Result<NotifyLevel> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let notify = txn.open_table(NOTIFY)?;
            let level = notify.get((room.as_str(), user.as_str()))?.and_then(|g| NotifyLevel::parse(g.value()));
            Ok(level.unwrap_or_default())
        })
        .await
    }

    async fn history(&self, room: &str, before: Option<u64>, limit: u32) -> Result<Vec<Message>> {
        let room = room.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let messages = txn.open_table(MESSAGES)?;
            let reactions = txn.open_table(lifecycle::REACTIONS)?;
            let upper = before.unwrap_or(u64::MAX);
            let mut out = Vec::with_capacity(limit as usize);
            for entry in messages.range((room.as_str(), 0)..(room.as_str(), upper))?.rev() {
                if out.len() >= limit as usize {
                    break;
                }
                let (k, v) = entry?;
                let seq = k.value().1;
                out.push(lifecycle::current(&reactions, &room, seq, decode_stored(&room, seq, v.value())?)?);
            }
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn since(&self, room: &str, after: u64, limit: u32) -> Result<(Vec<Message>, bool)> {
        let room = room.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let messages = txn.open_table(MESSAGES)?;
            let reactions = txn.open_table(lifecycle::REACTIONS)?;
            let mut out = Vec::with_capacity(limit.min(1024) as usize);
            let Some(from) = after.checked_add(1) else {
                return Ok((out, false));
            };
            for entry in messages.range((room.as_str(), from)..=(room.as_str(), u64::MAX))? {
                if out.len() >= limit as usize {
                    return Ok((out, true));
                }
                let (k, v) = entry?;
                let seq = k.value().1;
                out.push(lifecycle::current(&reactions, &room, seq, decode_stored(&room, seq, v.value())?)?);
            }
            Ok((out, false))
        })
        .await
    }

    async fn cid(&self, room: &str, cid: &str) -> Result<Option<CidHit>> {
        let (room, cid) = (room.to_owned(), cid.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let cids = txn.open_table(CIDS)?;
            let Some(seq) = cids.get((room.as_str(), cid.as_str()))?.map(|g| g.value()) else {
                return Ok(None);
            };
            let messages = txn.open_table(MESSAGES)?;
            let bytes = messages
                .get((room.as_str(), seq))?
                .ok_or_else(|| Error::Corrupt(format!("cid {cid} of {room} names missing seq {seq}")))?;
            let m = decode_stored(&room, seq, bytes.value())?;
            Ok(Some(CidHit { seq, msg_id: m.msg_id, ts: m.ts }))
        })
        .await
    }

    async fn ordinal_at(&self, room: &str, seq: u64) -> Result<Option<(u64, u64)>> {
        let room = room.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let messages = txn.open_table(MESSAGES)?;
            let Some(entry) = messages.range((room.as_str(), 0)..=(room.as_str(), seq))?.next_back() else {
                return Ok(None);
            };
            let found = entry?.0.value().1;
            let n = txn.open_table(ORDINALS)?.get((room.as_str(), found))?.map_or(0, |g| g.value());
            Ok(Some((found, n)))
        })
        .await
    }

    async fn tally(&self, room: &str, user: &str, seq: u64) -> Result<Tally> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let tallies = txn.open_table(TALLIES)?;
            let last =
                tallies.range((room.as_str(), user.as_str(), 0)..=(room.as_str(), user.as_str(), seq))?.next_back();
            let (own, mentions) = match last {
                Some(entry) => entry?.1.value(),
                None => (0, 0),
            };
            Ok(Tally { own, mentions })
        })
        .await
    }

    async fn room_settings(&self, room: &str) -> Result<Option<RoomSettings>> {
        let room = room.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(ROOM_SETTINGS)?;
            let Some(g) = table.get(room.as_str())? else { return Ok(None) };
            let stored: StoredSettings = serde_json::from_slice(g.value())
                .map_err(|source| Error::Json { what: format!("decoding the settings of {room}"), source })?;
            Ok(Some(stored.settings))
        })
        .await
    }

    async fn member(&self, room: &str, user: &str) -> Result<Option<MemberRecord>> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let key = (room.as_str(), user.as_str());
            if txn.open_table(MEMBERS)?.get(key)?.is_none() {
                return Ok(None);
            }
            let state = txn.open_table(MEMBER_STATE)?.get(key)?.map(|g| g.value());
            Ok(Some(state.map_or_else(MemberRecord::default, |(role, muted_until)| MemberRecord {
                role: role_of(role),
                muted_until,
            })))
        })
        .await
    }

    async fn members_page(&self, room: &str, after: Option<&str>, limit: u32) -> Result<Vec<MemberEntry>> {
        let (room, after) = (room.to_owned(), after.map(str::to_owned));
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let members = txn.open_table(MEMBERS)?;
            let state = txn.open_table(MEMBER_STATE)?;
            let mut out = Vec::new();
            let start = after.as_deref().unwrap_or("");
            for entry in members.range((room.as_str(), start)..(room.as_str(), END))? {
                if out.len() >= limit as usize {
                    break;
                }
                let (k, _) = entry?;
                let user = k.value().1;
                if after.as_deref() == Some(user) {
                    continue;
                }
                let role = state.get((room.as_str(), user))?.map_or(Role::Member, |g| role_of(g.value().0));
                out.push(MemberEntry { user: user.to_owned(), role });
            }
            Ok(out)
        })
        .await
    }

    async fn is_invited(&self, room: &str, user: &str) -> Result<bool> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            Ok(txn.open_table(INVITES)?.get((room.as_str(), user.as_str()))?.is_some_and(|g| g.value().1))
        })
        .await
    }

    async fn is_banned(&self, room: &str, user: &str) -> Result<bool> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            Ok(txn.open_table(BANS)?.get((room.as_str(), user.as_str()))?.is_some_and(|g| g.value().1))
        })
        .await
    }

    async fn invitations(&self, user: &str) -> Result<Vec<String>> {
        let user = user.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(USER_INVITES)?;
            let mut out = Vec::new();
            for entry in table.range((user.as_str(), "")..(user.as_str(), END))? {
                let (k, _) = entry?;
                out.push(k.value().1.to_owned());
            }
            Ok(out)
        })
        .await
    }

    async fn public_rooms(&self, after: Option<&str>, limit: u32) -> Result<Vec<PublicRoom>> {
        let after = after.map(str::to_owned);
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let public = txn.open_table(PUBLIC_ROOMS)?;
            let settings = txn.open_table(ROOM_SETTINGS)?;
            let mut out = Vec::new();
            let start = after.as_deref().unwrap_or("");
            for entry in public.range(start..)? {
                if out.len() >= limit as usize {
                    break;
                }
                let (k, _) = entry?;
                let room = k.value();
                if after.as_deref() == Some(room) {
                    continue;
                }
                let Some(g) = settings.get(room)? else { continue };
                let stored: StoredSettings = serde_json::from_slice(g.value())
                    .map_err(|source| Error::Json { what: format!("decoding the settings of {room}"), source })?;
                out.push(PublicRoom {
                    room: room.to_owned(),
                    name: stored.settings.name,
                    topic: stored.settings.topic,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn apply(&self, batch: WriteBatch) -> Result<()> {
        self.writer.apply(batch).await
    }

    /// Committed on the writer thread without an fsync, then synced with
    /// the group of batches staged meanwhile (see [`writer`]).
    async fn stage(&self, batch: WriteBatch) -> Result<crate::Durable> {
        self.writer.stage(batch).await
    }

    /// The durable checkpoints only: a batch staged and not yet synced is
    /// readable, but `history` and `sync` stop at these (the gateway's
    /// `Committed`), so that no reader sees a message a crash could take
    /// back (see [`writer`]).
    async fn checkpoints(&self) -> Result<Vec<(u32, u64)>> {
        self.writer.checkpoints()
    }

    async fn bind_partitions(&self, partitions: u32) -> Result<()> {
        self.write(move |db| {
            let txn = db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                let stored = meta.get("partitions")?.map(|g| g.value());
                match stored {
                    Some(stored) if stored != u64::from(partitions) => {
                        return Err(Error::PartitionsChanged { stored: stored as u32, wanted: partitions });
                    }
                    Some(_) => {}
                    None => {
                        meta.insert("partitions", u64::from(partitions))?;
                    }
                }
            }
            Ok(txn.commit()?)
        })
        .await
    }

    async fn contact_ask(&self, user: &str, other: &str, max: usize) -> Result<bool> {
        self.contact_ask_(user, other, max).await
    }
    async fn contact_end(&self, a: &str, b: &str) -> Result<()> {
        self.contact_end_(a, b).await
    }
    async fn contacts(&self, user: &str) -> Result<Vec<crate::ContactRecord>> {
        self.contacts_(user).await
    }
    async fn block(&self, user: &str, other: &str, max: usize) -> Result<bool> {
        self.block_(user, other, max).await
    }
    async fn unblock(&self, user: &str, other: &str) -> Result<()> {
        self.unblock_(user, other).await
    }
    async fn blocks(&self, user: &str) -> Result<Vec<String>> {
        self.blocks_(user).await
    }
    async fn is_blocked(&self, user: &str, other: &str) -> Result<bool> {
        self.is_blocked_(user, other).await
    }
    async fn delete_user(&self, name: &str) -> Result<bool> {
        self.delete_user_(name).await
    }
    async fn put_upload(&self, upload: &crate::UploadRecord) -> Result<()> {
        self.put_upload_(upload).await
    }
    async fn upload(&self, id: &str) -> Result<Option<crate::UploadRecord>> {
        self.upload_(id).await
    }
    async fn drop_user_uploads(&self, user: &str) -> Result<()> {
        self.drop_user_uploads_(user).await
    }
    async fn due_uploads(&self, before_ms: u64, limit: u32) -> Result<Vec<crate::UploadRecord>> {
        self.due_uploads_(before_ms, limit).await
    }
    async fn delete_upload(&self, upload: &crate::UploadRecord) -> Result<()> {
        self.delete_upload_(upload).await
    }
    async fn successor(&self, room: &str, leaving: &str) -> Result<Option<String>> {
        self.successor_(room, leaving).await
    }

    async fn message(&self, room: &str, seq: u64) -> Result<Option<MessageState>> {
        let room = room.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let Some(bytes) = txn.open_table(MESSAGES)?.get((room.as_str(), seq))?.map(|g| g.value().to_vec()) else {
                return Ok(None);
            };
            let stored = decode_stored(&room, seq, &bytes)?;
            let change_pos = stored.change_pos;
            let message = lifecycle::current(&txn.open_table(lifecycle::REACTIONS)?, &room, seq, stored)?;
            let versions = lifecycle::versions(&txn.open_table(lifecycle::VERSIONS)?, &room, seq)?.len() as u32;
            Ok(Some(MessageState { message, versions, change_pos }))
        })
        .await
    }

    async fn reacted(&self, room: &str, seq: u64, emoji: &str, user: &str) -> Result<bool> {
        let (room, emoji, user) = (room.to_owned(), emoji.to_owned(), user.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let reactions = txn.open_table(lifecycle::REACTIONS)?;
            Ok(reactions.get((room.as_str(), seq, emoji.as_str(), user.as_str()))?.is_some())
        })
        .await
    }

    async fn edits(&self, room: &str, seq: u64) -> Result<Vec<Version>> {
        let room = room.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            lifecycle::versions(&txn.open_table(lifecycle::VERSIONS)?, &room, seq)
        })
        .await
    }

    async fn changes(&self, room: &str, after: u64, limit: u32) -> Result<(Vec<(u64, u64)>, bool)> {
        let room = room.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            lifecycle::changes(&txn.open_table(lifecycle::CHANGES)?, &room, after, limit)
        })
        .await
    }

    async fn member_event(&self, room: &str, at: u64) -> Result<Option<crate::MemberEvent>> {
        self.member_event_(room, at).await
    }
}

#[cfg(test)]
mod tests {
    use confab_protocol::Message;
    use confab_protocol::message::cid_key;

    #[cfg(unix)]
    #[test]
    fn the_directory_and_database_it_creates_are_private_to_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        drop(super::EmbeddedStore::open(&dir).unwrap());
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("confab.redb")), 0o600);
    }

    async fn open() -> (tempfile::TempDir, super::EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = super::EmbeddedStore::open(dir.path()).unwrap();
        (dir, store)
    }
    crate::store_contract_tests!(open);

    /// Batches staged from many tasks at once, between account writes, are
    /// all durable once their `Durable`s resolve: a store opened again on
    /// the same file (right after the last handle is dropped: the writer
    /// thread is gone with it) holds every one of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn staged_batches_from_many_tasks_are_all_there_after_a_reopen() {
        use crate::contract::message;
        use crate::{Store, UserRecord, Write};
        let (dir, store) = open().await;
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let room = format!("r{t}");
                let mut durables = Vec::new();
                for seq in 1..=20u64 {
                    let mut batch = vec![Write::Message(message(&room, seq, "alice", &format!("c{seq}")))];
                    if seq == 1 {
                        batch.insert(0, Write::Join { room: room.clone(), user: "alice".into(), at: 0, members: 1 });
                    }
                    durables.push(store.stage(batch).await.unwrap());
                    if seq % 5 == 0 {
                        let user = UserRecord {
                            name: format!("u{t}-{seq}"),
                            password_hash: String::new(),
                            created_ms: 1,
                            bot: false,
                        };
                        assert!(store.create_user(&user).await.unwrap());
                    }
                }
                for durable in durables {
                    durable.await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        drop(store);
        let store = super::EmbeddedStore::open(dir.path()).unwrap();
        for t in 0..8u64 {
            let seqs: Vec<u64> =
                store.history(&format!("r{t}"), None, 100).await.unwrap().iter().map(|m| m.seq).collect();
            assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "room r{t}");
            assert!(store.user(&format!("u{t}-20")).await.unwrap().is_some());
        }
    }

    /// A write that panics on the writer thread (a bug) latches the store:
    /// its caller gets an error, and so does every later read and write,
    /// rather than writes stopping for good while reads go on. Opened
    /// again, the store holds what was durable before the panic.
    #[tokio::test]
    async fn a_panic_on_the_writer_thread_latches_the_store() {
        use crate::contract::message;
        use crate::{Store, Write};
        let (dir, store) = open().await;
        let join = Write::Join { room: "r".into(), user: "alice".into(), at: 0, members: 1 };
        store.stage(vec![join, Write::Message(message("r", 1, "alice", "c1"))]).await.unwrap().await.unwrap();
        let panicked = store.writer.write(|_| -> crate::Result<()> { panic!("a bug in a write") }).await;
        assert!(panicked.is_err(), "the panicking write's caller gets an error");
        let latched = |e: crate::Error| e.to_string().contains("refuses every call");
        assert!(store.history("r", None, 10).await.is_err_and(latched), "reads refuse");
        assert!(store.stage(vec![Write::Message(message("r", 2, "alice", "c2"))]).await.is_err_and(latched));
        assert!(store.user("alice").await.is_err_and(latched));
        drop(store);
        let store = super::EmbeddedStore::open(dir.path()).unwrap();
        let seqs: Vec<u64> = store.history("r", None, 10).await.unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [1]);
    }

    #[tokio::test]
    async fn the_sweeper_removes_what_retention_no_longer_keeps() {
        use crate::contract::message;
        use crate::{RoomSettings, Store, Write};
        use confab_protocol::Retention;
        let (_dir, store) = open().await;
        let join = |room: &str| Write::Join { room: room.into(), user: "alice".into(), at: 0, members: 1 };
        let keep_two_days = RoomSettings { retention_days: Some(2), ..RoomSettings::default() };
        let mut batch = vec![join("r"), join("forever"), join("dm:alice:bob")];
        batch.push(Write::Settings { room: "r".into(), settings: keep_two_days, at: 1 });
        for (seq, ts) in [(1, 1_000), (5, 3_000), (9, 5_000)] {
            for room in ["r", "forever", "dm:alice:bob"] {
                let m = Message { ts, ..message(room, seq, "alice", &format!("c{seq}")) };
                batch.push(Write::Message(m));
                batch.push(Write::MessageMeta { room: room.into(), seq, n: seq, expires_ms: None });
            }
        }
        store.apply(batch).await.unwrap();
        // A "day" of one second: at 6000 ms, r (two days) keeps ts 4000 and
        // later; the cluster's default of three days, ts 3000 and later,
        // applies to the others (no setting of their own).
        let retention = Retention { default_days: Some(3), day_secs: 1 };
        assert_eq!(store.sweep(retention, 6_000, 1).await.unwrap(), 1, "at most `max` at a time");
        assert_eq!(store.sweep(retention, 6_000, 100).await.unwrap(), 3);
        assert_eq!(store.sweep(retention, 6_000, 100).await.unwrap(), 0);
        let seqs = |room: &'static str| {
            let store = store.clone();
            async move { store.history(room, None, 10).await.unwrap().iter().map(|m| m.seq).collect::<Vec<_>>() }
        };
        assert_eq!(seqs("r").await, [9]);
        assert_eq!(seqs("dm:alice:bob").await, [5, 9]);
        assert_eq!(seqs("forever").await, [5, 9]);
        assert_eq!(store.cid("r", &cid_key("alice", "c1")).await.unwrap(), None, "its cid goes with it");
        assert_eq!(store.ordinal_at("r", 4).await.unwrap(), None);
        assert_eq!(store.room("r").await.unwrap().unwrap().messages, 9, "the count stays");
        let none = Retention { default_days: None, day_secs: 1 };
        assert_eq!(store.sweep(none, 60_000, 100).await.unwrap(), 1, "without a default only r's setting applies");
        assert_eq!(seqs("forever").await, [5, 9]);
    }

    #[tokio::test]
    async fn data_survives_reopening_the_database() {
        use crate::Store;
        let dir = tempfile::tempdir().unwrap();
        {
            let store = super::EmbeddedStore::open(dir.path()).unwrap();
            store.apply(crate::contract::some_messages("r", 3)).await.unwrap();
        }
        let store = super::EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.history("r", None, 10).await.unwrap().len(), 3);
        assert_eq!(store.room("r").await.unwrap().unwrap().last_seq, 3);
    }
}
