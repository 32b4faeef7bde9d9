//! Distributed mode: `confab migrate` prepares Kafka and the CQL database,
//! then any number of `confab gateway` and `confab dispatcher` processes run
//! against them.

use std::sync::Arc;
use std::time::Duration;

use confab_bus::Bus;
use confab_bus::kafka::KafkaBus;
use confab_bus::push::RemotePush;
use confab_gateway::Gateway;
use confab_store::scylla::ScyllaStore;
use confab_store::{Metered, Store};

use crate::config::{BackendConfig, DispatcherConfig, GatewayConfig, MigrateConfig};
use crate::serving::{self, Running};
use crate::supervisor::Supervisor;

/// Creates the topics and the schema. Idempotent; refuses to change the
/// partition count of an existing ingress topic.
pub async fn migrate(config: &MigrateConfig) -> anyhow::Result<()> {
    config.validate()?;
    let kafka = config.backend.kafka()?;
    let min_insync = config.min_insync_replicas();
    KafkaBus::create_topics(&kafka, config.partitions, config.kafka_replication, min_insync).await?;
    tracing::info!(
        topic = %kafka.ingress_topic(),
        partitions = config.partitions,
        replication = config.kafka_replication,
        min_insync_replicas = min_insync,
        "Kafka topics ready"
    );
    let cql = config.cql()?;
    ScyllaStore::migrate(&cql).await?;
    let store = ScyllaStore::connect(&cql).await?;
    store.bind_partitions(config.partitions).await?;
    tracing::info!(keyspace = %cql.keyspace, "CQL schema ready");
    Ok(())
}

async fn backends(
    config: &BackendConfig,
    registry: &prometheus::Registry,
) -> anyhow::Result<(Arc<dyn Bus>, Arc<dyn Store>)> {
    let bus = KafkaBus::connect(config.kafka()?).await?;
    let store = ScyllaStore::connect(&config.cql()).await?;
    Ok((Arc::new(bus), Arc::new(Metered::new(store, registry)?)))
}

/// Starts a gateway: client sessions on the public port, pushes from
/// dispatchers on the internal port.
pub async fn start_gateway(config: GatewayConfig) -> anyhow::Result<Running> {
    config.validate()?;
    let registry = prometheus::Registry::new();
    let (bus, store) = backends(&config.backend, &registry).await?;
    let secret = serving::jwt_secret(&config.server.secret, None)?;
    let auth = serving::auth(&config.server, &secret)?;
    let api_keys = serving::api_keys(&config.server)?;
    let tls = serving::tls(&config.server)?;
    let internal_tls = serving::internal_tls(&config)?;

    let internal = serving::bind(config.internal_listen, "internal_listen").await?;
    let public = serving::bind(config.server.listen, "listen").await?;
    let tcp = serving::tcp_listener(&config.server).await?;
    let admin = serving::bind(config.ops.admin_listen, "admin_listen").await?;
    let (public_addr, admin_addr, internal_addr) = (public.local_addr()?, admin.local_addr()?, internal.local_addr()?);
    let mut gateway_config = config.gateway(internal_addr);
    gateway_config.api_keys = api_keys;
    let metrics = confab_gateway::Metrics::new(&registry)?;
    metrics.max_connections.set(config.server.connection_limits.max_connections as i64);
    let misdirected = metrics.push_misdirected.clone();
    let gateway = Gateway::new(gateway_config, auth, store, bus, metrics);
    match crate::blobs::open_blobs(&config.server.uploads, &config.server.object_store, None).await? {
        Some(blobs) => {
            let settings = config.server.uploads.settings(&secret);
            gateway.set_uploads(confab_gateway::uploads::Uploads::new(blobs, settings));
        }
        None => tracing::warn!("neither s3_endpoint nor uploads_dir: uploads are off (POST /v1/uploads answers 503)"),
    }
    gateway.ensure_unique_id().await?;
    tracing::info!("listening on http://{public_addr}");
    let internal_scheme = if internal_tls.is_some() { "https" } else { "http" };
    tracing::info!("internal listening on {internal_scheme}://{internal_addr}");
    tracing::info!("admin listening on http://{admin_addr}");

    // Pushes from dispatchers land in the same inbox as standalone's.
    let (pushed, inbox) = confab_gateway::delivery::inbox();
    let grace = Duration::from_millis(config.server.drain_grace_ms);
    let limits = config.server.connection_limits.limits();
    let mut tasks = Supervisor::new();
    let ready = serving::gateway_ready(&gateway);
    tasks.spawn("admin", |stop| serving::admin(admin, registry, ready, stop));
    let background = gateway.clone();
    tasks.spawn("gateway background", |stop| async move { Ok(background.run_background(inbox, stop).await?) });
    let id = gateway.id().to_owned();
    tasks.spawn("internal listener", |stop| async move {
        let router = confab_gateway::internal::router(&secret, &id, pushed, misdirected);
        let limits = confab_gateway::serve::ConnectionLimits::INTERNAL;
        confab_gateway::serve::serve(internal, router, internal_tls, limits, stop).await;
        Ok(())
    });
    let tcp_addr = serving::spawn_tcp(&mut tasks, &gateway, tcp, limits)?;
    tasks.spawn("public listener", |stop| serving::serve_gateway(gateway, public, tls, limits, grace, stop));
    Ok(Running::new(Some(public_addr), admin_addr, Some(internal_addr), tasks).with_tcp(tcp_addr))
}

/// Starts a dispatcher: a member of the ingress consumer group.
pub async fn start_dispatcher(config: DispatcherConfig) -> anyhow::Result<Running> {
    config.validate()?;
    let registry = prometheus::Registry::new();
    let (bus, store) = backends(&config.backend, &registry).await?;
    let secret = serving::jwt_secret(&config.secret, None)?;
    let metrics = confab_dispatcher::Metrics::new(&registry)?;
    let push = Arc::new(RemotePush::new(&secret, serving::push_tls(&config)?, metrics.push_link_failures.clone()));
    let admin = serving::bind(config.ops.admin_listen, "admin_listen").await?;
    let admin_addr = admin.local_addr()?;
    tracing::info!("admin listening on http://{admin_addr}");
    let ready: crate::admin::ReadyCheck = {
        let (bus, store) = (bus.clone(), store.clone());
        Arc::new(move || {
            let (bus, store) = (bus.clone(), store.clone());
            Box::pin(async move {
                store.ping().await.map_err(|e| e.to_string())?;
                bus.ping().await.map_err(|e| e.to_string())
            })
        })
    };
    let mut dispatcher_config = config.dispatcher();
    dispatcher_config.filter = serving::filter(&config.hooks, config.max_text_bytes, &registry)?;
    let webhooks = serving::webhooks(&config.hooks, &registry)?;
    let mut tasks = Supervisor::new();
    tasks.spawn("admin", |stop| serving::admin(admin, registry, ready, stop));
    if let Some((webhooks, metrics)) = webhooks {
        let (bus, store) = (bus.clone(), store.clone());
        tasks.spawn("webhooks", |stop| async move {
            Ok(confab_dispatcher::webhooks::run(webhooks, bus, store, metrics, stop).await?)
        });
    }
    tasks.spawn("dispatcher", |stop| async move {
        Ok(confab_dispatcher::run(dispatcher_config, bus, store, push, metrics, stop).await?)
    });
    Ok(Running::new(None, admin_addr, None, tasks))
}
