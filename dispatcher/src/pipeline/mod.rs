//! One batch of ingress records: consume -> dedupe -> persist -> ack -> fan out.
//!
//! * [`view`]: the read-ahead, every store read the batch's records need,
//!   sent together before any record is decided.
//! * [`decide`]: what each record does (dedupe by `(room, cid)`, seq
//!   assignment, membership, markers), a pure function of the records and
//!   that view.
//! * here: the loop around them. The batch's writes and the partitions'
//!   checkpoints are stored in one group commit; only then do replies and
//!   events leave, and only then are offsets committed, so an ack always
//!   names a stored message.
//!
//! Storing is pipelined ([`Store::stage`]): a batch is *staged* (readable
//! through the store) and the next one is decided on top of it while the
//! store makes it durable (the embedded store's fsync). Its replies and
//! events leave only once it is durable ([`Pipeline::settle`]), batch by
//! batch in the order they were staged. When a batch fails to become
//! durable, nothing of it nor of any batch staged after it leaves: they are
//! all decided again, from the store, once it works again.
//!
//! Records at offsets below a partition's stored checkpoint were applied
//! before (a redelivery after a crash or rebalance) and are skipped; a seq is
//! the record's offset, so reprocessing can never mint a second message.

pub mod blocks;
pub mod cids;
pub mod decide;
pub mod view;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_bus::{Push, Record};
use confab_protocol::message::cid_key;
use confab_protocol::record::Announcement;
use confab_protocol::{Audience, Command, Delivery, ErrorCode, IngressRecord, ProtocolError, Reply};
use confab_store::{Durable, Store, Write};
use tokio_util::sync::CancellationToken;

use crate::filter::{Candidate, Verdict, WhenDown};
use crate::metrics::Metrics;
use crate::routes::Routes;
use decide::{Decided, Effect, decide_with};
use view::{RoomState, View};

/// Most rooms whose state stays cached; past it the cache starts over.
const ROOM_CACHE: usize = 100_000;
/// How long a room's newest `msg` event is kept to hand to a gateway that
/// starts hosting the room (see [`Pipeline::learn`]): far longer than an
/// announcement takes to reach the dispatchers.
const NEWEST_FOR: Duration = Duration::from_secs(60);
/// Most rooms whose newest `msg` event is kept; past it the oldest go.
const NEWEST_CAP: usize = 20_000;
/// Most batches staged and not yet durable; the next waits for the oldest.
pub const MAX_IN_FLIGHT: usize = 4;

/// A batch readable through the store, waiting to be durable before its
/// replies and events leave.
struct InFlight {
    durable: sync_wrapper::SyncWrapper<Durable>,
    /// The records (filtered) and the ones the filter refused, to decide
    /// them again if the batch never becomes durable.
    records: Vec<Record>,
    refused: HashMap<usize, ProtocolError>,
    effects: Vec<Effect>,
    outcomes: Vec<(&'static str, &'static str)>,
    duplicates: u64,
    next_offsets: BTreeMap<u32, u64>,
    /// The cids it stored (`room`, `key`, hit).
    cids: Vec<(String, String, confab_store::CidHit)>,
}

pub struct Pipeline {
    store: Arc<dyn Store>,
    push: Arc<dyn Push>,
    metrics: Metrics,
    shutdown: CancellationToken,
    pub routes: Routes,
    /// Room states as of the last stored batch.
    rooms: HashMap<String, RoomState>,
    /// Members' tallies (`room`, `user`) as of the last stored batch, so a
    /// sender's count costs no store read per message; cleared with
    /// [`Pipeline::rooms`].
    tallies: HashMap<(String, String), confab_store::Tally>,
    /// The cids of rooms whose cids were read ([`cids`]); cleared with
    /// [`Pipeline::rooms`].
    cids: cids::Cids,
    /// Whether the recipient of a DM blocked its sender, as read
    /// ([`blocks`]); cleared with [`Pipeline::rooms`].
    blocks: blocks::Blocks,
    /// Next offset to apply, per partition, as staged.
    applied: HashMap<u32, u64>,
    /// Next offset to apply, per partition, as durably stored.
    durable_applied: HashMap<u32, u64>,
    /// Staged batches, oldest first, not yet settled.
    in_flight: VecDeque<InFlight>,
    /// While batches keep failing to become durable: how long to wait
    /// before deciding them again.
    redecide_backoff: Backoff,
    /// Rooms one user may be a member of.
    max_rooms_per_user: usize,
    /// How long messages are kept.
    retention: confab_protocol::Retention,
    /// Per room, its newest `msg` event pushed in the last [`NEWEST_FOR`],
    /// and when.
    newest: HashMap<String, (Instant, String)>,
    /// Asked about each new message before its batch is decided.
    filter: Option<crate::filter::Filter>,
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
            tallies: HashMap::new(),
            cids: cids::Cids::default(),
            blocks: blocks::Blocks::default(),
            applied: HashMap::new(),
            durable_applied: HashMap::new(),
            in_flight: VecDeque::new(),
            redecide_backoff: Backoff::new(),
            max_rooms_per_user: crate::MAX_ROOMS_PER_USER,
            retention: confab_protocol::Retention::default(),
            newest: HashMap::new(),
            filter: None,
        }
    }

    /// How long messages are kept (each message's expiry comes from it).
    pub fn with_retention(mut self, retention: confab_protocol::Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Asks `filter` about every new message before storing it.
    pub fn with_filter(mut self, filter: Option<crate::filter::Filter>) -> Self {
        self.filter = filter;
        self
    }

    /// Rooms (DMs included) one user may be a member of; by default as many
    /// as one `sync` may name.
    pub fn with_max_rooms_per_user(mut self, max: usize) -> Self {
        self.max_rooms_per_user = max;
        self
    }

    /// Takes the store's checkpoints as the truth of what is applied.
    pub fn resume_from(&mut self, checkpoints: Vec<(u32, u64)>) {
        self.applied = checkpoints.into_iter().collect();
        self.durable_applied = self.applied.clone();
    }

    /// Drops cached room state; it is read again from the store.
    pub fn forget_cached(&mut self) {
        self.rooms.clear();
        self.tallies.clear();
        self.cids.clear();
        self.blocks.clear();
        // Rooms of partitions this dispatcher lost are another's to tell.
        self.newest.clear();
    }

    /// Applies a gateway's announcement to the routes. A gateway that
    /// starts hosting a room (its first local member just connected) gets
    /// the room's newest `msg` event, when one was pushed lately.
    ///
    /// Why: the new session's `sync` is read after the gateway announced the
    /// room, but the announcement reaches the dispatchers a moment later. A
    /// message stored in between is in neither the `sync` reply nor pushed
    /// to that gateway (no route yet), and only the room's next message
    /// would show the gap with its `prev_seq`; in a room that falls quiet,
    /// never. The event sent again here comes after every such message, so
    /// the session appends it or sees the gap (`prev_seq` above what it
    /// holds) and syncs; a session that holds it already ignores it (its seq
    /// is not above the last it holds). Rooms the gateway hosted already get
    /// nothing: their events reached it.
    pub async fn learn(&mut self, announcement: &Announcement) {
        let fresh: Vec<Delivery> = match announcement {
            Announcement::Hosts { gateway, rooms_added, .. } => rooms_added
                .iter()
                .filter(|room| !self.routes.gateways_for_room(room).any(|g| **g == **gateway))
                .filter_map(|room| {
                    let (at, frame) = self.newest.get(room)?;
                    (at.elapsed() < NEWEST_FOR).then(|| Delivery::Room {
                        room: room.clone(),
                        audience: Audience::Members,
                        effect: None,
                        frame: frame.clone(),
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        self.routes.apply(announcement);
        if let (Announcement::Hosts { gateway, .. }, false) = (announcement, fresh.is_empty()) {
            self.metrics.route_catchups.inc_by(fresh.len() as u64);
            if let Err(e) = self.push.push(gateway, fresh).await {
                self.metrics.push_errors.inc();
                tracing::debug!(%gateway, error = %e, "push of the newest events to a new route dropped");
            }
        }
    }

    /// Forgets the newest `msg` events older than [`NEWEST_FOR`].
    pub fn prune_newest(&mut self) {
        self.newest.retain(|_, (at, _)| at.elapsed() < NEWEST_FOR);
    }

    fn keep_newest(&mut self, room: &str, frame: &str) {
        if self.newest.len() >= NEWEST_CAP && !self.newest.contains_key(room) {
            self.prune_newest();
            if self.newest.len() >= NEWEST_CAP {
                // A burst over that many rooms in a minute: start over.
                self.newest.clear();
            }
        }
        self.newest.insert(room.to_owned(), (Instant::now(), frame.to_owned()));
    }

    /// Processes a batch and returns the offsets to commit, or `None` when
    /// shutdown came while the store was failing (nothing is acked then).
    /// While the store fails, the batch is retried with backoff: no reply,
    /// event or offset commit leaves before its writes are stored. It
    /// settles every batch in flight, this one last.
    pub async fn process(&mut self, records: Vec<Record>) -> Option<Vec<(u32, u64)>> {
        self.stage(records).await?;
        self.settle_all().await
    }

    /// Batches staged and not yet settled.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Waits until the oldest batch in flight is durable (or failed to
    /// be); pending while none is. Cancel-safe: call [`Pipeline::settle`]
    /// with what it returns.
    pub async fn durable(&mut self) -> confab_store::Result<()> {
        match self.in_flight.front_mut() {
            Some(batch) => batch.durable.get_mut().as_mut().await,
            None => std::future::pending().await,
        }
    }

    /// Settles the oldest batch in flight with what [`Pipeline::durable`]
    /// returned: when durable, its replies and events leave and its offsets
    /// are returned to commit. When not, it and every batch staged after it
    /// are decided again (nothing of them has left) and there is nothing to
    /// commit yet. `None` when shutdown came while the store was failing.
    pub async fn settle(&mut self, durable: confab_store::Result<()>) -> Option<Vec<(u32, u64)>> {
        if let Err(e) = durable {
            self.metrics.store_retries.inc();
            tracing::warn!(error = %e, "a staged batch did not become durable; deciding it again, holding acks");
            let failed: Vec<InFlight> = self.in_flight.drain(..).collect();
            // What they decided is in the caches, and maybe still readable
            // in the store: start over from what is durable.
            self.rooms.clear();
            self.tallies.clear();
            self.cids.clear();
            self.applied = self.durable_applied.clone();
            self.redecide_backoff.wait(&self.shutdown).await?;
            for batch in failed {
                self.stage_filtered(batch.records, batch.refused).await?;
            }
            return Some(Vec::new());
        }
        let batch = self.in_flight.pop_front()?;
        self.redecide_backoff = Backoff::new();
        for (&partition, &next) in &batch.next_offsets {
            let applied = self.durable_applied.entry(partition).or_default();
            *applied = (*applied).max(next);
        }
        for (kind, outcome) in batch.outcomes {
            self.metrics.records.with_label_values(&[kind, outcome]).inc();
        }
        self.metrics.duplicates.inc_by(batch.duplicates);
        for (gateway, deliveries) in self.route(batch.effects) {
            self.metrics.push_batches.inc();
            self.metrics.push_batch_size.observe(deliveries.len() as f64);
            let _timer = self.metrics.push_duration.start_timer();
            if let Err(e) = self.push.push(&gateway, deliveries).await {
                self.metrics.push_errors.inc();
                tracing::debug!(%gateway, error = %e, "push dropped");
            }
        }
        Some(batch.next_offsets.into_iter().collect())
    }

    /// Settles every batch in flight; returns the offsets to commit.
    pub async fn settle_all(&mut self) -> Option<Vec<(u32, u64)>> {
        let mut offsets: BTreeMap<u32, u64> = BTreeMap::new();
        while !self.in_flight.is_empty() {
            let durable = self.durable().await;
            for (partition, next) in self.settle(durable).await? {
                let o = offsets.entry(partition).or_default();
                *o = (*o).max(next);
            }
        }
        Some(offsets.into_iter().collect())
    }

    /// Decides a batch on top of those in flight and stages it: once this
    /// returns, its writes are readable and the next batch can be decided.
    /// `None` when shutdown came while the store was failing.
    pub async fn stage(&mut self, mut records: Vec<Record>) -> Option<()> {
        let refused = self.filter(&mut records).await;
        self.stage_filtered(records, refused).await
    }

    async fn stage_filtered(&mut self, records: Vec<Record>, refused: HashMap<usize, ProtocolError>) -> Option<()> {
        self.metrics.batch_size.observe(records.len() as f64);
        let _timer = self.metrics.batch_duration.start_timer();
        if self.rooms.len() > ROOM_CACHE {
            self.rooms.clear();
        }
        if self.tallies.len() > ROOM_CACHE {
            self.tallies.clear();
        }
        let mut next_offsets: BTreeMap<u32, u64> = BTreeMap::new();
        for r in &records {
            let next = next_offsets.entry(r.partition).or_default();
            *next = (*next).max(r.offset + 1);
        }
        let fresh: Vec<&Record> = records
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                r.offset >= self.applied.get(&r.partition).copied().unwrap_or(0) && !refused.contains_key(i)
            })
            .map(|(_, r)| r)
            .collect();
        let unread = self.cids.unread(fresh.iter().filter_map(|r| match &r.record.cmd {
            Command::Send { .. } => Some(r.record.room.as_str()),
            _ => None,
        }));
        if !unread.is_empty() {
            // A store may show only what is durable: the cids of batches in
            // flight are added to what it shows.
            let pending: Vec<(String, String, confab_store::CidHit)> = self
                .in_flight
                .iter()
                .flat_map(|b| b.cids.iter())
                .filter(|(room, _, _)| unread.binary_search(room).is_ok())
                .cloned()
                .collect();
            self.cids.read(&*self.store, unread, pending).await;
        }
        for r in &fresh {
            if let Command::BlockChanged { user, other } = &r.record.cmd {
                self.blocks.forget(user, other);
            }
        }
        let mut backoff = Backoff::new();
        let mut view = loop {
            match View::read(&*self.store, &self.rooms, &self.tallies, &self.cids, &self.blocks, &fresh).await {
                Ok(view) => break view,
                Err(e) => {
                    self.metrics.store_retries.inc();
                    tracing::warn!(error = %e, "store read failed while reading ahead for a batch; retrying");
                    backoff.wait(&self.shutdown).await?;
                }
            }
        };
        let blocks_read = std::mem::take(&mut view.blocks_read);
        let Decided { mut writes, mut effects, rooms, mut outcomes, duplicates, tallies } =
            decide_with(view, &fresh, self.max_rooms_per_user, self.retention);
        for (i, error) in &refused {
            outcomes.push(("send", error.code.as_str()));
            effects.extend(refusal(&records[*i].record, error.clone()));
        }
        let cids: Vec<(String, String, confab_store::CidHit)> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Message(m) if !m.cid.is_empty() => {
                    let hit = confab_store::CidHit { seq: m.seq, msg_id: m.msg_id.clone(), ts: m.ts };
                    Some((m.room.clone(), cid_key(&m.from, &m.cid), hit))
                }
                _ => None,
            })
            .collect();
        // Remembered before the batch is staged (it is staged, whatever it
        // takes, before the next batch is decided); on a store without an
        // index of every cid, the memory says which to index.
        let index = self.cids.stored(self.store.cid_window(), cids.iter().cloned());
        if !self.store.indexes_cids() {
            writes.extend(index.into_iter().map(|(room, key, hit)| Write::CidIndex { room, key, hit }));
        }
        writes
            .extend(next_offsets.iter().map(|(&partition, &next_offset)| Write::Checkpoint { partition, next_offset }));
        // The same batch again, never a new decision: on a CQL store a failed
        // attempt may have stored part of it, and rewriting the same writes
        // is what converges (see `Store::apply`).
        let durable = loop {
            match self.store.stage(writes.clone()).await {
                Ok(durable) => break durable,
                Err(e) => {
                    self.metrics.store_retries.inc();
                    tracing::warn!(error = %e, "group commit failed; holding acks");
                    backoff.wait(&self.shutdown).await?;
                }
            }
        };
        // The next batch is decided on top of this one.
        self.applied.extend(next_offsets.iter().map(|(p, o)| (*p, *o)));
        self.blocks.read(blocks_read);
        self.rooms.extend(rooms);
        self.tallies.extend(tallies);
        let durable = sync_wrapper::SyncWrapper::new(durable);
        let batch = InFlight { durable, records, refused, effects, outcomes, duplicates, next_offsets, cids };
        self.in_flight.push_back(batch);
        Some(())
    }

    /// Asks the filter about the batch's new messages, rewrites the texts it
    /// rewrites, and returns the records (by index) it refused, with the
    /// error their senders get.
    async fn filter(&self, records: &mut [Record]) -> HashMap<usize, ProtocolError> {
        let mut refused = HashMap::new();
        let Some(filter) = &self.filter else { return refused };
        let asked: Vec<usize> = (0..records.len())
            .filter(|&i| {
                let r = &records[i];
                matches!(r.record.cmd, Command::Send { .. })
                    && r.offset >= self.applied.get(&r.partition).copied().unwrap_or(0)
            })
            .collect();
        if asked.is_empty() {
            return refused;
        }
        let candidates = asked
            .iter()
            .filter_map(|&i| match &records[i].record.cmd {
                Command::Send { from, text, cid, .. } => Some(Candidate {
                    room: records[i].record.room.clone(),
                    from: from.clone(),
                    text: text.clone(),
                    cid: cid.clone(),
                }),
                _ => None,
            })
            .collect();
        let verdicts = filter.check_all(candidates).await;
        for (i, verdict) in asked.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Accept => {}
                Verdict::Rewrite(new) => {
                    if let Command::Send { text, .. } = &mut records[i].record.cmd {
                        *text = new;
                    }
                }
                Verdict::Reject(reason) => {
                    refused.insert(i, ProtocolError::new(ErrorCode::Forbidden, reason));
                }
                Verdict::Down(_) if filter.when_down() == WhenDown::Allow => {}
                Verdict::Down(_) => {
                    let e = ProtocolError::unavailable("the message filter is unavailable; try again");
                    refused.insert(i, e);
                }
            }
        }
        refused
    }

    /// Learns the batch's routes and turns its events and replies into
    /// deliveries per gateway, in record order.
    fn route(&mut self, effects: Vec<Effect>) -> BTreeMap<Arc<str>, Vec<Delivery>> {
        let mut out: BTreeMap<Arc<str>, Vec<Delivery>> = BTreeMap::new();
        for effect in effects {
            match effect {
                Effect::RouteToGateway { room, gateway } => self.routes.add_room(&room, &gateway),
                Effect::RouteToUsers { room, users } => {
                    let users: Vec<&str> = users.iter().map(String::as_str).collect();
                    self.routes.add_room_for_users(&room, &users);
                }
                Effect::Event { room, audience, effect, frame } => {
                    if is_msg(&frame) {
                        self.keep_newest(&room, &frame);
                    }
                    let mut n = 0;
                    // An invitation also reaches the invitee, not a member yet.
                    let also: Vec<Arc<str>> = match &audience {
                        Audience::MembersAnd(user) => self
                            .routes
                            .gateways_for_user(user)
                            .filter(|g| !self.routes.gateways_for_room(&room).any(|r| r == *g))
                            .cloned()
                            .collect(),
                        _ => Vec::new(),
                    };
                    for gateway in self.routes.gateways_for_room(&room).chain(also.iter()) {
                        n += 1;
                        let delivery = Delivery::Room {
                            room: room.clone(),
                            audience: audience.clone(),
                            effect: effect.clone(),
                            frame: frame.clone(),
                        };
                        out.entry(gateway.clone()).or_default().push(delivery);
                    }
                    self.metrics.fanout.observe(f64::from(n));
                }
                Effect::Reply { gateway, delivery } => match out.get_mut(gateway.as_str()) {
                    Some(deliveries) => deliveries.push(delivery),
                    None => {
                        out.insert(Arc::from(gateway), vec![delivery]);
                    }
                },
            }
        }
        out
    }
}

/// Whether an encoded event is a `msg` (its tag comes first).
fn is_msg(frame: &str) -> bool {
    frame.starts_with(r#"{"ev":"msg","#)
}

/// The error reply to a record refused before it was decided.
fn refusal(record: &IngressRecord, error: ProtocolError) -> Option<Effect> {
    let origin = record.origin.as_ref()?;
    let reply = Reply { re: origin.re.clone(), ..Reply::error(None, error) };
    let delivery = Delivery::Reply { session: origin.session, t0: origin.t0, frame: reply.encode() };
    Some(Effect::Reply { gateway: origin.gateway.clone(), delivery })
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
