//! Standalone mode: one process with the gateway, the dispatcher, an
//! embedded store on local disk and an in-process bus.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use confab_bus::{Bus, LocalPush, MemoryBus};
use confab_gateway::{Auth, Gateway};
use confab_store::{EmbeddedStore, Metered, Store};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::StandaloneConfig;

/// A running standalone server.
pub struct Running {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub tls: bool,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Drains (bye `server_restart` to every session) and stops.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("server task panicked")?
    }

    /// Resolves when the server stops by itself (it should not).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("server task panicked")?
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// The HS256 secret: configured, or generated once into the data directory.
fn jwt_secret(config: &StandaloneConfig) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(secret.trim().as_bytes().to_vec());
    }
    if let Some(path) = &config.jwt_secret_file {
        let secret = std::fs::read(path).with_context(|| format!("jwt_secret_file {}", path.display()))?;
        return Ok(secret.trim_ascii().to_vec());
    }
    let path = config.data.join("jwt-secret");
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

fn public_keys(config: &StandaloneConfig) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    config
        .jwt_public_keys
        .iter()
        .map(|p| {
            let pem = std::fs::read(p).with_context(|| format!("jwt_public_keys: {}", p.display()))?;
            Ok((p.display().to_string(), pem))
        })
        .collect()
}

fn gateway_config(config: &StandaloneConfig) -> confab_gateway::Config {
    confab_gateway::Config {
        id: config.server_id.clone(),
        internal_addr: None,
        heartbeat: Duration::from_millis(config.heartbeat_ms),
        max_frame_bytes: config.max_frame_bytes,
        max_text_bytes: config.max_text_bytes,
        rate_per_second: config.rate_per_second,
        rate_burst: config.rate_burst,
        outbound_queue: config.outbound_queue,
        presence_event_limit: config.presence_event_limit,
        ..confab_gateway::Config::default()
    }
}

/// Opens the store, binds both listeners and starts serving.
pub async fn start(config: StandaloneConfig) -> anyhow::Result<Running> {
    config.validate()?;
    let registry = prometheus::Registry::new();
    std::fs::create_dir_all(&config.data).with_context(|| format!("data directory {}", config.data.display()))?;
    let embedded = EmbeddedStore::open(&config.data).context("opening the embedded store")?;
    let store: Arc<dyn Store> = Arc::new(Metered::new(embedded, &registry)?);
    store.bind_partitions(config.partitions).await.context("partitions")?;
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(config.partitions, &store.checkpoints().await?));

    let auth = Auth::new(&jwt_secret(&config)?, &public_keys(&config)?, Duration::from_secs(config.token_ttl_secs))?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(confab_gateway::serve::tls_acceptor(cert, key)?),
        _ => None,
    };

    let push = LocalPush::default();
    let inbox = push.register(&config.server_id, 1024);
    let gateway = Gateway::new(
        gateway_config(&config),
        auth,
        store.clone(),
        bus.clone(),
        confab_gateway::Metrics::new(&registry)?,
    );
    let dispatcher_metrics = confab_dispatcher::Metrics::new(&registry)?;

    let public = TcpListener::bind(config.listen).await.with_context(|| format!("listen {}", config.listen))?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("admin_listen {}", config.admin_listen))?;
    let public_addr = public.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("listening on {scheme}://{public_addr}");
    tracing::info!("admin listening on http://{admin_addr}");

    let shutdown = CancellationToken::new();
    let stop_accepting = shutdown.clone();
    let grace = Duration::from_millis(config.drain_grace_ms);
    let has_tls = tls.is_some();
    let task = tokio::spawn(async move {
        let background = CancellationToken::new();
        let dispatching = CancellationToken::new();
        let dispatcher_ended = CancellationToken::new();
        let dispatcher = tokio::spawn({
            let (bus, store, ended) = (bus.clone(), store.clone(), dispatcher_ended.clone());
            let run = confab_dispatcher::run(
                confab_dispatcher::Config::default(),
                bus,
                store,
                Arc::new(push),
                dispatcher_metrics,
                dispatching.clone(),
            );
            async move {
                let _ended = ended.drop_guard();
                run.await
            }
        });
        let bg = tokio::spawn({
            let gateway = gateway.clone();
            let background = background.clone();
            async move { gateway.run_background(inbox, background).await }
        });
        let ready_gateway = gateway.clone();
        let ready: crate::admin::ReadyCheck = Arc::new(move || {
            let gw = ready_gateway.clone();
            Box::pin(async move { gw.ready().await })
        });
        let admin_stop = CancellationToken::new();
        let admin_task = tokio::spawn(confab_gateway::serve::serve(
            admin,
            crate::admin::router(registry, ready),
            None,
            admin_stop.clone(),
        ));
        let app = confab_gateway::http::router(gateway.clone());
        tokio::select! {
            _ = confab_gateway::serve::serve(public, app, tls, stop_accepting.clone()) => {}
            _ = dispatcher_ended.cancelled() => {
                // The dispatcher stopped on its own: the store or the bus is
                // broken beyond retrying. Stop rather than take writes
                // nobody will process.
                tracing::error!("dispatcher stopped; shutting down");
            }
        }
        gateway.drain(grace).await;
        dispatching.cancel();
        let result = dispatcher.await;
        background.cancel();
        let _ = bg.await;
        admin_stop.cancel();
        let _ = admin_task.await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("dispatcher")),
            Err(e) => Err(anyhow::Error::new(e).context("dispatcher panicked")),
        }
    });
    Ok(Running { public_addr, admin_addr, tls: has_tls, shutdown, task })
}
