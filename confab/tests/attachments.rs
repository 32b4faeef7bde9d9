//! Attachments (docs/protocol.md, `POST /v1/uploads`): uploaded, sent,
//! received and downloaded by members only; the limits; what is served
//! and how; deletion with the message; uploads never sent swept. On
//! standalone (a directory) and on the cluster (whose two gateways share
//! the S3-compatible server of `scripts/infra up s3`: common/cluster.rs).

#[macro_use]
mod common;

use std::io::Cursor;
use std::time::{Duration, Instant};

use common::{Client, SECRET, TestServer};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

/// A directory both gateways of a test's cluster share (and standalone
/// uses instead of `<data>/uploads`).
fn uploads_dir() -> String {
    let dir = std::env::temp_dir().join(format!("confab-uploads-{:016x}", rand_u64()));
    dir.to_string_lossy().into_owned()
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    h.finish()
}

fn shared() -> Vec<String> {
    vec![format!("--uploads-dir={}", uploads_dir()), "--upload-sweep-ms=100".into()]
}

fn small() -> Vec<String> {
    [shared(), vec!["--max-upload-bytes=100000".into()]].concat()
}

fn two_at_once() -> Vec<String> {
    [shared(), vec!["--max-concurrent-uploads=2".into()]].concat()
}

fn short_lived() -> Vec<String> {
    [shared(), vec!["--upload-ttl-secs=1".into()]].concat()
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 90]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

/// A JPEG carrying an EXIF block with a GPS position.
fn jpeg_with_gps(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(width, height, image::Rgb([10, 200, 30]));
    let mut plain = Vec::new();
    image::DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut plain), image::ImageFormat::Jpeg).unwrap();
    let payload = b"Exif\0\0MM\0*GPSLatitude 48.8584 N GPSLongitude 2.2945 E";
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    app1.extend_from_slice(payload);
    [&plain[..2], &app1[..], &plain[2..]].concat()
}

/// Alice and Bob, connected, both members of room `r`: their tokens and
/// clients.
async fn two_members(s: &TestServer) -> (String, String, Client, Client) {
    let alice_token = s.user("alice").await;
    let bob_token = s.user("bob").await;
    let mut alice = s.connect(&alice_token).await;
    let mut bob = s.connect(&bob_token).await;
    alice.join("r").await;
    bob.join("r").await;
    (alice_token, bob_token, alice, bob)
}

async fn upload(s: &TestServer, token: &str, room: &str, name: &str, body: Vec<u8>, declared: &str) -> (u16, Value) {
    let url = format!("{}/v1/uploads?room={room}&filename={name}", s.http);
    let r = s.client.post(url).bearer_auth(token).header("content-type", declared).body(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn download(
    s: &TestServer,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, Vec<u8>) {
    let mut req = s.client.get(format!("{}{path}", s.http));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let (status, h) = (r.status().as_u16(), r.headers().clone());
    (status, h, r.bytes().await.unwrap().to_vec())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).map(HeaderValue::to_str).and_then(Result::ok).unwrap_or("")
}

async fn sign(s: &TestServer, token: &str, id: &str) -> (u16, Value) {
    let r = s.client.post(format!("{}/v1/uploads/{id}/sign", s.http)).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Polls until `done` holds (each poll is a request), or fails the test.
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn an_image_is_sent_received_and_downloaded_by_another_member(s: TestServer) {
    let (alice_token, bob_token, mut alice, mut bob) = two_members(&s).await;

    let bytes = png(640, 480);
    let (status, a) = upload(&s, &alice_token, "r", "cat.png", bytes.clone(), "image/png").await;
    assert_eq!(status, 201, "{a}");
    let id = a["id"].as_str().unwrap().to_owned();
    assert_eq!(a["url"], format!("/v1/uploads/{id}"));
    assert_eq!(a["thumbnail_url"], format!("/v1/uploads/{id}/thumbnail"));
    assert_eq!((a["name"].as_str(), a["content_type"].as_str()), (Some("cat.png"), Some("image/png")));
    assert_eq!((a["width"].as_u64(), a["height"].as_u64()), (Some(640), Some(480)));
    assert_eq!(a["size"].as_u64(), Some(bytes.len() as u64));

    // Not sent yet: the uploader's alone.
    assert_eq!(download(&s, &format!("/v1/uploads/{id}"), Some(&bob_token), &[]).await.0, 404);
    assert_eq!(download(&s, &format!("/v1/uploads/{id}"), Some(&alice_token), &[]).await.0, 200);

    alice.ok(json!({"op":"send","room":"r","text":"","cid":"c1","attachments":[id]})).await;
    let msg = bob.next_event("msg").await;
    assert_eq!(msg["text"], "");
    assert_eq!(msg["attachments"], json!([a]), "the message carries the attachment as uploaded");
    let page = bob.ok(json!({"op":"history","room":"r"})).await;
    assert_eq!(page["messages"][0]["attachments"], json!([a]));

    // Bob downloads it: the same bytes, shown inline, never sniffed.
    let (status, h, got) = download(&s, a["url"].as_str().unwrap(), Some(&bob_token), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(got, bytes);
    assert_eq!(header(&h, "content-type"), "image/png");
    assert!(header(&h, "content-disposition").starts_with("inline"), "{h:?}");
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert!(header(&h, "cache-control").starts_with("private, max-age="), "{h:?}");
    assert_eq!(header(&h, "accept-ranges"), "bytes");
    let etag = header(&h, "etag").to_owned();
    assert!(!etag.is_empty());
    assert_eq!(download(&s, a["url"].as_str().unwrap(), Some(&bob_token), &[("if-none-match", &etag)]).await.0, 304);

    // A range, and one outside the file.
    let (status, h, part) =
        download(&s, a["url"].as_str().unwrap(), Some(&bob_token), &[("range", "bytes=8-15")]).await;
    assert_eq!(status, 206);
    assert_eq!(part, bytes[8..16]);
    assert_eq!(header(&h, "content-range"), format!("bytes 8-15/{}", bytes.len()));
    let far = format!("bytes={}-", bytes.len() + 10);
    let (status, h, _) = download(&s, a["url"].as_str().unwrap(), Some(&bob_token), &[("range", &far)]).await;
    assert_eq!(status, 416);
    assert_eq!(header(&h, "content-range"), format!("bytes */{}", bytes.len()));

    // The thumbnail: at most 320 pixels on the long side, proportions kept.
    let (status, _, thumb) = download(&s, a["thumbnail_url"].as_str().unwrap(), Some(&bob_token), &[]).await;
    assert_eq!(status, 200);
    let thumb = image::load_from_memory(&thumb).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (320, 240));

    // An attachment is sent once.
    let again = json!({"op":"send","room":"r","text":"again","cid":"c2","attachments":[id]});
    assert_eq!(alice.error(again).await, "not_found");
    // Nobody attaches another's upload.
    let (_, mine) = upload(&s, &bob_token, "r", "b.txt", b"bob's".to_vec(), "text/plain").await;
    let theirs = json!({"op":"send","room":"r","text":"x","cid":"c3","attachments":[mine["id"]]});
    assert_eq!(alice.error(theirs).await, "not_found");
}

async fn signed_urls_work_without_a_token_until_they_expire_or_are_changed(s: TestServer) {
    let (alice_token, bob_token, mut alice, _bob) = two_members(&s).await;
    let bytes = png(40, 30);
    let (_, a) = upload(&s, &alice_token, "r", "dot.png", bytes.clone(), "image/png").await;
    let id = a["id"].as_str().unwrap().to_owned();
    alice.ok(json!({"op":"send","room":"r","text":"look","cid":"c1","attachments":[id]})).await;

    let (status, signed) = sign(&s, &bob_token, &id).await;
    assert_eq!(status, 200, "{signed}");
    let url = signed["url"].as_str().unwrap();
    assert!(signed["expires_at"].as_u64().unwrap() > 0);
    let (status, h, got) = download(&s, url, None, &[]).await;
    assert_eq!((status, got), (200, bytes));
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert_eq!(download(&s, signed["thumbnail_url"].as_str().unwrap(), None, &[]).await.0, 200);

    // Changed: another user, another expiry, another signature.
    assert_eq!(download(&s, &url.replace("user=bob", "user=alice"), None, &[]).await.0, 403);
    let exp = signed["expires_at"].as_u64().unwrap();
    assert_eq!(
        download(&s, &url.replace(&format!("exp={exp}"), &format!("exp={}", exp + 1000)), None, &[]).await.0,
        403
    );
    let sig = url.rsplit("sig=").next().unwrap();
    let flipped: String = sig.chars().rev().collect();
    assert_eq!(download(&s, &url.replace(sig, &flipped), None, &[]).await.0, 403);

    // Expired: signed right (with the cluster's secret) but in the past.
    let key = confab_gateway::uploads::url_key(SECRET.as_bytes());
    let past = exp - 7200;
    let sig = confab_gateway::uploads::signature(&key, &id, false, "bob", past);
    let expired = format!("/v1/uploads/{id}?user=bob&exp={past}&sig={sig}");
    assert_eq!(download(&s, &expired, None, &[]).await.0, 403);
    // The same, with a time to come, is good: the refusal was the expiry.
    let future = exp + 60;
    let sig = confab_gateway::uploads::signature(&key, &id, false, "bob", future);
    assert_eq!(download(&s, &format!("/v1/uploads/{id}?user=bob&exp={future}&sig={sig}"), None, &[]).await.0, 200);
    // Without token or signature: unauthorized.
    assert_eq!(download(&s, &format!("/v1/uploads/{id}"), None, &[]).await.0, 401);
}

async fn only_members_upload_and_download_and_a_kicked_member_loses_access(s: TestServer) {
    let alice_token = s.user("alice").await;
    let bob_token = s.user("bob").await;
    let carol_token = s.user("carol").await;
    let mut alice = s.connect(&alice_token).await;
    let mut bob = s.connect(&bob_token).await;
    alice.join("r").await;
    bob.join("r").await;

    // Carol is no member: she neither uploads nor downloads.
    let (status, body) = upload(&s, &carol_token, "r", "x.txt", b"hello".to_vec(), "text/plain").await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("not_member")));
    let (_, a) = upload(&s, &alice_token, "r", "notes.txt", b"meeting at noon".to_vec(), "text/plain").await;
    let id = a["id"].as_str().unwrap().to_owned();
    alice.ok(json!({"op":"send","room":"r","text":"notes","cid":"c1","attachments":[id]})).await;
    assert_eq!(download(&s, &format!("/v1/uploads/{id}"), Some(&carol_token), &[]).await.0, 403);
    assert_eq!(sign(&s, &carol_token, &id).await.0, 403);

    // Bob has it, and a signed URL, until he is kicked.
    assert_eq!(download(&s, &format!("/v1/uploads/{id}"), Some(&bob_token), &[]).await.0, 200);
    let (_, signed) = sign(&s, &bob_token, &id).await;
    let url = signed["url"].as_str().unwrap().to_owned();
    alice.ok(json!({"op":"kick","room":"r","user":"bob"})).await;
    eventually("the kicked member loses access", || async {
        download(&s, &format!("/v1/uploads/{id}"), Some(&bob_token), &[]).await.0 == 403
    })
    .await;
    assert_eq!(download(&s, &url, None, &[]).await.0, 403, "the signed URL too");
    // Alice, still a member, is not affected.
    assert_eq!(download(&s, &format!("/v1/uploads/{id}"), Some(&alice_token), &[]).await.0, 200);
    drop(bob);
}

async fn large_and_disallowed_uploads_are_refused_and_html_is_a_download(s: TestServer) {
    let alice_token = s.user("alice").await;
    let mut alice = s.connect(&alice_token).await;
    alice.join("r").await;

    let (status, body) = upload(&s, &alice_token, "r", "big.txt", vec![b'a'; 200_000], "text/plain").await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("too_large")));
    let (status, body) = upload(&s, &alice_token, "r", "x.bin", vec![0, 1, 2, 3, 0xFE], "image/png").await;
    assert_eq!(status, 415, "{body}");

    // HTML declared as a PNG: kept as text, served as a download.
    let html = b"<html><body><script>alert(document.cookie)</script></body></html>".to_vec();
    let (status, a) = upload(&s, &alice_token, "r", "cat.png", html.clone(), "image/png").await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["content_type"], "text/plain");
    assert!(a.get("thumbnail_url").is_none() && a.get("width").is_none());
    let (status, h, got) = download(&s, a["url"].as_str().unwrap(), Some(&alice_token), &[]).await;
    assert_eq!((status, got), (200, html));
    assert!(header(&h, "content-disposition").starts_with("attachment"), "{h:?}");
    assert_eq!(header(&h, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    // Still usable in the room.
    alice.ok(json!({"op":"send","room":"r","text":"","cid":"c1","attachments":[a["id"]]})).await;
}

/// An upload whose headers and first bytes are sent and whose body is then
/// held back: in flight on the server until the connection is dropped.
async fn held_upload(s: &TestServer, token: &str, room: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = s.http.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/uploads?room={room}&filename=held.txt HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: text/plain\r\nContent-Length: 1000000\r\n\r\nthe start of a long text that never ends"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp
}

async fn too_many_uploads_at_once_are_refused_until_one_ends(s: TestServer) {
    let (alice_token, bob_token, mut alice, mut bob) = two_members(&s).await;
    let mut held = vec![held_upload(&s, &alice_token, "r").await, held_upload(&s, &alice_token, "r").await];

    // Once the gateway counts both, a third is refused before its body is read.
    let url = format!("{}/v1/uploads?room=r&filename=third.txt", s.http);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (h, body) = loop {
        // A third sent before the server read a held one's head takes its
        // place, and the held one is refused: hold another instead.
        for tcp in held.iter_mut() {
            let mut buf = [0u8; 512];
            if !matches!(tcp.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                *tcp = held_upload(&s, &alice_token, "r").await;
            }
        }
        let r = s.client.post(&url).bearer_auth(&alice_token).body("a third file").send().await.unwrap();
        let (status, h) = (r.status().as_u16(), r.headers().clone());
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status == 429 {
            break (h, body);
        }
        // Before the held uploads are counted, a small one goes through.
        assert_eq!(status, 201, "{body}");
        if Instant::now() >= deadline {
            // What the held uploads were answered, if anything: why they
            // were not in flight.
            let answers: Vec<String> = held
                .iter()
                .map(|tcp| {
                    let mut buf = [0u8; 512];
                    match tcp.try_read(&mut buf) {
                        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
                        Err(e) => format!("nothing ({e})"),
                    }
                })
                .collect();
            panic!("a third upload at once was never refused; the held uploads got: {answers:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("at most 2 uploads at once"), "{body}");
    assert_eq!(header(&h, "retry-after"), "1");

    // Another user is not affected.
    let (status, b) = upload(&s, &bob_token, "r", "bob.txt", b"bob's file".to_vec(), "text/plain").await;
    assert_eq!(status, 201, "{b}");
    bob.ok(json!({"op":"send","room":"r","text":"","cid":"c1","attachments":[b["id"]]})).await;

    // Once her held uploads end (their client went away), alice uploads again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let (status, a) = upload(&s, &alice_token, "r", "later.txt", b"later".to_vec(), "text/plain").await;
        if status == 201 {
            break a;
        }
        assert_eq!(status, 429, "{a}");
        assert!(Instant::now() < deadline, "alice could not upload again once hers had ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    alice.ok(json!({"op":"send","room":"r","text":"later","cid":"c2","attachments":[done["id"]]})).await;
    let (status, _, got) = download(&s, done["url"].as_str().unwrap(), Some(&bob_token), &[]).await;
    assert_eq!((status, got), (200, b"later".to_vec()));
}

async fn exif_location_is_stripped_from_a_jpeg(s: TestServer) {
    let token = s.user("alice").await;
    let mut alice = s.connect(&token).await;
    alice.join("r").await;
    let jpeg = jpeg_with_gps(64, 48);
    assert!(jpeg.windows(11).any(|w| w == b"GPSLatitude"));
    let (status, a) = upload(&s, &token, "r", "photo.jpg", jpeg.clone(), "image/jpeg").await;
    assert_eq!(status, 201, "{a}");
    assert_eq!((a["width"].as_u64(), a["height"].as_u64()), (Some(64), Some(48)));
    let (status, _, got) = download(&s, a["url"].as_str().unwrap(), Some(&token), &[]).await;
    assert_eq!(status, 200);
    assert!(!got.windows(11).any(|w| w == b"GPSLatitude"), "the location is gone");
    assert!(!got.windows(4).any(|w| w == b"Exif"), "the EXIF block is gone");
    assert_eq!(got.len() as u64, a["size"].as_u64().unwrap(), "size is what is served");
    let img = image::load_from_memory(&got).unwrap();
    assert_eq!((img.width(), img.height()), (64, 48), "the picture is intact");
}

async fn deleting_a_message_deletes_its_attachments(s: TestServer) {
    let (alice_token, bob_token, mut alice, mut bob) = two_members(&s).await;
    let (_, a) = upload(&s, &alice_token, "r", "a.png", png(20, 20), "image/png").await;
    let sent = alice.ok(json!({"op":"send","room":"r","text":"oops","cid":"c1","attachments":[a["id"]]})).await;
    let seq = sent["seq"].as_u64().unwrap();
    let url = a["url"].as_str().unwrap().to_owned();
    assert_eq!(download(&s, &url, Some(&bob_token), &[]).await.0, 200);
    alice.ok(json!({"op":"delete","room":"r","seq":seq})).await;
    bob.next_event("delete").await;
    assert_eq!(download(&s, &url, Some(&bob_token), &[]).await.0, 404);
    assert_eq!(download(&s, &url, Some(&alice_token), &[]).await.0, 404);
    assert_eq!(download(&s, a["thumbnail_url"].as_str().unwrap(), Some(&alice_token), &[]).await.0, 404);
    let page = bob.ok(json!({"op":"history","room":"r"})).await;
    assert!(page["messages"][0].get("attachments").is_none(), "{page}");
}

async fn deleting_an_account_deletes_its_attachments(s: TestServer) {
    let (alice_token, bob_token, mut alice, mut bob) = two_members(&s).await;
    let (_, a) = upload(&s, &alice_token, "r", "a.txt", b"mine".to_vec(), "text/plain").await;
    alice.ok(json!({"op":"send","room":"r","text":"","cid":"c1","attachments":[a["id"]]})).await;
    let (_, kept) = upload(&s, &bob_token, "r", "b.txt", b"bob's".to_vec(), "text/plain").await;
    bob.ok(json!({"op":"send","room":"r","text":"","cid":"c1","attachments":[kept["id"]]})).await;
    let url = a["url"].as_str().unwrap().to_owned();
    assert_eq!(download(&s, &url, Some(&bob_token), &[]).await.0, 200);
    let r = s
        .client
        .delete(format!("{}/v1/account", s.http))
        .bearer_auth(&alice_token)
        .json(&json!({"password":"password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(download(&s, &url, Some(&bob_token), &[]).await.0, 404);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = bob.ok(json!({"op":"history","room":"r"})).await;
        if page["messages"][0].get("attachments").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "the erased message keeps its attachments: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bob's own attachment stays.
    assert_eq!(download(&s, kept["url"].as_str().unwrap(), Some(&bob_token), &[]).await.0, 200);
}

async fn an_upload_never_sent_is_swept(s: TestServer) {
    let token = s.user("alice").await;
    let mut alice = s.connect(&token).await;
    alice.join("r").await;
    let (_, a) = upload(&s, &token, "r", "draft.txt", b"never sent".to_vec(), "text/plain").await;
    let id = a["id"].as_str().unwrap().to_owned();
    eventually("the unsent upload is deleted", || async {
        download(&s, &format!("/v1/uploads/{id}"), Some(&token), &[]).await.0 == 404
    })
    .await;
    let late = json!({"op":"send","room":"r","text":"x","cid":"c1","attachments":[id]});
    assert_eq!(alice.error(late).await, "not_found");
}

on_every_mode_with!(
    attachments,
    gateway: shared;
    an_image_is_sent_received_and_downloaded_by_another_member,
    signed_urls_work_without_a_token_until_they_expire_or_are_changed,
    only_members_upload_and_download_and_a_kicked_member_loses_access,
    exif_location_is_stripped_from_a_jpeg,
    deleting_a_message_deletes_its_attachments,
    deleting_an_account_deletes_its_attachments,
);

on_every_mode_with!(
    limits,
    gateway: small;
    large_and_disallowed_uploads_are_refused_and_html_is_a_download,
);

on_every_mode_with!(
    at_once,
    gateway: two_at_once;
    too_many_uploads_at_once_are_refused_until_one_ends,
);

on_every_mode_with!(
    sweeping,
    gateway: short_lived;
    an_upload_never_sent_is_swept,
);
