//! The gateways' Services: the public one clients connect to, and a
//! headless one for the internal push port (dispatchers reach each gateway
//! at the pod IP it announces; the headless Service names those pods in DNS
//! and documents the port).

use k8s_openapi::api::core::v1::Service;
use serde_json::json;

use super::{INTERNAL_PORT, Role, child_name, metadata, selector_labels, typed};
use crate::Result;
use crate::crd::ChatCluster;

/// `<name>-gateway`: HTTP API, WebSocket `/v1/ws` and the web client, and
/// the raw TCP listener when `spec.gateway.tcp` is set.
pub fn public_service(cc: &ChatCluster) -> Result<Service> {
    let service = &cc.spec.gateway.service;
    let mut meta = metadata(cc, child_name(cc, "gateway"), Role::Gateway.as_str())?;
    if !service.annotations.is_empty() {
        meta.annotations = Some(service.annotations.clone());
    }
    let mut ports = vec![json!({"name": "http", "port": service.port, "targetPort": "http", "protocol": "TCP"})];
    if let Some(tcp) = &cc.spec.gateway.tcp {
        ports.push(json!({"name": "tcp", "port": tcp.port, "targetPort": "tcp", "protocol": "TCP"}));
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
                "ports": ports,
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
    fn the_tcp_listener_gets_a_port_on_the_public_service_only_when_asked() {
        let ports = |cc: &ChatCluster| public_service(cc).unwrap().spec.unwrap().ports.unwrap();
        assert_eq!(ports(&minimal()).len(), 1, "off by default");
        let cc = cluster(json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "gateway": {"tcp": {"port": 7443, "tlsSecret": "chat-tcp-tls"}},
        }));
        let tcp = ports(&cc).into_iter().find(|p| p.name.as_deref() == Some("tcp")).expect("a tcp port");
        assert_eq!(tcp.port, 7443);
        assert_eq!(
            tcp.target_port,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("tcp".into()))
        );
        let d = crate::children::workloads::deployment(&cc, Role::Gateway, "h").unwrap();
        let c = d.spec.unwrap().template.spec.unwrap().containers[0].clone();
        let env = |name: &str| c.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone());
        assert_eq!(env("CONFAB_TCP_LISTEN").as_deref(), Some("0.0.0.0:7000"));
        assert_eq!(env("CONFAB_TCP_TLS_CERT").as_deref(), Some("/etc/confab/tcp-tls/tls.crt"));
        assert_eq!(env("CONFAB_TCP_TLS_KEY").as_deref(), Some("/etc/confab/tcp-tls/tls.key"));
        let port = c.ports.unwrap().into_iter().find(|p| p.name.as_deref() == Some("tcp")).unwrap();
        assert_eq!(port.container_port, crate::children::TCP_PORT);
        let plain = crate::children::workloads::deployment(&minimal(), Role::Gateway, "h").unwrap();
        let c = plain.spec.unwrap().template.spec.unwrap().containers[0].clone();
        assert!(!c.env.iter().flatten().any(|e| e.name.starts_with("CONFAB_TCP")), "no listener unless asked");
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
