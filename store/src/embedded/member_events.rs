//! Membership records' outcomes in the embedded store (crate::member_events):
//! one row per record that took effect, and an index by acceptance time
//! that prunes them: each outcome written removes a few older than
//! [`MEMBER_EVENT_TTL_SECS`] before it (by the records' own times, so a
//! replayed batch prunes alike).

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::EmbeddedStore;
use crate::{Error, MEMBER_EVENT_TTL_SECS, MemberEvent, Result};

/// (room, at) -> MemberEvent as JSON
const MEMBER_EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("member_events");
/// (ts, room, at) -> (): the outcomes by acceptance time, oldest first
const MEMBER_EVENTS_BY_TS: TableDefinition<(u64, &str, u64), ()> = TableDefinition::new("member_events_by_ts");
/// Expired outcomes one write removes at most: more than one, so a backlog
/// of expired ones shrinks while outcomes are written.
const PRUNE: usize = 4;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(MEMBER_EVENTS)?;
    txn.open_table(MEMBER_EVENTS_BY_TS)?;
    Ok(())
}

/// `Write::MemberEvent` inside a batch's transaction.
pub(super) fn put(txn: &WriteTransaction, room: &str, at: u64, event: &MemberEvent) -> Result<()> {
    let mut events = txn.open_table(MEMBER_EVENTS)?;
    let mut by_ts = txn.open_table(MEMBER_EVENTS_BY_TS)?;
    let cutoff = event.ts.saturating_sub(MEMBER_EVENT_TTL_SECS * 1000);
    let expired: Vec<(u64, String, u64)> = by_ts
        .range((0, "", 0)..(cutoff, "", 0))?
        .take(PRUNE)
        .map(|entry| entry.map(|(k, _)| (k.value().0, k.value().1.to_owned(), k.value().2)))
        .collect::<Result<_, _>>()?;
    for (ts, old_room, old_at) in &expired {
        by_ts.remove((*ts, old_room.as_str(), *old_at))?;
        events.remove((old_room.as_str(), *old_at))?;
    }
    let bytes = serde_json::to_vec(event)
        .map_err(|source| Error::Json { what: format!("encoding the member event {room}/{at}"), source })?;
    if let Some(old) = events.insert((room, at), bytes.as_slice())? {
        // A batch applied again: the same record, the same time.
        let old: MemberEvent = decode(room, at, old.value())?;
        by_ts.remove((old.ts, room, at))?;
    }
    by_ts.insert((event.ts, room, at), ())?;
    Ok(())
}

fn decode(room: &str, at: u64, bytes: &[u8]) -> Result<MemberEvent> {
    serde_json::from_slice(bytes)
        .map_err(|source| Error::Json { what: format!("decoding the member event {room}/{at}"), source })
}

impl EmbeddedStore {
    pub(super) async fn member_event_(&self, room: &str, at: u64) -> Result<Option<MemberEvent>> {
        let room = room.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let events = txn.open_table(MEMBER_EVENTS)?;
            let found = events.get((room.as_str(), at))?;
            found.map(|g| decode(&room, at, g.value())).transpose()
        })
        .await
    }
}
