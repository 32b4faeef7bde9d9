//! The one seam between the binary and where attachment bytes live: every
//! mode opens its [`Blobs`] backend here. S3-compatible object storage
//! ([`S3Blobs`]) when `s3_endpoint` is set (the distributed default: every
//! gateway reaches the same bucket; the bucket and the credentials are
//! checked here, so a wrong one stops the process at start); otherwise a
//! directory ([`DirBlobs`]): `uploads_dir`, by default `<data>/uploads` in
//! standalone mode. A gateway with neither has no uploads.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use confab_blobs::{Blobs, DirBlobs, S3Blobs};

use crate::config::{ObjectStoreConfig, UploadsConfig};

/// The backend uploads go to; `data` is the standalone data directory
/// (none for a gateway). `None`: uploads are off.
pub async fn open_blobs(
    config: &UploadsConfig,
    object_store: &ObjectStoreConfig,
    data: Option<&Path>,
) -> anyhow::Result<Option<Arc<dyn Blobs>>> {
    if let Some(options) = object_store.s3_options()? {
        anyhow::ensure!(
            config.uploads_dir.is_none(),
            "uploads_dir and s3_endpoint are both set: attachments go to one place, choose one"
        );
        let (endpoint, bucket) = (options.endpoint.clone(), options.bucket.clone());
        let blobs = S3Blobs::connect(options)
            .await
            .with_context(|| format!("opening the attachments bucket {bucket} at {endpoint}"))?;
        tracing::info!(%endpoint, %bucket, "attachments in S3-compatible object storage");
        return Ok(Some(Arc::new(blobs)));
    }
    let dir = match (&config.uploads_dir, data) {
        (Some(dir), _) => dir.clone(),
        (None, Some(data)) => data.join("uploads"),
        (None, None) => return Ok(None),
    };
    let blobs = DirBlobs::open(&dir).await.with_context(|| format!("opening uploads_dir {}", dir.display()))?;
    Ok(Some(Arc::new(blobs)))
}
