//! Helpers shared by the smoke tests in `tests/`.
//!
//! The tests talk to real servers started by `scripts/infra up ...`, which
//! writes their addresses to `target/infra/env` (`source` it before `cargo
//! test`). A missing variable is a test failure with a message that says how
//! to start the server, never a skip.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Makes ring rustls's process-wide crypto provider, before a Kubernetes
/// client is built. Built with the rest of the workspace, rustls has two
/// providers compiled in (the CQL driver's TLS brings aws-lc-rs beside
/// kube's ring) and then picks none by itself: kube's client would panic.
pub fn use_ring_crypto() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

/// The value of an environment variable that `scripts/infra up` exports.
/// Panics (fails the test) with instructions when it is missing or empty.
#[track_caller]
pub fn infra_env(name: &str, service: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{name} is not set: this smoke test needs the real {service}. Run \
             `scripts/infra up {service}` and then `source target/infra/env` \
             (or `eval \"$(scripts/infra env)\"`) before `cargo test -p confab-e2e`."
        ),
    }
}

/// Polls `check` every `every` until it returns `Ok(Some(value))`, and fails
/// with the last error/state after `timeout`. `Ok(None)` means "not yet".
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, every: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "condition not met yet".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(every).await;
    }
}

/// A name that differs between runs, so reruns against long-lived servers
/// never collide with leftovers: `prefix-<pid>-<millis>`.
pub fn unique_name(prefix: &str) -> String {
    let millis =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    format!("{prefix}-{}-{}", std::process::id(), millis % 100_000_000)
}

/// `e2e/testdata/<rel>`.
pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(rel)
}
