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

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(path: &str) -> (StatusCode, Option<String>, Option<String>, Vec<u8>) {
        let response = asset(path.parse().unwrap()).await;
        let header = |name| response.headers().get(name).map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned());
        let (status, content_type, cache) =
            (response.status(), header(header::CONTENT_TYPE), header(header::CACHE_CONTROL));
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, content_type, cache, body.to_vec())
    }

    fn dist(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../web/dist/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[tokio::test]
    async fn the_root_and_client_routes_serve_index_html_uncached() {
        for path in ["/", "/index.html", "/rooms/general"] {
            let (status, content_type, cache, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(content_type.as_deref(), Some("text/html; charset=utf-8"), "{path}");
            assert_eq!(cache.as_deref(), Some("no-cache"), "{path}");
            assert_eq!(body, dist("index.html"), "{path}");
        }
    }

    #[tokio::test]
    async fn scripts_and_styles_are_served_with_their_types_and_cached_for_an_hour() {
        for (path, want) in [("app.js", "text/javascript; charset=utf-8"), ("app.css", "text/css; charset=utf-8")] {
            let (status, content_type, cache, body) = get(&format!("/{path}")).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(content_type.as_deref(), Some(want), "{path}");
            assert_eq!(cache.as_deref(), Some("public, max-age=3600"), "{path}");
            assert_eq!(body, dist(path), "{path}");
        }
    }

    #[tokio::test]
    async fn missing_files_and_api_paths_are_not_found_as_protocol_errors() {
        for path in ["/missing.js", "/v1/nothing", "/v1/rooms/x/nothing"] {
            let (status, content_type, _, body) = get(path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(content_type.as_deref(), Some("application/json"), "{path}");
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"]["code"], "not_found", "{path}");
        }
    }
}
