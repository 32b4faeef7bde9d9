//! The sessions of this gateway and the local membership index: which local
//! users are members of which rooms. A room event is resolved here into the
//! sessions that get it, so a dispatcher pushes once per gateway whatever the
//! room's size.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use axum::extract::ws::Utf8Bytes;
use confab_protocol::ByeReason;
use confab_protocol::record::Announcement;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::Notify;

use crate::outbound;

/// What the writer task sends next (through [`outbound`], which holds no
/// slot while it is empty).
pub enum Outbound {
    Frame(Utf8Bytes),
    Ping,
}

impl Outbound {
    /// The bytes it holds in the queue.
    pub fn len(&self) -> usize {
        match self {
            Outbound::Frame(f) => f.len(),
            Outbound::Ping => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// [`SessionHandle::large_read`] while the reply is built: no frame's
/// bytes are at address 1.
const LARGE_READ_BUILDING: usize = 1;

/// Why and how the server closes a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Send `bye` with the reason, then close with its code.
    Bye(ByeReason),
    /// Close with a code and no `bye` (idle, frame too large).
    Code(u16, &'static str),
    /// The client closed with this code: answer with the same (RFC 6455 5.5.1).
    ClientClosed(Option<u16>),
}

impl Closing {
    /// The label of `confab_sessions_closed_total`.
    pub fn label(self) -> &'static str {
        match self {
            Closing::Bye(r) => r.as_str(),
            Closing::Code(_, reason) => reason,
            Closing::ClientClosed(_) => "client_closed",
        }
    }
}

/// A session's request rate limiter.
pub type Limiter = RateLimiter<NotKeyed, InMemoryState, RuntimeClock, NoOpMiddleware<std::time::Instant>>;

/// The tokio runtime's clock, for rate limits: the one clock of sessions'
/// timers, which tests can pause and advance.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimeClock;

impl Clock for RuntimeClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// One live session, shared by its reader and writer tasks, the registry,
/// deliveries and the sweeper.
pub struct SessionHandle {
    pub id: u64,
    pub user: Arc<str>,
    /// When the token expires, in milliseconds on the gateway's clock.
    pub expires_ms: u64,
    pub limiter: Limiter,
    tx: outbound::Sender,
    /// Bytes of the frames queued and not yet written, and their bound.
    queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
    /// The large read in flight: 0 when none, [`LARGE_READ_BUILDING`]
    /// while its reply is built, then the address of the reply's bytes,
    /// which tells the writer which frame ends it (a frame's bytes stay
    /// where they are until it is written, so no other frame queued
    /// meanwhile can have that address). Not a flag on the queued frame:
    /// that would make every slot of every session's queue larger.
    large_read: AtomicUsize,
    large_read_done: Notify,
    closing: OnceLock<Closing>,
    close_signal: Notify,
    /// Milliseconds on the gateway's clock of the last frame or pong received.
    last_seen_ms: AtomicU64,
    /// When the session's token was issued (unix ms, 0: unknown) and its
    /// id: what a revocation compares.
    pub token_issued_ms: u64,
    pub token_id: Option<Box<str>>,
}

impl SessionHandle {
    pub fn new(
        id: u64,
        user: Arc<str>,
        expires_ms: u64,
        quota: Quota,
        tx: outbound::Sender,
        max_queued_bytes: usize,
        now_ms: u64,
    ) -> Self {
        SessionHandle {
            id,
            user,
            expires_ms,
            limiter: RateLimiter::direct_with_clock(quota, RuntimeClock),
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes,
            large_read: AtomicUsize::new(0),
            large_read_done: Notify::new(),
            closing: OnceLock::new(),
            close_signal: Notify::new(),
            last_seen_ms: AtomicU64::new(now_ms),
            token_issued_ms: 0,
            token_id: None,
        }
    }

    /// The session's token, for revocations.
    pub fn with_token(mut self, issued_ms: u64, id: Option<&str>) -> Self {
        self.token_issued_ms = issued_ms;
        self.token_id = id.map(Box::from);
        self
    }

    /// Queues a frame. A full queue (in frames or in bytes) closes the
    /// session as a slow consumer; other sessions never wait for it. `false`
    /// when the frame was dropped.
    pub fn send(&self, frame: Utf8Bytes) -> bool {
        self.enqueue(Outbound::Frame(frame))
    }

    /// Queues the reply to a large read, begun with [`large_read`](Self::large_read).
    pub fn send_large_reply(&self, frame: Utf8Bytes) -> bool {
        // Marked before it is queued, so the writer cannot write it unmarked.
        self.large_read.store(frame.as_ptr() as usize, Ordering::Release);
        let sent = self.enqueue(Outbound::Frame(frame));
        if !sent {
            self.large_read_done();
        }
        sent
    }

    fn enqueue(&self, out: Outbound) -> bool {
        let len = out.len();
        // Counted before it is queued, so the writer never releases more
        // than was counted.
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before.saturating_add(len) > self.max_queued_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.close(Closing::Bye(ByeReason::SlowConsumer));
            return false;
        }
        match self.tx.try_send(out) {
            Ok(()) => true,
            Err(e) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                if let outbound::TrySendError::Full(_) = e {
                    self.close(Closing::Bye(ByeReason::SlowConsumer));
                }
                false
            }
        }
    }

    /// The writer wrote (and flushed) frames of these many bytes.
    pub fn written(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    /// Waits until no other large read's reply is waiting to be written,
    /// then begins one: a client that does not read its replies cannot have
    /// the server build more of them. Its reply is queued with
    /// [`send_large_reply`](Self::send_large_reply), whose write ends it
    /// (or [`large_read_done`](Self::large_read_done) when there is none).
    pub async fn large_read(&self) {
        loop {
            let done = self.large_read_done.notified();
            let begun = self.large_read.compare_exchange(0, LARGE_READ_BUILDING, Ordering::AcqRel, Ordering::Acquire);
            if begun.is_ok() {
                return;
            }
            done.await;
        }
    }

    /// Whether `frame` is the reply of the large read in flight.
    pub fn is_large_reply(&self, frame: &Utf8Bytes) -> bool {
        !frame.is_empty() && self.large_read.load(Ordering::Acquire) == frame.as_ptr() as usize
    }

    /// The large read in flight is over: its reply was written (or dropped).
    pub fn large_read_done(&self) {
        self.large_read.store(0, Ordering::Release);
        self.large_read_done.notify_one();
    }

    pub fn ping(&self) {
        let _ = self.tx.try_send(Outbound::Ping);
    }

    /// Asks the writer to close the session; the first reason wins.
    pub fn close(&self, closing: Closing) {
        if self.closing.set(closing).is_ok() {
            self.close_signal.notify_one();
        }
    }

    pub fn closing(&self) -> Option<Closing> {
        self.closing.get().copied()
    }

    /// Resolves once [`close`](Self::close) was called.
    pub async fn closed(&self) -> Closing {
        loop {
            if let Some(c) = self.closing.get() {
                return *c;
            }
            self.close_signal.notified().await;
        }
    }

    pub fn touch(&self, now_ms: u64) {
        self.last_seen_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }
}

/// Changes in what this gateway hosts, to announce.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HostsDelta {
    pub rooms_added: Vec<String>,
    pub rooms_removed: Vec<String>,
    pub users_added: Vec<String>,
    pub users_removed: Vec<String>,
}

impl HostsDelta {
    pub fn is_empty(&self) -> bool {
        self.rooms_added.is_empty()
            && self.rooms_removed.is_empty()
            && self.users_added.is_empty()
            && self.users_removed.is_empty()
    }

    pub fn merge(&mut self, other: HostsDelta) {
        self.rooms_added.extend(other.rooms_added);
        self.rooms_removed.extend(other.rooms_removed);
        self.users_added.extend(other.users_added);
        self.users_removed.extend(other.users_removed);
    }

    pub fn into_announcement(self, gateway: &str) -> Announcement {
        Announcement::Hosts {
            gateway: gateway.into(),
            rooms_added: self.rooms_added,
            rooms_removed: self.rooms_removed,
            users_added: self.users_added,
            users_removed: self.users_removed,
        }
    }
}

#[derive(Default)]
pub struct Registry {
    index: RwLock<Index>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Index {
    sessions: HashMap<u64, Arc<SessionHandle>>,
    users: HashMap<Arc<str>, LocalUser>,
    /// room -> local users who are members
    rooms: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

struct LocalUser {
    sessions: Vec<Arc<SessionHandle>>,
    rooms: HashSet<Arc<str>>,
}

impl Index {
    fn add_member(&mut self, room: &str, user: &Arc<str>, delta: &mut HostsDelta) {
        let Some(local) = self.users.get_mut(user) else {
            return;
        };
        let room: Arc<str> = match self.rooms.get_key_value(room) {
            Some((r, _)) => r.clone(),
            None => {
                delta.rooms_added.push(room.to_owned());
                Arc::from(room)
            }
        };
        local.rooms.insert(room.clone());
        self.rooms.entry(room).or_default().insert(user.clone());
    }

    fn remove_member(&mut self, room: &str, user: &str, delta: &mut HostsDelta) {
        if let Some(local) = self.users.get_mut(user) {
            local.rooms.remove(room);
        }
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(user);
            if members.is_empty() {
                self.rooms.remove(room);
                delta.rooms_removed.push(room.to_owned());
            }
        }
    }
}

impl Registry {
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn len(&self) -> usize {
        self.index.read().expect("registry lock").sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a session; `rooms` are its user's rooms, read from the store.
    pub fn open(&self, session: Arc<SessionHandle>, rooms: impl IntoIterator<Item = String>) -> HostsDelta {
        let mut delta = HostsDelta::default();
        let mut index = self.index.write().expect("registry lock");
        index.sessions.insert(session.id, session.clone());
        let user = session.user.clone();
        match index.users.get_mut(&user) {
            Some(local) => local.sessions.push(session),
            None => {
                delta.users_added.push(user.to_string());
                index.users.insert(user.clone(), LocalUser { sessions: vec![session], rooms: HashSet::new() });
            }
        }
        for room in rooms {
            index.add_member(&room, &user, &mut delta);
        }
        delta
    }

    /// Removes a session; the user and their rooms go when it was their last.
    pub fn close(&self, id: u64) -> HostsDelta {
        let mut delta = HostsDelta::default();
        let mut index = self.index.write().expect("registry lock");
        let Some(session) = index.sessions.remove(&id) else {
            return delta;
        };
        let user = session.user.clone();
        let last = match index.users.get_mut(&user) {
            Some(local) => {
                local.sessions.retain(|s| s.id != id);
                local.sessions.is_empty()
            }
            None => false,
        };
        if last {
            let rooms: Vec<Arc<str>> =
                index.users.get(&user).map(|u| u.rooms.iter().cloned().collect()).unwrap_or_default();
            for room in rooms {
                index.remove_member(&room, &user, &mut delta);
            }
            index.users.remove(&user);
            delta.users_removed.push(user.to_string());
        }
        delta
    }

    /// A local user joined a room (no-op for users without a session here).
    pub fn join(&self, room: &str, user: &str) -> HostsDelta {
        let mut delta = HostsDelta::default();
        let mut index = self.index.write().expect("registry lock");
        if let Some((user, _)) = index.users.get_key_value(user) {
            let user = user.clone();
            index.add_member(room, &user, &mut delta);
        }
        delta
    }

    pub fn leave(&self, room: &str, user: &str) -> HostsDelta {
        let mut delta = HostsDelta::default();
        self.index.write().expect("registry lock").remove_member(room, user, &mut delta);
        delta
    }

    /// Makes sure the local parties of a DM room are indexed as its members:
    /// a DM room comes into being with its first message, and its members are
    /// in its id.
    pub fn ensure_dm(&self, room: &str, users: [&str; 2]) -> HostsDelta {
        {
            let index = self.index.read().expect("registry lock");
            let known = |u: &str| !index.users.contains_key(u) || index.rooms.get(room).is_some_and(|m| m.contains(u));
            if users.iter().all(|u| known(u)) {
                return HostsDelta::default();
            }
        }
        let mut delta = HostsDelta::default();
        for user in users {
            delta.merge(self.join(room, user));
        }
        delta
    }

    /// Everything this gateway hosts, as one delta, for a process that asks.
    pub fn snapshot(&self) -> HostsDelta {
        let index = self.index.read().expect("registry lock");
        HostsDelta {
            rooms_added: index.rooms.keys().map(|r| r.to_string()).collect(),
            users_added: index.users.keys().map(|u| u.to_string()).collect(),
            ..HostsDelta::default()
        }
    }

    /// Calls `f` for every session of every local member of `room`.
    pub fn for_room(&self, room: &str, mut f: impl FnMut(&Arc<SessionHandle>)) -> usize {
        let index = self.index.read().expect("registry lock");
        let mut n = 0;
        for user in index.rooms.get(room).into_iter().flatten() {
            for session in index.users.get(user).map(|u| u.sessions.as_slice()).unwrap_or_default() {
                f(session);
                n += 1;
            }
        }
        n
    }

    /// Calls `f` for every local session of `user`.
    pub fn for_user(&self, user: &str, f: impl FnMut(&Arc<SessionHandle>)) -> usize {
        let index = self.index.read().expect("registry lock");
        let sessions = index.users.get(user).map(|u| u.sessions.as_slice()).unwrap_or_default();
        sessions.iter().for_each(f);
        sessions.len()
    }

    /// Calls `f` for every session of `user` unless they are a local
    /// member of `room` (whose sessions [`for_room`](Self::for_room) reaches).
    pub fn for_user_outside(&self, room: &str, user: &str, mut f: impl FnMut(&Arc<SessionHandle>)) -> usize {
        let index = self.index.read().expect("registry lock");
        if index.rooms.get(room).is_some_and(|m| m.contains(user)) {
            return 0;
        }
        let sessions = index.users.get(user).map(|u| u.sessions.as_slice()).unwrap_or_default();
        sessions.iter().for_each(&mut f);
        sessions.len()
    }

    /// Closes with `bye token_revoked` the sessions of `user` whose token
    /// was issued before `before_ms` or has the id `jti`; returns how many.
    pub fn revoke(&self, user: &str, before_ms: u64, jti: Option<&str>) -> usize {
        let index = self.index.read().expect("registry lock");
        let sessions = index.users.get(user).map(|u| u.sessions.as_slice()).unwrap_or_default();
        let mut n = 0;
        for s in sessions {
            if s.token_issued_ms < before_ms || (jti.is_some() && s.token_id.as_deref() == jti) {
                s.close(Closing::Bye(ByeReason::TokenRevoked));
                n += 1;
            }
        }
        n
    }

    /// Closes with `bye disconnected` every session of `user`; returns how many.
    pub fn disconnect(&self, user: &str) -> usize {
        let index = self.index.read().expect("registry lock");
        let sessions = index.users.get(user).map(|u| u.sessions.as_slice()).unwrap_or_default();
        for s in sessions {
            s.close(Closing::Bye(ByeReason::Disconnected));
        }
        sessions.len()
    }

    /// Rooms with at least one local member.
    pub fn room_count(&self) -> usize {
        self.index.read().expect("registry lock").rooms.len()
    }

    /// Local users among `users`.
    pub fn is_local(&self, user: &str) -> bool {
        self.index.read().expect("registry lock").users.contains_key(user)
    }

    pub fn get(&self, id: u64) -> Option<Arc<SessionHandle>> {
        self.index.read().expect("registry lock").sessions.get(&id).cloned()
    }

    /// Every session, for the sweeper.
    pub fn sessions(&self) -> Vec<Arc<SessionHandle>> {
        self.index.read().expect("registry lock").sessions.values().cloned().collect()
    }

    /// Asks every session to close; returns how many there were.
    pub fn close_all(&self, reason: ByeReason) -> usize {
        let sessions = self.sessions();
        for s in &sessions {
            s.close(Closing::Bye(reason));
        }
        sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn session(reg: &Registry, user: &str) -> (Arc<SessionHandle>, outbound::Receiver) {
        session_with(reg, user, 2, 1 << 20)
    }

    fn session_with(
        reg: &Registry,
        user: &str,
        frames: usize,
        bytes: usize,
    ) -> (Arc<SessionHandle>, outbound::Receiver) {
        let (tx, rx) = outbound::channel(frames);
        let quota = Quota::per_second(NonZeroU32::new(20).unwrap());
        (Arc::new(SessionHandle::new(reg.next_id(), Arc::from(user), u64::MAX, quota, tx, bytes, 0)), rx)
    }

    fn users_in(reg: &Registry, room: &str) -> Vec<String> {
        let mut v = Vec::new();
        reg.for_room(room, |s| v.push(s.user.to_string()));
        v.sort();
        v
    }

    #[test]
    fn rooms_are_announced_when_their_first_local_member_arrives_and_last_leaves() {
        let reg = Registry::default();
        let (a1, _r1) = session(&reg, "alice");
        let (a2, _r2) = session(&reg, "alice");
        let d = reg.open(a1.clone(), ["r".to_string()]);
        assert_eq!(d.rooms_added, ["r"]);
        assert_eq!(d.users_added, ["alice"]);
        let d = reg.open(a2.clone(), ["r".to_string()]);
        assert!(d.is_empty(), "a second device changes nothing hosted: {d:?}");
        assert_eq!(users_in(&reg, "r"), ["alice", "alice"]);
        assert!(reg.close(a1.id).is_empty());
        let d = reg.close(a2.id);
        assert_eq!(d.rooms_removed, ["r"]);
        assert_eq!(d.users_removed, ["alice"]);
        assert!(reg.is_empty());
    }

    #[test]
    fn joins_and_leaves_of_local_users_update_the_index() {
        let reg = Registry::default();
        let (a, _ra) = session(&reg, "alice");
        reg.open(a, []);
        assert_eq!(reg.join("r", "alice").rooms_added, ["r"]);
        assert!(reg.join("r", "bob").is_empty(), "bob has no session here");
        assert_eq!(users_in(&reg, "r"), ["alice"]);
        assert_eq!(reg.leave("r", "alice").rooms_removed, ["r"]);
        assert!(users_in(&reg, "r").is_empty());
    }

    #[test]
    fn a_dm_room_indexes_its_local_parties() {
        let reg = Registry::default();
        let (b, _rb) = session(&reg, "bob");
        reg.open(b, []);
        let d = reg.ensure_dm("dm:alice:bob", ["alice", "bob"]);
        assert_eq!(d.rooms_added, ["dm:alice:bob"]);
        assert!(reg.ensure_dm("dm:alice:bob", ["alice", "bob"]).is_empty());
        assert_eq!(users_in(&reg, "dm:alice:bob"), ["bob"]);
    }

    #[test]
    fn an_invitee_is_reached_outside_the_room_once() {
        let reg = Registry::default();
        let (b, _rb) = session(&reg, "bob");
        reg.open(b, []);
        let mut reached = 0;
        assert_eq!(reg.for_user_outside("r", "bob", |_| reached += 1), 1);
        assert_eq!(reached, 1);
        reg.join("r", "bob");
        assert_eq!(reg.for_user_outside("r", "bob", |_| {}), 0, "a member is reached through the room");
        assert_eq!(reg.for_user_outside("r", "carol", |_| {}), 0, "no sessions here");
    }

    #[test]
    fn a_full_queue_closes_only_that_session_as_slow() {
        let reg = Registry::default();
        let (a, _keep) = session(&reg, "alice");
        assert!(a.send("1".into()) && a.send("2".into()));
        assert!(!a.send("3".into()));
        assert_eq!(a.closing(), Some(Closing::Bye(ByeReason::SlowConsumer)));
    }

    #[test]
    fn a_frame_that_would_pass_the_byte_bound_closes_the_session_as_slow() {
        let reg = Registry::default();
        let (a, _keep) = session_with(&reg, "alice", 100, 10);
        assert!(a.send("12345".into()) && a.send("1234".into()));
        assert_eq!(a.queued_bytes(), 9);
        assert!(!a.send("12".into()), "9 + 2 bytes pass the bound of 10");
        assert_eq!(a.queued_bytes(), 9, "a dropped frame is not counted");
        assert_eq!(a.closing(), Some(Closing::Bye(ByeReason::SlowConsumer)));
    }

    #[test]
    fn written_frames_release_their_bytes() {
        let reg = Registry::default();
        let (a, mut rx) = session_with(&reg, "alice", 100, 10);
        assert!(a.send("12345".into()) && a.send_large_reply("12345".into()));
        a.ping();
        assert_eq!(a.queued_bytes(), 10, "pings hold no bytes");
        let written: usize = std::iter::from_fn(|| rx.try_recv().ok()).map(|o| o.len()).sum();
        a.written(written);
        assert_eq!(a.queued_bytes(), 0);
        assert!(a.send("1234567890".into()), "the whole bound is free again");
        assert_eq!(a.closing(), None);
    }

    #[test]
    fn a_frame_refused_by_the_frame_bound_releases_its_bytes() {
        let reg = Registry::default();
        let (a, _keep) = session_with(&reg, "alice", 1, 100);
        assert!(a.send("12345".into()));
        assert!(!a.send("12345".into()));
        assert_eq!(a.queued_bytes(), 5);
    }

    #[tokio::test]
    async fn a_large_read_waits_until_the_reply_before_it_is_written() {
        let reg = Registry::default();
        let (a, mut rx) = session_with(&reg, "alice", 100, 1 << 20);
        a.large_read().await;
        let mut second = std::pin::pin!(a.large_read());
        assert!(futures_util::poll!(second.as_mut()).is_pending());
        assert!(a.send("event".into()));
        assert!(a.send_large_reply(Utf8Bytes::from(String::from("reply"))));
        assert!(futures_util::poll!(second.as_mut()).is_pending(), "queued is not written");
        let queued: Vec<Utf8Bytes> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|o| match o {
                Outbound::Frame(f) => f,
                Outbound::Ping => unreachable!(),
            })
            .collect();
        assert_eq!(
            queued.iter().map(|f| a.is_large_reply(f)).collect::<Vec<_>>(),
            [false, true],
            "the writer tells the reply"
        );
        a.large_read_done();
        second.await;
        let mut third = std::pin::pin!(a.large_read());
        assert!(futures_util::poll!(third.as_mut()).is_pending(), "one read at a time");
    }
}
