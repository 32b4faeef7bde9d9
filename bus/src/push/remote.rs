//! Distributed: the dispatcher's links, one persistent WebSocket to each
//! live gateway's internal port, learnt from the gateways' heartbeats,
//! carrying batches of deliveries in order. A broken link drops what was in
//! flight (clients notice by `prev_seq` and `sync`) and reconnects with
//! backoff, presenting a freshly minted, short-lived token each time.
//!
//! With TLS settings every link dials `wss://`, never plain, and checks the
//! gateway's certificate against the host of the address it announced: a
//! forged heartbeat on Kafka that names another address gets neither
//! deliveries nor the token, unless its owner holds a certificate from the
//! trusted CAs for that host. (Or, where gateways share one certificate,
//! for the one name the dispatcher is told every gateway carries.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use confab_protocol::Delivery;
use confab_protocol::record::Announcement;
use futures_util::SinkExt;
use prometheus::IntCounterVec;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::{InternalKey, Push, encode_batch, push_request};
use crate::{Error, Result};

/// Batches queued for one gateway; beyond that, its batches are dropped.
const LINK_QUEUE: usize = 1024;
/// Time to open a link: TCP, TLS and the WebSocket handshake. An address
/// that accepts and then says nothing does not hold a link forever.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The `reason` label of the link failure counter: the TCP connection
/// failed, the TLS handshake failed (an untrusted certificate, or one for
/// another name), the gateway refused the stream (or the handshake timed
/// out), or an open link broke.
pub const LINK_FAILURE_REASONS: [&str; 4] = ["connect", "tls", "refused", "broken"];

#[derive(Clone)]
pub struct RemotePush {
    inner: Arc<Inner>,
}

struct Inner {
    dialer: Dialer,
    links: Mutex<HashMap<String, Link>>,
}

struct Link {
    addr: String,
    tx: mpsc::Sender<Vec<Delivery>>,
}

/// A dispatcher's TLS settings for the push link.
#[derive(Clone, Debug)]
pub struct LinkTls {
    /// The CAs trusted for gateways' certificates and, for mutual TLS, the
    /// client certificate.
    pub config: Arc<rustls::ClientConfig>,
    /// The name every gateway's certificate must carry. `None`: the host of
    /// the address that gateway announced.
    pub server_name: Option<ServerName<'static>>,
}

/// How a link opens a stream: its credentials, and its TLS settings if any.
#[derive(Clone)]
struct Dialer {
    key: InternalKey,
    tls: Option<(TlsConnector, Option<ServerName<'static>>)>,
    failures: IntCounterVec,
}

/// A link's transport, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Why dialing failed: a reason of [`LINK_FAILURE_REASONS`], or an address
/// that can never be dialed.
enum DialError {
    Failed(&'static str, String),
    BadAddress(String),
}

impl RemotePush {
    /// `secret` is the cluster's HS256 secret, shared with the gateways.
    /// With `tls` every link speaks TLS. `failures` counts failed link
    /// attempts by `reason` ([`LINK_FAILURE_REASONS`]).
    pub fn new(secret: &[u8], tls: Option<LinkTls>, failures: IntCounterVec) -> RemotePush {
        let tls = tls.map(|t| (TlsConnector::from(t.config), t.server_name));
        let dialer = Dialer { key: InternalKey::new(secret), tls, failures };
        RemotePush { inner: Arc::new(Inner { dialer, links: Mutex::new(HashMap::new()) }) }
    }

    fn link(&self, gateway: &str, addr: &str) {
        let mut links = self.inner.links.lock().expect("links lock");
        if links.get(gateway).is_some_and(|l| l.addr == addr && !l.tx.is_closed()) {
            return;
        }
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        tokio::spawn(run_link(gateway.to_owned(), addr.to_owned(), self.inner.dialer.clone(), rx));
        links.insert(gateway.to_owned(), Link { addr: addr.to_owned(), tx });
    }
}

#[async_trait]
impl Push for RemotePush {
    async fn push(&self, gateway: &str, batch: Vec<Delivery>) -> Result<()> {
        let tx = self.inner.links.lock().expect("links lock").get(gateway).map(|l| l.tx.clone());
        match tx {
            // A link that is down or behind never holds up the pipeline (and
            // so every other gateway): the batch is dropped, and the clients
            // behind that gateway repair the gap with `prev_seq` and `sync`.
            Some(tx) => tx.try_send(batch).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    Error::Unavailable(format!("the push link to gateway {gateway} is {LINK_QUEUE} batches behind"))
                }
                mpsc::error::TrySendError::Closed(_) => Error::Closed,
            }),
            None => Err(Error::Unavailable(format!("no address known for gateway {gateway}"))),
        }
    }

    fn learn(&self, announcement: &Announcement) {
        match announcement {
            Announcement::Heartbeat { gateway, addr: Some(addr) } => self.link(gateway, addr),
            Announcement::Gone { gateway } => {
                // Dropping the sender ends the link task.
                self.inner.links.lock().expect("links lock").remove(gateway);
            }
            _ => {}
        }
    }
}

/// The name a gateway's certificate must carry: the host of the address it
/// announced (`host:port`, `[v6]:port`), a DNS name or an IP address.
fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ServerName::try_from(host.to_owned()).map_err(|e| format!("`{host}` is not a name a certificate can carry: {e}"))
}

impl Dialer {
    /// Opens a push stream to the internal port at `addr`.
    async fn dial(&self, addr: &str) -> Result<WebSocketStream<Box<dyn Io>>, DialError> {
        // Tokens are short-lived: each connection gets its own.
        let request = push_request(addr, &self.key.mint(), self.tls.is_some())
            .map_err(|e| DialError::BadAddress(e.to_string()))?;
        let name = match &self.tls {
            Some((_, Some(name))) => Some(name.clone()),
            Some((_, None)) => Some(server_name(addr).map_err(DialError::BadAddress)?),
            None => None,
        };
        let open = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| DialError::Failed("connect", e.to_string()))?;
            // A push is a small frame written when it is ready: with Nagle's
            // algorithm one written while the last is unacknowledged waits
            // for the gateway's delayed ACK (40 ms on Linux).
            let _ = tcp.set_nodelay(true);
            let stream: Box<dyn Io> = match (&self.tls, name) {
                // The token is only sent once the certificate is verified.
                (Some((tls, _)), Some(name)) => {
                    Box::new(tls.connect(name, tcp).await.map_err(|e| DialError::Failed("tls", e.to_string()))?)
                }
                _ => Box::new(tcp),
            };
            let (ws, _) = tokio_tungstenite::client_async(request, stream)
                .await
                .map_err(|e| DialError::Failed("refused", e.to_string()))?;
            Ok(ws)
        };
        tokio::time::timeout(DIAL_TIMEOUT, open)
            .await
            .unwrap_or_else(|_| Err(DialError::Failed("refused", format!("no answer within {DIAL_TIMEOUT:?}"))))
    }

    fn failed(&self, reason: &str) {
        self.failures.with_label_values(&[reason]).inc();
    }
}

/// Keeps one gateway's link up until its sender is dropped.
async fn run_link(gateway: String, addr: String, dialer: Dialer, mut rx: mpsc::Receiver<Vec<Delivery>>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match dialer.dial(&addr).await {
            Ok(mut ws) => {
                tracing::info!(%gateway, %addr, tls = dialer.tls.is_some(), "push link up");
                backoff = Duration::from_millis(50);
                loop {
                    let Some(first) = rx.recv().await else {
                        let _ = ws.close(None).await;
                        return;
                    };
                    // Coalesce what is queued into one frame.
                    let mut batch = first;
                    while let Ok(more) = rx.try_recv() {
                        batch.extend(more);
                        if batch.len() >= 4096 {
                            break;
                        }
                    }
                    if let Err(e) = ws.send(Message::Binary(encode_batch(&gateway, &batch).into())).await {
                        tracing::warn!(%gateway, error = %e, dropped = batch.len(), "push link broke");
                        dialer.failed("broken");
                        break;
                    }
                }
            }
            Err(DialError::BadAddress(e)) => {
                tracing::error!(%gateway, %addr, error = %e, "bad gateway address");
                return;
            }
            Err(DialError::Failed("tls", e)) => {
                dialer.failed("tls");
                tracing::warn!(%gateway, %addr, error = %e, "TLS handshake with the gateway failed; nothing sent");
            }
            Err(DialError::Failed(reason, e)) => {
                dialer.failed(reason);
                tracing::warn!(%gateway, %addr, error = %e, "cannot reach gateway");
            }
        }
        if rx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use std::future::ready;

    use confab_protocol::Audience;
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::http::StatusCode;

    use super::*;
    use crate::push::receive;

    /// A port nothing listens on: the link keeps failing to connect.
    async fn dead_addr() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn a_gateway_that_cannot_be_reached_never_holds_up_pushes() {
        let push = RemotePush::new(b"secret", None, failures());
        push.learn(&Announcement::Heartbeat { gateway: "gw-dead".into(), addr: Some(dead_addr().await) });
        for _ in 0..LINK_QUEUE {
            push.push("gw-dead", Vec::new()).await.expect("queued while the link retries");
        }
        let Err(Error::Unavailable(why)) = push.push("gw-dead", Vec::new()).await else {
            panic!("a full link refuses the batch at once instead of waiting")
        };
        assert!(why.contains("gw-dead"), "{why}");
    }

    #[tokio::test]
    async fn a_gone_gateway_has_no_link() {
        let push = RemotePush::new(b"secret", None, failures());
        push.learn(&Announcement::Heartbeat { gateway: "gw-1".into(), addr: Some(dead_addr().await) });
        push.learn(&Announcement::Gone { gateway: "gw-1".into() });
        let Err(Error::Unavailable(why)) = push.push("gw-1", Vec::new()).await else { panic!("no link") };
        assert!(why.contains("no address known"), "{why}");
    }

    fn event(n: u64) -> Delivery {
        Delivery::Room { room: "r".into(), audience: Audience::Members, effect: None, frame: format!("{{\"n\":{n}}}") }
    }

    fn failures() -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new("link_failures", "test"), &["reason"]).unwrap()
    }

    /// A gateway's internal port in miniature: checks the link's token, then
    /// feeds what arrives into an inbox. Also returns the refusals.
    async fn gateway(secret: &'static [u8]) -> (String, mpsc::Receiver<Vec<Delivery>>, mpsc::UnboundedReceiver<()>) {
        let (addr, inbox, refused, _) = gateway_over(secret, None).await;
        (addr, inbox, refused)
    }

    /// [`gateway`], speaking TLS with `tls`; also returns the requests that
    /// reached it (the TLS handshake passed), with their headers.
    async fn gateway_over(
        secret: &'static [u8],
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> (
        String,
        mpsc::Receiver<Vec<Delivery>>,
        mpsc::UnboundedReceiver<()>,
        mpsc::UnboundedReceiver<tokio_tungstenite::tungstenite::http::HeaderMap>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::channel(16);
        let (refused_tx, refused_rx) = mpsc::unbounded_channel();
        let (requests_tx, requests_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let key = InternalKey::new(secret);
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                // The signature is tungstenite's.
                #[allow(clippy::result_large_err)]
                let check = |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
                    let _ = requests_tx.send(request.headers().clone());
                    match key.verify(request.headers()) {
                        Ok(()) => Ok(response),
                        Err(_) => {
                            let _ = refused_tx.send(());
                            let mut refused =
                                tokio_tungstenite::tungstenite::handshake::server::ErrorResponse::new(None);
                            *refused.status_mut() = StatusCode::UNAUTHORIZED;
                            Err(refused)
                        }
                    }
                };
                let stream: Box<dyn Io> = match &tls {
                    None => Box::new(stream),
                    Some(tls) => match tls.accept(stream).await {
                        Ok(stream) => Box::new(stream),
                        Err(_) => continue,
                    },
                };
                let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else { continue };
                let frames = ws.filter_map(|m| ready(m.ok().filter(Message::is_binary).map(Message::into_data)));
                receive(frames, "gw-1", &tx, || {}).await;
            }
        });
        (addr, rx, refused_rx, requests_rx)
    }

    /// A CA of the test's own.
    fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
    }

    /// A gateway's TLS acceptor with a certificate that `ca` issued for `names`.
    fn acceptor(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, names: &[&str]) -> tokio_rustls::TlsAcceptor {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, ca).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// A dispatcher's TLS settings trusting `ca` alone, checking the
    /// announced host.
    fn trusting(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>) -> LinkTls {
        LinkTls { config: trusting_config(ca), server_name: None }
    }

    fn trusting_config(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    #[tokio::test]
    async fn over_tls_pushes_reach_a_gateway_whose_certificate_names_its_address() {
        let ca = ca("cluster CA");
        let (addr, mut inbox, _, _) = gateway_over(b"secret", Some(acceptor(&ca, &["127.0.0.1"]))).await;
        let push = RemotePush::new(b"secret", Some(trusting(&ca)), failures());
        push.learn(&Announcement::Heartbeat { gateway: "gw-1".into(), addr: Some(addr) });
        for n in 0..10 {
            push.push("gw-1", vec![event(n)]).await.unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 10 {
            let batch = tokio::time::timeout(Duration::from_secs(10), inbox.recv()).await.expect("pushes arrive");
            got.extend(batch.unwrap());
        }
        assert_eq!(got, (0..10).map(event).collect::<Vec<_>>());
    }

    /// What a dispatcher that trusts `ca` hands a gateway at an address
    /// announced on Kafka whose certificate is `certificate`: the failures it
    /// counts once it has tried twice, and the requests that reached it.
    async fn dial_impostor(
        ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
        certificate: tokio_rustls::TlsAcceptor,
    ) -> (IntCounterVec, usize, usize) {
        dial_impostor_with(trusting(ca), certificate).await
    }

    async fn dial_impostor_with(tls: LinkTls, certificate: tokio_rustls::TlsAcceptor) -> (IntCounterVec, usize, usize) {
        let (addr, mut inbox, _, mut requests) = gateway_over(b"secret", Some(certificate)).await;
        let failures = failures();
        let push = RemotePush::new(b"secret", Some(tls), failures.clone());
        push.learn(&Announcement::Heartbeat { gateway: "gw-1".into(), addr: Some(addr) });
        push.push("gw-1", vec![event(1)]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while failures.with_label_values(&["tls"]).get() < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the link tries, and tries again");
        let mut delivered = 0;
        while inbox.try_recv().is_ok() {
            delivered += 1;
        }
        let mut reached = 0;
        while requests.try_recv().is_ok() {
            reached += 1;
        }
        (failures, delivered, reached)
    }

    #[tokio::test]
    async fn over_tls_a_gateway_with_a_certificate_of_another_ca_gets_neither_deliveries_nor_the_token() {
        let (ours, theirs) = (ca("cluster CA"), ca("another CA"));
        let (failures, delivered, reached) = dial_impostor(&ours, acceptor(&theirs, &["127.0.0.1"])).await;
        assert_eq!((delivered, reached), (0, 0), "no request, so no token, crossed the failed handshake");
        assert_eq!(failures.with_label_values(&["refused"]).get(), 0);
    }

    #[tokio::test]
    async fn over_tls_a_certificate_of_the_ca_for_another_name_gets_neither_deliveries_nor_the_token() {
        let ours = ca("cluster CA");
        let (_, delivered, reached) = dial_impostor(&ours, acceptor(&ours, &["gw-2.internal", "10.9.9.9"])).await;
        assert_eq!((delivered, reached), (0, 0), "no request, so no token, crossed the failed handshake");
    }

    #[tokio::test]
    async fn over_tls_a_plain_gateway_gets_nothing() {
        let ours = ca("cluster CA");
        let (addr, mut inbox, _, mut requests) = gateway_over(b"secret", None).await;
        let failures = failures();
        let push = RemotePush::new(b"secret", Some(trusting(&ours)), failures.clone());
        push.learn(&Announcement::Heartbeat { gateway: "gw-1".into(), addr: Some(addr) });
        push.push("gw-1", vec![event(1)]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while failures.with_label_values(&["tls"]).get() < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("never falls back to plain ws");
        assert!(inbox.try_recv().is_err() && requests.try_recv().is_err(), "no request reached a plain port");
    }

    #[tokio::test]
    async fn over_tls_with_a_fixed_server_name_every_gateway_certificate_must_carry_that_name() {
        let ca = ca("cluster CA");
        let cluster_name = ServerName::try_from("chat-gateway-internal.ns.svc").unwrap();
        let fixed = LinkTls { config: trusting_config(&ca), server_name: Some(cluster_name) };
        let (addr, mut inbox, _, _) =
            gateway_over(b"secret", Some(acceptor(&ca, &["chat-gateway-internal.ns.svc"]))).await;
        let push = RemotePush::new(b"secret", Some(fixed.clone()), failures());
        push.learn(&Announcement::Heartbeat { gateway: "gw-1".into(), addr: Some(addr) });
        push.push("gw-1", vec![event(1)]).await.unwrap();
        let batch = tokio::time::timeout(Duration::from_secs(10), inbox.recv()).await.expect("pushes arrive");
        assert_eq!(batch.unwrap(), vec![event(1)], "the name, not the address (an IP here), is checked");

        let (failures, delivered, reached) =
            dial_impostor_with(fixed, acceptor(&ca, &["127.0.0.1", "gw-9.internal"])).await;
        assert_eq!((delivered, reached), (0, 0), "a certificate for the address but not the name");
        assert_eq!(failures.with_label_values(&["refused"]).get(), 0);
    }

    #[test]
    fn the_certificate_must_name_the_host_of_the_announced_address() {
        let name = |addr| server_name(addr).map(|n| n.to_str().into_owned());
        assert_eq!(name("gw-1.internal:7070").unwrap(), "gw-1.internal");
        assert_eq!(name("10.0.0.7:7070").unwrap(), "10.0.0.7");
        assert_eq!(name("[::1]:7070").unwrap(), "::1");
        assert!(name("bad host!:7070").is_err());
    }

    #[tokio::test]
    async fn pushes_reach_the_gateway_inbox_in_order() {
        let (addr, mut inbox, _) = gateway(b"secret").await;
        let push = RemotePush::new(b"secret", None, failures());
        push.learn(&Announcement::Heartbeat { gateway: "gw-1".into(), addr: Some(addr) });
        for n in 0..100 {
            push.push("gw-1", vec![event(n)]).await.unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 100 {
            let batch = tokio::time::timeout(Duration::from_secs(10), inbox.recv()).await.expect("pushes arrive");
            got.extend(batch.unwrap());
        }
        assert_eq!(got, (0..100).map(event).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_gateway_of_another_cluster_gets_nothing() {
        let (addr, mut inbox, mut refused) = gateway(b"their secret").await;
        let push = RemotePush::new(b"our secret", None, failures());
        push.learn(&Announcement::Heartbeat { gateway: "gw-1".into(), addr: Some(addr) });
        push.push("gw-1", vec![event(1)]).await.unwrap();
        // Refused, and refused again when the link retries.
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(10), refused.recv()).await.expect("the link tries").unwrap();
        }
        assert!(inbox.try_recv().is_err(), "nothing delivered");
    }

    #[tokio::test]
    async fn a_link_presents_a_fresh_token_each_time_it_reconnects() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tokens_tx, mut tokens) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let tokens_tx = tokens_tx.clone();
                #[allow(clippy::result_large_err)]
                let record = move |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
                    let _ = tokens_tx.send(request.headers().clone());
                    Ok(response)
                };
                // Each connection is dropped after its first frame: the link
                // has to reconnect.
                if let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await {
                    let _ = ws.next().await;
                }
            }
        });
        let push = RemotePush::new(b"secret", None, failures());
        push.learn(&Announcement::Heartbeat { gateway: "gw-1".into(), addr: Some(addr) });
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let _ = push.push("gw-1", vec![event(1)]).await;
            if let Ok(headers) = tokio::time::timeout(Duration::from_millis(50), tokens.recv()).await {
                seen.push(headers.unwrap());
            }
        }
        let key = InternalKey::new(b"secret");
        for headers in &seen {
            key.verify(headers).expect("a valid internal token");
        }
        assert_ne!(seen[0].get("authorization"), seen[1].get("authorization"), "minted anew for the reconnection");
    }
}
