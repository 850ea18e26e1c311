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
//!
//! TLS ([`tls`]) follows the datasource's `connection.tls` with libpq's `sslmode` meanings. The
//! rustls configuration is built once, when the pool opens (settings that cannot be used fail
//! there, naming the field). Each connection goes to the address the SSRF check resolved, while
//! `verify-full` checks the certificate against the host the admin registered; any mode but
//! `disable` insists on TLS and never falls back to plain TCP. Cancel requests go with the same
//! TLS, and `check` reports the protocol version the server says the connection uses. Handshake
//! failures are `Unavailable` with a message that names the cause (untrusted chain, wrong host
//! name, expired certificate, no TLS on the server, TLS required by the server, client
//! certificate refused or missing).

mod bounded;
mod catalog;
mod errors;
mod params;
mod session;
mod statement;
pub(crate) mod tls;
mod values;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool::managed::{self, Metrics, Object, RecycleError};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage, Statement};

use bounded::{Bounded, Watch};
use tls::PgTls;

use super::drive::{self, Abandoned, Ends, Head};
use super::pool::{self, Pool};
use super::{
    Column, ColumnInfo, Connection, DatasourceSpec, ExecError, Execute, Execution, PoolStats,
    RegistrySettings, Secret, ServerInfo, TableInfo, net, scrub,
};
use values::Decoder;

use errors::*;
use session::*;
use statement::*;
use values::*;

/// Encoded rows buffered between the statement (`run`) and the HTTP response.
const ROW_CHANNEL: usize = 64;

/// Upper bound on the catalog query behind `schema()`.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(30);

/// A pool of connections to one PostgreSQL datasource.
pub struct PgPool {
    pool: Pool<PgManager>,
    /// The pool's TLS (its `ClientConfig`, built once at `open`).
    tls: Arc<PgTls>,
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

impl PgPool {
    /// Builds the pool and its TLS configuration; connections are opened lazily. TLS settings
    /// that cannot be used are refused here, naming the field. Never logs or prints the password
    /// or the client key.
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
            tls,
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
        let tls = Arc::new(PgTls::new(host, tls)?);
        let manager = PgManager {
            target,
            allow: settings.allow_networks.clone(),
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.idle_timeout,
            max_message: usize::try_from(settings.max_result_bytes)
                .unwrap_or(usize::MAX)
                .saturating_add(MESSAGE_SLACK),
            tls: tls.clone(),
        };
        let pool = pool::build(manager, spec, settings)?;
        Ok(PgPool {
            pool,
            tls,
            password: password.clone(),
            max_result_bytes: settings.max_result_bytes,
            connect_timeout: settings.connect_timeout,
        })
    }

    async fn checkout(&self) -> Result<Object<PgManager>, ExecError> {
        pool::checkout(&self.pool, self.connect_timeout).await
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

    /// Connects (or reuses a connection), asks the server's version (and, over TLS, the
    /// protocol the server says the connection uses) and reports the latency of the whole check.
    pub async fn check(&self) -> Result<ServerInfo, ExecError> {
        let start = Instant::now();
        let obj = self.checkout().await?;
        let sql = if self.tls.enabled() {
            CHECK_TLS_SQL
        } else {
            CHECK_SQL
        };
        let result = tokio::time::timeout(self.connect_timeout, obj.client.simple_query(sql)).await;
        let row = match result {
            Ok(Ok(messages)) => messages.into_iter().find_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r),
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
        // `try_get`: `get` panics on a column the row does not have (one under `disable`).
        let column = |i: usize| {
            row.as_ref()
                .and_then(|r| r.try_get(i).ok().flatten())
                .map(str::to_owned)
        };
        Ok(ServerInfo {
            latency_ms: start.elapsed().as_secs_f64() * 1000.0,
            server_version: column(0).unwrap_or_default(),
            tls: self.tls.report(column(1)),
        })
    }

    /// Every table, view, materialized view and foreign table the service account holds some
    /// privilege on, with its columns in order (the caller filters by policy).
    pub async fn schema(&self) -> Result<Vec<TableInfo>, ExecError> {
        let rows = self
            .catalog_read(async |tx, _| tx.query(SCHEMA_SQL, &[]).await)
            .await?;
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
        self.catalog_read(async |tx, default_schema| {
            let version: String = tx
                .query_one("SELECT pg_catalog.version()", &[])
                .await?
                .get(0);
            catalog::read(tx, version, default_schema).await
        })
        .await
    }

    /// Runs `read` in a read-only transaction that names only `pg_catalog` on its search path,
    /// bounded by `SCHEMA_TIMEOUT`. `read` also gets the session's default schema. A connection
    /// that failed or overran is discarded rather than returned to the pool.
    async fn catalog_read<T>(
        &self,
        read: impl AsyncFnOnce(
            &tokio_postgres::Transaction<'_>,
            String,
        ) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, ExecError> {
        let mut obj = self.checkout().await?;
        let default_schema = obj.default_schema.clone();
        let map = |e: tokio_postgres::Error| map_error(e, &self.password, SCHEMA_TIMEOUT);
        let work = async {
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
            let out = read(&tx, default_schema).await.map_err(map)?;
            tx.rollback().await.map_err(map)?;
            Ok::<_, ExecError>(out)
        };
        let result = match tokio::time::timeout(SCHEMA_TIMEOUT, work).await {
            Ok(result) => result,
            Err(_) => Err(ExecError::Timeout(SCHEMA_TIMEOUT)),
        };
        match result {
            Ok(out) => {
                drop(obj);
                Ok(out)
            }
            Err(e) => {
                discard(obj);
                Err(e)
            }
        }
    }

    pub fn stats(&self) -> PoolStats {
        pool::stats(&self.pool)
    }

    /// No new checkouts; idle connections are dropped, busy ones when they come back.
    pub fn close(&self) {
        self.pool.close();
    }
}

/// What `check` asks under `disable`.
const CHECK_SQL: &str = "SELECT pg_catalog.version()";

/// What `check` asks over TLS: also the protocol version, as the server reports it for this
/// very connection.
const CHECK_TLS_SQL: &str = "SELECT pg_catalog.version(), (SELECT s.version FROM \
     pg_catalog.pg_stat_ssl s WHERE s.pid = pg_catalog.pg_backend_pid())";

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
