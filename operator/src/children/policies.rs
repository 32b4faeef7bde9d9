//! The NetworkPolicies: who may reach which port of a cluster's pods.
//! A gateway's public port is open to everyone; its internal push port
//! admits only this cluster's dispatchers (a pusher is trusted to deliver
//! any event to any session); the admin port of both roles admits only
//! `spec.network.adminFrom`. Outbound traffic is left alone: dispatchers
//! dial the gateways, both dial Kafka and the database.
//!
//! The kubelet's probes of the admin port are always allowed: NetworkPolicy
//! never filters traffic from a pod's own node.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

use super::{
    ADMIN_PORT, INTERNAL_PORT, PUBLIC_PORT, Role, TCP_PORT, child_name, metadata, selector_labels, to_json, typed,
};
use crate::Result;
use crate::crd::ChatCluster;

/// `<name>-gateway` or `<name>-dispatcher`, selecting that role's pods;
/// `None` when `spec.network.policies` is off (any existing one is deleted).
pub fn policy(cc: &ChatCluster, role: Role) -> Result<Option<NetworkPolicy>> {
    let network = &cc.spec.network;
    if !network.policies {
        return Ok(None);
    }
    let tcp = |port: i32| json!([{"protocol": "TCP", "port": port}]);
    let mut ingress: Vec<Value> = Vec::new();
    if role == Role::Gateway {
        // No `from`: every source.
        ingress.push(json!({"ports": tcp(PUBLIC_PORT)}));
        if cc.spec.gateway.tcp.is_some() {
            ingress.push(json!({"ports": tcp(TCP_PORT)}));
        }
        ingress.push(json!({
            "from": [{"podSelector": {"matchLabels": selector_labels(cc, Role::Dispatcher.as_str())}}],
            "ports": tcp(INTERNAL_PORT),
        }));
    }
    // A rule with no peers would admit every source: without any, there is
    // no rule, and the admin port takes nothing but the kubelet's probes.
    if !network.admin_from.is_empty() {
        ingress.push(json!({"from": to_json(&network.admin_from), "ports": tcp(ADMIN_PORT)}));
    }
    let component = role.as_str();
    typed(
        "NetworkPolicy",
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(cc, child_name(cc, component), component)?,
            "spec": {
                "podSelector": {"matchLabels": selector_labels(cc, component)},
                "policyTypes": ["Ingress"],
                "ingress": ingress,
            },
        }),
    )
    .map(Some)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::networking::v1::{NetworkPolicyIngressRule, NetworkPolicyPeer};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::children::desired;
    use crate::children::tests::{cluster, minimal};

    fn pod_labels(d: &Deployment) -> BTreeMap<String, String> {
        d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap()
    }

    /// Whether `selector` (matchLabels only, as the operator writes them) selects `labels`.
    fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
        assert!(selector.match_expressions.is_none(), "only matchLabels are used");
        selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v))
    }

    fn ports(rule: &NetworkPolicyIngressRule) -> Vec<i32> {
        rule.ports
            .iter()
            .flatten()
            .map(|p| match p.port {
                Some(IntOrString::Int(port)) => port,
                ref other => panic!("a numbered port, not {other:?}"),
            })
            .collect()
    }

    fn rules(p: &NetworkPolicy) -> Vec<NetworkPolicyIngressRule> {
        p.spec.as_ref().unwrap().ingress.clone().unwrap_or_default()
    }

    fn rule_for(p: &NetworkPolicy, port: i32) -> NetworkPolicyIngressRule {
        let mut matching: Vec<_> = rules(p).into_iter().filter(|r| ports(r).contains(&port)).collect();
        assert_eq!(matching.len(), 1, "one rule for port {port}: {p:?}");
        matching.remove(0)
    }

    #[test]
    fn each_policy_selects_its_own_role_s_pods_only() {
        let children = desired(&minimal()).unwrap();
        let (gateway, dispatcher) = (children.gateway_policy.unwrap(), children.dispatcher_policy.unwrap());
        let (gateway_pods, dispatcher_pods) = (pod_labels(&children.gateway), pod_labels(&children.dispatcher));
        let target = |p: &NetworkPolicy| p.spec.as_ref().unwrap().pod_selector.clone().unwrap();
        assert!(selects(&target(&gateway), &gateway_pods));
        assert!(!selects(&target(&gateway), &dispatcher_pods));
        assert!(selects(&target(&dispatcher), &dispatcher_pods));
        assert!(!selects(&target(&dispatcher), &gateway_pods));
        for p in [&gateway, &dispatcher] {
            assert_eq!(p.spec.as_ref().unwrap().policy_types.as_deref(), Some(&["Ingress".to_owned()][..]));
        }
    }

    #[test]
    fn the_internal_port_admits_this_cluster_s_dispatchers_only() {
        let children = desired(&minimal()).unwrap();
        let gateway = children.gateway_policy.unwrap();
        let from = rule_for(&gateway, INTERNAL_PORT).from.expect("peers, not everyone");
        assert_eq!(from.len(), 1);
        let NetworkPolicyPeer { pod_selector: Some(pods), namespace_selector: None, ip_block: None } = &from[0] else {
            panic!("pods of this namespace only: {from:?}")
        };
        assert!(selects(pods, &pod_labels(&children.dispatcher)), "the dispatchers");
        assert!(!selects(pods, &pod_labels(&children.gateway)), "not the gateways");
        let mut other = minimal();
        other.metadata.name = Some("other".into());
        let other = desired(&other).unwrap();
        assert!(!selects(pods, &pod_labels(&other.dispatcher)), "not another cluster's dispatchers");
    }

    #[test]
    fn the_public_port_is_open_and_the_admin_port_admits_admin_from() {
        let gateway = policy(&minimal(), Role::Gateway).unwrap().unwrap();
        assert_eq!(rule_for(&gateway, PUBLIC_PORT).from, None, "everyone reaches the public port");
        let same_namespace = vec![NetworkPolicyPeer { pod_selector: Some(Default::default()), ..Default::default() }];
        assert_eq!(rule_for(&gateway, ADMIN_PORT).from, Some(same_namespace.clone()));
        let dispatcher = policy(&minimal(), Role::Dispatcher).unwrap().unwrap();
        assert_eq!(rules(&dispatcher).len(), 1, "dispatchers take nothing but the admin port");
        assert_eq!(rule_for(&dispatcher, ADMIN_PORT).from, Some(same_namespace));

        let monitoring = json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}});
        let cc = cluster(json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "network": {"adminFrom": [monitoring]},
        }));
        let from = rule_for(&policy(&cc, Role::Dispatcher).unwrap().unwrap(), ADMIN_PORT).from.unwrap();
        assert_eq!(to_json(&from), json!([monitoring]));
    }

    #[test]
    fn an_empty_admin_from_admits_no_one_rather_than_everyone() {
        let cc = cluster(json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "network": {"adminFrom": []},
        }));
        let gateway = policy(&cc, Role::Gateway).unwrap().unwrap();
        assert!(rules(&gateway).iter().all(|r| !ports(r).contains(&ADMIN_PORT)));
        let dispatcher = policy(&cc, Role::Dispatcher).unwrap().unwrap();
        assert_eq!(dispatcher.spec.unwrap().ingress, Some(vec![]), "an Ingress policy without rules admits nothing");
    }

    #[test]
    fn policies_can_be_turned_off() {
        let cc = cluster(json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "network": {"policies": false},
        }));
        let children = desired(&cc).unwrap();
        assert!(children.gateway_policy.is_none() && children.dispatcher_policy.is_none());
    }
}
