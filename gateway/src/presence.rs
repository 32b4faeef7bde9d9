//! Who is online: a user with at least one live session on any gateway.
//! Local sessions are in the registry; sessions on other gateways are learnt
//! from their announcements. A user going online or offline is told to the
//! local members of the rooms they share, in rooms of at most
//! `presence_event_limit` members, and to their mutual contacts, but not to
//! those who blocked them.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use axum::extract::ws::Utf8Bytes;
use confab_protocol::Event;
use confab_protocol::record::Announcement;
use confab_protocol::validate::dm_members;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Gateway;

pub struct Presence {
    me: String,
    /// user -> other gateways hosting a session of theirs
    remote: RwLock<HashMap<String, HashSet<String>>>,
}

impl Presence {
    pub fn new(me: String) -> Self {
        Presence { me, remote: RwLock::default() }
    }

    /// Users with a session on another gateway.
    pub(crate) fn remote_users(&self) -> Vec<String> {
        self.remote.read().expect("presence lock").keys().cloned().collect()
    }

    fn is_remote(&self, user: &str) -> bool {
        self.remote.read().expect("presence lock").contains_key(user)
    }

    fn add(&self, user: &str, gateway: &str) {
        self.remote.write().expect("presence lock").entry(user.to_owned()).or_default().insert(gateway.to_owned());
    }

    fn remove(&self, user: &str, gateway: &str) {
        let mut remote = self.remote.write().expect("presence lock");
        if let Some(gws) = remote.get_mut(user) {
            gws.remove(gateway);
            if gws.is_empty() {
                remote.remove(user);
            }
        }
    }

    /// Forgets a gateway; returns the users it was the only host of.
    fn forget(&self, gateway: &str) -> Vec<String> {
        let mut gone = Vec::new();
        self.remote.write().expect("presence lock").retain(|user, gws| {
            gws.remove(gateway);
            if gws.is_empty() {
                gone.push(user.clone());
            }
            !gws.is_empty()
        });
        gone
    }
}

/// Follows other gateways' announcements until shutdown.
pub async fn follow(gw: Gateway, rx: Option<mpsc::Receiver<Announcement>>, shutdown: CancellationToken) {
    let Some(mut rx) = rx else { return };
    loop {
        let a = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = rx.recv() => match a { Some(a) => a, None => return },
        };
        let presence = &gw.inner.presence;
        if a.gateway() == presence.me {
            if let Announcement::Resync { .. } = a {
                // A gateway starting under this id asks who holds it (or
                // this gateway's own start-up request): answer, so that it
                // can refuse the id (`identity`).
                gw.announce_heartbeat().await;
            }
            continue;
        }
        match a {
            Announcement::Hosts { gateway, users_added, users_removed, .. } => {
                for user in users_added {
                    let was = gw.is_online(&user);
                    presence.add(&user, &gateway);
                    if !was {
                        gw.tell_presence(&user, true).await;
                    }
                }
                for user in users_removed {
                    presence.remove(&user, &gateway);
                    if !gw.is_online(&user) {
                        gw.tell_presence(&user, false).await;
                    }
                }
            }
            Announcement::Gone { gateway } => {
                for user in presence.forget(&gateway) {
                    if !gw.is_online(&user) {
                        gw.tell_presence(&user, false).await;
                    }
                }
            }
            Announcement::Heartbeat { .. } => {}
            Announcement::Revoke { user, before_ms, jti, .. } => {
                gw.inner.registry.revoke(&user, before_ms, jti.as_deref());
            }
            Announcement::Disconnect { user, .. } => {
                gw.inner.registry.disconnect(&user);
            }
            Announcement::Relations { user, frame, blocks, .. } => {
                if blocks {
                    gw.reload_blocks(&user).await;
                }
                if let Some(frame) = frame {
                    gw.to_user(&user, &frame);
                }
            }
            Announcement::Resync { .. } => {
                gw.announce_heartbeat().await;
                let snapshot = gw.inner.registry.snapshot();
                gw.announce(snapshot).await;
            }
        }
    }
}

impl Gateway {
    pub fn is_online(&self, user: &str) -> bool {
        self.inner.registry.is_local(user) || self.inner.presence.is_remote(user)
    }

    /// Sends `presence` to this gateway's sessions that share a small enough
    /// room with `user`, or are their mutual contacts, once per session;
    /// never to those who blocked `user`.
    pub(crate) async fn tell_presence(&self, user: &str, online: bool) {
        let store = &self.inner.store;
        let (rooms, contacts) = match tokio::try_join!(store.user_room_names(user), store.contacts(user)) {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "presence: cannot read the user's rooms and contacts");
                return;
            }
        };
        let limit = self.config().presence_event_limit;
        let mut recipients = HashMap::new();
        for room in rooms {
            if dm_members(&room).is_none() {
                match store.room(&room).await {
                    Ok(Some(meta)) if meta.members <= limit => {}
                    _ => continue,
                }
            }
            self.inner.registry.for_room(&room, |s| {
                if &*s.user != user {
                    recipients.entry(s.id).or_insert_with(|| s.clone());
                }
            });
        }
        for contact in contacts.iter().filter(|c| c.status() == confab_protocol::ContactStatus::Mutual) {
            self.inner.registry.for_user(&contact.other, |s| {
                recipients.entry(s.id).or_insert_with(|| s.clone());
            });
        }
        recipients.retain(|_, s| !self.has_blocked(&s.user, user));
        if recipients.is_empty() {
            return;
        }
        let frame = Utf8Bytes::from(Event::Presence { user: user.into(), online }.encode());
        for session in recipients.into_values() {
            session.send(frame.clone());
        }
    }
}
