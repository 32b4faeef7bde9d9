//! The dispatcher pipeline against the embedded store: what is acked is
//! stored, reprocessing mints nothing new, a failing store holds every ack,
//! a batch stored only in part is completed when its records come again, and
//! events go only where members are. The rules of each command are unit
//! tests beside `pipeline::decide`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use confab_bus::{Push, Record};
use confab_dispatcher::{Metrics, Pipeline};
use confab_protocol::record::Announcement;
use confab_protocol::{Command, Delivery, IngressRecord, Message, Origin, RoomInfo};
use confab_store::{CidHit, EmbeddedStore, RoomMeta, Store, UserRecord, WriteBatch};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Records every push, per gateway.
#[derive(Default, Clone)]
struct Captured(Arc<Mutex<Vec<(String, Delivery)>>>);

#[async_trait]
impl Push for Captured {
    async fn push(&self, gateway: &str, batch: Vec<Delivery>) -> confab_bus::Result<()> {
        let mut all = self.0.lock().unwrap();
        all.extend(batch.into_iter().map(|d| (gateway.to_owned(), d)));
        Ok(())
    }
}

impl Captured {
    fn take(&self) -> Vec<(String, Delivery)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn frame(d: &Delivery) -> Value {
    match d {
        Delivery::Reply { frame, .. } | Delivery::Room { frame, .. } => serde_json::from_str(frame).unwrap(),
    }
}

fn record(partition: u32, offset: u64, room: &str, cmd: Command) -> Record {
    Record {
        partition,
        offset,
        record: IngressRecord {
            room: room.into(),
            ts: 1_700_000_000_000 + offset,
            origin: Some(Origin { gateway: "gw-1".into(), session: 1, re: None, t0: 0 }),
            cmd,
        },
    }
}

fn join(offset: u64, room: &str, user: &str) -> Record {
    record(0, offset, room, Command::Join { user: user.into() })
}

fn send(offset: u64, room: &str, from: &str, cid: &str) -> Record {
    record(
        0,
        offset,
        room,
        Command::Send {
            from: from.into(),
            text: format!("text {offset}"),
            cid: cid.into(),
            reply_to: None,
            attachments: vec![],
        },
    )
}

fn pipeline(store: Arc<dyn Store>, push: Captured) -> Pipeline {
    stoppable_pipeline(store, push, CancellationToken::new())
}

fn stoppable_pipeline(store: Arc<dyn Store>, push: Captured, shutdown: CancellationToken) -> Pipeline {
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    Pipeline::new(store, Arc::new(push), metrics, shutdown)
}

fn open() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    (dir, Arc::new(store))
}

/// Accounts for `users`: a DM's first message needs both.
async fn accounts(store: &dyn Store, users: &[&str]) {
    for name in users {
        let user = UserRecord { name: (*name).into(), password_hash: String::new(), created_ms: 1, bot: false };
        assert!(store.create_user(&user).await.unwrap());
    }
}

#[tokio::test]
async fn a_redelivered_batch_mints_no_second_message() {
    let (_dir, store) = open();
    let push = Captured::default();
    let batch = vec![join(0, "r", "alice"), send(1, "r", "alice", "c1"), send(2, "r", "alice", "c2")];
    let mut first = pipeline(store.clone(), push.clone());
    assert_eq!(first.process(batch.clone()).await, Some(vec![(0, 3)]));
    // A new owner of the partition (after a crash before the offset commit)
    // gets the same records again.
    let mut second = pipeline(store.clone(), push.clone());
    second.resume_from(store.checkpoints().await.unwrap());
    assert_eq!(second.process(batch).await, Some(vec![(0, 3)]));
    let history = store.history("r", None, 100).await.unwrap();
    assert_eq!(history.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3], "seq = offset + 1, stored once");
}

#[tokio::test]
async fn the_same_cid_in_a_later_batch_answers_with_the_first_message() {
    let (_dir, store) = open();
    let push = Captured::default();
    let mut p = pipeline(store.clone(), push.clone());
    p.process(vec![join(0, "r", "alice"), send(1, "r", "alice", "c1")]).await.unwrap();
    push.take();
    p.process(vec![send(2, "r", "alice", "c1"), send(3, "r", "alice", "c1")]).await.unwrap();
    let replies: Vec<Value> = push.take().iter().map(|(_, d)| frame(d)).collect();
    assert_eq!(replies.len(), 2, "two replies and no event: {replies:?}");
    for r in replies {
        assert_eq!((r["ok"].as_bool(), r["seq"].as_u64()), (Some(true), Some(2)));
    }
    assert_eq!(store.history("r", None, 100).await.unwrap().len(), 1);
}

/// A store whose writes fail while `broken` is set; the first `lands` writes
/// of a failing batch are stored anyway, as a CQL store may do.
/// The seqs the replies to sends in `push` name, in order.
fn replied_seqs(push: &Captured) -> Vec<u64> {
    push.take()
        .iter()
        .filter(|(_, d)| matches!(d, Delivery::Reply { .. }))
        .map(|(_, d)| frame(d))
        .filter(|reply| reply["msg_id"].is_string())
        .map(|reply| reply["seq"].as_u64().expect("a send's reply names a seq"))
        .collect()
}

#[tokio::test]
async fn a_cid_stored_before_this_dispatcher_started_still_answers_with_the_first_message() {
    let (_dir, store) = open();
    let push = Captured::default();
    let load = confab_dispatcher::pipeline::cids::LOAD as u64;
    // A quiet room, and a busy one with more messages than a dispatcher
    // reads when it first meets a room.
    let mut batch = vec![join(0, "quiet", "alice"), send(1, "quiet", "alice", "c1"), join(2, "busy", "alice")];
    batch.extend((0..load + 5).map(|i| send(3 + i, "busy", "alice", &format!("b{i}"))));
    let mut first = pipeline(store.clone(), push.clone());
    first.process(batch).await.unwrap();
    push.take();

    let next = 3 + load + 5;
    let mut second = pipeline(store.clone(), push.clone());
    second.resume_from(store.checkpoints().await.unwrap());
    second
        .process(vec![
            send(next, "quiet", "alice", "c1"),
            send(next + 1, "busy", "alice", "b0"),
            send(next + 2, "busy", "alice", "b9"),
        ])
        .await
        .unwrap();
    assert_eq!(replied_seqs(&push), [2, 4, 13], "each resend answered with the message first stored");
    assert_eq!(store.history("quiet", None, 1000).await.unwrap().len(), 1);
    assert_eq!(store.history("busy", None, 1000).await.unwrap().len() as u64, load + 5);
}

#[tokio::test]
async fn sends_in_a_room_whose_cids_the_dispatcher_holds_read_no_cid_from_the_store() {
    let (_dir, inner) = open();
    let flaky = Flaky::working(inner.clone());
    let push = Captured::default();
    let mut p = pipeline(flaky.clone(), push.clone());
    p.process(vec![join(0, "r", "alice"), join(1, "r", "bob"), send(2, "r", "alice", "c1")]).await.unwrap();
    p.process(vec![send(3, "r", "bob", "c1"), send(4, "r", "alice", "c2")]).await.unwrap();
    p.process(vec![send(5, "r", "alice", "c1"), send(6, "r", "alice", "c3")]).await.unwrap();
    assert_eq!(replied_seqs(&push), [3, 4, 5, 3, 7], "bob's c1 is his own; alice's c1 again is her first");
    assert_eq!(flaky.cid_reads.load(Ordering::SeqCst), 0, "every cid answered from memory");
    assert_eq!(inner.history("r", None, 100).await.unwrap().len(), 4);

    // Once its partitions move, the dispatcher reads the room's cids again:
    // another dispatcher may have stored some meanwhile.
    inner
        .apply(vec![confab_store::Write::Message(Message {
            room: "r".into(),
            seq: 8,
            msg_id: "elsewhere".into(),
            from: "alice".into(),
            text: "stored by another dispatcher".into(),
            ts: 1,
            cid: "c4".into(),
            ..Message::default()
        })])
        .await
        .unwrap();
    p.forget_cached();
    p.process(vec![send(8, "r", "alice", "c4")]).await.unwrap();
    assert_eq!(replied_seqs(&push), [8]);
    assert_eq!(flaky.cid_reads.load(Ordering::SeqCst), 0);
}

/// On a store that does not index every cid (CQL), the dispatcher indexes
/// only the cids of rooms it does not hold in memory, and a resend is still
/// answered with the first message after its memory is gone (the
/// partitions moved): from the messages themselves in a quiet room, from
/// the index in a room too busy to hold, which got every cid it held
/// indexed the moment it stopped holding them.
#[tokio::test]
async fn without_a_store_index_of_every_cid_resends_are_answered_after_the_partitions_move() {
    let (_dir, inner) = open();
    let flaky = Flaky::working(inner.clone());
    flaky.unindexed.store(true, Ordering::SeqCst);
    let push = Captured::default();
    let mut p = pipeline(flaky.clone(), push.clone());
    p.process(vec![join(0, "quiet", "alice"), send(1, "quiet", "alice", "q1"), send(2, "quiet", "alice", "q2")])
        .await
        .unwrap();
    assert_eq!(replied_seqs(&push), [2, 3]);
    assert!(flaky.index.lock().unwrap().is_empty(), "a room the dispatcher holds needs no index");

    let cap = confab_dispatcher::pipeline::cids::ROOM_CAP as u64;
    let mut batch = vec![join(3, "busy", "alice")];
    batch.extend((0..cap + 10).map(|i| send(4 + i, "busy", "alice", &format!("b{i}"))));
    p.process(batch).await.unwrap();
    assert_eq!(replied_seqs(&push).len() as u64, cap + 10);
    let indexed = flaky.index.lock().unwrap().keys().filter(|(room, _)| room == "busy").count() as u64;
    assert_eq!(indexed, cap + 10, "past the cap, every cid of the room is indexed");

    // Another dispatcher's view: nothing in memory.
    p.forget_cached();
    let next = 4 + cap + 10;
    p.process(vec![
        send(next, "quiet", "alice", "q1"),
        send(next + 1, "busy", "alice", "b0"),
        send(next + 2, "busy", "alice", &format!("b{}", cap + 9)),
    ])
    .await
    .unwrap();
    assert_eq!(replied_seqs(&push), [2, 5, 5 + cap + 9], "each resend answered with the message first stored");
    assert_eq!(inner.history("quiet", None, 10).await.unwrap().len(), 2);
    assert_eq!(inner.history("busy", None, 10_000).await.unwrap().len() as u64, cap + 10);
}

#[tokio::test]
async fn a_dm_reads_the_block_once_and_again_only_after_it_changed() {
    let (_dir, inner) = open();
    accounts(&*inner, &["alice", "bob"]).await;
    let flaky = Flaky::working(inner.clone());
    let push = Captured::default();
    let mut p = pipeline(flaky.clone(), push.clone());
    let dm = "dm:alice:bob";
    // As the gateway produces it: no session waits for an answer.
    let changed = |offset| {
        let mut r = record(0, offset, dm, Command::BlockChanged { user: "bob".into(), other: "alice".into() });
        r.record.origin = None;
        r
    };
    let outcomes = |push: &Captured| -> Vec<String> {
        push.take()
            .iter()
            .filter(|(_, d)| matches!(d, Delivery::Reply { .. }))
            .map(|(_, d)| frame(d))
            .map(|f| f["error"]["code"].as_str().map_or("ok".to_owned(), str::to_owned))
            .collect()
    };
    p.process(vec![send(0, dm, "alice", "c1")]).await.unwrap();
    p.process(vec![send(1, dm, "alice", "c2"), send(2, dm, "alice", "c3")]).await.unwrap();
    assert_eq!(outcomes(&push), ["ok", "ok", "ok"]);
    assert_eq!(flaky.block_reads.load(Ordering::SeqCst), 1, "read once, then remembered");

    // bob blocks alice: the gateway stores it, then the record reaches the DM.
    assert!(inner.block("bob", "alice", 10).await.unwrap());
    p.process(vec![changed(3), send(4, dm, "alice", "c4")]).await.unwrap();
    p.process(vec![send(5, dm, "alice", "c5")]).await.unwrap();
    assert_eq!(outcomes(&push), ["forbidden", "forbidden"]);
    inner.unblock("bob", "alice").await.unwrap();
    p.process(vec![changed(6)]).await.unwrap();
    p.process(vec![send(7, dm, "alice", "c6")]).await.unwrap();
    assert_eq!(outcomes(&push), ["ok"]);
    assert_eq!(flaky.block_reads.load(Ordering::SeqCst), 3, "once more after each change");
    assert_eq!(inner.history(dm, None, 100).await.unwrap().len(), 4);
}

struct Flaky {
    inner: Arc<dyn Store>,
    broken: AtomicBool,
    lands: usize,
    failed_applies: AtomicUsize,
    failed: Notify,
    /// [`Store::cid`] calls.
    cid_reads: AtomicUsize,
    /// [`Store::is_blocked`] calls.
    block_reads: AtomicUsize,
    /// While set, a staged batch waits for [`Flaky::sync`] to become
    /// durable (and is stored only then) or to fail (and is not).
    deferred: AtomicBool,
    syncs: Mutex<Vec<tokio::sync::oneshot::Sender<bool>>>,
    /// While set, the store behaves as the CQL one does: it does not index
    /// every message's cid ([`Store::indexes_cids`]), and [`Store::cid`]
    /// finds only what a `Write::CidIndex` indexed (kept here).
    unindexed: AtomicBool,
    index: Mutex<std::collections::HashMap<(String, String), CidHit>>,
}

impl Flaky {
    /// One that stores everything (counting reads, and deferring when asked).
    fn working(inner: Arc<dyn Store>) -> Arc<Flaky> {
        let flaky = Flaky::new(inner, 0);
        flaky.broken.store(false, Ordering::SeqCst);
        Arc::new(flaky)
    }

    fn new(inner: Arc<dyn Store>, lands: usize) -> Flaky {
        Flaky {
            inner,
            broken: AtomicBool::new(true),
            lands,
            failed_applies: AtomicUsize::new(0),
            failed: Notify::new(),
            cid_reads: AtomicUsize::new(0),
            block_reads: AtomicUsize::new(0),
            deferred: AtomicBool::new(false),
            syncs: Mutex::new(Vec::new()),
            unindexed: AtomicBool::new(false),
            index: Mutex::default(),
        }
    }

    /// Keeps the `Write::CidIndex`es of `batch`.
    fn index(&self, batch: &WriteBatch) {
        let mut index = self.index.lock().unwrap();
        for w in batch {
            if let confab_store::Write::CidIndex { room, key, hit } = w {
                index.insert((room.clone(), key.clone()), hit.clone());
            }
        }
    }

    /// Ends the oldest staged batch's wait: durable when `ok`, else failed.
    fn sync(&self, ok: bool) {
        let mut syncs = self.syncs.lock().unwrap();
        assert!(!syncs.is_empty(), "nothing is staged");
        let _ = syncs.remove(0).send(ok);
    }
}

fn down() -> confab_store::Error {
    confab_store::Error::Other("down".into())
}

#[async_trait]
impl Store for Flaky {
    async fn ping(&self) -> confab_store::Result<()> {
        self.inner.ping().await
    }
    async fn create_user(&self, user: &UserRecord) -> confab_store::Result<bool> {
        self.inner.create_user(user).await
    }
    async fn user(&self, name: &str) -> confab_store::Result<Option<UserRecord>> {
        self.inner.user(name).await
    }
    async fn set_profile(&self, profile: &confab_protocol::Profile) -> confab_store::Result<bool> {
        self.inner.set_profile(profile).await
    }
    async fn profiles(&self, users: &[String]) -> confab_store::Result<Vec<confab_protocol::Profile>> {
        self.inner.profiles(users).await
    }
    async fn set_password(&self, name: &str, password_hash: &str) -> confab_store::Result<bool> {
        self.inner.set_password(name, password_hash).await
    }
    async fn tokens_valid_after(&self, user: &str) -> confab_store::Result<u64> {
        self.inner.tokens_valid_after(user).await
    }
    async fn revoke_tokens_before(&self, user: &str, before_ms: u64) -> confab_store::Result<()> {
        self.inner.revoke_tokens_before(user, before_ms).await
    }
    async fn revoke_token(&self, jti: &str, exp: u64) -> confab_store::Result<()> {
        self.inner.revoke_token(jti, exp).await
    }
    async fn is_token_revoked(&self, jti: &str) -> confab_store::Result<bool> {
        self.inner.is_token_revoked(jti).await
    }
    async fn room(&self, room: &str) -> confab_store::Result<Option<RoomMeta>> {
        self.inner.room(room).await
    }
    async fn is_member(&self, room: &str, user: &str) -> confab_store::Result<bool> {
        self.inner.is_member(room, user).await
    }
    async fn members(&self, room: &str) -> confab_store::Result<Vec<String>> {
        self.inner.members(room).await
    }
    async fn user_rooms(&self, user: &str) -> confab_store::Result<Vec<RoomInfo>> {
        self.inner.user_rooms(user).await
    }
    async fn read_marker(&self, room: &str, user: &str) -> confab_store::Result<u64> {
        self.inner.read_marker(room, user).await
    }
    async fn ordinal_at(&self, room: &str, seq: u64) -> confab_store::Result<Option<(u64, u64)>> {
        self.inner.ordinal_at(room, seq).await
    }
    async fn tally(&self, room: &str, user: &str, seq: u64) -> confab_store::Result<confab_store::Tally> {
        self.inner.tally(room, user, seq).await
    }
    async fn history(&self, room: &str, before: Option<u64>, limit: u32) -> confab_store::Result<Vec<Message>> {
        self.inner.history(room, before, limit).await
    }
    async fn since(&self, room: &str, after: u64, limit: u32) -> confab_store::Result<(Vec<Message>, bool)> {
        self.inner.since(room, after, limit).await
    }
    async fn cid(&self, room: &str, cid: &str) -> confab_store::Result<Option<CidHit>> {
        self.cid_reads.fetch_add(1, Ordering::SeqCst);
        if self.unindexed.load(Ordering::SeqCst) {
            return Ok(self.index.lock().unwrap().get(&(room.to_owned(), cid.to_owned())).cloned());
        }
        self.inner.cid(room, cid).await
    }
    fn indexes_cids(&self) -> bool {
        !self.unindexed.load(Ordering::SeqCst)
    }
    async fn room_settings(&self, room: &str) -> confab_store::Result<Option<confab_store::RoomSettings>> {
        self.inner.room_settings(room).await
    }
    async fn member(&self, room: &str, user: &str) -> confab_store::Result<Option<confab_store::MemberRecord>> {
        self.inner.member(room, user).await
    }
    async fn members_page(
        &self,
        room: &str,
        after: Option<&str>,
        limit: u32,
    ) -> confab_store::Result<Vec<confab_protocol::rooms::MemberEntry>> {
        self.inner.members_page(room, after, limit).await
    }
    async fn is_invited(&self, room: &str, user: &str) -> confab_store::Result<bool> {
        self.inner.is_invited(room, user).await
    }
    async fn is_banned(&self, room: &str, user: &str) -> confab_store::Result<bool> {
        self.inner.is_banned(room, user).await
    }
    async fn invitations(&self, user: &str) -> confab_store::Result<Vec<String>> {
        self.inner.invitations(user).await
    }
    async fn public_rooms(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> confab_store::Result<Vec<confab_store::PublicRoom>> {
        self.inner.public_rooms(after, limit).await
    }
    async fn apply(&self, batch: WriteBatch) -> confab_store::Result<()> {
        self.index(&batch);
        if self.broken.load(Ordering::SeqCst) {
            let lands: WriteBatch = batch.into_iter().take(self.lands).collect();
            if !lands.is_empty() {
                self.inner.apply(lands).await?;
            }
            self.failed_applies.fetch_add(1, Ordering::SeqCst);
            self.failed.notify_one();
            return Err(down());
        }
        self.inner.apply(batch).await
    }
    async fn stage(&self, batch: WriteBatch) -> confab_store::Result<confab_store::Durable> {
        if !self.deferred.load(Ordering::SeqCst) {
            self.apply(batch).await?;
            return Ok(Box::pin(std::future::ready(Ok(()))));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.syncs.lock().unwrap().push(tx);
        let inner = self.inner.clone();
        Ok(Box::pin(async move {
            match rx.await {
                Ok(true) => inner.apply(batch).await,
                _ => Err(down()),
            }
        }))
    }
    async fn checkpoints(&self) -> confab_store::Result<Vec<(u32, u64)>> {
        self.inner.checkpoints().await
    }
    async fn bind_partitions(&self, partitions: u32) -> confab_store::Result<()> {
        self.inner.bind_partitions(partitions).await
    }
    async fn contact_ask(&self, user: &str, other: &str, max: usize) -> confab_store::Result<bool> {
        self.inner.contact_ask(user, other, max).await
    }
    async fn contact_end(&self, a: &str, b: &str) -> confab_store::Result<()> {
        self.inner.contact_end(a, b).await
    }
    async fn contacts(&self, user: &str) -> confab_store::Result<Vec<confab_store::ContactRecord>> {
        self.inner.contacts(user).await
    }
    async fn block(&self, user: &str, other: &str, max: usize) -> confab_store::Result<bool> {
        self.inner.block(user, other, max).await
    }
    async fn unblock(&self, user: &str, other: &str) -> confab_store::Result<()> {
        self.inner.unblock(user, other).await
    }
    async fn blocks(&self, user: &str) -> confab_store::Result<Vec<String>> {
        self.inner.blocks(user).await
    }
    async fn is_blocked(&self, user: &str, other: &str) -> confab_store::Result<bool> {
        self.block_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.is_blocked(user, other).await
    }
    async fn delete_user(&self, name: &str) -> confab_store::Result<bool> {
        self.inner.delete_user(name).await
    }
    async fn successor(&self, room: &str, leaving: &str) -> confab_store::Result<Option<String>> {
        self.inner.successor(room, leaving).await
    }
    async fn message(&self, room: &str, seq: u64) -> confab_store::Result<Option<confab_store::MessageState>> {
        self.inner.message(room, seq).await
    }
    async fn reacted(&self, room: &str, seq: u64, emoji: &str, user: &str) -> confab_store::Result<bool> {
        self.inner.reacted(room, seq, emoji, user).await
    }
    async fn edits(&self, room: &str, seq: u64) -> confab_store::Result<Vec<confab_protocol::lifecycle::Version>> {
        self.inner.edits(room, seq).await
    }
    async fn changes(&self, room: &str, after: u64, limit: u32) -> confab_store::Result<(Vec<(u64, u64)>, bool)> {
        self.inner.changes(room, after, limit).await
    }
    async fn member_event(&self, room: &str, at: u64) -> confab_store::Result<Option<confab_store::MemberEvent>> {
        self.inner.member_event(room, at).await
    }
    async fn put_upload(&self, upload: &confab_store::UploadRecord) -> confab_store::Result<()> {
        self.inner.put_upload(upload).await
    }
    async fn upload(&self, id: &str) -> confab_store::Result<Option<confab_store::UploadRecord>> {
        self.inner.upload(id).await
    }
    async fn drop_user_uploads(&self, user: &str) -> confab_store::Result<()> {
        self.inner.drop_user_uploads(user).await
    }
    async fn due_uploads(&self, before_ms: u64, limit: u32) -> confab_store::Result<Vec<confab_store::UploadRecord>> {
        self.inner.due_uploads(before_ms, limit).await
    }
    async fn delete_upload(&self, upload: &confab_store::UploadRecord) -> confab_store::Result<()> {
        self.inner.delete_upload(upload).await
    }
}

#[tokio::test]
async fn while_the_store_fails_nothing_is_acked_and_the_batch_lands_when_it_returns() {
    let (_dir, inner) = open();
    let flaky = Arc::new(Flaky::new(inner.clone(), 0));
    let push = Captured::default();
    let mut p = pipeline(flaky.clone(), push.clone());
    let work = tokio::spawn(async move { p.process(vec![join(0, "r", "alice"), send(1, "r", "alice", "c1")]).await });
    while flaky.failed_applies.load(Ordering::SeqCst) < 3 {
        flaky.failed.notified().await;
    }
    assert!(push.take().is_empty(), "no reply or event while the batch is not stored");
    assert!(!work.is_finished(), "the offsets are not handed back for commit");
    flaky.broken.store(false, Ordering::SeqCst);
    assert_eq!(work.await.unwrap(), Some(vec![(0, 2)]));
    let replies: Vec<Value> =
        push.take().iter().filter(|(_, d)| matches!(d, Delivery::Reply { .. })).map(|(_, d)| frame(d)).collect();
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[1]["seq"], 2);
    assert_eq!(inner.history("r", None, 10).await.unwrap().len(), 1);
}

/// A pipeline on a working [`Flaky`] whose room `r` alice joined, and
/// which from now on holds staged batches until [`Flaky::sync`].
async fn deferring() -> (tempfile::TempDir, Arc<dyn Store>, Arc<Flaky>, Captured, Pipeline) {
    let (dir, inner) = open();
    let flaky = Flaky::working(inner.clone());
    let push = Captured::default();
    let mut p = pipeline(flaky.clone(), push.clone());
    p.process(vec![join(0, "r", "alice")]).await.unwrap();
    push.take();
    flaky.deferred.store(true, Ordering::SeqCst);
    (dir, inner, flaky, push, p)
}

/// Replies and events of a staged batch leave once it is durable, batch by
/// batch in order, while the next batch was decided meanwhile.
#[tokio::test]
async fn a_staged_batch_is_acked_only_once_durable_and_in_order() {
    let (_dir, inner, flaky, push, mut p) = deferring().await;
    p.stage(vec![send(1, "r", "alice", "c1")]).await.unwrap();
    p.stage(vec![send(2, "r", "alice", "c2")]).await.unwrap();
    assert_eq!(p.in_flight(), 2, "the second batch was decided while the first was not durable");
    assert!(push.take().is_empty(), "nothing leaves before it is durable");
    flaky.sync(true);
    let durable = p.durable().await;
    assert_eq!(p.settle(durable).await, Some(vec![(0, 2)]));
    let replies = |pushed: Vec<(String, Delivery)>| -> Vec<Value> {
        pushed.iter().filter(|(_, d)| matches!(d, Delivery::Reply { .. })).map(|(_, d)| frame(d)).collect()
    };
    let first = replies(push.take());
    assert_eq!(first.len(), 1, "the first batch's reply only: {first:?}");
    assert_eq!((first[0]["ok"].as_bool(), first[0]["seq"].as_u64()), (Some(true), Some(2)));
    flaky.sync(true);
    assert_eq!(p.settle_all().await, Some(vec![(0, 3)]));
    let second = replies(push.take());
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(second[0]["seq"], 3);
    let seqs: Vec<u64> = inner.history("r", None, 10).await.unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [2, 3]);
}

/// A batch that fails to become durable is not acked, nor is the batch
/// decided on top of it: both are decided again and acked once stored, each
/// message once, at the seq its record gives it.
#[tokio::test]
async fn a_failed_sync_acks_nothing_it_covers_and_redecides_what_was_staged_on_top() {
    let (_dir, inner, flaky, push, mut p) = deferring().await;
    p.stage(vec![send(1, "r", "alice", "c1")]).await.unwrap();
    p.stage(vec![send(2, "r", "alice", "c2"), send(3, "r", "alice", "c1")]).await.unwrap();
    // The store works again for what is decided next; the first sync fails.
    flaky.deferred.store(false, Ordering::SeqCst);
    flaky.sync(false);
    let durable = p.durable().await;
    assert!(durable.is_err());
    assert!(inner.history("r", None, 10).await.unwrap().is_empty());
    assert_eq!(p.settle(durable).await, Some(vec![]), "no offset to commit");
    assert!(push.take().is_empty(), "neither the failed batch nor the one on top of it is acked");
    assert_eq!(p.in_flight(), 2, "both batches decided again");
    assert_eq!(p.settle_all().await, Some(vec![(0, 4)]));
    let replies: Vec<Value> =
        push.take().iter().filter(|(_, d)| matches!(d, Delivery::Reply { .. })).map(|(_, d)| frame(d)).collect();
    let seqs: Vec<Option<u64>> = replies.iter().map(|r| r["seq"].as_u64()).collect();
    assert_eq!(seqs, [Some(2), Some(3), Some(2)], "c1, c2, then c1 again answered with its first message");
    let stored: Vec<u64> = inner.history("r", None, 10).await.unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(stored, [2, 3]);
    assert_eq!(inner.checkpoints().await.unwrap(), [(0, 4)]);
}

#[tokio::test]
async fn room_events_go_only_to_gateways_that_host_the_room() {
    let (_dir, store) = open();
    let push = Captured::default();
    let mut p = pipeline(store.clone(), push.clone());
    let hosts = |gateway: &str, room: &str| Announcement::Hosts {
        gateway: gateway.into(),
        rooms_added: vec![room.into()],
        rooms_removed: vec![],
        users_added: vec![],
        users_removed: vec![],
    };
    p.routes.apply(&hosts("gw-2", "r"));
    p.routes.apply(&hosts("gw-3", "elsewhere"));
    p.process(vec![join(0, "r", "alice"), send(1, "r", "alice", "c1")]).await.unwrap();
    let pushed = push.take();
    let events: Vec<&str> =
        pushed.iter().filter(|(_, d)| matches!(d, Delivery::Room { .. })).map(|(g, _)| g.as_str()).collect();
    // gw-1 (the joiner's gateway, learnt from the join record) and gw-2 (announced) host "r"; gw-3 does not.
    let mut gateways: Vec<&str> = events.clone();
    gateways.sort();
    gateways.dedup();
    assert_eq!(gateways, ["gw-1", "gw-2"]);
    assert_eq!(events.len(), 4, "a member event and a msg event, once per hosting gateway");
}

/// A message stored while a gateway's announcement that it now hosts the
/// room was on the way reached none of its sessions; the gateway gets the
/// room's newest `msg` event when the announcement lands, so its sessions
/// see the message or its gap. A gateway that hosted the room already, or a
/// room with no message lately, gets nothing more.
#[tokio::test]
async fn a_gateway_that_starts_hosting_a_room_gets_its_newest_message_event() {
    let (_dir, store) = open();
    let push = Captured::default();
    let mut p = pipeline(store.clone(), push.clone());
    let hosts = |gateway: &str, rooms: &[&str]| Announcement::Hosts {
        gateway: gateway.into(),
        rooms_added: rooms.iter().map(|r| r.to_string()).collect(),
        rooms_removed: vec![],
        users_added: vec![],
        users_removed: vec![],
    };
    p.process(vec![join(0, "r", "alice"), send(1, "r", "alice", "c1"), send(2, "r", "alice", "c2")]).await.unwrap();
    p.process(vec![join(3, "quiet", "alice")]).await.unwrap();
    push.take();
    // gw-2 starts hosting "r" (and "quiet", which has no message): the newest event of "r", to gw-2 only.
    p.learn(&hosts("gw-2", &["r", "quiet"])).await;
    let pushed = push.take();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    let (gateway, delivery) = &pushed[0];
    let event = frame(delivery);
    assert_eq!(gateway, "gw-2");
    assert_eq!(
        (event["ev"].as_str(), event["seq"].as_u64(), event["prev_seq"].as_u64()),
        (Some("msg"), Some(3), Some(2))
    );
    assert_eq!(event["cid"], "c2");
    // It hosts "r" from now on: announced again, nothing is sent again.
    p.learn(&hosts("gw-2", &["r"])).await;
    // gw-1 hosted "r" already (the join record routed it there).
    p.learn(&hosts("gw-1", &["r"])).await;
    assert!(push.take().is_empty());
    // And the route works: the next message goes to both.
    p.process(vec![send(4, "r", "alice", "c3")]).await.unwrap();
    let mut events: Vec<String> =
        push.take().into_iter().filter(|(_, d)| matches!(d, Delivery::Room { .. })).map(|(g, _)| g).collect();
    events.sort();
    assert_eq!(events, ["gw-1", "gw-2"]);
}

#[tokio::test]
async fn a_first_direct_message_makes_both_users_members() {
    let (_dir, store) = open();
    accounts(&*store, &["alice", "bob", "carol"]).await;
    let push = Captured::default();
    let mut p = pipeline(store.clone(), push.clone());
    p.process(vec![send(0, "dm:alice:bob", "alice", "c1"), send(1, "dm:alice:bob", "carol", "c2")]).await.unwrap();
    assert!(store.is_member("dm:alice:bob", "alice").await.unwrap());
    assert!(store.is_member("dm:alice:bob", "bob").await.unwrap());
    let replies: Vec<Value> =
        push.take().iter().filter(|(_, d)| matches!(d, Delivery::Reply { .. })).map(|(_, d)| frame(d)).collect();
    assert_eq!(replies[0]["ok"], true);
    assert_eq!(replies[1]["error"]["code"], "not_member", "a third user cannot write into a DM");
}

#[tokio::test]
async fn a_dm_whose_first_batch_landed_in_part_is_completed_when_its_record_comes_again() {
    let (_dir, inner) = open();
    accounts(&*inner, &["alice", "bob"]).await;
    let room = "dm:alice:bob";
    // Of the batch [join alice, join bob, message], only alice's membership
    // lands before the store fails, and the dispatcher is stopped.
    let flaky = Arc::new(Flaky::new(inner.clone(), 1));
    let push = Captured::default();
    let shutdown = CancellationToken::new();
    let mut first = stoppable_pipeline(flaky.clone(), push.clone(), shutdown.clone());
    let work = tokio::spawn(async move { first.process(vec![send(0, room, "alice", "c1")]).await });
    flaky.failed.notified().await;
    shutdown.cancel();
    assert_eq!(work.await.unwrap(), None, "nothing to commit");
    assert!(push.take().is_empty(), "no ack for an unstored message");
    assert!(inner.is_member(room, "alice").await.unwrap() && !inner.is_member(room, "bob").await.unwrap());
    // The partition's next owner gets the record again.
    let mut second = pipeline(inner.clone(), push.clone());
    second.resume_from(inner.checkpoints().await.unwrap());
    assert_eq!(second.process(vec![send(0, room, "alice", "c1")]).await, Some(vec![(0, 1)]));
    assert!(inner.is_member(room, "bob").await.unwrap(), "bob is a member of his DM");
    let rooms: Vec<String> = inner.user_rooms("bob").await.unwrap().into_iter().map(|r| r.room).collect();
    assert_eq!(rooms, [room]);
    assert_eq!(inner.history(room, None, 10).await.unwrap().len(), 1);
    let replies: Vec<Value> =
        push.take().iter().filter(|(_, d)| matches!(d, Delivery::Reply { .. })).map(|(_, d)| frame(d)).collect();
    assert_eq!((replies.len(), &replies[0]["seq"]), (1, &Value::from(1)));
}

#[tokio::test]
async fn a_batch_stored_in_part_counts_each_message_once_when_it_comes_again() {
    let (_dir, inner) = open();
    let push = Captured::default();
    pipeline(inner.clone(), push.clone()).process(vec![join(0, "r", "alice"), join(1, "r", "bob")]).await.unwrap();
    // Everything of the next batch lands but its checkpoint (as on a CQL
    // store that failed at the end), and its dispatcher stops.
    let batch = || vec![send(2, "r", "alice", "c1"), send(3, "r", "alice", "c2")];
    let flaky = Arc::new(Flaky::new(inner.clone(), 6));
    let shutdown = CancellationToken::new();
    let mut first = stoppable_pipeline(flaky.clone(), push.clone(), shutdown.clone());
    let work = tokio::spawn(async move { first.process(batch()).await });
    flaky.failed.notified().await;
    shutdown.cancel();
    assert_eq!(work.await.unwrap(), None);
    assert_eq!(inner.room("r").await.unwrap().unwrap().messages, 2, "the counts landed");
    // The next owner decides the batch again from the store: the room as it
    // was before the batch, not as its first attempt left it.
    let mut second = pipeline(inner.clone(), push.clone());
    second.resume_from(inner.checkpoints().await.unwrap());
    second.process(batch()).await.unwrap();
    assert_eq!(inner.room("r").await.unwrap().unwrap().messages, 2);
    let bob = inner.user_rooms("bob").await.unwrap();
    assert_eq!((bob[0].unread, bob[0].last_seq), (2, 4));
    assert_eq!(inner.tally("r", "alice", 99).await.unwrap().own, 2);
}
