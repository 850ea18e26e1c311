//! The SQLite driver: a small bounded pool of connections to a file under the operator's
//! `sqlite_roots`, opened read-only (plus `PRAGMA query_only`) for read-only statements, with all
//! blocking work on `spawn_blocking`, rows fed through a bounded channel (backpressure), and the
//! connection's `InterruptHandle` fired on deadline or when the consumer goes away.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rusqlite::config::DbConfig;
use rusqlite::limits::Limit;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection as SqlConn, OpenFlags};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::{
    Column, ColumnInfo, Connection, DatasourceSpec, ExecError, Execute, Execution, PoolStats,
    RegistrySettings, RowStream, ServerInfo, TableInfo, net,
};
use crate::encode::RowWriter;

/// Rows buffered between the SQLite thread and the consumer.
const ROW_BUFFER: usize = 64;

struct Idle {
    conn: SqlConn,
    read_only: bool,
    since: Instant,
}

struct Inner {
    /// The path as configured; re-checked against the roots at every new connection.
    path: PathBuf,
    settings: RegistrySettings,
    max_size: usize,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    size: AtomicUsize,
    in_use: AtomicUsize,
    waiting: AtomicUsize,
    closed: AtomicBool,
}

/// A bounded pool of connections to one SQLite file.
pub struct SqlitePool {
    inner: Arc<Inner>,
}

/// A checked-out connection; dropping it discards the connection, [`Inner::release`] keeps it.
struct PooledConn {
    conn: Option<SqlConn>,
    read_only: bool,
    inner: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        self.inner.in_use.fetch_sub(1, Ordering::AcqRel);
        if self.conn.take().is_some() {
            self.inner.size.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn sql_err(e: rusqlite::Error) -> ExecError {
    match e {
        rusqlite::Error::MultipleStatement => ExecError::QueryFailed {
            message: "exactly one statement is allowed".into(),
            sqlstate: None,
        },
        rusqlite::Error::SqliteFailure(code, msg) => ExecError::QueryFailed {
            message: msg.unwrap_or_else(|| code.to_string()),
            sqlstate: None,
        },
        other => ExecError::QueryFailed {
            message: other.to_string(),
            sqlstate: None,
        },
    }
}

fn is_interrupt(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted)
}

impl Inner {
    /// Opens one connection: read-only connections cannot write even through a function or a
    /// pragma; no URI filenames, no ATTACH, no extension loading, defensive mode on.
    fn open_conn(&self, read_only: bool) -> Result<SqlConn, ExecError> {
        let real = net::sqlite_path_allowed(&self.path, &self.settings.sqlite_roots)?;
        let mode = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        };
        let unavailable = |e: rusqlite::Error| {
            ExecError::Unavailable(format!("the SQLite file could not be opened: {e}"))
        };
        let conn = SqlConn::open_with_flags(&real, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(unavailable)?;
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)
            .map_err(unavailable)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
            .map_err(unavailable)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)
            .map_err(unavailable)?;
        if read_only {
            conn.execute_batch("PRAGMA query_only=1")
                .map_err(unavailable)?;
        }
        Ok(conn)
    }

    async fn checkout(self: &Arc<Self>, read_only: bool) -> Result<PooledConn, ExecError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ExecError::Unavailable(
                "the datasource's pool is closed".into(),
            ));
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let permit = tokio::time::timeout(
            self.settings.pool_timeout,
            self.permits.clone().acquire_owned(),
        )
        .await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let permit = match permit {
            Err(_) => return Err(ExecError::PoolTimeout),
            Ok(Err(_)) => {
                return Err(ExecError::Unavailable(
                    "the datasource's pool is closed".into(),
                ));
            }
            Ok(Ok(p)) => p,
        };
        self.in_use.fetch_add(1, Ordering::AcqRel);
        let mut pc = PooledConn {
            conn: None,
            read_only,
            inner: self.clone(),
            _permit: permit,
        };
        if let Some(conn) = self.take_idle(read_only) {
            pc.conn = Some(conn);
            return Ok(pc);
        }
        let inner = self.clone();
        let limit = self.settings.connect_timeout;
        let opened = tokio::time::timeout(
            limit,
            tokio::task::spawn_blocking(move || inner.open_conn(read_only)),
        )
        .await;
        match opened {
            Ok(Ok(Ok(conn))) => {
                self.size.fetch_add(1, Ordering::AcqRel);
                pc.conn = Some(conn);
                Ok(pc)
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(ExecError::Unavailable(
                "opening the SQLite file failed".into(),
            )),
            Err(_) => Err(ExecError::Unavailable(format!(
                "opening the SQLite file took longer than {limit:?}"
            ))),
        }
    }

    fn take_idle(&self, read_only: bool) -> Option<SqlConn> {
        let mut idle = self.idle.lock().ok()?;
        // Drop connections idle for too long.
        let before = idle.len();
        idle.retain(|i| i.since.elapsed() < self.settings.idle_timeout);
        self.size.fetch_sub(before - idle.len(), Ordering::AcqRel);
        let pos = idle.iter().rposition(|i| i.read_only == read_only)?;
        Some(idle.remove(pos).conn)
    }

    /// Keeps a connection that ended outside any transaction; the idle list never grows past the
    /// pool size (the least recently used connection goes first).
    fn release(&self, mut pc: PooledConn) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let Some(conn) = pc.conn.take() else {
            return;
        };
        if !conn.is_autocommit() {
            self.size.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            self.size.fetch_sub(1, Ordering::AcqRel);
            return;
        };
        if idle.len() >= self.max_size {
            idle.remove(0);
            self.size.fetch_sub(1, Ordering::AcqRel);
        }
        idle.push(Idle {
            conn,
            read_only: pc.read_only,
            since: Instant::now(),
        });
    }
}

impl SqlitePool {
    /// Checks the path against the operator's roots; connections are opened on first use.
    pub async fn open(
        spec: &DatasourceSpec,
        settings: &RegistrySettings,
    ) -> Result<Self, ExecError> {
        let Connection::Sqlite { path } = &spec.connection else {
            return Err(ExecError::Unavailable(
                "a SQLite datasource needs a file path".into(),
            ));
        };
        net::sqlite_path_allowed(path, &settings.sqlite_roots)?;
        let max = spec.pool_max_size.min(settings.max_pool_size).max(1);
        Ok(SqlitePool {
            inner: Arc::new(Inner {
                path: path.clone(),
                settings: settings.clone(),
                max_size: max,
                permits: Arc::new(Semaphore::new(max)),
                idle: Mutex::new(Vec::new()),
                size: AtomicUsize::new(0),
                in_use: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Runs one statement on a blocking thread; dropping this future or the stream interrupts it.
    pub async fn execute(&self, req: Execute) -> Result<Execution, ExecError> {
        let deadline = Instant::now() + req.timeout;
        let (tx, rx) = mpsc::channel(ROW_BUFFER);
        let (head_tx, head_rx) = oneshot::channel();
        let truncated = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(
            self.inner.clone(),
            req,
            deadline,
            tx,
            head_tx,
            truncated.clone(),
        ));
        match head_rx.await {
            Ok(Ok(Head::Rows(columns))) => {
                let rows = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|item| (item, rx))
                })
                .boxed();
                Ok(Execution::Rows(RowStream::new(columns, rows, truncated)))
            }
            Ok(Ok(Head::Affected(n))) => Ok(Execution::Affected { rows_affected: n }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ExecError::Unavailable(
                "the statement ended without an answer".into(),
            )),
        }
    }

    pub async fn check(&self) -> Result<ServerInfo, ExecError> {
        let started = std::time::Instant::now();
        let version = self
            .with_conn(|c| {
                c.query_row("SELECT sqlite_version()", [], |r| r.get::<_, String>(0))
                    .map_err(sql_err)
            })
            .await?;
        Ok(ServerInfo {
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            server_version: format!("SQLite {version}"),
        })
    }

    /// Every table and view of the main database (SQLite's internal tables left out).
    pub async fn schema(&self) -> Result<Vec<TableInfo>, ExecError> {
        let rows = self
            .with_conn(|c| {
                let mut stmt = c
                    .prepare(
                        "SELECT m.name, p.name, p.type, p.\"notnull\", p.pk \
                         FROM sqlite_schema AS m JOIN pragma_table_info(m.name) AS p \
                         WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite!_%' ESCAPE '!' \
                         ORDER BY m.name, p.cid",
                    )
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, bool>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })
                    .map_err(sql_err)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(sql_err)?;
                Ok(rows)
            })
            .await?;
        let mut out: Vec<TableInfo> = Vec::new();
        for (table, column, type_name, not_null, _pk) in rows {
            let col = ColumnInfo {
                name: column,
                type_name,
                nullable: !not_null,
            };
            match out.last_mut() {
                Some(t) if t.name == table => t.columns.push(col),
                _ => out.push(TableInfo {
                    schema: "main".into(),
                    name: table,
                    columns: vec![col],
                }),
            }
        }
        Ok(out)
    }

    /// What the SQL policy needs to know of this file (see `policy::catalog`).
    pub async fn introspect(&self) -> Result<crate::policy::Catalog, ExecError> {
        let info = self.check().await?;
        Ok(crate::policy::Catalog {
            kind: Some(crate::model::DatasourceKind::Sqlite),
            server_version: info.server_version,
            default_schema: "main".into(),
            ..Default::default()
        })
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.inner.size.load(Ordering::Acquire),
            in_use: self.inner.in_use.load(Ordering::Acquire),
            waiting: self.inner.waiting.load(Ordering::Acquire),
        }
    }

    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.permits.close();
        let idle = match self.inner.idle.lock() {
            Ok(mut idle) => std::mem::take(&mut *idle),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        self.inner.size.fetch_sub(idle.len(), Ordering::AcqRel);
        drop(idle);
    }

    /// Runs our own read-only work on a pooled read-only connection (bounded in time).
    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SqlConn) -> Result<T, ExecError> + Send + 'static,
    ) -> Result<T, ExecError> {
        let mut pc = self.inner.checkout(true).await?;
        let Some(conn) = pc.conn.take() else {
            return Err(ExecError::Unavailable("the connection was lost".into()));
        };
        let interrupt = conn.get_interrupt_handle();
        let work = tokio::task::spawn_blocking(move || {
            let r = f(&conn);
            (conn, r)
        });
        let limit = Duration::from_secs(30);
        tokio::pin!(work);
        let joined = match tokio::time::timeout(limit, &mut work).await {
            Ok(j) => j,
            Err(_) => {
                interrupt.interrupt();
                let _ = work.await;
                self.inner.size.fetch_sub(1, Ordering::AcqRel);
                return Err(ExecError::Timeout(limit));
            }
        };
        match joined {
            Ok((conn, r)) => {
                pc.conn = Some(conn);
                self.inner.release(pc);
                r
            }
            Err(_) => {
                self.inner.size.fetch_sub(1, Ordering::AcqRel);
                Err(ExecError::Unavailable("the SQLite work failed".into()))
            }
        }
    }
}

enum Head {
    Rows(Vec<Column>),
    Affected(u64),
}

/// Why the blocking work was interrupted.
#[derive(Default)]
struct StopFlags {
    timed_out: AtomicBool,
    gone: AtomicBool,
}

/// One statement's life: checkout, the blocking work, and the watchdog that interrupts it.
async fn run(
    inner: Arc<Inner>,
    req: Execute,
    deadline: Instant,
    tx: mpsc::Sender<Result<Bytes, ExecError>>,
    head: oneshot::Sender<Result<Head, ExecError>>,
    truncated: Arc<AtomicBool>,
) {
    let timeout = req.timeout;
    let pc = tokio::select! {
        biased;
        _ = tx.closed() => return,
        _ = tokio::time::sleep_until(deadline) => {
            let _ = head.send(Err(ExecError::Timeout(timeout)));
            return;
        }
        pc = inner.checkout(req.read_only) => pc,
    };
    let mut pc = match pc {
        Ok(pc) => pc,
        Err(e) => {
            let _ = head.send(Err(e));
            return;
        }
    };
    let Some(mut conn) = pc.conn.take() else {
        let _ = head.send(Err(ExecError::Unavailable(
            "the connection was lost".into(),
        )));
        return;
    };
    // From here `pc` holds no connection; it only keeps the pool slot until we are done.
    inner.size.fetch_sub(1, Ordering::AcqRel);
    let interrupt = conn.get_interrupt_handle();
    let flags = Arc::new(StopFlags::default());
    let watch_tx = tx.clone();
    let max_bytes = inner.settings.max_result_bytes;
    let work = {
        let flags = flags.clone();
        tokio::task::spawn_blocking(move || {
            let mut job = Blocking {
                req: &req,
                tx,
                head: Some(head),
                truncated: &truncated,
                flags: &flags,
                max_bytes,
            };
            let reusable = job.run(&mut conn);
            (conn, reusable)
        })
    };
    tokio::pin!(work);
    let joined = tokio::select! {
        biased;
        r = &mut work => r,
        _ = watch_tx.closed() => {
            flags.gone.store(true, Ordering::Release);
            interrupt.interrupt();
            work.await
        }
        _ = tokio::time::sleep_until(deadline) => {
            flags.timed_out.store(true, Ordering::Release);
            interrupt.interrupt();
            work.await
        }
    };
    drop(watch_tx);
    if let Ok((conn, true)) = joined {
        inner.size.fetch_add(1, Ordering::AcqRel);
        pc.conn = Some(conn);
        inner.release(pc);
    }
}

/// The blocking side of one execution.
struct Blocking<'a> {
    req: &'a Execute,
    tx: mpsc::Sender<Result<Bytes, ExecError>>,
    head: Option<oneshot::Sender<Result<Head, ExecError>>>,
    truncated: &'a AtomicBool,
    flags: &'a StopFlags,
    max_bytes: u64,
}

impl Blocking<'_> {
    /// Runs the statement; returns whether the connection is in a known, reusable state.
    fn run(&mut self, conn: &mut SqlConn) -> bool {
        let remaining = self.req.timeout;
        let _ = conn.busy_timeout(remaining);
        if !self.req.read_only
            && let Err(e) = conn.execute_batch("BEGIN")
        {
            self.fail(sql_err(e));
            return false;
        }
        let outcome = self.statement(conn);
        let interrupted = matches!(&outcome, Err(e) if is_interrupt(e));
        let outcome = match outcome {
            Ok(head) => {
                if self.req.read_only || conn.is_autocommit() {
                    Ok(head)
                } else {
                    conn.execute_batch("COMMIT").map(|()| head)
                }
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(Some(head)) => {
                if let Some(h) = self.head.take() {
                    let _ = h.send(Ok(head));
                }
            }
            Ok(None) => {}
            Err(e) => {
                let e = self.classify(e);
                if let Some(e) = e {
                    self.fail(e);
                }
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
            }
        }
        // Something stopped us from outside (deadline, consumer gone): start afresh next time.
        !interrupted
            && !self.flags.gone.load(Ordering::Acquire)
            && !self.flags.timed_out.load(Ordering::Acquire)
            && conn.is_autocommit()
    }

    /// Our errors travel through `Internal`; SQLite's through the rest.
    fn classify(&self, e: rusqlite::Error) -> Option<ExecError> {
        if let rusqlite::Error::ToSqlConversionFailure(inner) = &e
            && let Some(ours) = inner.downcast_ref::<Internal>()
        {
            return ours.0.clone();
        }
        if self.flags.timed_out.load(Ordering::Acquire) {
            return Some(ExecError::Timeout(self.req.timeout));
        }
        if self.flags.gone.load(Ordering::Acquire) {
            return None;
        }
        Some(sql_err(e))
    }

    fn fail(&mut self, e: ExecError) {
        if let Some(h) = self.head.take() {
            let _ = h.send(Err(e));
        } else {
            let _ = self.tx.blocking_send(Err(e));
        }
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
        match self.head.take() {
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
            let mut w = RowWriter::with_capacity(16 * width + 2);
            for i in 0..width {
                match r.get_ref(i)? {
                    ValueRef::Null => w.null(),
                    ValueRef::Integer(v) => w.i64(v),
                    ValueRef::Real(v) => w.f64(v),
                    ValueRef::Text(t) => w.str(&String::from_utf8_lossy(t)),
                    ValueRef::Blob(b) => w.base64(b),
                }
            }
            let encoded = w.finish();
            total += encoded.len() as u64;
            if total > self.max_bytes {
                return Err(internal(ExecError::ResultTooLarge(self.max_bytes)));
            }
            if self.tx.blocking_send(Ok(encoded)).is_err() {
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

/// Carries our own error (or "nothing to report") through rusqlite's error type.
#[derive(Debug)]
struct Internal(Option<ExecError>);

impl std::fmt::Display for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(e) => write!(f, "{e}"),
            None => f.write_str("stopped"),
        }
    }
}

impl std::error::Error for Internal {}

fn internal(e: ExecError) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(Internal(Some(e))))
}

fn internal_none() -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(Internal(None)))
}

fn storage_class(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "INTEGER",
        ValueRef::Real(_) => "REAL",
        ValueRef::Text(_) => "TEXT",
        ValueRef::Blob(_) => "BLOB",
    }
}

/// A JSON param as a SQLite value. SQLite columns are flexibly typed, so the only misfit is an
/// integer beyond 64-bit signed; arrays and objects are bound as JSON text.
fn to_value(pos: usize, p: &serde_json::Value) -> Result<ToSqlOutput<'static>, ExecError> {
    let v = match p {
        serde_json::Value::Null => SqlValue::Null,
        serde_json::Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                SqlValue::Integer(i)
            } else if n.is_u64() {
                return Err(ExecError::BadParams(format!(
                    "param {pos} is {n}, larger than SQLite's INTEGER (64-bit signed) can hold"
                )));
            } else {
                SqlValue::Real(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    };
    Ok(ToSqlOutput::Owned(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_params_become_sqlite_values_and_huge_integers_are_refused() {
        assert_eq!(
            to_value(1, &serde_json::json!(true)).unwrap(),
            ToSqlOutput::Owned(SqlValue::Integer(1))
        );
        assert_eq!(
            to_value(1, &serde_json::json!({"a": 1})).unwrap(),
            ToSqlOutput::Owned(SqlValue::Text("{\"a\":1}".into()))
        );
        let err = to_value(3, &serde_json::json!(u64::MAX)).unwrap_err();
        assert!(matches!(err, ExecError::BadParams(m) if m.contains("param 3")));
    }
}
