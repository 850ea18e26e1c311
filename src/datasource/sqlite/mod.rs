//! The SQLite driver: a bounded pool of connections to a file under the operator's
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
//!
//! Layout, as for every driver: `session` (connections and the pool), `statement` (running one),
//! `values` (params and rows), `errors`, and `catalog` (what the SQL policy needs to know).

mod catalog;
mod errors;
mod session;
mod statement;
mod values;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use deadpool::managed::{self, Metrics, Object, RecycleError};
use rusqlite::config::DbConfig;
use rusqlite::limits::Limit;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection as SqlConn, ErrorCode, OpenFlags};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::drive::{self, Ends, Head};
use super::pool::{self, Pool};
use super::{
    Column, ColumnInfo, Connection, DatasourceSpec, ExecError, Execute, Execution, PoolStats,
    RegistrySettings, ServerInfo, TableInfo, net,
};
use crate::encode::RowWriter;

use errors::*;
use session::*;
use statement::*;
use values::*;

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

/// A bounded pool of connections to one SQLite file.
pub struct SqlitePool {
    pool: Pool<SqliteManager>,
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
        let manager = SqliteManager {
            file: Arc::new(File {
                path: path.clone(),
                settings: settings.clone(),
            }),
            abandoned: AtomicUsize::new(0),
            read_only: AtomicBool::new(true),
        };
        Ok(SqlitePool {
            pool: pool::build(manager, spec, settings)?,
        })
    }

    /// Runs one statement on a blocking thread; dropping this future or the stream interrupts it.
    pub async fn execute(&self, req: Execute) -> Result<Execution, ExecError> {
        let (head_tx, head_rx) = oneshot::channel();
        let (row_tx, row_rx) = mpsc::channel(ROW_BUFFER);
        let truncated = Arc::new(AtomicBool::new(false));
        let senders = Senders {
            head: head_tx,
            rows: row_tx,
            truncated: truncated.clone(),
        };
        let statement = run(self.pool.clone(), req, senders);
        let ends = Ends {
            head: head_rx,
            rows: row_rx,
            truncated,
        };
        // Always in a task of its own, whoever paces the rows: the blocking work runs whether
        // or not the reader polls, so its watchdog must too. A statement whose reader went away
        // finishes there: the watchdog interrupts it and gives the connection back or discards it.
        drive::in_own_task(Box::pin(statement), ends, drive::Abandoned::Finish).await
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
            tls: None,
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
        self.pool.manager().abandoned.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> PoolStats {
        pool::stats(&self.pool)
    }

    /// No new checkouts; idle connections close now, busy ones when they come back.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Runs our own read-only work on a pooled connection, bounded in time like a statement:
    /// interrupted at the limit, abandoned if it does not stop, and holding its pool slot until
    /// its thread ends, even when this future is dropped.
    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SqlConn) -> Result<T, ExecError> + Send + 'static,
    ) -> Result<T, ExecError> {
        let obj = checkout(&self.pool, None).await?;
        let interrupt = obj.conn.get_interrupt_handle();
        let state = Arc::new(AtomicU8::new(RUNNING));
        let work = {
            let state = state.clone();
            let pool = self.pool.clone();
            tokio::task::spawn_blocking(move || {
                // Our own queries read whole definitions, which may be longer than a user's
                // values may be; every statement sets its own limit again.
                let r = obj
                    .conn
                    .set_limit(Limit::SQLITE_LIMIT_LENGTH, i32::MAX)
                    .map_err(sql_err)
                    .and_then(|_| f(&obj.conn));
                pool.manager().finish(&state, obj).map(|obj| (obj, r))
            })
        };
        tokio::pin!(work);
        let joined = match tokio::time::timeout(OWN_WORK_LIMIT, &mut work).await {
            Ok(joined) => joined,
            Err(_) => {
                interrupt.interrupt();
                match tokio::time::timeout(ABANDON_GRACE, &mut work).await {
                    // Whatever it returned, the connection was interrupted: it is dropped.
                    Ok(Ok(Some((obj, _)))) => drop(pool::discard(obj)),
                    Ok(_) => {}
                    Err(_) => {
                        if !self.pool.manager().abandon(&state)
                            && let Ok(Some((obj, _))) = work.await
                        {
                            drop(pool::discard(obj));
                        }
                    }
                }
                return Err(ExecError::Timeout(OWN_WORK_LIMIT));
            }
        };
        match joined {
            // Dropping the checkout gives the connection back.
            Ok(Some((_obj, r))) => r,
            Ok(None) | Err(_) => Err(ExecError::Unavailable("the SQLite work failed".into())),
        }
    }
}
