//! What every Confab process does around its work: secrets, the admin port,
//! serving a gateway's public listener, and the shutdown choreography.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use confab_gateway::{Auth, Gateway};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::ReadyCheck;
use crate::config::{SecretConfig, ServerConfig};

/// A running process of any role.
pub struct Running {
    /// The public listener, for roles that serve clients.
    pub public_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    /// The internal push listener, for gateways.
    pub internal_addr: Option<SocketAddr>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Drains (clients get `bye server_restart`) and stops.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("server task panicked")?
    }

    /// The public address; panics for roles without one.
    pub fn public(&self) -> SocketAddr {
        self.public_addr.expect("this role serves clients")
    }
}

/// The HS256 secret: configured, or (when `generate_in` is given) generated
/// once into that directory and reused.
pub fn jwt_secret(config: &SecretConfig, generate_in: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(secret.trim().as_bytes().to_vec());
    }
    if let Some(path) = &config.jwt_secret_file {
        let secret = std::fs::read(path).with_context(|| format!("jwt_secret_file {}", path.display()))?;
        return Ok(secret.trim_ascii().to_vec());
    }
    let Some(dir) = generate_in else { anyhow::bail!("jwt_secret_file: the cluster's shared secret is required") };
    let path = dir.join("jwt-secret");
    match std::fs::read(&path) {
        Ok(secret) => Ok(secret.trim_ascii().to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
            write_private(&path, secret.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a JWT secret");
            Ok(secret.into_bytes())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// Token verification for a gateway: the secret and the configured public keys.
pub fn auth(config: &ServerConfig, secret: &[u8]) -> anyhow::Result<Auth> {
    let keys = config
        .jwt_public_keys
        .iter()
        .map(|p| {
            let pem = std::fs::read(p).with_context(|| format!("jwt_public_keys: {}", p.display()))?;
            Ok((p.display().to_string(), pem))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Auth::new(secret, &keys, Duration::from_secs(config.token_ttl_secs))?)
}

pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("{what} {addr}"))
}

/// Serves the admin port until the returned token is cancelled.
pub fn spawn_admin(
    listener: TcpListener,
    registry: prometheus::Registry,
    ready: ReadyCheck,
) -> (CancellationToken, JoinHandle<()>) {
    let stop = CancellationToken::new();
    let task =
        tokio::spawn(confab_gateway::serve::serve(listener, crate::admin::router(registry, ready), None, stop.clone()));
    (stop, task)
}

/// Readiness of a gateway: its bus and store answer and it is not draining.
pub fn gateway_ready(gateway: &Gateway) -> ReadyCheck {
    let gateway = gateway.clone();
    Arc::new(move || {
        let gw = gateway.clone();
        Box::pin(async move { gw.ready().await })
    })
}

/// Serves a gateway's public listener until `shutdown` (or `fatal`), then
/// drains its sessions within `grace`.
pub async fn serve_gateway(
    gateway: &Gateway,
    public: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
    fatal: CancellationToken,
    grace: Duration,
) {
    let app = confab_gateway::http::router(gateway.clone());
    tokio::select! {
        _ = confab_gateway::serve::serve(public, app, tls, shutdown.clone()) => {}
        _ = fatal.cancelled() => {
            tracing::error!("a component stopped on its own; shutting down");
            shutdown.cancel();
        }
    }
    gateway.drain(grace).await;
}

pub fn tls(config: &ServerConfig) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    Ok(match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(confab_gateway::serve::tls_acceptor(cert, key)?),
        _ => None,
    })
}
