//! Membership records' outcomes in the CQL store (crate::member_events):
//! one row per record that took effect, a partition of its own (read by
//! its key only), written with the batch (before its checkpoint) at the
//! record's position and expiring [`MEMBER_EVENT_TTL_SECS`] after the
//! record was accepted.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::{ScyllaStore, prepare, ttl_secs};
use crate::{MEMBER_EVENT_TTL_SECS, MemberChange, MemberEvent, Result};

pub(super) struct Statements {
    insert: PreparedStatement,
    get: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(s: &Session) -> Result<Statements> {
        Ok(Statements {
            insert: prepare(
                s,
                "INSERT INTO member_events (room, at, username, action, by_user, ts) VALUES (?, ?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?",
            )
            .await?,
            get: prepare(s, "SELECT username, action, by_user, ts FROM member_events WHERE room = ? AND at = ?").await?,
        })
    }
}

impl ScyllaStore {
    /// `Write::MemberEvent`.
    pub(super) async fn put_member_event(&self, room: &str, at: u64, event: &MemberEvent) -> Result<()> {
        let q = &self.inner.me;
        let ttl = ttl_secs(Some(event.ts.saturating_add(MEMBER_EVENT_TTL_SECS * 1000)));
        let values = (
            room,
            at as i64,
            event.user.as_str(),
            event.change.as_str(),
            event.by.as_deref(),
            event.ts as i64,
            ttl,
            at as i64,
        );
        self.write(&q.insert, values).await
    }

    pub(super) async fn member_event_(&self, room: &str, at: u64) -> Result<Option<MemberEvent>> {
        type Row = (Option<String>, Option<String>, Option<String>, Option<i64>);
        let rows: Vec<Row> = self.rows(&self.inner.me.get, (room, at as i64)).await?;
        let Some((Some(user), Some(action), by, ts)) = rows.into_iter().next() else { return Ok(None) };
        let Some(change) = MemberChange::parse(&action) else {
            return Err(crate::Error::Corrupt(format!("member event {room}/{at} has the action '{action}'")));
        };
        Ok(Some(MemberEvent { user, change, by, ts: ts.unwrap_or(0) as u64 }))
    }
}
