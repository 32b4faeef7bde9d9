//! The distributed backend: one object per blob in a bucket of
//! S3-compatible object storage (AWS S3, MinIO, SeaweedFS, Ceph RGW...),
//! through the `object_store` crate.
//!
//! A put is streamed: bodies up to [`PART`] bytes are sent as one `PUT`
//! once complete; larger ones as a multipart upload of [`PART`]-byte parts,
//! one part in memory at a time, sent before the next is read. The parts
//! buffered at once by all puts of a backend are bounded by
//! [`BUFFER_BUDGET`] bytes: past [`UNRESERVED`] bytes a part waits for
//! room in it (and its client for the server to read on), so a gateway's
//! memory does not grow with uploads × part size. A body that passes the limit or
//! fails midway aborts the multipart upload, so the store keeps neither the
//! object nor its parts (a store only shows an object once its upload is
//! complete, so a reader never sees a partial blob).

use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, GetOptions, GetRange, MultipartUpload, ObjectStore, PutPayload, RetryConfig};

use crate::{Blob, BlobError, Blobs, ByteStream, valid_key};

/// Size of a multipart upload's parts, and the largest body sent as one
/// `PUT`. S3 requires parts of at least 5 MiB (except the last).
pub const PART: usize = 5 << 20;

/// Bytes of parts all puts of one backend may buffer at once (past the
/// first [`UNRESERVED`] bytes of each): 24 parts.
pub const BUFFER_BUDGET: usize = 24 * PART;

/// Bytes a put buffers before it needs room in [`BUFFER_BUDGET`]: most
/// attachments (a photo, a document) never wait for it.
pub const UNRESERVED: usize = 1 << 20;

/// Where and how to reach the bucket.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Options {
    /// Base URL of the S3 API, e.g. `https://s3.eu-west-1.amazonaws.com` or
    /// `http://127.0.0.1:8333`. `http://` is allowed (a store on loopback or
    /// in the cluster network).
    pub endpoint: String,
    /// The bucket; it must exist.
    pub bucket: String,
    /// The region requests are signed for (`us-east-1` for most
    /// S3-compatible servers).
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style URLs (`ENDPOINT/BUCKET/KEY`, what MinIO and SeaweedFS
    /// expect) rather than virtual-hosted ones (`BUCKET.ENDPOINT/KEY`).
    pub path_style: bool,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .finish()
    }
}

/// Blobs as objects in an S3-compatible bucket.
pub struct S3Blobs {
    store: Arc<dyn ObjectStore>,
    part: usize,
    /// Room for parts being buffered ([`BUFFER_BUDGET`]), in bytes.
    budget: Arc<tokio::sync::Semaphore>,
}

impl fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Blobs({})", self.store)
    }
}

impl S3Blobs {
    /// Builds the client and checks that the bucket answers with these
    /// credentials: a wrong endpoint, a missing bucket or a wrong secret is
    /// an error here, not at the first upload.
    pub async fn connect(options: S3Options) -> Result<S3Blobs, BlobError> {
        let store = build(&options)?;
        let blobs = S3Blobs::over(Arc::new(store), PART, BUFFER_BUDGET);
        // Listing a prefix needs the bucket and valid credentials, and
        // answers quickly whatever the bucket holds.
        let probe = Path::from("confab-connect-check");
        if let Err(e) = blobs.store.list_with_delimiter(Some(&probe)).await {
            let at = format!("S3 bucket {:?} at {}", options.bucket, options.endpoint);
            let detail = explain(&e);
            // A listing's failures come back as generic errors: tell them
            // apart by S3's error codes.
            let says = |codes: &[&str]| codes.iter().any(|c| detail.contains(c));
            let denied =
                matches!(e, object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. })
                    || says(&["SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403 Forbidden"]);
            let missing = matches!(e, object_store::Error::NotFound { .. }) || says(&["NoSuchBucket"]);
            return Err(BlobError::Backend(if missing {
                format!("{at}: the bucket does not exist ({detail})")
            } else if denied {
                format!("{at}: access denied: check the access key id and the secret access key ({detail})")
            } else {
                format!("{at} is not usable: {detail}")
            }));
        }
        Ok(blobs)
    }

    /// A backend over any object store (tests use an in-memory one), with
    /// `part`-byte multipart parts and `budget` bytes of them buffered at once.
    fn over(store: Arc<dyn ObjectStore>, part: usize, budget: usize) -> S3Blobs {
        S3Blobs { store, part, budget: Arc::new(tokio::sync::Semaphore::new(budget.max(part))) }
    }

    fn path(key: &str) -> Result<Path, BlobError> {
        if !valid_key(key) {
            return Err(BlobError::BadKey);
        }
        Path::parse(key).map_err(|_| BlobError::BadKey)
    }
}

fn build(o: &S3Options) -> Result<object_store::aws::AmazonS3, BlobError> {
    let invalid = |what: &str| BlobError::Backend(format!("S3 options: {what}"));
    if !(o.endpoint.starts_with("http://") || o.endpoint.starts_with("https://")) {
        return Err(invalid("the endpoint must be an http:// or https:// URL"));
    }
    if o.bucket.is_empty() {
        return Err(invalid("the bucket is empty"));
    }
    if o.access_key_id.is_empty() || o.secret_access_key.is_empty() {
        return Err(invalid("the access key id or the secret access key is empty"));
    }
    let client = ClientOptions::new()
        .with_allow_http(o.endpoint.starts_with("http://"))
        .with_connect_timeout(Duration::from_secs(5))
        // A whole response, body included: a download that takes longer
        // is resumed from where it stopped by object_store.
        .with_timeout(Duration::from_secs(120));
    let retry = RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(30), ..RetryConfig::default() };
    AmazonS3Builder::new()
        .with_endpoint(o.endpoint.trim_end_matches('/'))
        .with_bucket_name(&o.bucket)
        .with_region(if o.region.is_empty() { "us-east-1" } else { &o.region })
        .with_access_key_id(&o.access_key_id)
        .with_secret_access_key(&o.secret_access_key)
        .with_virtual_hosted_style_request(!o.path_style)
        .with_client_options(client)
        .with_retry(retry)
        .build()
        .map_err(|e| invalid(&e.to_string()))
}

/// An error with its causes (object_store's Display stops at the first).
fn explain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s = s.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = std::error::Error::source(source.unwrap());
    }
    out
}

fn backend(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound,
        e => BlobError::Backend(format!("s3: {}", explain(&e))),
    }
}

/// A multipart upload in progress. Dropped unfinished (after an error, or with the put's future: the
/// client went away), it is aborted in the background, so the store keeps
/// no parts of it.
struct Multipart {
    upload: Option<Box<dyn MultipartUpload>>,
    /// The part being sent, in a task of its own. A part's request, once
    /// begun, goes on when the put is dropped (the HTTP connection sends the
    /// body it holds), and a part that lands after the abort is kept by some
    /// stores (SeaweedFS lists it as a pending upload that no abort removes):
    /// so the abort of a dropped upload waits for this task first.
    sending: Option<tokio::task::JoinHandle<object_store::Result<()>>>,
    key: String,
}

impl Multipart {
    fn new(upload: Box<dyn MultipartUpload>, key: String) -> Multipart {
        Multipart { upload: Some(upload), sending: None, key }
    }

    /// Sends one part and waits for it: object_store's part futures do
    /// nothing until polled, so holding one back would only hold its bytes.
    async fn send(&mut self, part: PutPayload) -> Result<(), BlobError> {
        let upload = self.upload.as_mut().expect("an unfinished upload");
        let sending = self.sending.insert(tokio::spawn(upload.put_part(part)));
        let sent = sending.await;
        self.sending = None;
        match sent {
            Ok(sent) => sent.map_err(backend),
            Err(e) => Err(BlobError::Backend(format!("s3: sending a part: {e}"))),
        }
    }

    async fn complete(&mut self) -> Result<(), BlobError> {
        self.upload.as_mut().expect("an unfinished upload").complete().await.map_err(backend)?;
        self.upload = None;
        Ok(())
    }

    async fn abort(mut self) {
        abort(self.upload.take(), std::mem::take(&mut self.key)).await;
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        let Some(upload) = self.upload.take() else { return };
        let (sending, key) = (self.sending.take(), std::mem::take(&mut self.key));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // The part in flight lands (or fails) first; see `sending`.
                if let Some(sending) = sending {
                    let _ = sending.await;
                }
                abort(Some(upload), key).await;
            });
        }
    }
}

/// Aborts `upload`. (A part whose sending was cut short with its put's
/// future is not in the store's list of parts; an abort removes the rest.)
async fn abort(upload: Option<Box<dyn MultipartUpload>>, key: String) {
    let Some(mut upload) = upload else { return };
    if let Err(e) = upload.abort().await {
        tracing::warn!(key, error = %explain(&e), "aborting a multipart upload failed");
    }
}

impl S3Blobs {
    /// Reads `body` into parts, sending each as it fills. On success the
    /// object is in place; on error a multipart upload begun is left to the
    /// caller (in `upload`) to abort.
    async fn stream_in(
        &self,
        path: &Path,
        body: &mut ByteStream,
        limit: u64,
        upload: &mut Option<Multipart>,
    ) -> Result<u64, BlobError> {
        let mut size = 0u64;
        let mut buffered: Vec<Bytes> = Vec::new();
        let mut buffered_len = 0usize;
        // Room in the budget for the part being buffered, once it passes UNRESERVED.
        let mut room: Option<tokio::sync::OwnedSemaphorePermit> = None;
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|e| BlobError::Backend(format!("reading the body: {e}")))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(BlobError::TooLarge { limit });
            }
            // Cut the chunk at part boundaries so every part but the last
            // is exactly `part` bytes.
            while !chunk.is_empty() {
                let take = chunk.len().min(self.part - buffered_len);
                buffered.push(chunk.split_to(take));
                buffered_len += take;
                if room.is_none() && buffered_len >= UNRESERVED.min(self.part) {
                    // A whole part's room at once: a put never waits
                    // while holding some, so puts cannot starve each other.
                    let wanted = u32::try_from(self.part).unwrap_or(u32::MAX);
                    let permit = self.budget.clone().acquire_many_owned(wanted).await;
                    room = Some(permit.map_err(|_| BlobError::Backend("s3: the backend is closed".into()))?);
                }
                if buffered_len == self.part {
                    if upload.is_none() {
                        let started = self.store.put_multipart(path).await.map_err(backend)?;
                        *upload = Some(Multipart::new(started, path.to_string()));
                    }
                    let part = PutPayload::from_iter(std::mem::take(&mut buffered));
                    buffered_len = 0;
                    upload.as_mut().expect("started above").send(part).await?;
                    room = None;
                }
            }
        }
        let Some(multipart) = upload.as_mut() else {
            self.store.put(path, PutPayload::from_iter(buffered)).await.map_err(backend)?;
            return Ok(size);
        };
        // On an error from here on, `upload` still holds the multipart
        // upload: the caller aborts it.
        if buffered_len > 0 {
            multipart.send(PutPayload::from_iter(buffered)).await?;
        }
        multipart.complete().await?;
        *upload = None;
        Ok(size)
    }
}

#[async_trait::async_trait]
impl Blobs for S3Blobs {
    async fn put(&self, key: &str, mut body: ByteStream, limit: u64) -> Result<u64, BlobError> {
        let path = Self::path(key)?;
        let mut upload = None;
        let result = self.stream_in(&path, &mut body, limit, &mut upload).await;
        if let Some(unfinished) = upload {
            unfinished.abort().await;
        }
        result
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Blob, BlobError> {
        let path = Self::path(key)?;
        let Some(range) = range else {
            let got = self.store.get(&path).await.map_err(backend)?;
            let size = got.meta.size;
            return Ok(Blob { size, body: body_of(got) });
        };
        if range.start >= range.end {
            // An empty (or inverted) range: S3 has no way to ask for one.
            let size = self.size(key).await?;
            if range.start > range.end || range.end > size {
                return Err(BlobError::BadRange { size });
            }
            return Ok(Blob { size, body: Box::pin(futures_util::stream::empty()) });
        }
        let options = GetOptions { range: Some(GetRange::Bounded(range.clone())), ..GetOptions::default() };
        match self.store.get_opts(&path, options).await {
            // S3 answers a range past the end with what there is: not
            // what was asked for.
            Ok(got) if got.range == range => Ok(Blob { size: got.meta.size, body: body_of(got) }),
            Ok(got) => Err(BlobError::BadRange { size: got.meta.size }),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound),
            Err(e) => {
                // 416 (the range starts past the end) comes back as an
                // error: tell it from a failure by the object's size.
                let size = self.size(key).await?;
                if range.end > size { Err(BlobError::BadRange { size }) } else { Err(backend(e)) }
            }
        }
    }

    async fn size(&self, key: &str) -> Result<u64, BlobError> {
        let path = Self::path(key)?;
        Ok(self.store.head(&path).await.map_err(backend)?.size)
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = Self::path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }
}

fn body_of(got: object_store::GetResult) -> ByteStream {
    Box::pin(got.into_stream().map(|r| r.map_err(|e| io::Error::other(explain(&e)))))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;

    use super::{S3Blobs, S3Options};
    use crate::contract::{body_of, collect};
    use crate::{BlobError, Blobs};

    #[tokio::test]
    async fn the_backend_passes_the_contract_over_an_in_memory_store() {
        // Small parts, so the contract's bodies go through multipart too.
        crate::contract::run(&S3Blobs::over(Arc::new(InMemory::new()), 64 * 1024, 2 * 64 * 1024)).await;
    }

    #[tokio::test]
    async fn a_body_of_many_parts_comes_back_whole() {
        let blobs = S3Blobs::over(Arc::new(InMemory::new()), 1000, 2000);
        let (bytes, body) = body_of(3, 7, 777);
        assert_eq!(blobs.put("m/a", body, 1 << 20).await.unwrap(), bytes.len() as u64);
        assert_eq!(collect(blobs.get("m/a", None).await.unwrap().body).await.unwrap(), bytes);
        let (_, big) = body_of(3, 7, 777);
        assert!(matches!(blobs.put("m/b", big, 3000).await, Err(BlobError::TooLarge { limit: 3000 })));
        assert!(matches!(blobs.size("m/b").await, Err(BlobError::NotFound)));
    }

    #[tokio::test]
    async fn puts_at_once_share_the_buffer_budget_and_all_complete() {
        // Parts of 1000 bytes, room for two at once, ten puts of five parts each.
        let blobs = Arc::new(S3Blobs::over(Arc::new(InMemory::new()), 1000, 2000));
        let puts = (0..10u8).map(|i| {
            let blobs = blobs.clone();
            async move {
                let (bytes, body) = body_of(i, 5, 1000);
                let key = format!("m/{i}");
                assert_eq!(blobs.put(&key, body, 1 << 20).await.unwrap(), 5000);
                assert_eq!(collect(blobs.get(&key, None).await.unwrap().body).await.unwrap(), bytes);
            }
        });
        futures_util::future::join_all(puts).await;
        assert_eq!(blobs.budget.available_permits(), 2000, "every put gave its room back");
        // A put that fails midway gives it back too.
        let (_, big) = body_of(1, 7, 1000);
        assert!(matches!(blobs.put("m/big", big, 3500).await, Err(BlobError::TooLarge { .. })));
        assert_eq!(blobs.budget.available_permits(), 2000);
    }

    #[tokio::test]
    async fn options_are_checked_before_any_request() {
        let ok = S3Options {
            endpoint: "http://127.0.0.1:9".into(),
            bucket: "b".into(),
            region: "us-east-1".into(),
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            path_style: true,
        };
        for (bad, what) in [
            (S3Options { endpoint: "127.0.0.1:8333".into(), ..ok.clone() }, "http"),
            (S3Options { bucket: String::new(), ..ok.clone() }, "bucket"),
            (S3Options { secret_access_key: String::new(), ..ok.clone() }, "secret"),
        ] {
            let e = S3Blobs::connect(bad).await.unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
        assert!(!format!("{ok:?}").contains("\"s\""), "the secret is redacted");
        // Nothing listens on the discard port: a clear error, quickly.
        let e = S3Blobs::connect(ok).await.unwrap_err().to_string();
        assert!(e.contains("127.0.0.1:9 is not usable"), "{e}");
    }
}
