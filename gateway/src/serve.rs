//! The accept loop of a public listener, plain or TLS (rustls), until
//! shutdown. Each connection is served by hyper with upgrades enabled, so
//! WebSocket sessions run on the same connection after the handshake.
//! [`ConnectionLimits`] bound what one listener holds: connections in all and
//! per client address (over either, a new connection is closed at once) and
//! the time a client gets to finish its TLS handshake and request headers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("TLS key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("TLS CA bundle {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificates of a PEM file: at least one, or an error naming the file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::Cert { path: path.display().to_string(), reason };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no certificate in the file".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsError::Key { path: path.display().to_string(), reason: e.to_string() })
}

/// The CA certificates of a PEM bundle, as trust anchors.
pub fn read_ca(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let error = |reason: String| TlsError::Ca { path: path.display().to_string(), reason };
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path).map_err(|e| error(e.to_string()))? {
        roots.add(cert).map_err(|e| error(e.to_string()))?;
    }
    Ok(roots)
}

/// A TLS acceptor from PEM files: a certificate chain and its private key.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    tls_acceptor_verifying_clients(cert, key, None)
}

/// [`tls_acceptor`], which with `client_ca` (a PEM CA bundle) also requires
/// every client to present a certificate issued by one of those CAs
/// (mutual TLS): a client without one fails the handshake.
pub fn tls_acceptor_verifying_clients(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<TlsAcceptor, TlsError> {
    let mut config = server_config(cert, key, client_ca)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TLS acceptor for the raw TCP listener ([`crate::tcp`]): no ALPN, since
/// what it carries is not HTTP.
pub fn tcp_tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(Arc::new(server_config(cert, key, None)?)))
}

fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<rustls::ServerConfig, TlsError> {
    let (certs, key) = (read_certs(cert)?, read_key(key)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(read_ca(ca)?), provider)
                    .build()
                    .map_err(|e| TlsError::Ca { path: ca.display().to_string(), reason: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(builder.with_single_cert(certs, key)?)
}

/// How long idle HTTP connections get to finish after shutdown.
const CONNECTION_GRACE: Duration = Duration::from_secs(5);

/// What one listener holds at most.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections, WebSocket sessions included.
    pub max_connections: usize,
    /// Open connections from one client IP address.
    pub max_per_ip: usize,
    /// Time to finish the TLS handshake, and to send a request's headers.
    pub header_read_timeout: Duration,
}

impl ConnectionLimits {
    /// For ports only operators and other processes reach (admin, internal).
    pub const INTERNAL: ConnectionLimits =
        ConnectionLimits { max_connections: 1024, max_per_ip: 1024, header_read_timeout: Duration::from_secs(10) };
}

/// Connections held per client address, and in all.
pub(crate) struct Admission {
    limits: ConnectionLimits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; frees its place when dropped.
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    pub(crate) fn new(limits: ConnectionLimits) -> Arc<Admission> {
        Arc::new(Admission { limits, open: Mutex::default() })
    }

    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        let from_ip = per_ip.get(&ip).copied().unwrap_or(0);
        if *total >= self.limits.max_connections || from_ip >= self.limits.max_per_ip {
            return None;
        }
        *total += 1;
        per_ip.insert(ip, from_ip + 1);
        Some(Admitted { admission: self.clone(), ip })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.admission.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        *total -= 1;
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// A connection's stream, holding its place for as long as it lives: after a
/// WebSocket upgrade the session owns the stream, not the HTTP task.
pub(crate) struct Counted<S> {
    pub(crate) stream: S,
    pub(crate) _admitted: Admitted,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts connections until `shutdown`, then closes idle HTTP connections
/// and waits (briefly) for requests in flight. Upgraded WebSocket sessions
/// are not cut here: the gateway's drain closes them politely.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    let admission = Admission::new(limits);
    accept(&listener, &app, &tls, &admission, &shutdown, &connections).await;
    drop(listener);
    connections.close();
    if tokio::time::timeout(CONNECTION_GRACE, connections.wait()).await.is_err() {
        tracing::warn!(left = connections.len(), "HTTP connections still open after the grace period");
    }
}

async fn accept(
    listener: &TcpListener,
    app: &Router,
    tls: &Option<TlsAcceptor>,
    admission: &Arc<Admission>,
    shutdown: &CancellationToken,
    connections: &TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors, most likely: back off, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = admission.admit(peer.ip()) else {
            // Closed at once: a full server or a greedy address holds no more.
            tracing::debug!(%peer, "connection refused: over the connection limits");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = Counted { stream, _admitted: admitted };
        let app = app.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        let limits = admission.limits;
        connections.spawn(async move {
            match tls {
                None => connection(stream, peer, app, limits, shutdown).await,
                Some(tls) => match tokio::time::timeout(limits.header_read_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => connection(stream, peer, app, limits, shutdown).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
            }
        });
    }
}

async fn connection<S>(stream: S, peer: SocketAddr, app: Router, limits: ConnectionLimits, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        // The client's address, for limits kept per address.
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|never| match never {})) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // A client that sends its headers slowly (or never) is cut off.
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
