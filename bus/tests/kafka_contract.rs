//! The Bus contract against a real Kafka broker: `KAFKA_BOOTSTRAP` (from
//! `scripts/infra up kafka`). Each test gets topics of its own.
#![cfg(feature = "kafka")]

use std::time::Duration;

use confab_bus::kafka::{KafkaBus, KafkaConfig};

fn config() -> KafkaConfig {
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP")
        .expect("KAFKA_BOOTSTRAP is not set: run `scripts/infra up kafka` and `source target/infra/env`");
    KafkaConfig {
        bootstrap,
        topic_prefix: format!("test-{:016x}", rand_id()),
        linger: Duration::from_millis(1),
        produce_timeout: Duration::from_secs(10),
        extra: Vec::new(),
    }
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

async fn open() -> ((), KafkaBus) {
    let config = config();
    KafkaBus::create_topics(&config, 4, 1, 1).await.expect("topics created");
    ((), KafkaBus::connect(config).await.expect("connected"))
}

confab_bus::bus_contract_tests!(open);

#[tokio::test]
async fn creating_topics_twice_is_fine_but_another_partition_count_is_refused() {
    let config = config();
    KafkaBus::create_topics(&config, 4, 1, 1).await.unwrap();
    KafkaBus::create_topics(&config, 4, 1, 1).await.unwrap();
    let e = KafkaBus::create_topics(&config, 8, 1, 1).await.unwrap_err().to_string();
    assert!(e.contains("cannot change"), "{e}");
}

#[tokio::test]
async fn connecting_without_topics_says_to_migrate() {
    let e = KafkaBus::connect(config()).await.err().expect("no topics yet").to_string();
    assert!(e.contains("confab migrate"), "{e}");
}
