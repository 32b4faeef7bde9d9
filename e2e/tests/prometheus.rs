//! Prometheus from `scripts/infra up prometheus` scrapes a target that the
//! test serves itself and registers through the file_sd targets directory.

use std::path::PathBuf;
use std::time::Duration;

use confab_e2e::{infra_env, unique_name, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Removes the targets file when the test ends, pass or fail.
struct TargetsFile(PathBuf);
impl Drop for TargetsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn serve_metrics(listener: TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut got = 0;
            // Read the request head; the body (there is none for GET) is ignored.
            while got < buf.len() {
                match sock.read(&mut buf[got..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
                if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..got]);
            let (status, body) = if head.starts_with("GET /metrics") {
                (
                    "200 OK",
                    "# HELP confab_e2e_smoke_total A counter served by the e2e test.\n\
                     # TYPE confab_e2e_smoke_total counter\n\
                     confab_e2e_smoke_total 42\n",
                )
            } else {
                ("404 Not Found", "not found\n")
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// The single sample value of an instant query, if there is exactly one.
async fn query_value(http: &reqwest::Client, base: &str, q: &str) -> anyhow::Result<Option<String>> {
    let v: serde_json::Value = http
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    anyhow::ensure!(v["status"] == "success", "query {q} failed: {v}");
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    Ok(match result.as_slice() {
        [one] => one["value"][1].as_str().map(str::to_owned),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_a_target_registered_by_file_sd() {
    let base = infra_env("PROMETHEUS_URL", "prometheus");
    let targets_dir = PathBuf::from(infra_env("PROMETHEUS_TARGETS_DIR", "prometheus"));
    let base = base.trim_end_matches('/').to_string();

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_metrics(listener));

    let job = unique_name("e2e-prometheus");
    let targets = serde_json::json!([{"targets": [addr.to_string()], "labels": {"job": job}}]);
    // Write then rename, so Prometheus never reads a half-written file.
    let tmp = targets_dir.join(format!(".{job}.tmp"));
    let file = targets_dir.join(format!("{job}.json"));
    std::fs::write(&tmp, serde_json::to_vec(&targets).unwrap()).expect("write targets file");
    std::fs::rename(&tmp, &file).expect("rename targets file");
    let _cleanup = TargetsFile(file);

    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let up = format!("up{{job=\"{job}\"}}");
    wait_for(&format!("{up} == 1"), Duration::from_secs(60), Duration::from_millis(500), || async {
        Ok(query_value(&http, &base, &up).await?.filter(|v| v == "1"))
    })
    .await
    .unwrap();
    let sample = format!("confab_e2e_smoke_total{{job=\"{job}\"}}");
    let value = wait_for(&sample, Duration::from_secs(30), Duration::from_millis(500), || async {
        query_value(&http, &base, &sample).await
    })
    .await
    .unwrap();
    assert_eq!(value, "42");
}
