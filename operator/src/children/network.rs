//! The gateways' Services: the public one clients connect to, and a
//! headless one for the internal push port (dispatchers reach each gateway
//! at the pod IP it announces; the headless Service names those pods in DNS
//! and documents the port).

use k8s_openapi::api::core::v1::Service;
use serde_json::json;

use super::{INTERNAL_PORT, Role, child_name, metadata, selector_labels, typed};
use crate::Result;
use crate::crd::ChatCluster;

/// `<name>-gateway`: HTTP API, WebSocket `/v1/ws` and the web client.
pub fn public_service(cc: &ChatCluster) -> Result<Service> {
    let service = &cc.spec.gateway.service;
    let mut meta = metadata(cc, child_name(cc, "gateway"), Role::Gateway.as_str())?;
    if !service.annotations.is_empty() {
        meta.annotations = Some(service.annotations.clone());
    }
    typed(
        "Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "type": service.type_,
                "selector": selector_labels(cc, Role::Gateway.as_str()),
                "ports": [{"name": "http", "port": service.port, "targetPort": "http", "protocol": "TCP"}],
            },
        }),
    )
}

/// `<name>-gateway-internal`: headless, every gateway pod, ready or not
/// (a draining gateway still takes pushes for its remaining sessions).
pub fn internal_service(cc: &ChatCluster) -> Result<Service> {
    typed(
        "Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(cc, child_name(cc, "gateway-internal"), Role::Gateway.as_str())?,
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": selector_labels(cc, Role::Gateway.as_str()),
                "ports": [{"name": "internal", "port": INTERNAL_PORT, "targetPort": "internal", "protocol": "TCP"}],
            },
        }),
    )
}

/// The URL clients use, from the public Service as the API server reports
/// it: the load balancer's address when it has one, else the cluster DNS
/// name.
pub fn endpoint(cc: &ChatCluster, service: &Service) -> Option<String> {
    let port = cc.spec.gateway.service.port;
    let lb = service
        .status
        .as_ref()?
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|i| i.iter().find_map(|i| i.hostname.clone().or_else(|| i.ip.clone())));
    let host = match lb {
        Some(host) => host,
        None => format!("{}.{}.svc", service.metadata.name.as_deref()?, service.metadata.namespace.as_deref()?),
    };
    Some(if port == 80 { format!("http://{host}") } else { format!("http://{host}:{port}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::tests::{cluster, minimal};

    #[test]
    fn the_public_service_takes_type_port_and_annotations_from_the_spec() {
        let cc = cluster(json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "gateway": {"service": {"type": "LoadBalancer", "port": 443, "annotations": {"lb": "internal"}}},
        }));
        let s = public_service(&cc).unwrap();
        assert_eq!(s.metadata.annotations.unwrap()["lb"], "internal");
        let spec = s.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.unwrap()[0].port, 443);
        assert_eq!(spec.selector.unwrap()["app.kubernetes.io/component"], "gateway");
    }

    #[test]
    fn the_internal_service_is_headless_and_lists_draining_gateways() {
        let spec = internal_service(&minimal()).unwrap().spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.ports.unwrap()[0].port, INTERNAL_PORT);
    }

    #[test]
    fn the_endpoint_prefers_the_load_balancer() {
        let cc = minimal();
        let mut s = public_service(&cc).unwrap();
        s.status = Some(Default::default());
        assert_eq!(endpoint(&cc, &s).as_deref(), Some("http://chat-gateway.team.svc"));
        s.status = Some(serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}})).unwrap());
        assert_eq!(endpoint(&cc, &s).as_deref(), Some("http://203.0.113.7"));
    }
}
