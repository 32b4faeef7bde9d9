//! The CQL store's contacts, blocks, deleted accounts, ownership
//! succession and message erasure (see [`crate::contacts`]). Gateways write
//! contacts and blocks with the coordinator's timestamps; the dispatcher's
//! erasure writes carry the erase record's place in the room's log, like
//! every other write of the room.

use scylla::statement::prepared::PreparedStatement;

use super::{ScyllaStore, prepare};
use crate::{ContactRecord, Result, contacts};
use confab_protocol::message::cid_key;

/// Messages read at a time while erasing.
const ERASE_PAGE: i32 = 1000;
/// Members read at a time while choosing a successor.
const MEMBERS_PAGE: i32 = 1000;

pub(super) struct Statements {
    asks: PreparedStatement,
    asked: PreparedStatement,
    insert_ask: PreparedStatement,
    insert_asked: PreparedStatement,
    delete_ask: PreparedStatement,
    delete_asked: PreparedStatement,
    blocks: PreparedStatement,
    is_blocked: PreparedStatement,
    insert_block: PreparedStatement,
    delete_block: PreparedStatement,
    delete_blocks: PreparedStatement,
    delete_user: PreparedStatement,
    delete_profile: PreparedStatement,
    members_from: PreparedStatement,
    buckets_from: PreparedStatement,
    authors_after: PreparedStatement,
    erase_message: PreparedStatement,
    delete_cid: PreparedStatement,
    erase_versions: PreparedStatement,
    erase_reactions: PreparedStatement,
    reactions_after: PreparedStatement,
    erase_reaction: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(s: &scylla::client::session::Session) -> Result<Statements> {
        Ok(Statements {
            asks: prepare(s, "SELECT other FROM contact_asks WHERE username = ?").await?,
            asked: prepare(s, "SELECT other FROM contact_asked WHERE username = ?").await?,
            insert_ask: prepare(s, "INSERT INTO contact_asks (username, other) VALUES (?, ?)").await?,
            insert_asked: prepare(s, "INSERT INTO contact_asked (username, other) VALUES (?, ?)").await?,
            delete_ask: prepare(s, "DELETE FROM contact_asks WHERE username = ? AND other = ?").await?,
            delete_asked: prepare(s, "DELETE FROM contact_asked WHERE username = ? AND other = ?").await?,
            blocks: prepare(s, "SELECT other FROM blocks WHERE username = ?").await?,
            is_blocked: prepare(s, "SELECT other FROM blocks WHERE username = ? AND other = ?").await?,
            insert_block: prepare(s, "INSERT INTO blocks (username, other) VALUES (?, ?)").await?,
            delete_block: prepare(s, "DELETE FROM blocks WHERE username = ? AND other = ?").await?,
            delete_blocks: prepare(s, "DELETE FROM blocks WHERE username = ?").await?,
            delete_user: prepare(s, "UPDATE users SET deleted_ms = ?, password_hash = '' WHERE name = ?").await?,
            delete_profile: prepare(s, "DELETE FROM profiles WHERE name = ?").await?,
            members_from: prepare(s, "SELECT username, role, joined_at FROM members WHERE room = ? AND username > ? LIMIT ?")
                .await?,
            buckets_from: prepare(s, "SELECT bucket FROM room_buckets WHERE room = ? AND bucket >= ? ORDER BY bucket ASC LIMIT 64")
                .await?,
            authors_after: prepare(
                s,
                "SELECT seq, sender, cid FROM messages WHERE room = ? AND bucket = ? AND seq > ? ORDER BY seq ASC LIMIT ?",
            )
            .await?,
            erase_message: prepare(
                s,
                "UPDATE messages USING TIMESTAMP ? SET sender = '', body = '', cid = '', edited_ts = null, mentions = null, attachments = null, deleted = true WHERE room = ? AND bucket = ? AND seq = ?",
            )
            .await?,
            delete_cid: prepare(s, "DELETE FROM cids USING TIMESTAMP ? WHERE room = ? AND cid = ?").await?,
            erase_versions: prepare(s, "DELETE FROM message_versions USING TIMESTAMP ? WHERE room = ? AND seq = ?")
                .await?,
            erase_reactions: prepare(s, "DELETE FROM reactions USING TIMESTAMP ? WHERE room = ? AND bucket = ? AND seq = ?")
                .await?,
            reactions_after: prepare(
                s,
                "SELECT seq, emoji, username FROM reactions WHERE room = ? AND bucket = ? AND (seq, emoji, username) > (?, ?, ?) LIMIT ?",
            )
            .await?,
            erase_reaction: prepare(
                s,
                "DELETE FROM reactions USING TIMESTAMP ? WHERE room = ? AND bucket = ? AND seq = ? AND emoji = ? AND username = ?",
            )
            .await?,
        })
    }
}

impl ScyllaStore {
    fn c(&self) -> &Statements {
        &self.inner.q.contacts
    }

    async fn names(&self, statement: &PreparedStatement, user: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> =
            self.rows::<(String,)>(statement, (user,)).await?.into_iter().map(|(n,)| n).collect();
        names.sort_unstable();
        Ok(names)
    }

    pub(super) async fn relations(&self, user: &str) -> Result<Vec<ContactRecord>> {
        let (asks, asked) = tokio::try_join!(self.names(&self.c().asks, user), self.names(&self.c().asked, user))?;
        Ok(contacts::merge(asks, asked))
    }

    /// Counted then written, without a transaction: two asks racing past
    /// the last free place may both land (the bound is kept to within the
    /// asks in flight at once, which the per-session rate limit bounds).
    pub(super) async fn contact_ask_(&self, user: &str, other: &str, max: usize) -> Result<bool> {
        let (mine, theirs) = tokio::try_join!(self.relations(user), self.relations(other))?;
        let related = mine.iter().any(|c| c.other == other);
        if !related && (mine.len() >= max || theirs.len() >= max) {
            return Ok(false);
        }
        tokio::try_join!(
            self.write(&self.c().insert_ask, (user, other)),
            self.write(&self.c().insert_asked, (other, user))
        )?;
        Ok(true)
    }

    pub(super) async fn contact_end_(&self, a: &str, b: &str) -> Result<()> {
        let c = self.c();
        tokio::try_join!(
            self.write(&c.delete_ask, (a, b)),
            self.write(&c.delete_asked, (b, a)),
            self.write(&c.delete_ask, (b, a)),
            self.write(&c.delete_asked, (a, b)),
        )?;
        Ok(())
    }

    pub(super) async fn block_(&self, user: &str, other: &str, max: usize) -> Result<bool> {
        let mine = self.names(&self.c().blocks, user).await?;
        if !mine.iter().any(|o| o == other) && mine.len() >= max {
            return Ok(false);
        }
        self.write(&self.c().insert_block, (user, other)).await?;
        Ok(true)
    }

    pub(super) async fn unblock_(&self, user: &str, other: &str) -> Result<()> {
        self.write(&self.c().delete_block, (user, other)).await
    }

    pub(super) async fn blocks_(&self, user: &str) -> Result<Vec<String>> {
        self.names(&self.c().blocks, user).await
    }

    pub(super) async fn is_blocked_(&self, user: &str, other: &str) -> Result<bool> {
        Ok(!self.rows::<(String,)>(&self.c().is_blocked, (user, other)).await?.is_empty())
    }

    pub(super) async fn delete_user_(&self, name: &str) -> Result<bool> {
        use crate::Store;
        if self.user(name).await?.is_none() {
            return Ok(false);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let c = self.c();
        tokio::try_join!(
            self.write(&c.delete_user, (now, name)),
            self.write(&c.delete_profile, (name,)),
            self.write(&c.delete_blocks, (name,)),
        )?;
        Ok(true)
    }

    /// Reads the room's members a page at a time: rare (an owner's account
    /// deleted), and bounded by the room's size.
    pub(super) async fn successor_(&self, room: &str, leaving: &str) -> Result<Option<String>> {
        let mut best: Option<(bool, i64, String)> = None;
        let mut after = String::new();
        loop {
            let page: Vec<(String, Option<String>, Option<i64>)> =
                self.rows(&self.c().members_from, (room, after.as_str(), MEMBERS_PAGE)).await?;
            let full = page.len() == MEMBERS_PAGE as usize;
            for (user, role, joined) in page {
                after.clone_from(&user);
                if user == leaving {
                    continue;
                }
                let candidate = (role.as_deref() != Some("admin"), joined.unwrap_or(0), user);
                if best.as_ref().is_none_or(|b| candidate < *b) {
                    best = Some(candidate);
                }
            }
            if !full {
                return Ok(best.map(|(_, _, user)| user));
            }
        }
    }

    /// `Write::Erase`: every message of `user` in `room` loses its author,
    /// text and cid and reads as deleted (its earlier versions and the
    /// reactions on it go), and `user`'s reactions in the room go, all with
    /// the erase's timestamp (later than any of the user's writes).
    pub(super) async fn erase(&self, room: &str, user: &str, at: u64) -> Result<()> {
        let at = at as i64;
        let mut bottom = 0i64;
        loop {
            let buckets: Vec<(i64,)> = self.rows(&self.c().buckets_from, (room, bottom)).await?;
            let Some(&(last,)) = buckets.last() else { return Ok(()) };
            for (b,) in &buckets {
                let mut after = -1i64;
                loop {
                    let page: Vec<(i64, Option<String>, Option<String>)> =
                        self.rows(&self.c().authors_after, (room, *b, after, ERASE_PAGE)).await?;
                    let full = page.len() == ERASE_PAGE as usize;
                    for (seq, sender, cid) in page {
                        after = seq;
                        if sender.as_deref() != Some(user) {
                            continue;
                        }
                        let key = cid_key(user, cid.as_deref().unwrap_or(""));
                        tokio::try_join!(
                            self.write(&self.c().erase_message, (at, room, *b, seq)),
                            self.write(&self.c().delete_cid, (at, room, key)),
                            self.write(&self.c().erase_versions, (at, room, seq)),
                            self.write(&self.c().erase_reactions, (at, room, *b, seq)),
                        )?;
                    }
                    if !full {
                        break;
                    }
                }
                // The user's reactions in the bucket (reactions share their
                // message's bucket).
                let mut after = (-1i64, String::new(), String::new());
                loop {
                    let (seq, emoji, by) = &after;
                    let page: Vec<(i64, String, String)> = self
                        .rows(&self.c().reactions_after, (room, *b, *seq, emoji.as_str(), by.as_str(), ERASE_PAGE))
                        .await?;
                    let full = page.len() == ERASE_PAGE as usize;
                    for (seq, emoji, by) in &page {
                        if by == user {
                            let key = (at, room, *b, *seq, emoji.as_str(), by.as_str());
                            self.write(&self.c().erase_reaction, key).await?;
                        }
                    }
                    match page.into_iter().last() {
                        Some(last) if full => after = last,
                        _ => break,
                    }
                }
            }
            bottom = last + 1;
        }
    }
}
