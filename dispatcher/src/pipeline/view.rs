//! The read-ahead: what the store holds of everything a batch's records will
//! look at, read all at once before any of them is decided.

use std::collections::{HashMap, HashSet};

use confab_bus::Record;
use confab_protocol::Command;
use confab_protocol::message::{cid_key, seq_of};
use confab_protocol::validate::dm_members;
use confab_store::{CidHit, MemberRecord, MessageState, RoomSettings, Store, Tally};
use futures_util::{StreamExt, TryStreamExt};

use super::blocks::Blocks;
use super::cids::{Cids, Lookup};
use super::decide::needs;

/// Store reads in flight at once while reading ahead for a batch.
pub(super) const READ_AHEAD: usize = 64;

/// What the dispatcher keeps of a room between batches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomState {
    /// The seq of the room's newest message; 0 before the first.
    pub last_seq: u64,
    /// Someone joined the room; for a DM, both its users are members (its
    /// first message makes them so).
    pub exists: bool,
    /// How many members it has.
    pub members: u64,
    /// Owner, visibility, name and topic; `None` for a room that has none
    /// stored (created before rooms had owners: public and ownerless).
    pub settings: Option<RoomSettings>,
    /// How many messages the room has had: the ordinal of its newest.
    pub messages: u64,
    /// The position of the room's latest edit, deletion or reaction; 0 before the first.
    pub last_change: u64,
}

/// The store keys one record's decision reads, besides its room's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs<'a> {
    /// Whether this user is a member of the room.
    pub member: Option<&'a str>,
    /// The message this sender first stored under this cid in the room:
    /// `(from, cid)`.
    pub cid: Option<(&'a str, &'a str)>,
    /// This user's read marker in the room.
    pub read_marker: Option<&'a str>,
    /// Whether this other user (the one acted on) is a member, and their standing.
    pub target: Option<&'a str>,
    /// Whether this user is invited to the room.
    pub invite: Option<&'a str>,
    /// Whether this user is banned from the room.
    pub ban: Option<&'a str>,
    /// Whether the first user blocked the second (a DM's recipient, its sender).
    pub block: Option<(&'a str, &'a str)>,
    /// Who owns the room if this user (its owner, maybe) leaves it.
    pub successor: Option<&'a str>,
    /// This user's tally in the room (a sender's, a reader's).
    pub tally: Option<&'a str>,
    /// Names written `@name` in a message: those who are members are
    /// mentioned, and their tallies are read.
    pub mentioned: Vec<String>,
    /// The counts at a read marker: `(user, seq)`.
    pub read_at: Option<(&'a str, u64)>,
    /// This message of the room, in its current state (a reply's target,
    /// the message an edit, deletion or reaction changes).
    pub message: Option<u64>,
    /// Whether this user reacted to this message with this emoji: `(seq, emoji, user)`.
    pub reaction: Option<(u64, &'a str, &'a str)>,
}

/// The store as a batch's records see it before the first of them is
/// decided. A key the view lacks reads as absent from the store: the
/// read-ahead ([`View::read`]) fills in every key that [`needs`] names, and
/// unit tests build views by hand.
#[derive(Debug, Default, Clone)]
pub struct View {
    pub rooms: HashMap<String, RoomState>,
    /// `(room, user)` of the members among the keys read.
    pub members: HashSet<(String, String)>,
    /// `(room, user)` -> role and mute, of members whose are not the
    /// defaults (a plain member, not muted).
    pub standing: HashMap<(String, String), MemberRecord>,
    /// `(room, user)` of the invitations found.
    pub invites: HashSet<(String, String)>,
    /// `(room, user)` of the bans found.
    pub bans: HashSet<(String, String)>,
    /// `(room, cid)` of the cids found.
    pub cids: HashMap<(String, String), CidHit>,
    /// `(room, user)` -> read marker, where one is set.
    pub read_markers: HashMap<(String, String), u64>,
    /// user -> how many rooms they are a member of, for the users who may
    /// join one: those of `join`s, and both parties of a DM's first message.
    pub room_counts: HashMap<String, usize>,
    /// `(user, other)` of the blocks found: `user` blocked `other`.
    pub blocks: HashSet<(String, String)>,
    /// What was read of blocks from the store (not from memory), for the
    /// pipeline to remember.
    pub blocks_read: Vec<((String, String), bool)>,
    /// The parties of a DM's first message who have an account: a DM with
    /// a name nobody holds (or a deleted account's) would pass to whoever
    /// registers it. Read only then, so a DM's later messages cost no
    /// account lookup.
    pub accounts: HashSet<String>,
    /// room -> who owns it once the user named by the record leaves.
    pub successors: HashMap<String, Option<String>>,
    /// `(room, seq)` -> the message's state, of the messages found.
    pub messages: HashMap<(String, u64), MessageState>,
    /// `(room, seq, emoji, user)` of the reactions found.
    pub reacted: HashSet<(String, u64, String, String)>,
    /// Tallies and the counts at read markers (`decide::unread`).
    pub counts: Counts,
    /// Uploads the batch's sends attach, by id, of those found.
    pub uploads: HashMap<String, confab_store::UploadRecord>,
}

/// What the unread counts of a batch's records read, as of just before the
/// batch's first record in each room (so a record whose batch failed midway
/// on a CQL store and is decided again never counts its own earlier
/// attempt), and what the batch's records counted since.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// `(room, user)` -> the member's tally.
    pub tallies: HashMap<(String, String), Tally>,
    /// `(room, user, seq)` of a `read` -> the room's message count and the
    /// user's tally at that seq, as stored.
    pub at: HashMap<(String, String, u64), (u64, Tally)>,
    /// `(room, seq, n)` of the batch's messages so far.
    pub messages: Vec<(String, u64, u64)>,
    /// `(room, user, seq, tally)` of the batch's tallies so far.
    pub points: Vec<(String, String, u64, Tally)>,
}

impl View {
    /// Reads what `records` need in one go, so a batch costs about one store
    /// round trip instead of one or two per record (on a CQL store each read
    /// is a network round trip). The states of rooms in `cached` are taken
    /// from there instead of the store, and so are the cids of rooms whose
    /// cids `known` holds.
    pub async fn read(
        store: &dyn Store,
        cached: &HashMap<String, RoomState>,
        tallies: &HashMap<(String, String), Tally>,
        known: &Cids,
        known_blocks: &Blocks,
        records: &[&Record],
    ) -> confab_store::Result<View> {
        let mut view = View::default();
        let mut rooms: Vec<String> = Vec::new();
        let mut members: Vec<(String, String)> = Vec::new();
        let mut cids: Vec<(String, String)> = Vec::new();
        let mut markers: Vec<(String, String)> = Vec::new();
        let mut invites: Vec<(String, String)> = Vec::new();
        let mut bans: Vec<(String, String)> = Vec::new();
        let mut blocks: Vec<(String, String)> = Vec::new();
        let mut successors: Vec<(String, String)> = Vec::new();
        let mut messages: Vec<(String, u64)> = Vec::new();
        let mut reactions: Vec<(String, u64, String, String)> = Vec::new();
        let key = |room: &str, other: &str| (room.to_owned(), other.to_owned());
        // The seq of each room's first record in the batch: counts are read
        // as of just before it.
        let mut firsts: HashMap<String, u64> = HashMap::new();
        for r in records {
            let first = firsts.entry(r.record.room.clone()).or_insert(u64::MAX);
            *first = (*first).min(seq_of(r.offset));
        }
        for r in records {
            let room = r.record.room.as_str();
            match cached.get(room) {
                Some(state) => {
                    view.rooms.insert(room.to_owned(), state.clone());
                }
                None => rooms.push(room.to_owned()),
            }
            let needs = needs(room, &r.record.cmd);
            members.extend(needs.member.map(|user| key(room, user)));
            members.extend(needs.target.map(|user| key(room, user)));
            if let Some((from, cid)) = needs.cid {
                let cid = cid_key(from, cid);
                match known.lookup(room, &cid) {
                    Lookup::Hit(hit) => {
                        view.cids.insert(key(room, &cid), hit);
                    }
                    Lookup::Unused => {}
                    Lookup::Ask => cids.push(key(room, &cid)),
                }
            }
            markers.extend(needs.read_marker.map(|user| key(room, user)));
            invites.extend(needs.invite.map(|user| key(room, user)));
            bans.extend(needs.ban.map(|user| key(room, user)));
            if let Some((user, other)) = needs.block {
                match known_blocks.get(user, other) {
                    Some(true) => {
                        view.blocks.insert(key(user, other));
                    }
                    Some(false) => {}
                    None => blocks.push(key(user, other)),
                }
            }
            successors.extend(needs.successor.map(|user| key(room, user)));
            if dm_members(room).is_none() {
                members.extend(needs.mentioned.iter().map(|user| key(room, user)));
            }
            messages.extend(needs.message.map(|seq| (room.to_owned(), seq)));
            reactions
                .extend(needs.reaction.map(|(seq, emoji, user)| (room.to_owned(), seq, emoji.into(), user.into())));
        }
        messages.sort_unstable();
        messages.dedup();
        reactions.sort_unstable();
        reactions.dedup();
        for keys in [&mut members, &mut cids, &mut markers, &mut invites, &mut bans, &mut blocks, &mut successors] {
            keys.sort_unstable();
            keys.dedup();
        }
        rooms.sort_unstable();
        rooms.dedup();
        let firsts = &firsts;
        let states = all(rooms, |room| async move {
            let (mut state, members_at) = room_state(store, &room).await?;
            let first = firsts.get(&room).copied().unwrap_or(u64::MAX);
            if members_at >= first {
                // A count stored by an attempt of this batch that failed
                // midway (CQL): count the member rows, which the batch's
                // joins and leaves are decided by.
                state.members = store.count_members(&room).await?;
            }
            if state.last_seq >= first {
                // Part of this batch was stored by an attempt that failed
                // midway (CQL): the room's state is what it was before it.
                let (last_seq, messages) = store.ordinal_at(&room, first - 1).await?.unwrap_or((0, 0));
                state.last_seq = last_seq;
                state.messages = messages;
            }
            Ok((room, state))
        });
        // One read per member key, as before rooms had roles: the role and
        // mute come with the membership row.
        let members = all(members, |key| async move {
            let member = store.member(&key.0, &key.1).await?;
            Ok(member.map(|m| (key, m)))
        });
        let invites = all(invites, |key| async move {
            let invited = store.is_invited(&key.0, &key.1).await?;
            Ok(invited.then_some(key))
        });
        let bans = all(bans, |key| async move {
            let banned = store.is_banned(&key.0, &key.1).await?;
            Ok(banned.then_some(key))
        });
        let cids = all(cids, |key| async move {
            let hit = store.cid(&key.0, &key.1).await?;
            Ok(hit.map(|hit| (key, hit)))
        });
        let markers = all(markers, |key| async move {
            let seq = store.read_marker(&key.0, &key.1).await?;
            Ok((seq > 0).then_some((key, seq)))
        });
        let blocks = all(blocks, |key| async move {
            let blocked = store.is_blocked(&key.0, &key.1).await?;
            Ok((key, blocked))
        });
        let successors = all(successors, |(room, user)| async move {
            let heir = store.successor(&room, &user).await?;
            Ok((room, heir))
        });
        let messages = all(messages, |key| async move {
            let state = store.message(&key.0, key.1).await?;
            Ok(state.map(|state| (key, state)))
        });
        let reactions = all(reactions, |key| async move {
            let reacted = store.reacted(&key.0, key.1, &key.2, &key.3).await?;
            Ok(reacted.then_some(key))
        });
        let mut upload_ids: Vec<String> = records
            .iter()
            .flat_map(|r| match &r.record.cmd {
                Command::Send { attachments, .. } => attachments.clone(),
                _ => Vec::new(),
            })
            .collect();
        upload_ids.sort_unstable();
        upload_ids.dedup();
        let uploads = all(upload_ids, |id| async move { store.upload(&id).await });
        let (states, members, cids, markers, invites, bans, blocks, successors, messages, reactions, uploads) = tokio::try_join!(
            states, members, cids, markers, invites, bans, blocks, successors, messages, reactions, uploads
        )?;
        view.uploads.extend(uploads.into_iter().flatten().map(|u| (u.id.clone(), u)));
        view.messages.extend(messages.into_iter().flatten());
        view.reacted.extend(reactions.into_iter().flatten());
        view.blocks.extend(blocks.iter().filter(|(_, blocked)| *blocked).map(|(key, _)| key.clone()));
        view.blocks_read = blocks;
        // A successor's standing, so the batch knows whether a record
        // before the erasure made them leave.
        let heirs: Vec<(String, String)> =
            successors.iter().filter_map(|(room, heir)| Some((room.clone(), heir.clone()?))).collect();
        let heirs = all(heirs, |key| async move {
            let member = store.member(&key.0, &key.1).await?;
            Ok(member.map(|m| (key, m)))
        });
        for (key, member) in heirs.await?.into_iter().flatten() {
            if member != MemberRecord::default() {
                view.standing.entry(key.clone()).or_insert(member);
            }
            view.members.insert(key);
        }
        view.successors.extend(successors);
        view.rooms.extend(states);
        for (key, member) in members.into_iter().flatten() {
            if member != MemberRecord::default() {
                view.standing.insert(key.clone(), member);
            }
            view.members.insert(key);
        }
        view.invites.extend(invites.into_iter().flatten());
        view.bans.extend(bans.into_iter().flatten());
        view.cids.extend(cids.into_iter().flatten());
        view.read_markers.extend(markers.into_iter().flatten());

        // Then, knowing which DMs exist, the room counts of users who may
        // gain a room: rare records (a join, a create, a DM's first message), so they
        // cost nothing on the path of ordinary messages.
        let mut users: Vec<String> = Vec::new();
        let mut parties: Vec<String> = Vec::new();
        for r in records {
            let room = r.record.room.as_str();
            match (&r.record.cmd, dm_members(room)) {
                (Command::Join { user } | Command::Create { user, .. } | Command::Add { user, .. }, None) => {
                    users.push(user.clone())
                }
                (Command::Send { .. }, Some((a, b))) if !view.rooms.get(room).is_some_and(|s| s.exists) => {
                    users.extend([a.to_owned(), b.to_owned()]);
                    parties.extend([a.to_owned(), b.to_owned()]);
                }
                _ => {}
            }
        }
        for keys in [&mut users, &mut parties] {
            keys.sort_unstable();
            keys.dedup();
        }
        let counts = all(users, |user| async move {
            let n = store.user_room_count(&user).await?;
            Ok((user, n))
        });
        let accounts = all(parties, |user| async move {
            let account = store.user(&user).await?;
            Ok(account.map(|_| user))
        });
        let (counts, accounts) = tokio::try_join!(counts, accounts)?;
        view.room_counts.extend(counts);
        view.accounts.extend(accounts.into_iter().flatten());
        view.counts = read_counts(store, &view, tallies, records, firsts).await?;
        Ok(view)
    }
}

/// A room's state as stored. A DM exists once both its users are members:
/// its first message writes both memberships, and on a CQL store they may
/// have landed only in part if that message's batch failed midway; then the
/// next message writes them again.
///
/// With it, the log position its member count was stored at
/// ([`confab_store::RoomMeta::members_at`]).
async fn room_state(store: &dyn Store, room: &str) -> confab_store::Result<(RoomState, u64)> {
    let (meta, exists, settings) = match dm_members(room) {
        Some((a, b)) => {
            let (meta, a, b) = tokio::try_join!(store.room(room), store.is_member(room, a), store.is_member(room, b))?;
            (meta, a && b, None)
        }
        None => {
            let (meta, settings) = tokio::try_join!(store.room(room), store.room_settings(room))?;
            (meta, meta.is_some(), settings)
        }
    };
    let state = RoomState {
        last_seq: meta.map_or(0, |m| m.last_seq),
        exists,
        members: meta.map_or(0, |m| m.members),
        settings,
        messages: meta.map_or(0, |m| m.messages),
        last_change: meta.map_or(0, |m| m.last_change),
    };
    Ok((state, meta.map_or(0, |m| m.members_at)))
}

/// The tallies of the batch's senders, mentioned members and readers, and
/// the counts at each `read`'s seq, as of before each room's first record.
async fn read_counts(
    store: &dyn Store,
    view: &View,
    cached: &HashMap<(String, String), Tally>,
    records: &[&Record],
    firsts: &HashMap<String, u64>,
) -> confab_store::Result<Counts> {
    let mut tallies: Vec<(String, String)> = Vec::new();
    let mut at: Vec<(String, String, u64)> = Vec::new();
    for r in records {
        let room = r.record.room.as_str();
        let needs = needs(room, &r.record.cmd);
        tallies.extend(needs.tally.map(|user| (room.to_owned(), user.to_owned())));
        let dm = dm_members(room);
        for user in &needs.mentioned {
            let key = (room.to_owned(), user.clone());
            let member = match dm {
                Some((a, b)) => user == a || user == b,
                None => view.members.contains(&key),
            };
            if member {
                tallies.push(key);
            }
        }
        at.extend(needs.read_at.map(|(user, seq)| (room.to_owned(), user.to_owned(), seq)));
    }
    tallies.sort_unstable();
    tallies.dedup();
    // The tallies this dispatcher counted or read in an earlier batch are
    // as stored: it alone writes its rooms' tallies.
    let known: Vec<((String, String), Tally)> =
        tallies.iter().filter_map(|key| Some((key.clone(), *cached.get(key)?))).collect();
    tallies.retain(|key| !cached.contains_key(key));
    at.sort_unstable();
    at.dedup();
    let before = |room: &str| firsts.get(room).copied().unwrap_or(u64::MAX).saturating_sub(1);
    let tallies = all(tallies, |(room, user)| async move {
        let tally = store.tally(&room, &user, before(&room)).await?;
        Ok(((room, user), tally))
    });
    let at = all(at, |(room, user, seq)| async move {
        let upto = seq.min(before(&room));
        let (n, tally) = tokio::try_join!(store.ordinal_at(&room, upto), store.tally(&room, &user, upto))?;
        Ok(((room, user, seq), (n.map_or(0, |(_, n)| n), tally)))
    });
    let (tallies, at) = tokio::try_join!(tallies, at)?;
    let tallies = tallies.into_iter().chain(known).collect();
    Ok(Counts { tallies, at: at.into_iter().collect(), ..Counts::default() })
}

/// Runs `read` over every key, [`READ_AHEAD`] at a time.
async fn all<K, T, F, Fut>(keys: Vec<K>, read: F) -> confab_store::Result<Vec<T>>
where
    F: FnMut(K) -> Fut,
    Fut: Future<Output = confab_store::Result<T>>,
{
    futures_util::stream::iter(keys.into_iter().map(read)).buffer_unordered(READ_AHEAD).try_collect().await
}
