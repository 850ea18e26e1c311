//! Operations routes, without auth: liveness, readiness, metrics and the OpenAPI document.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use std::sync::Arc;

use super::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = super::openapi::Status)))]
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// Ready when the control-plane store answers and, with a shared PostgreSQL store, this replica
/// confirmed its view current within `store.max_staleness_ms` (a load balancer then takes a
/// replica that lost its store out of rotation).
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "The control-plane store answers", body = super::openapi::Status),
    (status = 503, description = "The control-plane store does not answer", body = super::openapi::Status),
))]
async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    // A replica of a shared store whose view may be stale would refuse every request.
    if let Some(Err(e)) = state.freshness.as_ref().map(|f| f.check()) {
        tracing::debug!(error = %e, "not ready");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"status": "not_ready", "reason": "the control plane is not confirmed current with the store"}),
            ),
        );
    }
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, axum::Json(json!({"status": "ready"}))),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"status": "not_ready", "reason": "the control-plane store does not answer"}),
            ),
        ),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text exposition", body = String,
        content_type = "text/plain; version=0.0.4; charset=utf-8"),
))]
async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let body = state.metrics.render(
        &state.registry.stats(),
        &state.audit.stats(),
        state.audit.queue_len(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This OpenAPI document", body = Object)))]
async fn openapi() -> impl IntoResponse {
    axum::Json(crate::http::openapi::document())
}
