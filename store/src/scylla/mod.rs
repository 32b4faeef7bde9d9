//! The distributed store: ScyllaDB, or any database speaking the CQL native
//! protocol (Apache Cassandra), through the `scylla` driver.
//!
//! Tables are designed per query (`schema.cql`): messages partitioned by
//! `(room, bucket)` and clustered by seq descending, members per room, rooms
//! per user. Statements are prepared once; the driver routes them
//! token-aware. Reads and writes use `LOCAL_QUORUM`, so with replication 3 a
//! write acknowledged to a client survives the loss of one replica and every
//! read sees it. The dispatcher's writes carry `USING TIMESTAMP <log
//! position>`: replays and stale dispatchers cannot undo later writes, with
//! no lightweight transaction on the hot path.

mod contacts;
mod lifecycle;
mod member_events;
mod replication;
mod tls;
mod uploads;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use confab_protocol::message::cid_key;
use confab_protocol::unread::unread;
use confab_protocol::validate::dm_members;
use confab_protocol::{Message, NotifyLevel, Profile, RoomInfo};
use futures_util::future::try_join_all;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::ExecutionError;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;

use crate::{
    CidHit, Error, MemberRecord, MessageState, PublicRoom, Result, RoomMeta, RoomSettings, Store, Tally, UserRecord,
    Write, WriteBatch,
};
use confab_protocol::lifecycle::Version;
use confab_protocol::rooms::MemberEntry;
use confab_protocol::{Role, Visibility};

pub use replication::{Replication, ReplicationError};
pub use tls::{CqlTls, TlsError};

/// The schema, applied by [`ScyllaStore::migrate`].
pub const SCHEMA: &str = include_str!("schema.cql");
/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: i32 = 9;
/// Columns later versions added to tables of earlier ones: `migrate` adds
/// each one a keyspace lacks (CQL has no `ADD COLUMN IF NOT EXISTS`).
const UPGRADES: &[(&str, &str, &str)] = &[
    ("members", "role", "text"),
    ("members", "muted_until", "bigint"),
    // Version 4: a message's life after it was sent (lifecycle.rs).
    ("messages", "reply_to", "bigint"),
    ("messages", "edited_ts", "bigint"),
    ("messages", "deleted", "boolean"),
    ("messages", "change_pos", "bigint"),
    ("rooms", "last_change", "bigint"),
    // Version 5: contacts, blocks and deletion (contacts.rs).
    ("members", "joined_at", "bigint"),
    ("users", "deleted_ms", "bigint"),
    // Version 6, "unread counts" (issue #15 part B): counts, mentions,
    // notification levels, retention.
    ("rooms", "messages", "bigint"),
    ("messages", "n", "bigint"),
    ("messages", "mentions", "list<text>"),
    ("user_rooms", "read_n", "bigint"),
    ("user_rooms", "read_own", "bigint"),
    ("user_rooms", "read_mentions", "bigint"),
    ("user_rooms", "notify", "text"),
    ("room_settings", "retention_days", "int"),
    // Also version 6 (issue #16, bots): a bot account's flag.
    ("users", "bot", "boolean"),
    // Version 7 (issue #14): the member count the room's dispatcher keeps;
    // `migrate` counts the rooms that lack it once (`backfill_member_counts`).
    ("rooms", "members", "bigint"),
    // Version 8 (issue #17, attachments): a message's attachments as JSON.
    ("messages", "attachments", "text"),
];
/// Partitions of the `public_rooms` table.
const PUBLIC_SHARDS: i32 = 16;
/// Messages per `(room, bucket)` partition at most: `bucket = seq >> BUCKET_BITS`.
pub const BUCKET_BITS: u32 = 16;

/// CQL settings.
#[derive(Debug, Clone)]
pub struct CqlConfig {
    /// `host:port` of one or more nodes.
    pub contact_points: Vec<String>,
    pub keyspace: String,
    /// Used by `migrate` only, when it creates the keyspace.
    pub replication: Replication,
    pub username: Option<String>,
    pub password: Option<String>,
    pub request_timeout: Duration,
    /// TLS to every node; `None`: plain TCP.
    pub tls: Option<CqlTls>,
    /// Leave unwritten what the rows already written give back: a room's
    /// `rooms` row (its `last_seq` and message count) is written only when
    /// a batch opens a message bucket or holds a message that expires, not
    /// with every batch; and a DM's second member's tally is not written
    /// for their own messages. A DM is then about one CQL write fewer per
    /// message and a half. Every reader of this version derives both either
    /// way (`ScyllaStore::head`, `Store::tally`); a process of an earlier
    /// version reads the rows alone, so this waits until none runs
    /// (docs/operator.md, "Derived counts").
    pub derived_counts: bool,
}

/// `cql` failed.
fn cql_error(cql: &str) -> impl FnOnce(ExecutionError) -> Error + '_ {
    move |source| Error::Cql { cql: cql.to_owned(), source: Box::new(source) }
}

/// The result of `cql` does not read as expected.
fn result_error<E>(cql: &str) -> impl FnOnce(E) -> Error + '_
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| Error::CqlResult { cql: cql.to_owned(), source: Box::new(e) }
}

async fn use_keyspace(s: &Session, keyspace: &str) -> Result<()> {
    s.use_keyspace(keyspace, false)
        .await
        .map_err(|source| Error::UseKeyspace { keyspace: keyspace.to_owned(), source: Box::new(source) })
}

fn bucket(seq: u64) -> i64 {
    (seq >> BUCKET_BITS) as i64
}

fn is_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 48
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

async fn session(config: &CqlConfig, keyspace: Option<&str>) -> Result<Session> {
    // The driver's default profile with our request timeout (the driver's own is 30 s).
    let profile = ExecutionProfile::builder().request_timeout(Some(config.request_timeout)).build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.contact_points)
        .connection_timeout(Duration::from_secs(5))
        .default_execution_profile_handle(profile.into_handle());
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder.user(user, password);
    }
    if let Some(ks) = keyspace {
        builder = builder.use_keyspace(ks, false);
    }
    if let Some(tls) = &config.tls {
        builder = builder.tls_context(Some(tls.client_config()?));
    }
    builder
        .build()
        .await
        .map_err(|source| Error::Connect { contact_points: config.contact_points.clone(), source: Box::new(source) })
}

#[derive(Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

struct Inner {
    session: Session,
    q: Statements,
    lc: lifecycle::Statements,
    up: uploads::Statements,
    me: member_events::Statements,
    /// The `(room, bucket)` rows of `room_buckets` this process wrote (or
    /// found written): the index is written once per bucket, not once per
    /// message. Rows there are never deleted, so a stale entry cannot hide
    /// a missing row; at [`KNOWN_ROOMS`] it starts over.
    buckets: Mutex<HashMap<String, HashSet<i64>>>,
    /// [`CqlConfig::derived_counts`].
    derived_counts: bool,
}

/// Most rooms [`Inner::buckets`] remembers the buckets of.
const KNOWN_ROOMS: usize = 100_000;

/// Every statement, prepared once.
struct Statements {
    ping: PreparedStatement,
    create_user: PreparedStatement,
    user: PreparedStatement,
    users_in: PreparedStatement,
    set_profile: PreparedStatement,
    profiles_in: PreparedStatement,
    set_password: PreparedStatement,
    token_floor: PreparedStatement,
    set_token_floor: PreparedStatement,
    revoke_token: PreparedStatement,
    is_revoked: PreparedStatement,
    room: PreparedStatement,
    newest_message: PreparedStatement,
    room_members: PreparedStatement,
    set_room_members: PreparedStatement,
    count_members: PreparedStatement,
    is_member: PreparedStatement,
    members: PreparedStatement,
    user_rooms: PreparedStatement,
    count_user_rooms: PreparedStatement,
    user_room_names: PreparedStatement,
    read_marker: PreparedStatement,
    notify_level: PreparedStatement,
    buckets_down: PreparedStatement,
    buckets_up: PreparedStatement,
    page_down: PreparedStatement,
    page_up: PreparedStatement,
    cid: PreparedStatement,
    insert_message: PreparedStatement,
    insert_bucket: PreparedStatement,
    insert_cid: PreparedStatement,
    set_last_seq: PreparedStatement,
    set_last_seq_count: PreparedStatement,
    insert_room: PreparedStatement,
    insert_member: PreparedStatement,
    insert_user_room: PreparedStatement,
    delete_member: PreparedStatement,
    delete_user_room: PreparedStatement,
    set_read: PreparedStatement,
    set_checkpoint: PreparedStatement,
    checkpoints: PreparedStatement,
    meta: PreparedStatement,
    set_meta: PreparedStatement,
    room_settings: PreparedStatement,
    member: PreparedStatement,
    members_page: PreparedStatement,
    is_invited: PreparedStatement,
    is_banned: PreparedStatement,
    invitations: PreparedStatement,
    public_page: PreparedStatement,
    set_settings: PreparedStatement,
    insert_public: PreparedStatement,
    delete_public: PreparedStatement,
    set_role: PreparedStatement,
    set_mute: PreparedStatement,
    insert_invite: PreparedStatement,
    insert_user_invite: PreparedStatement,
    delete_invite: PreparedStatement,
    delete_user_invite: PreparedStatement,
    insert_ban: PreparedStatement,
    delete_ban: PreparedStatement,
    /// Contacts, blocks, deleted accounts, succession and erasure.
    contacts: contacts::Statements,
    set_room_count: PreparedStatement,
    ordinal_down: PreparedStatement,
    cids_down: PreparedStatement,
    insert_tally: PreparedStatement,
    tally_at: PreparedStatement,
    delete_tallies: PreparedStatement,
    set_read_tally: PreparedStatement,
    set_notify: PreparedStatement,
}

async fn prepare(session: &Session, cql: &str) -> Result<PreparedStatement> {
    let mut p = session
        .prepare(cql)
        .await
        .map_err(|source| Error::Prepare { cql: cql.to_owned(), source: Box::new(source) })?;
    p.set_consistency(Consistency::LocalQuorum);
    p.set_is_idempotent(!cql.contains("IF NOT EXISTS"));
    Ok(p)
}

impl Statements {
    async fn prepare(s: &Session) -> Result<Statements> {
        Ok(Statements {
            ping: prepare(s, "SELECT release_version FROM system.local WHERE key = 'local'").await?,
            create_user: prepare(s, "INSERT INTO users (name, password_hash, created_ms, bot) VALUES (?, ?, ?, ?) IF NOT EXISTS").await?,
            user: prepare(s, "SELECT password_hash, created_ms, deleted_ms, bot FROM users WHERE name = ?").await?,
            users_in: prepare(s, "SELECT name, deleted_ms, bot FROM users WHERE name IN ?").await?,
            set_profile: prepare(s, "INSERT INTO profiles (name, display_name, avatar) VALUES (?, ?, ?)").await?,
            profiles_in: prepare(s, "SELECT name, display_name, avatar FROM profiles WHERE name IN ?").await?,
            set_password: prepare(s, "UPDATE users SET password_hash = ? WHERE name = ?").await?,
            token_floor: prepare(s, "SELECT valid_after_ms FROM token_floors WHERE name = ?").await?,
            // The timestamp is the floor itself, so a floor never moves back.
            set_token_floor: prepare(s, "INSERT INTO token_floors (name, valid_after_ms) VALUES (?, ?) USING TIMESTAMP ?").await?,
            revoke_token: prepare(s, "INSERT INTO revoked_tokens (jti) VALUES (?) USING TTL ?").await?,
            is_revoked: prepare(s, "SELECT jti FROM revoked_tokens WHERE jti = ?").await?,
            room: prepare(s, "SELECT last_seq, messages FROM rooms WHERE room = ?").await?,
            newest_message: prepare(s, "SELECT seq, n FROM messages WHERE room = ? AND bucket = ? LIMIT 1").await?,
            room_members: prepare(s, "SELECT members, WRITETIME(members) FROM rooms WHERE room = ?").await?,
            set_room_members: prepare(s, "UPDATE rooms USING TIMESTAMP ? SET members = ? WHERE room = ?").await?,
            count_members: prepare(s, "SELECT COUNT(*) FROM members WHERE room = ?").await?,
            is_member: prepare(s, "SELECT username FROM members WHERE room = ? AND username = ?").await?,
            members: prepare(s, "SELECT username FROM members WHERE room = ?").await?,
            user_rooms: prepare(
                s,
                "SELECT room, read_seq, read_n, read_own, read_mentions, notify FROM user_rooms WHERE username = ?",
            )
            .await?,
            count_user_rooms: prepare(s, "SELECT COUNT(*) FROM user_rooms WHERE username = ?").await?,
            user_room_names: prepare(s, "SELECT room FROM user_rooms WHERE username = ?").await?,
            read_marker: prepare(s, "SELECT read_seq FROM user_rooms WHERE username = ? AND room = ?").await?,
            notify_level: prepare(s, "SELECT notify FROM user_rooms WHERE username = ? AND room = ?").await?,
            buckets_down: prepare(s, "SELECT bucket FROM room_buckets WHERE room = ? AND bucket <= ? LIMIT 64").await?,
            buckets_up: prepare(s, "SELECT bucket FROM room_buckets WHERE room = ? AND bucket >= ? ORDER BY bucket ASC LIMIT 64").await?,
            page_down: prepare(
                s,
                "SELECT seq, msg_id, sender, body, ts, cid, reply_to, edited_ts, deleted, mentions, attachments FROM messages WHERE room = ? AND bucket = ? AND seq < ? LIMIT ?",
            )
            .await?,
            page_up: prepare(
                s,
                "SELECT seq, msg_id, sender, body, ts, cid, reply_to, edited_ts, deleted, mentions, attachments FROM messages WHERE room = ? AND bucket = ? AND seq > ? ORDER BY seq ASC LIMIT ?",
            )
            .await?,
            cid: prepare(s, "SELECT seq, msg_id, ts FROM cids WHERE room = ? AND cid = ?").await?,
            insert_message: prepare(
                s,
                "INSERT INTO messages (room, bucket, seq, msg_id, sender, body, ts, cid, reply_to, n, mentions, attachments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ? AND TTL ?",
            )
            .await?,
            insert_bucket: prepare(s, "INSERT INTO room_buckets (room, bucket) VALUES (?, ?) USING TIMESTAMP ?").await?,
            insert_cid: prepare(s, "INSERT INTO cids (room, cid, seq, msg_id, ts) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?").await?,
            set_last_seq: prepare(s, "UPDATE rooms USING TIMESTAMP ? SET last_seq = ? WHERE room = ?").await?,
            set_last_seq_count: prepare(s, "UPDATE rooms USING TIMESTAMP ? SET last_seq = ?, messages = ? WHERE room = ?")
                .await?,
            insert_room: prepare(s, "INSERT INTO rooms (room) VALUES (?) USING TIMESTAMP ?").await?,
            insert_member: prepare(s, "INSERT INTO members (room, username, joined_at) VALUES (?, ?, ?) USING TIMESTAMP ?").await?,
            insert_user_room: prepare(s, "INSERT INTO user_rooms (username, room) VALUES (?, ?) USING TIMESTAMP ?").await?,
            delete_member: prepare(s, "DELETE FROM members USING TIMESTAMP ? WHERE room = ? AND username = ?").await?,
            delete_user_room: prepare(s, "DELETE FROM user_rooms USING TIMESTAMP ? WHERE username = ? AND room = ?").await?,
            set_read: prepare(s, "UPDATE user_rooms USING TIMESTAMP ? SET read_seq = ? WHERE username = ? AND room = ?").await?,
            set_checkpoint: prepare(
                s,
                "UPDATE checkpoints USING TIMESTAMP ? SET next_offset = ? WHERE ingress_partition = ?",
            )
            .await?,
            checkpoints: prepare(s, "SELECT ingress_partition, next_offset FROM checkpoints").await?,
            meta: prepare(s, "SELECT number FROM meta WHERE name = ?").await?,
            set_meta: prepare(s, "INSERT INTO meta (name, number) VALUES (?, ?) IF NOT EXISTS").await?,
            room_settings: prepare(s, "SELECT visibility, name, topic, owner, retention_days FROM room_settings WHERE room = ?").await?,
            member: prepare(s, "SELECT role, muted_until FROM members WHERE room = ? AND username = ?").await?,
            members_page: prepare(s, "SELECT username, role FROM members WHERE room = ? AND username > ? LIMIT ?").await?,
            is_invited: prepare(s, "SELECT username FROM room_invites WHERE room = ? AND username = ?").await?,
            is_banned: prepare(s, "SELECT username FROM room_bans WHERE room = ? AND username = ?").await?,
            invitations: prepare(s, "SELECT room FROM user_invites WHERE username = ?").await?,
            public_page: prepare(s, "SELECT room, name, topic FROM public_rooms WHERE shard = ? AND room > ? LIMIT ?").await?,
            set_settings: prepare(
                s,
                "UPDATE room_settings USING TIMESTAMP ? SET visibility = ?, name = ?, topic = ?, owner = ?, retention_days = ? WHERE room = ?",
            )
            .await?,
            insert_public: prepare(s, "INSERT INTO public_rooms (shard, room, name, topic) VALUES (?, ?, ?, ?) USING TIMESTAMP ?").await?,
            delete_public: prepare(s, "DELETE FROM public_rooms USING TIMESTAMP ? WHERE shard = ? AND room = ?").await?,
            set_role: prepare(s, "UPDATE members USING TIMESTAMP ? SET role = ? WHERE room = ? AND username = ?").await?,
            set_mute: prepare(s, "UPDATE members USING TIMESTAMP ? SET muted_until = ? WHERE room = ? AND username = ?").await?,
            insert_invite: prepare(s, "INSERT INTO room_invites (room, username) VALUES (?, ?) USING TIMESTAMP ?").await?,
            insert_user_invite: prepare(s, "INSERT INTO user_invites (username, room) VALUES (?, ?) USING TIMESTAMP ?").await?,
            delete_invite: prepare(s, "DELETE FROM room_invites USING TIMESTAMP ? WHERE room = ? AND username = ?").await?,
            delete_user_invite: prepare(s, "DELETE FROM user_invites USING TIMESTAMP ? WHERE username = ? AND room = ?").await?,
            insert_ban: prepare(s, "INSERT INTO room_bans (room, username) VALUES (?, ?) USING TIMESTAMP ?").await?,
            delete_ban: prepare(s, "DELETE FROM room_bans USING TIMESTAMP ? WHERE room = ? AND username = ?").await?,
            contacts: Box::pin(contacts::Statements::prepare(s)).await?,
            set_room_count: prepare(s, "UPDATE rooms USING TIMESTAMP ? SET messages = ? WHERE room = ?").await?,
            ordinal_down: prepare(s, "SELECT seq, n FROM messages WHERE room = ? AND bucket = ? AND seq <= ? LIMIT 1").await?,
            cids_down: prepare(s, "SELECT seq, sender, cid, msg_id, ts FROM messages WHERE room = ? AND bucket = ? LIMIT ?")
                .await?,
            insert_tally: prepare(
                s,
                "INSERT INTO user_tallies (room, username, seq, own, mentions) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            tally_at: prepare(s, "SELECT own, mentions FROM user_tallies WHERE room = ? AND username = ? AND seq <= ? LIMIT 1").await?,
            delete_tallies: prepare(s, "DELETE FROM user_tallies USING TIMESTAMP ? WHERE room = ? AND username = ?").await?,
            set_read_tally: prepare(
                s,
                "UPDATE user_rooms USING TIMESTAMP ? SET read_n = ?, read_own = ?, read_mentions = ? WHERE username = ? AND room = ?",
            )
            .await?,
            set_notify: prepare(s, "UPDATE user_rooms USING TIMESTAMP ? SET notify = ? WHERE username = ? AND room = ?").await?,
        })
    }
}

impl ScyllaStore {
    /// Creates the keyspace (with `config.replication`) and the tables, and
    /// records the schema version. Idempotent.
    pub async fn migrate(config: &CqlConfig) -> Result<()> {
        if !is_identifier(&config.keyspace) {
            return Err(Error::KeyspaceName(config.keyspace.clone()));
        }
        let s = session(config, None).await?;
        // Both parts are validated values, never text from the configuration.
        let create = format!(
            "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {}",
            config.keyspace,
            config.replication.cql()
        );
        s.query_unpaged(create.as_str(), ()).await.map_err(cql_error(&create))?;
        s.await_schema_agreement().await.map_err(|e| Error::SchemaAgreement(Box::new(e)))?;
        use_keyspace(&s, &config.keyspace).await?;
        let schema = strip_comments(SCHEMA);
        for statement in schema.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            s.query_unpaged(statement, ()).await.map_err(cql_error(statement))?;
        }
        for (table, column, cql_type) in UPGRADES {
            let select = "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? AND column_name = ?";
            let found = s
                .query_unpaged(select, (config.keyspace.as_str(), *table, *column))
                .await
                .map_err(cql_error(select))?
                .into_rows_result()
                .map_err(result_error(select))?
                .rows_num();
            if found == 0 {
                let alter = format!("ALTER TABLE {table} ADD {column} {cql_type}");
                s.query_unpaged(alter.as_str(), ()).await.map_err(cql_error(&alter))?;
            }
        }
        s.await_schema_agreement().await.map_err(|e| Error::SchemaAgreement(Box::new(e)))?;
        backfill_member_counts(&s).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let record = "INSERT INTO schema_migrations (version, applied_ms) VALUES (?, ?)";
        s.query_unpaged(record, (SCHEMA_VERSION, now)).await.map_err(cql_error(record))?;
        Ok(())
    }

    /// Drops the keyspace and everything in it (tests and tear-downs).
    pub async fn drop_keyspace(config: &CqlConfig) -> Result<()> {
        let s = session(config, None).await?;
        let drop = format!("DROP KEYSPACE IF EXISTS {}", quote(&config.keyspace));
        s.query_unpaged(drop.as_str(), ()).await.map_err(cql_error(&drop))?;
        Ok(())
    }

    /// The statements coordinators ran on each table of the keyspace so
    /// far, as `table -> (reads, writes)`, from Cassandra's virtual tables
    /// (`system_views.coordinator_{read,write}_latency`, Cassandra 4.1 and
    /// later; per node: the node of the first contact point). Benchmarks
    /// divide the difference over a run by the messages it sent.
    pub async fn statement_counts(config: &CqlConfig) -> Result<BTreeMap<String, (u64, u64)>> {
        let s = session(config, None).await?;
        let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (view, write) in
            [("system_views.coordinator_read_latency", false), ("system_views.coordinator_write_latency", true)]
        {
            let select = format!("SELECT keyspace_name, table_name, count FROM {view}");
            let result = s.query_unpaged(select.as_str(), ()).await.map_err(cql_error(&select))?;
            let rows = result.into_rows_result().map_err(result_error(&select))?;
            for row in rows.rows::<(String, String, i64)>().map_err(result_error(&select))? {
                let (keyspace, table, n) = row.map_err(result_error(&select))?;
                if keyspace == config.keyspace {
                    let entry = counts.entry(table).or_default();
                    *(if write { &mut entry.1 } else { &mut entry.0 }) += n.max(0) as u64;
                }
            }
        }
        Ok(counts)
    }

    /// Connects to a migrated keyspace; a missing schema is an error that
    /// says to run `confab migrate`.
    pub async fn connect(config: &CqlConfig) -> Result<ScyllaStore> {
        let s = session(config, None).await?;
        let select = format!(
            "SELECT version FROM {}.schema_migrations WHERE version = {SCHEMA_VERSION}",
            quote(&config.keyspace)
        );
        let version: Option<(i32,)> = s
            .query_unpaged(select.as_str(), ())
            .await
            .map_err(|source| Error::NoSchema { keyspace: config.keyspace.clone(), source: Box::new(source) })?
            .into_rows_result()
            .map_err(result_error(&select))?
            .maybe_first_row()
            .map_err(result_error(&select))?;
        if version.is_none() {
            return Err(Error::SchemaVersion { keyspace: config.keyspace.clone(), version: SCHEMA_VERSION });
        }
        use_keyspace(&s, &config.keyspace).await?;
        // Boxed: the future of ~100 prepares is large, and every future
        // that connects (a test's whole cluster start-up) would carry it.
        let q = Box::pin(Statements::prepare(&s)).await?;
        let lc = Box::pin(lifecycle::Statements::prepare(&s)).await?;
        let up = Box::pin(uploads::Statements::prepare(&s)).await?;
        let me = Box::pin(member_events::Statements::prepare(&s)).await?;
        let derived_counts = config.derived_counts;
        Ok(ScyllaStore {
            inner: Arc::new(Inner { session: s, q, lc, up, me, buckets: Mutex::default(), derived_counts }),
        })
    }

    async fn rows<T>(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<T>>
    where
        T: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let cql = statement.get_statement();
        let result = self.inner.session.execute_unpaged(statement, values).await.map_err(cql_error(cql))?;
        let rows = result.into_rows_result().map_err(result_error(cql))?;
        rows.rows::<T>().map_err(result_error(cql))?.collect::<Result<Vec<T>, _>>().map_err(result_error(cql))
    }

    async fn write(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<()> {
        self.inner
            .session
            .execute_unpaged(statement, values)
            .await
            .map(|_| ())
            .map_err(cql_error(statement.get_statement()))
    }

    /// `metas`: the batch's [`Write::MessageMeta`]s by `(room, seq)`; a
    /// message row carries its ordinal and TTL.
    async fn apply_one(&self, w: &Write, metas: &Metas<'_>) -> Result<()> {
        let q = &self.inner.q;
        match w {
            Write::Message(m) => {
                let seq = m.seq as i64;
                let b = bucket(m.seq);
                let room = m.room.as_str();
                let (n, expires_ms) = metas.get(&(room, m.seq)).copied().unwrap_or((0, None));
                let n = (n > 0).then_some(n as i64);
                let mentions = (!m.mentions.is_empty()).then_some(&m.mentions);
                let attachments = attachments_json(&m.attachments)?;
                self.write(
                    &q.insert_message,
                    (
                        room,
                        b,
                        seq,
                        m.msg_id.as_str(),
                        m.from.as_str(),
                        m.text.as_str(),
                        m.ts as i64,
                        m.cid.as_str(),
                        m.reply_to.map(|r| r as i64),
                        n,
                        mentions,
                        attachments,
                        seq,
                        ttl_secs(expires_ms),
                    ),
                )
                .await?;
            }
            // Only for rooms the dispatcher does not hold the cids of
            // (`indexes_cids`); the message row above carries every cid.
            Write::CidIndex { room, key, hit } => {
                let seq = hit.seq as i64;
                self.write(&q.insert_cid, (room.as_str(), key.as_str(), seq, hit.msg_id.as_str(), hit.ts as i64, seq))
                    .await?;
            }
            // The membership row goes last: the dispatcher decides by it, so
            // once it says yes (or no) the rest of the join (or leave) is stored.
            Write::Join { room, user, at, members } => {
                let at = *at as i64;
                tokio::try_join!(
                    self.write(&q.insert_room, (room.as_str(), at)),
                    self.write(&q.set_room_members, (at, *members as i64, room.as_str())),
                    self.write(&q.insert_user_room, (user.as_str(), room.as_str(), at)),
                )?;
                self.write(&q.insert_member, (room.as_str(), user.as_str(), at, at)).await?;
            }
            Write::Leave { room, user, at, members } => {
                let at = *at as i64;
                self.write(&q.set_room_members, (at, *members as i64, room.as_str())).await?;
                // A DM's first member's tallies stay: the second one's own
                // count is derived from them (`tally`). A DM is left only by
                // an account's erasure, and takes no message after it.
                if dm_members(room).is_none_or(|(first, _)| first != user) {
                    self.write(&q.delete_tallies, (at, room.as_str(), user.as_str())).await?;
                }
                self.write(&q.delete_user_room, (at, user.as_str(), room.as_str())).await?;
                self.write(&q.delete_member, (at, room.as_str(), user.as_str())).await?;
            }
            Write::Read { room, user, seq, at } => {
                self.write(&q.set_read, (*at as i64, *seq as i64, user.as_str(), room.as_str())).await?;
            }
            Write::Settings { room, settings, at } => {
                let at = *at as i64;
                let shard = public_shard(room);
                let RoomSettings { visibility, name, topic, owner, retention_days } = settings;
                let listed = async {
                    match visibility {
                        Visibility::Public => {
                            self.write(&q.insert_public, (shard, room.as_str(), name.as_str(), topic.as_str(), at))
                                .await
                        }
                        Visibility::Private => self.write(&q.delete_public, (at, shard, room.as_str())).await,
                    }
                };
                let retention = retention_days.map(|d| d.min(i32::MAX as u32) as i32);
                let values = (
                    at,
                    visibility.as_str(),
                    name.as_str(),
                    topic.as_str(),
                    owner.as_deref(),
                    retention,
                    room.as_str(),
                );
                tokio::try_join!(self.write(&q.set_settings, values), listed)?;
            }
            Write::Role { room, user, role, at } => {
                let role = (*role != Role::Member).then_some(role.as_str());
                self.write(&q.set_role, (*at as i64, role, room.as_str(), user.as_str())).await?;
            }
            Write::Mute { room, user, until, at } => {
                let until = (*until > 0).then_some(*until as i64);
                self.write(&q.set_mute, (*at as i64, until, room.as_str(), user.as_str())).await?;
            }
            Write::Invite { room, user, invited, at } => {
                let at = *at as i64;
                if *invited {
                    tokio::try_join!(
                        self.write(&q.insert_user_invite, (user.as_str(), room.as_str(), at)),
                        self.write(&q.insert_invite, (room.as_str(), user.as_str(), at)),
                    )?;
                } else {
                    tokio::try_join!(
                        self.write(&q.delete_user_invite, (at, user.as_str(), room.as_str())),
                        self.write(&q.delete_invite, (at, room.as_str(), user.as_str())),
                    )?;
                }
            }
            Write::Ban { room, user, banned, at } => {
                let at = *at as i64;
                if *banned {
                    self.write(&q.insert_ban, (room.as_str(), user.as_str(), at)).await?;
                } else {
                    self.write(&q.delete_ban, (at, room.as_str(), user.as_str())).await?;
                }
            }
            Write::Erase { room, user, at } => self.erase(room, user, *at).await?,
            Write::Checkpoint { partition, next_offset } => {
                let next = *next_offset as i64;
                self.write(&q.set_checkpoint, (next, next, *partition as i32)).await?;
            }
            // The ordinal and TTL went with the message row; the room's
            // count, with its `last_seq`, once per batch (`room_tops`).
            Write::MessageMeta { .. } => {}
            Write::Tally { room, user, seq, tally } => {
                let seq = *seq as i64;
                let values = (room.as_str(), user.as_str(), seq, tally.own as i64, tally.mentions as i64, seq);
                self.write(&q.insert_tally, values).await?;
            }
            Write::ReadTally { room, user, n, tally, at } => {
                let values =
                    (*at as i64, *n as i64, tally.own as i64, tally.mentions as i64, user.as_str(), room.as_str());
                self.write(&q.set_read_tally, values).await?;
            }
            Write::Notify { room, user, level, at } => {
                let level = (*level != NotifyLevel::All).then_some(level.as_str());
                self.write(&q.set_notify, (*at as i64, level, user.as_str(), room.as_str())).await?;
            }
            Write::Edit { .. } | Write::Delete { .. } | Write::React { .. } => self.apply_change(w).await?,
            Write::Attach { seq, uploads, .. } => self.attach_(*seq, uploads).await?,
            Write::DropUploads { ids, .. } => self.drop_uploads_(ids).await?,
            Write::MemberEvent { room, at, event } => self.put_member_event(room, *at, event).await?,
        }
        Ok(())
    }
}

impl ScyllaStore {
    /// A room's `last_seq` and message count (`None`: no `rooms` row, no
    /// room). The row is not written with every batch (`apply` says when it
    /// is), so each is the larger of the row's and the newest message's in
    /// the bucket the row's `last_seq` is in: a message row carries its seq
    /// and ordinal `n`, and a later bucket would have moved the row.
    async fn head(&self, room: &str) -> Result<Option<(u64, u64)>> {
        let q = &self.inner.q;
        let rows: Vec<(Option<i64>, Option<i64>)> = self.rows(&q.room, (room,)).await?;
        let Some((last_seq, messages)) = rows.into_iter().next() else { return Ok(None) };
        let (last_seq, messages) = (last_seq.unwrap_or(0).max(0) as u64, messages.unwrap_or(0).max(0) as u64);
        let newest: Vec<(i64, Option<i64>)> = self.rows(&q.newest_message, (room, bucket(last_seq))).await?;
        let (seq, n) = newest.first().map_or((0, 0), |(seq, n)| ((*seq).max(0) as u64, n.unwrap_or(0).max(0) as u64));
        Ok(Some((last_seq.max(seq), messages.max(n))))
    }

    /// `user`'s newest tally row at or before `seq`, as written.
    async fn stored_tally(&self, room: &str, user: &str, seq: u64) -> Result<Tally> {
        let at = seq.min(u64::MAX >> 1) as i64;
        let rows: Vec<(Option<i64>, Option<i64>)> = self.rows(&self.inner.q.tally_at, (room, user, at)).await?;
        let (own, mentions) = rows.first().copied().unwrap_or((None, None));
        Ok(Tally { own: own.unwrap_or(0).max(0) as u64, mentions: mentions.unwrap_or(0).max(0) as u64 })
    }

    /// How many messages the room had as of `seq`: its count at or past its
    /// last seq (`head`, which outlives expired messages), else the
    /// ordinal of its newest message at or before `seq`.
    async fn count_at(&self, room: &str, seq: u64) -> Result<u64> {
        match self.head(room).await? {
            Some((last, count)) if seq >= last => Ok(count),
            _ => Ok(self.ordinal_at(room, seq).await?.map_or(0, |(_, n)| n)),
        }
    }

    /// One `rooms` write for a batch's newest message of a room: its
    /// `last_seq` and count (`messages`), at the newest seq's timestamp, as
    /// the last of one write per message would have left them.
    async fn write_top(&self, room: &str, top: RoomTop) -> Result<()> {
        let q = &self.inner.q;
        match top {
            RoomTop { last_seq: Some(seq), count: Some((at, n)), .. } if seq == at => {
                self.write(&q.set_last_seq_count, (seq as i64, seq as i64, n as i64, room)).await
            }
            RoomTop { last_seq, count, .. } => {
                let last = async {
                    match last_seq {
                        Some(seq) => self.write(&q.set_last_seq, (seq as i64, seq as i64, room)).await,
                        None => Ok(()),
                    }
                };
                let count = async {
                    match count {
                        Some((seq, n)) => self.write(&q.set_room_count, (seq as i64, n as i64, room)).await,
                        None => Ok(()),
                    }
                };
                tokio::try_join!(last, count).map(|_| ())
            }
        }
    }

    /// One page of the room's message buckets from `top` down, newest
    /// first, and the `top` of the next page (`None`: no more).
    async fn buckets_down(&self, room: &str, top: i64) -> Result<(Vec<i64>, Option<i64>)> {
        let page: Vec<(i64,)> = self.rows(&self.inner.q.buckets_down, (room, top)).await?;
        let next = page.last().map(|(b,)| b - 1).filter(|b| *b >= 0);
        Ok((page.into_iter().map(|(b,)| b).collect(), next))
    }

    /// The `(room, bucket, first seq)` of the batch's messages whose bucket
    /// this process has not indexed yet.
    fn new_buckets<'b>(&self, batch: &'b WriteBatch) -> Vec<(&'b str, i64, i64)> {
        let known = self.inner.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut first: HashMap<(&str, i64), i64> = HashMap::new();
        for w in batch.iter() {
            if let Write::Message(m) = w {
                let key = (m.room.as_str(), bucket(m.seq));
                if !known.get(key.0).is_some_and(|b| b.contains(&key.1)) {
                    let seq = first.entry(key).or_insert(m.seq as i64);
                    *seq = (*seq).min(m.seq as i64);
                }
            }
        }
        first.into_iter().map(|((room, b), seq)| (room, b, seq)).collect()
    }

    /// Remembers `buckets` as written.
    fn known_buckets(&self, buckets: &[(&str, i64, i64)]) {
        let mut known = self.inner.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() + buckets.len() > KNOWN_ROOMS {
            known.clear();
        }
        for &(room, b, _) in buckets {
            known.entry(room.to_owned()).or_default().insert(b);
        }
    }
}

/// Whether `w` is a DM's second member's tally at their own message
/// (`senders`: the batch's messages' senders by `(room, seq)`), which
/// [`Store::tally`] derives on CQL.
fn derived_tally(w: &Write, senders: &HashMap<(&str, u64), &str>) -> bool {
    let Write::Tally { room, user, seq, .. } = w else { return false };
    dm_members(room).is_some_and(|(_, second)| second == user)
        && senders.get(&(room.as_str(), *seq)).is_some_and(|from| from == user)
}

/// A batch's [`Write::MessageMeta`]s: `(room, seq)` → `(n, expires_ms)`.
type Metas<'b> = HashMap<(&'b str, u64), (u64, Option<u64>)>;

fn metas(batch: &WriteBatch) -> Metas<'_> {
    batch
        .iter()
        .filter_map(|w| match w {
            Write::MessageMeta { room, seq, n, expires_ms } => Some(((room.as_str(), *seq), (*n, *expires_ms))),
            _ => None,
        })
        .collect()
}

/// A room's newest message in a batch and its newest count.
#[derive(Debug, Default, PartialEq)]
struct RoomTop {
    last_seq: Option<u64>,
    /// `(seq, n)`: the count `n` as of the message at `seq`.
    count: Option<(u64, u64)>,
    /// A message of the room expires or has no ordinal: its row may not
    /// give the seq and count back, so the `rooms` row must (`head`).
    pinned: bool,
}

/// Per room, the batch's newest message and count; `metas` are the batch's
/// [`Write::MessageMeta`]s by `(room, seq)`, as `apply` gathers them.
fn room_tops<'b>(batch: &'b WriteBatch, metas: &Metas) -> HashMap<&'b str, RoomTop> {
    let mut tops: HashMap<&str, RoomTop> = HashMap::new();
    for w in batch.iter() {
        match w {
            Write::Message(m) => {
                let top = tops.entry(m.room.as_str()).or_default();
                top.last_seq = top.last_seq.max(Some(m.seq));
                top.pinned |= !matches!(metas.get(&(m.room.as_str(), m.seq)), Some((1.., None)));
            }
            Write::MessageMeta { room, seq, n, .. } => {
                let top = tops.entry(room.as_str()).or_default();
                if top.count.is_none_or(|(at, _)| at < *seq) {
                    top.count = Some((*seq, *n));
                }
            }
            _ => {}
        }
    }
    tops
}

/// The TTL of a message that expires at `expires_ms` (unix ms), in whole
/// seconds, at least 1; 0 (no TTL) for one kept forever. From the absolute
/// expiry, so that a retried write expires when the first attempt would.
fn ttl_secs(expires_ms: Option<u64>) -> i32 {
    let Some(expires_ms) = expires_ms else { return 0 };
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    expires_ms.saturating_sub(now).div_ceil(1000).clamp(1, i32::MAX as u64) as i32
}

/// The `public_rooms` partition of a room: FNV-1a of its id (stable
/// across processes and versions, unlike std's hasher).
fn public_shard(room: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in room.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % PUBLIC_SHARDS as u32) as i32
}

/// Schema version 7: stores the member count of every room that has none
/// (rooms from before the count was kept), counted once. Written at
/// timestamp 0, so any count a dispatcher writes (at a log position) wins,
/// and running it again changes nothing.
async fn backfill_member_counts(s: &Session) -> Result<()> {
    use futures_util::TryStreamExt;
    let select = "SELECT room, members FROM rooms";
    let count = "SELECT COUNT(*) FROM members WHERE room = ?";
    let set = "UPDATE rooms USING TIMESTAMP 0 SET members = ? WHERE room = ?";
    let (count, set) = tokio::try_join!(prepare(s, count), prepare(s, set))?;
    let mut rows = s
        .query_iter(select, ())
        .await
        .map_err(result_error(select))?
        .rows_stream::<(String, Option<i64>)>()
        .map_err(result_error(select))?;
    while let Some((room, members)) = rows.try_next().await.map_err(result_error(select))? {
        if members.is_some() {
            continue;
        }
        let n: (i64,) = s
            .execute_unpaged(&count, (room.as_str(),))
            .await
            .map_err(cql_error(count.get_statement()))?
            .into_rows_result()
            .map_err(result_error(count.get_statement()))?
            .single_row()
            .map_err(result_error(count.get_statement()))?;
        s.execute_unpaged(&set, (n.0, room.as_str())).await.map_err(cql_error(set.get_statement()))?;
    }
    Ok(())
}

fn strip_comments(s: &str) -> String {
    s.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n").trim().to_owned()
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// A `messages` row. The columns a message is sent with are `Option` only
/// because a message in a room with retention expires by its TTL while the
/// cells a later edit, deletion or reaction wrote (without one) outlive it:
/// such a row is a message gone, and [`message`] drops it.
type MessageRow = (
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<bool>,
    Option<Vec<String>>,
    Option<String>,
);

/// A message's attachments as the `attachments` column holds them.
fn attachments_json(attachments: &[confab_protocol::Attachment]) -> Result<Option<String>> {
    if attachments.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(attachments)
        .map(Some)
        .map_err(|source| Error::Json { what: "encoding a message's attachments".into(), source })
}

/// The `attachments` column read back; a cell that does not decode reads
/// as none (it is written only by [`attachments_json`]).
pub(super) fn attachments_of(cell: Option<String>) -> Vec<confab_protocol::Attachment> {
    cell.and_then(|json| serde_json::from_str(&json).ok()).unwrap_or_default()
}

fn message(
    room: &str,
    (seq, msg_id, from, text, ts, cid, reply_to, edited_ts, deleted, mentions, attachments): MessageRow,
) -> Option<Message> {
    Some(Message {
        room: room.to_owned(),
        seq: seq as u64,
        msg_id: msg_id?,
        from: from?,
        text: text.unwrap_or_default(),
        ts: ts? as u64,
        cid: cid.unwrap_or_default(),
        reply_to: reply_to.map(|r| r as u64),
        edited_ts: edited_ts.map(|t| t as u64),
        deleted: deleted.unwrap_or(false),
        reactions: Vec::new(),
        mentions: mentions.unwrap_or_default(),
        attachments: attachments_of(attachments),
    })
}

#[async_trait]
impl Store for ScyllaStore {
    async fn ping(&self) -> Result<()> {
        self.rows::<(String,)>(&self.inner.q.ping, ()).await.map(|_| ())
    }

    async fn create_user(&self, user: &UserRecord) -> Result<bool> {
        let q = &self.inner.q;
        let result = self
            .inner
            .session
            .execute_unpaged(
                &q.create_user,
                (user.name.as_str(), user.password_hash.as_str(), user.created_ms as i64, user.bot),
            )
            .await
            .map_err(cql_error(q.create_user.get_statement()))?;
        let cql = q.create_user.get_statement();
        let rows = result.into_rows_result().map_err(result_error(cql))?;
        // The first column of an LWT result is `[applied]`.
        let applied = rows
            .rows::<scylla::value::Row>()
            .map_err(result_error(cql))?
            .next()
            .transpose()
            .map_err(result_error(cql))?
            .and_then(|row| row.columns.into_iter().next().flatten())
            .and_then(|v| v.as_boolean());
        applied.ok_or_else(|| Error::Corrupt("no [applied] column in an LWT result".into()))
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        let rows: Vec<(String, i64, Option<i64>, Option<bool>)> = self.rows(&self.inner.q.user, (name,)).await?;
        let live = rows.into_iter().filter(|(_, _, deleted, _)| deleted.is_none());
        Ok(live.into_iter().next().map(|(password_hash, created_ms, _, bot)| UserRecord {
            name: name.to_owned(),
            password_hash,
            created_ms: created_ms as u64,
            bot: bot.unwrap_or(false),
        }))
    }

    async fn set_profile(&self, profile: &Profile) -> Result<bool> {
        if self.user(&profile.user).await?.is_none() {
            return Ok(false);
        }
        let Profile { user, display_name, avatar, .. } = profile;
        self.write(&self.inner.q.set_profile, (user.as_str(), display_name.as_str(), avatar.as_str())).await?;
        Ok(true)
    }

    async fn profiles(&self, users: &[String]) -> Result<Vec<Profile>> {
        let mut seen = std::collections::HashSet::new();
        let users: Vec<&str> = users.iter().map(String::as_str).filter(|u| seen.insert(*u)).collect();
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let q = &self.inner.q;
        let (accounts, profiles) = tokio::try_join!(
            self.rows::<(String, Option<i64>, Option<bool>)>(&q.users_in, (&users,)),
            self.rows::<(String, Option<String>, Option<String>)>(&q.profiles_in, (&users,)),
        )?;
        let accounts: std::collections::HashMap<String, bool> = accounts
            .into_iter()
            .filter(|(_, deleted, _)| deleted.is_none())
            .map(|(u, _, bot)| (u, bot.unwrap_or(false)))
            .collect();
        let mut profiles: std::collections::HashMap<String, (String, String)> =
            profiles.into_iter().map(|(u, d, a)| (u, (d.unwrap_or_default(), a.unwrap_or_default()))).collect();
        Ok(users
            .into_iter()
            .filter_map(|u| {
                let bot = *accounts.get(u)?;
                let (display_name, avatar) = profiles.remove(u).unwrap_or_default();
                Some(Profile { user: u.to_owned(), display_name, avatar, bot })
            })
            .collect())
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool> {
        if self.user(name).await?.is_none() {
            return Ok(false);
        }
        self.write(&self.inner.q.set_password, (password_hash, name)).await?;
        Ok(true)
    }

    async fn tokens_valid_after(&self, user: &str) -> Result<u64> {
        let rows: Vec<(Option<i64>,)> = self.rows(&self.inner.q.token_floor, (user,)).await?;
        Ok(rows.first().and_then(|(ms,)| *ms).unwrap_or(0) as u64)
    }

    async fn revoke_tokens_before(&self, user: &str, before_ms: u64) -> Result<()> {
        let ms = before_ms as i64;
        // Microseconds, as CQL's own timestamps.
        self.write(&self.inner.q.set_token_floor, (user, ms, ms.saturating_mul(1000))).await
    }

    async fn revoke_token(&self, jti: &str, exp: u64) -> Result<()> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        // Kept a minute past its expiry (clocks differ); at least one second.
        let ttl = exp.saturating_sub(now).saturating_add(60).min(i32::MAX as u64) as i32;
        self.write(&self.inner.q.revoke_token, (jti, ttl)).await
    }

    async fn is_token_revoked(&self, jti: &str) -> Result<bool> {
        Ok(!self.rows::<(String,)>(&self.inner.q.is_revoked, (jti,)).await?.is_empty())
    }

    async fn room(&self, room: &str) -> Result<Option<RoomMeta>> {
        let Some((last_seq, messages)) = self.head(room).await? else { return Ok(None) };
        let kept: Vec<(Option<i64>, Option<i64>)> = self.rows(&self.inner.q.room_members, (room,)).await?;
        let (members, members_at) = match kept.first() {
            Some((Some(n), at)) => ((*n).max(0) as u64, at.unwrap_or(0).max(0) as u64),
            // Not counted yet (`confab migrate` counts every room once).
            _ => (self.count_members(room).await?, 0),
        };
        let last_change = self.last_change(room).await?;
        Ok(Some(RoomMeta { last_seq, members, members_at, messages, last_change }))
    }

    async fn is_member(&self, room: &str, user: &str) -> Result<bool> {
        Ok(!self.rows::<(String,)>(&self.inner.q.is_member, (room, user)).await?.is_empty())
    }

    async fn members(&self, room: &str) -> Result<Vec<String>> {
        Ok(self.rows::<(String,)>(&self.inner.q.members, (room,)).await?.into_iter().map(|(u,)| u).collect())
    }

    async fn count_members(&self, room: &str) -> Result<u64> {
        let count: Vec<(i64,)> = self.rows(&self.inner.q.count_members, (room,)).await?;
        Ok(count.first().map_or(0, |(n,)| (*n).max(0) as u64))
    }

    async fn user_rooms(&self, user: &str) -> Result<Vec<RoomInfo>> {
        type Row = (String, Option<i64>, Option<i64>, Option<i64>, Option<i64>, Option<String>);
        let rows: Vec<Row> = self.rows(&self.inner.q.user_rooms, (user,)).await?;
        // Per room, its head (`head`: two reads) and the user's newest tally
        // (one read; a DM's second member's, four: `tally`), however many
        // messages it holds.
        let details = try_join_all(rows.iter().map(|(room, ..)| async move {
            let room = room.as_str();
            tokio::try_join!(self.head(room), self.tally(room, user, u64::MAX >> 1))
        }))
        .await?;
        let count = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
        Ok(rows
            .into_iter()
            .zip(details)
            .map(|((room, read, read_n, read_own, read_mentions, notify), (head, tally))| {
                let (last_seq, messages) = head.unwrap_or((0, 0));
                RoomInfo {
                    room,
                    last_seq,
                    read_seq: count(read),
                    invited: false,
                    unread: unread(messages, count(read_n), tally.own, count(read_own)),
                    mentions: tally.mentions.saturating_sub(count(read_mentions)),
                    notify: notify.as_deref().and_then(NotifyLevel::parse).unwrap_or_default(),
                }
            })
            .collect())
    }

    async fn user_room_count(&self, user: &str) -> Result<usize> {
        let count: Vec<(i64,)> = self.rows(&self.inner.q.count_user_rooms, (user,)).await?;
        Ok(count.first().map_or(0, |(n,)| *n as usize))
    }

    async fn user_room_names(&self, user: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = self.rows(&self.inner.q.user_room_names, (user,)).await?;
        Ok(rows.into_iter().map(|(room,)| room).collect())
    }

    async fn read_marker(&self, room: &str, user: &str) -> Result<u64> {
        let rows: Vec<(Option<i64>,)> = self.rows(&self.inner.q.read_marker, (user, room)).await?;
        Ok(rows.first().and_then(|(s,)| *s).unwrap_or(0) as u64)
    }

    async fn notify_level(&self, room: &str, user: &str) -> Result<NotifyLevel> {
        let rows: Vec<(Option<String>,)> = self.rows(&self.inner.q.notify_level, (user, room)).await?;
        Ok(rows.first().and_then(|(n,)| n.as_deref()).and_then(NotifyLevel::parse).unwrap_or_default())
    }

    async fn history(&self, room: &str, before: Option<u64>, limit: u32) -> Result<Vec<Message>> {
        let q = &self.inner.q;
        let before = before.unwrap_or(u64::MAX >> 1).min(u64::MAX >> 1);
        let mut out: Vec<Message> = Vec::new();
        let mut top = Some(bucket(before));
        'buckets: while let Some(t) = top {
            let (buckets, next) = self.buckets_down(room, t).await?;
            for b in buckets {
                let want = (limit as usize - out.len()) as i32;
                let page: Vec<MessageRow> = self.rows(&q.page_down, (room, b, before as i64, want)).await?;
                out.extend(page.into_iter().filter_map(|r| message(room, r)));
                if out.len() >= limit as usize {
                    break 'buckets;
                }
            }
            top = next;
        }
        out.reverse();
        self.with_reactions(room, &mut out).await?;
        Ok(out)
    }

    async fn since(&self, room: &str, after: u64, limit: u32) -> Result<(Vec<Message>, bool)> {
        let q = &self.inner.q;
        let Some(from) = after.checked_add(1).filter(|f| *f <= u64::MAX >> 1) else { return Ok((Vec::new(), false)) };
        let mut out: Vec<Message> = Vec::new();
        let mut bottom = bucket(from);
        loop {
            let buckets: Vec<(i64,)> = self.rows(&q.buckets_up, (room, bottom)).await?;
            if buckets.is_empty() {
                self.with_reactions(room, &mut out).await?;
                return Ok((out, false));
            }
            for (b,) in &buckets {
                // One more than needed tells whether more remain.
                let want = (limit as usize + 1 - out.len()) as i32;
                let page: Vec<MessageRow> = self.rows(&q.page_up, (room, *b, after as i64, want)).await?;
                out.extend(page.into_iter().filter_map(|r| message(room, r)));
                if out.len() > limit as usize {
                    out.truncate(limit as usize);
                    self.with_reactions(room, &mut out).await?;
                    return Ok((out, true));
                }
            }
            bottom = buckets.last().map_or(i64::MAX, |(b,)| b + 1);
        }
    }

    async fn cid(&self, room: &str, cid: &str) -> Result<Option<CidHit>> {
        let rows: Vec<(i64, String, i64)> = self.rows(&self.inner.q.cid, (room, cid)).await?;
        Ok(rows.into_iter().next().map(|(seq, msg_id, ts)| CidHit { seq: seq as u64, msg_id, ts: ts as u64 }))
    }

    /// The `cids` table's `default_time_to_live`.
    fn cid_window(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(604_800))
    }

    /// A `cids` row is a statement of its own: only [`Write::CidIndex`]
    /// writes one, and [`Store::recent_cids`] reads the messages' own.
    fn indexes_cids(&self) -> bool {
        false
    }

    /// From the message rows (not the `cids` table, which holds only what
    /// [`Write::CidIndex`] put there): the cid columns of the newest `limit`.
    async fn recent_cids(&self, room: &str, limit: u32) -> Result<(Vec<(String, CidHit)>, Option<u64>)> {
        type Row = (i64, Option<String>, Option<String>, Option<String>, Option<i64>);
        if limit == 0 {
            return Ok((Vec::new(), None));
        }
        let q = &self.inner.q;
        let (mut read, mut hits, mut oldest) = (0usize, Vec::new(), None);
        let mut top = Some(bucket(u64::MAX >> 1));
        'buckets: while let Some(t) = top {
            let (buckets, next) = self.buckets_down(room, t).await?;
            for b in buckets {
                let want = (limit as usize - read) as i32;
                let page: Vec<Row> = self.rows(&q.cids_down, (room, b, want)).await?;
                read += page.len();
                for (seq, sender, cid, msg_id, ts) in page {
                    let ts = ts.unwrap_or(0).max(0) as u64;
                    oldest = Some(ts);
                    let (Some(sender), Some(cid)) = (sender, cid) else { continue };
                    if sender.is_empty() || cid.is_empty() {
                        continue;
                    }
                    let hit = CidHit { seq: seq as u64, msg_id: msg_id.unwrap_or_default(), ts };
                    hits.push((cid_key(&sender, &cid), hit));
                }
                if read >= limit as usize {
                    break 'buckets;
                }
            }
            top = next;
        }
        Ok((hits, oldest.filter(|_| read >= limit as usize)))
    }

    async fn ordinal_at(&self, room: &str, seq: u64) -> Result<Option<(u64, u64)>> {
        let q = &self.inner.q;
        let seq = seq.min(u64::MAX >> 1);
        let mut top = Some(bucket(seq));
        while let Some(t) = top {
            let (buckets, next) = self.buckets_down(room, t).await?;
            for b in buckets {
                let found: Vec<(i64, Option<i64>)> = self.rows(&q.ordinal_down, (room, b, seq as i64)).await?;
                if let Some((s, n)) = found.first() {
                    return Ok(Some((*s as u64, n.unwrap_or(0).max(0) as u64)));
                }
            }
            top = next;
        }
        Ok(None)
    }

    async fn tally(&self, room: &str, user: &str, seq: u64) -> Result<Tally> {
        let seq = seq.min(u64::MAX >> 1);
        match dm_members(room) {
            // Every message of a DM is one of its two members': the second
            // one's own messages are the room's less the first one's (their
            // rows are not written with derived counts: `apply`). Their
            // rows still hold their mentions.
            Some((first, second)) if user == second => {
                let (stored, first, n) = tokio::try_join!(
                    self.stored_tally(room, user, seq),
                    self.stored_tally(room, first, seq),
                    self.count_at(room, seq),
                )?;
                Ok(Tally { own: n.saturating_sub(first.own), mentions: stored.mentions })
            }
            _ => self.stored_tally(room, user, seq).await,
        }
    }

    async fn room_settings(&self, room: &str) -> Result<Option<RoomSettings>> {
        type Row = (Option<String>, Option<String>, Option<String>, Option<String>, Option<i32>);
        let rows: Vec<Row> = self.rows(&self.inner.q.room_settings, (room,)).await?;
        Ok(rows.into_iter().next().map(|(visibility, name, topic, owner, retention_days)| RoomSettings {
            visibility: visibility.as_deref().and_then(Visibility::parse).unwrap_or_default(),
            name: name.unwrap_or_default(),
            topic: topic.unwrap_or_default(),
            owner,
            retention_days: retention_days.filter(|d| *d > 0).map(|d| d as u32),
        }))
    }

    async fn member(&self, room: &str, user: &str) -> Result<Option<MemberRecord>> {
        let rows: Vec<(Option<String>, Option<i64>)> = self.rows(&self.inner.q.member, (room, user)).await?;
        Ok(rows.into_iter().next().map(|(role, muted)| MemberRecord {
            role: role.as_deref().and_then(Role::parse).unwrap_or_default(),
            muted_until: muted.unwrap_or(0).max(0) as u64,
        }))
    }

    async fn members_page(&self, room: &str, after: Option<&str>, limit: u32) -> Result<Vec<MemberEntry>> {
        let rows: Vec<(String, Option<String>)> =
            self.rows(&self.inner.q.members_page, (room, after.unwrap_or(""), limit as i32)).await?;
        Ok(rows
            .into_iter()
            .map(|(user, role)| MemberEntry { user, role: role.as_deref().and_then(Role::parse).unwrap_or_default() })
            .collect())
    }

    async fn is_invited(&self, room: &str, user: &str) -> Result<bool> {
        Ok(!self.rows::<(String,)>(&self.inner.q.is_invited, (room, user)).await?.is_empty())
    }

    async fn is_banned(&self, room: &str, user: &str) -> Result<bool> {
        Ok(!self.rows::<(String,)>(&self.inner.q.is_banned, (room, user)).await?.is_empty())
    }

    async fn invitations(&self, user: &str) -> Result<Vec<String>> {
        Ok(self.rows::<(String,)>(&self.inner.q.invitations, (user,)).await?.into_iter().map(|(r,)| r).collect())
    }

    async fn public_rooms(&self, after: Option<&str>, limit: u32) -> Result<Vec<PublicRoom>> {
        // Each shard's next `limit` rooms, merged: the first `limit` of the
        // union are the first `limit` overall.
        let after = after.unwrap_or("");
        let pages = try_join_all((0..PUBLIC_SHARDS).map(|shard| {
            self.rows::<(String, Option<String>, Option<String>)>(
                &self.inner.q.public_page,
                (shard, after, limit as i32),
            )
        }))
        .await?;
        let mut rooms: Vec<PublicRoom> = pages
            .into_iter()
            .flatten()
            .map(|(room, name, topic)| PublicRoom {
                room,
                name: name.unwrap_or_default(),
                topic: topic.unwrap_or_default(),
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        rooms.truncate(limit as usize);
        Ok(rooms)
    }

    async fn apply(&self, batch: WriteBatch) -> Result<()> {
        // No transaction (see `Store::apply`): writes of one room are ordered
        // by their timestamps, not by the order they land in, so everything
        // but the checkpoints can go at once; the checkpoints go last, after
        // everything they cover landed. Every statement is idempotent, so a
        // retry of the batch converges.
        let q = &self.inner.q;
        let metas = metas(&batch);
        let (checkpoints, writes): (Vec<&Write>, Vec<&Write>) =
            batch.iter().partition(|w| matches!(w, Write::Checkpoint { .. }));
        // An erasure reads the room's messages: it goes once the batch's own
        // messages (earlier in the log, so possibly the erased user's) landed.
        let (erasures, writes): (Vec<&Write>, Vec<&Write>) =
            writes.into_iter().partition(|w| matches!(w, Write::Erase { .. }));
        let buckets = self.new_buckets(&batch);
        // With derived counts, the `rooms` row (`last_seq` and count) only
        // where the message rows cannot give them back (`head`): for a room
        // whose batch opens a bucket (`head` reads the row's bucket), or has
        // a message that expires (gone, its row would no longer hold up the
        // last seq and count, which must never go back) or carries no
        // ordinal. A room without
        // retention then writes it once per 65,536 messages.
        let opened: HashSet<&str> = buckets.iter().map(|&(room, ..)| room).collect();
        let derived = self.inner.derived_counts;
        let tops =
            room_tops(&batch, &metas).into_iter().filter(|(room, top)| !derived || top.pinned || opened.contains(room));
        // With derived counts, a DM's second member's tally is not written
        // for their own message (`tally` derives their own count; their
        // mentions only change with the other's messages).
        let senders: HashMap<(&str, u64), &str> = batch
            .iter()
            .filter_map(|w| match w {
                Write::Message(m) => Some(((m.room.as_str(), m.seq), m.from.as_str())),
                _ => None,
            })
            .collect();
        let writes = writes.into_iter().filter(|w| !(derived && derived_tally(w, &senders)));
        let rows = try_join_all(writes.map(|w| self.apply_one(w, &metas)));
        let tops = try_join_all(tops.map(|(room, top)| self.write_top(room, top)));
        let indexed = try_join_all(buckets.iter().map(|&(room, b, seq)| self.write(&q.insert_bucket, (room, b, seq))));
        tokio::try_join!(rows, tops, indexed)?;
        self.known_buckets(&buckets);
        try_join_all(erasures.into_iter().map(|w| self.apply_one(w, &metas))).await?;
        try_join_all(checkpoints.into_iter().map(|w| self.apply_one(w, &metas))).await?;
        Ok(())
    }

    async fn checkpoints(&self) -> Result<Vec<(u32, u64)>> {
        let rows: Vec<(i32, Option<i64>)> = self.rows(&self.inner.q.checkpoints, ()).await?;
        Ok(rows.into_iter().map(|(p, o)| (p as u32, o.unwrap_or(0) as u64)).collect())
    }

    async fn bind_partitions(&self, partitions: u32) -> Result<()> {
        let q = &self.inner.q;
        self.inner
            .session
            .execute_unpaged(&q.set_meta, ("partitions", i64::from(partitions)))
            .await
            .map_err(cql_error(q.set_meta.get_statement()))?;
        let rows: Vec<(Option<i64>,)> = self.rows(&q.meta, ("partitions",)).await?;
        match rows.first().and_then(|(n,)| *n) {
            Some(n) if n != i64::from(partitions) => {
                Err(Error::PartitionsChanged { stored: n as u32, wanted: partitions })
            }
            _ => Ok(()),
        }
    }

    async fn contact_ask(&self, user: &str, other: &str, max: usize) -> Result<bool> {
        self.contact_ask_(user, other, max).await
    }
    async fn contact_end(&self, a: &str, b: &str) -> Result<()> {
        self.contact_end_(a, b).await
    }
    async fn contacts(&self, user: &str) -> Result<Vec<crate::ContactRecord>> {
        self.relations(user).await
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
    async fn delete_user(&self, name: &str) -> Result<bool> {
        self.delete_user_(name).await
    }
    async fn successor(&self, room: &str, leaving: &str) -> Result<Option<String>> {
        self.successor_(room, leaving).await
    }

    async fn message(&self, room: &str, seq: u64) -> Result<Option<MessageState>> {
        self.message_state(room, seq).await
    }

    async fn reacted(&self, room: &str, seq: u64, emoji: &str, user: &str) -> Result<bool> {
        self.is_reacted(room, seq, emoji, user).await
    }

    async fn edits(&self, room: &str, seq: u64) -> Result<Vec<Version>> {
        self.versions(room, seq).await
    }

    async fn changes(&self, room: &str, after: u64, limit: u32) -> Result<(Vec<(u64, u64)>, bool)> {
        self.changes_after(room, after, limit).await
    }

    async fn member_event(&self, room: &str, at: u64) -> Result<Option<crate::MemberEvent>> {
        self.member_event_(room, at).await
    }
}

#[cfg(test)]
mod request_timeout {
    use super::*;

    /// Against the real database of `scripts/infra up cql`.
    #[tokio::test]
    async fn the_session_uses_the_configured_request_timeout() {
        let points = std::env::var("CQL_CONTACT_POINTS")
            .expect("CQL_CONTACT_POINTS is not set: run `scripts/infra up cql` and `source target/infra/env`");
        let config = CqlConfig {
            contact_points: points.split(',').map(str::to_owned).collect(),
            keyspace: String::new(),
            replication: Replication::default(),
            username: None,
            password: None,
            request_timeout: Duration::from_millis(1234),
            tls: None,
            derived_counts: false,
        };
        let s = session(&config, None).await.unwrap();
        let profile = s.get_default_execution_profile_handle().to_profile();
        assert_eq!(profile.get_request_timeout(), Some(Duration::from_millis(1234)));
    }
}

#[cfg(test)]
mod replication_ddl {
    use std::collections::HashMap;

    use super::*;

    /// Against the real database of `scripts/infra up cql`: the keyspace
    /// `migrate` creates has the parsed class and factors.
    #[tokio::test]
    async fn migrate_creates_the_keyspace_with_the_parsed_replication() {
        let points = std::env::var("CQL_CONTACT_POINTS")
            .expect("CQL_CONTACT_POINTS is not set: run `scripts/infra up cql` and `source target/infra/env`");
        let id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let mut config = CqlConfig {
            contact_points: points.split(',').map(str::to_owned).collect(),
            keyspace: format!("confab_replication_{:x}", id & 0xffff_ffff_ffff),
            replication: Replication::default(),
            username: None,
            password: None,
            request_timeout: Duration::from_secs(10),
            tls: None,
            derived_counts: false,
        };
        let s = session(&config, None).await.unwrap();
        let (dc,): (String,) = s
            .query_unpaged("SELECT data_center FROM system.local WHERE key = 'local'", ())
            .await
            .unwrap()
            .into_rows_result()
            .unwrap()
            .single_row()
            .unwrap();
        config.replication = format!("NetworkTopologyStrategy:{dc}=1").parse().unwrap();
        ScyllaStore::migrate(&config).await.unwrap();
        let stored: Result<(HashMap<String, String>,)> = async {
            let cql = "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?";
            s.query_unpaged(cql, (config.keyspace.as_str(),))
                .await
                .map_err(cql_error(cql))?
                .into_rows_result()
                .map_err(result_error(cql))?
                .single_row()
                .map_err(result_error(cql))
        }
        .await;
        ScyllaStore::drop_keyspace(&config).await.unwrap();
        let (stored,) = stored.unwrap();
        assert!(stored["class"].ends_with("NetworkTopologyStrategy"), "{stored:?}");
        assert_eq!(stored.get(&dc).map(String::as_str), Some("1"), "{stored:?}");
    }
}

#[cfg(test)]
mod batch_rows {
    use super::*;

    fn message(room: &str, seq: u64) -> Write {
        Write::Message(Message { room: room.into(), seq, ..Message::default() })
    }

    fn meta(room: &str, seq: u64, n: u64) -> Write {
        Write::MessageMeta { room: room.into(), seq, n, expires_ms: None }
    }

    /// A batch writes each room's `rooms` row once, as its newest message
    /// left it, however many messages it holds.
    #[test]
    fn a_batch_keeps_the_newest_message_and_count_of_each_room() {
        let batch = vec![
            message("a", 5),
            meta("a", 5, 1),
            message("b", 6),
            meta("b", 6, 40),
            message("a", 9),
            meta("a", 9, 2),
            Write::Checkpoint { partition: 0, next_offset: 10 },
        ];
        let tops = room_tops(&batch, &metas(&batch));
        assert_eq!(tops.len(), 2);
        assert_eq!(tops["a"], RoomTop { last_seq: Some(9), count: Some((9, 2)), pinned: false });
        assert_eq!(tops["b"], RoomTop { last_seq: Some(6), count: Some((6, 40)), pinned: false });
        let none = vec![Write::Checkpoint { partition: 0, next_offset: 1 }];
        assert!(room_tops(&none, &metas(&none)).is_empty());
    }

    /// A room whose message expires, or has no ordinal, keeps its `rooms`
    /// row written: its message rows may not give the seq back.
    #[test]
    fn a_message_that_expires_or_has_no_ordinal_pins_its_rooms_row() {
        let batch = vec![
            message("a", 5),
            meta("a", 5, 1),
            message("b", 6),
            Write::MessageMeta { room: "b".into(), seq: 6, n: 3, expires_ms: Some(1) },
            message("c", 7),
            message("d", 8),
            meta("d", 8, 0),
        ];
        let tops = room_tops(&batch, &metas(&batch));
        let pinned = |room: &str| tops[room].pinned;
        assert!(!pinned("a"));
        assert!(pinned("b"), "expires");
        assert!(pinned("c"), "no ordinal");
        assert!(pinned("d"), "no ordinal");
    }
}
