//! End to end on a real node: `scripts/infra up kube node` adds a kubelet,
//! containerd and runc to the control plane, so Confab pods really run. The
//! image is written by `scripts/image` from this build's binary and imported
//! into the node's containerd; `helm install` of `charts/confab` runs the
//! operator from it; a ChatCluster pointing at the Kafka and Cassandra of
//! `scripts/infra` gets its migration Job (the real binary against the real
//! servers), two gateways and two dispatchers that pass their probes; then
//! the chat scenario the kind suite runs too (tests/scenario): users
//! chat across the two gateway pods (through the pods' addresses: no
//! kube-proxy runs here); a deleted gateway pod's clients are told
//! `server_restart`, reconnect to the other and `sync` with nothing lost
//! within 15 s (asserted); a change of image tag rolls both gateways and
//! dispatchers within 2 minutes
//! while a writer keeps sending (resending on another pod when its own is
//! drained), and `sync` afterwards holds every acked send once, in order;
//! and deleting the ChatCluster removes everything it made.
//!
//! Ignored by a plain `cargo test` (the node needs root and is started only
//! on request); scripts/test runs it with `--ignored` when
//! `CONFAB_TEST_NODE=1`. Run it yourself:
//!
//! ```sh
//! scripts/infra up kafka cql kube node helm && source target/infra/env
//! cargo test -p confab-e2e --test node -- --ignored --nocapture
//! ```
//!
//! Environment: what `scripts/infra up` exports (`CONFAB_NODE`,
//! `CONTAINERD_ADDRESS`, `KUBECONFIG`, `HELM`, `KAFKA_BOOTSTRAP`,
//! `CQL_CONTACT_POINTS`); `CONFAB_BIN` names a built `confab` binary to put
//! in the image (default: build the workspace as CI does and use its).

mod chart_support;
mod kube_support;
mod scenario;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use chart_support::{chart, helm, repo, text};
use confab_e2e::{infra_env, unique_name, wait_for};
use confab_operator::crd::ChatCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};
use scenario::{Reach, ready_now};
use serde_json::{Value, json};

/// Pods start from a cold image cache, the migration Job creates a keyspace
/// and topics: generous, since CI machines are shared.
const START: Duration = Duration::from_secs(300);
const TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);
/// The label and taint key of the real node (scripts/infra.d/node.sh).
const NODE_KEY: &str = "confab.dev/node";

/// The `confab` binary to put in the image: `CONFAB_BIN`, or this build's
/// (built with CI's flags, so that after CI's build step it is a no-op).
fn confab_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("CONFAB_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let target = profile.parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--quiet", "--workspace", "--all-targets", "--all-features"])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo build:\n{}", text(&out));
    profile.join("confab")
}

/// Pod placement on the real node: its label selected, its taint tolerated.
fn on_the_node() -> Value {
    json!({
        "nodeSelector": {NODE_KEY: "real"},
        "tolerations": [{"key": NODE_KEY, "operator": "Equal", "value": "real", "effect": "NoSchedule"}],
    })
}

/// Uninstalls the release and deletes the namespace when the test ends; on a
/// failure, first prints what the pods were doing and the operator's log.
struct Cleanup {
    release: String,
    namespace: String,
    files: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(kubectl) = std::env::var_os("KUBECTL")
        {
            for args in [
                vec!["get", "pods,jobs,deployments,chatclusters", "-o", "wide"],
                vec!["get", "events", "--sort-by=.lastTimestamp"],
                vec!["logs", "-l", "app.kubernetes.io/name=confab", "--all-containers", "--tail=40", "--prefix"],
            ] {
                let out = Command::new(&kubectl).args(&args).args(["-n", &self.namespace]).output();
                if let Ok(out) = out {
                    eprintln!("---- kubectl {}\n{}", args.join(" "), text(&out));
                }
            }
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        let _ = Command::new(infra_env("HELM", "helm"))
            .args(["uninstall", &self.release, "--namespace", &self.namespace, "--wait", "--timeout", "60s"])
            .output();
        kube_support::delete_namespace(&self.namespace);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real node (root): scripts/infra up kube node; scripts/test runs it when CONFAB_TEST_NODE=1"]
async fn a_chat_cluster_runs_on_a_real_node_and_survives_a_gateway_pod_deletion() {
    let node = infra_env("CONFAB_NODE", "node");
    infra_env("CONTAINERD_ADDRESS", "node");
    infra_env("KUBECONFIG", "kube");
    let kafka = infra_env("KAFKA_BOOTSTRAP", "kafka");
    let cql = infra_env("CQL_CONTACT_POINTS", "cql");
    confab_e2e::use_ring_crypto();
    let client = Client::try_default().await.expect("kube client from KUBECONFIG");
    let namespace = unique_name("e2e-node");
    let release = unique_name("node");
    let mut cleanup = Cleanup { release: release.clone(), namespace: namespace.clone(), files: Vec::new() };

    step("the image: scripts/image writes it from the binary and imports it into the node's containerd");
    let binary = confab_binary();
    let out = Command::new(repo().join("scripts/image")).arg("--binary").arg(&binary).output().unwrap();
    assert!(out.status.success(), "scripts/image:\n{}", text(&out));
    let image = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let chart_version = helm(&["show", "chart", chart()]);
    let app_version = chart_version
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .expect("the chart's appVersion");
    assert_eq!(image, format!("ghcr.io/confab-chat/confab:{app_version}"), "the tag the chart runs by default");

    step("helm install: the operator runs from the image on the real node");
    let values = repo().join(format!("target/tmp/{namespace}.values.json"));
    std::fs::create_dir_all(values.parent().unwrap()).unwrap();
    let mut operator = on_the_node();
    operator["watchNamespace"] = json!(namespace);
    // Never pulled: the image must be the one scripts/image imported.
    operator["image"] = json!({"pullPolicy": "Never"});
    std::fs::write(&values, serde_json::to_vec(&json!({"operator": operator})).unwrap()).unwrap();
    cleanup.files.push(values.clone());
    let install = helm(&[
        "install",
        &release,
        chart(),
        "--namespace",
        &namespace,
        "--create-namespace",
        "-f",
        values.to_str().unwrap(),
        "--wait",
        "--timeout",
        "300s",
    ]);
    assert!(install.contains("STATUS: deployed"), "{install}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let operator_pods =
        pods.list(&ListParams::default().labels("app.kubernetes.io/component=operator")).await.unwrap().items;
    // The chart runs two replicas; a Lease makes one of them the leader.
    assert_eq!(operator_pods.len(), 2, "two operator pods");
    for pod in &operator_pods {
        assert_on_node(pod, &node);
    }

    step("a ChatCluster pointing at the Kafka and Cassandra of scripts/infra");
    let unique = namespace.replace('-', "_");
    let mut gateway = json!({"replicas": 2, "pod": on_the_node()});
    // Clients are told server_restart at once; keep the pod's exit short.
    gateway["drainSeconds"] = json!(5);
    let cc: ChatCluster = serde_json::from_value(json!({
        "apiVersion": "confab.dev/v1alpha1",
        "kind": "ChatCluster",
        "metadata": {"name": "chat"},
        "spec": {
            "image": {"tag": app_version, "pullPolicy": "Never"},
            "kafka": {"bootstrapServers": kafka, "topicPrefix": namespace, "partitions": 4},
            "cql": {"contactPoints": cql.split(',').collect::<Vec<_>>(), "keyspace": unique},
            "gateway": gateway,
            "dispatcher": {"replicas": 2, "pod": on_the_node()},
        },
    }))
    .unwrap();
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &namespace);
    clusters.create(&PostParams::default(), &cc).await.expect("create the ChatCluster");

    let cc = wait_for("chat to be Available with 2/2 gateways and 2/2 dispatchers", START, POLL, || async {
        let cc = clusters.get("chat").await?;
        let status = cc.status.clone().unwrap_or_default();
        let available = status.conditions.iter().any(|c| c.type_ == "Available" && c.status == "True");
        Ok((available && status.gateways.summary == "2/2" && status.dispatchers.summary == "2/2").then_some(cc))
    })
    .await
    .unwrap();

    step("the migration Job ran the real binary to completion on the node");
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let owned = ListParams::default().labels("app.kubernetes.io/managed-by=confab-operator,chatcluster=chat");
    let job = jobs.list(&owned).await.unwrap().items.into_iter().next().expect("the migration Job");
    assert!(job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) >= 1, "{:?}", job.status);
    let job_pods = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={}", job.name_any())))
        .await
        .unwrap()
        .items;
    let migrated = job_pods.iter().find(|p| phase(p) == "Succeeded").expect("a Succeeded migration pod");
    assert_on_node(migrated, &node);
    let terminated = migrated
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c[0].state.as_ref()?.terminated.clone());
    let ran = terminated.as_ref().map(|t| (t.exit_code, t.started_at.is_some()));
    assert_eq!(ran, Some((0, true)), "the container ran and exited 0: {terminated:?}");

    step("gateway and dispatcher pods run from the image on the node and pass their probes");
    let gateways = ready_pods(&pods, "gateway", 2).await;
    let dispatchers = ready_pods(&pods, "dispatcher", 2).await;
    for p in gateways.iter().chain(&dispatchers) {
        assert_on_node(p, &node);
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some(image.as_str()));
        assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some(), "{} has probes", p.name_any());
    }
    println!("  endpoint: {:?}", cc.status.and_then(|s| s.endpoint));

    let binary_for_roll = binary.clone();
    scenario::chat_through_failover_and_roll(
        &pods,
        &clusters,
        &gateways,
        &PodAddress,
        |fresh| assert_on_node(fresh, &node),
        move || {
            let next_tag = format!("{app_version}-next");
            let out = Command::new(repo().join("scripts/image"))
                .arg("--binary")
                .arg(&binary_for_roll)
                .args(["--tag", &format!("ghcr.io/confab-chat/confab:{next_tag}")])
                .output()
                .unwrap();
            assert!(out.status.success(), "scripts/image --tag:\n{}", text(&out));
            let next_image = String::from_utf8(out.stdout).unwrap().trim().to_owned();
            (next_tag, next_image)
        },
    )
    .await;

    step("the operator's log can be read through the kubelet");
    let mut operator_log = String::new();
    for pod in &operator_pods {
        operator_log += &pods.logs(&pod.name_any(), &LogParams::default()).await.unwrap();
    }
    assert!(
        operator_log.contains("operator running") && operator_log.contains(&namespace),
        "the operator's log (kubectl logs) says it watches {namespace}:\n{operator_log}"
    );

    step("deleting the ChatCluster removes everything it made");
    clusters.delete("chat", &DeleteParams::foreground()).await.unwrap();
    wait_for("the ChatCluster's children to be gone", TIMEOUT, POLL, || async {
        let mut left = Vec::new();
        let everything = ListParams::default().labels("app.kubernetes.io/instance=chat");
        left.extend(pods.list(&everything).await?.items.iter().map(|o| format!("pod/{}", o.name_any())));
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        left.extend(deployments.list(&everything).await?.items.iter().map(|o| format!("deploy/{}", o.name_any())));
        left.extend(jobs.list(&everything).await?.items.iter().map(|o| format!("job/{}", o.name_any())));
        let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
        left.extend(services.list(&owned).await?.items.iter().map(|o| format!("svc/{}", o.name_any())));
        let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
        left.extend(configmaps.list(&owned).await?.items.iter().map(|o| format!("cm/{}", o.name_any())));
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        left.extend(secrets.list(&owned).await?.items.iter().map(|o| format!("secret/{}", o.name_any())));
        if clusters.get_opt("chat").await?.is_some() {
            left.push("chatcluster/chat".into());
        }
        if left.is_empty() { Ok(Some(())) } else { bail!("still there: {left:?}") }
    })
    .await
    .unwrap();
    // The operators are still there, and well.
    for pod in &operator_pods {
        let still = pods.get(&pod.name_any()).await.unwrap();
        assert_eq!(phase(&still), "Running");
    }
    step("node suite: all checks passed");
}

fn step(what: &str) {
    println!("[node suite] {what}");
}

fn phase(p: &Pod) -> String {
    p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default()
}

#[track_caller]
fn assert_on_node(p: &Pod, node: &str) {
    let on = p.spec.as_ref().and_then(|s| s.node_name.clone());
    assert_eq!(on.as_deref(), Some(node), "pod {} runs on the real node", p.name_any());
}

/// The node suite reaches a pod by its address (no kube-proxy runs here).
struct PodAddress;

impl Reach for PodAddress {
    async fn base_url(&self, p: &Pod) -> anyhow::Result<String> {
        let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).context("a pod without an IP")?;
        Ok(format!("http://{ip}:8080"))
    }
}

async fn ready_pods(pods: &Api<Pod>, component: &str, n: usize) -> Vec<Pod> {
    wait_for(&format!("{n} ready {component} pods"), START, POLL, || async {
        let ready = ready_now(pods, component).await?;
        Ok((ready.len() == n).then_some(ready))
    })
    .await
    .unwrap()
}
