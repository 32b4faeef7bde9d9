//! One batch of ingress records: consume -> dedupe -> persist -> ack -> fan out.
//!
//! Each record is decided against the room's state (cached from the store,
//! overlaid with what earlier records of the same batch did), its writes are
//! collected into one [`WriteBatch`] together with the partitions'
//! checkpoints, and that batch is stored in one group commit. Only then do
//! replies and events leave, and only then are offsets committed, so an ack
//! always names a stored message.
//!
//! Records at offsets below a partition's stored checkpoint were applied
//! before (a redelivery after a crash or rebalance) and are skipped; a seq is
//! the record's offset, so reprocessing can never mint a second message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use confab_bus::{Push, Record};
use confab_protocol::event::ReplyBody;
use confab_protocol::message::{msg_id, seq_of};
use confab_protocol::validate::dm_members;
use confab_protocol::{
    Audience, Command, Delivery, Event, IngressRecord, MemberAction, Message, ProtocolError, Reply, RoomEffect,
};
use confab_store::{CidHit, Store, Write, WriteBatch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::routes::Routes;

/// Most rooms whose state stays cached; past it the cache starts over.
const ROOM_CACHE: usize = 100_000;
/// Store reads in flight at once while reading ahead for a batch.
const READ_AHEAD: usize = 64;

#[derive(Debug, Clone, Copy, Default)]
struct RoomState {
    last_seq: u64,
    exists: bool,
}

pub struct Pipeline {
    store: Arc<dyn Store>,
    push: Arc<dyn Push>,
    metrics: Metrics,
    shutdown: CancellationToken,
    pub routes: Routes,
    rooms: HashMap<String, RoomState>,
    /// Next offset to apply, per partition, as stored.
    applied: HashMap<u32, u64>,
}

/// What one batch decided, before it is stored.
#[derive(Default)]
struct Decisions {
    writes: WriteBatch,
    members: HashMap<(String, String), bool>,
    cids: HashMap<(String, String), CidHit>,
    reads: HashMap<(String, String), u64>,
    /// What the store held before the batch, read ahead for all its records
    /// at once; `members` and `cids` above (the batch's own effects) come first.
    stored_members: HashMap<(String, String), bool>,
    stored_cids: HashMap<(String, String), Option<CidHit>>,
    /// Deliveries per gateway, in record order.
    out: BTreeMap<Arc<str>, Vec<Delivery>>,
    next_offsets: BTreeMap<u32, u64>,
}

impl Pipeline {
    pub fn new(store: Arc<dyn Store>, push: Arc<dyn Push>, metrics: Metrics, shutdown: CancellationToken) -> Self {
        Pipeline {
            store,
            push,
            metrics,
            shutdown,
            routes: Routes::default(),
            rooms: HashMap::new(),
            applied: HashMap::new(),
        }
    }

    /// Takes the store's checkpoints as the truth of what is applied.
    pub fn resume_from(&mut self, checkpoints: Vec<(u32, u64)>) {
        self.applied = checkpoints.into_iter().collect();
    }

    /// Drops cached room state; it is read again from the store.
    pub fn forget_cached(&mut self) {
        self.rooms.clear();
    }

    /// Processes a batch and returns the offsets to commit, or `None` when
    /// shutdown came while the store was failing (nothing is acked then).
    /// While the store fails, the batch is retried whole with backoff: no
    /// reply, event or offset commit leaves before its writes are stored.
    pub async fn process(&mut self, records: Vec<Record>) -> Option<Vec<(u32, u64)>> {
        self.metrics.batch_size.observe(records.len() as f64);
        let _timer = self.metrics.batch_duration.start_timer();
        if self.rooms.len() > ROOM_CACHE {
            self.rooms.clear();
        }
        let mut backoff = Backoff::new();
        let d = loop {
            match self.decide_batch(&records).await {
                Ok(d) => break d,
                Err(e) => {
                    // The cache may hold decisions of the failed attempt.
                    self.rooms.clear();
                    self.metrics.store_retries.inc();
                    tracing::warn!(error = %e, "store read failed while deciding a batch; retrying");
                    backoff.wait(&self.shutdown).await?;
                }
            }
        };
        while let Err(e) = self.store.apply(d.writes.clone()).await {
            self.metrics.store_retries.inc();
            tracing::warn!(error = %e, "group commit failed; holding acks");
            backoff.wait(&self.shutdown).await?;
        }
        self.applied.extend(d.next_offsets.iter().map(|(p, o)| (*p, *o)));
        for (gateway, batch) in d.out {
            self.metrics.push_batches.inc();
            self.metrics.push_batch_size.observe(batch.len() as f64);
            let _timer = self.metrics.push_duration.start_timer();
            if let Err(e) = self.push.push(&gateway, batch).await {
                self.metrics.push_errors.inc();
                tracing::debug!(%gateway, error = %e, "push dropped");
            }
        }
        Some(d.next_offsets.into_iter().collect())
    }

    async fn decide_batch(&mut self, records: &[Record]) -> Result<Decisions, confab_store::Error> {
        let mut d = Decisions::default();
        self.read_ahead(records, &mut d).await?;
        for r in records {
            d.next_offsets.insert(r.partition, r.offset + 1);
            if r.offset < self.applied.get(&r.partition).copied().unwrap_or(0) {
                continue;
            }
            let kind = command_name(&r.record.cmd);
            let outcome = match self.decide(r, &mut d).await {
                Ok(reply) => {
                    self.reply(&r.record, reply, &mut d);
                    "ok"
                }
                Err(Failure::Client(e)) => {
                    let outcome = e.code.as_str();
                    self.reply(&r.record, Reply::error(None, e), &mut d);
                    outcome
                }
                Err(Failure::Store(e)) => return Err(e),
            };
            self.metrics.records.with_label_values(&[kind, outcome]).inc();
        }
        for (&partition, &next_offset) in &d.next_offsets {
            d.writes.push(Write::Checkpoint { partition, next_offset });
        }
        Ok(d)
    }

    /// Issues the store reads the batch's records will need all together, so
    /// a batch costs about one store round trip instead of one or two per
    /// record: records are decided one after another, and on a CQL store each
    /// read is a network round trip. Deciding then reads the same values it
    /// would have read lazily (nothing is written before the batch is decided).
    async fn read_ahead(&mut self, records: &[Record], d: &mut Decisions) -> Result<(), confab_store::Error> {
        use futures_util::{StreamExt, TryStreamExt};
        let mut rooms: Vec<String> = Vec::new();
        let mut members: Vec<(String, String)> = Vec::new();
        let mut cids: Vec<(String, String)> = Vec::new();
        for r in records {
            if r.offset < self.applied.get(&r.partition).copied().unwrap_or(0) {
                continue;
            }
            let room = r.record.room.as_str();
            if !self.rooms.contains_key(room) && !rooms.iter().any(|x| x == room) {
                rooms.push(room.to_owned());
            }
            let member = match &r.record.cmd {
                Command::Send { from, cid, .. } => {
                    cids.push((room.to_owned(), cid.clone()));
                    dm_members(room).is_none().then_some(from)
                }
                Command::Join { user } | Command::Leave { user } | Command::Read { user, .. } => Some(user),
                Command::Typing { user } => Some(user),
            };
            if let Some(user) = member {
                members.push((room.to_owned(), user.clone()));
            }
        }
        members.sort_unstable();
        members.dedup();
        cids.sort_unstable();
        cids.dedup();
        let store = &self.store;
        let states: Vec<(String, RoomState)> = futures_util::stream::iter(rooms.into_iter().map(|room| {
            let store = store.clone();
            async move {
                let state = match store.room(&room).await? {
                    Some(meta) => RoomState { last_seq: meta.last_seq, exists: true },
                    None => RoomState::default(),
                };
                Ok::<_, confab_store::Error>((room, state))
            }
        }))
        .buffer_unordered(READ_AHEAD)
        .try_collect()
        .await?;
        let stored_members: Vec<((String, String), bool)> =
            futures_util::stream::iter(members.into_iter().map(|key| {
                let store = store.clone();
                async move {
                    let member = store.is_member(&key.0, &key.1).await?;
                    Ok::<_, confab_store::Error>((key, member))
                }
            }))
            .buffer_unordered(READ_AHEAD)
            .try_collect()
            .await?;
        let stored_cids: Vec<((String, String), Option<CidHit>)> =
            futures_util::stream::iter(cids.into_iter().map(|key| {
                let store = store.clone();
                async move {
                    let hit = store.cid(&key.0, &key.1).await?;
                    Ok::<_, confab_store::Error>((key, hit))
                }
            }))
            .buffer_unordered(READ_AHEAD)
            .try_collect()
            .await?;
        self.rooms.extend(states);
        d.stored_members.extend(stored_members);
        d.stored_cids.extend(stored_cids);
        Ok(())
    }

    async fn decide(&mut self, r: &Record, d: &mut Decisions) -> Result<Reply, Failure> {
        let rec = &r.record;
        let room = rec.room.as_str();
        match &rec.cmd {
            Command::Send { from, text, cid } => {
                let dm = dm_members(room);
                let state = self.room_state(room).await?;
                match dm {
                    Some((a, b)) if from != a && from != b => {
                        return Err(ProtocolError::not_member(room).into());
                    }
                    Some((a, b)) if !state.exists => {
                        for user in [a, b] {
                            d.writes.push(Write::Join { room: room.into(), user: user.into(), at: seq_of(r.offset) });
                            d.members.insert((room.into(), user.into()), true);
                        }
                        self.routes.add_room_for_users(room, &[a, b]);
                        self.rooms.insert(room.into(), RoomState { exists: true, ..state });
                    }
                    Some(_) => {}
                    None => {
                        if !self.is_member(room, from, d).await? {
                            return Err(ProtocolError::not_member(room).into());
                        }
                    }
                }
                if let Some(hit) = self.cid(room, cid, d).await? {
                    self.metrics.duplicates.inc();
                    return Ok(send_reply(room, hit));
                }
                let state = self.rooms.get_mut(room).expect("room state was loaded");
                let message = Message {
                    room: room.into(),
                    seq: seq_of(r.offset),
                    msg_id: msg_id(r.partition, r.offset),
                    from: from.clone(),
                    text: text.clone(),
                    ts: rec.ts,
                    cid: cid.clone(),
                };
                if message.seq <= state.last_seq {
                    // Only possible if the partition count changed under a
                    // live store, which bind_partitions refuses.
                    tracing::error!(room, seq = message.seq, last = state.last_seq, "seq would go backwards");
                }
                let prev_seq = std::mem::replace(&mut state.last_seq, message.seq);
                let hit = CidHit { seq: message.seq, msg_id: message.msg_id.clone(), ts: message.ts };
                d.cids.insert((room.into(), cid.clone()), hit.clone());
                d.writes.push(Write::Message(message.clone()));
                let frame = Event::Msg { message, prev_seq }.encode();
                self.event(room, Audience::Members, None, frame, d);
                Ok(send_reply(room, hit))
            }
            Command::Join { user } => {
                if dm_members(room).is_some() {
                    return Err(ProtocolError::bad_request("direct-message rooms cannot be joined").into());
                }
                let state = self.room_state(room).await?;
                if !self.is_member(room, user, d).await? {
                    d.writes.push(Write::Join { room: room.into(), user: user.clone(), at: seq_of(r.offset) });
                    d.members.insert((room.into(), user.clone()), true);
                    self.rooms.insert(room.into(), RoomState { exists: true, ..state });
                    // The joiner's gateways must see the join: the origin's
                    // from the record, the user's other devices' from the
                    // announcements.
                    if let Some(origin) = &rec.origin {
                        self.routes.add_room(room, &origin.gateway);
                    }
                    self.routes.add_room_for_users(room, &[user.as_str()]);
                    let frame =
                        Event::Member { room: room.into(), user: user.clone(), action: MemberAction::Join }.encode();
                    self.event(room, Audience::Members, Some(RoomEffect::Joined(user.clone())), frame, d);
                }
                Ok(Reply::ok(None, ReplyBody::Join { room: room.into(), last_seq: state.last_seq }))
            }
            Command::Leave { user } => {
                if !self.is_member(room, user, d).await? {
                    return Err(ProtocolError::not_member(room).into());
                }
                d.writes.push(Write::Leave { room: room.into(), user: user.clone(), at: seq_of(r.offset) });
                d.members.insert((room.into(), user.clone()), false);
                let frame =
                    Event::Member { room: room.into(), user: user.clone(), action: MemberAction::Leave }.encode();
                self.event(room, Audience::Members, Some(RoomEffect::Left(user.clone())), frame, d);
                Ok(Reply::empty(None))
            }
            Command::Read { user, seq } => {
                if !self.is_member(room, user, d).await? {
                    return Err(ProtocolError::not_member(room).into());
                }
                let last_seq = self.room_state(room).await?.last_seq;
                let seq = (*seq).min(last_seq);
                let key = (room.to_owned(), user.clone());
                let current = match d.reads.get(&key) {
                    Some(s) => *s,
                    None => self.store.read_marker(room, user).await?,
                };
                if seq > current {
                    d.reads.insert(key, seq);
                    d.writes.push(Write::Read { room: room.into(), user: user.clone(), seq, at: seq_of(r.offset) });
                    let frame = Event::Read { room: room.into(), user: user.clone(), seq }.encode();
                    self.event(room, Audience::Members, None, frame, d);
                }
                Ok(Reply::empty(None))
            }
            Command::Typing { user } => {
                if !self.is_member(room, user, d).await? {
                    return Err(ProtocolError::not_member(room).into());
                }
                let frame = Event::Typing { room: room.into(), user: user.clone() }.encode();
                self.event(room, Audience::MembersExcept(user.clone()), None, frame, d);
                Ok(Reply::empty(None))
            }
        }
    }

    fn reply(&self, rec: &IngressRecord, reply: Reply, d: &mut Decisions) {
        let Some(origin) = &rec.origin else { return };
        let reply = Reply { re: origin.re.clone(), ..reply };
        let delivery = Delivery::Reply { session: origin.session, t0: origin.t0, frame: reply.encode() };
        let gateway: Arc<str> = match d.out.keys().find(|g| ***g == *origin.gateway) {
            Some(g) => g.clone(),
            None => Arc::from(origin.gateway.as_str()),
        };
        d.out.entry(gateway).or_default().push(delivery);
    }

    fn event(&self, room: &str, audience: Audience, effect: Option<RoomEffect>, frame: String, d: &mut Decisions) {
        let mut n = 0;
        for gateway in self.routes.gateways_for_room(room) {
            n += 1;
            let delivery = Delivery::Room {
                room: room.into(),
                audience: audience.clone(),
                effect: effect.clone(),
                frame: frame.clone(),
            };
            d.out.entry(gateway.clone()).or_default().push(delivery);
        }
        self.metrics.fanout.observe(f64::from(n));
    }

    async fn room_state(&mut self, room: &str) -> Result<RoomState, Failure> {
        if let Some(s) = self.rooms.get(room) {
            return Ok(*s);
        }
        let state = match self.store.room(room).await? {
            Some(meta) => RoomState { last_seq: meta.last_seq, exists: true },
            None => RoomState::default(),
        };
        self.rooms.insert(room.to_owned(), state);
        Ok(state)
    }

    async fn is_member(&self, room: &str, user: &str, d: &Decisions) -> Result<bool, Failure> {
        let key = (room.to_owned(), user.to_owned());
        if let Some(m) = d.members.get(&key).or_else(|| d.stored_members.get(&key)) {
            return Ok(*m);
        }
        Ok(self.store.is_member(room, user).await?)
    }

    async fn cid(&self, room: &str, cid: &str, d: &Decisions) -> Result<Option<CidHit>, Failure> {
        let key = (room.to_owned(), cid.to_owned());
        if let Some(hit) = d.cids.get(&key) {
            return Ok(Some(hit.clone()));
        }
        if let Some(stored) = d.stored_cids.get(&key) {
            return Ok(stored.clone());
        }
        Ok(self.store.cid(room, cid).await?)
    }
}

fn send_reply(room: &str, hit: CidHit) -> Reply {
    Reply::ok(None, ReplyBody::Send { room: room.into(), seq: hit.seq, msg_id: hit.msg_id, ts: hit.ts })
}

fn command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::Send { .. } => "send",
        Command::Join { .. } => "join",
        Command::Leave { .. } => "leave",
        Command::Read { .. } => "read",
        Command::Typing { .. } => "typing",
    }
}

enum Failure {
    Client(ProtocolError),
    Store(confab_store::Error),
}

impl From<ProtocolError> for Failure {
    fn from(e: ProtocolError) -> Self {
        Failure::Client(e)
    }
}

impl From<confab_store::Error> for Failure {
    fn from(e: confab_store::Error) -> Self {
        Failure::Store(e)
    }
}

/// Exponential backoff for retries against a failing store, cut short by shutdown.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(50))
    }

    /// Waits one step; `None` when shutdown came first.
    async fn wait(&mut self, shutdown: &CancellationToken) -> Option<()> {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(self.0) => {}
        }
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        Some(())
    }
}
