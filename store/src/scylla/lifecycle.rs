//! The CQL backend's part of a message's life after it was sent
//! (crate::lifecycle). Every write is idempotent and carries `USING
//! TIMESTAMP <its position>`, so a later change always wins: a deletion's
//! range tombstones hide versions and reactions written before it, and a
//! message's `change_pos` and a room's `last_change` only move forward.
//!
//! Within one change the message row is written last: once it shows the
//! change's position, the change's other rows are stored.

use std::collections::BTreeMap;

use confab_protocol::Message;
use confab_protocol::lifecycle::Version;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::{ScyllaStore, bucket, prepare};
use crate::lifecycle::fold_reactions;
use crate::{MessageState, Result, Write};

pub(super) struct Statements {
    message: PreparedStatement,
    reactions_range: PreparedStatement,
    reacted: PreparedStatement,
    versions: PreparedStatement,
    insert_version: PreparedStatement,
    edit_message: PreparedStatement,
    delete_versions: PreparedStatement,
    delete_reactions: PreparedStatement,
    delete_message: PreparedStatement,
    insert_reaction: PreparedStatement,
    delete_reaction: PreparedStatement,
    touch_message: PreparedStatement,
    insert_change: PreparedStatement,
    insert_change_bucket: PreparedStatement,
    set_last_change: PreparedStatement,
    last_change: PreparedStatement,
    change_buckets_up: PreparedStatement,
    changes_up: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(s: &Session) -> Result<Statements> {
        Ok(Statements {
            message: prepare(
                s,
                "SELECT seq, msg_id, sender, body, ts, cid, reply_to, edited_ts, deleted, mentions, change_pos, attachments FROM messages WHERE room = ? AND bucket = ? AND seq = ?",
            )
            .await?,
            reactions_range: prepare(
                s,
                "SELECT seq, emoji, username FROM reactions WHERE room = ? AND bucket = ? AND seq >= ? AND seq <= ?",
            )
            .await?,
            reacted: prepare(
                s,
                "SELECT username FROM reactions WHERE room = ? AND bucket = ? AND seq = ? AND emoji = ? AND username = ?",
            )
            .await?,
            versions: prepare(s, "SELECT body, ts FROM message_versions WHERE room = ? AND seq = ?").await?,
            insert_version: prepare(
                s,
                "INSERT INTO message_versions (room, seq, at, body, ts) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            edit_message: prepare(
                s,
                "UPDATE messages USING TIMESTAMP ? SET body = ?, edited_ts = ?, change_pos = ? WHERE room = ? AND bucket = ? AND seq = ?",
            )
            .await?,
            delete_versions: prepare(s, "DELETE FROM message_versions USING TIMESTAMP ? WHERE room = ? AND seq = ?")
                .await?,
            delete_reactions: prepare(
                s,
                "DELETE FROM reactions USING TIMESTAMP ? WHERE room = ? AND bucket = ? AND seq = ?",
            )
            .await?,
            delete_message: prepare(
                s,
                "UPDATE messages USING TIMESTAMP ? SET body = '', edited_ts = null, deleted = true, mentions = null, attachments = null, change_pos = ? WHERE room = ? AND bucket = ? AND seq = ?",
            )
            .await?,
            insert_reaction: prepare(
                s,
                "INSERT INTO reactions (room, bucket, seq, emoji, username) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            delete_reaction: prepare(
                s,
                "DELETE FROM reactions USING TIMESTAMP ? WHERE room = ? AND bucket = ? AND seq = ? AND emoji = ? AND username = ?",
            )
            .await?,
            touch_message: prepare(
                s,
                "UPDATE messages USING TIMESTAMP ? SET change_pos = ? WHERE room = ? AND bucket = ? AND seq = ?",
            )
            .await?,
            insert_change: prepare(
                s,
                "INSERT INTO room_changes (room, bucket, pos, seq) VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            insert_change_bucket: prepare(
                s,
                "INSERT INTO change_buckets (room, bucket) VALUES (?, ?) USING TIMESTAMP ?",
            )
            .await?,
            set_last_change: prepare(s, "UPDATE rooms USING TIMESTAMP ? SET last_change = ? WHERE room = ?").await?,
            last_change: prepare(s, "SELECT last_change FROM rooms WHERE room = ?").await?,
            change_buckets_up: prepare(
                s,
                "SELECT bucket FROM change_buckets WHERE room = ? AND bucket >= ? ORDER BY bucket ASC LIMIT 64",
            )
            .await?,
            changes_up: prepare(
                s,
                "SELECT pos, seq FROM room_changes WHERE room = ? AND bucket = ? AND pos > ? ORDER BY pos ASC LIMIT ?",
            )
            .await?,
        })
    }
}

type StateRow = (
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
    Option<i64>,
    Option<String>,
);

impl ScyllaStore {
    fn lc(&self) -> &Statements {
        &self.inner.lc
    }

    /// Folds the reactions of `page` (one room's messages) into them: one
    /// range read per bucket the page spans.
    pub(super) async fn with_reactions(&self, room: &str, page: &mut [Message]) -> Result<()> {
        let mut spans: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        for m in page.iter().filter(|m| !m.deleted) {
            let seq = m.seq as i64;
            let span = spans.entry(bucket(m.seq)).or_insert((seq, seq));
            *span = (span.0.min(seq), span.1.max(seq));
        }
        let mut rows: BTreeMap<i64, Vec<(String, String)>> = BTreeMap::new();
        for (b, (low, high)) in spans {
            let found: Vec<(i64, String, String)> = self.rows(&self.lc().reactions_range, (room, b, low, high)).await?;
            for (seq, emoji, user) in found {
                rows.entry(seq).or_default().push((emoji, user));
            }
        }
        for m in page.iter_mut() {
            if let Some(rows) = rows.get(&(m.seq as i64)) {
                m.reactions = fold_reactions(rows.iter().map(|(e, u)| (e.as_str(), u.as_str())));
            }
        }
        Ok(())
    }

    pub(super) async fn last_change(&self, room: &str) -> Result<u64> {
        let rows: Vec<(Option<i64>,)> = self.rows(&self.lc().last_change, (room,)).await?;
        Ok(rows.first().and_then(|(n,)| *n).unwrap_or(0) as u64)
    }

    pub(super) async fn apply_change(&self, w: &Write) -> Result<()> {
        let q = self.lc();
        let (room, seq, at) = match w {
            Write::Edit { room, seq, at, .. }
            | Write::Delete { room, seq, at }
            | Write::React { room, seq, at, .. } => (room.as_str(), *seq as i64, *at as i64),
            _ => return Ok(()),
        };
        let b = bucket(seq as u64);
        let pos_bucket = bucket(at as u64);
        match w {
            Write::Edit { text, edited_ts, previous, .. } => {
                let version = (room, seq, at, previous.text.as_str(), previous.ts as i64, at);
                self.write(&q.insert_version, version).await?;
                self.log_change(room, seq, at, pos_bucket).await?;
                let values = (at, text.as_str(), *edited_ts as i64, at, room, b, seq);
                self.write(&q.edit_message, values).await?;
            }
            Write::Delete { .. } => {
                tokio::try_join!(
                    self.write(&q.delete_versions, (at, room, seq)),
                    self.write(&q.delete_reactions, (at, room, b, seq)),
                    self.log_change(room, seq, at, pos_bucket),
                )?;
                self.write(&q.delete_message, (at, at, room, b, seq)).await?;
            }
            Write::React { emoji, user, remove, .. } => {
                if *remove {
                    self.write(&q.delete_reaction, (at, room, b, seq, emoji.as_str(), user.as_str())).await?;
                } else {
                    self.write(&q.insert_reaction, (room, b, seq, emoji.as_str(), user.as_str(), at)).await?;
                }
                self.log_change(room, seq, at, pos_bucket).await?;
                self.write(&q.touch_message, (at, at, room, b, seq)).await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn log_change(&self, room: &str, seq: i64, at: i64, pos_bucket: i64) -> Result<()> {
        let q = self.lc();
        tokio::try_join!(
            self.write(&q.insert_change, (room, pos_bucket, at, seq, at)),
            self.write(&q.insert_change_bucket, (room, pos_bucket, at)),
            self.write(&q.set_last_change, (at, at, room)),
        )?;
        Ok(())
    }

    pub(super) async fn message_state(&self, room: &str, seq: u64) -> Result<Option<MessageState>> {
        let rows: Vec<StateRow> = self.rows(&self.lc().message, (room, bucket(seq), seq as i64)).await?;
        let Some((seq, msg_id, from, text, ts, cid, reply_to, edited_ts, deleted, mentions, change_pos, attachments)) =
            rows.into_iter().next()
        else {
            return Ok(None);
        };
        // A message expired by its room's retention (see super::MessageRow).
        let (Some(msg_id), Some(from), Some(ts)) = (msg_id, from, ts) else { return Ok(None) };
        let mut message = [Message {
            room: room.to_owned(),
            seq: seq as u64,
            msg_id,
            from,
            text: text.unwrap_or_default(),
            ts: ts as u64,
            cid: cid.unwrap_or_default(),
            reply_to: reply_to.map(|r| r as u64),
            edited_ts: edited_ts.map(|t| t as u64),
            deleted: deleted.unwrap_or(false),
            reactions: Vec::new(),
            mentions: mentions.unwrap_or_default(),
            attachments: super::attachments_of(attachments),
        }];
        self.with_reactions(room, &mut message).await?;
        let [message] = message;
        let versions = self.versions(room, seq as u64).await?.len() as u32;
        Ok(Some(MessageState { message, versions, change_pos: change_pos.unwrap_or(0) as u64 }))
    }

    pub(super) async fn is_reacted(&self, room: &str, seq: u64, emoji: &str, user: &str) -> Result<bool> {
        let values = (room, bucket(seq), seq as i64, emoji, user);
        Ok(!self.rows::<(String,)>(&self.lc().reacted, values).await?.is_empty())
    }

    pub(super) async fn versions(&self, room: &str, seq: u64) -> Result<Vec<Version>> {
        let rows: Vec<(String, i64)> = self.rows(&self.lc().versions, (room, seq as i64)).await?;
        Ok(rows.into_iter().map(|(text, ts)| Version { text, ts: ts as u64 }).collect())
    }

    pub(super) async fn changes_after(&self, room: &str, after: u64, limit: u32) -> Result<(Vec<(u64, u64)>, bool)> {
        let q = self.lc();
        let after = after.min(u64::MAX >> 1);
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut bottom = bucket(after);
        loop {
            let buckets: Vec<(i64,)> = self.rows(&q.change_buckets_up, (room, bottom)).await?;
            if buckets.is_empty() {
                return Ok((out, false));
            }
            for (b,) in &buckets {
                // One more than needed tells whether more remain.
                let want = (limit as usize + 1 - out.len()) as i32;
                let page: Vec<(i64, i64)> = self.rows(&q.changes_up, (room, *b, after as i64, want)).await?;
                out.extend(page.into_iter().map(|(pos, seq)| (pos as u64, seq as u64)));
                if out.len() > limit as usize {
                    out.truncate(limit as usize);
                    return Ok((out, true));
                }
            }
            bottom = buckets.last().map_or(i64::MAX, |(b,)| b + 1);
        }
    }
}
