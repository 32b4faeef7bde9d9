//! The raw TCP transport (`tcp_listen`, docs/protocol.md: Transports): the
//! `auth` line and its refusals, lines over the frame limit, heartbeats and
//! idleness, rate limits, TLS, and TCP and WebSocket users in one room.
//! (messaging.rs runs its whole suite over TCP as well.)

#[macro_use]
mod common;

use common::tcp::{TCP_FLAGS, TcpClient};
use common::{PATIENCE, TestServer};
use serde_json::json;

fn flags(more: &[&str]) -> Vec<String> {
    TCP_FLAGS.iter().chain(more).map(|s| s.to_string()).collect()
}

fn tcp() -> Vec<String> {
    flags(&[])
}

fn quick_heartbeats() -> Vec<String> {
    flags(&["--heartbeat-ms=200"])
}

fn small_burst() -> Vec<String> {
    flags(&["--rate-burst=3", "--rate-per-second=1"])
}

async fn tcp_and_websocket_users_share_rooms_and_events(s: TestServer) {
    let alice_token = s.user("alice").await;
    let mut alice = s.tcp(&alice_token).await;
    assert_eq!(alice.hello["user"], "alice");
    let mut bob = s.connected("bob").await;
    alice.ok(json!({"op":"join","room":"r"})).await;
    bob.join("r").await;
    alice.event(|e| e["ev"] == "member" && e["user"] == "bob").await;
    alice.ok(json!({"op":"send","room":"r","text":"over tcp","cid":"c1"})).await;
    let msg = bob.event(|e| e["ev"] == "msg").await;
    assert_eq!((msg["from"].as_str(), msg["text"].as_str()), (Some("alice"), Some("over tcp")));
    bob.send("r", "over websocket", "c2").await;
    let msg = alice.event(|e| e["ev"] == "msg" && e["from"] == "bob").await;
    assert_eq!(msg["text"], "over websocket");
    // A malformed line is a bad request, as a malformed frame is; the session goes on.
    alice.line("not json").await;
    let r = alice.next_json().await;
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    alice.raw(b"\xff\xfe\n").await;
    let r = alice.next_json().await;
    assert_eq!(r["error"]["code"], "bad_request", "bytes that are not UTF-8 are a binary frame: {r}");
    let history = alice.ok(json!({"op":"history","room":"r"})).await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 2);
}

async fn a_session_without_a_good_auth_line_gets_an_error_a_bye_and_a_close(s: TestServer) {
    let token = s.user("alice").await;
    let mut alice = s.tcp(&token).await;
    let addr = s.tcp_addrs()[0];
    for (first, re) in [
        (json!({"op":"auth","id":7,"token":"not-a-token"}).to_string(), json!(7)),
        (json!({"op":"auth","id":"a"}).to_string(), json!("a")),
        (json!({"op":"join","id":3,"room":"r"}).to_string(), json!(3)),
        ("{\"op\":\"auth\",".to_string(), serde_json::Value::Null),
        (json!({"op":"auth","token":format!("{token}x")}).to_string(), serde_json::Value::Null),
    ] {
        let mut c = TcpClient::connect(addr).await;
        c.line(&first).await;
        let lines = c.closed().await;
        assert_eq!(lines.len(), 2, "{first}: {lines:?}");
        assert_eq!(lines[0]["ok"], false, "{first}: {lines:?}");
        assert_eq!(lines[0]["error"]["code"], "unauthorized", "{first}: {lines:?}");
        assert_eq!(lines[0].get("re").cloned().unwrap_or_default(), re, "{first}");
        assert_eq!(lines[1], json!({"ev":"bye","reason":"unauthorized"}), "{first}");
    }
    // Nothing got past auth: a request as the first line did nothing.
    assert_eq!(alice.ok(json!({"op":"rooms"})).await["rooms"], json!([]));
    assert!(s.metric("confab_auth_failures_total{where=\"tcp\"}").await >= 5.0);
}

async fn a_line_over_the_frame_limit_is_refused_with_a_bye_and_a_close(s: TestServer) {
    let token = s.user("alice").await;
    let mut alice = s.tcp(&token).await;
    let mut other = s.tcp(&token).await;
    // 1 MiB without a newline, against a limit of 64 KiB: refused once the
    // limit is passed, without waiting for the rest of the line.
    let big = vec![b'x'; 1 << 20];
    assert_eq!(alice.write_until_closed(&big).await, [json!({"ev":"bye","reason":"frame_too_large"})]);
    // The same before auth.
    let mut early = TcpClient::connect(s.tcp_addrs()[0]).await;
    assert_eq!(early.write_until_closed(&big).await, [json!({"ev":"bye","reason":"frame_too_large"})]);
    // The user's other session goes on.
    other.ok(json!({"op":"ping"})).await;
}

async fn heartbeats_are_empty_lines_and_a_silent_client_is_closed_as_idle(s: TestServer) {
    let token = s.user("alice").await;
    let mut silent = s.tcp(&token).await;
    let mut live = s.tcp(&token).await;
    assert_eq!(live.hello["heartbeat_ms"], 200);
    // The live client answers every heartbeat with one of its own, past
    // several idle periods (2.5 heartbeats each).
    while live.heartbeats < 8 {
        let line = live.next_line().await.expect("open");
        assert_eq!(line, "", "only heartbeats come to an idle session");
        live.heartbeats += 1;
        live.line("").await;
    }
    assert_eq!(silent.closed().await, [json!({"ev":"bye","reason":"idle"})]);
    live.ok(json!({"op":"ping"})).await;
}

async fn the_rate_limit_holds_over_tcp(s: TestServer) {
    let token = s.user("alice").await;
    let mut alice = s.tcp(&token).await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        let r = alice.request(json!({"op":"ping"})).await;
        codes.push(r["error"]["code"].as_str().unwrap_or("ok").to_owned());
    }
    assert!(codes.iter().any(|c| c == "rate_limited"), "{codes:?}");
    assert_eq!(codes[0], "ok");
}

on_every_mode_with!(plain, gateway: tcp;
    tcp_and_websocket_users_share_rooms_and_events,
    a_session_without_a_good_auth_line_gets_an_error_a_bye_and_a_close,
    a_line_over_the_frame_limit_is_refused_with_a_bye_and_a_close,
);
on_every_mode_with!(heartbeats, gateway: quick_heartbeats;
    heartbeats_are_empty_lines_and_a_silent_client_is_closed_as_idle,
);
on_every_mode_with!(rates, gateway: small_burst;
    the_rate_limit_holds_over_tcp,
);

#[tokio::test]
async fn a_draining_server_says_bye_server_restart_to_tcp_sessions() {
    let mut s = TestServer::start_with_flags(&TCP_FLAGS).await;
    let token = s.user("alice").await;
    let mut alice = s.tcp(&token).await;
    let addr = s.tcp_addrs()[0];
    let stop = s.stop();
    let (_, lines) = tokio::join!(stop, alice.closed());
    assert_eq!(lines, [json!({"ev":"bye","reason":"server_restart"})]);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed");
}

#[tokio::test]
async fn the_tcp_listener_speaks_tls_with_its_own_certificate() {
    use std::sync::Arc;
    use tokio_rustls::rustls;

    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let (c, k) = (cert_pem.to_str().unwrap(), key_pem.to_str().unwrap());
    let s = TestServer::start_with_flags(&[TCP_FLAGS[0], TCP_FLAGS[1], "--tcp-tls-cert", c, "--tcp-tls-key", k]).await;
    let token = s.user("alice").await;
    let addr = s.tcp_addrs()[0];

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(PATIENCE, connector.connect(name, tcp)).await.unwrap().expect("TLS handshake");
    let mut alice = TcpClient::over(tls);
    alice.auth(&token).await;
    alice.ok(json!({"op":"join","room":"r"})).await;

    // Plain text on the TLS port is not a session.
    let mut plain = TcpClient::connect(addr).await;
    plain.line(&json!({"op":"auth","token":token}).to_string()).await;
    let mut line = String::new();
    let read = tokio::time::timeout(PATIENCE, tokio::io::AsyncBufReadExt::read_line(&mut plain.read, &mut line)).await;
    assert!(!line.contains("hello"), "{read:?} {line}");
    alice.ok(json!({"op":"ping"})).await;
}
