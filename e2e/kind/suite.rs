//! The kind suite (`e2e/kind/run.sh` runs it; CI only compiles it, having
//! no Docker): against a ChatCluster the real operator deployed on a real
//! kind cluster, with the real image, Kafka and Cassandra, it runs the same
//! chat scenario as the node suite that CI runs on a real kubelet
//! (e2e/tests/scenario): chat across two gateway pods, a gateway pod deleted
//! and its client reconnected and caught up within 15 s, the replacement
//! serving history, and a change of image tag rolling every pod within 2
//! minutes under a steady stream with nothing lost.
//!
//! Pods are reached through `kubectl port-forward`, one per pod, opened as
//! the scenario meets them (pods come and go during it).
//!
//! Environment: `KUBECONFIG` (the kind cluster), `CONFAB_KIND_NEXT_TAG` (a
//! second tag of the image, loaded into the node by run.sh, that the roll
//! moves to), `KUBECTL` (default `kubectl`).

#[path = "../tests/scenario/mod.rs"]
mod scenario;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, bail};
use confab_e2e::wait_for;
use confab_operator::crd::ChatCluster;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use scenario::{POLL, Reach, TIMEOUT, ready_now};

const NAMESPACE: &str = "confab-kind";

/// One `kubectl port-forward` per pod, killed when the suite ends.
struct PortForwards {
    kubectl: String,
    open: Mutex<HashMap<String, (Child, String)>>,
}

impl Reach for PortForwards {
    async fn base_url(&self, pod: &Pod) -> anyhow::Result<String> {
        let name = pod.name_any();
        if let Some((_, url)) = self.open.lock().unwrap().get(&name) {
            return Ok(url.clone());
        }
        let mut child = Command::new(&self.kubectl)
            .args(["-n", NAMESPACE, "port-forward", &format!("pod/{name}"), ":8080"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting kubectl port-forward")?;
        let stdout = child.stdout.take().context("port-forward without stdout")?;
        // "Forwarding from 127.0.0.1:43567 -> 8080"
        let first = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = match tokio::time::timeout(TIMEOUT, first).await {
            Ok(Ok(Ok(line))) => line,
            _ => {
                let _ = child.kill();
                bail!("kubectl port-forward to {name} said nothing");
            }
        };
        let Some(port) = line.split("127.0.0.1:").nth(1).and_then(|rest| rest.split_whitespace().next()) else {
            let _ = child.kill();
            bail!("kubectl port-forward to {name}: unexpected output {line:?}");
        };
        let url = format!("http://127.0.0.1:{port}");
        self.open.lock().unwrap().insert(name, (child, url.clone()));
        Ok(url)
    }
}

impl Drop for PortForwards {
    fn drop(&mut self) {
        for (_, (mut child, _)) in self.open.lock().unwrap().drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let next_tag =
        std::env::var("CONFAB_KIND_NEXT_TAG").context("CONFAB_KIND_NEXT_TAG is not set: run e2e/kind/run.sh")?;
    confab_e2e::use_ring_crypto();
    let client = kube::Client::try_default().await?;
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client, NAMESPACE);

    println!("[kind suite] the ChatCluster reports every pod ready");
    let cc = wait_for("chat to be Available with 2/2 gateways and 2/2 dispatchers", TIMEOUT, POLL, || async {
        let cc = clusters.get("chat").await?;
        let status = cc.status.clone().unwrap_or_default();
        let available = status.conditions.iter().any(|c| c.type_ == "Available" && c.status == "True");
        Ok((available && status.gateways.summary == "2/2" && status.dispatchers.summary == "2/2").then_some(cc))
    })
    .await?;
    println!("  endpoint: {:?}", cc.status.as_ref().and_then(|s| s.endpoint.clone()));
    let repository = cc.spec.image.repository.clone();
    let gateways = wait_for("2 ready gateway pods", TIMEOUT, POLL, || async {
        let ready = ready_now(&pods, "gateway").await?;
        Ok((ready.len() == 2).then_some(ready))
    })
    .await?;

    let reach =
        PortForwards { kubectl: std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()), open: Mutex::default() };
    scenario::chat_through_failover_and_roll(
        &pods,
        &clusters,
        &gateways,
        &reach,
        |_| {},
        move || {
            let image = format!("{repository}:{next_tag}");
            (next_tag, image)
        },
    )
    .await;
    println!("[kind suite] all checks passed");
    Ok(())
}
