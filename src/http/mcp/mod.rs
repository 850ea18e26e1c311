//! `/v1/apps/{id}/mcp`: the Model Context Protocol (streamable HTTP, revision 2025-11-25) for AI
//! assistants, one endpoint per app, served by the official Rust SDK (rmcp) in stateless mode.
//!
//! This layer does what rmcp cannot know: the bearer token (401 with the RFC 9728 metadata
//! address when it is missing or invalid), whether the caller may use the app (404 otherwise,
//! as for the query route), the request size, and clients' cancellations (see [`cancel`]).
//! The tools ([`tools`]) run statements through the query service, like the query route.

mod cancel;
mod tools;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::{AppState, RequestId};
use crate::code::Code;
use crate::identity::{AuthError, Caller, authenticate};
use crate::model::AppId;
use crate::permission::{self, AppAction, Decision};
use cancel::Cancels;
use tools::AppServer;

/// Who called, through which app: put in the request's extensions for the tools.
pub(crate) struct McpCall {
    pub caller: Caller,
    pub app_id: String,
    pub request_id: String,
}

/// The MCP transport: rmcp's service and the calls in flight.
struct Mcp {
    service: StreamableHttpService<AppServer, NeverSessionManager>,
    cancels: Arc<Cancels>,
    max_request_bytes: usize,
    public_url: Option<String>,
}

pub fn routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let cfg = &state.config.mcp;
    let cancels = Arc::new(Cancels::default());
    let server = AppServer::new(state.clone(), cancels.clone());
    let config = StreamableHttpServerConfig::default()
        // Stateless: every POST is answered on its own, so any replica can serve any request
        // and nothing is kept between requests (README, "Use sluice from an AI assistant").
        .with_legacy_session_mode(false)
        // A tool's answer is one JSON document: no event stream to hold open or resume.
        .with_json_response(true)
        // rmcp's default accepts only loopback `Host`s, against DNS rebinding of servers that
        // trust whoever can reach them. Every request here carries a bearer token, which a
        // rebound page cannot send, and a gateway is reached under names it cannot list.
        .disable_allowed_hosts()
        .with_max_request_body_bytes(cfg.max_request_bytes);
    let mcp = Arc::new(Mcp {
        service: StreamableHttpService::new(
            move || Ok(server.clone()),
            Arc::new(NeverSessionManager::default()),
            config,
        ),
        cancels,
        max_request_bytes: cfg.max_request_bytes,
        public_url: cfg
            .public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned()),
    });
    Router::new()
        .route("/v1/apps/{id}/mcp", any(endpoint))
        .route(
            "/.well-known/oauth-protected-resource/v1/apps/{id}/mcp",
            get(metadata),
        )
        .layer(axum::Extension(mcp))
}

/// The JSON-RPC fields needed to recognise a cancellation.
#[derive(Deserialize)]
struct Peek {
    method: Option<String>,
    id: Option<serde_json::Value>,
    params: Option<CancelParams>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelParams {
    request_id: Option<serde_json::Value>,
}

async fn endpoint(
    State(state): State<Arc<AppState>>,
    axum::Extension(mcp): axum::Extension<Arc<Mcp>>,
    Path(app_id): Path<String>,
    req: Request,
) -> Response {
    let header_text = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let view = match state.view() {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let caller = match authenticate(&view, header_text, chrono::Utc::now()) {
        Ok(c) => c,
        Err(e) => return unauthenticated(&mcp, &state, req.headers(), &app_id, e),
    };
    tracing::Span::current().record("user_id", caller.user.id.as_str());
    let usable = caller
        .company
        .apps
        .get(&AppId(app_id.clone()))
        .is_some_and(|a| permission::app(&caller.principal(), &a.acl(), AppAction::Use).is_allow());
    if !usable {
        // What the query route answers: an app the caller may not use does not exist for them.
        return ApiError::coded(&Decision::NotFound).into_response();
    }
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let (mut parts, body) = req.into_parts();
    let token_id = caller.token_id.as_str().to_owned();
    parts.extensions.insert(Arc::new(McpCall {
        caller,
        app_id,
        request_id,
    }));
    if parts.method != axum::http::Method::POST {
        // GET (a server-to-client stream) and DELETE (ending a session) have no meaning without
        // sessions: rmcp answers 405 as the transport specifies.
        return into_axum(mcp.service.handle(Request::from_parts(parts, body)).await);
    }
    let bytes = match axum::body::to_bytes(body, mcp.max_request_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                Code::PayloadTooLarge,
                "request body is larger than the limit (mcp.max_request_bytes)",
            )
            .into_response();
        }
    };
    if let Some(id) = cancelled_request(&bytes) {
        let found = mcp.cancels.cancel(&token_id, id);
        tracing::info!(found, "MCP client cancelled a request");
        return StatusCode::ACCEPTED.into_response();
    }
    let req = Request::from_parts(parts, http_body_util::Full::new(bytes));
    into_axum(mcp.service.handle(req).await)
}

/// The request id a `notifications/cancelled` names, as JSON text (how calls are registered).
fn cancelled_request(body: &Bytes) -> Option<String> {
    // Most bodies are not cancellations: parse only those that may be.
    const METHOD: &[u8] = b"notifications/cancelled";
    if !body.windows(METHOD.len()).any(|w| w == METHOD) {
        return None;
    }
    let peek: Peek = serde_json::from_slice(body).ok()?;
    if peek.method.as_deref() != Some("notifications/cancelled") || peek.id.is_some() {
        return None;
    }
    peek.params?.request_id.map(|id| id.to_string())
}

fn into_axum<B>(res: axum::http::Response<B>) -> Response
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    res.map(Body::new)
}

/// 401 with where a spec-following client learns how to authenticate (RFC 9728 §5.1); a token
/// that was presented but not accepted is also named `invalid_token` (RFC 6750 §3.1).
fn unauthenticated(
    mcp: &Mcp,
    state: &AppState,
    headers: &HeaderMap,
    app_id: &str,
    e: AuthError,
) -> Response {
    tracing::info!(reason = %e, "MCP request without a valid token");
    let url = metadata_url(mcp, state, headers, app_id);
    let challenge = match e {
        AuthError::Missing => format!("Bearer resource_metadata=\"{url}\""),
        _ => format!("Bearer error=\"invalid_token\", resource_metadata=\"{url}\""),
    };
    let mut res = ApiError::coded(&e).into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// RFC 9728 protected resource metadata of one app's endpoint. Public (a client reads it before
/// it has a token) and the same for every id, so it tells nobody whether an app exists.
async fn metadata(
    State(state): State<Arc<AppState>>,
    axum::Extension(mcp): axum::Extension<Arc<Mcp>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let base = base_url(&mcp, &state, &headers);
    let app = path_segment(&app_id);
    axum::Json(json!({
        "resource": format!("{base}/v1/apps/{app}/mcp"),
        // No authorization server: tokens are issued by sluice's own API to API users
        // (README, "Use sluice from an AI assistant").
        "bearer_methods_supported": ["header"],
        "resource_name": "sluice app",
        "resource_documentation": format!("{base}/openapi.json"),
    }))
    .into_response()
}

fn metadata_url(mcp: &Mcp, state: &AppState, headers: &HeaderMap, app_id: &str) -> String {
    format!(
        "{}/.well-known/oauth-protected-resource/v1/apps/{}/mcp",
        base_url(mcp, state, headers),
        path_segment(app_id)
    )
}

/// The configured public URL, else the one the client used to reach us (its `Host`, and
/// `X-Forwarded-Proto` from a TLS-terminating proxy). Either way only this client's own answer
/// carries it.
fn base_url(mcp: &Mcp, state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &mcp.public_url {
        return u.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| state.config.listen.to_string());
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// An app id as one URL path segment: ids are `app_…` in practice; anything else is
/// percent-encoded so it cannot end the header's quoted string or the path.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes().take(128) {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_cancellation_notification_names_a_request() {
        let c = |s: &str| cancelled_request(&Bytes::from(s.to_owned()));
        assert_eq!(
            c(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}"#),
            Some("3".into())
        );
        assert_eq!(
            c(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"a"}}"#),
            Some("\"a\"".into())
        );
        // A request (it has an id) that merely mentions the method is not one.
        assert_eq!(
            c(
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query","arguments":{"sql":"SELECT 'notifications/cancelled'"}}}"#
            ),
            None
        );
        assert_eq!(
            c(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}"#),
            None
        );
    }

    #[test]
    fn an_app_id_cannot_break_out_of_its_path_segment() {
        assert_eq!(path_segment("app_01ab"), "app_01ab");
        assert_eq!(path_segment("a\"b/c d"), "a%22b%2Fc%20d");
    }
}
