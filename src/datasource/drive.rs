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
use std::task::{Context, Poll, Waker};

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
///
/// The statement future must be the only sender of its head and rows, and send only while it is
/// polled (true of the PostgreSQL and MySQL statements, which spawn nothing that sends): the
/// ends are then read right after it is polled, with [`poll_fed`], so its sends never wake
/// this task (see there).
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
        poll_fed(cx, |quiet| Pin::new(&mut head).poll(quiet))
    })
    .await;
    match first {
        Ok(Ok(Head::Rows(columns))) => {
            let rows = stream_from(move |cx| {
                driven.poll(cx);
                match poll_fed(cx, |quiet| rows.poll_recv(quiet)) {
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

/// Polls one of the ends of a statement this task drives, just after polling the statement.
///
/// Only that statement sends on them, and only while this task polls it, so a waker left with
/// the receiver is never needed: whatever the statement sends is read right after it sends it,
/// and when it waits for the database its own waker brings this task back. A waker left there
/// would be woken by the statement's send while this task runs, and a task woken while it runs
/// is rescheduled when it next waits: the runtime then polls it once more for nothing, and wakes
/// an idle worker thread to steal it (bench/counts.py counted most of the gateway's context
/// switches at one client there, BENCHMARKS.md). The receiver is polled with a waker that does
/// nothing and outside the task's budget (a receiver out of budget would wake only that waker);
/// the budget is taken here with the task's own waker instead, as the receiver would have.
fn poll_fed<T>(cx: &mut Context<'_>, poll: impl FnMut(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
    let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
    let mut quiet = Context::from_waker(Waker::noop());
    let unbudgeted = std::pin::pin!(tokio::task::coop::unconstrained(std::future::poll_fn(poll)));
    let polled = unbudgeted.poll(&mut quiet);
    if polled.is_ready() {
        coop.made_progress();
    }
    polled
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use std::time::Duration;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    type HeadTx = oneshot::Sender<Result<Head, ExecError>>;
    type RowsTx = mpsc::Sender<Result<Bytes, ExecError>>;

    fn ends(capacity: usize) -> (HeadTx, RowsTx, Ends) {
        let (head_tx, head) = oneshot::channel();
        let (rows_tx, rows) = mpsc::channel(capacity);
        let ends = Ends {
            head,
            rows,
            truncated: Arc::new(AtomicBool::new(false)),
        };
        (head_tx, rows_tx, ends)
    }

    fn columns() -> Vec<Column> {
        vec![Column {
            name: "id".into(),
            type_name: "int4".into(),
        }]
    }

    /// The task driving a statement is woken only by what the statement waits for (here two
    /// answers of "the database"), never by the statement handing it its head or a row.
    #[tokio::test]
    async fn a_statement_in_the_callers_task_wakes_it_only_for_what_it_waits_for() {
        let (head_tx, rows_tx, ends) = ends(4);
        let (first_tx, first) = oneshot::channel::<()>();
        let (second_tx, second) = oneshot::channel::<()>();
        let statement = async move {
            let _ = first.await;
            let _ = head_tx.send(Ok(Head::Rows(columns())));
            let _ = second.await;
            let _ = rows_tx.send(Ok(Bytes::from_static(b"[1]"))).await;
        };
        let counting = Arc::new(Counting::default());
        let waker = Waker::from(counting.clone());
        let mut cx = Context::from_waker(&waker);
        let mut execute =
            std::pin::pin!(in_callers_task(Box::pin(statement), ends, Abandoned::Drop));
        assert!(execute.as_mut().poll(&mut cx).is_pending());
        first_tx.send(()).unwrap();
        assert_eq!(
            counting.0.load(Ordering::SeqCst),
            1,
            "the database's answer"
        );
        let Poll::Ready(Ok(Execution::Rows(mut rows))) = execute.as_mut().poll(&mut cx) else {
            panic!("the head is read in the poll that the statement sent it in");
        };
        assert_eq!(rows.columns, columns());
        assert_eq!(
            counting.0.load(Ordering::SeqCst),
            1,
            "sending the head woke no one"
        );
        assert!(rows.poll_next_unpin(&mut cx).is_pending());
        second_tx.send(()).unwrap();
        assert_eq!(
            counting.0.load(Ordering::SeqCst),
            2,
            "the database's second answer"
        );
        match rows.poll_next_unpin(&mut cx) {
            Poll::Ready(Some(Ok(row))) => assert_eq!(&row[..], b"[1]"),
            _ => panic!("the row is read in the poll that the statement sent it in"),
        }
        assert!(matches!(rows.poll_next_unpin(&mut cx), Poll::Ready(None)));
        assert_eq!(
            counting.0.load(Ordering::SeqCst),
            2,
            "sending the row woke no one"
        );
    }

    /// Rows read without a waker must still all arrive when the task's budget runs out on the
    /// way: here the statement has sent a thousand rows and ended, so nothing of it can wake the
    /// task again, and the budget (128 a poll) runs out while the rows are read. The budget is
    /// taken with the task's own waker, so running out of it yields instead of waiting for a
    /// wake-up that never comes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_read_in_the_callers_task_all_arrive_past_the_tasks_budget() {
        const ROWS: usize = 1000;
        let (head_tx, rows_tx, ends) = ends(ROWS);
        let statement = async move {
            let _ = head_tx.send(Ok(Head::Rows(columns())));
            for i in 0..ROWS {
                let row = Bytes::from(format!("[{i}]"));
                rows_tx.try_send(Ok(row)).expect("room for every row");
            }
        };
        let read = tokio::spawn(async move {
            let Ok(Execution::Rows(rows)) =
                in_callers_task(Box::pin(statement), ends, Abandoned::Drop).await
            else {
                panic!("rows expected");
            };
            rows.filter_map(|r| async move { r.ok() })
                .collect::<Vec<_>>()
                .await
        });
        // A guard against a hang (a lost wake-up), not a measure of speed.
        let got = tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("every row arrives: no wake-up is lost when the budget runs out")
            .unwrap();
        assert_eq!(got.len(), ROWS);
        assert_eq!(&got[ROWS - 1][..], format!("[{}]", ROWS - 1).as_bytes());
    }
}
