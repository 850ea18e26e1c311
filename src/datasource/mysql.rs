//! The MySQL/MariaDB driver: a bounded pool of service-account connections to the checked address,
//! user SQL only through prepared statements, rows streamed as JSON, and `KILL QUERY` from a
//! dedicated connection whenever a statement must stop early (deadline, client gone, `max_rows`,
//! size limit).
//!
//! **No default database.** Connections open with none: the SQL policy qualifies every table with
//! the datasource's database (the catalogue's `default_schema`), and an unqualified function name
//! that is no built-in of this server then fails ("FUNCTION x does not exist") instead of
//! running a stored function of that name.
//!
//! **Read-only is a property of every transaction.** Every statement of a read-only execution
//! runs inside `START TRANSACTION READ ONLY`, never in a session merely set read-only (a stored
//! function can `SET @@session.tx_read_only = 0`, and did). The pinned settings (character set,
//! `sql_mode`, time zone, a list of settings that change what a later statement reads or writes,
//! and the statement timeout) are set again before every statement. To keep a read-only query at
//! one round trip on its critical path, the work moves to the end of the previous one: once the
//! answer is out, one multi-statement text query of our own reads what the statement may have
//! left behind, then `ROLLBACK; SET <pins>; START TRANSACTION READ ONLY`. The final OK packet's
//! status flags must say the connection is in a read-only transaction (`SERVER_STATUS_IN_TRANS`
//! and `SERVER_STATUS_IN_TRANS_READONLY`, both sent by MariaDB 10.11: checked) or the connection
//! is dropped. The next read-only statement with the same timeout then runs directly; any other
//! (a fresh connection, a write before, another timeout) sends the same setup first, whose flags
//! are checked the same way, and a statement whose transaction is not confirmed is refused. No
//! statement runs between that setup and the user's, so the guarantee does not rest on the
//! policy: whatever a statement does to the session, the next one starts in a transaction that
//! is read-only by its own `START`.
//!
//! Round trips per read-only query: one on the critical path (`COM_STMT_EXECUTE`; the prepare
//! comes from the connection's statement cache), plus one after the answer (the check and setup
//! above), during which the connection still holds its pool slot. The first query on a connection,
//! or one after a write or with another timeout, adds the setup on its critical path; one that
//! left user variables or locks behind adds `COM_RESET_CONNECTION` after the answer and a prepare
//! on the next statement (the reset drops prepared statements). Measured with PK lookups back to
//! back on one connection (release build, loopback MariaDB 10.11, a busy 2-core machine): about
//! 20–25 µs per query with the old session-level read-only and no setup, 100–170 µs now. The
//! check-and-setup query alone takes about 50 µs, most of it server time; the latency a client sees
//! is unchanged while a ready connection is idle, but one connection serves several times fewer
//! queries per second, so a busy datasource needs a larger pool. Writes run as before: setup with
//! `START TRANSACTION READ WRITE`, the statement, `COMMIT`, then `COM_RESET_CONNECTION`.
//!
//! **Nothing a statement leaves in the session reaches the next request.** The session is reset
//! (`COM_RESET_CONNECTION`: user variables, temporary tables, named locks, prepared statements,
//! settings) after every write or non-query, after a query calling functions the policy could not
//! see into (`Execute::may_change_session`), and whenever the check after a read-only statement
//! finds user variables or named locks (released there and then by `RELEASE_ALL_LOCKS()`).
//! Verified on MariaDB 10.11, for a state left by a stored function the policy did not know ran:
//! * settings: `sql_mode`, time zone, character set and timeout are pinned again before every
//!   statement, and the settings in [`MARIADB_READ_DEFAULTS`] (before a write, also
//!   [`MARIADB_WRITE_DEFAULTS`]) set back to the server's defaults;
//!   read-only is per transaction (above). Other session settings a function changes last until
//!   the connection is next reset: the server offers no cheap way to see them (reading
//!   `information_schema.SESSION_VARIABLES` costs about 2 ms of server time per statement);
//! * user variables: seen in `information_schema.USER_VARIABLES`;
//! * named locks (`GET_LOCK`): released by `RELEASE_ALL_LOCKS()`, which counts them;
//! * temporary tables: a read-only transaction refuses to create them (error 1792);
//! * prepared statements: a stored function cannot `PREPARE` (error 1336), and `PREPARE` cannot
//!   be sent as a prepared statement (error 1295).
//!
//! A stored function's error on its first row (a temporary table refused, say) reaches the client
//! among the rows, not before them; the connection is kept, since the server's ERR packet ends
//! the statement.
//!
//! The server's own signal, `SERVER_SESSION_STATE_CHANGED` with `session_track_state_change=ON`
//! (pinned), is honoured too, but MariaDB 10.11 never sets it for this driver: it tracks state
//! only for clients that negotiate `CLIENT_SESSION_TRACK`, which mysql_async 0.37 does not ask
//! for (checked: not even a top-level `SET @x = 1` sets it). The check above is what detects.
//!
//! **What `KILL QUERY` cannot stop.** The server checks for a kill between rows and in its loops,
//! not inside one built-in call: one long string function (`LOCATE` of a 20,000-character needle
//! in a 1.2-million-character haystack took 8.5 s after `KILL QUERY` on MariaDB 10.11) runs to
//! its end, and so does anything else that does not look at the kill flag. `max_statement_time`
//! does not stop it either. The client still gets its timeout on time, but the connection keeps
//! its pool slot until the server thread has really finished (polled in
//! `information_schema.PROCESSLIST` from the killer connection, for at most
//! [`KILLED_STATEMENT_LIMIT`]), so a datasource's pool size bounds how many server threads its
//! requests keep busy. Past that limit, or when the killer connection cannot watch the thread,
//! the slot is freed anyway and the thread runs on unbounded.
//!
//! **Bounded values.** mysql_async's client-side `max_allowed_packet` is set to the result cap
//! (plus slack), and its codec refuses a larger packet, one row in practice, before buffering it:
//! the statement ends with `ResultTooLarge`. A connection that read a row larger than
//! [`GROWN_ROW`] is not pooled again, so its grown read buffer goes with it.
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
//! A statement that returns rows although it is not a query (MariaDB's `INSERT … RETURNING`)
//! reports the number of rows it returned as `rows_affected` (the server's own count is 0).

mod catalog;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use mysql_async::consts::{ColumnFlags, ColumnType, StatusFlags};
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

/// Pinned before every statement: the SQL policy's parser assumes backslash escapes and
/// double-quoted strings (no ANSI_QUOTES, no NO_BACKSLASH_ESCAPES); timestamps are read in UTC;
/// text is utf8mb4. `session_track_state_change` asks the server to flag state changes (see the
/// module notes: it never does for this client).
const PINS: &str = "SET NAMES utf8mb4, \
     SESSION sql_mode='STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', \
     SESSION time_zone='+00:00', SESSION session_track_state_change=ON";

/// MariaDB session settings put back to the server's defaults before every statement: ones a
/// stored function can change and that alter what a later statement reads (isolation, row
/// limits, formats, `NOW()`, `WHERE id IS NULL`, recursion bounds).
const MARIADB_READ_DEFAULTS: &str = "SESSION tx_isolation=DEFAULT, \
     SESSION sql_select_limit=DEFAULT, SESSION max_join_size=DEFAULT, \
     SESSION sql_big_selects=DEFAULT, SESSION sql_auto_is_null=DEFAULT, \
     SESSION div_precision_increment=DEFAULT, SESSION group_concat_max_len=DEFAULT, \
     SESSION lc_time_names=DEFAULT, SESSION default_week_format=DEFAULT, \
     SESSION timestamp=DEFAULT, SESSION max_recursive_iterations=DEFAULT";

/// And before a read-write statement, also those that change what it writes (foreign key and
/// CHECK enforcement, generated ids) or how it ends. Read-only statements cannot write, so they
/// skip these: each setting costs server time on every statement.
const MARIADB_WRITE_DEFAULTS: &str = "SESSION foreign_key_checks=DEFAULT, \
     SESSION unique_checks=DEFAULT, SESSION check_constraint_checks=DEFAULT, \
     SESSION sql_safe_updates=DEFAULT, SESSION insert_id=DEFAULT, \
     SESSION auto_increment_increment=DEFAULT, SESSION auto_increment_offset=DEFAULT, \
     SESSION completion_type=DEFAULT, SESSION lock_wait_timeout=DEFAULT, \
     SESSION innodb_lock_wait_timeout=DEFAULT";

/// The same for MySQL (5.7.20 and later), leaving out what MySQL 8 lets only privileged accounts
/// set (`explicit_defaults_for_timestamp`…) and what it does not have.
const MYSQL_READ_DEFAULTS: &str = "SESSION transaction_isolation=DEFAULT, \
     SESSION sql_select_limit=DEFAULT, SESSION max_join_size=DEFAULT, \
     SESSION sql_big_selects=DEFAULT, SESSION sql_auto_is_null=DEFAULT, \
     SESSION div_precision_increment=DEFAULT, SESSION group_concat_max_len=DEFAULT, \
     SESSION lc_time_names=DEFAULT, SESSION default_week_format=DEFAULT, \
     SESSION timestamp=DEFAULT";
const MYSQL_WRITE_DEFAULTS: &str = "SESSION foreign_key_checks=DEFAULT, \
     SESSION unique_checks=DEFAULT, SESSION sql_safe_updates=DEFAULT, \
     SESSION insert_id=DEFAULT, SESSION auto_increment_increment=DEFAULT, \
     SESSION auto_increment_offset=DEFAULT, SESSION completion_type=DEFAULT, \
     SESSION lock_wait_timeout=DEFAULT, SESSION innodb_lock_wait_timeout=DEFAULT";

/// What a statement may have left in the session that a reset would clear: the number of user
/// variables, and the named locks it held (released here). Read before our `ROLLBACK`.
const MARIADB_LEFTOVERS: &str =
    "SELECT (SELECT COUNT(*) FROM information_schema.USER_VARIABLES), RELEASE_ALL_LOCKS()";
/// MySQL has no `USER_VARIABLES`; `performance_schema` has them per thread, when it is on. -1 when
/// it does not show this connection's thread (off, or not visible to the account): unreadable.
const MYSQL_LEFTOVERS: &str = "SELECT IF(EXISTS(SELECT 1 FROM performance_schema.threads \
         WHERE PROCESSLIST_ID = CONNECTION_ID()), \
       (SELECT COUNT(*) FROM performance_schema.user_variables_by_thread v \
         JOIN performance_schema.threads t ON t.THREAD_ID = v.THREAD_ID \
         WHERE t.PROCESSLIST_ID = CONNECTION_ID()), -1), RELEASE_ALL_LOCKS()";

/// Server errors that mean the leftover check cannot be read by this account or server (unknown
/// table or function, access denied): sessions are then reset after every statement instead.
const LEFTOVERS_UNREADABLE: [u16; 5] = [1044, 1109, 1142, 1146, 1305];

/// Rows buffered between the connection task and the consumer: small, so a slow client slows
/// the server read instead of filling memory.
const ROW_BUFFER: usize = 64;

/// Prepared statements kept per connection (the oldest is closed on the server past this), so a
/// repeated query skips its prepare round trip. Bounded well under the server's
/// `max_prepared_stmt_count` (16,382 by default) for a full pool: 32 × 32 connections = 1,024.
const STATEMENT_CACHE_SIZE: usize = 32;

/// How long our own housekeeping commands (KILL, setup after a statement, reset) may take.
const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound on the queries behind `schema()` and `introspect()` (server and client side).
const CATALOG_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a killed statement's connection keeps its pool slot waiting for the server thread to
/// finish. Generous: the slot is the only bound on busy server threads, and the worst measured
/// unkillable call ran 8.5 s past its kill.
const KILLED_STATEMENT_LIMIT: Duration = Duration::from_secs(120);

/// Slack over the result cap for one packet's framing (the cap counts encoded JSON).
const PACKET_SLACK: u64 = 64 * 1024;

/// A connection that read a row larger than this is not pooled again: its read buffer grew to
/// hold the row and never shrinks.
const GROWN_ROW: usize = 4 * 1024 * 1024;

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

    /// The whole `SET` of pinned settings with this statement timeout, for a read-only or a
    /// read-write statement.
    fn pins(self, timeout: Duration, read_only: bool) -> String {
        let (read, write) = match self {
            Flavor::MariaDb => (MARIADB_READ_DEFAULTS, MARIADB_WRITE_DEFAULTS),
            Flavor::MySql => (MYSQL_READ_DEFAULTS, MYSQL_WRITE_DEFAULTS),
        };
        let timeout = self.timeout_setting(timeout);
        if read_only {
            format!("{PINS}, {read}, {timeout}")
        } else {
            format!("{PINS}, {read}, {write}, {timeout}")
        }
    }

    /// Ends whatever transaction the connection is in, pins the session and starts the
    /// statement's transaction: our own trusted text, one round trip.
    fn setup_sql(self, timeout: Duration, read_only: bool) -> String {
        let mode = if read_only { "READ ONLY" } else { "READ WRITE" };
        format!(
            "ROLLBACK; {}; START TRANSACTION {mode}",
            self.pins(timeout, read_only)
        )
    }

    /// After a read-only statement: the leftover check, then the setup of the next read-only one.
    fn check_and_setup_sql(self, timeout: Duration) -> String {
        let leftovers = match self {
            Flavor::MariaDb => MARIADB_LEFTOVERS,
            Flavor::MySql => MYSQL_LEFTOVERS,
        };
        format!("{leftovers}; {}", self.setup_sql(timeout, true))
    }
}

/// The status flags of the connection's last OK packet (empty after an error).
fn status(conn: &Conn) -> StatusFlags {
    conn.last_ok_packet()
        .map(|ok| ok.status_flags())
        .unwrap_or_else(StatusFlags::empty)
}

/// Whether the server says the connection is inside a transaction (a read-only one if asked).
fn in_transaction(conn: &Conn, read_only: bool) -> bool {
    let flags = status(conn);
    flags.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
        && (!read_only || flags.contains(StatusFlags::SERVER_STATUS_IN_TRANS_READONLY))
}

/// mysql_common's codec refuses a packet over the client-side `max_allowed_packet` before
/// buffering it; the error arrives as an `io::Error` wrapping its `PacketTooLarge` (mysql_common
/// is not a direct dependency, so it is recognised by its text).
fn packet_too_large(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Driver(mysql_async::DriverError::PacketTooLarge) => true,
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => io
            .get_ref()
            .is_some_and(|inner| inner.to_string().contains("max_allowed_packet")),
        _ => false,
    }
}

/// The bytes a row took on the wire, near enough: its values' lengths.
fn row_bytes(row: &Row) -> usize {
    (0..row.len())
        .map(|i| match row.as_ref(i) {
            Some(Value::Bytes(b)) => b.len(),
            _ => 8,
        })
        .sum()
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
    /// A dedicated connection (not counted in the pool) that sends `KILL QUERY` and watches a
    /// killed statement's thread; opened lazily.
    killer: tokio::sync::Mutex<Option<Conn>>,
    /// The leftover check failed for lack of a table or a privilege (MySQL without access to
    /// `performance_schema`): sessions are reset after every statement instead.
    leftovers_unreadable: AtomicBool,
}

/// A bounded pool of connections to one MySQL/MariaDB datasource.
pub struct MysqlPool {
    inner: Arc<Inner>,
}

/// A checked-out connection. Dropping it discards the connection (state unknown); only
/// [`Inner::release`] puts it back. Its pool slot (`_permit`) is held as long as it lives.
struct PooledConn {
    conn: Option<Conn>,
    flavor: Flavor,
    /// Set when the server confirmed (status flags) that the connection is pinned and inside a
    /// fresh `START TRANSACTION READ ONLY` with this statement timeout, and nothing ran since.
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
            // mysql_async finishes dropping it in the background (drain, quit).
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

    /// Drops the physical connection now; the pool slot stays held until `self` goes.
    fn discard_conn(&mut self) {
        if self.conn.take().is_some() {
            self.inner.size.fetch_sub(1, Ordering::AcqRel);
        }
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
                leftovers_unreadable: AtomicBool::new(false),
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
        // `SELECT VERSION()` reads no table: a connection ready for a read-only statement stays so.
        self.inner.release(pc, false, None).await;
        Ok(ServerInfo {
            latency_ms,
            server_version: version,
        })
    }

    /// Every table and view the account can see outside the system schemas, with its columns.
    pub async fn schema(&self) -> Result<Vec<TableInfo>, ExecError> {
        let inner = &self.inner;
        let mut pc = inner.checkout().await?;
        let flavor = pc.flavor;
        pc.ready_for = None;
        let rows = within(CATALOG_TIMEOUT, async {
            let conn = pc.conn()?;
            own_transaction(conn, flavor)
                .await
                .map_err(|e| inner.map_err(e, CATALOG_TIMEOUT))?;
            let rows = conn
                .exec::<(String, String, String, String, String), _, _>(
                    "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE \
                     FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA NOT IN \
                       ('information_schema', 'mysql', 'performance_schema', 'sys') \
                     ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
                    (),
                )
                .await
                .map_err(|e| inner.map_err(e, CATALOG_TIMEOUT))?;
            end_own_transaction(conn)
                .await
                .map_err(|e| inner.map_err(e, CATALOG_TIMEOUT))?;
            Ok(rows)
        })
        .await;
        let rows = match rows {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                inner.kill_in_background(pc);
                return Err(e);
            }
        };
        inner.release(pc, false, None).await;
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

    /// What the SQL policy needs to know of this server (see `policy::catalog` and
    /// [`catalog`]), read in one read-only transaction under [`CATALOG_TIMEOUT`].
    pub async fn introspect(&self) -> Result<crate::policy::Catalog, ExecError> {
        let inner = &self.inner;
        let mut pc = inner.checkout().await?;
        let flavor = pc.flavor;
        pc.ready_for = None;
        let database = inner.target.database.clone();
        let read = within(CATALOG_TIMEOUT, async {
            let conn = pc.conn()?;
            let map = |e| inner.map_err(e, CATALOG_TIMEOUT);
            own_transaction(conn, flavor).await.map_err(map)?;
            let version: String = conn
                .query_first("SELECT VERSION()")
                .await
                .map_err(map)?
                .unwrap_or_default();
            let read = catalog::read(conn, flavor == Flavor::MariaDb, version, database)
                .await
                .map_err(map)?;
            end_own_transaction(conn).await.map_err(map)?;
            Ok(read)
        })
        .await;
        match read {
            Ok(Ok(c)) => {
                inner.release(pc, false, None).await;
                Ok(c)
            }
            Ok(Err(e)) => Err(e),
            Err(e) => {
                inner.kill_in_background(pc);
                Err(e)
            }
        }
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

/// Pins the session and opens a read-only transaction for our own catalogue queries, with the
/// catalogue's statement timeout.
async fn own_transaction(conn: &mut Conn, flavor: Flavor) -> Result<(), mysql_async::Error> {
    conn.query_drop(flavor.setup_sql(CATALOG_TIMEOUT, true))
        .await
}

/// Ends our catalogue transaction, so the idle connection holds no metadata lock on the tables it
/// looked at.
async fn end_own_transaction(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    conn.query_drop("ROLLBACK").await
}

/// Runs `fut` for at most `limit`; past it, `Timeout`.
async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Result<T, ExecError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| ExecError::Timeout(limit))
}

/// What the check after a read-only statement found.
enum Prepared {
    /// No leftovers; pinned and inside a fresh read-only transaction (flags checked).
    Ready,
    /// User variables or named locks were left: the session needs a reset.
    Leftovers,
    /// The server did not confirm the read-only transaction.
    Unconfirmed,
}

impl Inner {
    fn secrets(&self) -> [&str; 1] {
        [self.target.password.expose()]
    }

    fn scrub(&self, message: &str) -> String {
        scrub(message, &self.secrets())
    }

    /// Maps a driver error; the server's own statement timeout counts as our timeout, and a packet
    /// over the client-side limit as a result over the cap.
    fn map_err(&self, e: mysql_async::Error, timeout: Duration) -> ExecError {
        if packet_too_large(&e) {
            return ExecError::ResultTooLarge(self.settings.max_result_bytes);
        }
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

    /// The client-side packet limit: the result cap plus framing slack, within what mysql_async
    /// accepts (1 KiB to 1 GiB).
    fn packet_limit(&self) -> usize {
        let limit = self
            .settings
            .max_result_bytes
            .saturating_add(PACKET_SLACK)
            .clamp(1024, 1024 * 1024 * 1024);
        usize::try_from(limit).unwrap_or(1024 * 1024 * 1024)
    }

    /// Opens one physical connection to the freshly checked address, with no default database.
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
                .db_name(None::<String>)
                .prefer_socket(false)
                .stmt_cache_size(STATEMENT_CACHE_SIZE)
                .max_allowed_packet(Some(self.packet_limit()))
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

    /// Puts a connection back in a known state, or drops it; its pool slot is held until then.
    /// `reset`: `COM_RESET_CONNECTION` first, for anything user SQL may have left. `next`: the
    /// statement timeout of the read-only statement to get the connection ready for (module
    /// notes): the leftover check, then the pins and a fresh read-only transaction. With neither,
    /// the connection goes back as it is (our own statements only).
    async fn release(&self, mut pc: PooledConn, reset: bool, next: Option<Duration>) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let flavor = pc.flavor;
        let ready = pc.ready_for;
        let Some(conn) = pc.conn.as_mut() else {
            return;
        };
        // Never set for this client (module notes); honoured should the server send it.
        let reset = reset || status(conn).contains(StatusFlags::SERVER_SESSION_STATE_CHANGED);
        let settled = tokio::time::timeout(
            HOUSEKEEPING_TIMEOUT,
            self.settle_session(conn, flavor, reset, next, ready),
        )
        .await;
        let Ok(Some(ready_for)) = settled else {
            return pc.discard_conn();
        };
        let Some(conn) = pc.conn.take() else {
            return;
        };
        match self.idle.lock() {
            Ok(mut idle) => idle.push(Idle {
                conn,
                flavor,
                ready_for,
                since: Instant::now(),
            }),
            Err(_) => {
                self.size.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// [`Inner::release`]'s work on the connection: what it is ready for afterwards, or `None`
    /// when it must be dropped.
    async fn settle_session(
        &self,
        conn: &mut Conn,
        flavor: Flavor,
        mut reset: bool,
        next: Option<Duration>,
        ready: Option<Duration>,
    ) -> Option<Option<Duration>> {
        if let Some(timeout) = next
            && !reset
        {
            if !self.leftovers_unreadable.load(Ordering::Acquire) {
                match self.prepare(conn, flavor, timeout, true).await {
                    Ok(Prepared::Ready) => return Some(Some(timeout)),
                    Ok(Prepared::Leftovers) => {
                        tracing::warn!(
                            "a statement left user variables or named locks in the session; reset"
                        );
                    }
                    Ok(Prepared::Unconfirmed) => return None,
                    Err(mysql_async::Error::Server(se)) => {
                        // A function may have changed settings the check depends on (a tiny
                        // timeout): reset. Only a missing table or privilege stops the check.
                        if LEFTOVERS_UNREADABLE.contains(&se.code) {
                            tracing::warn!(
                                code = se.code,
                                "cannot read session leftovers; resetting after every statement"
                            );
                            self.leftovers_unreadable.store(true, Ordering::Release);
                        }
                    }
                    Err(_) => return None,
                }
            }
            reset = true;
        }
        if reset && !matches!(conn.reset().await, Ok(true)) {
            // Unsupported (very old server) or failed: do not reuse.
            return None;
        }
        match next {
            Some(timeout) => match self.prepare(conn, flavor, timeout, false).await {
                Ok(Prepared::Ready) => Some(Some(timeout)),
                _ => None,
            },
            None if reset => Some(None),
            None => Some(ready),
        }
    }

    /// Sends the setup of a read-only statement (after the leftover check when `check`) and reads
    /// the server's answer.
    async fn prepare(
        &self,
        conn: &mut Conn,
        flavor: Flavor,
        timeout: Duration,
        check: bool,
    ) -> Result<Prepared, mysql_async::Error> {
        if !check {
            conn.query_drop(flavor.setup_sql(timeout, true)).await?;
        } else {
            let mut result = conn.query_iter(flavor.check_and_setup_sql(timeout)).await?;
            let rows: Vec<Row> = result.collect().await?;
            result.drop_result().await?;
            // One row of two counts, both zero; anything else (no row: a function may have set
            // `sql_select_limit=0`) is not a clean session.
            let (variables, locks) = match rows.as_slice() {
                [row] => (
                    row.get_opt::<i64, _>(0).and_then(Result::ok),
                    row.get_opt::<Option<i64>, _>(1).and_then(Result::ok),
                ),
                _ => (None, None),
            };
            if variables.is_some_and(|n| n < 0) {
                tracing::warn!("cannot read session leftovers; resetting after every statement");
                self.leftovers_unreadable.store(true, Ordering::Release);
            }
            if variables != Some(0) || locks != Some(Some(0)) {
                return Ok(Prepared::Leftovers);
            }
        }
        Ok(if in_transaction(conn, true) {
            Prepared::Ready
        } else {
            Prepared::Unconfirmed
        })
    }

    /// Stops whatever connection `id` is running, from the dedicated killer connection (reopened
    /// once if it went stale). Best effort and bounded in time.
    async fn kill_query(&self, id: u32) {
        let sql = format!("KILL QUERY {id}");
        if tokio::time::timeout(HOUSEKEEPING_TIMEOUT, self.on_killer(&sql, false))
            .await
            .is_err()
        {
            tracing::warn!("KILL QUERY did not finish in time");
        }
    }

    /// Whether server thread `id` still runs a statement (`None`: cannot tell).
    async fn thread_busy(&self, id: u32) -> Option<bool> {
        let sql = format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE ID = {id} AND COMMAND <> 'Sleep'"
        );
        tokio::time::timeout(HOUSEKEEPING_TIMEOUT, self.on_killer(&sql, true))
            .await
            .ok()
            .flatten()
    }

    /// Runs our own `sql` on the killer connection (opened, or reopened once if it went stale).
    /// `counts`: read the first column of its one row as a count and say whether it is non-zero.
    async fn on_killer(&self, sql: &str, counts: bool) -> Option<bool> {
        let mut killer = self.killer.lock().await;
        for _ in 0..2 {
            let mut conn = match killer.take() {
                Some(c) => c,
                None => match self.connect().await {
                    Ok((c, _)) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not open a connection to stop a statement");
                        return None;
                    }
                },
            };
            let outcome = if counts {
                conn.query_first::<Row, _>(sql).await.map(|row| {
                    row.and_then(|r| r.get_opt::<i64, _>(0))
                        .and_then(Result::ok)
                        .map(|n| n > 0)
                })
            } else {
                conn.query_drop(sql).await.map(|()| Some(true))
            };
            match outcome {
                Ok(answer) => {
                    *killer = Some(conn);
                    return answer;
                }
                // Unknown thread: it is already gone, nothing to stop.
                Err(mysql_async::Error::Server(se)) => {
                    if se.code != 1094 {
                        tracing::warn!(code = se.code, "stopping a statement failed");
                    }
                    *killer = Some(conn);
                    return None;
                }
                Err(_) => continue,
            }
        }
        None
    }

    /// Keeps a killed statement's pool slot until the server has finished with it: the
    /// connection is dropped now (its socket closes, or mysql_async drains and quits it), then the
    /// server thread is watched until it runs nothing, for at most [`KILLED_STATEMENT_LIMIT`].
    /// `KILL QUERY` does not stop everything (module notes); this is what makes the pool size
    /// bound the server threads kept busy.
    async fn settle_killed(&self, mut pc: PooledConn) {
        let id = pc.id;
        pc.discard_conn();
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            match self.thread_busy(id).await {
                Some(true) => {}
                Some(false) | None => break,
            }
            if started.elapsed() >= KILLED_STATEMENT_LIMIT {
                tracing::warn!(
                    thread = id,
                    "a killed statement is still running on the server; freeing its pool slot"
                );
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
        drop(pc);
    }

    /// Kills `pc`'s statement and settles it in a task of its own, for callers that must answer
    /// now (`schema`, `introspect`).
    fn kill_in_background(self: &Arc<Self>, pc: PooledConn) {
        let inner = self.clone();
        tokio::spawn(async move {
            inner.kill_query(pc.id).await;
            inner.settle_killed(pc).await;
        });
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
    /// The server did not confirm the transaction our setup started.
    Unconfirmed,
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

    /// Ends the row stream for the consumer, before any work that follows the answer.
    fn close_stream(&mut self) {
        let (closed_tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, closed_tx));
    }

    /// Stops the statement on the server, reports why, and keeps the slot until the server is
    /// done with it.
    async fn abort(&mut self, pc: PooledConn, stop: Stop) {
        self.inner.kill_query(pc.id).await;
        if let Stop::Deadline = stop {
            self.fail(ExecError::Timeout(self.req.timeout)).await;
        }
        self.close_stream();
        self.inner.settle_killed(pc).await;
    }

    async fn run_inner(&mut self) {
        let inner = self.inner.clone();
        let mut pc = match bounded(&self.tx, self.deadline, inner.checkout()).await {
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
            let (id, reused) = (pc.id, pc.reused);
            self.conn_id = Some(id);
            match self.start(&mut pc).await {
                Ok((stmt, result)) => break (id, stmt, result),
                Err(Start::Dead(_)) if attempt == 1 && reused => {
                    pc.discard_conn();
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

        let max_bytes = inner.settings.max_result_bytes;
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
                inner.kill_query(id).await;
                self.close_stream();
                return inner.settle_killed(pc).await;
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
        if let Err(e) = self.finish(&mut pc).await {
            return self.fail_discard(pc, id, e).await;
        }
        // The stream ends here for the consumer; the reset or the next setup happens after.
        self.close_stream();
        self.release(pc, largest).await;
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
    async fn release(&self, mut pc: PooledConn, largest_row: usize) {
        if largest_row > GROWN_ROW {
            pc.discard_conn();
            return;
        }
        let next = self.req.read_only.then_some(self.req.timeout);
        self.inner.release(pc, self.reset_after(), next).await;
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
                Start::Statement(self.inner.map_err(e, self.req.timeout))
            }
            e if retry_ok && !packet_too_large(&e) => Start::Dead(e),
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

    /// Commits a read-write statement's transaction. A read-only one is rolled back by the
    /// release, after the answer.
    async fn finish(&mut self, pc: &mut PooledConn) -> Result<(), ExecError> {
        if self.req.read_only {
            return Ok(());
        }
        let conn = pc.conn()?;
        match bounded(&self.tx, self.deadline, conn.query_drop("COMMIT")).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.inner.map_err(e, self.req.timeout)),
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
        let e = self.inner.map_err(e, self.req.timeout);
        if !ended {
            return self.fail_discard(pc, id, e).await;
        }
        self.fail(e).await;
        self.close_stream();
        self.release(pc, largest_row).await;
    }

    /// An error mid-statement: stop it on the server, report, and keep the slot until the server
    /// is done with it.
    async fn fail_discard(&mut self, pc: PooledConn, id: u32, e: ExecError) {
        self.inner.kill_query(id).await;
        self.fail(e).await;
        self.close_stream();
        self.inner.settle_killed(pc).await;
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
