//! Where attachment bytes live. The store keeps an upload's metadata (room,
//! uploader, name, type, size); a [`Blobs`] backend keeps its bytes under an
//! opaque key. Backends: a directory under the data directory (standalone)
//! and S3-compatible object storage (distributed). Every backend passes the
//! same contract suite.

use std::{io, ops::Range, pin::Pin};

use bytes::Bytes;
use futures_util::Stream;

#[cfg(any(test, feature = "contract"))]
pub mod contract;
pub mod dir;
pub mod s3;

pub use dir::DirBlobs;
pub use s3::{S3Blobs, S3Options};

/// A body streamed in or out: never held whole in memory.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What a backend can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob under this key.
    #[error("no such blob")]
    NotFound,
    /// The body passed the limit given to [`Blobs::put`]; nothing was kept.
    #[error("blob larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The requested range does not lie inside the blob.
    #[error("range not satisfiable (blob is {size} bytes)")]
    BadRange { size: u64 },
    /// A key outside the backend's alphabet (`[A-Za-z0-9._/-]`, no `..`).
    #[error("invalid blob key")]
    BadKey,
    /// The backend failed (disk, network, the object store's answer).
    #[error("blob backend: {0}")]
    Backend(String),
}

/// Bytes read back: the whole blob's size, and the requested part of it.
pub struct Blob {
    /// Size of the whole blob in bytes, whatever range was asked for.
    pub size: u64,
    /// The bytes of the requested range (or all of them).
    pub body: ByteStream,
}

/// Attachment bytes under opaque keys.
#[async_trait::async_trait]
pub trait Blobs: Send + Sync + 'static {
    /// Stores `body` under `key`, replacing any blob there, and returns its
    /// size. Once more than `limit` bytes have arrived it stops reading,
    /// keeps nothing and answers [`BlobError::TooLarge`]. A body that fails
    /// midway keeps nothing either: a reader never sees a partial blob.
    async fn put(&self, key: &str, body: ByteStream, limit: u64) -> Result<u64, BlobError>;

    /// Streams the blob under `key`, or the byte `range` of it (end
    /// exclusive, within the blob).
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Blob, BlobError>;

    /// The size of the blob under `key`.
    async fn size(&self, key: &str) -> Result<u64, BlobError>;

    /// Removes the blob under `key`; removing a missing blob is not an error.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
}

/// Whether `key` is one a backend accepts: 1..=256 bytes of
/// `[A-Za-z0-9._/-]`, not starting with `/`, with no empty or `.`/`..` part.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 256
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
        && key.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

#[cfg(test)]
mod tests {
    use super::valid_key;

    #[test]
    fn keys_that_could_escape_a_directory_are_refused() {
        assert!(valid_key("u/0123abcd"));
        assert!(valid_key("u/0123abcd/thumb.jpg"));
        for bad in ["", "/etc/passwd", "a/../b", "..", "a//b", "a/./b", "a b", "a\\b", "a/"] {
            assert!(!valid_key(bad), "{bad:?} accepted");
        }
        assert!(!valid_key(&"a".repeat(257)));
    }
}
