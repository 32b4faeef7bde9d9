//! The push path: how a dispatcher hands deliveries to the gateways that host
//! a room's members, and the wire both ends of it speak.
//!
//! * [`Push`]: the dispatcher's side, one batch of deliveries to one gateway.
//! * [`LocalPush`] ([`local`]): standalone, the gateway in the same process.
//! * [`RemotePush`] ([`remote`]): distributed, one persistent WebSocket to
//!   each gateway's internal port, learnt from the gateways' heartbeats.
//! * [`receive`]: the gateway's end of such a stream. It feeds the same kind
//!   of inbox that [`LocalPush`] fills, so a gateway delivers pushes in one
//!   loop whatever their origin.
//! * The wire, both directions side by side (below): the stream's path, its
//!   credentials ([`InternalKey`]) and the batch codec.

mod local;
mod remote;

use async_trait::async_trait;
use confab_protocol::Delivery;
use confab_protocol::record::Announcement;
use futures_util::{Stream, StreamExt};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, Request, header};

pub use local::LocalPush;
pub use remote::RemotePush;

use crate::Result;

#[async_trait]
pub trait Push: Send + Sync + 'static {
    /// Hands a batch of deliveries to one gateway, in order. An error means
    /// the gateway is gone: its clients reconnect elsewhere and `sync`.
    async fn push(&self, gateway: &str, batch: Vec<Delivery>) -> Result<()>;

    /// Learns where gateways are from their announcements.
    fn learn(&self, _announcement: &Announcement) {}
}

/// Path of the push stream on a gateway's internal port.
pub const PUSH_PATH: &str = "/internal/v1/push";
/// The `aud` of tokens for the internal port; client tokens never carry it.
pub const INTERNAL_AUDIENCE: &str = "confab-internal";
/// Largest frame of a push stream: a batch carries many events.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// The credentials of the internal port, from the cluster's shared secret:
/// dispatchers present a token minted with it, gateways verify it.
#[derive(Clone)]
pub struct InternalKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl InternalKey {
    /// `secret` is the cluster's HS256 secret, shared by gateways and dispatchers.
    pub fn new(secret: &[u8]) -> InternalKey {
        InternalKey { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret) }
    }

    /// A dispatcher's token for every gateway's internal port.
    pub fn mint(&self) -> String {
        #[derive(Serialize)]
        struct Claims<'a> {
            sub: &'a str,
            aud: &'a str,
            exp: u64,
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let claims = Claims { sub: "dispatcher", aud: INTERNAL_AUDIENCE, exp: now + 10 * 365 * 24 * 3600 };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// Accepts the opening request of a push stream only with a token minted
    /// by [`InternalKey::mint`] for this cluster.
    pub fn verify(&self, headers: &HeaderMap) -> Result<(), jsonwebtoken::errors::Error> {
        #[derive(Deserialize)]
        struct Claims {
            #[serde(rename = "sub")]
            _sub: String,
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let mut validation = Validation::new(Algorithm::HS256);
        // Checked when present, not yet required (issue #13 requires it):
        // until then a client token of the same secret passes too.
        validation.set_audience(&[INTERNAL_AUDIENCE]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map(drop)
    }
}

/// The opening request of a push stream to the gateway whose internal port
/// is at `addr` (`host:port`), carrying `token` from [`InternalKey::mint`].
pub fn push_request(addr: &str, token: &str) -> Result<Request<()>, tungstenite::Error> {
    let mut request = format!("ws://{addr}{PUSH_PATH}").into_client_request()?;
    let bearer = HeaderValue::try_from(format!("Bearer {token}")).map_err(tungstenite::http::Error::from)?;
    request.headers_mut().insert(header::AUTHORIZATION, bearer);
    Ok(request)
}

/// One frame of a push stream: a JSON array of deliveries, in order.
pub fn encode_batch(batch: &[Delivery]) -> Vec<u8> {
    serde_json::to_vec(batch).expect("deliveries serialize")
}

/// The batch in one frame of a push stream, as [`encode_batch`] wrote it.
pub fn decode_batch(frame: &[u8]) -> Result<Vec<Delivery>, serde_json::Error> {
    serde_json::from_slice(frame)
}

/// The gateway's end of one push stream: hands each batch to `inbox`, in
/// order, until the stream ends or the inbox is closed. A full inbox holds
/// the stream back, and so the dispatcher's link, whose queue is bounded.
pub async fn receive<S>(frames: S, inbox: &mpsc::Sender<Vec<Delivery>>)
where
    S: Stream,
    S::Item: AsRef<[u8]>,
{
    let mut frames = std::pin::pin!(frames);
    while let Some(frame) = frames.next().await {
        match decode_batch(frame.as_ref()) {
            Ok(batch) => {
                if inbox.send(batch).await.is_err() {
                    // The gateway is stopping.
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "dropping an unreadable push batch"),
        }
    }
}

#[cfg(test)]
mod tests {
    use confab_protocol::Audience;

    use super::*;

    fn reply(session: u64) -> Delivery {
        Delivery::Reply { session, t0: 0, frame: format!("{{\"ok\":{session}}}") }
    }

    fn room_event(frame: &str) -> Delivery {
        Delivery::Room { room: "r".into(), audience: Audience::Members, effect: None, frame: frame.into() }
    }

    fn headers(request: &Request<()>) -> HeaderMap {
        request.headers().clone()
    }

    #[test]
    fn a_batch_reads_back_as_written() {
        let batch = vec![reply(1), room_event("{\"ev\":\"msg\"}"), reply(2)];
        assert_eq!(decode_batch(&encode_batch(&batch)).unwrap(), batch);
    }

    #[test]
    fn a_minted_token_opens_the_push_stream_of_the_same_cluster_only() {
        let key = InternalKey::new(b"cluster secret");
        let request = push_request("10.0.0.7:7070", &key.mint()).unwrap();
        assert_eq!(request.uri().to_string(), format!("ws://10.0.0.7:7070{PUSH_PATH}"));
        key.verify(&headers(&request)).expect("the cluster's own token");

        let other = InternalKey::new(b"another cluster");
        assert!(other.verify(&headers(&request)).is_err(), "a token of another secret");
        assert!(key.verify(&HeaderMap::new()).is_err(), "no token at all");
    }

    #[tokio::test]
    async fn received_batches_reach_the_inbox_in_order_and_unreadable_ones_are_skipped() {
        let (tx, mut rx) = mpsc::channel(8);
        let frames = vec![encode_batch(&[reply(1), reply(2)]), b"not json".to_vec(), encode_batch(&[reply(3)])];
        receive(futures_util::stream::iter(frames), &tx).await;
        assert_eq!(rx.recv().await.unwrap(), vec![reply(1), reply(2)]);
        assert_eq!(rx.recv().await.unwrap(), vec![reply(3)]);
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn receiving_ends_when_the_inbox_is_closed() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        // An endless stream: only the closed inbox can end the loop.
        let frames = futures_util::stream::repeat(encode_batch(&[reply(1)]));
        receive(frames, &tx).await;
    }
}
