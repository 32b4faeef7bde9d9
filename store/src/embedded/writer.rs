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
//! synced is never read as if it were stored.
//!
//! Other writes (accounts, contacts, uploads) run here too, in the order
//! they came, each its own durable commit as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use redb::Database;
use tokio::sync::{mpsc, oneshot};

use crate::{Durable, Error, Result, WriteBatch};

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
}

/// The handle on the writer thread; the thread ends (after syncing what is
/// staged) when this drops, and the drop waits for it, so that the database
/// is closed when the last store handle is gone.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Set once a durable commit failed: the store refuses every call.
    failed: Arc<AtomicBool>,
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
    pub(super) fn start(db: Arc<Database>) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let failed = Arc::new(AtomicBool::new(false));
        let latch = failed.clone();
        let thread =
            std::thread::Builder::new().name("confab-store-writer".into()).spawn(move || run(db, queue, latch))?;
        Ok(Writer { jobs: Some(jobs), thread: Some(thread), failed })
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
        rx.await.map_err(|_| stopped())?
    }

    /// Commits `batch` without an fsync; the `Durable` resolves once a
    /// later fsync covers it.
    pub(super) async fn stage(&self, batch: WriteBatch) -> Result<Durable> {
        if self.failed() {
            return Err(failed_error());
        }
        let (tx, rx) = oneshot::channel();
        self.send(Job::Stage(batch, tx)).await?;
        let synced = rx.await.map_err(|_| stopped())??;
        Ok(Box::pin(async move { synced.await.map_err(|_| stopped())? }))
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

/// The writer thread: runs jobs in order; syncs the staged ones when the
/// queue is empty (or [`MAX_UNSYNCED`] are waiting).
fn run(db: Arc<Database>, mut queue: mpsc::Receiver<Job>, failed: Arc<AtomicBool>) {
    let mut unsynced: Vec<oneshot::Sender<Result<()>>> = Vec::new();
    loop {
        let job = if unsynced.is_empty() {
            match queue.blocking_recv() {
                Some(job) => job,
                None => return,
            }
        } else if unsynced.len() >= MAX_UNSYNCED {
            sync(&db, &mut unsynced, &failed);
            continue;
        } else {
            match queue.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Empty) => {
                    sync(&db, &mut unsynced, &failed);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    sync(&db, &mut unsynced, &failed);
                    return;
                }
            }
        };
        match job {
            Job::Run(f) => {
                if failed.load(Ordering::Acquire) {
                    // Dropping `f` drops its reply: the caller sees `stopped`;
                    // its own check names the failure first in practice.
                    continue;
                }
                f(&db)
            }
            Job::Stage(batch, reply) => {
                if failed.load(Ordering::Acquire) {
                    let _ = reply.send(Err(failed_error()));
                    continue;
                }
                match super::apply_batch(&db, &batch, redb::Durability::None) {
                    Ok(()) => {
                        let (tx, rx) = oneshot::channel();
                        unsynced.push(tx);
                        let _ = reply.send(Ok(rx));
                    }
                    // The transaction aborted: nothing of it is stored.
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }
}

/// One durable commit, which makes every earlier one durable.
fn sync(db: &Database, unsynced: &mut Vec<oneshot::Sender<Result<()>>>, failed: &AtomicBool) {
    let synced: Result<()> = (|| {
        let txn = db.begin_write()?;
        txn.commit()?;
        Ok(())
    })();
    if synced.is_err() {
        failed.store(true, Ordering::Release);
    }
    for waiter in unsynced.drain(..) {
        let _ = waiter.send(match &synced {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::Other(format!("an embedded commit failed to reach the disk: {e}").into())),
        });
    }
}
