//! The web console at `/ui/`: a page shell and its scripts and styles, embedded in the binary,
//! served from the API's own listener. The pages read the same `/api/v1` the CLI does, signed in
//! with a session cookie (`POST /api/v1/sessions`). Every page answers with a Content-Security-Policy
//! that allows nothing but this origin: no inline script or style, no other host.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use edgefleet_shared::api::ErrorBody;

/// What the console's pages may load: this origin only, scripts as files (no inline script, no
/// eval), no framing, forms posting nowhere else.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset { name: $name, content_type: $type, body: include_bytes!(concat!("../console/", $name)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("charts.js", JS),
    asset!("overview.js", JS),
    asset!("devices.js", JS),
    asset!("models.js", JS),
    asset!("rollouts.js", JS),
    asset!("drift.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

/// Each asset's entity tag: its content's digest, so a browser revalidates cheaply.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS.iter().map(|a| format!("\"{}\"", &edgefleet_shared::verify::sha256_hex(a.body)[..16])).collect()
});

/// The console's routes: the page shell at `/ui/` and every page path under it (the pages route
/// in the browser, so a deep link loads the same shell), the assets under `/ui/assets/`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { axum::response::Redirect::permanent("/ui/") }))
        .route("/ui/", get(shell))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/{*page}", get(shell))
        .layer(middleware::map_response(secure_headers))
}

fn serve(ix: usize, headers: &HeaderMap) -> Response {
    let (a, etag) = (&ASSETS[ix], &ETAGS[ix]);
    if headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [(ETAG, etag.clone())]).into_response();
    }
    let cache = HeaderValue::from_static("no-cache");
    ([(CONTENT_TYPE, HeaderValue::from_static(a.content_type)), (CACHE_CONTROL, cache)], [(ETAG, etag.clone())], a.body)
        .into_response()
}

async fn shell(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == file && a.name != "index.html") {
        Some(ix) => serve(ix, &headers),
        None => {
            let error = ErrorBody { error: format!("no console asset {file:?}") };
            (StatusCode::NOT_FOUND, Json(error)).into_response()
        }
    }
}

/// The headers every console answer carries.
async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    h.insert(HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer"));
    h.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_once_and_the_shell_loads_only_files_of_its_own() {
        let mut names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len());
        let shell = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        assert!(!shell.contains("<script>") && !shell.contains("style="), "no inline script or style");
        for script in ["/ui/assets/app.js", "/ui/assets/style.css"] {
            assert!(shell.contains(script), "{script}");
        }
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).expect("utf-8");
            assert!(!text.contains("innerHTML") && !text.contains("eval("), "{}: builds nodes, never markup", a.name);
            let text = text.replace("\"http://www.w3.org/2000/svg\"", "SVG_NS");
            assert!(!text.contains("http://") && !text.contains("https://"), "{}: no other origin", a.name);
        }
    }
}
