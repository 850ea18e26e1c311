//! The SQLite driver against real files under an allowed root.
mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use sluice::datasource::sqlite::SqlitePool;
use sluice::datasource::{
    Connection, DatasourceSpec, ExecError, Execute, Execution, RegistrySettings, RowStream,
};
use sluice::model::{DatasourceId, DatasourceKind};

struct Fixture {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture {
    /// A database file with `setup` applied, under a fresh allowed root.
    fn new(setup: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.sqlite");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(setup).unwrap();
        drop(conn);
        Fixture { dir, path }
    }

    fn settings(&self) -> RegistrySettings {
        RegistrySettings {
            sqlite_roots: vec![self.dir.path().to_path_buf()],
            pool_timeout: Duration::from_millis(500),
            ..RegistrySettings::default()
        }
    }

    fn spec(&self, pool_max_size: usize) -> DatasourceSpec {
        DatasourceSpec {
            id: DatasourceId::from("ds_lite"),
            kind: DatasourceKind::Sqlite,
            connection: Connection::Sqlite {
                path: self.path.clone(),
            },
            pool_max_size,
            generation: 1,
        }
    }

    async fn pool(&self, pool_max_size: usize) -> SqlitePool {
        SqlitePool::open(&self.spec(pool_max_size), &self.settings())
            .await
            .unwrap()
    }

    fn admin(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.path).unwrap()
    }
}

fn query(sql: &str) -> Execute {
    Execute {
        sql: sql.into(),
        params: vec![],
        is_query: true,
        read_only: true,
        max_rows: 10_000_000,
        timeout: Duration::from_secs(30),
        may_change_session: false,
        search_path: None,
        paced_by_client: false,
    }
}

fn write(sql: &str) -> Execute {
    Execute {
        is_query: false,
        read_only: false,
        ..query(sql)
    }
}

fn rows_of(e: Execution) -> RowStream {
    match e {
        Execution::Rows(r) => r,
        Execution::Affected { .. } => panic!("expected rows"),
    }
}

async fn collect(pool: &SqlitePool, req: Execute) -> (RowStream, Vec<Value>) {
    let mut stream = rows_of(pool.execute(req).await.unwrap());
    let mut rows = Vec::new();
    while let Some(r) = stream.next().await {
        rows.push(serde_json::from_slice(&r.unwrap()).unwrap());
    }
    (stream, rows)
}

/// Waits up to a second for every checked-out connection to come back (no statement running).
async fn assert_idle_within_a_second(pool: &SqlitePool) {
    let start = Instant::now();
    while pool.stats().in_use != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "a statement is still running after a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const FOREVER: &str =
    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT n FROM c";
const COUNT_FOREVER: &str =
    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) FROM c";

#[tokio::test]
async fn values_map_by_storage_class_and_types_name_the_declaration_or_the_class() {
    let f = Fixture::new(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, r REAL, s VARCHAR(10), b BLOB, \
         n NUMERIC, anything);
         INSERT INTO t VALUES (1, -9223372036854775808, 1.5, 'quote \" é', x'00FF', 12.5, 'x');
         INSERT INTO t (id) VALUES (2);",
    );
    let pool = f.pool(2).await;
    let (stream, rows) = collect(
        &pool,
        query("SELECT id, i, r, s, b, n, anything, 1 + 1, 'lit', NULL FROM t ORDER BY id"),
    )
    .await;
    let types: Vec<&str> = stream
        .columns
        .iter()
        .map(|c| c.type_name.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "INTEGER",
            "INTEGER",
            "REAL",
            "VARCHAR(10)",
            "BLOB",
            "NUMERIC",
            "TEXT",
            "INTEGER",
            "TEXT",
            "NULL"
        ]
    );
    assert_eq!(
        rows,
        vec![
            json!([
                1,
                i64::MIN,
                1.5,
                "quote \" é",
                "AP8=",
                12.5,
                "x",
                2,
                "lit",
                null
            ]),
            json!([2, null, null, null, null, null, null, 2, "lit", null]),
        ]
    );
}

#[tokio::test]
async fn params_bind_by_position_and_misfits_are_bad_params() {
    let f = Fixture::new("CREATE TABLE t (x)");
    let pool = f.pool(2).await;
    let mut req = query("SELECT ? + 1, ? || '!', ? IS NULL, ?, ?");
    req.params = vec![
        json!(41),
        json!("hi"),
        Value::Null,
        json!(true),
        json!(0.25),
    ];
    let (_, rows) = collect(&pool, req).await;
    assert_eq!(rows, vec![json!([42, "hi!", 1, 1, 0.25])]);

    let mut req = query("SELECT ?, ?");
    req.params = vec![json!(1)];
    let err = pool.execute(req).await.err().unwrap();
    assert!(
        matches!(&err, ExecError::BadParams(m) if m.contains('2')),
        "{err:?}"
    );

    let mut req = query("SELECT ?");
    req.params = vec![json!(u64::MAX)];
    let err = pool.execute(req).await.err().unwrap();
    assert!(
        matches!(&err, ExecError::BadParams(m) if m.contains("param 1")),
        "{err:?}"
    );
}

#[tokio::test]
async fn max_rows_cuts_the_result_and_reports_truncation_only_when_more_rows_exist() {
    let f = Fixture::new("");
    let pool = f.pool(2).await;
    let mut req = query(FOREVER);
    req.max_rows = 10;
    let (stream, rows) = collect(&pool, req).await;
    assert_eq!(rows.len(), 10);
    assert!(stream.truncated());

    let mut req = query("SELECT 1 UNION ALL SELECT 2");
    req.max_rows = 2;
    let (stream, rows) = collect(&pool, req).await;
    assert_eq!(rows.len(), 2);
    assert!(!stream.truncated());
    assert_idle_within_a_second(&pool).await;
}

#[tokio::test]
async fn a_million_rows_stream_through_as_they_arrive() {
    let f = Fixture::new("");
    let pool = f.pool(2).await;
    let mut stream = rows_of(
        pool.execute(query(
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000000) \
             SELECT n FROM c",
        ))
        .await
        .unwrap(),
    );
    let mut count = 0u64;
    let mut sum = 0u64;
    while let Some(r) = stream.next().await {
        let r = r.unwrap();
        let n: u64 = std::str::from_utf8(&r[1..r.len() - 1])
            .unwrap()
            .parse()
            .unwrap();
        sum += n;
        count += 1;
    }
    assert_eq!(count, 1_000_000);
    assert_eq!(sum, 1_000_000 * 1_000_001 / 2);
    assert!(!stream.truncated());
}

#[tokio::test]
async fn writes_on_a_read_write_datasource_commit_and_report_rows_affected() {
    let f = Fixture::new("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    let pool = f.pool(2).await;
    let mut req = write("INSERT INTO t VALUES (?, ?), (?, ?)");
    req.params = vec![json!(1), json!("a"), json!(2), json!("b")];
    match pool.execute(req).await.unwrap() {
        Execution::Affected { rows_affected } => assert_eq!(rows_affected, 2),
        Execution::Rows(_) => panic!("a write reports rows affected"),
    }
    match pool.execute(write("UPDATE t SET v = 'c'")).await.unwrap() {
        Execution::Affected { rows_affected } => assert_eq!(rows_affected, 2),
        Execution::Rows(_) => panic!("a write reports rows affected"),
    }
    let n: i64 = f
        .admin()
        .query_row("SELECT count(*) FROM t WHERE v = 'c'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2, "the writes were committed");
}

#[tokio::test]
async fn read_only_connections_refuse_every_kind_of_write() {
    let f = Fixture::new("CREATE TABLE t (id INTEGER); CREATE TABLE log (id INTEGER)");
    let pool = f.pool(2).await;
    for sql in [
        "INSERT INTO t VALUES (1)",
        "INSERT INTO t VALUES (1) RETURNING id",
        "WITH x(v) AS (SELECT 1) INSERT INTO t SELECT v FROM x",
        "PRAGMA query_only=0",
        "ATTACH DATABASE ':memory:' AS other",
    ] {
        let mut req = query(sql);
        req.is_query = sql.contains("RETURNING") || sql.starts_with("PRAGMA");
        let r = pool.execute(req).await;
        // A pragma may "succeed" as a statement; what matters is that nothing can be written.
        if let Ok(Execution::Rows(mut s)) = r {
            while s.next().await.is_some() {}
        }
        let write = pool
            .execute(query("INSERT INTO t VALUES (2) RETURNING id"))
            .await;
        assert!(
            matches!(write, Err(ExecError::QueryFailed { .. })),
            "after {sql}: the write was not refused"
        );
    }
    let n: i64 = f
        .admin()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0, "nothing was written");
}

#[tokio::test]
async fn a_statement_with_a_second_statement_behind_it_is_refused() {
    let f = Fixture::new("CREATE TABLE t (id INTEGER)");
    let pool = f.pool(1).await;
    let mut req = write("INSERT INTO t VALUES (1); DROP TABLE t");
    req.read_only = false;
    let err = pool.execute(req).await.err().unwrap();
    assert!(matches!(err, ExecError::QueryFailed { .. }), "{err:?}");
    let (_, rows) = collect(&pool, query("SELECT count(*) FROM t -- a trailing comment")).await;
    assert_eq!(
        rows,
        vec![json!([0])],
        "the table is intact and nothing ran"
    );
}

#[tokio::test]
async fn a_statement_past_its_timeout_is_interrupted() {
    let f = Fixture::new("");
    let pool = f.pool(2).await;
    let mut req = query(COUNT_FOREVER);
    req.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = pool.execute(req).await.err().unwrap();
    assert!(matches!(err, ExecError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_idle_within_a_second(&pool).await;
}

#[tokio::test]
async fn the_deadline_covers_streaming_too() {
    let f = Fixture::new("");
    let pool = f.pool(2).await;
    let mut req = query(FOREVER);
    req.timeout = Duration::from_millis(300);
    let mut stream = rows_of(pool.execute(req).await.unwrap());
    let mut last = None;
    while let Some(r) = stream.next().await {
        if r.is_err() {
            last = Some(r);
            break;
        }
    }
    let err = last.expect("the stream ends with an error").unwrap_err();
    assert!(matches!(err, ExecError::Timeout(_)), "{err:?}");
    assert_idle_within_a_second(&pool).await;
}

#[tokio::test]
async fn dropping_a_stream_or_the_execute_future_stops_the_statement() {
    let f = Fixture::new("");
    let pool = f.pool(2).await;
    let mut stream = rows_of(pool.execute(query(FOREVER)).await.unwrap());
    for _ in 0..5 {
        stream.next().await.unwrap().unwrap();
    }
    assert_eq!(pool.stats().in_use, 1);
    drop(stream);
    assert_idle_within_a_second(&pool).await;

    let mut fut = Box::pin(pool.execute(query(COUNT_FOREVER)));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut fut)
            .await
            .is_err()
    );
    assert_eq!(pool.stats().in_use, 1);
    drop(fut);
    assert_idle_within_a_second(&pool).await;
}

#[tokio::test]
async fn a_full_pool_makes_the_next_request_wait_then_fail_with_pool_timeout() {
    let f = Fixture::new("");
    let pool = Arc::new(f.pool(1).await);
    let busy = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut req = query(COUNT_FOREVER);
            req.timeout = Duration::from_secs(2);
            pool.execute(req).await.err()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let err = pool.execute(query("SELECT 1")).await.err().unwrap();
    assert_eq!(err, ExecError::PoolTimeout);
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert!(matches!(busy.await.unwrap(), Some(ExecError::Timeout(_))));
    let (_, rows) = collect(&pool, query("SELECT 1")).await;
    assert_eq!(rows, vec![json!([1])]);
}

#[tokio::test]
async fn a_file_outside_the_allowed_roots_is_refused() {
    let f = Fixture::new("");
    let elsewhere = tempfile::tempdir().unwrap();
    let settings = RegistrySettings {
        sqlite_roots: vec![elsewhere.path().to_path_buf()],
        ..f.settings()
    };
    let err = SqlitePool::open(&f.spec(1), &settings).await.err().unwrap();
    assert!(matches!(err, ExecError::NotAllowed(_)), "{err:?}");
}

#[tokio::test]
async fn check_and_schema_describe_the_file_and_its_tables() {
    let f = Fixture::new(
        "CREATE TABLE people (id INTEGER NOT NULL PRIMARY KEY, name TEXT);
         CREATE VIEW names AS SELECT name FROM people;",
    );
    let pool = f.pool(1).await;
    let info = pool.check().await.unwrap();
    assert!(info.server_version.starts_with("SQLite 3."), "{info:?}");
    let tables = pool.schema().await.unwrap();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["names", "people"]);
    let people = &tables[1];
    assert_eq!(people.columns.len(), 2);
    assert_eq!(people.columns[0].type_name, "INTEGER");
    assert!(!people.columns[0].nullable);
    assert!(people.columns[1].nullable);
    pool.close();
    let err = pool.execute(query("SELECT 1")).await.err().unwrap();
    assert!(matches!(err, ExecError::Unavailable(_)), "{err:?}");
    assert_eq!(pool.stats().size, 0);
}

#[tokio::test]
async fn a_result_past_the_byte_limit_stops_with_result_too_large() {
    let f = Fixture::new("");
    let settings = RegistrySettings {
        max_result_bytes: 10_000,
        ..f.settings()
    };
    let pool = SqlitePool::open(&f.spec(1), &settings).await.unwrap();
    let mut stream = rows_of(pool.execute(query(FOREVER)).await.unwrap());
    let mut bytes = 0;
    let mut last = None;
    while let Some(r) = stream.next().await {
        match r {
            Ok(b) => bytes += b.len(),
            Err(e) => last = Some(e),
        }
    }
    assert_eq!(last, Some(ExecError::ResultTooLarge(10_000)));
    assert!(bytes <= 10_000, "{bytes} bytes were sent");
    assert_idle_within_a_second(&pool).await;
}
