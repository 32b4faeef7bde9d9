//! The gateway: where clients meet Confab.
//!
//! A client's frames travel `http` (auth before upgrade) -> [`session`]
//! (reader and writer tasks) -> [`ops`] (decode, validate, rate-limit; reads
//! from the store, writes to the bus as ingress records). What dispatchers
//! push back comes in through [`delivery`], which resolves a room's local
//! members in [`registry`] and hands each session the same encoded bytes;
//! pushes from other processes arrive on the [`internal`] port.
//! [`presence`] tracks who is online on other gateways from their
//! announcements; [`sweeper`] is the one timer for heartbeats, idle sessions
//! and token expiry; [`serve`] is the accept loop (plain or TLS); [`tcp`]
//! the raw TCP listener, whose sessions are the same over lines of JSON;
//! [`identity`] refuses to start under the id of another live gateway.
//! `/v1/auth/*` hashes passwords on [`hashing`]'s bounded pool, within
//! [`auth_limits`]' budgets per client address and user name.
//! [`contacts`] keeps contacts and blocks, and the block lists of local
//! users that filter their `typing` and `presence` events;
//! [`user_limits`] holds what is limited per user: sessions, and `typing`
//! per room; [`application_users`] creates the users of an application's
//! tokens and keeps them apart from password accounts.

pub mod accounts;
pub mod application_users;
pub mod auth;
pub mod auth_limits;
pub mod config;
pub mod contacts;
pub mod deletion;
pub mod delivery;
pub mod hashing;
pub mod http;
pub mod identity;
pub mod internal;
pub mod lifecycle;
pub mod metrics;
pub mod ops;
pub mod outbound;
pub mod presence;
pub mod registry;
pub mod rooms;
pub mod serve;
pub mod server_api;
pub mod session;
pub mod sweeper;
pub mod tcp;
pub mod uploads;
pub mod user_limits;
pub mod web;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use confab_bus::Bus;
use confab_protocol::Delivery;
use confab_protocol::record::Announcement;
use confab_store::Store;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::Auth;
pub use config::Config;
pub use metrics::Metrics;
use presence::Presence;
use registry::Registry;

/// A part of [`Gateway::run_background`] that stopped before shutdown.
#[derive(Debug, thiserror::Error)]
#[error("the gateway's {0} stopped on its own")]
pub struct BackgroundStopped(pub &'static str);

/// A cheap, cloneable handle on one gateway's shared state.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    auth: Auth,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    registry: Registry,
    presence: Presence,
    metrics: Metrics,
    /// Attempt budgets of `/v1/auth/*`, per client address and user name.
    auth_limits: auth_limits::AuthLimits,
    /// The threads that hash passwords, and their bounded queue.
    hashes: hashing::HashPool,
    /// Sessions per user on this gateway.
    seats: Arc<user_limits::Seats>,
    /// `typing` per (user, room).
    typing: user_limits::TypingThrottle,
    /// The block lists of local users.
    blocks: contacts::Blocks,
    draining: AtomicBool,
    started: Instant,
    /// Every session task, so a drain can wait for the last one to end.
    sessions: TaskTracker,
    /// Server API calls waiting for the dispatcher's answer.
    calls: server_api::Calls,
    /// Messages stored through this gateway, per second.
    message_rate: server_api::RateMeter,
    uploads: std::sync::OnceLock<uploads::Uploads>,
}

impl Gateway {
    pub fn new(config: Config, auth: Auth, store: Arc<dyn Store>, bus: Arc<dyn Bus>, metrics: Metrics) -> Gateway {
        Gateway {
            inner: Arc::new(Inner {
                registry: Registry::default(),
                presence: Presence::new(config.id.clone()),
                auth_limits: auth_limits::AuthLimits::new(
                    config.auth_per_ip_per_minute,
                    config.auth_per_user_per_minute,
                ),
                hashes: hashing::HashPool::per_core(config.hash_queue),
                seats: user_limits::Seats::new(config.max_sessions_per_user),
                typing: user_limits::TypingThrottle::new(config.typing_interval.as_millis() as u64),
                blocks: contacts::Blocks::default(),
                config,
                auth,
                store,
                bus,
                metrics,
                draining: AtomicBool::new(false),
                started: Instant::now(),
                sessions: TaskTracker::new(),
                calls: server_api::Calls::default(),
                message_rate: server_api::RateMeter::default(),
                uploads: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    pub fn id(&self) -> &str {
        &self.inner.config.id
    }

    /// Microseconds since this gateway started: the clock of `Origin::t0`.
    pub(crate) fn now_micros(&self) -> u64 {
        self.inner.started.elapsed().as_micros() as u64
    }

    /// Ready for traffic: the bus and the store answer, and not draining.
    pub async fn ready(&self) -> Result<(), String> {
        if self.inner.draining.load(Ordering::Relaxed) {
            return Err("draining".into());
        }
        // A server that does not answer is as unready as one that refuses.
        let limit = Duration::from_secs(2);
        match tokio::time::timeout(limit, self.inner.store.ping()).await {
            Ok(r) => r.map_err(|e| e.to_string())?,
            Err(_) => return Err("the store did not answer in time".into()),
        }
        match tokio::time::timeout(limit, self.inner.bus.ping()).await {
            Ok(r) => r.map_err(|e| e.to_string())?,
            Err(_) => return Err("the bus did not answer in time".into()),
        }
        Ok(())
    }

    /// Runs the gateway's background work until `shutdown`: delivering what
    /// dispatchers push (`inbox`, from [`delivery::inbox`]), following other
    /// gateways' announcements, and the heartbeat/idle/expiry sweep. A part
    /// that stops on its own before `shutdown` ends it all with an error
    /// naming that part.
    pub async fn run_background(
        &self,
        inbox: mpsc::Receiver<Vec<Delivery>>,
        shutdown: CancellationToken,
    ) -> Result<(), BackgroundStopped> {
        let announcements = match self.inner.bus.announcements().await {
            Ok(rx) => Some(rx),
            Err(e) => {
                tracing::error!(error = %e, "cannot follow gateway announcements; presence across gateways is off");
                None
            }
        };
        self.announce_heartbeat().await;
        // Other gateways' users, for presence: ask them to announce.
        let _ = self.inner.bus.announce(&Announcement::Resync { gateway: self.id().into() }).await;
        let delivery = async {
            delivery::run(self.clone(), inbox, shutdown.clone()).await;
            // Nothing can push any more: whoever did (the dispatcher, the
            // internal port) is stopping, and is watched on its own.
            shutdown.cancelled().await;
        };
        let presence = async {
            match announcements {
                Some(rx) => presence::follow(self.clone(), Some(rx), shutdown.clone()).await,
                // Already said: this gateway runs without it.
                None => shutdown.cancelled().await,
            }
        };
        let stopped = tokio::select! {
            () = delivery => "delivery",
            () = presence => "announcement follower",
            () = sweeper::run(self.clone(), shutdown.clone()) => "sweeper",
            () = uploads::sweep(self.clone(), shutdown.clone()) => "upload sweeper",
        };
        if shutdown.is_cancelled() { Ok(()) } else { Err(BackgroundStopped(stopped)) }
    }

    /// Stops taking traffic: tells every session `bye server_restart`, and
    /// waits until they are gone or `grace` has passed.
    pub async fn drain(&self, grace: Duration) {
        self.inner.draining.store(true, Ordering::Relaxed);
        let n = self.inner.registry.close_all(confab_protocol::ByeReason::ServerRestart);
        tracing::info!(sessions = n, ?grace, "draining");
        self.inner.sessions.close();
        if tokio::time::timeout(grace, self.inner.sessions.wait()).await.is_err() {
            tracing::warn!(left = self.inner.registry.len(), "sessions still open after the grace period");
        }
        let _ = self.inner.bus.announce(&Announcement::Gone { gateway: self.id().into() }).await;
        tracing::info!("drained");
    }

    /// Runs a session task, tracked so that a drain can wait for it.
    pub(crate) fn spawn_session(&self, session: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.sessions.spawn(session);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }
}
