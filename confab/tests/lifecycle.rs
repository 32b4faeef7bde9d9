//! The process around the protocol: admin endpoints, drain on shutdown, TLS.

mod common;

use std::sync::Arc;

use common::TestServer;
use serde_json::json;

#[tokio::test]
async fn the_admin_port_serves_health_readiness_and_metrics() {
    let s = TestServer::start().await;
    let mut alice = s.connected("alice").await;
    alice.join("r").await;
    alice.send("r", "hi", "c1").await;
    let get = |path: &str| s.client.get(format!("{}{path}", s.admin)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let metrics = s.metrics().await;
    for name in [
        "confab_gateway_connections 1",
        "confab_sessions_opened_total 1",
        "confab_send_ack_duration_seconds_count 1",
        "confab_dispatcher_records_total{command=\"send\",outcome=\"ok\"} 1",
        "confab_store_operation_duration_seconds_count{op=\"apply\"}",
        "confab_requests_total{op=\"join\",outcome=\"pending\"} 1",
        "confab_consumer_lag_records{partition=\"0\"}",
    ] {
        assert!(metrics.contains(name), "/metrics has {name}:\n{metrics}");
    }
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("confab_"), "every metric is confab_-prefixed: {line}");
        assert!(!line.contains("alice") && !line.contains("room=\""), "no user or room ids as labels: {line}");
    }
}

#[tokio::test]
async fn stopping_says_bye_server_restart_to_every_session() {
    let mut s = TestServer::start().await;
    let token = s.user("alice").await;
    let mut a = s.connect(&token).await;
    let mut b = s.connect(&token).await;
    s.stop().await;
    for c in [&mut a, &mut b] {
        let (code, frames) = c.closed().await;
        assert_eq!(code, 1012);
        assert_eq!(frames.last().unwrap(), &json!({"ev":"bye","reason":"server_restart"}));
    }
}

#[tokio::test]
async fn acked_messages_survive_a_restart_on_the_same_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let start = || async {
        let running = confab::standalone::start(common::config(dir.path())).await.unwrap();
        let base = format!("{}", running.public());
        (running, base)
    };
    let (running, base) = start().await;
    let http = reqwest::Client::new();
    let register = json!({"username":"alice","password":"password-123"});
    assert_eq!(
        http.post(format!("http://{base}/v1/auth/register")).json(&register).send().await.unwrap().status(),
        201
    );
    let login: serde_json::Value =
        http.post(format!("http://{base}/v1/auth/login")).json(&register).send().await.unwrap().json().await.unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let mut c = common::Client::connect(&format!("ws://{base}/v1/ws?token={token}")).await;
    c.join("r").await;
    let mut seqs = Vec::new();
    for i in 0..20 {
        seqs.push(c.send("r", &format!("m{i}"), &format!("c{i}")).await["seq"].as_u64().unwrap());
    }
    running.stop().await.unwrap();

    let (running, base) = start().await;
    let mut c = common::Client::connect(&format!("ws://{base}/v1/ws?token={token}")).await;
    let h = c.ok(json!({"op":"history","room":"r","limit":100})).await;
    let stored: Vec<u64> = h["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(stored, seqs, "every acked message, its seq and its order");
    let next = c.send("r", "after restart", "c-next").await["seq"].as_u64().unwrap();
    assert!(next > *seqs.last().unwrap(), "seqs keep increasing after a restart");
    let again = c.send("r", "m0", "c0").await;
    assert_eq!(again["seq"], seqs[0], "dedupe by cid survives the restart");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn the_public_listener_can_terminate_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let s = TestServer::start_with(|c| {
        c.server.tls_cert = Some(cert_path.clone());
        c.server.tls_key = Some(key_path.clone());
    })
    .await;
    let addr = s.running.as_ref().unwrap().public();

    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector.connect("localhost".try_into().unwrap(), tcp).await.expect("TLS handshake");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"username":"alice","password":"password-123"}"#;
    let req = format!(
        "POST /v1/auth/register HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut response = String::new();
    let _ = tls.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");

    // Plain HTTP on the TLS port gets nowhere.
    let plain = reqwest::Client::new().get(format!("http://{addr}/healthz")).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}
