//! The embedded backend's part of a message's life after it was sent
//! (crate::lifecycle): earlier versions, reactions, the change log.

use confab_protocol::Message;
use confab_protocol::lifecycle::Version;
use redb::{ReadableTable, Table, TableDefinition};

use super::{StoredMessage, decode_stored, encode_stored};
use crate::lifecycle::fold_reactions;
use crate::{Result, Write};

/// (room, seq, at of the edit that replaced it) -> (text, ts) of an earlier version
pub(super) const VERSIONS: TableDefinition<(&str, u64, u64), (&str, u64)> = TableDefinition::new("versions");
/// (room, seq, emoji, user) -> ()
pub(super) const REACTIONS: TableDefinition<(&str, u64, &str, &str), ()> = TableDefinition::new("reactions");
/// (room, pos) -> seq of the message the change at `pos` changed
pub(super) const CHANGES: TableDefinition<(&str, u64), u64> = TableDefinition::new("changes");
/// room -> position of its latest change
pub(super) const LAST_CHANGE: TableDefinition<&str, u64> = TableDefinition::new("last_change");

/// A stored message in its current state: reactions folded in.
pub(super) fn current(
    reactions: &impl ReadableTable<(&'static str, u64, &'static str, &'static str), ()>,
    room: &str,
    seq: u64,
    m: StoredMessage,
) -> Result<Message> {
    let mut rows = Vec::new();
    for entry in reactions.range((room, seq, "", "")..(room, seq + 1, "", ""))? {
        let (k, _) = entry?;
        let (_, _, emoji, user) = k.value();
        rows.push((emoji.to_owned(), user.to_owned()));
    }
    Ok(Message {
        room: room.to_owned(),
        seq,
        msg_id: m.msg_id,
        from: m.from,
        text: m.text,
        ts: m.ts,
        cid: m.cid,
        reply_to: m.reply_to,
        edited_ts: m.edited_ts,
        deleted: m.deleted,
        reactions: fold_reactions(rows.iter().map(|(e, u)| (e.as_str(), u.as_str()))),
        mentions: m.mentions,
        attachments: m.attachments,
    })
}

/// The tables a change writes, opened once per batch.
pub(super) struct Tables<'t> {
    pub versions: Table<'t, (&'static str, u64, u64), (&'static str, u64)>,
    pub reactions: Table<'t, (&'static str, u64, &'static str, &'static str), ()>,
    pub changes: Table<'t, (&'static str, u64), u64>,
    pub last_change: Table<'t, &'static str, u64>,
}

impl<'t> Tables<'t> {
    pub fn open(txn: &'t redb::WriteTransaction) -> Result<Tables<'t>> {
        Ok(Tables {
            versions: txn.open_table(VERSIONS)?,
            reactions: txn.open_table(REACTIONS)?,
            changes: txn.open_table(CHANGES)?,
            last_change: txn.open_table(LAST_CHANGE)?,
        })
    }

    /// Removes message `seq`'s earlier versions and reactions (a deletion,
    /// or the retention sweeper removing the message).
    pub fn forget(&mut self, room: &str, seq: u64) -> Result<()> {
        let versions: Vec<u64> = self
            .versions
            .range((room, seq, 0)..=(room, seq, u64::MAX))?
            .map(|e| e.map(|(k, _)| k.value().2))
            .collect::<Result<_, _>>()?;
        for v in versions {
            self.versions.remove((room, seq, v))?;
        }
        let reactions: Vec<(String, String)> = self
            .reactions
            .range((room, seq, "", "")..(room, seq + 1, "", ""))?
            .map(|e| e.map(|(k, _)| (k.value().2.to_owned(), k.value().3.to_owned())))
            .collect::<Result<_, _>>()?;
        for (emoji, user) in reactions {
            self.reactions.remove((room, seq, emoji.as_str(), user.as_str()))?;
        }
        Ok(())
    }

    /// Applies an `Edit`, `Delete` or `React`. A change older than the
    /// message's latest one (a stale write) only adds its log entry and, for
    /// a reaction, its row; a change to a message not stored is dropped.
    pub fn apply(&mut self, messages: &mut Table<'_, (&'static str, u64), &'static [u8]>, write: &Write) -> Result<()> {
        let (room, seq, at) = match write {
            Write::Edit { room, seq, at, .. }
            | Write::Delete { room, seq, at }
            | Write::React { room, seq, at, .. } => (room.as_str(), *seq, *at),
            _ => return Ok(()),
        };
        let Some(bytes) = messages.get((room, seq))?.map(|g| g.value().to_vec()) else { return Ok(()) };
        let mut m = decode_stored(room, seq, &bytes)?;
        let fresh = at >= m.change_pos;
        match write {
            Write::Edit { text, edited_ts, previous, .. } if fresh && !m.deleted => {
                self.versions.insert((room, seq, at), (previous.text.as_str(), previous.ts))?;
                m.text = text.clone();
                m.edited_ts = Some(*edited_ts);
            }
            Write::Delete { .. } if fresh => {
                self.forget(room, seq)?;
                m.text = String::new();
                m.edited_ts = None;
                m.deleted = true;
                m.mentions.clear();
                m.attachments.clear();
            }
            Write::React { emoji, user, remove, .. } if !m.deleted => {
                let key = (room, seq, emoji.as_str(), user.as_str());
                if *remove {
                    self.reactions.remove(key)?;
                } else {
                    self.reactions.insert(key, ())?;
                }
            }
            _ => {}
        }
        m.change_pos = m.change_pos.max(at);
        messages.insert((room, seq), encode_stored(room, seq, &m)?.as_slice())?;
        self.changes.insert((room, at), seq)?;
        let last = self.last_change.get(room)?.map_or(0, |g| g.value());
        self.last_change.insert(room, last.max(at))?;
        Ok(())
    }
}

pub(super) fn versions(
    table: &impl ReadableTable<(&'static str, u64, u64), (&'static str, u64)>,
    room: &str,
    seq: u64,
) -> Result<Vec<Version>> {
    let mut out = Vec::new();
    for entry in table.range((room, seq, 0)..=(room, seq, u64::MAX))? {
        let (_, v) = entry?;
        let (text, ts) = v.value();
        out.push(Version { text: text.to_owned(), ts });
    }
    Ok(out)
}

pub(super) fn changes(
    table: &impl ReadableTable<(&'static str, u64), u64>,
    room: &str,
    after: u64,
    limit: u32,
) -> Result<(Vec<(u64, u64)>, bool)> {
    let mut out = Vec::new();
    let Some(from) = after.checked_add(1) else { return Ok((out, false)) };
    for entry in table.range((room, from)..=(room, u64::MAX))? {
        if out.len() >= limit as usize {
            return Ok((out, true));
        }
        let (k, v) = entry?;
        out.push((k.value().1, v.value()));
    }
    Ok((out, false))
}
