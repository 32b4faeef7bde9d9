//! `confab canary` against a real server: one gateway (standalone) and two
//! (a cluster on Kafka and Cassandra). It probes every gateway, counts
//! success, failure and delivery latency, and a wrong password or a stopped
//! server shows as failures.

#[macro_use]
mod common;

use std::time::Duration;

use common::{PATIENCE, TestServer};
use confab::canary::{CanaryConfig, CanaryMetrics};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn canary(server: &TestServer, password: &str) -> (CanaryMetrics, CancellationToken, tokio::task::JoinHandle<()>) {
    let mut args = vec!["--password", password, "--interval-ms", "100", "--timeout-ms", "10000"];
    for url in &server.https {
        args.extend(["--gateway", url.as_str()]);
    }
    let config: CanaryConfig = common::cluster::parse(&args);
    confab::config::RoleConfig::check(&config).expect("a valid canary config");
    let metrics = CanaryMetrics::new(&prometheus::Registry::new()).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (metrics, stop) = (metrics.clone(), stop.clone());
        async move { confab::canary::run(config, metrics, stop).await.expect("the canary runs") }
    });
    (metrics, stop, task)
}

fn failures(m: &CanaryMetrics, reason: &str) -> u64 {
    m.failures.with_label_values(&[reason]).get()
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(PATIENCE * 2, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

async fn probes_every_gateway_and_counts_failures_when_the_server_stops(mut server: TestServer) {
    let gateways = server.https.len();
    // A user in the canary's room sees its messages: they really go through.
    let token = server.user("watcher").await;
    let mut watcher = server.connect(&token).await;
    let joined = watcher.request(json!({"op": "join", "room": "confab-canary"})).await;
    assert_eq!(joined["ok"], true, "{joined}");

    let (metrics, stop, task) = canary(&server, "canary-password-1");
    let rounds = 3;
    // Probes run one after the other: once the next has started, three
    // rounds are complete.
    until("three rounds of probes", || metrics.probes.get() > (rounds * gateways) as u64).await;
    for reason in confab::canary::FAILURE_REASONS {
        assert_eq!(failures(&metrics, reason), 0, "{reason} failures");
    }
    assert_eq!(metrics.gateways.get(), gateways as i64);
    // Each probe is seen on every gateway: one latency sample each.
    assert!(metrics.delivery.get_sample_count() >= (rounds * gateways * gateways) as u64);
    let msg = watcher.event(|e| e["ev"] == "msg").await;
    assert_eq!(msg["from"], "confab-canary", "{msg}");
    assert!(msg["text"].as_str().unwrap().starts_with("canary-"), "{msg}");

    // The server goes away: every probe fails.
    server.stop().await;
    until("failed probes", || failures(&metrics, "connect") + failures(&metrics, "send") >= 2).await;
    stop.cancel();
    tokio::time::timeout(PATIENCE, task).await.expect("the canary stops").unwrap();
}

async fn a_wrong_password_is_a_failed_probe_and_harms_nobody(server: TestServer) {
    // Someone already holds the canary's name with another password.
    let taken = server.user("confab-canary").await;
    let (metrics, stop, task) = canary(&server, "not-the-password");
    until("failed probes", || failures(&metrics, "connect") >= server.https.len() as u64).await;
    assert_eq!(metrics.delivery.get_sample_count(), 0, "nothing was delivered");
    stop.cancel();
    task.await.unwrap();
    // The account's owner is unaffected.
    let mut owner = server.connect(&taken).await;
    let joined = owner.request(json!({"op": "join", "room": "elsewhere"})).await;
    assert_eq!(joined["ok"], true, "{joined}");
}

on_every_mode!(
    probes_every_gateway_and_counts_failures_when_the_server_stops,
    a_wrong_password_is_a_failed_probe_and_harms_nobody
);
