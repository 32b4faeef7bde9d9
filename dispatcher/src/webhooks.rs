//! Webhooks: every stored message, membership change, edit, deletion and
//! reaction POSTed to an application's URL, signed (docs/webhooks.md).
//!
//! Each webhook is a consumer group of its own on the ingress log
//! ([`confab_bus::Bus::consumer_group`]). It takes the records in log order,
//! waits until the dispatchers have stored each one (the store's
//! checkpoint for the partition is past it), reads what the record did from
//! the store, POSTs it, retries with backoff until a 2xx, and commits the
//! offset only then: delivery is at least once, in order per room (a room's
//! records share one partition), and a receiver that is down keeps its
//! backlog in the log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confab_bus::{Bus, Consumer, Record};
use confab_protocol::message::{msg_id, seq_of};
use confab_protocol::record::{Act, Announcement};
use confab_protocol::{Command, IngressRecord};
use confab_store::{MemberChange, Store};
use hmac::{Hmac, Mac};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::filter::unix_now;
use crate::routes::Routes;

/// Records taken from the log at once.
const POLL: usize = 256;
/// Names in a message's `offline` list at most; past it `offline_truncated` is true.
pub const MAX_OFFLINE: usize = 1000;
/// Longest wait between two attempts of one delivery.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// One attempt's deadline.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The kinds of event a webhook may ask for.
pub const KINDS: [&str; 5] = ["message", "member", "edit", "delete", "reaction"];

/// One `--webhook`: where, and which kinds (all when `events` is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub url: String,
    pub events: Vec<String>,
}

impl Hook {
    /// Parses `URL` or `URL#kind,kind`.
    pub fn parse(s: &str) -> Result<Hook, String> {
        let (url, events) = match s.rsplit_once('#') {
            Some((url, kinds)) => (url, kinds.split(',').map(str::trim).map(str::to_owned).collect()),
            None => (s, Vec::new()),
        };
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(format!("'{url}' is not an http:// or https:// URL"));
        }
        if let Some(bad) = events.iter().find(|k| !KINDS.contains(&k.as_str())) {
            return Err(format!("unknown event '{bad}' (known: {})", KINDS.join(", ")));
        }
        Ok(Hook { url: url.to_owned(), events })
    }

    fn wants(&self, kind: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|k| k == kind)
    }

    /// The webhook's consumer group on the ingress log.
    pub fn group(&self) -> String {
        format!("webhook-{}", self.name())
    }

    /// A short stable name for the URL: its consumer group and metric label.
    pub fn name(&self) -> String {
        let mut h: u32 = 0x811c_9dc5;
        for b in self.url.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        format!("{h:08x}")
    }
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub hooks: Vec<Hook>,
    pub secret: Vec<u8>,
    /// More root certificates (PEM) for `https://` URLs (`--webhook-ca-file`).
    pub ca_pem: Option<Vec<u8>>,
}

#[derive(Clone)]
pub struct WebhookMetrics {
    deliveries: IntCounterVec,
    retries: IntCounterVec,
    lag_seconds: IntGaugeVec,
    lag_records: IntGaugeVec,
}

impl WebhookMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = WebhookMetrics {
            deliveries: IntCounterVec::new(
                Opts::new(
                    "confab_webhook_deliveries_total",
                    "Webhook delivery attempts, by webhook and outcome (ok, failed).",
                ),
                &["webhook", "outcome"],
            )?,
            retries: IntCounterVec::new(
                Opts::new("confab_webhook_retries_total", "Webhook deliveries attempted again after a failure."),
                &["webhook"],
            )?,
            lag_seconds: IntGaugeVec::new(
                Opts::new(
                    "confab_webhook_lag_seconds",
                    "Age of the oldest record a webhook has not delivered yet; 0 when caught up.",
                ),
                &["webhook"],
            )?,
            lag_records: IntGaugeVec::new(
                Opts::new("confab_webhook_lag_records", "Ingress records a webhook has not committed yet."),
                &["webhook"],
            )?,
        };
        registry.register(Box::new(m.deliveries.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.lag_seconds.clone()))?;
        registry.register(Box::new(m.lag_records.clone()))?;
        Ok(m)
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub fn sign(secret: &[u8], t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Runs every webhook until `shutdown`.
pub async fn run(
    config: WebhookConfig,
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    metrics: WebhookMetrics,
    shutdown: CancellationToken,
) -> Result<(), crate::Error> {
    if config.hooks.is_empty() {
        return Ok(());
    }
    let online = Online::follow(&*bus, shutdown.clone()).await?;
    let client = crate::http_client(ATTEMPT_TIMEOUT, config.ca_pem.as_deref()).map_err(crate::Error::Http)?;
    let mut tasks = tokio::task::JoinSet::new();
    for hook in config.hooks {
        let name = hook.name();
        tracing::info!(webhook = %name, url = %hook.url, events = ?hook.events, "webhook consuming");
        let consumer = bus.consumer_group(&hook.group()).await?;
        let worker = Worker {
            name,
            hook,
            secret: config.secret.clone(),
            client: client.clone(),
            store: store.clone(),
            online: online.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            checkpoints: Vec::new(),
        };
        tasks.spawn(worker.run(consumer));
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(confab_bus::Error::Task)??;
    }
    Ok(())
}

/// Who has a live session, from the gateways' announcements.
#[derive(Clone)]
struct Online(Arc<Mutex<Routes>>);

impl Online {
    async fn follow(bus: &dyn Bus, shutdown: CancellationToken) -> Result<Online, crate::Error> {
        let mut announcements = bus.announcements().await?;
        let me = format!("webhooks-{:x}", std::process::id());
        bus.announce(&Announcement::Resync { gateway: me }).await?;
        let online = Online(Arc::new(Mutex::new(Routes::default())));
        let routes = online.0.clone();
        tokio::spawn(async move {
            let mut expiry = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = announcements.recv() => match a {
                        Some(a) => routes.lock().expect("routes lock").apply(&a),
                        None => return,
                    },
                    _ = expiry.tick() => { routes.lock().expect("routes lock").expire(Duration::from_secs(30)); }
                }
            }
        });
        Ok(online)
    }

    fn is_online(&self, user: &str) -> bool {
        self.0.lock().expect("routes lock").gateways_for_user(user).next().is_some()
    }
}

struct Worker {
    name: String,
    hook: Hook,
    secret: Vec<u8>,
    client: reqwest::Client,
    store: Arc<dyn Store>,
    online: Online,
    metrics: WebhookMetrics,
    shutdown: CancellationToken,
    /// The store's checkpoints as last read.
    checkpoints: Vec<(u32, u64)>,
}

impl Worker {
    async fn run(mut self, mut consumer: Box<dyn Consumer>) -> Result<(), crate::Error> {
        loop {
            let records = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                polled = consumer.poll(POLL) => polled?,
            };
            let _ = consumer.take_rebalanced();
            let mut done: Vec<(u32, u64)> = Vec::new();
            let mut last_commit = Instant::now();
            for r in records {
                self.metrics.lag_seconds.with_label_values(&[&self.name]).set(age_secs(&r.record) as i64);
                if !self.deliver(&r).await {
                    // Shutdown: what is delivered is committed, the rest comes again.
                    let _ = consumer.commit(&done).await;
                    return Ok(());
                }
                match done.iter_mut().find(|(p, _)| *p == r.partition) {
                    Some((_, next)) => *next = r.offset + 1,
                    None => done.push((r.partition, r.offset + 1)),
                }
                if last_commit.elapsed() > Duration::from_secs(1) {
                    self.commit(&mut *consumer, &done).await;
                    last_commit = Instant::now();
                }
            }
            self.commit(&mut *consumer, &done).await;
            self.metrics.lag_seconds.with_label_values(&[&self.name]).set(0);
        }
    }

    async fn commit(&self, consumer: &mut dyn Consumer, done: &[(u32, u64)]) {
        if let Err(e) = consumer.commit(done).await {
            tracing::warn!(webhook = %self.name, error = %e, "webhook offset commit failed; the next one covers it");
        }
        let lag: u64 = consumer.lag().await.iter().map(|(_, l)| l).sum();
        self.metrics.lag_records.with_label_values(&[&self.name]).set(lag as i64);
    }

    /// Delivers what `r` did, if anything this webhook wants, retrying
    /// until a 2xx; `false` when shutdown came first.
    async fn deliver(&mut self, r: &Record) -> bool {
        let mut backoff = Duration::from_millis(100);
        let event = loop {
            match self.event(r).await {
                Ok(Some(event)) => break event,
                Ok(None) => return true,
                Err(e) => tracing::warn!(webhook = %self.name, error = %e, "reading a webhook's event; retrying"),
            }
            if !self.wait(&mut backoff).await {
                return false;
            }
        };
        if !self.hook.wants(event["type"].as_str().unwrap_or_default()) {
            return true;
        }
        let body = serde_json::to_vec(&event).expect("an event serializes");
        let mut first = true;
        loop {
            if !first {
                self.metrics.retries.with_label_values(&[&self.name]).inc();
            }
            first = false;
            let signature = sign(&self.secret, unix_now(), &body);
            let sent = self
                .client
                .post(&self.hook.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("Confab-Signature", signature)
                .body(body.clone())
                .send();
            let outcome = tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                outcome = sent => outcome,
            };
            match outcome {
                Ok(response) if response.status().is_success() => {
                    self.metrics.deliveries.with_label_values(&[&self.name, "ok"]).inc();
                    return true;
                }
                Ok(response) => {
                    tracing::debug!(webhook = %self.name, status = %response.status(), "webhook refused; retrying")
                }
                Err(e) => tracing::debug!(webhook = %self.name, error = %e, "webhook unreachable; retrying"),
            }
            self.metrics.deliveries.with_label_values(&[&self.name, "failed"]).inc();
            // The backlog ages while the receiver fails.
            self.metrics.lag_seconds.with_label_values(&[&self.name]).set(age_secs(&r.record) as i64);
            if !self.wait(&mut backoff).await {
                return false;
            }
        }
    }

    /// Sleeps one backoff step and doubles it; `false` on shutdown.
    async fn wait(&self, backoff: &mut Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => return false,
            _ = tokio::time::sleep(*backoff) => {}
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        true
    }

    /// Waits until the dispatchers stored `r`, then reads what it did.
    async fn event(&mut self, r: &Record) -> Result<Option<Value>, confab_store::Error> {
        let mut backoff = Duration::from_millis(20);
        while !self.applied(r) {
            self.checkpoints = self.store.checkpoints().await?;
            if self.applied(r) {
                break;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
        derive(&*self.store, &self.online, r).await
    }

    fn applied(&self, r: &Record) -> bool {
        self.checkpoints.iter().any(|&(p, next)| p == r.partition && next > r.offset)
    }
}

fn age_secs(record: &IngressRecord) -> u64 {
    (unix_now() * 1000).saturating_sub(record.ts) / 1000
}

/// The members a push hand-off names for `message`: no live session, not
/// its sender, and a notification level (`notify`) that wants it: `all`,
/// or `mentions` when the message mentions them; never `none`. At most one
/// past [`MAX_OFFLINE`] (so truncation shows), in the members' order.
async fn to_notify(
    store: &dyn Store,
    room: &str,
    message: &confab_protocol::Message,
    members: Vec<String>,
    online: &Online,
) -> Result<Vec<String>, confab_store::Error> {
    use confab_protocol::NotifyLevel;
    use futures_util::{StreamExt, TryStreamExt};
    let candidates = members.into_iter().filter(|u| *u != message.from && !online.is_online(u));
    let levels = futures_util::stream::iter(candidates)
        .map(|user| async move { store.notify_level(room, &user).await.map(|level| (user, level)) })
        .buffered(16);
    let wanted = levels.try_filter_map(|(user, level)| async move {
        let wants = match level {
            NotifyLevel::All => true,
            NotifyLevel::Mentions => message.mentions.contains(&user),
            NotifyLevel::Nothing => false,
        };
        Ok(wants.then_some(user))
    });
    wanted.take(MAX_OFFLINE + 1).try_collect().await
}

/// What a stored record did, as a webhook event; `None` when it stored
/// nothing a webhook reports (a refused or repeated write, a read marker).
async fn derive(store: &dyn Store, online: &Online, r: &Record) -> Result<Option<Value>, confab_store::Error> {
    let rec = &r.record;
    let room = rec.room.as_str();
    let at = seq_of(r.offset);
    let id = format!("{:x}-{:x}", r.partition, r.offset);
    let mut event = match &rec.cmd {
        Command::Send { .. } => {
            let Some(state) = store.message(room, at).await? else { return Ok(None) };
            if state.message.msg_id != msg_id(r.partition, r.offset) {
                return Ok(None);
            }
            let members = store.members(room).await?;
            let offline = to_notify(store, room, &state.message, members, online).await?;
            let truncated = offline.len() > MAX_OFFLINE;
            let mut event = json!({ "type": "message", "message": state.message });
            event["offline"] = json!(offline.into_iter().take(MAX_OFFLINE).collect::<Vec<_>>());
            if truncated {
                event["offline_truncated"] = json!(true);
            }
            event
        }
        Command::Join { .. }
        | Command::Add { .. }
        | Command::Leave { .. }
        | Command::Erase { .. }
        | Command::Remove { .. }
        | Command::Moderate { act: Act::Kick { .. } | Act::Ban { .. }, .. } => {
            // What the dispatcher recorded it did, with the write itself.
            let Some(applied) = store.member_event(room, at).await? else { return Ok(None) };
            let mut event = json!({
                "type": "member",
                "room": room,
                "user": applied.user,
                "action": member_action(applied.change),
            });
            if let Some(by) = applied.by {
                event["by"] = json!(by);
            }
            event
        }
        Command::Edit { by, seq, text } => {
            if !changed_at(store, room, at).await? {
                return Ok(None);
            }
            json!({ "type": "edit", "room": room, "seq": seq, "by": by, "text": text })
        }
        Command::Delete { by, seq } => {
            if !changed_at(store, room, at).await? {
                return Ok(None);
            }
            json!({ "type": "delete", "room": room, "seq": seq, "by": by })
        }
        Command::React { user, seq, emoji, remove } => {
            if !changed_at(store, room, at).await? {
                return Ok(None);
            }
            json!({ "type": "reaction", "room": room, "seq": seq, "user": user, "emoji": emoji, "remove": remove })
        }
        Command::Read { .. }
        | Command::Notify { .. }
        | Command::Typing { .. }
        | Command::BlockChanged { .. }
        | Command::Create { .. }
        | Command::UpdateRoom { .. }
        | Command::Moderate { .. } => return Ok(None),
    };
    event["id"] = json!(id);
    event["ts"] = json!(rec.ts);
    Ok(Some(event))
}

/// A `member` event's `action`: a removal by the server API and an
/// erased account's leaving are a `leave`.
fn member_action(change: MemberChange) -> &'static str {
    match change {
        MemberChange::Join => "join",
        MemberChange::Add => "add",
        MemberChange::Leave | MemberChange::Remove | MemberChange::Erase => "leave",
        MemberChange::Kick => "kick",
        MemberChange::Ban => "ban",
    }
}

/// Whether the room's change log holds a change at position `at`: the
/// edit, deletion or reaction of the record at that position took effect.
async fn changed_at(store: &dyn Store, room: &str, at: u64) -> Result<bool, confab_store::Error> {
    let (changes, _) = store.changes(room, at - 1, 1).await?;
    Ok(changes.first().is_some_and(|(pos, _)| *pos == at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_parses_with_and_without_events() {
        assert_eq!(Hook::parse("http://h/x").unwrap().events, Vec::<String>::new());
        let h = Hook::parse("http://h/x#message,member").unwrap();
        assert_eq!((h.url.as_str(), h.events.len()), ("http://h/x", 2));
        assert!(Hook::parse("http://h/x#nope").is_err());
        assert!(Hook::parse("ftp://h/x").is_err());
        assert_eq!(Hook::parse("https://h/x#edit").unwrap().url, "https://h/x");
        assert!(h.wants("member") && !h.wants("edit"));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_t_dot_body() {
        // Python: hmac.new(b"Jefe", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            sign(b"Jefe", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
    }
}
