//! What every Confab process does around its work: secrets, the admin port,
//! serving a gateway's public listener and its drain, and the handle on a
//! running process, whose tasks a [`Supervisor`] runs and stops.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use confab_gateway::auth::AppKey;
use confab_gateway::serve::ConnectionLimits;
use confab_gateway::{Auth, Gateway};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::ReadyCheck;
use crate::config::{SecretConfig, ServerConfig};
use crate::supervisor::Supervisor;

/// A running process of any role.
pub struct Running {
    /// The public listener, for roles that serve clients.
    pub public_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    /// The internal push listener, for gateways.
    pub internal_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Runs the role's `tasks` until [`Running::stop`], or until one of them
    /// ends on its own.
    pub fn new(
        public_addr: Option<SocketAddr>,
        admin_addr: SocketAddr,
        internal_addr: Option<SocketAddr>,
        tasks: Supervisor,
    ) -> Running {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(tasks.run(shutdown.clone()));
        Running { public_addr, admin_addr, internal_addr, shutdown, task }
    }

    /// Drains (clients get `bye server_restart`) and stops.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("the supervisor panicked")?
    }

    /// Runs until `signal`, then stops politely; fails as soon as a task of
    /// the process ends on its own (after stopping the others).
    pub async fn until(mut self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::select! {
            () = signal => {
                tracing::info!("shutdown requested");
                self.stop().await
            }
            ended = &mut self.task => ended.context("the supervisor panicked")?,
        }
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

/// Token verification for a gateway: the secret and the configured public
/// keys, with what each requires of its tokens.
pub fn auth(config: &ServerConfig, secret: &[u8]) -> anyhow::Result<Auth> {
    let keys = config
        .jwt_public_keys
        .iter()
        .map(|k| {
            let name = k.path.display().to_string();
            let pem = std::fs::read(&k.path).with_context(|| format!("jwt_public_keys: {name}"))?;
            if k.issuer.is_none() || k.audience.is_none() {
                tracing::warn!(
                    key = %name,
                    "this application key requires no issuer or no audience of its tokens: a token it signed \
                     for another service is accepted here too; give it `#iss=ISSUER;aud=AUDIENCE`"
                );
            }
            Ok(AppKey { name, pem, issuer: k.issuer.clone(), audience: k.audience.clone() })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !keys.is_empty() && config.open_registration() {
        tracing::warn!(
            "registration is open alongside application keys: a name someone registers here first is refused \
             to the application's user of that name"
        );
    }
    let (ttl, max_lifetime) = (config.token_ttl_secs, config.max_token_lifetime_secs);
    Ok(Auth::new(secret, &keys, Duration::from_secs(ttl), Duration::from_secs(max_lifetime))?)
}

pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("{what} {addr}"))
}

/// Serves the admin port until `stop`.
pub async fn admin(
    listener: TcpListener,
    registry: prometheus::Registry,
    ready: ReadyCheck,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let app = crate::admin::router(registry, ready);
    confab_gateway::serve::serve(listener, app, None, ConnectionLimits::INTERNAL, stop).await;
    Ok(())
}

/// Readiness of a gateway: its bus and store answer and it is not draining.
pub fn gateway_ready(gateway: &Gateway) -> ReadyCheck {
    let gateway = gateway.clone();
    Arc::new(move || {
        let gw = gateway.clone();
        Box::pin(async move { gw.ready().await })
    })
}

/// Serves a gateway's public listener until `stop`, then drains its
/// sessions within `grace`.
pub async fn serve_gateway(
    gateway: Gateway,
    public: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnectionLimits,
    grace: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let app = confab_gateway::http::router(gateway.clone());
    confab_gateway::serve::serve(public, app, tls, limits, stop).await;
    gateway.drain(grace).await;
    Ok(())
}

pub fn tls(config: &ServerConfig) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    Ok(match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(confab_gateway::serve::tls_acceptor(cert, key)?),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_whose_task_dies_ends_with_an_error_naming_it_without_waiting_for_a_signal() {
        let mut tasks = Supervisor::new();
        tasks.spawn("admin", |stop| async move {
            stop.cancelled().await;
            Ok(())
        });
        tasks.spawn("dispatcher", |_| async { anyhow::bail!("the consumer group is gone") });
        let running = Running::new(None, "127.0.0.1:9".parse().unwrap(), None, tasks);
        let error = running.until(std::future::pending()).await.expect_err("the dispatcher died");
        assert_eq!(format!("{error:#}"), "task `dispatcher` failed: the consumer group is gone");
    }

    #[tokio::test]
    async fn a_signal_stops_the_process_cleanly() {
        let mut tasks = Supervisor::new();
        tasks.spawn("admin", |stop| async move {
            stop.cancelled().await;
            Ok(())
        });
        let running = Running::new(None, "127.0.0.1:9".parse().unwrap(), None, tasks);
        running.until(std::future::ready(())).await.expect("a clean stop");
    }
}
