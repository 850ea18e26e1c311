//! The MySQL/MariaDB driver against the real local server, connecting as a service account with a
//! password through the SSRF-checked address.
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use sluice::datasource::mysql::MysqlPool;
use sluice::datasource::{
    Connection, DatasourceSpec, ExecError, Execute, Execution, RegistrySettings, RowStream, Secret,
};
use sluice::model::{DatasourceId, DatasourceKind};
use support::db::MysqlTestDb;

const PASSWORD: &str = "Svc_pw_4711_zq";

struct Fixture {
    db: MysqlTestDb,
    user: String,
}

impl Fixture {
    async fn new() -> Fixture {
        let db = MysqlTestDb::create().await;
        let user = db.create_user("svc", PASSWORD).await;
        let mut admin = db.admin_conn().await;
        for host in ["%", "localhost"] {
            admin
                .query_drop(format!(
                    "GRANT SELECT, INSERT, UPDATE, DELETE, EXECUTE ON {}.* TO '{user}'@'{host}'",
                    db.name
                ))
                .await
                .unwrap();
        }
        admin.disconnect().await.unwrap();
        Fixture { db, user }
    }

    fn spec(&self, pool_max_size: usize) -> DatasourceSpec {
        DatasourceSpec {
            id: DatasourceId::from("ds_test"),
            kind: DatasourceKind::Mysql,
            connection: Connection::Network {
                host: "127.0.0.1".into(),
                port: 3306,
                database: self.db.name.clone(),
                user: self.user.clone(),
                password: Secret::new(PASSWORD),
                options: BTreeMap::new(),
            },
            pool_max_size,
            generation: 1,
        }
    }

    async fn pool(&self, pool_max_size: usize) -> MysqlPool {
        MysqlPool::open(&self.spec(pool_max_size), &settings())
            .await
            .unwrap()
    }

    async fn admin(&self) -> mysql_async::Conn {
        self.db.admin_conn().await
    }

    /// Statements of the service account that are running right now.
    async fn running_queries(&self) -> Vec<String> {
        let mut admin = self.admin().await;
        let rows: Vec<Option<String>> = admin
            .exec(
                "SELECT INFO FROM information_schema.PROCESSLIST \
                 WHERE USER = ? AND COMMAND IN ('Query', 'Execute')",
                (self.user.clone(),),
            )
            .await
            .unwrap();
        admin.disconnect().await.unwrap();
        rows.into_iter().flatten().collect()
    }

    /// Waits up to five seconds (room for a loaded machine; the statements stopped here run
    /// for minutes) for the service account to have no statement running.
    async fn assert_nothing_running_soon(&self) {
        let start = Instant::now();
        loop {
            let running = self.running_queries().await;
            if running.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "still running after five seconds: {running:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn settings() -> RegistrySettings {
    RegistrySettings {
        allow_networks: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        pool_timeout: Duration::from_millis(500),
        ..RegistrySettings::default()
    }
}

fn query(sql: &str) -> Execute {
    Execute {
        sql: sql.into(),
        params: vec![],
        is_query: true,
        read_only: true,
        max_rows: 1_000_000,
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

async fn collect(pool: &MysqlPool, req: Execute) -> (RowStream, Vec<Value>) {
    let mut stream = rows_of(pool.execute(req).await.unwrap());
    let mut rows = Vec::new();
    while let Some(r) = stream.next().await {
        rows.push(serde_json::from_slice(&r.unwrap()).unwrap());
    }
    (stream, rows)
}

/// A million rows from six cross-joined digit tables (portable: no recursion limits).
const MILLION: &str = "SELECT a.n + 10*b.n + 100*c.n + 1000*d.n + 10000*e.n + 100000*f.n AS n \
     FROM (SELECT 0 n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
           UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 \
           UNION ALL SELECT 9) a \
     CROSS JOIN (SELECT 0 n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
           UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 \
           UNION ALL SELECT 9) b \
     CROSS JOIN (SELECT 0 n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
           UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 \
           UNION ALL SELECT 9) c \
     CROSS JOIN (SELECT 0 n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
           UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 \
           UNION ALL SELECT 9) d \
     CROSS JOIN (SELECT 0 n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
           UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 \
           UNION ALL SELECT 9) e \
     CROSS JOIN (SELECT 0 n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
           UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 \
           UNION ALL SELECT 9) f";

/// A connection the server ended while it sat idle in the pool (`KILL`, `wait_timeout`, a
/// restart) is replaced when the pool hands it out, instead of failing the next statement.
#[tokio::test]
async fn a_connection_the_server_ended_while_idle_is_replaced_at_checkout() {
    let f = Fixture::new().await;
    let pool = f.pool(1).await;
    let id = |rows: Vec<Value>| rows[0][0].as_u64().expect("a connection id");
    let first = id(collect(&pool, query("SELECT CONNECTION_ID()")).await.1);
    let mut admin = f.admin().await;
    admin.query_drop(format!("KILL {first}")).await.unwrap();
    admin.disconnect().await.unwrap();
    for _ in 0..3 {
        // (`collect` panics with the error if the dead connection was handed out.)
        let next = id(collect(&pool, query("SELECT CONNECTION_ID()")).await.1);
        assert_ne!(next, first);
    }
    assert_eq!(pool.stats().size, 1);
}

#[tokio::test]
async fn each_common_type_maps_to_its_json_form_and_null_stays_null() {
    let f = Fixture::new().await;
    let mut admin = f.admin().await;
    admin
        .query_drop(
            "CREATE TABLE types (id INT PRIMARY KEY, ti TINYINT, si SMALLINT, i INT, bi BIGINT, \
             ubi BIGINT UNSIGNED, fl FLOAT, db DOUBLE, de DECIMAL(30,10), da DATE, dtm DATETIME(6), \
             ts TIMESTAMP NULL, tm TIME, y YEAR, j JSON, c CHAR(3), vc VARCHAR(20), tx TEXT, \
             e ENUM('red','green'), st SET('x','y'), bn BINARY(2), vb VARBINARY(4), bl BLOB, \
             bt BIT(10))",
        )
        .await
        .unwrap();
    admin
        .query_drop(
            "INSERT INTO types VALUES (1, -128, -32768, -2147483648, -9223372036854775808, \
             18446744073709551615, 1.1, 2.5, '12345678901234567890.0123456789', '2024-02-29', \
             '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15', '-838:59:59', 2024, \
             '{\"a\": [1, 2]}', 'abc', 'quote \" \\\\ é', 'long text', 'green', 'x,y', 0x00FF, \
             0xDEADBEEF, 0x0102, b'1000000001')",
        )
        .await
        .unwrap();
    admin
        .query_drop("INSERT INTO types (id) VALUES (2)")
        .await
        .unwrap();
    admin.disconnect().await.unwrap();

    let pool = f.pool(2).await;
    let (stream, rows) = collect(&pool, query("SELECT * FROM types ORDER BY id")).await;
    let types: Vec<&str> = stream
        .columns
        .iter()
        .map(|c| c.type_name.as_str())
        .collect();
    assert_eq!(
        &types[..14],
        &[
            "int",
            "tinyint",
            "smallint",
            "int",
            "bigint",
            "bigint unsigned",
            "float",
            "double",
            "decimal",
            "date",
            "datetime",
            "timestamp",
            "time",
            "year"
        ]
    );
    assert_eq!(
        &types[15..],
        &[
            "char",
            "varchar",
            "text",
            "enum",
            "set",
            "binary",
            "varbinary",
            "blob",
            "bit"
        ]
    );
    let real = &rows[0];
    let expected_json = if types[14] == "json" {
        json!({"a": [1, 2]})
    } else {
        // MariaDB's JSON is LONGTEXT with a check; the wire metadata does not say JSON.
        json!("{\"a\": [1, 2]}")
    };
    assert_eq!(
        real,
        &json!([
            1,
            -128,
            -32768,
            -2147483648i64,
            i64::MIN,
            u64::MAX,
            1.1,
            2.5,
            "12345678901234567890.0123456789",
            "2024-02-29",
            "2024-02-29T13:14:15.123456",
            "2024-02-29T13:14:15Z",
            "-838:59:59",
            2024,
            expected_json,
            "abc",
            "quote \" \\ é",
            "long text",
            "green",
            "x,y",
            "AP8=",
            "3q2+7w==",
            "AQI=",
            513
        ])
    );
    let mut nulls = vec![json!(2)];
    nulls.extend(std::iter::repeat_n(Value::Null, 23));
    assert_eq!(rows[1], Value::Array(nulls));
}

#[tokio::test]
async fn params_bind_by_position_and_a_wrong_count_is_bad_params() {
    let f = Fixture::new().await;
    let pool = f.pool(2).await;
    let mut req = query("SELECT ? + 1, CONCAT(?, '!'), ? IS NULL, ?");
    req.params = vec![json!(41), json!("hi"), Value::Null, json!(1.5)];
    let (_, rows) = collect(&pool, req).await;
    // MariaDB answers `? + 1` with a bigint or a decimal depending on version: compare as text.
    assert_eq!(rows[0][0].to_string().trim_matches('"'), "42");
    assert_eq!(rows[0][1], json!("hi!"));
    assert_eq!(rows[0][2], json!(1));
    assert_eq!(rows[0][3], json!(1.5));

    let mut req = query("SELECT ?, ?");
    req.params = vec![json!(1)];
    let err = pool.execute(req).await.err().unwrap();
    assert!(
        matches!(&err, ExecError::BadParams(m) if m.contains('2')),
        "{err:?}"
    );
    // The connection is still usable after the refusal.
    let (_, rows) = collect(&pool, query("SELECT 7")).await;
    assert_eq!(rows, vec![json!([7])]);
}

#[tokio::test]
async fn max_rows_cuts_the_result_and_reports_truncation_only_when_more_rows_exist() {
    let f = Fixture::new().await;
    let pool = f.pool(2).await;
    let mut req = query(MILLION);
    req.max_rows = 10;
    let (stream, rows) = collect(&pool, req).await;
    assert_eq!(rows.len(), 10);
    assert!(stream.truncated());
    f.assert_nothing_running_soon().await;

    let mut req = query("SELECT 1 UNION ALL SELECT 2");
    req.max_rows = 2;
    let (stream, rows) = collect(&pool, req).await;
    assert_eq!(rows.len(), 2);
    assert!(!stream.truncated());
}

#[tokio::test]
async fn a_million_rows_stream_through_as_they_arrive() {
    let f = Fixture::new().await;
    let pool = f.pool(2).await;
    // A debug build on a busy 2-core machine needs most of the default 30 s; this test is about
    // streaming, not speed.
    let mut million = query(MILLION);
    million.timeout = Duration::from_secs(180);
    let mut stream = rows_of(pool.execute(million).await.unwrap());
    let mut count = 0u64;
    let mut sum = 0u64;
    while let Some(r) = stream.next().await {
        let r = r.unwrap();
        // `[123]`: read the number without building a JSON value per row.
        let n: u64 = std::str::from_utf8(&r[1..r.len() - 1])
            .unwrap()
            .parse()
            .unwrap();
        sum += n;
        count += 1;
    }
    assert_eq!(count, 1_000_000);
    assert_eq!(sum, 999_999 * 1_000_000 / 2);
    assert!(!stream.truncated());
}

#[tokio::test]
async fn writes_on_a_read_write_datasource_commit_and_report_rows_affected() {
    let f = Fixture::new().await;
    let mut admin = f.admin().await;
    admin
        .query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
        .await
        .unwrap();
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
    let n: Option<i64> = admin
        .query_first("SELECT COUNT(*) FROM t WHERE v = 'c'")
        .await
        .unwrap();
    assert_eq!(n, Some(2), "the writes were committed");

    // The same write on a read-only execution is refused by the server.
    let mut ro = write("INSERT INTO t VALUES (3, 'x')");
    ro.read_only = true;
    let err = pool.execute(ro).await.err().unwrap();
    assert!(matches!(err, ExecError::QueryFailed { .. }), "{err:?}");
    // So is a write sent down the read-only query path (autocommit in a READ ONLY session)...
    let err = pool
        .execute(query("INSERT INTO t VALUES (4, 'y')"))
        .await
        .err()
        .unwrap();
    match &err {
        ExecError::QueryFailed { sqlstate, .. } => assert_eq!(sqlstate.as_deref(), Some("25006")),
        other => panic!("expected the server's refusal, got {other:?}"),
    }
    // ...while a write right after it, on a connection whose session is READ ONLY, still commits.
    match pool.execute(write("UPDATE t SET v = 'd'")).await.unwrap() {
        Execution::Affected { rows_affected } => assert_eq!(rows_affected, 2),
        Execution::Rows(_) => panic!("a write reports rows affected"),
    }
    let n: Option<i64> = admin.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(
        n,
        Some(2),
        "only the two rows of the read-write writes exist"
    );
    admin.disconnect().await.unwrap();
}

#[tokio::test]
async fn the_read_only_transaction_refuses_a_write_hidden_in_a_function() {
    let f = Fixture::new().await;
    let mut admin = f.admin().await;
    admin
        .query_drop("CREATE TABLE victims (id INT)")
        .await
        .unwrap();
    admin
        .query_drop(
            "CREATE FUNCTION sneaky() RETURNS INT MODIFIES SQL DATA \
             BEGIN INSERT INTO victims VALUES (1); RETURN 1; END",
        )
        .await
        .unwrap();
    let pool = f.pool(2).await;
    let err = pool.execute(query("SELECT sneaky()")).await.err().unwrap();
    match &err {
        ExecError::QueryFailed { message, sqlstate } => {
            assert!(message.to_lowercase().contains("read only"), "{message}");
            assert_eq!(sqlstate.as_deref(), Some("25006"));
        }
        other => panic!("expected the server's refusal, got {other:?}"),
    }
    let n: Option<i64> = admin
        .query_first("SELECT COUNT(*) FROM victims")
        .await
        .unwrap();
    assert_eq!(n, Some(0), "nothing was written");
    admin.disconnect().await.unwrap();
}

/// A long statement that the server runs until it is stopped.
const SPIN: &str = "SELECT BENCHMARK(100000000000, SHA2('x', 256))";

// Each of the following runs both ways a statement can run: in its own task (an NDJSON client
// paces the rows) and driven by the reader (a buffered answer).

#[tokio::test]
async fn a_statement_past_its_timeout_is_cancelled_and_leaves_nothing_running() {
    let f = Fixture::new().await;
    let pool = f.pool(2).await;
    for paced_by_client in [true, false] {
        let mut req = query(SPIN);
        req.timeout = Duration::from_millis(400);
        req.paced_by_client = paced_by_client;
        let err = pool.execute(req).await.err().unwrap();
        assert!(
            matches!(err, ExecError::Timeout(_)),
            "{err:?} (paced_by_client {paced_by_client})"
        );
        f.assert_nothing_running_soon().await;
    }
}

#[tokio::test]
async fn the_client_deadline_covers_streaming_too() {
    let f = Fixture::new().await;
    let pool = f.pool(2).await;
    for paced_by_client in [true, false] {
        let mut req = query(MILLION);
        req.timeout = Duration::from_millis(800);
        req.paced_by_client = paced_by_client;
        let mut stream = rows_of(pool.execute(req).await.unwrap());
        // A slow reader: the deadline passes while rows are still pending.
        let mut last = None;
        while let Some(r) = stream.next().await {
            if r.is_err() {
                last = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let err = last.expect("the stream ends with an error").unwrap_err();
        assert!(
            matches!(err, ExecError::Timeout(_)),
            "{err:?} (paced_by_client {paced_by_client})"
        );
        f.assert_nothing_running_soon().await;
    }
}

/// Reads five rows of `sql`, checks the statement still runs on the server, drops the stream
/// and checks that the statement stops there.
async fn drop_a_stream_after_five_rows(
    f: &Fixture,
    pool: &MysqlPool,
    sql: &str,
    paced_by_client: bool,
) {
    let mut req = query(sql);
    req.paced_by_client = paced_by_client;
    let mut stream = rows_of(pool.execute(req).await.unwrap());
    for _ in 0..5 {
        stream.next().await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !f.running_queries().await.is_empty(),
        "the statement was running after five rows (paced_by_client {paced_by_client})"
    );
    drop(stream);
    f.assert_nothing_running_soon().await;
}

#[tokio::test]
async fn dropping_a_stream_midway_stops_the_statement_on_the_server() {
    let f = Fixture::new().await;
    let pool = f.pool(2).await;
    for paced_by_client in [true, false] {
        // The server is blocked sending the rest when the stream is dropped.
        drop_a_stream_after_five_rows(&f, &pool, MILLION, paced_by_client).await;
        // The connection was discarded, not returned: nothing stays checked out.
        let start = Instant::now();
        while pool.stats().in_use != 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "still in use");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Five rows (each larger than the server's 16 KiB network buffer, so each is sent as soon as it
/// is made), then a sixth that takes forever to compute.
const FIVE_ROWS_THEN_SPIN: &str = "SELECT seq, REPEAT('x', 20000) AS pad, \
     IF(seq > 5, BENCHMARK(100000000000, SHA2('x', 256)), 0) AS spin \
     FROM (SELECT 1 seq UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
           UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7) t ORDER BY seq";

/// A server blocked sending rows notices a closed socket by itself (the test above); one busy
/// computing the next row does not, so the driver must kill the statement when its reader goes
/// away (`Abandoned::Finish`), not only drop the connection.
#[tokio::test]
async fn dropping_a_stream_while_the_server_computes_the_next_row_kills_the_statement() {
    let f = Fixture::new().await;
    let pool = f.pool(2).await;
    for paced_by_client in [true, false] {
        drop_a_stream_after_five_rows(&f, &pool, FIVE_ROWS_THEN_SPIN, paced_by_client).await;
    }
    // The pool still serves.
    let (_, rows) = collect(&pool, query("SELECT 7")).await;
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn dropping_the_execute_future_stops_the_statement_on_the_server() {
    let f = Fixture::new().await;
    let pool = f.pool(2).await;
    for paced_by_client in [true, false] {
        let mut req = query(SPIN);
        req.paced_by_client = paced_by_client;
        let mut fut = Box::pin(pool.execute(req));
        let r = tokio::time::timeout(Duration::from_millis(400), &mut fut).await;
        assert!(r.is_err(), "the statement was still running");
        assert!(
            !f.running_queries().await.is_empty(),
            "the statement runs on the server (paced_by_client {paced_by_client})"
        );
        drop(fut);
        f.assert_nothing_running_soon().await;
    }
    // The pool still serves.
    let (_, rows) = collect(&pool, query("SELECT 7")).await;
    assert_eq!(rows, vec![json!([7])]);
}

#[tokio::test]
async fn a_full_pool_makes_the_next_request_wait_then_fail_with_pool_timeout() {
    let f = Fixture::new().await;
    let pool = Arc::new(f.pool(1).await);
    let busy = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.execute(query("SELECT SLEEP(2)")).await.is_ok() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pool.stats().in_use, 1);
    let started = Instant::now();
    let err = pool.execute(query("SELECT 1")).await.err().unwrap();
    assert_eq!(err, ExecError::PoolTimeout);
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert!(busy.await.unwrap());
    // Once free, the single connection serves again.
    let (_, rows) = collect(&pool, query("SELECT 1")).await;
    assert_eq!(rows, vec![json!([1])]);
    assert_eq!(pool.stats().size, 1);
}

#[tokio::test]
async fn an_empty_allow_list_refuses_loopback() {
    let f = Fixture::new().await;
    let settings = RegistrySettings {
        allow_networks: vec![],
        ..settings()
    };
    let err = MysqlPool::open(&f.spec(2), &settings).await.err().unwrap();
    assert!(matches!(err, ExecError::NotAllowed(_)), "{err:?}");
}

const PINNED_SQL_MODE: &str =
    "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION";

#[tokio::test]
async fn session_settings_are_pinned_and_nothing_carries_over_between_requests() {
    let f = Fixture::new().await;
    let pool = f.pool(1).await;
    // What a function the policy cannot see into might do (the policy itself refuses `@x`).
    let mut sneaky = query("SELECT @x := 5, @@sql_mode, @@time_zone, @@tx_read_only");
    sneaky.may_change_session = true;
    let (_, rows) = collect(&pool, sneaky).await;
    assert_eq!(rows[0], json!([5, PINNED_SQL_MODE, "+00:00", 1]));
    let (_, rows) = collect(&pool, query("SELECT @x, @@sql_mode, @@tx_read_only")).await;
    assert_eq!(rows[0][0], Value::Null, "user variables do not survive");
    assert_eq!(
        rows[0][1],
        json!(PINNED_SQL_MODE),
        "pinned again after the reset"
    );
    assert_eq!(rows[0][2], json!(1), "queries run read-only");
    // After a read-write statement (reset too), the next query's session is set up again.
    let mut rw = write("SELECT @y := 7");
    rw.is_query = true;
    let (_, rows) = collect(&pool, rw).await;
    assert_eq!(rows[0], json!([7]));
    let (_, rows) = collect(&pool, query("SELECT @y, @@sql_mode, @@tx_read_only")).await;
    assert_eq!(rows[0], json!([null, PINNED_SQL_MODE, 1]));
    assert_eq!(pool.stats().size, 1, "the one connection was reused");
}

/// This connection's own command counters (MariaDB's `information_schema.SESSION_STATUS`).
const COUNTERS: &str = "SELECT LOWER(VARIABLE_NAME), CAST(VARIABLE_VALUE AS SIGNED)      FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME IN      ('COM_STMT_PREPARE', 'COM_STMT_EXECUTE', 'COM_SET_OPTION', 'COM_ROLLBACK', 'COM_BEGIN')      ORDER BY VARIABLE_NAME";

#[tokio::test]
async fn a_repeated_read_only_query_is_one_round_trip_on_a_kept_session() {
    let f = Fixture::new().await;
    let pool = f.pool(1).await;
    let counters = |rows: Vec<Value>| -> std::collections::BTreeMap<String, i64> {
        rows.iter()
            .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_i64().unwrap()))
            .collect()
    };
    let (_, first) = collect(&pool, query(COUNTERS)).await;
    let (_, second) = collect(&pool, query(COUNTERS)).await;
    let (first, second) = (counters(first), counters(second));
    assert_eq!(first.len(), 5, "{first:?}");
    // The counters survived (no reset), and between the two only the statement itself ran:
    // no setup (`SET`), no prepare (cached), no transaction to begin or roll back.
    assert_eq!(
        second["com_stmt_execute"],
        first["com_stmt_execute"] + 1,
        "{first:?} {second:?}"
    );
    for name in [
        "com_stmt_prepare",
        "com_set_option",
        "com_rollback",
        "com_begin",
    ] {
        assert_eq!(second[name], first[name], "{name}: {first:?} {second:?}");
    }
    // A different timeout changes the session's, with one setup round trip.
    let mut other = query(COUNTERS);
    other.timeout = Duration::from_secs(29);
    let (_, third) = collect(&pool, other).await;
    let third = counters(third);
    assert!(
        third["com_set_option"] > second["com_set_option"],
        "{third:?}"
    );
    assert_eq!(
        third["com_stmt_prepare"], second["com_stmt_prepare"],
        "{third:?}"
    );
    assert_eq!(pool.stats().size, 1);
}

#[tokio::test]
async fn a_statement_error_carries_the_servers_message_and_sqlstate() {
    let f = Fixture::new().await;
    let pool = f.pool(1).await;
    let err = pool
        .execute(query("SELECT * FROM no_such_table"))
        .await
        .err()
        .unwrap();
    match err {
        ExecError::QueryFailed { message, sqlstate } => {
            assert!(message.contains("no_such_table"), "{message}");
            assert_eq!(sqlstate.as_deref(), Some("42S02"));
        }
        other => panic!("{other:?}"),
    }
    // Two statements are never accepted (prepared statements are single statements).
    let err = pool
        .execute(query("SELECT 1; SELECT 2"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ExecError::QueryFailed { .. }), "{err:?}");
    assert_eq!(pool.stats().size, 1, "the connection survived the errors");
}

#[tokio::test]
async fn a_wrong_password_is_unavailable_and_never_echoed() {
    let f = Fixture::new().await;
    let mut spec = f.spec(1);
    if let Connection::Network { password, .. } = &mut spec.connection {
        *password = Secret::new("Wrong_pw_99123");
    }
    let pool = MysqlPool::open(&spec, &settings()).await.unwrap();
    let err = pool.execute(query("SELECT 1")).await.err().unwrap();
    assert!(matches!(err, ExecError::Unavailable(_)), "{err:?}");
    assert!(!err.to_string().contains("Wrong_pw_99123"));
    assert_eq!(pool.stats().size, 0);
}

#[tokio::test]
async fn check_and_schema_describe_the_server_and_its_tables() {
    let f = Fixture::new().await;
    let mut admin = f.admin().await;
    admin
        .query_drop("CREATE TABLE people (id INT NOT NULL PRIMARY KEY, name VARCHAR(40) NULL)")
        .await
        .unwrap();
    admin
        .query_drop("CREATE VIEW names AS SELECT name FROM people")
        .await
        .unwrap();
    admin.disconnect().await.unwrap();
    let pool = f.pool(1).await;
    let info = pool.check().await.unwrap();
    assert!(!info.server_version.is_empty());
    assert!(info.latency_ms >= 0.0);
    let tables = pool.schema().await.unwrap();
    let people = tables
        .iter()
        .find(|t| t.name == "people" && t.schema == f.db.name)
        .expect("the table is listed");
    assert_eq!(people.columns.len(), 2);
    assert_eq!(people.columns[0].name, "id");
    assert!(!people.columns[0].nullable);
    assert!(people.columns[1].nullable);
    assert!(people.columns[1].type_name.starts_with("varchar"));
    assert!(tables.iter().any(|t| t.name == "names"), "views are listed");
    pool.close();
    let err = pool.execute(query("SELECT 1")).await.err().unwrap();
    assert!(matches!(err, ExecError::Unavailable(_)), "{err:?}");
    assert_eq!(pool.stats().size, 0);
}

#[tokio::test]
async fn a_result_past_the_byte_limit_stops_with_result_too_large() {
    let f = Fixture::new().await;
    let settings = RegistrySettings {
        max_result_bytes: 10_000,
        ..settings()
    };
    let pool = MysqlPool::open(&f.spec(1), &settings).await.unwrap();
    let mut stream = rows_of(pool.execute(query(MILLION)).await.unwrap());
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
    f.assert_nothing_running_soon().await;
}
