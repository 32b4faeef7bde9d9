//! The contract every [`Store`] backend passes.
//!
//! A backend's tests call `store_contract_tests!(open)` where `open` is an
//! `async fn() -> (Guard, impl Store)` that yields a fresh, empty store (the
//! guard keeps its resources alive, e.g. a temp dir or a keyspace).

use confab_protocol::message::cid_key;
use confab_protocol::{Message, Profile, RoomInfo};

use confab_protocol::rooms::MemberEntry;
use confab_protocol::{Role, Visibility};

use crate::{
    CidHit, Error, MUTED_FOREVER, MemberRecord, PublicRoom, RoomMeta, RoomSettings, Store, UserRecord, Write,
    WriteBatch,
};

mod lifecycle;
mod member_events;
mod unread;
mod uploads;
pub use lifecycle::*;
pub use member_events::*;
pub use unread::*;
pub use uploads::*;

#[macro_export]
macro_rules! store_contract_tests {
    ($open:path) => {
        $crate::store_contract_tests!(@each $open,
            users_are_created_once_and_found_by_name,
            profiles_belong_to_accounts_and_are_read_in_the_order_asked,
            passwords_change_and_tokens_are_revoked,
            joining_creates_the_room_and_counts_each_member_once,
            the_member_count_is_kept_exact_through_joins_leaves_kicks_bans_and_erasures,
            leaving_removes_the_member_and_their_room,
            history_returns_the_newest_before_a_seq_oldest_first,
            since_pages_forward_and_says_when_more_remain,
            a_cid_finds_the_first_message_stored_under_it,
            recent_cids_are_read_from_the_newest_messages,
            read_markers_are_stored_per_member_and_go_with_membership,
            user_rooms_carry_last_and_read_seqs,
            checkpoints_land_with_their_batch,
            staged_batches_are_readable_at_once_and_durable_in_order,
            a_stale_write_cannot_undo_a_later_one,
            the_partition_count_cannot_change,
            a_room_nobody_joined_does_not_exist,
            room_settings_are_stored_and_list_public_rooms_in_order,
            roles_and_mutes_belong_to_the_membership,
            members_page_in_name_order_with_their_roles,
            invitations_are_listed_per_user_until_withdrawn,
            bans_are_set_and_lifted_in_log_order,
            contacts_are_asks_that_meet_and_are_bounded,
            blocks_are_per_user_and_bounded,
            a_deleted_account_keeps_its_name_and_loses_the_rest,
            ownership_passes_to_the_oldest_admin_else_the_oldest_member,
            an_erasure_blanks_the_users_messages_in_the_room_only,
            edits_keep_earlier_versions_and_a_stale_edit_changes_nothing,
            a_deletion_drops_text_versions_and_reactions,
            reactions_count_each_user_once_and_list_twenty_names,
            changes_page_forward_by_position,
            an_erasure_deletes_the_users_versions_and_reactions,
            an_edit_keeps_mentions_and_a_deletion_drops_them,
            counts_give_exact_unread_and_mentions_across_seq_gaps,
            a_dm_s_tallies_read_back_at_every_seq,
            notify_levels_and_tallies_go_with_the_membership,
            a_rooms_retention_is_a_setting,
            uploads_are_attached_with_their_message_and_swept_when_never_sent,
            a_deleted_message_drops_its_uploads_and_loses_its_attachments,
            a_deleted_account_drops_its_uploads_only,
            member_events_are_read_by_position_and_kept_for_a_bounded_time
        );
    };
    (@each $open:path, $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, store) = $open().await;
                $crate::contract::$name(&store).await;
            }
        )*
    };
}

pub fn message(room: &str, seq: u64, from: &str, cid: &str) -> Message {
    Message {
        room: room.into(),
        seq,
        msg_id: format!("{room}-{seq}"),
        from: from.into(),
        text: format!("message {seq}"),
        ts: 1_700_000_000_000 + seq,
        cid: cid.into(),
        ..Message::default()
    }
}

/// Alice joins `room` and sends `n` messages with seqs 1..=n.
/// `batch` with a [`Write::CidIndex`] after each message, as the dispatcher
/// writes it for a room whose cids it does not hold on a store that does
/// not index every message's cid ([`Store::indexes_cids`]).
pub fn with_cid_index(store: &impl Store, batch: WriteBatch) -> WriteBatch {
    if store.indexes_cids() {
        return batch;
    }
    let mut out = Vec::with_capacity(batch.len() * 2);
    for w in batch {
        let index = match &w {
            Write::Message(m) => Some(Write::CidIndex {
                room: m.room.clone(),
                key: cid_key(&m.from, &m.cid),
                hit: CidHit { seq: m.seq, msg_id: m.msg_id.clone(), ts: m.ts },
            }),
            _ => None,
        };
        out.push(w);
        out.extend(index);
    }
    out
}

pub fn some_messages(room: &str, n: u64) -> WriteBatch {
    let mut batch = vec![Write::Join { room: room.into(), user: "alice".into(), at: 0, members: 1 }];
    batch.extend((1..=n).map(|seq| Write::Message(message(room, seq, "alice", &format!("c{seq}")))));
    batch
}

pub(crate) fn join(room: &str, user: &str) -> Write {
    Write::Join { room: room.into(), user: user.into(), at: 0, members: 1 }
}

pub async fn users_are_created_once_and_found_by_name(store: &impl Store) {
    let alice = UserRecord { name: "alice".into(), password_hash: "$argon2id$x".into(), created_ms: 1, bot: false };
    assert!(store.create_user(&alice).await.unwrap());
    let again = UserRecord { password_hash: "other".into(), ..alice.clone() };
    assert!(!store.create_user(&again).await.unwrap(), "a taken name is refused");
    assert_eq!(store.user("alice").await.unwrap(), Some(alice));
    assert_eq!(store.user("bob").await.unwrap(), None);
    let robot = UserRecord { name: "robot".into(), password_hash: String::new(), created_ms: 2, bot: true };
    assert!(store.create_user(&robot).await.unwrap());
    assert_eq!(store.user("robot").await.unwrap(), Some(robot), "a bot account keeps its flag");
}

pub async fn profiles_belong_to_accounts_and_are_read_in_the_order_asked(store: &impl Store) {
    for name in ["alice", "bob"] {
        let user = UserRecord { name: name.into(), password_hash: String::new(), created_ms: 1, bot: false };
        assert!(store.create_user(&user).await.unwrap());
    }
    let profile = |user: &str, display_name: &str, avatar: &str| Profile {
        user: user.into(),
        display_name: display_name.into(),
        avatar: avatar.into(),
        bot: false,
    };
    let ghost = profile("ghost", "Ghost", "");
    assert!(!store.set_profile(&ghost).await.unwrap(), "no profile without an account");
    let alice = profile("alice", "Alice", "https://example.com/a.png");
    assert!(store.set_profile(&alice).await.unwrap());
    let names = ["bob", "ghost", "alice", "bob"].map(String::from);
    assert_eq!(store.profiles(&names).await.unwrap(), [profile("bob", "", ""), alice.clone()]);
    let renamed = profile("alice", "Alice L.", "");
    assert!(store.set_profile(&renamed).await.unwrap());
    assert_eq!(store.profiles(&["alice".into()]).await.unwrap(), [renamed]);
    assert_eq!(store.profiles(&[]).await.unwrap(), []);
    let robot = UserRecord { name: "robot".into(), password_hash: String::new(), created_ms: 1, bot: true };
    assert!(store.create_user(&robot).await.unwrap());
    let robot = Profile { bot: true, ..profile("robot", "", "") };
    assert_eq!(store.profiles(&["robot".into(), "bob".into()]).await.unwrap(), [robot.clone(), profile("bob", "", "")]);
    let named = Profile { display_name: "Robot".into(), ..robot };
    assert!(store.set_profile(&named).await.unwrap());
    assert_eq!(store.profiles(&["robot".into()]).await.unwrap(), [named], "a profile change keeps the flag");
}

pub async fn passwords_change_and_tokens_are_revoked(store: &impl Store) {
    let alice = UserRecord { name: "alice".into(), password_hash: "old".into(), created_ms: 1, bot: false };
    assert!(store.create_user(&alice).await.unwrap());
    assert!(store.set_password("alice", "new").await.unwrap());
    assert_eq!(store.user("alice").await.unwrap().unwrap().password_hash, "new");
    assert!(!store.set_password("ghost", "x").await.unwrap());

    assert_eq!(store.tokens_valid_after("alice").await.unwrap(), 0);
    store.revoke_tokens_before("alice", 2_000).await.unwrap();
    store.revoke_tokens_before("alice", 1_000).await.unwrap();
    assert_eq!(store.tokens_valid_after("alice").await.unwrap(), 2_000, "a floor never moves back");
    assert_eq!(store.tokens_valid_after("bob").await.unwrap(), 0);

    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    assert!(!store.is_token_revoked("t1").await.unwrap());
    store.revoke_token("t1", exp).await.unwrap();
    assert!(store.is_token_revoked("t1").await.unwrap());
    assert!(!store.is_token_revoked("t2").await.unwrap());
}

pub async fn joining_creates_the_room_and_counts_each_member_once(store: &impl Store) {
    let join = |user: &str, at, members| Write::Join { room: "r".into(), user: user.into(), at, members };
    store.apply(vec![join("alice", 1, 1), join("bob", 2, 2), join("alice", 1, 1)]).await.unwrap();
    let meta = store.room("r").await.unwrap().unwrap();
    assert_eq!(
        RoomMeta { members_at: 0, ..meta },
        RoomMeta { last_seq: 0, members: 2, members_at: 0, messages: 0, last_change: 0 }
    );
    let mut members = store.members("r").await.unwrap();
    members.sort();
    assert_eq!(members, ["alice", "bob"]);
    assert!(store.is_member("r", "bob").await.unwrap());
    assert!(!store.is_member("r", "carol").await.unwrap());
    assert!(!store.is_member("r2", "bob").await.unwrap());
}

/// The count `room_info` and the directory show is the one kept with each
/// membership write (never a scan), and stays exact: a kick is a leave, a
/// ban a ban and a leave, an account's erasure an erasure and a leave.
pub async fn the_member_count_is_kept_exact_through_joins_leaves_kicks_bans_and_erasures(store: &impl Store) {
    let join = |user: &str, at, members| Write::Join { room: "r".into(), user: user.into(), at, members };
    let leave = |user: &str, at, members| Write::Leave { room: "r".into(), user: user.into(), at, members };
    let users = ["owner", "amy", "bob", "cat", "dan", "eve"];
    store.apply(users.iter().zip(1..).map(|(user, n)| join(user, n, n)).collect()).await.unwrap();
    let check = |expected: u64, last_at: u64| async move {
        let meta = store.room("r").await.unwrap().unwrap();
        assert_eq!(meta.members, expected);
        assert!(meta.members_at == 0 || meta.members_at == last_at, "{meta:?}");
        assert_eq!(store.count_members("r").await.unwrap(), expected, "the kept count is the exact one");
        assert_eq!(store.members("r").await.unwrap().len() as u64, expected);
    };
    check(6, 6).await;
    // amy leaves; bob is kicked.
    store.apply(vec![leave("amy", 7, 5)]).await.unwrap();
    store.apply(vec![leave("bob", 8, 4)]).await.unwrap();
    check(4, 8).await;
    // cat is banned.
    store
        .apply(vec![Write::Ban { room: "r".into(), user: "cat".into(), banned: true, at: 9 }, leave("cat", 9, 3)])
        .await
        .unwrap();
    check(3, 9).await;
    // dan's account is erased.
    store
        .apply(vec![Write::Erase { room: "r".into(), user: "dan".into(), at: 10 }, leave("dan", 10, 2)])
        .await
        .unwrap();
    check(2, 10).await;
    // Stale writes replayed (a zombie dispatcher) change nothing.
    store.apply(vec![join("amy", 2, 2), leave("eve", 5, 5)]).await.unwrap();
    check(2, 10).await;
    // Bob comes back.
    store.apply(vec![join("bob", 11, 3)]).await.unwrap();
    check(3, 11).await;
    assert_eq!(store.room("s").await.unwrap(), None, "a room nobody joined has no count");
}

pub async fn leaving_removes_the_member_and_their_room(store: &impl Store) {
    let bob = Write::Join { room: "r".into(), user: "bob".into(), at: 0, members: 2 };
    store.apply(vec![join("r", "alice"), bob, join("s", "bob")]).await.unwrap();
    store
        .apply(vec![
            Write::Leave { room: "r".into(), user: "bob".into(), at: 1, members: 1 },
            Write::Leave { room: "r".into(), user: "carol".into(), at: 1, members: 1 },
        ])
        .await
        .unwrap();
    assert_eq!(store.members("r").await.unwrap(), ["alice"]);
    assert_eq!(store.room("r").await.unwrap().unwrap().members, 1);
    let rooms: Vec<String> = store.user_rooms("bob").await.unwrap().into_iter().map(|r| r.room).collect();
    assert_eq!(rooms, ["s"]);
}

pub async fn history_returns_the_newest_before_a_seq_oldest_first(store: &impl Store) {
    store.apply(some_messages("r", 10)).await.unwrap();
    store.apply(some_messages("r-other", 3)).await.unwrap();
    let seqs = |v: Vec<Message>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.history("r", None, 3).await.unwrap()), [8, 9, 10]);
    assert_eq!(seqs(store.history("r", Some(8), 3).await.unwrap()), [5, 6, 7]);
    assert_eq!(seqs(store.history("r", Some(3), 50).await.unwrap()), [1, 2]);
    assert_eq!(seqs(store.history("r", Some(1), 50).await.unwrap()), Vec::<u64>::new());
    assert_eq!(seqs(store.history("nowhere", None, 50).await.unwrap()), Vec::<u64>::new());
    let m = &store.history("r", None, 1).await.unwrap()[0];
    assert_eq!(m, &message("r", 10, "alice", "c10"), "every field survives storage");
}

pub async fn since_pages_forward_and_says_when_more_remain(store: &impl Store) {
    store.apply(some_messages("r", 5)).await.unwrap();
    let (page, more) = store.since("r", 0, 2).await.unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
    assert!(more);
    let (page, more) = store.since("r", 3, 2).await.unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [4, 5]);
    assert!(!more, "no message after 5");
    let (page, more) = store.since("r", 5, 2).await.unwrap();
    assert!(page.is_empty() && !more);
    let (page, _) = store.since("r", u64::MAX, 2).await.unwrap();
    assert!(page.is_empty());
    // A limit of 0 only asks whether any message is newer (what `sync`
    // says of a room its budget did not reach).
    assert_eq!(store.since("r", 4, 0).await.unwrap(), (vec![], true));
    assert_eq!(store.since("r", 5, 0).await.unwrap(), (vec![], false));
    assert_eq!(store.since("nowhere", 0, 0).await.unwrap(), (vec![], false));
}

/// What the dispatcher's cid memory is filled from, on every store with or
/// without an index of each cid: the newest messages' cids, newest first,
/// across buckets; erased authors' messages left out but counted.
pub async fn recent_cids_are_read_from_the_newest_messages(store: &impl Store) {
    store
        .apply(vec![
            join("r", "alice"),
            join("r", "bob"),
            Write::Message(message("r", 1, "alice", "a1")),
            Write::Message(message("r", 2, "bob", "b1")),
            Write::Message(message("r", 70_000, "bob", "b2")),
            Write::Message(message("r", 70_001, "alice", "a2")),
            Write::Erase { room: "r".into(), user: "alice".into(), at: 80_000 },
        ])
        .await
        .unwrap();
    let hit = |seq: u64| CidHit { seq, msg_id: format!("r-{seq}"), ts: 1_700_000_000_000 + seq };
    let (hits, oldest) = store.recent_cids("r", 10).await.unwrap();
    assert_eq!(hits, [(cid_key("bob", "b2"), hit(70_000)), (cid_key("bob", "b1"), hit(2))]);
    assert_eq!(oldest, None, "fewer than asked: the room has no more");
    let (hits, oldest) = store.recent_cids("r", 3).await.unwrap();
    assert_eq!(hits, [(cid_key("bob", "b2"), hit(70_000)), (cid_key("bob", "b1"), hit(2))]);
    assert_eq!(oldest, Some(hit(2).ts), "as many as asked: the ts of the oldest read");
    assert_eq!(store.recent_cids("nowhere", 5).await.unwrap(), (vec![], None));
}

pub async fn a_cid_finds_the_first_message_stored_under_it(store: &impl Store) {
    store.apply(with_cid_index(store, some_messages("r", 2))).await.unwrap();
    let hit = store.cid("r", &cid_key("alice", "c2")).await.unwrap();
    assert_eq!(hit, Some(CidHit { seq: 2, msg_id: "r-2".into(), ts: 1_700_000_000_002 }));
    assert_eq!(store.cid("r", &cid_key("alice", "c9")).await.unwrap(), None);
    assert_eq!(store.cid("other", &cid_key("alice", "c2")).await.unwrap(), None, "cids are per room");
    assert_eq!(store.cid("r", &cid_key("bob", "c2")).await.unwrap(), None, "cids are per sender");
}

pub async fn read_markers_are_stored_per_member_and_go_with_membership(store: &impl Store) {
    store.apply(some_messages("r", 5)).await.unwrap();
    let read = |seq, at| Write::Read { room: "r".into(), user: "alice".into(), seq, at };
    store.apply(vec![read(2, 6)]).await.unwrap();
    store.apply(vec![read(4, 7)]).await.unwrap();
    assert_eq!(store.read_marker("r", "alice").await.unwrap(), 4);
    assert_eq!(store.read_marker("r", "bob").await.unwrap(), 0, "no marker for a non-member");
    let leave = Write::Leave { room: "r".into(), user: "alice".into(), at: 8, members: 0 };
    store.apply(vec![leave]).await.unwrap();
    let join = Write::Join { room: "r".into(), user: "alice".into(), at: 9, members: 1 };
    store.apply(vec![join]).await.unwrap();
    assert_eq!(store.read_marker("r", "alice").await.unwrap(), 0, "a new membership starts unread");
}

pub async fn user_rooms_carry_last_and_read_seqs(store: &impl Store) {
    store.apply(some_messages("r", 3)).await.unwrap();
    store
        .apply(vec![
            join("dm:alice:bob", "alice"),
            join("dm:alice:bob", "bob"),
            Write::Message(message("dm:alice:bob", 7, "bob", "x")),
            Write::Read { room: "r".into(), user: "alice".into(), seq: 2, at: 8 },
        ])
        .await
        .unwrap();
    let mut rooms = store.user_rooms("alice").await.unwrap();
    assert_eq!(store.user_room_count("alice").await.unwrap(), 2);
    assert_eq!(store.user_room_count("nobody").await.unwrap(), 0);
    let mut names = store.user_room_names("alice").await.unwrap();
    names.sort();
    assert_eq!(names, ["dm:alice:bob", "r"]);
    assert!(store.user_room_names("nobody").await.unwrap().is_empty());
    rooms.sort_by(|a, b| a.room.cmp(&b.room));
    assert_eq!(
        rooms,
        [
            RoomInfo { room: "dm:alice:bob".into(), last_seq: 7, read_seq: 0, ..RoomInfo::default() },
            RoomInfo { room: "r".into(), last_seq: 3, read_seq: 2, ..RoomInfo::default() },
        ]
    );
}

pub async fn checkpoints_land_with_their_batch(store: &impl Store) {
    assert!(store.checkpoints().await.unwrap().is_empty());
    let mut batch = some_messages("r", 1);
    batch.push(Write::Checkpoint { partition: 3, next_offset: 42 });
    store.apply(batch).await.unwrap();
    store
        .apply(vec![
            Write::Checkpoint { partition: 3, next_offset: 50 },
            Write::Checkpoint { partition: 0, next_offset: 1 },
        ])
        .await
        .unwrap();
    let mut cps = store.checkpoints().await.unwrap();
    cps.sort();
    assert_eq!(cps, [(0, 1), (3, 50)]);
}

/// [`Store::stage`]: what the dispatcher decides its next batch by is
/// readable as soon as `stage` returns, and each batch's `Durable` resolves
/// (in the order staged) once it is stored like [`Store::apply`] stores it.
pub async fn staged_batches_are_readable_at_once_and_durable_in_order(store: &impl Store) {
    let mut first = with_cid_index(store, some_messages("r", 2));
    first.push(Write::Checkpoint { partition: 0, next_offset: 3 });
    let first = store.stage(first).await.unwrap();
    assert_eq!(store.cid("r", &cid_key("alice", "c2")).await.unwrap().map(|h| h.seq), Some(2), "readable");
    assert!(store.is_member("r", "alice").await.unwrap());
    let second = store
        .stage(vec![Write::Message(message("r", 3, "alice", "c3")), Write::Checkpoint { partition: 0, next_offset: 4 }])
        .await
        .unwrap();
    assert_eq!(store.room("r").await.unwrap().map(|m| m.last_seq), Some(3));
    first.await.unwrap();
    second.await.unwrap();
    let seqs: Vec<u64> = store.history("r", None, 10).await.unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(store.checkpoints().await.unwrap(), [(0, 4)]);
}

/// The fence against a zombie dispatcher (one that lost its partitions but
/// still finishes a batch) and against replays: writes are ordered by their
/// place in the log (`at`, a checkpoint's offset), not by when they land.
pub async fn a_stale_write_cannot_undo_a_later_one(store: &impl Store) {
    let membership = |leave: bool, at| {
        let (room, user) = ("r".into(), "bob".into());
        if leave { Write::Leave { room, user, at, members: 0 } } else { Write::Join { room, user, at, members: 1 } }
    };
    // A leave at 20 lands first; a join from 10 arrives late.
    store.apply(vec![membership(true, 20)]).await.unwrap();
    store.apply(vec![membership(false, 10)]).await.unwrap();
    assert!(!store.is_member("r", "bob").await.unwrap(), "the later leave stands");
    assert!(store.user_rooms("bob").await.unwrap().is_empty());
    // Bob joins again at 30; a leave from 25 and a read marker from his
    // membership before the leave at 20 arrive late.
    store.apply(vec![membership(false, 30)]).await.unwrap();
    store.apply(vec![membership(true, 25)]).await.unwrap();
    store.apply(vec![Write::Read { room: "r".into(), user: "bob".into(), seq: 5, at: 15 }]).await.unwrap();
    assert!(store.is_member("r", "bob").await.unwrap(), "the later join stands");
    assert_eq!(store.read_marker("r", "bob").await.unwrap(), 0, "the old membership's marker stays gone");
    store.apply(vec![Write::Checkpoint { partition: 0, next_offset: 50 }]).await.unwrap();
    store.apply(vec![Write::Checkpoint { partition: 0, next_offset: 40 }]).await.unwrap();
    assert_eq!(store.checkpoints().await.unwrap(), [(0, 50)], "a checkpoint never moves back");
}

pub async fn the_partition_count_cannot_change(store: &impl Store) {
    store.bind_partitions(8).await.unwrap();
    store.bind_partitions(8).await.unwrap();
    match store.bind_partitions(16).await {
        Err(Error::PartitionsChanged { stored: 8, wanted: 16 }) => {}
        other => panic!("expected PartitionsChanged, got {other:?}"),
    }
}

pub async fn a_room_nobody_joined_does_not_exist(store: &impl Store) {
    assert_eq!(store.room("ghost").await.unwrap(), None);
    assert!(store.members("ghost").await.unwrap().is_empty());
    assert!(store.user_rooms("nobody").await.unwrap().is_empty());
}

fn settings(visibility: Visibility, name: &str, owner: &str) -> RoomSettings {
    RoomSettings {
        visibility,
        name: name.into(),
        topic: format!("about {name}"),
        owner: Some(owner.into()),
        retention_days: None,
    }
}

pub async fn room_settings_are_stored_and_list_public_rooms_in_order(store: &impl Store) {
    assert_eq!(store.room_settings("r").await.unwrap(), None, "no settings before any are written");
    let set = |room: &str, s: RoomSettings, at| Write::Settings { room: room.into(), settings: s, at };
    store
        .apply(vec![
            set("b", settings(Visibility::Public, "Bee", "alice"), 1),
            set("a", settings(Visibility::Public, "Ay", "alice"), 1),
            set("c", settings(Visibility::Private, "Sea", "bob"), 1),
            set("d", settings(Visibility::Public, "Dee", "bob"), 1),
        ])
        .await
        .unwrap();
    assert_eq!(store.room_settings("c").await.unwrap(), Some(settings(Visibility::Private, "Sea", "bob")));
    let ids = |v: Vec<PublicRoom>| v.into_iter().map(|r| r.room).collect::<Vec<_>>();
    assert_eq!(ids(store.public_rooms(None, 10).await.unwrap()), ["a", "b", "d"]);
    assert_eq!(ids(store.public_rooms(Some("a"), 1).await.unwrap()), ["b"]);
    assert_eq!(ids(store.public_rooms(Some("b"), 10).await.unwrap()), ["d"]);
    let first = &store.public_rooms(None, 1).await.unwrap()[0];
    assert_eq!((first.name.as_str(), first.topic.as_str()), ("Ay", "about Ay"));
    // b goes private at 5; a stale update from 3 cannot bring it back.
    store.apply(vec![set("b", settings(Visibility::Private, "Bee", "carol"), 5)]).await.unwrap();
    store.apply(vec![set("b", settings(Visibility::Public, "Old", "alice"), 3)]).await.unwrap();
    assert_eq!(ids(store.public_rooms(None, 10).await.unwrap()), ["a", "d"]);
    assert_eq!(store.room_settings("b").await.unwrap().unwrap().owner.as_deref(), Some("carol"));
}

pub async fn roles_and_mutes_belong_to_the_membership(store: &impl Store) {
    assert_eq!(store.member("r", "alice").await.unwrap(), None);
    store.apply(vec![join("r", "alice"), join("r", "bob")]).await.unwrap();
    assert_eq!(store.member("r", "bob").await.unwrap(), Some(MemberRecord::default()));
    store
        .apply(vec![
            Write::Role { room: "r".into(), user: "alice".into(), role: Role::Owner, at: 2 },
            Write::Role { room: "r".into(), user: "bob".into(), role: Role::Admin, at: 2 },
            Write::Mute { room: "r".into(), user: "bob".into(), until: MUTED_FOREVER, at: 3 },
        ])
        .await
        .unwrap();
    assert_eq!(store.member("r", "alice").await.unwrap().unwrap().role, Role::Owner);
    let bob = store.member("r", "bob").await.unwrap().unwrap();
    assert_eq!((bob.role, bob.muted_until), (Role::Admin, MUTED_FOREVER));
    assert!(bob.is_muted(1_800_000_000));
    store.apply(vec![Write::Mute { room: "r".into(), user: "bob".into(), until: 0, at: 4 }]).await.unwrap();
    assert!(!store.member("r", "bob").await.unwrap().unwrap().is_muted(0));
    // Leaving ends the role; joining again starts as a member.
    store.apply(vec![Write::Leave { room: "r".into(), user: "bob".into(), at: 5, members: 0 }]).await.unwrap();
    assert_eq!(store.member("r", "bob").await.unwrap(), None);
    store.apply(vec![Write::Join { room: "r".into(), user: "bob".into(), at: 6, members: 1 }]).await.unwrap();
    assert_eq!(store.member("r", "bob").await.unwrap(), Some(MemberRecord::default()));
    // A role from before the leave, arriving late, does not come back.
    store.apply(vec![Write::Role { room: "r".into(), user: "bob".into(), role: Role::Admin, at: 4 }]).await.unwrap();
    assert_eq!(store.member("r", "bob").await.unwrap().unwrap().role, Role::Member);
}

pub async fn members_page_in_name_order_with_their_roles(store: &impl Store) {
    let mut batch: WriteBatch = ["dave", "bob", "alice", "carol"].iter().map(|u| join("r", u)).collect();
    batch.push(join("other", "eve"));
    batch.push(Write::Role { room: "r".into(), user: "carol".into(), role: Role::Owner, at: 1 });
    store.apply(batch).await.unwrap();
    let entry = |user: &str, role| MemberEntry { user: user.into(), role };
    assert_eq!(
        store.members_page("r", None, 2).await.unwrap(),
        [entry("alice", Role::Member), entry("bob", Role::Member)]
    );
    assert_eq!(
        store.members_page("r", Some("bob"), 10).await.unwrap(),
        [entry("carol", Role::Owner), entry("dave", Role::Member)]
    );
    assert!(store.members_page("r", Some("dave"), 10).await.unwrap().is_empty());
    assert!(store.members_page("ghost", None, 10).await.unwrap().is_empty());
}

pub async fn invitations_are_listed_per_user_until_withdrawn(store: &impl Store) {
    let invite = |room: &str, invited, at| Write::Invite { room: room.into(), user: "bob".into(), invited, at };
    store.apply(vec![invite("a", true, 1), invite("b", true, 1)]).await.unwrap();
    assert!(store.is_invited("a", "bob").await.unwrap());
    assert!(!store.is_invited("a", "carol").await.unwrap());
    let mut rooms = store.invitations("bob").await.unwrap();
    rooms.sort();
    assert_eq!(rooms, ["a", "b"]);
    store.apply(vec![invite("a", false, 3)]).await.unwrap();
    store.apply(vec![invite("a", true, 2)]).await.unwrap();
    assert!(!store.is_invited("a", "bob").await.unwrap(), "a stale invitation does not come back");
    assert_eq!(store.invitations("bob").await.unwrap(), ["b"]);
}

pub async fn bans_are_set_and_lifted_in_log_order(store: &impl Store) {
    let ban = |banned, at| Write::Ban { room: "r".into(), user: "bob".into(), banned, at };
    assert!(!store.is_banned("r", "bob").await.unwrap());
    store.apply(vec![ban(true, 4)]).await.unwrap();
    assert!(store.is_banned("r", "bob").await.unwrap());
    assert!(!store.is_banned("r", "carol").await.unwrap());
    store.apply(vec![ban(false, 2)]).await.unwrap();
    assert!(store.is_banned("r", "bob").await.unwrap(), "a stale unban does not lift a later ban");
    store.apply(vec![ban(false, 6)]).await.unwrap();
    assert!(!store.is_banned("r", "bob").await.unwrap());
}

fn user(name: &str) -> UserRecord {
    UserRecord { name: name.into(), password_hash: "$argon2id$x".into(), created_ms: 1, bot: false }
}

pub async fn contacts_are_asks_that_meet_and_are_bounded(store: &impl Store) {
    use confab_protocol::ContactStatus::*;
    let statuses =
        |v: Vec<crate::ContactRecord>| v.into_iter().map(|c| (c.other.clone(), c.status())).collect::<Vec<_>>();
    assert!(store.contact_ask("alice", "bob", 2).await.unwrap());
    assert_eq!(statuses(store.contacts("alice").await.unwrap()), [("bob".to_string(), PendingOut)]);
    assert_eq!(statuses(store.contacts("bob").await.unwrap()), [("alice".to_string(), PendingIn)]);
    assert!(store.contact_ask("bob", "alice", 2).await.unwrap());
    assert_eq!(statuses(store.contacts("alice").await.unwrap()), [("bob".to_string(), Mutual)]);
    assert!(store.contact_ask("alice", "carol", 2).await.unwrap());
    // Alice has two relations: a third is refused, both ways; an existing one is not.
    assert!(!store.contact_ask("alice", "dave", 2).await.unwrap());
    assert!(!store.contact_ask("dave", "alice", 2).await.unwrap());
    assert!(store.contact_ask("alice", "bob", 2).await.unwrap());
    assert!(store.contacts("dave").await.unwrap().is_empty());
    store.contact_end("bob", "alice").await.unwrap();
    assert_eq!(statuses(store.contacts("alice").await.unwrap()), [("carol".to_string(), PendingOut)]);
    assert!(store.contacts("bob").await.unwrap().is_empty());
}

pub async fn blocks_are_per_user_and_bounded(store: &impl Store) {
    assert!(store.block("alice", "mallory", 2).await.unwrap());
    assert!(store.block("alice", "mallory", 2).await.unwrap(), "again: idempotent");
    assert!(store.is_blocked("alice", "mallory").await.unwrap());
    assert!(!store.is_blocked("mallory", "alice").await.unwrap());
    assert!(store.block("alice", "eve", 2).await.unwrap());
    assert!(!store.block("alice", "trudy", 2).await.unwrap());
    assert_eq!(store.blocks("alice").await.unwrap(), ["eve", "mallory"]);
    store.unblock("alice", "mallory").await.unwrap();
    assert!(!store.is_blocked("alice", "mallory").await.unwrap());
    assert_eq!(store.blocks("alice").await.unwrap(), ["eve"]);
}

pub async fn a_deleted_account_keeps_its_name_and_loses_the_rest(store: &impl Store) {
    assert!(store.create_user(&user("alice")).await.unwrap());
    assert!(store.create_user(&user("bob")).await.unwrap());
    let profile = Profile { user: "alice".into(), display_name: "Alice".into(), avatar: String::new(), bot: false };
    assert!(store.set_profile(&profile).await.unwrap());
    store.block("alice", "bob", 10).await.unwrap();
    assert!(!store.delete_user("nobody").await.unwrap());
    assert!(store.delete_user("alice").await.unwrap());
    assert_eq!(store.user("alice").await.unwrap(), None);
    assert!(!store.create_user(&user("alice")).await.unwrap(), "the name is never handed out again");
    assert_eq!(store.user("alice").await.unwrap(), None);
    let found = store.profiles(&["alice".into(), "bob".into()]).await.unwrap();
    assert_eq!(found.iter().map(|p| p.user.as_str()).collect::<Vec<_>>(), ["bob"]);
    assert!(store.blocks("alice").await.unwrap().is_empty());
    assert!(!store.delete_user("alice").await.unwrap(), "deleted once");
}

pub async fn ownership_passes_to_the_oldest_admin_else_the_oldest_member(store: &impl Store) {
    let at = |room: &str, user: &str, at: u64| Write::Join { room: room.into(), user: user.into(), at, members: 1 };
    store
        .apply(vec![
            at("r", "owner", 1),
            at("r", "zed", 2),
            at("r", "amy", 3),
            at("r", "bea", 4),
            at("r", "cat", 5),
            Write::Role { room: "r".into(), user: "owner".into(), role: Role::Owner, at: 6 },
            Write::Role { room: "r".into(), user: "cat".into(), role: Role::Admin, at: 7 },
            Write::Role { room: "r".into(), user: "bea".into(), role: Role::Admin, at: 8 },
        ])
        .await
        .unwrap();
    assert_eq!(store.successor("r", "owner").await.unwrap().as_deref(), Some("bea"), "the admin who joined first");
    store.apply(vec![at("s", "owner", 1), at("s", "zed", 2), at("s", "amy", 3)]).await.unwrap();
    assert_eq!(store.successor("s", "owner").await.unwrap().as_deref(), Some("zed"), "the member who joined first");
    store.apply(vec![at("t", "owner", 1)]).await.unwrap();
    assert_eq!(store.successor("t", "owner").await.unwrap(), None);
}

pub async fn an_erasure_blanks_the_users_messages_in_the_room_only(store: &impl Store) {
    store
        .apply(with_cid_index(
            store,
            vec![
                join("r", "alice"),
                join("r", "bob"),
                join("s", "alice"),
                Write::Message(message("r", 1, "alice", "a1")),
                Write::Message(message("r", 2, "bob", "b1")),
                Write::Message(message("s", 3, "alice", "a2")),
                Write::Message(message("r", 70_000, "alice", "a3")),
                Write::Erase { room: "r".into(), user: "alice".into(), at: 80_000 },
            ],
        ))
        .await
        .unwrap();
    let page = store.history("r", None, 10).await.unwrap();
    let seen: Vec<(u64, &str, &str)> = page.iter().map(|m| (m.seq, m.from.as_str(), m.text.as_str())).collect();
    assert_eq!(seen, [(1, "", ""), (2, "bob", "message 2"), (70_000, "", "")]);
    assert_eq!(page[0].msg_id, "r-1", "an erased message keeps its seq and id");
    assert_eq!(store.cid("r", &cid_key("alice", "a1")).await.unwrap(), None);
    assert!(store.cid("r", &cid_key("bob", "b1")).await.unwrap().is_some());
    let other = store.history("s", None, 10).await.unwrap();
    assert_eq!(other[0].from, "alice", "other rooms are erased by their own records");
}
