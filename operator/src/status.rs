//! The `ChatCluster` status, computed from what the children report: a
//! pure function, so every combination is a unit test.
//!
//! - `Available`: the schema is migrated and at least one gateway and one
//!   dispatcher are ready, so clients can chat.
//! - `Progressing`: the migration Job runs, or a Deployment is rolling out
//!   or scaling.
//! - `Degraded`: something needs a person: the migration failed, a rollout
//!   passed its deadline, or the operator could not apply the children.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::children::network;
use crate::crd::{ChatCluster, ChatClusterStatus, RoleStatus, RolloutStatus};
use crate::rollout::{self, Decision};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// What the operator found on the API server this round.
#[derive(Debug, Default, Clone, Copy)]
pub struct Observed<'a> {
    pub gateway: Option<&'a Deployment>,
    pub dispatcher: Option<&'a Deployment>,
    /// The migration Job of the current spec.
    pub migration: Option<&'a Job>,
    pub public_service: Option<&'a Service>,
    /// Why applying the children failed this round, if it did.
    pub error: Option<&'a str>,
    /// The rollout gates' decisions (gateways, dispatchers), when the
    /// Deployments were applied this round.
    pub gates: Option<&'a [Decision; 2]>,
}

/// Where the schema migration of the current spec stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migration {
    Pending,
    Running,
    Succeeded,
    Failed,
}

pub fn migration(job: Option<&Job>) -> Migration {
    let Some(status) = job.and_then(|j| j.status.as_ref()) else { return Migration::Pending };
    let has = |t: &str| status.conditions.iter().flatten().any(|c| c.type_ == t && c.status == "True");
    if has("Complete") || status.succeeded.unwrap_or(0) > 0 {
        Migration::Succeeded
    } else if has("Failed") {
        Migration::Failed
    } else {
        Migration::Running
    }
}

/// A role's replicas: desired from the Deployment (which the autoscaler
/// may have changed), else from the spec.
fn role(deployment: Option<&Deployment>, spec_replicas: Option<i32>) -> RoleStatus {
    let desired = deployment.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas).or(spec_replicas).unwrap_or(0);
    let status = deployment.and_then(|d| d.status.as_ref());
    let ready = status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let updated = status.and_then(|s| s.updated_replicas).unwrap_or(0);
    RoleStatus { desired, ready, updated, summary: format!("{ready}/{desired}") }
}

/// Whether a Deployment is still rolling out or scaling.
fn rolling(d: &Deployment) -> bool {
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = &d.status else { return true };
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    status.observed_generation.unwrap_or(0) < generation
        || status.updated_replicas.unwrap_or(0) < desired
        || status.replicas.unwrap_or(0) > status.updated_replicas.unwrap_or(0)
        || status.available_replicas.unwrap_or(0) < desired
}

/// A gate's decision as the status reports it: the gates decide before
/// the Deployments are applied, the status reads them after; a rollout
/// that was let run and has finished meanwhile is complete (so
/// `status.rollout` never says `Rolling` beside `Progressing=False`).
fn settled(deployment: Option<&Deployment>, decision: &Decision) -> Decision {
    if !decision.paused && deployment.is_some_and(|d| !rolling(d)) {
        return Decision { paused: false, reason: rollout::COMPLETE, message: String::new() };
    }
    decision.clone()
}

fn deadline_exceeded(d: &Deployment) -> bool {
    d.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
        cs.iter().any(|c| {
            c.type_ == "Progressing" && c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
    })
}

/// The status for `cc` given what was observed. Conditions whose status
/// did not change keep their `lastTransitionTime`.
pub fn compute(cc: &ChatCluster, observed: &Observed, now: &Time) -> ChatClusterStatus {
    let generation = cc.metadata.generation;
    let gateways = role(observed.gateway, cc.spec.gateway_replicas());
    let dispatchers = role(observed.dispatcher, cc.spec.dispatcher_replicas());
    let migration = migration(observed.migration);
    let counts = format!(
        "{} of {} gateways and {} of {} dispatchers ready",
        gateways.ready, gateways.desired, dispatchers.ready, dispatchers.desired
    );

    let available = match migration {
        Migration::Pending | Migration::Running => {
            (false, "MigrationPending", "the schema migration has not finished".to_owned())
        }
        Migration::Failed => (false, "MigrationFailed", "the schema migration failed".to_owned()),
        Migration::Succeeded if gateways.ready == 0 => (false, "NoGatewayReady", counts.clone()),
        Migration::Succeeded if dispatchers.ready == 0 => (false, "NoDispatcherReady", counts.clone()),
        Migration::Succeeded => (true, "MinimumReplicasAvailable", counts.clone()),
    };

    let deployments = [observed.gateway, observed.dispatcher];
    let held: Vec<String> = observed
        .gates
        .into_iter()
        .flatten()
        .zip(["gateways", "dispatchers"])
        .filter(|(d, _)| d.paused)
        .map(|(d, role)| format!("{role} {}", d.message))
        .collect();
    let progressing = if migration == Migration::Running || migration == Migration::Pending {
        (true, "Migrating", format!("running {}", job_name(observed.migration)))
    } else if !held.is_empty() {
        (true, "RolloutPaused", held.join("; "))
    } else if deployments.iter().any(|d| d.is_none_or(rolling)) && migration == Migration::Succeeded {
        (true, "RollingOut", counts.clone())
    } else {
        (false, "RolloutComplete", counts.clone())
    };

    let degraded = if let Some(error) = observed.error {
        (true, "ReconcileError", error.to_owned())
    } else if migration == Migration::Failed {
        (true, "MigrationFailed", format!("{} failed: see its pods' logs", job_name(observed.migration)))
    } else if let Some(d) = deployments.iter().flatten().find(|d| deadline_exceeded(d)) {
        let name = d.metadata.name.as_deref().unwrap_or_default();
        (true, "ProgressDeadlineExceeded", format!("Deployment {name} is not progressing"))
    } else {
        (false, "AsExpected", "no problem found".to_owned())
    };

    let previous = cc.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let condition = |type_: &str, (ok, reason, message): (bool, &str, String)| {
        let status = if ok { "True" } else { "False" };
        let since = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time: since,
        }
    };

    ChatClusterStatus {
        observed_generation: generation,
        gateways,
        dispatchers,
        conditions: vec![
            condition(AVAILABLE, available),
            condition(PROGRESSING, progressing),
            condition(DEGRADED, degraded),
        ],
        endpoint: observed.public_service.and_then(|s| network::endpoint(cc, s)),
        rollout: observed.gates.map(|[gateways, dispatchers]| RolloutStatus {
            gateways: rollout::role_status(observed.gateway, &settled(observed.gateway, gateways)),
            dispatchers: rollout::role_status(observed.dispatcher, &settled(observed.dispatcher, dispatchers)),
        }),
    }
}

fn job_name(job: Option<&Job>) -> String {
    match job.and_then(|j| j.metadata.name.as_deref()) {
        Some(name) => format!("Job {name}"),
        None => "the migration Job".to_owned(),
    }
}

/// The condition `type_` of a status, if set.
pub fn condition<'a>(status: Option<&'a ChatClusterStatus>, type_: &str) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::tests::minimal;
    use serde_json::json;

    fn now() -> Time {
        Time("2026-01-01T00:00:00Z".parse().unwrap())
    }

    fn deployment(replicas: i32, ready: i32, updated: i32, generation: i64, observed: i64) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "chat-gateway", "generation": generation},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": {
                "observedGeneration": observed, "replicas": replicas, "readyReplicas": ready,
                "availableReplicas": ready, "updatedReplicas": updated,
            },
        }))
        .unwrap()
    }

    fn job(condition: Option<&str>) -> Job {
        let conditions: Vec<_> = condition.into_iter().map(|t| json!({"type": t, "status": "True"})).collect();
        serde_json::from_value(json!({"metadata": {"name": "chat-migrate-1"}, "status": {"conditions": conditions}}))
            .unwrap()
    }

    fn get<'a>(s: &'a ChatClusterStatus, t: &str) -> (&'a str, &'a str) {
        let c = condition(Some(s), t).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn a_cluster_with_ready_pods_and_a_migrated_schema_is_available() {
        let mut cc = minimal();
        cc.metadata.generation = Some(3);
        let (gw, disp, done) = (deployment(2, 2, 2, 1, 1), deployment(2, 2, 2, 1, 1), job(Some("Complete")));
        let observed =
            Observed { gateway: Some(&gw), dispatcher: Some(&disp), migration: Some(&done), ..Default::default() };
        let s = compute(&cc, &observed, &now());
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(get(&s, AVAILABLE), ("True", "MinimumReplicasAvailable"));
        assert_eq!(get(&s, PROGRESSING), ("False", "RolloutComplete"));
        assert_eq!(get(&s, DEGRADED), ("False", "AsExpected"));
        assert_eq!(s.gateways.summary, "2/2");
        assert_eq!(s.dispatchers, RoleStatus { desired: 2, ready: 2, updated: 2, summary: "2/2".into() });
    }

    #[test]
    fn before_the_migration_finishes_nothing_is_available() {
        let cc = minimal();
        let running = job(None);
        let s = compute(&cc, &Observed { migration: Some(&running), ..Default::default() }, &now());
        assert_eq!(get(&s, AVAILABLE), ("False", "MigrationPending"));
        assert_eq!(get(&s, PROGRESSING), ("True", "Migrating"));
        assert_eq!(s.gateways.summary, "0/2");
        let failed = job(Some("Failed"));
        let s = compute(&cc, &Observed { migration: Some(&failed), ..Default::default() }, &now());
        assert_eq!(get(&s, AVAILABLE), ("False", "MigrationFailed"));
        assert_eq!(get(&s, DEGRADED), ("True", "MigrationFailed"));
    }

    #[test]
    fn a_rollout_in_progress_is_progressing_and_still_available() {
        let cc = minimal();
        let (gw, disp, done) = (deployment(2, 2, 1, 2, 2), deployment(2, 1, 2, 1, 1), job(Some("Complete")));
        let observed =
            Observed { gateway: Some(&gw), dispatcher: Some(&disp), migration: Some(&done), ..Default::default() };
        let s = compute(&cc, &observed, &now());
        assert_eq!(get(&s, AVAILABLE).0, "True");
        assert_eq!(get(&s, PROGRESSING), ("True", "RollingOut"));
        // The Deployment controller has not seen the new generation yet.
        let gw = deployment(2, 2, 2, 5, 4);
        let observed =
            Observed { gateway: Some(&gw), dispatcher: Some(&disp), migration: Some(&done), ..Default::default() };
        assert_eq!(get(&compute(&cc, &observed, &now()), PROGRESSING), ("True", "RollingOut"));
    }

    #[test]
    fn a_paused_rollout_is_progressing_with_its_reason_and_reported_per_role() {
        let cc = minimal();
        let (gw, disp, done) = (deployment(2, 2, 1, 2, 2), deployment(2, 2, 0, 2, 2), job(Some("Complete")));
        let gates = [
            rollout::decide(crate::children::Role::Gateway, true, rollout::Measure::Value(12.0), 200.0),
            rollout::decide(crate::children::Role::Dispatcher, true, rollout::Measure::Value(9e4), 1e4),
        ];
        let observed = Observed {
            gateway: Some(&gw),
            dispatcher: Some(&disp),
            migration: Some(&done),
            gates: Some(&gates),
            ..Default::default()
        };
        let s = compute(&cc, &observed, &now());
        assert_eq!(get(&s, PROGRESSING), ("True", "RolloutPaused"));
        let message = &condition(Some(&s), PROGRESSING).unwrap().message;
        assert!(message.starts_with("dispatchers paused: 90000"), "{message}");
        let r = s.rollout.clone().unwrap();
        assert_eq!((r.gateways.updated, r.gateways.total, r.gateways.paused), (1, 2, false));
        assert_eq!(r.gateways.reason, rollout::ROLLING);
        assert_eq!((r.dispatchers.updated, r.dispatchers.paused), (0, true));
        assert_eq!(r.dispatchers.reason, rollout::LAG_ABOVE_BOUND);
        assert_eq!(get(&s, AVAILABLE).0, "True", "a paused rollout keeps serving");
    }

    #[test]
    fn a_rollout_let_run_that_finished_before_the_status_was_read_is_complete() {
        let cc = minimal();
        let (gw, disp, done) = (deployment(2, 2, 2, 2, 2), deployment(2, 2, 2, 2, 2), job(Some("Complete")));
        let gates = [
            rollout::decide(crate::children::Role::Gateway, true, rollout::Measure::Value(0.0), 200.0),
            rollout::capacity_gate(&[(900.0, 1000.0), (900.0, 1000.0)]).unwrap(),
        ];
        let observed = Observed {
            gateway: Some(&gw),
            dispatcher: Some(&disp),
            migration: Some(&done),
            gates: Some(&gates),
            ..Default::default()
        };
        let s = compute(&cc, &observed, &now());
        let r = s.rollout.clone().unwrap();
        assert_eq!((r.gateways.paused, r.gateways.reason.as_str()), (false, rollout::COMPLETE));
        // A held rollout stays held, whatever its Deployment says.
        assert_eq!((r.dispatchers.paused, r.dispatchers.reason.as_str()), (true, rollout::CAPACITY_SHORT));
        // Still rolling: still Rolling.
        let gw = deployment(2, 2, 1, 3, 3);
        let observed = Observed { gateway: Some(&gw), ..observed };
        let r = compute(&cc, &observed, &now()).rollout.unwrap();
        assert_eq!(r.gateways.reason, rollout::ROLLING);
    }

    #[test]
    fn no_ready_dispatcher_means_unavailable() {
        let cc = minimal();
        let (gw, disp, done) = (deployment(2, 2, 2, 1, 1), deployment(2, 0, 2, 1, 1), job(Some("Complete")));
        let observed =
            Observed { gateway: Some(&gw), dispatcher: Some(&disp), migration: Some(&done), ..Default::default() };
        assert_eq!(get(&compute(&cc, &observed, &now()), AVAILABLE), ("False", "NoDispatcherReady"));
    }

    #[test]
    fn apply_errors_and_stuck_rollouts_are_degraded() {
        let cc = minimal();
        let done = job(Some("Complete"));
        let s =
            compute(&cc, &Observed { migration: Some(&done), error: Some("forbidden"), ..Default::default() }, &now());
        assert_eq!(get(&s, DEGRADED), ("True", "ReconcileError"));
        let mut stuck = deployment(2, 1, 1, 1, 1);
        stuck.status.as_mut().unwrap().conditions = Some(vec![
            serde_json::from_value(json!({
                "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            }))
            .unwrap(),
        ]);
        let s = compute(&cc, &Observed { gateway: Some(&stuck), migration: Some(&done), ..Default::default() }, &now());
        assert_eq!(get(&s, DEGRADED), ("True", "ProgressDeadlineExceeded"));
    }

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time() {
        let mut cc = minimal();
        let earlier = Time("2025-06-01T00:00:00Z".parse().unwrap());
        let first = compute(&cc, &Observed::default(), &earlier);
        cc.status = Some(first);
        let second = compute(&cc, &Observed::default(), &now());
        assert_eq!(condition(Some(&second), AVAILABLE).unwrap().last_transition_time, earlier);
        let failed = job(Some("Failed"));
        let third = compute(&cc, &Observed { migration: Some(&failed), ..Default::default() }, &now());
        assert_eq!(condition(Some(&third), DEGRADED).unwrap().last_transition_time, now(), "it changed");
    }

    #[test]
    fn the_endpoint_comes_from_the_public_service() {
        let cc = minimal();
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "chat-gateway", "namespace": "team"},
            "status": {"loadBalancer": {"ingress": [{"hostname": "chat.example.com"}]}},
        }))
        .unwrap();
        let s = compute(&cc, &Observed { public_service: Some(&svc), ..Default::default() }, &now());
        assert_eq!(s.endpoint.as_deref(), Some("http://chat.example.com"));
    }
}
