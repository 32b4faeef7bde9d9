//! The contract every [`Blobs`] backend passes: run it against each one
//! (`confab_blobs::contract::run(&backend)`).

use std::io;

use bytes::Bytes;
use futures_util::StreamExt;

use crate::{BlobError, Blobs, ByteStream};

/// A body of `parts`, each `part` long, its bytes counting up from `seed`.
pub fn body_of(seed: u8, parts: usize, part: usize) -> (Vec<u8>, ByteStream) {
    let mut all = Vec::with_capacity(parts * part);
    let mut chunks = Vec::with_capacity(parts);
    for p in 0..parts {
        let chunk: Vec<u8> = (0..part).map(|i| seed.wrapping_add((p * part + i) as u8)).collect();
        all.extend_from_slice(&chunk);
        chunks.push(Ok(Bytes::from(chunk)));
    }
    (all, Box::pin(futures_util::stream::iter(chunks)))
}

/// Reads a whole stream.
pub async fn collect(mut body: ByteStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Runs the whole contract against `blobs`. Keys are unique per run, so a
/// shared bucket may be used.
pub async fn run(blobs: &dyn Blobs) {
    let run = format!("contract-{}", std::process::id());
    let key = |name: &str| format!("{run}/{name}");

    // A body in many parts comes back whole, and its size is known.
    let (bytes, body) = body_of(7, 40, 32 * 1024 + 3);
    assert_eq!(blobs.put(&key("a"), body, 10 << 20).await.unwrap(), bytes.len() as u64);
    assert_eq!(blobs.size(&key("a")).await.unwrap(), bytes.len() as u64);
    let blob = blobs.get(&key("a"), None).await.unwrap();
    assert_eq!(blob.size, bytes.len() as u64);
    assert_eq!(collect(blob.body).await.unwrap(), bytes, "whole blob");

    // A range is that part only, with the whole size beside it.
    let blob = blobs.get(&key("a"), Some(1000..70_000)).await.unwrap();
    assert_eq!(blob.size, bytes.len() as u64);
    assert_eq!(collect(blob.body).await.unwrap(), &bytes[1000..70_000], "range");
    let last = bytes.len() as u64;
    let blob = blobs.get(&key("a"), Some(last - 1..last)).await.unwrap();
    assert_eq!(collect(blob.body).await.unwrap(), &bytes[bytes.len() - 1..], "last byte");
    assert!(matches!(
        blobs.get(&key("a"), Some(last - 1..last + 10)).await,
        Err(BlobError::BadRange { size }) if size == last
    ));

    // An empty blob is a blob.
    let (_, empty) = body_of(0, 0, 0);
    assert_eq!(blobs.put(&key("empty"), empty, 10).await.unwrap(), 0);
    assert!(collect(blobs.get(&key("empty"), None).await.unwrap().body).await.unwrap().is_empty());

    // Putting again replaces.
    let (second, body) = body_of(99, 2, 100);
    blobs.put(&key("a"), body, 10 << 20).await.unwrap();
    assert_eq!(collect(blobs.get(&key("a"), None).await.unwrap().body).await.unwrap(), second, "replaced");

    // Past the limit: refused, and nothing kept (not even a prefix).
    let (_, big) = body_of(1, 10, 1000);
    assert!(matches!(blobs.put(&key("big"), big, 9_999).await, Err(BlobError::TooLarge { limit: 9_999 })));
    assert!(matches!(blobs.size(&key("big")).await, Err(BlobError::NotFound)), "a refused blob was kept");
    let (exact, body) = body_of(1, 10, 1000);
    assert_eq!(blobs.put(&key("exact"), body, 10_000).await.unwrap(), exact.len() as u64, "at the limit is fine");

    // A body that fails midway keeps nothing.
    let failing: ByteStream = Box::pin(futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"first part")),
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "client went away")),
    ]));
    assert!(blobs.put(&key("cut"), failing, 1 << 20).await.is_err());
    assert!(matches!(blobs.size(&key("cut")).await, Err(BlobError::NotFound)), "a cut blob was kept");

    // Missing keys, and deleting (twice).
    assert!(matches!(blobs.get(&key("missing"), None).await, Err(BlobError::NotFound)));
    assert!(matches!(blobs.size(&key("missing")).await, Err(BlobError::NotFound)));
    blobs.delete(&key("a")).await.unwrap();
    assert!(matches!(blobs.get(&key("a"), None).await, Err(BlobError::NotFound)));
    blobs.delete(&key("a")).await.unwrap();

    // Keys that could escape are refused by every backend.
    for bad in ["../escape", "/abs", "a/../../b", ""] {
        let (_, body) = body_of(0, 1, 1);
        assert!(matches!(blobs.put(bad, body, 10).await, Err(BlobError::BadKey)), "{bad:?}");
        assert!(matches!(blobs.get(bad, None).await, Err(BlobError::BadKey)), "{bad:?}");
    }

    for name in ["empty", "exact"] {
        blobs.delete(&key(name)).await.unwrap();
    }
}
