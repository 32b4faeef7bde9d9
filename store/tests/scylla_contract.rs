//! The Store contract against a real CQL database: `CQL_CONTACT_POINTS`
//! (from `scripts/infra up cql`). Each test gets a keyspace of its own.
#![cfg(feature = "scylla")]

use std::time::Duration;

use confab_store::Store;
use confab_store::scylla::{CqlConfig, ScyllaStore};

fn config() -> CqlConfig {
    let points = std::env::var("CQL_CONTACT_POINTS")
        .expect("CQL_CONTACT_POINTS is not set: run `scripts/infra up cql` and `source target/infra/env`");
    use std::hash::{BuildHasher, RandomState};
    let id = RandomState::new().hash_one(std::time::SystemTime::now());
    CqlConfig {
        contact_points: points.split(',').map(str::to_owned).collect(),
        keyspace: format!("confab_test_{id:016x}"),
        replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".parse().unwrap(),
        username: None,
        password: None,
        request_timeout: Duration::from_secs(10),
        tls: None,
        derived_counts: true,
    }
}

/// Drops the test's keyspace when the test ends.
struct Keyspace(CqlConfig);

impl Drop for Keyspace {
    fn drop(&mut self) {
        let config = self.0.clone();
        // Drop runs inside the test's runtime; the cleanup gets one of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async { ScyllaStore::drop_keyspace(&config).await })
        })
        .join();
    }
}

async fn open() -> (Keyspace, ScyllaStore) {
    open_with(config()).await
}

async fn open_with(config: CqlConfig) -> (Keyspace, ScyllaStore) {
    ScyllaStore::migrate(&config).await.expect("migrated");
    let store = ScyllaStore::connect(&config).await.expect("connected");
    (Keyspace(config), store)
}

confab_store::store_contract_tests!(open);

#[tokio::test]
async fn migrating_twice_is_fine() {
    let (_ks, _store) = open().await;
    ScyllaStore::migrate(&_ks.0).await.unwrap();
    _store.ping().await.unwrap();
}

#[tokio::test]
async fn connecting_to_an_unmigrated_keyspace_says_to_migrate() {
    let e = ScyllaStore::connect(&config()).await.err().expect("no schema").to_string();
    assert!(e.contains("confab migrate"), "{e}");
}

#[tokio::test]
async fn history_and_sync_page_across_buckets_and_skip_empty_ones() {
    use confab_store::Write;
    use confab_store::contract::message;
    let (_ks, store) = open().await;
    let bucket = 1u64 << confab_store::scylla::BUCKET_BITS;
    // Three messages far apart: each in a bucket of its own, with empty
    // buckets between them.
    let seqs = [5, 3 * bucket + 7, 40 * bucket + 1];
    let mut batch = vec![Write::Join { room: "r".into(), user: "alice".into(), at: 1, members: 1 }];
    batch.extend(seqs.iter().map(|s| Write::Message(message("r", *s, "alice", &format!("c{s}")))));
    store.apply(batch).await.unwrap();
    let all: Vec<u64> = store.history("r", None, 10).await.unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(all, seqs);
    let older: Vec<u64> = store.history("r", Some(seqs[2]), 1).await.unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(older, [seqs[1]]);
    let (newer, more) = store.since("r", seqs[0], 1).await.unwrap();
    assert_eq!((newer[0].seq, more), (seqs[1], true));
    let (newer, more) = store.since("r", seqs[1], 5).await.unwrap();
    assert_eq!((newer.len(), newer[0].seq, more), (1, seqs[2], false));
}

#[tokio::test]
async fn a_message_with_an_expiry_is_written_with_a_ttl_and_disappears() {
    use confab_store::Write;
    use confab_store::contract::message;
    let (_ks, store) = open().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let meta = |seq, n, expires_ms| Write::MessageMeta { room: "r".into(), seq, n, expires_ms };
    store
        .apply(vec![
            Write::Join { room: "r".into(), user: "alice".into(), at: 1, members: 1 },
            Write::Message(message("r", 2, "alice", "c2")),
            meta(2, 1, Some(now + 1_000)),
            Write::Message(message("r", 3, "alice", "c3")),
            meta(3, 2, None),
        ])
        .await
        .unwrap();
    assert_eq!(store.ordinal_at("r", 3).await.unwrap(), Some((3, 2)), "the ordinal is on the row");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seqs: Vec<u64> = store.history("r", None, 10).await.unwrap().iter().map(|m| m.seq).collect();
        if seqs == [3] {
            break;
        }
        assert_eq!(seqs, [2, 3]);
        assert!(std::time::Instant::now() < deadline, "the TTL did not remove message 2");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(store.ordinal_at("r", 2).await.unwrap(), None, "no row is left behind");
    assert_eq!(store.room("r").await.unwrap().unwrap().messages, 2);
}

#[tokio::test]
async fn an_expired_message_that_was_edited_and_reacted_to_is_gone_with_it() {
    use confab_protocol::lifecycle::Version;
    use confab_store::Write;
    use confab_store::contract::message;
    let (_ks, store) = open().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let meta = |seq, n, expires_ms| Write::MessageMeta { room: "r".into(), seq, n, expires_ms };
    let mut first = message("r", 2, "alice", "c2");
    first.mentions = vec!["bob".into()];
    store
        .apply(vec![
            Write::Join { room: "r".into(), user: "alice".into(), at: 1, members: 1 },
            Write::Message(first),
            meta(2, 1, Some(now + 1_000)),
            Write::Message(message("r", 3, "alice", "c3")),
            meta(3, 2, None),
        ])
        .await
        .unwrap();
    // The edit and the reaction write cells on message 2's row without its TTL.
    let previous = Version { text: "message 2".into(), ts: 1 };
    let edit = Write::Edit { room: "r".into(), seq: 2, text: "@bob fixed".into(), edited_ts: now, previous, at: 4 };
    let react =
        Write::React { room: "r".into(), seq: 2, emoji: "👍".into(), user: "alice".into(), remove: false, at: 5 };
    store.apply(vec![edit, react]).await.unwrap();
    let state = store.message("r", 2).await.unwrap().expect("message 2 is there before it expires");
    assert_eq!(
        (state.message.text.as_str(), state.message.mentions.as_slice()),
        ("@bob fixed", ["bob".to_owned()].as_slice())
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seqs: Vec<u64> = store.history("r", None, 10).await.unwrap().iter().map(|m| m.seq).collect();
        if seqs == [3] {
            break;
        }
        assert_eq!(seqs, [2, 3]);
        assert!(std::time::Instant::now() < deadline, "the TTL did not remove message 2");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(store.message("r", 2).await.unwrap(), None, "what the edit wrote does not bring it back");
    let (since, more) = store.since("r", 0, 10).await.unwrap();
    assert_eq!((since.iter().map(|m| m.seq).collect::<Vec<_>>(), more), (vec![3], false));
}

#[tokio::test]
async fn a_keyspace_of_version_3_is_upgraded_to_the_current_one() {
    use confab_store::Write;
    use confab_store::contract::message;
    // The schema as version 3 left it (before messages lived and were
    // counted): what a cluster upgrading from it has.
    const V3: &str = include_str!("fixtures/schema-v3.cql");
    let config = config();
    let ks = Keyspace(config.clone());
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(&config.contact_points)
        .build()
        .await
        .unwrap();
    let create = format!(
        "CREATE KEYSPACE {} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}",
        config.keyspace
    );
    session.query_unpaged(create, ()).await.unwrap();
    session.use_keyspace(&config.keyspace, false).await.unwrap();
    let v3: String = V3.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    for statement in v3.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        session.query_unpaged(statement, ()).await.unwrap();
    }
    session.query_unpaged("INSERT INTO schema_migrations (version, applied_ms) VALUES (3, 0)", ()).await.unwrap();
    // A room from before member counts were kept (version 7): `migrate`
    // counts it once.
    session.query_unpaged("INSERT INTO rooms (room, last_seq) VALUES ('old', 0) USING TIMESTAMP 1", ()).await.unwrap();
    for user in ["amy", "bob", "cat"] {
        let insert = "INSERT INTO members (room, username) VALUES ('old', ?) USING TIMESTAMP 1";
        session.query_unpaged(insert, (user,)).await.unwrap();
    }
    session.await_schema_agreement().await.unwrap();
    assert!(ScyllaStore::connect(&ks.0).await.is_err(), "a version 3 keyspace is refused");

    ScyllaStore::migrate(&ks.0).await.unwrap();
    ScyllaStore::migrate(&ks.0).await.unwrap();
    let store = ScyllaStore::connect(&ks.0).await.expect("upgraded to the current version");
    let old = store.room("old").await.unwrap().unwrap();
    assert_eq!((old.members, old.members_at), (3, 0), "counted once by the migration");
    // The dispatcher's next write of the count (at its log position) wins.
    store.apply(vec![Write::Leave { room: "old".into(), user: "cat".into(), at: 5, members: 2 }]).await.unwrap();
    let old = store.room("old").await.unwrap().unwrap();
    assert_eq!((old.members, old.members_at), (2, 5));
    let mut m = message("r", 2, "alice", "c2");
    m.reply_to = Some(1);
    m.mentions = vec!["bob".into()];
    store
        .apply(vec![
            Write::Join { room: "r".into(), user: "alice".into(), at: 1, members: 1 },
            Write::Message(m.clone()),
            Write::MessageMeta { room: "r".into(), seq: 2, n: 1, expires_ms: None },
        ])
        .await
        .unwrap();
    assert_eq!(store.history("r", None, 10).await.unwrap(), [m]);
    assert_eq!(store.room("r").await.unwrap().unwrap().messages, 1);
}

/// A message costs one CQL write in steady state (its row, which carries its
/// cid, seq and ordinal: the dispatcher writes a `cids` row only for a room
/// whose cids it does not hold): the room's `last_seq` and count, and the
/// bucket index, are written once per bucket, and the checkpoint once per
/// batch. Counted by the database itself
/// (`system_views.coordinator_write_latency`).
#[tokio::test]
async fn a_batch_of_messages_costs_one_write_per_message() {
    use confab_store::Write;
    use confab_store::contract::message;
    let (ks, store) = open().await;
    store.apply(vec![Write::Join { room: "r".into(), user: "alice".into(), at: 1, members: 1 }]).await.unwrap();
    let before = ScyllaStore::statement_counts(&ks.0).await.unwrap();
    let (batches, per_batch) = (10u64, 20u64);
    for b in 0..batches {
        let mut batch = Vec::new();
        for i in 0..per_batch {
            let seq = 10 + b * per_batch + i;
            batch.push(Write::Message(message("r", seq, "alice", &format!("c{seq}"))));
            batch.push(Write::MessageMeta { room: "r".into(), seq, n: seq - 9, expires_ms: None });
        }
        batch.push(Write::Checkpoint { partition: 0, next_offset: 10 + (b + 1) * per_batch });
        store.apply(batch).await.unwrap();
    }
    let after = ScyllaStore::statement_counts(&ks.0).await.unwrap();
    let writes = |table: &str| after.get(table).map_or(0, |c| c.1) - before.get(table).map_or(0, |c| c.1);
    let messages = batches * per_batch;
    assert_eq!(writes("messages"), messages, "{after:?}");
    assert_eq!(writes("cids"), 0, "no cid index without `Write::CidIndex`: {after:?}");
    assert_eq!(writes("rooms"), 1, "one rooms write for the bucket: {after:?}");
    assert_eq!(writes("room_buckets"), 1, "one index write for the bucket: {after:?}");
    assert_eq!(writes("checkpoints"), batches, "{after:?}");
    let total: u64 = after.iter().map(|(t, c)| c.1 - before.get(t).map_or(0, |c| c.1)).sum();
    assert_eq!(total, messages + batches + 2, "{after:?}");
    // And what was written reads back as before.
    let room = store.room("r").await.unwrap().expect("room");
    assert_eq!((room.last_seq, room.messages), (10 + messages - 1, messages));
    let last: Vec<u64> = store.history("r", None, 3).await.unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(last, [messages + 7, messages + 8, messages + 9]);
}

/// The `rooms` row is written once per bucket, so a room's `last_seq` and
/// count come from its newest message row: right after every batch, across
/// a bucket boundary, and in the user's room list.
#[tokio::test]
async fn a_room_s_last_seq_and_count_follow_its_newest_message_across_buckets() {
    use confab_store::Write;
    use confab_store::contract::message;
    let (_ks, store) = open().await;
    let bucket = 1u64 << confab_store::scylla::BUCKET_BITS;
    store.apply(vec![Write::Join { room: "r".into(), user: "alice".into(), at: 1, members: 1 }]).await.unwrap();
    let mut n = 0;
    // Two batches in bucket 0, then two in bucket 1 (the first opens it).
    for seqs in [[bucket - 4, bucket - 3], [bucket - 2, bucket - 1], [bucket, bucket + 1], [bucket + 2, bucket + 3]] {
        let mut batch = Vec::new();
        for seq in seqs {
            n += 1;
            batch.push(Write::Message(message("r", seq, "bob", &format!("c{seq}"))));
            batch.push(Write::MessageMeta { room: "r".into(), seq, n, expires_ms: None });
        }
        store.apply(batch).await.unwrap();
        let room = store.room("r").await.unwrap().expect("room");
        assert_eq!((room.last_seq, room.messages), (seqs[1], n));
        let listed = store.user_rooms("alice").await.unwrap();
        assert_eq!((listed[0].last_seq, listed[0].unread), (seqs[1], n));
    }
}

/// A message that expires pins the `rooms` row: once retention removed every
/// message, the room still reports its last seq and count: the next
/// message's ordinal, read markers and unread counts never go back.
#[tokio::test]
async fn a_room_whose_messages_all_expired_keeps_its_last_seq_and_count() {
    use confab_store::Write;
    use confab_store::contract::message;
    let (_ks, store) = open().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let mut batch = vec![Write::Join { room: "r".into(), user: "alice".into(), at: 1, members: 1 }];
    // The second batch writes no bucket, only expiring messages.
    batch.push(Write::Message(message("r", 2, "alice", "c2")));
    batch.push(Write::MessageMeta { room: "r".into(), seq: 2, n: 1, expires_ms: Some(now + 1_000) });
    store.apply(batch).await.unwrap();
    store
        .apply(vec![
            Write::Message(message("r", 3, "alice", "c3")),
            Write::MessageMeta { room: "r".into(), seq: 3, n: 2, expires_ms: Some(now + 1_000) },
        ])
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !store.history("r", None, 10).await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the TTL did not remove the messages");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let room = store.room("r").await.unwrap().expect("room");
    assert_eq!((room.last_seq, room.messages), (3, 2));
}

/// Without sparse room heads (the default, for clusters that still run a
/// version that reads the `rooms` row alone), every batch writes it.
#[tokio::test]
async fn without_derived_counts_every_batch_writes_the_rooms_row() {
    use confab_store::Write;
    use confab_store::contract::message;
    let (ks, store) = open_with(CqlConfig { derived_counts: false, ..config() }).await;
    store.apply(vec![Write::Join { room: "r".into(), user: "alice".into(), at: 1, members: 1 }]).await.unwrap();
    let before = ScyllaStore::statement_counts(&ks.0).await.unwrap();
    for seq in 2..5 {
        store
            .apply(vec![
                Write::Message(message("r", seq, "alice", &format!("c{seq}"))),
                Write::MessageMeta { room: "r".into(), seq, n: seq - 1, expires_ms: None },
            ])
            .await
            .unwrap();
    }
    let after = ScyllaStore::statement_counts(&ks.0).await.unwrap();
    let rooms = after.get("rooms").map_or(0, |c| c.1) - before.get("rooms").map_or(0, |c| c.1);
    assert_eq!(rooms, 3, "{after:?}");
    let room = store.room("r").await.unwrap().expect("room");
    assert_eq!((room.last_seq, room.messages), (4, 3));
}

/// With derived counts, a DM's second member's own messages write no tally
/// row (the contract test `a_dm_s_tallies_read_back_at_every_seq` reads
/// them back); the first member's do, and so do mentions.
#[tokio::test]
async fn a_dm_s_second_member_writes_no_tally_for_their_own_messages() {
    use confab_store::contract::message;
    use confab_store::{Tally, Write};
    let (ks, store) = open().await;
    let dm = "dm:ann:bob";
    let join = |user: &str, members| Write::Join { room: dm.into(), user: user.into(), at: 1, members };
    store.apply(vec![join("ann", 1), join("bob", 2)]).await.unwrap();
    let before = ScyllaStore::statement_counts(&ks.0).await.unwrap();
    let mut batch = Vec::new();
    for (n, seq) in (2..12u64).enumerate() {
        let from = if seq % 2 == 0 { "ann" } else { "bob" };
        batch.push(Write::Message(message(dm, seq, from, &format!("c{seq}"))));
        batch.push(Write::MessageMeta { room: dm.into(), seq, n: n as u64 + 1, expires_ms: None });
        let own = (n as u64) / 2 + 1;
        batch.push(Write::Tally { room: dm.into(), user: from.into(), seq, tally: Tally { own, mentions: 0 } });
    }
    store.apply(batch).await.unwrap();
    let after = ScyllaStore::statement_counts(&ks.0).await.unwrap();
    let tallies = after.get("user_tallies").map_or(0, |c| c.1) - before.get("user_tallies").map_or(0, |c| c.1);
    assert_eq!(tallies, 5, "ann's five only: {after:?}");
    assert_eq!(store.tally(dm, "bob", u64::MAX).await.unwrap(), Tally { own: 5, mentions: 0 });
}
