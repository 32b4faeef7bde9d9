//! The standalone webhooks' durable journal: every record of the
//! in-process log, kept on disk (`<data>/webhooks.redb`) until every
//! webhook's consumer group committed it, and each group's cursor.
//!
//! A record is written here, fsynced, before the dispatcher sees it
//! ([`crate::MemoryBus::with_journal`]), so a webhook whose receiver is down
//! keeps its backlog across restarts. The journal is bounded in bytes: past
//! the bound the oldest records go (`confab_webhook_journal_dropped_total`,
//! and an error in the log naming how many), and the lagging webhooks skip
//! them.

use std::path::Path;
use std::sync::Arc;

use confab_protocol::IngressRecord;
use prometheus::{IntCounter, IntGauge, Registry};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{Error, Result};

/// (partition, offset) → the record's timestamp (8 bytes, big-endian) and its JSON.
const RECORDS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("records");
/// (group, partition) → the next offset the group has not committed.
const CURSORS: TableDefinition<(&str, u32), u64> = TableDefinition::new("cursors");
/// "bytes": what the records take, keys included.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Bytes a record's key takes in the accounting.
const KEY_BYTES: u64 = 12;

fn journal_error(e: impl std::fmt::Display) -> Error {
    Error::Journal(e.to_string())
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                journal_error(e)
            }
        }
    )*};
}
from_redb!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError, redb::DatabaseError);

/// The journal and its metrics. Every call blocks on the disk: the bus
/// runs them on tokio's blocking pool.
pub struct Journal {
    db: Database,
    max_bytes: u64,
    groups: Vec<String>,
    bytes: IntGauge,
    dropped: IntCounter,
}

impl Journal {
    /// Opens (or creates) `dir/webhooks.redb`, private to its owner (0600),
    /// holding at most `max_bytes` of records.
    pub async fn open(dir: &Path, max_bytes: u64, registry: &Registry) -> Result<Journal> {
        let path = dir.join("webhooks.redb");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&path).map_err(|e| journal_error(format!("{}: {e}", path.display())))?;
        // A process restarting in place may still be letting go of it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            let p = path.clone();
            match tokio::task::spawn_blocking(move || Database::create(p)).await? {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => return Err(journal_error(format!("{}: {e}", path.display()))),
            }
        };
        let txn = db.begin_write()?;
        {
            txn.open_table(RECORDS)?;
            txn.open_table(CURSORS)?;
            txn.open_table(META)?;
        }
        txn.commit()?;
        let bytes = IntGauge::new(
            "confab_webhook_journal_bytes",
            "Bytes of records the standalone webhook journal holds for webhooks that have not delivered them.",
        )
        .map_err(journal_error)?;
        let dropped = IntCounter::new(
            "confab_webhook_journal_dropped_total",
            "Records the standalone webhook journal dropped undelivered because it was full (webhook_journal_bytes).",
        )
        .map_err(journal_error)?;
        registry.register(Box::new(bytes.clone())).map_err(journal_error)?;
        registry.register(Box::new(dropped.clone())).map_err(journal_error)?;
        Ok(Journal { db, max_bytes: max_bytes.max(1), groups: Vec::new(), bytes, dropped })
    }

    /// Makes `groups` the journal's consumer groups, before the process
    /// takes any traffic. `start` is each partition's next offset (the
    /// store's checkpoints): what the journal holds from there on was never
    /// stored and goes (its offsets are reused). A group seen for the first
    /// time starts there; a group no longer configured is forgotten.
    pub fn prepare(&mut self, start: &[u64], groups: &[String]) -> Result<()> {
        let mut groups = groups.to_vec();
        groups.sort();
        groups.dedup();
        let txn = self.db.begin_write()?;
        {
            let mut records = txn.open_table(RECORDS)?;
            let mut cursors = txn.open_table(CURSORS)?;
            let mut meta = txn.open_table(META)?;
            let mut bytes = meta.get("bytes")?.map_or(0, |v| v.value());
            for (p, &from) in start.iter().enumerate() {
                let p = p as u32;
                let mut gone = 0u64;
                for entry in records.extract_from_if((p, from)..=(p, u64::MAX), |_, _| true)? {
                    let (_, v) = entry?;
                    bytes = bytes.saturating_sub(v.value().len() as u64 + KEY_BYTES);
                    gone += 1;
                }
                if gone > 0 {
                    tracing::info!(partition = p, records = gone, "webhook journal: dropped records never stored");
                }
            }
            let known: Vec<(String, u32)> = cursors
                .iter()?
                .map(|e| e.map(|(k, _)| (k.value().0.to_owned(), k.value().1)))
                .collect::<std::result::Result<_, _>>()?;
            for (group, p) in &known {
                if !groups.contains(group) {
                    tracing::info!(group = %group, "webhook journal: forgetting a webhook no longer configured");
                    cursors.remove((group.as_str(), *p))?;
                }
            }
            for group in &groups {
                for (p, &from) in start.iter().enumerate() {
                    let key = (group.as_str(), p as u32);
                    let at = cursors.get(key)?.map(|v| v.value());
                    match at {
                        Some(at) if at <= from => {}
                        Some(_) => {
                            cursors.insert(key, from)?;
                        }
                        None => {
                            tracing::info!(group = %group, partition = p, from, "webhook journal: a new webhook starts here");
                            cursors.insert(key, from)?;
                        }
                    }
                }
            }
            meta.insert("bytes", bytes)?;
            self.bytes.set(bytes as i64);
        }
        txn.commit()?;
        self.groups = groups;
        let txn = self.db.begin_write()?;
        for p in 0..start.len() as u32 {
            self.trim(&txn, p)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Whether `group` is one of the journal's.
    pub fn has_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Appends `records` (partition, offset, record) in one durable
    /// transaction; past the bound, drops the oldest.
    pub fn append(&self, records: &[(u32, u64, IngressRecord)]) -> Result<()> {
        let txn = self.db.begin_write()?;
        let mut dropped = 0u64;
        {
            let mut table = txn.open_table(RECORDS)?;
            let mut meta = txn.open_table(META)?;
            let mut bytes = meta.get("bytes")?.map_or(0, |v| v.value());
            for (p, offset, record) in records {
                let mut value = record.ts.to_be_bytes().to_vec();
                serde_json::to_writer(&mut value, record).expect("records serialize");
                bytes += value.len() as u64 + KEY_BYTES;
                if let Some(old) = table.insert((*p, *offset), value.as_slice())? {
                    bytes = bytes.saturating_sub(old.value().len() as u64 + KEY_BYTES);
                }
            }
            while bytes > self.max_bytes {
                // The oldest record of all partitions goes first.
                let mut oldest: Option<(u64, (u32, u64))> = None;
                let mut next = table.first()?.map(|(k, _)| k.value().0);
                while let Some(q) = next {
                    if let Some((k, v)) = table.range((q, 0)..=(q, u64::MAX))?.next().transpose()? {
                        let ts = u64::from_be_bytes(v.value()[..8].try_into().expect("8 bytes of timestamp"));
                        if oldest.is_none_or(|(t, _)| ts < t) {
                            oldest = Some((ts, k.value()));
                        }
                    }
                    next = match q.checked_add(1) {
                        Some(q) => table.range((q, 0)..)?.next().transpose()?.map(|(k, _)| k.value().0),
                        None => None,
                    };
                }
                let Some((_, key)) = oldest else { break };
                if let Some(v) = table.remove(key)? {
                    bytes = bytes.saturating_sub(v.value().len() as u64 + KEY_BYTES);
                }
                dropped += 1;
            }
            meta.insert("bytes", bytes)?;
            self.bytes.set(bytes as i64);
        }
        txn.commit()?;
        if dropped > 0 {
            self.dropped.inc_by(dropped);
            tracing::error!(
                dropped,
                max_bytes = self.max_bytes,
                "webhook journal full (webhook_journal_bytes): the oldest undelivered records were dropped; \
                 the webhooks behind will never deliver them"
            );
        }
        Ok(())
    }

    /// Up to `max` records of partition `p` from offset `from` on.
    pub fn read(&self, p: u32, from: u64, max: usize) -> Result<Vec<(u64, IngressRecord)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECORDS)?;
        let mut out = Vec::new();
        for entry in table.range((p, from)..=(p, u64::MAX))?.take(max) {
            let (k, v) = entry?;
            let record = serde_json::from_slice(&v.value()[8..]).map_err(journal_error)?;
            out.push((k.value().1, record));
        }
        Ok(out)
    }

    /// `group`'s cursor in partition `p`.
    pub fn cursor(&self, group: &str, p: u32) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let cursors = txn.open_table(CURSORS)?;
        Ok(cursors.get((group, p))?.map_or(0, |v| v.value()))
    }

    /// `group` processed everything before each `next` offset: its cursor
    /// moves (durably) and what every group processed goes.
    pub fn commit(&self, group: &str, offsets: &[(u32, u64)]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut cursors = txn.open_table(CURSORS)?;
            for &(p, next) in offsets {
                let at = cursors.get((group, p))?.map_or(0, |v| v.value());
                if next > at {
                    cursors.insert((group, p), next)?;
                }
            }
        }
        for &(p, _) in offsets {
            self.trim(&txn, p)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Removes the records of `p` every group committed.
    fn trim(&self, txn: &redb::WriteTransaction, p: u32) -> Result<()> {
        let cursors = txn.open_table(CURSORS)?;
        let mut low = u64::MAX;
        for group in &self.groups {
            low = low.min(cursors.get((group.as_str(), p))?.map_or(0, |v| v.value()));
        }
        drop(cursors);
        let mut records = txn.open_table(RECORDS)?;
        let mut meta = txn.open_table(META)?;
        let mut bytes = meta.get("bytes")?.map_or(0, |v| v.value());
        for entry in records.extract_from_if((p, 0)..(p, low), |_, _| true)? {
            let (_, v) = entry?;
            bytes = bytes.saturating_sub(v.value().len() as u64 + KEY_BYTES);
        }
        meta.insert("bytes", bytes)?;
        self.bytes.set(bytes as i64);
        Ok(())
    }
}

/// The journal shared by the bus and its group consumers.
pub type SharedJournal = Arc<Journal>;
