//! The canary (`spec.canary`): a Deployment of one `confab canary` pod that
//! probes every gateway pod (the addresses of the headless internal
//! Service) on the public port, with a user whose password is in a Secret
//! the controller generates once.

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

use super::workloads::{container_security_context, image, pod_security_context};
use super::{ADMIN_PORT, PUBLIC_PORT, child_name, labels, metadata, selector_labels, typed};
use crate::Result;
use crate::crd::ChatCluster;

pub const COMPONENT: &str = "canary";
/// The key of the password in the canary's Secret.
pub const PASSWORD_KEY: &str = "password";

/// `<name>-canary`: the Deployment and the Secret.
pub fn name(cc: &ChatCluster) -> String {
    child_name(cc, COMPONENT)
}

/// The canary's Deployment, or `None` when the spec does not enable it.
pub fn deployment(cc: &ChatCluster) -> Result<Option<Deployment>> {
    let Some(canary) = cc.spec.canary.as_ref().filter(|c| c.enabled) else { return Ok(None) };
    let meta = metadata(cc, name(cc), COMPONENT)?;
    let ns = meta.namespace.clone().unwrap_or_default();
    let gateways = format!("{}.{ns}.svc:{PUBLIC_PORT}", child_name(cc, "gateway-internal"));
    let probe = |path: &str, period: i32| json!({"httpGet": {"path": path, "port": "admin"}, "periodSeconds": period, "failureThreshold": 3});
    let container = json!({
        "name": COMPONENT,
        "image": image(cc),
        "imagePullPolicy": cc.spec.image.pull_policy,
        "args": [COMPONENT],
        "env": [
            {"name": "CONFAB_ADMIN_LISTEN", "value": format!("0.0.0.0:{ADMIN_PORT}")},
            {"name": "CONFAB_LOG_FORMAT", "value": "json"},
            {"name": "CONFAB_CANARY_GATEWAY_DNS", "value": gateways},
            {"name": "CONFAB_CANARY_INTERVAL_MS", "value": (u64::from(canary.interval_seconds) * 1000).to_string()},
            {"name": "CONFAB_CANARY_PASSWORD", "valueFrom": {"secretKeyRef": {"name": name(cc), "key": PASSWORD_KEY}}},
        ],
        "ports": [{"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"}],
        "livenessProbe": probe("/healthz", 10),
        "readinessProbe": probe("/readyz", 5),
        "securityContext": container_security_context(),
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
    });
    let mut pod_spec = json!({
        "containers": [container],
        "securityContext": pod_security_context(),
        "enableServiceLinks": false,
        "automountServiceAccountToken": false,
    });
    if !cc.spec.image.pull_secrets.is_empty() {
        pod_spec["imagePullSecrets"] = cc.spec.image.pull_secrets.iter().map(|n| json!({"name": n})).collect();
    }
    let annotations = json!({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": ADMIN_PORT.to_string(),
        "prometheus.io/path": "/metrics",
    });
    typed(
        "Deployment",
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "revisionHistoryLimit": 5,
                "selector": {"matchLabels": selector_labels(cc, COMPONENT)},
                "template": {
                    "metadata": {"labels": labels(cc, COMPONENT), "annotations": annotations},
                    "spec": pod_spec,
                },
            },
        }),
    )
    .map(Some)
}

/// The Secret with the canary user's password (created once, never
/// re-applied or read by the operator).
pub fn generated_secret(cc: &ChatCluster, password: &[u8]) -> Result<Secret> {
    Ok(Secret {
        metadata: metadata(cc, name(cc), COMPONENT)?,
        type_: Some("Opaque".to_owned()),
        data: Some([(PASSWORD_KEY.to_owned(), ByteString(password.to_vec()))].into()),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::tests::cluster;

    fn with_canary(canary: serde_json::Value) -> ChatCluster {
        cluster(json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "canary": canary,
        }))
    }

    #[test]
    fn an_enabled_canary_probes_every_gateway_pod_with_its_generated_password() {
        let d = deployment(&with_canary(json!({"enabled": true, "intervalSeconds": 3}))).unwrap().unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("chat-canary"));
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        assert_eq!(c.args.as_deref(), Some(&["canary".to_owned()][..]));
        let env = c.env.clone().unwrap();
        let value = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone());
        assert_eq!(value("CONFAB_CANARY_GATEWAY_DNS").as_deref(), Some("chat-gateway-internal.team.svc:8080"));
        assert_eq!(value("CONFAB_CANARY_INTERVAL_MS").as_deref(), Some("3000"));
        let password = env.iter().find(|e| e.name == "CONFAB_CANARY_PASSWORD").unwrap();
        let from = password.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((from.name.as_str(), from.key.as_str()), ("chat-canary", PASSWORD_KEY));
    }

    #[test]
    fn no_canary_unless_enabled() {
        assert!(deployment(&with_canary(json!({"enabled": false}))).unwrap().is_none());
        assert!(deployment(&crate::children::tests::minimal()).unwrap().is_none());
        let defaulted: crate::crd::CanarySpec = serde_json::from_value(json!({})).unwrap();
        assert_eq!((defaulted.enabled, defaulted.interval_seconds), (false, 10));
    }
}
