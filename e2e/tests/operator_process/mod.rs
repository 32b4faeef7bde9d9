//! The real `confab operator` as a process, and the check every operator
//! test ends with: its log holds no unexpected warning or error (as
//! Strimzi's system tests check their operator's log).
#![allow(dead_code)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The repository's root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The `confab` binary of this build, in the target directory the test runs
/// from. `cargo test -p confab-e2e` alone does not build it, so build it
/// here, with the flags of CI's build step so that after that step this is a
/// no-op (other flags would unify features differently and rebuild it).
pub fn confab_binary() -> PathBuf {
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
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "cargo build:\n{said}");
    profile.join("confab")
}

/// A `confab operator` process (JSON log), killed when dropped. Its log
/// lines are kept for [`OperatorProcess::unexpected`] and echoed to the
/// test's output.
pub struct OperatorProcess {
    pub child: std::process::Child,
    pub admin: String,
    pub name: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl OperatorProcess {
    /// `confab ARGS` (ARGS start with `operator`) with `--log-format=json`
    /// and the admin port on loopback (port 0), and environment `env`.
    pub fn start(name: &str, args: &[String], env: &[(String, String)]) -> Self {
        let mut args: Vec<String> = args
            .iter()
            .filter(|a| !a.starts_with("--admin-listen") && !a.starts_with("--log-format"))
            .cloned()
            .collect();
        args.extend(["--admin-listen=127.0.0.1:0".into(), "--log-format=json".into()]);
        let mut cmd = Command::new(confab_binary());
        cmd.args(&args).stdout(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start confab operator");
        // Its log (JSON lines on stdout) says where the admin port is.
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (kept, who) = (log.clone(), name.to_owned());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(at) = line.find("admin listening on http://") {
                    let rest = &line[at + "admin listening on http://".len()..];
                    let _ = tx.send(rest.split(['"', ' ']).next().unwrap_or_default().to_owned());
                }
                eprintln!("{who}: {line}");
                kept.lock().unwrap().push(line);
            }
        });
        let admin = rx.recv_timeout(Duration::from_secs(60)).expect("the operator logs its admin address");
        Self { child, admin, name: name.to_owned(), log }
    }

    /// Sends `signal` (`KILL`, `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success(), "kill -{signal}");
    }

    /// Waits (bounded) for the process to exit, and returns its status.
    pub fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The log lines at WARN or ERROR that contain none of `expected`.
    pub fn unexpected(&self, expected: &[&str]) -> Vec<String> {
        unexpected(&self.log(), expected)
    }

    /// Fails the test when the log has an unexpected warning or error.
    pub fn assert_clean_log(&self, expected: &[&str]) {
        let bad = self.unexpected(expected);
        assert!(
            bad.is_empty(),
            "{}: unexpected warnings or errors in the operator's log:\n{}",
            self.name,
            bad.join("\n")
        );
    }

    /// The value of a metric (the sum of its samples) on the admin port.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let body = http.get(format!("http://{}/metrics", self.admin)).send().await.ok()?.text().await.ok()?;
        let values: Vec<f64> = body
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON log lines at WARN or ERROR that contain none of `expected`.
pub fn unexpected(log: &[String], expected: &[&str]) -> Vec<String> {
    log.iter()
        .filter(|l| {
            let level = serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["level"].as_str().map(str::to_owned))
                .unwrap_or_default();
            matches!(level.as_str(), "WARN" | "ERROR") && !expected.iter().any(|e| l.contains(e))
        })
        .cloned()
        .collect()
}

#[test]
fn the_log_check_finds_warnings_and_errors_but_not_the_expected() {
    let log = [
        r#"{"level":"INFO","fields":{"message":"leading"}}"#.to_owned(),
        r#"{"level":"WARN","fields":{"message":"reconcile failed"}}"#.to_owned(),
        r#"{"level":"ERROR","fields":{"message":"boom"}}"#.to_owned(),
        "not json".to_owned(),
    ];
    assert_eq!(unexpected(&log, &["reconcile failed"]), vec![log[2].clone()]);
    assert_eq!(unexpected(&log, &[]).len(), 2);
}
