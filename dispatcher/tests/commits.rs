//! How often the dispatcher commits its consumer's offsets: batches settle
//! one after another, their offsets are committed together at most every
//! `COMMIT_EVERY`, and what settled before a stop is committed by it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use confab_bus::{Bus, Consumer, MemoryBus, Push, Record};
use confab_dispatcher::{COMMIT_EVERY, Config, Metrics};
use confab_protocol::record::Announcement;
use confab_protocol::{Command, Delivery, IngressRecord, Origin};
use confab_store::{EmbeddedStore, Store};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// The commits a consumer made: each call's offsets.
type Commits = Arc<Mutex<Vec<Vec<(u32, u64)>>>>;

/// A memory bus whose dispatcher consumer's commits are recorded.
struct Recorded {
    bus: MemoryBus,
    commits: Commits,
}

struct RecordedConsumer {
    /// Behind a mutex only to be `Sync`, as `lag(&self)` needs.
    inner: tokio::sync::Mutex<Box<dyn Consumer>>,
    commits: Commits,
}

#[async_trait]
impl Bus for Recorded {
    fn partitions(&self) -> u32 {
        self.bus.partitions()
    }
    async fn ping(&self) -> confab_bus::Result<()> {
        self.bus.ping().await
    }
    async fn produce(&self, record: &IngressRecord) -> confab_bus::Result<()> {
        self.bus.produce(record).await
    }
    async fn consumer(&self) -> confab_bus::Result<Box<dyn Consumer>> {
        let inner = self.bus.consumer().await?;
        Ok(Box::new(RecordedConsumer { inner: tokio::sync::Mutex::new(inner), commits: self.commits.clone() }))
    }
    async fn announce(&self, announcement: &Announcement) -> confab_bus::Result<()> {
        self.bus.announce(announcement).await
    }
    async fn announcements(&self) -> confab_bus::Result<mpsc::Receiver<Announcement>> {
        self.bus.announcements().await
    }
}

#[async_trait]
impl Consumer for RecordedConsumer {
    async fn poll(&mut self, max: usize) -> confab_bus::Result<Vec<Record>> {
        self.inner.get_mut().poll(max).await
    }
    async fn commit(&mut self, offsets: &[(u32, u64)]) -> confab_bus::Result<()> {
        self.commits.lock().unwrap().push(offsets.to_vec());
        self.inner.get_mut().commit(offsets).await
    }
    async fn lag(&self) -> Vec<(u32, u64)> {
        self.inner.lock().await.lag().await
    }
}

/// Counts the replies pushed.
#[derive(Default)]
struct Replies {
    count: Mutex<usize>,
    more: Notify,
}

#[async_trait]
impl Push for Replies {
    async fn push(&self, _gateway: &str, batch: Vec<Delivery>) -> confab_bus::Result<()> {
        let replies = batch.iter().filter(|d| matches!(d, Delivery::Reply { .. })).count();
        *self.count.lock().unwrap() += replies;
        self.more.notify_waiters();
        Ok(())
    }
}

impl Replies {
    /// Waits until `n` replies came, at most 10 s.
    async fn reach(&self, n: usize) {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let more = self.more.notified();
                if *self.count.lock().unwrap() >= n {
                    return;
                }
                more.await;
            }
        })
        .await;
        assert!(waited.is_ok(), "{n} replies within 10 s; got {}", self.count.lock().unwrap());
    }
}

fn record(cmd: Command) -> IngressRecord {
    IngressRecord {
        room: "lobby".into(),
        ts: 1_700_000_000_000,
        origin: Some(Origin { gateway: "gw-1".into(), session: 1, re: None, t0: 0 }),
        cmd,
    }
}

#[tokio::test]
async fn batches_settled_one_after_another_are_committed_together_and_all_by_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let commits = Commits::default();
    let bus = Arc::new(Recorded { bus: MemoryBus::new(1, &[]), commits: commits.clone() });
    let replies = Arc::new(Replies::default());
    let stop = CancellationToken::new();
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let dispatcher = tokio::spawn(confab_dispatcher::run(
        Config::default(),
        bus.clone(),
        store.clone(),
        replies.clone(),
        metrics,
        stop.clone(),
    ));

    // One record at a time, each answered before the next: a batch each.
    let started = Instant::now();
    bus.produce(&record(Command::Join { user: "alice".into() })).await.unwrap();
    replies.reach(1).await;
    const SENDS: usize = 30;
    for i in 0..SENDS {
        let send = Command::Send {
            from: "alice".into(),
            text: format!("m{i}"),
            cid: format!("c{i}"),
            reply_to: None,
            attachments: vec![],
        };
        bus.produce(&record(send)).await.unwrap();
        replies.reach(i + 2).await;
    }
    let elapsed = started.elapsed();
    let during = commits.lock().unwrap().len();
    // The interval's first tick is at once, then one per `COMMIT_EVERY`
    // (one more for the tick that may fall at either end of the window).
    let most = (elapsed.as_secs_f64() / COMMIT_EVERY.as_secs_f64()).floor() as usize + 2;
    assert!(
        during <= most,
        "{} batches in {elapsed:?} made {during} commits; at most {most} at one per {COMMIT_EVERY:?}",
        SENDS + 1
    );

    stop.cancel();
    dispatcher.await.unwrap().unwrap();
    let last = commits.lock().unwrap().iter().flatten().map(|&(_, next)| next).max();
    assert_eq!(last, Some(SENDS as u64 + 1), "every settled record's offset is committed by the stop");
    let stored = store.history("lobby", None, 100).await.unwrap();
    assert_eq!(stored.len(), SENDS, "every send was stored");
}
