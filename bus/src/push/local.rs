//! The direct path from a dispatcher to the gateways that host a room's
//! members. Standalone, the one gateway is in the same process
//! ([`LocalPush`]); distributed, each gateway is reached over its internal port.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use confab_protocol::Delivery;
use tokio::sync::mpsc;

use crate::{Error, Result};

#[async_trait]
pub trait Push: Send + Sync + 'static {
    /// Hands a batch of deliveries to one gateway, in order. An error means
    /// the gateway is gone: its clients reconnect elsewhere and `sync`.
    async fn push(&self, gateway: &str, batch: Vec<Delivery>) -> Result<()>;

    /// Learns where gateways are from their announcements.
    fn learn(&self, _announcement: &confab_protocol::record::Announcement) {}
}

/// Gateways in this process, each with a bounded inbox.
#[derive(Clone, Default)]
pub struct LocalPush {
    gateways: Arc<RwLock<HashMap<String, mpsc::Sender<Vec<Delivery>>>>>,
}

impl LocalPush {
    /// Registers a gateway and returns its inbox.
    pub fn register(&self, gateway: &str, capacity: usize) -> mpsc::Receiver<Vec<Delivery>> {
        let (tx, rx) = mpsc::channel(capacity);
        self.gateways.write().expect("push lock").insert(gateway.to_owned(), tx);
        rx
    }
}

#[async_trait]
impl Push for LocalPush {
    async fn push(&self, gateway: &str, batch: Vec<Delivery>) -> Result<()> {
        let tx = self.gateways.read().expect("push lock").get(gateway).cloned();
        match tx {
            Some(tx) => tx.send(batch).await.map_err(|_| Error::Closed),
            None => Err(Error::Unavailable(format!("no gateway {gateway}"))),
        }
    }
}
