//! The embedded store's contacts, blocks, deleted accounts, ownership
//! succession and message erasure (see [`crate::contacts`]).

use confab_protocol::message::cid_key;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{END, EmbeddedStore, MEMBER_STATE, MEMBERS, MEMBERSHIP_AT, PROFILES, USERS, role_of};
use crate::{ContactRecord, Result, contacts};
use confab_protocol::Role;

/// (user, other) -> () where `user` asked `other`
pub(super) const CONTACT_ASKS: TableDefinition<(&str, &str), ()> = TableDefinition::new("contact_asks");
/// (other, user) -> () where `user` asked `other`: `other`'s incoming asks
pub(super) const CONTACT_ASKED: TableDefinition<(&str, &str), ()> = TableDefinition::new("contact_asked");
/// (user, other) -> () where `user` blocked `other`
pub(super) const BLOCKS: TableDefinition<(&str, &str), ()> = TableDefinition::new("blocks");
/// name -> unix ms of deletion: tombstones of deleted accounts
pub(super) const DELETED_USERS: TableDefinition<&str, u64> = TableDefinition::new("deleted_users");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(CONTACT_ASKS)?;
    txn.open_table(CONTACT_ASKED)?;
    txn.open_table(BLOCKS)?;
    txn.open_table(DELETED_USERS)?;
    Ok(())
}

/// The second parts of the keys `(first, *)` of a pair table.
fn seconds<T: ReadableTable<(&'static str, &'static str), ()>>(table: &T, first: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in table.range((first, "")..(first, END))? {
        out.push(entry?.0.value().1.to_owned());
    }
    Ok(out)
}

fn relations<A, B>(asks: &A, asked: &B, user: &str) -> Result<Vec<ContactRecord>>
where
    A: ReadableTable<(&'static str, &'static str), ()>,
    B: ReadableTable<(&'static str, &'static str), ()>,
{
    Ok(contacts::merge(seconds(asks, user)?, seconds(asked, user)?))
}

/// `Write::Erase` inside a batch's transaction: the user's messages in
/// the room lose author, text and cid and read as deleted (their earlier
/// versions and the reactions on them go), and the user's reactions to
/// other messages of the room go.
pub(super) fn erase(
    messages: &mut redb::Table<(&str, u64), &[u8]>,
    cids: &mut redb::Table<(&str, &str), u64>,
    lifecycle: &mut super::lifecycle::Tables<'_>,
    room: &str,
    user: &str,
) -> Result<()> {
    let mut erased = Vec::new();
    for entry in messages.range((room, 0)..=(room, u64::MAX))? {
        let (k, v) = entry?;
        let seq = k.value().1;
        let m = super::decode_stored(room, seq, v.value())?;
        if m.from == user {
            erased.push((seq, m));
        }
    }
    for (seq, mut m) in erased {
        cids.remove((room, cid_key(user, &m.cid).as_str()))?;
        let versions: Vec<u64> = lifecycle
            .versions
            .range((room, seq, 0)..=(room, seq, u64::MAX))?
            .map(|e| e.map(|(k, _)| k.value().2))
            .collect::<Result<_, _>>()?;
        for v in versions {
            lifecycle.versions.remove((room, seq, v))?;
        }
        let reactions: Vec<(String, String)> = lifecycle
            .reactions
            .range((room, seq, "", "")..(room, seq + 1, "", ""))?
            .map(|e| e.map(|(k, _)| (k.value().2.to_owned(), k.value().3.to_owned())))
            .collect::<Result<_, _>>()?;
        for (emoji, by) in reactions {
            lifecycle.reactions.remove((room, seq, emoji.as_str(), by.as_str()))?;
        }
        m.from.clear();
        m.text.clear();
        m.cid.clear();
        m.edited_ts = None;
        m.mentions.clear();
        m.attachments.clear();
        m.deleted = true;
        messages.insert((room, seq), super::encode_stored(room, seq, &m)?.as_slice())?;
    }
    let theirs: Vec<(u64, String)> = lifecycle
        .reactions
        .range((room, 0, "", "")..=(room, u64::MAX, END, END))?
        .filter_map(|e| match e {
            Ok((k, _)) => {
                let (_, seq, emoji, by) = k.value();
                (by == user).then(|| Ok((seq, emoji.to_owned())))
            }
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    for (seq, emoji) in theirs {
        lifecycle.reactions.remove((room, seq, emoji.as_str(), user))?;
    }
    Ok(())
}

pub(super) fn is_deleted(db: &Database, name: &str) -> Result<bool> {
    let txn = db.begin_read()?;
    Ok(txn.open_table(DELETED_USERS)?.get(name)?.is_some())
}

impl EmbeddedStore {
    pub(super) async fn contact_ask_(&self, user: &str, other: &str, max: usize) -> Result<bool> {
        let (user, other) = (user.to_owned(), other.to_owned());
        self.write(move |db| {
            let txn = db.begin_write()?;
            let stored = {
                let mut asks = txn.open_table(CONTACT_ASKS)?;
                let mut asked = txn.open_table(CONTACT_ASKED)?;
                let mine = relations(&asks, &asked, &user)?;
                let related = mine.iter().any(|c| c.other == other);
                if !related && (mine.len() >= max || relations(&asks, &asked, &other)?.len() >= max) {
                    false
                } else {
                    asks.insert((user.as_str(), other.as_str()), ())?;
                    asked.insert((other.as_str(), user.as_str()), ())?;
                    true
                }
            };
            txn.commit()?;
            Ok(stored)
        })
        .await
    }

    pub(super) async fn contact_end_(&self, a: &str, b: &str) -> Result<()> {
        let (a, b) = (a.to_owned(), b.to_owned());
        self.write(move |db| {
            let txn = db.begin_write()?;
            {
                let mut asks = txn.open_table(CONTACT_ASKS)?;
                let mut asked = txn.open_table(CONTACT_ASKED)?;
                for (x, y) in [(&a, &b), (&b, &a)] {
                    asks.remove((x.as_str(), y.as_str()))?;
                    asked.remove((y.as_str(), x.as_str()))?;
                }
            }
            Ok(txn.commit()?)
        })
        .await
    }

    pub(super) async fn contacts_(&self, user: &str) -> Result<Vec<ContactRecord>> {
        let user = user.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            relations(&txn.open_table(CONTACT_ASKS)?, &txn.open_table(CONTACT_ASKED)?, &user)
        })
        .await
    }

    pub(super) async fn block_(&self, user: &str, other: &str, max: usize) -> Result<bool> {
        let (user, other) = (user.to_owned(), other.to_owned());
        self.write(move |db| {
            let txn = db.begin_write()?;
            let stored = {
                let mut blocks = txn.open_table(BLOCKS)?;
                let mine = seconds(&blocks, &user)?;
                if !mine.contains(&other) && mine.len() >= max {
                    false
                } else {
                    blocks.insert((user.as_str(), other.as_str()), ())?;
                    true
                }
            };
            txn.commit()?;
            Ok(stored)
        })
        .await
    }

    pub(super) async fn unblock_(&self, user: &str, other: &str) -> Result<()> {
        let (user, other) = (user.to_owned(), other.to_owned());
        self.write(move |db| {
            let txn = db.begin_write()?;
            txn.open_table(BLOCKS)?.remove((user.as_str(), other.as_str()))?;
            Ok(txn.commit()?)
        })
        .await
    }

    pub(super) async fn blocks_(&self, user: &str) -> Result<Vec<String>> {
        let user = user.to_owned();
        self.blocking(move |db| seconds(&db.begin_read()?.open_table(BLOCKS)?, &user)).await
    }

    pub(super) async fn is_blocked_(&self, user: &str, other: &str) -> Result<bool> {
        let (user, other) = (user.to_owned(), other.to_owned());
        self.blocking(move |db| {
            Ok(db.begin_read()?.open_table(BLOCKS)?.get((user.as_str(), other.as_str()))?.is_some())
        })
        .await
    }

    pub(super) async fn delete_user_(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |db| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let txn = db.begin_write()?;
            let found = {
                let mut users = txn.open_table(USERS)?;
                let mut deleted = txn.open_table(DELETED_USERS)?;
                if users.get(name.as_str())?.is_none() || deleted.get(name.as_str())?.is_some() {
                    false
                } else {
                    // The name stays taken; the password hash goes.
                    let tombstone = crate::UserRecord {
                        name: name.clone(),
                        password_hash: String::new(),
                        created_ms: 0,
                        bot: false,
                    };
                    let bytes = serde_json::to_vec(&tombstone)
                        .map_err(|source| crate::Error::Json { what: format!("encoding user {name}"), source })?;
                    users.insert(name.as_str(), bytes.as_slice())?;
                    deleted.insert(name.as_str(), now)?;
                    txn.open_table(PROFILES)?.remove(name.as_str())?;
                    let mut blocks = txn.open_table(BLOCKS)?;
                    for other in seconds(&blocks, &name)? {
                        blocks.remove((name.as_str(), other.as_str()))?;
                    }
                    true
                }
            };
            txn.commit()?;
            Ok(found)
        })
        .await
    }

    pub(super) async fn successor_(&self, room: &str, leaving: &str) -> Result<Option<String>> {
        let (room, leaving) = (room.to_owned(), leaving.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let (members, state, at) =
                (txn.open_table(MEMBERS)?, txn.open_table(MEMBER_STATE)?, txn.open_table(MEMBERSHIP_AT)?);
            let mut best: Option<(bool, u64, String)> = None;
            for entry in members.range((room.as_str(), "")..(room.as_str(), END))? {
                let (k, _) = entry?;
                let user = k.value().1;
                if user == leaving {
                    continue;
                }
                let role = state.get((room.as_str(), user))?.map_or(Role::Member, |g| role_of(g.value().0));
                let joined = at.get((room.as_str(), user))?.map_or(0, |g| g.value());
                let candidate = (role != Role::Admin, joined, user.to_owned());
                if best.as_ref().is_none_or(|b| candidate < *b) {
                    best = Some(candidate);
                }
            }
            Ok(best.map(|(_, _, user)| user))
        })
        .await
    }
}
