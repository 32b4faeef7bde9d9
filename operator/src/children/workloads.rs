//! The gateway and dispatcher Deployments: the one `confab` image, started
//! as `confab gateway` or `confab dispatcher`, configured through `CONFAB_*`
//! variables (which beat the mounted TOML file of pass-through settings).

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use serde_json::{Value, json};

use super::settings::{CONFIG_DIR, DISPATCHER_TOML, GATEWAY_TOML, jwt_secret_ref};
use super::{
    ADMIN_PORT, INTERNAL_PORT, PUBLIC_PORT, Role, TCP_PORT, child_name, labels, metadata, selector_labels, to_json,
    typed,
};
use crate::crd::{ChatCluster, PodOverrides};
use crate::{Error, Result};

/// Annotation on pod templates: the hash of the ConfigMap's files.
pub const CONFIG_HASH_ANNOTATION: &str = "confab.dev/config-hash";
/// Seconds between a pod's removal from the Service's endpoints and its
/// SIGTERM, so load balancers stop sending new connections first.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;

const JWT_DIR: &str = "/etc/confab/jwt";
const PUBLIC_KEYS_DIR: &str = "/etc/confab/jwt-public-keys";
const KAFKA_TLS_DIR: &str = "/etc/confab/kafka-tls";
const INTERNAL_TLS_DIR: &str = "/etc/confab/internal-tls";
const WEBHOOK_SECRET_DIR: &str = "/etc/confab/webhook";
const CQL_TLS_DIR: &str = "/etc/confab/cql-tls";
const TCP_TLS_DIR: &str = "/etc/confab/tcp-tls";
const API_KEYS_DIR: &str = "/etc/confab/api-keys";
const WEBHOOK_CA_DIR: &str = "/etc/confab/webhook-ca";
/// The file name the `spec.hooks.caBundle` key is mounted as.
const WEBHOOK_CA_FILE: &str = "ca.crt";
/// The key of `spec.serverApi.keysSecret` that holds the key file.
pub const API_KEYS_KEY: &str = "api-keys";

/// `<name>-gateway` or `<name>-dispatcher`.
pub fn deployment(cc: &ChatCluster, role: Role, config_hash: &str) -> Result<Deployment> {
    let spec = &cc.spec;
    let (resources, overrides, replicas) = match role {
        Role::Gateway => (&spec.gateway.resources, &spec.gateway.pod, spec.gateway_replicas()),
        Role::Dispatcher => (&spec.dispatcher.resources, &spec.dispatcher.pod, spec.dispatcher_replicas()),
    };
    let component = role.as_str();
    let mut env = vec![json!({"name": "CONFAB_ADMIN_LISTEN", "value": format!("0.0.0.0:{ADMIN_PORT}")})];
    let mut ports = vec![json!({"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"})];
    if role == Role::Gateway {
        env.extend([
            json!({"name": "CONFAB_LISTEN", "value": format!("0.0.0.0:{PUBLIC_PORT}")}),
            json!({"name": "CONFAB_INTERNAL_LISTEN", "value": format!("0.0.0.0:{INTERNAL_PORT}")}),
            // Dispatchers dial the address a gateway announces on Kafka: its pod IP.
            json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
            json!({"name": "CONFAB_INTERNAL_ADVERTISE", "value": format!("$(POD_IP):{INTERNAL_PORT}")}),
            json!({"name": "CONFAB_SERVER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
            json!({"name": "CONFAB_DRAIN_GRACE_MS", "value": (i64::from(spec.gateway.drain_seconds) * 1000).to_string()}),
        ]);
        ports.insert(0, json!({"name": "http", "containerPort": PUBLIC_PORT, "protocol": "TCP"}));
        ports.insert(1, json!({"name": "internal", "containerPort": INTERNAL_PORT, "protocol": "TCP"}));
        if let Some(tcp) = &spec.gateway.tcp {
            env.push(json!({"name": "CONFAB_TCP_LISTEN", "value": format!("0.0.0.0:{TCP_PORT}")}));
            ports.insert(2, json!({"name": "tcp", "containerPort": TCP_PORT, "protocol": "TCP"}));
            if tcp.tls_secret.is_some() {
                env.push(json!({"name": "CONFAB_TCP_TLS_CERT", "value": format!("{TCP_TLS_DIR}/tls.crt")}));
                env.push(json!({"name": "CONFAB_TCP_TLS_KEY", "value": format!("{TCP_TLS_DIR}/tls.key")}));
            }
        }
    }
    let file = match role {
        Role::Gateway => GATEWAY_TOML,
        Role::Dispatcher => DISPATCHER_TOML,
    };
    env.push(json!({"name": "CONFAB_CONFIG", "value": format!("{CONFIG_DIR}/{file}")}));
    env.push(json!({"name": "CONFAB_LOG_FORMAT", "value": "json"}));
    env.extend(backend_env(cc));
    let (_, jwt_key) = jwt_secret_ref(cc);
    env.push(json!({"name": "CONFAB_JWT_SECRET_FILE", "value": format!("{JWT_DIR}/{jwt_key}")}));
    if role == Role::Gateway
        && let Some(keys) = &spec.auth.public_keys
    {
        // `FILE#iss=ISSUER;aud=AUDIENCE`, as `--jwt-public-key` takes it.
        let claims: Vec<String> = [("iss", &keys.issuer), ("aud", &keys.audience)]
            .into_iter()
            .filter_map(|(claim, v)| v.as_ref().map(|v| format!("{claim}={v}")))
            .collect();
        let suffix = if claims.is_empty() { String::new() } else { format!("#{}", claims.join(";")) };
        let files: Vec<String> = keys.keys.iter().map(|k| format!("{PUBLIC_KEYS_DIR}/{k}{suffix}")).collect();
        env.push(json!({"name": "CONFAB_JWT_PUBLIC_KEYS", "value": files.join(",")}));
    }
    if role == Role::Gateway {
        env.extend(object_store_env(cc)?);
    }
    if role == Role::Gateway {
        env.extend(server_api_env(cc)?);
    }
    env.extend(internal_tls_env(cc, role)?);
    if role == Role::Dispatcher {
        env.extend(hooks_env(cc)?);
    }
    // The user's extra variables, minus any that would replace one of ours,
    // then ours.
    let mut all_env: Vec<Value> = overrides.env.iter().map(to_json).collect();
    all_env.retain(|e| !env.iter().any(|ours| ours["name"] == e["name"]));
    all_env.extend(env);

    let mut volumes = vec![json!({"name": "config", "configMap": {"name": child_name(cc, "config")}})];
    let mut mounts = vec![json!({"name": "config", "mountPath": CONFIG_DIR, "readOnly": true})];
    volumes.extend(backend_volumes(cc));
    mounts.extend(backend_mounts(cc));
    if let Some(tls) = &spec.network.internal_tls {
        volumes.push(json!({"name": "internal-tls", "secret": {"secretName": tls.secret_name, "defaultMode": 0o440}}));
        mounts.push(json!({"name": "internal-tls", "mountPath": INTERNAL_TLS_DIR, "readOnly": true}));
    }
    if role == Role::Dispatcher
        && let Some(secret) = spec.hooks.as_ref().and_then(|h| h.secret_name.as_ref())
    {
        volumes.push(json!({"name": "webhook-secret", "secret": {"secretName": secret, "defaultMode": 0o440}}));
        mounts.push(json!({"name": "webhook-secret", "mountPath": WEBHOOK_SECRET_DIR, "readOnly": true}));
    }
    if role == Role::Dispatcher
        && let Some(ca) = spec.hooks.as_ref().and_then(|h| h.ca_bundle.as_ref())
    {
        let items = [json!({"key": ca.key, "path": WEBHOOK_CA_FILE})];
        // hooks_env has checked that exactly one of the two is set.
        volumes.push(match (&ca.secret_name, &ca.config_map_name) {
            (Some(secret), _) => json!({
                "name": "webhook-ca",
                "secret": {"secretName": secret, "items": items, "defaultMode": 0o444},
            }),
            (None, config_map) => json!({
                "name": "webhook-ca",
                "configMap": {"name": config_map, "items": items, "defaultMode": 0o444},
            }),
        });
        mounts.push(json!({"name": "webhook-ca", "mountPath": WEBHOOK_CA_DIR, "readOnly": true}));
    }
    if role == Role::Gateway
        && let Some(secret) = spec.gateway.tcp.as_ref().and_then(|t| t.tls_secret.as_ref())
    {
        volumes.push(json!({"name": "tcp-tls", "secret": {"secretName": secret, "defaultMode": 0o440}}));
        mounts.push(json!({"name": "tcp-tls", "mountPath": TCP_TLS_DIR, "readOnly": true}));
    }
    if role == Role::Gateway
        && let Some(keys) = &spec.auth.public_keys
    {
        let items: Vec<Value> = keys.keys.iter().map(|k| json!({"key": k, "path": k})).collect();
        volumes.push(json!({"name": "jwt-public-keys", "configMap": {"name": keys.config_map, "items": items}}));
        mounts.push(json!({"name": "jwt-public-keys", "mountPath": PUBLIC_KEYS_DIR, "readOnly": true}));
    }
    if role == Role::Gateway
        && let Some(api) = &spec.server_api
    {
        let items = [json!({"key": API_KEYS_KEY, "path": API_KEYS_KEY})];
        let secret = json!({"secretName": api.keys_secret, "items": items, "defaultMode": 0o440});
        volumes.push(json!({"name": "api-keys", "secret": secret}));
        mounts.push(json!({"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": true}));
    }

    let probe = |path: &str, period: i32, failures: i32| {
        json!({
            "httpGet": {"path": path, "port": "admin", "scheme": "HTTP"},
            "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": failures,
        })
    };
    let mut container = json!({
        "name": component,
        "image": image(cc),
        "imagePullPolicy": spec.image.pull_policy,
        "args": [component],
        "env": all_env,
        "ports": ports,
        "volumeMounts": mounts,
        // Startup covers connecting to Kafka and the database (the admin
        // port opens after that); then liveness and readiness take over.
        "startupProbe": probe("/healthz", 2, 60),
        "livenessProbe": probe("/healthz", 10, 3),
        "readinessProbe": probe("/readyz", 5, 2),
        "securityContext": container_security_context(),
    });
    if let Some(resources) = resources {
        container["resources"] = to_json(resources);
    }
    let mut grace = 30;
    if role == Role::Gateway {
        // Out of the Service's endpoints first, then SIGTERM: the gateway
        // says `bye server_restart` and drains within drainSeconds, inside
        // the pod's grace period.
        container["lifecycle"] = json!({"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}});
        grace = PRE_STOP_SLEEP_SECONDS + i64::from(spec.gateway.drain_seconds) + 10;
    }

    let mut pod_labels = labels(cc, component);
    pod_labels.extend(overrides.labels.clone());
    pod_labels.extend(selector_labels(cc, component));
    let mut annotations = overrides.annotations.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), config_hash.to_owned());
    annotations.insert("prometheus.io/scrape".to_owned(), "true".to_owned());
    annotations.insert("prometheus.io/port".to_owned(), ADMIN_PORT.to_string());
    annotations.insert("prometheus.io/path".to_owned(), "/metrics".to_owned());

    let mut pod_spec = json!({
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": grace,
        "securityContext": pod_security_context(),
        "enableServiceLinks": false,
        // Neither role talks to the Kubernetes API: a compromised pod gets
        // no credentials of its ServiceAccount.
        "automountServiceAccountToken": false,
    });
    apply_overrides(&mut pod_spec, overrides);
    if !spec.image.pull_secrets.is_empty() {
        pod_spec["imagePullSecrets"] = spec.image.pull_secrets.iter().map(|n| json!({"name": n})).collect();
    }

    let mut deployment_spec = json!({
        "selector": {"matchLabels": selector_labels(cc, component)},
        "revisionHistoryLimit": 5,
        "template": {
            "metadata": {"labels": pod_labels, "annotations": annotations},
            "spec": pod_spec,
        },
    });
    if role == Role::Gateway {
        // Keep full capacity while rolling: a new gateway is ready before an
        // old one starts draining.
        deployment_spec["strategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    }
    // With autoscaling the field is left out, so the autoscaler owns it.
    if let Some(replicas) = replicas {
        deployment_spec["replicas"] = json!(replicas);
    }
    let meta = metadata(cc, child_name(cc, component), component)?;
    typed(
        "Deployment",
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": deployment_spec,
        }),
    )
}

/// The push link's TLS files, from the mounted `spec.network.internalTls`
/// Secret. Gateways share one certificate and are dialed at their pod IPs,
/// so dispatchers check the one name the certificate carries: the
/// gateways' internal Service.
fn internal_tls_env(cc: &ChatCluster, role: Role) -> Result<Vec<Value>> {
    let Some(tls) = &cc.spec.network.internal_tls else { return Ok(Vec::new()) };
    let file = |name: &str| format!("{INTERNAL_TLS_DIR}/{name}");
    let mut env = Vec::new();
    match role {
        Role::Gateway => {
            env.push(json!({"name": "CONFAB_INTERNAL_TLS_CERT", "value": file("tls.crt")}));
            env.push(json!({"name": "CONFAB_INTERNAL_TLS_KEY", "value": file("tls.key")}));
            if tls.mutual {
                env.push(json!({"name": "CONFAB_INTERNAL_TLS_CLIENT_CA", "value": file("ca.crt")}));
            }
        }
        Role::Dispatcher => {
            let namespace = cc.namespace().ok_or(crate::Error::MissingField("metadata.namespace"))?;
            let name = format!("{}.{namespace}.svc", child_name(cc, "gateway-internal"));
            env.push(json!({"name": "CONFAB_INTERNAL_TLS_CA", "value": file("ca.crt")}));
            env.push(json!({"name": "CONFAB_INTERNAL_TLS_SERVER_NAME", "value": name}));
            if tls.mutual {
                env.push(json!({"name": "CONFAB_INTERNAL_TLS_CLIENT_CERT", "value": file("tls.crt")}));
                env.push(json!({"name": "CONFAB_INTERNAL_TLS_CLIENT_KEY", "value": file("tls.key")}));
            }
        }
    }
    Ok(env)
}

/// The gateways' server API: the mounted key file and, when set, the
/// per-key rate limit (unset, the gateways' defaults apply and nothing is
/// rendered, so a cluster without them keeps its pod template).
fn server_api_env(cc: &ChatCluster) -> Result<Vec<Value>> {
    let Some(api) = &cc.spec.server_api else { return Ok(Vec::new()) };
    if let Some(reason) = api.problem() {
        return Err(Error::Build { what: "spec.serverApi", reason });
    }
    let mut env = vec![json!({"name": "CONFAB_API_KEY_FILE", "value": format!("{API_KEYS_DIR}/{API_KEYS_KEY}")})];
    if let Some(rate) = api.rate_per_second {
        env.push(json!({"name": "CONFAB_API_RATE_PER_SECOND", "value": rate.to_string()}));
    }
    if let Some(burst) = api.rate_burst {
        env.push(json!({"name": "CONFAB_API_RATE_BURST", "value": burst.to_string()}));
    }
    Ok(env)
}

/// The dispatchers' webhooks and message filter, as `confab dispatcher` takes them.
fn hooks_env(cc: &ChatCluster) -> Result<Vec<Value>> {
    let Some(hooks) = &cc.spec.hooks else { return Ok(Vec::new()) };
    if let Some(reason) = hooks.problem() {
        return Err(Error::Build { what: "spec.hooks", reason });
    }
    let mut env = Vec::new();
    if !hooks.webhooks.is_empty() {
        let urls: Vec<String> = hooks
            .webhooks
            .iter()
            .map(|w| {
                let kinds: Vec<String> =
                    w.events.iter().map(|e| json!(e).as_str().unwrap_or_default().to_owned()).collect();
                if kinds.is_empty() { w.url.clone() } else { format!("{}#{}", w.url, kinds.join(",")) }
            })
            .collect();
        env.push(json!({"name": "CONFAB_WEBHOOKS", "value": urls.join(" ")}));
    }
    if hooks.secret_name.is_some() {
        env.push(json!({"name": "CONFAB_WEBHOOK_SECRET_FILE", "value": format!("{WEBHOOK_SECRET_DIR}/secret")}));
    }
    if let Some(filter) = &hooks.filter {
        env.push(json!({"name": "CONFAB_FILTER_URL", "value": filter.url}));
        if let Some(ms) = filter.timeout_ms {
            env.push(json!({"name": "CONFAB_FILTER_TIMEOUT_MS", "value": ms.to_string()}));
        }
        if let Some(when) = filter.when_down {
            env.push(json!({"name": "CONFAB_FILTER_WHEN_DOWN", "value": json!(when)}));
        }
    }
    if hooks.ca_bundle.is_some() {
        env.push(json!({"name": "CONFAB_WEBHOOK_CA_FILE", "value": format!("{WEBHOOK_CA_DIR}/{WEBHOOK_CA_FILE}")}));
    }
    Ok(env)
}

/// `spec.objectStore` for the gateways: the bucket as `CONFAB_S3_*`, the
/// credentials as the variables `confab gateway` reads them from, taken
/// from the Secret by the kubelet.
fn object_store_env(cc: &ChatCluster) -> Result<Vec<Value>> {
    let Some(store) = &cc.spec.object_store else { return Ok(Vec::new()) };
    if let Some(reason) = store.problem() {
        return Err(Error::Build { what: "spec.objectStore", reason });
    }
    let secret = &store.credentials_secret;
    let from_secret = |key: &str| json!({"secretKeyRef": {"name": secret.name, "key": key}});
    Ok(vec![
        json!({"name": "CONFAB_S3_ENDPOINT", "value": store.endpoint.trim_end_matches('/')}),
        json!({"name": "CONFAB_S3_BUCKET", "value": store.bucket}),
        json!({"name": "CONFAB_S3_REGION", "value": store.region}),
        json!({"name": "CONFAB_S3_PATH_STYLE", "value": store.path_style.to_string()}),
        json!({"name": "AWS_ACCESS_KEY_ID", "valueFrom": from_secret(&secret.access_key_id_key)}),
        json!({"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": from_secret(&secret.secret_access_key_key)}),
    ])
}

pub fn image(cc: &ChatCluster) -> String {
    format!("{}:{}", cc.spec.image.repository, cc.spec.image.tag)
}

/// Where Kafka and the CQL database are, as every role (and migrate) takes it.
pub(crate) fn backend_env(cc: &ChatCluster) -> Vec<Value> {
    let (kafka, cql) = (&cc.spec.kafka, &cc.spec.cql);
    let mut env = vec![
        json!({"name": "CONFAB_KAFKA", "value": kafka.bootstrap_servers}),
        json!({"name": "CONFAB_TOPIC_PREFIX", "value": kafka.topic_prefix}),
        json!({"name": "CONFAB_CQL", "value": cql.contact_points.join(",")}),
        json!({"name": "CONFAB_KEYSPACE", "value": cql.keyspace}),
    ];
    if let Some(secret) = &cql.credentials_secret {
        env.push(
            json!({"name": "CONFAB_CQL_USERNAME", "valueFrom": {"secretKeyRef": {"name": secret, "key": "username"}}}),
        );
        env.push(
            json!({"name": "CONFAB_CQL_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}),
        );
    }
    if let Some(tls) = &cql.tls {
        env.push(json!({"name": "CONFAB_CQL_TLS_CA", "value": format!("{CQL_TLS_DIR}/ca.crt")}));
        if tls.client_certificate {
            env.push(json!({"name": "CONFAB_CQL_TLS_CERT", "value": format!("{CQL_TLS_DIR}/tls.crt")}));
            env.push(json!({"name": "CONFAB_CQL_TLS_KEY", "value": format!("{CQL_TLS_DIR}/tls.key")}));
        }
        if let Some(name) = &tls.server_name {
            env.push(json!({"name": "CONFAB_CQL_TLS_SERVER_NAME", "value": name}));
        }
    }
    let mut properties = Vec::new();
    let protocol = match (&kafka.tls, &kafka.sasl) {
        (None, None) => None,
        (Some(_), None) => Some("SSL"),
        (None, Some(_)) => Some("SASL_PLAINTEXT"),
        (Some(_), Some(_)) => Some("SASL_SSL"),
    };
    if let Some(protocol) = protocol {
        properties.push(format!("security.protocol={protocol}"));
    }
    if let Some(tls) = &kafka.tls {
        properties.push(format!("ssl.ca.location={KAFKA_TLS_DIR}/ca.crt"));
        if tls.client_certificate {
            properties.push(format!("ssl.certificate.location={KAFKA_TLS_DIR}/tls.crt"));
            properties.push(format!("ssl.key.location={KAFKA_TLS_DIR}/tls.key"));
        }
    }
    if let Some(sasl) = &kafka.sasl {
        // Defined before CONFAB_KAFKA_PROPERTIES, which refers to them.
        for (var, key) in [("KAFKA_SASL_USERNAME", "username"), ("KAFKA_SASL_PASSWORD", "password")] {
            env.push(json!({"name": var, "valueFrom": {"secretKeyRef": {"name": sasl.secret_name, "key": key}}}));
        }
        properties.push(format!("sasl.mechanism={}", sasl.mechanism));
        properties.push("sasl.username=$(KAFKA_SASL_USERNAME)".to_owned());
        properties.push("sasl.password=$(KAFKA_SASL_PASSWORD)".to_owned());
    }
    if !properties.is_empty() {
        env.push(json!({"name": "CONFAB_KAFKA_PROPERTIES", "value": properties.join(",")}));
    }
    env
}

/// The JWT secret and the TLS files of Kafka and the CQL database, for every role.
pub(crate) fn backend_volumes(cc: &ChatCluster) -> Vec<Value> {
    let (jwt_name, jwt_key) = jwt_secret_ref(cc);
    let mut volumes = vec![json!({
        "name": "jwt",
        "secret": {"secretName": jwt_name, "items": [{"key": jwt_key, "path": jwt_key}], "defaultMode": 0o440},
    })];
    if let Some(tls) = &cc.spec.kafka.tls {
        volumes.push(json!({"name": "kafka-tls", "secret": {"secretName": tls.secret_name, "defaultMode": 0o440}}));
    }
    if let Some(tls) = &cc.spec.cql.tls {
        volumes.push(json!({"name": "cql-tls", "secret": {"secretName": tls.secret_name, "defaultMode": 0o440}}));
    }
    volumes
}

pub(crate) fn backend_mounts(cc: &ChatCluster) -> Vec<Value> {
    let mut mounts = vec![json!({"name": "jwt", "mountPath": JWT_DIR, "readOnly": true})];
    if cc.spec.kafka.tls.is_some() {
        mounts.push(json!({"name": "kafka-tls", "mountPath": KAFKA_TLS_DIR, "readOnly": true}));
    }
    if cc.spec.cql.tls.is_some() {
        mounts.push(json!({"name": "cql-tls", "mountPath": CQL_TLS_DIR, "readOnly": true}));
    }
    mounts
}

/// Non-root, no privilege escalation, read-only root: the image needs
/// nothing more.
pub(crate) fn pod_security_context() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

pub(crate) fn container_security_context() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
    })
}

pub(crate) fn apply_overrides(pod_spec: &mut Value, overrides: &PodOverrides) {
    if !overrides.node_selector.is_empty() {
        pod_spec["nodeSelector"] = to_json(&overrides.node_selector);
    }
    if !overrides.tolerations.is_empty() {
        pod_spec["tolerations"] = to_json(&overrides.tolerations);
    }
    if let Some(affinity) = &overrides.affinity {
        pod_spec["affinity"] = to_json(affinity);
    }
    if !overrides.topology_spread_constraints.is_empty() {
        pod_spec["topologySpreadConstraints"] = to_json(&overrides.topology_spread_constraints);
    }
    if let Some(name) = &overrides.priority_class_name {
        pod_spec["priorityClassName"] = json!(name);
    }
    if let Some(name) = &overrides.service_account_name {
        pod_spec["serviceAccountName"] = json!(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::tests::{cluster, minimal};
    use k8s_openapi::api::core::v1::{Container, EnvVar};

    fn container(d: &Deployment) -> &Container {
        &d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
    }

    fn env<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
        c.env.as_ref().unwrap().iter().rev().find(|e| e.name == name)
    }

    fn value(c: &Container, name: &str) -> String {
        env(c, name).and_then(|e| e.value.clone()).unwrap_or_else(|| panic!("{name} not set"))
    }

    #[test]
    fn webhooks_and_the_filter_reach_the_dispatchers_with_the_secret_mounted() {
        let mut cc = cluster(json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "hooks": {
                "webhooks": [{"url": "http://app/hook"}, {"url": "http://push/hook", "events": ["message", "member"]}],
                "secretName": "hooks",
                "filter": {"url": "http://app/filter", "timeoutMs": 300, "whenDown": "refuse"},
            }
        }));
        let d = deployment(&cc, Role::Dispatcher, "h").unwrap();
        let c = container(&d);
        assert_eq!(value(c, "CONFAB_WEBHOOKS"), "http://app/hook http://push/hook#message,member");
        assert_eq!(value(c, "CONFAB_WEBHOOK_SECRET_FILE"), "/etc/confab/webhook/secret");
        assert_eq!(value(c, "CONFAB_FILTER_URL"), "http://app/filter");
        assert_eq!(value(c, "CONFAB_FILTER_TIMEOUT_MS"), "300");
        assert_eq!(value(c, "CONFAB_FILTER_WHEN_DOWN"), "refuse");
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "webhook-secret").unwrap();
        assert_eq!(volume.secret.as_ref().unwrap().secret_name.as_deref(), Some("hooks"));
        // Gateways get none of it.
        let g = deployment(&cc, Role::Gateway, "h").unwrap();
        assert!(env(container(&g), "CONFAB_WEBHOOKS").is_none());
        cc.spec.hooks = None;
        assert!(env(container(&deployment(&cc, Role::Dispatcher, "h").unwrap()), "CONFAB_WEBHOOKS").is_none());
    }

    fn hooks_cluster(hooks: Value) -> ChatCluster {
        cluster(json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "hooks": hooks,
        }))
    }

    #[test]
    fn a_ca_bundle_for_https_hooks_is_mounted_into_the_dispatchers_from_a_secret_or_a_config_map() {
        let cc = hooks_cluster(json!({
            "webhooks": [{"url": "https://app.apps.svc/hook"}],
            "secretName": "hooks",
            "filter": {"url": "https://app.apps.svc/filter"},
            "caBundle": {"configMapName": "apps-ca", "key": "bundle.pem"},
        }));
        let d = deployment(&cc, Role::Dispatcher, "h").unwrap();
        let c = container(&d);
        assert_eq!(value(c, "CONFAB_WEBHOOKS"), "https://app.apps.svc/hook");
        assert_eq!(value(c, "CONFAB_FILTER_URL"), "https://app.apps.svc/filter");
        assert_eq!(value(c, "CONFAB_WEBHOOK_CA_FILE"), "/etc/confab/webhook-ca/ca.crt");
        let mount = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "webhook-ca").expect("mounted");
        assert_eq!((mount.mount_path.as_str(), mount.read_only), (WEBHOOK_CA_DIR, Some(true)));
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "webhook-ca").unwrap();
        assert!(volume.secret.is_none());
        let config_map = volume.config_map.as_ref().expect("from the ConfigMap");
        assert_eq!(config_map.name, "apps-ca");
        let item = &config_map.items.as_ref().unwrap()[0];
        assert_eq!((item.key.as_str(), item.path.as_str()), ("bundle.pem", "ca.crt"));

        // From a Secret, with the default key.
        let cc = hooks_cluster(json!({
            "filter": {"url": "https://filter.apps.svc"},
            "caBundle": {"secretName": "apps-ca"},
        }));
        let d = deployment(&cc, Role::Dispatcher, "h").unwrap();
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "webhook-ca").unwrap();
        assert!(volume.config_map.is_none());
        let secret = volume.secret.as_ref().expect("from the Secret");
        assert_eq!(secret.secret_name.as_deref(), Some("apps-ca"));
        assert_eq!(secret.items.as_ref().unwrap()[0].key, "ca.crt");
        assert_eq!(value(container(&d), "CONFAB_WEBHOOK_CA_FILE"), "/etc/confab/webhook-ca/ca.crt");
        // Gateways call no webhook.
        let g = deployment(&cc, Role::Gateway, "h").unwrap();
        assert!(env(container(&g), "CONFAB_WEBHOOK_CA_FILE").is_none());
        let pod = g.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert!(pod.volumes.as_ref().unwrap().iter().all(|v| v.name != "webhook-ca"));

        // Without it: no variable, no volume.
        let cc = hooks_cluster(json!({"filter": {"url": "http://filter.apps.svc"}}));
        let d = deployment(&cc, Role::Dispatcher, "h").unwrap();
        assert!(env(container(&d), "CONFAB_WEBHOOK_CA_FILE").is_none());
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert!(pod.volumes.as_ref().unwrap().iter().all(|v| v.name != "webhook-ca"));
    }

    #[test]
    fn hooks_the_dispatchers_could_not_use_are_a_build_error_naming_the_field() {
        for (hooks, field) in [
            (json!({"caBundle": {"secretName": "a", "configMapName": "b"}}), "hooks.caBundle takes exactly one"),
            (json!({"caBundle": {"key": "ca.crt"}}), "hooks.caBundle takes exactly one"),
            (json!({"caBundle": {"secretName": ""}}), "hooks.caBundle names an empty"),
            (json!({"caBundle": {"secretName": "a", "key": "../ca"}}), "hooks.caBundle.key"),
            (json!({"filter": {"url": "ftp://filter"}}), "hooks.filter.url"),
            (json!({"webhooks": [{"url": "app/hook"}], "secretName": "s"}), "hooks.webhooks[0].url"),
            (json!({"webhooks": [{"url": "http://app/hook"}]}), "hooks.secretName"),
        ] {
            let e = deployment(&hooks_cluster(hooks.clone()), Role::Dispatcher, "h").unwrap_err().to_string();
            assert!(e.contains("spec.hooks") && e.contains(field), "{hooks}: {e}");
        }
    }

    #[test]
    fn the_gateway_listens_on_all_interfaces_and_advertises_its_pod_ip() {
        let d = deployment(&minimal(), Role::Gateway, "h").unwrap();
        let c = container(&d);
        assert_eq!(c.args.as_deref(), Some(&["gateway".to_owned()][..]));
        assert_eq!(value(c, "CONFAB_LISTEN"), "0.0.0.0:8080");
        assert_eq!(value(c, "CONFAB_INTERNAL_LISTEN"), "0.0.0.0:7070");
        assert_eq!(value(c, "CONFAB_INTERNAL_ADVERTISE"), "$(POD_IP):7070");
        let pod_ip = env(c, "POD_IP").unwrap().value_from.as_ref().unwrap();
        assert_eq!(pod_ip.field_ref.as_ref().unwrap().field_path, "status.podIP");
        let names: Vec<_> = c.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("POD_IP") < pos("CONFAB_INTERNAL_ADVERTISE"), "a $(VAR) must be defined before its use");
        assert_eq!(value(c, "CONFAB_KAFKA"), "kafka:9092");
        assert_eq!(value(c, "CONFAB_CQL"), "cql:9042");
        assert_eq!(value(c, "CONFAB_KEYSPACE"), "confab");
        assert_eq!(value(c, "CONFAB_JWT_SECRET_FILE"), "/etc/confab/jwt/jwt-secret");
        assert_eq!(value(c, "CONFAB_CONFIG"), "/etc/confab/config/gateway.toml");
    }

    #[test]
    fn application_keys_reach_the_gateways_with_the_issuer_and_audience_they_require() {
        let spec = |public_keys| {
            cluster(json!({
                "kafka": {"bootstrapServers": "kafka:9092"},
                "cql": {"contactPoints": ["cql:9042"]},
                "auth": {"publicKeys": public_keys},
            }))
        };
        let strict = spec(
            json!({"configMap": "app", "keys": ["a.pem", "b.pem"], "issuer": "https://app.example", "audience": "confab"}),
        );
        let d = deployment(&strict, Role::Gateway, "h").unwrap();
        assert_eq!(
            value(container(&d), "CONFAB_JWT_PUBLIC_KEYS"),
            "/etc/confab/jwt-public-keys/a.pem#iss=https://app.example;aud=confab,\
             /etc/confab/jwt-public-keys/b.pem#iss=https://app.example;aud=confab"
        );
        let bare = spec(json!({"configMap": "app", "keys": ["a.pem"]}));
        let d = deployment(&bare, Role::Gateway, "h").unwrap();
        assert_eq!(value(container(&d), "CONFAB_JWT_PUBLIC_KEYS"), "/etc/confab/jwt-public-keys/a.pem");
        assert!(
            env(container(&deployment(&strict, Role::Dispatcher, "h").unwrap()), "CONFAB_JWT_PUBLIC_KEYS").is_none()
        );
    }

    #[test]
    fn no_pod_gets_a_service_account_token() {
        let cc = cluster(json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "gateway": {"pod": {"serviceAccountName": "chat"}},
        }));
        for role in [Role::Gateway, Role::Dispatcher] {
            let d = deployment(&cc, role, "h").unwrap();
            let pod = d.spec.unwrap().template.spec.unwrap();
            assert_eq!(pod.automount_service_account_token, Some(false), "{role:?}");
        }
        let job = crate::children::migrate::job(&cc).unwrap();
        assert_eq!(job.spec.unwrap().template.spec.unwrap().automount_service_account_token, Some(false));
    }

    #[test]
    fn probes_use_readyz_and_healthz_on_the_admin_port() {
        for role in [Role::Gateway, Role::Dispatcher] {
            let d = deployment(&minimal(), role, "h").unwrap();
            let c = container(&d);
            let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
                p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone().unwrap()
            };
            assert_eq!(path(&c.readiness_probe), "/readyz");
            assert_eq!(path(&c.liveness_probe), "/healthz");
            let port = c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().port.clone();
            assert_eq!(port, k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("admin".into()));
        }
    }

    #[test]
    fn the_gateway_gets_time_to_drain_before_it_is_killed() {
        let cc = cluster(serde_json::json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "gateway": {"drainSeconds": 30},
        }));
        let d = deployment(&cc, Role::Gateway, "h").unwrap();
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(value(c, "CONFAB_DRAIN_GRACE_MS"), "30000");
        let sleep = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap().sleep.as_ref().unwrap();
        assert_eq!(sleep.seconds, PRE_STOP_SLEEP_SECONDS);
        let grace = pod.termination_grace_period_seconds.unwrap();
        assert!(grace > PRE_STOP_SLEEP_SECONDS + 30, "grace {grace} must cover the preStop sleep and the drain");
    }

    #[test]
    fn with_autoscaling_the_deployment_leaves_replicas_to_the_autoscaler() {
        let d = deployment(&minimal(), Role::Gateway, "h").unwrap();
        assert_eq!(d.spec.unwrap().replicas, Some(2));
        let cc = cluster(serde_json::json!({
            "kafka": {"bootstrapServers": "kafka:9092", "partitions": 4},
            "cql": {"contactPoints": ["cql:9042"]},
            "gateway": {"autoscaling": {"minReplicas": 2, "maxReplicas": 10, "targetConnectionsPerPod": 5000}},
            "dispatcher": {"replicas": 3},
        }));
        let gw = deployment(&cc, Role::Gateway, "h").unwrap();
        assert_eq!(gw.spec.unwrap().replicas, None);
        let json = serde_json::to_value(deployment(&cc, Role::Gateway, "h").unwrap()).unwrap();
        assert!(json["spec"].get("replicas").is_none(), "replicas must be absent, not null: {}", json["spec"]);
        assert_eq!(deployment(&cc, Role::Dispatcher, "h").unwrap().spec.unwrap().replicas, Some(3));
    }

    #[test]
    fn the_config_hash_is_on_the_pod_template_so_a_settings_change_rolls_the_pods() {
        let d = deployment(&minimal(), Role::Dispatcher, "abc").unwrap();
        let annotations = d.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[CONFIG_HASH_ANNOTATION], "abc");
    }

    #[test]
    fn kafka_tls_and_sasl_become_librdkafka_properties_with_secrets_from_the_environment() {
        let cc = cluster(serde_json::json!({
            "kafka": {
                "bootstrapServers": "kafka:9093",
                "tls": {"secretName": "kafka-ca", "clientCertificate": true},
                "sasl": {"secretName": "kafka-user", "mechanism": "SCRAM-SHA-256"},
            },
            "cql": {"contactPoints": ["cql:9042"], "credentialsSecret": "cql-user"},
        }));
        let d = deployment(&cc, Role::Dispatcher, "h").unwrap();
        let c = container(&d);
        let props = value(c, "CONFAB_KAFKA_PROPERTIES");
        assert!(props.contains("security.protocol=SASL_SSL"), "{props}");
        assert!(props.contains("ssl.ca.location=/etc/confab/kafka-tls/ca.crt"), "{props}");
        assert!(props.contains("ssl.key.location=/etc/confab/kafka-tls/tls.key"), "{props}");
        assert!(props.contains("sasl.mechanism=SCRAM-SHA-256"), "{props}");
        assert!(props.contains("sasl.password=$(KAFKA_SASL_PASSWORD)"), "{props}");
        let secret = |name: &str| {
            env(c, name).unwrap().value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().name.clone()
        };
        assert_eq!(secret("KAFKA_SASL_PASSWORD"), "kafka-user");
        assert_eq!(secret("CONFAB_CQL_PASSWORD"), "cql-user");
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert!(mounts.iter().any(|m| m.mount_path == "/etc/confab/kafka-tls"));
    }

    #[test]
    fn the_object_store_reaches_the_gateways_with_its_credentials_from_the_secret() {
        let cc = cluster(serde_json::json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "objectStore": {
                "endpoint": "http://minio.storage.svc:9000/",
                "bucket": "chat-uploads",
                "credentialsSecret": {"name": "uploads-s3"},
            },
        }));
        let d = deployment(&cc, Role::Gateway, "h").unwrap();
        let c = container(&d);
        assert_eq!(value(c, "CONFAB_S3_ENDPOINT"), "http://minio.storage.svc:9000");
        assert_eq!(value(c, "CONFAB_S3_BUCKET"), "chat-uploads");
        assert_eq!(value(c, "CONFAB_S3_REGION"), "us-east-1");
        assert_eq!(value(c, "CONFAB_S3_PATH_STYLE"), "true");
        for (var, key) in
            [("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"), ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")]
        {
            let e = env(c, var).unwrap();
            assert_eq!(e.value, None, "{var}: never a literal value in the pod spec");
            let from = e.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
            assert_eq!((from.name.as_str(), from.key.as_str()), ("uploads-s3", key));
        }
        // Dispatchers do not serve uploads.
        let d = deployment(&cc, Role::Dispatcher, "h").unwrap();
        assert!(env(container(&d), "CONFAB_S3_ENDPOINT").is_none());
        assert!(env(container(&d), "AWS_SECRET_ACCESS_KEY").is_none());

        // Other keys, virtual-hosted style.
        let cc = cluster(serde_json::json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "objectStore": {
                "endpoint": "https://s3.eu-west-1.amazonaws.com",
                "bucket": "chat-uploads",
                "region": "eu-west-1",
                "pathStyle": false,
                "credentialsSecret": {"name": "aws", "accessKeyIdKey": "id", "secretAccessKeyKey": "secret"},
            },
        }));
        let d = deployment(&cc, Role::Gateway, "h").unwrap();
        let c = container(&d);
        assert_eq!(
            (value(c, "CONFAB_S3_REGION"), value(c, "CONFAB_S3_PATH_STYLE")),
            ("eu-west-1".into(), "false".into())
        );
        let key = |var| env(c, var).unwrap().value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().key.clone();
        assert_eq!((key("AWS_ACCESS_KEY_ID"), key("AWS_SECRET_ACCESS_KEY")), ("id".into(), "secret".into()));
    }

    #[test]
    fn an_object_store_the_gateways_could_not_use_is_a_build_error_naming_the_field() {
        for (store, field) in [
            (serde_json::json!({"endpoint": "minio:9000", "bucket": "b12"}), "objectStore.endpoint"),
            (serde_json::json!({"endpoint": "http://minio:9000/path", "bucket": "b12"}), "objectStore.endpoint"),
            (serde_json::json!({"endpoint": "http://minio:9000", "bucket": "Uploads"}), "objectStore.bucket"),
            (
                serde_json::json!({"endpoint": "http://minio:9000", "bucket": "b12", "region": "a b"}),
                "objectStore.region",
            ),
        ] {
            let mut store = store;
            store["credentialsSecret"] = serde_json::json!({"name": "s3"});
            let cc = cluster(serde_json::json!({
                "kafka": {"bootstrapServers": "kafka:9092"},
                "cql": {"contactPoints": ["cql:9042"]},
                "objectStore": store,
            }));
            let e = deployment(&cc, Role::Gateway, "h").unwrap_err().to_string();
            assert!(e.contains("spec.objectStore") && e.contains(field), "{e}");
        }
    }

    #[test]
    fn cql_tls_mounts_the_secret_and_points_every_role_at_its_files() {
        let cc = cluster(serde_json::json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9142"], "tls": {
                "secretName": "cql-tls", "clientCertificate": true, "serverName": "cql.db.svc",
            }},
        }));
        for role in [Role::Gateway, Role::Dispatcher] {
            let d = deployment(&cc, role, "h").unwrap();
            let c = container(&d);
            assert_eq!(value(c, "CONFAB_CQL_TLS_CA"), "/etc/confab/cql-tls/ca.crt");
            assert_eq!(value(c, "CONFAB_CQL_TLS_CERT"), "/etc/confab/cql-tls/tls.crt");
            assert_eq!(value(c, "CONFAB_CQL_TLS_KEY"), "/etc/confab/cql-tls/tls.key");
            assert_eq!(value(c, "CONFAB_CQL_TLS_SERVER_NAME"), "cql.db.svc");
            let mount = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "cql-tls").unwrap();
            assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/etc/confab/cql-tls", Some(true)));
            let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "cql-tls").unwrap();
            let secret = volume.secret.as_ref().unwrap();
            assert_eq!((secret.secret_name.as_deref(), secret.default_mode), (Some("cql-tls"), Some(0o440)));
        }

        // Without a client certificate or a name: the CA alone.
        let cc = cluster(serde_json::json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9142"], "tls": {"secretName": "cql-ca"}},
        }));
        let d = deployment(&cc, Role::Gateway, "h").unwrap();
        let c = container(&d);
        assert_eq!(value(c, "CONFAB_CQL_TLS_CA"), "/etc/confab/cql-tls/ca.crt");
        assert!(env(c, "CONFAB_CQL_TLS_CERT").is_none() && env(c, "CONFAB_CQL_TLS_SERVER_NAME").is_none());
        let plain = deployment(&minimal(), Role::Gateway, "h").unwrap();
        assert!(env(container(&plain), "CONFAB_CQL_TLS_CA").is_none(), "no TLS unless asked");
    }

    #[test]
    fn user_overrides_reach_the_pods_but_cannot_replace_managed_variables() {
        let cc = cluster(serde_json::json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "gateway": {"pod": {
                "nodeSelector": {"pool": "edge"},
                "tolerations": [{"key": "edge", "operator": "Exists"}],
                "labels": {"team": "chat", "app.kubernetes.io/component": "oops"},
                "env": [{"name": "RUST_LOG", "value": "debug"}, {"name": "CONFAB_LISTEN", "value": "1.2.3.4:1"}],
                "priorityClassName": "high",
            }},
        }));
        let d = deployment(&cc, Role::Gateway, "h").unwrap();
        let template = d.spec.as_ref().unwrap().template.clone();
        let pod = template.spec.unwrap();
        assert_eq!(pod.node_selector.unwrap()["pool"], "edge");
        assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("edge"));
        assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
        let labels = template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["team"], "chat");
        assert_eq!(labels["app.kubernetes.io/component"], "gateway", "selector labels cannot be overridden");
        let c = &pod.containers[0];
        assert_eq!(value(c, "RUST_LOG"), "debug");
        assert_eq!(value(c, "CONFAB_LISTEN"), "0.0.0.0:8080");
        assert_eq!(c.env.as_ref().unwrap().iter().filter(|e| e.name == "CONFAB_LISTEN").count(), 1);
    }

    #[test]
    fn internal_tls_mounts_its_secret_and_points_both_ends_of_the_push_link_at_it() {
        let plain = deployment(&minimal(), Role::Dispatcher, "h").unwrap();
        assert!(env(container(&plain), "CONFAB_INTERNAL_TLS_CA").is_none(), "no TLS unless asked");
        for mutual in [false, true] {
            let cc = cluster(serde_json::json!({
                "kafka": {"bootstrapServers": "kafka:9092"},
                "cql": {"contactPoints": ["cql:9042"]},
                "network": {"internalTls": {"secretName": "push-tls", "mutual": mutual}},
            }));
            for role in [Role::Gateway, Role::Dispatcher] {
                let d = deployment(&cc, role, "h").unwrap();
                let pod = d.spec.as_ref().unwrap().template.spec.clone().unwrap();
                let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "internal-tls").expect("mounted");
                assert_eq!(volume.secret.unwrap().secret_name.as_deref(), Some("push-tls"));
                let c = container(&d);
                assert!(c.volume_mounts.as_ref().unwrap().iter().any(|m| m.mount_path == INTERNAL_TLS_DIR));
                let set = |name: &str| env(c, name).is_some();
                match role {
                    Role::Gateway => {
                        assert_eq!(value(c, "CONFAB_INTERNAL_TLS_CERT"), "/etc/confab/internal-tls/tls.crt");
                        assert_eq!(value(c, "CONFAB_INTERNAL_TLS_KEY"), "/etc/confab/internal-tls/tls.key");
                        assert_eq!(set("CONFAB_INTERNAL_TLS_CLIENT_CA"), mutual);
                    }
                    Role::Dispatcher => {
                        assert_eq!(value(c, "CONFAB_INTERNAL_TLS_CA"), "/etc/confab/internal-tls/ca.crt");
                        let name = format!("{}-gateway-internal.{}.svc", cc.name_any(), cc.namespace().unwrap());
                        assert_eq!(value(c, "CONFAB_INTERNAL_TLS_SERVER_NAME"), name);
                        assert_eq!(set("CONFAB_INTERNAL_TLS_CLIENT_CERT"), mutual);
                        assert_eq!(set("CONFAB_INTERNAL_TLS_CLIENT_KEY"), mutual);
                    }
                }
            }
        }
    }

    #[test]
    fn server_api_keys_are_mounted_into_gateways_only_and_passed_as_the_key_file() {
        let plain = deployment(&minimal(), Role::Gateway, "h").unwrap();
        assert!(env(container(&plain), "CONFAB_API_KEY_FILE").is_none(), "off unless asked");
        let cc = cluster(serde_json::json!({
            "kafka": {"bootstrapServers": "kafka:9092"},
            "cql": {"contactPoints": ["cql:9042"]},
            "serverApi": {"keysSecret": "chat-api-keys"},
        }));
        let d = deployment(&cc, Role::Gateway, "h").unwrap();
        let pod = d.spec.as_ref().unwrap().template.spec.clone().unwrap();
        let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "api-keys").expect("mounted");
        let secret = volume.secret.unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("chat-api-keys"));
        assert_eq!(secret.items.unwrap()[0].key, "api-keys");
        let c = container(&d);
        assert!(
            c.volume_mounts.as_ref().unwrap().iter().any(|m| m.mount_path == API_KEYS_DIR && m.read_only == Some(true))
        );
        assert_eq!(value(c, "CONFAB_API_KEY_FILE"), "/etc/confab/api-keys/api-keys");
        let d = deployment(&cc, Role::Dispatcher, "h").unwrap();
        let pod = d.spec.as_ref().unwrap().template.spec.clone().unwrap();
        assert!(pod.volumes.unwrap().iter().all(|v| v.name != "api-keys"), "dispatchers serve no API");
        assert!(env(container(&d), "CONFAB_API_KEY_FILE").is_none());
    }

    #[test]
    fn the_server_api_rate_limit_reaches_the_gateways_only_when_set() {
        let spec = |api: Value| {
            cluster(json!({
                "kafka": {"bootstrapServers": "kafka:9092"},
                "cql": {"contactPoints": ["cql:9042"]},
                "serverApi": api,
            }))
        };
        // Unset: the gateways' defaults (100/200), and a template as before.
        let d = deployment(&spec(json!({"keysSecret": "k"})), Role::Gateway, "h").unwrap();
        assert!(env(container(&d), "CONFAB_API_RATE_PER_SECOND").is_none());
        assert!(env(container(&d), "CONFAB_API_RATE_BURST").is_none());

        let cc = spec(json!({"keysSecret": "k", "ratePerSecond": 20, "rateBurst": 50}));
        let d = deployment(&cc, Role::Gateway, "h").unwrap();
        let c = container(&d);
        assert_eq!(value(c, "CONFAB_API_KEY_FILE"), "/etc/confab/api-keys/api-keys");
        assert_eq!(value(c, "CONFAB_API_RATE_PER_SECOND"), "20");
        assert_eq!(value(c, "CONFAB_API_RATE_BURST"), "50");
        let d = deployment(&cc, Role::Dispatcher, "h").unwrap();
        assert!(env(container(&d), "CONFAB_API_RATE_PER_SECOND").is_none(), "dispatchers serve no API");

        // One without the other.
        let d = deployment(&spec(json!({"keysSecret": "k", "rateBurst": 5})), Role::Gateway, "h").unwrap();
        assert!(env(container(&d), "CONFAB_API_RATE_PER_SECOND").is_none());
        assert_eq!(value(container(&d), "CONFAB_API_RATE_BURST"), "5");

        // The field wins over the same setting passed through spec.config.
        let mut cc = spec(json!({"keysSecret": "k", "ratePerSecond": 20}));
        cc.spec.config.gateway.insert("api_rate_per_second".into(), json!(1));
        cc.spec.gateway.pod.env =
            vec![serde_json::from_value(json!({"name": "CONFAB_API_RATE_PER_SECOND", "value": "7"})).unwrap()];
        let d = deployment(&cc, Role::Gateway, "h").unwrap();
        let all: Vec<_> =
            container(&d).env.as_ref().unwrap().iter().filter(|e| e.name == "CONFAB_API_RATE_PER_SECOND").collect();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].value.as_deref(), Some("20"));
    }

    #[test]
    fn a_server_api_rate_of_zero_is_a_build_error_naming_the_field() {
        for (api, field) in [
            (json!({"keysSecret": "k", "ratePerSecond": 0}), "serverApi.ratePerSecond"),
            (json!({"keysSecret": "k", "rateBurst": 0}), "serverApi.rateBurst"),
            (json!({"keysSecret": ""}), "serverApi.keysSecret"),
        ] {
            let cc = cluster(json!({
                "kafka": {"bootstrapServers": "kafka:9092"},
                "cql": {"contactPoints": ["cql:9042"]},
                "serverApi": api,
            }));
            let e = deployment(&cc, Role::Gateway, "h").unwrap_err().to_string();
            assert!(e.contains("spec.serverApi") && e.contains(field), "{e}");
        }
    }

    #[test]
    fn pods_run_as_non_root_with_a_read_only_root() {
        let d = deployment(&minimal(), Role::Dispatcher, "h").unwrap();
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
    }

    #[test]
    fn dispatchers_never_outnumber_partitions() {
        let cc = cluster(serde_json::json!({
            "kafka": {"bootstrapServers": "kafka:9092", "partitions": 2},
            "cql": {"contactPoints": ["cql:9042"]},
            "dispatcher": {"replicas": 5},
        }));
        assert_eq!(deployment(&cc, Role::Dispatcher, "h").unwrap().spec.unwrap().replicas, Some(2));
    }
}
