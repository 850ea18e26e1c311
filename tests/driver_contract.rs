//! The driver contract (`src/datasource/driver.rs`): each behaviour is written once, as a function
//! generic over a [`Backend`], and run against PostgreSQL, MySQL/MariaDB and SQLite through the
//! public `driver::open`. The tests are named `<behaviour>::<driver>`, so a failure names both.
//!
//! A backend brings what differs between the databases: a throwaway database holding the same
//! small fixture, its `DatasourceSpec`, the dialect's SQL for the few statements that differ, how
//! to ask the server whether the service account's statement still runs, and settings under
//! which the datasource must be refused. Everything else (what is asserted, and how) is shared.
//!
//! Real servers only: PostgreSQL and MariaDB are reached as `tests/support/db.rs` says, and a
//! server that is not running fails the test with the command that starts it.
mod support;

use sluice::datasource::tls::TlsSettings;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use sluice::datasource::driver::{self, Driver};
use sluice::datasource::{
    Connection, DatasourceSpec, ExecError, Execute, Execution, PoolStats, RegistrySettings,
    RowStream, Secret,
};
use sluice::model::{DatasourceId, DatasourceKind};
use support::db::{MysqlTestDb, PgTestDb, mysql_admin_url, pg_admin_url};

// ---------------------------------------------------------------------------------------------
// What differs between the databases

/// One database the contract runs against. [`Backend::create`] makes a throwaway database (dropped
/// with the value) holding the contract's fixture:
/// - `t (id integer primary key, v varchar(10))`, empty, which the service account may write;
/// - `people (id integer not null primary key, name varchar(40) null)` and the view
///   `names AS SELECT name FROM people`, which it may read;
/// - where the database has accounts, `hidden`, on which it has no privilege.
trait Backend: Sized {
    const NAME: &'static str;
    /// The spec's password, which no message may contain.
    const SECRET: Option<&'static str>;
    /// Whether [`Backend::series`] yields its rows in order.
    const SERIES_ORDERED: bool;
    /// How soon a statement that was stopped no longer shows as running.
    const STOPS_WITHIN: Duration;
    /// The type names `schema` reports for `people.id` (one of) and `people.name`.
    const PEOPLE_TYPES: (&'static [&'static str], &'static str);

    async fn create() -> Self;
    fn spec(&self, pool_max_size: usize) -> DatasourceSpec;
    /// Settings under which `spec` is allowed.
    fn settings(&self) -> RegistrySettings;
    /// Settings under which `spec` must be refused (its address or path is not allowed).
    fn refused_settings(&self) -> RegistrySettings;
    /// The schema the fixture's tables are listed under.
    fn schema_name(&self) -> String;
    /// A fixture table's name as the SQL policy renders it.
    fn table(&self, name: &str) -> String;
    /// The `search_path` an `Execute` carries.
    fn search_path() -> Option<String>;
    /// The `i`th (1-based) positional placeholder.
    fn placeholder(i: usize) -> String;
    /// One integer column holding 1 to `n` (a power of ten), produced as it is read.
    fn series(n: u64) -> String;
    /// Rows without end (more than anyone reads), produced as they are read.
    fn endless() -> String;
    /// One row after a computation that runs until it is stopped.
    fn slow() -> String;
    /// Eight rows at once (each sent as soon as it is made), then a computation that runs until
    /// it is stopped.
    fn rows_then_slow() -> String;
    /// What the service account runs on the server right now (empty: nothing).
    async fn running(&self, driver: &dyn Driver) -> Vec<String>;
    /// The first column of the first row of `sql`, run as the admin in the test database.
    async fn admin_count(&self, sql: &str) -> i64;
    /// The database's own refusal of a write in a read-only execution.
    fn assert_read_only_refusal(err: &ExecError);
    fn assert_server_version(version: &str);
    /// After a statement stopped: anything the driver must not have needed to stop it.
    fn assert_stopped_by_itself(&self) {}
}

fn base_settings() -> RegistrySettings {
    RegistrySettings {
        pool_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(5),
        ..RegistrySettings::default()
    }
}

fn loopback() -> Vec<ipnet::IpNet> {
    vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
}

// PostgreSQL ----------------------------------------------------------------------------------

const PG_PASSWORD: &str = "Contract_pw_4711";

struct Postgres {
    db: PgTestDb,
    role: String,
    admin: tokio_postgres::Client,
}

impl Backend for Postgres {
    const NAME: &'static str = "PostgreSQL";
    const SECRET: Option<&'static str> = Some(PG_PASSWORD);
    const SERIES_ORDERED: bool = true;
    const STOPS_WITHIN: Duration = Duration::from_secs(5);
    const PEOPLE_TYPES: (&'static [&'static str], &'static str) =
        (&["integer"], "character varying(40)");

    async fn create() -> Self {
        let db = PgTestDb::create().await;
        let role = db.create_role("sluice_contract", PG_PASSWORD).await;
        let admin = db.admin_client().await;
        admin
            .batch_execute(&format!(
                "CREATE TABLE t (id int PRIMARY KEY, v varchar(10));
                 CREATE TABLE people (id int NOT NULL PRIMARY KEY, name varchar(40));
                 CREATE VIEW names AS SELECT name FROM people;
                 CREATE TABLE hidden (secret text);
                 GRANT SELECT, INSERT, UPDATE, DELETE ON t TO {role};
                 GRANT SELECT ON people, names TO {role};"
            ))
            .await
            .expect("the fixture");
        Postgres { db, role, admin }
    }

    fn spec(&self, pool_max_size: usize) -> DatasourceSpec {
        let cfg: tokio_postgres::Config = pg_admin_url().parse().expect("admin url");
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        DatasourceSpec {
            id: DatasourceId::from("ds_contract"),
            kind: DatasourceKind::Postgres,
            connection: Connection::Network {
                host,
                port: cfg.get_ports().first().copied().unwrap_or(5432),
                database: self.db.name.clone(),
                user: self.role.clone(),
                password: Secret::new(PG_PASSWORD),
                options: BTreeMap::new(),
                tls: TlsSettings::disabled(),
            },
            pool_max_size,
            generation: 1,
        }
    }

    fn settings(&self) -> RegistrySettings {
        RegistrySettings {
            allow_networks: loopback(),
            ..base_settings()
        }
    }

    fn refused_settings(&self) -> RegistrySettings {
        base_settings()
    }

    fn schema_name(&self) -> String {
        "public".into()
    }

    fn table(&self, name: &str) -> String {
        format!("public.{name}")
    }

    fn search_path() -> Option<String> {
        Some("public".into())
    }

    fn placeholder(i: usize) -> String {
        format!("${i}")
    }

    fn series(n: u64) -> String {
        // In the select list the set-returning function streams; in FROM it is materialized.
        format!("SELECT generate_series(1, {n}) AS n")
    }

    fn endless() -> String {
        Self::series(2_000_000_000)
    }

    fn slow() -> String {
        "SELECT 1 FROM pg_sleep(30)".into()
    }

    fn rows_then_slow() -> String {
        // Each row is larger than the server's 8 KiB send buffer, so it leaves when it is made.
        "SELECT g, repeat('x', 20000) AS pad, (CASE WHEN g > 8 THEN pg_sleep(30) END) IS NULL \
         FROM generate_series(1, 9) g"
            .into()
    }

    async fn running(&self, _: &dyn Driver) -> Vec<String> {
        // Not idle: a statement running, or a transaction (a suspended portal) left open.
        self.admin
            .query(
                "SELECT coalesce(state, '?') || ': ' || coalesce(query, '') FROM pg_stat_activity \
                 WHERE usename = $1 AND state IS DISTINCT FROM 'idle'",
                &[&self.role],
            )
            .await
            .expect("read pg_stat_activity")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    async fn admin_count(&self, sql: &str) -> i64 {
        self.admin.query_one(sql, &[]).await.expect(sql).get(0)
    }

    fn assert_read_only_refusal(err: &ExecError) {
        assert!(
            matches!(err, ExecError::QueryFailed { sqlstate: Some(s), .. } if s == "25006"),
            "{err:?}"
        );
    }

    fn assert_server_version(version: &str) {
        assert!(version.starts_with("PostgreSQL"), "{version}");
    }
}

// MySQL / MariaDB -----------------------------------------------------------------------------

const MYSQL_PASSWORD: &str = "Contract_pw_4711_zq";

struct Mysql {
    db: MysqlTestDb,
    user: String,
}

/// `SELECT 1 + …` over `k` cross-joined digit tables: 1 to 10^k, in no particular order
/// (portable: no recursion limits; the join streams).
fn mysql_series(k: u32) -> String {
    const DIGITS: &str = "(SELECT 0 n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
         UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
         UNION ALL SELECT 8 UNION ALL SELECT 9)";
    let terms: Vec<String> = (0..k).map(|i| format!("{}*d{i}.n", 10u64.pow(i))).collect();
    let tables: Vec<String> = (0..k).map(|i| format!("{DIGITS} d{i}")).collect();
    format!(
        "SELECT 1 + {} AS n FROM {}",
        terms.join(" + "),
        tables.join(" CROSS JOIN ")
    )
}

impl Backend for Mysql {
    const NAME: &'static str = "MySQL";
    const SECRET: Option<&'static str> = Some(MYSQL_PASSWORD);
    const SERIES_ORDERED: bool = false;
    const STOPS_WITHIN: Duration = Duration::from_secs(5);
    // MariaDB and MySQL before 8.0.19 show the display width; later MySQL does not.
    const PEOPLE_TYPES: (&'static [&'static str], &'static str) =
        (&["int(11)", "int"], "varchar(40)");

    async fn create() -> Self {
        let db = MysqlTestDb::create().await;
        let user = db.create_user("contract", MYSQL_PASSWORD).await;
        let mut admin = db.admin_conn().await;
        let d = &db.name;
        let mut statements = vec![
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))".to_owned(),
            "CREATE TABLE people (id INT NOT NULL PRIMARY KEY, name VARCHAR(40) NULL)".to_owned(),
            "CREATE VIEW names AS SELECT name FROM people".to_owned(),
            "CREATE TABLE hidden (secret TEXT)".to_owned(),
        ];
        for host in ["%", "localhost"] {
            statements.push(format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON {d}.t TO '{user}'@'{host}'"
            ));
            for table in ["people", "names"] {
                statements.push(format!("GRANT SELECT ON {d}.{table} TO '{user}'@'{host}'"));
            }
        }
        for s in &statements {
            admin.query_drop(s).await.expect(s);
        }
        admin.disconnect().await.unwrap();
        Mysql { db, user }
    }

    fn spec(&self, pool_max_size: usize) -> DatasourceSpec {
        let opts = mysql_async::Opts::from_url(&mysql_admin_url()).expect("admin url");
        DatasourceSpec {
            id: DatasourceId::from("ds_contract"),
            kind: DatasourceKind::Mysql,
            connection: Connection::Network {
                host: opts.ip_or_hostname().to_string(),
                port: opts.tcp_port(),
                database: self.db.name.clone(),
                user: self.user.clone(),
                password: Secret::new(MYSQL_PASSWORD),
                options: BTreeMap::new(),
                tls: TlsSettings::disabled(),
            },
            pool_max_size,
            generation: 1,
        }
    }

    fn settings(&self) -> RegistrySettings {
        RegistrySettings {
            allow_networks: loopback(),
            ..base_settings()
        }
    }

    fn refused_settings(&self) -> RegistrySettings {
        base_settings()
    }

    fn schema_name(&self) -> String {
        self.db.name.clone()
    }

    fn table(&self, name: &str) -> String {
        // The driver's connections have no default database: the policy qualifies every table.
        format!("{}.{name}", self.db.name)
    }

    fn search_path() -> Option<String> {
        None
    }

    fn placeholder(_: usize) -> String {
        "?".into()
    }

    fn series(n: u64) -> String {
        let k = n.ilog10();
        assert_eq!(10u64.pow(k), n, "a power of ten");
        mysql_series(k)
    }

    fn endless() -> String {
        mysql_series(9)
    }

    fn slow() -> String {
        "SELECT BENCHMARK(100000000000, SHA2('x', 256))".into()
    }

    fn rows_then_slow() -> String {
        // Each row is larger than the server's 16 KiB network buffer, so it leaves when made.
        "SELECT seq, REPEAT('x', 20000) AS pad, \
         IF(seq > 8, BENCHMARK(100000000000, SHA2('x', 256)), 0) AS spin \
         FROM (SELECT 1 seq UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
               UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 \
               UNION ALL SELECT 9) t ORDER BY seq"
            .into()
    }

    async fn running(&self, _: &dyn Driver) -> Vec<String> {
        // Anything but idle: a statement KILL QUERY could not stop yet shows as `Killed`.
        let mut admin = self.db.admin_conn().await;
        let rows: Vec<String> = admin
            .exec(
                "SELECT CONCAT(COMMAND, ': ', COALESCE(INFO, '')) \
                 FROM information_schema.PROCESSLIST WHERE USER = ? AND COMMAND <> 'Sleep'",
                (self.user.clone(),),
            )
            .await
            .expect("read the process list");
        admin.disconnect().await.unwrap();
        rows
    }

    async fn admin_count(&self, sql: &str) -> i64 {
        let mut admin = self.db.admin_conn().await;
        let n: Option<i64> = admin.query_first(sql).await.expect(sql);
        admin.disconnect().await.unwrap();
        n.expect("a row")
    }

    fn assert_read_only_refusal(err: &ExecError) {
        assert!(
            matches!(err, ExecError::QueryFailed { sqlstate: Some(s), .. } if s == "25006"),
            "{err:?}"
        );
    }

    fn assert_server_version(version: &str) {
        assert!(
            version.chars().next().is_some_and(|c| c.is_ascii_digit()),
            "{version}"
        );
    }
}

// SQLite --------------------------------------------------------------------------------------

struct Sqlite {
    dir: tempfile::TempDir,
    path: PathBuf,
    /// An allowed root the file does not lie under.
    elsewhere: tempfile::TempDir,
}

/// Counts without end; SQLite looks at its interrupt between steps, so it stops when told.
const SQLITE_COUNT_FOREVER: &str =
    "(WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) FROM c)";

impl Backend for Sqlite {
    const NAME: &'static str = "SQLite";
    const SECRET: Option<&'static str> = None;
    const SERIES_ORDERED: bool = true;
    const STOPS_WITHIN: Duration = Duration::from_secs(1);
    const PEOPLE_TYPES: (&'static [&'static str], &'static str) = (&["INTEGER"], "VARCHAR(40)");

    async fn create() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.sqlite");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v VARCHAR(10));
             CREATE TABLE people (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(40));
             CREATE VIEW names AS SELECT name FROM people;",
        )
        .expect("the fixture");
        Sqlite {
            dir,
            path,
            elsewhere: tempfile::tempdir().unwrap(),
        }
    }

    fn spec(&self, pool_max_size: usize) -> DatasourceSpec {
        DatasourceSpec {
            id: DatasourceId::from("ds_contract"),
            kind: DatasourceKind::Sqlite,
            connection: Connection::Sqlite {
                path: self.path.clone(),
            },
            pool_max_size,
            generation: 1,
        }
    }

    fn settings(&self) -> RegistrySettings {
        RegistrySettings {
            sqlite_roots: vec![self.dir.path().to_path_buf()],
            ..base_settings()
        }
    }

    fn refused_settings(&self) -> RegistrySettings {
        RegistrySettings {
            sqlite_roots: vec![self.elsewhere.path().to_path_buf()],
            ..base_settings()
        }
    }

    fn schema_name(&self) -> String {
        "main".into()
    }

    fn table(&self, name: &str) -> String {
        name.into()
    }

    fn search_path() -> Option<String> {
        None
    }

    fn placeholder(_: usize) -> String {
        "?".into()
    }

    fn series(n: u64) -> String {
        format!(
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {n}) \
             SELECT n FROM c"
        )
    }

    fn endless() -> String {
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT n FROM c".into()
    }

    fn slow() -> String {
        format!("SELECT {SQLITE_COUNT_FOREVER}")
    }

    fn rows_then_slow() -> String {
        format!(
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 9) \
             SELECT n, CASE WHEN n <= 8 THEN 0 ELSE {SQLITE_COUNT_FOREVER} END FROM c"
        )
    }

    async fn running(&self, driver: &dyn Driver) -> Vec<String> {
        // In the gateway's process: a statement runs while its blocking thread holds its pool
        // slot (an abandoned one too, until its thread ends).
        match driver.stats().in_use {
            0 => Vec::new(),
            n => vec![format!("{n} connection(s) in use")],
        }
    }

    async fn admin_count(&self, sql: &str) -> i64 {
        rusqlite::Connection::open(&self.path)
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .expect(sql)
    }

    fn assert_read_only_refusal(err: &ExecError) {
        assert!(
            matches!(err, ExecError::QueryFailed { message, .. } if message.contains("readonly")),
            "{err:?}"
        );
    }

    fn assert_server_version(version: &str) {
        assert!(version.starts_with("SQLite 3."), "{version}");
    }

    fn assert_stopped_by_itself(&self) {
        // Every statement here stops at its interrupt: none may have been abandoned (left
        // running on its thread). Process-wide, and no test of this file abandons one.
        assert_eq!(
            sluice::datasource::sqlite::abandoned().total,
            0,
            "a statement ignored its interrupt and was abandoned"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

async fn open<B: Backend>(b: &B, pool_max_size: usize) -> Arc<dyn Driver> {
    open_with(b, pool_max_size, b.settings()).await
}

async fn open_with<B: Backend>(
    b: &B,
    pool_max_size: usize,
    settings: RegistrySettings,
) -> Arc<dyn Driver> {
    driver::open(&b.spec(pool_max_size), &settings)
        .await
        .unwrap_or_else(|e| panic!("{}: open: {e:?}", B::NAME))
}

fn query<B: Backend>(sql: &str) -> Execute {
    Execute {
        sql: sql.to_owned(),
        params: Vec::new(),
        is_query: true,
        read_only: true,
        max_rows: 10_000_000,
        timeout: Duration::from_secs(30),
        may_change_session: false,
        search_path: B::search_path(),
        paced_by_client: false,
    }
}

fn write<B: Backend>(sql: &str) -> Execute {
    Execute {
        is_query: false,
        read_only: false,
        ..query::<B>(sql)
    }
}

/// The row stream of a statement that must start.
async fn stream(d: &dyn Driver, req: Execute, ctx: &str) -> RowStream {
    match d.execute(req).await {
        Ok(Execution::Rows(s)) => s,
        Ok(Execution::Affected { .. }) => panic!("{ctx}: expected rows, got a count"),
        Err(e) => panic!("{ctx}: {e:?}"),
    }
}

/// The rows a stream still has, and the error it ended with. The error must be its last item.
async fn drain(s: &mut RowStream, pause: Option<Duration>) -> (Vec<Bytes>, Option<ExecError>) {
    let (mut rows, mut err) = (Vec::new(), None);
    while let Some(r) = s.next().await {
        assert!(err.is_none(), "the stream went on after its error {err:?}");
        match r {
            Ok(b) => rows.push(b),
            Err(e) => err = Some(e),
        }
        if let Some(p) = pause {
            tokio::time::sleep(p).await;
        }
    }
    (rows, err)
}

struct Rows {
    rows: Vec<Value>,
    truncated: bool,
}

/// A whole result, or the error it failed with (before the rows or among them).
async fn collect(d: &dyn Driver, req: Execute) -> Result<Rows, ExecError> {
    let mut s = match d.execute(req).await? {
        Execution::Rows(s) => s,
        Execution::Affected { .. } => panic!("expected rows, got a count"),
    };
    match drain(&mut s, None).await {
        (_, Some(e)) => Err(e),
        (rows, None) => Ok(Rows {
            rows: rows
                .iter()
                .map(|r| serde_json::from_slice(r).expect("each row is JSON"))
                .collect(),
            truncated: s.truncated(),
        }),
    }
}

async fn affected(d: &dyn Driver, req: Execute) -> u64 {
    let sql = req.sql.clone();
    match d.execute(req).await {
        Ok(Execution::Affected { rows_affected }) => rows_affected,
        Ok(Execution::Rows(_)) => panic!("{sql}: a write reports rows affected"),
        Err(e) => panic!("{sql}: {e:?}"),
    }
}

/// The error a statement ends with, whether before its rows or among them.
async fn error_of(d: &dyn Driver, req: Execute) -> Option<ExecError> {
    match d.execute(req).await {
        Err(e) => Some(e),
        Ok(Execution::Affected { .. }) => None,
        Ok(Execution::Rows(mut s)) => drain(&mut s, None).await.1,
    }
}

/// `[123]` as 123.
fn int_row(row: &[u8]) -> u64 {
    std::str::from_utf8(&row[1..row.len() - 1])
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a one-integer row: {:?}", String::from_utf8_lossy(row)))
}

async fn assert_serves<B: Backend>(d: &dyn Driver, ctx: &str) {
    let r = collect(d, query::<B>("SELECT 1")).await;
    assert_eq!(
        r.map(|r| r.rows).ok(),
        Some(vec![json!([1])]),
        "{ctx}: the pool serves"
    );
}

/// Waits until the service account's statement shows as running on the server.
async fn assert_running<B: Backend>(b: &B, d: &dyn Driver, ctx: &str) {
    let start = Instant::now();
    while b.running(d).await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{ctx}: the statement does not run on the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most the backend's `STOPS_WITHIN`; what is stopped here would run for minutes) until
/// nothing of the service account runs on the server and no connection is checked out.
async fn assert_stopped<B: Backend>(b: &B, d: &dyn Driver, ctx: &str) {
    let start = Instant::now();
    loop {
        let running = b.running(d).await;
        let in_use = d.stats().in_use;
        if running.is_empty() && in_use == 0 {
            break;
        }
        assert!(
            start.elapsed() < B::STOPS_WITHIN,
            "{ctx}: still running after {:?}: {running:?}, {in_use} connection(s) in use",
            B::STOPS_WITHIN
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    b.assert_stopped_by_itself();
}

fn assert_no_secret<B: Backend>(err: &ExecError) {
    if let Some(secret) = B::SECRET {
        assert!(!format!("{err} {err:?}").contains(secret), "{err:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The contract

/// `max_rows` cuts the result and `truncated` says so exactly when more rows existed; a statement
/// cut short is stopped on the server, and the connection's next statement is read-only again.
async fn max_rows_truncates_only_when_more_rows_existed<B: Backend>() {
    let b = B::create().await;
    let d = open(&b, 1).await;
    let ten = B::series(10);
    for (max_rows, expected_len, truncated) in [(3, 3, true), (10, 10, false), (11, 10, false)] {
        let mut q = query::<B>(&ten);
        q.max_rows = max_rows;
        let r = collect(&*d, q).await.unwrap();
        let ctx = format!("{}: 10 rows, max_rows {max_rows}", B::NAME);
        assert_eq!(r.rows.len(), expected_len, "{ctx}");
        assert_eq!(r.truncated, truncated, "{ctx}");
        let mut values: Vec<u64> = r.rows.iter().map(|r| r[0].as_u64().unwrap()).collect();
        if !B::SERIES_ORDERED {
            values.sort();
            values.dedup();
            assert_eq!(values.len(), expected_len, "{ctx}: distinct rows");
            assert!(values.iter().all(|v| (1..=10).contains(v)), "{ctx}");
        } else {
            assert_eq!(
                values,
                (1..=expected_len as u64).collect::<Vec<_>>(),
                "{ctx}"
            );
        }
    }
    let mut none = query::<B>(&ten);
    none.max_rows = 0;
    let r = collect(&*d, none).await.unwrap();
    assert!(
        r.rows.is_empty() && r.truncated,
        "{}: max_rows 0 of 10 rows",
        B::NAME
    );

    // Far more rows than anyone reads: left alone, the server would make them for hours.
    let mut cut = query::<B>(&B::endless());
    cut.max_rows = 5;
    let r = tokio::time::timeout(Duration::from_secs(60), collect(&*d, cut))
        .await
        .expect("stopping early must not wait for the whole result")
        .unwrap();
    assert_eq!((r.rows.len(), r.truncated), (5, true), "{}", B::NAME);
    assert_stopped(&b, &*d, &format!("{}: after max_rows", B::NAME)).await;

    // The one connection's next statement runs read-only, as before.
    let mut w = query::<B>(&format!("DELETE FROM {}", b.table("t")));
    w.is_query = false;
    let err = error_of(&*d, w).await.expect("a write must be refused");
    B::assert_read_only_refusal(&err);
    assert_serves::<B>(&*d, B::NAME).await;
}

/// A million rows stream through: the first arrives while the server still makes the rest.
async fn a_million_rows_stream_as_they_arrive<B: Backend>() {
    let b = B::create().await;
    let d = open(&b, 2).await;
    const N: u64 = 1_000_000;
    let mut q = query::<B>(&B::series(N));
    q.max_rows = 2 * N;
    // A debug build on a busy 2-core machine is slow; this is about streaming, not speed.
    q.timeout = Duration::from_secs(180);
    let mut s = stream(&*d, q, B::NAME).await;
    let first = s.next().await.expect("a first row").unwrap();
    assert!(
        !b.running(&*d).await.is_empty(),
        "{}: the first row came only after the whole result was made",
        B::NAME
    );
    let (mut count, mut sum, mut last) = (1u64, int_row(&first), int_row(&first));
    let mut in_order = true;
    while let Some(r) = s.next().await {
        let n = int_row(&r.unwrap());
        in_order &= n == last + 1;
        (count, sum, last) = (count + 1, sum + n, n);
    }
    assert_eq!(count, N, "{}", B::NAME);
    assert_eq!(sum, N * (N + 1) / 2, "{}", B::NAME);
    if B::SERIES_ORDERED {
        assert!(in_order && last == N, "{}: rows out of order", B::NAME);
    }
    assert!(!s.truncated(), "{}", B::NAME);
}

/// Writes on a read-write execution commit and report `rows_affected` (or their `RETURNING`
/// rows); the same writes on a read-only execution are refused by the database, whichever way
/// they are sent, and leave the connection able to write again.
async fn writes_commit_and_report_rows_affected<B: Backend>() {
    let b = B::create().await;
    let d = open(&b, 1).await;
    let t = b.table("t");
    let p = B::placeholder;
    let mut ins = write::<B>(&format!(
        "INSERT INTO {t} VALUES ({}, {}), ({}, {}), ({}, {})",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6)
    ));
    ins.params = vec![
        json!(1),
        json!("a"),
        json!(2),
        json!("b"),
        json!(3),
        json!("c"),
    ];
    assert_eq!(affected(&*d, ins).await, 3, "{}", B::NAME);
    let mut upd = write::<B>(&format!("UPDATE {t} SET v = {} WHERE id >= {}", p(1), p(2)));
    upd.params = vec![json!("z"), json!(2)];
    assert_eq!(affected(&*d, upd).await, 2, "{}", B::NAME);
    let n = b.admin_count("SELECT count(*) FROM t WHERE v = 'z'").await;
    assert_eq!(n, 2, "{}: the update was committed", B::NAME);

    let mut returning = write::<B>(&format!("INSERT INTO {t} VALUES (4, 'd') RETURNING id, v"));
    returning.is_query = true;
    let r = collect(&*d, returning).await.unwrap();
    assert_eq!(r.rows, vec![json!([4, "d"])], "{}", B::NAME);
    let n = b.admin_count("SELECT count(*) FROM t").await;
    assert_eq!(n, 4, "{}: INSERT … RETURNING was committed", B::NAME);

    for is_query in [false, true] {
        let mut ro = write::<B>(&format!("DELETE FROM {t}"));
        ro.read_only = true;
        ro.is_query = is_query;
        let err = error_of(&*d, ro)
            .await
            .unwrap_or_else(|| panic!("{}: a read-only write ran (is_query {is_query})", B::NAME));
        B::assert_read_only_refusal(&err);
    }
    let n = b.admin_count("SELECT count(*) FROM t").await;
    assert_eq!(n, 4, "{}: nothing was deleted", B::NAME);

    // A write right after the refusals, on the same connection, commits.
    let upd = write::<B>(&format!("UPDATE {t} SET v = 'e'"));
    assert_eq!(affected(&*d, upd).await, 4, "{}", B::NAME);
    let n = b.admin_count("SELECT count(*) FROM t WHERE v = 'e'").await;
    assert_eq!(n, 4, "{}: committed", B::NAME);
}

/// A statement past its timeout answers `Timeout` on time and is stopped on the server.
async fn a_statement_past_its_timeout_is_stopped_on_the_server<B: Backend>() {
    let b = B::create().await;
    let d = open(&b, 2).await;
    let timeout = Duration::from_millis(300);
    for paced_by_client in [true, false] {
        let ctx = format!("{}, paced_by_client {paced_by_client}", B::NAME);
        let mut q = query::<B>(&B::slow());
        q.timeout = timeout;
        q.paced_by_client = paced_by_client;
        let started = Instant::now();
        let err = d.execute(q).await.err();
        assert_eq!(err, Some(ExecError::Timeout(timeout)), "{ctx}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{ctx}: answered after {:?}",
            started.elapsed()
        );
        assert_stopped(&b, &*d, &ctx).await;
    }
    assert_serves::<B>(&*d, B::NAME).await;
}

#[derive(Clone, Copy, Debug)]
enum Reader {
    /// Reads as fast as it can.
    Eager,
    /// Reads a row every 5 ms: the deadline passes while rows are still pending.
    Slow,
    /// Reads one row, then nothing until well past the deadline.
    Stalled,
}

/// The deadline holds while rows stream, whatever the reader does: the stream ends with
/// `Timeout` and the statement is stopped on the server.
async fn the_deadline_holds_while_rows_stream<B: Backend>() {
    let b = B::create().await;
    let d = open(&b, 1).await;
    let timeout = Duration::from_millis(400);
    for paced_by_client in [true, false] {
        for reader in [Reader::Eager, Reader::Slow, Reader::Stalled] {
            if paced_by_client && matches!(reader, Reader::Stalled) {
                // The next behaviour.
                continue;
            }
            let ctx = format!("{}, paced_by_client {paced_by_client}, {reader:?}", B::NAME);
            let mut q = query::<B>(&B::endless());
            q.timeout = timeout;
            q.paced_by_client = paced_by_client;
            let started = Instant::now();
            let mut s = stream(&*d, q, &ctx).await;
            assert!(matches!(s.next().await, Some(Ok(_))), "{ctx}: a first row");
            let (_, err) = match reader {
                Reader::Eager => drain(&mut s, None).await,
                Reader::Slow => drain(&mut s, Some(Duration::from_millis(5))).await,
                Reader::Stalled => {
                    // Driven by its reader, the statement sees its deadline when read again.
                    tokio::time::sleep(timeout * 2).await;
                    drain(&mut s, None).await
                }
            };
            assert_eq!(err, Some(ExecError::Timeout(timeout)), "{ctx}");
            assert!(
                started.elapsed() < timeout * 2 + Duration::from_secs(2),
                "{ctx}: the stream ended after {:?}",
                started.elapsed()
            );
            // As the HTTP layer does once the stream ended: a statement driven by its reader
            // finishes what follows its answer after the drop.
            drop(s);
            assert_stopped(&b, &*d, &ctx).await;
        }
    }
    assert_serves::<B>(&*d, B::NAME).await;
}

/// A statement in a task of its own (rows paced by the client) is stopped at its deadline and
/// gives its connection back even while nobody reads; the reader later gets the rows made before
/// the deadline, then `Timeout`.
async fn a_stream_nobody_reads_frees_its_connection_at_the_deadline<B: Backend>() {
    let b = B::create().await;
    let d = open(&b, 1).await;
    let timeout = Duration::from_millis(400);
    let mut q = query::<B>(&B::endless());
    q.timeout = timeout;
    q.paced_by_client = true;
    let mut s = stream(&*d, q, B::NAME).await;
    assert!(
        matches!(s.next().await, Some(Ok(_))),
        "{}: a first row",
        B::NAME
    );
    // Nobody reads: past the deadline, the statement is stopped and its connection (the pool's
    // only one) is free for the next request.
    tokio::time::sleep(timeout).await;
    let ctx = format!("{}: nobody reads", B::NAME);
    assert_stopped(&b, &*d, &ctx).await;
    assert_serves::<B>(&*d, &ctx).await;
    let (rows, err) = drain(&mut s, None).await;
    assert!(!rows.is_empty(), "{ctx}: the rows made before the deadline");
    assert_eq!(err, Some(ExecError::Timeout(timeout)), "{ctx}");
    drop(s);
    assert_stopped(&b, &*d, &ctx).await;
}

/// A reader going away (the row stream dropped midway, or the `execute` future dropped before
/// its answer) stops the statement on the server and frees its connection.
async fn a_reader_going_away_stops_the_statement_on_the_server<B: Backend>() {
    let b = B::create().await;
    let d = open(&b, 2).await;
    for paced_by_client in [true, false] {
        // The server blocked sending more rows, or busy computing the next one.
        for (what, sql) in [
            ("endless rows", B::endless()),
            ("rows then a long computation", B::rows_then_slow()),
        ] {
            let ctx = format!("{}, paced_by_client {paced_by_client}, {what}", B::NAME);
            let mut q = query::<B>(&sql);
            q.paced_by_client = paced_by_client;
            let mut s = stream(&*d, q, &ctx).await;
            for _ in 0..5 {
                assert!(matches!(s.next().await, Some(Ok(_))), "{ctx}: five rows");
            }
            assert_running(&b, &*d, &ctx).await;
            assert_eq!(d.stats().in_use, 1, "{ctx}");
            drop(s);
            assert_stopped(&b, &*d, &format!("{ctx}: the stream was dropped")).await;
        }

        let ctx = format!("{}, paced_by_client {paced_by_client}", B::NAME);
        let mut q = query::<B>(&B::slow());
        q.paced_by_client = paced_by_client;
        let mut fut = d.execute(q);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut fut)
                .await
                .is_err(),
            "{ctx}: the slow statement answered"
        );
        assert_running(&b, &*d, &ctx).await;
        assert_eq!(d.stats().in_use, 1, "{ctx}");
        drop(fut);
        assert_stopped(&b, &*d, &format!("{ctx}: the future was dropped")).await;
    }
    assert_serves::<B>(&*d, B::NAME).await;
}

/// With the pool's one connection busy (streaming rows nobody reads yet, or running a
/// statement), the next request is counted as waiting and gets `PoolTimeout` after
/// `pool_timeout`, no sooner and not much later; the pool serves again once it is free.
async fn a_checkout_waits_at_most_the_pool_timeout<B: Backend>() {
    let b = B::create().await;
    let pool_timeout = Duration::from_millis(300);
    let d = open_with(
        &b,
        1,
        RegistrySettings {
            pool_timeout,
            ..b.settings()
        },
    )
    .await;

    let mut held = stream(&*d, query::<B>(&B::endless()), B::NAME).await;
    assert!(matches!(held.next().await, Some(Ok(_))));
    let ctx = format!("{}: a stream holds the connection", B::NAME);
    assert_pool_timeout::<B>(&d, pool_timeout, &ctx).await;
    assert!(
        matches!(held.next().await, Some(Ok(_))),
        "{ctx}: the stream goes on, undisturbed by the wait"
    );
    // Dropped, it frees the connection: the statement stops on the server and the pool serves.
    // (Stopping takes a kill and, on MySQL, the killed thread's exit, which under load can take
    // longer than this test's short pool timeout: wait for it before asking.)
    drop(held);
    assert_stopped(&b, &*d, &ctx).await;
    assert_serves::<B>(&*d, &ctx).await;

    let busy_timeout = Duration::from_millis(1500);
    let busy = {
        let d = d.clone();
        let mut q = query::<B>(&B::slow());
        q.timeout = busy_timeout;
        tokio::spawn(async move { d.execute(q).await.err() })
    };
    assert_running(&b, &*d, B::NAME).await;
    let ctx = format!("{}: a statement holds the connection", B::NAME);
    assert_pool_timeout::<B>(&d, pool_timeout, &ctx).await;
    assert_eq!(
        busy.await.unwrap(),
        Some(ExecError::Timeout(busy_timeout)),
        "{ctx}"
    );
    assert_stopped(&b, &*d, &ctx).await;
    assert_serves::<B>(&*d, &ctx).await;
    assert_eq!(d.stats().size, 1, "{}", B::NAME);
}

async fn assert_pool_timeout<B: Backend>(d: &Arc<dyn Driver>, pool_timeout: Duration, ctx: &str) {
    assert_eq!(
        (d.stats().size, d.stats().in_use),
        (1, 1),
        "{ctx}: the one connection is in use"
    );
    let waiter = {
        let d = d.clone();
        let q = query::<B>("SELECT 1");
        tokio::spawn(async move {
            let started = Instant::now();
            let err = d.execute(q).await.err();
            (err, started.elapsed())
        })
    };
    tokio::time::sleep(pool_timeout / 3).await;
    assert_eq!(
        d.stats(),
        PoolStats {
            size: 1,
            in_use: 1,
            waiting: 1
        },
        "{ctx}: one request waits"
    );
    let (err, waited) = waiter.await.unwrap();
    assert_eq!(err, Some(ExecError::PoolTimeout), "{ctx}");
    assert!(
        waited >= pool_timeout - Duration::from_millis(10)
            && waited < pool_timeout + Duration::from_secs(2),
        "{ctx}: waited {waited:?} for a pool timeout of {pool_timeout:?}"
    );
    assert_eq!(d.stats().waiting, 0, "{ctx}");
}

/// The operator's `max_pool_size` bounds a datasource asking for more.
async fn the_pool_is_bounded_by_the_operator_maximum<B: Backend>() {
    let b = B::create().await;
    let settings = RegistrySettings {
        max_pool_size: 2,
        pool_timeout: Duration::from_millis(300),
        ..b.settings()
    };
    let d = open_with(&b, 50, settings).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = stream(&*d, query::<B>(&B::endless()), B::NAME).await;
        assert!(matches!(s.next().await, Some(Ok(_))));
        held.push(s);
    }
    assert_eq!(
        d.execute(query::<B>("SELECT 1")).await.err(),
        Some(ExecError::PoolTimeout),
        "{}",
        B::NAME
    );
    assert_eq!((d.stats().size, d.stats().in_use), (2, 2), "{}", B::NAME);
    drop(held);
    assert_stopped(&b, &*d, B::NAME).await;
    assert_serves::<B>(&*d, B::NAME).await;
}

/// An address (or path) the operator has not allowed is refused with `NotAllowed`, at open or at
/// every use, without a connection being made and without the password in the message.
async fn a_datasource_outside_what_the_operator_allowed_is_refused<B: Backend>() {
    let b = B::create().await;
    match driver::open(&b.spec(1), &b.refused_settings()).await {
        Err(e) => {
            assert!(matches!(e, ExecError::NotAllowed(_)), "{}: {e:?}", B::NAME);
            assert_no_secret::<B>(&e);
        }
        Ok(d) => {
            let e = d.execute(query::<B>("SELECT 1")).await.err();
            assert!(
                matches!(e, Some(ExecError::NotAllowed(_))),
                "{}: {e:?}",
                B::NAME
            );
            assert_no_secret::<B>(&e.unwrap());
            let e = d.check().await.err();
            assert!(
                matches!(e, Some(ExecError::NotAllowed(_))),
                "{}: {e:?}",
                B::NAME
            );
            let e = d.schema().await.err();
            assert!(
                matches!(e, Some(ExecError::NotAllowed(_))),
                "{}: {e:?}",
                B::NAME
            );
            assert_eq!(d.stats().size, 0, "{}: a connection was made", B::NAME);
        }
    }
    // Allowed, the same datasource serves: the refusal was the allow-list's.
    let d = open(&b, 1).await;
    assert_serves::<B>(&*d, B::NAME).await;
}

/// `check` reports the server; `schema` lists exactly the tables and views the account can see,
/// with their columns; a closed pool refuses new work and holds no connection.
async fn check_and_schema_describe_the_server_and_what_the_account_sees<B: Backend>() {
    let b = B::create().await;
    let d = open(&b, 1).await;
    let info = d.check().await.unwrap();
    B::assert_server_version(&info.server_version);
    assert!(info.latency_ms >= 0.0, "{info:?}");

    let tables = d.schema().await.unwrap();
    let schema = b.schema_name();
    let names: Vec<String> = tables
        .iter()
        .map(|t| format!("{}.{}", t.schema, t.name))
        .collect();
    let expected: Vec<String> = ["names", "people", "t"]
        .iter()
        .map(|n| format!("{schema}.{n}"))
        .collect();
    assert_eq!(names, expected, "{}", B::NAME);
    let people = &tables[1];
    let columns: Vec<(&str, &str, bool)> = people
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_name.as_str(), c.nullable))
        .collect();
    let (id_types, name_type) = B::PEOPLE_TYPES;
    let id_type = columns.first().map_or("", |c| c.1);
    assert!(id_types.contains(&id_type), "{}: {columns:?}", B::NAME);
    assert_eq!(
        columns,
        [("id", id_type, false), ("name", name_type, true)],
        "{}",
        B::NAME
    );

    d.close();
    let e = d.execute(query::<B>("SELECT 1")).await.err();
    assert!(
        matches!(e, Some(ExecError::Unavailable(_))),
        "{}: {e:?}",
        B::NAME
    );
    assert_eq!(d.stats().size, 0, "{}", B::NAME);
}

/// A result growing past `max_result_bytes` ends with `ResultTooLarge` after at most that many
/// bytes of rows, and the statement is stopped on the server.
async fn a_result_past_the_byte_limit_ends_with_result_too_large<B: Backend>() {
    let b = B::create().await;
    let cap = 10_000;
    let d = open_with(
        &b,
        1,
        RegistrySettings {
            max_result_bytes: cap,
            ..b.settings()
        },
    )
    .await;
    for paced_by_client in [true, false] {
        let ctx = format!("{}, paced_by_client {paced_by_client}", B::NAME);
        let mut q = query::<B>(&B::endless());
        q.paced_by_client = paced_by_client;
        let mut s = stream(&*d, q, &ctx).await;
        let (rows, err) = drain(&mut s, None).await;
        assert_eq!(err, Some(ExecError::ResultTooLarge(cap)), "{ctx}");
        let bytes: usize = rows.iter().map(Bytes::len).sum();
        assert!(
            bytes as u64 <= cap && bytes as u64 > cap / 2,
            "{ctx}: {bytes} bytes of rows were sent"
        );
        drop(s);
        assert_stopped(&b, &*d, &ctx).await;
    }
    assert_serves::<B>(&*d, B::NAME).await;
}

// ---------------------------------------------------------------------------------------------
// Every behaviour against every driver: `<behaviour>::<driver>`.

/// Runs one test as `#[tokio::test]` does, except that a failure never waits for a blocking
/// thread it left running (a SQLite statement the failed test did not stop): dropping a runtime
/// waits for those without end, so the test would hang instead of failing.
fn run(test: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(test)));
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

macro_rules! for_every_driver {
    ($($behaviour:ident),* $(,)?) => {$(
        mod $behaviour {
            #[test]
            fn postgres() {
                super::run(super::$behaviour::<super::Postgres>())
            }
            #[test]
            fn mysql() {
                super::run(super::$behaviour::<super::Mysql>())
            }
            #[test]
            fn sqlite() {
                super::run(super::$behaviour::<super::Sqlite>())
            }
        }
    )*};
}

for_every_driver!(
    max_rows_truncates_only_when_more_rows_existed,
    a_million_rows_stream_as_they_arrive,
    writes_commit_and_report_rows_affected,
    a_statement_past_its_timeout_is_stopped_on_the_server,
    the_deadline_holds_while_rows_stream,
    a_stream_nobody_reads_frees_its_connection_at_the_deadline,
    a_reader_going_away_stops_the_statement_on_the_server,
    a_checkout_waits_at_most_the_pool_timeout,
    the_pool_is_bounded_by_the_operator_maximum,
    a_datasource_outside_what_the_operator_allowed_is_refused,
    check_and_schema_describe_the_server_and_what_the_account_sees,
    a_result_past_the_byte_limit_ends_with_result_too_large,
);
