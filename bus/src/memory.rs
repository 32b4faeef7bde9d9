//! The standalone bus: one in-process log per partition.
//!
//! Nothing here is durable, and nothing needs to be: a write is acknowledged
//! only after the dispatcher stored it, and the store remembers how far into
//! each partition it got, so a restarted process resumes numbering there
//! ([`MemoryBus::new`]'s `start`) and seqs keep increasing.
//!
//! Other consumer groups ([`Bus::consumer_group`], a webhook's) keep records
//! in memory until they commit them too, at most [`GROUP_BACKLOG`] per
//! partition past what the dispatcher committed: beyond it the oldest go,
//! and the lagging group skips them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use confab_protocol::IngressRecord;
use confab_protocol::record::Announcement;
use tokio::sync::{Notify, broadcast, mpsc};

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
}

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
        MemoryBus { inner: Arc::new(Inner { partitions, produced: Notify::new(), announcements }) }
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
}
