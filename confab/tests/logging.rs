//! What libraries log through the `log` crate reaches the process's log:
//! here librdkafka's, through rdkafka, when the broker cannot be reached.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_confab");

#[test]
fn a_gateway_whose_kafka_refuses_connections_logs_librdkafkas_error() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("CONFAB_") || k == "RUST_LOG") {
        cmd.env_remove(k);
    }
    let kafka = closed.to_string();
    let mut child = cmd
        .args([
            "gateway",
            "--kafka",
            &kafka,
            "--cql",
            "127.0.0.1:1",
            "--jwt-secret",
            "test-secret-test-secret-test-secret!",
        ])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--internal-listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The gateway gives up on its own after its metadata request times out;
    // librdkafka reports the refused connection long before.
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("librdkafka") && line.contains(&kafka) && line.contains("refused") => {
                break Some(line);
            }
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let line = found.unwrap_or_else(|| panic!("no librdkafka connection error in the log:\n{}", seen.join("\n")));
    assert!(line.contains("ERROR") || line.contains("WARN"), "{line}");
}
