//! The embedded store's writer: one thread that runs every write
//! transaction, fed by a bounded channel, with group commit.
//!
//! A staged batch ([`crate::Store::stage`]) is committed at once without an
//! fsync (redb's `Durability::None`: readable by every later transaction,
//! in this process only), which lets the dispatcher decide its next batch on
//! top of it. When the channel has nothing more to run, one durable commit
//! (fsynced) makes every batch staged since the last one durable, and their
//! [`crate::Durable`]s resolve. A failed fsync fails those, and latches the
//! store: every later call fails until the store is opened again (redb then
//! rolls back to its last durable commit), so what was staged but never
//! synced is never read as if it were stored. A job that panics (a bug)
//! latches the store the same way.
//!
//! Other writes (accounts, contacts, uploads, an `apply`) run here too, in
//! the order they came, each its own durable commit as before (which makes
//! the batches staged before it durable too).
//!
//! The checkpoints the store reports are the durable ones, kept here: a
//! staged batch's checkpoint counts once its sync succeeded, so readers that
//! stop at the checkpoints (`history`, `sync`) never show a message that a
//! crash before the sync would take back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redb::Database;
use tokio::sync::{mpsc, oneshot};

use crate::{Durable, Error, Result, Write, WriteBatch};

/// Jobs waiting for the writer: past it, writers wait (backpressure).
const QUEUE: usize = 1024;
/// Most batches staged between two fsyncs, so that a steady stream of
/// stages still syncs (and acks) regularly.
const MAX_UNSYNCED: usize = 64;

type Run = Box<dyn FnOnce(&Database) + Send>;

enum Job {
    /// Any write transaction, run as it is.
    Run(Run),
    /// A batch to commit without an fsync, then sync with the next group.
    Stage(WriteBatch, oneshot::Sender<Result<oneshot::Receiver<Result<()>>>>),
    /// A batch to commit durably at once.
    Apply(WriteBatch, oneshot::Sender<Result<()>>),
}

/// Next offset per partition, as durably stored.
type Checkpoints = Arc<Mutex<BTreeMap<u32, u64>>>;

/// The handle on the writer thread; the thread ends (after syncing what is
/// staged) when this drops, and the drop waits for it, so that the database
/// is closed when the last store handle is gone.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Set once a durable commit failed: the store refuses every call.
    failed: Arc<AtomicBool>,
    checkpoints: Checkpoints,
}

fn stopped() -> Error {
    Error::Other("the embedded store's writer stopped".into())
}

pub(super) fn failed_error() -> Error {
    Error::Other(
        "an embedded commit failed to reach the disk; the store refuses every call until it is opened again".into(),
    )
}

impl Writer {
    /// Starts the writer of `db`, whose stored checkpoints are `checkpoints`.
    pub(super) fn start(db: Arc<Database>, checkpoints: BTreeMap<u32, u64>) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let failed = Arc::new(AtomicBool::new(false));
        let checkpoints = Arc::new(Mutex::new(checkpoints));
        let shared = Shared { failed: failed.clone(), checkpoints: checkpoints.clone() };
        let thread =
            std::thread::Builder::new().name("confab-store-writer".into()).spawn(move || run(db, queue, shared))?;
        Ok(Writer { jobs: Some(jobs), thread: Some(thread), failed, checkpoints })
    }

    /// The durable checkpoints.
    pub(super) fn checkpoints(&self) -> Result<Vec<(u32, u64)>> {
        if self.failed() {
            return Err(failed_error());
        }
        let checkpoints = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        Ok(checkpoints.iter().map(|(p, o)| (*p, *o)).collect())
    }

    /// Commits `batch` durably.
    pub(super) async fn apply(&self, batch: WriteBatch) -> Result<()> {
        if self.failed() {
            return Err(failed_error());
        }
        let (tx, rx) = oneshot::channel();
        self.send(Job::Apply(batch, tx)).await?;
        self.answer(rx).await
    }

    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Runs `f` (a write transaction) on the writer thread.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T> + Send + 'static,
    {
        if self.failed() {
            return Err(failed_error());
        }
        let (tx, rx) = oneshot::channel();
        let job: Run = Box::new(move |db| {
            let _ = tx.send(f(db));
        });
        self.send(Job::Run(job)).await?;
        self.answer(rx).await
    }

    /// Commits `batch` without an fsync; the `Durable` resolves once a
    /// later fsync covers it.
    pub(super) async fn stage(&self, batch: WriteBatch) -> Result<Durable> {
        if self.failed() {
            return Err(failed_error());
        }
        let (tx, rx) = oneshot::channel();
        self.send(Job::Stage(batch, tx)).await?;
        let synced = self.answer(rx).await?;
        Ok(Box::pin(async move { synced.await.map_err(|_| stopped())? }))
    }

    /// The writer's answer to a job. A job whose reply was dropped
    /// unanswered panicked (or the writer stopped): then the answer waits
    /// for the writer to move past it (a no-op job behind it), so that this
    /// caller, and every call after it, sees the store latched.
    async fn answer<T>(&self, reply: oneshot::Receiver<Result<T>>) -> Result<T> {
        if let Ok(out) = reply.await {
            return out;
        }
        let (passed, behind) = oneshot::channel::<()>();
        let barrier: Run = Box::new(move |_| {
            let _ = passed.send(());
        });
        if self.send(Job::Run(barrier)).await.is_ok() {
            let _ = behind.await;
        }
        Err(if self.failed() { failed_error() } else { stopped() })
    }

    async fn send(&self, job: Job) -> Result<()> {
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(job).await.map_err(|_| stopped())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the writer thread shares with the store's handles.
struct Shared {
    failed: Arc<AtomicBool>,
    checkpoints: Checkpoints,
}

/// Batches committed and not yet synced, and their checkpoints.
#[derive(Default)]
struct Unsynced {
    waiters: Vec<oneshot::Sender<Result<()>>>,
    checkpoints: BTreeMap<u32, u64>,
}

impl Unsynced {
    fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// A durable commit succeeded after them: they are durable.
    fn synced(&mut self, shared: &Shared) {
        merge(&mut shared.checkpoints.lock().unwrap_or_else(|e| e.into_inner()), &self.checkpoints);
        self.checkpoints.clear();
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Ok(()));
        }
    }
}

fn merge(into: &mut BTreeMap<u32, u64>, checkpoints: &BTreeMap<u32, u64>) {
    for (&partition, &next) in checkpoints {
        let stored = into.entry(partition).or_default();
        *stored = (*stored).max(next);
    }
}

fn checkpoints_of(batch: &WriteBatch) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for write in batch {
        if let Write::Checkpoint { partition, next_offset } = write {
            let stored = out.entry(*partition).or_default();
            *stored = std::cmp::max(*stored, *next_offset);
        }
    }
    out
}

/// The writer thread: runs jobs in order; syncs the staged ones when the
/// queue is empty (or [`MAX_UNSYNCED`] are waiting).
fn run(db: Arc<Database>, mut queue: mpsc::Receiver<Job>, shared: Shared) {
    let mut unsynced = Unsynced::default();
    loop {
        let job = if unsynced.is_empty() {
            match queue.blocking_recv() {
                Some(job) => job,
                None => return,
            }
        } else if unsynced.waiters.len() >= MAX_UNSYNCED {
            sync(&db, &mut unsynced, &shared);
            continue;
        } else {
            match queue.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Empty) => {
                    sync(&db, &mut unsynced, &shared);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    sync(&db, &mut unsynced, &shared);
                    return;
                }
            }
        };
        // A panic in a write (a bug; the panic hook reports it) latches the
        // store like a failed sync: what it left is unknown, and the batches
        // staged before it must not be read as stored. The thread goes on,
        // answering every later job with the failure.
        let handled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(&db, job, &mut unsynced, &shared)));
        if handled.is_err() {
            latch(&mut unsynced, &shared, "a write on the embedded store's writer thread panicked".into());
        }
    }
}

/// Runs one job.
fn handle(db: &Database, job: Job, unsynced: &mut Unsynced, shared: &Shared) {
    let failed = shared.failed.load(Ordering::Acquire);
    match job {
        // Dropping `f` drops its reply: the caller sees the latch (`answer`).
        Job::Run(_) if failed => {}
        Job::Run(f) => {
            // Staged batches are synced before other writes run: a
            // stream of them (registrations, uploads, the sweeper)
            // would otherwise keep the queue from emptying and hold
            // the messages' acks.
            if !unsynced.is_empty() {
                sync(db, unsynced, shared);
            }
            f(db)
        }
        Job::Apply(_, reply) if failed => {
            let _ = reply.send(Err(failed_error()));
        }
        Job::Apply(batch, reply) => {
            let applied = super::apply_batch(db, &batch, redb::Durability::Immediate);
            if applied.is_ok() {
                // Its durable commit made every staged batch durable.
                merge(&mut unsynced.checkpoints, &checkpoints_of(&batch));
                unsynced.synced(shared);
            }
            let _ = reply.send(applied);
        }
        Job::Stage(_, reply) if failed => {
            let _ = reply.send(Err(failed_error()));
        }
        Job::Stage(batch, reply) => match super::apply_batch(db, &batch, redb::Durability::None) {
            Ok(()) => {
                let (tx, rx) = oneshot::channel();
                unsynced.waiters.push(tx);
                merge(&mut unsynced.checkpoints, &checkpoints_of(&batch));
                let _ = reply.send(Ok(rx));
            }
            // The transaction aborted: nothing of it is stored.
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        },
    }
}

/// One durable commit, which makes every earlier one durable. When it
/// fails, the store latches: what was staged stays unacknowledged, and
/// nothing is read or written until the store is opened again.
fn sync(db: &Database, unsynced: &mut Unsynced, shared: &Shared) {
    let synced: Result<()> = (|| {
        let txn = db.begin_write()?;
        txn.commit()?;
        Ok(())
    })();
    match synced {
        Ok(()) => unsynced.synced(shared),
        Err(e) => latch(unsynced, shared, format!("an embedded commit failed to reach the disk: {e}")),
    }
}

/// Latches the store failed: the staged batches are never acknowledged
/// (their `Durable`s fail with `why`), and every later call fails.
fn latch(unsynced: &mut Unsynced, shared: &Shared, why: String) {
    shared.failed.store(true, Ordering::Release);
    unsynced.checkpoints.clear();
    for waiter in unsynced.waiters.drain(..) {
        let _ = waiter.send(Err(Error::Other(why.clone().into())));
    }
}
