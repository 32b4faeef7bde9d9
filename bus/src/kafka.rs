//! The distributed bus: Apache Kafka through rdkafka.
//!
//! * Ingress: topic `<prefix>.ingress`, keyed by room, so one partition (and
//!   one dispatcher) sees each room's writes in order. The producer is
//!   idempotent with `acks=all` (fixed: `kafka_properties` may not change
//!   `acks` or `enable.idempotence`); `produce` resolves when every in-sync
//!   replica has the record, and with `min.insync.replicas` set on the topics
//!   (by `confab migrate`) a write that fewer replicas could take is refused
//!   rather than acked. Dispatchers form the consumer group `<prefix>.dispatchers` with
//!   cooperative-sticky assignment and commit offsets by hand, after the store
//!   write.
//! * Announcements: topic `<prefix>.gateways`, one partition, read from its
//!   end by every process (each with a group of its own, never committing).
//!
//! Topics are created by `confab migrate` ([`KafkaBus::create_topics`]),
//! never implicitly: a missing topic is a startup error.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use confab_protocol::IngressRecord;
use confab_protocol::record::Announcement;
use futures_util::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::closing::Closing;
use crate::producer::Producer;
use crate::{Bus, Consumer, Error, Record, Result};

/// Kafka settings shared by every process of a cluster.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port,host:port`
    pub bootstrap: String,
    /// Prefix of every topic and group name, so clusters can share brokers.
    pub topic_prefix: String,
    /// Producer linger: how long a record may wait for others to share its
    /// request. Small, for latency.
    pub linger: Duration,
    /// How long `produce` may take before the write is `unavailable`.
    pub produce_timeout: Duration,
    /// Extra librdkafka properties (TLS, SASL, tuning), applied last.
    pub extra: Vec<(String, String)>,
}

impl KafkaConfig {
    pub fn ingress_topic(&self) -> String {
        format!("{}.ingress", self.topic_prefix)
    }
    pub fn gateways_topic(&self) -> String {
        format!("{}.gateways", self.topic_prefix)
    }
    pub fn dispatcher_group(&self) -> String {
        format!("{}.dispatchers", self.topic_prefix)
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c.set("socket.keepalive.enable", "true");
        // librdkafka leaves Nagle's algorithm on by default: a produce or
        // fetch request written while the last is unacknowledged would wait
        // for the broker's delayed ACK (40 ms on Linux), which was the DM
        // p99 (~48 ms at every rate from 250 to 1,000 messages/s).
        c.set("socket.nagle.disable", "true");
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

/// Names a failed client call.
fn kafka(what: &'static str) -> impl FnOnce(KafkaError) -> Error {
    move |source| Error::Kafka { what, source }
}

#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaConfig,
    /// Replaced when librdkafka declares it failed for good (a fatal
    /// error, such as an `OutOfOrderSequence` after a broker lost the tail
    /// of a log): a fatal producer refuses every write after it.
    producer: std::sync::RwLock<Arc<Producer>>,
    /// A group-less client for metadata and watermark requests, which block:
    /// they run on the blocking pool.
    metadata: Arc<BaseConsumer>,
    partitions: u32,
}

/// How long the broker may hold an announcements fetch that finds nothing
/// new. At 10 ms every idle gateway and dispatcher sent 100 fetches a second
/// to the broker: about 1% of a core in the process's librdkafka broker
/// thread (measured on an idle gateway: 1.9% of a core in all, 0.9% at 100
/// ms), and as much again in the broker. A new route waits at most this
/// long, and a dispatcher that learns a route late pushes what the session
/// missed (`Pipeline::learn`). The ingress consumers keep 5 ms: measured,
/// a longer wait there delays deliveries (at 500 ms the DM p50 went from
/// 64 ms to 2.1 s; why the broker does not answer the held fetch at the
/// first new record there is not yet understood).
const ANNOUNCEMENTS_FETCH_WAIT_MS: &str = "100";

impl KafkaBus {
    /// A consumer of the ingress log in consumer group `group`: offsets
    /// committed by hand, cooperative-sticky assignment.
    fn consumer_in(&self, group: &str, max_poll_interval_ms: &str) -> Result<Box<dyn Consumer>> {
        let config = &self.inner.config;
        let mut cc = config.client();
        cc.set("group.id", group)
            .set("max.poll.interval.ms", max_poll_interval_ms)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "5");
        let context = Rebalances { changed: Arc::new(AtomicBool::new(true)) };
        let changed = context.changed.clone();
        let consumer: StreamConsumer<Rebalances> =
            cc.create_with_context(context).map_err(kafka("creating the ingress consumer"))?;
        consumer.subscribe(&[&config.ingress_topic()]).map_err(kafka("subscribing to the ingress topic"))?;
        Ok(Box::new(KafkaConsumer {
            consumer: Closing::new(Arc::new(consumer), CLOSE_WAIT),
            topic: config.ingress_topic(),
            changed,
            metadata: self.inner.metadata.clone(),
        }))
    }

    /// Connects and checks that the topics exist; their absence is an error
    /// that says to run `confab migrate`.
    pub async fn connect(config: KafkaConfig) -> Result<KafkaBus> {
        let producer = std::sync::RwLock::new(producer(&config)?);
        let metadata = Arc::new(metadata_client(&config)?);
        let partitions = topic_partitions(&metadata, config.ingress_topic()).await?;
        let gateways = topic_partitions(&metadata, config.gateways_topic()).await?;
        if gateways != 1 {
            return Err(Error::TopicPartitions {
                topic: config.gateways_topic(),
                actual: gateways,
                wanted: 1,
                why: "announcements need one order",
            });
        }
        Ok(KafkaBus { inner: Arc::new(Inner { config, producer, metadata, partitions }) })
    }

    /// Creates the ingress and announcement topics, `replication` replicas
    /// each of which `min_insync` must have a write before it is acked
    /// (idempotent: existing topics are kept; a different partition count is
    /// refused).
    pub async fn create_topics(config: &KafkaConfig, partitions: u32, replication: i32, min_insync: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            config.client().create().map_err(kafka("creating the admin client"))?;
        let ingress = config.ingress_topic();
        let gateways = config.gateways_topic();
        let min_insync = min_insync.to_string();
        let topics = [
            NewTopic::new(&ingress, partitions as i32, TopicReplication::Fixed(replication))
                .set("min.insync.replicas", &min_insync),
            NewTopic::new(&gateways, 1, TopicReplication::Fixed(replication))
                .set("min.insync.replicas", &min_insync)
                .set("retention.ms", "3600000")
                .set("cleanup.policy", "delete"),
        ];
        let results = admin
            .create_topics(&topics, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))))
            .await
            .map_err(kafka("creating topics"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, source)) => return Err(Error::CreateTopic { topic, source }),
            }
        }
        // A new topic takes a moment to appear in the brokers' metadata.
        let metadata = Arc::new(metadata_client(config)?);
        let mut tries = 0;
        let existing = loop {
            match topic_partitions(&metadata, ingress.clone()).await {
                Ok(n) => break n,
                Err(e) if tries >= 50 => return Err(e),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        if existing != partitions {
            return Err(Error::TopicPartitions {
                topic: ingress,
                actual: existing,
                wanted: partitions,
                why: "the count cannot change (seqs come from offsets)",
            });
        }
        Ok(())
    }
}

/// The idempotent producer, `acks=all`.
fn producer(config: &KafkaConfig) -> Result<Arc<Producer>> {
    let mut pc = config.client();
    pc.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", config.linger.as_millis().to_string())
        .set("message.timeout.ms", config.produce_timeout.as_millis().max(1).to_string())
        .set("compression.type", "lz4");
    Producer::new(&pc).map(Arc::new).map_err(kafka("creating the producer"))
}

impl Inner {
    fn producer(&self) -> Arc<Producer> {
        self.producer.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// After a failed send: a producer librdkafka declared fatally failed is
    /// replaced (once: whoever comes second finds the new one healthy). The
    /// write itself is `unavailable`; the client's retry with its cid goes
    /// through the new producer and is stored once.
    fn replace_if_fatal(&self, used: &Producer) {
        let Some((code, reason)) = used.client().fatal_error() else { return };
        let mut current = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if current.client().fatal_error().is_none() {
            return;
        }
        match producer(&self.config) {
            Ok(fresh) => {
                tracing::warn!(?code, %reason, "the Kafka producer failed fatally; replaced with a new one");
                *current = fresh;
            }
            Err(e) => tracing::error!(error = %e, "the Kafka producer failed fatally and could not be replaced"),
        }
    }
}

fn metadata_client(config: &KafkaConfig) -> Result<BaseConsumer> {
    config.client().create().map_err(kafka("creating the metadata client"))
}

/// The partition count of `topic`; a missing topic says to run `confab migrate`.
async fn topic_partitions(client: &Arc<BaseConsumer>, topic: String) -> Result<u32> {
    let client = client.clone();
    tokio::task::spawn_blocking(move || {
        let missing = || Error::NoTopic(topic.clone());
        let metadata =
            client.fetch_metadata(Some(&topic), Duration::from_secs(10)).map_err(kafka("fetching topic metadata"))?;
        let t = metadata.topics().iter().find(|t| t.name() == topic).ok_or_else(missing)?;
        if t.error().is_some() || t.partitions().is_empty() {
            return Err(missing());
        }
        Ok(t.partitions().len() as u32)
    })
    .await?
}

#[async_trait]
impl Bus for KafkaBus {
    fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    async fn ping(&self) -> Result<()> {
        topic_partitions(&self.inner.metadata, self.inner.config.ingress_topic()).await.map(|_| ())
    }

    async fn produce(&self, record: &IngressRecord) -> Result<()> {
        let topic = self.inner.config.ingress_topic();
        let payload = record.encode();
        // The partition is chosen here, not by librdkafka's partitioner, so
        // every Bus maps a room to the same partition.
        let partition = crate::partition_for(&record.room, self.inner.partitions) as i32;
        let producer = self.inner.producer();
        let sent =
            producer.send(&topic, Some(partition), record.room.as_bytes(), &payload, self.inner.config.produce_timeout);
        match sent.await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.inner.replace_if_fatal(&producer);
                Err(kafka("producing to the ingress topic")(e))
            }
        }
    }

    async fn consumer(&self) -> Result<Box<dyn Consumer>> {
        self.consumer_in(&self.inner.config.dispatcher_group(), "300000")
    }

    async fn consumer_group(&self, group: &str) -> Result<Box<dyn Consumer>> {
        // Such a group (a webhook's) may hold one record for hours while
        // its receiver is down, polling nothing meanwhile: it must keep its
        // partitions (liveness is the session's heartbeat, from librdkafka's
        // own thread), or another member would deliver the same backlog.
        self.consumer_in(&format!("{}.{group}", self.inner.config.topic_prefix), "86400000")
    }

    async fn announce(&self, announcement: &Announcement) -> Result<()> {
        let topic = self.inner.config.gateways_topic();
        let payload = serde_json::to_vec(announcement).expect("announcements serialize");
        let producer = self.inner.producer();
        let key = announcement.gateway().as_bytes();
        let sent = producer.send(&topic, None, key, &payload, self.inner.config.produce_timeout);
        sent.await.map(|_| ()).map_err(|e| {
            self.inner.replace_if_fatal(&producer);
            kafka("producing an announcement")(e)
        })
    }

    async fn announcements(&self) -> Result<mpsc::Receiver<Announcement>> {
        let config = &self.inner.config;
        let mut cc = config.client();
        // A group of its own: every process reads every announcement.
        let group = format!("{}.listener.{:016x}", config.topic_prefix, rand_id());
        cc.set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", ANNOUNCEMENTS_FETCH_WAIT_MS);
        let consumer: StreamConsumer = cc.create().map_err(kafka("creating the announcements consumer"))?;
        // "From now on" means from the current end, resolved here: an
        // `Offset::End` resolved later by the consumer could skip what is
        // announced in between.
        // A new topic's leader may not be known yet: retry for a while.
        let mut tries = 0;
        let end = loop {
            let (metadata, topic) = (self.inner.metadata.clone(), config.gateways_topic());
            let high =
                tokio::task::spawn_blocking(move || metadata.fetch_watermarks(&topic, 0, Duration::from_secs(10)))
                    .await?;
            match high {
                Ok((_, end)) => break end,
                Err(e) if tries >= 50 => return Err(kafka("reading the end of the announcements")(e)),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&config.gateways_topic(), 0, Offset::Offset(end))
            .map_err(kafka("naming the announcements' start"))?;
        consumer.assign(&tpl).map_err(kafka("assigning the announcements partition"))?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = tx.closed() => return,
                    msg = consumer.recv() => msg,
                };
                match msg {
                    Ok(m) => {
                        let Some(payload) = m.payload() else { continue };
                        match serde_json::from_slice::<Announcement>(payload) {
                            Ok(a) => {
                                if tx.send(a).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "skipping an announcement this version cannot read")
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading announcements");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Ok(rx)
    }
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Notes rebalances so the dispatcher reloads what it knows of its partitions.
struct Rebalances {
    changed: Arc<AtomicBool>,
}

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) | Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), kind = ?std::mem::discriminant(rebalance), "rebalance");
                self.changed.store(true, Ordering::SeqCst);
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// How long dropping an ingress consumer waits for librdkafka's close
/// (leaving the group, so its partitions move on at once).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

struct KafkaConsumer {
    consumer: Closing<Arc<StreamConsumer<Rebalances>>>,
    topic: String,
    changed: Arc<AtomicBool>,
    metadata: Arc<BaseConsumer>,
}

impl KafkaConsumer {
    fn record(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> Option<Record> {
        let payload = m.payload()?;
        match IngressRecord::decode(payload) {
            Ok(record) => Some(Record { partition: m.partition() as u32, offset: m.offset() as u64, record }),
            Err(e) => {
                // A record no dispatcher can read would block its partition
                // forever; skip it loudly instead.
                tracing::error!(partition = m.partition(), offset = m.offset(), error = %e, "skipping an unreadable ingress record");
                None
            }
        }
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, max: usize) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        loop {
            match self.consumer.recv().await {
                Ok(first) => {
                    out.extend(self.record(&first));
                    break;
                }
                // Broker outages surface here; librdkafka reconnects by itself.
                Err(e) => {
                    tracing::warn!(error = %e, "consuming the ingress topic");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        while out.len() < max {
            match self.consumer.recv().now_or_never() {
                Some(Ok(m)) => out.extend(self.record(&m)),
                Some(Err(_)) | None => break,
            }
        }
        Ok(out)
    }

    async fn commit(&mut self, offsets: &[(u32, u64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for &(p, next) in offsets {
            tpl.add_partition_offset(&self.topic, p as i32, Offset::Offset(next as i64))
                .map_err(kafka("naming the offsets to commit"))?;
        }
        // A synchronous commit blocks its thread for a round trip to the
        // broker: run it on the blocking pool, and know it landed.
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await?
            .map_err(kafka("committing offsets"))
    }

    async fn lag(&self) -> Vec<(u32, u64)> {
        let Ok(position) = self.consumer.position() else { return Vec::new() };
        let positions: Vec<(i32, i64)> = position
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect();
        let (metadata, topic) = (self.metadata.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || {
            positions
                .into_iter()
                .filter_map(|(p, pos)| {
                    let (_, high) = metadata.fetch_watermarks(&topic, p, Duration::from_secs(1)).ok()?;
                    Some((p as u32, (high - pos).max(0) as u64))
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    fn take_rebalanced(&mut self) -> bool {
        self.changed.swap(false, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::ClientConfig;
    use rdkafka::producer::BaseProducer;

    /// The librdkafka this binary links speaks TLS and SASL/SCRAM, which
    /// `--kafka-properties` (and the operator's `kafka.tls`/`kafka.sasl`)
    /// ask for; a build without them refuses the properties.
    #[test]
    fn tls_and_sasl_scram_are_built_in() {
        let producer: Result<BaseProducer, _> = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", "SCRAM-SHA-512")
            .set("sasl.username", "confab")
            .set("sasl.password", "secret")
            .create();
        assert!(producer.is_ok(), "{:?}", producer.err());
    }

    fn config(extra: &[(&str, &str)]) -> super::KafkaConfig {
        super::KafkaConfig {
            bootstrap: "127.0.0.1:9".into(),
            topic_prefix: "confab".into(),
            linger: std::time::Duration::from_millis(1),
            produce_timeout: std::time::Duration::from_secs(5),
            extra: extra.iter().map(|&(k, v)| (k.into(), v.into())).collect(),
        }
    }

    /// Every client Confab makes writes small requests without waiting for
    /// the broker's delayed ACK; a property given by the operator still wins.
    #[test]
    fn clients_turn_nagle_off_unless_told_otherwise() {
        assert_eq!(config(&[]).client().get("socket.nagle.disable"), Some("true"));
        let told = config(&[("socket.nagle.disable", "false")]);
        assert_eq!(told.client().get("socket.nagle.disable"), Some("false"));
    }
}
