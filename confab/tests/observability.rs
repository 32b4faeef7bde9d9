//! Observability against the real thing: a distributed cluster (two gateways,
//! two dispatchers on the infra Kafka and CQL database) scraped by the real
//! Prometheus from `scripts/infra up prometheus`. After some traffic, every
//! process's `/metrics` passes `promtool check metrics`, and every query of
//! the chart's Grafana dashboards and prometheus-adapter rules returns data.
//! (The operator dashboard is checked in e2e/tests/helm_install.rs, where the
//! operator runs.)

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Client;
use common::cluster::{PARTITIONS, env};
use serde_json::{Value, json};

/// The labels the chart's PodMonitor puts on every Confab pod's series.
const CHATCLUSTER: &str = "chat";
/// Grafana's `$__rate_interval` for these checks: covers the whole run.
const RATE_INTERVAL: &str = "2m";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Removes the file_sd targets file when the test ends, pass or fail.
struct TargetsFile(PathBuf);
impl Drop for TargetsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Prometheus {
    base: String,
    http: reqwest::Client,
}

impl Prometheus {
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let r = self.http.get(format!("{}{path}", self.base)).query(params).send().await.expect("Prometheus answers");
        let status = r.status();
        let v: Value = r.json().await.expect("Prometheus answers JSON");
        assert!(status.is_success() && v["status"] == "success", "{path} {params:?}: {status} {v}");
        v["data"].clone()
    }

    /// An instant query's samples: (labels, value).
    async fn query(&self, q: &str) -> Vec<(Value, f64)> {
        let data = self.get("/api/v1/query", &[("query", q)]).await;
        data["result"]
            .as_array()
            .expect("a vector result")
            .iter()
            .map(|s| (s["metric"].clone(), s["value"][1].as_str().unwrap().parse::<f64>().unwrap()))
            .collect()
    }

    /// Waits until `q` has a sample for which `ok` holds.
    async fn await_sample(&self, q: &str, within: Duration, ok: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let samples = self.query(q).await;
            if samples.iter().any(|(_, v)| ok(*v)) {
                return;
            }
            assert!(Instant::now() < deadline, "{q} did not reach the expected value within {within:?}: {samples:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A unique value for the `namespace` label, so this test's series are its own.
fn unique_namespace() -> String {
    use std::hash::{BuildHasher, RandomState};
    format!("o11y-{:012x}", RandomState::new().hash_one(std::time::SystemTime::now()) & 0xffff_ffff_ffff)
}

fn promtool() -> String {
    std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into())
}

/// `promtool check metrics` on one exposition; returns its complaints.
fn promtool_check_metrics(body: &str) -> Option<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/infra up prometheus installs it)");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (!out.status.success() || !said.trim().is_empty()).then_some(said)
}

/// Every `expr` of every panel of a dashboard, with its panel's title.
fn dashboard_queries(path: &Path) -> Vec<(String, String)> {
    let d: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                t["datasource"]["uid"],
                "${datasource}",
                "{}: {} queries another datasource",
                path.display(),
                p["title"]
            );
            out.push((p["title"].as_str().unwrap().to_owned(), t["expr"].as_str().unwrap().to_owned()));
        }
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}: panel {}", path.display(), p["title"]);
        }
    }
    out
}

/// `label_values(metric{...}, label)` variables of a dashboard.
fn dashboard_variables(path: &Path) -> Vec<(String, String)> {
    let d: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter().any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"),
        "{}: no datasource variable",
        path.display()
    );
    vars.iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = v["query"]["query"].as_str().unwrap();
            let inner = q.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')).expect("label_values(..)");
            let (series, label) = inner.rsplit_once(", ").unwrap();
            (series.to_owned(), label.to_owned())
        })
        .collect()
}

async fn drive_traffic(gateways: &[confab::serving::Running]) -> (Vec<Client>, usize) {
    let http = reqwest::Client::new();
    let mut clients = Vec::new();
    for i in 0..4 {
        let base = format!("http://{}", gateways[i % 2].public());
        let creds = json!({"username": format!("obs{i}"), "password": "password-123"});
        assert_eq!(http.post(format!("{base}/v1/auth/register")).json(&creds).send().await.unwrap().status(), 201);
        let login: Value =
            http.post(format!("{base}/v1/auth/login")).json(&creds).send().await.unwrap().json().await.unwrap();
        let token = login["token"].as_str().unwrap();
        clients.push(Client::connect(&format!("ws://{}/v1/ws?token={token}", gateways[i % 2].public())).await);
    }
    // A refused login counts as an auth failure.
    let bad = json!({"username": "obs0", "password": "wrong-password"});
    let base = format!("http://{}", gateways[0].public());
    assert_eq!(http.post(format!("{base}/v1/auth/login")).json(&bad).send().await.unwrap().status(), 401);

    // Rooms on every partition, members on both gateways: fan-out to two.
    let rooms: Vec<String> = (0..PARTITIONS)
        .map(|p| (0..).map(|n| format!("obs-{p}-{n}")).find(|r| confab_bus::partition_for(r, PARTITIONS) == p).unwrap())
        .collect();
    for c in clients.iter_mut() {
        for room in &rooms {
            c.join(room).await;
        }
    }
    let mut sent = 0;
    for round in 0..10 {
        for (i, c) in clients.iter_mut().enumerate() {
            let room = &rooms[(round + i) % rooms.len()];
            c.send(room, &format!("hello {round}"), &format!("c{i}-{round}")).await;
            sent += 1;
        }
    }
    for c in clients.iter_mut() {
        c.ok(json!({"op": "history", "room": rooms[0], "limit": 20})).await;
        // A request the gateway refuses: an error outcome.
        c.error(json!({"op": "history", "room": "obs-nobody-is-here"})).await;
    }
    (clients, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboards_and_adapter_rules_have_data_from_a_real_cluster() {
    let prometheus = Prometheus {
        base: env("PROMETHEUS_URL").trim_end_matches('/').to_owned(),
        http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
    };
    let targets_dir = PathBuf::from(env("PROMETHEUS_TARGETS_DIR"));
    let (gateways, dispatchers, _keyspace) = common::cluster::start(2, 2, &["--rate-burst", "1000"]).await;

    // Scrape targets labelled as the chart's PodMonitor labels Confab's pods.
    let namespace = unique_namespace();
    let mut targets = Vec::new();
    for (i, g) in gateways.iter().enumerate() {
        targets.push((format!("{CHATCLUSTER}-gateway-{i}"), "gateway", g.admin_addr));
    }
    for (i, d) in dispatchers.iter().enumerate() {
        targets.push((format!("{CHATCLUSTER}-dispatcher-{i}"), "dispatcher", d.admin_addr));
    }
    let sd: Vec<Value> = targets
        .iter()
        .map(|(pod, component, addr)| {
            json!({"targets": [addr.to_string()], "labels": {
                "job": "confab-o11y", "namespace": namespace, "chatcluster": CHATCLUSTER,
                "pod": pod, "component": component,
            }})
        })
        .collect();
    let file = targets_dir.join(format!("{namespace}.json"));
    let tmp = targets_dir.join(format!(".{namespace}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&sd).unwrap()).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let _targets = TargetsFile(file);
    let ns = format!("namespace=\"{namespace}\"");
    prometheus.await_sample(&format!("count(up{{{ns}}} == 1)"), Duration::from_secs(60), |v| v == 4.0).await;

    let (_clients, sent) = drive_traffic(&gateways).await;

    // Scraped after the traffic: every send stored, and the dispatchers'
    // lag reports (refreshed every 10 s) cover every partition.
    let stored = format!("sum(confab_dispatcher_records_total{{{ns},command=\"send\",outcome=\"ok\"}})");
    prometheus.await_sample(&stored, Duration::from_secs(60), |v| v >= sent as f64).await;
    let lag_partitions = format!("count(count by (partition) (confab_consumer_lag_records{{{ns}}}))");
    prometheus.await_sample(&lag_partitions, Duration::from_secs(60), |v| v == f64::from(PARTITIONS)).await;
    let connections = format!("sum(confab_gateway_connections{{{ns}}})");
    prometheus.await_sample(&connections, Duration::from_secs(30), |v| v == 4.0).await;
    // `rate()` needs two samples of a series, and some series (sends stored,
    // request errors) first appear with this traffic: the waits above can
    // all be met by the first scrape after it. Wait until every series of
    // this test's targets has been scraped at least twice.
    let names = prometheus.get("/api/v1/label/__name__/values", &[("match[]", &format!("{{{ns}}}"))]).await;
    for name in names.as_array().unwrap() {
        let name = name.as_str().unwrap();
        let scraped_twice = format!("min(count_over_time({name}{{{ns}}}[{RATE_INTERVAL}]))");
        prometheus.await_sample(&scraped_twice, Duration::from_secs(30), |v| v >= 2.0).await;
    }

    // Every process's exposition passes promtool's lint.
    let http = reqwest::Client::new();
    for (pod, _, addr) in &targets {
        let body = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(body.contains("confab_store_operation_duration_seconds"), "{pod}: {body}");
        if let Some(complaints) = promtool_check_metrics(&body) {
            panic!("promtool check metrics on {pod}'s /metrics:\n{complaints}");
        }
    }

    // No label names a user, a room or a session: the test's users are
    // obs0..obs3 and its rooms obs-<partition>-<n>.
    let series = prometheus.get("/api/v1/series", &[("match[]", &format!("{{{ns}}}"))]).await;
    let series = series.as_array().unwrap();
    assert!(series.len() > 100, "{}", series.len());
    for s in series {
        for (label, value) in s.as_object().unwrap() {
            let value = value.as_str().unwrap();
            assert!(!value.contains("obs") && !value.contains("warm"), "label {label}=\"{value}\" in {s}");
        }
    }

    // Every dashboard query (but the operator's) returns data.
    let dashboards = repo().join("charts/confab/dashboards");
    let mut checked = 0;
    let mut empty = Vec::new();
    for name in ["overview", "gateway", "dispatcher", "store"] {
        let path = dashboards.join(format!("{name}.json"));
        for (series, label) in dashboard_variables(&path) {
            let series = series.replace("$namespace", &namespace);
            let data = prometheus.get(&format!("/api/v1/label/{label}/values"), &[("match[]", &series)]).await;
            let want = if label == "namespace" { namespace.as_str() } else { CHATCLUSTER };
            assert!(
                data.as_array().unwrap().iter().any(|v| v == want),
                "{name}: variable {label} from {series}: {data}"
            );
        }
        for (panel, expr) in dashboard_queries(&path) {
            let q = expr
                .replace("$namespace", &namespace)
                .replace("$chatcluster", CHATCLUSTER)
                .replace("$__rate_interval", RATE_INTERVAL);
            let samples = prometheus.query(&q).await;
            if !samples.iter().any(|(_, v)| v.is_finite()) {
                empty.push(format!("{name} / {panel}: {q} -> {samples:?}"));
            }
            checked += 1;
        }
    }
    assert!(empty.is_empty(), "dashboard queries without data:\n{}", empty.join("\n"));
    assert!(checked >= 50, "only {checked} dashboard queries");

    // The prometheus-adapter rules, expanded as the adapter expands them for
    // the operator's autoscalers, return what the autoscalers need.
    let rules: Value = serde_json::from_slice(
        &std::fs::read(repo().join("charts/confab/files/prometheus-adapter-rules.json")).unwrap(),
    )
    .unwrap();
    let pods = format!("{CHATCLUSTER}-gateway-0|{CHATCLUSTER}-gateway-1");
    for (kind, matchers, group_by) in [
        ("rules", format!("{ns},pod=~\"{pods}\""), "pod"),
        ("externalRules", format!("{ns},chatcluster=\"{CHATCLUSTER}\""), ""),
    ] {
        for rule in rules[kind].as_array().unwrap() {
            let series_query = rule["seriesQuery"].as_str().unwrap();
            let found = prometheus.get("/api/v1/series", &[("match[]", series_query)]).await;
            assert!(found.as_array().unwrap().iter().any(|s| s["namespace"] == namespace.as_str()), "{series_query}");
            let metric = series_query.split('{').next().unwrap();
            let q = rule["metricsQuery"]
                .as_str()
                .unwrap()
                .replace("<<.Series>>", metric)
                .replace("<<.LabelMatchers>>", &matchers)
                .replace("<<.GroupBy>>", group_by);
            let samples = prometheus.query(&q).await;
            match kind {
                // One value per gateway pod: its open connections.
                "rules" => {
                    assert_eq!(samples.len(), 2, "{q} -> {samples:?}");
                    assert_eq!(samples.iter().map(|(_, v)| v).sum::<f64>(), 4.0, "{q} -> {samples:?}");
                }
                // One value for the ChatCluster: the lag over all partitions,
                // equal to the recording rule's expression.
                _ => {
                    assert_eq!(samples.len(), 1, "{q} -> {samples:?}");
                    let by_rule = format!(
                        "sum by (namespace, chatcluster) (max by (namespace, chatcluster, partition) \
                         (confab_consumer_lag_records{{{ns}}}))"
                    );
                    // The same value, asked of the same scrape: a scrape that
                    // lands between the two queries is waited out.
                    let mut samples = samples;
                    let mut tries = 0;
                    loop {
                        let expected = prometheus.query(&by_rule).await;
                        assert_eq!(expected.len(), 1, "{by_rule} -> {expected:?}");
                        assert!(samples[0].1.is_finite(), "{q} -> {samples:?}");
                        if samples[0].1 == expected[0].1 {
                            break;
                        }
                        tries += 1;
                        assert!(tries < 5, "{q} -> {samples:?} but {by_rule} -> {expected:?}");
                        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                        samples = prometheus.query(&q).await;
                        assert_eq!(samples.len(), 1, "{q} -> {samples:?}");
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn standalone_metrics_pass_promtool_lint() {
    let server = common::TestServer::start().await;
    let mut c = server.connected("lint").await;
    c.join("lint-room").await;
    c.send("lint-room", "hello", "c1").await;
    let body = server.metrics().await;
    for name in ["confab_gateway_connections", "confab_dispatcher_batch_records", "confab_store_errors_total"] {
        assert!(body.contains(name), "{name} missing from standalone /metrics");
    }
    if let Some(complaints) = promtool_check_metrics(&body) {
        panic!("promtool check metrics on standalone /metrics:\n{complaints}");
    }
}
