//! The dispatcher's side of the push path in the distributed mode: one
//! persistent WebSocket to each live gateway's internal port, learnt from the
//! gateways' heartbeats, carrying batches of deliveries in order. A broken
//! link drops what was in flight (clients notice by `prev_seq` and `sync`)
//! and reconnects with backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use confab_bus::{Error, Push, Result};
use confab_protocol::Delivery;
use confab_protocol::record::Announcement;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Audience and path agreed with the gateway's internal port.
pub const INTERNAL_AUDIENCE: &str = "confab-internal";
pub const PUSH_PATH: &str = "/internal/v1/push";
/// Batches queued for one gateway; beyond that, its batches are dropped.
const LINK_QUEUE: usize = 1024;

#[derive(Clone)]
pub struct RemotePush {
    inner: Arc<Inner>,
}

struct Inner {
    token: String,
    links: Mutex<HashMap<String, Link>>,
}

struct Link {
    addr: String,
    tx: mpsc::Sender<Vec<Delivery>>,
}

impl RemotePush {
    /// `secret` is the cluster's HS256 secret, shared with the gateways.
    pub fn new(secret: &[u8]) -> RemotePush {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            sub: &'a str,
            aud: &'a str,
            exp: u64,
        }
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
            + 10 * 365 * 24 * 3600;
        let claims = Claims { sub: "dispatcher", aud: INTERNAL_AUDIENCE, exp };
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .expect("HS256 signing cannot fail");
        RemotePush { inner: Arc::new(Inner { token, links: Mutex::new(HashMap::new()) }) }
    }

    fn link(&self, gateway: &str, addr: &str) {
        let mut links = self.inner.links.lock().expect("links lock");
        if links.get(gateway).is_some_and(|l| l.addr == addr && !l.tx.is_closed()) {
            return;
        }
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        tokio::spawn(run_link(gateway.to_owned(), addr.to_owned(), self.inner.token.clone(), rx));
        links.insert(gateway.to_owned(), Link { addr: addr.to_owned(), tx });
    }
}

#[async_trait]
impl Push for RemotePush {
    async fn push(&self, gateway: &str, batch: Vec<Delivery>) -> Result<()> {
        let tx = self.inner.links.lock().expect("links lock").get(gateway).map(|l| l.tx.clone());
        match tx {
            // A link that is down or behind never holds up the pipeline (and
            // so every other gateway): the batch is dropped, and the clients
            // behind that gateway repair the gap with `prev_seq` and `sync`.
            Some(tx) => tx.try_send(batch).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    Error::Unavailable(format!("the push link to gateway {gateway} is {LINK_QUEUE} batches behind"))
                }
                mpsc::error::TrySendError::Closed(_) => Error::Closed,
            }),
            None => Err(Error::Unavailable(format!("no address known for gateway {gateway}"))),
        }
    }

    fn learn(&self, announcement: &Announcement) {
        match announcement {
            Announcement::Heartbeat { gateway, addr: Some(addr) } => self.link(gateway, addr),
            Announcement::Gone { gateway } => {
                // Dropping the sender ends the link task.
                self.inner.links.lock().expect("links lock").remove(gateway);
            }
            _ => {}
        }
    }
}

/// Keeps one gateway's link up until its sender is dropped.
async fn run_link(gateway: String, addr: String, token: String, mut rx: mpsc::Receiver<Vec<Delivery>>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut request = match format!("ws://{addr}{PUSH_PATH}").into_client_request() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%gateway, %addr, error = %e, "bad gateway address");
                return;
            }
        };
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header value"));
        match tokio_tungstenite::connect_async(request).await {
            Ok((mut ws, _)) => {
                tracing::info!(%gateway, %addr, "push link up");
                backoff = Duration::from_millis(50);
                loop {
                    let Some(first) = rx.recv().await else {
                        let _ = ws.close(None).await;
                        return;
                    };
                    // Coalesce what is queued into one frame.
                    let mut batch = first;
                    while let Ok(more) = rx.try_recv() {
                        batch.extend(more);
                        if batch.len() >= 4096 {
                            break;
                        }
                    }
                    let bytes = serde_json::to_vec(&batch).expect("deliveries serialize");
                    if let Err(e) = ws.send(Message::Binary(bytes.into())).await {
                        tracing::warn!(%gateway, error = %e, dropped = batch.len(), "push link broke");
                        break;
                    }
                }
            }
            Err(e) => tracing::warn!(%gateway, %addr, error = %e, "cannot reach gateway"),
        }
        if rx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port nothing listens on: the link keeps failing to connect.
    async fn dead_addr() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn a_gateway_that_cannot_be_reached_never_holds_up_pushes() {
        let push = RemotePush::new(b"secret");
        push.learn(&Announcement::Heartbeat { gateway: "gw-dead".into(), addr: Some(dead_addr().await) });
        for _ in 0..LINK_QUEUE {
            push.push("gw-dead", Vec::new()).await.expect("queued while the link retries");
        }
        let Err(Error::Unavailable(why)) = push.push("gw-dead", Vec::new()).await else {
            panic!("a full link refuses the batch at once instead of waiting")
        };
        assert!(why.contains("gw-dead"), "{why}");
    }

    #[tokio::test]
    async fn a_gone_gateway_has_no_link() {
        let push = RemotePush::new(b"secret");
        push.learn(&Announcement::Heartbeat { gateway: "gw-1".into(), addr: Some(dead_addr().await) });
        push.learn(&Announcement::Gone { gateway: "gw-1".into() });
        let Err(Error::Unavailable(why)) = push.push("gw-1", Vec::new()).await else { panic!("no link") };
        assert!(why.contains("no address known"), "{why}");
    }
}
