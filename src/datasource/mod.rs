//! Datasources: one pool of service-account connections per datasource, and the drivers that run a
//! checked statement on PostgreSQL, MySQL/MariaDB and SQLite and stream its rows as JSON.
//!
//! The SQL handed to this layer has already passed the SQL policy; this layer adds the database's
//! own guard (read-only transactions, server-side timeouts), bounded pools and cancellation.

mod drive;
pub mod driver;
pub mod mysql;
pub mod net;
mod pool;
pub mod postgres;
pub mod registry;
pub mod sqlite;
pub mod tls;

use bytes::Bytes;
use futures::stream::BoxStream;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::model::{DatasourceId, DatasourceKind};

/// A password that cannot be printed by accident: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The only way to read the value; grep for it when auditing where secrets go.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How to reach a datasource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    /// PostgreSQL or MySQL over TCP. `options` holds only keys the API validated (e.g.
    /// `application_name`); never a socket path or a host override.
    Network {
        host: String,
        port: u16,
        database: String,
        user: String,
        password: Secret,
        options: BTreeMap<String, String>,
        /// Whether and how the connection is encrypted and the server verified.
        tls: tls::TlsSettings,
    },
    /// A SQLite file; must lie under one of the operator's `sqlite_roots`.
    Sqlite { path: PathBuf },
}

/// Everything the registry needs to open and use a datasource's pool.
#[derive(Clone, Debug)]
pub struct DatasourceSpec {
    pub id: DatasourceId,
    pub kind: DatasourceKind,
    pub connection: Connection,
    pub pool_max_size: usize,
    /// Changes whenever connection or pool settings change; a pool built for an older generation
    /// is closed and rebuilt on next use.
    pub generation: u64,
}

/// Operator settings that bound every pool.
#[derive(Clone, Debug)]
pub struct RegistrySettings {
    /// How long a request waits for a free connection before `PoolTimeout`.
    pub pool_timeout: Duration,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// Pools unused for this long are closed.
    pub idle_timeout: Duration,
    /// Upper bound on any datasource's `pool_max_size`.
    pub max_pool_size: usize,
    /// Networks the operator opened on purpose (loopback, private ranges are refused otherwise).
    pub allow_networks: Vec<ipnet::IpNet>,
    /// Directories SQLite datasource files must lie under.
    pub sqlite_roots: Vec<PathBuf>,
    /// Upper bound on the encoded bytes of one result (JSON row bytes summed). No single value
    /// larger than this is read into memory.
    pub max_result_bytes: u64,
    /// How long a datasource's catalogue is used before it is read again.
    pub catalog_refresh: Duration,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            pool_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            max_pool_size: 32,
            allow_networks: Vec::new(),
            sqlite_roots: Vec::new(),
            max_result_bytes: 256 * 1024 * 1024,
            catalog_refresh: Duration::from_secs(60),
        }
    }
}

/// One statement to run. `sql` is the policy's rendered, verified text.
#[derive(Clone, Debug)]
pub struct Execute {
    pub sql: String,
    pub params: Vec<serde_json::Value>,
    /// A query (rows come back) rather than INSERT/UPDATE/DELETE.
    pub is_query: bool,
    /// Run inside the database's read-only transaction (and a read-only SQLite connection).
    pub read_only: bool,
    /// Stop after this many rows; the stream then reports `truncated`.
    pub max_rows: u64,
    /// Server-side statement timeout and client-side deadline for the whole execution.
    pub timeout: Duration,
    /// The statement calls functions outside the built-in safe list (ones an admin allowed,
    /// whose bodies the gateway cannot see), so it may change session state the policy could not
    /// rule out (variables, settings, locks). Drivers then reset the connection's session before
    /// it serves anyone else. When false, the policy has refused every construct that changes
    /// session state, and a read-only query's connection goes back to the pool as it is.
    pub may_change_session: bool,
    /// PostgreSQL: the session's `search_path` for this statement (`pg_catalog`, the trusted
    /// extensions' schemas, `pg_temp`). Pinned before every statement, whatever the previous one
    /// left behind. `None` elsewhere.
    pub search_path: Option<String>,
    /// The rows go to the client at the client's pace (an NDJSON stream). The statement then
    /// runs in a task of its own, so its deadline cancels it and frees the connection even while
    /// the client reads nothing. Otherwise the caller reads every row at once (a buffered answer)
    /// and a driver may run the statement inside the caller's own task, one task hop fewer.
    pub paced_by_client: bool,
}

/// A result column: `type` is the database's own type name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

pub enum Execution {
    Rows(RowStream),
    Affected { rows_affected: u64 },
}

/// Rows as they arrive, each already encoded as one JSON array (`[1,"Ada",null]`).
///
/// Dropping the stream before its end cancels the statement on the server and discards the
/// connection's transaction; nothing keeps running for a client that went away.
pub struct RowStream {
    pub columns: Vec<Column>,
    rows: BoxStream<'static, Result<Bytes, ExecError>>,
    truncated: Arc<AtomicBool>,
}

impl RowStream {
    /// `truncated` is set by the driver when it stops at `max_rows` with more rows available.
    pub fn new(
        columns: Vec<Column>,
        rows: BoxStream<'static, Result<Bytes, ExecError>>,
        truncated: Arc<AtomicBool>,
    ) -> Self {
        RowStream {
            columns,
            rows,
            truncated,
        }
    }

    /// Whether `max_rows` cut the result; meaningful once the stream has ended.
    pub fn truncated(&self) -> bool {
        self.truncated.load(Ordering::Acquire)
    }

    /// A handle that reads the truncation flag after the stream itself was moved away.
    pub fn truncated_flag(&self) -> Arc<AtomicBool> {
        self.truncated.clone()
    }
}

impl futures::Stream for RowStream {
    type Item = Result<Bytes, ExecError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rows.as_mut().poll_next(cx)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerInfo {
    pub latency_ms: f64,
    pub server_version: String,
    /// The connection's TLS; `None` under `disable`.
    pub tls: Option<tls::TlsReport>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub nullable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnInfo>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    pub size: usize,
    pub in_use: usize,
    pub waiting: usize,
}

/// Errors of this layer. Messages never contain a password or a connection string: driver text is
/// passed through [`scrub`] before it is put in a variant.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecError {
    /// No connection became free within `pool_timeout`.
    #[error("no connection became free in time")]
    PoolTimeout,
    /// The server could not be reached or the connection broke.
    #[error("datasource unavailable: {0}")]
    Unavailable(String),
    /// The host resolves to a network the operator has not allowed, or the SQLite path lies
    /// outside the allowed directories.
    #[error("{0}")]
    NotAllowed(String),
    /// The database rejected the statement (its message, scrubbed).
    #[error("{message}")]
    QueryFailed {
        message: String,
        sqlstate: Option<String>,
    },
    /// The statement ran past its timeout and was cancelled on the server.
    #[error("the statement ran past its timeout of {0:?} and was cancelled")]
    Timeout(Duration),
    /// The params do not fit the placeholders' types.
    #[error("{0}")]
    BadParams(String),
    /// The encoded result went over `max_result_bytes`.
    #[error("the result is larger than the limit of {0} bytes")]
    ResultTooLarge(u64),
    /// A type the gateway cannot encode (the message names it and suggests a cast).
    #[error("{0}")]
    UnsupportedType(String),
}

impl crate::code::Coded for ExecError {
    fn code(&self) -> crate::code::Code {
        use crate::code::Code;
        match self {
            ExecError::PoolTimeout => Code::PoolTimeout,
            ExecError::Unavailable(_) | ExecError::NotAllowed(_) => Code::DatasourceUnavailable,
            ExecError::QueryFailed { .. }
            | ExecError::ResultTooLarge(_)
            | ExecError::UnsupportedType(_) => Code::QueryFailed,
            ExecError::Timeout(_) => Code::QueryTimeout,
            ExecError::BadParams(_) => Code::BadParams,
        }
    }

    /// Messages are scrubbed of secrets where they are made (see [`scrub`]).
    fn message(&self) -> String {
        match self {
            ExecError::PoolTimeout => {
                "no database connection became free in time; retry shortly".into()
            }
            ExecError::Unavailable(m) | ExecError::NotAllowed(m) => m.clone(),
            ExecError::QueryFailed { message, sqlstate } => match sqlstate {
                Some(s) => format!("{message} (SQLSTATE {s})"),
                None => message.clone(),
            },
            ExecError::Timeout(d) => format!(
                "the statement ran past its timeout of {} ms and was cancelled",
                d.as_millis()
            ),
            ExecError::BadParams(m) | ExecError::UnsupportedType(m) => m.clone(),
            ExecError::ResultTooLarge(n) => format!(
                "the result is larger than the limit of {n} bytes; lower max_rows or select fewer columns"
            ),
        }
    }

    /// An address or path the operator has not allowed stays so however often it is retried.
    fn retryable(&self) -> bool {
        matches!(self, ExecError::PoolTimeout | ExecError::Unavailable(_))
    }
}

impl ExecError {
    /// The statement failed on an object the server does not have (a table, column, function
    /// or schema): the catalogue the policy checked against may be out of date.
    pub fn is_missing_object(&self) -> bool {
        let ExecError::QueryFailed { message, sqlstate } = self else {
            return false;
        };
        match sqlstate.as_deref() {
            // PostgreSQL: undefined table, function, object, column; invalid schema; a cached
            // plan whose result type changed. MySQL: no such table or column.
            Some(code) => matches!(
                code,
                "42P01" | "42883" | "42704" | "42703" | "3F000" | "0A000" | "42S02" | "42S22"
            ),
            // SQLite reports no SQLSTATE.
            None => [
                "no such table",
                "no such column",
                "no such function",
                "no such module",
            ]
            .iter()
            .any(|p| message.starts_with(p)),
        }
    }
}

/// Removes secrets (passwords, whole connection strings) from a driver's message.
pub fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_owned();
    for s in secrets {
        if !s.is_empty() {
            out = out.replace(s, "***");
        }
    }
    // Drivers sometimes echo a URL with credentials: blank the userinfo part.
    for scheme in ["postgres://", "postgresql://", "mysql://"] {
        while let Some(start) = out.find(scheme) {
            let rest = &out[start..];
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                .unwrap_or(rest.len());
            out.replace_range(start..start + end, "<connection string>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let c = Connection::Network {
            host: "db".into(),
            port: 5432,
            database: "d".into(),
            user: "u".into(),
            password: s,
            options: BTreeMap::new(),
            tls: tls::TlsSettings {
                client_key_pem: Some(Secret::new("hunter3")),
                ..tls::TlsSettings::default()
            },
        };
        let printed = format!("{c:?}");
        assert!(!printed.contains("hunter2") && !printed.contains("hunter3"));
    }

    #[test]
    fn scrub_removes_passwords_and_connection_strings() {
        let m = scrub(
            "error connecting to postgres://u:hunter2@db:5432/x: password hunter2 rejected",
            &["hunter2"],
        );
        assert!(!m.contains("hunter2"), "{m}");
        assert!(m.contains("<connection string>"), "{m}");
        assert_eq!(scrub("plain", &[""]), "plain");
    }
}
