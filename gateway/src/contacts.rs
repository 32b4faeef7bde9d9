//! Contacts and blocks (docs/protocol.md, "Accounts: contacts and blocks").
//! Neither belongs to any room's order, so the gateway reads and writes
//! them in the store itself, like profiles.
//!
//! * A `contact` event goes to both users' sessions: here at once, and on
//!   other gateways through a [`Announcement::Relations`].
//! * Each gateway keeps the block lists of its local users ([`Blocks`]),
//!   read when a user's session opens and again when a `Relations`
//!   announcement says they changed, so that delivering a `typing` or
//!   `presence` event never waits for the store. (A DM's refusal is the
//!   dispatcher's, from the store.)

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use confab_protocol::event::ReplyBody;
use confab_protocol::record::Announcement;
use confab_protocol::validate::dm_room;
use confab_protocol::{Command, ContactEntry, ContactStatus, ErrorCode, Event, IngressRecord, ProtocolError};

use crate::Gateway;
use crate::ops::store_error;

/// The users each local user blocked.
#[derive(Default)]
pub struct Blocks {
    by_user: RwLock<HashMap<String, HashSet<String>>>,
}

impl Blocks {
    pub fn set(&self, user: &str, blocked: Vec<String>) {
        let mut map = self.by_user.write().expect("blocks lock");
        if blocked.is_empty() {
            map.remove(user);
        } else {
            map.insert(user.to_owned(), blocked.into_iter().collect());
        }
    }

    pub fn forget(&self, user: &str) {
        self.by_user.write().expect("blocks lock").remove(user);
    }

    /// Did `user` (a local user) block `other`?
    pub fn blocked(&self, user: &str, other: &str) -> bool {
        self.by_user.read().expect("blocks lock").get(user).is_some_and(|b| b.contains(other))
    }
}

fn forbidden(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::Forbidden, message)
}

fn other_user(user: &str, other: &str) -> Result<(), ProtocolError> {
    if user == other {
        return Err(ProtocolError::bad_request("name another user"));
    }
    Ok(())
}

impl Gateway {
    /// `contact_add`: asks, or accepts the other's ask.
    pub(crate) async fn contact_add(&self, user: &str, other: &str) -> Result<ReplyBody, ProtocolError> {
        other_user(user, other)?;
        self.check_user(other).await?;
        let store = &self.inner.store;
        let (mine, theirs) =
            tokio::try_join!(store.is_blocked(user, other), store.is_blocked(other, user)).map_err(store_error)?;
        if mine {
            return Err(forbidden(format!("you blocked '{other}': unblock them first")));
        }
        if theirs {
            return Err(forbidden(format!("'{other}' does not take your contact requests")));
        }
        let max = self.config().max_contacts;
        let before = self.relation(user, other).await?;
        if !store.contact_ask(user, other, max).await.map_err(store_error)? {
            return Err(forbidden(format!("you or '{other}' have {max} contacts, the most a user may have")));
        }
        let status = self.relation(user, other).await?;
        if status != before {
            self.tell_contact(user, other, status).await;
        }
        Ok(ReplyBody::Contact { user: other.to_owned(), status })
    }

    /// `contact_remove`: withdraws an ask, declines one, or ends a mutual relation.
    pub(crate) async fn contact_remove(&self, user: &str, other: &str) -> Result<ReplyBody, ProtocolError> {
        other_user(user, other)?;
        let had = self.relation(user, other).await?;
        self.inner.store.contact_end(user, other).await.map_err(store_error)?;
        if had != ContactStatus::None {
            self.tell_contact(user, other, ContactStatus::None).await;
        }
        Ok(ReplyBody::Empty {})
    }

    /// `contacts`, by name; only mutual contacts show as online.
    pub(crate) async fn contacts(&self, user: &str) -> Result<ReplyBody, ProtocolError> {
        let records = self.inner.store.contacts(user).await.map_err(store_error)?;
        let contacts = records
            .into_iter()
            .map(|c| {
                let status = c.status();
                let online = status == ContactStatus::Mutual && self.is_online(&c.other);
                ContactEntry { user: c.other, status, online }
            })
            .collect();
        Ok(ReplyBody::Contacts { contacts })
    }

    /// `block`: also ends any contact relation between the two.
    pub(crate) async fn block(&self, user: &str, other: &str) -> Result<ReplyBody, ProtocolError> {
        other_user(user, other)?;
        self.check_user(other).await?;
        let store = &self.inner.store;
        let max = self.config().max_blocks;
        if !store.block(user, other, max).await.map_err(store_error)? {
            return Err(forbidden(format!("you blocked {max} users, the most a user may block")));
        }
        self.blocks_changed(user).await?;
        let had = self.relation(user, other).await?;
        store.contact_end(user, other).await.map_err(store_error)?;
        if had != ContactStatus::None {
            self.tell_contact(user, other, ContactStatus::None).await;
        }
        // Last, so a failure here leaves only this to retry.
        self.block_changed(user, other).await?;
        Ok(ReplyBody::Empty {})
    }

    pub(crate) async fn unblock(&self, user: &str, other: &str) -> Result<ReplyBody, ProtocolError> {
        other_user(user, other)?;
        self.inner.store.unblock(user, other).await.map_err(store_error)?;
        self.blocks_changed(user).await?;
        self.block_changed(user, other).await?;
        Ok(ReplyBody::Empty {})
    }

    pub(crate) async fn blocks(&self, user: &str) -> Result<ReplyBody, ProtocolError> {
        let blocked = self.inner.store.blocks(user).await.map_err(store_error)?;
        Ok(ReplyBody::Blocked { blocked })
    }

    /// Where `user` stands with `other`, as `user` sees it.
    async fn relation(&self, user: &str, other: &str) -> Result<ContactStatus, ProtocolError> {
        let records = self.inner.store.contacts(user).await.map_err(store_error)?;
        Ok(records.iter().find(|c| c.other == other).map_or(ContactStatus::None, |c| c.status()))
    }

    /// Tells both sides' sessions, on every gateway, where they now stand:
    /// `status` is `user`'s view, and `other` gets the mirror of it.
    pub(crate) async fn tell_contact(&self, user: &str, other: &str, status: ContactStatus) {
        let mirror = match status {
            ContactStatus::PendingIn => ContactStatus::PendingOut,
            ContactStatus::PendingOut => ContactStatus::PendingIn,
            s => s,
        };
        for (to, about, status) in [(user, other, status), (other, user, mirror)] {
            let frame = Event::Contact { user: about.to_owned(), status }.encode();
            self.to_user(to, &frame);
            self.announce_relations(to, Some(frame), false).await;
        }
    }

    /// `user`'s block list changed: re-read it here and on every gateway.
    async fn blocks_changed(&self, user: &str) -> Result<(), ProtocolError> {
        self.reload_blocks(user).await;
        self.announce_relations(user, None, true).await;
        Ok(())
    }

    /// Tells the dispatcher of the two users' DM, in the DM's order, that
    /// `user`'s block of `other` changed (it remembers blocks): every DM
    /// message sent after the reply is decided by the stored block.
    async fn block_changed(&self, user: &str, other: &str) -> Result<(), ProtocolError> {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let cmd = Command::BlockChanged { user: user.into(), other: other.into() };
        let record = IngressRecord { room: dm_room(user, other), ts, origin: None, cmd };
        match tokio::time::timeout(self.config().produce_timeout, self.inner.bus.produce(&record)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(ProtocolError::unavailable("the block is stored but not yet in force everywhere; retry")),
        }
    }

    /// Re-reads a local user's block list.
    pub(crate) async fn reload_blocks(&self, user: &str) {
        if !self.inner.registry.is_local(user) {
            return;
        }
        match self.inner.store.blocks(user).await {
            Ok(blocked) => self.inner.blocks.set(user, blocked),
            Err(e) => tracing::warn!(error = %e, "cannot read a user's blocks"),
        }
    }

    /// Hands an encoded event to every local session of `user`.
    pub(crate) fn to_user(&self, user: &str, frame: &str) {
        let bytes = Utf8Bytes::from(frame);
        self.inner.registry.for_user(user, |s| {
            if !s.send(bytes.clone()) {
                self.inner.metrics.slow_consumers.inc();
            }
        });
    }

    async fn announce_relations(&self, user: &str, frame: Option<String>, blocks: bool) {
        let a = Announcement::Relations { gateway: self.id().into(), user: user.into(), frame, blocks };
        if let Err(e) = self.inner.bus.announce(&a).await {
            tracing::warn!(error = %e, "cannot announce a change of contacts or blocks");
        }
    }

    /// Did local user `user` block `other`?
    pub(crate) fn has_blocked(&self, user: &str, other: &str) -> bool {
        self.inner.blocks.blocked(user, other)
    }
}
