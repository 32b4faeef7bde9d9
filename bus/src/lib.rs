//! Confab's message bus.
//!
//! * [`Bus`]: the ingress log, partitioned by room, that gateways produce
//!   client writes to and a group of dispatchers consumes; and the
//!   announcements gateways make about the rooms and users they host.
//! * [`memory`]: the standalone, in-process implementation.
//! * [`push`]: the direct path from a dispatcher to the gateways.
//! * [`contract`]: the suite every implementation passes (`bus_contract_tests!`).

use async_trait::async_trait;
use confab_protocol::IngressRecord;
use confab_protocol::record::Announcement;
use tokio::sync::mpsc;

#[cfg(feature = "kafka")]
mod closing;
#[cfg(any(test, feature = "contract"))]
pub mod contract;
pub mod journal;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod memory;
#[cfg(feature = "kafka")]
mod producer;
pub mod push;

pub use journal::Journal;
pub use memory::MemoryBus;
pub use push::{LocalPush, Push};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What failed on the bus, with its cause. Clients see every one as
/// `unavailable` (the gateway maps them in one place).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A peer (a gateway to push to) cannot be reached or is too far behind.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The bus is shutting down.
    #[error("bus closed")]
    Closed,
    /// A Kafka client call failed: `what` says which.
    #[cfg(feature = "kafka")]
    #[error("Kafka, {what}: {source}")]
    Kafka { what: &'static str, source: rdkafka::error::KafkaError },
    /// The brokers refused to create a topic.
    #[cfg(feature = "kafka")]
    #[error("creating topic {topic}: {source}")]
    CreateTopic { topic: String, source: rdkafka::types::RDKafkaErrorCode },
    /// The topic does not exist (yet).
    #[cfg(feature = "kafka")]
    #[error("no topic {0}; run `confab migrate`")]
    NoTopic(String),
    /// The topic exists with another partition count than this code needs.
    #[cfg(feature = "kafka")]
    #[error("topic {topic} has {actual} partitions, not {wanted}; {why}")]
    TopicPartitions { topic: String, actual: u32, wanted: u32, why: &'static str },
    /// A partition this bus does not have.
    #[error("no partition {0}")]
    NoPartition(u32),
    /// The standalone webhooks' journal (`webhooks.redb`) failed.
    #[error("webhook journal: {0}")]
    Journal(String),
    /// A blocking client call, run on tokio's blocking pool, panicked or was cancelled.
    #[error("bus task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One record of the ingress log and its place there.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: u32,
    pub offset: u64,
    pub record: IngressRecord,
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Number of ingress partitions; fixed for the life of a cluster.
    fn partitions(&self) -> u32;
    /// Ok when the bus answers.
    async fn ping(&self) -> Result<()>;
    /// Appends a write to the ingress log, keyed by its room. Ok once the log
    /// holds it; the dispatcher's reply comes later through [`Push`].
    async fn produce(&self, record: &IngressRecord) -> Result<()>;
    /// Joins the dispatchers' consumer group.
    async fn consumer(&self) -> Result<Box<dyn Consumer>>;
    /// Joins another consumer group of the ingress log, named `group`, that
    /// reads and commits independently of the dispatchers (a webhook's).
    async fn consumer_group(&self, group: &str) -> Result<Box<dyn Consumer>> {
        Err(Error::Unavailable(format!("this bus has no consumer group {group}")))
    }
    /// Tells every dispatcher and gateway something about this gateway.
    async fn announce(&self, announcement: &Announcement) -> Result<()>;
    /// Announcements made from now on, by any gateway.
    async fn announcements(&self) -> Result<mpsc::Receiver<Announcement>>;
}

#[async_trait]
pub trait Consumer: Send {
    /// Waits until records are available and returns up to `max` of them,
    /// each partition's in log order.
    async fn poll(&mut self, max: usize) -> Result<Vec<Record>>;
    /// Everything before `next_offset` of each partition is processed.
    async fn commit(&mut self, offsets: &[(u32, u64)]) -> Result<()>;
    /// Records in the log not yet committed, per assigned partition.
    async fn lag(&self) -> Vec<(u32, u64)>;
    /// `true` once after the consumer's partitions changed (a rebalance): the
    /// dispatcher then forgets what it cached and reloads its checkpoints.
    fn take_rebalanced(&mut self) -> bool {
        false
    }
}

/// The partition of a room: FNV-1a of its name. Stable across versions and
/// platforms, which `std`'s hasher is not.
pub fn partition_for(room: &str, partitions: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in room.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % partitions.max(1)
}
