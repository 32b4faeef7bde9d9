//! Password hashing off the executor: a fixed set of threads, one per core,
//! fed by a bounded queue.
//!
//! An argon2id hash takes 19 MiB and tens of milliseconds of a core: on the
//! runtime's blocking pool, a storm of logins ran hundreds at once, took
//! every core, and left each of its threads' malloc arenas holding tens of
//! megabytes (1.6 GB of resident memory in a gateway after 400 logins). Here
//! a storm queues instead, memory stays at a few hashes, a full queue is
//! refused at once, and a job whose caller has gone (the client hung up) is
//! skipped rather than hashed for nobody.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// Why a job got no answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("too many password hashes are queued")]
    Busy,
    #[error("the hashing job failed")]
    Failed,
}

/// The hashing threads; they end when the pool is dropped.
pub struct HashPool {
    queue: SyncSender<Job>,
}

impl HashPool {
    /// `threads` threads taking jobs from a queue of `queue` places.
    pub fn new(threads: usize, queue: usize) -> HashPool {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("confab-hash-{i}")).spawn(move || work(&rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        HashPool { queue: tx }
    }

    /// One thread per core.
    pub fn per_core(queue: usize) -> HashPool {
        HashPool::new(std::thread::available_parallelism().map_or(1, |n| n.get()), queue)
    }

    /// Runs `job` on a hashing thread, unless the queue is full (`Busy`).
    /// If this future is dropped before a thread takes the job, it never runs.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, HashError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if !tx.is_closed() {
                let _ = tx.send(job());
            }
        });
        match self.queue.try_send(job) {
            Ok(()) => rx.await.map_err(|_| HashError::Failed),
            Err(TrySendError::Full(_)) => Err(HashError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(HashError::Failed),
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            // A panicking job loses only its own answer.
            Ok(job) => drop(std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use std::time::Duration;

    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn hashing_threads_answer_every_job_and_survive_a_panicking_one() {
        let pool = HashPool::per_core(64);
        let hashes = futures_util::future::join_all((0..8).map(|i| pool.run(move || format!("job {i}")))).await;
        assert_eq!(hashes.iter().flatten().count(), 8);
        assert_eq!(pool.run(|| -> u8 { panic!("a bad job") }).await.ok(), None);
        assert_eq!(pool.run(|| 7).await.ok(), Some(7), "the pool still works");
    }

    /// Holds the pool's one thread until the returned sender sends.
    async fn hold(pool: &Arc<HashPool>) -> std::sync::mpsc::Sender<()> {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let pool = pool.clone();
        tokio::spawn(async move {
            let _ = pool
                .run(move || {
                    let _ = started_tx.send(());
                    let _ = gate.recv();
                })
                .await;
        });
        started.await.unwrap();
        release
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_a_job_whose_caller_left_is_skipped() {
        let pool = Arc::new(HashPool::new(1, 1));
        let release = hold(&pool).await;

        // The queue's one place: a job whose caller gives up before it runs.
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let abandoned = pool.run(move || flag.store(true, Ordering::SeqCst));
        assert!(abandoned.now_or_never().is_none(), "queued behind the busy thread, then dropped");
        assert_eq!(pool.run(|| ()).await, Err(HashError::Busy), "a full queue is refused");

        release.send(()).unwrap();
        // The queue frees up once the thread has taken the abandoned job.
        let after = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match pool.run(|| 7).await {
                    Err(HashError::Busy) => tokio::task::yield_now().await,
                    answer => return answer,
                }
            }
        });
        assert_eq!(after.await.expect("the queue frees up"), Ok(7), "the pool works after the storm");
        assert!(!ran.load(Ordering::SeqCst), "the abandoned job was not run");
    }
}
