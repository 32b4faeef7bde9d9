//! The real control plane from `scripts/infra up kube`: kube-apiserver on
//! etcd, kube-controller-manager (deployment, replicaset, serviceaccount,
//! namespace and garbage-collector controllers), kube-scheduler, and kwok's
//! fake node that reports scheduled pods Running.

use std::time::Duration;

use confab_e2e::{infra_env, unique_name, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);

async fn client() -> Client {
    infra_env("KUBECONFIG", "kube");
    confab_e2e::use_ring_crypto();
    Client::try_default().await.expect("kube client from KUBECONFIG")
}

/// Creates a namespace and waits for its default ServiceAccount (made by the
/// serviceaccount controller; pods are refused until it exists).
async fn namespace(client: &Client, prefix: &str) -> String {
    let ns = unique_name(prefix);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let body: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    namespaces.create(&PostParams::default(), &body).await.expect("create namespace");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    wait_for("the namespace's default ServiceAccount", TIMEOUT, POLL, || async {
        Ok(sas.get_opt("default").await?.map(|_| ()))
    })
    .await
    .unwrap();
    ns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_gets_replicaset_pods_and_garbage_collection() {
    let client = client().await;

    // A node to schedule on: kwok's fake node, Ready.
    let nodes: Api<Node> = Api::all(client.clone());
    let listed = nodes.list(&ListParams::default()).await.expect("list nodes");
    assert!(
        !listed.items.is_empty(),
        "the cluster has no node: scripts/infra starts kwok with the fake node kwok-node-0"
    );

    let ns = namespace(&client, "e2e-kube").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "smoke", "labels": {"app": "smoke"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "smoke"}},
            "template": {
                "metadata": {"labels": {"app": "smoke"}},
                "spec": {"containers": [{
                    "name": "app",
                    // never pulled: kwok fakes the kubelet
                    "image": "registry.invalid/confab/smoke:0",
                }]}
            }
        }
    }))
    .unwrap();
    let created = deployments.create(&PostParams::default(), &deployment).await.expect("create deployment");
    let uid = created.metadata.uid.clone().expect("deployment uid");

    // The deployment controller creates a ReplicaSet owned by the Deployment.
    let rs_name = wait_for("a ReplicaSet owned by the Deployment", TIMEOUT, POLL, || async {
        let list = replicasets.list(&ListParams::default().labels("app=smoke")).await?;
        Ok(list.items.into_iter().find_map(|rs| {
            let owned = rs
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|refs| refs.iter().any(|r| r.uid == uid && r.controller == Some(true)));
            owned.then(|| rs.metadata.name.clone().unwrap())
        }))
    })
    .await
    .unwrap();

    // The replicaset controller creates the pods, the scheduler binds them to
    // the fake node, kwok reports them Running and Ready: the Deployment
    // becomes available.
    tokio::time::timeout(TIMEOUT, await_condition(deployments.clone(), "smoke", conditions::is_deployment_completed()))
        .await
        .expect("timed out waiting for the Deployment to complete its rollout")
        .expect("watching the Deployment");
    let ready = wait_for("2 ready replicas", TIMEOUT, POLL, || async {
        let d = deployments.get("smoke").await?;
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        Ok((ready == 2).then_some(ready))
    })
    .await
    .unwrap();
    assert_eq!(ready, 2);
    let running = pods.list(&ListParams::default().labels("app=smoke")).await.expect("list pods");
    assert_eq!(running.items.len(), 2);
    for p in &running.items {
        let spec = p.spec.as_ref().unwrap();
        assert!(spec.node_name.is_some(), "pod {:?} is not scheduled", p.metadata.name);
        assert_eq!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"));
    }

    // Delete the Deployment only (background propagation): the garbage
    // collector removes the ReplicaSet and, through it, the pods.
    deployments.delete("smoke", &DeleteParams::background()).await.expect("delete deployment");
    wait_for("the garbage collector to delete the ReplicaSet", TIMEOUT, POLL, || async {
        Ok(replicasets.get_opt(&rs_name).await?.is_none().then_some(()))
    })
    .await
    .unwrap();
    wait_for("the pods to be deleted", TIMEOUT, POLL, || async {
        let list = pods.list(&ListParams::default().labels("app=smoke")).await?;
        Ok(list.items.is_empty().then_some(()))
    })
    .await
    .unwrap();

    Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::default()).await.expect("delete namespace");
}
