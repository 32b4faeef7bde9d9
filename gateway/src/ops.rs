//! One client request: reads are answered from the store here; writes become
//! ingress records on the bus, and their reply comes back from the
//! dispatcher once stored (see `delivery`).

use std::time::{SystemTime, UNIX_EPOCH};

use confab_protocol::event::{ReplyBody, SyncRoom};
use confab_protocol::request::{DEFAULT_HISTORY_LIMIT, DEFAULT_SYNC_LIMIT, Target};
use confab_protocol::validate::{dm_members, dm_room};
use confab_protocol::{
    Command, ErrorCode, IngressRecord, Message, Op, Origin, ProtocolError, Reply, Request, RequestId,
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
                let rooms = store.user_rooms(user).await.map_err(store_error)?;
                Ok(Some(ReplyBody::Rooms { rooms }))
            }
            Op::History { room, before, limit } => {
                let messages = self.history(user, &room, before, limit).await?;
                Ok(Some(ReplyBody::Messages { messages }))
            }
            Op::Sync { rooms, limit } => {
                let limit = limit.unwrap_or(DEFAULT_SYNC_LIMIT);
                let mut out = std::collections::BTreeMap::new();
                for (room, last_seq) in rooms {
                    self.check_member(&room, user).await?;
                    let (messages, more) = store.since(&room, last_seq, limit).await.map_err(store_error)?;
                    out.insert(room, SyncRoom { messages, more });
                }
                Ok(Some(ReplyBody::Sync { rooms: out }))
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
                let online = members.into_iter().filter(|m| self.is_online(m)).collect();
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
                    Some(Target::Room(room)) => {
                        self.check_dm(room, user).await?;
                        room.to_owned()
                    }
                    Some(Target::User(to)) => {
                        if to == user {
                            return Err(ProtocolError::bad_request("a direct message needs another user"));
                        }
                        self.check_user(to).await?;
                        dm_room(user, to)
                    }
                    None => {
                        return Err(ProtocolError::bad_request("send takes exactly one of `room` and `to`"));
                    }
                };
                let Op::Send { text, cid, .. } = req.op else { unreachable!("matched above") };
                self.produce(s, req.id, room, Command::Send { from: user.into(), text, cid }, true).await
            }
        }
    }

    /// `history`, for the WebSocket op and the HTTP endpoint alike.
    pub async fn history(
        &self,
        user: &str,
        room: &str,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<Vec<Message>, ProtocolError> {
        self.check_member(room, user).await?;
        let limit = limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
        self.inner.store.history(room, before, limit).await.map_err(store_error)
    }

    /// Reads need membership; a DM's two parties are its members even before
    /// its first message.
    async fn check_member(&self, room: &str, user: &str) -> Result<(), ProtocolError> {
        if dm_members(room).is_some() {
            return self.check_dm(room, user).await;
        }
        match self.inner.store.is_member(room, user).await.map_err(store_error)? {
            true => Ok(()),
            false => Err(ProtocolError::not_member(room)),
        }
    }

    /// A DM id must name the caller and a user who has an account: a DM
    /// with a name nobody holds yet would be inherited by whoever registers
    /// it. Not a DM id: nothing to check here.
    async fn check_dm(&self, room: &str, user: &str) -> Result<(), ProtocolError> {
        match dm_members(room) {
            None => Ok(()),
            Some((a, b)) if user == a => self.check_user(b).await,
            Some((a, b)) if user == b => self.check_user(a).await,
            Some(_) => Err(ProtocolError::not_member(room)),
        }
    }

    async fn check_user(&self, name: &str) -> Result<(), ProtocolError> {
        match self.inner.store.user(name).await.map_err(store_error)? {
            Some(_) => Ok(()),
            None => Err(ProtocolError::new(ErrorCode::NotFound, format!("no user '{name}'"))),
        }
    }

    async fn produce(
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
