//! One statement on a checked-out connection: a read-only query in one round trip, anything
//! else inside an explicit transaction; rows streamed to the caller under the row and byte caps.

use super::*;

/// Rows requested per portal fetch: small first so the first rows arrive quickly, doubling up to
/// the maximum so long results need few round trips.
pub(super) const FIRST_BATCH: u64 = 128;

pub(super) const MAX_BATCH: u64 = 2048;

pub(super) struct Job {
    pub(super) req: Execute,
    pub(super) password: Secret,
    pub(super) max_result_bytes: u64,
    pub(super) truncated: Arc<AtomicBool>,
}

impl Job {
    /// The search path this statement runs under.
    pub(super) fn search_path(&self) -> &str {
        self.req
            .search_path
            .as_deref()
            .unwrap_or(DEFAULT_SEARCH_PATH)
    }
}

pub(super) type HeadSender = oneshot::Sender<Result<Head, ExecError>>;

pub(super) type RowSender = mpsc::Sender<Result<Bytes, ExecError>>;

/// How `drive` failed: the error, and whether the connection is known to be clean (its
/// transaction was rolled back) so it may go back to the pool.
pub(super) struct Failure {
    pub(super) error: ExecError,
    pub(super) clean: bool,
    /// The session settings pinned at connect had moved, and nothing was sent to the client:
    /// reset the session and run the statement again.
    pub(super) repin: bool,
}

impl Failure {
    pub(super) fn discard(error: ExecError) -> Self {
        Failure {
            error,
            clean: false,
            repin: false,
        }
    }

    pub(super) fn clean(error: ExecError) -> Self {
        Failure {
            error,
            clean: true,
            repin: false,
        }
    }

    pub(super) fn repin() -> Self {
        Failure {
            error: ExecError::Unavailable(
                "the connection's session settings changed and could not be restored".into(),
            ),
            clean: true,
            repin: true,
        }
    }
}

pub(super) enum Done {
    /// The rows were streamed; carries the columns when no row was sent (the head is still due).
    Rows(Option<Vec<Column>>),
    Affected(u64),
}

/// The statement's future (spawned, or driven by the caller's task): runs the statement under
/// the client-side deadline and routes the outcome.
pub(super) async fn run(obj: Object<PgManager>, job: Job, head: HeadSender, rows: RowSender) {
    let mut guard = ConnGuard::new(obj);
    let mut head = Some(head);
    let timeout = job.req.timeout;
    let outcome = match guard.conn() {
        Some(conn) => tokio::time::timeout(timeout, drive(conn, &job, &mut head, &rows)).await,
        None => Ok(Err(Failure::discard(ExecError::Unavailable(
            "no connection".into(),
        )))),
    };
    let may_change_session = job.req.may_change_session;
    let watch = guard.conn().map(|c| c.watch.clone());
    let oversized = || {
        watch
            .as_ref()
            .is_some_and(|w| w.oversized.load(Ordering::Acquire))
    };
    let result = match outcome {
        Ok(Ok(done)) => {
            guard.release_after(may_change_session).await;
            Ok(done)
        }
        // The socket watch cut the connection at a row longer than the result cap.
        Ok(Err(_)) if oversized() => {
            drop(guard);
            Err(ExecError::ResultTooLarge(job.max_result_bytes))
        }
        Ok(Err(f)) => {
            if f.clean {
                guard.release_after(may_change_session).await;
            } else {
                drop(guard);
            }
            Err(f.error)
        }
        Err(_elapsed) => {
            // Cancel on the server before telling the client.
            drop(guard);
            Err(ExecError::Timeout(timeout))
        }
    };
    match (result, head.take()) {
        (Ok(Done::Affected(n)), Some(h)) => {
            let _ = h.send(Ok(Head::Affected(n)));
        }
        (Ok(Done::Rows(Some(columns))), Some(h)) => {
            let _ = h.send(Ok(Head::Rows(columns)));
        }
        (Ok(_), _) => {}
        (Err(e), Some(h)) => {
            let _ = h.send(Err(e));
        }
        (Err(e), None) => {
            let _ = rows.send(Err(e)).await;
        }
    }
}

/// The result columns as the client sees them.
pub(super) fn result_columns(stmt: &Statement) -> Vec<Column> {
    stmt.columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            type_name: values::type_name(c.type_()),
        })
        .collect()
}

pub(super) async fn drive(
    conn: &mut PgConn,
    job: &Job,
    head: &mut Option<HeadSender>,
    rows: &RowSender,
) -> Result<Done, Failure> {
    for attempt in 0..2 {
        let result = if job.req.read_only && job.req.is_query {
            drive_read_only_query(conn, job, head, rows).await
        } else {
            drive_in_transaction(conn, job, head, rows).await
        };
        match result {
            Err(f) if f.repin && attempt == 0 => {
                // Back to the values of the startup packet (`STARTUP_OPTIONS`), then once more.
                if conn.client.batch_execute("RESET ALL").await.is_err() {
                    return Err(Failure::discard(f.error));
                }
            }
            Err(f) if f.repin => return Err(Failure::discard(f.error)),
            other => return other,
        }
    }
    unreachable!("the loop returns on its second attempt")
}

/// Where the rows of one statement go, and when to stop taking them.
pub(super) struct RowSink<'a> {
    pub(super) job: &'a Job,
    pub(super) stmt: &'a Statement,
    pub(super) decoders: &'a [Decoder],
    pub(super) head: &'a mut Option<HeadSender>,
    pub(super) rows: &'a RowSender,
    /// Sent with the first row (or by `run` at the end), so an error before any row is still
    /// the `execute` error rather than a stream item.
    pub(super) columns: Option<Vec<Column>>,
    pub(super) fetched: u64,
    pub(super) bytes: u64,
}

/// What `RowSink::take` decided about one row.
pub(super) enum Take {
    More,
    /// Enough: the row cap was passed (`truncated` is set) or the row could not be sent
    /// (`Some` error for the client).
    Stop(Option<ExecError>),
}

impl<'a> RowSink<'a> {
    /// A sink for `stmt`'s rows, none taken yet; the columns go out with the first row.
    pub(super) fn new(
        job: &'a Job,
        stmt: &'a Statement,
        decoders: &'a [Decoder],
        head: &'a mut Option<HeadSender>,
        rows: &'a RowSender,
    ) -> Self {
        RowSink {
            job,
            stmt,
            decoders,
            head,
            rows,
            columns: Some(result_columns(stmt)),
            fetched: 0,
            bytes: 0,
        }
    }

    pub(super) async fn take(&mut self, row: &tokio_postgres::Row) -> Result<Take, Failure> {
        self.fetched += 1;
        if self.fetched > self.job.req.max_rows {
            self.job.truncated.store(true, Ordering::Release);
            return Ok(Take::Stop(None));
        }
        let encoded = match encode_row(row, self.stmt, self.decoders) {
            Ok(b) => b,
            Err(e) => return Ok(Take::Stop(Some(e))),
        };
        self.bytes = self.bytes.saturating_add(encoded.len() as u64);
        if self.bytes > self.job.max_result_bytes {
            return Ok(Take::Stop(Some(ExecError::ResultTooLarge(
                self.job.max_result_bytes,
            ))));
        }
        if let (Some(h), Some(cols)) = (self.head.take(), self.columns.take()) {
            let _ = h.send(Ok(Head::Rows(cols)));
        }
        if self.rows.send(Ok(encoded)).await.is_err() {
            // The client went away; the guard cancels and discards.
            return Err(Failure::discard(ExecError::Unavailable(
                "the client went away".into(),
            )));
        }
        Ok(Take::More)
    }
}

/// A query on a read-only datasource, in one round trip (see the module comment).
pub(super) async fn drive_read_only_query(
    conn: &mut PgConn,
    job: &Job,
    head: &mut Option<HeadSender>,
    rows: &RowSender,
) -> Result<Done, Failure> {
    let req = &job.req;
    let db = |e: tokio_postgres::Error| map_error(e, &job.password, req.timeout);
    let PgConn {
        client,
        statements,
        setup,
        pinned,
        broken,
        addr,
        tls,
        role,
        ..
    } = conn;
    let client: &Client = client;
    let addr = *addr;
    let tls: &PgTls = tls;

    // Both go out before either answer is awaited; the server runs them in order. Polling the
    // setup first puts its messages on the wire first, so the statement is parsed under the
    // pinned search path and its transaction starts read-only. The setup is never skipped.
    let setup_params = SetupParams::new(job, true, role);
    let setup_done = async { client.query_one(&*setup, &setup_params.get()).await };
    let started = async {
        let (stmt, decoders, params) = prepare(statements, client, job, true).await?;
        let stream = client
            .query_raw(&stmt, params.iter())
            .await
            .map_err(|e| bind_error(e, &job.password, req.timeout))?;
        Ok::<_, ExecError>((stmt, decoders, stream))
    };
    let (setup_done, started) = futures::join!(setup_done, started);
    // A connection whose setup failed or whose settings moved is not trusted again, whatever
    // the statement did.
    let verified = setup_done
        .map_err(|e| SetupError::Failed(db(e)))
        .and_then(|row| verify_setup(&row, pinned, false));
    if let Err(e) = verified {
        let failure = e.into_failure();
        if let (true, Ok((_, _, stream))) = (failure.repin, started) {
            // The statement ran under the moved settings: stop it and throw its rows away
            // before the session is reset and the statement runs again.
            if !cancel_and_drain(client, addr, tls, Box::pin(stream)).await {
                return Err(Failure::discard(failure.error));
            }
        }
        return Err(failure);
    }
    let (stmt, decoders, stream) = match started {
        Ok(started) => started,
        Err(error) => {
            forget_if_stale(statements, &req.sql, &error);
            // The statement failed in its own implicit transaction: the connection is idle.
            return Err(Failure::clean(error));
        }
    };

    let mut sink = RowSink::new(job, &stmt, &decoders, head, rows);
    let mut stream = Box::pin(stream);
    // An error ends the statement's implicit transaction: the connection stays clean.
    let (_, stopped) = feed(&mut sink, stream.as_mut(), |e| Failure::clean(db(e))).await?;
    let columns = sink.columns.take();
    let Some(error) = stopped else {
        return Ok(Done::Rows(columns));
    };
    // Stopped early while the server may still be producing rows. If the connection cannot be
    // brought back to idle in time, it is not used again.
    if !cancel_and_drain(client, addr, tls, stream).await {
        *broken = true;
    }
    match error {
        Some(error) => Err(Failure::clean(error)),
        None => Ok(Done::Rows(columns)),
    }
}

/// The setup statement's parameters for one statement: its timeout (as PostgreSQL
/// milliseconds), whether the transactions that follow start read-only, the search path and the
/// role the connection logged in with.
pub(super) struct SetupParams<'a> {
    ms: String,
    read_only: &'static str,
    search_path: &'a str,
    role: &'a str,
}

impl<'a> SetupParams<'a> {
    pub(super) fn new(job: &'a Job, read_only: bool, role: &'a str) -> Self {
        SetupParams {
            ms: millis(job.req.timeout).to_string(),
            read_only: if read_only { "on" } else { "off" },
            search_path: job.search_path(),
            role,
        }
    }

    /// In [`SETUP_SQL`]'s order.
    pub(super) fn get(&self) -> [&(dyn ToSql + Sync); 4] {
        [&self.ms, &self.read_only, &self.search_path, &self.role]
    }
}

/// The first half of binding, the same on both paths: the statement prepared (from the
/// connection's cache), its columns' decoders when rows are wanted, and the params converted to
/// the types the server inferred.
pub(super) async fn prepare(
    statements: &StatementCache,
    client: &Client,
    job: &Job,
    rows_wanted: bool,
) -> Result<(Statement, Vec<Decoder>, Vec<params::TextParam>), ExecError> {
    let stmt = statements
        .prepare(client, &job.req.sql)
        .await
        .map_err(|e| map_error(e, &job.password, job.req.timeout))?;
    let decoders = if rows_wanted {
        column_decoders(&stmt)?
    } else {
        Vec::new()
    };
    let params = params::convert_params(&job.req.params, stmt.params())?;
    Ok((stmt, decoders, params))
}

/// Feeds a stream of rows to the sink until the stream ends or the sink stops taking: the rows
/// that came, and why the sink stopped when it did (`Some(None)`: the row cap was passed).
pub(super) async fn feed(
    sink: &mut RowSink<'_>,
    mut stream: Pin<&mut tokio_postgres::RowStream>,
    failed: impl Fn(tokio_postgres::Error) -> Failure,
) -> Result<(u64, Option<Option<ExecError>>), Failure> {
    let mut got = 0;
    while let Some(row) = stream.next().await {
        let row = row.map_err(&failed)?;
        got += 1;
        if let Take::Stop(error) = sink.take(&row).await? {
            return Ok((got, Some(error)));
        }
    }
    Ok((got, None))
}

/// "cached plan must not change result type": the table changed under a cached statement;
/// prepare afresh next time.
pub(super) fn forget_if_stale(statements: &StatementCache, sql: &str, error: &ExecError) {
    if let ExecError::QueryFailed {
        sqlstate: Some(code),
        ..
    } = error
        && code == "0A000"
    {
        statements.forget(sql);
    }
}

/// Any other statement, inside an explicit transaction: read-write datasources, and statements
/// that are not queries.
pub(super) async fn drive_in_transaction(
    conn: &mut PgConn,
    job: &Job,
    head: &mut Option<HeadSender>,
    rows: &RowSender,
) -> Result<Done, Failure> {
    let req = &job.req;
    let PgConn {
        client,
        statements,
        setup,
        pinned,
        role,
        ..
    } = conn;
    let db = |e: tokio_postgres::Error| map_error(e, &job.password, req.timeout);

    // Round trip 1: BEGIN (READ ONLY).
    let tx = client
        .build_transaction()
        .read_only(req.read_only)
        .start()
        .await
        .map_err(|e| Failure::discard(db(e)))?;

    // Round trip 2, pipelined: the setup statement, then (prepare when not cached) bind. The
    // server handles them in order, so the timeouts already cover prepare and bind.
    let setup_params = SetupParams::new(job, req.read_only, role);
    let setup_values = setup_params.get();
    let setup_done = tx.query_one(&*setup, &setup_values);
    let prepared = async {
        let (stmt, decoders, params) = prepare(statements, tx.client(), job, req.is_query).await?;
        let portal = tx
            .bind_raw(&stmt, params.iter())
            .await
            .map_err(|e| bind_error(e, &job.password, req.timeout))?;
        Ok::<_, ExecError>((stmt, decoders, portal))
    };
    let (setup_done, prepared) = futures::join!(setup_done, prepared);
    let checked = setup_done
        .map_err(|e| SetupError::Failed(db(e)))
        .and_then(|row| verify_setup(&row, pinned, req.read_only));
    if let Err(e) = checked {
        // Nothing was executed yet; dropping the transaction rolls it back.
        return Err(e.into_failure());
    }
    let (stmt, decoders, portal) = match prepared {
        Ok(p) => p,
        Err(error) => {
            forget_if_stale(statements, &req.sql, &error);
            let clean = tx.rollback().await.is_ok();
            return Err(Failure {
                error,
                clean,
                repin: false,
            });
        }
    };

    if !req.is_query {
        // Run the portal to completion; rows a RETURNING clause might produce are not wanted.
        let stream = tx
            .query_portal_raw(&portal, 0)
            .await
            .map_err(|e| Failure::discard(db(e)))?;
        let mut stream = pin!(stream);
        while let Some(r) = stream.next().await {
            r.map_err(|e| Failure::discard(db(e)))?;
        }
        let n = stream.rows_affected().unwrap_or(0);
        drop(portal);
        let end = if req.read_only {
            tx.rollback().await
        } else {
            tx.commit().await
        };
        end.map_err(|e| Failure::discard(db(e)))?;
        return Ok(Done::Affected(n));
    }

    // Fetch through the portal in batches, never asking for more than one row past max_rows:
    // between fetches the portal is suspended and the server does no work.
    let mut sink = RowSink::new(job, &stmt, &decoders, head, rows);
    let limit = req.max_rows.saturating_add(1);
    let mut batch = FIRST_BATCH;
    let mut stop: Option<ExecError> = None;
    'fetch: while sink.fetched < limit {
        let want = batch.min(limit - sink.fetched).min(i32::MAX as u64) as i32;
        let stream = tx
            .query_portal_raw(&portal, want)
            .await
            .map_err(|e| Failure::discard(db(e)))?;
        let mut stream = pin!(stream);
        let (got, stopped) = feed(&mut sink, stream.as_mut(), |e| Failure::discard(db(e))).await?;
        if let Some(error) = stopped {
            stop = error;
            break 'fetch;
        }
        // A suspended portal returns exactly `want` rows; fewer (or a completion tag) means the
        // statement finished. An empty statement completes with neither rows nor a tag.
        if stream.rows_affected().is_some() || got < want as u64 {
            break;
        }
        batch = (batch * 2).min(MAX_BATCH);
    }
    let columns = sink.columns.take();
    drop(portal);
    if let Some(error) = stop {
        let clean = tx.rollback().await.is_ok();
        return Err(Failure {
            error,
            clean,
            repin: false,
        });
    }
    let end = if req.read_only {
        tx.rollback().await
    } else {
        tx.commit().await
    };
    end.map_err(|e| Failure::discard(db(e)))?;
    Ok(Done::Rows(columns))
}
