//! Standalone mode: one process with the gateway, the dispatcher, an
//! embedded store on local disk and an in-process bus.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use confab_bus::{Bus, LocalPush, MemoryBus};
use confab_gateway::Gateway;
use confab_protocol::Retention;
use confab_store::{EmbeddedStore, Metered, Store};
use tokio_util::sync::CancellationToken;

use crate::config::StandaloneConfig;
use crate::serving::{self, Running};
use crate::supervisor::Supervisor;

/// Opens the store, binds both listeners and starts serving.
pub async fn start(config: StandaloneConfig) -> anyhow::Result<Running> {
    config.validate()?;
    let registry = prometheus::Registry::new();
    // Creates the data directory, private to this user (0700).
    let embedded = EmbeddedStore::open(&config.data).context("opening the embedded store")?;
    let sweeper = embedded.clone();
    let store: Arc<dyn Store> = Arc::new(Metered::new(embedded, &registry)?);
    store.bind_partitions(config.partitions).await.context("partitions")?;
    let start = store.checkpoints().await?;
    let webhooks = serving::webhooks(&config.hooks, &registry)?;
    let bus: Arc<dyn Bus> = match &webhooks {
        // The webhooks' groups exist before any record: they skip none, and
        // their backlog is on disk.
        Some((hooks, _)) => {
            let journal = confab_bus::Journal::open(&config.data, config.webhook_journal_bytes, &registry)
                .await
                .context("opening the webhook journal")?;
            let groups: Vec<String> = hooks.hooks.iter().map(|h| h.group()).collect();
            Arc::new(MemoryBus::with_journal(config.partitions, &start, journal, &groups).await?)
        }
        None => Arc::new(MemoryBus::new(config.partitions, &start)),
    };

    let secret = serving::jwt_secret(&config.server.secret, Some(&config.data))?;
    let auth = serving::auth(&config.server, &secret)?;
    let tls = serving::tls(&config.server)?;
    let push = LocalPush::default();
    let (pushed, inbox) = confab_gateway::delivery::inbox();
    let mut gateway_config = config.gateway();
    gateway_config.api_keys = serving::api_keys(&config.server)?;
    push.register(&gateway_config.id, pushed);
    let mut dispatcher_config = config.dispatcher();
    dispatcher_config.filter = serving::filter(&config.hooks, config.server.max_text_bytes, &registry)?;
    let gateway_metrics = confab_gateway::Metrics::new(&registry)?;
    gateway_metrics.max_connections.set(config.server.connection_limits.max_connections as i64);
    let gateway = Gateway::new(gateway_config, auth, store.clone(), bus.clone(), gateway_metrics);
    if let Some(blobs) =
        crate::blobs::open_blobs(&config.server.uploads, &config.server.object_store, Some(&config.data)).await?
    {
        let settings = config.server.uploads.settings(&secret);
        gateway.set_uploads(confab_gateway::uploads::Uploads::new(blobs, settings));
    }
    let dispatcher_metrics = confab_dispatcher::Metrics::new(&registry)?;

    let public = serving::bind(config.server.listen, "listen").await?;
    let tcp = serving::tcp_listener(&config.server).await?;
    let admin = serving::bind(config.ops.admin_listen, "admin_listen").await?;
    let public_addr = public.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("listening on {scheme}://{public_addr}");
    tracing::info!("admin listening on http://{admin_addr}");

    let grace = Duration::from_millis(config.server.drain_grace_ms);
    let limits = config.server.connection_limits.limits();
    let mut tasks = Supervisor::new();
    let ready = serving::gateway_ready(&gateway);
    tasks.spawn("admin", |stop| serving::admin(admin, registry, ready, stop));
    let retention = config.server.retention.retention();
    tasks.spawn("retention sweeper", |stop| sweep(sweeper, retention, stop));
    let background = gateway.clone();
    tasks.spawn("gateway background", |stop| async move { Ok(background.run_background(inbox, stop).await?) });
    if let Some((webhooks, metrics)) = webhooks {
        let (bus, store) = (bus.clone(), store.clone());
        tasks.spawn("webhooks", |stop| async move {
            Ok(confab_dispatcher::webhooks::run(webhooks, bus, store, metrics, stop).await?)
        });
    }
    tasks.spawn("dispatcher", |stop| async move {
        Ok(confab_dispatcher::run(dispatcher_config, bus, store, Arc::new(push), dispatcher_metrics, stop).await?)
    });
    let tcp_addr = serving::spawn_tcp(&mut tasks, &gateway, tcp, limits)?;
    tasks.spawn("public listener", |stop| serving::serve_gateway(gateway, public, tls, limits, grace, stop));
    Ok(Running::new(Some(public_addr), admin_addr, None, tasks).with_tcp(tcp_addr))
}

/// Messages the sweeper removes in one transaction.
const SWEEP_CHUNK: usize = 10_000;

/// Removes the messages retention no longer keeps, every minute (or every
/// retention "day" when tests make one shorter), until `stop`. The CQL store
/// needs no sweeper: its messages carry a TTL.
async fn sweep(store: EmbeddedStore, retention: Retention, stop: CancellationToken) -> anyhow::Result<()> {
    let every = Duration::from_secs(retention.day_secs.clamp(1, 60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        loop {
            match store.sweep(retention, now, SWEEP_CHUNK).await {
                Ok(n) if n == SWEEP_CHUNK => continue,
                Ok(0) => break,
                Ok(n) => {
                    tracing::debug!(removed = n, "retention sweep");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention sweep failed; retrying at the next one");
                    break;
                }
            }
        }
    }
}
