//! The push path: how a dispatcher hands deliveries to the gateways that host
//! a room's members, and the wire both ends of it speak.
//!
//! * [`Push`]: the dispatcher's side, one batch of deliveries to one gateway.
//! * [`LocalPush`] ([`local`]): standalone, the gateway in the same process.
//! * [`RemotePush`] ([`remote`]): distributed, one persistent WebSocket to
//!   each gateway's internal port, learnt from the gateways' heartbeats;
//!   over TLS when the dispatcher is given a CA for the push link.
//! * [`receive`]: the gateway's end of such a stream. It feeds the same kind
//!   of inbox that [`LocalPush`] fills, so a gateway delivers pushes in one
//!   loop whatever their origin.
//! * The wire, both directions side by side (below): the stream's path, its
//!   credentials ([`InternalKey`]) and the batch codec. Every batch names
//!   the gateway it is for, and [`receive`] drops batches for another: an
//!   address that moved to another gateway, or two gateways with one id,
//!   never hand a session's replies to the wrong user.

mod local;
mod remote;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use confab_protocol::Delivery;
use confab_protocol::record::Announcement;
use futures_util::{Stream, StreamExt};
use hkdf::Hkdf;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, Request, header};

pub use local::LocalPush;
pub use remote::{LINK_FAILURE_REASONS, LinkTls, RemotePush};

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
/// How long an internal token opens push streams: a link mints a fresh one
/// each time it (re)connects, so a leaked token is soon worthless.
pub const TOKEN_TTL: Duration = Duration::from_secs(5 * 60);
/// Clock skew between a dispatcher and a gateway that a token tolerates.
pub const TOKEN_LEEWAY: Duration = Duration::from_secs(30);
/// The HKDF `info` that sets internal keys apart from every other use of the
/// cluster secret (client tokens are signed with the secret itself).
const KEY_INFO: &[u8] = b"confab internal push v1";

/// The credentials of the internal port, derived from the cluster's shared
/// secret: dispatchers present a token minted with it, gateways verify it.
///
/// The signing key is HKDF-SHA256 of the secret for this use alone, so a
/// client's login token (HS256 with the secret itself) never verifies here,
/// whatever claims it carries; and `aud` and `exp` are required, not only
/// checked when present.
#[derive(Clone)]
pub struct InternalKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

#[derive(Serialize, Deserialize)]
struct InternalClaims {
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
    /// Makes every token distinct, even two minted in the same second.
    jti: String,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl InternalKey {
    /// `secret` is the cluster's HS256 secret, shared by gateways and dispatchers.
    pub fn new(secret: &[u8]) -> InternalKey {
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(None, secret).expand(KEY_INFO, &mut key).expect("32 bytes is a valid HKDF-SHA256 length");
        InternalKey { encoding: EncodingKey::from_secret(&key), decoding: DecodingKey::from_secret(&key) }
    }

    /// A dispatcher's token for every gateway's internal port, valid for
    /// [`TOKEN_TTL`] from now.
    pub fn mint(&self) -> String {
        self.mint_at(unix_now())
    }

    /// A token as minted at `now` (unix seconds).
    pub fn mint_at(&self, now: u64) -> String {
        let claims = InternalClaims {
            sub: "dispatcher".to_owned(),
            aud: INTERNAL_AUDIENCE.to_owned(),
            iat: now,
            exp: now + TOKEN_TTL.as_secs(),
            jti: format!("{:016x}", rand::random::<u64>()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// Accepts the opening request of a push stream only with an unexpired
    /// token minted by [`InternalKey::mint`] for this cluster.
    pub fn verify(&self, headers: &HeaderMap) -> Result<(), jsonwebtoken::errors::Error> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = TOKEN_LEEWAY.as_secs();
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.set_audience(&[INTERNAL_AUDIENCE]);
        jsonwebtoken::decode::<InternalClaims>(token, &self.decoding, &validation).map(drop)
    }
}

/// The opening request of a push stream to the gateway whose internal port
/// is at `addr` (`host:port`), carrying `token` from [`InternalKey::mint`]:
/// `wss://` when the link speaks `tls`, else `ws://`.
pub fn push_request(addr: &str, token: &str, tls: bool) -> Result<Request<()>, tungstenite::Error> {
    let scheme = if tls { "wss" } else { "ws" };
    let mut request = format!("{scheme}://{addr}{PUSH_PATH}").into_client_request()?;
    let bearer = HeaderValue::try_from(format!("Bearer {token}")).map_err(tungstenite::http::Error::from)?;
    request.headers_mut().insert(header::AUTHORIZATION, bearer);
    Ok(request)
}

/// One frame of a push stream: the deliveries, in order, for one gateway.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The id of the gateway the dispatcher means to reach.
    pub gateway: String,
    pub deliveries: Vec<Delivery>,
}

/// One frame of a push stream: `{"gateway": id, "deliveries": [...]}`.
pub fn encode_batch(gateway: &str, deliveries: &[Delivery]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a> {
        gateway: &'a str,
        deliveries: &'a [Delivery],
    }
    serde_json::to_vec(&Out { gateway, deliveries }).expect("deliveries serialize")
}

/// The batch in one frame of a push stream, as [`encode_batch`] wrote it.
pub fn decode_batch(frame: &[u8]) -> Result<Batch, serde_json::Error> {
    serde_json::from_slice(frame)
}

/// The gateway's end of one push stream: hands each batch meant for
/// `gateway` to `inbox`, in order, until the stream ends or the inbox is
/// closed; a batch for another gateway is dropped and `misdirected` called.
/// A full inbox holds the stream back, and so the dispatcher's link, whose
/// queue is bounded.
pub async fn receive<S>(frames: S, gateway: &str, inbox: &mpsc::Sender<Vec<Delivery>>, misdirected: impl Fn())
where
    S: Stream,
    S::Item: AsRef<[u8]>,
{
    let mut frames = std::pin::pin!(frames);
    while let Some(frame) = frames.next().await {
        match decode_batch(frame.as_ref()) {
            Ok(batch) if batch.gateway != gateway => {
                tracing::warn!(
                    meant_for = %batch.gateway,
                    dropped = batch.deliveries.len(),
                    "dropping a push batch meant for another gateway"
                );
                misdirected();
            }
            Ok(batch) => {
                if inbox.send(batch.deliveries).await.is_err() {
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
        let deliveries = vec![reply(1), room_event("{\"ev\":\"msg\"}"), reply(2)];
        let batch = decode_batch(&encode_batch("gw-1", &deliveries)).unwrap();
        assert_eq!(batch, Batch { gateway: "gw-1".into(), deliveries });
    }

    #[test]
    fn a_minted_token_opens_the_push_stream_of_the_same_cluster_only() {
        let key = InternalKey::new(b"cluster secret");
        let request = push_request("10.0.0.7:7070", &key.mint(), false).unwrap();
        assert_eq!(request.uri().to_string(), format!("ws://10.0.0.7:7070{PUSH_PATH}"));
        key.verify(&headers(&request)).expect("the cluster's own token");

        let other = InternalKey::new(b"another cluster");
        assert!(other.verify(&headers(&request)).is_err(), "a token of another secret");
        assert!(key.verify(&HeaderMap::new()).is_err(), "no token at all");
    }

    fn bearer(token: &str) -> HeaderMap {
        headers(&push_request("10.0.0.7:7070", token, false).unwrap())
    }

    fn sign(secret: &[u8], claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn tokens_signed_with_the_cluster_secret_itself_never_open_the_push_stream() {
        let secret = b"cluster secret of at least 32 bytes";
        let key = InternalKey::new(secret);
        let exp = unix_now() + 600;
        // What a client's login token looks like: no `aud`.
        let login = sign(secret, &serde_json::json!({ "sub": "alice", "exp": exp }));
        assert!(key.verify(&bearer(&login)).is_err(), "a client login token");
        // Even with every claim an internal token has, the key is not the secret.
        let forged = sign(
            secret,
            &serde_json::json!({ "sub": "dispatcher", "aud": INTERNAL_AUDIENCE, "iat": exp - 600, "exp": exp, "jti": "x" }),
        );
        assert!(key.verify(&bearer(&forged)).is_err(), "a token of the client secret with the internal aud");
    }

    #[test]
    fn internal_tokens_expire_and_carry_the_internal_audience() {
        let key = InternalKey::new(b"cluster secret");
        let now = unix_now();
        key.verify(&bearer(&key.mint_at(now))).expect("a fresh token");
        let skewed = now - TOKEN_TTL.as_secs() - TOKEN_LEEWAY.as_secs() / 2;
        key.verify(&bearer(&key.mint_at(skewed))).expect("a clock within the leeway");
        let expired = now - TOKEN_TTL.as_secs() - TOKEN_LEEWAY.as_secs() - 1;
        assert!(key.verify(&bearer(&key.mint_at(expired))).is_err(), "an expired token");
        assert_ne!(key.mint(), key.mint(), "every token is distinct");
    }

    #[test]
    fn internal_tokens_for_another_audience_or_none_are_refused() {
        let key = InternalKey::new(b"cluster secret");
        let now = unix_now();
        let with = |claims: serde_json::Value| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key.encoding).unwrap()
        };
        let wrong = with(serde_json::json!({ "sub": "dispatcher", "aud": "confab-client", "exp": now + 60 }));
        assert!(key.verify(&bearer(&wrong)).is_err(), "another audience");
        let none = with(serde_json::json!({ "sub": "dispatcher", "exp": now + 60 }));
        assert!(key.verify(&bearer(&none)).is_err(), "no audience");
        let endless = with(serde_json::json!({ "sub": "dispatcher", "aud": INTERNAL_AUDIENCE }));
        assert!(key.verify(&bearer(&endless)).is_err(), "no expiry");
    }

    #[tokio::test]
    async fn received_batches_reach_the_inbox_in_order_and_unreadable_ones_are_skipped() {
        let (tx, mut rx) = mpsc::channel(8);
        let frames =
            vec![encode_batch("gw-1", &[reply(1), reply(2)]), b"not json".to_vec(), encode_batch("gw-1", &[reply(3)])];
        receive(futures_util::stream::iter(frames), "gw-1", &tx, || panic!("all for gw-1")).await;
        assert_eq!(rx.recv().await.unwrap(), vec![reply(1), reply(2)]);
        assert_eq!(rx.recv().await.unwrap(), vec![reply(3)]);
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn receiving_ends_when_the_inbox_is_closed() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        // An endless stream: only the closed inbox can end the loop.
        let frames = futures_util::stream::repeat(encode_batch("gw-1", &[reply(1)]));
        receive(frames, "gw-1", &tx, || {}).await;
    }

    #[tokio::test]
    async fn a_batch_meant_for_another_gateway_is_dropped_and_counted() {
        let (tx, mut rx) = mpsc::channel(8);
        let misdirected = std::sync::atomic::AtomicUsize::new(0);
        let frames = vec![
            encode_batch("gw-1", &[reply(1)]),
            // Session 2 of gw-2 is not session 2 here: another user's reply.
            encode_batch("gw-2", &[reply(2)]),
            encode_batch("gw-1", &[reply(3)]),
        ];
        receive(futures_util::stream::iter(frames), "gw-1", &tx, || {
            misdirected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .await;
        assert_eq!(rx.recv().await.unwrap(), vec![reply(1)]);
        assert_eq!(rx.recv().await.unwrap(), vec![reply(3)]);
        assert!(rx.try_recv().is_err(), "nothing of gw-2's batch reached the inbox");
        assert_eq!(misdirected.into_inner(), 1);
    }
}
