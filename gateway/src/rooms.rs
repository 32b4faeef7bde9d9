//! The room reads of docs/protocol.md's "Rooms" section, answered from the
//! store: `room_info`, `members`, `directory`, and the invitations `rooms`
//! lists. Who may read what: public rooms anyone, private rooms members.
//! (Every room write goes to the dispatcher, which decides it in the room's
//! order: see `ops`.)

use confab_protocol::event::ReplyBody;
use confab_protocol::rooms::{DEFAULT_DIRECTORY_LIMIT, DEFAULT_MEMBERS_LIMIT, DirectoryEntry};
use confab_protocol::{ErrorCode, ProtocolError, Role, RoomInfo, Visibility};
use confab_store::RoomSettings;

use crate::Gateway;
use crate::ops::store_error;

/// Public rooms a `directory` page with a `query` looks at, at most.
pub const DIRECTORY_SCAN: usize = 10_000;
/// Rooms read from the store at a time while scanning the directory.
const DIRECTORY_CHUNK: u32 = 500;

impl Gateway {
    /// The caller's role in a room they may read about (`None`: not a
    /// member of a public room); `not_found` when there is no such room,
    /// `forbidden` for a private room of which the caller is not a member.
    async fn readable(&self, room: &str, user: &str) -> Result<(u64, Option<Role>, RoomSettings), ProtocolError> {
        let store = &self.inner.store;
        let (meta, settings, member) =
            tokio::try_join!(store.room(room), store.room_settings(room), store.member(room, user))
                .map_err(store_error)?;
        let Some(meta) = meta else {
            return Err(ProtocolError::new(ErrorCode::NotFound, format!("no room '{room}'")));
        };
        let settings = settings.unwrap_or_default();
        if settings.visibility == Visibility::Private && member.is_none() {
            return Err(ProtocolError::new(ErrorCode::Forbidden, format!("'{room}' is private: members only")));
        }
        Ok((meta.members, member.map(|m| m.role), settings))
    }

    pub(crate) async fn room_info(&self, room: String, user: &str) -> Result<ReplyBody, ProtocolError> {
        let (members, role, settings) = self.readable(&room, user).await?;
        let retention_days = self.config().retention.days(settings.retention_days);
        let RoomSettings { name, topic, visibility, .. } = settings;
        Ok(ReplyBody::RoomInfo { room, name, topic, visibility, members, role, retention_days })
    }

    pub(crate) async fn members(
        &self,
        room: &str,
        user: &str,
        after: Option<String>,
        limit: Option<u32>,
    ) -> Result<ReplyBody, ProtocolError> {
        self.readable(room, user).await?;
        let limit = limit.unwrap_or(DEFAULT_MEMBERS_LIMIT);
        // One more than asked tells whether another page follows.
        let mut members =
            self.inner.store.members_page(room, after.as_deref(), limit + 1).await.map_err(store_error)?;
        let next = if members.len() > limit as usize {
            members.truncate(limit as usize);
            members.last().map(|m| m.user.clone())
        } else {
            None
        };
        Ok(ReplyBody::Members { members, next })
    }

    pub(crate) async fn directory(
        &self,
        query: Option<String>,
        after: Option<String>,
        limit: Option<u32>,
    ) -> Result<ReplyBody, ProtocolError> {
        let store = &self.inner.store;
        let limit = limit.unwrap_or(DEFAULT_DIRECTORY_LIMIT) as usize;
        let query = query.map(|q| q.to_lowercase()).filter(|q| !q.is_empty());
        let mut found = Vec::new();
        let mut cursor = after;
        let mut scanned = 0;
        let next = loop {
            let chunk = if query.is_some() { DIRECTORY_CHUNK } else { (limit - found.len()) as u32 + 1 };
            let page = store.public_rooms(cursor.as_deref(), chunk).await.map_err(store_error)?;
            let exhausted = page.len() < chunk as usize;
            for public in page {
                if found.len() == limit {
                    break;
                }
                scanned += 1;
                cursor = Some(public.room.clone());
                let matches = query
                    .as_deref()
                    .is_none_or(|q| public.room.to_lowercase().contains(q) || public.name.to_lowercase().contains(q));
                if matches {
                    found.push(public);
                }
            }
            if found.len() == limit {
                // Another page follows if any public room comes after.
                let more = !store.public_rooms(cursor.as_deref(), 1).await.map_err(store_error)?.is_empty();
                break more.then_some(cursor).flatten();
            }
            if exhausted {
                break None;
            }
            if scanned >= DIRECTORY_SCAN {
                break cursor;
            }
        };
        let mut rooms = Vec::with_capacity(found.len());
        for public in found {
            let members = store.room(&public.room).await.map_err(store_error)?.map_or(0, |m| m.members);
            rooms.push(DirectoryEntry { room: public.room, name: public.name, topic: public.topic, members });
        }
        Ok(ReplyBody::Directory { rooms, next })
    }

    /// The user's rooms, then the rooms they are invited to and not in.
    pub(crate) async fn rooms_with_invitations(&self, user: &str) -> Result<Vec<RoomInfo>, ProtocolError> {
        let store = &self.inner.store;
        let (mut rooms, invitations) =
            tokio::try_join!(store.user_rooms(user), store.invitations(user)).map_err(store_error)?;
        for room in invitations {
            if rooms.iter().any(|r| r.room == room) {
                continue;
            }
            let last_seq = store.room(&room).await.map_err(store_error)?.map_or(0, |m| m.last_seq);
            rooms.push(RoomInfo { room, last_seq, invited: true, ..RoomInfo::default() });
        }
        Ok(rooms)
    }
}
