//! One client request: reads are answered from the store here; writes become
//! ingress records on the bus, and their reply comes back from the
//! dispatcher once stored (see `delivery`).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use confab_protocol::event::{ReplyBody, SyncRoom};
use confab_protocol::request::{DEFAULT_HISTORY_LIMIT, DEFAULT_SYNC_LIMIT, Target};
use confab_protocol::validate::{dm_members, dm_room};
use confab_protocol::{
    Act, Command, ErrorCode, IngressRecord, Message, Op, Origin, ProtocolError, Reply, Request, RequestId,
};

use crate::Gateway;
use crate::registry::SessionHandle;

/// What became of a request.
pub enum Outcome {
    /// Answer now.
    Reply(Reply),
    /// The dispatcher answers once the write is stored.
    Pending,
}

pub fn store_error(e: confab_store::Error) -> ProtocolError {
    tracing::warn!(error = %e, "store read failed");
    ProtocolError::unavailable("the store is unavailable; retry shortly")
}

/// Messages a `sync` reads from the store at a time.
const SYNC_CHUNK: u32 = 100;

/// What a reply may still hold: encoded bytes and messages. The first
/// message always fits, so a client always makes progress.
pub(crate) struct Budget {
    bytes_left: usize,
    messages_left: u32,
    taken: u32,
    spent: bool,
}

impl Budget {
    fn new(bytes: usize, messages: u32) -> Budget {
        Budget { bytes_left: bytes, messages_left: messages, taken: 0, spent: false }
    }

    /// Takes `m` when it fits, as its encoded JSON (escapes included)
    /// and a comma; `false`, and the budget is spent, when it does not.
    pub(crate) fn take(&mut self, m: &Message) -> bool {
        let size = encoded_len(m) + 1;
        if self.messages_left == 0 || (self.taken > 0 && size > self.bytes_left) {
            self.spent = true;
            return false;
        }
        self.bytes_left = self.bytes_left.saturating_sub(size);
        self.messages_left -= 1;
        self.taken += 1;
        true
    }

    /// A room's own part of the reply: its key and `{"messages":[],"more":false}`.
    fn room(&mut self, room: &str) {
        self.bytes_left = self.bytes_left.saturating_sub(room.len() + 36);
    }

    fn messages_left(&self) -> u32 {
        self.messages_left
    }

    fn spent(&self) -> bool {
        self.spent || self.messages_left == 0
    }
}

/// The length of `m` encoded as JSON, without building the encoding.
fn encoded_len(m: &Message) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, m).expect("a message always serializes");
    count.0
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Gateway {
    pub async fn handle(&self, session: &SessionHandle, req: Request) -> Outcome {
        let op = req.op.name();
        let id = req.id.clone();
        let outcome = match self.execute(session, req).await {
            Ok(Some(body)) => Outcome::Reply(Reply::ok(id, body)),
            Ok(None) => Outcome::Pending,
            Err(e) => Outcome::Reply(Reply::error(id, e)),
        };
        let label = match &outcome {
            Outcome::Pending => "pending",
            Outcome::Reply(Reply { ok: true, .. }) => "ok",
            Outcome::Reply(Reply { body: ReplyBody::Error { error }, .. }) => error.code.as_str(),
            Outcome::Reply(_) => "error",
        };
        self.inner.metrics.requests.with_label_values(&[op, label]).inc();
        outcome
    }

    async fn execute(&self, s: &SessionHandle, req: Request) -> Result<Option<ReplyBody>, ProtocolError> {
        let user = &*s.user;
        let store = &self.inner.store;
        match req.op {
            Op::Ping => Ok(Some(ReplyBody::Empty {})),
            Op::Rooms => {
                let rooms = self.rooms_with_invitations(user).await?;
                Ok(Some(ReplyBody::Rooms { rooms }))
            }
            Op::RoomInfo { room } => self.room_info(room, user).await.map(Some),
            Op::Members { room, after, limit } => self.members(&room, user, after, limit).await.map(Some),
            Op::Directory { query, after, limit } => self.directory(query, after, limit).await.map(Some),
            Op::Profile { display_name, avatar } => self.set_profile(user, display_name, avatar).await.map(Some),
            Op::Users { users } => {
                let users = self.inner.store.profiles(&users).await.map_err(store_error)?;
                Ok(Some(ReplyBody::Users { users }))
            }
            Op::ContactAdd { user: other } => self.contact_add(user, &other).await.map(Some),
            Op::ContactRemove { user: other } => self.contact_remove(user, &other).await.map(Some),
            Op::Contacts => self.contacts(user).await.map(Some),
            Op::Block { user: other } => self.block(user, &other).await.map(Some),
            Op::Unblock { user: other } => self.unblock(user, &other).await.map(Some),
            Op::Blocks => self.blocks(user).await.map(Some),
            Op::Create { room, visibility, name, topic } => {
                let cmd = Command::Create {
                    user: user.into(),
                    visibility: visibility.unwrap_or_default(),
                    name: name.unwrap_or_default(),
                    topic: topic.unwrap_or_default(),
                };
                self.produce(s, req.id, room, cmd, false).await
            }
            Op::UpdateRoom { room, name, topic, visibility, retention_days } => {
                let cmd = Command::UpdateRoom { by: user.into(), name, topic, visibility, retention_days };
                self.produce(s, req.id, room, cmd, false).await
            }
            Op::Notify { room, level } => {
                self.check_dm(&room, user).await?;
                self.produce(s, req.id, room, Command::Notify { user: user.into(), level }, false).await
            }
            Op::Invite { room, user: target } => {
                // An invitation names an account: one for a name nobody
                // holds would pass to whoever registers it.
                self.check_user(&target).await?;
                self.moderate(s, req.id, room, user, target, Act::Invite).await
            }
            Op::Kick { room, user: target, reason } => {
                self.moderate(s, req.id, room, user, target, Act::Kick { reason }).await
            }
            Op::Ban { room, user: target, reason } => {
                self.moderate(s, req.id, room, user, target, Act::Ban { reason }).await
            }
            Op::Unban { room, user: target } => self.moderate(s, req.id, room, user, target, Act::Unban).await,
            Op::Mute { room, user: target, until } => {
                self.moderate(s, req.id, room, user, target, Act::Mute { until }).await
            }
            Op::Unmute { room, user: target } => self.moderate(s, req.id, room, user, target, Act::Unmute).await,
            Op::SetRole { room, user: target, role } => {
                self.moderate(s, req.id, room, user, target, Act::SetRole { role }).await
            }
            Op::History { room, before, limit } => {
                let (messages, more) = self.history(user, &room, before, limit).await?;
                Ok(Some(ReplyBody::Messages { messages, more: more.then_some(true) }))
            }
            Op::Sync { rooms, limit, changes } => {
                let limit = limit.unwrap_or(DEFAULT_SYNC_LIMIT);
                let rooms = self.sync(user, rooms, limit, changes.unwrap_or_default()).await?;
                Ok(Some(ReplyBody::Sync { rooms }))
            }
            op @ (Op::Edit { .. } | Op::Edits { .. } | Op::Delete { .. } | Op::React { .. }) => {
                self.lifecycle(s, req.id, op).await.expect("a lifecycle op")
            }
            Op::Presence { room } => {
                self.check_member(&room, user).await?;
                if dm_members(&room).is_some() && !store.is_member(&room, user).await.map_err(store_error)? {
                    // Online state is for those who share a room: a DM counts
                    // from its first message, not from naming its id.
                    return Err(ProtocolError::not_member(&room));
                }
                let members = match dm_members(&room) {
                    Some((a, b)) => vec![a.to_owned(), b.to_owned()],
                    None => store.members(&room).await.map_err(store_error)?,
                };
                // Those the caller blocked do not show.
                let online = members.into_iter().filter(|m| self.is_online(m) && !self.has_blocked(user, m)).collect();
                Ok(Some(ReplyBody::Presence { online }))
            }
            Op::Join { room } => self.produce(s, req.id, room, Command::Join { user: user.into() }, false).await,
            Op::Leave { room } => self.produce(s, req.id, room, Command::Leave { user: user.into() }, false).await,
            Op::Read { room, seq } => {
                self.check_dm(&room, user).await?;
                self.produce(s, req.id, room, Command::Read { user: user.into(), seq }, false).await
            }
            Op::Typing { room } => {
                self.check_dm(&room, user).await?;
                if !self.inner.typing.allow(user, &room, self.now_ms()) {
                    // The room heard this user type a moment ago: answer as
                    // the dispatcher would (`ok` to a member; a DM counts
                    // from its first message), without telling the room again.
                    if !store.is_member(&room, user).await.map_err(store_error)? {
                        return Err(ProtocolError::not_member(&room));
                    }
                    return Ok(Some(ReplyBody::Empty {}));
                }
                self.produce(s, req.id, room, Command::Typing { user: user.into() }, false).await
            }
            ref op @ Op::Send { .. } => {
                let room = match op.send_target() {
                    // A DM's first message is where the dispatcher checks
                    // that the other user has an account (in the DM's order,
                    // after any erasure of it), so a DM's messages cost no
                    // account lookup here.
                    Some(Target::Room(room)) => {
                        if dm_members(room).is_some_and(|(a, b)| user != a && user != b) {
                            return Err(ProtocolError::not_member(room));
                        }
                        room.to_owned()
                    }
                    Some(Target::User(to)) => {
                        if to == user {
                            return Err(ProtocolError::bad_request("a direct message needs another user"));
                        }
                        dm_room(user, to)
                    }
                    None => {
                        return Err(ProtocolError::bad_request("send takes exactly one of `room` and `to`"));
                    }
                };
                let Op::Send { text, cid, reply_to, attachments, .. } = req.op else { unreachable!("matched above") };
                // A message ends the sender's typing indicator in the room
                // (clients clear it on `msg`): the next `typing` is news.
                self.inner.typing.forget(user, &room);
                let cmd = Command::Send { from: user.into(), text, cid, reply_to, attachments };
                self.produce(s, req.id, room, cmd, true).await
            }
        }
    }

    /// `history`, for the WebSocket op and the HTTP endpoint alike: the
    /// page, and `true` when it stopped at the reply budget (the newest
    /// messages that fit in it are kept, so the next page goes on from the
    /// first one).
    pub async fn history(
        &self,
        user: &str,
        room: &str,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<(Vec<Message>, bool), ProtocolError> {
        self.check_member(room, user).await?;
        self.history_page(room, before, limit).await
    }

    /// A page of `history`, whoever asks (the caller checked who may read).
    pub(crate) async fn history_page(
        &self,
        room: &str,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<(Vec<Message>, bool), ProtocolError> {
        let limit = limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
        // Only what is committed (see `Committed`): the page ends before
        // any message of a batch still landing.
        let committed = self.committed().await?.seq(room);
        let before = Some(before.unwrap_or(u64::MAX).min(committed.saturating_add(1)));
        // At most `MAX_HISTORY_LIMIT` messages are read, so reading the
        // page whole and cutting it costs little.
        let mut page = self.inner.store.history(room, before, limit).await.map_err(store_error)?;
        if let Some(cutoff) = self.retention_cutoff(room).await? {
            page.retain(|m| m.ts >= cutoff);
        }
        let mut budget = Budget::new(self.config().reply_max_bytes, u32::MAX);
        let keep = page.iter().rev().take_while(|m| budget.take(m)).count();
        let cut = page.len() - keep;
        page.drain(..cut);
        Ok((page, cut > 0))
    }

    /// `sync`: rooms in the request's order (sorted by name) until the reply
    /// budget or the message cap is spent. A room cut short says `more:
    /// true`; a room reached after that has no messages, and `more: true`
    /// when it has any newer than asked, so a client repeats `sync` from the
    /// last seq it got for every room that says `more` and misses nothing.
    /// A room in `changes` also gets its changed messages (lifecycle.rs).
    async fn sync(
        &self,
        user: &str,
        rooms: impl IntoIterator<Item = (String, u64)>,
        limit: u32,
        changes: BTreeMap<String, u64>,
    ) -> Result<BTreeMap<String, SyncRoom>, ProtocolError> {
        let store = &self.inner.store;
        let config = self.config();
        let mut budget = Budget::new(config.reply_max_bytes, config.sync_max_messages);
        let mut out = BTreeMap::new();
        let committed = self.committed().await?;
        for (room, last_seq) in rooms {
            let upto = committed.seq(&room);
            self.check_member(&room, user).await?;
            let cutoff = self.retention_cutoff(&room).await?;
            budget.room(&room);
            // The change log first: see `changed_since`.
            let log = match changes.get(&room) {
                Some(&pos) => {
                    let log = store.changes(&room, pos, limit).await.map_err(store_error)?;
                    Some((pos, committed_changes(log, upto)))
                }
                None => None,
            };
            let mut messages = Vec::new();
            let more = 'room: {
                if budget.spent() {
                    // Not reached: a read of no message says whether any is newer.
                    break 'room last_seq < upto && store.since(&room, last_seq, 0).await.map_err(store_error)?.1;
                }
                let mut after = last_seq;
                loop {
                    // In chunks, so what the budget turns away is at most one
                    // chunk, not the room's `limit` messages.
                    let left = limit - messages.len() as u32;
                    let want = left.min(budget.messages_left()).min(SYNC_CHUNK);
                    let (page, more) = store.since(&room, after, want).await.map_err(store_error)?;
                    for m in page {
                        if m.seq > upto {
                            // Not committed yet: it comes as an event once it is.
                            break 'room false;
                        }
                        if cutoff.is_some_and(|cutoff| m.ts < cutoff) {
                            // Expired, not yet removed from the store.
                            after = m.seq;
                            continue;
                        }
                        if !budget.take(&m) {
                            break 'room true;
                        }
                        after = m.seq;
                        messages.push(m);
                    }
                    if !more || messages.len() as u32 >= limit || budget.spent() {
                        break 'room more;
                    }
                }
            };
            let mut synced = SyncRoom { messages, more, changed: None, change_pos: None, changes_more: None };
            if let Some((pos, log)) = log {
                let changed = self.changed_since(&room, last_seq, pos, log, cutoff, &mut budget).await?;
                synced.changed = Some(changed.messages);
                synced.change_pos = Some(changed.change_pos);
                synced.changes_more = changed.more.then_some(true);
            }
            out.insert(room, synced);
        }
        Ok(out)
    }

    /// Messages older than this (unix ms) are past the room's retention
    /// and left out of `history` and `sync` (the store removes them soon:
    /// a CQL TTL, the embedded store's sweeper); `None` keeps all.
    pub(crate) async fn retention_cutoff(&self, room: &str) -> Result<Option<u64>, ProtocolError> {
        let retention = self.config().retention;
        let days = match dm_members(room) {
            Some(_) => None,
            None => self.inner.store.room_settings(room).await.map_err(store_error)?.and_then(|s| s.retention_days),
        };
        Ok(retention.cutoff_ms(days, unix_ms()))
    }

    /// What the dispatchers have committed, per partition: see [`Committed`].
    async fn committed(&self) -> Result<Committed, ProtocolError> {
        let checkpoints = self.inner.store.checkpoints().await.map_err(store_error)?;
        Ok(Committed { partitions: self.inner.bus.partitions(), next_offsets: checkpoints.into_iter().collect() })
    }

    /// Reads need membership; a DM's two parties are its members even before
    /// its first message.
    pub(crate) async fn check_member(&self, room: &str, user: &str) -> Result<(), ProtocolError> {
        if dm_members(room).is_some() {
            return match self.check_dm(room, user).await {
                // The other's account was deleted (its name is never handed
                // out again): the DM's history stays readable to its member.
                Err(e) if e.code == ErrorCode::NotFound => {
                    match self.inner.store.is_member(room, user).await.map_err(store_error)? {
                        true => Ok(()),
                        false => Err(e),
                    }
                }
                checked => checked,
            };
        }
        match self.inner.store.is_member(room, user).await.map_err(store_error)? {
            true => Ok(()),
            false => Err(ProtocolError::not_member(room)),
        }
    }

    /// A DM id must name the caller and a user who has an account: a DM
    /// with a name nobody holds yet would be inherited by whoever registers
    /// it. Not a DM id: nothing to check here.
    pub(crate) async fn check_dm(&self, room: &str, user: &str) -> Result<(), ProtocolError> {
        match dm_members(room) {
            None => Ok(()),
            Some((a, b)) if user == a => self.check_user(b).await,
            Some((a, b)) if user == b => self.check_user(a).await,
            Some(_) => Err(ProtocolError::not_member(room)),
        }
    }

    pub(crate) async fn check_user(&self, name: &str) -> Result<(), ProtocolError> {
        match self.inner.store.user(name).await.map_err(store_error)? {
            Some(_) => Ok(()),
            None => Err(ProtocolError::new(ErrorCode::NotFound, format!("no user '{name}'"))),
        }
    }

    /// A moderation act, decided by the dispatcher in the room's order.
    async fn moderate(
        &self,
        s: &SessionHandle,
        re: Option<RequestId>,
        room: String,
        by: &str,
        user: String,
        act: Act,
    ) -> Result<Option<ReplyBody>, ProtocolError> {
        self.produce(s, re, room, Command::Moderate { by: by.into(), user, act }, false).await
    }

    pub(crate) async fn produce(
        &self,
        s: &SessionHandle,
        re: Option<RequestId>,
        room: String,
        cmd: Command,
        timed: bool,
    ) -> Result<Option<ReplyBody>, ProtocolError> {
        let t0 = if timed { self.now_micros().max(1) } else { 0 };
        let record = IngressRecord {
            room,
            ts: unix_ms(),
            origin: Some(Origin { gateway: self.id().into(), session: s.id, re, t0 }),
            cmd,
        };
        let start = std::time::Instant::now();
        let produced = tokio::time::timeout(self.config().produce_timeout, self.inner.bus.produce(&record)).await;
        self.inner.metrics.produce_duration.observe(start.elapsed().as_secs_f64());
        match produced {
            Ok(Ok(())) => Ok(None),
            Ok(Err(e)) => {
                self.inner.metrics.produce_errors.inc();
                tracing::warn!(error = %e, "produce failed");
                Err(ProtocolError::unavailable("the message bus is unavailable; retry with the same cid"))
            }
            Err(_) => {
                self.inner.metrics.produce_errors.inc();
                Err(ProtocolError::unavailable(
                    "the message bus did not accept the write in time; retry with the same cid",
                ))
            }
        }
    }
}

/// The messages `history` and `sync` may give: those of batches that have
/// landed whole. A dispatcher's group commit writes a batch's messages at
/// once, not in a transaction, and its partition's checkpoint only after all
/// of them landed (`Store::apply`). A read while a batch lands can see a
/// later message of it and not an earlier one; a client would append past
/// the hole (nothing after it shows a gap: the later messages' `prev_seq`
/// follow on) and never fill it. So reads stop at the checkpoint: every
/// message with a seq up to it has landed (a seq is its record's offset +
/// 1, the checkpoint the next offset to apply). A message past it reaches
/// the client as an event once its batch is stored, or by the next `sync`.
struct Committed {
    partitions: u32,
    next_offsets: std::collections::HashMap<u32, u64>,
}

impl Committed {
    /// The highest seq of `room` that may be read. A partition with no
    /// checkpoint stored has had no batch (no message either): no limit.
    fn seq(&self, room: &str) -> u64 {
        let partition = confab_bus::partition_for(room, self.partitions);
        self.next_offsets.get(&partition).copied().unwrap_or(u64::MAX)
    }
}

/// The part of a change log read (`Store::changes`: (pos, seq) pairs in
/// `pos` order, and whether more follow) that is committed: a change's
/// `pos` is in its room's seq space, so one past `upto` is of a batch still
/// landing (on standalone, maybe not yet on disk). It reaches the client
/// as an event once it is stored, or by the next `sync`.
fn committed_changes((mut log, more): (Vec<(u64, u64)>, bool), upto: u64) -> (Vec<(u64, u64)>, bool) {
    match log.iter().position(|&(pos, _)| pos > upto) {
        Some(cut) => {
            log.truncate(cut);
            // Everything after the cut is later still.
            (log, false)
        }
        None => (log, more),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_gives_no_change_past_the_committed_seq() {
        let log = vec![(10, 3), (12, 5), (15, 3), (20, 7)];
        assert_eq!(committed_changes((log.clone(), true), 14), (vec![(10, 3), (12, 5)], false));
        assert_eq!(committed_changes((log.clone(), true), 20), (log.clone(), true), "all committed: more as read");
        assert_eq!(committed_changes((log.clone(), false), u64::MAX), (log, false));
        assert_eq!(committed_changes((vec![(10, 3)], false), 9), (vec![], false));
    }

    fn message(seq: u64, text: &str) -> Message {
        Message {
            room: "r".into(),
            seq,
            msg_id: format!("0-{seq}"),
            from: "alice".into(),
            text: text.into(),
            ts: 1,
            cid: "c".into(),
            ..Message::default()
        }
    }

    #[test]
    fn the_budget_counts_messages_as_encoded_escapes_included() {
        let plain = message(1, &"a".repeat(100));
        let control = message(1, &"\u{1}".repeat(100));
        assert_eq!(encoded_len(&plain), serde_json::to_string(&plain).unwrap().len());
        assert_eq!(encoded_len(&control), serde_json::to_string(&control).unwrap().len());
        assert_eq!(encoded_len(&control) - encoded_len(&plain), 500, "a control character is six bytes");
    }

    #[test]
    fn the_budget_stops_before_the_message_that_would_pass_it_but_always_takes_one() {
        let m = message(1, &"\u{1}".repeat(1000));
        let size = encoded_len(&m) + 1;
        let mut budget = Budget::new(size / 2, 10);
        assert!(budget.take(&m), "the first message always fits");
        assert!(!budget.take(&m) && budget.spent());

        let mut budget = Budget::new(2 * size, 10);
        assert!(budget.take(&m) && budget.take(&m));
        assert!(!budget.take(&m), "a third would pass the budget");

        let mut budget = Budget::new(usize::MAX, 2);
        assert!(budget.take(&m) && budget.take(&m));
        assert!(budget.spent(), "the message cap is spent");
        assert!(!budget.take(&m));
    }
}
