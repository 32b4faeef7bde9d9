//! The standalone backend: one file per blob under a directory (by default
//! `<data_dir>/uploads`). A blob is written to a temporary file beside its
//! place and renamed into it once complete, so a reader never sees half of
//! one and a crash leaves only a temporary file, removed at the next start.

use std::io::{self, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::{Blob, BlobError, Blobs, ByteStream, valid_key};

/// Bytes read from the file at once when streaming a blob out.
const CHUNK: usize = 64 * 1024;
/// Suffix of a blob still being written.
const PARTIAL: &str = ".partial";

/// Blobs as files under a directory.
pub struct DirBlobs {
    root: PathBuf,
}

impl DirBlobs {
    /// Opens (creating) the directory and removes what an interrupted write
    /// left behind.
    pub async fn open(root: impl Into<PathBuf>) -> Result<DirBlobs, BlobError> {
        let root = root.into();
        fs::create_dir_all(&root).await.map_err(|e| backend(&root, e))?;
        remove_partials(&root).await.map_err(|e| backend(&root, e))?;
        Ok(DirBlobs { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        if !valid_key(key) || key.ends_with(PARTIAL) {
            return Err(BlobError::BadKey);
        }
        Ok(self.root.join(key))
    }
}

fn backend(path: &Path, e: io::Error) -> BlobError {
    BlobError::Backend(format!("{}: {e}", path.display()))
}

fn not_found_or(path: &Path, e: io::Error) -> BlobError {
    if e.kind() == io::ErrorKind::NotFound { BlobError::NotFound } else { backend(path, e) }
}

/// Removes `*.partial` files anywhere under `root`.
async fn remove_partials(root: &Path) -> io::Result<()> {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let mut entries = fs::read_dir(&dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if entry.file_type().await?.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().ends_with(PARTIAL) {
                fs::remove_file(&path).await?;
            }
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Blobs for DirBlobs {
    async fn put(&self, key: &str, mut body: ByteStream, limit: u64) -> Result<u64, BlobError> {
        let path = self.path(key)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).await.map_err(|e| backend(parent, e))?;
        }
        let partial = PathBuf::from(format!("{}{PARTIAL}", path.display()));
        let mut file = fs::File::create(&partial).await.map_err(|e| backend(&partial, e))?;
        let mut size = 0u64;
        let written: Result<(), BlobError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| BlobError::Backend(format!("reading the body: {e}")))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(BlobError::TooLarge { limit });
                }
                file.write_all(&chunk).await.map_err(|e| backend(&partial, e))?;
            }
            file.sync_all().await.map_err(|e| backend(&partial, e))
        }
        .await;
        drop(file);
        if let Err(e) = written {
            let _ = fs::remove_file(&partial).await;
            return Err(e);
        }
        fs::rename(&partial, &path).await.map_err(|e| backend(&path, e))?;
        Ok(size)
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Blob, BlobError> {
        let path = self.path(key)?;
        let mut file = fs::File::open(&path).await.map_err(|e| not_found_or(&path, e))?;
        let size = file.metadata().await.map_err(|e| backend(&path, e))?.len();
        let range = match range {
            None => 0..size,
            Some(r) if r.start <= r.end && r.end <= size => r,
            Some(_) => return Err(BlobError::BadRange { size }),
        };
        file.seek(SeekFrom::Start(range.start)).await.map_err(|e| backend(&path, e))?;
        let left = range.end - range.start;
        let body = futures_util::stream::unfold((file, left), |(mut file, left)| async move {
            if left == 0 {
                return None;
            }
            let mut buf = vec![0u8; CHUNK.min(left as usize)];
            match file.read(&mut buf).await {
                Ok(0) => Some((Err(io::Error::from(io::ErrorKind::UnexpectedEof)), (file, 0))),
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (file, left - n as u64)))
                }
                Err(e) => Some((Err(e), (file, 0))),
            }
        });
        Ok(Blob { size, body: Box::pin(body) })
    }

    async fn size(&self, key: &str) -> Result<u64, BlobError> {
        let path = self.path(key)?;
        Ok(fs::metadata(&path).await.map_err(|e| not_found_or(&path, e))?.len())
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = self.path(key)?;
        match fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(backend(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DirBlobs;

    #[tokio::test]
    async fn directory_backend_passes_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = DirBlobs::open(dir.path().join("uploads")).await.unwrap();
        crate::contract::run(&blobs).await;
    }

    #[tokio::test]
    async fn a_write_interrupted_by_a_crash_is_removed_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("uploads");
        std::fs::create_dir_all(root.join("u")).unwrap();
        std::fs::write(root.join("u/abc.partial"), b"half").unwrap();
        let _ = DirBlobs::open(&root).await.unwrap();
        assert!(!root.join("u/abc.partial").exists());
    }
}
