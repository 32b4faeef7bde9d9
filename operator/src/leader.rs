//! Leader election: of the operator's replicas only the holder of a Lease
//! (`coordination.k8s.io/v1`) reconciles; the others wait, and one of them
//! takes over when the holder stops renewing it (its pod died) or releases
//! it (its pod was stopped). The Lease is kept by
//! [`kube_lease_manager`], which takes it with server-side apply, so two
//! replicas can never both believe they hold it after the API server
//! answered.
//!
//! A replica that loses the Lease while leading (it could not renew it in
//! time, e.g. cut off from the API server) stops reconciling and returns
//! [`Error::LeadershipLost`]: `confab operator` then exits non-zero and the
//! kubelet restarts it as a follower, as client-go's leader election does.

use std::future::Future;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};

use crate::Operator;
use crate::metrics::Metrics;

/// Where the Lease is and how long it lasts.
#[derive(Debug, Clone)]
pub struct Election {
    /// The Lease's namespace (the operator's own, in a pod).
    pub namespace: String,
    /// The Lease's name, shared by every replica of one operator.
    pub lease: String,
    /// This replica's name in `spec.holderIdentity`: unique per replica.
    pub identity: String,
    /// How long a Lease that is not renewed stays held: the longest a dead
    /// leader delays its successor.
    pub lease_seconds: u64,
}

impl Election {
    /// The leader renews the Lease this long before it expires: a third of
    /// its duration, at least a second.
    pub fn renew_before(&self) -> u64 {
        (self.lease_seconds / 3).max(1)
    }
}

/// What can end a replica's election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leader election: {0}")]
    Lease(#[from] LeaseManagerError),
    #[error("lost the Lease {0} while leading: stopped reconciling")]
    LeadershipLost(String),
    #[error("leader election: the Lease's duration must be at least 2 seconds")]
    TooShort,
}

/// Waits for the Lease, then runs `operator` while holding it, until
/// `shutdown` resolves (the Lease is then released, so a follower takes
/// over at once) or the Lease is lost.
pub async fn run(
    client: Client,
    election: Election,
    operator: Operator,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    if election.lease_seconds < 2 {
        return Err(Error::TooShort);
    }
    let manager = LeaseManagerBuilder::new(client, &election.lease)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.lease_seconds)
        .with_grace(election.renew_before())
        .with_field_manager(format!("confab-operator-{}", election.identity))
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    let lease = format!("{}/{}", election.namespace, election.lease);
    tracing::info!(%lease, identity = %election.identity, "waiting for the Lease");
    let mut shutdown = Box::pin(shutdown);

    // Follower: wait to lead, or to stop.
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() {
                return Err(finished(task).await.err().unwrap_or_else(|| Error::LeadershipLost(lease)));
            },
            () = &mut shutdown => {
                drop(leading);
                return finished(task).await;
            }
        }
    }
    tracing::info!(%lease, identity = %election.identity, "leading: reconciling");
    metrics.set_leader(true);

    // Leader: reconcile until told to stop or until the Lease is lost. (A
    // task watches both: the controller wants a future it can share.)
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<bool>();
    let mut watch = leading.clone();
    tokio::spawn(async move {
        let lost = tokio::select! {
            () = shutdown => false,
            () = async {
                while watch.changed().await.is_ok() {
                    if !*watch.borrow_and_update() {
                        return;
                    }
                }
            } => true,
        };
        let _ = stop_tx.send(lost);
    });
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        if stop_rx.await == Ok(true) {
            let _ = lost_tx.send(());
        }
    };
    operator.run(stop).await;
    metrics.set_leader(false);
    let lost = lost_rx.await.is_ok();
    // Dropping the last receiver makes the manager release the Lease.
    drop(leading);
    let released = finished(task).await;
    if lost {
        tracing::error!(%lease, "lost the Lease while leading");
        return Err(Error::LeadershipLost(lease));
    }
    tracing::info!(%lease, "released the Lease");
    released
}

/// Waits (bounded) for the manager's task, which releases the Lease once
/// every receiver is gone.
async fn finished(
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
) -> Result<(), Error> {
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e.into()),
        Ok(Err(join)) => Err(Error::Lease(LeaseManagerError::InconsistentState(join.to_string()))),
        Err(_) => {
            tracing::warn!("releasing the Lease took over 10 s; it expires by itself");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_renews_a_third_of_the_duration_before_expiry() {
        let e = |s| Election { namespace: "ns".into(), lease: "l".into(), identity: "i".into(), lease_seconds: s };
        assert_eq!(e(15).renew_before(), 5);
        assert_eq!(e(4).renew_before(), 1);
        assert_eq!(e(2).renew_before(), 1);
    }
}
