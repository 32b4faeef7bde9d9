//! Account deletion (`DELETE /v1/account`, docs/protocol.md): the account
//! becomes a tombstone, its sessions close, its contacts and blocks go, and
//! each of its rooms gets an erase record on the ingress log.
//!
//! Erasure is per room because a user's messages live in many rooms, each
//! owned by whichever dispatcher owns its partition: the gateway produces
//! one `Command::Erase` to every room of the user, and that room's
//! dispatcher, in the room's order, makes the user leave (passing ownership
//! on) and blanks their messages in it. Every message the user sent is
//! before the record in its room's log (their sessions are closed and their
//! tokens refused first), so none escapes, and nothing is scanned on any
//! other path: a message costs what it cost before.

use std::time::{SystemTime, UNIX_EPOCH};

use confab_protocol::{Command, ContactStatus, ErrorCode, IngressRecord, ProtocolError};

use crate::Gateway;
use crate::ops::store_error;

impl Gateway {
    /// Erases `user`'s account (its password already checked). Fails
    /// (`unavailable`) only before the account is deleted, or when an erase
    /// record could not be produced; the rest is best effort and logged.
    pub(crate) async fn delete_account(&self, user: &str, now_ms: u64) -> Result<(), ProtocolError> {
        let store = &self.inner.store;
        // Read before the tombstone: afterwards the user has no rooms to
        // list once the erasures ran.
        let (rooms, contacts) =
            tokio::try_join!(store.user_room_names(user), store.contacts(user)).map_err(store_error)?;
        if !store.delete_user(user).await.map_err(store_error)? {
            return Err(ProtocolError::new(ErrorCode::NotFound, format!("no user '{user}'")));
        }
        // No session of the user may send after this; their tokens are refused.
        if let Err(e) = self.revoke(user, now_ms.max(1), None).await {
            tracing::warn!(%user, error = %e.message, "deleted account: revocation not announced everywhere");
        }
        // Their uploads go with them (the sweeper deletes the bytes); their
        // messages lose them with the erasure below.
        if let Err(e) = store.drop_user_uploads(user).await {
            tracing::warn!(%user, error = %e, "deleted account: uploads not dropped");
        }
        for c in contacts {
            if let Err(e) = store.contact_end(user, &c.other).await {
                tracing::warn!(%user, error = %e, "deleted account: a contact was not removed");
                continue;
            }
            self.tell_contact(user, &c.other, ContactStatus::None).await;
        }
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let mut failed = 0;
        for room in rooms {
            let record = IngressRecord { room, ts, origin: None, cmd: Command::Erase { user: user.into() } };
            let mut produced = false;
            // A few tries: the client cannot ask again once the account is gone.
            for attempt in 0..3u32 {
                let bus = self.inner.bus.produce(&record);
                if let Ok(Ok(())) = tokio::time::timeout(self.config().produce_timeout, bus).await {
                    produced = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
            }
            if !produced {
                failed += 1;
                tracing::error!(%user, room = %record.room, "deleted account: the room's erase record was not produced");
            }
        }
        tracing::info!(%user, "account deleted");
        if failed > 0 {
            return Err(ProtocolError::unavailable(format!(
                "the account is deleted, but {failed} of its rooms could not be erased yet"
            )));
        }
        Ok(())
    }
}
