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
//! The pool is the one every driver uses (`datasource::pool`, deadpool), not mysql_async's: its
//! manager re-runs the SSRF check (`resolve_checked`) for every new physical connection, and a
//! connection in an unknown state is discarded, never handed out again. A connection goes back to
//! the pool only once the work after its answer (the check and setup above, or the reset) is
//! done, and a killed statement's connection keeps its slot while its server thread is watched.
//!
//! **TLS** (`connection.tls`, libpq's modes; `tls.rs`) is mysql_async's rustls support on the
//! aws-lc-rs provider, configured once per pool and used by every connection the manager opens,
//! the killer connection included. The TCP connection goes to the address the SSRF check
//! resolved; the host the admin registered is what rustls verifies (`tls_hostname_override`,
//! also sent as SNI). `disable`: plain TCP. `require`: TLS, any certificate; with `ca_pem` given
//! the chain is verified, as libpq does when it has a root certificate. `verify-ca`: the chain
//! must lead to `ca_pem` (or, when absent, the system's roots from rustls-native-certs, never
//! mysql_async's built-in webpki roots), validity dates included; the name is not checked.
//! `verify-full`: also the certificate must name the registered host. `ca_pem` and the client
//! certificate and key for mutual TLS go to mysql_async as buffers, never files. `check` reports
//! the protocol version the server says the session negotiated (`Ssl_version`).
//!
//! mysql_async 0.37.1's rustls verifier skips a name mismatch (`verify-ca`) only when the error's
//! text contains `NotValidForName`, which rustls 0.23 no longer prints (its
//! `NotValidForNameContext` reads "certificate not valid for name …"; mysql_async issue #404,
//! fixed after 0.37.1 by matching the variant). Under `verify-ca` the name rustls is asked to
//! verify is therefore `tls::VERIFY_CA_NAME`, which contains that text: the mismatch it always
//! causes is skipped, nothing else is (rustls checks the chain, dates and key usage first, and
//! no other error carries the name; a unit test pins the text). The cost: that name, not the
//! registered host, goes out as SNI under `verify-ca`. With a release that matches the variant it
//! keeps working, and can become the registered host.
//!
//! A failed handshake is `Unavailable` naming the cause: untrusted chain, host name mismatch,
//! expired certificate, a server without TLS under `require` or stricter, a client certificate
//! refused by the server (its TLS alert). MySQL refuses a plain connection to a server with
//! `require_secure_transport=ON` with its own error (3159); MariaDB answers it with 1045, as for
//! a wrong password, and so does an account with `REQUIRE X509` that got no client certificate:
//! the message then adds what may be the cause.
//!
//! Value mapping notes: DATETIME is `YYYY-MM-DDTHH:MM:SS[.ffffff]`, TIMESTAMP the same with `Z`
//! (read in the pinned UTC session), TIME a signed duration `[-]HHH:MM:SS[.ffffff]`; MySQL's JSON
//! type is nested JSON, but MariaDB's JSON is LONGTEXT on the wire (mysql_async does not ask for
//! MariaDB's extended metadata), so it arrives as a string. MySQL does not report placeholder
//! types, so params are checked by count only and the server converts them. A read-write query cut
//! by `max_rows` is killed, so its transaction is rolled back (only a plain SELECT is expected).
//! A statement that returns rows although it is not a query (MariaDB's `INSERT … RETURNING`)
//! reports the number of rows it returned as `rows_affected` (the server's own count is 0).
//!
//! Layout, as for every driver: `session` (the pool's manager and its connections, the pins, the
//! setup and leftover check after an answer, the reset, `KILL QUERY`), `statement` (running one
//! and streaming its rows), `values` (params and rows), `errors`, and `catalog` (what the SQL
//! policy needs to know); and `tls` (`connection.tls` as mysql_async's options, what `check`
//! reports, handshake failures named).

mod catalog;
mod errors;
mod session;
mod statement;
mod tls;
mod values;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use deadpool::managed::{self, Metrics, Object, RecycleError};
use futures::FutureExt;
use mysql_async::consts::{ColumnFlags, ColumnType, StatusFlags};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Params, Row, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::drive::{self, Abandoned, Ends, Head};
use super::pool::{self, Pool};
use super::{
    Column, ColumnInfo, Connection, DatasourceSpec, ExecError, Execute, Execution, PoolStats,
    RegistrySettings, Secret, ServerInfo, TableInfo, net, scrub,
};
use crate::encode::RowWriter;

use errors::*;
use session::*;
use statement::*;
use tls::TlsPlan;
use values::*;

/// Rows buffered between the connection task and the consumer: small, so a slow client slows
/// the server read instead of filling memory.
const ROW_BUFFER: usize = 64;

/// Upper bound on the queries behind `schema()` and `introspect()` (server and client side).
const CATALOG_TIMEOUT: Duration = Duration::from_secs(30);

/// A bounded pool of connections to one MySQL/MariaDB datasource.
pub struct MysqlPool {
    pool: Pool<MysqlManager>,
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
            tls,
        } = &spec.connection
        else {
            return Err(ExecError::Unavailable(
                "a MySQL datasource needs a network connection".into(),
            ));
        };
        let tls = TlsPlan::new(tls, host)?;
        net::resolve_checked(host, *port, &settings.allow_networks).await?;
        let target = Target {
            host: host.clone(),
            port: *port,
            database: database.clone(),
            user: user.clone(),
            password: password.clone(),
        };
        let manager = MysqlManager {
            opts: base_opts(&target, settings, &tls),
            target,
            tls,
            settings: settings.clone(),
            killer: tokio::sync::Mutex::new(None),
            leftovers_unreadable: AtomicBool::new(false),
        };
        Ok(MysqlPool {
            pool: pool::build(manager, spec, settings)?,
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
            pool: self.pool.clone(),
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

    /// Checks out a connection (opening one if needed) and asks for the server version and, over
    /// TLS, the protocol version the session negotiated.
    pub async fn check(&self) -> Result<ServerInfo, ExecError> {
        let started = std::time::Instant::now();
        let manager = self.pool.manager();
        let mut pc = checkout(&self.pool).await?;
        let (version, tls_version) = within(HOUSEKEEPING_TIMEOUT, async {
            let conn = pc.conn()?;
            let map = |e| manager.map_err(e, HOUSEKEEPING_TIMEOUT);
            let version: Option<String> =
                conn.query_first("SELECT VERSION()").await.map_err(map)?;
            let tls_version = if manager.tls.is_on() {
                let row: Option<(String, String)> = conn
                    .query_first("SHOW SESSION STATUS LIKE 'Ssl_version'")
                    .await
                    .map_err(map)?;
                row.map(|(_, v)| v).filter(|v| !v.is_empty())
            } else {
                None
            };
            Ok::<_, ExecError>((version.unwrap_or_default(), tls_version))
        })
        .await??;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        // Neither reads a table: a connection ready for a read-only statement stays so, which
        // its status flags must still say.
        if pc.conn().is_ok_and(|c| !in_transaction(c, true)) {
            pc.ready_for = None;
        }
        pc.release(false, None).await;
        Ok(ServerInfo {
            latency_ms,
            server_version: version,
            tls: manager
                .tls
                .report(tls_version.unwrap_or_else(|| "unknown".to_owned())),
        })
    }

    /// Every table and view the account can see outside the system schemas, with its columns.
    pub async fn schema(&self) -> Result<Vec<TableInfo>, ExecError> {
        let manager = self.pool.manager();
        let mut pc = checkout(&self.pool).await?;
        let flavor = pc.flavor;
        pc.ready_for = None;
        let rows = within(CATALOG_TIMEOUT, async {
            let conn = pc.conn()?;
            own_transaction(conn, flavor)
                .await
                .map_err(|e| manager.map_err(e, CATALOG_TIMEOUT))?;
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
                .map_err(|e| manager.map_err(e, CATALOG_TIMEOUT))?;
            end_own_transaction(conn)
                .await
                .map_err(|e| manager.map_err(e, CATALOG_TIMEOUT))?;
            Ok(rows)
        })
        .await;
        let rows = match rows {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                kill_in_background(&self.pool, pc);
                return Err(e);
            }
        };
        pc.release(false, None).await;
        let mut out: Vec<TableInfo> = Vec::new();
        for (schema, table, column, type_name, nullable) in rows {
            let col = ColumnInfo {
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
        let manager = self.pool.manager();
        let mut pc = checkout(&self.pool).await?;
        let flavor = pc.flavor;
        pc.ready_for = None;
        let database = manager.target.database.clone();
        let read = within(CATALOG_TIMEOUT, async {
            let conn = pc.conn()?;
            let map = |e| manager.map_err(e, CATALOG_TIMEOUT);
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
                pc.release(false, None).await;
                Ok(c)
            }
            Ok(Err(e)) => Err(e),
            Err(e) => {
                kill_in_background(&self.pool, pc);
                Err(e)
            }
        }
    }

    pub fn stats(&self) -> PoolStats {
        pool::stats(&self.pool)
    }

    /// No new checkouts (waiters get `Unavailable`); idle connections (and the killer connection)
    /// are dropped now, busy ones when their statement ends.
    pub fn close(&self) {
        self.pool.close();
        if let Ok(mut killer) = self.pool.manager().killer.try_lock() {
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
