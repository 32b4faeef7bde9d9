//! Standalone mode: one process with the gateway, the dispatcher, an
//! embedded store on local disk and an in-process bus.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use confab_bus::{Bus, LocalPush, MemoryBus};
use confab_gateway::Gateway;
use confab_store::{EmbeddedStore, Metered, Store};
use tokio_util::sync::CancellationToken;

use crate::config::StandaloneConfig;
use crate::serving::{self, Running};

/// Opens the store, binds both listeners and starts serving.
pub async fn start(config: StandaloneConfig) -> anyhow::Result<Running> {
    config.validate()?;
    let registry = prometheus::Registry::new();
    std::fs::create_dir_all(&config.data).with_context(|| format!("data directory {}", config.data.display()))?;
    let embedded = EmbeddedStore::open(&config.data).context("opening the embedded store")?;
    let store: Arc<dyn Store> = Arc::new(Metered::new(embedded, &registry)?);
    store.bind_partitions(config.partitions).await.context("partitions")?;
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(config.partitions, &store.checkpoints().await?));

    let secret = serving::jwt_secret(&config.server.secret, Some(&config.data))?;
    let auth = serving::auth(&config.server, &secret)?;
    let tls = serving::tls(&config.server)?;
    let push = LocalPush::default();
    let inbox = push.register(&config.server.server_id, 1024);
    let dispatcher_config = config.dispatcher();
    let gateway =
        Gateway::new(config.gateway(), auth, store.clone(), bus.clone(), confab_gateway::Metrics::new(&registry)?);
    let dispatcher_metrics = confab_dispatcher::Metrics::new(&registry)?;

    let public = serving::bind(config.server.listen, "listen").await?;
    let admin = serving::bind(config.ops.admin_listen, "admin_listen").await?;
    let public_addr = public.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("listening on {scheme}://{public_addr}");
    tracing::info!("admin listening on http://{admin_addr}");

    let shutdown = CancellationToken::new();
    let grace = Duration::from_millis(config.server.drain_grace_ms);
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let background = CancellationToken::new();
        let dispatching = CancellationToken::new();
        let dispatcher_ended = CancellationToken::new();
        let dispatcher = tokio::spawn({
            let run = confab_dispatcher::run(
                dispatcher_config,
                bus,
                store,
                Arc::new(push),
                dispatcher_metrics,
                dispatching.clone(),
            );
            let ended = dispatcher_ended.clone().drop_guard();
            async move {
                let _ended = ended;
                run.await
            }
        });
        let bg = tokio::spawn({
            let (gateway, background) = (gateway.clone(), background.clone());
            async move { gateway.run_background(inbox, background).await }
        });
        let (admin_stop, admin_task) = serving::spawn_admin(admin, registry, serving::gateway_ready(&gateway));
        serving::serve_gateway(&gateway, public, tls, stop, dispatcher_ended, grace).await;
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
    Ok(Running { public_addr: Some(public_addr), admin_addr, internal_addr: None, shutdown, task })
}
