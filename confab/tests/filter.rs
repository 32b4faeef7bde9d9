//! The message filter (`--filter-url`): asked before a message is stored, it
//! accepts, rejects (the sender gets `forbidden` with its reason) or
//! rewrites; while it is down, `--filter-when-down` allows or refuses.

mod common;

use std::sync::Arc;

use common::TestServer;
use common::receiver::Receiver;
use serde_json::{Value, json};

/// A filter that rejects "spam…", rewrites "darn" and accepts the rest.
async fn filter() -> Receiver {
    Receiver::start(Arc::new(|_, body: &[u8]| {
        let asked: Value = serde_json::from_slice(body).unwrap();
        let text = asked["text"].as_str().unwrap();
        let answer = if text.starts_with("spam") {
            json!({"action": "reject", "reason": "no spam here"})
        } else if text.contains("darn") {
            json!({"action": "rewrite", "text": text.replace("darn", "****")})
        } else {
            json!({"action": "accept"})
        };
        (200, answer.to_string(), 0)
    }))
    .await
}

/// A URL where nothing listens.
async fn nowhere() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}/filter", l.local_addr().unwrap())
}

async fn both_modes(flags: Vec<String>, test: impl AsyncFn(TestServer)) {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    test(TestServer::start_with_flags(&flags).await).await;
    let cluster = async { test(TestServer::start_cluster_with_roles(&[], &flags).await).await };
    tokio::time::timeout(common::CLUSTER_TEST, cluster).await.expect("the cluster test ends in time");
}

#[tokio::test]
async fn the_filter_rejects_with_its_reason_rewrites_and_accepts() {
    let f = filter().await;
    let flags = vec!["--filter-url".to_owned(), f.url.clone()];
    both_modes(flags, async |s: TestServer| {
        let mut alice = s.connected("alice").await;
        let mut bob = s.connected("bob").await;
        alice.join("r").await;
        bob.join("r").await;
        let refused = alice.request(json!({"op": "send", "room": "r", "text": "spam spam", "cid": "c1"})).await;
        assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains("no spam here"), "{refused}");
        alice.send("r", "darn it", "c2").await;
        alice.send("r", "hello", "c3").await;
        // Bob, the other session, sees the rewritten and the accepted text, never the spam.
        let first = bob.event(|e| e["ev"] == "msg" && e["cid"] == "c2").await;
        assert_eq!(first["text"], "**** it");
        bob.event(|e| e["ev"] == "msg" && e["cid"] == "c3").await;
        let history = alice.ok(json!({"op": "history", "room": "r"})).await;
        let texts: Vec<&str> =
            history["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["**** it", "hello"]);
        if s.others.is_empty() {
            // Standalone: its one process serves the filter's metrics.
            for outcome in ["reject", "rewrite", "accept"] {
                s.await_metric(&format!("confab_filter_requests_total{{outcome=\"{outcome}\"}}"), 1.0).await;
            }
            assert!(s.metrics().await.contains("confab_filter_duration_seconds_bucket{outcome=\"reject\""));
        }
    })
    .await;
    assert!(f.received().iter().any(|r| String::from_utf8_lossy(&r.body).contains("spam spam")));
}

#[tokio::test]
async fn a_filter_that_is_down_lets_messages_through_when_set_to_allow() {
    let url = nowhere().await;
    let flags = vec!["--filter-url".to_owned(), url, "--filter-when-down".to_owned(), "allow".to_owned()];
    both_modes(flags, async |s: TestServer| {
        let mut alice = s.connected("alice").await;
        alice.join("r").await;
        let sent = alice.send("r", "through", "c1").await;
        assert!(sent["seq"].as_u64().unwrap() > 0);
    })
    .await;
}

#[tokio::test]
async fn a_filter_that_is_down_refuses_messages_when_set_to_refuse() {
    // A filter too slow for its deadline is down too.
    let slow = Receiver::start(Arc::new(|_, _: &[u8]| (200, json!({"action": "accept"}).to_string(), 600))).await;
    for url in [nowhere().await, slow.url.clone()] {
        let flags = vec![
            "--filter-url".to_owned(),
            url,
            "--filter-when-down".to_owned(),
            "refuse".to_owned(),
            "--filter-timeout-ms".to_owned(),
            "200".to_owned(),
        ];
        both_modes(flags, async |s: TestServer| {
            let mut alice = s.connected("alice").await;
            alice.join("r").await;
            assert_eq!(
                alice.error(json!({"op": "send", "room": "r", "text": "held", "cid": "c1"})).await,
                "unavailable"
            );
            let history = alice.ok(json!({"op": "history", "room": "r"})).await;
            assert_eq!(history["messages"], json!([]), "nothing stored");
            // The session stays usable.
            alice.ok(json!({"op": "ping"})).await;
        })
        .await;
    }
}

/// An `https://` filter whose certificate `--webhook-ca-file` vouches for
/// rewrites as the plain one does; without the CA file the filter is down
/// (here: refuse), and nothing reaches it.
#[tokio::test]
async fn an_https_filter_its_ca_file_trusts_rewrites_and_an_untrusted_one_is_down() {
    let (f, ca) = Receiver::start_tls(Arc::new(|_, body: &[u8]| {
        let asked: Value = serde_json::from_slice(body).unwrap();
        let text = asked["text"].as_str().unwrap().replace("darn", "****");
        (200, json!({"action": "rewrite", "text": text}).to_string(), 0)
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let ca_file = ca_file.display().to_string();
    let flags = vec!["--filter-url".to_owned(), f.url.clone(), "--webhook-ca-file".to_owned(), ca_file];
    both_modes(flags, async |s: TestServer| {
        let mut alice = s.connected("alice").await;
        alice.join("r").await;
        alice.send("r", "darn tls", "c1").await;
        let history = alice.ok(json!({"op": "history", "room": "r"})).await;
        assert_eq!(history["messages"][0]["text"], "**** tls", "{history}");
    })
    .await;
    let asked = f.received().len();
    assert!(asked >= 2, "both modes asked the filter over TLS");

    let flags = ["--filter-url", &f.url, "--filter-when-down", "refuse"];
    let s = TestServer::start_with_flags(&flags).await;
    let mut alice = s.connected("alice").await;
    alice.join("r").await;
    let refused = alice.request(json!({"op": "send", "room": "r", "text": "darn", "cid": "c1"})).await;
    assert_eq!(refused["error"]["code"], "unavailable", "{refused}");
    assert_eq!(f.received().len(), asked, "no call crossed an untrusted handshake");
    alice.ok(json!({"op": "ping"})).await;
}
