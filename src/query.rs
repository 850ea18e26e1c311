//! `POST /v1/apps/{id}/query`: the gateway's main job, in the order of the brief:
//! identity (the `Caller` extractor) → resolve app and datasource → permission → concurrency
//! limits → SQL policy → pool and database → encoding (JSON or NDJSON) → audit record.
//!
//! Every attempt by an authenticated caller is audited (allowed, denied or failed); with
//! `audit.wait_for_commit` the answer (for streams: the last line) is sent only after its record
//! is committed.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::{AuditRecord, Outcome};
use crate::datasource::{Execute, Execution, RowStream};
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::http::openapi as doc;
use crate::http::views::app_acl;
use crate::http::{AppState, RequestId};
use crate::identity::Caller;
use crate::model::*;
use crate::permission::{self, Decision};
use crate::policy::{PolicyError, StatementClass};
use crate::store::{App, Datasource};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/apps/{id}/query", post(query))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    sql: String,
    /// JSON values bound to `$1..` (postgres) or `?` (mysql, sqlite) placeholders.
    #[serde(default)]
    params: Vec<serde_json::Value>,
    /// Id or name of an attached datasource; may be left out when the app has exactly one.
    datasource: Option<String>,
    max_rows: Option<u64>,
    timeout_ms: Option<u64>,
}

/// What the audit record of one attempt says, filled in as the request goes.
struct Attempt {
    rec: AuditRecord,
    started: Instant,
    kind: &'static str,
}

impl Attempt {
    fn finish(&mut self, outcome: Outcome, code: Option<&str>, detail: Option<String>) {
        self.rec.outcome = outcome;
        self.rec.code = code.map(str::to_owned);
        self.rec.detail = detail.map(|d| json!({ "message": d }));
        self.rec.duration_ms = Some(self.started.elapsed().as_secs_f64() * 1000.0);
    }

    /// Counts a failure the datasource answered with (not a caller's bad params), per
    /// datasource, so /metrics shows which one is going bad.
    fn count_datasource_error(&self, state: &AppState, err: &ApiError) {
        if err.status != StatusCode::BAD_REQUEST
            && let Some(ds) = &self.rec.datasource_id
        {
            state.metrics.datasource_error(ds, err.code);
        }
    }
}

/// Maps a datasource error, counts it, then records and answers it like any refusal.
async fn datasource_failed(
    state: &AppState,
    attempt: Attempt,
    e: crate::datasource::ExecError,
) -> Response {
    if e.is_missing_object()
        && let Some(ds) = &attempt.rec.datasource_id
    {
        // The server's catalogue moved under the policy's copy: read it before the next query.
        state.registry.catalog_stale(ds);
    }
    let err = ApiError::from(e);
    attempt.count_datasource_error(state, &err);
    refuse(state, attempt, err).await
}

/// Records the attempt and returns the error to answer with. If the record cannot be committed
/// the client gets 503: no answer goes out without its record.
async fn refuse(state: &AppState, mut attempt: Attempt, err: ApiError) -> Response {
    let outcome = if err.status.is_server_error() || err.status == StatusCode::UNPROCESSABLE_ENTITY
    {
        Outcome::Failed
    } else {
        Outcome::Denied
    };
    attempt.finish(outcome, Some(err.code), Some(err.message.clone()));
    state.metrics.query(
        err.code,
        attempt.kind,
        attempt.started.elapsed().as_secs_f64(),
    );
    if let Err(e) = record_audit(state, attempt.rec).await {
        return audit_failed(e);
    }
    err.into_response()
}

/// Commits a query's audit record. This request's own permit counts in flight, so at most one
/// means no other query is running to share the writer's next batch: the record may then be
/// committed here instead of on the writer thread (see `AuditWriter::record_hinted`). A request
/// refused before it took a permit also counts one other query as alone; at worst two records
/// then commit one by one instead of together, which only costs a little throughput.
async fn record_audit(
    state: &AppState,
    rec: crate::audit::AuditRecord,
) -> Result<(), crate::audit::AuditError> {
    state
        .audit
        .record_hinted(rec, state.limits.in_flight() <= 1)
        .await
}

fn audit_failed(e: crate::audit::AuditError) -> Response {
    tracing::error!(error = %e, "could not commit a query's audit record");
    ApiError {
        retry_after: Some(1),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the audit log could not be written; the answer was withheld",
        )
    }
    .into_response()
}

fn policy_error(e: PolicyError) -> ApiError {
    let (status, code) = match &e {
        PolicyError::TooLong { .. } | PolicyError::Parse(_) | PolicyError::RenderMismatch => {
            (StatusCode::BAD_REQUEST, "sql_parse_error")
        }
        PolicyError::StatementNotAllowed(_) => (StatusCode::FORBIDDEN, "statement_not_allowed"),
        PolicyError::TableNotAllowed(_) => (StatusCode::FORBIDDEN, "table_not_allowed"),
        PolicyError::FunctionNotAllowed(_) => (StatusCode::FORBIDDEN, "function_not_allowed"),
    };
    ApiError::new(status, code, e.to_string())
}

/// The app's datasource this statement is for: by id or name, or the only one.
fn resolve_datasource<'a>(
    cv: &'a crate::store::CompanyView,
    app: &App,
    wanted: Option<&str>,
) -> Result<(&'a Datasource, bool), ApiError> {
    let attached: Vec<&Datasource> = app
        .datasources
        .iter()
        .filter_map(|d| cv.datasources.get(d))
        .collect();
    match wanted {
        Some(w) => {
            if let Some(d) = attached.iter().find(|d| d.id.as_str() == w || d.name == w) {
                return Ok((d, true));
            }
            // A datasource of the company that is not attached: 409 as PERMISSIONS.md says. One
            // the caller cannot name at all is "not attached" too (no existence leak).
            if let Some(d) = cv
                .datasources
                .values()
                .find(|d| d.id.as_str() == w || d.name == w)
            {
                return Ok((d, false));
            }
            Err(ApiError::conflict(format!(
                "datasource {w:?} is not attached to this app"
            )))
        }
        None => match attached.as_slice() {
            [only] => Ok((only, true)),
            [] => Err(ApiError::conflict("this app has no datasource attached")),
            _ => Err(ApiError::conflict(
                "this app has several datasources: name one in \"datasource\"",
            )),
        },
    }
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"))
}

#[utoipa::path(post, path = "/v1/apps/{id}/query", tag = "query", request_body = QueryBody,
    params(
        ("id" = String, Path, description = "App id"),
        ("Accept" = Option<String>, Header, description = "`application/x-ndjson` streams the answer: \
            a `{\"columns\"}` line, one JSON array per row, then `{\"row_count\", \"truncated\", \"elapsed_ms\"}` \
            (or `{\"error\"}` if it failed after streaming began)"),
    ),
    responses(
        (status = 200, description = "The result", content(
            (doc::QueryResult = "application/json"),
            (String = "application/x-ndjson"),
        )),
        (status = 400, description = "`bad_request`, `sql_parse_error` or `bad_params`", body = doc::ErrorBody),
        (status = 403, description = "`forbidden`, `statement_not_allowed`, `table_not_allowed`, \
            `function_not_allowed` or `integration_disabled`", body = doc::ErrorBody),
        doc::NotFound, doc::Conflict, doc::PayloadTooLarge,
        (status = 429, description = "`too_many_requests`: too many queries in flight; has `Retry-After`", body = doc::ErrorBody),
        doc::DatabaseErrors,
    ))]
async fn query(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(app_id): Path<String>,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Json<QueryBody>, ApiError>,
) -> Response {
    let started = Instant::now();
    let mut rec = AuditRecord::new(
        caller.user.company_id.clone(),
        Some(caller.user.id.clone()),
        "query",
        Outcome::Allowed,
    );
    rec.request_id = Some(request_id.clone());
    let cv = caller.company.clone();
    let app = cv.apps.get(&AppId(app_id.clone()));
    if let Some(a) = app {
        rec.app_id = Some(a.id.clone());
    } else {
        rec.target_id = Some(app_id.chars().take(128).collect());
    }
    let mut attempt = Attempt {
        rec,
        started,
        kind: "-",
    };
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => return refuse(&state, attempt, e).await,
    };
    attempt.rec.sql = Some(
        body.sql
            .chars()
            .take(state.config.limits.max_sql_bytes)
            .collect(),
    );
    let p = caller.principal();
    let Some(app) =
        app.filter(|a| permission::app(&p, &app_acl(a), permission::AppAction::Use).is_allow())
    else {
        return refuse(&state, attempt, ApiError::not_found()).await;
    };
    let (ds, attached) = match resolve_datasource(&cv, app, body.datasource.as_deref()) {
        Ok(r) => r,
        Err(e) => return refuse(&state, attempt, e).await,
    };
    attempt.kind = ds.kind.as_str();
    if attached {
        attempt.rec.datasource_id = Some(ds.id.clone());
    }
    let decision = permission::query(&p, &app_acl(app), attached, cv.integration(ds.kind).enabled);
    if decision != Decision::Allow {
        let err = match decision {
            Decision::Conflict(_) => ApiError::conflict(format!(
                "datasource {:?} is not attached to this app",
                body.datasource.as_deref().unwrap_or_default()
            )),
            d => ApiError::from(d),
        };
        return refuse(&state, attempt, err).await;
    }
    let _permit = match state
        .limits
        .acquire(caller.token_id.as_str(), app.id.as_str())
    {
        Ok(p) => p,
        Err(which) => {
            let msg = match which {
                crate::limits::Refused::Token => "too many queries in flight for this token",
                crate::limits::Refused::App => "too many queries in flight for this app",
                crate::limits::Refused::Gateway => "the gateway is at its query capacity",
            };
            return refuse(&state, attempt, ApiError::too_many(msg, 1)).await;
        }
    };
    // What the server holds (schemas, children, views, functions), for the policy to resolve
    // names as the server will.
    let catalog = match state.registry.catalog(&ds.spec).await {
        Ok(c) => c,
        Err(e) => return datasource_failed(&state, attempt, e).await,
    };
    let default_schema =
        crate::policy::default_schema(ds.kind, &ds.policy, &catalog.known.catalog).to_owned();
    let checked = match state
        .policy_cache
        .check(
            body.sql.clone(),
            ds.kind,
            default_schema,
            state.config.limits.max_sql_bytes,
            ds.policy.clone(),
            catalog.known.clone(),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => return refuse(&state, attempt, policy_error(e)).await,
    };
    if checked.param_count != body.params.len() {
        let e = ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_params",
            format!(
                "the statement has {} placeholder(s) but {} param(s) were given",
                checked.param_count,
                body.params.len()
            ),
        );
        return refuse(&state, attempt, e).await;
    }
    let max_rows = body
        .max_rows
        .map_or(ds.policy.max_rows, |r| r.min(ds.policy.max_rows));
    let timeout_ms = body
        .timeout_ms
        .map_or(ds.policy.timeout_ms, |t| t.clamp(1, ds.policy.timeout_ms));
    let exec = Execute {
        sql: checked.sql.clone(),
        params: body.params,
        is_query: checked.class == StatementClass::Query,
        read_only: ds.policy.access == Access::ReadOnly,
        max_rows,
        timeout: Duration::from_millis(timeout_ms),
        may_change_session: checked.calls_user_functions,
        search_path: (ds.kind == DatasourceKind::Postgres)
            .then(|| catalog.known.catalog.search_path(&ds.policy.extensions)),
        paced_by_client: wants_ndjson(&headers),
    };
    let ds_json = json!({"id": ds.id, "name": ds.name});
    let outcome = state.registry.execute(&ds.spec, exec).await;
    let execution = match outcome {
        Ok(e) => e,
        Err(e) => return datasource_failed(&state, attempt, e).await,
    };
    match execution {
        Execution::Affected { rows_affected } => {
            attempt.rec.row_count = Some(rows_affected);
            attempt.finish(Outcome::Allowed, None, None);
            let elapsed_ms = attempt.rec.duration_ms.unwrap_or_default();
            state
                .metrics
                .query("ok", attempt.kind, started.elapsed().as_secs_f64());
            if let Err(e) = record_audit(&state, attempt.rec).await {
                return audit_failed(e);
            }
            axum::Json(json!({
                "rows_affected": rows_affected,
                "datasource": ds_json,
                "elapsed_ms": elapsed_ms,
                "request_id": request_id,
            }))
            .into_response()
        }
        Execution::Rows(rows) => {
            if wants_ndjson(&headers) {
                stream_ndjson(state, attempt, rows, _permit)
            } else {
                buffered_json(&state, attempt, rows, ds_json, request_id).await
            }
        }
    }
}

/// Collects the rows into one JSON answer (the result is bounded by `max_rows` and
/// `max_result_bytes`).
async fn buffered_json(
    state: &AppState,
    mut attempt: Attempt,
    mut rows: RowStream,
    ds_json: serde_json::Value,
    request_id: String,
) -> Response {
    let mut buf = Chunks::default();
    let head = serde_json::to_vec(&rows.columns).unwrap_or_default();
    buf.push(b"{\"columns\":");
    buf.push(&head);
    buf.push(b",\"rows\":[");
    let mut n: u64 = 0;
    while let Some(row) = rows.next().await {
        match row {
            Ok(bytes) => {
                if n > 0 {
                    buf.push(b",");
                }
                buf.push(&bytes);
                n += 1;
            }
            Err(e) => {
                attempt.rec.row_count = Some(n);
                return datasource_failed(state, attempt, e).await;
            }
        }
    }
    let truncated = rows.truncated();
    attempt.rec.row_count = Some(n);
    attempt.finish(Outcome::Allowed, None, None);
    let elapsed_ms = attempt.rec.duration_ms.unwrap_or_default();
    state
        .metrics
        .query("ok", attempt.kind, attempt.started.elapsed().as_secs_f64());
    if let Err(e) = record_audit(state, attempt.rec).await {
        return audit_failed(e);
    }
    buf.push(b"],");
    let tail = json!({
        "row_count": n,
        "truncated": truncated,
        "datasource": ds_json,
        "elapsed_ms": elapsed_ms,
        "request_id": request_id,
    });
    let tail = serde_json::to_vec(&tail).unwrap_or_default();
    // Splice the tail object's fields after the rows: drop its opening brace.
    buf.push(tail.get(1..).unwrap_or_default());
    let (chunks, len) = buf.finish();
    let body = Body::from_stream(futures::stream::iter(
        chunks.into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response()
}

/// A buffered answer kept as a list of chunks of at most [`CHUNK_BYTES`] instead of one
/// growing buffer: growing one buffer reallocates and copies, which with mimalloc briefly held
/// two copies of a large answer (bench/run: +146 MiB for a 87 MB answer).
#[derive(Default)]
struct Chunks {
    done: Vec<Bytes>,
    current: BytesMut,
    len: usize,
}

impl Chunks {
    fn push(&mut self, bytes: &[u8]) {
        if !self.current.is_empty() && self.current.len() + bytes.len() > CHUNK_BYTES {
            let full = std::mem::replace(&mut self.current, BytesMut::with_capacity(CHUNK_BYTES));
            self.done.push(full.freeze());
        }
        if self.current.capacity() == 0 {
            self.current.reserve(CHUNK_BYTES.max(bytes.len()));
        }
        self.current.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// The chunks in order and their total length.
    fn finish(mut self) -> (Vec<Bytes>, usize) {
        if !self.current.is_empty() {
            self.done.push(self.current.freeze());
        }
        (self.done, self.len)
    }
}

/// Rows written per chunk at most before the chunk is handed to the connection.
const CHUNK_BYTES: usize = 64 * 1024;

/// Streams NDJSON: a columns line, one array per row, then a summary line (or an error line).
/// A bounded channel gives backpressure: a slow reader slows the database read, and a reader
/// that goes away ends the task, which drops the row stream and cancels the statement.
fn stream_ndjson(
    state: Arc<AppState>,
    mut attempt: Attempt,
    mut rows: RowStream,
    permit: crate::limits::Permit,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        let _permit = permit;
        let mut chunk = BytesMut::with_capacity(CHUNK_BYTES);
        let mut first = serde_json::to_vec(&json!({"columns": rows.columns})).unwrap_or_default();
        first.push(b'\n');
        chunk.extend_from_slice(&first);
        let mut n: u64 = 0;
        let mut failure: Option<ApiError> = None;
        loop {
            // Take rows that are ready without waiting; flush before waiting for more.
            let next = match rows.next().now_or_never() {
                Some(item) => item,
                None => {
                    if !chunk.is_empty() && tx.send(chunk.split().freeze()).await.is_err() {
                        attempt.finish(
                            Outcome::Failed,
                            Some("client_disconnected"),
                            Some("the client went away while rows streamed".into()),
                        );
                        attempt.rec.row_count = Some(n);
                        let _ = record_audit(&state, attempt.rec).await;
                        return;
                    }
                    rows.next().await
                }
            };
            match next {
                Some(Ok(row)) => {
                    chunk.extend_from_slice(&row);
                    chunk.extend_from_slice(b"\n");
                    n += 1;
                    if chunk.len() >= CHUNK_BYTES && tx.send(chunk.split().freeze()).await.is_err()
                    {
                        attempt.finish(
                            Outcome::Failed,
                            Some("client_disconnected"),
                            Some("the client went away while rows streamed".into()),
                        );
                        attempt.rec.row_count = Some(n);
                        let _ = record_audit(&state, attempt.rec).await;
                        return;
                    }
                }
                Some(Err(e)) => {
                    let err = ApiError::from(e);
                    attempt.count_datasource_error(&state, &err);
                    failure = Some(err);
                    break;
                }
                None => break,
            }
        }
        attempt.rec.row_count = Some(n);
        let last = match failure {
            Some(err) => {
                attempt.finish(Outcome::Failed, Some(err.code), Some(err.message.clone()));
                state.metrics.query(
                    err.code,
                    attempt.kind,
                    attempt.started.elapsed().as_secs_f64(),
                );
                err.body_json()
            }
            None => {
                attempt.finish(Outcome::Allowed, None, None);
                state
                    .metrics
                    .query("ok", attempt.kind, attempt.started.elapsed().as_secs_f64());
                json!({
                    "row_count": n,
                    "truncated": rows.truncated(),
                    "elapsed_ms": attempt.rec.duration_ms.unwrap_or_default(),
                })
            }
        };
        // The summary goes out only once the record is committed.
        let last = match record_audit(&state, attempt.rec).await {
            Ok(()) => last,
            Err(e) => {
                tracing::error!(error = %e, "could not commit a streamed query's audit record");
                json!({"error": {"code": "unavailable", "message": "the audit log could not be written"}})
            }
        };
        let mut line = serde_json::to_vec(&last).unwrap_or_default();
        line.push(b'\n');
        chunk.extend_from_slice(&line);
        let _ = tx.send(chunk.freeze()).await;
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| ApiError::internal().into_response())
}
