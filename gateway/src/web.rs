//! The web client, built into the binary from `web/dist` (three files), so
//! running Confab needs no Node. Paths without an extension fall back to
//! `index.html` for the client's own routing.

use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use confab_protocol::ProtocolError;

/// One file of `web/dist`.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: Asset = Asset {
    path: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../web/dist/index.html"),
};

const ASSETS: &[Asset] = &[
    INDEX,
    Asset {
        path: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/dist/app.js"),
    },
    Asset { path: "app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../../web/dist/app.css") },
];

/// What the page may load and who may frame it: its own files, the
/// favicon's `data:` URL and WebSockets (to this server or another one the
/// user names); no inline scripts, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

pub async fn asset(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { INDEX.path } else { path };
    let asset = match ASSETS.iter().find(|a| a.path == path) {
        Some(asset) => asset,
        None if !path.contains('.') && !path.starts_with("v1/") => &INDEX,
        None => return not_found(),
    };
    // The page always revalidates; the files it names may be cached.
    let cache = if asset.path == INDEX.path { "no-cache" } else { "public, max-age=3600" };
    let headers = [
        (header::CONTENT_TYPE, asset.content_type),
        (header::CACHE_CONTROL, cache),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, asset.body).into_response()
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
    async fn every_file_is_served_with_a_content_security_policy_and_nosniff() {
        for path in ["/", "/app.js", "/app.css", "/rooms/general"] {
            let response = asset(path.parse().unwrap()).await;
            let header = |name| response.headers().get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
            let csp = header(header::CONTENT_SECURITY_POLICY).unwrap_or_else(|| panic!("{path}: no CSP"));
            assert!(csp.starts_with("default-src 'self';"), "{path}: {csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
            assert_eq!(header(header::X_CONTENT_TYPE_OPTIONS), Some("nosniff"), "{path}");
        }
    }

    #[test]
    fn every_file_of_web_dist_is_served() {
        let dir = format!("{}/../web/dist", env!("CARGO_MANIFEST_DIR"));
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(ASSETS.iter().any(|a| a.path == name), "web/dist/{name} is not in ASSETS");
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
