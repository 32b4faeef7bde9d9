//! A message's life after it was sent (docs/protocol.md, "Message
//! lifecycle"): `edit`, `delete` and `react` go to the room's log like every
//! write; `edits` and the `changes` part of `sync` are read here.

use std::collections::BTreeSet;

use confab_protocol::event::ReplyBody;
use confab_protocol::{Command, Message, Op, ProtocolError, RequestId};

use crate::Gateway;
use crate::ops::{Budget, store_error};
use crate::registry::SessionHandle;

/// What `sync` found for one room's `changes`.
pub struct Changed {
    /// The current state of the changed messages up to `after`, in seq order.
    pub messages: Vec<Message>,
    /// The change position the device reaches with them.
    pub change_pos: u64,
    /// The reply budget stopped them short.
    pub more: bool,
}

impl Gateway {
    /// `edit`, `delete`, `react` (produced) and `edits` (read); `None` for other ops.
    pub(crate) async fn lifecycle(
        &self,
        s: &SessionHandle,
        re: Option<RequestId>,
        op: Op,
    ) -> Option<Result<Option<ReplyBody>, ProtocolError>> {
        let user = &*s.user;
        let (room, cmd) = match op {
            Op::Edit { room, seq, text } => (room, Command::Edit { by: user.into(), seq, text }),
            Op::Delete { room, seq } => (room, Command::Delete { by: user.into(), seq }),
            Op::React { room, seq, emoji, remove } => {
                (room, Command::React { user: user.into(), seq, emoji, remove: remove.unwrap_or(false) })
            }
            Op::Edits { room, seq } => return Some(self.edits(user, &room, seq).await),
            _ => return None,
        };
        Some(
            async {
                self.check_dm(&room, user).await?;
                self.produce(s, re, room, cmd, false).await
            }
            .await,
        )
    }

    async fn edits(&self, user: &str, room: &str, seq: u64) -> Result<Option<ReplyBody>, ProtocolError> {
        self.check_member(room, user).await?;
        // A message past its room's retention is gone with its versions,
        // which the CQL store may still hold (docs/security.md, "Known gaps").
        let cutoff = self.retention_cutoff(room).await?;
        if let Some(cutoff) = cutoff {
            let state = self.inner.store.message(room, seq).await.map_err(store_error)?;
            if state.is_none_or(|s| s.message.ts < cutoff) {
                return Ok(Some(ReplyBody::Edits { versions: Vec::new() }));
            }
        }
        // At most MAX_VERSIONS versions of at most `max_text` bytes each.
        let versions = self.inner.store.edits(room, seq).await.map_err(store_error)?;
        Ok(Some(ReplyBody::Edits { versions }))
    }

    /// The part of `sync` for a room with `changes`: the messages up to
    /// `after` changed at positions past `pos`, read from the change log
    /// `log` (read before the room's new messages, so that any change the
    /// log missed has a later position than the one reached here).
    pub(crate) async fn changed_since(
        &self,
        room: &str,
        after: u64,
        pos: u64,
        log: (Vec<(u64, u64)>, bool),
        cutoff: Option<u64>,
        budget: &mut Budget,
    ) -> Result<Changed, ProtocolError> {
        let (log, mut more) = log;
        let mut reached = pos;
        let mut seen = BTreeSet::new();
        let mut messages = Vec::new();
        for (change, seq) in log {
            // A message past `after` is in the reply's (or the next sync's)
            // `messages`, in its current state.
            if seq <= after && seen.insert(seq) {
                let Some(state) = self.inner.store.message(room, seq).await.map_err(store_error)? else {
                    continue;
                };
                // Past the room's retention (see `retention_cutoff`): gone for the client.
                if cutoff.is_some_and(|cutoff| state.message.ts < cutoff) {
                    continue;
                }
                if !budget.take(&state.message) {
                    more = true;
                    break;
                }
                messages.push(state.message);
            }
            reached = change;
        }
        messages.sort_by_key(|m| m.seq);
        Ok(Changed { messages, change_pos: reached.max(pos), more })
    }
}
