//! Distributed: the dispatcher's links, one persistent WebSocket to each
//! live gateway's internal port, learnt from the gateways' heartbeats,
//! carrying batches of deliveries in order. A broken link drops what was in
//! flight (clients notice by `prev_seq` and `sync`) and reconnects with
//! backoff, presenting a freshly minted, short-lived token each time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use confab_protocol::Delivery;
use confab_protocol::record::Announcement;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::{InternalKey, Push, encode_batch, push_request};
use crate::{Error, Result};

/// Batches queued for one gateway; beyond that, its batches are dropped.
const LINK_QUEUE: usize = 1024;

#[derive(Clone)]
pub struct RemotePush {
    inner: Arc<Inner>,
}

struct Inner {
    key: InternalKey,
    links: Mutex<HashMap<String, Link>>,
}

struct Link {
    addr: String,
    tx: mpsc::Sender<Vec<Delivery>>,
}

impl RemotePush {
    /// `secret` is the cluster's HS256 secret, shared with the gateways.
    pub fn new(secret: &[u8]) -> RemotePush {
        RemotePush { inner: Arc::new(Inner { key: InternalKey::new(secret), links: Mutex::new(HashMap::new()) }) }
    }

    fn link(&self, gateway: &str, addr: &str) {
        let mut links = self.inner.links.lock().expect("links lock");
        if links.get(gateway).is_some_and(|l| l.addr == addr && !l.tx.is_closed()) {
            return;
        }
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        tokio::spawn(run_link(gateway.to_owned(), addr.to_owned(), self.inner.key.clone(), rx));
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
async fn run_link(gateway: String, addr: String, key: InternalKey, mut rx: mpsc::Receiver<Vec<Delivery>>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        // Tokens are short-lived: each connection gets its own.
        let request = match push_request(&addr, &key.mint()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%gateway, %addr, error = %e, "bad gateway address");
                return;
            }
        };
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
                    if let Err(e) = ws.send(Message::Binary(encode_batch(&gateway, &batch).into())).await {
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
    use std::future::ready;

    use confab_protocol::Audience;
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::http::StatusCode;

    use super::*;
    use crate::push::receive;

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

    fn event(n: u64) -> Delivery {
        Delivery::Room { room: "r".into(), audience: Audience::Members, effect: None, frame: format!("{{\"n\":{n}}}") }
    }

    /// A gateway's internal port in miniature: checks the link's token, then
    /// feeds what arrives into an inbox. Also returns the refusals.
    async fn gateway(secret: &'static [u8]) -> (String, mpsc::Receiver<Vec<Delivery>>, mpsc::UnboundedReceiver<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::channel(16);
        let (refused_tx, refused_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let key = InternalKey::new(secret);
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                // The signature is tungstenite's.
                #[allow(clippy::result_large_err)]
                let check = |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| match key
                    .verify(request.headers())
                {
                    Ok(()) => Ok(response),
                    Err(_) => {
                        let _ = refused_tx.send(());
                        let mut refused = tokio_tungstenite::tungstenite::handshake::server::ErrorResponse::new(None);
                        *refused.status_mut() = StatusCode::UNAUTHORIZED;
                        Err(refused)
                    }
                };
                let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else { continue };
                let frames = ws.filter_map(|m| ready(m.ok().filter(Message::is_binary).map(Message::into_data)));
                receive(frames, "gw-1", &tx, || {}).await;
            }
        });
        (addr, rx, refused_rx)
    }

    #[tokio::test]
    async fn pushes_reach_the_gateway_inbox_in_order() {
        let (addr, mut inbox, _) = gateway(b"secret").await;
        let push = RemotePush::new(b"secret");
        push.learn(&Announcement::Heartbeat { gateway: "gw-1".into(), addr: Some(addr) });
        for n in 0..100 {
            push.push("gw-1", vec![event(n)]).await.unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 100 {
            let batch = tokio::time::timeout(Duration::from_secs(10), inbox.recv()).await.expect("pushes arrive");
            got.extend(batch.unwrap());
        }
        assert_eq!(got, (0..100).map(event).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_gateway_of_another_cluster_gets_nothing() {
        let (addr, mut inbox, mut refused) = gateway(b"their secret").await;
        let push = RemotePush::new(b"our secret");
        push.learn(&Announcement::Heartbeat { gateway: "gw-1".into(), addr: Some(addr) });
        push.push("gw-1", vec![event(1)]).await.unwrap();
        // Refused, and refused again when the link retries.
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(10), refused.recv()).await.expect("the link tries").unwrap();
        }
        assert!(inbox.try_recv().is_err(), "nothing delivered");
    }

    #[tokio::test]
    async fn a_link_presents_a_fresh_token_each_time_it_reconnects() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tokens_tx, mut tokens) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let tokens_tx = tokens_tx.clone();
                #[allow(clippy::result_large_err)]
                let record = move |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
                    let _ = tokens_tx.send(request.headers().clone());
                    Ok(response)
                };
                // Each connection is dropped after its first frame: the link
                // has to reconnect.
                if let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await {
                    let _ = ws.next().await;
                }
            }
        });
        let push = RemotePush::new(b"secret");
        push.learn(&Announcement::Heartbeat { gateway: "gw-1".into(), addr: Some(addr) });
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let _ = push.push("gw-1", vec![event(1)]).await;
            if let Ok(headers) = tokio::time::timeout(Duration::from_millis(50), tokens.recv()).await {
                seen.push(headers.unwrap());
            }
        }
        let key = InternalKey::new(b"secret");
        for headers in &seen {
            key.verify(headers).expect("a valid internal token");
        }
        assert_ne!(seen[0].get("authorization"), seen[1].get("authorization"), "minted anew for the reconnection");
    }
}
