//! The contract of what `rooms` counts: message ordinals, members' tallies,
//! the counts at read markers, notification levels, mentions and
//! retention settings (see `crate::unread`).

use confab_protocol::{NotifyLevel, RoomInfo};

use super::{join, message};
use crate::{RoomSettings, Store, Tally, Write};

fn meta(room: &str, seq: u64, n: u64) -> Write {
    Write::MessageMeta { room: room.into(), seq, n, expires_ms: None }
}

fn tally(room: &str, user: &str, seq: u64, own: u64, mentions: u64) -> Write {
    Write::Tally { room: room.into(), user: user.into(), seq, tally: Tally { own, mentions } }
}

fn info<'a>(rooms: &'a [RoomInfo], room: &str) -> &'a RoomInfo {
    rooms.iter().find(|r| r.room == room).unwrap_or_else(|| panic!("{room} in {rooms:?}"))
}

/// A DM's tallies, as the dispatcher writes them (one per message for its
/// sender, one for a member it mentions), read back the same at every seq
/// and in `rooms`, whatever a store keeps of them (the CQL store with
/// derived counts writes none for the second member's own messages), and
/// still after the first member's account is erased.
pub async fn a_dm_s_tallies_read_back_at_every_seq(store: &impl Store) {
    let dm = "dm:ann:bob";
    let mut batch = vec![join(dm, "ann"), join(dm, "bob")];
    // (seq, sender, mentions the other)
    let sent = [(3, "ann", false), (4, "bob", false), (6, "bob", true), (9, "ann", true), (10, "bob", false)];
    let mut truth = Vec::new();
    let (mut ann, mut bob) = (Tally::default(), Tally::default());
    for (n, (seq, from, mention)) in sent.into_iter().enumerate() {
        let mut m = message(dm, seq, from, &format!("c{seq}"));
        let other = if from == "ann" { "bob" } else { "ann" };
        if mention {
            m.mentions = vec![other.into()];
        }
        batch.push(Write::Message(m));
        batch.push(meta(dm, seq, n as u64 + 1));
        let (own, theirs) = if from == "ann" { (&mut ann, &mut bob) } else { (&mut bob, &mut ann) };
        own.own += 1;
        batch.push(tally(dm, from, seq, own.own, own.mentions));
        if mention {
            theirs.mentions += 1;
            batch.push(tally(dm, other, seq, theirs.own, theirs.mentions));
        }
        truth.push((seq, ann, bob));
    }
    // Two batches, so that the second one's rows are read across one.
    let second = batch.split_off(batch.len() - 4);
    store.apply(batch).await.unwrap();
    store.apply(second).await.unwrap();
    // At every seq, messages' and the gaps' between them.
    for at in 0..=12 {
        let (ann, bob) = truth.iter().rev().find(|(seq, ..)| *seq <= at).map_or_else(Default::default, |t| (t.1, t.2));
        assert_eq!(store.tally(dm, "ann", at).await.unwrap(), ann, "ann at {at}");
        assert_eq!(store.tally(dm, "bob", at).await.unwrap(), bob, "bob at {at}");
    }
    assert_eq!(store.tally(dm, "bob", u64::MAX).await.unwrap(), Tally { own: 3, mentions: 1 });
    // bob read up to seq 4: unread are ann's 9 (mentioning him).
    let read =
        Write::ReadTally { room: dm.into(), user: "bob".into(), n: 2, tally: Tally { own: 1, mentions: 0 }, at: 11 };
    store.apply(vec![Write::Read { room: dm.into(), user: "bob".into(), seq: 4, at: 11 }, read]).await.unwrap();
    let rooms = store.user_rooms("bob").await.unwrap();
    assert_eq!((info(&rooms, dm).unread, info(&rooms, dm).mentions), (1, 1));
    // ann's account is erased: bob's counts stay as they were.
    store
        .apply(vec![
            Write::Erase { room: dm.into(), user: "ann".into(), at: 12 },
            Write::Leave { room: dm.into(), user: "ann".into(), at: 12, members: 1 },
        ])
        .await
        .unwrap();
    assert_eq!(store.tally(dm, "bob", u64::MAX).await.unwrap(), Tally { own: 3, mentions: 1 });
    let rooms = store.user_rooms("bob").await.unwrap();
    assert_eq!((info(&rooms, dm).unread, info(&rooms, dm).mentions), (1, 1));
}

pub async fn counts_give_exact_unread_and_mentions_across_seq_gaps(store: &impl Store) {
    let mut mention = message("r", 7, "bob", "b7");
    mention.mentions = vec!["alice".into()];
    store
        .apply(vec![
            join("r", "alice"),
            join("r", "bob"),
            Write::Message(message("r", 3, "alice", "a3")),
            meta("r", 3, 1),
            tally("r", "alice", 3, 1, 0),
            Write::Message(mention),
            meta("r", 7, 2),
            tally("r", "bob", 7, 1, 0),
            tally("r", "alice", 7, 1, 1),
            Write::Message(message("r", 8, "bob", "b8")),
            meta("r", 8, 3),
            tally("r", "bob", 8, 2, 0),
            Write::Message(message("r", 20, "alice", "a20")),
            meta("r", 20, 4),
            tally("r", "alice", 20, 2, 1),
            Write::Read { room: "r".into(), user: "bob".into(), seq: 7, at: 21 },
            Write::ReadTally {
                room: "r".into(),
                user: "bob".into(),
                n: 2,
                tally: Tally { own: 1, mentions: 0 },
                at: 21,
            },
        ])
        .await
        .unwrap();
    assert_eq!(store.room("r").await.unwrap().unwrap().messages, 4);
    assert_eq!(store.ordinal_at("r", 10).await.unwrap(), Some((8, 3)), "the newest at or before");
    assert_eq!(store.ordinal_at("r", 20).await.unwrap(), Some((20, 4)));
    assert_eq!(store.ordinal_at("r", 2).await.unwrap(), None);
    assert_eq!(store.tally("r", "alice", 7).await.unwrap(), Tally { own: 1, mentions: 1 });
    assert_eq!(store.tally("r", "alice", 6).await.unwrap(), Tally { own: 1, mentions: 0 });
    assert_eq!(store.tally("r", "alice", 2).await.unwrap(), Tally::default());
    assert_eq!(store.tally("r", "carol", 99).await.unwrap(), Tally::default());

    let alice = store.user_rooms("alice").await.unwrap();
    let r = info(&alice, "r");
    assert_eq!((r.unread, r.mentions, r.notify), (2, 1, NotifyLevel::All), "bob's two, one naming alice");
    let bob = store.user_rooms("bob").await.unwrap();
    assert_eq!((info(&bob, "r").unread, info(&bob, "r").mentions), (1, 0), "after 7: 8 is bob's, 20 alice's");
    let history = store.history("r", None, 10).await.unwrap();
    assert_eq!(history[1].mentions, ["alice"], "a message keeps its mentions");
    assert!(history[0].mentions.is_empty());
}

pub async fn notify_levels_and_tallies_go_with_the_membership(store: &impl Store) {
    let notify = |level, at| Write::Notify { room: "r".into(), user: "alice".into(), level, at };
    let batch = vec![join("r", "alice"), notify(NotifyLevel::Mentions, 2), tally("r", "alice", 3, 1, 0)];
    store.apply(batch).await.unwrap();
    let rooms = store.user_rooms("alice").await.unwrap();
    assert_eq!(info(&rooms, "r").notify, NotifyLevel::Mentions);
    assert_eq!(store.notify_level("r", "alice").await.unwrap(), NotifyLevel::Mentions);
    store.apply(vec![notify(NotifyLevel::Nothing, 4)]).await.unwrap();
    assert_eq!(info(&store.user_rooms("alice").await.unwrap(), "r").notify, NotifyLevel::Nothing);
    assert_eq!(store.notify_level("r", "alice").await.unwrap(), NotifyLevel::Nothing);

    store.apply(vec![Write::Leave { room: "r".into(), user: "alice".into(), at: 6, members: 0 }]).await.unwrap();
    // Late writes from the old membership do not come back.
    store.apply(vec![notify(NotifyLevel::Mentions, 5), tally("r", "alice", 5, 2, 0)]).await.unwrap();
    store.apply(vec![Write::Join { room: "r".into(), user: "alice".into(), at: 7, members: 1 }]).await.unwrap();
    let rooms = store.user_rooms("alice").await.unwrap();
    assert_eq!(info(&rooms, "r").notify, NotifyLevel::All, "a new membership starts at all");
    assert_eq!(store.notify_level("r", "alice").await.unwrap(), NotifyLevel::All);
    assert_eq!(store.notify_level("r", "nobody").await.unwrap(), NotifyLevel::All, "no level set: all");
    assert_eq!(store.tally("r", "alice", 99).await.unwrap(), Tally::default(), "and counts from zero");
}

pub async fn a_rooms_retention_is_a_setting(store: &impl Store) {
    let settings = RoomSettings { retention_days: Some(30), owner: Some("alice".into()), ..RoomSettings::default() };
    store.apply(vec![Write::Settings { room: "r".into(), settings: settings.clone(), at: 1 }]).await.unwrap();
    assert_eq!(store.room_settings("r").await.unwrap(), Some(settings.clone()));
    let forever = RoomSettings { retention_days: None, ..settings };
    store.apply(vec![Write::Settings { room: "r".into(), settings: forever.clone(), at: 2 }]).await.unwrap();
    assert_eq!(store.room_settings("r").await.unwrap(), Some(forever));
}
