//! The CQL boundary (docs/security.md, "CQL database"): every process
//! reaches the database over TLS and verifies its certificate, over real
//! sockets, against the real Cassandra of `scripts/infra up cql`.
//!
//! That Cassandra speaks plain CQL, and it is shared by every suite on the
//! machine: turning on its `client_encryption_options` needs a restart, which
//! a test may not do to a shared server (and a second node of our own is too
//! heavy). So each test puts a TLS-terminating proxy in front of it
//! (tokio-rustls on 127.0.0.1:0, forwarding the decrypted bytes to the real
//! node): the scylla driver's own TLS client talks, through it, to a real CQL
//! server. The proxy presents the certificates the test issues (rcgen) and,
//! for mutual TLS, checks the client's. The driver dials every node at the
//! address it found the first one at, with the contact point's port, so all
//! its connections go through the proxy.
//!
//! CQL exists only in the distributed mode: these tests run on the cluster
//! (two gateways, two dispatchers) or on one gateway, not on standalone.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{CLUSTER_TEST, SECRET, TestServer};
use confab::config::GatewayConfig;
use confab_store::scylla::ScyllaStore;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const BIN: &str = env!("CARGO_BIN_EXE_confab");

/// A certificate authority of the test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A certificate for `names` (IP addresses or DNS names).
    fn issue(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let issuer: &rcgen::Issuer<'static, KeyPair> = &self.issuer;
        let cert = params.signed_by(&key, issuer).unwrap();
        Leaf {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        }
    }
}

struct Leaf {
    cert: CertificateDer<'static>,
    cert_pem: String,
    key_der: Vec<u8>,
    key_pem: String,
}

impl Leaf {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// Files in a temporary directory.
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Files {
        Files(tempfile::tempdir().unwrap())
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path: PathBuf = self.0.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

/// A TLS-terminating proxy in front of the real, plain-text Cassandra.
struct Proxy {
    addr: SocketAddr,
    /// TLS sessions established (each then forwarded to the database).
    sessions: Arc<AtomicUsize>,
    /// Why handshakes failed, as the proxy saw it.
    refused: Arc<Mutex<Vec<String>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Proxy {
    /// Presents `server`; with `client_ca`, requires a client certificate it signed.
    async fn start(server: &Leaf, client_ca: Option<&Ca>) -> Proxy {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.der()).unwrap();
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build();
                builder.with_client_cert_verifier(verifier.unwrap())
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(vec![server.cert.clone()], server.key()).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let upstream = common::cluster::env("CQL_CONTACT_POINTS").split(',').next().unwrap().to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sessions, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
        let (counted, noted) = (sessions.clone(), refused.clone());
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, upstream, counted, noted) =
                    (acceptor.clone(), upstream.clone(), counted.clone(), noted.clone());
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(mut tls) => {
                            counted.fetch_add(1, Ordering::SeqCst);
                            if let Ok(mut plain) = TcpStream::connect(&upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                            }
                        }
                        Err(e) => noted.lock().unwrap().push(e.to_string()),
                    }
                });
            }
        });
        Proxy { addr, sessions, refused, accept }
    }

    fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }

    fn refusals(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }
}

/// Opens the store a gateway started with these flags opens (over the CQL
/// database at `cql`, with `tls` flags) on a keyspace that was never
/// migrated; the error. Past TLS, that error is the missing schema: a query
/// went through.
async fn gateway_store_error(cql: SocketAddr, tls: &[&str]) -> String {
    let (_, keyspace) = common::cluster::names("cqltls");
    let cql = cql.to_string();
    let mut args = vec!["--cql", &cql, "--keyspace", &keyspace.name, "--jwt-secret", SECRET];
    args.extend(tls);
    let config = common::cluster::parse::<GatewayConfig>(&args);
    config.validate().expect("valid flags");
    let opened = tokio::time::timeout(common::PATIENCE, ScyllaStore::connect(&config.backend.cql()))
        .await
        .expect("the store opens or fails in time");
    match opened {
        Ok(_) => panic!("a store opened on a keyspace without a schema"),
        Err(e) => e.to_string(),
    }
}

/// The error of a start that got through TLS and reached the database.
const PAST_TLS: &str = "run `confab migrate`";

/// What a user notices: accounts, messages and history all live in the
/// database, here reached only through TLS with a verified certificate.
#[tokio::test]
async fn the_cluster_stores_and_reads_through_a_verified_tls_connection() {
    let files = Files::new();
    let ca = Ca::new("cql test CA");
    let proxy = Proxy::start(&ca.issue(&["127.0.0.1"]), None).await;
    let ca_file = files.write("ca.pem", &ca.issuer.pem());
    let test = async {
        let s = TestServer::start_cluster_on(&proxy.addr.to_string(), &["--cql-tls-ca", &ca_file]).await;
        let mut alice = s.connected("alice").await;
        let mut bob = s.connected("bob").await;
        alice.join("tls").await;
        bob.join("tls").await;
        alice.send("tls", "through TLS", "c1").await;
        let h = bob.ok(json!({"op": "history", "room": "tls"})).await;
        assert_eq!(h["messages"][0]["text"], "through TLS", "{h}");
    };
    tokio::time::timeout(CLUSTER_TEST, test).await.expect("the test ends in time");
    assert!(proxy.sessions() > 0, "no connection went through the TLS proxy");
    assert_eq!(proxy.refusals(), Vec::<String>::new());
}

/// A man in the middle with a certificate of its own CA gets no session:
/// the gateway's store refuses it and says why; the same flags reach the
/// genuine database.
#[tokio::test]
async fn a_database_certificate_from_an_unknown_ca_is_refused_at_start() {
    let files = Files::new();
    let (ca, rogue) = (Ca::new("cql test CA"), Ca::new("rogue CA"));
    let ca_file = files.write("ca.pem", &ca.issuer.pem());
    let impostor = Proxy::start(&rogue.issue(&["127.0.0.1"]), None).await;
    let e = gateway_store_error(impostor.addr, &["--cql-tls-ca", &ca_file]).await;
    assert!(e.contains("invalid peer certificate") && e.contains("UnknownIssuer"), "{e}");
    assert_eq!(impostor.sessions(), 0, "a session was established with the impostor");

    let genuine = Proxy::start(&ca.issue(&["127.0.0.1"]), None).await;
    let e = gateway_store_error(genuine.addr, &["--cql-tls-ca", &ca_file]).await;
    assert!(e.contains(PAST_TLS), "{e}");
    assert!(genuine.sessions() > 0);
}

/// The certificate is checked against the node's IP address by default; a
/// certificate issued to a DNS name is accepted only with that name set.
#[tokio::test]
async fn a_certificate_for_another_name_is_refused_unless_that_name_is_configured() {
    let files = Files::new();
    let ca = Ca::new("cql test CA");
    let ca_file = files.write("ca.pem", &ca.issuer.pem());
    let proxy = Proxy::start(&ca.issue(&["cql.internal.example"]), None).await;
    let e = gateway_store_error(proxy.addr, &["--cql-tls-ca", &ca_file]).await;
    assert!(e.contains("invalid peer certificate: certificate not valid for name"), "{e}");
    let e =
        gateway_store_error(proxy.addr, &["--cql-tls-ca", &ca_file, "--cql-tls-server-name", "other.example"]).await;
    assert!(e.contains("certificate not valid for name"), "{e}");
    assert_eq!(proxy.sessions(), 0);

    let named = ["--cql-tls-ca", &ca_file, "--cql-tls-server-name", "cql.internal.example"];
    let e = gateway_store_error(proxy.addr, &named).await;
    assert!(e.contains(PAST_TLS), "{e}");
    assert!(proxy.sessions() > 0);
}

/// A database that requires client certificates admits only a certificate
/// its CA signed.
#[tokio::test]
async fn mutual_tls_admits_only_a_client_certificate_of_the_databases_ca() {
    let files = Files::new();
    let (ca, clients, rogue) = (Ca::new("cql test CA"), Ca::new("cql clients CA"), Ca::new("rogue CA"));
    let ca_file = files.write("ca.pem", &ca.issuer.pem());
    let proxy = Proxy::start(&ca.issue(&["127.0.0.1"]), Some(&clients)).await;

    let e = gateway_store_error(proxy.addr, &["--cql-tls-ca", &ca_file]).await;
    assert!(!e.contains(PAST_TLS), "{e}");
    let stranger = rogue.issue(&["gateway"]);
    let (cert, key) = (files.write("rogue.crt", &stranger.cert_pem), files.write("rogue.key", &stranger.key_pem));
    let with_rogue = ["--cql-tls-ca", &ca_file, "--cql-tls-cert", &cert, "--cql-tls-key", &key];
    let e = gateway_store_error(proxy.addr, &with_rogue).await;
    assert!(!e.contains(PAST_TLS), "{e}");
    assert_eq!(proxy.sessions(), 0, "the proxy forwarded a connection without a valid client certificate");
    assert!(proxy.refusals().len() >= 2, "{:?}", proxy.refusals());

    let member = clients.issue(&["gateway"]);
    let (cert, key) = (files.write("client.crt", &member.cert_pem), files.write("client.key", &member.key_pem));
    let with_client = ["--cql-tls-ca", &ca_file, "--cql-tls-cert", &cert, "--cql-tls-key", &key];
    let e = gateway_store_error(proxy.addr, &with_client).await;
    assert!(e.contains(PAST_TLS), "{e}");
    assert!(proxy.sessions() > 0);
}

/// `confab <role> ...` run to its exit: (exit code, stderr).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN).args(args).env_clear().output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Bad TLS files stop every role at start (exit 2, before connecting to
/// anything), with the option at fault named.
#[test]
fn bad_cql_tls_files_stop_the_process_at_start_naming_the_option() {
    let files = Files::new();
    let ca = Ca::new("cql test CA");
    let leaf = ca.issue(&["gateway"]);
    let other = ca.issue(&["other"]);
    let (ca_file, cert, key) = (
        files.write("ca.pem", &ca.issuer.pem()),
        files.write("tls.crt", &leaf.cert_pem),
        files.write("tls.key", &leaf.key_pem),
    );
    let (not_pem, empty, other_key) = (
        files.write("notes.txt", "not a certificate"),
        files.write("empty.pem", ""),
        files.write("o.key", &other.key_pem),
    );
    let missing = Path::new(&ca_file).with_file_name("missing.pem").to_str().unwrap().to_owned();
    for (flags, option, reason) in [
        (vec!["--cql-tls-ca", &missing], "cql_tls_ca", "cannot read"),
        (vec!["--cql-tls-ca", &not_pem], "cql_tls_ca", "holds no PEM certificate"),
        (vec!["--cql-tls-ca", &empty], "cql_tls_ca", "holds no PEM certificate"),
        (vec!["--cql-tls-ca", &ca_file, "--cql-tls-cert", &cert], "cql_tls_cert", "go together"),
        (vec!["--cql-tls-key", &key], "cql_tls_cert", "go together"),
        (
            vec!["--cql-tls-ca", &ca_file, "--cql-tls-cert", &cert, "--cql-tls-key", &not_pem],
            "cql_tls_key",
            "no usable",
        ),
        (
            vec!["--cql-tls-ca", &ca_file, "--cql-tls-cert", &cert, "--cql-tls-key", &other_key],
            "cql_tls_key",
            "does not fit",
        ),
        (vec!["--cql-tls-ca", &ca_file, "--cql-tls-server-name", "not a name!"], "cql_tls_server_name", "not a name"),
    ] {
        for role in ["gateway", "dispatcher", "migrate"] {
            let mut args = vec![role, "--cql", "127.0.0.1:1", "--kafka", "127.0.0.1:1"];
            if role != "migrate" {
                args.extend(["--jwt-secret", SECRET]);
            }
            args.extend(&flags);
            let (code, stderr) = run(&args);
            assert_eq!(code, Some(2), "confab {args:?}: {stderr}");
            assert!(stderr.contains(option) && stderr.contains(reason), "confab {args:?}: {stderr}");
        }
    }
}

/// `cql_replication` is parsed, never pasted into DDL: an injection attempt
/// stops `migrate` before it connects, naming the option.
#[test]
fn migrate_refuses_a_replication_that_is_not_a_class_and_factors() {
    for attack in [
        "{'class': 'SimpleStrategy', 'replication_factor': 1}; DROP KEYSPACE confab; --",
        "{'class': 'NetworkTopologyStrategy', 'dc1': 3, '}; DROP KEYSPACE confab; --': 1}",
        "NetworkTopologyStrategy:dc1=3}; DROP KEYSPACE confab; --",
        "SimpleStrategy:0",
    ] {
        let args = ["migrate", "--cql", "127.0.0.1:1", "--kafka", "127.0.0.1:1", "--cql-replication", attack];
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(2), "{attack}: {stderr}");
        assert!(stderr.contains("cql_replication"), "{attack}: {stderr}");
    }
}
