//! The PostgreSQL backend of the store, shared by several gateway replicas.
//!
//! The schema is SQLite's: the same tables and columns, holding the same values (text, 64-bit
//! integers for integers and booleans, bytes; times are RFC 3339 text), so a store copies from
//! SQLite table by table without converting anything. The statements are shared (`sql.rs`).
//!
//! - **Migrations** run at start in one transaction under a transaction-level advisory lock, and
//!   each applied version is a row of `schema_migrations`: replicas starting at once on an empty
//!   database wait for each other, the first migrates, the others find the work done.
//! - **Writes** are serialised across replicas by the version row: a change set's transaction
//!   starts with `SELECT … FOR UPDATE` on `meta.version`, so the invariants are checked against
//!   every write committed before it; it bumps the version and `NOTIFY`s [`CHANGES_CHANNEL`]
//!   with the new version as payload in the same transaction, so a listener hears of it exactly
//!   when it is committed.
//! - **Connections**: [`connect`] reads a libpq-style URL (`sslmode` with libpq's meanings and
//!   default, `prefer`), bounds the connect (5 s unless the URL says `connect_timeout`) and every
//!   statement (`statement_timeout` 30 s), so a hung store never holds the store's mutex for
//!   long. A connection found lost is dropped; the next call opens a new one, and while the
//!   database is down every call answers [`StoreError::Unavailable`].

use ::postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use ::postgres::{Client, GenericClient, Statement};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::sql::{self, Cell, Dialect, Param, Row, Sql};
use super::*;
use crate::datasource::postgres::tls::chain_text;
use crate::datasource::tls::{HandshakeContext, find_rustls_error, handshake_failure};

/// The channel every committed change set is announced on; the payload is the new version.
pub const CHANGES_CHANNEL: &str = "sluice_changes";

/// How long connecting may take when the URL does not say (`connect_timeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest any one statement of a store connection may run.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The advisory lock migrations run under (any constant; advisory locks are per database).
const MIGRATION_LOCK: i64 = 0x736c_7569_6365_0017;

/// Migrations, applied in order at start; a released migration is never edited, only added to.
fn migrations() -> Vec<String> {
    vec![
        control_plane_sql(),
        crate::audit::PG_SCHEMA_SQL.to_owned(),
        "CREATE TABLE key_check (id BIGINT PRIMARY KEY CHECK (id = 1), sealed BYTEA NOT NULL);"
            .to_owned(),
    ]
}

/// The control plane: SQLite's tables as its migrations leave them, in PostgreSQL's types
/// (SQLite's 64-bit INTEGER is BIGINT, BLOB is BYTEA; TEXT, times included, stays TEXT) and
/// emails unique whatever their case through `lower()` (SQLite's NOCASE folds ASCII only; here
/// every letter folds).
fn control_plane_sql() -> String {
    let sql = super::sqlite::CONTROL_PLANE_SQL
        .replace(" INTEGER", " BIGINT")
        .replace(" BLOB", " BYTEA")
        .replace("email COLLATE NOCASE", "lower(email)");
    // What SQLite's later migrations added.
    sql + ";\nALTER TABLE datasources ADD COLUMN tls_client_key_enc BYTEA;"
}

/// The table holding the sealed key-check value.
const KEY_CHECK_TABLE: &str = "key_check";

/// A connect running on a thread of its own.
type Attempt = std::sync::mpsc::Receiver<Result<Client, StoreError>>;

/// How to reach the store database: the parsed URL and its TLS.
#[derive(Clone)]
struct Settings {
    config: ::postgres::Config,
    /// `None` under `sslmode=disable`.
    tls: Option<MakeRustlsConnect>,
    /// What a handshake failure message needs to say.
    mode: TlsMode,
    host: String,
    ca_given: bool,
    client_cert: bool,
}

/// Opens a connection to the PostgreSQL store database at `url`:
/// `postgres://user:pass@host:port/db?sslmode=...&sslrootcert=<file>&sslcert=<file>&sslkey=<file>`.
///
/// `sslmode` has libpq's meanings: `disable`, `prefer` (the default: TLS when the server offers
/// it, its certificate not checked), `require` (TLS or nothing, the certificate not checked,
/// unless `sslrootcert` is given: then as `verify-ca`), `verify-ca` (the chain leads to
/// `sslrootcert`'s roots, the system's without one) and `verify-full` (also, the certificate
/// names the host). `sslcert` and `sslkey` give a client certificate for mutual TLS. Connecting
/// takes at most `connect_timeout` (5 s by default); every statement at most 30 s
/// (`statement_timeout`). Errors never contain the password.
pub fn connect(url: &str) -> Result<Client, StoreError> {
    Settings::parse(url)?.connect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_pem(param: &str, path: &str) -> Result<String, StoreError> {
    std::fs::read_to_string(path)
        .map_err(|e| StoreError::Unavailable(format!("store URL {param} {path:?}: {e}")))
}

impl Settings {
    fn parse(url: &str) -> Result<Settings, StoreError> {
        let bad = |what: String| StoreError::Internal(format!("store URL: {what}"));
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad(
                "must be postgres://user:password@host:port/database?sslmode=...".to_owned(),
            ));
        }
        // The TLS parameters are ours (tokio-postgres knows only three modes and no files);
        // the rest of the URL is tokio-postgres's to parse.
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut mode, mut rootcert, mut cert, mut key) = ("prefer".to_owned(), None, None, None);
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match percent_decode(k).as_str() {
                "sslmode" => mode = v,
                "sslrootcert" => rootcert = Some(v),
                "sslcert" => cert = Some(v),
                "sslkey" => key = Some(v),
                _ => rest.push(pair),
            }
        }
        let mut config: ::postgres::Config = format!("{base}?{}", rest.join("&"))
            .parse()
            .map_err(|e: ::postgres::Error| bad(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("sluice");
        }
        // Ours first: an `options` of the URL's own that sets statement_timeout wins.
        let mut options = format!("-c statement_timeout={}", STATEMENT_TIMEOUT.as_millis());
        if let Some(o) = config.get_options() {
            options.push(' ');
            options.push_str(o);
        }
        config.options(&options);
        // A peer that vanishes (no RST) is noticed by the kernel in about half a minute, not
        // after hours: keepalives while waiting for an answer, and a bound on unacknowledged
        // sends.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(30));
        }

        let tls_mode = match mode.as_str() {
            "disable" => TlsMode::Disable,
            // Encrypted when the server offers it; like libpq, nothing of the certificate is
            // checked (the handshake's signatures are).
            "prefer" => TlsMode::Require,
            "require" if rootcert.is_some() => TlsMode::VerifyCa,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(bad(format!(
                    "sslmode {other:?} is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                )));
            }
        };
        let host = match config.get_hosts().first() {
            Some(::postgres::config::Host::Tcp(h)) => h.clone(),
            _ => String::new(),
        };
        let settings = TlsSettings {
            mode: tls_mode,
            ca_pem: rootcert
                .as_deref()
                .map(|p| read_pem("sslrootcert", p))
                .transpose()?,
            client_cert_pem: cert
                .as_deref()
                .map(|p| read_pem("sslcert", p))
                .transpose()?,
            client_key_pem: key
                .as_deref()
                .map(|p| read_pem("sslkey", p).map(Secret::new))
                .transpose()?,
        };
        // The files are judged before connecting, each error naming the URL parameter.
        crate::datasource::tls::validate(&settings).map_err(|e| {
            let param = match e.field {
                "ca_pem" => "sslrootcert",
                "client_cert_pem" => "sslcert",
                _ => "sslkey",
            };
            bad(format!("{param}: {}", e.reason))
        })?;
        let tls = match tls_mode {
            TlsMode::Disable => {
                config.ssl_mode(SslMode::Disable);
                None
            }
            verifies => {
                config.ssl_mode(if mode == "prefer" {
                    SslMode::Prefer
                } else {
                    SslMode::Require
                });
                let client = crate::datasource::postgres::tls::client_config(&settings, verifies)
                    .map_err(|e| match e {
                    crate::datasource::ExecError::Unavailable(m) => bad(m),
                    other => bad(other.to_string()),
                })?;
                Some(MakeRustlsConnect::new(client))
            }
        };
        Ok(Settings {
            config,
            tls,
            mode: tls_mode,
            host,
            ca_given: settings.ca_pem.is_some(),
            client_cert: settings.client_cert_pem.is_some(),
        })
    }

    /// Connects, waiting at most the connect timeout for the whole of it: tokio-postgres's
    /// `connect_timeout` bounds the TCP connect only, not the TLS handshake and the startup,
    /// which a stuck server or proxy can hold forever.
    fn connect(&self) -> Result<Client, StoreError> {
        self.wait(self.start())
            .unwrap_or_else(|_still_running| Err(self.timed_out()))
    }

    /// Starts connecting on a thread of its own.
    fn start(&self) -> Attempt {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("sluice-store-connect".to_owned())
            .spawn(move || drop(tx.send(this.connect_now())));
        if let Err(e) = spawned {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let _ = tx.send(Err(StoreError::Unavailable(format!("connect thread: {e}"))));
            return rx;
        }
        rx
    }

    /// What `attempt` ended with, or the attempt again when it is still running after the
    /// connect timeout.
    fn wait(&self, attempt: Attempt) -> Result<Result<Client, StoreError>, Attempt> {
        use std::sync::mpsc::RecvTimeoutError;
        match attempt.recv_timeout(self.connect_timeout()) {
            Ok(result) => Ok(result),
            Err(RecvTimeoutError::Timeout) => Err(attempt),
            Err(RecvTimeoutError::Disconnected) => Ok(Err(StoreError::Internal(
                "the connect thread ended without an answer".to_owned(),
            ))),
        }
    }

    fn connect_timeout(&self) -> Duration {
        self.config
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT)
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "cannot connect to the store database: no answer within {} s",
            self.connect_timeout().as_secs_f32()
        ))
    }

    fn connect_now(&self) -> Result<Client, StoreError> {
        let connected = match &self.tls {
            None => self.config.connect(::postgres::NoTls),
            Some(tls) => self.config.connect(tls.clone()),
        };
        connected.map_err(|e| StoreError::Unavailable(self.connect_error(&e)))
    }

    /// Why connecting failed, without the password.
    fn connect_error(&self, e: &::postgres::Error) -> String {
        let text = match find_rustls_error(e) {
            Some(cause) => handshake_failure(
                cause,
                &HandshakeContext {
                    mode: self.mode,
                    host: &self.host,
                    ca_given: self.ca_given,
                    client_cert: self.client_cert,
                    server_client_ca: "ssl_ca_file",
                },
            ),
            None => chain_text(e),
        };
        let password = self
            .config
            .get_password()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let secrets: Vec<&str> = [password.as_ref()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        format!(
            "cannot connect to the store database: {}",
            crate::datasource::scrub(&text, &secrets)
        )
    }
}

/// Whether `e` means the connection is gone (closed, reset, terminated by an administrator or
/// a server shutting down): the connection is then dropped and the next call opens another.
fn connection_lost(e: &::postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return code.code().starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW;
    }
    let mut next = std::error::Error::source(e);
    while let Some(cause) = next {
        if cause.is::<std::io::Error>() {
            return true;
        }
        next = cause.source();
    }
    false
}

/// The store's error for a PostgreSQL one; a unique violation reads as SQLite's does.
fn store_error(e: &::postgres::Error) -> StoreError {
    if connection_lost(e) {
        return StoreError::Unavailable(format!("the store connection was lost: {e}"));
    }
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(sql::DUPLICATE.into()),
        Some(c) if c.code().starts_with("23") => StoreError::Conflict(sql::CONFLICTS.into()),
        Some(c) if *c == SqlState::QUERY_CANCELED => StoreError::Unavailable(format!(
            "the store did not answer within {} s",
            STATEMENT_TIMEOUT.as_secs()
        )),
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::LOCK_NOT_AVAILABLE =>
        {
            StoreError::Unavailable("the store is busy".to_owned())
        }
        _ => StoreError::Internal(chain_text(e)),
    }
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::Text(s) => s.to_sql(ty, out),
            Param::Bytes(b) => b.to_sql(ty, out),
            Param::Int(n) => match *ty {
                Type::BOOL => (n != 0).to_sql(ty, out),
                Type::INT2 => i16::try_from(n)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(n)?.to_sql(ty, out),
                _ => n.to_sql(ty, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A cell of a row PostgreSQL sent, by the column's type.
fn cell(row: &::postgres::Row, i: usize) -> Result<Cell, ::postgres::Error> {
    let ty = row.columns()[i].type_();
    let int = |n: Option<i64>| n.map_or(Cell::Null, Cell::Int);
    Ok(match *ty {
        Type::INT8 => int(row.try_get(i)?),
        Type::INT4 => int(row.try_get::<_, Option<i32>>(i)?.map(i64::from)),
        Type::INT2 => int(row.try_get::<_, Option<i16>>(i)?.map(i64::from)),
        Type::BOOL => int(row.try_get::<_, Option<bool>>(i)?.map(i64::from)),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)?
            .map_or(Cell::Null, Cell::Bytes),
        _ => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Cell::Null, Cell::Text),
    })
}

/// A connection or transaction as the shared statements see it: statements prepared once per
/// connection, and a lost connection noted so that it is replaced.
struct Pg<'a, C: GenericClient> {
    client: &'a mut C,
    statements: &'a mut HashMap<String, Statement>,
    lost: &'a mut bool,
}

impl<C: GenericClient> Pg<'_, C> {
    fn fail(&mut self, e: ::postgres::Error) -> StoreError {
        if connection_lost(&e) {
            *self.lost = true;
        }
        store_error(&e)
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let numbered = numbered(sql);
        let st = self.client.prepare(&numbered).map_err(|e| self.fail(e))?;
        self.statements.insert(sql.to_owned(), st.clone());
        Ok(st)
    }
}

/// `?N` placeholders as PostgreSQL's `$N`.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

fn dyn_params<'a>(params: &'a [Param<'_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl<C: GenericClient> Sql for Pg<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let st = self.statement(sql)?;
        let params = dyn_params(params);
        self.client.execute(&st, &params).map_err(|e| self.fail(e))
    }

    fn rows(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let st = self.statement(sql)?;
        let params = dyn_params(params);
        let rows = self.client.query(&st, &params).map_err(|e| self.fail(e))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| cell(r, i))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Row)
            })
            .collect::<Result<_, _>>()
            .map_err(|e| self.fail(e))
    }
}

/// One open connection and what was prepared on it.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
    lost: bool,
}

pub(super) struct Backend {
    settings: Settings,
    conn: Option<Conn>,
    /// After a connect that failed slowly (a timeout: the server unreachable rather than
    /// refusing): until when calls answer unavailable at once instead of waiting again, and why.
    down: Option<(Instant, String)>,
    /// A connect still running after the timeout: the next call waits for it rather than
    /// start another (so a server that never answers holds one thread, not one per call).
    pending: Option<(Attempt, Instant)>,
}

/// A failed connect that took this long is not tried again for [`RETRY_SLOW_CONNECT_AFTER`].
const SLOW_CONNECT: Duration = Duration::from_secs(1);
const RETRY_SLOW_CONNECT_AFTER: Duration = Duration::from_secs(2);

impl Backend {
    /// Connects, and applies the migrations this database lacks.
    pub(super) fn open(url: &str) -> Result<Backend, StoreError> {
        let settings = Settings::parse(url)?;
        let mut client = settings.connect()?;
        migrate(&mut client)?;
        Ok(Backend {
            settings,
            conn: Some(Conn {
                client,
                statements: HashMap::new(),
                lost: false,
            }),
            down: None,
            pending: None,
        })
    }

    /// The open connection, or a new one when there is none or it was lost.
    fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.lost || c.client.is_closed())
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            if let Some((until, why)) = &self.down
                && Instant::now() < *until
            {
                return Err(StoreError::Unavailable(why.clone()));
            }
            let started = Instant::now();
            // A connect that has not answered for three timeouts is given up (its thread ends
            // when its socket does) and another one started.
            let (attempt, since) = match self.pending.take() {
                Some((a, since)) if since.elapsed() < 3 * self.settings.connect_timeout() => {
                    (a, since)
                }
                _ => (self.settings.start(), Instant::now()),
            };
            let result = match self.settings.wait(attempt) {
                Ok(result) => result,
                Err(still_running) => {
                    self.pending = Some((still_running, since));
                    Err(self.settings.timed_out())
                }
            };
            let client = result.inspect_err(|e| {
                if started.elapsed() >= SLOW_CONNECT {
                    let why = match e {
                        StoreError::Unavailable(m) => m.clone(),
                        other => other.to_string(),
                    };
                    self.down = Some((Instant::now() + RETRY_SLOW_CONNECT_AFTER, why));
                }
            })?;
            self.down = None;
            self.conn = Some(Conn {
                client,
                statements: HashMap::new(),
                lost: false,
            });
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Runs `f` on the connection (in a read-only snapshot when `snapshot`); when the
    /// connection turns out to be lost, once more on a new one (reads only: nothing is
    /// repeated that may have been committed).
    fn read<T>(
        &mut self,
        snapshot: bool,
        mut f: impl FnMut(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut attempt = |this: &mut Self| -> Result<T, StoreError> {
            let conn = this.conn()?;
            let Conn {
                client,
                statements,
                lost,
            } = conn;
            if !snapshot {
                return f(&mut Pg {
                    client,
                    statements,
                    lost,
                });
            }
            let tx = client
                .build_transaction()
                .isolation_level(::postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start();
            let mut tx = match tx {
                Ok(tx) => tx,
                Err(e) => {
                    *lost = connection_lost(&e);
                    return Err(store_error(&e));
                }
            };
            let out = f(&mut Pg {
                client: &mut tx,
                statements,
                lost: &mut *lost,
            })?;
            tx.commit().map_err(|e| {
                *lost = connection_lost(&e);
                store_error(&e)
            })?;
            Ok(out)
        };
        match attempt(self) {
            Err(StoreError::Unavailable(_)) if self.conn.as_ref().is_some_and(|c| c.lost) => {
                attempt(self)
            }
            other => other,
        }
    }
}

/// Applies the migrations this database lacks, in one transaction under an advisory lock.
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let fail = |e: ::postgres::Error| match store_error(&e) {
        StoreError::Internal(m) => StoreError::Internal(format!("migrations: {m}")),
        other => other,
    };
    let mut tx = client.transaction().map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(fail)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .map_err(fail)?;
    let done: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .and_then(|r| r.try_get(0))
        .map_err(fail)?;
    for (i, m) in migrations().into_iter().enumerate() {
        let version = i as i64 + 1;
        if version <= done {
            continue;
        }
        tx.batch_execute(&m).map_err(fail)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .map_err(fail)?;
    }
    tx.commit().map_err(fail)
}

impl super::Backend for Backend {
    fn version(&mut self) -> Result<i64, StoreError> {
        self.read(false, sql::version)
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        self.version().map(drop)
    }

    fn check_key(&mut self, key: &MasterKey) -> Result<(), StoreError> {
        self.read(false, |db| {
            sql::check_master_key(db, key, Some(KEY_CHECK_TABLE))
        })
    }

    fn audit_query(
        &mut self,
        filter: &crate::audit::AuditFilter,
    ) -> Result<crate::audit::AuditPage, crate::audit::AuditError> {
        let conn = self.conn().map_err(|_| crate::audit::AuditError::Closed)?;
        let page = crate::audit::query_pg(&mut conn.client, filter);
        if let Err(crate::audit::AuditError::Postgres(e)) = &page {
            conn.lost = connection_lost(e);
        }
        page
    }

    fn apply(
        &mut self,
        company: &CompanyId,
        changes: &[Change],
        audit: &[AuditRecord],
    ) -> Result<i64, StoreError> {
        let Conn {
            client,
            statements,
            lost,
        } = self.conn()?;
        let mut tx = match client.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                *lost = connection_lost(&e);
                return Err(store_error(&e));
            }
        };
        let mut db = Pg {
            client: &mut tx,
            statements,
            lost: &mut *lost,
        };
        // The version row is the replicas' write lock: taken first, held to the commit.
        let before = db
            .one(&format!("{} FOR UPDATE", sql::VERSION_SQL), &[])?
            .int(0)?;
        sql::apply_changes(&mut db, company, changes)?;
        for rec in audit {
            if let Err(e) = crate::audit::insert_pg(db.client, rec) {
                return Err(db.fail(e));
            }
        }
        sql::check_invariants(&mut db, company)?;
        db.exec(sql::BUMP_SQL, &[])?;
        let after = (before + 1).to_string();
        db.exec(
            "SELECT pg_notify(?1, ?2)",
            sql::p![CHANGES_CHANNEL, after.as_str()],
        )?;
        if let Err(e) = tx.commit() {
            *lost = connection_lost(&e);
            return Err(store_error(&e));
        }
        Ok(before)
    }

    fn load_all(&mut self, key: &MasterKey) -> Result<View, StoreError> {
        self.read(true, |db| sql::load_all(db, key))
    }

    fn load_company(&mut self, id: &CompanyId, key: &MasterKey) -> Result<CompanyView, StoreError> {
        self.read(true, |db| sql::load_company(db, id, key))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{PgDb, company, key};
    use super::*;
    use ::postgres::fallible_iterator::FallibleIterator;

    #[test]
    fn two_replicas_starting_at_once_on_an_empty_database_migrate_it_once() {
        let db = PgDb::create();
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let opened: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        Store::open_postgres(&db.url, key())
                    })
                })
                .collect();
            for o in opened {
                o.join().unwrap().expect("both replicas open the store");
            }
        });
        let rows: Vec<i64> = db
            .client()
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let all: Vec<i64> = (1..=migrations().len() as i64).collect();
        assert_eq!(rows, all, "each migration applied once");
        let version: i64 = db.client().query_one(sql::VERSION_SQL, &[]).unwrap().get(0);
        assert_eq!(version, 0);
    }

    #[test]
    fn the_tables_and_columns_are_sqlites() {
        let dir = tempfile::tempdir().unwrap();
        let lite = rusqlite::Connection::open(dir.path().join("s.db")).unwrap();
        drop(super::super::sqlite::Backend::open(&dir.path().join("s.db")).unwrap());
        let db = PgDb::create();
        drop(Store::open_postgres(&db.url, key()).unwrap());
        let pg_tables: Vec<String> = db
            .client()
            .query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = 'public' ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let ours = ["key_check", "schema_migrations"];
        for table in pg_tables.iter().filter(|t| !ours.contains(&t.as_str())) {
            let mut pg: Vec<String> = db
                .client()
                .query(
                    "SELECT column_name::text FROM information_schema.columns
                     WHERE table_schema = 'public' AND table_name = $1",
                    &[table],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut sqlite: Vec<String> = lite
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            pg.sort();
            sqlite.sort();
            assert_eq!(pg, sqlite, "{table}");
        }
        let control = [
            "app_datasources",
            "apps",
            "companies",
            "datasources",
            "group_members",
            "groups",
            "integrations",
            "members",
            "meta",
            "tokens",
            "users",
        ];
        for t in control {
            assert!(pg_tables.iter().any(|p| p == t), "{t}");
        }
        let ddl = control_plane_sql();
        for sqlite_only in ["INTEGER", "BLOB", "NOCASE"] {
            assert!(!ddl.contains(sqlite_only), "{sqlite_only}");
        }
    }

    #[test]
    fn a_committed_change_is_notified_with_its_version() {
        let db = PgDb::create();
        let store = Store::open_postgres(&db.url, key()).unwrap();
        let mut listener = connect(&db.url).unwrap();
        listener
            .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
            .unwrap();
        company(&store, "acme");
        let refused = store.apply(
            &CompanyId::generate(),
            vec![Change::RevokeToken {
                token_id: TokenId::generate(),
            }],
            vec![],
        );
        assert!(matches!(refused, Err(StoreError::NotFound)), "{refused:?}");
        company(&store, "globex");
        let mut notes = listener.notifications();
        let mut got = Vec::new();
        let mut it = notes.timeout_iter(Duration::from_secs(5));
        while got.len() < 2 {
            let n = it.next().unwrap().expect("a notification within 5 s");
            assert_eq!(n.channel(), CHANGES_CHANNEL);
            got.push(n.payload().to_owned());
        }
        assert_eq!(got, ["1", "2"], "a rolled-back change is not announced");
    }

    #[test]
    fn a_store_with_no_secret_yet_still_refuses_another_key() {
        let db = PgDb::create();
        drop(Store::open_postgres(&db.url, key()).unwrap());
        let other = MasterKey::from_bytes(&[9u8; 32]).unwrap();
        let err = Store::open_postgres(&db.url, other).unwrap_err();
        assert!(err.to_string().contains(sql::WRONG_KEY), "{err}");
        Store::open_postgres(&db.url, key()).expect("the store's own key opens it");
    }

    #[test]
    fn a_terminated_connection_is_replaced_on_the_next_call() {
        let db = PgDb::create();
        let store = Store::open_postgres(&db.url, key()).unwrap();
        assert!(db.kill_connections() >= 1);
        match store.ping() {
            Ok(()) | Err(StoreError::Unavailable(_)) => {}
            Err(other) => panic!("{other:?}"),
        }
        store.ping().expect("a new connection");
        let (cid, _) = company(&store, "acme");
        assert!(store.view().company(&cid).is_some());

        // Between the kill and the next write: the write itself may say unavailable, never
        // anything else, and the one after it goes through.
        db.kill_connections();
        match store.apply(&cid, vec![], vec![]) {
            Ok(_) | Err(StoreError::Unavailable(_)) => {}
            Err(other) => panic!("{other:?}"),
        }
        store.apply(&cid, vec![], vec![]).expect("written again");
    }

    #[test]
    fn while_the_database_refuses_connections_every_call_is_promptly_unavailable() {
        let db = PgDb::create();
        let store = Store::open_postgres(&db.url, key()).unwrap();
        let (cid, _) = company(&store, "acme");
        let mut admin = super::super::testutil::pg_admin();
        let allow = |admin: &mut Client, on: bool| {
            admin
                .batch_execute(&format!(
                    "ALTER DATABASE {} ALLOW_CONNECTIONS {on}",
                    db.name
                ))
                .unwrap()
        };
        allow(&mut admin, false);
        db.kill_connections();
        for _ in 0..3 {
            let started = Instant::now();
            let ping = store.ping();
            assert!(matches!(ping, Err(StoreError::Unavailable(_))), "{ping:?}");
            let write = store.apply(&cid, vec![], vec![]);
            assert!(
                matches!(write, Err(StoreError::Unavailable(_))),
                "{write:?}"
            );
            let refresh = store.refresh_if_changed();
            assert!(
                matches!(refresh, Err(StoreError::Unavailable(_))),
                "{refresh:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(2));
        }
        allow(&mut admin, true);
        store.ping().expect("back");
        store.apply(&cid, vec![], vec![]).expect("written again");
    }

    /// A TCP relay to the test server that can turn silent: it then accepts connections and
    /// never answers, as a hung server or proxy does.
    struct Relay {
        port: u16,
        silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl Relay {
        fn start() -> Relay {
            use std::net::{TcpListener, TcpStream};
            use std::sync::atomic::Ordering::SeqCst;
            let admin: ::postgres::Config = super::super::testutil::pg_admin_url().parse().unwrap();
            let host = match admin.get_hosts().first() {
                Some(::postgres::config::Host::Tcp(h)) => h.clone(),
                _ => "127.0.0.1".to_owned(),
            };
            let target = (host, admin.get_ports().first().copied().unwrap_or(5432));
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let silent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let quiet = silent.clone();
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for down in listener.incoming().flatten() {
                    if quiet.load(SeqCst) {
                        held.push(down);
                        continue;
                    }
                    let Ok(up) = TcpStream::connect((target.0.as_str(), target.1)) else {
                        continue;
                    };
                    for (mut from, mut to) in [
                        (up.try_clone().unwrap(), down.try_clone().unwrap()),
                        (down, up),
                    ] {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
            });
            Relay { port, silent }
        }

        fn set_silent(&self, on: bool) {
            self.silent.store(on, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_server_that_never_answers_holds_no_call_longer_than_the_connect_timeout() {
        let db = PgDb::create();
        let relay = Relay::start();
        let admin: ::postgres::Config = super::super::testutil::pg_admin_url().parse().unwrap();
        let url = format!(
            "postgres://{}@127.0.0.1:{}/{}?sslmode=disable&connect_timeout=1",
            admin.get_user().unwrap_or("postgres"),
            relay.port,
            db.name
        );
        let store = Store::open_postgres(&url, key()).unwrap();
        let (cid, _) = company(&store, "acme");
        relay.set_silent(true);
        db.kill_connections();
        for _ in 0..5 {
            let started = Instant::now();
            let ping = store.ping();
            assert!(matches!(ping, Err(StoreError::Unavailable(_))), "{ping:?}");
            assert!(started.elapsed() < Duration::from_millis(2500));
        }
        relay.set_silent(false);
        let deadline = Instant::now() + Duration::from_secs(15);
        while store.ping().is_err() {
            assert!(
                Instant::now() < deadline,
                "not back after the server answers again"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        store.apply(&cid, vec![], vec![]).expect("written again");
    }

    #[test]
    fn the_password_never_appears_in_an_error() {
        let secret = "hunter2-pw-xyz";
        // Nothing listens on port 1: refused at once.
        let err = connect(&format!(
            "postgres://postgres:{secret}@127.0.0.1:1/x?connect_timeout=2"
        ))
        .err()
        .expect("nothing listens there");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(!err.to_string().contains(secret), "{err}");
        assert!(!format!("{err:?}").contains(secret), "{err:?}");
        let settings = Settings::parse(&format!("postgres://u:{secret}@h/d")).unwrap();
        assert!(!format!("{:?}", settings.config).contains(secret));
        // A URL refused as malformed does not echo it either.
        for url in [
            format!("postgres://u:{secret}@h/d?sslmode=sometimes"),
            format!("postgres://u:{secret}@h/d?nonsense=1"),
            format!("postgres://u:{secret}@h:notaport/d"),
        ] {
            let err = Settings::parse(&url).err().expect("refused");
            assert!(!err.to_string().contains(secret), "{err}");
        }
    }

    #[test]
    fn sslmode_follows_libpq() {
        let url = |query: &str| {
            let admin = super::super::testutil::pg_admin_url();
            let base = admin
                .split_once('?')
                .map_or(admin.as_str(), |(b, _)| b)
                .to_owned();
            format!("{base}?{query}")
        };
        let tls_of = |query: &str| -> Result<bool, StoreError> {
            let mut c = connect(&url(query))?;
            Ok(c.query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0))
        };
        let server_ssl: String = super::super::testutil::pg_admin()
            .query_one("SHOW ssl", &[])
            .unwrap()
            .get(0);
        let on = server_ssl == "on";
        assert!(!tls_of("sslmode=disable").unwrap());
        assert_eq!(tls_of("").unwrap(), on, "the default is prefer");
        assert_eq!(tls_of("sslmode=prefer").unwrap(), on);
        match tls_of("sslmode=require") {
            Ok(tls) => assert!(on && tls),
            Err(e) => assert!(!on, "{e}"),
        }
        if on {
            // The local server's certificate is self-signed: a verifying mode refuses it,
            // saying why.
            let err = tls_of("sslmode=verify-full").unwrap_err();
            assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
            assert!(err.to_string().contains("certificate"), "{err}");
        }
        let err = tls_of("sslmode=verify-ca&sslrootcert=/nonexistent/root.crt").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/root.crt"), "{err}");
        let err = Settings::parse(&url("sslmode=allow"))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("sslmode"), "{err}");
    }

    #[test]
    fn a_client_certificate_comes_from_sslcert_and_sslkey() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let pair = || {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec!["sluice".to_owned()]).unwrap();
            (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
        };
        let (cert, key) = pair();
        let (_, other_key) = pair();
        let (cert, key, other_key) = (
            write("c.pem", cert),
            write("k.pem", key),
            write("o.pem", other_key),
        );
        let admin = super::super::testutil::pg_admin_url();
        let base = admin.split_once('?').map_or(admin.as_str(), |(b, _)| b);
        let url = |query: String| format!("{base}?{query}");

        let s =
            Settings::parse(&url(format!("sslmode=require&sslcert={cert}&sslkey={key}"))).unwrap();
        assert!(s.client_cert && s.tls.is_some());
        let err = Settings::parse(&url(format!("sslmode=require&sslcert={cert}")))
            .err()
            .expect("half an identity");
        assert!(err.to_string().contains("sslkey"), "{err}");
        let err = Settings::parse(&url(format!(
            "sslmode=require&sslcert={cert}&sslkey={other_key}"
        )))
        .err()
        .expect("a key of another certificate");
        assert!(err.to_string().contains("sslkey: does not belong"), "{err}");
        let err = Settings::parse(&url(format!("sslmode=verify-ca&sslrootcert={key}")))
            .err()
            .expect("a key is no CA bundle");
        assert!(err.to_string().contains("sslrootcert"), "{err}");
        assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");

        // A server that asks for no client certificate accepts the connection all the same.
        let on: String = super::super::testutil::pg_admin()
            .query_one("SHOW ssl", &[])
            .unwrap()
            .get(0);
        if on == "on" {
            let mut c =
                connect(&url(format!("sslmode=require&sslcert={cert}&sslkey={key}"))).unwrap();
            let tls: bool = c
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .unwrap()
                .get(0);
            assert!(tls);
        }
    }

    #[test]
    fn connect_bounds_its_wait_and_every_statement() {
        let s = Settings::parse("postgres://u@h/d").unwrap();
        assert_eq!(s.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(
            s.config.get_options(),
            Some("-c statement_timeout=30000"),
            "statement_timeout on the session"
        );
        let s = Settings::parse("postgres://u@h/d?connect_timeout=2&options=-c%20x%3Dy").unwrap();
        assert_eq!(
            s.config.get_connect_timeout(),
            Some(&Duration::from_secs(2))
        );
        assert_eq!(
            s.config.get_options(),
            Some("-c statement_timeout=30000 -c x=y")
        );
        let db = PgDb::create();
        let mut c = connect(&db.url).unwrap();
        let t: String = c.query_one("SHOW statement_timeout", &[]).unwrap().get(0);
        assert_eq!(t, "30s");
    }
}
