//! The one timer of all sessions: pings every `heartbeat`, closes sessions
//! silent for 2.5 heartbeats (1001) and sessions whose token expired
//! (`bye token_expired`, 1008). One task serves every connection, so a
//! connection costs no timer of its own.

use std::time::Duration;

use confab_protocol::ByeReason;
use tokio_util::sync::CancellationToken;

use crate::Gateway;
use crate::registry::Closing;

pub async fn run(gw: Gateway, shutdown: CancellationToken) {
    let heartbeat = gw.config().heartbeat;
    let tick = (heartbeat / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let idle_ms = (heartbeat.as_millis() as u64) * 5 / 2;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ping = gw.now_ms();
    let mut last_heartbeat_announce = gw.now_ms();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now_ms = gw.now_ms();
        let ping = now_ms.saturating_sub(last_ping) >= heartbeat.as_millis() as u64;
        if ping {
            last_ping = now_ms;
        }
        for s in gw.inner.registry.sessions() {
            if s.expires_ms <= now_ms {
                s.close(Closing::Bye(ByeReason::TokenExpired));
            } else if now_ms.saturating_sub(s.last_seen_ms()) > idle_ms {
                s.close(Closing::Code(1001, "idle"));
            } else if ping {
                s.ping();
            }
        }
        if now_ms.saturating_sub(last_heartbeat_announce) >= 5_000 {
            last_heartbeat_announce = now_ms;
            gw.announce_heartbeat().await;
        }
    }
}

impl Gateway {
    /// Milliseconds since this gateway started.
    pub(crate) fn now_ms(&self) -> u64 {
        self.now_micros() / 1000
    }

    pub(crate) async fn announce_heartbeat(&self) {
        let hb = confab_protocol::record::Announcement::Heartbeat {
            gateway: self.id().into(),
            addr: self.config().internal_addr.clone(),
        };
        if let Err(e) = self.inner.bus.announce(&hb).await {
            tracing::warn!(error = %e, "heartbeat announcement failed");
        }
    }
}
