//! How a query ends: its attempt (the audit record and the metrics, finished in one place,
//! [`Attempt::finish`]) and the answer a transport writes out.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use serde_json::json;

use super::{QueryError, Shared};
use crate::audit::{AuditRecord, Outcome};
use crate::code::{Class, Code, Coded};
use crate::datasource::{Column, ExecError, RowStream};
use crate::model::DatasourceId;

/// The datasource a query ran on, as answers name it.
#[derive(Clone, Debug)]
pub struct DatasourceRef {
    pub id: DatasourceId,
    pub name: String,
}

/// One query attempt by an authenticated caller: its audit record, filled in as the request
/// goes, and what its metrics are labelled with.
pub(super) struct Attempt {
    pub rec: AuditRecord,
    pub started: Instant,
    /// The datasource kind, once known (`-` before).
    pub kind: &'static str,
    pub shared: Counted,
}

/// The service's shared parts, held by one attempt: counted in [`Shared::attempts`] from the
/// attempt's start until it is dropped (after its audit record is committed, or abandoned).
pub(super) struct Counted(Arc<Shared>);

impl Counted {
    pub fn new(shared: Arc<Shared>) -> Self {
        shared.attempts.fetch_add(1, Ordering::Relaxed);
        Counted(shared)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.attempts.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::ops::Deref for Counted {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// How an attempt ended.
pub(super) enum End<'a> {
    /// Answered: this many rows (read or affected).
    Answered(u64),
    /// Refused or failed: before any execution (`None`), or after this many rows were read.
    Refused(&'a QueryError, Option<u64>),
    /// The client went away: after this many rows, or before any answer (`None`).
    Gone(Option<u64>),
}

impl Attempt {
    /// The one place an attempt ends: the record's outcome, code and duration are set, the
    /// metrics counted, and the record committed. An answer goes out only after this returns
    /// `Ok` (unless the operator turned waiting for the commit off).
    pub async fn finish(mut self, end: End<'_>) -> Result<(), QueryError> {
        let (outcome, code, message, rows) = match end {
            End::Answered(n) => (Outcome::Allowed, None, None, Some(n)),
            End::Refused(e, n) => {
                let outcome = match e.code().class() {
                    Class::Denied => Outcome::Denied,
                    Class::Failed | Class::Unavailable | Class::Timeout => Outcome::Failed,
                };
                if e.from_datasource()
                    && let Some(ds) = &self.rec.datasource_id
                {
                    self.shared.metrics.datasource_error(ds, e.code().as_str());
                }
                if let QueryError::Exec(x) = e
                    && x.is_missing_object()
                    && let Some(ds) = &self.rec.datasource_id
                {
                    // The server's catalogue moved under the policy's copy: read it again
                    // before the next query.
                    self.shared.registry.catalog_stale(ds);
                }
                (outcome, Some(e.code()), Some(e.message()), n)
            }
            End::Gone(n) => (
                Outcome::Failed,
                Some(Code::ClientDisconnected),
                Some(match n {
                    Some(_) => "the client went away while rows streamed".to_owned(),
                    None => "the client went away before the answer".to_owned(),
                }),
                n,
            ),
        };
        let seconds = self.started.elapsed().as_secs_f64();
        self.rec.outcome = outcome;
        self.rec.code = code.map(|c| c.as_str().to_owned());
        if let Some(m) = message {
            let detail = self.rec.detail.get_or_insert_with(|| json!({}));
            detail["message"] = json!(m);
        }
        self.rec.duration_ms = Some(seconds * 1000.0);
        self.rec.row_count = rows;
        let label = code.map_or("ok", Code::as_str);
        self.shared.metrics.query(label, self.kind, seconds);
        // This attempt counts itself, so at most one means no other query, answered or
        // refused, is on its way to share the writer's next batch: the record may then be
        // committed here instead of on the writer thread (see `AuditWriter::record_hinted`).
        // (Counting the concurrency permits instead took every refused statement, which never
        // holds one, for alone: under a load of refusals the runtime's threads committed
        // records one by one, contending for the writer's connection.)
        let alone = self.shared.attempts.load(Ordering::Relaxed) <= 1;
        self.shared
            .audit
            .record_hinted(self.rec, alone)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "could not commit a query's audit record");
                QueryError::Audit(e)
            })
    }

    pub fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }
}

/// What a query answered.
pub enum Answer {
    Rows(RowAnswer),
    /// INSERT, UPDATE or DELETE on a read_write datasource: already audited.
    Affected {
        rows_affected: u64,
        datasource: DatasourceRef,
        elapsed_ms: f64,
    },
}

/// What a finished row answer says at its end.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub row_count: u64,
    pub truncated: bool,
    pub elapsed_ms: f64,
}

/// Rows as the database sends them (each an encoded JSON array), with the attempt still open:
/// the transport reads them at its pace, then ends the answer with [`RowAnswer::finish`] (all
/// read) or [`RowAnswer::failed`] (a row was an error). Dropped before that, the client is
/// taken to have gone away: the statement is cancelled with the stream and that is recorded.
pub struct RowAnswer {
    pub columns: Vec<Column>,
    pub datasource: DatasourceRef,
    /// Dropped as soon as the answer ends, before its audit record is awaited: a driver's work
    /// after the last row (MySQL's next-transaction setup, a killed statement's wait) starts
    /// then, and the connection comes back without waiting for the commit.
    rows: Option<RowStream>,
    /// Boxed: an audit record is large, and answers are moved between tasks.
    attempt: Option<Box<Attempt>>,
    read: u64,
    /// The query's concurrency places, held until the answer ends.
    _permit: crate::limits::Permit,
}

impl RowAnswer {
    pub(super) fn new(
        rows: RowStream,
        datasource: DatasourceRef,
        attempt: Attempt,
        permit: crate::limits::Permit,
    ) -> Self {
        RowAnswer {
            columns: rows.columns.clone(),
            datasource,
            rows: Some(rows),
            attempt: Some(Box::new(attempt)),
            read: 0,
            _permit: permit,
        }
    }

    /// Rows read so far.
    pub fn read(&self) -> u64 {
        self.read
    }

    /// All rows were read: the record is committed, and the summary may go out.
    pub async fn finish(mut self) -> Result<Summary, QueryError> {
        let truncated = self.rows.take().is_some_and(|rows| rows.truncated());
        let n = self.read;
        let Some(attempt) = self.attempt.take() else {
            return Err(QueryError::request(
                Code::Internal,
                "the answer ended twice",
            ));
        };
        let elapsed_ms = attempt.elapsed_ms();
        attempt.finish(End::Answered(n)).await?;
        Ok(Summary {
            row_count: n,
            truncated,
            elapsed_ms,
        })
    }

    /// The rows stopped with an error: recorded; returns what to tell the client (the audit
    /// error instead when the record could not be committed).
    pub async fn failed(mut self, e: ExecError) -> QueryError {
        let err = QueryError::Exec(e);
        self.rows = None;
        match self.attempt.take() {
            Some(attempt) => match attempt.finish(End::Refused(&err, Some(self.read))).await {
                Ok(()) => err,
                Err(audit) => audit,
            },
            None => err,
        }
    }

    /// The client went away: the statement stops with the stream, and that is recorded.
    pub async fn abandon(mut self) {
        self.rows = None;
        if let Some(attempt) = self.attempt.take() {
            let _ = attempt.finish(End::Gone(Some(self.read))).await;
        }
    }
}

impl futures::Stream for RowAnswer {
    type Item = Result<Bytes, ExecError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(rows) = self.rows.as_mut() else {
            return Poll::Ready(None);
        };
        let next = Pin::new(rows).poll_next(cx);
        if let Poll::Ready(Some(Ok(_))) = &next {
            self.read += 1;
        }
        next
    }
}

impl Drop for RowAnswer {
    fn drop(&mut self) {
        // Dropped without an end: the transport lost its client. The record still goes in.
        if let Some(attempt) = self.attempt.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let n = self.read;
            rt.spawn(async move {
                let _ = attempt.finish(End::Gone(Some(n))).await;
            });
        }
    }
}
