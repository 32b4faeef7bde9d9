//! Deciding a batch: what each record writes, whom it answers and which
//! events it raises, as a pure function of the records and a [`View`] of the
//! store. No I/O happens here; the read-ahead gathered what [`needs`] names.
//!
//! A command is a [`needs`] arm (what it reads), a [`decide`] arm (what it
//! does) and its tests below.

use std::collections::HashMap;

use confab_bus::Record;
use confab_protocol::Role;
use confab_protocol::event::ReplyBody;
use confab_protocol::message::{cid_key, msg_id, seq_of};
use confab_protocol::unread::mention_candidates;
use confab_protocol::validate::dm_members;
use confab_protocol::{
    Audience, Command, Delivery, ErrorCode, Event, IngressRecord, MemberAction, Message, ProtocolError, Reply,
    Retention, RoomEffect,
};
use confab_store::{CidHit, MessageState, RoomSettings, Write, WriteBatch};

use super::view::{Needs, RoomState, View};

mod accounts;
mod lifecycle;
mod rooms;
mod server;
mod unread;

/// What the store must tell about `room` for `cmd` to be decided, besides
/// the room's state.
pub fn needs<'a>(room: &'a str, cmd: &'a Command) -> Needs<'a> {
    match cmd {
        Command::Send { from, cid, text, reply_to, .. } => {
            // A DM's parties are known from its id; whether the other
            // blocked the sender is not.
            let block = dm_members(room).map(|(a, b)| (if from == a { b } else { a }, from.as_str()));
            Needs {
                member: dm_members(room).is_none().then_some(from),
                cid: Some((from, cid)),
                block,
                tally: Some(from),
                mentioned: mention_candidates(text),
                message: *reply_to,
                ..Needs::default()
            }
        }
        Command::Erase { user } | Command::Remove { user } => {
            Needs { member: Some(user), successor: Some(user), ..Needs::default() }
        }
        Command::Add { user, .. } => {
            Needs { member: Some(user), invite: Some(user), ban: Some(user), ..Needs::default() }
        }
        Command::Join { user } => Needs { member: Some(user), invite: Some(user), ban: Some(user), ..Needs::default() },
        Command::Leave { user } | Command::Typing { user } => Needs { member: Some(user), ..Needs::default() },
        Command::Read { user, seq } => Needs {
            member: Some(user),
            read_marker: Some(user),
            tally: Some(user),
            read_at: Some((user, *seq)),
            ..Needs::default()
        },
        Command::Notify { user, .. } => Needs { member: Some(user), ..Needs::default() },
        Command::BlockChanged { .. } => Needs::default(),
        Command::Create { user, .. } => Needs { member: Some(user), ..Needs::default() },
        Command::UpdateRoom { by, .. } => Needs { member: Some(by), ..Needs::default() },
        Command::Moderate { by, user, act } => rooms::needs(by, user, act),
        Command::Delete { .. } => lifecycle::needs(cmd),
        // In a DM, an edit or a reaction reaches the other party like a
        // message: a block refuses it (a deletion is always allowed).
        Command::Edit { by: user, .. } | Command::React { user, .. } => {
            let block = dm_members(room).map(|(a, b)| (if user == a { b } else { a }, user.as_str()));
            Needs { block, ..lifecycle::needs(cmd) }
        }
    }
}

/// What a batch decided, to be stored before any of it leaves.
#[derive(Debug, Default)]
pub struct Decided {
    /// The batch's writes, in record order (the checkpoints are not among them).
    pub writes: WriteBatch,
    /// Routes to add, events and replies, in record order.
    pub effects: Vec<Effect>,
    /// The state after the batch of every room it read.
    pub rooms: HashMap<String, RoomState>,
    /// The command and outcome (`ok` or an error code) of each record.
    pub outcomes: Vec<(&'static str, &'static str)>,
    /// Sends answered with the message first stored under their cid.
    pub duplicates: u64,
    /// The tally after the batch of every `(room, member)` it read or
    /// counted (a member who left: zero).
    pub tallies: HashMap<(String, String), confab_store::Tally>,
}

/// Something to do once the batch is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Route the room to the gateway a joining session is on.
    RouteToGateway { room: String, gateway: String },
    /// Route the room to every gateway these users have sessions on.
    RouteToUsers { room: String, users: Vec<String> },
    /// A room event for every gateway that hosts the room.
    Event { room: String, audience: Audience, effect: Option<RoomEffect>, frame: String },
    /// The answer to the session a record came from.
    Reply { gateway: String, delivery: Delivery },
}

/// Decides `records` in order, each seeing the store as `view` says plus
/// what the records before it in the batch did.
///
/// Records of a batch that failed midway on a CQL store may find their own
/// writes stored in part (see `Store::apply`); every decision then writes
/// again what its record needs rather than taking the part for the whole.
///
/// A user may be a member of at most `max_rooms` rooms: a `join` or a DM's
/// first message past it is `forbidden`.
pub fn decide(view: View, records: &[&Record], max_rooms: usize) -> Decided {
    decide_with(view, records, max_rooms, Retention::default())
}

/// [`decide`] in a cluster whose messages are kept as `retention` says.
pub fn decide_with(view: View, records: &[&Record], max_rooms: usize, retention: Retention) -> Decided {
    let mut batch = Batch { view, out: Decided::default(), max_rooms, retention };
    for r in records {
        let kind = command_name(&r.record.cmd);
        let first_write = batch.out.writes.len();
        let (reply, outcome) = match batch.decide(r) {
            Ok(reply) => {
                if let Some(event) = member_event(r, &batch.out.writes[first_write..]) {
                    batch.out.writes.push(event);
                }
                (reply, "ok")
            }
            Err(e) => {
                let code = e.code.as_str();
                (Reply::error(None, e), code)
            }
        };
        batch.reply(&r.record, reply);
        batch.out.outcomes.push((kind, outcome));
    }
    batch.out.rooms = batch.view.rooms;
    batch.out.tallies = batch.view.counts.tallies;
    batch.out
}

/// What a membership record did, for the webhooks (`Store::member_event`):
/// the change `writes` (the record's own) made to its user's membership, or
/// a ban's; `None` when they changed nothing (a repeated join, a refusal).
fn member_event(r: &Record, writes: &[Write]) -> Option<Write> {
    use confab_protocol::record::Act;
    use confab_store::{MemberChange, MemberEvent};
    let rec = &r.record;
    let (user, by) = match &rec.cmd {
        Command::Join { user }
        | Command::Add { user, .. }
        | Command::Leave { user }
        | Command::Remove { user }
        | Command::Erase { user } => (user, None),
        Command::Moderate { by, user, act: Act::Kick { .. } | Act::Ban { .. } } => (user, Some(by.clone())),
        _ => return None,
    };
    let joined = writes.iter().any(|w| matches!(w, Write::Join { user: u, .. } if u == user));
    let left = writes.iter().any(|w| matches!(w, Write::Leave { user: u, .. } if u == user));
    let banned = writes.iter().any(|w| matches!(w, Write::Ban { user: u, banned: true, .. } if u == user));
    let change = match &rec.cmd {
        Command::Join { .. } if joined => MemberChange::Join,
        Command::Add { .. } if joined => MemberChange::Add,
        Command::Leave { .. } if left => MemberChange::Leave,
        Command::Remove { .. } if left => MemberChange::Remove,
        Command::Erase { .. } if left => MemberChange::Erase,
        Command::Moderate { act: Act::Kick { .. }, .. } if left => MemberChange::Kick,
        Command::Moderate { act: Act::Ban { .. }, .. } if banned || left => MemberChange::Ban,
        _ => return None,
    };
    let event = MemberEvent { user: user.clone(), change, by, ts: rec.ts };
    Some(Write::MemberEvent { room: rec.room.clone(), at: seq_of(r.offset), event })
}

/// The batch so far: the view, updated with each decided record's writes.
struct Batch {
    view: View,
    out: Decided,
    /// Rooms one user may be a member of.
    max_rooms: usize,
    /// How long messages are kept.
    retention: Retention,
}

impl Batch {
    fn decide(&mut self, r: &Record) -> Result<Reply, ProtocolError> {
        let rec = &r.record;
        match &rec.cmd {
            Command::Send { from, text, cid, reply_to, attachments } => {
                self.send(r, from, text, cid, *reply_to, attachments)
            }
            Command::Join { user } => self.join(r, user),
            Command::Leave { user } => self.leave(r, user),
            Command::Read { user, seq } => self.read(r, user, *seq),
            Command::Create { user, visibility, name, topic } => self.create(r, user, *visibility, name, topic),
            Command::Moderate { by, user, act } => self.moderate(r, by, user, act),
            Command::UpdateRoom { by, name, topic, visibility, retention_days } => {
                self.update_room(r, by, name.as_deref(), topic.as_deref(), *visibility, *retention_days)
            }
            Command::Erase { user } => self.erase(r, user),
            // The pipeline dropped what it remembered of the block.
            Command::BlockChanged { .. } => Ok(Reply::empty(None)),
            Command::Notify { user, level } => self.notify(r, user, *level),
            Command::Typing { user } => {
                self.require_member(&rec.room, user)?;
                let frame = Event::Typing { room: rec.room.clone(), user: user.clone() }.encode();
                self.event(&rec.room, Audience::MembersExcept(user.clone()), None, frame);
                Ok(Reply::empty(None))
            }
            Command::Edit { by, seq, text } => self.edit(r, by, *seq, text),
            Command::Delete { by, seq } => self.delete(r, by, *seq),
            Command::React { user, seq, emoji, remove } => self.react(r, user, *seq, emoji, *remove),
            Command::Add { user, role } => self.server_add(r, user, *role),
            Command::Remove { user } => self.server_remove(r, user),
        }
    }

    fn send(
        &mut self,
        r: &Record,
        from: &str,
        text: &str,
        cid: &str,
        reply_to: Option<u64>,
        attachments: &[String],
    ) -> Result<Reply, ProtocolError> {
        let room = r.record.room.as_str();
        let seq = seq_of(r.offset);
        self.check_not_blocked(room, from)?;
        match dm_members(room) {
            Some((a, b)) if from != a && from != b => return Err(ProtocolError::not_member(room)),
            Some((a, b)) if !self.room(room).exists => {
                // The first message of a DM makes both users members, when
                // both have an account and room for one more.
                let other = if from == a { b } else { a };
                if let Some(gone) = [other, from].into_iter().find(|u| !self.view.accounts.contains(*u)) {
                    return Err(ProtocolError::new(ErrorCode::NotFound, format!("no user '{gone}'")));
                }
                self.check_room_count(from, "you are")?;
                self.check_room_count(other, &format!("'{other}' is"))?;
                for (members, user) in [(1, a), (2, b)] {
                    *self.view.room_counts.entry(user.into()).or_default() += 1;
                    self.out.writes.push(Write::Join { room: room.into(), user: user.into(), at: seq, members });
                    self.view.members.insert((room.into(), user.into()));
                }
                self.out.effects.push(Effect::RouteToUsers { room: room.into(), users: vec![a.into(), b.into()] });
                let state = self.room_mut(room);
                state.exists = true;
                state.members = 2;
            }
            Some(_) => {}
            None => {
                self.require_member(room, from)?;
                // By the record's acceptance time, so every replay decides alike.
                if self.standing(room, from).is_muted(r.record.ts / 1000) {
                    return Err(rooms::forbidden(format!("you are muted in '{room}'")));
                }
            }
        }
        let key = (room.to_owned(), cid_key(from, cid));
        // A hit with this record's own seq is its own earlier attempt, stored
        // in part: it is written again below.
        if let Some(hit) = self.view.cids.get(&key).filter(|hit| hit.seq != seq) {
            self.out.duplicates += 1;
            return Ok(send_reply(room, hit.clone()));
        }
        if let Some(target) = reply_to {
            self.target(room, target)?;
        }
        let attached = self.attachments(room, seq, from, attachments)?;
        let message = Message {
            room: room.into(),
            seq,
            msg_id: msg_id(r.partition, r.offset),
            from: from.into(),
            text: text.into(),
            ts: r.record.ts,
            cid: cid.into(),
            reply_to,
            mentions: self.mentions_in(room, text),
            attachments: attached.iter().map(|u| u.attachment()).collect(),
            ..Message::default()
        };
        let state = self.room_mut(room);
        if seq <= state.last_seq {
            // The partition count changed under a live store (which
            // bind_partitions refuses), or this record's earlier attempt
            // stored the room's last seq.
            tracing::warn!(room, seq, last = state.last_seq, "seq does not move past the room's last");
        }
        let prev_seq = std::mem::replace(&mut state.last_seq, seq);
        let hit = CidHit { seq, msg_id: message.msg_id.clone(), ts: message.ts };
        self.view.cids.insert(key, hit.clone());
        self.out.writes.push(Write::Message(message.clone()));
        if !attached.is_empty() {
            let uploads = attached.iter().map(|u| (u.id.clone(), u.created_ms)).collect();
            self.out.writes.push(Write::Attach { room: room.into(), seq, uploads, at: seq });
            for u in &attached {
                if let Some(u) = self.view.uploads.get_mut(&u.id) {
                    u.message = Some(seq);
                }
            }
        }
        self.count_message(&message);
        // Later records of the batch may reply to, edit or react to it.
        self.view
            .messages
            .insert((room.to_owned(), seq), MessageState { message: message.clone(), ..Default::default() });
        let frame = Event::Msg { message, prev_seq }.encode();
        self.event(room, Audience::Members, None, frame);
        Ok(send_reply(room, hit))
    }

    /// The uploads a send attaches: each uploaded by the sender to this
    /// room and attached to no other message (this record's own earlier
    /// attempt, stored in part, aside).
    fn attachments(
        &self,
        room: &str,
        seq: u64,
        from: &str,
        ids: &[String],
    ) -> Result<Vec<confab_store::UploadRecord>, ProtocolError> {
        ids.iter()
            .map(|id| {
                let u = self.view.uploads.get(id).filter(|u| {
                    u.room == room && u.uploader == from && !u.dropped && u.message.is_none_or(|m| m == seq)
                });
                u.cloned().ok_or_else(|| {
                    ProtocolError::new(
                        confab_protocol::ErrorCode::NotFound,
                        format!("attachment '{id}' is not an upload of yours to '{room}' that is not sent yet"),
                    )
                })
            })
            .collect()
    }

    fn join(&mut self, r: &Record, user: &str) -> Result<Reply, ProtocolError> {
        let room = r.record.room.as_str();
        if dm_members(room).is_some() {
            return Err(ProtocolError::bad_request("direct-message rooms cannot be joined"));
        }
        if !self.is_member(room, user) {
            self.may_join(room, user)?;
            self.check_room_count(user, "you are")?;
            self.add_member(r, room, user);
            // A room nobody owns and nobody is in (a new one, or one whose
            // members all left) is the joiner's.
            let state = self.room(room);
            if state.members == 1 && state.settings.as_ref().is_none_or(|s| s.owner.is_none()) {
                let settings = RoomSettings { owner: Some(user.into()), ..state.settings.unwrap_or_default() };
                self.set_settings(r, room, settings);
                self.set_role(r, room, user, Role::Owner);
            }
        }
        Ok(Reply::ok(None, ReplyBody::Join { room: room.into(), last_seq: self.room(room).last_seq }))
    }

    /// Makes `user` a member (who may be) and tells the room.
    fn add_member(&mut self, r: &Record, room: &str, user: &str) {
        let members = self.view.rooms.get(room).map_or(0, |s| s.members) + 1;
        self.out.writes.push(Write::Join { room: room.into(), user: user.into(), at: seq_of(r.offset), members });
        let key = (room.to_owned(), user.to_owned());
        if self.view.invites.remove(&key) {
            // The invitation is used up.
            self.out.writes.push(Write::Invite {
                room: room.into(),
                user: user.into(),
                invited: false,
                at: seq_of(r.offset),
            });
        }
        self.view.members.insert(key);
        *self.view.room_counts.entry(user.into()).or_default() += 1;
        let state = self.room_mut(room);
        state.exists = true;
        state.members += 1;
        // The joiner's gateways must see the join: the origin's from the
        // record, the user's other devices' from the announcements.
        if let Some(origin) = &r.record.origin {
            self.out.effects.push(Effect::RouteToGateway { room: room.into(), gateway: origin.gateway.clone() });
        }
        self.out.effects.push(Effect::RouteToUsers { room: room.into(), users: vec![user.into()] });
        let frame = Event::member(room, user, MemberAction::Join).encode();
        self.event(room, Audience::Members, Some(RoomEffect::Joined(user.into())), frame);
    }

    /// Ends `user`'s membership (a member's) and tells the room with `frame`,
    /// the user's sessions included, before they stop getting the room's events.
    fn remove_member(&mut self, r: &Record, room: &str, user: &str, frame: String) {
        let members = self.view.rooms.get(room).map_or(0, |s| s.members).saturating_sub(1);
        self.out.writes.push(Write::Leave { room: room.into(), user: user.into(), at: seq_of(r.offset), members });
        let key = (room.to_owned(), user.to_owned());
        self.view.members.remove(&key);
        self.view.standing.remove(&key);
        self.view.read_markers.remove(&key);
        self.forget_counts(room, user);
        if let Some(n) = self.view.room_counts.get_mut(user) {
            *n = n.saturating_sub(1);
        }
        let state = self.room_mut(room);
        state.members = state.members.saturating_sub(1);
        if dm_members(room).is_some() {
            // A DM exists while both are members: one erased, the next
            // message asks whether both still have an account.
            state.exists = false;
        }
        self.event(room, Audience::Members, Some(RoomEffect::Left(user.into())), frame);
    }

    fn leave(&mut self, r: &Record, user: &str) -> Result<Reply, ProtocolError> {
        let room = r.record.room.as_str();
        self.require_member(room, user)?;
        let owner = self.standing(room, user).role == Role::Owner;
        if owner && self.room(room).members > 1 {
            return Err(rooms::forbidden("the owner cannot leave while others remain: hand ownership over first"));
        }
        let frame = Event::member(room, user, MemberAction::Leave).encode();
        self.remove_member(r, room, user, frame);
        if owner {
            // The last member, the owner, left: whoever joins next owns it.
            let settings = RoomSettings { owner: None, ..self.room(room).settings.unwrap_or_default() };
            self.set_settings(r, room, settings);
        }
        Ok(Reply::empty(None))
    }

    fn read(&mut self, r: &Record, user: &str, seq: u64) -> Result<Reply, ProtocolError> {
        let room = r.record.room.as_str();
        self.require_member(room, user)?;
        // Markers only move forward, and never past the newest message.
        let seq = seq.min(self.room(room).last_seq);
        let key = (room.to_owned(), user.to_owned());
        if seq > self.view.read_markers.get(&key).copied().unwrap_or(0) {
            self.view.read_markers.insert(key, seq);
            self.out.writes.push(Write::Read { room: room.into(), user: user.into(), seq, at: seq_of(r.offset) });
            self.count_read(r, room, user, seq);
            let frame = Event::Read { room: room.into(), user: user.into(), seq }.encode();
            self.event(room, Audience::Members, None, frame);
        }
        Ok(Reply::empty(None))
    }

    /// `Ok` when `user` may become a member of one more room; `who` names
    /// them in the refusal ("you are", "'bob' is").
    pub(super) fn check_room_count(&self, user: &str, who: &str) -> Result<(), ProtocolError> {
        let max = self.max_rooms;
        if self.view.room_counts.get(user).copied().unwrap_or(0) < max {
            return Ok(());
        }
        Err(ProtocolError::new(
            ErrorCode::Forbidden,
            format!("{who} a member of {max} rooms, the most a user may be in; leave one first"),
        ))
    }

    fn room(&self, room: &str) -> RoomState {
        self.view.rooms.get(room).cloned().unwrap_or_default()
    }

    fn room_mut(&mut self, room: &str) -> &mut RoomState {
        self.view.rooms.entry(room.to_owned()).or_default()
    }

    fn is_member(&self, room: &str, user: &str) -> bool {
        self.view.members.contains(&(room.to_owned(), user.to_owned()))
    }

    fn require_member(&self, room: &str, user: &str) -> Result<(), ProtocolError> {
        if self.is_member(room, user) { Ok(()) } else { Err(ProtocolError::not_member(room)) }
    }

    fn event(&mut self, room: &str, audience: Audience, effect: Option<RoomEffect>, frame: String) {
        self.out.effects.push(Effect::Event { room: room.into(), audience, effect, frame });
    }

    fn reply(&mut self, rec: &IngressRecord, reply: Reply) {
        let Some(origin) = &rec.origin else { return };
        let reply = Reply { re: origin.re.clone(), ..reply };
        let delivery = Delivery::Reply { session: origin.session, t0: origin.t0, frame: reply.encode() };
        self.out.effects.push(Effect::Reply { gateway: origin.gateway.clone(), delivery });
    }
}

fn send_reply(room: &str, hit: CidHit) -> Reply {
    Reply::ok(None, ReplyBody::Send { room: room.into(), seq: hit.seq, msg_id: hit.msg_id, ts: hit.ts })
}

fn command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::Create { .. } => "create",
        Command::UpdateRoom { .. } => "update_room",
        Command::Moderate { act, .. } => rooms::act_name(act),
        Command::Send { .. } => "send",
        Command::Join { .. } => "join",
        Command::Leave { .. } => "leave",
        Command::Read { .. } => "read",
        Command::Typing { .. } => "typing",
        Command::Erase { .. } => "erase",
        Command::BlockChanged { .. } => "block_changed",
        Command::Notify { .. } => "notify",
        Command::Edit { .. } => "edit",
        Command::Delete { .. } => "delete",
        Command::React { .. } => "react",
        Command::Add { .. } => "add",
        Command::Remove { .. } => "remove",
    }
}

#[cfg(test)]
mod tests {
    use confab_protocol::Origin;
    use confab_protocol::request::RequestId;
    use serde_json::{Value, json};

    use super::*;

    pub(super) fn record(offset: u64, room: &str, cmd: Command) -> Record {
        let origin = Origin { gateway: "gw-1".into(), session: 7, re: Some(RequestId::Int(offset as i64)), t0: 0 };
        Record {
            partition: 0,
            offset,
            record: IngressRecord { room: room.into(), ts: 1_000 + offset, origin: Some(origin), cmd },
        }
    }

    fn send(offset: u64, room: &str, from: &str, cid: &str) -> Record {
        let cmd = Command::Send {
            from: from.into(),
            text: format!("text {offset}"),
            cid: cid.into(),
            reply_to: None,
            attachments: vec![],
        };
        record(offset, room, cmd)
    }

    fn join(offset: u64, room: &str, user: &str) -> Record {
        record(offset, room, Command::Join { user: user.into() })
    }

    fn leave(offset: u64, room: &str, user: &str) -> Record {
        record(offset, room, Command::Leave { user: user.into() })
    }

    fn read(offset: u64, room: &str, user: &str, seq: u64) -> Record {
        record(offset, room, Command::Read { user: user.into(), seq })
    }

    fn typing(offset: u64, room: &str, user: &str) -> Record {
        record(offset, room, Command::Typing { user: user.into() })
    }

    fn key(a: &str, b: &str) -> (String, String) {
        (a.into(), b.into())
    }

    /// A store holding room `r` with these members and last seq.
    pub(super) fn room_r(members: &[&str], last_seq: u64) -> View {
        let mut view = View::default();
        let settings = RoomSettings { owner: Some("owner".into()), ..RoomSettings::default() };
        let state = RoomState {
            last_seq,
            exists: true,
            members: members.len() as u64,
            settings: Some(settings),
            ..RoomState::default()
        };
        view.rooms.insert("r".into(), state);
        view.members.extend(members.iter().map(|user| key("r", user)));
        view
    }

    /// The batch's decisions, without the writes that count messages
    /// (`unread`'s tests look at those: [`run_counted`]).
    pub(super) fn run(view: View, records: &[Record]) -> Decided {
        let mut d = run_counted(view, records);
        d.writes.retain(|w| !matches!(w, Write::MessageMeta { .. } | Write::Tally { .. } | Write::ReadTally { .. }));
        d
    }

    pub(super) fn run_counted(view: View, records: &[Record]) -> Decided {
        decide(view, &records.iter().collect::<Vec<_>>(), 1000)
    }

    pub(super) fn replies(d: &Decided) -> Vec<Value> {
        d.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Reply { delivery: Delivery::Reply { frame, .. }, .. } => {
                    Some(serde_json::from_str(frame).unwrap())
                }
                _ => None,
            })
            .collect()
    }

    pub(super) fn events(d: &Decided) -> Vec<Value> {
        d.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Event { frame, .. } => Some(serde_json::from_str(frame).unwrap()),
                _ => None,
            })
            .collect()
    }

    pub(super) fn message(offset: u64, room: &str, from: &str, cid: &str) -> Message {
        Message {
            room: room.into(),
            seq: offset + 1,
            msg_id: msg_id(0, offset),
            from: from.into(),
            text: format!("text {offset}"),
            ts: 1_000 + offset,
            cid: cid.into(),
            ..Message::default()
        }
    }

    fn send_with(offset: u64, from: &str, cid: &str, attachments: &[&str]) -> Record {
        let cmd = Command::Send {
            from: from.into(),
            text: String::new(),
            cid: cid.into(),
            reply_to: None,
            attachments: attachments.iter().map(|a| a.to_string()).collect(),
        };
        record(offset, "r", cmd)
    }

    fn upload(id: &str, room: &str, uploader: &str) -> confab_store::UploadRecord {
        confab_store::UploadRecord {
            id: id.into(),
            room: room.into(),
            uploader: uploader.into(),
            name: format!("{id}.txt"),
            content_type: "text/plain".into(),
            size: 3,
            created_ms: 5,
            ..Default::default()
        }
    }

    #[test]
    fn a_send_attaches_only_the_senders_unsent_uploads_of_the_room_and_each_once() {
        let mut view = room_r(&["alice", "bob"], 0);
        for u in [upload("u1", "r", "alice"), upload("u2", "r", "bob"), upload("u3", "other", "alice")] {
            view.uploads.insert(u.id.clone(), u);
        }
        let mut sent = upload("u4", "r", "alice");
        sent.message = Some(1);
        view.uploads.insert(sent.id.clone(), sent);
        let d = run(
            view,
            &[
                send_with(10, "alice", "c1", &["u1"]),
                send_with(11, "alice", "c2", &["u1"]),
                send_with(12, "alice", "c3", &["u2"]),
                send_with(13, "alice", "c4", &["u3"]),
                send_with(14, "alice", "c5", &["u4"]),
                send_with(15, "alice", "c6", &["nope"]),
            ],
        );
        let codes: Vec<Value> = replies(&d).iter().map(|r| r["error"]["code"].clone()).collect();
        assert_eq!(
            codes,
            [
                Value::Null,
                json!("not_found"),
                json!("not_found"),
                json!("not_found"),
                json!("not_found"),
                json!("not_found")
            ]
        );
        let attached: Vec<&Write> = d.writes.iter().filter(|w| matches!(w, Write::Attach { .. })).collect();
        assert_eq!(attached, [&Write::Attach { room: "r".into(), seq: 11, uploads: vec![("u1".into(), 5)], at: 11 }]);
        let stored = d.writes.iter().find_map(|w| match w {
            Write::Message(m) => Some(m),
            _ => None,
        });
        assert_eq!(stored.unwrap().attachments, vec![upload("u1", "r", "alice").attachment()]);
    }

    #[test]
    fn each_command_reads_only_what_it_decides_by() {
        fn needs_of(r: &Record) -> Needs<'_> {
            needs(&r.record.room, &r.record.cmd)
        }
        let (s, dm, j) = (send(0, "r", "alice", "c1"), send(0, "dm:alice:bob", "alice", "c1"), join(0, "r", "bob"));
        let sender = Needs { cid: Some(("alice", "c1")), tally: Some("alice"), ..Needs::default() };
        assert_eq!(needs_of(&s), Needs { member: Some("alice"), ..sender.clone() });
        assert_eq!(
            needs_of(&dm),
            Needs { member: None, block: Some(("bob", "alice")), ..sender },
            "a DM's id names its members; whether the recipient blocked the sender is read"
        );
        assert_eq!(
            needs_of(&j),
            Needs { member: Some("bob"), invite: Some("bob"), ban: Some("bob"), ..Needs::default() },
            "a join may need an invitation and must not be banned"
        );
        assert_eq!(needs_of(&leave(0, "r", "bob")), Needs { member: Some("bob"), ..Needs::default() });
        assert_eq!(needs_of(&typing(0, "r", "bob")), Needs { member: Some("bob"), ..Needs::default() });
        let marker = read(0, "r", "bob", 3);
        assert_eq!(
            needs_of(&marker),
            Needs {
                member: Some("bob"),
                read_marker: Some("bob"),
                tally: Some("bob"),
                read_at: Some(("bob", 3)),
                ..Needs::default()
            }
        );
    }

    #[test]
    fn a_message_takes_its_records_seq_and_follows_the_rooms_last() {
        let d = run(room_r(&["alice"], 5), &[send(9, "r", "alice", "c1")]);
        assert_eq!(d.writes, [Write::Message(message(9, "r", "alice", "c1"))], "seq = offset + 1");
        let event = &events(&d)[0];
        assert_eq!(
            (event["ev"].as_str(), event["seq"].as_u64(), event["prev_seq"].as_u64()),
            (Some("msg"), Some(10), Some(5))
        );
        assert_eq!(replies(&d), [json!({"re": 9, "ok": true, "room": "r", "seq": 10, "msg_id": "0-9", "ts": 1009})]);
        assert_eq!(d.rooms["r"].last_seq, 10);
        assert_eq!(d.outcomes, [("send", "ok")]);
    }

    #[test]
    fn the_same_cid_twice_in_a_batch_stores_one_message_and_answers_both_with_it() {
        let d = run(room_r(&["alice"], 0), &[send(3, "r", "alice", "c1"), send(4, "r", "alice", "c1")]);
        assert_eq!(d.writes, [Write::Message(message(3, "r", "alice", "c1"))]);
        assert_eq!(events(&d).len(), 1, "one event, for the one message");
        let seqs: Vec<_> = replies(&d).iter().map(|r| r["seq"].as_u64()).collect();
        assert_eq!(seqs, [Some(4), Some(4)]);
        assert_eq!(d.duplicates, 1);
    }

    #[test]
    fn another_senders_cid_is_another_message() {
        let mut view = room_r(&["alice", "mallory"], 7);
        view.cids.insert(key("r", &cid_key("mallory", "c1")), CidHit { seq: 3, msg_id: "0-2".into(), ts: 42 });
        let d = run(view, &[send(9, "r", "alice", "c1"), send(10, "r", "mallory", "c1")]);
        assert_eq!(
            d.writes,
            [Write::Message(message(9, "r", "alice", "c1"))],
            "alice's is stored, mallory's retry not"
        );
        assert_eq!(d.duplicates, 1);
    }

    #[test]
    fn a_cid_stored_by_an_earlier_batch_answers_with_the_stored_message() {
        let mut view = room_r(&["alice"], 7);
        view.cids.insert(key("r", &cid_key("alice", "c1")), CidHit { seq: 3, msg_id: "0-2".into(), ts: 42 });
        let d = run(view, &[send(9, "r", "alice", "c1")]);
        assert!(d.writes.is_empty() && events(&d).is_empty(), "nothing new is stored or told");
        assert_eq!(replies(&d), [json!({"re": 9, "ok": true, "room": "r", "seq": 3, "msg_id": "0-2", "ts": 42})]);
        assert_eq!((d.duplicates, d.rooms["r"].last_seq), (1, 7));
    }

    #[test]
    fn a_cid_stored_by_this_very_record_in_a_batch_that_failed_midway_is_written_again() {
        // On a CQL store the cid landed, the message may not have.
        let mut view = room_r(&["alice"], 10);
        view.cids.insert(key("r", "c1"), CidHit { seq: 10, msg_id: "0-9".into(), ts: 1009 });
        let d = run(view, &[send(9, "r", "alice", "c1")]);
        assert_eq!(d.writes, [Write::Message(message(9, "r", "alice", "c1"))]);
        assert_eq!(replies(&d)[0]["seq"], 10);
        assert_eq!(d.duplicates, 0);
    }

    /// A view in which `users` have accounts.
    pub(super) fn with_accounts(users: &[&str]) -> View {
        View { accounts: users.iter().map(|u| (*u).to_owned()).collect(), ..View::default() }
    }

    #[test]
    fn a_dm_with_a_user_who_has_no_account_is_not_found_and_erasing_one_party_ends_the_dm() {
        let room = "dm:alice:bob";
        let d = run(with_accounts(&["alice"]), &[send(0, room, "alice", "c1")]);
        assert!(d.writes.is_empty(), "{:?}", d.writes);
        assert_eq!(replies(&d)[0]["error"]["code"], "not_found");
        assert!(replies(&d)[0]["error"]["message"].as_str().unwrap().contains("'bob'"));

        // bob's account is erased after the DM began: the DM no longer
        // exists, so alice's next message asks for his account again.
        let erase = record(1, room, Command::Erase { user: "bob".into() });
        let d = run(with_accounts(&["alice", "bob"]), &[send(0, room, "alice", "c1"), erase]);
        assert!(!d.rooms[room].exists);
    }

    #[test]
    fn a_non_member_cannot_send_to_a_room() {
        let d = run(room_r(&["alice"], 0), &[send(1, "r", "bob", "c1")]);
        assert!(d.writes.is_empty() && events(&d).is_empty());
        assert_eq!(replies(&d)[0]["error"]["code"], "not_member");
        assert_eq!(d.outcomes, [("send", "not_member")]);
    }

    #[test]
    fn the_first_message_of_a_dm_makes_both_users_members_once() {
        let room = "dm:alice:bob";
        let d = run(with_accounts(&["alice", "bob"]), &[send(0, room, "alice", "c1"), send(1, room, "bob", "c2")]);
        let joined = |user: &str, members| Write::Join { room: room.into(), user: user.into(), at: 1, members };
        assert_eq!(
            d.writes,
            [
                joined("alice", 1),
                joined("bob", 2),
                Write::Message(message(0, room, "alice", "c1")),
                Write::Message(message(1, room, "bob", "c2")),
            ]
        );
        let route = Effect::RouteToUsers { room: room.into(), users: vec!["alice".into(), "bob".into()] };
        assert_eq!(d.effects.iter().filter(|e| **e == route).count(), 1, "routed to both users' gateways");
        assert!(d.effects[0] == route, "before the first event");
        assert_eq!(
            d.rooms[room],
            RoomState { last_seq: 2, exists: true, members: 2, settings: None, messages: 2, last_change: 0 }
        );
    }

    #[test]
    fn a_third_user_cannot_write_into_a_dm() {
        let d = run(View::default(), &[send(0, "dm:alice:bob", "carol", "c1")]);
        assert!(d.writes.is_empty());
        assert_eq!(replies(&d)[0]["error"]["code"], "not_member");
    }

    #[test]
    fn joining_makes_a_member_routes_the_room_to_the_joiner_and_tells_the_room() {
        let d = run(View::default(), &[join(4, "r", "alice"), send(5, "r", "alice", "c1")]);
        let settings = RoomSettings { owner: Some("alice".into()), ..RoomSettings::default() };
        assert_eq!(
            d.writes[..3],
            [
                Write::Join { room: "r".into(), user: "alice".into(), at: 5, members: 1 },
                Write::Settings { room: "r".into(), settings, at: 5 },
                Write::Role { room: "r".into(), user: "alice".into(), role: Role::Owner, at: 5 },
            ],
            "a new room is public and the joiner's"
        );
        assert!(
            matches!(&d.writes[3], Write::MemberEvent { at: 5, event, .. }
                if event.user == "alice" && event.change == confab_store::MemberChange::Join),
            "the join's outcome is recorded with it: {:?}",
            d.writes[3]
        );
        assert_eq!(d.writes.len(), 5, "the send after the join in the same batch is a member's");
        assert_eq!(
            d.effects[..3],
            [
                Effect::RouteToGateway { room: "r".into(), gateway: "gw-1".into() },
                Effect::RouteToUsers { room: "r".into(), users: vec!["alice".into()] },
                Effect::Event {
                    room: "r".into(),
                    audience: Audience::Members,
                    effect: Some(RoomEffect::Joined("alice".into())),
                    frame: Event::member("r", "alice", MemberAction::Join).encode(),
                },
            ]
        );
        assert_eq!(replies(&d)[0], json!({"re": 4, "ok": true, "room": "r", "last_seq": 0}));
    }

    #[test]
    fn joining_again_stores_and_tells_nothing() {
        let d = run(room_r(&["alice"], 8), &[join(9, "r", "alice")]);
        assert!(d.writes.is_empty() && events(&d).is_empty());
        assert_eq!(replies(&d)[0], json!({"re": 9, "ok": true, "room": "r", "last_seq": 8}));
    }

    #[test]
    fn a_dm_cannot_be_joined() {
        let d = run(View::default(), &[join(0, "dm:alice:bob", "alice")]);
        assert!(d.writes.is_empty());
        assert_eq!(replies(&d)[0]["error"]["code"], "bad_request");
    }

    #[test]
    fn leaving_ends_membership_and_tells_the_room() {
        let d =
            run(room_r(&["alice", "bob"], 3), &[leave(5, "r", "bob"), send(6, "r", "bob", "c1"), leave(7, "r", "bob")]);
        let left = confab_store::MemberEvent {
            user: "bob".into(),
            change: confab_store::MemberChange::Leave,
            by: None,
            ts: 1005,
        };
        assert_eq!(
            d.writes,
            [
                Write::Leave { room: "r".into(), user: "bob".into(), at: 6, members: 1 },
                Write::MemberEvent { room: "r".into(), at: 6, event: left },
            ],
            "the second leave, refused, records nothing"
        );
        assert_eq!(
            d.effects[0],
            Effect::Event {
                room: "r".into(),
                audience: Audience::Members,
                effect: Some(RoomEffect::Left("bob".into())),
                frame: Event::member("r", "bob", MemberAction::Leave).encode(),
            }
        );
        let codes: Vec<Value> = replies(&d).iter().map(|r| r["error"]["code"].clone()).collect();
        assert_eq!(codes, [Value::Null, json!("not_member"), json!("not_member")]);
    }

    #[test]
    fn a_read_marker_moves_forward_only_and_never_past_the_last_message() {
        let mut view = room_r(&["alice"], 10);
        view.read_markers.insert(key("r", "alice"), 4);
        let d = run(view, &[read(11, "r", "alice", 3), read(12, "r", "alice", 99), read(13, "r", "alice", 8)]);
        assert_eq!(d.writes, [Write::Read { room: "r".into(), user: "alice".into(), seq: 10, at: 13 }]);
        assert_eq!(events(&d), [json!({"ev": "read", "room": "r", "user": "alice", "seq": 10})]);
        assert!(replies(&d).iter().all(|r| r["ok"] == true));
    }

    #[test]
    fn a_read_marker_of_a_new_membership_starts_over() {
        let mut view = room_r(&["alice"], 10);
        view.read_markers.insert(key("r", "alice"), 9);
        let d = run(view, &[leave(11, "r", "alice"), join(12, "r", "alice"), read(13, "r", "alice", 5)]);
        let read = d.writes.iter().find(|w| matches!(w, Write::Read { .. }));
        assert_eq!(read, Some(&Write::Read { room: "r".into(), user: "alice".into(), seq: 5, at: 14 }));
    }

    #[test]
    fn a_non_member_cannot_set_a_read_marker() {
        let d = run(room_r(&[], 10), &[read(11, "r", "alice", 3)]);
        assert!(d.writes.is_empty());
        assert_eq!(replies(&d)[0]["error"]["code"], "not_member");
    }

    #[test]
    fn typing_tells_everyone_but_the_typist_and_stores_nothing() {
        let d = run(room_r(&["alice"], 0), &[typing(1, "r", "alice"), typing(2, "r", "bob")]);
        assert!(d.writes.is_empty());
        let Effect::Event { audience, .. } = &d.effects[0] else { panic!("an event first: {:?}", d.effects) };
        assert_eq!(*audience, Audience::MembersExcept("alice".into()));
        assert_eq!(events(&d).len(), 1);
        assert_eq!(replies(&d)[1]["error"]["code"], "not_member");
        assert_eq!(d.outcomes, [("typing", "ok"), ("typing", "not_member")]);
    }

    #[test]
    fn a_join_past_the_users_room_limit_is_forbidden_and_a_leave_frees_a_place() {
        let mut view = room_r(&["alice"], 0);
        view.room_counts.insert("alice".into(), 1000);
        let d =
            run(view, &[join(1, "s", "alice"), join(2, "r", "alice"), leave(3, "r", "alice"), join(4, "s", "alice")]);
        let codes: Vec<Value> = replies(&d).iter().map(|r| r["error"]["code"].clone()).collect();
        assert_eq!(codes, [json!("forbidden"), Value::Null, Value::Null, Value::Null], "{:?}", replies(&d));
        assert_eq!(
            d.writes.iter().filter(|w| matches!(w, Write::Join { room, .. } if room == "s")).count(),
            1,
            "only the join after the leave is stored"
        );
        assert_eq!(d.outcomes[0], ("join", "forbidden"));
    }

    #[test]
    fn joins_in_one_batch_count_towards_the_limit() {
        let mut view = View::default();
        view.room_counts.insert("alice".into(), 998);
        let d = run(view, &[join(1, "a", "alice"), join(2, "b", "alice"), join(3, "c", "alice")]);
        let oks: Vec<bool> = replies(&d).iter().map(|r| r["ok"] == true).collect();
        assert_eq!(oks, [true, true, false]);
    }

    #[test]
    fn a_dms_first_message_needs_a_place_for_both_users() {
        let room = "dm:alice:bob";
        let mut view = with_accounts(&["alice", "bob"]);
        view.room_counts.insert("bob".into(), 1000);
        let d = run(view.clone(), &[send(1, room, "alice", "c1")]);
        assert!(d.writes.is_empty(), "{:?}", d.writes);
        let reply = &replies(&d)[0];
        assert_eq!(reply["error"]["code"], "forbidden");
        assert!(reply["error"]["message"].as_str().unwrap().contains("'bob'"), "{reply}");

        // Once the DM exists, its messages add no room.
        view.rooms.insert(room.into(), RoomState { last_seq: 5, exists: true, members: 2, ..Default::default() });
        let d = run(view, &[send(6, room, "alice", "c2")]);
        assert_eq!(replies(&d)[0]["ok"], true);
    }

    #[test]
    fn replies_go_to_the_origin_session_and_records_without_one_get_none() {
        let mut quiet = send(2, "r", "alice", "c2");
        quiet.record.origin = None;
        let d = run(room_r(&[], 0), &[send(1, "r", "alice", "c1"), quiet]);
        let answers: Vec<&Effect> = d.effects.iter().filter(|e| matches!(e, Effect::Reply { .. })).collect();
        let [Effect::Reply { gateway, delivery: Delivery::Reply { session, frame, .. } }] = answers[..] else {
            panic!("one reply: {answers:?}")
        };
        assert_eq!((gateway.as_str(), *session), ("gw-1", 7));
        let frame: Value = serde_json::from_str(frame).unwrap();
        assert_eq!((frame["re"].as_u64(), frame["ok"].as_bool()), (Some(1), Some(false)));
        assert_eq!(d.outcomes.len(), 2, "both are counted");
    }
}
