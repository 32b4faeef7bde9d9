//! A gateway's id is its address on the push path (dispatchers route
//! replies and events by it, and session numbers are per gateway), so two
//! live gateways must never share one. A starting gateway asks every live
//! gateway to heartbeat and refuses its id if another one answers under it.

use std::time::Duration;

use confab_protocol::record::Announcement;

use crate::Gateway;

/// How long a starting gateway listens for an answer: live gateways answer
/// the request at once, so this is the bus's round trip with a margin.
pub const ID_CHECK: Duration = Duration::from_secs(2);

/// Another live gateway already announces this gateway's id.
#[derive(Debug, thiserror::Error)]
#[error(
    "server id '{id}' is already announced by a live gateway (internal address {addr}); \
     give every gateway its own --server-id, or leave it unset"
)]
pub struct DuplicateId {
    pub id: String,
    pub addr: String,
}

impl Gateway {
    /// Before this gateway announces anything: asks every gateway to
    /// heartbeat ([`Announcement::Resync`] under this id, which
    /// [`presence::follow`](crate::presence::follow) answers even from a
    /// gateway of the same id) and listens for [`ID_CHECK`]. A heartbeat
    /// under this id from another internal address is a live namesake. If
    /// the announcements cannot be read, nothing is refused: the gateway
    /// runs without presence across gateways then anyway, and says so.
    pub async fn ensure_unique_id(&self) -> Result<(), DuplicateId> {
        let bus = &self.inner.bus;
        let Ok(mut rx) = bus.announcements().await else { return Ok(()) };
        if let Err(e) = bus.announce(&Announcement::Resync { gateway: self.id().into() }).await {
            tracing::warn!(error = %e, "cannot ask the gateways for their ids");
            return Ok(());
        }
        let mine = self.config().internal_addr.as_deref();
        let listen = async {
            while let Some(a) = rx.recv().await {
                if let Announcement::Heartbeat { gateway, addr } = a
                    && gateway == self.id()
                    && addr.as_deref() != mine
                {
                    return Err(DuplicateId { id: gateway, addr: addr.unwrap_or_else(|| "none".into()) });
                }
            }
            Ok(())
        };
        tokio::time::timeout(ID_CHECK, listen).await.unwrap_or(Ok(()))
    }
}
