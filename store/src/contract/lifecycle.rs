//! The contract of a message's life after it was sent: edits with their
//! versions, deletion, reactions and the change log (crate::lifecycle).

use confab_protocol::lifecycle::{Reaction, Version};

use super::{message, some_messages};
use crate::{MessageState, Store, Write};

fn edit(seq: u64, text: &str, previous: (&str, u64), at: u64) -> Write {
    Write::Edit {
        room: "r".into(),
        seq,
        text: text.into(),
        edited_ts: 2_000 + at,
        previous: Version { text: previous.0.into(), ts: previous.1 },
        at,
    }
}

fn react(seq: u64, emoji: &str, user: &str, remove: bool, at: u64) -> Write {
    Write::React { room: "r".into(), seq, emoji: emoji.into(), user: user.into(), remove, at }
}

pub async fn edits_keep_earlier_versions_and_a_stale_edit_changes_nothing(store: &impl Store) {
    store.apply(some_messages("r", 3)).await.unwrap();
    let first = message("r", 1, "alice", "c1");
    store.apply(vec![edit(1, "v2", ("message 1", first.ts), 10)]).await.unwrap();
    store.apply(vec![edit(1, "v3", ("v2", 2_010), 12)]).await.unwrap();
    let page = store.history("r", None, 10).await.unwrap();
    assert_eq!((page[0].text.as_str(), page[0].edited_ts), ("v3", Some(2_012)));
    assert_eq!(page[1], message("r", 2, "alice", "c2"), "other messages are untouched");
    let versions = store.edits("r", 1).await.unwrap();
    assert_eq!(
        versions,
        [Version { text: "message 1".into(), ts: first.ts }, Version { text: "v2".into(), ts: 2_010 }]
    );
    assert_eq!(store.changes("r", 0, 10).await.unwrap(), (vec![(10, 1), (12, 1)], false));
    assert_eq!(store.room("r").await.unwrap().unwrap().last_change, 12);

    store.apply(vec![edit(1, "stale", ("v2", 2_010), 11)]).await.unwrap();
    let state = store.message("r", 1).await.unwrap().unwrap();
    assert_eq!(state.message.text, "v3", "a stale edit does not undo a later one");
    assert_eq!(state.change_pos, 12);
    assert_eq!(store.room("r").await.unwrap().unwrap().last_change, 12);
    assert_eq!(store.message("r", 9).await.unwrap(), None);
    assert_eq!(store.since("r", 0, 1).await.unwrap().0[0].text, "v3", "since gives the current state too");
}

pub async fn a_deletion_drops_text_versions_and_reactions(store: &impl Store) {
    let mut batch = some_messages("r", 2);
    batch.push(Write::Message(confab_protocol::Message { reply_to: Some(1), ..message("r", 3, "bob", "c3") }));
    store.apply(batch).await.unwrap();
    store.apply(vec![edit(1, "v2", ("message 1", 1), 10), react(1, "👍", "bob", false, 11)]).await.unwrap();
    store.apply(vec![Write::Delete { room: "r".into(), seq: 1, at: 13 }]).await.unwrap();
    // Stale writes from before the deletion, replayed.
    store.apply(vec![react(1, "🎉", "carol", false, 12), edit(1, "v3", ("v2", 1), 12)]).await.unwrap();
    let page = store.history("r", None, 10).await.unwrap();
    let deleted = &page[0];
    assert!(deleted.deleted && deleted.text.is_empty(), "{deleted:?}");
    assert_eq!((deleted.edited_ts, deleted.reactions.len()), (None, 0), "{deleted:?}");
    assert_eq!((deleted.seq, deleted.from.as_str()), (1, "alice"), "it keeps its seq and author");
    assert!(store.edits("r", 1).await.unwrap().is_empty());
    assert!(!store.reacted("r", 1, "👍", "bob").await.unwrap());
    assert_eq!(page[2].reply_to, Some(1), "a reply keeps naming it");
    let state = store.message("r", 1).await.unwrap().unwrap();
    assert_eq!((state.versions, state.change_pos), (0, 13));
}

pub async fn reactions_count_each_user_once_and_list_twenty_names(store: &impl Store) {
    store.apply(some_messages("r", 2)).await.unwrap();
    let users: Vec<String> = (0..25).map(|i| format!("u{i:02}")).collect();
    let mut batch: Vec<Write> =
        users.iter().enumerate().map(|(i, u)| react(2, "👍", u, false, 10 + i as u64)).collect();
    batch.push(react(2, "👍", "u00", false, 40));
    batch.push(react(2, "🎉", "u03", false, 41));
    batch.push(react(2, "👍", "u01", true, 42));
    batch.push(react(2, "👀", "u05", true, 43));
    store.apply(batch).await.unwrap();
    let page = store.history("r", None, 10).await.unwrap();
    assert!(page[0].reactions.is_empty());
    let mut names: Vec<String> = users.iter().filter(|u| *u != "u01").cloned().collect();
    names.truncate(20);
    assert_eq!(
        page[1].reactions,
        [
            Reaction { emoji: "🎉".into(), count: 1, users: vec!["u03".into()] },
            Reaction { emoji: "👍".into(), count: 24, users: names },
        ],
        "in emoji order (U+1F389 before U+1F44D)"
    );
    assert!(store.reacted("r", 2, "👍", "u00").await.unwrap());
    assert!(!store.reacted("r", 2, "👍", "u01").await.unwrap());
    assert!(!store.reacted("r", 2, "🎉", "u00").await.unwrap());
    let MessageState { message, change_pos, .. } = store.message("r", 2).await.unwrap().unwrap();
    assert_eq!((message.reactions, change_pos), (page[1].reactions.clone(), 43));
}

pub async fn changes_page_forward_by_position(store: &impl Store) {
    store.apply(some_messages("r", 3)).await.unwrap();
    // Positions far apart land in different buckets of the CQL log.
    let positions = [10, 20, 70_000, 200_000, 200_001];
    let batch: Vec<Write> =
        positions.iter().enumerate().map(|(i, at)| react(1 + i as u64 % 3, "👍", "bob", i % 2 == 1, *at)).collect();
    store.apply(batch).await.unwrap();
    assert_eq!(store.changes("r", 0, 2).await.unwrap(), (vec![(10, 1), (20, 2)], true));
    assert_eq!(store.changes("r", 20, 2).await.unwrap(), (vec![(70_000, 3), (200_000, 1)], true));
    assert_eq!(store.changes("r", 200_000, 2).await.unwrap(), (vec![(200_001, 2)], false));
    assert_eq!(store.changes("r", 200_001, 2).await.unwrap(), (vec![], false));
    assert_eq!(store.changes("other", 0, 2).await.unwrap(), (vec![], false));
    assert_eq!(store.room("r").await.unwrap().unwrap().last_change, 200_001);
}

/// Account erasure (crate::contacts) meets the lifecycle: the erased
/// user's messages read as deleted, without versions or reactions, and
/// their reactions to other messages go.
pub async fn an_erasure_deletes_the_users_versions_and_reactions(store: &impl Store) {
    let first = confab_protocol::Message { mentions: vec!["bob".into()], ..message("r", 1, "alice", "c1") };
    store
        .apply(vec![
            Write::Join { room: "r".into(), user: "alice".into(), at: 0, members: 1 },
            Write::Join { room: "r".into(), user: "bob".into(), at: 0, members: 1 },
            Write::Message(first.clone()),
            Write::Message(message("r", 2, "bob", "c2")),
        ])
        .await
        .unwrap();
    store
        .apply(vec![
            edit(1, "v2", ("message 1", first.ts), 10),
            react(1, "👍", "bob", false, 11),
            react(2, "🎉", "alice", false, 12),
            react(2, "👍", "bob", false, 13),
        ])
        .await
        .unwrap();
    store.apply(vec![Write::Erase { room: "r".into(), user: "alice".into(), at: 80_000 }]).await.unwrap();
    let page = store.history("r", None, 10).await.unwrap();
    let erased = page.iter().find(|m| m.seq == 1).unwrap();
    assert_eq!((erased.from.as_str(), erased.text.as_str(), erased.cid.as_str()), ("", "", ""));
    assert!(erased.deleted, "an erased message reads as deleted");
    assert_eq!((erased.edited_ts, erased.reactions.len(), erased.mentions.len()), (None, 0, 0));
    assert!(store.edits("r", 1).await.unwrap().is_empty(), "the erased user's earlier texts are gone");
    let kept = page.iter().find(|m| m.seq == 2).unwrap();
    assert_eq!(kept.reactions, [Reaction { emoji: "👍".into(), count: 1, users: vec!["bob".into()] }]);
    assert!(!store.reacted("r", 2, "🎉", "alice").await.unwrap());
    let state = store.message("r", 1).await.unwrap().unwrap();
    assert!(state.message.deleted && state.versions == 0);
}

/// Mentions are read from the text when it is sent (docs/protocol.md, "With
/// replies, edits and deletion"): an edit keeps them, a deletion drops them.
pub async fn an_edit_keeps_mentions_and_a_deletion_drops_them(store: &impl Store) {
    let mut batch = vec![Write::Join { room: "r".into(), user: "alice".into(), at: 0, members: 1 }];
    for seq in [1, 2] {
        let m = confab_protocol::Message { mentions: vec!["bob".into()], ..message("r", seq, "alice", "c") };
        batch.push(Write::Message(confab_protocol::Message { cid: format!("c{seq}"), ..m }));
    }
    store.apply(batch).await.unwrap();
    store
        .apply(vec![edit(1, "nobody now", ("message 1", 1), 10), Write::Delete { room: "r".into(), seq: 2, at: 11 }])
        .await
        .unwrap();
    let page = store.history("r", None, 10).await.unwrap();
    assert_eq!((page[0].text.as_str(), page[0].mentions.as_slice()), ("nobody now", ["bob".to_owned()].as_slice()));
    assert!(page[1].deleted && page[1].mentions.is_empty(), "{:?}", page[1]);
    let state = store.message("r", 2).await.unwrap().unwrap();
    assert!(state.message.mentions.is_empty(), "{:?}", state.message);
}
