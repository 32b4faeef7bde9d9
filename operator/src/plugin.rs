//! `kubectl confab`: the operator's view of a cluster, for its users.
//!
//! - [`status`]: each ChatCluster's conditions, and per pod its readiness
//!   and what its admin port says (connections, drain state, lag, canary),
//!   read through the API server's pod proxy;
//! - [`drain`]: evicts a gateway pod (honouring its PodDisruptionBudget);
//!   the kubelet's SIGTERM makes the gateway tell its clients
//!   `bye server_restart` and drain them before it exits;
//! - [`report`]: a tar archive of the cluster's resources, Events and pod
//!   logs, for a bug report. Never a Secret.

use std::fmt::Write as _;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, ListParams, LogParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::children::{ADMIN_PORT, CLUSTER_LABEL, MANAGED_BY};
use crate::crd::ChatCluster;

/// What can go wrong in a plugin command.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Refused(String),
}

type Result<T, E = PluginError> = std::result::Result<T, E>;

/// The clusters to look at: `name`, or every one in `ns`.
async fn clusters(client: &Client, ns: &str, name: Option<&str>) -> Result<Vec<ChatCluster>> {
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), ns);
    Ok(match name {
        Some(name) => vec![api.get(name).await?],
        None => api.list(&ListParams::default()).await?.items,
    })
}

fn selector(cluster: &str) -> String {
    format!("app.kubernetes.io/managed-by={MANAGED_BY},{CLUSTER_LABEL}={cluster}")
}

/// GETs `path` of a pod's admin port through the API server's proxy:
/// its status and body, `None` when the pod cannot be reached.
pub(crate) async fn admin_get(client: &Client, ns: &str, pod: &str, path: &str) -> Option<(u16, String)> {
    let uri = format!("/api/v1/namespaces/{ns}/pods/{pod}:{ADMIN_PORT}/proxy{path}");
    let request = http::Request::get(uri).body(kube::client::Body::empty()).ok()?;
    let answer = async {
        let response = client.send(request).await.ok()?;
        let status = response.status().as_u16();
        let body = read_bounded(response.into_body(), ADMIN_BODY_LIMIT).await?;
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), answer).await.ok()?
}

/// The most of a pod's admin answer read: a `/metrics` page is some tens
/// of KiB; a pod that sends more (a compromised one) is not believed.
pub const ADMIN_BODY_LIMIT: usize = 4 << 20;

/// The body, `None` when it fails or passes `limit` bytes.
async fn read_bounded(mut body: kube::client::Body, limit: usize) -> Option<Vec<u8>> {
    use http_body::Body as _;
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame.ok()?.into_data() {
            if out.len() + data.len() > limit {
                return None;
            }
            out.extend_from_slice(&data);
        }
    }
    Some(out)
}

/// The sum of a metric's samples in a Prometheus text exposition.
pub fn metric_sum(exposition: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = exposition
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

fn number(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v}"))
}

/// `kubectl confab status`: a table per cluster.
pub async fn status(client: &Client, ns: &str, name: Option<&str>) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut out = String::new();
    for cc in clusters(client, ns, name).await? {
        let st = cc.status.clone().unwrap_or_default();
        let condition = |t: &str| {
            st.conditions
                .iter()
                .find(|c| c.type_ == t)
                .map_or("-".to_owned(), |c| format!("{} ({})", c.status, c.reason))
        };
        let canary = cc.spec.canary.as_ref().is_some_and(|c| c.enabled);
        let _ = writeln!(out, "ChatCluster {ns}/{}", cc.name_any());
        let _ = writeln!(
            out,
            "  Available: {}  Progressing: {}  Degraded: {}",
            condition("Available"),
            condition("Progressing"),
            condition("Degraded")
        );
        let _ = writeln!(
            out,
            "  gateways {}  dispatchers {}  canary {}",
            st.gateways.summary,
            st.dispatchers.summary,
            if canary { "on" } else { "off" }
        );
        let _ = writeln!(
            out,
            "  {:<44} {:<11} {:<6} {:>11} {:>8} {:<9} CANARY",
            "POD", "ROLE", "READY", "CONNECTIONS", "LAG", "DRAINING"
        );
        let mut list = pods.list(&ListParams::default().labels(&selector(&cc.name_any()))).await?.items;
        list.sort_by_key(|p| p.name_any());
        for pod in list {
            let role = pod.labels().get("app.kubernetes.io/component").cloned().unwrap_or_default();
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True");
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let [mut connections, mut lag, mut draining, mut probe]: [String; 4] = Default::default();
            for v in [&mut connections, &mut lag, &mut draining, &mut probe] {
                *v = "-".to_owned();
            }
            if running && role != "migrate" {
                let metrics = admin_get(client, ns, &pod.name_any(), "/metrics").await.filter(|(s, _)| *s == 200);
                if let Some((_, m)) = &metrics {
                    match role.as_str() {
                        "gateway" => connections = number(metric_sum(m, "confab_gateway_connections")),
                        "dispatcher" => lag = number(metric_sum(m, "confab_consumer_lag_records")),
                        "canary" => {
                            let probes = metric_sum(m, "confab_canary_probes_total").unwrap_or(0.0);
                            let failed = metric_sum(m, "confab_canary_probe_failures_total").unwrap_or(0.0);
                            probe = format!("{} ok / {failed} failed", probes - failed);
                        }
                        _ => {}
                    }
                }
                if role == "gateway" {
                    draining = match admin_get(client, ns, &pod.name_any(), "/readyz").await {
                        Some((_, body)) if body.contains("draining") => "yes".into(),
                        Some((200, _)) => "no".into(),
                        _ => "-".into(),
                    };
                }
            }
            let _ = writeln!(
                out,
                "  {:<44} {:<11} {:<6} {:>11} {:>8} {:<9} {probe}",
                pod.name_any(),
                role,
                if ready { "yes" } else { "no" },
                connections,
                lag,
                draining
            );
        }
    }
    if out.is_empty() {
        out = format!("no ChatCluster in namespace {ns}\n");
    }
    Ok(out)
}

/// `kubectl confab drain POD`: evicts a gateway pod of a ChatCluster.
/// Refuses any other pod.
pub async fn drain(client: &Client, ns: &str, pod: &str) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let p = pods.get(pod).await?;
    let labels = p.labels();
    let ours = labels.get("app.kubernetes.io/managed-by").map(String::as_str) == Some(MANAGED_BY);
    let role = labels.get("app.kubernetes.io/component").map(String::as_str);
    if !ours || role != Some("gateway") {
        return Err(PluginError::Refused(format!(
            "{ns}/{pod} is not a gateway pod of a ChatCluster: only gateways are drained (their clients are told \
             `bye server_restart` and reconnect to another gateway)"
        )));
    }
    pods.evict(pod, &EvictParams::default()).await?;
    Ok(format!(
        "evicted {ns}/{pod}: it leaves the Service, tells its clients `bye server_restart` and drains; its Deployment \
         starts a replacement\n"
    ))
}

/// `kubectl confab report`: a tar archive of everything about the
/// clusters (`name`, or every one in `ns`): the ChatClusters, the objects
/// they own, the namespace's Events, and every container's log (the
/// previous one too after a restart). Never a Secret.
pub async fn report(client: &Client, ns: &str, name: Option<&str>) -> Result<Vec<u8>> {
    let mut tar = Tar::default();
    let found = clusters(client, ns, name).await?;
    let mut selectors = Vec::new();
    for cc in &found {
        tar.add(&format!("chatclusters/{}.yaml", cc.name_any()), yaml(cc).as_bytes());
        selectors.push(selector(&cc.name_any()));
    }
    for sel in &selectors {
        add_all::<Deployment>(&mut tar, client, ns, sel, "deployments").await?;
        add_all::<ReplicaSet>(&mut tar, client, ns, sel, "replicasets").await?;
        add_all::<Service>(&mut tar, client, ns, sel, "services").await?;
        add_all::<ConfigMap>(&mut tar, client, ns, sel, "configmaps").await?;
        add_all::<Job>(&mut tar, client, ns, sel, "jobs").await?;
        add_all::<PodDisruptionBudget>(&mut tar, client, ns, sel, "poddisruptionbudgets").await?;
        add_all::<HorizontalPodAutoscaler>(&mut tar, client, ns, sel, "horizontalpodautoscalers").await?;
        add_all::<NetworkPolicy>(&mut tar, client, ns, sel, "networkpolicies").await?;
        let pods = add_all::<Pod>(&mut tar, client, ns, sel, "pods").await?;
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        for pod in pods {
            let containers = pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
            let restarted = |c: &str| {
                pod.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|cs| cs.iter().find(|s| s.name == c))
                    .is_some_and(|s| s.restart_count > 0)
            };
            for c in containers {
                for previous in [false, true] {
                    if previous && !restarted(&c.name) {
                        continue;
                    }
                    let params = LogParams {
                        container: Some(c.name.clone()),
                        previous,
                        tail_lines: Some(10_000),
                        ..LogParams::default()
                    };
                    let suffix = if previous { ".previous" } else { "" };
                    let path = format!("logs/{}/{}{suffix}.log", pod.name_any(), c.name);
                    let text = match api.logs(&pod.name_any(), &params).await {
                        Ok(text) => text,
                        Err(e) => format!("(no log: {e})\n"),
                    };
                    tar.add(&path, text.as_bytes());
                }
            }
        }
    }
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut list = events.list(&ListParams::default()).await?.items;
    list.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
    tar.add("events.yaml", yaml(&list).as_bytes());
    let summary = status(client, ns, name).await?;
    tar.add("status.txt", summary.as_bytes());
    Ok(tar.finish())
}

async fn add_all<K>(tar: &mut Tar, client: &Client, ns: &str, selector: &str, dir: &str) -> Result<Vec<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let mut items = api.list(&ListParams::default().labels(selector)).await?.items;
    for item in &mut items {
        item.meta_mut().managed_fields = None;
        tar.add(&format!("{dir}/{}.yaml", item.name_any()), yaml(item).as_bytes());
    }
    Ok(items)
}

fn yaml<T: Serialize>(value: &T) -> String {
    serde_saphyr::to_string(value).unwrap_or_else(|e| format!("# cannot serialize: {e}\n"))
}

/// A POSIX ustar archive, written in memory (regular files only).
#[derive(Default)]
pub struct Tar {
    bytes: Vec<u8>,
}

impl Tar {
    /// Adds a file; a path over 100 bytes is cut (names here are short).
    pub fn add(&mut self, path: &str, data: &[u8]) {
        let mut header = [0u8; 512];
        let name = path.as_bytes();
        let n = name.len().min(100);
        header[..n].copy_from_slice(&name[..n]);
        let octal = |field: &mut [u8], value: u64| {
            let text = format!("{value:0width$o}\0", width = field.len() - 1);
            field.copy_from_slice(text.as_bytes());
        };
        octal(&mut header[100..108], 0o644);
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], data.len() as u64);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        octal(&mut header[136..148], now);
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        let text = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(text.as_bytes());
        self.bytes.extend_from_slice(&header);
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
    }

    /// The archive, with its two closing zero blocks.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.extend(std::iter::repeat_n(0u8, 1024));
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_admin_answer_past_the_limit_is_not_read() {
        let small = read_bounded(kube::client::Body::from(b"confab_gateway_connections 3\n".to_vec()), 64).await;
        assert_eq!(small.as_deref(), Some(&b"confab_gateway_connections 3\n"[..]));
        let big = read_bounded(kube::client::Body::from(vec![b'x'; 65]), 64).await;
        assert_eq!(big, None, "a body past the limit is refused, not buffered");
    }

    #[test]
    fn the_archive_is_what_tar_reads() {
        let mut tar = Tar::default();
        tar.add("a/one.yaml", b"kind: Pod\n");
        tar.add("logs/p/c.log", &vec![b'x'; 1000]);
        let bytes = tar.finish();
        assert_eq!(bytes.len() % 512, 0);
        let dir = std::env::temp_dir().join(format!("confab-tar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("r.tar");
        std::fs::write(&file, &bytes).unwrap();
        let out = std::process::Command::new("tar").arg("-xf").arg(&file).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read(dir.join("a/one.yaml")).unwrap(), b"kind: Pod\n");
        assert_eq!(std::fs::read(dir.join("logs/p/c.log")).unwrap().len(), 1000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn metric_sums_add_every_sample_of_the_name_only() {
        let text = "# HELP x\nconfab_consumer_lag_records{partition=\"0\"} 5\nconfab_consumer_lag_records{partition=\"1\"} 7\nconfab_consumer_lag_records_other 100\n";
        assert_eq!(metric_sum(text, "confab_consumer_lag_records"), Some(12.0));
        assert_eq!(metric_sum(text, "confab_gateway_connections"), None);
    }
}
