//! Attachments over HTTP (docs/protocol.md, `POST /v1/uploads` and after):
//! uploads streamed into the [`Blobs`] backend under a byte limit, their
//! type sniffed and checked against an allow-list, images stripped of
//! metadata and given dimensions and a thumbnail; downloads for members of
//! the upload's room only, by token or by a short-lived signed URL, with
//! headers that keep a browser from running what it fetches; the sweeper
//! that deletes uploads never attached and dropped ones.
//!
//! Blob keys: `u/<id>` for the file, `t/<id>` for its thumbnail.

mod media;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use confab_blobs::{BlobError, Blobs, ByteStream};
use confab_protocol::attachments::is_upload_id;
use confab_protocol::validate::{self, dm_members};
use confab_protocol::{Attachment, ErrorCode, ProtocolError};
use confab_store::UploadRecord;
use futures_util::{StreamExt, TryStreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::Gateway;
use crate::http::{ApiError, authenticate};
use crate::ops::store_error;

pub use media::{THUMBNAIL_SIDE, TYPES};

/// Images worked on (stripped, decoded, thumbnailed) at once per gateway:
/// each holds the file and its pixels in memory.
const IMAGE_JOBS: usize = 2;
/// Uploads the sweeper deletes per pass.
const SWEEP_BATCH: u32 = 100;

/// How uploads behave: the `confab` binary fills it from its configuration.
#[derive(Clone)]
pub struct Settings {
    /// Largest upload in bytes; larger is `413 too_large`.
    pub max_upload_bytes: u64,
    /// Uploads one user may have in flight at once on this gateway; one
    /// more is `429 rate_limited`.
    pub max_concurrent: usize,
    /// Sniffed types an upload may have; others are `415`.
    pub types: Vec<String>,
    /// How long an upload never attached is kept.
    pub ttl: Duration,
    /// How long a signed URL is valid.
    pub signed_url_ttl: Duration,
    /// How often the sweeper looks for uploads to delete.
    pub sweep_interval: Duration,
    /// The key signed URLs are signed with ([`url_key`]).
    pub url_key: [u8; 32],
}

/// The signing key of upload URLs, derived from the cluster's token
/// secret: every gateway of a cluster has the same, and it is never the
/// token key itself.
pub fn url_key(secret: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(b"confab upload url signing key v1");
    mac.finalize().into_bytes().into()
}

/// The hex signature of a URL to upload `id` (`thumbnail` or the file)
/// for `user`, valid until `exp` (unix seconds).
pub fn signature(key: &[u8; 32], id: &str, thumbnail: bool, user: &str, exp: u64) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
    let variant = if thumbnail { "thumbnail" } else { "file" };
    mac.update(format!("{variant}\n{id}\n{user}\n{exp}").as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The gateway's uploads: where their bytes go and how they behave.
pub struct Uploads {
    blobs: Arc<dyn Blobs>,
    settings: Settings,
    images: tokio::sync::Semaphore,
    /// Uploads in flight per user (users with none have no entry).
    in_flight: Mutex<HashMap<String, usize>>,
}

impl Uploads {
    pub fn new(blobs: Arc<dyn Blobs>, settings: Settings) -> Uploads {
        Uploads {
            blobs,
            settings,
            images: tokio::sync::Semaphore::new(IMAGE_JOBS),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one more upload of `user`, held until the guard is
    /// dropped (the upload done, failed, or its client gone); `None` when
    /// the user already has `max_concurrent` in flight.
    fn admit(&self, user: &str) -> Option<InFlight<'_>> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = in_flight.entry(user.to_owned()).or_default();
        if *n >= self.settings.max_concurrent {
            return None;
        }
        *n += 1;
        Some(InFlight { uploads: self, user: user.to_owned() })
    }
}

/// One upload counted in [`Uploads::admit`].
struct InFlight<'a> {
    uploads: &'a Uploads,
    user: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.uploads.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = in_flight.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                in_flight.remove(&self.user);
            }
        }
    }
}

/// How long a client refused for too many uploads at once waits.
const RETRY_AFTER_SECS: u64 = 1;

fn file_key(id: &str) -> String {
    format!("u/{id}")
}

fn thumbnail_key(id: &str) -> String {
    format!("t/{id}")
}

fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError(ProtocolError::new(code, message))
}

/// A refusal whose status is outside the code's mapping (415, 416).
fn with_status(status: StatusCode, error: ApiError) -> Response {
    let mut response = error.into_response();
    *response.status_mut() = status;
    response
}

fn blob_error(e: BlobError) -> ApiError {
    match e {
        BlobError::NotFound => err(ErrorCode::NotFound, "no such upload"),
        BlobError::TooLarge { limit } => err(ErrorCode::TooLarge, format!("uploads are limited to {limit} bytes")),
        other => {
            tracing::warn!(error = %other, "blob storage failed");
            err(ErrorCode::Unavailable, "storage cannot be reached; retry later")
        }
    }
}

impl Gateway {
    /// Hands the gateway its uploads; until then the upload routes answer
    /// `503 unavailable`.
    pub fn set_uploads(&self, uploads: Uploads) {
        let _ = self.inner.uploads.set(uploads);
    }

    fn uploads(&self) -> Result<&Uploads, ApiError> {
        self.inner.uploads.get().ok_or_else(|| err(ErrorCode::Unavailable, "uploads are not configured"))
    }

    fn count_upload(&self, outcome: &str) {
        self.inner.metrics.uploads.with_label_values(&[outcome]).inc();
    }

    /// Whether `user` may see what is in `room`: a member, or a party of
    /// the DM `room` (whose other party has an account).
    async fn may_see(&self, room: &str, user: &str) -> Result<(), ApiError> {
        if let Some((a, b)) = dm_members(room) {
            if user != a && user != b {
                return Err(ApiError(ProtocolError::not_member(room)));
            }
            return self.check_dm(room, user).await.map_err(ApiError);
        }
        if self.inner.store.is_member(room, user).await.map_err(store_error)? {
            Ok(())
        } else {
            Err(ApiError(ProtocolError::not_member(room)))
        }
    }
}

/// `POST /v1/uploads?room=ROOM[&filename=NAME]`.
pub(crate) async fn upload(
    State(gw): State<Gateway>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match receive(&gw, &query, &headers, body).await {
        Ok(attachment) => {
            gw.count_upload("ok");
            (StatusCode::CREATED, axum::Json(attachment)).into_response()
        }
        Err((status, e)) => {
            let too_many = e.0.code == ErrorCode::RateLimited;
            gw.count_upload(match status {
                Some(_) => "type_refused",
                None => match e.0.code {
                    ErrorCode::RateLimited => "too_many",
                    ErrorCode::TooLarge => "too_large",
                    ErrorCode::Unauthorized | ErrorCode::Forbidden | ErrorCode::NotMember => "refused",
                    ErrorCode::BadRequest | ErrorCode::NotFound => "bad_request",
                    _ => "failed",
                },
            });
            let mut response = match status {
                Some(status) => with_status(status, e),
                None => e.into_response(),
            };
            if too_many {
                response.headers_mut().insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
            }
            response
        }
    }
}

type Refused = (Option<StatusCode>, ApiError);

fn plain(e: ApiError) -> Refused {
    (None, e)
}

/// A display name from `filename`: its last path part, without control
/// characters or quotes, at most 255 bytes; `file` when nothing is left.
fn clean_name(raw: Option<&String>) -> String {
    let raw = raw.map(String::as_str).unwrap_or("");
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let mut name: String =
        last.chars().filter(|c| !c.is_control() && !matches!(c, '"' | '\u{202a}'..='\u{202e}')).collect();
    name = name.trim().to_owned();
    while name.len() > 255 {
        name.pop();
    }
    if name.is_empty() || name == "." || name == ".." { "file".into() } else { name }
}

async fn receive(
    gw: &Gateway,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Attachment, Refused> {
    let claims = authenticate(gw, headers, query, "http").await.map_err(plain)?;
    let uploads = gw.uploads().map_err(plain)?;
    // Counted before anything is read; released when this function ends.
    let _in_flight = uploads.admit(&claims.sub).ok_or_else(|| {
        let most = uploads.settings.max_concurrent;
        let message = format!("at most {most} uploads at once; retry after Retry-After seconds");
        plain(err(ErrorCode::RateLimited, message))
    })?;
    let room = query.get("room").ok_or_else(|| plain(err(ErrorCode::BadRequest, "`room` is required")))?;
    validate::room_ref(room).map_err(|e| plain(ApiError(e)))?;
    gw.may_see(room, &claims.sub).await.map_err(plain)?;
    let limit = uploads.settings.max_upload_bytes;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(plain(err(ErrorCode::TooLarge, format!("uploads are limited to {limit} bytes"))));
    }

    // The first bytes decide the type before anything is stored.
    let mut stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut head = BytesMut::new();
    let mut ended = false;
    while head.len() < media::SNIFF_BYTES {
        match stream.next().await {
            Some(chunk) => {
                head.extend_from_slice(&chunk.map_err(|e| plain(err(ErrorCode::BadRequest, e.to_string())))?)
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    let head = head.freeze();
    let content_type = media::sniff(&head[..head.len().min(media::SNIFF_BYTES)], ended);
    if !uploads.settings.types.iter().any(|t| t == content_type) {
        let message = format!("uploads of type {content_type} are not allowed");
        return Err((Some(StatusCode::UNSUPPORTED_MEDIA_TYPE), err(ErrorCode::BadRequest, message)));
    }

    let id = new_id();
    let key = file_key(&id);
    let bytes_metric = gw.inner.metrics.upload_bytes.clone();
    let body: ByteStream = Box::pin(
        futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(head) })
            .chain(stream)
            .inspect_ok(move |chunk| bytes_metric.inc_by(chunk.len() as u64)),
    );
    let mut size = uploads.blobs.put(&key, body, limit).await.map_err(|e| plain(blob_error(e)))?;

    let mut record = UploadRecord {
        id: id.clone(),
        room: room.clone(),
        uploader: claims.sub.clone(),
        name: clean_name(query.get("filename")),
        content_type: content_type.into(),
        size,
        created_ms: now_ms(),
        ..UploadRecord::default()
    };
    if media::is_safe_image(content_type) {
        match image_work(uploads, &key, content_type).await {
            Ok(Some((stripped, picture))) => {
                if let Some(stripped) = stripped {
                    size = stripped.len() as u64;
                    let body: ByteStream =
                        Box::pin(futures_util::stream::once(async move { Ok(Bytes::from(stripped)) }));
                    uploads.blobs.put(&key, body, limit).await.map_err(|e| plain(blob_error(e)))?;
                }
                if let Some(p) = picture {
                    let thumb: ByteStream =
                        Box::pin(futures_util::stream::once(async move { Ok(Bytes::from(p.thumbnail)) }));
                    uploads.blobs.put(&thumbnail_key(&id), thumb, limit).await.map_err(|e| plain(blob_error(e)))?;
                    (record.width, record.height, record.has_thumbnail) = (Some(p.width), Some(p.height), true);
                }
                record.size = size;
            }
            Ok(None) => {
                let _ = uploads.blobs.delete(&key).await;
                let message = format!("the {content_type} file does not parse");
                return Err((Some(StatusCode::UNSUPPORTED_MEDIA_TYPE), err(ErrorCode::BadRequest, message)));
            }
            Err(e) => {
                let _ = uploads.blobs.delete(&key).await;
                return Err(plain(e));
            }
        }
    }
    if let Err(e) = gw.inner.store.put_upload(&record).await {
        let _ = uploads.blobs.delete(&key).await;
        let _ = uploads.blobs.delete(&thumbnail_key(&id)).await;
        return Err(plain(ApiError(store_error(e))));
    }
    Ok(record.attachment())
}

/// An image read back, stripped of its metadata (`Some` bytes when that
/// changed them) and decoded (`None` picture when it does not decode
/// within the limits); `Ok(None)` when its structure does not parse.
#[allow(clippy::type_complexity)]
async fn image_work(
    uploads: &Uploads,
    key: &str,
    content_type: &'static str,
) -> Result<Option<(Option<Vec<u8>>, Option<media::Picture>)>, ApiError> {
    let _permit = uploads.images.acquire().await.map_err(|_| err(ErrorCode::Unavailable, "shutting down"))?;
    let blob = uploads.blobs.get(key, None).await.map_err(blob_error)?;
    let mut bytes = Vec::with_capacity(blob.size as usize);
    let mut body = blob.body;
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk.map_err(|e| blob_error(BlobError::Backend(e.to_string())))?);
    }
    let work = tokio::task::spawn_blocking(move || {
        let stripped = media::strip(content_type, &bytes)?;
        let picture = media::picture(content_type, &stripped);
        let changed = (stripped != bytes).then_some(stripped);
        Some((changed, picture))
    });
    work.await.map_err(|_| err(ErrorCode::Internal, "image work failed"))
}

fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("u{hex}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Who asks for an upload, and the upload, once allowed.
async fn allowed(
    gw: &Gateway,
    id: &str,
    thumbnail: bool,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(String, UploadRecord), ApiError> {
    let uploads = gw.uploads()?;
    let user = match (query.get("sig"), query.get("exp"), query.get("user")) {
        (Some(sig), Some(exp), Some(user)) => {
            let refused = || err(ErrorCode::Forbidden, "the signed URL is invalid or expired; sign it again");
            let exp: u64 = exp.parse().map_err(|_| refused())?;
            let want = signature(&uploads.settings.url_key, id, thumbnail, user, exp);
            let good: bool = subtle::ConstantTimeEq::ct_eq(want.as_bytes(), sig.as_bytes()).into();
            if !good || exp < crate::auth::unix_now() {
                return Err(refused());
            }
            user.clone()
        }
        _ => authenticate(gw, headers, query, "http").await?.sub,
    };
    let missing = || err(ErrorCode::NotFound, format!("no upload '{}'", validate::clip(id)));
    if !is_upload_id(id) {
        return Err(missing());
    }
    let record = gw.inner.store.upload(id).await.map_err(store_error)?.ok_or_else(missing)?;
    // An upload not yet sent is its uploader's alone.
    if record.dropped || (record.message.is_none() && record.uploader != user) || (thumbnail && !record.has_thumbnail) {
        return Err(missing());
    }
    gw.may_see(&record.room, &user).await?;
    Ok((user, record))
}

/// `GET /v1/uploads/{id}`.
pub(crate) async fn download(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    serve(&gw, &id, false, &query, &headers).await.unwrap_or_else(|r| r)
}

/// `GET /v1/uploads/{id}/thumbnail`.
pub(crate) async fn download_thumbnail(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    serve(&gw, &id, true, &query, &headers).await.unwrap_or_else(|r| r)
}

/// A single `bytes=` range of a blob of `size` bytes: `Ok(None)` to serve
/// it whole (no header, several ranges, or one that does not parse, which
/// RFC 9110 says to ignore), `Err` when it lies outside.
fn range(headers: &HeaderMap, size: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(spec) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let Some(spec) = spec.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.split_once('-') else { return Ok(None) };
    let (start, end) = (start.trim(), end.trim());
    let parsed = match (start.parse::<u64>(), end.parse::<u64>()) {
        (Ok(s), Ok(e)) if s <= e => Some((s, e.saturating_add(1).min(size))),
        (Ok(s), Err(_)) if end.is_empty() => Some((s, size)),
        (Err(_), Ok(n)) if start.is_empty() => {
            if n == 0 {
                return Err(());
            }
            Some((size.saturating_sub(n), size))
        }
        _ => None,
    };
    match parsed {
        None => Ok(None),
        Some((s, _)) if s >= size => Err(()),
        Some((s, e)) => Ok(Some(s..e)),
    }
}

async fn serve(
    gw: &Gateway,
    id: &str,
    thumbnail: bool,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, Response> {
    let (_, record) = allowed(gw, id, thumbnail, query, headers).await.map_err(IntoResponse::into_response)?;
    let uploads = gw.uploads().map_err(IntoResponse::into_response)?;
    let key = if thumbnail { thumbnail_key(id) } else { file_key(id) };
    let etag = format!("\"{id}{}\"", if thumbnail { "-t" } else { "" });
    let content_type = match (thumbnail, record.content_type.as_str()) {
        (true, "image/jpeg") => "image/jpeg",
        (true, _) => "image/png",
        (false, "text/plain") => "text/plain; charset=utf-8",
        (false, t) => t,
    };
    let mut out = HeaderMap::new();
    let disposition = if media::is_safe_image(content_type) { "inline" } else { "attachment" };
    let name: String = record.name.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '_' }).collect();
    let encoded: String = record
        .name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let value = format!("{disposition}; filename=\"{}\"; filename*=UTF-8''{encoded}", name.replace('"', "_"));
    out.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("attachment")),
    );
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    out.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    out.insert(header::ETAG, HeaderValue::from_str(&etag).expect("an id is a header value"));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    let size = uploads.blobs.size(&key).await.map_err(|e| blob_error(e).into_response())?;
    let wanted = match range(headers, size) {
        Ok(r) => r,
        Err(()) => {
            out.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"));
            let refusal = with_status(
                StatusCode::RANGE_NOT_SATISFIABLE,
                err(ErrorCode::BadRequest, format!("the range lies outside the {size} bytes")),
            );
            let (mut parts, body) = refusal.into_parts();
            parts.headers.extend(out);
            return Err(Response::from_parts(parts, body));
        }
    };
    let blob = uploads.blobs.get(&key, wanted.clone()).await.map_err(|e| blob_error(e).into_response())?;
    let status = match &wanted {
        Some(r) => {
            let value = format!("bytes {}-{}/{}", r.start, r.end - 1, blob.size);
            out.insert(header::CONTENT_RANGE, HeaderValue::from_str(&value).expect("ascii"));
            StatusCode::PARTIAL_CONTENT
        }
        None => StatusCode::OK,
    };
    let length = wanted.as_ref().map_or(blob.size, |r| r.end - r.start);
    out.insert(header::CONTENT_LENGTH, length.into());
    Ok((status, out, Body::from_stream(blob.body)).into_response())
}

/// `POST /v1/uploads/{id}/sign`.
pub(crate) async fn sign(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Only a token signs: a signed URL does not beget another.
    let mut query = query;
    query.remove("sig");
    let (user, record) = allowed(&gw, &id, false, &query, &headers).await?;
    let settings = &gw.uploads()?.settings;
    let exp = crate::auth::unix_now() + settings.signed_url_ttl.as_secs().max(1);
    let signed = |thumbnail: bool, url: String| {
        let sig = signature(&settings.url_key, &id, thumbnail, &user, exp);
        format!("{url}?user={user}&exp={exp}&sig={sig}")
    };
    let mut body = serde_json::json!({
        "url": signed(false, confab_protocol::attachments::url(&id)),
        "expires_at": exp,
    });
    if record.has_thumbnail {
        body["thumbnail_url"] = signed(true, confab_protocol::attachments::thumbnail_url(&id)).into();
    }
    Ok(axum::Json(body).into_response())
}

/// Deletes uploads due (never attached after `ttl`, or dropped with their
/// message or account): bytes first, then metadata, so that nothing is
/// left behind unfindable. Every gateway runs it; deleting twice is
/// harmless.
pub async fn sweep(gw: Gateway, shutdown: CancellationToken) {
    let Some(uploads) = gw.inner.uploads.get() else {
        shutdown.cancelled().await;
        return;
    };
    let mut ticker = tokio::time::interval(uploads.settings.sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let before = now_ms().saturating_sub(uploads.settings.ttl.as_millis() as u64);
        let due = match gw.inner.store.due_uploads(before, SWEEP_BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list uploads to delete");
                continue;
            }
        };
        for u in due {
            let blobs =
                (uploads.blobs.delete(&file_key(&u.id)).await, uploads.blobs.delete(&thumbnail_key(&u.id)).await);
            if let (Ok(()), Ok(())) = blobs {
                if let Err(e) = gw.inner.store.delete_upload(&u).await {
                    tracing::warn!(error = %e, "cannot delete an upload's metadata");
                } else {
                    gw.count_upload("deleted");
                }
            } else {
                tracing::warn!(upload = %u.id, "cannot delete an upload's bytes");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranged(spec: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(spec).unwrap());
        h
    }

    #[test]
    fn single_ranges_are_served_and_others_ignored_or_refused() {
        assert_eq!(range(&HeaderMap::new(), 10), Ok(None));
        assert_eq!(range(&ranged("bytes=2-4"), 10), Ok(Some(2..5)));
        assert_eq!(range(&ranged("bytes=2-"), 10), Ok(Some(2..10)));
        assert_eq!(range(&ranged("bytes=-3"), 10), Ok(Some(7..10)));
        assert_eq!(range(&ranged("bytes=5-100"), 10), Ok(Some(5..10)));
        assert_eq!(range(&ranged("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(range(&ranged("items=0-1"), 10), Ok(None));
        assert_eq!(range(&ranged("bytes=x-y"), 10), Ok(None));
        assert_eq!(range(&ranged("bytes=10-"), 10), Err(()));
        assert_eq!(range(&ranged("bytes=-0"), 10), Err(()));
    }

    #[test]
    fn names_lose_paths_controls_and_quotes() {
        let name = |s: &str| clean_name(Some(&s.to_string()));
        assert_eq!(name("../../etc/passwd"), "passwd");
        assert_eq!(name("C:\\x\\cat \"1\".png"), "cat 1.png");
        assert_eq!(name("a\u{0}b\nc\u{202e}gpj.exe"), "abcgpj.exe");
        assert_eq!(clean_name(None), "file");
        assert_eq!(name(".."), "file");
        assert!(name(&"é".repeat(300)).len() <= 255);
    }

    #[tokio::test]
    async fn a_user_has_at_most_max_concurrent_uploads_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(confab_blobs::DirBlobs::open(dir.path()).await.unwrap());
        let settings = Settings {
            max_upload_bytes: 10,
            max_concurrent: 2,
            types: Vec::new(),
            ttl: Duration::from_secs(1),
            signed_url_ttl: Duration::from_secs(1),
            sweep_interval: Duration::from_secs(1),
            url_key: [0; 32],
        };
        let uploads = Uploads::new(blobs, settings);
        let (a, b) = (uploads.admit("alice").unwrap(), uploads.admit("alice").unwrap());
        assert!(uploads.admit("alice").is_none(), "a third at once is refused");
        let bob = uploads.admit("bob").expect("others are not affected");
        drop(a);
        let c = uploads.admit("alice").expect("a place is free again");
        drop((b, c, bob));
        assert!(uploads.in_flight.lock().unwrap().is_empty(), "no entry is left for users with none in flight");
    }

    #[test]
    fn signatures_depend_on_every_part() {
        let key = url_key(b"0123456789abcdef0123456789abcdef");
        let base = signature(&key, "u1", false, "alice", 100);
        assert_eq!(base.len(), 64);
        assert_ne!(base, signature(&key, "u2", false, "alice", 100));
        assert_ne!(base, signature(&key, "u1", true, "alice", 100));
        assert_ne!(base, signature(&key, "u1", false, "bob", 100));
        assert_ne!(base, signature(&key, "u1", false, "alice", 101));
        assert_ne!(base, signature(&url_key(b"another secret, another cluster!"), "u1", false, "alice", 100));
    }
}
