//! One statement on a checked-out connection: the setup unless the connection is ready for it,
//! prepare and execute, rows streamed to the consumer under the row and byte caps and the
//! deadline, `KILL QUERY` whenever it must stop early, and the connection given back (or its slot
//! held while a killed statement's thread finishes) after the answer.

use super::*;

/// A connection that read a row larger than this is not pooled again: its read buffer grew to
/// hold the row and never shrinks.
pub(super) const GROWN_ROW: usize = 4 * 1024 * 1024;

/// The bytes a row took on the wire, near enough: its values' lengths.
fn row_bytes(row: &Row) -> usize {
    (0..row.len())
        .map(|i| match row.as_ref(i) {
            Some(Value::Bytes(b)) => b.len(),
            _ => 8,
        })
        .sum()
}

/// Why a statement stopped before its end.
enum Stop {
    /// The consumer dropped the future or the stream.
    Gone,
    Deadline,
}

/// Awaits `fut` unless the consumer goes away or the deadline passes first.
async fn bounded<T>(
    tx: &mpsc::Sender<Result<Bytes, ExecError>>,
    deadline: Instant,
    fut: impl Future<Output = T>,
) -> Result<T, Stop> {
    tokio::select! {
        biased;
        _ = tx.closed() => Err(Stop::Gone),
        _ = tokio::time::sleep_until(deadline) => Err(Stop::Deadline),
        v = fut => Ok(v),
    }
}

/// A started statement's rows, borrowed from its connection.
type BinaryResult<'c> = mysql_async::QueryResult<'c, 'static, mysql_async::BinaryProtocol>;

/// Why a statement did not start.
enum Start {
    /// The connection failed before the statement could have run: worth one more try on a
    /// fresh connection when it came from the idle list.
    Dead(mysql_async::Error),
    /// The connection went with an earlier failure.
    Lost,
    /// The server refused our own setup.
    Setup(mysql_async::Error),
    /// The server did not confirm the transaction our setup started.
    Unconfirmed,
    /// The statement failed (prepare, params, execute); the connection is usable.
    Statement(ExecError),
    Stopped(Stop),
}

/// One statement's life on its connection.
pub(super) struct Job {
    pub(super) pool: Pool<MysqlManager>,
    pub(super) req: Execute,
    pub(super) deadline: Instant,
    pub(super) tx: mpsc::Sender<Result<Bytes, ExecError>>,
    pub(super) head: Option<oneshot::Sender<Result<Head, ExecError>>>,
    pub(super) truncated: Arc<AtomicBool>,
    /// The server thread running our statement, once known (to kill it after a panic).
    pub(super) conn_id: Option<u32>,
}

impl Job {
    pub(super) async fn run(mut self) {
        let outcome = AssertUnwindSafe(self.run_inner()).catch_unwind().await;
        if outcome.is_err() {
            // mysql_common panics on a column type it cannot parse. The connection went with the
            // unwound future (discarded); stop its statement and report instead of ending the
            // stream as if it were complete.
            tracing::error!("the MySQL statement task panicked");
            if let Some(id) = self.conn_id {
                self.pool.manager().kill_query(id).await;
            }
            self.fail(ExecError::UnsupportedType(
                "the server sent a value the gateway cannot decode; cast the column to text".into(),
            ))
            .await;
        }
    }

    /// Reports a failure to whoever is waiting: the `execute` call or the stream.
    async fn fail(&mut self, e: ExecError) {
        if let Some(head) = self.head.take() {
            let _ = head.send(Err(e));
        } else {
            let _ = self.tx.send(Err(e)).await;
        }
    }

    /// Ends the row stream for the consumer, before any work that follows the answer.
    fn close_stream(&mut self) {
        let (closed_tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, closed_tx));
    }

    /// Stops the statement on the server, reports why, and keeps the slot until the server is
    /// done with it.
    async fn abort(&mut self, pc: PooledConn, stop: Stop) {
        let pool = self.pool.clone();
        pool.manager().kill_query(pc.id).await;
        let e = matches!(stop, Stop::Deadline).then(|| ExecError::Timeout(self.req.timeout));
        self.report_while(e, pool.manager().settle_killed(pc)).await;
    }

    /// Reports `e` (if any) and ends the stream while `settle` frees the connection. The report
    /// waits for room among the buffered rows, so a reader that stopped reading must not keep the
    /// connection (or the killed statement's slot) held with it.
    async fn report_while(&mut self, e: Option<ExecError>, settle: impl Future<Output = ()>) {
        let report = async {
            if let Some(e) = e {
                self.fail(e).await;
            }
            self.close_stream();
        };
        tokio::join!(report, settle);
    }

    async fn run_inner(&mut self) {
        let pool = self.pool.clone();
        let manager = pool.manager();
        let mut pc = match bounded(&self.tx, self.deadline, checkout(&pool)).await {
            Ok(Ok(pc)) => pc,
            Ok(Err(e)) => return self.fail(e).await,
            Err(Stop::Gone) => return,
            Err(Stop::Deadline) => return self.fail(ExecError::Timeout(self.req.timeout)).await,
        };

        // Setup (unless the connection is ready for it), prepare (from the connection's statement
        // cache when it has run before) and execute. A reused connection that turns out to be
        // dead before the statement reached the server gets one more try on a fresh one.
        let mut attempt = 0;
        let (id, stmt, mut result) = loop {
            attempt += 1;
            let (id, reused) = (pc.id, pc.reused());
            self.conn_id = Some(id);
            match self.start(&mut pc).await {
                Ok((stmt, result)) => break (id, stmt, result),
                Err(Start::Dead(_)) if attempt == 1 && reused => {
                    pc.discard_conn();
                    match bounded(&self.tx, self.deadline, manager.open_conn()).await {
                        Ok(Ok(fresh)) => {
                            *pc = fresh;
                            continue;
                        }
                        Ok(Err(e)) => return self.fail(e).await,
                        Err(stop) => return self.abort(pc, stop).await,
                    }
                }
                Err(Start::Lost) => {
                    return self
                        .fail(ExecError::Unavailable("the connection was lost".into()))
                        .await;
                }
                Err(Start::Dead(e)) | Err(Start::Setup(e)) => {
                    let e = manager.map_err(e, self.req.timeout);
                    return self.fail(e).await;
                }
                Err(Start::Unconfirmed) => {
                    tracing::error!("the server did not confirm the statement's transaction");
                    return self
                        .fail(ExecError::Unavailable(
                            "the server did not confirm a read-only transaction".into(),
                        ))
                        .await;
                }
                Err(Start::Statement(e)) => return self.fail_and_release(pc, e).await,
                Err(Start::Stopped(stop)) => return self.abort(pc, stop).await,
            }
        };

        if !self.req.is_query {
            // A statement that returns rows anyway (MariaDB's `INSERT … RETURNING`) reports how
            // many it returned: the server's own count is 0 then.
            let mut largest = 0usize;
            let counted = bounded(&self.tx, self.deadline, async {
                let returns_rows = !result.columns_ref().is_empty();
                let mut rows = 0u64;
                while let Some(row) = result.next().await? {
                    rows += 1;
                    largest = largest.max(row_bytes(&row));
                }
                result.drop_result().await?;
                Ok::<_, mysql_async::Error>(returns_rows.then_some(rows))
            })
            .await;
            let affected = match counted {
                Ok(Ok(Some(rows))) => rows,
                Ok(Ok(None)) => pc.conn.as_ref().map_or(0, Conn::affected_rows),
                Ok(Err(e)) => return self.fail_midway(pc, id, e, largest).await,
                Err(stop) => return self.abort(pc, stop).await,
            };
            if self.past_deadline() {
                return self.ended_past_deadline(pc, largest).await;
            }
            if let Err(e) = self.finish(&mut pc).await {
                return self.fail_discard(pc, id, e).await;
            }
            if let Some(head) = self.head.take() {
                let _ = head.send(Ok(Head::Affected(affected)));
            }
            return self.release(pc, largest).await;
        }

        // The result's own metadata is authoritative (the prepared one may be cached).
        let meta = result.columns();
        let kinds = match meta.as_deref() {
            Some(cols) if !cols.is_empty() => {
                match cols.iter().map(ColKind::of).collect::<Result<Vec<_>, _>>() {
                    Ok(k) => k,
                    Err(e) => {
                        drop(result);
                        return self.fail_discard(pc, id, e).await;
                    }
                }
            }
            _ => match stmt.columns().iter().map(ColKind::of).collect() {
                Ok(k) => k,
                Err(e) => {
                    drop(result);
                    return self.fail_discard(pc, id, e).await;
                }
            },
        };
        let columns = kinds
            .iter()
            .map(|k| Column {
                name: k.name.clone(),
                type_name: k.type_name.clone(),
            })
            .collect();
        match self.head.take() {
            Some(head) => {
                if head.send(Ok(Head::Rows(columns))).is_err() {
                    drop(result);
                    return self.abort(pc, Stop::Gone).await;
                }
            }
            None => return,
        }

        let max_bytes = manager.settings.max_result_bytes;
        let mut count: u64 = 0;
        let mut total: u64 = 0;
        let mut largest: usize = 0;
        loop {
            let row = match bounded(&self.tx, self.deadline, result.next()).await {
                Ok(Ok(Some(row))) => row,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    drop(result);
                    return self.fail_midway(pc, id, e, largest).await;
                }
                Err(stop) => {
                    drop(result);
                    return self.abort(pc, stop).await;
                }
            };
            largest = largest.max(row_bytes(&row));
            if count >= self.req.max_rows {
                // One row more than allowed exists: say so and stop the server's work.
                self.truncated.store(true, Ordering::Release);
                drop(result);
                manager.kill_query(id).await;
                self.close_stream();
                return manager.settle_killed(pc).await;
            }
            let encoded = match encode_row(&kinds, &row) {
                Ok(b) => b,
                Err(e) => {
                    drop(result);
                    return self.fail_discard(pc, id, e).await;
                }
            };
            total += encoded.len() as u64;
            if total > max_bytes {
                drop(result);
                return self
                    .fail_discard(pc, id, ExecError::ResultTooLarge(max_bytes))
                    .await;
            }
            match bounded(&self.tx, self.deadline, self.tx.send(Ok(encoded))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    drop(result);
                    return self.abort(pc, Stop::Gone).await;
                }
                Err(stop) => {
                    drop(result);
                    return self.abort(pc, stop).await;
                }
            }
            count += 1;
        }
        // Further result sets (none for a plain SELECT) are read and thrown away.
        match bounded(&self.tx, self.deadline, result.drop_result()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return self.fail_midway(pc, id, e, largest).await,
            Err(stop) => return self.abort(pc, stop).await,
        }
        if self.past_deadline() {
            return self.ended_past_deadline(pc, largest).await;
        }
        if let Err(e) = self.finish(&mut pc).await {
            return self.fail_discard(pc, id, e).await;
        }
        // The stream ends here for the consumer; the reset or the next setup happens after.
        self.close_stream();
        self.release(pc, largest).await;
    }

    /// Whether the statement's results ended at or after its deadline. The server's own limit
    /// (`max_statement_time`, the same length, started a moment after our deadline) ends some
    /// functions with a value rather than an error (`BENCHMARK()` answers 0), and it can fire
    /// before our timer is seen to (tokio rounds a timer up to its millisecond tick): results
    /// complete in form may be cut short in fact.
    fn past_deadline(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Results that ended past the deadline are a timeout, never an answer: the error goes to
    /// the caller (after any rows already streamed), the transaction is not committed, and the
    /// connection goes back reset (which rolls a write back), the statement itself being over.
    async fn ended_past_deadline(&mut self, pc: PooledConn, largest_row: usize) {
        let e = ExecError::Timeout(self.req.timeout);
        self.report_and_release(e, pc, true, largest_row).await;
    }

    /// Reports `e` while the connection, its statement over, goes back to the pool (`reset`
    /// first when asked), unless it read a row large enough to have grown its buffer.
    async fn report_and_release(
        &mut self,
        e: ExecError,
        pc: PooledConn,
        reset: bool,
        largest_row: usize,
    ) {
        let next = self.req.read_only.then_some(self.req.timeout);
        let settle = async move {
            if largest_row > GROWN_ROW {
                // Dropped, so discarded: its grown buffer goes with it.
                return;
            }
            pc.release(reset, next).await;
        };
        self.report_while(Some(e), settle).await;
    }

    /// Whether the connection's session is reset (`COM_RESET_CONNECTION`) before it goes back to
    /// the pool: after anything but a read-only query, and after a query calling functions whose
    /// bodies the policy could not see. A read-only query's connection is checked for leftovers
    /// instead (module notes).
    fn reset_after(&self) -> bool {
        !self.req.read_only || !self.req.is_query || self.req.may_change_session
    }

    /// Gives the connection back for the next statement, unless it read a row large enough to
    /// have grown its buffer.
    async fn release(&self, pc: PooledConn, largest_row: usize) {
        if largest_row > GROWN_ROW {
            // Dropped, so discarded: its grown buffer goes with it.
            return;
        }
        let next = self.req.read_only.then_some(self.req.timeout);
        pc.release(self.reset_after(), next).await;
    }

    /// Sets the session up unless the connection is ready for this statement, prepares the
    /// statement and starts executing it.
    async fn start<'c>(
        &self,
        pc: &'c mut PooledConn,
    ) -> Result<(mysql_async::Statement, BinaryResult<'c>), Start> {
        // Ready: pinned, in a fresh read-only transaction the server confirmed, with this
        // timeout. Used up by this statement whatever happens.
        let ready = self.req.read_only && pc.ready_for == Some(self.req.timeout);
        pc.ready_for = None;
        let flavor = pc.flavor;
        let Some(conn) = pc.conn.as_mut() else {
            return Err(Start::Lost);
        };
        if !ready {
            let setup = flavor.setup_sql(self.req.timeout, self.req.read_only);
            match bounded(&self.tx, self.deadline, conn.query_drop(setup)).await {
                Ok(Ok(())) if in_transaction(conn, self.req.read_only) => {}
                Ok(Ok(())) => return Err(Start::Unconfirmed),
                Ok(Err(e @ mysql_async::Error::Server(_))) => return Err(Start::Setup(e)),
                Ok(Err(e)) => return Err(Start::Dead(e)),
                Err(stop) => return Err(Start::Stopped(stop)),
            }
        }
        // Without a setup round trip, a dead connection first shows here; a read-only
        // statement that may or may not have reached the server is safe to run again.
        let retry_ok = ready;
        let failed = |e: mysql_async::Error| match e {
            e @ mysql_async::Error::Server(_) => {
                Start::Statement(self.pool.manager().map_err(e, self.req.timeout))
            }
            e if retry_ok && !packet_too_large(&e) => Start::Dead(e),
            e => Start::Statement(self.pool.manager().map_err(e, self.req.timeout)),
        };
        let stmt = match bounded(&self.tx, self.deadline, conn.prep(self.req.sql.as_str())).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(failed(e)),
            Err(stop) => return Err(Start::Stopped(stop)),
        };
        let params = to_params(&self.req.params, usize::from(stmt.num_params()))
            .map_err(Start::Statement)?;
        match bounded(&self.tx, self.deadline, conn.exec_iter(&stmt, params)).await {
            Ok(Ok(r)) => Ok((stmt, r)),
            Ok(Err(e)) => Err(failed(e)),
            Err(stop) => Err(Start::Stopped(stop)),
        }
    }

    /// Commits a read-write statement's transaction. A read-only one is rolled back by the
    /// release, after the answer.
    async fn finish(&mut self, pc: &mut PooledConn) -> Result<(), ExecError> {
        if self.req.read_only {
            return Ok(());
        }
        let conn = pc.conn()?;
        match bounded(&self.tx, self.deadline, conn.query_drop("COMMIT")).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.pool.manager().map_err(e, self.req.timeout)),
            Err(Stop::Deadline) => Err(ExecError::Timeout(self.req.timeout)),
            Err(Stop::Gone) => Err(ExecError::Unavailable("the client went away".into())),
        }
    }

    /// A statement error before any row: report it, then give the connection back (its
    /// transaction is rolled back by the reset or the next setup).
    async fn fail_and_release(&mut self, pc: PooledConn, e: ExecError) {
        self.fail(e).await;
        self.release(pc, 0).await;
    }

    /// A driver error while reading the statement's results. The server's own error ends the
    /// statement there (its ERR packet is the last thing it sends), so the connection is given
    /// back as after any statement; anything else leaves it in an unknown state.
    async fn fail_midway(
        &mut self,
        pc: PooledConn,
        id: u32,
        e: mysql_async::Error,
        largest_row: usize,
    ) {
        let ended = matches!(e, mysql_async::Error::Server(_));
        let e = self.pool.manager().map_err(e, self.req.timeout);
        if !ended {
            return self.fail_discard(pc, id, e).await;
        }
        let reset = self.reset_after();
        self.report_and_release(e, pc, reset, largest_row).await;
    }

    /// An error mid-statement: stop it on the server, report, and keep the slot until the server
    /// is done with it.
    async fn fail_discard(&mut self, pc: PooledConn, id: u32, e: ExecError) {
        let pool = self.pool.clone();
        pool.manager().kill_query(id).await;
        self.report_while(Some(e), pool.manager().settle_killed(pc))
            .await;
    }
}
