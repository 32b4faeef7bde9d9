//! The Helm chart `charts/confab` without a cluster: lint, render over a
//! matrix of values and validate strictly against the Kubernetes schemas,
//! refuse bad values, grant operator/deploy/rbac.yaml's rules, ship the
//! generated CRD and dashboards, pass its Prometheus rule tests.
//! (`helm_install.rs` installs it into the control plane.)

mod chart_support;

use std::path::PathBuf;

use chart_support::{chart, documents, helm, of_kind, repo, run, text};
use confab_e2e::{infra_env, unique_name};

/// The test values files: charts/confab/ci/*.yaml.
fn values_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("charts/confab/ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    files
}

/// The Kubernetes version of the infra control plane, from scripts/versions.env.
fn kube_version() -> String {
    let env = std::fs::read_to_string(repo().join("scripts/versions.env")).unwrap();
    let v = env.lines().find_map(|l| l.strip_prefix("KUBE_VERSION=")).expect("KUBE_VERSION in scripts/versions.env");
    v.trim().trim_start_matches('v').to_owned()
}

#[test]
fn chart_lints_clean_with_every_test_values_file() {
    for file in values_files() {
        let out = helm(&["lint", "--strict", chart(), "-f", file.to_str().unwrap()]);
        assert!(out.contains("1 chart(s) linted, 0 chart(s) failed"), "{}: {out}", file.display());
        assert!(!out.contains("[WARNING]") && !out.contains("[ERROR]"), "{}: {out}", file.display());
    }
}

/// Custom resources kubernetes-validate has no schema for; the install test
/// in helm_install.rs has the API server validate them (and everything else) strictly.
const CUSTOM_KINDS: [&str; 4] = ["ChatCluster", "PodMonitor", "ServiceMonitor", "PrometheusRule"];

#[test]
fn rendered_chart_passes_strict_kubernetes_schema_validation() {
    let dir = repo().join("target/tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let validator = repo().join("charts/tools/kubernetes-validate");
    let mut matrix: Vec<(String, Vec<String>)> = values_files()
        .into_iter()
        .map(|f| (f.display().to_string(), vec!["-f".into(), f.display().to_string()]))
        .collect();
    matrix.push(("service monitor only".into(), vec!["--set".into(), "monitoring.serviceMonitor.enabled=true".into()]));
    matrix.push((
        "dashboards elsewhere, no rbac".into(),
        vec![
            "--set".into(),
            "grafana.dashboards.enabled=true,grafana.dashboards.namespace=grafana,rbac.create=false".into(),
        ],
    ));
    for (name, args) in matrix {
        let mut cmd = vec!["template", "rel", chart(), "--namespace", "confab", "--include-crds"];
        cmd.extend(args.iter().map(String::as_str));
        let rendered = helm(&cmd);
        let file = dir.join(format!("{}.yaml", unique_name("chart-render")));
        std::fs::write(&file, &rendered).unwrap();
        let out = run(validator.to_str().unwrap(), &["--strict", "-k", &kube_version(), file.to_str().unwrap()]);
        let _ = std::fs::remove_file(&file);
        let said = text(&out);
        assert!(out.status.success(), "{name}: kubernetes-validate --strict failed:\n{said}");
        for line in said.lines().filter(|l| l.contains("Couldn't find schema")) {
            assert!(CUSTOM_KINDS.iter().any(|k| line.contains(&format!("kind {k} "))), "{name}: {line}");
        }
        let documents = rendered.matches("\nkind: ").count() + usize::from(rendered.starts_with("kind: "));
        let passed = said.matches(" passed for resource ").count();
        let custom = said.matches("Couldn't find schema").count();
        assert_eq!(passed + custom, documents, "{name}: every document is validated or known custom:\n{said}");
        assert!(passed >= 3, "{name}: {said}");
    }
}

#[test]
fn bad_values_are_refused_naming_the_value() {
    for (set, names) in [
        ("operator.image.pullPolicy=Sometimes", "pullPolicy"),
        ("operator.replica=2", "replica"),
        ("operator.adminPort=70000", "adminPort"),
        ("operator.logFormat=xml", "logFormat"),
        ("monitoring.podMonitor.interval=fast", "interval"),
        ("example.name=a-name-much-longer-than-forty-characters-allowed", "name"),
        ("example.spec.kafka.bootstrapServers=", "bootstrapServers"),
        ("operator.watchNamespace=Not_A_Namespace", "watchNamespace"),
        ("grafana.dashboards.enabled=yes", "enabled"),
    ] {
        let out = run(&infra_env("HELM", "helm"), &["template", "rel", chart(), "--set", set]);
        let said = text(&out);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(said.contains("values don't meet the specifications of the schema"), "--set {set}: {said}");
        assert!(said.contains(names), "--set {set}: the error does not name {names}: {said}");
    }
    let out = run(&infra_env("HELM", "helm"), &["template", "rel", chart(), "--set", "serviceAccount.create=false"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("serviceAccount.name is required"), "{}", text(&out));
}

#[test]
fn chart_grants_the_operator_what_operator_deploy_rbac_grants() {
    let reference = documents(&std::fs::read_to_string(repo().join("operator/deploy/rbac.yaml")).unwrap());
    let want = &of_kind(&reference, "ClusterRole")["rules"];
    let cluster_wide = documents(&helm(&["template", "rel", chart(), "--namespace", "confab"]));
    assert_eq!(&of_kind(&cluster_wide, "ClusterRole")["rules"], want);
    let binding = of_kind(&cluster_wide, "ClusterRoleBinding");
    assert_eq!(binding["subjects"][0]["name"], "rel-confab-operator");
    assert_eq!(binding["subjects"][0]["namespace"], "confab");
    let one_namespace = documents(&helm(&["template", "rel", chart(), "--set", "operator.watchNamespace=team"]));
    let role = of_kind(&one_namespace, "Role");
    assert_eq!(&role["rules"], want);
    assert_eq!(role["metadata"]["namespace"], "team");
    assert!(one_namespace.iter().all(|d| d["kind"] != "ClusterRole"));
    // Leader election: the Lease, in the release namespace only.
    let leases = |docs: &[serde_json::Value]| {
        docs.iter()
            .find(|d| d["kind"] == "Role" && d["rules"][0]["resources"][0] == "leases")
            .cloned()
            .expect("a Role for the leader election Lease")
    };
    let want = leases(&reference)["rules"].clone();
    assert_eq!(want[0]["apiGroups"][0], "coordination.k8s.io");
    for docs in [&cluster_wide, &one_namespace] {
        assert_eq!(leases(docs)["rules"], want);
    }
    assert_eq!(leases(&cluster_wide)["metadata"]["namespace"], "confab");
    let deployment = of_kind(&cluster_wide, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2, "two operator replicas, one leading");
}

#[test]
fn the_chart_ships_the_generated_crd() {
    let generated = std::fs::read(repo().join("crds/confab.dev_chatclusters.yaml")).unwrap();
    let shipped = std::fs::read(repo().join("charts/confab/crds/confab.dev_chatclusters.yaml")).unwrap();
    assert!(
        generated == shipped,
        "charts/confab/crds/ differs from crds/: cp crds/confab.dev_chatclusters.yaml charts/confab/crds/"
    );
}

#[test]
fn dashboards_are_what_the_generator_writes() {
    let out = run("python3", &[repo().join("charts/tools/dashboards.py").to_str().unwrap(), "--check"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn prometheus_rules_pass_promtool_unit_tests() {
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let rules = repo().join("charts/confab/files/prometheus-rules.yaml");
    let out = run(&promtool, &["check", "rules", rules.to_str().unwrap()]);
    assert!(out.status.success(), "promtool check rules:\n{}", text(&out));
    let tests = repo().join("charts/tests/prometheus-rules.test.yaml");
    let out = run(&promtool, &["test", "rules", tests.to_str().unwrap()]);
    assert!(out.status.success() && text(&out).contains("SUCCESS"), "promtool test rules:\n{}", text(&out));
}

#[test]
fn optional_pieces_carry_what_their_consumers_select_on() {
    let all = repo().join("charts/confab/ci/all-values.yaml");
    let rendered = helm(&["template", "rel", chart(), "--namespace", "confab", "-f", all.to_str().unwrap()]);
    // Five dashboards for the Grafana sidecar, in the folder asked for.
    assert_eq!(rendered.matches("grafana_dashboard: \"1\"").count(), 5, "{rendered}");
    assert_eq!(rendered.matches("grafana_folder: \"Chat\"").count(), 5);
    for name in ["overview", "gateway", "dispatcher", "store", "operator"] {
        assert!(rendered.contains(&format!("confab-{name}.json: |-")), "dashboard {name}");
    }
    // The adapter's rules name the metrics the operator's autoscalers ask for.
    assert!(rendered.contains("name: confab-adapter-rules"));
    assert!(rendered.contains("as: confab_gateway_connections"));
    assert!(rendered.contains("as: confab_consumer_lag_records"));
    // The PodMonitor gives series the labels the dashboards and rules select by.
    assert!(rendered.contains("targetLabel: chatcluster") && rendered.contains("targetLabel: component"));
    assert!(rendered.contains("record: confab:consumer_lag_records:sum"));
    // Nothing optional by default.
    let plain = helm(&["template", "rel", chart()]);
    for kind in ["PodMonitor", "ServiceMonitor", "PrometheusRule", "ChatCluster", "ConfigMap"] {
        assert!(!plain.contains(&format!("kind: {kind}\n")), "{kind} rendered by default");
    }
}
