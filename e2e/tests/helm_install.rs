//! `helm install` of `charts/confab` into the control plane of `scripts/infra
//! up kube` (with prometheus-operator's CRDs, so every optional piece
//! installs); the API server validates every rendered object strictly (a
//! server-side dry run); the `confab operator` process, run with the
//! installed Deployment's arguments and the chart's ServiceAccount, reconciles
//! the example ChatCluster while the real Prometheus scrapes it and the
//! operator dashboard's queries return data.

mod chart_support;
mod kube_support;
mod operator_process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chart_support::{chart, documents, helm, repo, text};
use confab_e2e::{infra_env, unique_name, wait_for};
use confab_operator::crd::ChatCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube::{Client, ResourceExt};
use operator_process::OperatorProcess;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);

/// Runs the binary with the Deployment's arguments and environment, but
/// the admin port on loopback and the given kubeconfig.
fn start_operator(container: &k8s_openapi::api::core::v1::Container, kubeconfig: &Path, ns: &str) -> OperatorProcess {
    let args = container.args.clone().unwrap_or_default();
    let mut env = vec![("KUBECONFIG".to_owned(), kubeconfig.display().to_string())];
    for e in container.env.clone().unwrap_or_default() {
        // POD_NAME and POD_NAMESPACE come from the API in a pod.
        let value = match e.name.as_str() {
            "POD_NAMESPACE" => ns.to_owned(),
            _ => e.value.unwrap_or_else(|| "confab-operator-e2e".into()),
        };
        env.push((e.name, value));
    }
    OperatorProcess::start("operator", &args, &env)
}

/// Uninstalls the release and deletes the namespace when the test ends.
struct Cleanup {
    release: String,
    namespace: String,
    files: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        let _ = Command::new(infra_env("HELM", "helm"))
            .args(["uninstall", &self.release, "--namespace", &self.namespace, "--wait", "--timeout", "60s"])
            .output();
        kube_support::delete_namespace(&self.namespace);
    }
}

/// The prometheus-operator release whose CRDs (PodMonitor, ServiceMonitor,
/// PrometheusRule) the chart's monitoring objects are checked against.
const PROMETHEUS_OPERATOR: &str = "github.com/prometheus-operator/prometheus-operator@v0.85.0";

/// Installs prometheus-operator's CRDs into the control plane, from its Go
/// module (fetched through the Go module proxy, cached in GOMODCACHE).
async fn install_monitoring_crds(admin: &Client) {
    let out = Command::new("go")
        .args(["mod", "download", "-json", PROMETHEUS_OPERATOR])
        .env("GOTOOLCHAIN", "local")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("go (scripts/infra up kube needs it too)");
    assert!(out.status.success(), "go mod download {PROMETHEUS_OPERATOR}:\n{}", text(&out));
    let module: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dir = PathBuf::from(module["Dir"].as_str().expect("the module's directory"));
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for plural in ["podmonitors", "servicemonitors", "prometheusrules"] {
        let path = dir.join(format!("example/prometheus-operator-crd/monitoring.coreos.com_{plural}.yaml"));
        let docs = documents(&std::fs::read_to_string(&path).unwrap());
        let crd: CustomResourceDefinition = serde_json::from_value(docs[0].clone()).unwrap();
        let name = crd.name_any();
        crds.patch(&name, &PatchParams::apply("confab-e2e-chart").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("apply {name}: {e}"));
        wait_for(&format!("{name} established"), TIMEOUT, POLL, || async {
            let crd = crds.get(&name).await?;
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            Ok(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(()))
        })
        .await
        .unwrap();
    }
}

/// Server-side apply of a document as a dry run with strict field
/// validation: the API server checks it against its schema (built-in kinds,
/// the ChatCluster CRD, prometheus-operator's CRDs) and refuses unknown fields.
async fn dry_run_strictly(admin: &Client, doc: &Value) -> Result<(), String> {
    let params = PatchParams::apply("confab-e2e-chart").dry_run().validation_strict();
    let (api_version, kind) = (doc["apiVersion"].as_str().unwrap(), doc["kind"].as_str().unwrap());
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) = kube::discovery::pinned_kind(admin, &gvk).await.map_err(|e| format!("{gvk:?}: {e}"))?;
    let name = doc["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            Api::namespaced_with(admin.clone(), doc["metadata"]["namespace"].as_str().unwrap(), &resource)
        }
        Scope::Cluster => Api::all_with(admin.clone(), &resource),
    };
    let object: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    api.patch(name, &params, &Patch::Apply(&object)).await.map(drop).map_err(|e| format!("{kind} {name}: {e}"))
}

/// A kubeconfig that acts as the ServiceAccount: the admin kubeconfig's
/// server and CA, with a token the API server issues for the account.
async fn kubeconfig_as(admin: &Client, namespace: &str, account: &str, path: &Path) {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}})).unwrap();
    let issued = sas.create_token_request(account, &PostParams::default(), &request).await.expect("token request");
    let token = issued.status.expect("a token").token;
    let admin_config: Value = documents(&std::fs::read_to_string(infra_env("KUBECONFIG", "kube")).unwrap())[0].clone();
    let cluster = &admin_config["clusters"][0]["cluster"];
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "infra", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "infra", "user": account, "namespace": namespace}}],
        "current-context": "sa",
    });
    // JSON is YAML.
    std::fs::write(path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

async fn prometheus_query(http: &reqwest::Client, base: &str, q: &str) -> anyhow::Result<Vec<f64>> {
    let v: Value = http.get(format!("{base}/api/v1/query")).query(&[("query", q)]).send().await?.json().await?;
    anyhow::ensure!(v["status"] == "success", "{q}: {v}");
    Ok(v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_gives_an_operator_whose_rbac_reconciles_the_example_chatcluster() {
    infra_env("KUBECONFIG", "kube");
    confab_e2e::use_ring_crypto();
    let admin = Client::try_default().await.expect("kube client from KUBECONFIG");
    let namespace = unique_name("op-chart");
    let release = unique_name("chart");
    let mut cleanup = Cleanup { release: release.clone(), namespace: namespace.clone(), files: Vec::new() };

    install_monitoring_crds(&admin).await;
    let watch = format!("operator.watchNamespace={namespace}");
    let install = helm(&[
        "install",
        &release,
        chart(),
        "--namespace",
        &namespace,
        "--create-namespace",
        "--set",
        &watch,
        "--set",
        "example.enabled=true,prometheusAdapter.rules.enabled=true,grafana.dashboards.enabled=true",
        "--set",
        "monitoring.podMonitor.enabled=true,monitoring.serviceMonitor.enabled=true,monitoring.prometheusRule.enabled=true",
        "--set",
        "operator.image.repository=registry.invalid/confab",
        "--wait",
        "--timeout",
        "120s",
    ]);
    assert!(install.contains("STATUS: deployed"), "{install}");

    // The CRD from crds/ is served; the operator's Deployment (kwok plays the
    // kubelet) is available; its account, Role and RoleBinding exist.
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let crd = crds.get("chatclusters.confab.dev").await.expect("the CRD is installed");
    assert!(crd.status.and_then(|s| s.conditions).unwrap_or_default().iter().any(|c| c.type_ == "Established"));
    let operator_name = format!("{release}-confab-operator");
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &namespace);
    let deployment = deployments.get(&operator_name).await.expect("the operator's Deployment");
    let status = deployment.status.clone().unwrap_or_default();
    assert_eq!(status.available_replicas, Some(2), "two replicas, one leading: {status:?}");
    let container = &deployment.spec.unwrap().template.spec.unwrap().containers[0].clone();
    assert_eq!(container.args.as_deref().unwrap()[0], "operator");
    assert!(container.args.as_deref().unwrap().contains(&format!("--watch-namespace={namespace}")));
    Api::<Role>::namespaced(admin.clone(), &namespace).get(&operator_name).await.expect("Role");
    let election = format!("{operator_name}-leader-election");
    Api::<Role>::namespaced(admin.clone(), &namespace).get(&election).await.expect("the leader election Role");
    Api::<RoleBinding>::namespaced(admin.clone(), &namespace).get(&operator_name).await.expect("RoleBinding");
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &namespace);
    let dashboards = configmaps.list(&kube::api::ListParams::default().labels("grafana_dashboard=1")).await.unwrap();
    assert_eq!(dashboards.items.len(), 5);
    for (plural, name) in [
        ("podmonitors", format!("{release}-confab-chatclusters")),
        ("servicemonitors", operator_name.clone()),
        ("prometheusrules", format!("{release}-confab")),
    ] {
        let resource = kube::discovery::ApiResource {
            group: "monitoring.coreos.com".into(),
            version: "v1".into(),
            api_version: "monitoring.coreos.com/v1".into(),
            kind: String::new(),
            plural: plural.into(),
        };
        Api::<DynamicObject>::namespaced_with(admin.clone(), &namespace, &resource)
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("{plural}/{name}: {e}"));
    }

    // Every test values file: every object dry-run applied with strict field
    // validation by the API server (namespaces moved to this test's).
    let here = format!(
        "grafana.dashboards.namespace={namespace},prometheusAdapter.rules.namespace={namespace},operator.watchNamespace={namespace}"
    );
    let mut docs = Vec::new();
    for file in std::fs::read_dir(repo().join("charts/confab/ci")).unwrap() {
        let file = file.unwrap().path();
        let rendered = helm(&[
            "template",
            "dry",
            chart(),
            "--namespace",
            &namespace,
            "--include-crds",
            "-f",
            file.to_str().unwrap(),
            "--set",
            &here,
        ]);
        let these = documents(&rendered);
        for doc in &these {
            dry_run_strictly(&admin, doc).await.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
        docs.extend(these);
    }
    assert!(docs.iter().any(|d| d["kind"] == "ServiceMonitor") && docs.iter().any(|d| d["kind"] == "ChatCluster"));
    // The check has teeth: an unknown field in a PodMonitor is refused.
    let mut bad = docs.iter().find(|d| d["kind"] == "PodMonitor").unwrap().clone();
    bad["spec"]["podMetricsEndpoints"][0]["scrapeEvery"] = json!("10s");
    let refused = dry_run_strictly(&admin, &bad).await.expect_err("an unknown PodMonitor field is refused");
    assert!(refused.contains("scrapeEvery"), "{refused}");

    // No kubelet runs the operator's image here: run the same binary as a
    // process, with the installed Deployment's arguments and environment and
    // the chart's ServiceAccount's credentials, so its RBAC is what the API
    // server enforces.
    let kubeconfig = repo().join(format!("target/tmp/{namespace}.kubeconfig"));
    std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
    kubeconfig_as(&admin, &namespace, &operator_name, &kubeconfig).await;
    cleanup.files.push(kubeconfig.clone());
    let operator = start_operator(container, &kubeconfig, &namespace);

    // Prometheus scrapes the operator as the chart's ServiceMonitor would.
    let targets_dir = PathBuf::from(infra_env("PROMETHEUS_TARGETS_DIR", "prometheus"));
    let sd = json!([{"targets": [operator.admin], "labels": {
        "job": "confab-chart-operator", "namespace": namespace, "pod": operator_name,
    }}]);
    let file = targets_dir.join(format!("{namespace}.json"));
    let tmp = targets_dir.join(format!(".{namespace}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&sd).unwrap()).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    cleanup.files.push(file);

    // The example ChatCluster the chart created is reconciled: children
    // applied, the migration Job done, the pods (kwok's) ready.
    let clusters: Api<ChatCluster> = Api::namespaced(admin.clone(), &namespace);
    let cc = wait_for("the example ChatCluster to be Available", TIMEOUT, POLL, || async {
        let cc = clusters.get("chat").await?;
        let available = cc.status.as_ref().is_some_and(|s| {
            s.observed_generation == cc.metadata.generation
                && s.conditions.iter().any(|c| c.type_ == "Available" && c.status == "True")
        });
        Ok(available.then_some(cc))
    })
    .await
    .unwrap();
    for child in ["chat-gateway", "chat-dispatcher"] {
        let d = deployments.get(child).await.unwrap_or_else(|e| panic!("{child}: {e}"));
        assert_eq!(d.owner_references()[0].name, cc.name_any());
    }

    // A ChatCluster the API server refuses to run (requests above limits):
    // the operator reports a reconcile error, so the operator dashboard's
    // error panels have data too.
    let broken: ChatCluster = serde_json::from_value(json!({
        "apiVersion": "confab.dev/v1alpha1", "kind": "ChatCluster", "metadata": {"name": "broken"},
        "spec": {
            "kafka": {"bootstrapServers": "kafka:9092"}, "cql": {"contactPoints": ["cassandra:9042"]},
            "gateway": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
        },
    }))
    .unwrap();
    clusters.create(&PostParams::default(), &broken).await.expect("create the broken ChatCluster");

    // Every query of the operator dashboard returns data from Prometheus.
    let base = infra_env("PROMETHEUS_URL", "prometheus").trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let board: Value =
        serde_json::from_slice(&std::fs::read(repo().join("charts/confab/dashboards/operator.json")).unwrap()).unwrap();
    let queries: Vec<String> = board["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().replace("$namespace", &namespace).replace("$__rate_interval", "1m"))
        .collect();
    assert!(queries.len() >= 5);
    for q in &queries {
        wait_for(&format!("data for {q}"), TIMEOUT, Duration::from_millis(500), || async {
            let values = prometheus_query(&http, &base, q).await?;
            Ok((!values.is_empty()).then_some(()))
        })
        .await
        .unwrap();
    }
    // The operator's exposition passes promtool's lint.
    let body = http.get(format!("http://{}/metrics", operator.admin)).send().await.unwrap().bytes().await.unwrap();
    let mut lint = Command::new(std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into()))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), &body).unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(out.status.success() && text(&out).trim().is_empty(), "promtool check metrics:\n{}", text(&out));

    let errors = format!("sum(confab_operator_reconcile_errors_total{{namespace=\"{namespace}\",reason=\"api\"}})");
    // Scraped on Prometheus's schedule: wait for the sample that has the error.
    wait_for(&format!("{errors} >= 1"), TIMEOUT, Duration::from_millis(500), || async {
        let values = prometheus_query(&http, &base, &errors).await?;
        Ok(values.iter().any(|v| *v >= 1.0).then_some(()))
    })
    .await
    .unwrap();

    // The operator led (the chart's RBAC lets it hold its Lease), and its
    // log has no warning or error but the broken cluster's.
    assert_eq!(operator.metric("confab_operator_leader").await, Some(1.0));
    operator.assert_clean_log(&["reconcile failed", "broken"]);
}
