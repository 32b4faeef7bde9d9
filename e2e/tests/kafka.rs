//! Real Kafka (KRaft) from `scripts/infra up kafka`: the admin client creates
//! a topic, a producer writes keyed records, a consumer group reads them all
//! back and commits, and the committed offsets are what was produced.

use std::collections::BTreeMap;
use std::time::Duration;

use confab_e2e::{infra_env, unique_name, wait_for};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 3;
const RECORDS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_produce_and_consume_through_a_group() {
    let bootstrap = infra_env("KAFKA_BOOTSTRAP", "kafka");
    let topic = unique_name("e2e-kafka");
    let group = unique_name("e2e-group");

    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).create().expect("admin client");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    let created = admin
        .create_topics(&[NewTopic::new(&topic, PARTITIONS, TopicReplication::Fixed(1))], &opts)
        .await
        .expect("CreateTopics request");
    for r in created {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }

    // The broker refuses to create topics implicitly (auto.create.topics.enable=false):
    // a metadata request for an unknown topic must not make it appear.
    let missing = unique_name("e2e-kafka-missing");
    let md =
        admin.inner().fetch_metadata(Some(&missing), Duration::from_secs(10)).expect("metadata for a missing topic");
    assert!(md.topics().iter().all(|t| t.partitions().is_empty()), "topic {missing} was auto-created");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    let mut produced: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..RECORDS {
        let key = format!("room-{}", i % 5);
        let payload = format!("message {i}");
        producer
            .send(FutureRecord::to(&topic).key(&key).payload(&payload), Duration::from_secs(20))
            .await
            .unwrap_or_else(|(e, _)| panic!("producing record {i}: {e}"));
        produced.entry(key).or_default().push(payload);
    }

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");

    let mut consumed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut count = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while count < RECORDS {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out: consumed {count} of {RECORDS} records"))
            .expect("consumer error");
        let key = String::from_utf8(msg.key().expect("key").to_vec()).unwrap();
        let payload = String::from_utf8(msg.payload().expect("payload").to_vec()).unwrap();
        consumed.entry(key).or_default().push(payload);
        consumer.commit_message(&msg, CommitMode::Sync).expect("commit");
        count += 1;
    }
    // Per key (and so per partition) the order is the produced order.
    assert_eq!(consumed, produced);

    // The group's committed offsets add up to every record.
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(&topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum();
    assert_eq!(total, RECORDS as i64, "committed offsets: {committed:?}");
    drop(consumer);

    admin.delete_topics(&[&topic], &opts).await.expect("DeleteTopics request");
    wait_for("the topic to be deleted", Duration::from_secs(30), Duration::from_millis(300), || async {
        let md = admin.inner().fetch_metadata(Some(&topic), Duration::from_secs(5))?;
        Ok(md.topics().iter().all(|t| t.partitions().is_empty()).then_some(()))
    })
    .await
    .unwrap();
}
