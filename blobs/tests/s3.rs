//! `S3Blobs` against a real S3-compatible server: SeaweedFS from
//! `scripts/infra up s3` (then `source target/infra/env`). Without
//! CONFAB_TEST_S3_* the tests fail, as do the other suites without their
//! servers: they never pass by skipping.
//!
//! `cargo test -p confab-blobs --all-features --test s3`; the measurements:
//! `cargo test --release -p confab-blobs --all-features --test s3 -- --ignored --nocapture`.

use std::io;
use std::time::Instant;

use bytes::Bytes;
use confab_blobs::contract::{body_of, collect};
use confab_blobs::s3::PART;
use confab_blobs::{BlobError, Blobs, ByteStream, DirBlobs, S3Blobs, S3Options};
use futures_util::StreamExt;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{HttpRequest, HttpRequestBody};

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run `scripts/infra up s3` and `source target/infra/env`"))
}

fn options() -> S3Options {
    S3Options {
        endpoint: env("CONFAB_TEST_S3_ENDPOINT"),
        bucket: env("CONFAB_TEST_S3_BUCKET"),
        region: std::env::var("CONFAB_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        access_key_id: env("CONFAB_TEST_S3_ACCESS_KEY"),
        secret_access_key: env("CONFAB_TEST_S3_SECRET_KEY"),
        path_style: true,
    }
}

async fn connect() -> S3Blobs {
    let o = options();
    S3Blobs::connect(o.clone())
        .await
        .unwrap_or_else(|e| panic!("S3 server of CONFAB_TEST_S3_ENDPOINT ({}) not usable: {e}", o.endpoint))
}

/// A unique key prefix per test and run.
fn prefix(test: &str) -> String {
    format!("test-{test}-{}-{:08x}", std::process::id(), rand_u32())
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(7)
}

/// The multipart uploads in progress under `prefix`, asked of the server
/// itself (ListMultipartUploads, `GET /BUCKET?uploads&prefix=`), signed
/// with the test identity.
async fn pending_uploads(prefix: &str) -> Vec<String> {
    let o = options();
    let url = format!("{}/{}?uploads&prefix={prefix}", o.endpoint, o.bucket);
    let credential = AwsCredential { key_id: o.access_key_id, secret_key: o.secret_access_key, token: None };
    let mut request = HttpRequest::new(HttpRequestBody::empty());
    *request.uri_mut() = url.parse().unwrap();
    AwsAuthorizer::new(&credential, "s3", &o.region).authorize(&mut request, None);
    let mut get = reqwest::Client::new().get(&url);
    for (name, value) in request.headers() {
        get = get.header(name, value);
    }
    let response = get.send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(status.is_success(), "ListMultipartUploads: {status}: {body}");
    // <Upload><Key>...</Key><UploadId>...</UploadId>...</Upload>
    body.split("<Key>").skip(1).filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned())).collect()
}

#[tokio::test]
async fn s3_backend_passes_the_contract() {
    confab_blobs::contract::run(&connect().await).await;
}

#[tokio::test]
async fn large_bodies_go_up_in_parts_and_come_back_whole() {
    let blobs = connect().await;
    let p = prefix("parts");
    let key = format!("{p}/large");
    // Three parts: two of PART bytes, then the rest.
    let (bytes, body) = body_of(5, 2 * PART / 65_536 + 3, 65_536);
    assert_eq!(blobs.put(&key, body, 50 << 20).await.unwrap(), bytes.len() as u64);
    assert_eq!(blobs.size(&key).await.unwrap(), bytes.len() as u64);
    let got = collect(blobs.get(&key, None).await.unwrap().body).await.unwrap();
    assert!(got == bytes, "the body came back different ({} bytes of {})", got.len(), bytes.len());
    // A range across the parts' boundary.
    let range = PART as u64 - 10..PART as u64 + 10;
    let part = collect(blobs.get(&key, Some(range.clone())).await.unwrap().body).await.unwrap();
    assert_eq!(part, &bytes[range.start as usize..range.end as usize]);
    assert!(pending_uploads(&p).await.is_empty(), "a completed upload is no longer pending");
    blobs.delete(&key).await.unwrap();
}

#[tokio::test]
async fn an_upload_over_the_limit_or_cut_midway_leaves_no_object_and_no_pending_upload() {
    let blobs = connect().await;
    let p = prefix("refused");

    // Two full parts are sent before the limit is passed in the third.
    let limit = 2 * PART as u64 + 1000;
    let (_, body) = body_of(9, 3 * PART / 65_536, 65_536);
    let refused = blobs.put(&format!("{p}/big"), body, limit).await;
    assert!(matches!(refused, Err(BlobError::TooLarge { limit: l }) if l == limit), "{:?}", refused.err());
    assert!(matches!(blobs.size(&format!("{p}/big")).await, Err(BlobError::NotFound)), "a refused blob was kept");

    // A body that fails after a part was sent.
    let sent = body_of(3, PART / 65_536 + 1, 65_536).1;
    let cut: ByteStream = Box::pin(sent.chain(futures_util::stream::iter(vec![Err(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "client went away",
    ))])));
    assert!(blobs.put(&format!("{p}/cut"), cut, 50 << 20).await.is_err());
    assert!(matches!(blobs.size(&format!("{p}/cut")).await, Err(BlobError::NotFound)), "a cut blob was kept");

    let pending = pending_uploads(&p).await;
    assert!(pending.is_empty(), "multipart uploads left behind: {pending:?}");

    // The check above sees uploads in progress: one begun and not finished
    // is listed (so an empty list means the aborts happened).
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(options().endpoint)
        .with_bucket_name(options().bucket)
        .with_region(options().region)
        .with_access_key_id(options().access_key_id)
        .with_secret_access_key(options().secret_access_key)
        .with_allow_http(true)
        .build()
        .unwrap();
    let path = object_store::path::Path::from(format!("{p}/left"));
    let mut upload = object_store::ObjectStore::put_multipart(&store, &path).await.unwrap();
    assert_eq!(pending_uploads(&p).await, vec![format!("{p}/left")], "the listing sees a pending upload");
    upload.abort().await.unwrap();
    assert!(pending_uploads(&p).await.is_empty());
}

/// Polls `check` every 100 ms until it holds, for at most 30 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_upload_whose_client_goes_away_is_aborted() {
    let blobs = std::sync::Arc::new(connect().await);
    let p = prefix("dropped");
    let key = format!("{p}/gone");
    // A part's worth of bytes, then nothing more, ever: a client that
    // stopped sending. Its put is dropped, as a server drops the handler
    // of a connection that closed.
    let stalled: ByteStream = Box::pin(body_of(4, PART / 65_536, 65_536).1.chain(futures_util::stream::pending()));
    let put = tokio::spawn({
        let (blobs, key) = (blobs.clone(), key.clone());
        async move { blobs.put(&key, stalled, 50 << 20).await }
    });
    eventually("the upload is begun", || async { pending_uploads(&p).await == vec![key.clone()] }).await;
    put.abort();
    assert!(put.await.unwrap_err().is_cancelled());
    eventually("the dropped upload is aborted", || async { pending_uploads(&p).await.is_empty() }).await;
    assert!(matches!(blobs.size(&key).await, Err(BlobError::NotFound)));
}

#[tokio::test]
async fn a_wrong_secret_or_a_missing_bucket_is_a_clear_error_at_connect() {
    let e = S3Blobs::connect(S3Options { secret_access_key: "not-the-secret".into(), ..options() })
        .await
        .expect_err("a wrong secret must not connect")
        .to_string();
    assert!(e.contains("access denied") && e.contains("secret access key"), "{e}");
    let e = S3Blobs::connect(S3Options { access_key_id: "nobody".into(), ..options() })
        .await
        .expect_err("an unknown key must not connect")
        .to_string();
    assert!(e.contains("access denied"), "{e}");
    let e = S3Blobs::connect(S3Options { bucket: "no-such-bucket-confab".into(), ..options() })
        .await
        .expect_err("a missing bucket must not connect")
        .to_string();
    assert!(e.contains("no-such-bucket-confab") && e.contains("does not exist"), "{e}");
    // The right ones still work.
    connect().await;
}

/// A body of `len` bytes in 64 KiB chunks made as it is read, each its
/// own allocation as from a socket, so that the measurement sees what the
/// backend holds, not the test's bodies.
fn lazy_body(len: usize) -> ByteStream {
    let n = len / 65_536;
    Box::pin(futures_util::stream::iter((0..n).map(|i| Ok(Bytes::from(vec![i as u8; 65_536])))))
}

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

async fn throughput(name: &str, blobs: &dyn Blobs, size: usize, rounds: usize) {
    let key = format!("{}/{name}-{size}", prefix("bench"));
    let started = Instant::now();
    for _ in 0..rounds {
        blobs.put(&key, lazy_body(size), u64::MAX).await.unwrap();
    }
    let put = started.elapsed();
    let started = Instant::now();
    for _ in 0..rounds {
        let mut body = blobs.get(&key, None).await.unwrap().body;
        let mut n = 0;
        while let Some(chunk) = body.next().await {
            n += chunk.unwrap().len();
        }
        assert_eq!(n, size);
    }
    let get = started.elapsed();
    let mib = (size * rounds) as f64 / (1 << 20) as f64;
    println!(
        "{name:>4} {:>2} MiB x {rounds}: put {:7.1} MiB/s, get {:7.1} MiB/s",
        size >> 20,
        mib / put.as_secs_f64(),
        mib / get.as_secs_f64()
    );
    blobs.delete(&key).await.unwrap();
}

/// Put and get throughput of S3Blobs (on the local SeaweedFS) and
/// DirBlobs, after the peak RSS of this process while 100 puts of 1 MiB
/// run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture (in --release)"]
async fn measure_throughput_and_memory() {
    let s3 = connect().await;
    let dir = tempfile::tempdir().unwrap();
    let local = DirBlobs::open(dir.path()).await.unwrap();
    let before = peak_rss_mib();
    s3.put(&format!("{}/one", prefix("single")), lazy_body(25 << 20), 30 << 20).await.unwrap();
    println!("one put of 25 MiB to S3: peak RSS {before} MiB before, {} MiB after", peak_rss_mib());
    let before = peak_rss_mib();
    let p = prefix("concurrent");
    let started = Instant::now();
    let puts = (0..100).map(|i| {
        let (s3, key) = (&s3, format!("{p}/{i}"));
        async move { s3.put(&key, lazy_body(1 << 20), 2 << 20).await.unwrap() }
    });
    futures_util::future::join_all(puts).await;
    println!(
        "100 concurrent puts of 1 MiB to S3: {:.2} s; peak RSS {} MiB before, {} MiB after",
        started.elapsed().as_secs_f64(),
        before,
        peak_rss_mib()
    );
    for i in 0..100 {
        s3.delete(&format!("{p}/{i}")).await.unwrap();
    }
    for (size, rounds) in [(1 << 20, 20), (25 << 20, 4)] {
        throughput("s3", &s3, size, rounds).await;
        throughput("dir", &local, size, rounds).await;
    }
}
