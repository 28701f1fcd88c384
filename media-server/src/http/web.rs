//! The web page (`web/`, built into `http.web_dir`): `GET /` answers its
//! `index.html`, `GET /assets/{file}` and `GET /assets/{dir}/{file}` the
//! built files, for `{dir}` one of [`ASSET_DIRS`].
//!
//! Contract: a name from the URL reaches the filesystem only after
//! [`asset_path`] accepted it: one or two path segments, the first of two
//! from a fixed list, each a plain file name (`[A-Za-z0-9._-]`, starting
//! with a letter or digit, no `..`). Everything else is a 404 that opens
//! no file. A missing build is not an error of the server: `/` explains
//! which command builds the page.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

/// The command that builds the page into the default `http.web_dir`, run
/// from the repository root.
pub const BUILD_COMMAND: &str = "npm --prefix web ci && npm --prefix web run build";

/// Subfolders of the built page that may be served.
pub const ASSET_DIRS: &[&str] = &["gifts", "vendor"];

/// The page changes with every build, and its URLs carry no hash:
/// revalidate each time (cheap with the `ETag`).
const APP_CACHE: &str = "no-cache";
/// Player libraries and gift images change only with the lockfile or the
/// artwork; an hour of staleness is harmless.
const STATIC_CACHE: &str = "public, max-age=3600";

/// Where the built page lives.
#[derive(Debug, Clone)]
pub struct WebAssets {
    dir: PathBuf,
}

/// The page's routes, reading from `dir`.
pub fn router(dir: PathBuf) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/assets/{dir}/{file}", get(asset_in))
        .with_state(Arc::new(WebAssets { dir }))
}

/// Whether `name` is a plain file name we may have built.
fn valid_file_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && !name.contains("..")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The path below the web dir for a request, or `None` when the request
/// names anything but a built file (traversal, absolute paths, unknown
/// folders, odd characters). Sans-IO: looks at the names only.
pub fn asset_path(dir: Option<&str>, file: &str) -> Option<PathBuf> {
    if !valid_file_name(file) {
        return None;
    }
    match dir {
        None => Some(PathBuf::from(file)),
        Some(d) if ASSET_DIRS.contains(&d) => Some(Path::new(d).join(file)),
        Some(_) => None,
    }
}

/// The content type for a built file, by extension.
pub fn mime_for(file: &str) -> &'static str {
    let ext = file.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

async fn index(State(web): State<Arc<WebAssets>>, headers: HeaderMap) -> Response {
    match tokio::fs::read(web.dir.join("index.html")).await {
        Ok(body) => file_response(body, "index.html", APP_CACHE, &headers),
        Err(e) => {
            let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
            tracing::warn!(web_dir = %web.dir.display(), %cwd, error = %e, "web page not built");
            not_built(&web.dir)
        }
    }
}

async fn asset(State(web): State<Arc<WebAssets>>, UrlPath(file): UrlPath<String>, headers: HeaderMap) -> Response {
    serve(&web, None, &file, &headers).await
}

async fn asset_in(
    State(web): State<Arc<WebAssets>>,
    UrlPath((dir, file)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    serve(&web, Some(&dir), &file, &headers).await
}

async fn serve(web: &WebAssets, dir: Option<&str>, file: &str, headers: &HeaderMap) -> Response {
    let Some(rel) = asset_path(dir, file) else {
        return plain(StatusCode::NOT_FOUND, "not found: assets are plain file names under /assets/");
    };
    let cache = if dir.is_some() { STATIC_CACHE } else { APP_CACHE };
    match tokio::fs::read(web.dir.join(&rel)).await {
        Ok(body) => file_response(body, file, cache, headers),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            plain(StatusCode::NOT_FOUND, &format!("no asset '{}': is the web page built? ({BUILD_COMMAND})", rel.display()))
        }
        Err(e) => {
            tracing::error!(file = %rel.display(), error = %e, "web asset unreadable");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "asset unreadable")
        }
    }
}

/// The file with its type, cache policy and a content `ETag`; a `304`
/// when the client already holds this version.
fn file_response(body: Vec<u8>, file: &str, cache: &'static str, headers: &HeaderMap) -> Response {
    let digest = Sha256::digest(&body);
    let etag = format!("\"{}\"", hex::encode(&digest[..8]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { body.into_response() };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime_for(file)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut resp = (status, format!("{text}\n")).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// The page shown when `http.web_dir` holds no build.
fn not_built(dir: &Path) -> Response {
    let dir = html_escape(&dir.display().to_string());
    let command = html_escape(BUILD_COMMAND);
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>WeStream: web page not built</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">\
         <h1>The web page is not built</h1>\
         <p>The server looks for it in <code>{dir}</code> (<code>http.web_dir</code>, relative to the directory the \
         server was started in) and found no <code>index.html</code>. Build it from the repository root with:</p>\
         <pre>{command}</pre><p>then reload this page. Streams play without it: \
         <code>/live/{{channel}}.flv</code>, <code>/live/{{channel}}/index.m3u8</code>.</p></body></html>\n"
    );
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[test]
    fn only_plain_names_in_known_folders_map_to_a_path() {
        assert_eq!(asset_path(None, "app.js"), Some(PathBuf::from("app.js")));
        assert_eq!(asset_path(Some("gifts"), "flower.svg"), Some(PathBuf::from("gifts/flower.svg")));
        assert_eq!(asset_path(Some("vendor"), "hls.min.js"), Some(PathBuf::from("vendor/hls.min.js")));
        for bad in ["..", "../x", "..%2fx", ".hidden", "a/b", "a\\b", "/etc/passwd", "", "x..js", "a b", "é.js", "a\0b"] {
            assert_eq!(asset_path(None, bad), None, "{bad:?}");
            assert_eq!(asset_path(Some("gifts"), bad), None, "{bad:?}");
        }
        for dir in ["..", ".", "", "dist", "/", "gifts/..", "GIFTS"] {
            assert_eq!(asset_path(Some(dir), "x.svg"), None, "{dir:?}");
        }
    }

    #[test]
    fn types_follow_the_extension() {
        assert_eq!(mime_for("index.html"), "text/html; charset=utf-8");
        assert_eq!(mime_for("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(mime_for("style.css"), "text/css; charset=utf-8");
        assert_eq!(mime_for("flower.svg"), "image/svg+xml");
        assert_eq!(mime_for("noext"), "application/octet-stream");
    }

    /// A built dir `root/dist` beside a secret `root/secret.txt` that no
    /// request may read.
    fn fixture() -> (PathBuf, Router) {
        let root = std::env::temp_dir().join(format!("westream-web-{}-{:?}", std::process::id(), std::thread::current().id()));
        let dist = root.join("dist");
        std::fs::create_dir_all(dist.join("gifts")).unwrap();
        std::fs::write(dist.join("index.html"), "<!doctype html><title>WeStream</title>").unwrap();
        std::fs::write(dist.join("app.js"), "export {}").unwrap();
        std::fs::write(dist.join("gifts/kiss.svg"), "<svg/>").unwrap();
        std::fs::write(root.join("secret.txt"), "TOP-SECRET").unwrap();
        (root, router(dist))
    }

    async fn get(app: &Router, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn index_and_assets_are_served_with_type_and_cache_headers() {
        let (root, app) = fixture();
        let (status, h, body) = get(&app, "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("WeStream"));
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        let etag = h[header::ETAG].to_str().unwrap().to_string();
        let (status, _, body) = get(&app, "/", &[("if-none-match", &etag)]).await;
        assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));

        let (status, h, _) = get(&app, "/assets/app.js", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        let (status, h, body) = get(&app, "/assets/gifts/kiss.svg", &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "<svg/>"));
        assert_eq!(h[header::CONTENT_TYPE], "image/svg+xml");
        assert_eq!(h[header::CACHE_CONTROL], STATIC_CACHE);
        assert_eq!(get(&app, "/assets/nope.js", &[]).await.0, StatusCode::NOT_FOUND);
        let _ = std::fs::remove_dir_all(root);
    }

    #[tokio::test]
    async fn traversal_in_any_spelling_is_refused_and_reads_nothing() {
        let (root, app) = fixture();
        for uri in [
            "/assets/../secret.txt",
            "/assets/..%2fsecret.txt",
            "/assets/..%2Fsecret.txt",
            "/assets/%2e%2e/secret.txt",
            "/assets/%2E%2E%2Fsecret.txt",
            "/assets/gifts/..%2f..%2fsecret.txt",
            "/assets/gifts/../../secret.txt",
            "/assets/%2e%2e%2f%2e%2e%2fsecret.txt",
            "/assets/..%5csecret.txt",
            "/assets/%2Ftmp%2Fsecret.txt",
            "/assets//secret.txt",
            "/assets/dist/index.html",
            "/assets/.%2e/secret.txt",
            "/assets/gifts/%00kiss.svg",
        ] {
            let (status, _, body) = get(&app, uri, &[]).await;
            assert!(status.is_client_error(), "{uri}: {status}");
            assert!(!body.contains("TOP-SECRET"), "{uri} leaked the file");
        }
        let _ = std::fs::remove_dir_all(root);
    }

    #[tokio::test]
    async fn a_missing_build_names_the_command_that_makes_it() {
        let app = router(PathBuf::from("/nonexistent/westream/web/dist"));
        let (status, h, body) = get(&app, "/", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(body.contains(&html_escape(BUILD_COMMAND)), "{body}");
        assert!(body.contains("/nonexistent/westream/web/dist"), "{body}");
    }
}
