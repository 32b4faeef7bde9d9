//! Health-gated rolling updates. The Deployments roll themselves (gateways
//! one at a time: `maxSurge: 1, maxUnavailable: 0`, so a new gateway is
//! ready before an old one leaves the Service and drains its clients with
//! `bye server_restart`); the operator holds a rollout (the Deployment's
//! `spec.paused`) while it would hurt:
//!
//! - gateways, while the other gateways have no room for the clients of the
//!   fullest one (the sum of their free places, `max_connections` less live
//!   sessions, is below its sessions), so a drained gateway's clients always
//!   have somewhere to go;
//! - gateways, while the gateways together open more sessions per second
//!   than `spec.rollout.maxReconnectsPerSecond` (the clients of the last
//!   drained gateway are still reconnecting);
//! - dispatchers, while their consumer lag is above
//!   `spec.rollout.maxDispatcherLag` records.
//!
//! The measures come from the pods' `/metrics` (through the API server's
//! pod proxy). The decisions are pure functions, tested below.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;

use crate::children::Role;
use crate::crd::RoleRollout;
use crate::plugin::metric_sum;

/// The counter of sessions a gateway opened (every reconnection is one).
pub const SESSIONS_OPENED: &str = "confab_sessions_opened_total";
/// A gateway's live sessions, and the most its listener accepts.
pub const CONNECTIONS: &str = "confab_gateway_connections";
pub const MAX_CONNECTIONS: &str = "confab_gateway_max_connections";
/// A dispatcher's consumer lag, per partition.
pub const CONSUMER_LAG: &str = "confab_consumer_lag_records";

pub const COMPLETE: &str = "RolloutComplete";
pub const ROLLING: &str = "Rolling";
pub const RECONNECTS_ABOVE_BOUND: &str = "ReconnectsAboveBound";
pub const LAG_ABOVE_BOUND: &str = "LagAboveBound";
pub const CAPACITY_SHORT: &str = "CapacityShort";
pub const METRICS_UNAVAILABLE: &str = "MetricsUnavailable";
pub const MEASURING: &str = "Measuring";

/// A rate needs samples at least this far apart (seconds).
pub const MIN_RATE_WINDOW: f64 = 1.0;
/// The reference sample is replaced once it is this old (seconds).
pub const MAX_RATE_WINDOW: f64 = 5.0;

/// What the operator decided for one role this round.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub paused: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Whether a Deployment has a rollout to run or under way: the template
/// the operator is about to apply differs from the current one, or the
/// Deployment has not finished the last one.
pub fn rolling(current: &Deployment, template_changed: bool) -> bool {
    if template_changed {
        return true;
    }
    let generation = current.metadata.generation.unwrap_or(0);
    let Some(status) = &current.status else { return true };
    let desired = current.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    status.observed_generation.unwrap_or(0) < generation || updated < desired || status.replicas.unwrap_or(0) > updated
}

/// What the pods' metrics say of a role.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    /// No serving pod's `/metrics` could be read.
    Unavailable,
    /// The first sample of a rate: nothing to compare yet.
    FirstSample,
    Value(f64),
}

/// The gate of one role: hold the rollout while the measure is above
/// `bound`; let it run when the measure is unknown (a rollout that fixes
/// broken pods must not wait for their metrics); hold it until a rate can
/// be told (the next round, seconds later).
pub fn decide(role: Role, rolling: bool, measure: Measure, bound: f64) -> Decision {
    let (what, above) = match role {
        Role::Gateway => ("reconnections per second across the gateways", RECONNECTS_ABOVE_BOUND),
        Role::Dispatcher => ("records of consumer lag across the dispatchers", LAG_ABOVE_BOUND),
    };
    let field = match role {
        Role::Gateway => "spec.rollout.maxReconnectsPerSecond",
        Role::Dispatcher => "spec.rollout.maxDispatcherLag",
    };
    if !rolling {
        return Decision { paused: false, reason: COMPLETE, message: String::new() };
    }
    match measure {
        Measure::FirstSample => {
            Decision { paused: true, reason: MEASURING, message: format!("paused: measuring the {what}") }
        }
        Measure::Unavailable => Decision {
            paused: false,
            reason: METRICS_UNAVAILABLE,
            message: format!("no pod's /metrics could be read: rolling without the {what} gate"),
        },
        Measure::Value(m) if m > bound => Decision {
            paused: true,
            reason: above,
            message: format!("paused: {} {what}, above {field} {bound}", round(m)),
        },
        Measure::Value(m) => Decision { paused: false, reason: ROLLING, message: format!("{} {what}", round(m)) },
    }
}

/// The capacity gate of the gateways, from each serving gateway's (live
/// sessions, `max_connections`): whichever gateway the Deployment drains
/// next, its clients must fit in the free places of the others. Holds the
/// rollout (a paused decision) while the fullest gateway's sessions exceed
/// the others' free places; `None` when they fit, or when fewer than two
/// gateways answered (nothing to compare: the other gates decide).
pub fn capacity_gate(gateways: &[(f64, f64)]) -> Option<Decision> {
    if gateways.len() < 2 {
        return None;
    }
    let fullest = gateways.iter().enumerate().max_by(|a, b| a.1.0.total_cmp(&b.1.0)).map(|(i, _)| i)?;
    let sessions = gateways[fullest].0;
    let room: f64 =
        gateways.iter().enumerate().filter(|(i, _)| *i != fullest).map(|(_, (live, max))| (max - live).max(0.0)).sum();
    (sessions > room).then(|| Decision {
        paused: true,
        reason: CAPACITY_SHORT,
        message: format!(
            "paused: a gateway holds {} sessions and the other gateways have room for {} (max_connections less live sessions)",
            round(sessions),
            round(room)
        ),
    })
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The status of one role's rollout.
pub fn role_status(deployment: Option<&Deployment>, decision: &Decision) -> RoleRollout {
    let total = deployment.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas).unwrap_or(0);
    let updated = deployment.and_then(|d| d.status.as_ref()).and_then(|s| s.updated_replicas).unwrap_or(0);
    RoleRollout {
        updated: updated.min(total),
        total,
        paused: decision.paused,
        reason: decision.reason.to_owned(),
        message: decision.message.clone(),
    }
}

/// The gateways' session counters at one moment (seconds on a monotonic
/// clock; counters by pod name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub at: f64,
    pub opened: BTreeMap<String, f64>,
}

/// New sessions per second across the gateways between two samples. A
/// pod absent from `before` started meanwhile: its whole counter counts
/// (its clients all reconnected to it); a counter that went down belongs
/// to a restarted process and counts from zero.
pub fn reconnect_rate(before: &Sample, after: &Sample) -> Option<f64> {
    let dt = after.at - before.at;
    if dt < MIN_RATE_WINDOW {
        return None;
    }
    let new: f64 = after
        .opened
        .iter()
        .map(|(pod, &now)| match before.opened.get(pod) {
            Some(&then) if now >= then => now - then,
            _ => now,
        })
        .sum();
    Some(new / dt)
}

/// Keeps the reference sample of a cluster's gateways and turns new ones
/// into a rate: `(rate, reference to keep)`.
pub fn next_rate(reference: Option<&Sample>, now: Sample) -> (Option<f64>, Sample) {
    let Some(before) = reference else { return (None, now) };
    let rate = reconnect_rate(before, &now);
    let keep = if now.at - before.at >= MAX_RATE_WINDOW { now } else { before.clone() };
    (rate, keep)
}

/// The sum of a metric over the expositions that have it; `None` when
/// none has.
pub fn sum_over(expositions: &[String], name: &str) -> Option<f64> {
    let values: Vec<f64> = expositions.iter().filter_map(|e| metric_sum(e, name)).collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// A pod that serves: running and ready.
pub fn serving(pod: &Pod) -> bool {
    let Some(status) = &pod.status else { return false };
    let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    ready && status.phase.as_deref() == Some("Running")
}

pub type ScrapeFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;
type ScrapeFn = dyn Fn(Client, String, String) -> ScrapeFuture + Send + Sync;

/// How the operator reads a pod's `/metrics`: through the API server's pod
/// proxy (the default), or a function of (namespace, pod) (tests).
#[derive(Clone, Default)]
pub struct Scraper(Option<Arc<ScrapeFn>>);

impl Scraper {
    pub fn custom(f: impl Fn(String, String) -> ScrapeFuture + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(move |_client, ns, pod| f(ns, pod))))
    }

    /// The exposition of `pod`'s `/metrics`, `None` when it cannot be read.
    pub async fn scrape(&self, client: &Client, ns: &str, pod: &str) -> Option<String> {
        match &self.0 {
            Some(f) => f(client.clone(), ns.to_owned(), pod.to_owned()).await,
            None => match crate::plugin::admin_get(client, ns, pod, "/metrics").await {
                Some((200, body)) => Some(body),
                _ => None,
            },
        }
    }
}

impl fmt::Debug for Scraper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Scraper(custom)" } else { "Scraper(pod proxy)" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i32, updated: i32, status_replicas: i32, generation: i64, observed: i64) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "chat-gateway", "generation": generation},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": {"observedGeneration": observed, "replicas": status_replicas, "updatedReplicas": updated},
        }))
        .unwrap()
    }

    fn sample(at: f64, pods: &[(&str, f64)]) -> Sample {
        Sample { at, opened: pods.iter().map(|(p, v)| ((*p).to_owned(), *v)).collect() }
    }

    #[test]
    fn a_deployment_rolls_while_its_template_changes_or_its_pods_are_not_all_updated() {
        let done = deployment(2, 2, 2, 3, 3);
        assert!(!rolling(&done, false));
        assert!(rolling(&done, true), "a new template is a rollout to come");
        assert!(rolling(&deployment(2, 1, 3, 4, 4), false), "one of two updated, a surge pod");
        assert!(rolling(&deployment(2, 2, 3, 4, 4), false), "an old pod still terminating");
        assert!(rolling(&deployment(2, 2, 2, 5, 4), false), "the controller has not seen generation 5");
    }

    #[test]
    fn gateways_pause_while_reconnections_run_above_the_bound_and_resume_below_it() {
        let d = decide(Role::Gateway, true, Measure::Value(350.0), 200.0);
        assert!(d.paused);
        assert_eq!(d.reason, RECONNECTS_ABOVE_BOUND);
        assert!(d.message.contains("350") && d.message.contains("maxReconnectsPerSecond"), "{}", d.message);
        let d = decide(Role::Gateway, true, Measure::Value(200.0), 200.0);
        assert_eq!((d.paused, d.reason), (false, ROLLING), "at the bound is not above it");
        let d = decide(Role::Gateway, false, Measure::Value(10_000.0), 200.0);
        assert_eq!((d.paused, d.reason), (false, COMPLETE), "nothing to roll: never paused");
    }

    #[test]
    fn gateways_pause_while_the_others_have_no_room_for_the_fullest_ones_clients() {
        // a holds 900; b and the surge pod c have 100 + 1000 free places.
        assert_eq!(capacity_gate(&[(900.0, 1000.0), (900.0, 1000.0), (0.0, 1000.0)]), None);
        // Without the surge pod, b has room for 100 of a's 900.
        let held = capacity_gate(&[(900.0, 1000.0), (900.0, 1000.0)]).expect("held");
        assert!(held.paused);
        assert_eq!(held.reason, CAPACITY_SHORT);
        assert!(held.message.contains("900 sessions") && held.message.contains("room for 100"), "{}", held.message);
        // Exactly enough room rolls; an over-full gateway counts no room, never negative.
        assert_eq!(capacity_gate(&[(500.0, 1000.0), (500.0, 1000.0)]), None);
        assert!(capacity_gate(&[(10.0, 1000.0), (1200.0, 1000.0), (5.0, 10.0)]).is_some());
        // One gateway, or none answering: not this gate's call.
        assert_eq!(capacity_gate(&[(900.0, 1000.0)]), None);
        assert_eq!(capacity_gate(&[]), None);
    }

    #[test]
    fn dispatchers_roll_only_while_the_lag_is_under_the_bound() {
        let d = decide(Role::Dispatcher, true, Measure::Value(50_000.0), 10_000.0);
        assert_eq!((d.paused, d.reason), (true, LAG_ABOVE_BOUND));
        assert!(d.message.contains("maxDispatcherLag"), "{}", d.message);
        assert!(!decide(Role::Dispatcher, true, Measure::Value(0.0), 0.0).paused);
    }

    #[test]
    fn unknown_metrics_never_hold_a_rollout() {
        let d = decide(Role::Dispatcher, true, Measure::Unavailable, 10.0);
        assert_eq!((d.paused, d.reason), (false, METRICS_UNAVAILABLE));
    }

    #[test]
    fn a_rollout_waits_for_a_second_sample_of_the_rate() {
        let d = decide(Role::Gateway, true, Measure::FirstSample, 10.0);
        assert_eq!((d.paused, d.reason), (true, MEASURING));
    }

    #[test]
    fn the_reconnect_rate_counts_new_sessions_per_second_across_pods() {
        let before = sample(10.0, &[("a", 100.0), ("b", 40.0)]);
        // a: +50; b is gone (drained); c is new: all its 150 sessions are reconnections.
        let after = sample(12.0, &[("a", 150.0), ("c", 150.0)]);
        assert_eq!(reconnect_rate(&before, &after), Some(100.0));
        // A restarted process: its counter went down and counts from zero.
        let after = sample(12.0, &[("a", 20.0), ("b", 40.0)]);
        assert_eq!(reconnect_rate(&before, &after), Some(10.0));
        // Too close together to say.
        assert_eq!(reconnect_rate(&before, &sample(10.5, &[("a", 900.0)])), None);
    }

    #[test]
    fn the_reference_sample_is_kept_until_it_is_old_enough() {
        let (rate, kept) = next_rate(None, sample(0.0, &[("a", 0.0)]));
        assert_eq!(rate, None, "one sample is no rate");
        let (rate, kept) = next_rate(Some(&kept), sample(2.0, &[("a", 20.0)]));
        assert_eq!((rate, kept.at), (Some(10.0), 0.0));
        let (rate, kept) = next_rate(Some(&kept), sample(6.0, &[("a", 20.0)]));
        assert_eq!((rate, kept.at), (Some(20.0 / 6.0), 6.0));
    }

    #[test]
    fn lag_is_summed_over_the_dispatchers_that_answer() {
        let a = "# TYPE confab_consumer_lag_records gauge\nconfab_consumer_lag_records{partition=\"0\"} 7\nconfab_consumer_lag_records{partition=\"1\"} 3\n";
        let b = "confab_consumer_lag_records{partition=\"2\"} 5\n";
        assert_eq!(sum_over(&[a.into(), b.into()], CONSUMER_LAG), Some(15.0));
        assert_eq!(sum_over(&["other_metric 1\n".into()], CONSUMER_LAG), None);
    }

    #[test]
    fn the_status_reports_updated_of_total() {
        let d = deployment(2, 1, 3, 4, 4);
        let paused = decide(Role::Gateway, true, Measure::Value(500.0), 200.0);
        let s = role_status(Some(&d), &paused);
        assert_eq!((s.updated, s.total, s.paused, s.reason.as_str()), (1, 2, true, RECONNECTS_ABOVE_BOUND));
    }
}
