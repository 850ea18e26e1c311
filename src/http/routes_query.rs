//! `POST /v1/apps/{id}/query` over HTTP: the body in, the query service's answer out as one
//! JSON document or an NDJSON stream. Everything between (permission, limits, policy, the
//! database, the audit record) is the query service's (`crate::query`).

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

use super::error::ApiError;
use super::extract::Json;
use super::openapi as doc;
use super::{AppState, RequestId};
use crate::identity::Caller;
use crate::query::{Answer, Context, Origin, QueryError, QueryRequest, RowAnswer};

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
    let paced = wants_ndjson(&headers);
    let request = body
        .map(|Json(b)| QueryRequest {
            sql: b.sql,
            params: b.params,
            datasource: b.datasource,
            max_rows: b.max_rows,
            timeout_ms: b.timeout_ms,
        })
        .map_err(|e| QueryError::request(e.code, e.message));
    let ctx = Context {
        caller: &caller,
        app_id: &app_id,
        request_id: request_id.clone(),
        origin: Origin::Http,
        paced_by_client: paced,
    };
    match state.query.run(ctx, request).await {
        Err(e) => ApiError::coded(&e).into_response(),
        Ok(Answer::Affected {
            rows_affected,
            datasource,
            elapsed_ms,
        }) => axum::Json(json!({
            "rows_affected": rows_affected,
            "datasource": {"id": datasource.id, "name": datasource.name},
            "elapsed_ms": elapsed_ms,
            "request_id": request_id,
        }))
        .into_response(),
        Ok(Answer::Rows(rows)) if paced => stream_ndjson(rows),
        Ok(Answer::Rows(rows)) => buffered_json(rows, request_id).await,
    }
}

/// Collects the rows into one JSON answer (the result is bounded by `max_rows` and
/// `max_result_bytes`), sent once its audit record is committed.
async fn buffered_json(mut rows: RowAnswer, request_id: String) -> Response {
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
            Err(e) => return ApiError::coded(&rows.failed(e).await).into_response(),
        }
    }
    let datasource = json!({"id": rows.datasource.id, "name": rows.datasource.name});
    let summary = match rows.finish().await {
        Ok(s) => s,
        Err(e) => return ApiError::coded(&e).into_response(),
    };
    buf.push(b"],");
    let tail = json!({
        "row_count": summary.row_count,
        "truncated": summary.truncated,
        "datasource": datasource,
        "elapsed_ms": summary.elapsed_ms,
        "request_id": request_id,
    });
    let tail = serde_json::to_vec(&tail).unwrap_or_default();
    // Splice the tail object's fields after the rows: drop its opening brace.
    buf.push(tail.get(1..).unwrap_or_default());
    let (chunks, len) = buf.finish();
    let body = Body::from_stream(futures::stream::iter(
        chunks
            .into_iter()
            .map(Ok::<Bytes, std::convert::Infallible>),
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
/// two copies of a large answer (bench/run: +146 MiB for a 87 MB answer). The first chunk is
/// small and each next one twice the size of the last, up to [`CHUNK_BYTES`]: a one-row answer
/// of a few hundred bytes took a 64 KiB buffer per request before (bench/counts.py), and a full
/// chunk is handed on as it is, never copied into a bigger one.
#[derive(Default)]
struct Chunks {
    done: Vec<Bytes>,
    current: BytesMut,
    len: usize,
}

/// The first chunk of a buffered answer.
const FIRST_CHUNK_BYTES: usize = 1024;

impl Chunks {
    fn push(&mut self, bytes: &[u8]) {
        if self.current.capacity() - self.current.len() < bytes.len() {
            let next = (self.current.capacity() * 2)
                .clamp(FIRST_CHUNK_BYTES, CHUNK_BYTES)
                .max(bytes.len());
            let full = std::mem::replace(&mut self.current, BytesMut::with_capacity(next));
            if !full.is_empty() {
                self.done.push(full.freeze());
            }
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
/// that goes away ends the task, which ends the answer and cancels the statement.
fn stream_ndjson(mut rows: RowAnswer) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        let mut chunk = BytesMut::with_capacity(CHUNK_BYTES);
        let mut first = serde_json::to_vec(&json!({"columns": rows.columns})).unwrap_or_default();
        first.push(b'\n');
        chunk.extend_from_slice(&first);
        let mut failure = None;
        loop {
            // Take rows that are ready without waiting; flush before waiting for more.
            let next = match rows.next().now_or_never() {
                Some(item) => item,
                None => {
                    if !chunk.is_empty() && tx.send(chunk.split().freeze()).await.is_err() {
                        return rows.abandon().await;
                    }
                    rows.next().await
                }
            };
            match next {
                Some(Ok(row)) => {
                    chunk.extend_from_slice(&row);
                    chunk.extend_from_slice(b"\n");
                    if chunk.len() >= CHUNK_BYTES && tx.send(chunk.split().freeze()).await.is_err()
                    {
                        return rows.abandon().await;
                    }
                }
                Some(Err(e)) => {
                    failure = Some(e);
                    break;
                }
                None => break,
            }
        }
        // The last line goes out only once the record is committed.
        let last = match failure {
            Some(e) => ApiError::coded(&rows.failed(e).await).body_json(),
            None => match rows.finish().await {
                Ok(s) => json!({
                    "row_count": s.row_count,
                    "truncated": s.truncated,
                    "elapsed_ms": s.elapsed_ms,
                }),
                Err(e) => ApiError::coded(&e).body_json(),
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_every_byte_in_order_start_small_and_never_pass_the_chunk_size() {
        let mut c = Chunks::default();
        let mut want = Vec::new();
        for i in 0..20_000u32 {
            let piece = format!("[{i},\"row {i}\"],");
            c.push(piece.as_bytes());
            want.extend_from_slice(piece.as_bytes());
        }
        // A piece bigger than any chunk goes in whole.
        let big = vec![b'x'; CHUNK_BYTES * 2 + 3];
        c.push(&big);
        want.extend_from_slice(&big);
        c.push(b"]");
        want.extend_from_slice(b"]");
        let (chunks, len) = c.finish();
        assert_eq!(len, want.len());
        assert_eq!(chunks.concat(), want);
        assert!(
            chunks[0].len() <= FIRST_CHUNK_BYTES,
            "first {}",
            chunks[0].len()
        );
        let oversized: Vec<usize> = chunks
            .iter()
            .map(Bytes::len)
            .filter(|&n| n > CHUNK_BYTES)
            .collect();
        assert_eq!(
            oversized,
            vec![big.len()],
            "only the oversized piece passes"
        );

        let mut small = Chunks::default();
        small.push(b"{\"columns\":[]}");
        let (chunks, len) = small.finish();
        assert_eq!((chunks.len(), len), (1, 14));
    }
}
