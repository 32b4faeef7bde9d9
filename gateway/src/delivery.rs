//! Pushes from dispatchers, delivered to local sessions. Whatever their
//! origin (the dispatcher in this process, or dispatchers over the internal
//! port), pushes land in one inbox drained by [`run`]. Each event arrives
//! encoded once; every recipient gets a clone of the same bytes.

use axum::extract::ws::Utf8Bytes;
use confab_protocol::validate::dm_members;
use confab_protocol::{Audience, Delivery, RoomEffect};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Gateway;
use crate::registry::HostsDelta;

/// Batches waiting for delivery. A full inbox holds back whoever pushes:
/// the in-process dispatcher, or a dispatcher's link, which then drops
/// batches rather than wait (its queue is bounded too).
pub const INBOX: usize = 1024;

/// A gateway's inbox: the sending end is for whoever pushes to it
/// ([`confab_bus::LocalPush::register`], [`crate::internal::router`]), the
/// receiving end for [`run`].
pub fn inbox() -> (mpsc::Sender<Vec<Delivery>>, mpsc::Receiver<Vec<Delivery>>) {
    mpsc::channel(INBOX)
}

/// Delivers what lands in `inbox` until `shutdown`, or until nothing can
/// push to it any more.
pub async fn run(gw: Gateway, mut inbox: mpsc::Receiver<Vec<Delivery>>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            batch = inbox.recv() => {
                let Some(batch) = batch else { return };
                let mut delta = HostsDelta::default();
                for d in batch {
                    delta.merge(gw.deliver(d));
                }
                gw.announce(delta).await;
            }
        }
    }
}

impl Gateway {
    /// Delivers one push; returns what it changed in what this gateway hosts.
    pub fn deliver(&self, delivery: Delivery) -> HostsDelta {
        let registry = &self.inner.registry;
        let metrics = &self.inner.metrics;
        match delivery {
            Delivery::Reply { session, t0, frame } => {
                if t0 > 0 {
                    // A send's answer: a message stored through this gateway.
                    self.inner.message_rate.tick();
                }
                if let Some(s) = registry.get(session) {
                    if t0 > 0 {
                        let micros = self.now_micros().saturating_sub(t0);
                        metrics.send_ack.observe(micros as f64 / 1e6);
                    }
                    if !s.send(Utf8Bytes::from(frame)) {
                        metrics.slow_consumers.inc();
                    }
                } else {
                    // Not a session: a server API call waiting for it.
                    self.inner.calls.answer(session, frame);
                }
                HostsDelta::default()
            }
            Delivery::Room { room, audience, effect, frame } => {
                metrics.room_events.inc();
                let mut delta = HostsDelta::default();
                if let Some((a, b)) = dm_members(&room) {
                    delta.merge(registry.ensure_dm(&room, [a, b]));
                }
                if let Some(RoomEffect::Joined(user)) = &effect {
                    delta.merge(registry.join(&room, user));
                }
                let except = match &audience {
                    Audience::MembersExcept(user) => Some(user.as_str()),
                    Audience::Members | Audience::MembersAnd(_) => None,
                };
                let bytes = Utf8Bytes::from(frame);
                let mut dropped = 0;
                let mut n = registry.for_room(&room, |s| {
                    // `MembersExcept` names who typed: those who blocked them do not hear it.
                    let unwanted = except.is_some_and(|from| &*s.user == from || self.has_blocked(&s.user, from));
                    if !unwanted && !s.send(bytes.clone()) {
                        dropped += 1;
                    }
                });
                if let Audience::MembersAnd(user) = &audience {
                    // An invitee is not a member: their sessions get it too.
                    n += registry.for_user_outside(&room, user, |s| {
                        if !s.send(bytes.clone()) {
                            dropped += 1;
                        }
                    });
                }
                metrics.deliveries.inc_by(n as u64);
                metrics.slow_consumers.inc_by(dropped);
                if let Some(RoomEffect::Left(user)) = &effect {
                    delta.merge(registry.leave(&room, user));
                }
                delta
            }
        }
    }

    /// Tells dispatchers and other gateways what changed here.
    pub(crate) async fn announce(&self, delta: HostsDelta) {
        if delta.is_empty() {
            return;
        }
        if let Err(e) = self.inner.bus.announce(&delta.into_announcement(self.id())).await {
            tracing::warn!(error = %e, "announcement failed; routes heal with the next one");
        }
    }
}
