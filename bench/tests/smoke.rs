//! A short run of every scenario against every target, at small scale: the
//! tool works end to end (servers start, connections spread over worker
//! processes, messages are stamped, delivered and counted). These prove the
//! tool, not the speed: the figures themselves are not asserted.
//!
//! Needs the `confab` binary of the same build (`cargo build --workspace`
//! makes it), and `scripts/infra up kafka cql centrifugo` with
//! `source target/infra/env` (KAFKA_BOOTSTRAP, CQL_CONTACT_POINTS, CENTRIFUGO_BIN).

use std::process::Command;

use serde_json::Value;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `scripts/infra up kafka cql centrifugo` and `source target/infra/env`")
    })
}

/// Runs one scenario and returns its JSON result.
fn bench(target: &str, scenario: &[&str]) -> Value {
    let dir = tempfile_dir();
    let json = dir.join(format!("{target}-{}.json", scenario[0]));
    let out = Command::new(env!("CARGO_BIN_EXE_confab-bench"))
        .args(scenario)
        .args(["--target", target, "--json"])
        .arg(&json)
        .env("KAFKA_BOOTSTRAP", env("KAFKA_BOOTSTRAP"))
        .env("CQL_CONTACT_POINTS", env("CQL_CONTACT_POINTS"))
        .env("CENTRIFUGO_BIN", env("CENTRIFUGO_BIN"))
        .output()
        .expect("confab-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{scenario:?} against {target}: {}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains(&format!("{} against {target} — ok", scenario[0])), "{stdout}");
    let result: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("the --json file")).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    result
}

fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "confab-bench-smoke-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn figure(result: &Value, name: &str) -> f64 {
    result["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .and_then(|f| f["value"].as_f64())
        .unwrap_or_else(|| panic!("no figure '{name}' in {result}"))
}

const IDLE: &[&str] =
    &["idle", "--connections", "20,60", "--per-process", "30", "--settle-secs", "0.2", "--idle-secs", "0.5"];
const FANOUT: &[&str] =
    &["fanout", "--members", "20", "--publishers", "2", "--rate", "20", "--duration-secs", "1.5", "--drain-secs", "20"];
const DM: &[&str] = &["dm", "--users", "10", "--rate", "40", "--duration-secs", "1.5", "--drain-secs", "20"];
const BIGROOM: &[&str] = &["bigroom", "--members", "300", "--online", "20", "--reads", "5", "--messages", "2"];

/// Every scenario against one target; what each must show.
fn every_scenario(target: &str) {
    let idle = bench(target, IDLE);
    assert_eq!(figure(&idle, "connections set up"), 60.0);
    assert_eq!(figure(&idle, "connections lost while idle"), 0.0);
    assert!(figure(&idle, "worker processes") >= 2.0);
    assert!(figure(&idle, "gateway RSS at 60 connections") > 0.0);

    let fanout = bench(target, FANOUT);
    assert!(figure(&fanout, "messages acknowledged") > 0.0);
    assert_eq!(figure(&fanout, "deliveries"), 20.0 * figure(&fanout, "messages acknowledged"));
    assert_eq!(figure(&fanout, "lost"), 0.0);
    assert_eq!(figure(&fanout, "duplicated"), 0.0);
    assert!(figure(&fanout, "delivery latency p99") > 0.0);

    let dm = bench(target, DM);
    assert!(figure(&dm, "messages acknowledged") > 0.0);
    assert_eq!(figure(&dm, "deliveries"), figure(&dm, "messages acknowledged"));
    assert_eq!(figure(&dm, "lost"), 0.0);
    assert_eq!(figure(&dm, "duplicated"), 0.0);
    assert!(figure(&dm, "send→ack p99") > 0.0);

    // Rooms people own are Confab's: the peer has no `create` or `room_info`.
    if target != "centrifugo" {
        // bigroom checks every count it reads (`— ok` only when exact).
        let big = bench(target, BIGROOM);
        assert_eq!(figure(&big, "members joined"), 300.0);
        assert!(figure(&big, "room_info p99") > 0.0);
        assert!(figure(&big, "send→last online member p99") > 0.0);
    }
}

#[test]
fn every_scenario_runs_against_standalone_with_nothing_lost() {
    every_scenario("standalone");
}

#[test]
fn every_scenario_runs_against_a_distributed_cluster_on_kafka_and_cql_with_nothing_lost() {
    every_scenario("distributed");
}

#[test]
fn every_scenario_runs_against_the_centrifugo_peer_with_nothing_lost() {
    every_scenario("centrifugo");
}

/// A big room whose members alternate between two gateways, on two
/// dispatchers: every count exact, every message to every online member.
#[test]
fn a_big_room_spread_over_gateways_reaches_every_online_member() {
    let big = bench("distributed", &[BIGROOM, &["--gateways", "2", "--dispatchers", "2"]].concat());
    assert_eq!(figure(&big, "members joined"), 300.0);
    assert_eq!(figure(&big, "gateways the members are spread over"), 2.0);
    assert!(figure(&big, "send→last online member p99") > 0.0);
}

/// The idle scenario over a cluster of several gateways and two
/// dispatchers, then a push to every room: each connection gets its one
/// delivery, and each process is reported on its own.
#[test]
fn idle_connections_spread_over_gateways_each_get_the_push_and_each_process_is_reported() {
    let idle = bench(
        "distributed",
        &[
            "idle",
            "--connections",
            "20,90",
            "--per-process",
            "30",
            "--room-size",
            "10",
            "--settle-secs",
            "0.2",
            "--idle-secs",
            "0.5",
            "--push",
            "--gateways",
            "3",
            "--dispatchers",
            "2",
            // The idle window is whole heartbeats: short ones keep the test short.
            "--server-arg=--heartbeat-ms=1000",
        ],
    );
    assert_eq!(figure(&idle, "connections set up"), 90.0);
    assert_eq!(figure(&idle, "push: messages acknowledged (one per room)"), 9.0);
    assert_eq!(figure(&idle, "push: deliveries"), 90.0);
    assert_eq!(figure(&idle, "push: lost"), 0.0);
    assert_eq!(figure(&idle, "push: duplicated"), 0.0);
    for g in 0..3 {
        assert_eq!(figure(&idle, &format!("gateway gw-{g}: connections")), 30.0);
        assert!(figure(&idle, &format!("gateway gw-{g}: RSS at the end of setup")) > 0.0);
        assert!(figure(&idle, &format!("gateway gw-{g}: CPU while idle, per connection")) >= 0.0);
    }
    for d in 0..2 {
        assert!(figure(&idle, &format!("dispatcher {d}: RSS at the end of setup")) > 0.0);
        assert!(figure(&idle, &format!("dispatcher {d}: CPU for the push")) >= 0.0);
    }
    assert!(figure(&idle, "gateway CPU while idle, per connection") >= 0.0);
}
