//! The MySQL/MariaDB driver: a bounded pool of service-account connections to the checked address,
//! pinned session settings, user SQL only through prepared statements, rows streamed as JSON, and
//! `KILL QUERY` from a dedicated connection whenever a statement must stop early (deadline, client
//! gone, `max_rows`, size limit).
//!
//! A read-only query is one round trip: it runs as an autocommit statement in a session set
//! `READ ONLY` (with the pinned settings and its timeout, sent only when the connection's session
//! is not already so), prepared from the connection's statement cache. Anything else runs inside
//! an explicit transaction and is followed by `COM_RESET_CONNECTION`, as is a query calling
//! functions the policy cannot see into (`Execute::may_change_session`).
//!
//! The pool is our own rather than mysql_async's: every new physical connection re-runs the SSRF
//! check (`resolve_checked`), and a connection in an unknown state is never handed out again.
//!
//! Value mapping notes: DATETIME is `YYYY-MM-DDTHH:MM:SS[.ffffff]`, TIMESTAMP the same with `Z`
//! (read in the pinned UTC session), TIME a signed duration `[-]HHH:MM:SS[.ffffff]`; MySQL's JSON
//! type is nested JSON, but MariaDB's JSON is LONGTEXT on the wire (mysql_async does not ask for
//! MariaDB's extended metadata), so it arrives as a string. MySQL does not report placeholder
//! types, so params are checked by count only and the server converts them. A read-write query cut
//! by `max_rows` is killed, so its transaction is rolled back (only a plain SELECT is expected).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Params, Row, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::drive::{self, Abandoned, Ends, Head};
use super::{
    Column, Connection, DatasourceSpec, ExecError, Execute, Execution, PoolStats, RegistrySettings,
    Secret, ServerInfo, TableInfo, net, scrub,
};
use crate::encode::RowWriter;

/// Pinned whenever a connection's session is not known to be set up (new, or after
/// `COM_RESET_CONNECTION`, which wipes session variables): the SQL
/// policy's parser assumes backslash escapes and double-quoted strings (no ANSI_QUOTES,
/// no NO_BACKSLASH_ESCAPES); timestamps are read in UTC; text is utf8mb4.
const PIN_SESSION: &str = "SET NAMES utf8mb4, \
     SESSION sql_mode='STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', \
     SESSION time_zone='+00:00'";

/// Rows buffered between the connection task and the consumer: small, so a slow client slows
/// the server read instead of filling memory.
const ROW_BUFFER: usize = 64;

/// Prepared statements kept per connection (the oldest is closed on the server past this), so a
/// repeated query skips its prepare round trip. Bounded well under the server's
/// `max_prepared_stmt_count` (16,382 by default) for a full pool: 32 × 32 connections = 1,024.
const STATEMENT_CACHE_SIZE: usize = 32;

/// How long our own housekeeping commands (KILL, ROLLBACK, reset, schema) may take.
const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(10);

/// MariaDB error 1969 (max_statement_time) and MySQL error 3024 (max_execution_time).
const SERVER_TIMEOUT_CODES: [u16; 2] = [1969, 3024];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    MariaDb,
    MySql,
}

impl Flavor {
    fn from_version(version: &str) -> Flavor {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }

    /// Our own session statement timeout (trusted text): MariaDB counts seconds, MySQL
    /// milliseconds (and applies it to SELECT only). Zero would mean "no limit", so at least 1ms.
    fn timeout_setting(self, timeout: Duration) -> String {
        let ms = timeout.as_millis().clamp(1, u128::from(u32::MAX));
        match self {
            Flavor::MariaDb => format!("SESSION max_statement_time={}.{:03}", ms / 1000, ms % 1000),
            Flavor::MySql => format!("SESSION max_execution_time={ms}"),
        }
    }
}

/// Where and as whom to connect. Never printed.
struct Target {
    host: String,
    port: u16,
    database: String,
    user: String,
    password: Secret,
}

struct Idle {
    conn: Conn,
    flavor: Flavor,
    ready_for: Option<Duration>,
    since: Instant,
}

struct Inner {
    target: Target,
    settings: RegistrySettings,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    /// Physical connections that exist (idle or checked out).
    size: AtomicUsize,
    in_use: AtomicUsize,
    waiting: AtomicUsize,
    closed: AtomicBool,
    /// A dedicated connection (not counted in the pool) that sends `KILL QUERY`; opened lazily.
    killer: tokio::sync::Mutex<Option<Conn>>,
}

/// A bounded pool of connections to one MySQL/MariaDB datasource.
pub struct MysqlPool {
    inner: Arc<Inner>,
}

/// A checked-out connection. Dropping it discards the connection (state unknown); only
/// [`Inner::release`] puts it back.
struct PooledConn {
    conn: Option<Conn>,
    flavor: Flavor,
    /// Set when our setup left the session pinned, `READ ONLY` for autocommit statements and
    /// with this statement timeout, and nothing since could have changed it; `None` after
    /// `COM_RESET_CONNECTION` or anything else.
    ready_for: Option<Duration>,
    id: u32,
    /// Came from the idle list (so a broken socket is worth one retry with a fresh connection).
    reused: bool,
    inner: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        self.inner.in_use.fetch_sub(1, Ordering::AcqRel);
        if self.conn.take().is_some() {
            // mysql_async finishes dropping it in the background (drain after our KILL, quit).
            self.inner.size.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl PooledConn {
    fn conn(&mut self) -> Result<&mut Conn, ExecError> {
        self.conn
            .as_mut()
            .ok_or_else(|| ExecError::Unavailable("the connection was lost".into()))
    }
}

impl MysqlPool {
    /// Builds the pool; connections are opened on first use. The host is checked against the
    /// allowed networks now (and again at every new connection).
    pub async fn open(
        spec: &DatasourceSpec,
        settings: &RegistrySettings,
    ) -> Result<Self, ExecError> {
        let Connection::Network {
            host,
            port,
            database,
            user,
            password,
            options: _,
        } = &spec.connection
        else {
            return Err(ExecError::Unavailable(
                "a MySQL datasource needs a network connection".into(),
            ));
        };
        net::resolve_checked(host, *port, &settings.allow_networks).await?;
        let max = spec.pool_max_size.min(settings.max_pool_size).max(1);
        Ok(MysqlPool {
            inner: Arc::new(Inner {
                target: Target {
                    host: host.clone(),
                    port: *port,
                    database: database.clone(),
                    user: user.clone(),
                    password: password.clone(),
                },
                settings: settings.clone(),
                permits: Arc::new(Semaphore::new(max)),
                idle: Mutex::new(Vec::new()),
                size: AtomicUsize::new(0),
                in_use: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                killer: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Runs one statement. Its future owns the connection: in a task of its own when the client
    /// paces the rows, otherwise driven by the caller (`drive`). A reader that goes away leaves
    /// it to finish in its own task, where it notices the closed channel and kills the statement
    /// on the server.
    pub async fn execute(&self, req: Execute) -> Result<Execution, ExecError> {
        let deadline = Instant::now() + req.timeout;
        let (row_tx, row_rx) = mpsc::channel(ROW_BUFFER);
        let (head_tx, head_rx) = oneshot::channel();
        let truncated = Arc::new(AtomicBool::new(false));
        let paced_by_client = req.paced_by_client;
        let job = Job {
            inner: self.inner.clone(),
            req,
            deadline,
            tx: row_tx,
            head: Some(head_tx),
            truncated: truncated.clone(),
            conn_id: None,
        };
        let ends = Ends {
            head: head_rx,
            rows: row_rx,
            truncated,
        };
        if paced_by_client {
            drive::in_own_task(Box::pin(job.run()), ends, Abandoned::Finish).await
        } else {
            drive::in_callers_task(Box::pin(job.run()), ends, Abandoned::Finish).await
        }
    }

    /// Checks out a connection (opening one if needed) and asks for the server version.
    pub async fn check(&self) -> Result<ServerInfo, ExecError> {
        let started = std::time::Instant::now();
        let mut pc = self.inner.checkout().await?;
        let version = within(HOUSEKEEPING_TIMEOUT, async {
            pc.conn()?
                .query_first::<String, _>("SELECT VERSION()")
                .await
                .map_err(|e| self.inner.map_err(e, HOUSEKEEPING_TIMEOUT))
        })
        .await??
        .unwrap_or_default();
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.inner.release(pc, false).await;
        Ok(ServerInfo {
            latency_ms,
            server_version: version,
        })
    }

    /// Every table and view the account can see outside the system schemas, with its columns.
    pub async fn schema(&self) -> Result<Vec<TableInfo>, ExecError> {
        let mut pc = self.inner.checkout().await?;
        let id = pc.id;
        let rows = within(HOUSEKEEPING_TIMEOUT * 3, async {
            pc.conn()?
                .exec::<(String, String, String, String, String), _, _>(
                    "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE \
                     FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA NOT IN \
                       ('information_schema', 'mysql', 'performance_schema', 'sys') \
                     ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
                    (),
                )
                .await
                .map_err(|e| self.inner.map_err(e, HOUSEKEEPING_TIMEOUT))
        })
        .await;
        let rows = match rows {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                self.inner.kill_query(id).await;
                return Err(e);
            }
        };
        self.inner.release(pc, false).await;
        let mut out: Vec<TableInfo> = Vec::new();
        for (schema, table, column, type_name, nullable) in rows {
            let col = super::ColumnInfo {
                name: column,
                type_name,
                nullable: nullable.eq_ignore_ascii_case("YES"),
            };
            match out.last_mut() {
                Some(t) if t.schema == schema && t.name == table => t.columns.push(col),
                _ => out.push(TableInfo {
                    schema,
                    name: table,
                    columns: vec![col],
                }),
            }
        }
        Ok(out)
    }

    /// What the SQL policy needs to know of this server (see `policy::catalog`).
    pub async fn introspect(&self) -> Result<crate::policy::Catalog, ExecError> {
        let info = self.check().await?;
        Ok(crate::policy::Catalog {
            kind: Some(crate::model::DatasourceKind::Mysql),
            server_version: info.server_version,
            default_schema: self.inner.target.database.clone(),
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

    /// No new checkouts (waiters get `Unavailable`); idle connections are dropped now, busy ones
    /// when their statement ends.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.permits.close();
        let idle = match self.inner.idle.lock() {
            Ok(mut idle) => std::mem::take(&mut *idle),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        self.inner.size.fetch_sub(idle.len(), Ordering::AcqRel);
        drop(idle);
        if let Ok(mut killer) = self.inner.killer.try_lock() {
            killer.take();
        }
    }
}

/// Runs `fut` for at most `limit`; past it, `Timeout`.
async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Result<T, ExecError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| ExecError::Timeout(limit))
}

impl Inner {
    fn secrets(&self) -> [&str; 1] {
        [self.target.password.expose()]
    }

    fn scrub(&self, message: &str) -> String {
        scrub(message, &self.secrets())
    }

    /// Maps a driver error; the server's own statement timeout counts as our timeout.
    fn map_err(&self, e: mysql_async::Error, timeout: Duration) -> ExecError {
        match e {
            mysql_async::Error::Server(se) => {
                if SERVER_TIMEOUT_CODES.contains(&se.code) {
                    ExecError::Timeout(timeout)
                } else {
                    ExecError::QueryFailed {
                        message: self.scrub(&se.message),
                        sqlstate: Some(se.state),
                    }
                }
            }
            mysql_async::Error::Driver(mysql_async::DriverError::StmtParamsMismatch {
                required,
                supplied,
            }) => ExecError::BadParams(format!(
                "the statement has {required} placeholders but {supplied} params were given"
            )),
            other => ExecError::Unavailable(self.scrub(&other.to_string())),
        }
    }

    /// Opens one physical connection to the freshly checked address.
    async fn connect(&self) -> Result<(Conn, Flavor), ExecError> {
        let limit = self.settings.connect_timeout;
        let attempt = async {
            let t = &self.target;
            let addr = net::resolve_checked(&t.host, t.port, &self.settings.allow_networks).await?;
            let opts = OptsBuilder::default()
                .ip_or_hostname(addr.ip().to_string())
                .resolved_ips(Some(vec![addr.ip()]))
                .tcp_port(addr.port())
                .user(Some(t.user.clone()))
                .pass(Some(t.password.expose().to_owned()))
                .db_name((!t.database.is_empty()).then(|| t.database.clone()))
                .prefer_socket(false)
                .stmt_cache_size(STATEMENT_CACHE_SIZE)
                .tcp_nodelay(true);
            let mut conn = Conn::new(opts).await.map_err(|e| match e {
                // A refused login is the datasource being unusable, not a statement failing.
                mysql_async::Error::Server(se) => ExecError::Unavailable(self.scrub(&se.message)),
                other => ExecError::Unavailable(self.scrub(&other.to_string())),
            })?;
            let version: String = conn
                .query_first("SELECT VERSION()")
                .await
                .map_err(|e| ExecError::Unavailable(self.scrub(&e.to_string())))?
                .unwrap_or_default();
            Ok((conn, Flavor::from_version(&version)))
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ExecError::Unavailable(format!(
                "connecting took longer than {limit:?}"
            ))),
        }
    }

    /// Waits (at most `pool_timeout`) for a free slot, then reuses an idle connection or opens one.
    async fn checkout(self: &Arc<Self>) -> Result<PooledConn, ExecError> {
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
            flavor: Flavor::MySql,
            ready_for: None,
            id: 0,
            reused: false,
            inner: self.clone(),
            _permit: permit,
        };
        if let Some(idle) = self.take_idle() {
            pc.id = idle.conn.id();
            pc.flavor = idle.flavor;
            pc.ready_for = idle.ready_for;
            pc.conn = Some(idle.conn);
            pc.reused = true;
            return Ok(pc);
        }
        self.fill(&mut pc).await?;
        Ok(pc)
    }

    /// Opens a fresh connection into `pc` (counted in `size`).
    async fn fill(&self, pc: &mut PooledConn) -> Result<(), ExecError> {
        let (conn, flavor) = self.connect().await?;
        self.size.fetch_add(1, Ordering::AcqRel);
        pc.id = conn.id();
        pc.flavor = flavor;
        pc.ready_for = None;
        pc.conn = Some(conn);
        pc.reused = false;
        Ok(())
    }

    /// The most recently used idle connection that has not idled past `idle_timeout`.
    fn take_idle(&self) -> Option<Idle> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(i) = idle.pop() {
            if i.since.elapsed() < self.settings.idle_timeout {
                return Some(i);
            }
            self.size.fetch_sub(1, Ordering::AcqRel);
        }
        None
    }

    /// Puts a connection in a known state back: `COM_RESET_CONNECTION` first when user SQL ran on
    /// it (drops user variables, temporary tables, prepared statements, session settings).
    async fn release(&self, mut pc: PooledConn, reset: bool) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let Some(mut conn) = pc.conn.take() else {
            return;
        };
        if reset {
            match tokio::time::timeout(HOUSEKEEPING_TIMEOUT, conn.reset()).await {
                Ok(Ok(true)) => pc.ready_for = None,
                // Unsupported (very old server) or failed: do not reuse.
                _ => {
                    self.size.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
            }
        }
        match self.idle.lock() {
            Ok(mut idle) => idle.push(Idle {
                conn,
                flavor: pc.flavor,
                ready_for: pc.ready_for,
                since: Instant::now(),
            }),
            Err(_) => {
                self.size.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Stops whatever connection `id` is running, from the dedicated killer connection (reopened
    /// once if it went stale). Best effort and bounded in time.
    async fn kill_query(&self, id: u32) {
        let run = async {
            let mut killer = self.killer.lock().await;
            for _ in 0..2 {
                let mut conn = match killer.take() {
                    Some(c) => c,
                    None => match self.connect().await {
                        Ok((c, _)) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not open a connection to cancel a statement");
                            return;
                        }
                    },
                };
                match conn.query_drop(format!("KILL QUERY {id}")).await {
                    Ok(()) => {
                        *killer = Some(conn);
                        return;
                    }
                    // Unknown thread: it is already gone, nothing to stop.
                    Err(mysql_async::Error::Server(se)) => {
                        if se.code != 1094 {
                            tracing::warn!(code = se.code, "KILL QUERY failed");
                        }
                        *killer = Some(conn);
                        return;
                    }
                    Err(_) => continue,
                }
            }
        };
        if tokio::time::timeout(HOUSEKEEPING_TIMEOUT, run)
            .await
            .is_err()
        {
            tracing::warn!("KILL QUERY did not finish in time");
        }
    }
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
    /// The statement failed (prepare, params, execute); the connection is usable.
    Statement(ExecError),
    Stopped(Stop),
}

/// One statement's life on its connection.
struct Job {
    inner: Arc<Inner>,
    req: Execute,
    deadline: Instant,
    tx: mpsc::Sender<Result<Bytes, ExecError>>,
    head: Option<oneshot::Sender<Result<Head, ExecError>>>,
    truncated: Arc<AtomicBool>,
    /// The server thread running our statement, once known (to kill it after a panic).
    conn_id: Option<u32>,
}

impl Job {
    async fn run(mut self) {
        let outcome = AssertUnwindSafe(self.run_inner()).catch_unwind().await;
        if outcome.is_err() {
            // mysql_common panics on a column type it cannot parse. The connection went with the
            // unwound future (discarded); stop its statement and report instead of ending the
            // stream as if it were complete.
            tracing::error!("the MySQL statement task panicked");
            if let Some(id) = self.conn_id {
                self.inner.kill_query(id).await;
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

    /// Stops the statement on the server, discards the connection and reports why.
    async fn abort(&mut self, pc: PooledConn, stop: Stop) {
        self.inner.kill_query(pc.id).await;
        drop(pc);
        if let Stop::Deadline = stop {
            self.fail(ExecError::Timeout(self.req.timeout)).await;
        }
    }

    async fn run_inner(&mut self) {
        let inner = self.inner.clone();
        let mut pc = match bounded(&self.tx, self.deadline, inner.checkout()).await {
            Ok(Ok(pc)) => pc,
            Ok(Err(e)) => return self.fail(e).await,
            Err(Stop::Gone) => return,
            Err(Stop::Deadline) => return self.fail(ExecError::Timeout(self.req.timeout)).await,
        };

        // Setup (when needed), prepare (from the connection's statement cache when it has run
        // before) and execute. A reused connection that turns out to be dead before the statement
        // reached the server gets one more try on a fresh one.
        let mut attempt = 0;
        let (id, stmt, mut result) = loop {
            attempt += 1;
            let (id, reused) = (pc.id, pc.reused);
            self.conn_id = Some(id);
            match self.start(&mut pc).await {
                Ok((stmt, result)) => break (id, stmt, result),
                Err(Start::Dead(_)) if attempt == 1 && reused => {
                    if let Some(old) = pc.conn.take() {
                        inner.size.fetch_sub(1, Ordering::AcqRel);
                        drop(old);
                    }
                    match bounded(&self.tx, self.deadline, inner.fill(&mut pc)).await {
                        Ok(Ok(())) => continue,
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
                    let e = inner.map_err(e, self.req.timeout);
                    return self.fail(e).await;
                }
                Err(Start::Statement(e)) => return self.fail_and_rollback(pc, e).await,
                Err(Start::Stopped(stop)) => return self.abort(pc, stop).await,
            }
        };

        if !self.req.is_query {
            let dropped = bounded(&self.tx, self.deadline, result.drop_result()).await;
            let affected = match dropped {
                Ok(Ok(())) => pc.conn.as_ref().map_or(0, Conn::affected_rows),
                Ok(Err(e)) => {
                    let e = inner.map_err(e, self.req.timeout);
                    return self.fail_and_rollback(pc, e).await;
                }
                Err(stop) => return self.abort(pc, stop).await,
            };
            if let Err(e) = self.finish(&mut pc).await {
                return self.fail_discard(pc, id, e).await;
            }
            if let Some(head) = self.head.take() {
                let _ = head.send(Ok(Head::Affected(affected)));
            }
            return inner.release(pc, self.reset_after()).await;
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

        let max_bytes = inner.settings.max_result_bytes;
        let mut count: u64 = 0;
        let mut total: u64 = 0;
        loop {
            let row = match bounded(&self.tx, self.deadline, result.next()).await {
                Ok(Ok(Some(row))) => row,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    drop(result);
                    let e = inner.map_err(e, self.req.timeout);
                    return self.fail_discard(pc, id, e).await;
                }
                Err(stop) => {
                    drop(result);
                    return self.abort(pc, stop).await;
                }
            };
            if count >= self.req.max_rows {
                // One row more than allowed exists: say so and stop the server's work.
                self.truncated.store(true, Ordering::Release);
                drop(result);
                inner.kill_query(id).await;
                return drop(pc);
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
            Ok(Err(e)) => {
                let e = inner.map_err(e, self.req.timeout);
                return self.fail_discard(pc, id, e).await;
            }
            Err(stop) => return self.abort(pc, stop).await,
        }
        if let Err(e) = self.finish(&mut pc).await {
            return self.fail_discard(pc, id, e).await;
        }
        // The stream ends here for the consumer; the reset happens after.
        let (closed_tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, closed_tx));
        inner.release(pc, self.reset_after()).await;
    }

    /// A read-only query runs on its own, as an autocommit statement in a session set
    /// `READ ONLY`: one round trip once the session is set up and the statement prepared. Anything
    /// else runs inside an explicit transaction, which the setup opens and [`Job::finish`] ends.
    fn autocommit(&self) -> bool {
        self.req.read_only && self.req.is_query
    }

    /// Whether the connection's session is reset (`COM_RESET_CONNECTION`) before it goes back
    /// to the pool: after anything but a read-only query, and after a query calling functions
    /// whose bodies the policy could not see. A read-only query otherwise leaves nothing behind:
    /// the policy refused variables, `SET`, locking functions and `LAST_INSERT_ID`, and the
    /// read-only session refuses temporary tables and every write.
    fn reset_after(&self) -> bool {
        !self.autocommit() || self.req.may_change_session
    }

    /// The setup this statement needs on this connection, if any: our own trusted text.
    fn setup_sql(&self, pc: &PooledConn) -> Option<String> {
        if self.autocommit() && pc.ready_for == Some(self.req.timeout) {
            return None;
        }
        let timeout = pc.flavor.timeout_setting(self.req.timeout);
        if self.autocommit() {
            return Some(format!(
                "{PIN_SESSION}, {timeout}; SET SESSION TRANSACTION READ ONLY"
            ));
        }
        let begin = if self.req.read_only {
            "START TRANSACTION READ ONLY"
        } else {
            "START TRANSACTION READ WRITE"
        };
        Some(format!("{PIN_SESSION}, {timeout}; {begin}"))
    }

    /// Sets the session up when needed, prepares the statement and starts executing it.
    async fn start<'c>(
        &self,
        pc: &'c mut PooledConn,
    ) -> Result<(mysql_async::Statement, BinaryResult<'c>), Start> {
        let setup = self.setup_sql(pc);
        let Some(conn) = pc.conn.as_mut() else {
            return Err(Start::Lost);
        };
        let sent_setup = setup.is_some();
        if let Some(setup) = setup {
            match bounded(&self.tx, self.deadline, conn.query_drop(setup)).await {
                Ok(Ok(())) => {
                    // After a transaction's setup the session is reset when the statement ends.
                    pc.ready_for = self.autocommit().then_some(self.req.timeout);
                }
                Ok(Err(e @ mysql_async::Error::Server(_))) => return Err(Start::Setup(e)),
                Ok(Err(e)) => return Err(Start::Dead(e)),
                Err(stop) => return Err(Start::Stopped(stop)),
            }
        }
        // Without a setup round trip, a dead connection first shows here; a read-only
        // statement that may or may not have reached the server is safe to run again.
        let retry_ok = !sent_setup && self.autocommit();
        let failed = |e: mysql_async::Error| match e {
            e @ mysql_async::Error::Server(_) => {
                Start::Statement(self.inner.map_err(e, self.req.timeout))
            }
            e if retry_ok => Start::Dead(e),
            e => Start::Statement(self.inner.map_err(e, self.req.timeout)),
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

    /// Ends the transaction: COMMIT for read-write, ROLLBACK for read-only; nothing to end for
    /// an autocommit statement.
    async fn finish(&mut self, pc: &mut PooledConn) -> Result<(), ExecError> {
        if self.autocommit() {
            return Ok(());
        }
        let end = if self.req.read_only {
            "ROLLBACK"
        } else {
            "COMMIT"
        };
        let conn = pc.conn()?;
        match bounded(&self.tx, self.deadline, conn.query_drop(end)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.inner.map_err(e, self.req.timeout)),
            Err(Stop::Deadline) => Err(ExecError::Timeout(self.req.timeout)),
            Err(Stop::Gone) => Err(ExecError::Unavailable("the client went away".into())),
        }
    }

    /// A statement error before any row: roll back and keep the connection if that works.
    async fn fail_and_rollback(&mut self, mut pc: PooledConn, e: ExecError) {
        self.fail(e).await;
        if self.autocommit() {
            // Nothing to roll back: the failed statement was its own transaction.
            return self.inner.release(pc, self.reset_after()).await;
        }
        let rolled_back = match pc.conn.as_mut() {
            Some(conn) => matches!(
                tokio::time::timeout(HOUSEKEEPING_TIMEOUT, conn.query_drop("ROLLBACK")).await,
                Ok(Ok(()))
            ),
            None => false,
        };
        if rolled_back {
            self.inner.release(pc, self.reset_after()).await;
        }
    }

    /// An error mid-statement: stop it on the server, discard the connection, report.
    async fn fail_discard(&mut self, pc: PooledConn, id: u32, e: ExecError) {
        self.inner.kill_query(id).await;
        drop(pc);
        self.fail(e).await;
    }
}

/// JSON params to MySQL values. The server converts by the placeholder's context (MySQL's
/// prepared statements do not report parameter types), so only the count can be checked here;
/// arrays and objects are bound as JSON text.
fn to_params(params: &[serde_json::Value], expected: usize) -> Result<Params, ExecError> {
    if params.len() != expected {
        return Err(ExecError::BadParams(format!(
            "the statement has {expected} placeholders but {} params were given",
            params.len()
        )));
    }
    if params.is_empty() {
        return Ok(Params::Empty);
    }
    let mut out = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        out.push(match p {
            serde_json::Value::Null => Value::NULL,
            serde_json::Value::Bool(b) => Value::Int(i64::from(*b)),
            serde_json::Value::Number(n) => {
                if let Some(v) = n.as_i64() {
                    Value::Int(v)
                } else if let Some(v) = n.as_u64() {
                    Value::UInt(v)
                } else if let Some(v) = n.as_f64() {
                    Value::Double(v)
                } else {
                    return Err(ExecError::BadParams(format!(
                        "param {} is a number MySQL cannot hold",
                        i + 1
                    )));
                }
            }
            serde_json::Value::String(s) => Value::Bytes(s.as_bytes().to_vec()),
            other => Value::Bytes(other.to_string().into_bytes()),
        });
    }
    Ok(Params::Positional(out))
}

/// How a column's values are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Enc {
    Number,
    Decimal,
    Date,
    DateTime,
    /// TIMESTAMP is an instant (read in the pinned UTC session): written with `Z`.
    Timestamp,
    Time,
    Json,
    Text,
    Binary,
    Bit,
}

#[derive(Clone, Debug)]
struct ColKind {
    name: String,
    type_name: String,
    enc: Enc,
}

/// The binary character set: BINARY/VARBINARY/BLOB columns carry it.
const BINARY_CHARSET: u16 = 63;

impl ColKind {
    fn of(c: &mysql_async::Column) -> Result<ColKind, ExecError> {
        let flags = c.flags();
        let binary = c.character_set() == BINARY_CHARSET;
        let unsigned = flags.contains(ColumnFlags::UNSIGNED_FLAG);
        let int = |name: &str| {
            if unsigned {
                (format!("{name} unsigned"), Enc::Number)
            } else {
                (name.to_owned(), Enc::Number)
            }
        };
        let text_or_bin = |text: &str, bin: &str| {
            if binary {
                (bin.to_owned(), Enc::Binary)
            } else {
                (text.to_owned(), Enc::Text)
            }
        };
        let name = c.name_str().into_owned();
        let (type_name, enc) = match c.column_type() {
            ColumnType::MYSQL_TYPE_TINY => int("tinyint"),
            ColumnType::MYSQL_TYPE_SHORT => int("smallint"),
            ColumnType::MYSQL_TYPE_INT24 => int("mediumint"),
            ColumnType::MYSQL_TYPE_LONG => int("int"),
            ColumnType::MYSQL_TYPE_LONGLONG => int("bigint"),
            ColumnType::MYSQL_TYPE_YEAR => ("year".to_owned(), Enc::Number),
            ColumnType::MYSQL_TYPE_FLOAT => ("float".to_owned(), Enc::Number),
            ColumnType::MYSQL_TYPE_DOUBLE => ("double".to_owned(), Enc::Number),
            ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => {
                ("decimal".to_owned(), Enc::Decimal)
            }
            ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE => {
                ("date".to_owned(), Enc::Date)
            }
            ColumnType::MYSQL_TYPE_DATETIME | ColumnType::MYSQL_TYPE_DATETIME2 => {
                ("datetime".to_owned(), Enc::DateTime)
            }
            ColumnType::MYSQL_TYPE_TIMESTAMP | ColumnType::MYSQL_TYPE_TIMESTAMP2 => {
                ("timestamp".to_owned(), Enc::Timestamp)
            }
            ColumnType::MYSQL_TYPE_TIME | ColumnType::MYSQL_TYPE_TIME2 => {
                ("time".to_owned(), Enc::Time)
            }
            ColumnType::MYSQL_TYPE_JSON => ("json".to_owned(), Enc::Json),
            ColumnType::MYSQL_TYPE_BIT => ("bit".to_owned(), Enc::Bit),
            ColumnType::MYSQL_TYPE_NULL => ("null".to_owned(), Enc::Text),
            ColumnType::MYSQL_TYPE_ENUM => ("enum".to_owned(), Enc::Text),
            ColumnType::MYSQL_TYPE_SET => ("set".to_owned(), Enc::Text),
            ColumnType::MYSQL_TYPE_STRING if flags.contains(ColumnFlags::ENUM_FLAG) => {
                ("enum".to_owned(), Enc::Text)
            }
            ColumnType::MYSQL_TYPE_STRING if flags.contains(ColumnFlags::SET_FLAG) => {
                ("set".to_owned(), Enc::Text)
            }
            ColumnType::MYSQL_TYPE_STRING => text_or_bin("char", "binary"),
            ColumnType::MYSQL_TYPE_VAR_STRING | ColumnType::MYSQL_TYPE_VARCHAR => {
                text_or_bin("varchar", "varbinary")
            }
            ColumnType::MYSQL_TYPE_TINY_BLOB => text_or_bin("tinytext", "tinyblob"),
            ColumnType::MYSQL_TYPE_BLOB => text_or_bin("text", "blob"),
            ColumnType::MYSQL_TYPE_MEDIUM_BLOB => text_or_bin("mediumtext", "mediumblob"),
            ColumnType::MYSQL_TYPE_LONG_BLOB => text_or_bin("longtext", "longblob"),
            other => {
                let t = match other {
                    ColumnType::MYSQL_TYPE_GEOMETRY => "geometry".to_owned(),
                    ColumnType::MYSQL_TYPE_VECTOR => "vector".to_owned(),
                    o => format!("{o:?}")
                        .trim_start_matches("MYSQL_TYPE_")
                        .to_lowercase(),
                };
                return Err(ExecError::UnsupportedType(format!(
                    "column {name:?} has type {t}, which the gateway cannot encode; \
                     cast it to text in the query (e.g. CAST(… AS CHAR) or ST_AsText(…))"
                )));
            }
        };
        Ok(ColKind {
            name,
            type_name,
            enc,
        })
    }
}

/// One row as a JSON array.
fn encode_row(kinds: &[ColKind], row: &Row) -> Result<Bytes, ExecError> {
    let mut w = RowWriter::with_capacity(16 * kinds.len() + 2);
    for (i, k) in kinds.iter().enumerate() {
        let v = row.as_ref(i).unwrap_or(&Value::NULL);
        write_value(&mut w, k, v)?;
    }
    Ok(w.finish())
}

fn write_value(w: &mut RowWriter, k: &ColKind, v: &Value) -> Result<(), ExecError> {
    match v {
        Value::NULL => w.null(),
        Value::Int(i) => w.i64(*i),
        Value::UInt(u) => w.u64(*u),
        Value::Float(f) => w.f64(f32_to_f64(*f)),
        Value::Double(d) => w.f64(*d),
        Value::Date(y, mo, d, h, mi, s, us) => {
            let date = format!("{y:04}-{mo:02}-{d:02}");
            match k.enc {
                Enc::Date => w.str(&date),
                _ => {
                    let mut out = format!("{date}T{h:02}:{mi:02}:{s:02}");
                    if *us != 0 {
                        out.push_str(&format!(".{us:06}"));
                    }
                    if k.enc == Enc::Timestamp {
                        out.push('Z');
                    }
                    w.str(&out);
                }
            }
        }
        Value::Time(neg, days, h, mi, s, us) => {
            // MySQL TIME is a duration (up to ±838:59:59), so hours may exceed 24.
            let hours = u64::from(*days) * 24 + u64::from(*h);
            let sign = if *neg { "-" } else { "" };
            let mut out = format!("{sign}{hours:02}:{mi:02}:{s:02}");
            if *us != 0 {
                out.push_str(&format!(".{us:06}"));
            }
            w.str(&out);
        }
        Value::Bytes(b) => match k.enc {
            Enc::Binary => w.base64(b),
            Enc::Json => w.raw_json(&String::from_utf8_lossy(b)),
            Enc::Bit => {
                if b.len() > 8 {
                    w.base64(b);
                } else {
                    w.u64(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)));
                }
            }
            Enc::Number => {
                // Numbers normally arrive as Int/Double; text here is a server oddity: keep it
                // exact as a string rather than guess.
                w.str(&String::from_utf8_lossy(b))
            }
            Enc::Decimal | Enc::Text | Enc::Date | Enc::DateTime | Enc::Timestamp | Enc::Time => {
                w.str(&String::from_utf8_lossy(b))
            }
        },
    }
    Ok(())
}

/// FLOAT columns are single precision: widen through the shortest decimal form so `1.1` stays
/// `1.1` instead of `1.100000023841858`.
fn f32_to_f64(f: f32) -> f64 {
    if !f.is_finite() {
        return f64::from(f);
    }
    ryu::Buffer::new()
        .format_finite(f)
        .parse::<f64>()
        .unwrap_or(f64::from(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_is_recognised_from_its_version_string() {
        assert_eq!(
            Flavor::from_version("10.11.19-MariaDB-0+deb12u1"),
            Flavor::MariaDb
        );
        assert_eq!(Flavor::from_version("8.4.2"), Flavor::MySql);
    }

    #[test]
    fn the_session_timeout_uses_each_servers_unit_and_is_never_zero() {
        assert_eq!(
            Flavor::MariaDb.timeout_setting(Duration::from_millis(1500)),
            "SESSION max_statement_time=1.500"
        );
        assert_eq!(
            Flavor::MySql.timeout_setting(Duration::from_millis(1500)),
            "SESSION max_execution_time=1500"
        );
        assert_eq!(
            Flavor::MySql.timeout_setting(Duration::ZERO),
            "SESSION max_execution_time=1"
        );
    }

    #[test]
    fn a_wrong_number_of_params_is_refused_before_reaching_the_server() {
        let err = to_params(&[serde_json::json!(1)], 2).unwrap_err();
        assert!(matches!(err, ExecError::BadParams(m) if m.contains('2')));
        assert!(matches!(to_params(&[], 0), Ok(Params::Empty)));
    }

    #[test]
    fn single_precision_floats_keep_their_short_form() {
        assert_eq!(f32_to_f64(1.1), 1.1);
        assert!(f32_to_f64(f32::NAN).is_nan());
    }
}
