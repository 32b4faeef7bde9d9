//! The `confab` binary as a user runs it: flags, config errors, SIGTERM and
//! SIGKILL.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_confab");

fn confab(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("NO_COLOR", "1");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("CONFAB_")) {
        cmd.env_remove(k);
    }
    cmd
}

/// A standalone process on port 0; its addresses are read from its log.
struct Process {
    child: Child,
    public: String,
}

impl Process {
    fn start(data: &Path) -> Process {
        let mut child = confab(&[
            "standalone",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data",
            data.to_str().unwrap(),
            "--drain-grace-ms",
            "3000",
            "--rate-burst",
            "1000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let public = loop {
            let line = lines.next().expect("the server logs its address").unwrap();
            if let Some(rest) = line.split("listening on http://").nth(1)
                && !line.contains("admin")
            {
                break rest.trim().to_owned();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Process { child, public }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn alice(p: &Process, register: bool) -> common::Client {
    let http = reqwest::Client::new();
    let creds = json!({"username":"alice","password":"password-123"});
    if register {
        let r = http.post(format!("http://{}/v1/auth/register", p.public)).json(&creds).send().await.unwrap();
        assert_eq!(r.status(), 201);
    }
    let login: serde_json::Value = http
        .post(format!("http://{}/v1/auth/login", p.public))
        .json(&creds)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap();
    common::Client::connect(&format!("ws://{}/v1/ws?token={token}", p.public)).await
}

#[tokio::test]
async fn sigkill_loses_no_acked_message_and_seqs_keep_increasing() {
    let data = tempfile::tempdir().unwrap();
    let p = Process::start(data.path());
    let mut c = alice(&p, true).await;
    c.join("r").await;
    let mut acked = Vec::new();
    for i in 0..50 {
        let r = c.send("r", &format!("m{i}"), &format!("c{i}")).await;
        acked.push((r["seq"].as_u64().unwrap(), format!("m{i}")));
    }
    p.signal("-KILL");
    drop(p);

    let p = Process::start(data.path());
    let mut c = alice(&p, false).await;
    let h = c.ok(json!({"op":"history","room":"r","limit":100})).await;
    let stored = common::seqs_and_texts(&h);
    assert_eq!(stored, acked, "every acked message, with its seq, in order");
    let next = c.send("r", "after", "c-after").await["seq"].as_u64().unwrap();
    assert!(next > acked.last().unwrap().0);
}

#[tokio::test]
async fn sigterm_says_bye_and_exits_zero() {
    let data = tempfile::tempdir().unwrap();
    let mut p = Process::start(data.path());
    let mut c = alice(&p, true).await;
    p.signal("-TERM");
    let (code, frames) = c.closed().await;
    assert_eq!(code, 1012);
    assert_eq!(frames.last().unwrap(), &json!({"ev":"bye","reason":"server_restart"}));
    drop(c);
    let status = tokio::task::spawn_blocking(move || p.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn help_documents_every_mode_and_option() {
    let out = confab(&["--help"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("standalone"));
    let out = confab(&["standalone", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--listen",
        "--admin-listen",
        "--data",
        "--config",
        "--tls-cert",
        "--tls-key",
        "CONFAB_LISTEN",
        "127.0.0.1:8080",
        "127.0.0.1:9090",
        "./confab-data",
    ] {
        assert!(help.contains(needle), "help mentions {needle}:\n{help}");
    }
}

#[test]
fn a_bad_value_exits_non_zero_naming_it() {
    let out = confab(&["standalone", "--listen", "nowhere"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"), "{}", String::from_utf8_lossy(&out.stderr));

    let out = confab(&["standalone"]).env("CONFAB_HEARTBEAT_MS", "soon").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("heartbeat-ms"), "{}", String::from_utf8_lossy(&out.stderr));

    let out = confab(&["standalone", "--max-text-bytes", "1000000"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("max_text_bytes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("confab.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nheartbeat = 5\n").unwrap();
    let out = confab(&["standalone", "--config", file.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("heartbeat") && err.contains("confab.toml"), "{err}");
}

/// Two gateways with one id would have the dispatchers merge their routes
/// and hand one gateway's replies to the other's sessions: the second
/// refuses to start, naming the id. On the real Kafka and Cassandra.
#[tokio::test]
async fn a_gateway_refuses_the_id_of_a_live_gateway() {
    use common::cluster::{env, names, parse};
    use confab::config::{GatewayConfig, MigrateConfig};
    use confab_bus::Bus;
    use confab_protocol::record::Announcement;

    let (kafka, cql) = (env("KAFKA_BOOTSTRAP"), env("CQL_CONTACT_POINTS"));
    let (prefix, keyspace) = names("dupid");
    let backend = ["--kafka", &kafka, "--topic-prefix", &prefix, "--cql", &cql, "--keyspace", &keyspace.name];
    confab::distributed::migrate(&parse::<MigrateConfig>(&backend)).await.expect("migrate");
    let mut args = backend.to_vec();
    args.extend(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--internal-listen", "127.0.0.1:0"]);
    args.extend(["--jwt-secret", common::SECRET, "--server-id", "gw-twin"]);

    // The first gateway is live once it heartbeats: it follows the
    // announcements from before its first heartbeat.
    let bus =
        confab_bus::kafka::KafkaBus::connect(parse::<GatewayConfig>(&args).backend.kafka().unwrap()).await.unwrap();
    let mut announcements = bus.announcements().await.unwrap();
    let first =
        confab::distributed::start_gateway(parse::<GatewayConfig>(&args)).await.expect("the first gateway starts");
    tokio::time::timeout(common::PATIENCE, async {
        while let Some(a) = announcements.recv().await {
            if matches!(&a, Announcement::Heartbeat { gateway, .. } if gateway == "gw-twin") {
                return;
            }
        }
    })
    .await
    .expect("the first gateway heartbeats");

    let mut second = confab(&["gateway"]).args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let exited = tokio::time::timeout(common::PATIENCE, async {
        loop {
            if let Some(status) = second.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let Ok(status) = exited else {
        let _ = second.kill();
        panic!("the second gateway kept running under a live gateway's id");
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("'gw-twin'"), "the refusal names the id: {err}");
    first.stop().await.expect("the first gateway was unaffected and stops cleanly");
}
