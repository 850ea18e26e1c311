//! HTTP: the router, shared state and middleware (request ids, body limits, timeouts, panics).
//! Handlers live in one file per resource; only this layer picks status codes.

mod body_guard;
pub mod console;
pub mod error;
pub mod extract;
mod mcp;
pub mod openapi;
mod ops;
mod routes_apps;
mod routes_company;
mod routes_datasources;
mod routes_identity;
mod routes_query;
mod sharing;
pub mod views;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use std::sync::Arc;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::audit::{AuditRecord, AuditWriter, Outcome};
use crate::config::Config;
use crate::datasource::registry::Registry;
use crate::identity::Caller;
use crate::model::CompanyId;
use crate::store::{Change, CompanyView, Store};
use error::ApiError;

/// Everything a handler may use. Cheap to clone through its `Arc`.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    /// With a shared (PostgreSQL) store: when this replica last confirmed its view current.
    pub freshness: Option<Arc<crate::sync::Freshness>>,
    pub audit: Arc<AuditWriter>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The query pipeline every transport runs statements through.
    pub query: crate::query::QueryService,
}

impl AppState {
    /// The control plane to serve a request from, without I/O; 503 when a shared store's view
    /// may be stale (see `crate::sync`).
    pub fn view(&self) -> Result<Arc<crate::store::View>, ApiError> {
        Ok(crate::sync::fresh_view(
            &self.store,
            self.freshness.as_deref(),
        )?)
    }

    /// Commits changes with their audit records (off the async threads), then returns the
    /// company's fresh view.
    pub async fn apply(
        &self,
        company: &CompanyId,
        changes: Vec<Change>,
        audit: Vec<AuditRecord>,
    ) -> Result<Arc<CompanyView>, ApiError> {
        let store = self.store.clone();
        let company = company.clone();
        let cv = tokio::task::spawn_blocking(move || store.apply(&company, changes, audit))
            .await
            .map_err(|_| ApiError::internal())??;
        Ok(cv)
    }
}

/// An audit record of an allowed change by `caller`.
pub fn change_record(caller: &Caller, action: &str) -> AuditRecord {
    AuditRecord::new(
        caller.user.company_id.clone(),
        Some(caller.user.id.clone()),
        action,
        Outcome::Allowed,
    )
}

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.config.limits.max_body_bytes;
    let request_timeout = Duration::from_millis(state.config.limits.request_timeout_ms);
    let api = Router::new()
        .merge(routes_identity::routes())
        .merge(routes_company::routes())
        .merge(routes_datasources::routes())
        .merge(routes_apps::routes())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            request_timeout,
        ))
        .merge(routes_query::routes())
        // MCP tool calls run queries: like the query route, outside the request timeout.
        .merge(mcp::routes(&state));
    let app = Router::new()
        .merge(ops::routes())
        // The browser console: static files only; it calls the /v1 routes like any client.
        .merge(console::routes())
        .merge(api)
        .fallback(|| async { ApiError::new(crate::code::Code::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                crate::code::Code::MethodNotAllowed,
                "this route does not take that method",
            )
        })
        .with_state(state);
    with_middleware(app, max_body)
}

/// The middleware every answer passes through, outermost last: body-read tracking, request ids,
/// the request span, the panic catcher and the body limit. Public so tests can put a handler
/// under exactly this stack.
pub fn with_middleware(app: Router, max_body: usize) -> Router {
    app.layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("a handler panicked");
                axum::response::IntoResponse::into_response(ApiError::internal())
            },
        ))
        .layer(
            TraceLayer::new_for_http()
                .on_response(
                    tower_http::trace::DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                )
                .make_span_with(|req: &Request<_>| {
                    let id = req
                        .extensions()
                        .get::<RequestId>()
                        .map(|r| r.0.as_str())
                        .unwrap_or("-");
                    tracing::info_span!(
                        "request",
                        request_id = %id,
                        method = %req.method(),
                        path = %req.uri().path(),
                        user_id = tracing::field::Empty,
                    )
                }),
        )
        .layer(axum::middleware::from_fn(request_id))
        .layer(axum::middleware::from_fn(body_guard::close_if_body_unread))
}

/// The request's id, in the request's extensions for handlers (answers and audit records).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Keeps a client's `x-request-id` when it is short and printable, else mints a UUID (so a
/// request id can never inject text into logs), and returns it on the answer.
async fn request_id(
    mut req: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let given = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned);
    let id = given.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.run(req).await;
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    res
}
