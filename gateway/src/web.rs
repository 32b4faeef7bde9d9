//! The web client, embedded in the binary at build time from `web/dist`, so
//! running Confab needs no Node. Paths without an extension fall back to
//! `index.html` for the client's own routing.

use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use confab_protocol::ProtocolError;

#[derive(rust_embed::Embed)]
#[folder = "../web/dist/"]
struct Assets;

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

pub async fn asset(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let (path, file) = match Assets::get(path) {
        Some(file) => (path, file),
        None if !path.contains('.') && !path.starts_with("v1/") => match Assets::get("index.html") {
            Some(file) => ("index.html", file),
            None => return not_found(),
        },
        None => return not_found(),
    };
    let cache = if path == "index.html" { "no-cache" } else { "public, max-age=3600" };
    ([(header::CONTENT_TYPE, content_type(path)), (header::CACHE_CONTROL, cache)], file.data).into_response()
}

fn not_found() -> Response {
    let e = ProtocolError::new(confab_protocol::ErrorCode::NotFound, "no such path");
    (StatusCode::NOT_FOUND, axum::Json(confab_protocol::error::HttpErrorBody { error: e })).into_response()
}
