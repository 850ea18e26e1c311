//! PostgreSQL driver: a bounded pool of service-account connections to the checked address, and
//! the execution of one policy-checked statement, with server-side timeouts, a client-side
//! deadline that cancels on the server, and the database's own read-only guard.
//!
//! Before every statement, whatever the previous one on the connection did, the prepared setup
//! statement pins what the SQL policy's model of the server depends on: the `search_path`
//! (`pg_catalog`, the trusted extensions' schemas, `pg_temp`: no user schema), the role the
//! connection logged in with, `standard_conforming_strings`, the timeouts, and whether the
//! transactions that follow start read-only. It is never skipped: a function can change any of
//! these for the session, and the next request must not inherit that.
//!
//! Two ways to run a statement:
//! * a query on a read-only datasource (the common case) takes one round trip: the setup and the
//!   query go out together, each in its own implicit transaction, so the query's transaction
//!   starts read-only. Rows stream as the server sends them; stopping early (row or byte cap)
//!   cancels the statement on the server and reads what is left, so the connection stays usable.
//! * anything else runs in an explicit transaction (`START TRANSACTION READ ONLY` or `READ
//!   WRITE`) with rows fetched through a portal in batches, and ends with COMMIT or ROLLBACK.
//!
//! The socket is read through [`bounded::Bounded`]: no single message (one row, in practice)
//! larger than the result cap is ever buffered, and a connection that buffered a large one is
//! discarded rather than kept with that memory.

mod bounded;
mod catalog;
mod params;
mod types;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool::managed::{
    self, Metrics, Object, Pool, PoolError, RecycleError, TimeoutType, Timeouts,
};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage, Statement};

use bounded::{Bounded, Watch};

use super::drive::{self, Abandoned, Ends, Head};
use super::{
    Column, ColumnInfo, Connection, DatasourceSpec, ExecError, Execute, Execution, PoolStats,
    RegistrySettings, Secret, ServerInfo, TableInfo, net, scrub,
};
use crate::encode::RowWriter;
use types::{Decoder, RawCell};

/// Session settings pinned in the startup packet, so every statement is read the way the SQL
/// policy parsed it (`standard_conforming_strings`: a backslash is not an escape) and values come
/// back in the formats the encoder expects.
const STARTUP_OPTIONS: &str = "-c standard_conforming_strings=on -c client_encoding=UTF8 \
     -c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=iso_8601";

/// Prepared statements kept per connection; past this the cache is emptied (each dropped
/// statement is closed on the server) so distinct ad-hoc queries cannot grow it without bound.
const STATEMENT_CACHE_SIZE: usize = 256;

/// Sent before every statement, in the same round trip: the session's search path and role, the
/// server-side timeouts for this statement, `standard_conforming_strings` again (a backslash
/// must never become an escape the policy did not see), and whether the transactions that
/// follow start read-only. Session-level (`false`), because a read-only query runs in its own
/// implicit transaction right after this one. It also reads back the current transaction's
/// read-only flag and the settings pinned at connect, which no statement may have changed. Our
/// own text with parameters, never user SQL; every name qualified, so nothing on the role's own
/// search path can stand in for them.
const SETUP_SQL: &str = "SELECT pg_catalog.set_config('search_path', $3, false), \
     pg_catalog.set_config('role', $4, false), \
     pg_catalog.set_config('statement_timeout', $1, false), \
     pg_catalog.set_config('lock_timeout', $1, false), \
     pg_catalog.set_config('idle_in_transaction_session_timeout', $1, false), \
     pg_catalog.set_config('standard_conforming_strings', 'on', false), \
     pg_catalog.set_config('default_transaction_read_only', $2, false), \
     pg_catalog.current_setting('transaction_read_only'), \
     pg_catalog.current_setting('client_encoding'), pg_catalog.current_setting('DateStyle'), \
     pg_catalog.current_setting('TimeZone'), pg_catalog.current_setting('IntervalStyle')";

/// [`SETUP_SQL`]'s column with the current transaction's read-only flag.
const READ_ONLY_COLUMN: usize = 7;
/// [`SETUP_SQL`]'s columns with the settings pinned by [`STARTUP_OPTIONS`].
const PINNED_COLUMNS: std::ops::Range<usize> = 8..12;

/// The search path a statement runs under when the caller names none: built-ins only.
const DEFAULT_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// Read once per connection, before anything is pinned: the service account's own search path
/// (its first existing schema is where its unqualified names would go) and role setting.
/// Runs before the search path is pinned, so it names no type or function a user schema could
/// answer to (no cast: `name[]` is decoded as it comes).
const CONNECT_SQL: &str = "SELECT pg_catalog.current_schemas(false), \
     pg_catalog.current_setting('role')";

/// After a statement calling functions the policy cannot see into (`may_change_session`):
/// everything `DISCARD ALL` does except `DEALLOCATE ALL`, so the connection's prepared statements
/// (its setup statement and cache) stay valid; SQL-level prepared statements a function left are
/// deallocated one by one ([`LEFTOVER_PREPARED`]). `RESET ALL` goes back to [`STARTUP_OPTIONS`].
/// `RESET ALL` brings back the account's own search path: it is pinned again at once, before
/// anything else of ours runs on the session.
const SESSION_CLEANUP: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
     SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false); \
     UNLISTEN *; SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; \
     DISCARD SEQUENCES";

/// Prepared statements made with SQL `PREPARE` (by a function), not by the protocol.
const LEFTOVER_PREPARED: &str = "SELECT name FROM pg_catalog.pg_prepared_statements WHERE from_sql";

/// A connection whose read buffer grew past this for one message is not kept in the pool.
const GROWN_BUFFER: usize = 4 * 1024 * 1024;

/// Slack over the result cap for the framing of one row (the cap counts encoded JSON).
const MESSAGE_SLACK: usize = 64 * 1024;

/// Rows requested per portal fetch: small first so the first rows arrive quickly, doubling up to
/// the maximum so long results need few round trips.
const FIRST_BATCH: u64 = 128;
const MAX_BATCH: u64 = 2048;

/// Encoded rows buffered between the statement (`run`) and the HTTP response.
const ROW_CHANNEL: usize = 64;

/// How long the out-of-band cancel request may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound on the catalog query behind `schema()`.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(30);

/// A pool of connections to one PostgreSQL datasource.
pub struct PgPool {
    pool: Pool<PgManager>,
    password: Secret,
    max_result_bytes: u64,
    connect_timeout: Duration,
}

impl std::fmt::Debug for PgPool {
    /// Pool figures only: the target (and its password) are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPool")
            .field("stats", &self.stats())
            .finish()
    }
}

struct Target {
    host: String,
    port: u16,
    database: String,
    user: String,
    password: Secret,
    application_name: String,
}

/// Opens connections for deadpool: resolves and checks the address at every new connection.
struct PgManager {
    target: Target,
    allow: Vec<ipnet::IpNet>,
    connect_timeout: Duration,
    /// Longest message body the server may send (see [`bounded`]).
    max_message: usize,
}

/// One physical connection.
struct PgConn {
    client: Client,
    /// The connection task; aborted when the connection is dropped so the socket closes at once.
    task: JoinHandle<()>,
    statements: StatementCache,
    /// [`SETUP_SQL`], prepared when the connection opened.
    setup: Statement,
    /// What the pinned session settings read as right after connecting ([`PINNED_COLUMNS`]).
    pinned: Vec<String>,
    /// The `role` setting the account logged in with, pinned before every statement.
    role: String,
    /// The first existing schema of the account's own search path when it logged in.
    default_schema: String,
    /// Set when the connection is in doubt; the pool then drops it instead of handing it out.
    broken: bool,
    /// The checked address it is connected to, where its cancel requests go.
    addr: SocketAddr,
    /// What the socket's message watch saw.
    watch: Arc<Watch>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct StatementCache(Mutex<HashMap<String, Statement>>);

impl StatementCache {
    /// Prepares `sql` once per connection (extended protocol: one statement only).
    async fn prepare(
        &self,
        client: &Client,
        sql: &str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.lock().get(sql) {
            return Ok(s.clone());
        }
        let stmt = client.prepare(sql).await?;
        let mut map = self.lock();
        if map.len() >= STATEMENT_CACHE_SIZE {
            map.clear();
        }
        map.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    fn forget(&self, sql: &str) {
        self.lock().remove(sql);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Statement>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl managed::Manager for PgManager {
    type Type = PgConn;
    type Error = ExecError;

    async fn create(&self) -> Result<PgConn, ExecError> {
        let t = &self.target;
        let connect = async {
            // Re-resolved for every physical connection; the socket goes to the address that
            // was checked, and so do its cancel requests.
            let addr: SocketAddr = net::resolve_checked(&t.host, t.port, &self.allow).await?;
            let unavailable = |e: tokio_postgres::Error| {
                ExecError::Unavailable(scrub(&e.to_string(), &[t.password.expose()]))
            };
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| ExecError::Unavailable(format!("could not connect: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let watch = Arc::new(Watch::default());
            let stream = Bounded::new(tcp, self.max_message, watch.clone());
            let mut cfg = tokio_postgres::Config::new();
            cfg.user(&t.user)
                .password(t.password.expose())
                .dbname(&t.database)
                .application_name(&t.application_name)
                .options(STARTUP_OPTIONS)
                .ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = cfg.connect_raw(stream, NoTls).await.map_err(unavailable)?;
            let task = tokio::spawn(async move {
                // The error (if any) surfaces on the client's next request.
                let _ = connection.await;
            });
            // The account's own settings, read before anything is pinned.
            let first = client
                .query_one(CONNECT_SQL, &[])
                .await
                .map_err(unavailable)?;
            let schemas: Vec<String> = first.try_get(0).unwrap_or_default();
            let role: String = first.try_get(1).unwrap_or_else(|_| "none".into());
            let setup = client
                .prepare_typed(SETUP_SQL, &[Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT])
                .await
                .map_err(unavailable)?;
            let ms = millis(self.connect_timeout).to_string();
            let row = client
                .query_one(&setup, &[&ms, &"on", &DEFAULT_SEARCH_PATH, &role])
                .await
                .map_err(unavailable)?;
            let pinned = PINNED_COLUMNS
                .map(|i| row.try_get::<_, String>(i).unwrap_or_default())
                .collect();
            Ok(PgConn {
                client,
                task,
                statements: StatementCache::default(),
                setup,
                pinned,
                role,
                default_schema: schemas.into_iter().next().unwrap_or_default(),
                broken: false,
                addr,
                watch,
            })
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| {
                ExecError::Unavailable(format!(
                    "connecting took longer than {:?}",
                    self.connect_timeout
                ))
            })?
    }

    async fn recycle(&self, conn: &mut PgConn, _: &Metrics) -> managed::RecycleResult<ExecError> {
        // Connections come back only after their statement ended cleanly; anything in doubt was
        // discarded or marked broken instead, so a liveness check is enough here.
        if conn.broken || conn.client.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        if conn.watch.largest.load(Ordering::Acquire) > GROWN_BUFFER {
            return Err(RecycleError::message("the connection's buffer grew"));
        }
        Ok(())
    }
}

impl PgPool {
    /// Builds the pool; connections are opened lazily. Never logs or prints the password.
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
            options,
        } = &spec.connection
        else {
            return Err(ExecError::Unavailable(
                "a PostgreSQL datasource needs a network connection".into(),
            ));
        };
        let target = Target {
            host: host.clone(),
            port: *port,
            database: database.clone(),
            user: user.clone(),
            password: password.clone(),
            // The only option honoured: no socket paths, host or startup overrides.
            application_name: options
                .get("application_name")
                .cloned()
                .unwrap_or_else(|| "sluice".to_owned()),
        };
        let manager = PgManager {
            target,
            allow: settings.allow_networks.clone(),
            connect_timeout: settings.connect_timeout,
            max_message: usize::try_from(settings.max_result_bytes)
                .unwrap_or(usize::MAX)
                .saturating_add(MESSAGE_SLACK),
        };
        let max_size = spec.pool_max_size.min(settings.max_pool_size).max(1);
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .timeouts(Timeouts {
                wait: Some(settings.pool_timeout),
                create: Some(settings.connect_timeout),
                recycle: Some(settings.connect_timeout),
            })
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| ExecError::Unavailable(format!("could not build the pool: {e}")))?;
        Ok(PgPool {
            pool,
            password: password.clone(),
            max_result_bytes: settings.max_result_bytes,
            connect_timeout: settings.connect_timeout,
        })
    }

    async fn checkout(&self) -> Result<Object<PgManager>, ExecError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(TimeoutType::Wait) => ExecError::PoolTimeout,
            PoolError::Timeout(_) => ExecError::Unavailable(format!(
                "connecting took longer than {:?}",
                self.connect_timeout
            )),
            PoolError::Backend(e) => e,
            PoolError::Closed => ExecError::Unavailable("the pool is closed".into()),
            other => ExecError::Unavailable(scrub(&other.to_string(), &[self.password.expose()])),
        })
    }

    /// Runs one statement. Rows stream as they arrive; dropping this future or the returned
    /// stream cancels the statement on the server and discards the connection.
    pub async fn execute(&self, req: Execute) -> Result<Execution, ExecError> {
        let obj = self.checkout().await?;
        let (head_tx, head_rx) = oneshot::channel();
        let (row_tx, row_rx) = mpsc::channel(ROW_CHANNEL);
        let truncated = Arc::new(AtomicBool::new(false));
        let paced_by_client = req.paced_by_client;
        let job = Job {
            req,
            password: self.password.clone(),
            max_result_bytes: self.max_result_bytes,
            truncated: truncated.clone(),
        };
        let statement = run(obj, job, head_tx, row_tx);
        let ends = Ends {
            head: head_rx,
            rows: row_rx,
            truncated,
        };
        // Dropping the statement's future cancels it: its connection guard sees to that.
        if paced_by_client {
            drive::in_own_task(Box::pin(statement), ends, Abandoned::Drop).await
        } else {
            drive::in_callers_task(Box::pin(statement), ends, Abandoned::Drop).await
        }
    }

    /// Connects (or reuses a connection), asks the server's version and reports the latency of
    /// the whole check.
    pub async fn check(&self) -> Result<ServerInfo, ExecError> {
        let start = Instant::now();
        let obj = self.checkout().await?;
        let result = tokio::time::timeout(
            self.connect_timeout,
            obj.client.simple_query("SELECT pg_catalog.version()"),
        )
        .await;
        let version = match result {
            Ok(Ok(messages)) => messages.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            }),
            Ok(Err(e)) => {
                discard(obj);
                return Err(map_error(e, &self.password, self.connect_timeout));
            }
            Err(_) => {
                discard(obj);
                return Err(ExecError::Timeout(self.connect_timeout));
            }
        };
        drop(obj);
        Ok(ServerInfo {
            latency_ms: start.elapsed().as_secs_f64() * 1000.0,
            server_version: version.unwrap_or_default(),
        })
    }

    /// Every table, view, materialized view and foreign table the service account holds some
    /// privilege on, with its columns in order (the caller filters by policy).
    pub async fn schema(&self) -> Result<Vec<TableInfo>, ExecError> {
        let mut obj = self.checkout().await?;
        let password = self.password.clone();
        let work = async {
            let map = |e: tokio_postgres::Error| map_error(e, &password, SCHEMA_TIMEOUT);
            let tx = obj
                .client
                .build_transaction()
                .read_only(true)
                .start()
                .await
                .map_err(map)?;
            tx.batch_execute(&format!(
                "SET LOCAL search_path = pg_catalog, pg_temp; SET LOCAL statement_timeout = {}",
                millis(SCHEMA_TIMEOUT)
            ))
            .await
            .map_err(map)?;
            let rows = tx.query(SCHEMA_SQL, &[]).await.map_err(map)?;
            tx.rollback().await.map_err(map)?;
            Ok::<_, ExecError>(rows)
        };
        let rows = match tokio::time::timeout(SCHEMA_TIMEOUT, work).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                discard(obj);
                return Err(e);
            }
            Err(_) => {
                discard(obj);
                return Err(ExecError::Timeout(SCHEMA_TIMEOUT));
            }
        };
        drop(obj);
        let mut tables: Vec<TableInfo> = Vec::new();
        for row in rows {
            let schema: String = row.try_get(0).unwrap_or_default();
            let name: String = row.try_get(1).unwrap_or_default();
            let column = ColumnInfo {
                name: row.try_get(2).unwrap_or_default(),
                type_name: row.try_get(3).unwrap_or_default(),
                nullable: row.try_get(4).unwrap_or(true),
            };
            match tables.last_mut() {
                Some(t) if t.schema == schema && t.name == name => t.columns.push(column),
                _ => tables.push(TableInfo {
                    schema,
                    name,
                    columns: vec![column],
                }),
            }
        }
        Ok(tables)
    }

    /// What the SQL policy needs to know of this server (see `policy::catalog`), read in one
    /// read-only transaction.
    pub async fn introspect(&self) -> Result<crate::policy::Catalog, ExecError> {
        let mut obj = self.checkout().await?;
        let password = self.password.clone();
        let default_schema = obj.default_schema.clone();
        let work = async {
            let map = |e: tokio_postgres::Error| map_error(e, &password, SCHEMA_TIMEOUT);
            let tx = obj
                .client
                .build_transaction()
                .read_only(true)
                .start()
                .await
                .map_err(map)?;
            tx.batch_execute(&format!(
                "SET LOCAL search_path = pg_catalog, pg_temp; SET LOCAL statement_timeout = {}",
                millis(SCHEMA_TIMEOUT)
            ))
            .await
            .map_err(map)?;
            let version: String = tx
                .query_one("SELECT pg_catalog.version()", &[])
                .await
                .map_err(map)?
                .get(0);
            let read = catalog::read(&tx, version, default_schema)
                .await
                .map_err(map)?;
            tx.rollback().await.map_err(map)?;
            Ok::<_, ExecError>(read)
        };
        match tokio::time::timeout(SCHEMA_TIMEOUT, work).await {
            Ok(Ok(c)) => {
                drop(obj);
                Ok(c)
            }
            Ok(Err(e)) => {
                discard(obj);
                Err(e)
            }
            Err(_) => {
                discard(obj);
                Err(ExecError::Timeout(SCHEMA_TIMEOUT))
            }
        }
    }

    pub fn stats(&self) -> PoolStats {
        let s = self.pool.status();
        PoolStats {
            size: s.size,
            in_use: s.size.saturating_sub(s.available),
            waiting: s.waiting,
        }
    }

    /// No new checkouts; idle connections are dropped, busy ones when they come back.
    pub fn close(&self) {
        self.pool.close();
    }
}

const SCHEMA_SQL: &str = "\
SELECT n.nspname::text, c.relname::text, a.attname::text,
       pg_catalog.format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
  AND (pg_catalog.has_table_privilege(c.oid,
         'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
       OR pg_catalog.has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE, REFERENCES'))
ORDER BY n.nspname, c.relname, a.attnum";

/// Owns a checked-out connection. Unless released (its transaction ended cleanly), dropping it
/// cancels whatever the connection is running and discards it instead of returning it to the
/// pool; this runs when the statement's future is dropped (its task aborted, or the stream or
/// `execute` future that drives it dropped), times out or fails mid-stream.
struct ConnGuard(Option<Object<PgManager>>);

impl ConnGuard {
    fn new(obj: Object<PgManager>) -> Self {
        ConnGuard(Some(obj))
    }

    fn conn(&mut self) -> Option<&mut PgConn> {
        self.0.as_deref_mut()
    }

    /// Returns the connection to the pool.
    fn release(mut self) {
        drop(self.0.take());
    }

    /// Returns the connection to the pool, first putting its session back with
    /// [`SESSION_CLEANUP`] when the statement may have changed it; a connection whose cleanup
    /// fails is discarded instead.
    async fn release_after(mut self, may_change_session: bool) {
        if let Some(obj) = self
            .0
            .take_if(|o| o.watch.largest.load(Ordering::Acquire) > GROWN_BUFFER)
        {
            // Its read buffer grew for a large row: close it rather than keep that memory.
            drop(Object::take(obj));
            return;
        }
        if may_change_session {
            let cleaned = match self.conn() {
                Some(conn) => matches!(
                    tokio::time::timeout(CANCEL_TIMEOUT, clean_session(&conn.client)).await,
                    Ok(Ok(()))
                ),
                None => false,
            };
            if !cleaned {
                return;
            }
        }
        self.release();
    }
}

/// Puts a session back as a fresh connection's, keeping the protocol-level prepared statements:
/// [`SESSION_CLEANUP`], then `DEALLOCATE` of each SQL-level prepared statement left behind.
async fn clean_session(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(SESSION_CLEANUP).await?;
    for row in client.query(LEFTOVER_PREPARED, &[]).await? {
        let name: String = row.get(0);
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        client
            .batch_execute(&format!("DEALLOCATE {quoted}"))
            .await?;
    }
    Ok(())
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(obj) = self.0.take() {
            discard(obj);
        }
    }
}

/// Removes the connection from the pool, sends a cancel request for whatever it runs to the
/// same checked address (the cancel token carries the pinned `hostaddr`), then closes it.
fn discard(obj: Object<PgManager>) {
    let conn = Object::take(obj);
    let token = conn.client.cancel_token();
    let addr = conn.addr;
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                let cancel = async {
                    if let Ok(tcp) = tokio::net::TcpStream::connect(addr).await {
                        let _ = token.cancel_query_raw(tcp, NoTls).await;
                    }
                };
                let _ = tokio::time::timeout(CANCEL_TIMEOUT, cancel).await;
                drop(conn);
            });
        }
        // No runtime (process shutting down): closing the socket is all that is left.
        Err(_) => drop(conn),
    }
}

struct Job {
    req: Execute,
    password: Secret,
    max_result_bytes: u64,
    truncated: Arc<AtomicBool>,
}

impl Job {
    /// The search path this statement runs under.
    fn search_path(&self) -> &str {
        self.req
            .search_path
            .as_deref()
            .unwrap_or(DEFAULT_SEARCH_PATH)
    }
}

type HeadSender = oneshot::Sender<Result<Head, ExecError>>;
type RowSender = mpsc::Sender<Result<Bytes, ExecError>>;

/// How `drive` failed: the error, and whether the connection is known to be clean (its
/// transaction was rolled back) so it may go back to the pool.
struct Failure {
    error: ExecError,
    clean: bool,
    /// The session settings pinned at connect had moved, and nothing was sent to the client:
    /// reset the session and run the statement again.
    repin: bool,
}

impl Failure {
    fn discard(error: ExecError) -> Self {
        Failure {
            error,
            clean: false,
            repin: false,
        }
    }

    fn clean(error: ExecError) -> Self {
        Failure {
            error,
            clean: true,
            repin: false,
        }
    }

    fn repin() -> Self {
        Failure {
            error: ExecError::Unavailable(
                "the connection's session settings changed and could not be restored".into(),
            ),
            clean: true,
            repin: true,
        }
    }
}

enum Done {
    /// The rows were streamed; carries the columns when no row was sent (the head is still due).
    Rows(Option<Vec<Column>>),
    Affected(u64),
}

/// The statement's future (spawned, or driven by the caller's task): runs the statement under
/// the client-side deadline and routes the outcome.
async fn run(obj: Object<PgManager>, job: Job, head: HeadSender, rows: RowSender) {
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

/// A duration as PostgreSQL milliseconds: at least 1 (0 would disable the timeout).
fn millis(d: Duration) -> u64 {
    d.as_millis().clamp(1, i32::MAX as u128) as u64
}

/// Checks what [`SETUP_SQL`] read back: the pinned session settings are as they were at
/// connect, and, inside an explicit read-only transaction, the transaction is read-only.
fn verify_setup(
    row: &tokio_postgres::Row,
    pinned: &[String],
    in_read_only_transaction: bool,
) -> Result<(), SetupError> {
    let now: Vec<String> = PINNED_COLUMNS
        .map(|i| row.try_get::<_, String>(i).unwrap_or_default())
        .collect();
    if now != pinned {
        return Err(SetupError::Moved);
    }
    if in_read_only_transaction
        && row.try_get::<_, String>(READ_ONLY_COLUMN).ok().as_deref() != Some("on")
    {
        return Err(SetupError::Failed(ExecError::Unavailable(
            "the transaction did not start read-only".into(),
        )));
    }
    Ok(())
}

/// Why the setup statement's answer is not acceptable.
enum SetupError {
    /// A pinned session setting differs from its value at connect: reset and run again.
    Moved,
    /// Anything else: the connection is not trusted again.
    Failed(ExecError),
}

impl SetupError {
    fn into_failure(self) -> Failure {
        match self {
            SetupError::Moved => Failure::repin(),
            SetupError::Failed(e) => Failure::discard(e),
        }
    }
}

/// The result columns as the client sees them.
fn result_columns(stmt: &Statement) -> Vec<Column> {
    stmt.columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            type_name: types::type_name(c.type_()),
        })
        .collect()
}

async fn drive(
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
struct RowSink<'a> {
    job: &'a Job,
    stmt: &'a Statement,
    decoders: &'a [Decoder],
    head: &'a mut Option<HeadSender>,
    rows: &'a RowSender,
    /// Sent with the first row (or by `run` at the end), so an error before any row is still
    /// the `execute` error rather than a stream item.
    columns: Option<Vec<Column>>,
    fetched: u64,
    bytes: u64,
}

/// What `RowSink::take` decided about one row.
enum Take {
    More,
    /// Enough: the row cap was passed (`truncated` is set) or the row could not be sent
    /// (`Some` error for the client).
    Stop(Option<ExecError>),
}

impl<'a> RowSink<'a> {
    /// A sink for `stmt`'s rows, none taken yet; the columns go out with the first row.
    fn new(
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

    async fn take(&mut self, row: &tokio_postgres::Row) -> Result<Take, Failure> {
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
async fn drive_read_only_query(
    conn: &mut PgConn,
    job: &Job,
    head: &mut Option<HeadSender>,
    rows: &RowSender,
) -> Result<Done, Failure> {
    let req = &job.req;
    let db = |e: tokio_postgres::Error| map_error(e, &job.password, req.timeout);
    let ms = millis(req.timeout).to_string();
    let search_path = job.search_path();
    let PgConn {
        client,
        statements,
        setup,
        pinned,
        broken,
        addr,
        role,
        ..
    } = conn;
    let client: &Client = client;
    let addr = *addr;

    // Both go out before either answer is awaited; the server runs them in order. Polling the
    // setup first puts its messages on the wire first, so the statement is parsed under the
    // pinned search path and its transaction starts read-only. The setup is never skipped.
    let setup_params: [&(dyn ToSql + Sync); 4] = [&ms, &"on", &search_path, &*role];
    let setup_done = async { Some(client.query_one(&*setup, &setup_params).await) };
    let started = async {
        let stmt = statements.prepare(client, &req.sql).await.map_err(&db)?;
        let decoders = column_decoders(&stmt)?;
        let params = params::convert_params(&req.params, stmt.params())?;
        let stream = client
            .query_raw(&stmt, params.iter())
            .await
            .map_err(|e| bind_error(e, &job.password, req.timeout))?;
        Ok::<_, ExecError>((stmt, decoders, stream))
    };
    let (setup_done, started) = futures::join!(setup_done, started);
    // A connection whose setup failed or whose settings moved is not trusted again, whatever
    // the statement did.
    let verified = match setup_done {
        Some(done) => done
            .map_err(|e| SetupError::Failed(db(e)))
            .and_then(|row| verify_setup(&row, pinned, false)),
        None => Ok(()),
    };
    if let Err(e) = verified {
        let failure = e.into_failure();
        if let (true, Ok((_, _, stream))) = (failure.repin, started) {
            // The statement ran under the moved settings: stop it and throw its rows away
            // before the session is reset and the statement runs again.
            if !cancel_and_drain(client, addr, Box::pin(stream)).await {
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
    let mut stopped = None;
    while let Some(row) = stream.next().await {
        // An error ends the statement's implicit transaction: the connection stays clean.
        let row = row.map_err(|e| Failure::clean(db(e)))?;
        if let Take::Stop(error) = sink.take(&row).await? {
            stopped = Some(error);
            break;
        }
    }
    let columns = sink.columns.take();
    let Some(error) = stopped else {
        return Ok(Done::Rows(columns));
    };
    // Stopped early while the server may still be producing rows. If the connection cannot be
    // brought back to idle in time, it is not used again.
    if !cancel_and_drain(client, addr, stream).await {
        *broken = true;
    }
    match error {
        Some(error) => Err(Failure::clean(error)),
        None => Ok(Done::Rows(columns)),
    }
}

/// Cancels the statement behind `stream` and reads what is left, so the connection is idle
/// again. False if this did not finish within `CANCEL_TIMEOUT`.
///
/// The cancel is confirmed ([`ConfirmedCancel`]) before the connection can run anything else:
/// otherwise the server may act on it late, after this statement ended, and cancel the
/// connection's next statement instead.
async fn cancel_and_drain(
    client: &Client,
    addr: SocketAddr,
    mut stream: Pin<Box<tokio_postgres::RowStream>>,
) -> bool {
    let token = client.cancel_token();
    let finish = async {
        let confirmed = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
            token
                .cancel_query_raw(ConfirmedCancel::new(tcp), NoTls)
                .await
                .ok()
        };
        if confirmed.await.is_none() {
            return false;
        }
        while let Some(r) = stream.next().await {
            if r.is_err() {
                break;
            }
        }
        true
    };
    tokio::time::timeout(CANCEL_TIMEOUT, finish)
        .await
        .unwrap_or(false)
}

/// The socket a cancel request is sent on, whose shutdown also waits for the server to close
/// its side. tokio-postgres's `cancel_query` returns as soon as the request is written; the
/// server closes the connection only after it has signalled the backend, so the end of the
/// stream confirms the cancel was delivered.
struct ConfirmedCancel {
    tcp: tokio::net::TcpStream,
    write_closed: bool,
}

impl ConfirmedCancel {
    fn new(tcp: tokio::net::TcpStream) -> Self {
        ConfirmedCancel {
            tcp,
            write_closed: false,
        }
    }
}

impl tokio::io::AsyncRead for ConfirmedCancel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ConfirmedCancel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::{Poll, ready};
        use tokio::io::AsyncRead;
        if !self.write_closed {
            ready!(Pin::new(&mut self.tcp).poll_shutdown(cx))?;
            self.write_closed = true;
        }
        // The server sends nothing on a cancel connection: read until it closes.
        let mut scratch = [0u8; 64];
        loop {
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// "cached plan must not change result type": the table changed under a cached statement;
/// prepare afresh next time.
fn forget_if_stale(statements: &StatementCache, sql: &str, error: &ExecError) {
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
async fn drive_in_transaction(
    conn: &mut PgConn,
    job: &Job,
    head: &mut Option<HeadSender>,
    rows: &RowSender,
) -> Result<Done, Failure> {
    let req = &job.req;
    let search_path = job.search_path();
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
    let ms = millis(req.timeout).to_string();
    let read_only = if req.read_only { "on" } else { "off" };
    let setup_params: [&(dyn ToSql + Sync); 4] = [&ms, &read_only, &search_path, &*role];
    let setup_done = tx.query_one(&*setup, &setup_params);
    let prepared = async {
        let stmt = statements
            .prepare(tx.client(), &req.sql)
            .await
            .map_err(&db)?;
        let decoders = if req.is_query {
            column_decoders(&stmt)?
        } else {
            Vec::new()
        };
        let params = params::convert_params(&req.params, stmt.params())?;
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
        let mut got: u64 = 0;
        while let Some(row) = stream.next().await {
            let row = row.map_err(|e| Failure::discard(db(e)))?;
            got += 1;
            if let Take::Stop(error) = sink.take(&row).await? {
                stop = error;
                break 'fetch;
            }
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

/// One decoder per result column, or `UnsupportedType` naming the first column the gateway
/// cannot encode.
fn column_decoders(stmt: &Statement) -> Result<Vec<Decoder>, ExecError> {
    stmt.columns()
        .iter()
        .map(|c| {
            Decoder::for_type(c.type_()).ok_or_else(|| {
                ExecError::UnsupportedType(format!(
                    "column {:?} has type {}, which the gateway cannot encode; cast it to text \
                     (e.g. {}::text)",
                    c.name(),
                    types::type_name(c.type_()),
                    c.name()
                ))
            })
        })
        .collect()
}

fn encode_row(
    row: &tokio_postgres::Row,
    stmt: &Statement,
    decoders: &[Decoder],
) -> Result<Bytes, ExecError> {
    let mut w = RowWriter::with_capacity(16 + row.raw_size_bytes() * 2);
    for (i, dec) in decoders.iter().enumerate() {
        let raw = row
            .try_get::<_, Option<RawCell<'_>>>(i)
            .map_err(|_| undecodable(stmt, i))?;
        types::write_cell(&mut w, dec, raw.map(|r| r.0)).map_err(|_| undecodable(stmt, i))?;
    }
    Ok(w.finish())
}

fn undecodable(stmt: &Statement, i: usize) -> ExecError {
    let (name, ty) = stmt
        .columns()
        .get(i)
        .map(|c| (c.name().to_owned(), types::type_name(c.type_())))
        .unwrap_or_default();
    ExecError::UnsupportedType(format!(
        "column {name:?} of type {ty} held a value the gateway could not decode; cast it to text \
         (e.g. {name}::text)"
    ))
}

/// The database's error (scrubbed) with its SQLSTATE; cancellations by our own timeouts are
/// `Timeout`; broken connections are `Unavailable`.
fn map_error(e: tokio_postgres::Error, password: &Secret, timeout: Duration) -> ExecError {
    let secrets = [password.expose()];
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 57014: statement_timeout or our cancel; 25P03: idle_in_transaction_session_timeout.
        if code == "57014" || code == "25P03" {
            return ExecError::Timeout(timeout);
        }
        // The server going away (shutdown, crash, restart, too many connections) is the
        // datasource being unavailable, not the statement failing: clients should retry.
        if server_went_away(code) {
            return ExecError::Unavailable(scrub(db.message(), &secrets));
        }
        return ExecError::QueryFailed {
            message: scrub(db.message(), &secrets),
            sqlstate: Some(code.to_owned()),
        };
    }
    ExecError::Unavailable(scrub(&e.to_string(), &secrets))
}

/// SQLSTATEs that say the server, not the statement, is the problem: class 08 (connection
/// exception), 57P01-57P03 (admin shutdown, crash shutdown, cannot connect now) and 53300
/// (too many connections).
fn server_went_away(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// Errors from Bind: a value the server's input function refused (the error context names the
/// parameter) is `BadParams`; anything else is mapped as usual.
fn bind_error(e: tokio_postgres::Error, password: &Secret, timeout: Duration) -> ExecError {
    if let Some(db) = e.as_db_error()
        && let Some(pos) = db.where_().and_then(param_position)
    {
        return ExecError::BadParams(format!(
            "parameter ${pos} does not fit: {}",
            scrub(db.message(), &[password.expose()])
        ));
    }
    map_error(e, password, timeout)
}

/// The parameter number from an error context such as `portal "p3" parameter $2 = '...'`.
fn param_position(context: &str) -> Option<u32> {
    let rest = &context[context.find("parameter $")? + "parameter $".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_going_away_is_unavailable_and_a_statement_error_is_not() {
        for code in ["57P01", "57P02", "57P03", "08006", "08001", "53300"] {
            assert!(server_went_away(code), "{code}");
        }
        for code in ["42501", "42P01", "22012", "57014", "25006"] {
            assert!(!server_went_away(code), "{code}");
        }
    }

    #[test]
    fn timeouts_are_whole_positive_milliseconds() {
        assert_eq!(millis(Duration::from_micros(10)), 1);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::from_secs(u64::MAX)), i32::MAX as u64);
    }

    #[test]
    fn bind_error_context_yields_the_parameter_position() {
        assert_eq!(
            param_position("portal \"p3\" parameter $2 = '...'"),
            Some(2)
        );
        assert_eq!(param_position("unnamed portal parameter $12"), Some(12));
        assert_eq!(param_position("SQL function \"f\""), None);
    }
}
