//! Which gateways host which rooms and users, learnt from the gateways'
//! announcements, so that a room event goes only to gateways that have a
//! member of the room online.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_protocol::record::Announcement;

#[derive(Default)]
pub struct Routes {
    rooms: HashMap<String, HashSet<Arc<str>>>,
    users: HashMap<String, HashSet<Arc<str>>>,
    seen: HashMap<Arc<str>, Instant>,
}

impl Routes {
    pub fn apply(&mut self, announcement: &Announcement) {
        match announcement {
            Announcement::Hosts { gateway, rooms_added, rooms_removed, users_added, users_removed } => {
                let gw = self.gateway(gateway);
                for room in rooms_added {
                    self.rooms.entry(room.clone()).or_default().insert(gw.clone());
                }
                for user in users_added {
                    self.users.entry(user.clone()).or_default().insert(gw.clone());
                }
                remove_all(&mut self.rooms, rooms_removed, &gw);
                remove_all(&mut self.users, users_removed, &gw);
            }
            Announcement::Heartbeat { gateway, .. } => {
                self.gateway(gateway);
            }
            Announcement::Gone { gateway } => self.forget(gateway),
            Announcement::Resync { .. }
            | Announcement::Revoke { .. }
            | Announcement::Relations { .. }
            | Announcement::Disconnect { .. } => {}
        }
    }

    /// Adds a route without waiting for the gateway's announcement: the
    /// dispatcher that processes a join knows where the joiner is.
    pub fn add_room(&mut self, room: &str, gateway: &str) {
        let gw = self.gateway(gateway);
        self.rooms.entry(room.to_owned()).or_default().insert(gw);
    }

    /// Routes a room to wherever these users have sessions: the two users of
    /// a new DM, or a joining user's other devices on other gateways.
    pub fn add_room_for_users(&mut self, room: &str, users: &[&str]) {
        let gateways: Vec<Arc<str>> =
            users.iter().flat_map(|u| self.users.get(*u).into_iter().flatten().cloned()).collect();
        if !gateways.is_empty() {
            self.rooms.entry(room.to_owned()).or_default().extend(gateways);
        }
    }

    pub fn gateways_for_room(&self, room: &str) -> impl Iterator<Item = &Arc<str>> {
        self.rooms.get(room).into_iter().flatten()
    }

    /// Gateways where the user has sessions.
    pub fn gateways_for_user(&self, user: &str) -> impl Iterator<Item = &Arc<str>> {
        self.users.get(user).into_iter().flatten()
    }

    /// Forgets gateways not heard from within `timeout`; returns them.
    pub fn expire(&mut self, timeout: Duration) -> Vec<Arc<str>> {
        self.expire_at(Instant::now(), timeout)
    }

    /// `expire` as of `now`.
    fn expire_at(&mut self, now: Instant, timeout: Duration) -> Vec<Arc<str>> {
        let dead: Vec<Arc<str>> =
            self.seen.iter().filter(|(_, at)| now.duration_since(**at) > timeout).map(|(g, _)| g.clone()).collect();
        for gateway in &dead {
            tracing::warn!(%gateway, "gateway silent past its deadline; dropping its routes");
            self.forget(gateway);
        }
        dead
    }

    fn forget(&mut self, gateway: &str) {
        self.seen.remove(gateway);
        for map in [&mut self.rooms, &mut self.users] {
            map.retain(|_, gws| {
                gws.remove(gateway);
                !gws.is_empty()
            });
        }
    }

    /// Interns the gateway's id and marks it alive.
    fn gateway(&mut self, gateway: &str) -> Arc<str> {
        let now = Instant::now();
        if let Some((gw, _)) = self.seen.get_key_value(gateway) {
            let gw = gw.clone();
            self.seen.insert(gw.clone(), now);
            return gw;
        }
        let gw: Arc<str> = Arc::from(gateway);
        self.seen.insert(gw.clone(), now);
        gw
    }
}

fn remove_all(map: &mut HashMap<String, HashSet<Arc<str>>>, keys: &[String], gateway: &str) {
    for key in keys {
        if let Some(gws) = map.get_mut(key) {
            gws.remove(gateway);
            if gws.is_empty() {
                map.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(gateway: &str, rooms_added: &[&str], rooms_removed: &[&str]) -> Announcement {
        Announcement::Hosts {
            gateway: gateway.into(),
            rooms_added: rooms_added.iter().map(|s| s.to_string()).collect(),
            rooms_removed: rooms_removed.iter().map(|s| s.to_string()).collect(),
            users_added: vec![],
            users_removed: vec![],
        }
    }

    fn gateways(routes: &Routes, room: &str) -> Vec<String> {
        let mut v: Vec<String> = routes.gateways_for_room(room).map(|g| g.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_room_is_routed_only_to_gateways_that_host_it() {
        let mut routes = Routes::default();
        routes.apply(&hosts("gw-1", &["a", "b"], &[]));
        routes.apply(&hosts("gw-2", &["b"], &[]));
        assert_eq!(gateways(&routes, "a"), ["gw-1"]);
        assert_eq!(gateways(&routes, "b"), ["gw-1", "gw-2"]);
        routes.apply(&hosts("gw-1", &[], &["b"]));
        assert_eq!(gateways(&routes, "b"), ["gw-2"]);
        assert!(gateways(&routes, "c").is_empty());
    }

    #[test]
    fn a_gone_gateway_loses_every_route() {
        let mut routes = Routes::default();
        routes.apply(&hosts("gw-1", &["a"], &[]));
        routes.add_room("b", "gw-1");
        routes.apply(&Announcement::Gone { gateway: "gw-1".into() });
        assert!(gateways(&routes, "a").is_empty() && gateways(&routes, "b").is_empty());
    }

    #[test]
    fn a_gateway_that_died_without_a_word_loses_its_routes_once_silent_past_the_timeout() {
        let timeout = Duration::from_secs(30);
        let mut routes = Routes::default();
        let start = Instant::now();
        routes.apply(&hosts("gw-dead", &["a", "b"], &[]));
        routes.add_room("c", "gw-dead");
        routes.apply(&Announcement::Hosts {
            gateway: "gw-dead".into(),
            rooms_added: vec![],
            rooms_removed: vec![],
            users_added: vec!["alice".into()],
            users_removed: vec![],
        });
        // gw-dead spoke between `start` and `spoke`; gw-live speaks after `mid`.
        let spoke = Instant::now();
        let mut mid = Instant::now();
        while mid <= spoke {
            mid = Instant::now();
        }
        routes.apply(&hosts("gw-live", &["b"], &[]));
        routes.apply(&Announcement::Heartbeat { gateway: "gw-live".into(), addr: None });

        // Not silent for longer than the timeout yet: nothing is dropped.
        assert!(routes.expire_at(start + timeout, timeout).is_empty());
        assert_eq!(gateways(&routes, "a"), ["gw-dead"]);

        let dead = routes.expire_at(mid + timeout, timeout);
        assert_eq!(dead.iter().map(|g| g.to_string()).collect::<Vec<_>>(), ["gw-dead"]);
        assert!(gateways(&routes, "a").is_empty() && gateways(&routes, "c").is_empty());
        assert_eq!(gateways(&routes, "b"), ["gw-live"], "the live gateway keeps its route");
        // A DM made now is not routed to the dead gateway through alice.
        routes.add_room_for_users("dm:alice:bob", &["alice", "bob"]);
        assert!(gateways(&routes, "dm:alice:bob").is_empty());
        // gw-dead is reported once; gw-live, silent in turn, goes the same way.
        let later = routes.expire_at(mid + timeout * 2, timeout);
        assert_eq!(later.iter().map(|g| g.to_string()).collect::<Vec<_>>(), ["gw-live"]);
        assert!(gateways(&routes, "b").is_empty());
    }

    #[test]
    fn a_dm_room_follows_its_users() {
        let mut routes = Routes::default();
        routes.apply(&Announcement::Hosts {
            gateway: "gw-2".into(),
            rooms_added: vec![],
            rooms_removed: vec![],
            users_added: vec!["bob".into()],
            users_removed: vec![],
        });
        routes.add_room_for_users("dm:alice:bob", &["alice", "bob"]);
        assert_eq!(gateways(&routes, "dm:alice:bob"), ["gw-2"]);
    }
}
