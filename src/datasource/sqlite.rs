//! The SQLite driver: a small bounded pool of connections to a file under the operator's
//! `sqlite_roots`, opened read-only (plus `PRAGMA query_only`) for read-only statements, with all
//! blocking work on `spawn_blocking`, rows fed through a bounded channel (backpressure), and the
//! connection's `InterruptHandle` fired on deadline or when the consumer goes away.
//!
//! SQLite runs inside the gateway's process, so its work is bounded here: no single string or
//! blob may grow past the result cap (`SQLITE_LIMIT_LENGTH`), the process-wide heap SQLite may use
//! is capped ([`set_heap_limit`]), and a statement that does not stop when interrupted (one long
//! built-in call: SQLite checks for interrupts only between VDBE steps) is abandoned: its caller
//! gets `Timeout` on time, the connection is discarded, and the blocking thread finishes on its
//! own while still holding its pool slot, so the pool size bounds how many such statements run.

mod catalog;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rusqlite::config::DbConfig;
use rusqlite::limits::Limit;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection as SqlConn, ErrorCode, OpenFlags};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::{
    Column, ColumnInfo, Connection, DatasourceSpec, ExecError, Execute, Execution, PoolStats,
    RegistrySettings, RowStream, ServerInfo, TableInfo, net,
};
use crate::encode::RowWriter;

/// Rows buffered between the SQLite thread and the consumer.
const ROW_BUFFER: usize = 64;

/// How long an interrupted statement has to stop before it is abandoned. An interrupt takes
/// effect at the next VDBE step, so anything that honours it is done well within this.
const ABANDON_GRACE: Duration = Duration::from_millis(200);

/// How long our own catalogue and schema queries may take.
const OWN_WORK_LIMIT: Duration = Duration::from_secs(30);

/// SQLite's compiled-in ceiling on `SQLITE_LIMIT_LENGTH` (`SQLITE_MAX_LENGTH`).
const SQLITE_MAX_LENGTH: u64 = 1_000_000_000;

/// Statements abandoned in this process whose blocking thread still runs, and all abandoned so
/// far (for `/metrics`).
static ABANDONED_RUNNING: AtomicU64 = AtomicU64::new(0);
static ABANDONED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// SQLite statements abandoned at their deadline or when their consumer went away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Abandoned {
    /// Whose blocking thread is still running (each holds a pool slot of its datasource).
    pub running: u64,
    /// Since the process started.
    pub total: u64,
}

/// The process-wide count of abandoned SQLite statements.
pub fn abandoned() -> Abandoned {
    Abandoned {
        running: ABANDONED_RUNNING.load(Ordering::Acquire),
        total: ABANDONED_TOTAL.load(Ordering::Acquire),
    }
}

/// Caps the heap SQLite may use in this whole process: datasource connections, and the store's
/// and the audit log's connections too. An allocation past it fails (`SQLITE_NOMEM`) instead of
/// growing the gateway. 0 removes the cap.
pub fn set_heap_limit(bytes: u64) {
    let n = i64::try_from(bytes).unwrap_or(i64::MAX);
    // SAFETY: sqlite3_hard_heap_limit64 initialises SQLite if needed and then sets a global
    // under SQLite's own mutex; it takes any value and touches no memory of ours.
    unsafe {
        rusqlite::ffi::sqlite3_hard_heap_limit64(n);
    }
}

/// The heap cap in force (0: none).
pub fn heap_limit() -> u64 {
    // SAFETY: as above; a negative argument only reads the current limit.
    let n = unsafe { rusqlite::ffi::sqlite3_hard_heap_limit64(-1) };
    u64::try_from(n).unwrap_or(0)
}

/// The longest string or blob a datasource statement may build or read: a value larger than the
/// whole result cap can never be answered, and a quarter of the heap cap leaves room for the
/// copies one statement may hold at once (a concatenation, the row being read) and for the
/// store's and the audit log's connections.
fn value_limit(max_result_bytes: u64) -> i32 {
    let mut limit = max_result_bytes.clamp(1, SQLITE_MAX_LENGTH);
    let heap = heap_limit();
    if heap > 0 {
        limit = limit.min((heap / 4).max(1));
    }
    i32::try_from(limit).unwrap_or(i32::MAX)
}

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
    /// Statements of this pool abandoned whose blocking thread still runs.
    abandoned: AtomicUsize,
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
        // Not ResultTooLarge: the value too big is often one the statement only builds on the
        // way (`length(printf(…))`), so fewer rows or columns would not help; the statement must
        // change. Not retryable either.
        rusqlite::Error::SqliteFailure(code, _) if code.code == ErrorCode::TooBig => {
            ExecError::QueryFailed {
                message: "a string or blob in the statement is larger than one value may be in \
                          this gateway (limits.max_result_bytes, and a quarter of \
                          limits.sqlite_heap_limit_bytes)"
                    .into(),
                sqlstate: None,
            }
        }
        rusqlite::Error::SqliteFailure(code, _) if code.code == ErrorCode::OutOfMemory => {
            ExecError::QueryFailed {
                message: "the statement needed more memory than SQLite may use in this gateway \
                          (limits.sqlite_heap_limit_bytes)"
                    .into(),
                sqlstate: None,
            }
        }
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
    e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted)
}

/// After running out of memory SQLite may have rolled back on its own or left caches half
/// built: such a connection is not kept.
fn is_out_of_memory(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::OutOfMemory)
}

/// Where a piece of blocking work stands, shared by it and its watchdog. The watchdog may
/// abandon it only while it is `RUNNING`: never during a COMMIT (the caller must learn whether
/// the write happened), never once it finished.
const RUNNING: u8 = 0;
const COMMITTING: u8 = 1;
const FINISHED: u8 = 2;
const ABANDONED: u8 = 3;

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
        conn.set_limit(
            Limit::SQLITE_LIMIT_LENGTH,
            value_limit(self.settings.max_result_bytes),
        )
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

    /// The watchdog gives up on work that did not stop: returns whether it was abandoned
    /// (false: it finished meanwhile, or is committing and must be waited for).
    fn abandon(&self, state: &AtomicU8) -> bool {
        // Counted before the state changes, so the worker's `finish` never counts below zero.
        self.abandoned.fetch_add(1, Ordering::AcqRel);
        ABANDONED_RUNNING.fetch_add(1, Ordering::AcqRel);
        if state
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            ABANDONED_TOTAL.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        self.abandoned.fetch_sub(1, Ordering::AcqRel);
        ABANDONED_RUNNING.fetch_sub(1, Ordering::AcqRel);
        false
    }

    /// The worker is done: returns whether it had been abandoned (its connection must then go).
    fn finish(&self, state: &AtomicU8) -> bool {
        state.swap(FINISHED, Ordering::AcqRel) == ABANDONED
    }

    /// An abandoned worker has ended and given its pool slot back.
    fn abandoned_ended(&self) {
        self.abandoned.fetch_sub(1, Ordering::AcqRel);
        ABANDONED_RUNNING.fetch_sub(1, Ordering::AcqRel);
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
                abandoned: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Runs one statement on a blocking thread; dropping this future or the stream interrupts it.
    pub async fn execute(&self, req: Execute) -> Result<Execution, ExecError> {
        let deadline = Instant::now() + req.timeout;
        let (tx, rx) = mpsc::channel(ROW_BUFFER);
        let (head_tx, mut head_rx) = oneshot::channel();
        let (abandon_tx, abandon_rx) = oneshot::channel();
        let truncated = Arc::new(AtomicBool::new(false));
        let flags = Arc::new(StopFlags::default());
        tokio::spawn(run(
            self.inner.clone(),
            req,
            deadline,
            Channels {
                tx,
                head: head_tx,
                abandon: abandon_tx,
                flags: flags.clone(),
            },
            truncated.clone(),
        ));
        // The head comes from the worker, or the watchdog gives up on it first.
        let mut abandon = Some(abandon_rx);
        let head = match abandon.as_mut() {
            Some(a) => tokio::select! {
                biased;
                h = &mut head_rx => h,
                gave_up = a => {
                    abandon = None;
                    match gave_up {
                        Ok(e) => return Err(e),
                        // The watchdog ended without giving up: the worker answers.
                        Err(_) => head_rx.await,
                    }
                }
            },
            None => head_rx.await,
        };
        match head {
            Ok(Ok(Head::Rows(columns))) => {
                let rows = Rows {
                    rx,
                    abandon,
                    flags,
                    done: false,
                };
                let rows = futures::stream::unfold(rows, |mut rows| async move {
                    rows.next().await.map(|item| (item, rows))
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

    /// What the SQL policy needs to know of this file (see `policy::catalog` and
    /// [`catalog::read`]).
    pub async fn introspect(&self) -> Result<crate::policy::Catalog, ExecError> {
        self.with_conn(|c| catalog::read(c).map_err(sql_err)).await
    }

    /// Statements of this pool abandoned at their deadline (or when their consumer went away)
    /// whose blocking thread still runs; each holds a pool slot until it ends.
    pub fn abandoned(&self) -> usize {
        self.inner.abandoned.load(Ordering::Acquire)
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

    /// Runs our own read-only work on a pooled read-only connection, bounded in time like a
    /// statement: interrupted at the limit, abandoned if it does not stop, and holding its pool
    /// slot until its thread ends, even when this future is dropped.
    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SqlConn) -> Result<T, ExecError> + Send + 'static,
    ) -> Result<T, ExecError> {
        let pc = self.inner.checkout(true).await?;
        let Some(conn) = pc.conn.as_ref() else {
            return Err(ExecError::Unavailable("the connection was lost".into()));
        };
        let interrupt = conn.get_interrupt_handle();
        let state = Arc::new(AtomicU8::new(RUNNING));
        let inner = self.inner.clone();
        let work = {
            let state = state.clone();
            tokio::task::spawn_blocking(move || {
                let r = match pc.conn.as_ref() {
                    // Our own queries read whole definitions, which may be longer than a user's
                    // values may be; every statement sets its own limit again.
                    Some(conn) => conn
                        .set_limit(Limit::SQLITE_LIMIT_LENGTH, i32::MAX)
                        .map_err(sql_err)
                        .and_then(|_| f(conn)),
                    None => Err(ExecError::Unavailable("the connection was lost".into())),
                };
                if inner.finish(&state) {
                    // Discards the connection and frees the pool slot, then the count.
                    drop(pc);
                    inner.abandoned_ended();
                    return None;
                }
                Some((pc, r))
            })
        };
        tokio::pin!(work);
        let joined = match tokio::time::timeout(OWN_WORK_LIMIT, &mut work).await {
            Ok(joined) => joined,
            Err(_) => {
                interrupt.interrupt();
                if tokio::time::timeout(ABANDON_GRACE, &mut work)
                    .await
                    .is_err()
                    && !self.inner.abandon(&state)
                {
                    let _ = work.await;
                }
                // Whatever it returned, the connection was interrupted: it is dropped.
                return Err(ExecError::Timeout(OWN_WORK_LIMIT));
            }
        };
        match joined {
            Ok(Some((pc, r))) => {
                self.inner.release(pc);
                r
            }
            Ok(None) | Err(_) => Err(ExecError::Unavailable("the SQLite work failed".into())),
        }
    }
}

enum Head {
    Rows(Vec<Column>),
    Affected(u64),
}

/// Why the blocking work was interrupted, and where it stands ([`RUNNING`], …).
#[derive(Default)]
struct StopFlags {
    timed_out: AtomicBool,
    gone: AtomicBool,
    /// Wakes a worker waiting for room in the row channel once a flag above is set.
    stop: tokio::sync::Notify,
    state: AtomicU8,
    /// The error that ended the rows when the channel had no room for it.
    last: Mutex<Option<ExecError>>,
}

impl StopFlags {
    fn stopped(&self) -> bool {
        self.timed_out.load(Ordering::Acquire) || self.gone.load(Ordering::Acquire)
    }
}

/// The sending ends of one execution, held by its statement's task.
struct Channels {
    tx: mpsc::Sender<Result<Bytes, ExecError>>,
    head: oneshot::Sender<Result<Head, ExecError>>,
    /// The watchdog's answer when it abandons the statement; dropped unused otherwise.
    abandon: oneshot::Sender<ExecError>,
    flags: Arc<StopFlags>,
}

/// The consumer's side of the rows: what the worker sends, until the watchdog gives up on it.
struct Rows {
    rx: mpsc::Receiver<Result<Bytes, ExecError>>,
    abandon: Option<oneshot::Receiver<ExecError>>,
    flags: Arc<StopFlags>,
    done: bool,
}

impl Rows {
    async fn next(&mut self) -> Option<Result<Bytes, ExecError>> {
        if self.done {
            return None;
        }
        let item = match self.abandon.as_mut() {
            Some(abandon) => tokio::select! {
                biased;
                gave_up = abandon => {
                    self.abandon = None;
                    if let Ok(e) = gave_up {
                        // The abandoned worker may still send: let it fail instead of waiting.
                        self.rx.close();
                        self.done = true;
                        return Some(Err(e));
                    }
                    self.rx.recv().await
                }
                item = self.rx.recv() => item,
            },
            None => self.rx.recv().await,
        };
        if item.is_none() {
            self.done = true;
            let last = self.flags.last.lock().ok().and_then(|mut l| l.take());
            return last.map(Err);
        }
        item
    }
}

/// One statement's life: checkout, the blocking work, and the watchdog that interrupts it and,
/// if it does not stop, abandons it.
async fn run(
    inner: Arc<Inner>,
    req: Execute,
    deadline: Instant,
    ch: Channels,
    truncated: Arc<AtomicBool>,
) {
    let timeout = req.timeout;
    let Channels {
        tx,
        head,
        abandon,
        flags,
    } = ch;
    let pc = tokio::select! {
        biased;
        _ = tx.closed() => return,
        _ = tokio::time::sleep_until(deadline) => {
            let _ = head.send(Err(ExecError::Timeout(timeout)));
            return;
        }
        pc = inner.checkout(req.read_only) => pc,
    };
    let pc = match pc {
        Ok(pc) => pc,
        Err(e) => {
            let _ = head.send(Err(e));
            return;
        }
    };
    let Some(conn) = pc.conn.as_ref() else {
        let _ = head.send(Err(ExecError::Unavailable(
            "the connection was lost".into(),
        )));
        return;
    };
    let interrupt = conn.get_interrupt_handle();
    let watch_tx = tx.clone();
    let max_bytes = inner.settings.max_result_bytes;
    // The worker owns the checkout (connection and pool slot) until it ends, whether or not
    // anyone still waits for it.
    let work = {
        let flags = flags.clone();
        let inner = inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut pc = pc;
            let reusable = match pc.conn.as_mut() {
                Some(conn) => Blocking {
                    req: &req,
                    tx,
                    head: Some(head),
                    truncated: &truncated,
                    flags: &flags,
                    max_bytes,
                }
                .run(conn),
                None => false,
            };
            if inner.finish(&flags.state) {
                // Discards the connection and frees the pool slot, then the count.
                drop(pc);
                inner.abandoned_ended();
                return None;
            }
            Some((pc, reusable))
        })
    };
    tokio::pin!(work);
    let timed_out = tokio::select! {
        biased;
        joined = &mut work => {
            keep(&inner, joined);
            return;
        }
        _ = watch_tx.closed() => {
            flags.gone.store(true, Ordering::Release);
            false
        }
        _ = tokio::time::sleep_until(deadline) => {
            flags.timed_out.store(true, Ordering::Release);
            true
        }
    };
    drop(watch_tx);
    flags.stop.notify_waiters();
    interrupt.interrupt();
    let joined = match tokio::time::timeout(ABANDON_GRACE, &mut work).await {
        Ok(joined) => joined,
        Err(_) if inner.abandon(&flags.state) => {
            // One built-in call that does not look at the interrupt: the caller gets its
            // answer now; the thread ends on its own, holding its pool slot until then.
            if timed_out {
                let _ = abandon.send(ExecError::Timeout(timeout));
            }
            return;
        }
        // It finished meanwhile, or is committing: its own answer stands.
        Err(_) => work.await,
    };
    // The worker judged reusability after its statements ended; an interrupt arriving later
    // is a no-op (SQLite clears it once no statement runs).
    keep(&inner, joined);
}

/// Puts a connection that ran to its end back into the pool when it is in a known state.
fn keep(inner: &Inner, joined: Result<Option<(PooledConn, bool)>, tokio::task::JoinError>) {
    if let Ok(Some((pc, true))) = joined {
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
        // Something stopped us from outside (deadline, consumer gone), or SQLite ran out of
        // memory: start afresh next time.
        !interrupted
            && !out_of_memory
            && !self.flags.gone.load(Ordering::Acquire)
            && !self.flags.timed_out.load(Ordering::Acquire)
            && conn.is_autocommit()
    }

    /// Commits unless the statement was stopped (deadline, consumer gone) or abandoned: a caller
    /// told `Timeout` never has its write committed. Once committing, the watchdog waits for the
    /// outcome instead of abandoning it.
    fn commit(&self, conn: &SqlConn) -> Result<(), rusqlite::Error> {
        let stopped = self.flags.timed_out.load(Ordering::Acquire)
            || self.flags.gone.load(Ordering::Acquire)
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
        if e.sqlite_error_code() == Some(ErrorCode::TooBig) {
            return Some(ExecError::QueryFailed {
                message: format!(
                    "a string or blob in the statement is larger than {} bytes, the most one \
                     value may hold in this gateway (limits.max_result_bytes, and a quarter of \
                     limits.sqlite_heap_limit_bytes)",
                    value_limit(self.max_bytes)
                ),
                sqlstate: None,
            });
        }
        Some(sql_err(e))
    }

    fn fail(&mut self, e: ExecError) {
        if let Some(h) = self.head.take() {
            let _ = h.send(Err(e));
        } else if !self.send(Err(e.clone())) {
            // The consumer reads it after the rows already sent.
            if let Ok(mut last) = self.flags.last.lock() {
                *last = Some(e);
            }
        }
    }

    /// Sends one item to the consumer, waiting for room unless the statement is stopped
    /// meanwhile: a consumer that reads nothing must not keep this thread, its connection and
    /// its pool slot past the deadline. Returns whether it was sent.
    fn send(&self, item: Result<Bytes, ExecError>) -> bool {
        let item = match self.tx.try_send(item) {
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
                sent = self.tx.send(item) => sent.is_ok(),
                _ = stop => false,
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
