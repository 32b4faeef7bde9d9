//! The dispatcher: the single writer of each room.
//!
//! It consumes the ingress log ([`confab_bus::Consumer`]) in batches and runs
//! each batch through [`pipeline`]: dedupe by `(room, cid)`, assign `seq` from
//! the record's offset, persist the batch in one group commit, then reply to
//! the origin sessions and push room events to the gateways that host a
//! member ([`routes`]), and only then commit the consumer offsets (together,
//! at most every [`COMMIT_EVERY`]). How a push reaches a gateway
//! ([`confab_bus::push`]) is not the dispatcher's concern: in-process
//! standalone, over the gateway's internal port otherwise.

pub mod filter;
pub mod metrics;
pub mod pipeline;
pub mod routes;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use confab_bus::{Bus, Push};
use confab_protocol::record::Announcement;
use confab_store::Store;
use tokio_util::sync::CancellationToken;

pub use metrics::Metrics;
pub use pipeline::Pipeline;
pub use routes::Routes;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bus(#[from] confab_bus::Error),
    #[error(transparent)]
    Store(#[from] confab_store::Error),
    /// The webhooks' HTTP client cannot be built (its TLS roots).
    #[error("webhook HTTP client: {0}")]
    Http(String),
}

/// The HTTP client of webhooks and the message filter: `http://` and
/// `https://` (rustls; the system's root certificates, plus those of
/// `ca_pem`, a PEM bundle, when given), no redirects, `timeout` per call.
pub fn http_client(timeout: Duration, ca_pem: Option<&[u8]>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .use_rustls_tls()
        .https_only(false);
    if let Some(pem) = ca_pem {
        let certificates = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())?;
        if certificates.is_empty() {
            return Err("no PEM certificate in the CA file".to_owned());
        }
        for c in certificates {
            builder = builder.add_root_certificate(c);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

/// The most `max_rooms_per_user` may be: the rooms one `sync` may name, so
/// that a user can always sync every room at once.
pub const MAX_ROOMS_PER_USER: usize = confab_protocol::request::MAX_SYNC_ROOMS;

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Most records taken into one group commit.
    pub max_batch: usize,
    /// A gateway silent for this long loses its routes.
    pub gateway_timeout: Duration,
    /// Rooms (DMs included) one user may be a member of: a `join`, or a
    /// DM's first message, beyond it is `forbidden`.
    pub max_rooms_per_user: usize,
    /// How long messages are kept: rooms' `retention_days`, else this default.
    pub retention: confab_protocol::Retention,
    /// The message filter asked before each message is stored, if any.
    pub filter: Option<filter::Filter>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_batch: 512,
            gateway_timeout: Duration::from_secs(30),
            max_rooms_per_user: MAX_ROOMS_PER_USER,
            retention: confab_protocol::Retention::default(),
            filter: None,
        }
    }
}

/// Most often the offsets of settled batches are committed to the bus. The
/// store's checkpoints, not the bus's offsets, say what is stored (a record
/// below them is skipped when it comes again), so a commit only spares the
/// next owner of a partition re-reading what was already stored. Committing
/// after every batch cost a round trip to the broker per batch, with the
/// loop waiting on it, and an offset write in the broker (at 500 messages/s,
/// batches of a few records: hundreds of commits a second).
pub const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// Offsets settled and not yet committed: the next offset per partition.
#[derive(Debug, Default)]
struct Uncommitted(std::collections::BTreeMap<u32, u64>);

impl Uncommitted {
    fn add(&mut self, offsets: &[(u32, u64)]) {
        for &(p, next) in offsets {
            let at = self.0.entry(p).or_default();
            *at = (*at).max(next);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn take(&mut self) -> Vec<(u32, u64)> {
        std::mem::take(&mut self.0).into_iter().collect()
    }
}

/// Consumes the ingress log until `shutdown`, then returns after the batch in
/// hand is stored, answered and committed.
pub async fn run(
    config: Config,
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    push: Arc<dyn Push>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    store.bind_partitions(bus.partitions()).await?;
    let mut consumer = bus.consumer().await?;
    let mut announcements = bus.announcements().await?;
    // Announcements are deltas: ask the gateways for everything they host.
    let me = format!("dispatcher-{:x}", std::process::id() as u64 ^ rand_suffix());
    bus.announce(&Announcement::Resync { gateway: me }).await?;
    let mut pipeline = Pipeline::new(store.clone(), push.clone(), metrics.clone(), shutdown.clone())
        .with_max_rooms_per_user(config.max_rooms_per_user)
        .with_retention(config.retention)
        .with_filter(config.filter.clone());
    pipeline.resume_from(store.checkpoints().await?);
    let mut expiry = tokio::time::interval(config.gateway_timeout / 3);
    let mut uncommitted = Uncommitted::default();
    let mut commits = tokio::time::interval(COMMIT_EVERY);
    commits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(partitions = bus.partitions(), "dispatcher consuming");
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            // The oldest staged batch is durable (or failed to be): its
            // replies and events leave, its offsets join the next commit.
            durable = pipeline.durable(), if pipeline.in_flight() > 0 => {
                let Some(offsets) = pipeline.settle(durable).await else { break };
                uncommitted.add(&offsets);
            }
            // At most one commit per `COMMIT_EVERY`, of every batch settled since.
            _ = commits.tick(), if !uncommitted.is_empty() => {
                commit(&mut *consumer, &uncommitted.take()).await;
            }
            Some(a) = announcements.recv() => {
                push.learn(&a);
                pipeline.learn(&a).await;
            }
            _ = expiry.tick() => {
                pipeline.prune_newest();
                for gateway in pipeline.routes.expire(config.gateway_timeout) {
                    // Its link stops reconnecting too.
                    push.learn(&Announcement::Gone { gateway: gateway.to_string() });
                }
                report_lag(consumer.lag().await, &metrics);
            }
            // The next batch is decided while the last ones become durable.
            polled = consumer.poll(config.max_batch), if pipeline.in_flight() < pipeline::MAX_IN_FLIGHT => {
                let records = polled?;
                if consumer.take_rebalanced() {
                    // What is in flight was decided before the move: it
                    // settles first.
                    let Some(offsets) = pipeline.settle_all().await else { break };
                    uncommitted.add(&offsets);
                    commit(&mut *consumer, &uncommitted.take()).await;
                    // Partitions moved: what this dispatcher cached may be
                    // stale, and another may have advanced a checkpoint.
                    pipeline.forget_cached();
                    let Some(checkpoints) = checkpoints_patiently(&*store, &shutdown).await else { break };
                    pipeline.resume_from(checkpoints);
                }
                // A batch can take long (the store is down: the group commit
                // is retried until it lands); the lag keeps being reported
                // meanwhile, so that it rises while nothing is consumed.
                let stage = pipeline.stage(records);
                tokio::pin!(stage);
                let staged = loop {
                    tokio::select! {
                        staged = &mut stage => break staged,
                        _ = expiry.tick() => report_lag(consumer.lag().await, &metrics),
                    }
                };
                if staged.is_none() {
                    break;
                }
            }
        }
    }
    // Batches staged before the stop are answered, pushed and committed
    // once durable (unless the store fails: then nothing of them leaves,
    // and the next owner decides them again).
    if pipeline.in_flight() > 0
        && let Some(offsets) = pipeline.settle_all().await
    {
        uncommitted.add(&offsets);
    }
    commit(&mut *consumer, &uncommitted.take()).await;
    tracing::info!("dispatcher stopped");
    Ok(())
}

/// Commits the offsets of settled batches.
async fn commit(consumer: &mut dyn confab_bus::Consumer, offsets: &[(u32, u64)]) {
    if offsets.is_empty() {
        return;
    }
    if let Err(e) = consumer.commit(offsets).await {
        // The records are stored; a redelivery after a failed
        // commit is skipped by the store's checkpoints.
        tracing::warn!(error = %e, "offset commit failed; the next one covers it");
    }
}

/// Sets the lag gauge to the consumer's lag on each partition it owns.
fn report_lag(lags: Vec<(u32, u64)>, metrics: &Metrics) {
    // Partitions this dispatcher lost are no longer its to report.
    metrics.consumer_lag.reset();
    for (partition, lag) in lags {
        metrics.consumer_lag.with_label_values(&[&partition.to_string()]).set(lag as i64);
    }
}

/// The store's checkpoints, retried while the store is down; `None` on shutdown.
async fn checkpoints_patiently(store: &dyn Store, shutdown: &CancellationToken) -> Option<Vec<(u32, u64)>> {
    loop {
        match store.checkpoints().await {
            Ok(c) => return Some(c),
            Err(e) => tracing::warn!(error = %e, "reading checkpoints; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::Uncommitted;

    #[test]
    fn offsets_settled_one_after_another_commit_the_highest_of_each_partition() {
        let mut u = Uncommitted::default();
        assert!(u.is_empty());
        u.add(&[(0, 5), (2, 9)]);
        u.add(&[(0, 7)]);
        u.add(&[(2, 3)]);
        assert_eq!(u.take(), [(0, 7), (2, 9)]);
        assert!(u.is_empty(), "taken offsets are not committed twice");
    }
}
