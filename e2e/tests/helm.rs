//! Helm from `scripts/infra up helm`: lint and template the test chart under
//! e2e/testdata/chart, and install it into the control plane of
//! `scripts/infra up kube`.

use std::process::{Command, Output};
use std::time::Duration;

use confab_e2e::{infra_env, testdata, unique_name, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{Api, DeleteParams};

fn helm(args: &[&str]) -> Output {
    let bin = infra_env("HELM", "helm");
    let out = Command::new(&bin).args(args).output().unwrap_or_else(|e| panic!("running {bin}: {e}"));
    assert!(
        out.status.success(),
        "helm {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn lints_and_templates_the_test_chart() {
    let chart = testdata("chart");
    let chart = chart.to_str().unwrap();

    let lint = String::from_utf8(helm(&["lint", "--strict", chart]).stdout).unwrap();
    assert!(lint.contains("1 chart(s) linted, 0 chart(s) failed"), "{lint}");

    let rendered =
        String::from_utf8(helm(&["template", "smoke", chart, "--namespace", "chat", "--set", "replicas=3"]).stdout)
            .unwrap();
    assert!(rendered.contains("kind: Deployment"), "{rendered}");
    assert!(rendered.contains("kind: ConfigMap"), "{rendered}");
    assert!(rendered.contains("name: smoke-confab-smoke"), "{rendered}");
    assert!(rendered.contains("namespace: chat"), "{rendered}");
    assert!(rendered.contains("replicas: 3"), "{rendered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_the_test_chart_into_the_cluster() {
    infra_env("KUBECONFIG", "kube");
    let chart = testdata("chart");
    let ns = unique_name("e2e-helm");
    let release = "smoke";

    let out = helm(&[
        "install",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        &ns,
        "--create-namespace",
        "--wait",
        "--timeout",
        "120s",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("STATUS: deployed"), "{text}");

    confab_e2e::use_ring_crypto();
    let client = Client::try_default().await.expect("kube client from KUBECONFIG");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = deployments.get("smoke-confab-smoke").await.expect("the chart's Deployment");
    assert_eq!(d.status.and_then(|s| s.ready_replicas), Some(1), "helm --wait returned before the pod was ready");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = cms.get("smoke-confab-smoke").await.expect("the chart's ConfigMap");
    assert_eq!(cm.data.unwrap().get("greeting").map(String::as_str), Some("hello from confab"));

    helm(&["uninstall", release, "--namespace", &ns, "--wait", "--timeout", "60s"]);
    wait_for("the release's Deployment to be gone", Duration::from_secs(60), Duration::from_millis(500), || async {
        Ok(deployments.get_opt("smoke-confab-smoke").await?.is_none().then_some(()))
    })
    .await
    .unwrap();
    Api::<Namespace>::all(client).delete(&ns, &DeleteParams::default()).await.expect("delete namespace");
}
