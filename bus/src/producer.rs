//! A Kafka producer whose sends are futures, with a polling thread that
//! sleeps while librdkafka has nothing to report.
//!
//! rdkafka's `FutureProducer` polls on a thread of its own every 100 ms.
//! `BaseProducer::poll` loops until its deadline, and each wait it asks of
//! librdkafka is in whole milliseconds, so the last fraction of a
//! millisecond of every poll is a busy loop: up to 1% of a core per
//! producer, ten times a second, whatever the load. Measured on an idle
//! gateway holding 2,000 connections: that thread was 40% of the process's
//! CPU (`perf record -g -p <gateway>`, `--sort comm`: "producer polling").
//! Here the thread polls in [`POLL`] periods: a delivery report still
//! wakes it at once, and the busy fraction comes once per period.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Message as _, ToBytes};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use tokio::sync::oneshot;

/// One poll of the polling thread. It returns early for nothing, so this is
/// also how long the thread outlives its [`Producer`] (then it drops the
/// client, which purges and flushes what is left, off the async runtime).
const POLL: Duration = Duration::from_secs(5);
/// How much later than twice the queue timeout a send gives up on its
/// delivery report.
const REPORT_SLACK: Duration = Duration::from_secs(5);
/// Between attempts to enqueue a record while librdkafka's queue is full.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(10);

/// Where a record landed: `(partition, offset)`.
pub type Delivered = (i32, i64);

/// Hands each delivery report to the future waiting for it.
pub struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<oneshot::Sender<KafkaResult<Delivered>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiting: Self::DeliveryOpaque) {
        let result = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.clone()),
        };
        // The sender may have given up waiting: nobody to tell.
        let _ = waiting.send(result);
    }
}

/// The producer; dropping it stops its polling thread within [`POLL`].
pub struct Producer {
    base: Arc<BaseProducer<Deliveries>>,
    stop: Arc<AtomicBool>,
}

impl Producer {
    pub fn new(config: &ClientConfig) -> KafkaResult<Producer> {
        let base: Arc<BaseProducer<Deliveries>> = Arc::new(config.create_with_context(Deliveries)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (polled, stopped) = (base.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kafka-producer-poll".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    polled.poll(POLL);
                }
            })
            .map_err(|_| KafkaError::ClientCreation("could not start the producer's polling thread".into()))?;
        Ok(Producer { base, stop })
    }

    /// The client, for its fatal-error state.
    pub fn client(&self) -> &rdkafka::client::Client<Deliveries> {
        self.base.client()
    }

    /// Sends one record to `topic`'s `partition`; resolves with its place in
    /// the log once the broker acknowledged it (as `acks` says), or with
    /// librdkafka's error. `queue_timeout` bounds the wait for room in
    /// librdkafka's queue; past it, the `QueueFull` error.
    pub async fn send<K, P>(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &K,
        payload: &P,
        queue_timeout: Duration,
    ) -> KafkaResult<Delivered>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let deadline = Instant::now() + queue_timeout;
        let delivered = loop {
            let (tx, rx) = oneshot::channel();
            let mut record = BaseRecord::with_opaque_to(topic, Box::new(tx)).key(key).payload(payload);
            record.partition = partition;
            match self.base.send(record) {
                Ok(()) => break rx,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) if Instant::now() < deadline => {
                    tokio::time::sleep(QUEUE_FULL_RETRY).await;
                }
                Err((e, _)) => return Err(e),
            }
        };
        // librdkafka reports every record within `message.timeout.ms` (the
        // same `produce_timeout` as `queue_timeout` here); a report that
        // never comes (the client was torn down) is a cancel, never a hang.
        let bound = queue_timeout.saturating_mul(2) + REPORT_SLACK;
        match tokio::time::timeout(bound, delivered).await {
            Ok(report) => report.unwrap_or(Err(KafkaError::Canceled)),
            Err(_) => Err(KafkaError::Canceled),
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_send_to_no_broker_fails_when_its_message_times_out() {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", "127.0.0.1:1").set("message.timeout.ms", "200");
        let producer = Producer::new(&config).unwrap();
        let sent = tokio::time::timeout(
            Duration::from_secs(30),
            producer.send("t", Some(0), "k", "v", Duration::from_secs(1)),
        )
        .await
        .expect("the delivery report arrives well before the thread's next period");
        assert!(matches!(sent, Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut))), "{sent:?}");
    }
}
