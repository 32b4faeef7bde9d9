//! The operator against the real control plane of `scripts/infra up kube`:
//! kube-apiserver and etcd, kube-controller-manager (Deployments make
//! ReplicaSets, Jobs run, the garbage collector follows owner references),
//! kube-scheduler and kwok. There is no kubelet: kwok plays one fake node,
//! marks scheduled pods Running and Ready, and completes the pods of Jobs,
//! so the migration Job succeeds and the Deployments become available
//! without any container running (images are never pulled).
//!
//! The operator under test is the library's controller run in-process
//! (`confab_operator::Operator`, exactly what `confab operator` runs),
//! watching only the test's own namespace, so tests run in parallel and
//! never touch other namespaces. In the main test it runs with a token of
//! a ServiceAccount that has only the rules of operator/deploy/rbac.yaml.

mod kube_support;
mod operator_process;

use std::collections::BTreeMap;
use std::time::Duration;

use confab_e2e::{infra_env, unique_name, wait_for};
use confab_operator::crd::ChatCluster;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use operator_process::OperatorProcess;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);

async fn client() -> Client {
    infra_env("KUBECONFIG", "kube");
    confab_e2e::use_ring_crypto();
    Client::try_default().await.expect("kube client from KUBECONFIG")
}

/// Installs (or updates) the committed CRD and waits until it is served.
async fn install_crd(client: &Client) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/confab.dev_chatclusters.yaml");
    let text = std::fs::read_to_string(path).expect("read crds/confab.dev_chatclusters.yaml");
    let body = text.split("\n---\n").nth(1).expect("the CRD document");
    let crd: CustomResourceDefinition = serde_saphyr::from_str(body).expect("the committed CRD parses");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch("chatclusters.confab.dev", &PatchParams::apply("confab-e2e").force(), &Patch::Apply(&crd))
        .await
        .expect("apply the CRD");
    wait_for("the ChatCluster CRD to be established", TIMEOUT, POLL, || async {
        let crd = crds.get("chatclusters.confab.dev").await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        Ok(established.then_some(()))
    })
    .await
    .unwrap();
}

/// A fresh namespace, deleted (with everything in it) when dropped, even
/// when the test fails.
struct TestNamespace {
    name: String,
}

impl TestNamespace {
    async fn new(client: &Client, prefix: &str) -> Self {
        let name = unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let body: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        namespaces.create(&PostParams::default(), &body).await.expect("create namespace");
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for("the namespace's default ServiceAccount", TIMEOUT, POLL, || async {
            Ok(sas.get_opt("default").await?.map(|_| ()))
        })
        .await
        .unwrap();
        Self { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        kube_support::delete_namespace(&self.name);
    }
}

/// The log of every in-process operator of this test binary (JSON lines),
/// for [`RunningOperator::assert_clean_log`].
static LOG: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct CapturedLog;

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::new("info");
        let _ = tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(|| CapturedLog).try_init();
    });
}

/// The operator, watching one namespace, stopped when dropped.
struct RunningOperator {
    task: tokio::task::JoinHandle<()>,
    registry: prometheus::Registry,
    namespace: String,
}

impl RunningOperator {
    async fn start(client: &Client, namespace: &str) -> Self {
        Self::start_with(client, namespace, Default::default()).await
    }

    /// With the pods' `/metrics` read by `scraper` (kwok's pods serve none).
    async fn start_with(client: &Client, namespace: &str, scraper: confab_operator::rollout::Scraper) -> Self {
        capture_log();
        let registry = prometheus::Registry::new();
        let metrics = confab_operator::metrics::Metrics::new(&registry).unwrap();
        let config = confab_operator::Config { namespace: Some(namespace.to_owned()), scraper };
        let operator = confab_operator::Operator::new(client.clone(), config, metrics).await.expect("operator starts");
        let task = tokio::spawn(operator.run(std::future::pending()));
        Self { task, registry, namespace: namespace.to_owned() }
    }

    /// Fails the test when the log has a warning or error about this test's
    /// namespace, or about none (tests run in parallel in one process: a
    /// line about another test's namespace is that test's to judge),
    /// other than the `expected` ones.
    fn assert_clean_log(&self, expected: &[&str]) {
        let text = String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned();
        let lines: Vec<String> =
            text.lines().filter(|l| l.contains(&self.namespace) || !l.contains("op-")).map(str::to_owned).collect();
        let bad = operator_process::unexpected(&lines, expected);
        assert!(bad.is_empty(), "unexpected warnings or errors in the operator's log:\n{}", bad.join("\n"));
    }

    fn counter(&self, name: &str) -> f64 {
        let families = self.registry.gather();
        let Some(family) = families.iter().find(|f| f.name() == name) else { return 0.0 };
        family.get_metric().iter().map(|m| m.get_counter().get_value()).sum()
    }
}

impl Drop for RunningOperator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client with only the operator's RBAC: a ServiceAccount of the test
/// namespace bound (by a RoleBinding there) to a copy of the ClusterRole in
/// operator/deploy/rbac.yaml. The copy is deleted when the guard drops.
struct OperatorCredentials {
    client: Client,
    cluster_role: String,
}

impl OperatorCredentials {
    async fn new(admin: &Client, ns: &str) -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../operator/deploy/rbac.yaml");
        let text = std::fs::read_to_string(path).expect("read operator/deploy/rbac.yaml");
        let mut role: ClusterRole = text
            .split("\n---\n")
            .find(|doc| doc.contains("kind: ClusterRole\n"))
            .map(|doc| serde_saphyr::from_str(doc).expect("the ClusterRole parses"))
            .expect("a ClusterRole in rbac.yaml");
        let cluster_role = format!("confab-operator-{ns}");
        role.metadata = kube::api::ObjectMeta { name: Some(cluster_role.clone()), ..Default::default() };
        Api::<ClusterRole>::all(admin.clone()).create(&PostParams::default(), &role).await.expect("ClusterRole");
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "operator"}})).unwrap();
        sas.create(&PostParams::default(), &sa).await.expect("ServiceAccount");
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "operator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": ns}],
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(admin.clone(), ns).create(&PostParams::default(), &binding).await.unwrap();
        let request: TokenRequest =
            serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}})).unwrap();
        let token = sas.create_token_request("operator", &PostParams::default(), &request).await.expect("token");
        confab_e2e::use_ring_crypto();
        let mut config = kube::Config::infer().await.expect("kubeconfig");
        let token = token.status.and_then(|s| s.token).expect("a token");
        config.auth_info.token = Some(token.into());
        config.auth_info.token_file = None;
        let client = Client::try_from(config).expect("a client with the operator's token");
        Self { client, cluster_role }
    }
}

impl Drop for OperatorCredentials {
    fn drop(&mut self) {
        let name = self.cluster_role.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                confab_e2e::use_ring_crypto();
                if let Ok(client) = Client::try_default().await {
                    let _ = Api::<ClusterRole>::all(client).delete(&name, &DeleteParams::default()).await;
                }
            })
        })
        .join();
    }
}

fn chat_cluster(name: &str, spec: serde_json::Value) -> ChatCluster {
    serde_json::from_value(json!({
        "apiVersion": "confab.dev/v1alpha1",
        "kind": "ChatCluster",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a ChatCluster")
}

fn base_spec(tag: &str) -> serde_json::Value {
    json!({
        // Never pulled: kwok fakes the kubelet.
        "image": {"repository": "registry.invalid/confab", "tag": tag},
        "kafka": {"bootstrapServers": "kafka.invalid:9092", "partitions": 4},
        "cql": {"contactPoints": ["cql.invalid:9042"]},
        "gateway": {"replicas": 2},
        "dispatcher": {"replicas": 2},
    })
}

fn condition(cc: &ChatCluster, type_: &str) -> Option<(String, String)> {
    let c = cc.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

/// Waits until the cluster's status describes its current generation with
/// `Available=True` and every desired pod ready and updated.
async fn wait_available(clusters: &Api<ChatCluster>, name: &str) -> ChatCluster {
    wait_for("the ChatCluster to be Available with every pod ready and updated", TIMEOUT, POLL, || async {
        let cc = clusters.get(name).await?;
        let Some(status) = &cc.status else { return Ok(None) };
        let current = status.observed_generation == cc.metadata.generation;
        let settled = condition(&cc, "Available") == Some(("True".into(), "MinimumReplicasAvailable".into()))
            && condition(&cc, "Progressing").is_some_and(|(s, _)| s == "False")
            && condition(&cc, "Degraded").is_some_and(|(s, _)| s == "False");
        let full =
            |r: &confab_operator::crd::RoleStatus| r.desired > 0 && r.ready == r.desired && r.updated == r.desired;
        Ok((current && settled && full(&status.gateways) && full(&status.dispatchers)).then_some(cc))
    })
    .await
    .unwrap()
}

fn owned_by(meta: &kube::api::ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|r| r.uid == uid && r.controller == Some(true))
}

/// A `matchLabels` selector as a label query (`k=v,k=v`).
fn label_query(selector: &LabelSelector) -> String {
    assert!(selector.match_expressions.is_none(), "the operator writes matchLabels only");
    let labels = selector.match_labels.clone().unwrap_or_default();
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Names of the pods of `ns` that `selector` selects, sorted.
async fn selected_pods(pods: &Api<Pod>, selector: &LabelSelector) -> Vec<String> {
    let list = pods.list(&ListParams::default().labels(&label_query(selector))).await.unwrap();
    let mut names: Vec<String> = list.items.iter().map(|p| p.name_any()).collect();
    names.sort();
    names
}

/// Names of the pods of one role, sorted.
async fn pods_of(pods: &Api<Pod>, component: &str) -> Vec<String> {
    let list = pods.list(&ListParams::default().labels(&format!("app.kubernetes.io/component={component}"))).await;
    let mut names: Vec<String> = list.unwrap().items.iter().map(|p| p.name_any()).collect();
    names.sort();
    names
}

fn image_of(d: &Deployment) -> String {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].image.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_cluster_runs_rolls_heals_and_is_garbage_collected() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-e2e").await;
    // The operator runs with exactly the permissions rbac.yaml grants.
    let credentials = OperatorCredentials::new(&client, &ns.name).await;
    let operator = RunningOperator::start(&credentials.client, &ns.name).await;
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns.name);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);

    let created = clusters.create(&PostParams::default(), &chat_cluster("chat", base_spec("1.0.0"))).await.unwrap();
    let uid = created.uid().unwrap();

    // Migration first, then the gateways and dispatchers; kwok marks their
    // pods Ready, and the status follows.
    let cc = wait_available(&clusters, "chat").await;
    let status = cc.status.as_ref().unwrap();
    assert_eq!(status.gateways.summary, "2/2");
    assert_eq!(status.dispatchers.summary, "2/2");
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.endpoint.as_deref(), Some(format!("http://chat-gateway.{}.svc", ns.name).as_str()));

    // Every child exists and is owned by the cluster.
    let owned =
        |meta: &kube::api::ObjectMeta, what: &str| assert!(owned_by(meta, &uid), "{what} is not owned: {meta:?}");
    for name in ["chat-gateway", "chat-dispatcher"] {
        owned(&deployments.get(name).await.unwrap().metadata, name);
        owned(
            &Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns.name).get(name).await.unwrap().metadata,
            name,
        );
    }
    for name in ["chat-gateway", "chat-gateway-internal"] {
        owned(&services.get(name).await.unwrap().metadata, name);
    }
    owned(&Api::<ConfigMap>::namespaced(client.clone(), &ns.name).get("chat-config").await.unwrap().metadata, "config");
    let secret = Api::<Secret>::namespaced(client.clone(), &ns.name).get("chat-jwt").await.unwrap();
    owned(&secret.metadata, "jwt secret");
    assert!(secret.data.unwrap()["jwt-secret"].0.len() >= 32, "a generated secret of at least 32 bytes");
    let migrations = jobs.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(migrations.len(), 1);
    owned(&migrations[0].metadata, "migration job");
    let first_migration = migrations[0].name_any();
    let internal = services.get("chat-gateway-internal").await.unwrap().spec.unwrap();
    assert_eq!(internal.cluster_ip.as_deref(), Some("None"), "the internal Service is headless");

    // The NetworkPolicies select the real pods: the gateways' internal port
    // admits the dispatcher pods and no gateway; each policy applies to its
    // own role's pods.
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let (gateway_pods, dispatcher_pods) = (pods_of(&pods, "gateway").await, pods_of(&pods, "dispatcher").await);
    assert_eq!((gateway_pods.len(), dispatcher_pods.len()), (2, 2), "kwok runs the pods");
    let gateway_policy = policies.get("chat-gateway").await.unwrap();
    owned(&gateway_policy.metadata, "gateway policy");
    let spec = gateway_policy.spec.unwrap();
    assert_eq!(selected_pods(&pods, spec.pod_selector.as_ref().unwrap()).await, gateway_pods);
    let internal_rule = spec
        .ingress
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.ports.iter().flatten().any(|p| p.port == Some(IntOrString::Int(7070))))
        .expect("a rule for the internal port");
    let peers = internal_rule.from.expect("the internal port admits named peers only");
    let admitted = selected_pods(&pods, peers[0].pod_selector.as_ref().unwrap()).await;
    assert_eq!(admitted, dispatcher_pods, "the internal port admits exactly the dispatchers");
    assert!(admitted.iter().all(|p| !gateway_pods.contains(p)));
    let dispatcher_policy = policies.get("chat-dispatcher").await.unwrap();
    owned(&dispatcher_policy.metadata, "dispatcher policy");
    assert_eq!(
        selected_pods(&pods, dispatcher_policy.spec.unwrap().pod_selector.as_ref().unwrap()).await,
        dispatcher_pods
    );
    for pod in pods.list(&ListParams::default().labels("app.kubernetes.io/managed-by=confab-operator")).await.unwrap() {
        let automount = pod.spec.unwrap().automount_service_account_token;
        assert_eq!(automount, Some(false), "{} gets no ServiceAccount token", pod.metadata.name.unwrap());
    }

    // The operator's own credentials read no Secret, here or anywhere else.
    for namespace in [ns.name.as_str(), "default", "kube-system"] {
        let secrets: Api<Secret> = Api::namespaced(credentials.client.clone(), namespace);
        match secrets.list(&ListParams::default()).await {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "listing Secrets in {namespace}: {s:?}"),
            other => panic!("the operator may not list Secrets in {namespace}: {other:?}"),
        }
    }
    match Api::<Secret>::namespaced(credentials.client.clone(), &ns.name).get("chat-jwt").await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("the operator may not read the Secret it generated: {other:?}"),
    }

    // The Deployments made ReplicaSets (kube-controller-manager).
    let gateway_uid = deployments.get("chat-gateway").await.unwrap().uid().unwrap();
    let sets = replicasets.list(&ListParams::default()).await.unwrap().items;
    assert!(sets.iter().any(|rs| owned_by(&rs.metadata, &gateway_uid)), "no ReplicaSet of the gateway Deployment");

    // Notable changes are Events on the cluster.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let reasons = wait_for("the operator's Events", TIMEOUT, POLL, || async {
        let list = events.list(&ListParams::default().fields("regarding.kind=ChatCluster")).await?;
        let reasons: Vec<String> = list.items.into_iter().filter_map(|e| e.reason).collect();
        Ok(reasons.iter().any(|r| r == "MinimumReplicasAvailable").then_some(reasons))
    })
    .await
    .unwrap();
    assert!(reasons.iter().any(|r| r == "MigrationStarted"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "SecretGenerated"), "{reasons:?}");

    // An upgrade: a new image runs a new migration, then rolls both
    // Deployments onto new ReplicaSets.
    let patch = json!({"spec": {"image": {"tag": "1.1.0"}}});
    clusters.patch("chat", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let cc = wait_available(&clusters, "chat").await;
    assert_eq!(cc.status.as_ref().unwrap().observed_generation, Some(2));
    for name in ["chat-gateway", "chat-dispatcher"] {
        assert_eq!(image_of(&deployments.get(name).await.unwrap()), "registry.invalid/confab:1.1.0");
    }
    let new_sets =
        replicasets.list(&ListParams::default().labels("app.kubernetes.io/component=gateway")).await.unwrap();
    assert!(new_sets.items.len() >= 2, "the rollout made a second ReplicaSet");
    let migrations = wait_for("the earlier migration Job to be removed", TIMEOUT, POLL, || async {
        let list = jobs.list(&ListParams::default()).await?.items;
        Ok((list.len() == 1).then_some(list))
    })
    .await
    .unwrap();
    assert_ne!(migrations[0].name_any(), first_migration, "the upgrade's migration Job remains");

    // A pass-through setting changes the ConfigMap and, through the hash on
    // the pod template, rolls the gateways.
    let template_hash = |d: &Deployment| {
        let meta = d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap();
        meta.annotations.as_ref().unwrap()["confab.dev/config-hash"].clone()
    };
    let hash_before = template_hash(&deployments.get("chat-gateway").await.unwrap());
    let patch = json!({"spec": {"config": {"gateway": {"rate_burst": 80}}}});
    clusters.patch("chat", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_available(&clusters, "chat").await;
    let config = Api::<ConfigMap>::namespaced(client.clone(), &ns.name).get("chat-config").await.unwrap();
    assert!(config.data.unwrap()["gateway.toml"].contains("rate_burst = 80"));
    assert_ne!(template_hash(&deployments.get("chat-gateway").await.unwrap()), hash_before);

    // Deleted children come back.
    let old_service = services.get("chat-gateway").await.unwrap().uid().unwrap();
    services.delete("chat-gateway", &DeleteParams::default()).await.unwrap();
    deployments.delete("chat-dispatcher", &DeleteParams::background()).await.unwrap();
    wait_for("the deleted Service to be recreated", TIMEOUT, POLL, || async {
        Ok(services.get_opt("chat-gateway").await?.filter(|s| s.uid().as_deref() != Some(&old_service)).map(|_| ()))
    })
    .await
    .unwrap();
    wait_for("the deleted Deployment to be recreated", TIMEOUT, POLL, || async {
        Ok(deployments.get_opt("chat-dispatcher").await?.map(|_| ()))
    })
    .await
    .unwrap();
    wait_available(&clusters, "chat").await;

    // The operator counted its work.
    assert!(operator.counter("confab_operator_reconcile_runs_total") >= 3.0);

    // Deleting the cluster deletes everything it owns.
    clusters.delete("chat", &DeleteParams::background()).await.unwrap();
    wait_for("the garbage collector to delete every child", TIMEOUT, POLL, || async {
        let ns = &ns.name;
        let left = deployments.list(&ListParams::default()).await?.items.len()
            + replicasets.list(&ListParams::default()).await?.items.len()
            + services.list(&ListParams::default()).await?.items.len()
            + jobs.list(&ListParams::default()).await?.items.len()
            + Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await?
                .items
                .len()
            + Api::<Secret>::namespaced(client.clone(), ns)
                .list(&ListParams::default().labels("app.kubernetes.io/managed-by=confab-operator"))
                .await?
                .items
                .len()
            + Api::<ConfigMap>::namespaced(client.clone(), ns)
                .list(&ListParams::default().labels("app.kubernetes.io/managed-by=confab-operator"))
                .await?
                .items
                .len();
        Ok((left == 0).then_some(()))
    })
    .await
    .unwrap();
    operator.assert_clean_log(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_gives_replicas_to_autoscalers_and_back() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-e2e-hpa").await;
    let operator = RunningOperator::start(&client, &ns.name).await;
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &ns.name);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);

    let mut spec = base_spec("1.0.0");
    spec["gateway"] = json!({"autoscaling": {"minReplicas": 2, "maxReplicas": 5, "targetConnectionsPerPod": 1000}});
    spec["dispatcher"] = json!({"autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetLagPerReplica": 100}});
    clusters.create(&PostParams::default(), &chat_cluster("scaled", spec)).await.unwrap();

    let (gateway, dispatcher) = wait_for("both autoscalers", TIMEOUT, POLL, || async {
        Ok(match (hpas.get_opt("scaled-gateway").await?, hpas.get_opt("scaled-dispatcher").await?) {
            (Some(g), Some(d)) => Some((g, d)),
            _ => None,
        })
    })
    .await
    .unwrap();
    let metric = gateway.spec.metrics.as_ref().unwrap()[0].pods.as_ref().unwrap().metric.name.clone();
    assert_eq!(metric, "confab_gateway_connections");
    let external = dispatcher.spec.metrics.as_ref().unwrap()[0].external.as_ref().unwrap().metric.clone();
    assert_eq!(external.name, "confab_consumer_lag_records");
    assert_eq!(
        external.selector.unwrap().match_labels.unwrap(),
        BTreeMap::from([("chatcluster".to_owned(), "scaled".to_owned())])
    );

    // The operator does not own the Deployments' replicas: the autoscaler
    // (here, kube-controller-manager enforcing minReplicas) does.
    let gw = wait_for("the gateway Deployment", TIMEOUT, POLL, || async {
        Ok(deployments.get_opt("scaled-gateway").await?)
    })
    .await
    .unwrap();
    let managers = gw.metadata.managed_fields.unwrap_or_default();
    let ours = managers.iter().find(|m| m.manager.as_deref() == Some("confab-operator")).expect("our field manager");
    let fields = serde_json::to_string(&ours.fields_v1).unwrap();
    assert!(!fields.contains("\"f:replicas\""), "the operator must not own spec.replicas: {fields}");

    // Autoscaling off: the autoscalers go and the spec's replicas return.
    let patch = json!([
        {"op": "remove", "path": "/spec/gateway/autoscaling"},
        {"op": "remove", "path": "/spec/dispatcher/autoscaling"},
        {"op": "add", "path": "/spec/gateway/replicas", "value": 3},
    ]);
    clusters
        .patch("scaled", &PatchParams::default(), &Patch::Json::<()>(serde_json::from_value(patch).unwrap()))
        .await
        .unwrap();
    wait_for("the autoscalers to be deleted and 3 gateways set", TIMEOUT, POLL, || async {
        let gone = hpas.list(&ListParams::default()).await?.items.is_empty();
        let replicas = deployments.get("scaled-gateway").await?.spec.and_then(|s| s.replicas);
        Ok((gone && replicas == Some(3)).then_some(()))
    })
    .await
    .unwrap();
    operator.assert_clean_log(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_rejects_a_bad_spec() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-e2e-cel").await;
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &ns.name);

    // Raw objects, as a user's YAML would be: some are not even a valid
    // ChatClusterSpec for serde.
    let raw: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns.name, &ApiResource::erase::<ChatCluster>(&()));
    let rejected = |spec: serde_json::Value, expected: &'static str| {
        let raw = raw.clone();
        async move {
            let object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "confab.dev/v1alpha1", "kind": "ChatCluster",
                "metadata": {"name": "bad"}, "spec": spec,
            }))
            .unwrap();
            let err = raw.create(&PostParams::default(), &object).await.expect_err(expected);
            match err {
                kube::Error::Api(s) => {
                    assert_eq!(s.code, 422, "{s:?}");
                    assert!(s.message.contains(expected), "{expected:?} not in {:?}", s.message);
                }
                e => panic!("expected a validation error, got {e}"),
            }
        }
    };
    let mut spec = base_spec("1.0.0");
    spec["gateway"] = json!({"autoscaling": {"minReplicas": 5, "maxReplicas": 2, "targetConnectionsPerPod": 1}});
    rejected(spec, "minReplicas must not exceed maxReplicas").await;
    let mut spec = base_spec("1.0.0");
    spec["dispatcher"] = json!({"replicas": 8});
    rejected(spec, "must not exceed kafka.partitions").await;
    let mut spec = base_spec("1.0.0");
    spec["gateway"]["podDisruptionBudget"] = json!({"minAvailable": 1, "maxUnavailable": 1});
    rejected(spec, "minAvailable and maxUnavailable are mutually exclusive").await;
    let mut spec = base_spec("1.0.0");
    spec["kafka"].as_object_mut().unwrap().remove("bootstrapServers");
    rejected(spec, "bootstrapServers").await;
    // Settings that carry secrets would be stored in a ConfigMap.
    let secrets_refused = "spec.config must not hold secrets";
    let mut spec = base_spec("1.0.0");
    spec["config"] = json!({"gateway": {"jwt_secret": "0123456789abcdef0123456789abcdef"}});
    rejected(spec, secrets_refused).await;
    let mut spec = base_spec("1.0.0");
    spec["config"] = json!({"dispatcher": {"kafka_properties": ["sasl.password=hunter2"]}});
    rejected(spec, secrets_refused).await;
    let mut spec = base_spec("1.0.0");
    spec["config"] = json!({"gateway": {"cql_password": "hunter2"}});
    rejected(spec, secrets_refused).await;
    // A CA bundle comes from one place; a rate limit of 0 would refuse every call.
    let mut spec = base_spec("1.0.0");
    spec["hooks"] = json!({"caBundle": {"secretName": "ca", "configMapName": "ca"}});
    rejected(spec, "hooks.caBundle takes exactly one of secretName and configMapName").await;
    let mut spec = base_spec("1.0.0");
    spec["hooks"] = json!({"caBundle": {"key": "ca.crt"}});
    rejected(spec, "hooks.caBundle takes exactly one of secretName and configMapName").await;
    let mut spec = base_spec("1.0.0");
    spec["serverApi"] = json!({"keysSecret": "keys", "ratePerSecond": 0});
    rejected(spec, "serverApi.ratePerSecond").await;
    let mut spec = base_spec("1.0.0");
    spec["serverApi"] = json!({"keysSecret": "keys", "rateBurst": 0});
    rejected(spec, "serverApi.rateBurst").await;
    let mut spec = base_spec("1.0.0");
    spec["hooks"] = json!({"filter": {"url": "ftp://filter.apps.svc"}});
    rejected(spec, "hooks.filter.url").await;
    // https:// hooks with a private CA, and a rate limit, are accepted.
    let mut spec = base_spec("1.0.0");
    spec["hooks"] = json!({
        "webhooks": [{"url": "https://app.apps.svc/hook"}],
        "secretName": "hooks",
        "filter": {"url": "https://app.apps.svc/filter"},
        "caBundle": {"configMapName": "apps-ca"},
    });
    spec["serverApi"] = json!({"keysSecret": "keys", "ratePerSecond": 20, "rateBurst": 40});
    let cc = clusters.create(&PostParams::default(), &chat_cluster("hooked", spec)).await.unwrap();
    let ca = cc.spec.hooks.unwrap().ca_bundle.unwrap();
    assert_eq!((ca.config_map_name.as_deref(), ca.key.as_str()), (Some("apps-ca"), "ca.crt"), "the key defaults");
    let api = cc.spec.server_api.unwrap();
    assert_eq!((api.rate_per_second, api.rate_burst), (Some(20), Some(40)));

    // Immutable fields: accepted at creation, refused as a change.
    clusters.create(&PostParams::default(), &chat_cluster("good", base_spec("1.0.0"))).await.unwrap();
    for (patch, expected) in [
        (json!({"spec": {"cql": {"keyspace": "elsewhere"}}}), "cql.keyspace is immutable"),
        (json!({"spec": {"kafka": {"topicPrefix": "elsewhere"}}}), "kafka.topicPrefix is immutable"),
    ] {
        let err = clusters.patch("good", &PatchParams::default(), &Patch::Merge(&patch)).await.expect_err(expected);
        assert!(err.to_string().contains(expected), "{err}");
    }
    let cc = clusters.get("good").await.unwrap();
    assert_eq!(cc.spec.cql.keyspace, "confab", "defaults are applied by the API server");
    assert_eq!(cc.meta().generation, Some(1), "the refused changes changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_the_operator_cannot_apply_is_reported_degraded_until_fixed() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-e2e-bad").await;
    let operator = RunningOperator::start(&client, &ns.name).await;
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &ns.name);

    // The API server keeps a null inside a list of a pass-through setting;
    // TOML has no null, so the operator cannot write the config file.
    let mut spec = base_spec("1.0.0");
    spec["config"] = json!({"gateway": {"listen_backlog": [1, null]}});
    let raw: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns.name, &ApiResource::erase::<ChatCluster>(&()));
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "confab.dev/v1alpha1", "kind": "ChatCluster", "metadata": {"name": "odd"}, "spec": spec,
    }))
    .unwrap();
    raw.create(&PostParams::default(), &object).await.unwrap();

    let message = wait_for("Degraded=True with reason ReconcileError", TIMEOUT, POLL, || async {
        let cc = raw.get("odd").await?;
        let conditions = cc.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
        Ok(conditions
            .iter()
            .find(|c| c["type"] == "Degraded" && c["status"] == "True" && c["reason"] == "ReconcileError")
            .map(|c| c["message"].as_str().unwrap_or_default().to_owned()))
    })
    .await
    .unwrap();
    assert!(message.contains("spec.config.gateway") && message.contains("listen_backlog"), "{message}");
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    wait_for("a ReconcileFailed Event", TIMEOUT, POLL, || async {
        let list = events.list(&ListParams::default().fields("regarding.kind=ChatCluster")).await?;
        Ok(list.items.iter().any(|e| e.reason.as_deref() == Some("ReconcileFailed")).then_some(()))
    })
    .await
    .unwrap();
    assert!(operator.counter("confab_operator_reconcile_errors_total") >= 1.0);

    // Fixed: the children appear and the cluster becomes Available.
    let patch = json!({"spec": {"config": {"gateway": {"listen_backlog": null, "rate_burst": 80}}}});
    clusters.patch("odd", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let cc = wait_available(&clusters, "odd").await;
    assert_eq!(condition(&cc, "Degraded"), Some(("False".into(), "AsExpected".into())));
    operator.assert_clean_log(&["reconcile failed"]);
}

/// Two `confab operator` processes elect a leader with a Lease; only the
/// leader reconciles. Killed (SIGKILL: it cannot release the Lease), its
/// Lease expires and the other takes over and reconciles the next change;
/// stopped (SIGTERM), a leader releases the Lease at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_takes_over_when_the_leader_dies() {
    use k8s_openapi::api::coordination::v1::Lease;
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-lead").await;
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let kubeconfig = infra_env("KUBECONFIG", "kube");
    let start = |name: &str| {
        let args = [
            "operator".to_owned(),
            format!("--watch-namespace={}", ns.name),
            "--leader-election-lease-seconds=4".to_owned(),
        ];
        let env = [
            ("KUBECONFIG".to_owned(), kubeconfig.clone()),
            ("POD_NAME".to_owned(), name.to_owned()),
            ("POD_NAMESPACE".to_owned(), ns.name.clone()),
        ];
        OperatorProcess::start(name, &args, &env)
    };
    let holder = || async {
        let lease = leases.get_opt("confab-operator").await?;
        Ok(lease.and_then(|l| l.spec).and_then(|s| s.holder_identity))
    };
    let mut replicas = vec![start("replica-a"), start("replica-b")];
    let first = wait_for("one replica to hold the Lease", TIMEOUT, POLL, holder).await.unwrap();
    let at = replicas.iter().position(|r| r.name == first).expect("the holder is one of the replicas");
    let mut leader = replicas.remove(at);
    let follower = replicas.remove(0);

    // The leader reconciles; the follower waits and reconciles nothing.
    clusters.create(&PostParams::default(), &chat_cluster("chat", base_spec("1.0.0"))).await.unwrap();
    wait_available(&clusters, "chat").await;
    assert_eq!(leader.metric("confab_operator_leader").await, Some(1.0));
    assert_eq!(follower.metric("confab_operator_leader").await, Some(0.0));
    assert_eq!(follower.metric("confab_operator_reconcile_runs_total").await, Some(0.0));
    assert!(leader.metric("confab_operator_reconcile_runs_total").await.unwrap_or(0.0) >= 1.0);

    // The leader dies without a word: the follower takes the Lease once it
    // expires (4 s), and reconciles the next change.
    leader.signal("KILL");
    assert!(leader.exited_within(Duration::from_secs(10)).is_some(), "the leader was killed");
    let took_over = wait_for("the follower to take the Lease", Duration::from_secs(30), POLL, || async {
        Ok(holder().await?.filter(|h| *h == follower.name))
    })
    .await;
    took_over.unwrap();
    let patch = json!({"spec": {"gateway": {"replicas": 3}}});
    clusters.patch("chat", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for("the new leader to scale the gateways to 3", Duration::from_secs(60), POLL, || async {
        let replicas = deployments.get("chat-gateway").await?.spec.and_then(|s| s.replicas);
        Ok((replicas == Some(3)).then_some(()))
    })
    .await
    .unwrap();
    let cc = wait_available(&clusters, "chat").await;
    assert_eq!(cc.status.unwrap().gateways.summary, "3/3");
    assert_eq!(follower.metric("confab_operator_leader").await, Some(1.0));

    // Stopped politely, a leader releases the Lease on its way out.
    let mut last = follower;
    last.signal("TERM");
    let status = last.exited_within(Duration::from_secs(30)).expect("the operator stops on SIGTERM");
    assert!(status.success(), "{status:?}");
    let lease = leases.get("confab-operator").await.unwrap();
    assert_eq!(lease.spec.and_then(|s| s.holder_identity), None, "the Lease was released");

    // Neither log has a warning or an error.
    leader.assert_clean_log(&[]);
    last.assert_clean_log(&[]);
}

/// `kubectl confab` against the real API server: `status` lists the
/// cluster and its pods, `report` archives its resources, Events and logs
/// (no Secret), `drain` evicts a gateway pod and refuses any other pod; and
/// the canary's Deployment comes and goes with `spec.canary.enabled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_confab_reports_drains_and_the_canary_follows_the_spec() {
    use confab_operator::plugin;
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-plugin").await;
    let operator = RunningOperator::start(&client, &ns.name).await;
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let mut spec = base_spec("1.0.0");
    spec["canary"] = json!({"enabled": true, "intervalSeconds": 3});
    clusters.create(&PostParams::default(), &chat_cluster("chat", spec)).await.unwrap();
    wait_available(&clusters, "chat").await;

    // The canary: a Deployment, and its password in a Secret generated once.
    let canary =
        wait_for("the canary Deployment", TIMEOUT, POLL, || async { Ok(deployments.get_opt("chat-canary").await?) })
            .await
            .unwrap();
    let container = &canary.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(container.args.as_deref(), Some(&["canary".to_owned()][..]));
    let secret = Api::<Secret>::namespaced(client.clone(), &ns.name).get("chat-canary").await.unwrap();
    assert!(secret.data.unwrap()["password"].0.len() >= 32);
    wait_for("the canary pod", TIMEOUT, POLL, || async {
        Ok((pods_of(&pods, "canary").await.len() == 1).then_some(()))
    })
    .await
    .unwrap();

    // status: the conditions, and every pod with its role.
    let status = plugin::status(&client, &ns.name, None).await.unwrap();
    assert!(status.contains(&format!("ChatCluster {}/chat", ns.name)), "{status}");
    assert!(status.contains("Available: True (MinimumReplicasAvailable)"), "{status}");
    assert!(status.contains("gateways 2/2") && status.contains("canary on"), "{status}");
    let gateways = pods_of(&pods, "gateway").await;
    for pod in gateways.iter().chain(&pods_of(&pods, "dispatcher").await) {
        assert!(
            status.lines().any(|l| l.contains(pod.as_str()) && l.contains(" yes ")),
            "{pod} not ready in:\n{status}"
        );
    }
    match plugin::status(&client, &ns.name, Some("nothere")).await {
        Err(plugin::PluginError::Kube(kube::Error::Api(s))) => assert_eq!(s.code, 404),
        other => panic!("an unknown cluster is an error: {other:?}"),
    }

    // report: a tar archive `tar` reads, with the resources, Events and
    // logs, and no Secret.
    let tar = plugin::report(&client, &ns.name, Some("chat")).await.unwrap();
    let dir = std::env::temp_dir().join(unique_name("op-report"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("r.tar"), &tar).unwrap();
    let out = std::process::Command::new("tar").args(["-tf", "r.tar"]).current_dir(&dir).output().unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    for entry in ["chatclusters/chat.yaml", "deployments/chat-gateway.yaml", "events.yaml", "status.txt"] {
        assert!(listing.lines().any(|l| l == entry), "{entry} missing from:\n{listing}");
    }
    assert!(listing.lines().any(|l| l.starts_with(&format!("logs/{}/gateway", gateways[0]))), "{listing}");
    assert!(!listing.to_lowercase().contains("secret"), "no Secret in a report:\n{listing}");
    let _ = std::fs::remove_dir_all(&dir);

    // drain: a dispatcher is refused and stays; a gateway is evicted and
    // replaced.
    let dispatcher = pods_of(&pods, "dispatcher").await[0].clone();
    match plugin::drain(&client, &ns.name, &dispatcher).await {
        Err(plugin::PluginError::Refused(why)) => assert!(why.contains("not a gateway pod"), "{why}"),
        other => panic!("draining a dispatcher must be refused: {other:?}"),
    }
    assert!(pods.get(&dispatcher).await.unwrap().metadata.deletion_timestamp.is_none());
    let said = plugin::drain(&client, &ns.name, &gateways[0]).await.unwrap();
    assert!(said.contains("bye server_restart"), "{said}");
    wait_for("the drained gateway to be replaced", TIMEOUT, POLL, || async {
        let now = pods_of(&pods, "gateway").await;
        let gone = pods.get_opt(&gateways[0]).await?.is_none_or(|p| p.metadata.deletion_timestamp.is_some());
        Ok((gone && now.iter().filter(|p| **p != gateways[0]).count() == 2).then_some(()))
    })
    .await
    .unwrap();

    // The canary off: its Deployment goes.
    let patch = json!({"spec": {"canary": {"enabled": false}}});
    clusters.patch("chat", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for("the canary Deployment to be deleted", TIMEOUT, POLL, || async {
        Ok(deployments.get_opt("chat-canary").await?.is_none().then_some(()))
    })
    .await
    .unwrap();
    operator.assert_clean_log(&[]);
}

/// What the test makes the pods' `/metrics` say: new sessions per second
/// on each gateway, each gateway's live sessions and `max_connections`,
/// and the dispatchers' consumer lag.
#[derive(Default)]
struct PlayedMetrics {
    reconnects_per_second: f64,
    lag: f64,
    /// Per gateway pod: when its counter was last advanced, and its value.
    opened: BTreeMap<String, (std::time::Instant, f64)>,
    /// Every gateway's live sessions and, when set, its `max_connections`
    /// (neither gauge is served without it).
    connections: f64,
    max_connections: Option<f64>,
    /// How many times a gateway's `/metrics` was read.
    gateway_scrapes: u64,
}

fn played_scraper(played: std::sync::Arc<std::sync::Mutex<PlayedMetrics>>) -> confab_operator::rollout::Scraper {
    confab_operator::rollout::Scraper::custom(move |_ns, pod| {
        let mut m = played.lock().unwrap();
        let exposition = if pod.starts_with("chat-gateway-") {
            let rate = m.reconnects_per_second;
            let now = std::time::Instant::now();
            let (then, total) = m.opened.entry(pod).or_insert((now, 0.0));
            *total += rate * now.duration_since(*then).as_secs_f64();
            *then = now;
            let mut exposition =
                format!("# TYPE confab_sessions_opened_total counter\nconfab_sessions_opened_total {total}\n");
            if let Some(max) = m.max_connections {
                exposition.push_str(&format!(
                    "# TYPE confab_gateway_connections gauge\nconfab_gateway_connections {}\n\
                     # TYPE confab_gateway_max_connections gauge\nconfab_gateway_max_connections {max}\n",
                    m.connections
                ));
            }
            m.gateway_scrapes += 1;
            exposition
        } else if pod.starts_with("chat-dispatcher-") {
            format!("confab_consumer_lag_records{{partition=\"0\"}} {}\n", m.lag)
        } else {
            return Box::pin(async { None });
        };
        Box::pin(async move { Some(exposition) })
    })
}

/// The images the pods of one role run, sorted, duplicates removed.
async fn pod_images(pods: &Api<Pod>, component: &str) -> Vec<String> {
    let list = pods.list(&ListParams::default().labels(&format!("app.kubernetes.io/component={component}"))).await;
    let mut images: Vec<String> = list
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.spec?.containers.first()?.image.clone())
        .collect();
    images.sort();
    images.dedup();
    images
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_pauses_while_reconnections_or_lag_run_high_and_resumes_under_the_bounds() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-roll").await;
    let played = std::sync::Arc::new(std::sync::Mutex::new(PlayedMetrics::default()));
    let operator = RunningOperator::start_with(&client, &ns.name, played_scraper(played.clone())).await;
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let mut spec = base_spec("1.0.0");
    spec["rollout"] = json!({"maxReconnectsPerSecond": 50, "maxDispatcherLag": 100});
    clusters.create(&PostParams::default(), &chat_cluster("chat", spec)).await.unwrap();
    let cc = wait_available(&clusters, "chat").await;
    let rollout = cc.status.unwrap().rollout.expect("status.rollout");
    assert_eq!((rollout.gateways.updated, rollout.gateways.total, rollout.gateways.paused), (2, 2, false));
    assert_eq!(rollout.gateways.reason, "RolloutComplete");

    // Clients are reconnecting en masse and the dispatchers are behind:
    // a new image migrates, then its rollout is held on both roles.
    {
        let mut m = played.lock().unwrap();
        m.reconnects_per_second = 1000.0;
        m.lag = 5000.0;
    }
    let patch = json!({"spec": {"image": {"tag": "1.1.0"}}});
    clusters.patch("chat", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let cc = wait_for("the rollout to be paused on both roles", TIMEOUT, POLL, || async {
        let cc = clusters.get("chat").await?;
        let Some(r) = cc.status.as_ref().and_then(|s| s.rollout.clone()) else { return Ok(None) };
        let held = r.gateways.paused
            && r.gateways.reason == "ReconnectsAboveBound"
            && r.dispatchers.paused
            && r.dispatchers.reason == "LagAboveBound";
        Ok(held.then_some(cc))
    })
    .await
    .unwrap();
    assert_eq!(condition(&cc, "Progressing"), Some(("True".into(), "RolloutPaused".into())));
    assert_eq!(condition(&cc, "Available").map(|c| c.0), Some("True".into()), "a held rollout keeps serving");
    let message = &cc.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Progressing").unwrap().message;
    assert!(message.contains("maxReconnectsPerSecond") && message.contains("maxDispatcherLag"), "{message}");
    for name in ["chat-gateway", "chat-dispatcher"] {
        let d = deployments.get(name).await.unwrap();
        assert_eq!(d.spec.as_ref().unwrap().paused, Some(true), "{name} is paused");
        assert_eq!(image_of(&d), "registry.invalid/confab:1.1.0", "{name} has the new template");
    }
    // The dispatchers' template changed while they were held: not one
    // of their pods was replaced. The gateways' rollout was held before
    // it started (the first sample of the rate holds it too).
    assert_eq!(pod_images(&pods, "dispatcher").await, ["registry.invalid/confab:1.0.0"]);
    assert_eq!(pod_images(&pods, "gateway").await, ["registry.invalid/confab:1.0.0"]);
    let r = cc.status.unwrap().rollout.unwrap();
    assert_eq!((r.gateways.updated, r.gateways.total), (0, 2));

    // The reconnections settle and the dispatchers catch up: the rollout
    // resumes and completes.
    {
        let mut m = played.lock().unwrap();
        m.reconnects_per_second = 0.0;
        m.lag = 3.0;
    }
    let cc = wait_available(&clusters, "chat").await;
    assert_eq!(cc.status.as_ref().unwrap().observed_generation, Some(2));
    let r = cc.status.unwrap().rollout.unwrap();
    for role in [&r.gateways, &r.dispatchers] {
        assert_eq!((role.updated, role.total, role.paused, role.reason.as_str()), (2, 2, false, "RolloutComplete"));
    }
    for name in ["chat-gateway", "chat-dispatcher"] {
        assert_ne!(deployments.get(name).await.unwrap().spec.unwrap().paused, Some(true), "{name} resumed");
    }
    wait_for("every pod on the new image", TIMEOUT, POLL, || async {
        let done = pod_images(&pods, "gateway").await == ["registry.invalid/confab:1.1.0"]
            && pod_images(&pods, "dispatcher").await == ["registry.invalid/confab:1.1.0"];
        Ok(done.then_some(()))
    })
    .await
    .unwrap();
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let list = events.list(&ListParams::default().fields("regarding.kind=ChatCluster")).await.unwrap();
    let reasons: Vec<String> = list.items.into_iter().filter_map(|e| e.reason).collect();
    assert!(reasons.iter().any(|r| r == "RolloutPaused"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "RolloutResumed"), "{reasons:?}");
    operator.assert_clean_log(&[]);
}

/// The Events on the ChatCluster: (reason, note).
async fn cluster_events(client: &Client, ns: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = events.list(&ListParams::default().fields("regarding.kind=ChatCluster")).await.unwrap();
    list.items.into_iter().map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_rollout_is_held_while_the_other_gateways_lack_room_and_resumes_when_they_have_it() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-room").await;
    // Each gateway holds 900 sessions of its 1000 places: whichever drains
    // first, the other has room for 100 of its 900 clients. Reconnections
    // and lag are nil, so no other gate holds anything.
    let played = std::sync::Arc::new(std::sync::Mutex::new(PlayedMetrics {
        connections: 900.0,
        max_connections: Some(1000.0),
        ..Default::default()
    }));
    let operator = RunningOperator::start_with(&client, &ns.name, played_scraper(played.clone())).await;
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    clusters.create(&PostParams::default(), &chat_cluster("chat", base_spec("1.0.0"))).await.unwrap();
    let cc = wait_available(&clusters, "chat").await;
    let rollout = cc.status.unwrap().rollout.expect("status.rollout");
    assert_eq!(
        (rollout.gateways.paused, rollout.gateways.reason.as_str()),
        (false, "RolloutComplete"),
        "full gateways hold nothing while nothing rolls"
    );

    // A new image: the gateways' rollout is held before a pod is replaced.
    let patch = json!({"spec": {"image": {"tag": "1.1.0"}}});
    clusters.patch("chat", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let cc = wait_for("the gateways' rollout to be held for capacity", TIMEOUT, POLL, || async {
        let cc = clusters.get("chat").await?;
        let Some(r) = cc.status.as_ref().and_then(|s| s.rollout.clone()) else { return Ok(None) };
        Ok((r.gateways.paused && r.gateways.reason == "CapacityShort").then_some(cc))
    })
    .await
    .unwrap();
    let held = "a gateway holds 900 sessions and the other gateways have room for 100";
    let r = cc.status.as_ref().unwrap().rollout.clone().unwrap();
    assert!(r.gateways.message.contains(held), "{}", r.gateways.message);
    assert_eq!((r.gateways.updated, r.gateways.total), (0, 2));
    assert_eq!(condition(&cc, "Progressing"), Some(("True".into(), "RolloutPaused".into())));
    assert_eq!(condition(&cc, "Available").map(|c| c.0), Some("True".into()), "a held rollout keeps serving");
    let message = &cc.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Progressing").unwrap().message;
    assert!(message.contains(&format!("gateways paused: {held}")), "{message}");
    let gateway = deployments.get("chat-gateway").await.unwrap();
    assert_eq!(gateway.spec.as_ref().unwrap().paused, Some(true), "the gateways' Deployment is paused");
    assert_eq!(image_of(&gateway), "registry.invalid/confab:1.1.0", "with the new template");
    let events = cluster_events(&client, &ns.name).await;
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "RolloutPaused" && note.contains("chat-gateway") && note.contains(held)),
        "{events:?}"
    );

    // The gate is the gateways' alone: the dispatchers roll meanwhile.
    wait_for("the dispatchers on the new image", TIMEOUT, POLL, || async {
        Ok((pod_images(&pods, "dispatcher").await == ["registry.invalid/confab:1.1.0"]).then_some(()))
    })
    .await
    .unwrap();
    // And it holds, round after round: the operator reads the gateways'
    // metrics again (two more rounds at least) and keeps the rollout paused,
    // not one gateway replaced.
    let scrapes = played.lock().unwrap().gateway_scrapes;
    wait_for("two more rounds of the gateways' metrics", TIMEOUT, POLL, || async {
        Ok((played.lock().unwrap().gateway_scrapes >= scrapes + 4).then_some(()))
    })
    .await
    .unwrap();
    let cc = clusters.get("chat").await.unwrap();
    let r = cc.status.unwrap().rollout.unwrap();
    assert_eq!((r.gateways.paused, r.gateways.reason.as_str(), r.gateways.updated), (true, "CapacityShort", 0));
    assert_eq!(deployments.get("chat-gateway").await.unwrap().spec.unwrap().paused, Some(true));
    assert_eq!(pod_images(&pods, "gateway").await, ["registry.invalid/confab:1.0.0"], "no gateway was replaced");
    assert_eq!(pods_of(&pods, "gateway").await.len(), 2, "not even a surge pod");

    // Room appears (max_connections raised to 2000): the rollout resumes
    // and completes.
    played.lock().unwrap().max_connections = Some(2000.0);
    let cc = wait_available(&clusters, "chat").await;
    assert_eq!(cc.status.as_ref().unwrap().observed_generation, Some(2));
    let r = cc.status.unwrap().rollout.unwrap();
    assert_eq!(
        (r.gateways.updated, r.gateways.total, r.gateways.paused, r.gateways.reason.as_str()),
        (2, 2, false, "RolloutComplete")
    );
    assert_ne!(deployments.get("chat-gateway").await.unwrap().spec.unwrap().paused, Some(true), "resumed");
    wait_for("every gateway on the new image", TIMEOUT, POLL, || async {
        Ok((pod_images(&pods, "gateway").await == ["registry.invalid/confab:1.1.0"]).then_some(()))
    })
    .await
    .unwrap();
    let events = cluster_events(&client, &ns.name).await;
    assert!(
        events.iter().any(|(reason, note)| reason == "RolloutResumed" && note.contains("chat-gateway")),
        "{events:?}"
    );
    operator.assert_clean_log(&[]);
}

/// The children the previous release's operator (0.1.0, commit fee81ad)
/// applied for the ChatCluster `chat` of
/// testdata/operator-0.1.0/chatcluster.yaml, as its `confab crd --children`
/// rendered them; `adopt-fixture-ns` and `adopt-fixture-uid` stand for the
/// test's namespace and the cluster's uid.
const PREVIOUS_CHILDREN: &str = include_str!("../testdata/operator-0.1.0/children.yaml");
const PREVIOUS_CLUSTER: &str = include_str!("../testdata/operator-0.1.0/chatcluster.yaml");

/// Server-side applies every document of `yaml` as the operator's field
/// manager, as the previous operator did.
async fn apply_as_operator(client: &Client, ns: &str, yaml: &str) {
    for doc in yaml.split("---\n").filter(|d| !d.trim().is_empty()) {
        let value: serde_json::Value = serde_saphyr::from_str(doc).expect("a fixture document");
        let (api_version, kind) = (value["apiVersion"].as_str().unwrap(), value["kind"].as_str().unwrap());
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
        let name = value["metadata"]["name"].as_str().unwrap();
        api.patch(name, &PatchParams::apply("confab-operator").force(), &Patch::Apply(&value))
            .await
            .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
    }
}

/// Each Deployment's generation and the pods of the cluster (name and uid).
async fn pods_and_generations(client: &Client, ns: &str) -> (Vec<(String, i64)>, Vec<(String, String)>) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let mut generations = Vec::new();
    for name in ["chat-gateway", "chat-dispatcher"] {
        generations.push((name.to_owned(), deployments.get(name).await.unwrap().metadata.generation.unwrap()));
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = "app.kubernetes.io/instance=chat,app.kubernetes.io/component in (gateway,dispatcher)";
    let mut list: Vec<(String, String)> = pods
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), p.uid().unwrap()))
        .collect();
    list.sort();
    (generations, list)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_of_the_previous_operator_are_adopted_without_restarting_their_pods() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-adopt").await;
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);

    // The cluster and its children as the previous operator left them.
    let mut cc: ChatCluster = serde_saphyr::from_str(PREVIOUS_CLUSTER).unwrap();
    cc.metadata.namespace = None;
    cc.metadata.uid = None;
    let created = clusters.create(&PostParams::default(), &cc).await.unwrap();
    let uid = created.uid().unwrap();
    let children = PREVIOUS_CHILDREN.replace("adopt-fixture-ns", &ns.name).replace("adopt-fixture-uid", &uid);
    apply_as_operator(&client, &ns.name, &children).await;
    wait_for("the previous operator's Deployments to be rolled out", TIMEOUT, POLL, || async {
        let mut done = true;
        for name in ["chat-gateway", "chat-dispatcher"] {
            let d = deployments.get(name).await?;
            let s = d.status.clone().unwrap_or_default();
            done &= s.observed_generation == d.metadata.generation
                && s.updated_replicas == Some(2)
                && s.ready_replicas == Some(2)
                && s.replicas == Some(2);
        }
        Ok(done.then_some(()))
    })
    .await
    .unwrap();
    let before = pods_and_generations(&client, &ns.name).await;
    assert_eq!(before.1.len(), 4, "2 gateways and 2 dispatchers: {before:?}");
    let job = Api::<Job>::namespaced(client.clone(), &ns.name).list(&ListParams::default()).await.unwrap().items;
    let job_uid = job[0].uid().unwrap();

    // The new operator takes over: it reconciles, gates (nothing to roll)
    // and reports, and not one pod is replaced.
    let operator = RunningOperator::start(&client, &ns.name).await;
    let cc = wait_available(&clusters, "chat").await;
    let rollout = cc.status.unwrap().rollout.expect("the new operator applied the Deployments");
    assert_eq!((rollout.gateways.reason.as_str(), rollout.gateways.paused), ("RolloutComplete", false));
    assert_eq!(pods_and_generations(&client, &ns.name).await, before, "the adoption restarted pods");
    let jobs = Api::<Job>::namespaced(client.clone(), &ns.name).list(&ListParams::default()).await.unwrap().items;
    assert_eq!(jobs.iter().map(|j| j.uid().unwrap()).collect::<Vec<_>>(), [job_uid], "the migration is not rerun");

    // A spec change does roll them.
    let patch = json!({"spec": {"image": {"tag": "1.0.1"}}});
    clusters.patch("chat", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_available(&clusters, "chat").await;
    let after = wait_for("the new image's pods", TIMEOUT, POLL, || async {
        let now = pods_and_generations(&client, &ns.name).await;
        Ok((now.1.len() == 4 && now.1.iter().all(|p| !before.1.contains(p))).then_some(now))
    })
    .await
    .unwrap();
    for ((name, old), (_, new)) in before.0.iter().zip(&after.0) {
        assert!(new > old, "{name}: generation {old} -> {new}");
    }
    operator.assert_clean_log(&[]);
}
