//! The process around the protocol: admin endpoints, drain on shutdown, TLS,
//! the closing handshake.

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
        "confab_store_operation_duration_seconds_count{op=\"stage\"}",
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

/// Many users send to many rooms at once, each with many sends in flight
/// (the dispatcher decides a batch while the last one is being synced):
/// every send is acked, each sender's messages in a room get seqs in the
/// order sent, and after a restart every acked message is in history once,
/// at its seq, with its text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_pipelined_sends_to_many_rooms_is_acked_in_order_and_survives_a_restart() {
    // Each session gets every event of its rooms while it writes its
    // sends: 5 x 3 x 10 events and 30 replies stay within its outbound
    // queue (256 frames).
    const USERS: usize = 5;
    const ROOMS: usize = 3;
    const PER_ROOM: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let start = || async {
        let running = confab::standalone::start(common::config_with(
            dir.path(),
            &["--rate-burst", "1000", "--rate-per-second", "1000"],
        ))
        .await
        .unwrap();
        let base = format!("{}", running.public());
        (running, base)
    };
    let (running, base) = start().await;
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for u in 0..USERS {
        let creds = json!({"username": format!("user{u}"), "password": "password-123"});
        let r = http.post(format!("http://{base}/v1/auth/register")).json(&creds).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let login: serde_json::Value =
            http.post(format!("http://{base}/v1/auth/login")).json(&creds).send().await.unwrap().json().await.unwrap();
        tokens.push(login["token"].as_str().unwrap().to_owned());
    }
    let mut senders = Vec::new();
    for (u, token) in tokens.iter().enumerate() {
        let url = format!("ws://{base}/v1/ws?token={token}");
        senders.push(tokio::spawn(async move {
            let mut c = common::Client::connect(&url).await;
            for r in 0..ROOMS {
                c.join(&format!("room{r}")).await;
            }
            // Every send written before any reply is read.
            for i in 0..PER_ROOM {
                for r in 0..ROOMS {
                    let req = json!({"id": format!("{r}-{i}"), "op": "send", "room": format!("room{r}"),
                        "text": format!("user{u} {i}"), "cid": format!("c{r}-{i}")});
                    c.send_text(&req.to_string()).await;
                }
            }
            // (room, i) -> seq
            let mut acked = std::collections::HashMap::new();
            while acked.len() < ROOMS * PER_ROOM {
                let v = c.next_json().await;
                let Some(id) = v.get("re").and_then(|id| id.as_str()) else { continue };
                assert_eq!(v["ok"], true, "{v}");
                let (r, i) = id.split_once('-').unwrap();
                let key = (r.parse::<usize>().unwrap(), i.parse::<usize>().unwrap());
                assert!(acked.insert(key, v["seq"].as_u64().unwrap()).is_none(), "one reply per send: {v}");
            }
            for r in 0..ROOMS {
                let seqs: Vec<u64> = (0..PER_ROOM).map(|i| acked[&(r, i)]).collect();
                assert!(seqs.windows(2).all(|w| w[0] < w[1]), "user{u}'s sends to room{r} in the order sent: {seqs:?}");
            }
            acked
        }));
    }
    // room -> seq -> text
    let mut want: Vec<std::collections::BTreeMap<u64, String>> = vec![Default::default(); ROOMS];
    for (u, sender) in senders.into_iter().enumerate() {
        for ((r, i), seq) in sender.await.unwrap() {
            assert!(want[r].insert(seq, format!("user{u} {i}")).is_none(), "seq {seq} given twice in room{r}");
        }
    }
    running.stop().await.unwrap();

    let (running, base) = start().await;
    let mut c = common::Client::connect(&format!("ws://{base}/v1/ws?token={}", tokens[0])).await;
    for (r, want) in want.iter().enumerate() {
        let h = c.ok(json!({"op":"history","room":format!("room{r}"),"limit":100})).await;
        let stored = common::seqs_and_texts(&h);
        let want: Vec<(u64, String)> = want.iter().map(|(s, t)| (*s, t.clone())).collect();
        assert_eq!(stored, want, "room{r}: every acked message once, at its seq, in order");
    }
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

/// RFC 6455 5.5.1: a close frame is answered with one before the connection
/// ends, so a client that closes cleanly sees its own code, not 1006. Over a
/// raw socket, to see exactly what the server writes.
async fn a_clients_close_frame_is_answered_before_the_connection_ends(s: TestServer) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let token = s.user("alice").await;
    for gateway in &s.gateways {
        let addr = gateway.strip_prefix("ws://").and_then(|a| a.strip_suffix("/v1/ws")).unwrap();
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let upgrade = format!(
            "GET /v1/ws?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(upgrade.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let hello = tokio::time::timeout(common::PATIENCE, async {
            loop {
                let mut chunk = [0; 4096];
                let n = tcp.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the server hung up: {}", String::from_utf8_lossy(&received));
                received.extend_from_slice(&chunk[..n]);
                if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&received[..end]).into_owned();
                    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
                    if let Some(first) = frames(&received[end + 4..]).first() {
                        return first.clone();
                    }
                }
            }
        })
        .await
        .expect("hello in time");
        assert_eq!(hello.0, 0x1, "a text frame");
        assert!(String::from_utf8_lossy(&hello.1).contains(r#""ev":"hello""#));

        // FIN + close, masked (as every client frame must be), code 1000.
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let code = 1000u16.to_be_bytes();
        tcp.write_all(&[0x88, 0x80 | 2, mask[0], mask[1], mask[2], mask[3], code[0] ^ mask[0], code[1] ^ mask[1]])
            .await
            .unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(common::PATIENCE, tcp.read_to_end(&mut rest))
            .await
            .expect("the server ends the connection in time")
            .expect("a clean end, not a reset");
        let after = frames(&rest);
        let close = after.iter().find(|(opcode, _)| *opcode == 0x8).expect("a close frame before EOF");
        assert_eq!(u16::from_be_bytes([close.1[0], close.1[1]]), 1000, "the client's code, echoed");
    }
}

/// The complete frames in what the server wrote (unmasked): opcode and payload.
fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let (len, header) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => (u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        let Some(payload) = bytes.get(header..header + len) else { break };
        out.push((bytes[0] & 0x0f, payload.to_vec()));
        bytes = &bytes[header + len..];
    }
    out
}

#[tokio::test]
async fn a_clients_close_frame_is_answered_on_a_standalone_server() {
    a_clients_close_frame_is_answered_before_the_connection_ends(TestServer::start().await).await
}

#[tokio::test]
async fn a_clients_close_frame_is_answered_on_every_gateway_of_a_cluster() {
    let test =
        async { a_clients_close_frame_is_answered_before_the_connection_ends(TestServer::start_cluster().await).await };
    tokio::time::timeout(std::time::Duration::from_secs(240), test).await.expect("the test ends in time")
}
