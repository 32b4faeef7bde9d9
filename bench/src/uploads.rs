//! `uploads`: attachments over HTTP (issue 17). Upload and download
//! throughput and per-file latency at each file size (one file at a time),
//! then the gateway's memory while many uploads run at once: uploads are
//! streamed to the backend, so its memory must not grow with file size ×
//! concurrency. On the directory backend or an S3-compatible bucket.
//!
//! Runs in the scenario's own process (no workers): the work is the
//! server's, and a file's bytes are one shared buffer sent by every upload.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde_json::Value;

use crate::client::{self, Dialect};
use crate::report::{Figures, Outcome};
use crate::scenario::cpu;
use crate::target::Target;

const MIB: u64 = 1 << 20;
/// How long one upload or download may take.
const TIMEOUT: Duration = Duration::from_secs(600);
/// How often the gateway's memory is sampled while the uploads run.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// A directory (`--uploads-dir`, under the run's temporary directory).
    Dir,
    /// An S3-compatible bucket (`--s3-*` below; `scripts/infra up s3` and
    /// `source target/infra/env` give them).
    S3,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UploadsArgs {
    /// Where the server keeps the uploads' bytes.
    #[arg(long, value_enum, default_value = "dir")]
    pub backend: Backend,
    /// File sizes timed one at a time, in MiB.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 25])]
    pub sizes_mib: Vec<u64>,
    /// Files uploaded, then downloaded, one after another at each size.
    #[arg(long, default_value_t = 20)]
    pub files: u32,
    /// Uploads run at once (each by its own user) while the gateway's memory is sampled.
    #[arg(long, default_value_t = 100)]
    pub concurrent: u32,
    /// Size of each of those uploads, in MiB.
    #[arg(long, default_value_t = 25)]
    pub concurrent_mib: u64,
    #[arg(long, env = "CONFAB_TEST_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "CONFAB_TEST_S3_BUCKET", value_name = "BUCKET")]
    pub s3_bucket: Option<String>,
    #[arg(long, env = "CONFAB_TEST_S3_REGION", value_name = "REGION", default_value = "us-east-1")]
    pub s3_region: String,
    #[arg(long, env = "CONFAB_TEST_S3_ACCESS_KEY", value_name = "ID", hide_env_values = true)]
    pub s3_access_key: Option<String>,
    #[arg(long, env = "CONFAB_TEST_S3_SECRET_KEY", value_name = "SECRET", hide_env_values = true)]
    pub s3_secret: Option<String>,
}

impl UploadsArgs {
    fn s3(&self) -> Result<confab_blobs::S3Options> {
        let need = |v: &Option<String>, what: &str| {
            v.clone().ok_or_else(|| {
                anyhow!("--backend s3 needs --{what} (or `scripts/infra up s3` and `source target/infra/env`)")
            })
        };
        Ok(confab_blobs::S3Options {
            endpoint: need(&self.s3_endpoint, "s3-endpoint")?,
            bucket: need(&self.s3_bucket, "s3-bucket")?,
            region: self.s3_region.clone(),
            access_key_id: need(&self.s3_access_key, "s3-access-key")?,
            secret_access_key: need(&self.s3_secret, "s3-secret")?,
            path_style: true,
        })
    }

    /// The server flags for the backend; `dir` holds what they need on disk
    /// (the uploads directory, the S3 credentials file).
    pub fn server_args(&self, dir: &std::path::Path) -> Result<Vec<String>> {
        let largest = self.sizes_mib.iter().copied().chain([self.concurrent_mib]).max().unwrap_or(1);
        let mut flags = vec![format!("--max-upload-bytes={}", largest * MIB)];
        match self.backend {
            Backend::Dir => flags.push(format!("--uploads-dir={}", dir.join("uploads").display())),
            Backend::S3 => {
                let o = self.s3()?;
                std::fs::create_dir_all(dir)?;
                let credentials = dir.join("s3-credentials");
                let text = format!(
                    "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                    o.access_key_id, o.secret_access_key
                );
                std::fs::write(&credentials, text)?;
                flags.extend([
                    format!("--s3-endpoint={}", o.endpoint),
                    format!("--s3-bucket={}", o.bucket),
                    format!("--s3-region={}", o.region),
                    format!("--s3-credentials-file={}", credentials.display()),
                ]);
            }
        }
        Ok(flags)
    }
}

/// The scratch directory of a run (uploads, credentials).
pub fn scratch(run: &str) -> PathBuf {
    std::env::temp_dir().join(format!("confab-bench-uploads-{run}"))
}

/// A file of `size` bytes the server takes for a PDF (allowed by default,
/// and not an image, which would be read whole to strip and thumbnail):
/// the magic, then bytes that do not compress.
fn file(size: u64) -> Bytes {
    let mut out = Vec::with_capacity(size as usize);
    out.extend_from_slice(b"%PDF-1.7\n");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while (out.len() as u64) < size {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size as usize);
    Bytes::from(out)
}

fn kib_line(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// (VmRSS, VmHWM) of the processes, bytes.
fn memory(pids: &[u32]) -> (u64, u64) {
    let mut out = (0, 0);
    for pid in pids {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            out.0 += kib_line(&s, "VmRSS:").unwrap_or(0) * 1024;
            out.1 += kib_line(&s, "VmHWM:").unwrap_or(0) * 1024;
        }
    }
    out
}

struct Http {
    client: reqwest::Client,
    base: String,
    room: String,
}

impl Http {
    /// Uploads `body`; the upload's id.
    async fn upload(&self, token: &str, body: Bytes) -> Result<String> {
        let url = format!("{}/v1/uploads?room={}&filename=bench.pdf", self.base, self.room);
        let r = self
            .client
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/pdf")
            .body(body)
            .timeout(TIMEOUT)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if status.as_u16() != 201 {
            bail!("upload: {status} {text}");
        }
        let v: Value = serde_json::from_str(&text)?;
        v["id"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("upload: no id in {text}"))
    }

    /// Downloads upload `id`, counting its bytes as they come.
    async fn download(&self, token: &str, id: &str) -> Result<u64> {
        let mut r = self
            .client
            .get(format!("{}/v1/uploads/{id}", self.base))
            .bearer_auth(token)
            .timeout(TIMEOUT)
            .send()
            .await?;
        if r.status().as_u16() != 200 {
            bail!("download {id}: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        let mut n = 0u64;
        while let Some(chunk) = r.chunk().await? {
            n += chunk.len() as u64;
        }
        Ok(n)
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() { f64::NAN } else { h.value_at_quantile(q) as f64 / 1000.0 }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn user(run: &str, i: u32) -> String {
    format!("{run}u{i}")
}

pub async fn uploads(target: &mut Target, run: &str, a: &UploadsArgs) -> Result<Outcome> {
    if target.dialect != Dialect::Confab {
        bail!("uploads measures Confab's attachments: --target standalone or distributed");
    }
    if a.files == 0 || a.concurrent == 0 || a.sizes_mib.contains(&0) || a.concurrent_mib == 0 {
        bail!("uploads needs positive --files, --concurrent, --sizes-mib and --concurrent-mib");
    }
    let base = target.http.clone().context("no HTTP API")?;
    let room = format!("{run}-files");
    let http = Http { client: reqwest::Client::builder().pool_max_idle_per_host(0).build()?, base, room };
    let tokens: Vec<String> = (0..a.concurrent).map(|i| client::token(&target.secret, &user(run, i))).collect();

    // Every user joins the room (membership outlasts the connection).
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    for (i, token) in tokens.iter().enumerate() {
        let url = &target.urls[i % target.urls.len()];
        let (mut ws, _) = client::setup(Dialect::Confab, url, source, token, std::slice::from_ref(&http.room))
            .await
            .with_context(|| format!("{} joining {}", user(run, i as u32), http.room))?;
        let _ = ws.close(None).await;
    }

    let mut f = Figures::default();
    let mut errors = Vec::new();
    let pids = target.gateway_pids.clone();
    let (rss_start, _) = memory(&pids);
    f.add("gateway RSS at the start", mb(rss_start), "MB");

    // One file at a time: upload, then download, at each size.
    let mut ids = Vec::new();
    for &size_mib in &a.sizes_mib {
        let body = file(size_mib * MIB);
        let size = body.len() as u64;
        let (mut up, mut down) = (Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?);
        let (mut up_total, mut down_total) = (Duration::ZERO, Duration::ZERO);
        for i in 0..a.files {
            let token = &tokens[i as usize % tokens.len()];
            let started = Instant::now();
            let id = match http.upload(token, body.clone()).await {
                Ok(id) => id,
                Err(e) => {
                    errors.push(format!("{size_mib} MiB upload: {e:#}"));
                    continue;
                }
            };
            let took = started.elapsed();
            up.record(took.as_micros() as u64)?;
            up_total += took;
            let started = Instant::now();
            match http.download(token, &id).await {
                Ok(n) if n == size => {
                    let took = started.elapsed();
                    down.record(took.as_micros() as u64)?;
                    down_total += took;
                }
                Ok(n) => errors.push(format!("{size_mib} MiB download of {id}: {n} bytes, not {size}")),
                Err(e) => errors.push(format!("{size_mib} MiB download: {e:#}")),
            }
            ids.push(id);
        }
        let rate = |h: &Histogram<u64>, total: Duration| {
            if h.is_empty() { f64::NAN } else { mb(size * h.len()) / total.as_secs_f64() }
        };
        f.add(&format!("{size_mib} MiB upload"), rate(&up, up_total), "MB/s");
        f.add(&format!("{size_mib} MiB upload p50"), ms(&up, 0.5), "ms");
        f.add(&format!("{size_mib} MiB upload p99"), ms(&up, 0.99), "ms");
        f.add(&format!("{size_mib} MiB download"), rate(&down, down_total), "MB/s");
        f.add(&format!("{size_mib} MiB download p50"), ms(&down, 0.5), "ms");
        f.add(&format!("{size_mib} MiB download p99"), ms(&down, 0.99), "ms");
    }

    // Many at once, one per user, while the gateway's memory is sampled.
    let body = file(a.concurrent_mib * MIB);
    let (rss_before, _) = memory(&pids);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (pids, sampling) = (pids.clone(), sampling.clone());
        async move {
            let mut peak = 0u64;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(memory(&pids).0);
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            peak.max(memory(&pids).0)
        }
    });
    let cpu_before = cpu(&target.all_pids);
    let started = Instant::now();
    let results = futures_util::future::join_all(tokens.iter().map(|t| http.upload(t, body.clone()))).await;
    let wall = started.elapsed();
    let cpu_used = cpu(&target.all_pids) - cpu_before;
    sampling.store(false, Ordering::Relaxed);
    let peak = sampler.await?;
    let (_, hwm) = memory(&pids);
    let mut done = 0u64;
    for r in results {
        match r {
            Ok(id) => {
                done += 1;
                ids.push(id);
            }
            Err(e) => errors.push(format!("concurrent upload: {e:#}")),
        }
    }
    let c = a.concurrent_mib;
    f.add(&format!("{c} MiB uploads at once"), done as f64, "");
    f.add(&format!("{c} MiB uploads at once: wall time"), wall.as_secs_f64(), "s");
    f.add(&format!("{c} MiB uploads at once: aggregate"), mb(done * body.len() as u64) / wall.as_secs_f64(), "MB/s");
    f.add("server CPU during them", 100.0 * cpu_used / wall.as_secs_f64(), "% of a core");
    f.add("gateway RSS before them", mb(rss_before), "MB");
    f.add("gateway RSS peak during them", mb(peak), "MB");
    f.add("gateway RSS growth", mb(peak.saturating_sub(rss_before)), "MB");
    f.add("gateway VmHWM after them", mb(hwm), "MB");
    f.add("bytes in flight (uploads × size)", mb(done * body.len() as u64), "MB");

    // Leave nothing in a shared bucket (a directory goes with the run).
    if a.backend == Backend::S3 {
        use confab_blobs::Blobs;
        let blobs = confab_blobs::S3Blobs::connect(a.s3()?).await.map_err(|e| anyhow!("{e}"))?;
        for id in &ids {
            if let Err(e) = blobs.delete(&format!("u/{id}")).await {
                errors.push(format!("deleting {id} from the bucket: {e}"));
                break;
            }
        }
    }
    let ok = errors.is_empty() && done == u64::from(a.concurrent);
    Ok(Outcome { figures: f, errors, ok })
}
