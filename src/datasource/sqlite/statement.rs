//! One statement's life: checkout, the blocking work that steps it and sends its rows, and the
//! watchdog that interrupts it at its deadline or when its reader goes away and, if it does not
//! stop, abandons it.
//!
//! Until a stop the worker answers: the head, then rows and a final error. After a stop (deadline,
//! reader gone) the worker sends no more rows, and an error of its own only as the head if none
//! was sent; otherwise the watchdog answers once the worker has ended or has been abandoned, so
//! an abandoned worker never adds to what its reader sees.

use super::*;

/// The sending ends of one execution (`drive::Ends` holds the receiving ones).
pub(super) struct Senders {
    pub(super) head: oneshot::Sender<Result<Head, ExecError>>,
    pub(super) rows: mpsc::Sender<Result<Bytes, ExecError>>,
    pub(super) truncated: Arc<AtomicBool>,
}

/// Why the blocking work was interrupted, where it stands ([`RUNNING`], …), and what of its
/// answer is still to send.
#[derive(Default)]
struct StopFlags {
    timed_out: AtomicBool,
    gone: AtomicBool,
    /// Wakes a worker waiting for room in the row channel once a flag above is set.
    stop: tokio::sync::Notify,
    state: AtomicU8,
    /// The head, until the worker sends it, or the watchdog answers in its place.
    head: Mutex<Option<oneshot::Sender<Result<Head, ExecError>>>>,
    /// The error that ended the work after a stop, for the watchdog to send.
    last: Mutex<Option<ExecError>>,
}

impl StopFlags {
    fn stopped(&self) -> bool {
        self.timed_out.load(Ordering::Acquire) || self.gone.load(Ordering::Acquire)
    }

    fn take_head(&self) -> Option<oneshot::Sender<Result<Head, ExecError>>> {
        self.head.lock().ok().and_then(|mut h| h.take())
    }

    fn take_last(&self) -> Option<ExecError> {
        self.last.lock().ok().and_then(|mut l| l.take())
    }
}

pub(super) async fn run(pool: Pool<SqliteManager>, req: Execute, senders: Senders) {
    let timeout = req.timeout;
    let deadline = Instant::now() + timeout;
    let Senders {
        head,
        rows: tx,
        truncated,
    } = senders;
    let obj = tokio::select! {
        biased;
        _ = tx.closed() => return,
        _ = tokio::time::sleep_until(deadline) => {
            let _ = head.send(Err(ExecError::Timeout(timeout)));
            return;
        }
        obj = checkout(&pool, Some(req.read_only)) => obj,
    };
    let obj = match obj {
        Ok(obj) => obj,
        Err(e) => {
            let _ = head.send(Err(e));
            return;
        }
    };
    let interrupt = obj.conn.get_interrupt_handle();
    let flags = Arc::new(StopFlags {
        head: Mutex::new(Some(head)),
        ..StopFlags::default()
    });
    // The worker sends through a weak handle: once this task has answered and ended, the rows
    // end for the reader even while an abandoned worker still runs.
    let worker_tx = tx.downgrade();
    let max_bytes = pool.manager().file.settings.max_result_bytes;
    // The worker owns the checkout (connection and pool slot) until it ends, whether or not
    // anyone still waits for it.
    let work = {
        let flags = flags.clone();
        let pool = pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut obj = obj;
            let reusable = Blocking {
                req: &req,
                tx: worker_tx,
                truncated: &truncated,
                flags: &flags,
                max_bytes,
            }
            .run(&mut obj.conn);
            let obj = pool.manager().finish(&flags.state, obj)?;
            Some((obj, reusable))
        })
    };
    tokio::pin!(work);
    let timed_out = tokio::select! {
        biased;
        joined = &mut work => {
            keep(joined);
            return;
        }
        _ = tx.closed() => {
            flags.gone.store(true, Ordering::Release);
            false
        }
        _ = tokio::time::sleep_until(deadline) => {
            flags.timed_out.store(true, Ordering::Release);
            true
        }
    };
    flags.stop.notify_waiters();
    interrupt.interrupt();
    let joined = match tokio::time::timeout(ABANDON_GRACE, &mut work).await {
        Ok(joined) => joined,
        Err(_) if pool.manager().abandon(&flags.state) => {
            // One built-in call that does not look at the interrupt: the caller gets its
            // answer now; the thread ends on its own, holding its pool slot until then.
            if timed_out {
                answer(&flags, &tx, ExecError::Timeout(timeout)).await;
            }
            return;
        }
        // It finished meanwhile, or is committing: its own answer stands.
        Err(_) => work.await,
    };
    // The worker judged reusability after its statements ended; an interrupt arriving later
    // is a no-op (SQLite clears it once no statement runs).
    keep(joined);
    if let Some(e) = flags.take_last() {
        answer(&flags, &tx, e).await;
    }
}

/// Puts a connection that ran to its end back into the pool when it is in a known state, and
/// discards it otherwise.
fn keep(joined: Result<Option<(Object<SqliteManager>, bool)>, tokio::task::JoinError>) {
    if let Ok(Some((obj, reusable))) = joined
        && !reusable
    {
        drop(pool::discard(obj));
    }
}

/// The watchdog's answer after a stop: the head if none was sent yet, else the error after the
/// rows already sent (waiting for the reader to make room, for as long as it holds the stream).
async fn answer(flags: &StopFlags, tx: &mpsc::Sender<Result<Bytes, ExecError>>, e: ExecError) {
    match flags.take_head() {
        Some(head) => {
            let _ = head.send(Err(e));
        }
        None => {
            let _ = tx.send(Err(e)).await;
        }
    }
}

/// The blocking side of one execution.
struct Blocking<'a> {
    req: &'a Execute,
    tx: mpsc::WeakSender<Result<Bytes, ExecError>>,
    truncated: &'a AtomicBool,
    flags: &'a StopFlags,
    max_bytes: u64,
}

impl Blocking<'_> {
    /// Runs the statement; returns whether the connection is in a known, reusable state.
    fn run(&mut self, conn: &mut SqlConn) -> bool {
        let _ = conn.busy_timeout(self.req.timeout);
        // Set for every statement: our own catalogue work raises it on the same connections.
        if let Err(e) = conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, value_limit(self.max_bytes)) {
            self.fail(sql_err(e));
            return false;
        }
        if !self.req.read_only
            && let Err(e) = conn.execute_batch("BEGIN")
        {
            self.fail(sql_err(e));
            return false;
        }
        let outcome = self.statement(conn);
        let interrupted = matches!(&outcome, Err(e) if is_interrupt(e));
        let out_of_memory = matches!(&outcome, Err(e) if is_out_of_memory(e));
        let outcome = match outcome {
            Ok(head) => {
                if self.req.read_only || conn.is_autocommit() {
                    Ok(head)
                } else {
                    self.commit(conn).map(|()| head)
                }
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(Some(head)) => {
                if let Some(h) = self.flags.take_head() {
                    let _ = h.send(Ok(head));
                }
            }
            Ok(None) => {}
            Err(e) => {
                if let Some(e) = self.classify(e) {
                    self.fail(e);
                }
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
            }
        }
        // Something stopped us from outside (deadline, consumer gone), or SQLite ran out of
        // memory: start afresh next time.
        !interrupted && !out_of_memory && !self.flags.stopped() && conn.is_autocommit()
    }

    /// Commits unless the statement was stopped (deadline, consumer gone) or abandoned: a caller
    /// told `Timeout` never has its write committed. Once committing, the watchdog waits for the
    /// outcome instead of abandoning it.
    fn commit(&self, conn: &SqlConn) -> Result<(), rusqlite::Error> {
        let stopped = self.flags.stopped()
            || self
                .flags
                .state
                .compare_exchange(RUNNING, COMMITTING, Ordering::AcqRel, Ordering::Acquire)
                .is_err();
        if stopped {
            return Err(if self.flags.timed_out.load(Ordering::Acquire) {
                internal(ExecError::Timeout(self.req.timeout))
            } else {
                internal_none()
            });
        }
        conn.execute_batch("COMMIT")
    }

    /// Our errors travel through `Internal`; SQLite's through the rest.
    fn classify(&self, e: rusqlite::Error) -> Option<ExecError> {
        if let Some(ours) = ours(&e) {
            return ours;
        }
        if self.flags.timed_out.load(Ordering::Acquire) {
            return Some(ExecError::Timeout(self.req.timeout));
        }
        if self.flags.gone.load(Ordering::Acquire) {
            return None;
        }
        if e.sqlite_error_code() == Some(ErrorCode::TooBig) {
            return Some(too_big(self.max_bytes));
        }
        Some(sql_err(e))
    }

    /// Reports the error that ended the statement: as the head if none was sent, after the rows
    /// otherwise; after a stop, through the watchdog.
    fn fail(&mut self, e: ExecError) {
        if let Some(h) = self.flags.take_head() {
            let _ = h.send(Err(e));
        } else if !self.send(Err(e.clone()))
            && self.flags.stopped()
            && let Ok(mut last) = self.flags.last.lock()
        {
            *last = Some(e);
        }
    }

    /// Sends one item to the consumer, waiting for room unless the statement is stopped
    /// meanwhile: a consumer that reads nothing must not keep this thread, its connection and
    /// its pool slot past the deadline. Nothing is sent after a stop. Returns whether it was sent.
    fn send(&self, item: Result<Bytes, ExecError>) -> bool {
        if self.flags.stopped() {
            return false;
        }
        // Gone once the watchdog ended: the reader has its answer.
        let Some(tx) = self.tx.upgrade() else {
            return false;
        };
        let item = match tx.try_send(item) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(item)) => item,
        };
        let stop = self.flags.stop.notified();
        tokio::pin!(stop);
        // Registered before the flags are read, so a stop after this read still wakes us.
        stop.as_mut().enable();
        if self.flags.stopped() {
            return false;
        }
        futures::executor::block_on(async {
            tokio::select! {
                biased;
                _ = &mut stop => false,
                sent = tx.send(item) => sent.is_ok(),
            }
        })
    }

    /// Prepares, binds and runs the statement. Rows go out as they are stepped; the head for a
    /// query is sent before the rows (after the first row, whose storage classes name the
    /// columns that have no declared type). `Ok(Some(head))` is a head still to send after COMMIT.
    fn statement(&mut self, conn: &SqlConn) -> Result<Option<Head>, rusqlite::Error> {
        // `prepare` refuses any tail that is more than whitespace or comments.
        let mut stmt = conn.prepare(&self.req.sql)?;
        let expected = stmt.parameter_count();
        if expected != self.req.params.len() {
            return Err(internal(ExecError::BadParams(format!(
                "the statement has {expected} placeholders but {} params were given",
                self.req.params.len()
            ))));
        }
        for (i, p) in self.req.params.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, to_value(i + 1, p).map_err(internal)?)?;
        }
        if !self.req.is_query {
            return match stmt.raw_execute() {
                Ok(n) => Ok(Some(Head::Affected(n as u64))),
                Err(rusqlite::Error::ExecuteReturnedResults) => {
                    Err(internal(ExecError::QueryFailed {
                        message: "the statement returns rows; send it as a query".into(),
                        sqlstate: None,
                    }))
                }
                Err(e) => Err(e),
            };
        }
        let declared: Vec<(String, Option<String>)> = stmt
            .columns()
            .iter()
            .map(|c| (c.name().to_owned(), c.decl_type().map(str::to_owned)))
            .collect();
        let width = declared.len();
        let mut rows = stmt.raw_query();
        let first = rows.next()?;
        let columns = declared
            .into_iter()
            .enumerate()
            .map(|(i, (name, decl))| Column {
                name,
                type_name: decl.unwrap_or_else(|| {
                    first
                        .and_then(|r| r.get_ref(i).ok())
                        .map(storage_class)
                        .unwrap_or("NULL")
                        .to_owned()
                }),
            })
            .collect();
        match self.flags.take_head() {
            Some(h) => {
                if h.send(Ok(Head::Rows(columns))).is_err() {
                    self.flags.gone.store(true, Ordering::Release);
                    return Ok(None);
                }
            }
            None => return Ok(None),
        }
        let mut count: u64 = 0;
        let mut total: u64 = 0;
        let mut row = first;
        while let Some(r) = row {
            if count >= self.req.max_rows {
                self.truncated.store(true, Ordering::Release);
                break;
            }
            let encoded = encode_row(r, width)?;
            total += encoded.len() as u64;
            if total > self.max_bytes {
                return Err(internal(ExecError::ResultTooLarge(self.max_bytes)));
            }
            if !self.send(Ok(encoded)) {
                if self.flags.timed_out.load(Ordering::Acquire) {
                    return Err(internal(ExecError::Timeout(self.req.timeout)));
                }
                self.flags.gone.store(true, Ordering::Release);
                return Err(internal_none());
            }
            if self.flags.timed_out.load(Ordering::Acquire) {
                return Err(internal(ExecError::Timeout(self.req.timeout)));
            }
            count += 1;
            row = rows.next()?;
        }
        Ok(None)
    }
}
