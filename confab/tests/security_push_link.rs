//! The push link over TLS (issue #13), on two gateways and two dispatchers
//! over the real Kafka and Cassandra: messages flow when every gateway's
//! internal port speaks TLS and requires the dispatchers' client
//! certificates; plain and unauthenticated dialers are refused there; and a
//! heartbeat forged on Kafka that names an impostor's address gets the
//! impostor neither deliveries nor the internal token.
//!
//! The push link exists only between processes of a cluster, so these tests
//! have no standalone mode.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{self, Started};
use common::{CLUSTER_TEST, Client, PATIENCE, SECRET};
use confab::serving::Running;
use confab_bus::Bus;
use confab_bus::push::{InternalKey, push_request};
use confab_protocol::record::Announcement;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_rustls::rustls;

type Ca = CertifiedIssuer<'static, KeyPair>;

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// The files of a certificate that `ca` issued for `names`: (chain, key).
fn issue(dir: &Path, file: &str, ca: &Ca, names: &[&str]) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = CertificateParams::new(names).unwrap().signed_by(&key, ca).unwrap();
    let (cert_path, key_path) = (dir.join(format!("{file}.crt")), dir.join(format!("{file}.key")));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

/// The cluster's PKI: one CA; the gateways' certificate for the address
/// they announce (127.0.0.1) and the dispatchers' client certificate.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    ca_file: PathBuf,
    gateway: (PathBuf, PathBuf),
    dispatcher: (PathBuf, PathBuf),
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("confab cluster CA");
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let gateway = issue(dir.path(), "gateway", &ca, &["127.0.0.1", "localhost"]);
        let dispatcher = issue(dir.path(), "dispatcher", &ca, &["dispatcher"]);
        Pki { dir, ca, ca_file, gateway, dispatcher }
    }

    /// Two gateways and two dispatchers whose push links are mutual TLS.
    async fn cluster(&self) -> Started {
        let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
        let (ca, (gw_cert, gw_key), (d_cert, d_key)) = (
            s(&self.ca_file),
            (s(&self.gateway.0), s(&self.gateway.1)),
            (s(&self.dispatcher.0), s(&self.dispatcher.1)),
        );
        let gateway_flags =
            ["--internal-tls-cert", &gw_cert, "--internal-tls-key", &gw_key, "--internal-tls-client-ca", &ca];
        let dispatcher_flags =
            ["--internal-tls-ca", &ca, "--internal-tls-client-cert", &d_cert, "--internal-tls-client-key", &d_key];
        cluster::start_with(2, 2, &gateway_flags, &dispatcher_flags).await
    }

    /// A TLS client of the internal port: trusting the cluster CA, with the
    /// dispatchers' client certificate when `with_client_cert`.
    fn client(&self, with_client_cert: bool) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = if with_client_cert {
            let read = |p: &PathBuf| std::fs::read(p).unwrap();
            use rustls::pki_types::pem::PemObject;
            let chain = rustls::pki_types::CertificateDer::pem_slice_iter(&read(&self.dispatcher.0))
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&read(&self.dispatcher.1)).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// Registers `name` on `gateway` and connects there.
async fn connected(gateway: &Running, name: &str) -> Client {
    let http = reqwest::Client::builder().timeout(PATIENCE).build().unwrap();
    let base = format!("http://{}", gateway.public());
    let creds = json!({"username": name, "password": "password-123"});
    assert_eq!(http.post(format!("{base}/v1/auth/register")).json(&creds).send().await.unwrap().status(), 201);
    let login: serde_json::Value =
        http.post(format!("{base}/v1/auth/login")).json(&creds).send().await.unwrap().json().await.unwrap();
    let token = login["token"].as_str().unwrap();
    Client::connect(&format!("ws://{}/v1/ws?token={token}", gateway.public())).await
}

/// `alice` (on one gateway) says `text` in `room`, and `bob` (on the
/// other) reads it: both directions of the push link carry it (the ack to
/// alice's gateway, the event to bob's).
async fn message_flows(alice: &mut Client, bob: &mut Client, room: &str, text: &str) {
    let sent = alice.send(room, text, &text.replace(' ', "-")).await;
    let ev = bob.event(|e| e["ev"] == "msg" && e["text"] == text).await;
    assert_eq!(ev["seq"], sent["seq"]);
    assert_eq!(ev["from"], "alice");
}

/// Sums a dispatcher counter sample over every dispatcher of the cluster.
async fn dispatchers_metric(started: &Started, series: &str) -> f64 {
    let http = reqwest::Client::builder().timeout(PATIENCE).build().unwrap();
    let mut sum = 0.0;
    for d in &started.dispatchers {
        let text = http.get(format!("http://{}/metrics", d.admin_addr)).send().await.unwrap().text().await.unwrap();
        sum +=
            text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0);
    }
    sum
}

const TLS_FAILURES: &str = "confab_push_link_failures_total{reason=\"tls\"}";

/// Whether a push stream opens at `addr` (the internal port) through
/// `open`, presenting a valid internal token: `Ok(status)` when the HTTP
/// exchange happened, `Err` when the connection failed before.
async fn push_stream_status<S>(addr: &str, stream: S, tls: bool) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = push_request(addr, &InternalKey::new(SECRET.as_bytes()).mint(), tls).unwrap();
    match tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(request, stream)).await.expect("in time") {
        Ok((_, response)) => Ok(response.status().as_u16()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Ok(response.status().as_u16()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn over_mutual_tls_messages_flow_and_plain_or_certificateless_dialers_are_refused() {
    tokio::time::timeout(CLUSTER_TEST, async {
        let pki = Pki::new();
        let started = pki.cluster().await;
        let (gw0, gw1) = (&started.gateways[0], &started.gateways[1]);
        let mut alice = connected(gw0, "alice").await;
        let mut bob = connected(gw1, "bob").await;
        alice.join("r").await;
        bob.join("r").await;
        message_flows(&mut alice, &mut bob, "r", "over tls").await;
        assert_eq!(dispatchers_metric(&started, TLS_FAILURES).await, 0.0, "every link's handshake passed");

        let internal = gw0.internal_addr.unwrap().to_string();
        let tcp = || async { tokio::net::TcpStream::connect(&internal).await.unwrap() };
        // A dispatcher of the cluster (its token, its certificate) gets in:
        // the refusals below are the transport's.
        let tls = pki.client(true).connect("127.0.0.1".try_into().unwrap(), tcp().await).await.unwrap();
        assert_eq!(push_stream_status(&internal, tls, true).await, Ok(101), "the cluster's dispatcher");

        let plain = push_stream_status(&internal, tcp().await, false).await;
        assert!(plain.is_err(), "plain ws:// with a valid token never reaches HTTP: {plain:?}");

        // TLS 1.3 reports a missing client certificate after the client's
        // side of the handshake: the stream then fails before any answer.
        let without_cert = match pki.client(false).connect("127.0.0.1".try_into().unwrap(), tcp().await).await {
            Ok(tls) => push_stream_status(&internal, tls, true).await,
            Err(e) => Err(e.to_string()),
        };
        assert!(without_cert.is_err(), "TLS without a client certificate: {without_cert:?}");

        message_flows(&mut alice, &mut bob, "r", "still flowing").await;
    })
    .await
    .expect("the test ends in time");
}

/// A TLS server at a loopback address that would take push streams, as an
/// attacker who can write the announcement topic would run; it reports
/// every connection, and every request it could read (which would hold the
/// internal token).
async fn impostor(cert: &(PathBuf, PathBuf)) -> (String, mpsc::UnboundedReceiver<()>, mpsc::UnboundedReceiver<String>) {
    let acceptor = confab_gateway::serve::tls_acceptor(&cert.0, &cert.1).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (connections_tx, connections) = mpsc::unbounded_channel();
    let (requests_tx, requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = connections_tx.send(());
            let (acceptor, requests_tx) = (acceptor.clone(), requests_tx.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                let mut request = vec![0; 4096];
                if let Ok(n @ 1..) = tls.read(&mut request).await {
                    let _ = requests_tx.send(String::from_utf8_lossy(&request[..n]).into_owned());
                }
            });
        }
    });
    (addr, connections, requests)
}

#[tokio::test]
async fn a_heartbeat_forged_on_kafka_gets_an_impostor_neither_deliveries_nor_the_token() {
    tokio::time::timeout(CLUSTER_TEST, async {
        let pki = Pki::new();
        let started = pki.cluster().await;
        let (gw0, gw1) = (&started.gateways[0], &started.gateways[1]);
        let mut alice = connected(gw0, "alice").await;
        let mut bob = connected(gw1, "bob").await;
        alice.join("r").await;
        bob.join("r").await;
        message_flows(&mut alice, &mut bob, "r", "before").await;

        // Whoever can write the announcement topic: a heartbeat for gw-0
        // naming their own address.
        let kafka = confab_bus::kafka::KafkaConfig {
            bootstrap: cluster::env("KAFKA_BOOTSTRAP"),
            topic_prefix: started.topic_prefix.clone(),
            linger: Duration::from_millis(1),
            produce_timeout: Duration::from_secs(5),
            extra: Vec::new(),
        };
        let attacker = confab_bus::kafka::KafkaBus::connect(kafka).await.unwrap();
        let other_ca = new_ca("someone else's CA");
        let impostors = [
            ("a certificate of another CA for the address", issue(pki.dir.path(), "rogue", &other_ca, &["127.0.0.1"])),
            (
                "a certificate of the cluster's CA for another name",
                issue(pki.dir.path(), "misnamed", &pki.ca, &["gw-9"]),
            ),
        ];
        for (what, cert) in &impostors {
            let (addr, mut connections, mut requests) = impostor(cert).await;
            let before = dispatchers_metric(&started, TLS_FAILURES).await;
            attacker.announce(&Announcement::Heartbeat { gateway: "gw-0".into(), addr: Some(addr) }).await.unwrap();
            tokio::time::timeout(PATIENCE, connections.recv()).await.expect("a dispatcher dials the impostor");
            tokio::time::timeout(PATIENCE, async {
                while dispatchers_metric(&started, TLS_FAILURES).await <= before {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{what}: the dispatchers count the refused handshake"));
            assert!(requests.try_recv().is_err(), "{what}: no request (and so no token) reached the impostor");
        }

        // gw-0's own heartbeats (every 5 s) take its link back: a write on
        // gw-0 is answered again, and reaches gw-1. Replies lost meanwhile
        // are retried (the cid dedupes).
        tokio::time::timeout(PATIENCE, async {
            loop {
                alice
                    .send_text(
                        &json!({"id": "again", "op": "send", "room": "r", "text": "after", "cid": "after"}).to_string(),
                    )
                    .await;
                if tokio::time::timeout(Duration::from_secs(2), alice.reply_to(json!("again"))).await.is_ok() {
                    break;
                }
            }
        })
        .await
        .expect("gw-0's link comes back");
        assert_eq!(bob.event(|e| e["ev"] == "msg" && e["text"] == "after").await["from"], "alice");
    })
    .await
    .expect("the test ends in time");
}
