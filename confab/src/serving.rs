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
use confab_gateway::server_api::ApiKeys;
use confab_gateway::{Auth, Gateway};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

use crate::admin::ReadyCheck;
use crate::config::{DispatcherConfig, GatewayConfig, SecretConfig, ServerConfig};
use crate::supervisor::Supervisor;

/// A running process of any role.
pub struct Running {
    /// The public listener, for roles that serve clients.
    pub public_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    /// The internal push listener, for gateways.
    pub internal_addr: Option<SocketAddr>,
    /// The raw TCP listener (`tcp_listen`), when there is one.
    pub tcp_addr: Option<SocketAddr>,
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
        Running { public_addr, admin_addr, internal_addr, tcp_addr: None, shutdown, task }
    }

    /// The same, with the raw TCP listener's address.
    pub fn with_tcp(mut self, tcp_addr: Option<SocketAddr>) -> Running {
        self.tcp_addr = tcp_addr;
        self
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

/// Writes a new file that survives a crash of the machine whole or not at
/// all: the bytes go to `<path>.tmp`, are fsynced, the file is renamed into
/// place and the directory fsynced. (Written and not synced, a machine crash
/// left an empty `jwt-secret`, and the next start used an empty secret:
/// confab/tests/crash.rs.) A `.tmp` left by a crash is written over.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
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

/// The server API's keys from `api_key_file` (none: the API is off). A bad
/// line fails the start, naming its number and never its key.
pub fn api_keys(config: &ServerConfig) -> anyhow::Result<ApiKeys> {
    let Some(path) = &config.api_key_file else { return Ok(ApiKeys::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("api_key_file {}", path.display()))?;
    let keys = ApiKeys::parse(&text).map_err(|e| anyhow::anyhow!("api_key_file {}: {e}", path.display()))?;
    let keys = keys.with_rate(config.api_rate_per_second, config.api_rate_burst);
    if keys.is_empty() {
        tracing::warn!(path = %path.display(), "api_key_file holds no key: the server API is off");
    } else {
        tracing::info!(keys = ?keys, "server API on");
    }
    Ok(keys)
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

/// The raw TCP listener of `tcp_listen`, bound, and its TLS, if any; `None`
/// when there is none.
pub async fn tcp_listener(
    config: &ServerConfig,
) -> anyhow::Result<Option<(TcpListener, Option<tokio_rustls::TlsAcceptor>)>> {
    let Some(addr) = config.tcp_listen else { return Ok(None) };
    let tls = match (&config.tcp_tls_cert, &config.tcp_tls_key) {
        (Some(cert), Some(key)) => Some(confab_gateway::serve::tcp_tls_acceptor(cert, key)?),
        _ => None,
    };
    let listener = bind(addr, "tcp_listen").await?;
    let scheme = if tls.is_some() { "tcp+tls" } else { "tcp" };
    tracing::info!("TCP clients on {scheme}://{}", listener.local_addr()?);
    Ok(Some((listener, tls)))
}

/// Serves a gateway's raw TCP listener (see [`tcp_listener`]) until `stop`;
/// its sessions are drained with the gateway's.
pub fn spawn_tcp(
    tasks: &mut Supervisor,
    gateway: &Gateway,
    tcp: Option<(TcpListener, Option<tokio_rustls::TlsAcceptor>)>,
    limits: ConnectionLimits,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some((listener, tls)) = tcp else { return Ok(None) };
    let addr = listener.local_addr()?;
    let gateway = gateway.clone();
    tasks.spawn("tcp listener", move |stop| async move {
        confab_gateway::tcp::serve(listener, gateway, tls, limits, stop).await;
        Ok(())
    });
    Ok(Some(addr))
}

pub fn tls(config: &ServerConfig) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    Ok(match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(confab_gateway::serve::tls_acceptor(cert, key)?),
        _ => None,
    })
}

/// The internal listener's TLS: a gateway's certificate for the push link,
/// and the CAs whose client certificates it requires, if any.
pub fn internal_tls(config: &GatewayConfig) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    Ok(match (&config.internal_tls_cert, &config.internal_tls_key) {
        (Some(cert), Some(key)) => Some(confab_gateway::serve::tls_acceptor_verifying_clients(
            cert,
            key,
            config.internal_tls_client_ca.as_deref(),
        )?),
        _ => None,
    })
}

/// A dispatcher's side of the push link's TLS: the CAs it trusts for the
/// gateways' certificates, the name they must carry if one is fixed, and
/// its own client certificate, if any.
pub fn push_tls(config: &DispatcherConfig) -> anyhow::Result<Option<confab_bus::push::LinkTls>> {
    use confab_gateway::serve::{read_ca, read_certs, read_key};
    let Some(ca) = &config.internal_tls_ca else { return Ok(None) };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(read_ca(ca)?);
    let mut tls = match (&config.internal_tls_client_cert, &config.internal_tls_client_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .with_context(|| format!("internal_tls_client_cert {}: does not match its key", cert.display()))?,
        _ => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name = match &config.internal_tls_server_name {
        Some(name) => Some(
            rustls::pki_types::ServerName::try_from(name.clone())
                .with_context(|| format!("internal_tls_server_name `{name}`"))?,
        ),
        None => None,
    };
    Ok(Some(confab_bus::push::LinkTls { config: Arc::new(tls), server_name }))
}

/// The message filter `hooks` configures, its metrics registered.
pub fn filter(
    hooks: &crate::config::HooksConfig,
    max_text_bytes: usize,
    registry: &prometheus::Registry,
) -> anyhow::Result<Option<confab_dispatcher::filter::Filter>> {
    let Some(config) = hooks.filter(max_text_bytes)? else { return Ok(None) };
    tracing::info!(url = %config.url, when_down = ?config.when_down, "message filter on");
    let metrics = confab_dispatcher::filter::FilterMetrics::new(registry)?;
    let filter = confab_dispatcher::filter::Filter::new(config, metrics)
        .map_err(|e| anyhow::anyhow!("the message filter: {e}"))?;
    Ok(Some(filter))
}

/// The webhooks `hooks` configures, with their metrics registered.
pub fn webhooks(
    hooks: &crate::config::HooksConfig,
    registry: &prometheus::Registry,
) -> anyhow::Result<Option<(confab_dispatcher::webhooks::WebhookConfig, confab_dispatcher::webhooks::WebhookMetrics)>> {
    let Some(config) = hooks.webhooks()? else { return Ok(None) };
    Ok(Some((config, confab_dispatcher::webhooks::WebhookMetrics::new(registry)?)))
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

    fn dispatcher(args: &[&str]) -> DispatcherConfig {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            config: DispatcherConfig,
        }
        <Cli as clap::Parser>::parse_from(std::iter::once("confab").chain(args.iter().copied())).config
    }

    #[test]
    fn push_link_tls_files_that_are_not_pem_stop_the_start_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let junk = junk.to_str().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["gw-1".to_owned()]).unwrap();
        let (ca, key) = (dir.path().join("ca.pem"), dir.path().join("key.pem"));
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        let (ca, key) = (ca.to_str().unwrap(), key.to_str().unwrap());

        let error = |args: &[&str]| format!("{:#}", push_tls(&dispatcher(args)).expect_err("refused"));
        let e = error(&["--internal-tls-ca", junk]);
        assert!(e.contains("CA bundle") && e.contains("junk.pem"), "{e}");
        let e = error(&["--internal-tls-ca", ca, "--internal-tls-client-cert", junk, "--internal-tls-client-key", key]);
        assert!(e.contains("junk.pem"), "{e}");
        let e = error(&["--internal-tls-ca", ca, "--internal-tls-client-cert", ca, "--internal-tls-client-key", junk]);
        assert!(e.contains("key") && e.contains("junk.pem"), "{e}");
        assert!(push_tls(&dispatcher(&["--internal-tls-ca", ca])).unwrap().is_some());
        assert!(push_tls(&dispatcher(&[])).unwrap().is_none(), "no CA: the plain link of old");

        let gateway = |args: &[&str]| {
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                config: GatewayConfig,
            }
            <Cli as clap::Parser>::parse_from(std::iter::once("confab").chain(args.iter().copied())).config
        };
        let e = internal_tls(&gateway(&["--internal-tls-cert", junk, "--internal-tls-key", key])).err().unwrap();
        assert!(format!("{e:#}").contains("junk.pem"), "{e:#}");
        let mutual = ["--internal-tls-cert", ca, "--internal-tls-key", key, "--internal-tls-client-ca", junk];
        let e = internal_tls(&gateway(&mutual)).err().unwrap();
        assert!(format!("{e:#}").contains("CA bundle"), "{e:#}");
        assert!(internal_tls(&gateway(&["--internal-tls-cert", ca, "--internal-tls-key", key])).unwrap().is_some());
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
