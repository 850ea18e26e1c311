//! Where a network driver's statement runs, shared by PostgreSQL and MySQL.
//!
//! A driver turns one [`Execute`](super::Execute) into a statement future that owns its
//! connection and reports through [`Ends`]: the head (columns, or a count, or an error) on a
//! oneshot, then the rows on a small bounded channel. The future then runs either
//! * in a task of its own ([`in_own_task`]), for rows read at the client's pace (an NDJSON
//!   stream): its deadline holds while nobody reads; or
//! * in the caller's task ([`in_callers_task`]), for rows the caller reads at once (a buffered
//!   answer): polled while the head is awaited, then by the row stream as it is read. Waking a
//!   second task for every message cost CPU on every query (BENCHMARKS.md).
//!
//! What happens to a statement its reader gave up on is the driver's [`Abandoned`] choice.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::{CatchUnwind, Fuse, FusedFuture};
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::{Column, ExecError, Execution, RowStream};

/// What a statement sends before any row.
pub(super) enum Head {
    Rows(Vec<Column>),
    Affected(u64),
}

/// The receiving ends of a statement future.
pub(super) struct Ends {
    pub head: oneshot::Receiver<Result<Head, ExecError>>,
    pub rows: mpsc::Receiver<Result<Bytes, ExecError>>,
    pub truncated: Arc<AtomicBool>,
}

/// What becomes of a statement future whose reader went away (the stream or the `execute`
/// future dropped) before it finished.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Abandoned {
    /// Drop it: its connection guard cancels the statement on the server (PostgreSQL).
    Drop,
    /// Let it finish in a task of its own: it notices the closed row channel and stops the
    /// statement itself (MySQL's `KILL QUERY`, which needs awaiting).
    Finish,
}

pub(super) type BoxedStatement = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The statement in a task of its own, for rows read at the client's pace.
pub(super) async fn in_own_task(
    statement: BoxedStatement,
    ends: Ends,
    abandoned: Abandoned,
) -> Result<Execution, ExecError> {
    let Ends {
        head,
        mut rows,
        truncated,
    } = ends;
    let task = tokio::spawn(statement);
    let abort = AbortOnDrop((abandoned == Abandoned::Drop).then(|| task.abort_handle()));
    match head.await {
        Ok(Ok(Head::Rows(columns))) => {
            let rows = stream_from(move |cx| {
                // The guard lives as long as the stream: dropping it aborts the task, whose
                // connection guard then cancels the statement.
                let _keep = &abort;
                rows.poll_recv(cx)
            });
            Ok(Execution::Rows(RowStream::new(columns, rows, truncated)))
        }
        Ok(Ok(Head::Affected(n))) => {
            abort.disarm();
            Ok(Execution::Affected { rows_affected: n })
        }
        Ok(Err(e)) => {
            abort.disarm();
            Err(e)
        }
        Err(_) => Err(ExecError::Unavailable(
            "the statement ended without an answer".into(),
        )),
    }
}

/// The statement driven by the caller's own task, for rows the caller reads at once. Its
/// deadline is checked only while the caller polls, which a buffered answer does throughout.
pub(super) async fn in_callers_task(
    statement: BoxedStatement,
    ends: Ends,
    abandoned: Abandoned,
) -> Result<Execution, ExecError> {
    let Ends {
        mut head,
        mut rows,
        truncated,
    } = ends;
    let mut driven = Driven {
        statement: AssertUnwindSafe(statement).catch_unwind().fuse(),
        panicked: false,
        abandoned,
    };
    let first = std::future::poll_fn(|cx| {
        driven.poll(cx);
        // Ready once sent, or once the statement ended without sending it.
        Pin::new(&mut head).poll(cx)
    })
    .await;
    match first {
        Ok(Ok(Head::Rows(columns))) => {
            let rows = stream_from(move |cx| {
                driven.poll(cx);
                match rows.poll_recv(cx) {
                    // The rows stopped because the statement panicked: say so, once.
                    Poll::Ready(None) if std::mem::take(&mut driven.panicked) => {
                        Poll::Ready(Some(Err(ExecError::Unavailable(
                            "the statement stopped unexpectedly".into(),
                        ))))
                    }
                    other => other,
                }
            });
            Ok(Execution::Rows(RowStream::new(columns, rows, truncated)))
        }
        // A count or an error may come before the statement's last step (giving its connection
        // back); `Driven` finishes that step as `abandoned` says when it is dropped here.
        Ok(Ok(Head::Affected(n))) => Ok(Execution::Affected { rows_affected: n }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ExecError::Unavailable(
            "the statement ended without an answer".into(),
        )),
    }
}

/// A statement's future as the caller's task drives it. A panic stays in the statement, as it
/// would in a task of its own: the head or the stream then reports an error instead of the
/// request unwinding without its audit record. Fused, so polling it after its end is harmless.
struct Driven {
    statement: Fuse<CatchUnwind<AssertUnwindSafe<BoxedStatement>>>,
    panicked: bool,
    abandoned: Abandoned,
}

impl Driven {
    fn poll(&mut self, cx: &mut Context<'_>) {
        if let Poll::Ready(Err(_)) = Pin::new(&mut self.statement).poll(cx) {
            tracing::error!("a statement panicked");
            self.panicked = true;
        }
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        if self.abandoned == Abandoned::Finish && !self.statement.is_terminated() {
            let rest = std::mem::replace(&mut self.statement, Fuse::terminated());
            // Outside a runtime (never the case in the server) the future can only be dropped.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(rest);
            }
        }
    }
}

/// A `RowStream` body from a poll function (the receiver of the statement's rows).
fn stream_from<F>(f: F) -> futures::stream::BoxStream<'static, Result<Bytes, ExecError>>
where
    F: FnMut(&mut Context<'_>) -> Poll<Option<Result<Bytes, ExecError>>> + Send + 'static,
{
    futures::stream::poll_fn(f).boxed()
}

/// Aborts the statement's task when dropped, unless disarmed (or given no task to abort).
struct AbortOnDrop(Option<AbortHandle>);

impl AbortOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}
