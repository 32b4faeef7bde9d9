//! PodDisruptionBudgets and HorizontalPodAutoscalers (autoscaling/v2):
//! gateways on the per-pod custom metric `confab_gateway_connections`,
//! dispatchers on the external metric `confab_consumer_lag_records`.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::json;

use super::{CLUSTER_LABEL, Role, child_name, metadata, selector_labels, to_json, typed};
use crate::Result;
use crate::crd::ChatCluster;

/// The gateways' autoscaling metric (a per-pod custom metric).
pub const GATEWAY_METRIC: &str = "confab_gateway_connections";
/// The dispatchers' autoscaling metric (an external metric).
pub const DISPATCHER_METRIC: &str = "confab_consumer_lag_records";

/// `<name>-<role>`, unless disabled.
pub fn pdb(cc: &ChatCluster, role: Role) -> Result<Option<PodDisruptionBudget>> {
    let spec = match role {
        Role::Gateway => &cc.spec.gateway.pod_disruption_budget,
        Role::Dispatcher => &cc.spec.dispatcher.pod_disruption_budget,
    };
    if !spec.enabled {
        return Ok(None);
    }
    let mut pdb_spec = json!({"selector": {"matchLabels": selector_labels(cc, role.as_str())}});
    match (&spec.min_available, &spec.max_unavailable) {
        (Some(min), _) => pdb_spec["minAvailable"] = to_json(min),
        (None, Some(max)) => pdb_spec["maxUnavailable"] = to_json(max),
        (None, None) => pdb_spec["maxUnavailable"] = json!(1),
    }
    typed(
        "PodDisruptionBudget",
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata(cc, child_name(cc, role.as_str()), role.as_str())?,
            "spec": pdb_spec,
        }),
    )
    .map(Some)
}

/// `<name>-<role>`, when the role is autoscaled.
pub fn hpa(cc: &ChatCluster, role: Role) -> Result<Option<HorizontalPodAutoscaler>> {
    let (min, max, metric) = match role {
        Role::Gateway => {
            let Some(a) = &cc.spec.gateway.autoscaling else { return Ok(None) };
            let metric = json!({
                "type": "Pods",
                "pods": {
                    "metric": {"name": GATEWAY_METRIC},
                    "target": {"type": "AverageValue", "averageValue": a.target_connections_per_pod.to_string()},
                },
            });
            (a.min_replicas, a.max_replicas, metric)
        }
        Role::Dispatcher => {
            let Some(a) = &cc.spec.dispatcher.autoscaling else { return Ok(None) };
            let metric = json!({
                "type": "External",
                "external": {
                    "metric": {
                        "name": DISPATCHER_METRIC,
                        "selector": {"matchLabels": {CLUSTER_LABEL: cc.metadata.name}},
                    },
                    "target": {"type": "AverageValue", "averageValue": a.target_lag_per_replica.to_string()},
                },
            });
            // More dispatchers than partitions would sit idle.
            let max = a.max_replicas.min(cc.spec.kafka.partitions);
            (a.min_replicas.min(max), max, metric)
        }
    };
    typed(
        "HorizontalPodAutoscaler",
        json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": metadata(cc, child_name(cc, role.as_str()), role.as_str())?,
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": child_name(cc, role.as_str())},
                "minReplicas": min,
                "maxReplicas": max,
                "metrics": [metric],
            },
        }),
    )
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::tests::{cluster, minimal};

    fn autoscaled() -> ChatCluster {
        cluster(json!({
            "kafka": {"bootstrapServers": "kafka:9092", "partitions": 8},
            "cql": {"contactPoints": ["cql:9042"]},
            "gateway": {"autoscaling": {"minReplicas": 2, "maxReplicas": 20, "targetConnectionsPerPod": 10000}},
            "dispatcher": {"autoscaling": {"minReplicas": 1, "maxReplicas": 8, "targetLagPerReplica": 500}},
        }))
    }

    #[test]
    fn gateways_scale_on_connections_per_pod() {
        let hpa = hpa(&autoscaled(), Role::Gateway).unwrap().unwrap();
        let spec = hpa.spec;
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 20));
        assert_eq!(spec.scale_target_ref.name, "chat-gateway");
        let m = &spec.metrics.unwrap()[0];
        assert_eq!(m.type_, "Pods");
        let pods = m.pods.as_ref().unwrap();
        assert_eq!(pods.metric.name, GATEWAY_METRIC);
        assert_eq!(pods.target.average_value.as_ref().unwrap().0, "10000");
    }

    #[test]
    fn dispatchers_scale_on_this_clusters_lag() {
        let hpa = hpa(&autoscaled(), Role::Dispatcher).unwrap().unwrap();
        let spec = hpa.spec;
        assert_eq!(spec.max_replicas, 8);
        let m = &spec.metrics.unwrap()[0];
        assert_eq!(m.type_, "External");
        let ext = m.external.as_ref().unwrap();
        assert_eq!(ext.metric.name, DISPATCHER_METRIC);
        assert_eq!(ext.metric.selector.as_ref().unwrap().match_labels.as_ref().unwrap()[CLUSTER_LABEL], "chat");
        assert_eq!(ext.target.type_, "AverageValue");
    }

    #[test]
    fn no_autoscaling_means_no_autoscaler() {
        assert!(hpa(&minimal(), Role::Gateway).unwrap().is_none());
        assert!(hpa(&minimal(), Role::Dispatcher).unwrap().is_none());
    }

    #[test]
    fn budgets_allow_one_pod_down_by_default_and_follow_the_spec() {
        let p = pdb(&minimal(), Role::Gateway).unwrap().unwrap().spec.unwrap();
        assert_eq!(p.max_unavailable, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)));
        let cc = cluster(json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "gateway": {"podDisruptionBudget": {"minAvailable": "50%"}},
            "dispatcher": {"podDisruptionBudget": {"enabled": false}},
        }));
        let p = pdb(&cc, Role::Gateway).unwrap().unwrap().spec.unwrap();
        assert_eq!(
            p.min_available,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("50%".into()))
        );
        assert!(p.max_unavailable.is_none());
        assert!(pdb(&cc, Role::Dispatcher).unwrap().is_none());
    }
}
