//! The browser console: `GET /` and its static assets, compiled into the binary.
//!
//! The console is vanilla ES modules run as they are written (no bundler, no Node step), so the
//! files under `console/` are the files served and nothing can go stale. It holds no secret and
//! no route of its own beyond these files: every action it offers is a call to the public `/v1`
//! API with the signed-in user's bearer token, so it can do nothing that token could not do
//! with curl.
//!
//! Every answer here carries a strict Content-Security-Policy (scripts and styles only from this
//! origin: no inline code, no `eval`), refuses framing, and turns off MIME sniffing, so even a
//! server-supplied string that slipped into the DOM as markup could not run.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

use super::AppState;
use super::error::ApiError;

/// The policy on every console answer. `connect-src 'self'`: the page talks only to this
/// gateway. `img-src 'self'`: the favicon, nothing else (no remote images, no `data:`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One file under `console/`: its name in the URL, its media type and its bytes.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $media:expr) => {
        Asset {
            name: $name,
            media_type: $media,
            body: include_str!(concat!("../../console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the console is made of. `index.html` is served at `/`, the rest at
/// `/console/<name>`.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/ui.js", JS),
    asset!("js/roles.js", JS),
    asset!("js/screens/integrations.js", JS),
    asset!("js/screens/datasources.js", JS),
    asset!("js/screens/apps.js", JS),
    asset!("js/screens/people.js", JS),
    asset!("js/screens/audit.js", JS),
    asset!("js/screens/query.js", JS),
];

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/console/{*name}", get(file))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn index() -> Response {
    serve("index.html")
}

async fn file(Path(name): Path<String>) -> Response {
    if name == "index.html" {
        // One address per file: the page lives at `/`.
        return ApiError::not_found().into_response();
    }
    serve(&name)
}

fn serve(name: &str) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, a.media_type),
                // Revalidate each load so an upgraded binary's console is used at once; the
                // files are small and served from memory.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            a.body,
        )
            .into_response(),
        None => ApiError::not_found().into_response(),
    }
}

/// Adds the console's security headers to every answer of these routes (errors included).
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_no_inline_code_no_eval_and_no_framing() {
        for banned in [
            "unsafe-inline",
            "unsafe-eval",
            "unsafe-hashes",
            "data:",
            "*",
        ] {
            assert!(
                !CONTENT_SECURITY_POLICY.contains(banned),
                "the policy must not allow {banned}"
            );
        }
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self'"));
    }

    /// Each module the page imports must be served, or the console fails to start in a browser.
    #[test]
    fn every_local_file_the_console_references_is_served() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        for a in ASSETS {
            let refs = references(a.name, a.body);
            for r in refs {
                assert!(
                    names.contains(&r.as_str()),
                    "{} references {r}, which is not in ASSETS",
                    a.name
                );
            }
        }
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let imported = ASSETS
                .iter()
                .any(|b| references(b.name, b.body).iter().any(|r| r == a.name));
            assert!(imported, "{} is served but nothing loads it", a.name);
        }
    }

    /// `/console/...` paths in HTML and `./x.js` / `../x.js` imports in modules, resolved to
    /// asset names.
    fn references(from: &str, body: &str) -> Vec<String> {
        let mut out = Vec::new();
        for piece in body.split(['"', '\'']) {
            if let Some(rest) = piece.strip_prefix("/console/") {
                out.push(rest.to_owned());
            } else if from.ends_with(".js") && (piece.starts_with("./") || piece.starts_with("../"))
            {
                let mut dir: Vec<&str> = from.split('/').collect();
                dir.pop();
                for part in piece.split('/') {
                    match part {
                        "." => {}
                        ".." => {
                            dir.pop();
                        }
                        p => dir.push(p),
                    }
                }
                out.push(dir.join("/"));
            }
        }
        out
    }

    /// Server-supplied strings must reach the page as text. The browser tests prove it for the
    /// screens they visit; this keeps the HTML-parsing sinks out of every file, visited or not.
    #[test]
    fn no_console_file_uses_an_html_parsing_sink_or_eval() {
        for a in ASSETS {
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "setTimeout(\"",
                "javascript:",
                "style=",
            ] {
                assert!(
                    !a.body.contains(sink),
                    "{} contains {sink:?}; render server strings with textContent",
                    a.name
                );
            }
        }
    }

    #[test]
    fn the_page_loads_no_inline_script_or_style() {
        let html = ASSETS[0].body;
        assert!(
            !html.contains("<style"),
            "inline <style> needs unsafe-inline"
        );
        for chunk in html.split("<script").skip(1) {
            let tag_end = chunk.find('>').expect("a closed script tag");
            assert!(
                chunk[..tag_end].contains("src="),
                "inline <script> needs unsafe-inline"
            );
        }
    }
}
