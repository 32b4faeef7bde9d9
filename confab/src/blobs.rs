//! The one seam between the binary and where attachment bytes live: every
//! mode opens its [`Blobs`] backend here. Today that is a directory
//! ([`DirBlobs`]): `uploads_dir`, by default `<data>/uploads` in standalone
//! mode; a gateway needs `uploads_dir` set (a directory its cluster's
//! gateways share) or has no uploads.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use confab_blobs::{Blobs, DirBlobs};

use crate::config::UploadsConfig;

/// The backend uploads go to; `data` is the standalone data directory
/// (none for a gateway). `None`: uploads are off.
pub async fn open_blobs(config: &UploadsConfig, data: Option<&Path>) -> anyhow::Result<Option<Arc<dyn Blobs>>> {
    let dir = match (&config.uploads_dir, data) {
        (Some(dir), _) => dir.clone(),
        (None, Some(data)) => data.join("uploads"),
        (None, None) => return Ok(None),
    };
    let blobs = DirBlobs::open(&dir).await.with_context(|| format!("opening uploads_dir {}", dir.display()))?;
    Ok(Some(Arc::new(blobs)))
}
