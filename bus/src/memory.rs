//! The standalone bus: one in-process log per partition.
//!
//! Nothing here is durable, and nothing needs to be: a write is acknowledged
//! only after the dispatcher stored it, and the store remembers how far into
//! each partition it got, so a restarted process resumes numbering there
//! ([`MemoryBus::new`]'s `start`) and seqs keep increasing.
//!
//! Other consumer groups ([`Bus::consumer_group`], a webhook's) read a
//! durable [`Journal`] when the bus has one ([`MemoryBus::with_journal`]):
//! every record is written there before the dispatcher sees it, and stays
//! until every group committed it, across restarts. Without a journal
//! they keep records in memory until they commit them too, at most
//! [`GROUP_BACKLOG`] per partition past what the dispatcher committed:
//! beyond it the oldest go, and the lagging group skips them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use confab_protocol::IngressRecord;
use confab_protocol::record::Announcement;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

use crate::journal::Journal;
use crate::{Bus, Consumer, Error, Record, Result, partition_for};

#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

/// Records a partition keeps for lagging consumer groups, past what the
/// dispatcher committed.
pub const GROUP_BACKLOG: u64 = 100_000;

struct Inner {
    partitions: Vec<Mutex<Partition>>,
    produced: Notify,
    announcements: broadcast::Sender<Announcement>,
    /// The durable journal, and the way to its writer, when webhooks need one.
    journal: Option<(Arc<Journal>, mpsc::Sender<Produced>)>,
}

/// A record on its way to the journal, and who waits for it to be there.
type Produced = (IngressRecord, oneshot::Sender<Result<()>>);

/// Records the journal's writer takes in one transaction at most.
const JOURNAL_BATCH: usize = 256;

struct Partition {
    /// Offset of `records[0]`.
    base: u64,
    records: VecDeque<IngressRecord>,
    /// What the dispatcher committed, and what each other group did.
    committed: u64,
    groups: Vec<(String, u64)>,
}

impl Partition {
    fn end(&self) -> u64 {
        self.base + self.records.len() as u64
    }

    /// Drops what every group committed, and what lies past the backlog.
    fn trim(&mut self) {
        let groups = self.groups.iter().map(|(_, o)| *o).min().unwrap_or(u64::MAX);
        let to = self.committed.min(groups.max(self.committed.saturating_sub(GROUP_BACKLOG)));
        while self.base < to && !self.records.is_empty() {
            self.records.pop_front();
            self.base += 1;
        }
    }
}

impl MemoryBus {
    /// A bus of `partitions` partitions; each starts at the offset `start`
    /// gives for it, or 0.
    pub fn new(partitions: u32, start: &[(u32, u64)]) -> MemoryBus {
        let partitions = (0..partitions.max(1))
            .map(|p| {
                let base = start.iter().find(|(q, _)| *q == p).map_or(0, |(_, o)| *o);
                Mutex::new(Partition { base, records: VecDeque::new(), committed: base, groups: Vec::new() })
            })
            .collect();
        let (announcements, _) = broadcast::channel(4096);
        MemoryBus { inner: Arc::new(Inner { partitions, produced: Notify::new(), announcements, journal: None }) }
    }

    /// A bus like [`new`](Self::new)'s whose consumer groups `groups` (the
    /// webhooks') read the durable `journal`: every record is in it before
    /// the dispatcher reads it, so they lose nothing across restarts, and
    /// they exist from now on, before any record is produced.
    pub async fn with_journal(
        partitions: u32,
        start: &[(u32, u64)],
        mut journal: Journal,
        groups: &[String],
    ) -> Result<MemoryBus> {
        let bus = MemoryBus::new(partitions, start);
        let starts: Vec<u64> = bus.inner.partitions.iter().map(|p| p.lock().expect("bus lock").base).collect();
        let groups = groups.to_vec();
        let journal =
            tokio::task::spawn_blocking(move || journal.prepare(&starts, &groups).map(|()| journal)).await??;
        let journal = Arc::new(journal);
        let (tx, rx) = mpsc::channel(4 * JOURNAL_BATCH);
        let Inner { partitions, produced, announcements, .. } =
            Arc::into_inner(bus.inner).expect("a new bus has one handle");
        let inner = Arc::new(Inner { partitions, produced, announcements, journal: Some((journal.clone(), tx)) });
        tokio::spawn(write_journal(Arc::downgrade(&inner), journal, rx));
        Ok(MemoryBus { inner })
    }
}

/// The journal's writer: takes what is produced in batches, writes each
/// batch in one durable transaction, then hands its records to the
/// dispatcher and answers their producers. Ends with the bus.
async fn write_journal(inner: Weak<Inner>, journal: Arc<Journal>, mut rx: mpsc::Receiver<Produced>) {
    let mut batch = Vec::with_capacity(JOURNAL_BATCH);
    while rx.recv_many(&mut batch, JOURNAL_BATCH).await > 0 {
        let Some(inner) = inner.upgrade() else { return };
        let n = inner.partitions.len() as u32;
        // Only this task appends while the bus has a journal.
        let mut next: Vec<u64> = inner.partitions.iter().map(|p| p.lock().expect("bus lock").end()).collect();
        let placed: Vec<(u32, u64, IngressRecord)> = batch
            .iter()
            .map(|(r, _)| {
                let p = partition_for(&r.room, n);
                let offset = next[p as usize];
                next[p as usize] += 1;
                (p, offset, r.clone())
            })
            .collect();
        let j = journal.clone();
        let written = tokio::task::spawn_blocking(move || j.append(&placed).map(|()| placed)).await;
        match written {
            Ok(Ok(placed)) => {
                for (p, _, record) in placed {
                    inner.partitions[p as usize].lock().expect("bus lock").records.push_back(record);
                }
                inner.produced.notify_waiters();
                for (_, done) in batch.drain(..) {
                    let _ = done.send(Ok(()));
                }
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                    Ok(Ok(_)) => unreachable!(),
                };
                tracing::error!(error = %why, "webhook journal: writing failed; the writes are refused");
                for (_, done) in batch.drain(..) {
                    let _ = done.send(Err(Error::Unavailable(format!("webhook journal: {why}"))));
                }
            }
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    fn partitions(&self) -> u32 {
        self.inner.partitions.len() as u32
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn produce(&self, record: &IngressRecord) -> Result<()> {
        if let Some((_, writer)) = &self.inner.journal {
            let (done, written) = oneshot::channel();
            writer.send((record.clone(), done)).await.map_err(|_| Error::Closed)?;
            return written.await.map_err(|_| Error::Closed)?;
        }
        let p = partition_for(&record.room, self.partitions());
        self.inner.partitions[p as usize].lock().expect("bus lock").records.push_back(record.clone());
        self.inner.produced.notify_waiters();
        Ok(())
    }

    async fn consumer(&self) -> Result<Box<dyn Consumer>> {
        let positions = self.inner.partitions.iter().map(|p| p.lock().expect("bus lock").base).collect();
        Ok(Box::new(MemoryConsumer { inner: self.inner.clone(), positions, group: None }))
    }

    async fn consumer_group(&self, group: &str) -> Result<Box<dyn Consumer>> {
        if let Some((journal, _)) = &self.inner.journal {
            if !journal.has_group(group) {
                return Err(Error::Unavailable(format!("consumer group {group} was not registered with the journal")));
            }
            let (j, g, n) = (journal.clone(), group.to_owned(), self.partitions());
            let committed =
                tokio::task::spawn_blocking(move || (0..n).map(|p| j.cursor(&g, p)).collect::<Result<Vec<_>>>())
                    .await??;
            return Ok(Box::new(JournalConsumer {
                inner: self.inner.clone(),
                journal: journal.clone(),
                group: group.to_owned(),
                positions: committed.clone(),
                committed,
            }));
        }
        let positions = self
            .inner
            .partitions
            .iter()
            .map(|p| {
                let mut p = p.lock().expect("bus lock");
                let start = p.groups.iter().find(|(g, _)| g == group).map_or(p.base, |(_, o)| *o);
                if !p.groups.iter().any(|(g, _)| g == group) {
                    p.groups.push((group.to_owned(), start));
                }
                start
            })
            .collect();
        Ok(Box::new(MemoryConsumer { inner: self.inner.clone(), positions, group: Some(group.to_owned()) }))
    }

    async fn announce(&self, announcement: &Announcement) -> Result<()> {
        // No subscriber yet is fine: announcements are about the present.
        let _ = self.inner.announcements.send(announcement.clone());
        Ok(())
    }

    async fn announcements(&self) -> Result<mpsc::Receiver<Announcement>> {
        let mut rx = self.inner.announcements.subscribe();
        let (tx, out) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(a) => {
                        if tx.send(a).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "announcement subscriber fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(out)
    }
}

/// The single consumer of a standalone process: it owns every partition.
struct MemoryConsumer {
    inner: Arc<Inner>,
    /// Next offset to read, per partition.
    positions: Vec<u64>,
    /// `None` for the dispatcher, else the other group this consumer is in.
    group: Option<String>,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn poll(&mut self, max: usize) -> Result<Vec<Record>> {
        loop {
            let notified = self.inner.produced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut out = Vec::new();
            for (p, partition) in self.inner.partitions.iter().enumerate() {
                let partition = partition.lock().expect("bus lock");
                let pos = &mut self.positions[p];
                *pos = (*pos).max(partition.base);
                while *pos < partition.end() && out.len() < max {
                    let record = partition.records[(*pos - partition.base) as usize].clone();
                    out.push(Record { partition: p as u32, offset: *pos, record });
                    *pos += 1;
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            notified.await;
        }
    }

    async fn commit(&mut self, offsets: &[(u32, u64)]) -> Result<()> {
        for &(p, next) in offsets {
            let Some(partition) = self.inner.partitions.get(p as usize) else {
                return Err(Error::NoPartition(p));
            };
            let mut partition = partition.lock().expect("bus lock");
            match &self.group {
                None => partition.committed = partition.committed.max(next),
                Some(group) => {
                    if let Some((_, o)) = partition.groups.iter_mut().find(|(g, _)| g == group) {
                        *o = (*o).max(next);
                    }
                }
            }
            partition.trim();
        }
        Ok(())
    }

    async fn lag(&self) -> Vec<(u32, u64)> {
        self.inner
            .partitions
            .iter()
            .enumerate()
            .map(|(p, partition)| {
                let partition = partition.lock().expect("bus lock");
                let committed = match &self.group {
                    None => partition.committed,
                    Some(group) => partition.groups.iter().find(|(g, _)| g == group).map_or(0, |(_, o)| *o),
                };
                (p as u32, partition.end().saturating_sub(committed.max(partition.base)))
            })
            .collect()
    }
}

/// A webhook's consumer of a standalone bus with a journal.
struct JournalConsumer {
    inner: Arc<Inner>,
    journal: Arc<Journal>,
    group: String,
    /// Next offset to read, and the group's cursor, per partition.
    positions: Vec<u64>,
    committed: Vec<u64>,
}

#[async_trait]
impl Consumer for JournalConsumer {
    async fn poll(&mut self, max: usize) -> Result<Vec<Record>> {
        loop {
            let notified = self.inner.produced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (journal, positions) = (self.journal.clone(), self.positions.clone());
            let out = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                for (p, &from) in positions.iter().enumerate() {
                    if out.len() >= max {
                        break;
                    }
                    for (offset, record) in journal.read(p as u32, from, max - out.len())? {
                        out.push(Record { partition: p as u32, offset, record });
                    }
                }
                Ok::<_, Error>(out)
            })
            .await??;
            for r in &out {
                let pos = &mut self.positions[r.partition as usize];
                if r.offset > *pos {
                    tracing::warn!(
                        group = %self.group,
                        partition = r.partition,
                        skipped = r.offset - *pos,
                        "webhook journal: records dropped before this webhook delivered them"
                    );
                }
                *pos = r.offset + 1;
            }
            if !out.is_empty() {
                return Ok(out);
            }
            notified.await;
        }
    }

    async fn commit(&mut self, offsets: &[(u32, u64)]) -> Result<()> {
        if let Some(&(p, _)) = offsets.iter().find(|(p, _)| *p as usize >= self.committed.len()) {
            return Err(Error::NoPartition(p));
        }
        let (journal, group, offsets) = (self.journal.clone(), self.group.clone(), offsets.to_vec());
        tokio::task::spawn_blocking(move || journal.commit(&group, &offsets).map(|()| offsets))
            .await??
            .into_iter()
            .for_each(|(p, next)| self.committed[p as usize] = self.committed[p as usize].max(next));
        Ok(())
    }

    async fn lag(&self) -> Vec<(u32, u64)> {
        self.inner
            .partitions
            .iter()
            .enumerate()
            .map(|(p, partition)| {
                let end = partition.lock().expect("bus lock").end();
                (p as u32, end.saturating_sub(self.committed[p]))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    async fn open() -> ((), super::MemoryBus) {
        ((), super::MemoryBus::new(4, &[]))
    }
    crate::bus_contract_tests!(open);

    #[tokio::test]
    async fn another_group_reads_what_the_dispatcher_committed_until_it_commits_too() {
        use crate::Bus;
        let bus = super::MemoryBus::new(1, &[]);
        let mut dispatcher = bus.consumer().await.unwrap();
        let mut hooks = bus.consumer_group("hook").await.unwrap();
        bus.produce(&crate::contract::record("a")).await.unwrap();
        let got = dispatcher.poll(10).await.unwrap();
        dispatcher.commit(&[(0, got[0].offset + 1)]).await.unwrap();
        let seen = hooks.poll(10).await.unwrap();
        assert_eq!(seen.len(), 1, "the group still reads what the dispatcher committed");
        assert_eq!(hooks.lag().await, vec![(0, 1)]);
        hooks.commit(&[(0, seen[0].offset + 1)]).await.unwrap();
        assert_eq!(hooks.lag().await, vec![(0, 0)]);
        // A consumer that joins the group again resumes after its commit.
        bus.produce(&crate::contract::record("a")).await.unwrap();
        let mut again = bus.consumer_group("hook").await.unwrap();
        assert_eq!(again.poll(10).await.unwrap()[0].offset, seen[0].offset + 1);
    }

    #[tokio::test]
    async fn offsets_resume_where_the_store_left_off() {
        use crate::Bus;
        let bus = super::MemoryBus::new(2, &[(0, 100), (1, 7)]);
        for i in 0..10 {
            bus.produce(&crate::contract::record(&format!("room-{i}"))).await.unwrap();
        }
        let mut consumer = bus.consumer().await.unwrap();
        for r in consumer.poll(100).await.unwrap() {
            assert!(r.offset >= if r.partition == 0 { 100 } else { 7 });
        }
    }

    async fn journal(dir: &std::path::Path, max_bytes: u64) -> crate::Journal {
        crate::Journal::open(dir, max_bytes, &prometheus::Registry::new()).await.unwrap()
    }

    #[tokio::test]
    async fn a_journal_group_reads_what_was_produced_before_it_joined_and_what_a_restart_kept() {
        use crate::Bus;
        let dir = tempfile::tempdir().unwrap();
        let groups = ["hook".to_owned()];
        let bus = super::MemoryBus::with_journal(2, &[], journal(dir.path(), 1 << 20).await, &groups).await.unwrap();
        let mut dispatcher = bus.consumer().await.unwrap();
        for i in 0..3 {
            bus.produce(&crate::contract::record(&format!("room-{i}"))).await.unwrap();
        }
        // The dispatcher took and committed everything before the group joined.
        let got = dispatcher.poll(10).await.unwrap();
        assert_eq!(got.len(), 3);
        let mut done: Vec<(u32, u64)> = Vec::new();
        for r in &got {
            done.retain(|(p, _)| *p != r.partition);
            done.push((r.partition, r.offset + 1));
        }
        dispatcher.commit(&done).await.unwrap();
        assert!(bus.consumer_group("another").await.is_err(), "only registered groups");
        let mut hook = bus.consumer_group("hook").await.unwrap();
        let seen = hook.poll(10).await.unwrap();
        assert_eq!(seen.len(), 3, "the group registered before the first record: it skips none");
        let first = &seen[0];
        hook.commit(&[(first.partition, first.offset + 1)]).await.unwrap();
        drop((hook, dispatcher, bus));

        // A restart on the same journal: the store had stored all three.
        let start: Vec<(u32, u64)> = done.clone();
        let bus = super::MemoryBus::with_journal(2, &start, journal(dir.path(), 1 << 20).await, &groups).await.unwrap();
        let mut hook = bus.consumer_group("hook").await.unwrap();
        let again = hook.poll(10).await.unwrap();
        assert_eq!(again.len(), 2, "what was not committed comes again: {again:?}");
        assert!(again.iter().all(|r| (r.partition, r.offset) != (first.partition, first.offset)));
        let total: u64 = hook.lag().await.iter().map(|(_, l)| l).sum();
        assert_eq!(total, 2);
    }

    #[tokio::test]
    async fn a_restart_forgets_journal_records_the_store_never_stored() {
        use crate::Bus;
        let dir = tempfile::tempdir().unwrap();
        let groups = ["hook".to_owned()];
        let bus = super::MemoryBus::with_journal(1, &[], journal(dir.path(), 1 << 20).await, &groups).await.unwrap();
        for _ in 0..3 {
            bus.produce(&crate::contract::record("a")).await.unwrap();
        }
        drop(bus);
        // The store had stored only the first: offsets 1 and 2 are reused.
        let bus =
            super::MemoryBus::with_journal(1, &[(0, 1)], journal(dir.path(), 1 << 20).await, &groups).await.unwrap();
        let mut other = crate::contract::record("a");
        other.ts += 1;
        bus.produce(&other).await.unwrap();
        let mut hook = bus.consumer_group("hook").await.unwrap();
        let seen = hook.poll(10).await.unwrap();
        assert_eq!(seen.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(seen[1].record, other, "offset 1 is the new record");
    }

    #[tokio::test]
    async fn a_full_journal_drops_its_oldest_records_and_counts_them() {
        use crate::Bus;
        let dir = tempfile::tempdir().unwrap();
        let registry = prometheus::Registry::new();
        let j = crate::Journal::open(dir.path(), 2000, &registry).await.unwrap();
        let bus = super::MemoryBus::with_journal(1, &[], j, &["hook".to_owned()]).await.unwrap();
        for i in 0..100u64 {
            let mut r = crate::contract::record("a");
            r.ts = 1_000 + i;
            bus.produce(&r).await.unwrap();
        }
        let mut hook = bus.consumer_group("hook").await.unwrap();
        let seen = hook.poll(1000).await.unwrap();
        assert!(!seen.is_empty() && seen.len() < 100, "{}", seen.len());
        assert_eq!(seen.last().unwrap().offset, 99, "the newest are kept");
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
        let dropped = text.lines().find(|l| l.starts_with("confab_webhook_journal_dropped_total ")).unwrap();
        assert_eq!(dropped, format!("confab_webhook_journal_dropped_total {}", 100 - seen.len()));
    }
}
