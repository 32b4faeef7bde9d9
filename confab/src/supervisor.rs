//! One supervisor for the tasks of every role.
//!
//! Each task is registered under a name with a token that asks it to stop,
//! and is meant to run until asked. The supervisor waits for the process's
//! shutdown, or for the first task to end on its own, which is a failure
//! whatever it returned. Either way it then stops the others one at a time,
//! the last registered first: a role registers what the rest leans on first
//! (the admin port, background work) and what faces clients last, so the
//! stop begins with the drain and ends with the admin port.

use std::any::Any;
use std::future::Future;

use anyhow::anyhow;
use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct Supervisor {
    /// In the order of registration.
    tasks: Vec<Task>,
    running: JoinSet<anyhow::Result<()>>,
}

struct Task {
    name: &'static str,
    stop: CancellationToken,
    id: Id,
    ended: bool,
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// Starts `task` under `name`, with the token that asks it to stop.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let id = self.running.spawn(task(stop.clone())).id();
        self.tasks.push(Task { name, stop, id, ended: false });
    }

    /// Runs until `shutdown`, or until a task ends on its own, then stops the
    /// rest, the last registered first, each before the next. Ok after a
    /// clean stop; otherwise the first failure, which names its task.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut failure = None;
        tokio::select! {
            () = shutdown.cancelled() => tracing::info!("stopping"),
            Some(joined) = self.running.join_next_with_id() => {
                let (name, outcome) = self.ended(joined);
                let error = match outcome {
                    Ok(()) => anyhow!("task `{name}` stopped on its own"),
                    Err(e) => e,
                };
                tracing::error!(task = name, "{error:#}; stopping the process");
                failure = Some(error);
            }
        }
        for i in (0..self.tasks.len()).rev() {
            if self.tasks[i].ended {
                continue;
            }
            tracing::debug!(task = self.tasks[i].name, "stopping");
            self.tasks[i].stop.cancel();
            while !self.tasks[i].ended {
                let Some(joined) = self.running.join_next_with_id().await else { break };
                // Another task may end first, now that what it served is gone.
                if let (name, Err(e)) = self.ended(joined) {
                    tracing::error!(task = name, "{e:#}");
                    failure.get_or_insert(e);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Marks the task that ended and says what became of it.
    fn ended(&mut self, joined: Result<(Id, anyhow::Result<()>), JoinError>) -> (&'static str, anyhow::Result<()>) {
        let (id, outcome) = match joined {
            Ok((id, result)) => (id, result),
            Err(e) => (e.id(), Err(anyhow!(if e.is_panic() { panic_message(e.into_panic()) } else { e.to_string() }))),
        };
        let task = self.tasks.iter_mut().find(|t| t.id == id).expect("every task is registered");
        task.ended = true;
        let name = task.name;
        (name, outcome.map_err(|e| e.context(format!("task `{name}` failed"))))
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    format!("panicked: {what}")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    type Stopped = Arc<Mutex<Vec<&'static str>>>;

    /// Starts a task that runs until asked, then notes that it stopped.
    fn polite(tasks: &mut Supervisor, stopped: &Stopped, name: &'static str) {
        let stopped = stopped.clone();
        tasks.spawn(name, move |stop| async move {
            stop.cancelled().await;
            stopped.lock().unwrap().push(name);
            Ok(())
        });
    }

    #[tokio::test]
    async fn a_clean_stop_returns_ok_after_stopping_the_last_registered_first() {
        let stopped = Stopped::default();
        let mut tasks = Supervisor::new();
        for name in ["admin", "background", "dispatcher", "public"] {
            polite(&mut tasks, &stopped, name);
        }
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        tasks.run(shutdown).await.expect("a clean stop");
        assert_eq!(*stopped.lock().unwrap(), ["public", "dispatcher", "background", "admin"]);
    }

    #[tokio::test]
    async fn a_task_that_fails_stops_the_rest_and_is_named_in_the_error() {
        let stopped = Stopped::default();
        let mut tasks = Supervisor::new();
        polite(&mut tasks, &stopped, "admin");
        tasks.spawn("dispatcher", |_| async { Err(anyhow!("the store went away")) });
        polite(&mut tasks, &stopped, "public");
        let error = tasks.run(CancellationToken::new()).await.expect_err("a task failed");
        assert_eq!(format!("{error:#}"), "task `dispatcher` failed: the store went away");
        assert_eq!(*stopped.lock().unwrap(), ["public", "admin"]);
    }

    #[tokio::test]
    async fn a_task_that_returns_unasked_is_a_failure_too() {
        let stopped = Stopped::default();
        let mut tasks = Supervisor::new();
        polite(&mut tasks, &stopped, "admin");
        tasks.spawn("announcement follower", |_| async { Ok(()) });
        let error = tasks.run(CancellationToken::new()).await.expect_err("it ended on its own");
        assert_eq!(format!("{error:#}"), "task `announcement follower` stopped on its own");
        assert_eq!(*stopped.lock().unwrap(), ["admin"]);
    }

    #[tokio::test]
    async fn a_task_that_panics_is_named_with_its_panic() {
        let stopped = Stopped::default();
        let mut tasks = Supervisor::new();
        polite(&mut tasks, &stopped, "admin");
        tasks.spawn("sweeper", |_| async { panic!("the clock went backwards") });
        let error = tasks.run(CancellationToken::new()).await.expect_err("it panicked");
        assert_eq!(format!("{error:#}"), "task `sweeper` failed: panicked: the clock went backwards");
        assert_eq!(*stopped.lock().unwrap(), ["admin"]);
    }

    #[tokio::test]
    async fn a_task_that_fails_while_stopping_makes_the_stop_fail() {
        let mut tasks = Supervisor::new();
        tasks.spawn("dispatcher", |stop| async move {
            stop.cancelled().await;
            Err(anyhow!("the last batch could not be committed"))
        });
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let error = tasks.run(shutdown).await.expect_err("the stop failed");
        assert_eq!(format!("{error:#}"), "task `dispatcher` failed: the last batch could not be committed");
    }
}
