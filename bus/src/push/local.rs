//! Standalone: the gateway is in the same process, and a push is a send on
//! its bounded inbox.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use confab_protocol::Delivery;
use tokio::sync::mpsc;

use super::Push;
use crate::{Error, Result};

/// Gateways in this process, each with a bounded inbox.
#[derive(Clone, Default)]
pub struct LocalPush {
    gateways: Arc<RwLock<HashMap<String, mpsc::Sender<Vec<Delivery>>>>>,
}

impl LocalPush {
    /// Registers a gateway by the sending end of its inbox.
    pub fn register(&self, gateway: &str, inbox: mpsc::Sender<Vec<Delivery>>) {
        self.gateways.write().expect("push lock").insert(gateway.to_owned(), inbox);
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
