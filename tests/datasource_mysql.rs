//! The MySQL/MariaDB driver against the real local server, connecting as a service account with a
//! password through the SSRF-checked address. The driver's connections have no default database
//! (the SQL policy qualifies every table), so the SQL sent here names the database too.
mod support;

use sluice::datasource::tls::TlsSettings;
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
use sluice::policy::catalog::{RelName, RelationKind};
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
                tls: TlsSettings::disabled(),
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

    /// `name` qualified with the test database, as the policy renders it.
    fn t(&self, name: &str) -> String {
        format!("{}.{name}", self.db.name)
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
    let (stream, rows) = collect(
        &pool,
        query(&format!("SELECT * FROM {} ORDER BY id", f.t("types"))),
    )
    .await;
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
    let t = f.t("t");
    let mut req = write(&format!("INSERT INTO {t} VALUES (?, ?), (?, ?)"));
    req.params = vec![json!(1), json!("a"), json!(2), json!("b")];
    match pool.execute(req).await.unwrap() {
        Execution::Affected { rows_affected } => assert_eq!(rows_affected, 2),
        Execution::Rows(_) => panic!("a write reports rows affected"),
    }
    match pool
        .execute(write(&format!("UPDATE {t} SET v = 'c'")))
        .await
        .unwrap()
    {
        Execution::Affected { rows_affected } => assert_eq!(rows_affected, 2),
        Execution::Rows(_) => panic!("a write reports rows affected"),
    }
    let n: Option<i64> = admin
        .query_first("SELECT COUNT(*) FROM t WHERE v = 'c'")
        .await
        .unwrap();
    assert_eq!(n, Some(2), "the writes were committed");

    // The same write on a read-only execution is refused by the server.
    let mut ro = write(&format!("INSERT INTO {t} VALUES (3, 'x')"));
    ro.read_only = true;
    let err = pool.execute(ro).await.err().unwrap();
    assert!(matches!(err, ExecError::QueryFailed { .. }), "{err:?}");
    // So is a write sent down the read-only query path (in a read-only transaction)...
    let err = pool
        .execute(query(&format!("INSERT INTO {t} VALUES (4, 'y')")))
        .await
        .err()
        .unwrap();
    match &err {
        ExecError::QueryFailed { sqlstate, .. } => assert_eq!(sqlstate.as_deref(), Some("25006")),
        other => panic!("expected the server's refusal, got {other:?}"),
    }
    // ...while a write right after it, on the same connection, still commits.
    match pool
        .execute(write(&format!("UPDATE {t} SET v = 'd'")))
        .await
        .unwrap()
    {
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
    let err = pool
        .execute(query(&format!("SELECT {}()", f.t("sneaky"))))
        .await
        .err()
        .unwrap();
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

/// MariaDB's own `max_statement_time` (set to the statement's timeout) ends some functions with a
/// value instead of an error: `BENCHMARK()` returns 0, `SLEEP()` 1. When the server's limit fires
/// before the gateway's timer is seen to (tokio rounds timers up to its millisecond tick, and the
/// server's limit starts only a fraction of a millisecond later), that value arrives as if the
/// statement had finished. Whatever ends at or after the deadline is a timeout, never an answer.
#[tokio::test]
async fn a_statement_cut_short_by_the_servers_own_limit_is_a_timeout_not_an_answer() {
    let f = Fixture::new().await;
    let pool = f.pool(2).await;
    let mut answered = Vec::new();
    for _ in 0..40 {
        for paced_by_client in [true, false] {
            for sql in [SPIN, "SELECT SLEEP(10)"] {
                // A statement with the same timeout first, so the connection is ready for the
                // next (its setup ran after the answer) and the server starts at once: the race.
                // (On a loaded machine the warm-up may time out itself: then no race this time.)
                let mut warm = query("SELECT 1");
                warm.timeout = Duration::from_millis(30);
                if let Ok(exec) = pool.execute(warm).await {
                    rows_of(exec).for_each(|_| async {}).await;
                }
                let mut req = query(sql);
                req.timeout = Duration::from_millis(30);
                req.paced_by_client = paced_by_client;
                match pool.execute(req).await {
                    Err(ExecError::Timeout(_)) => {}
                    Err(e) => panic!("{sql}: expected a timeout, got {e:?}"),
                    Ok(exec) => {
                        let mut stream = rows_of(exec);
                        let mut items = Vec::new();
                        while let Some(r) = stream.next().await {
                            items.push(r.map(|b| String::from_utf8_lossy(&b).into_owned()));
                        }
                        if !matches!(items.last(), Some(Err(ExecError::Timeout(_)))) {
                            answered.push(format!("{sql} (paced {paced_by_client}): {items:?}"));
                        }
                    }
                }
            }
        }
    }
    assert!(
        answered.is_empty(),
        "{} of 160 statements stopped by the server's limit were answered as complete: {answered:#?}",
        answered.len()
    );
    f.assert_nothing_running_soon().await;
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
    let mut sneaky = query("SELECT @x := 5, @@sql_mode, @@time_zone, @@in_transaction");
    sneaky.may_change_session = true;
    let (_, rows) = collect(&pool, sneaky).await;
    assert_eq!(rows[0], json!([5, PINNED_SQL_MODE, "+00:00", 1]));
    let (_, rows) = collect(&pool, query("SELECT @x, @@sql_mode, @@in_transaction")).await;
    assert_eq!(rows[0][0], Value::Null, "user variables do not survive");
    assert_eq!(
        rows[0][1],
        json!(PINNED_SQL_MODE),
        "pinned again after the reset"
    );
    assert_eq!(rows[0][2], json!(1), "queries run inside a transaction");
    // After a read-write statement (reset too), the next query's session is set up again.
    let mut rw = write("SELECT @y := 7");
    rw.is_query = true;
    let (_, rows) = collect(&pool, rw).await;
    assert_eq!(rows[0], json!([7]));
    let (_, rows) = collect(&pool, query("SELECT @y, @@sql_mode, @@in_transaction")).await;
    assert_eq!(rows[0], json!([null, PINNED_SQL_MODE, 1]));
    assert_eq!(pool.stats().size, 1, "the one connection was reused");
}

/// This connection's own command counters (MariaDB's `information_schema.SESSION_STATUS`).
const COUNTERS: &str = "SELECT LOWER(VARIABLE_NAME), CAST(VARIABLE_VALUE AS SIGNED) \
     FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME IN \
     ('COM_STMT_PREPARE', 'COM_STMT_EXECUTE', 'COM_SET_OPTION', 'COM_ROLLBACK', 'COM_BEGIN') \
     ORDER BY VARIABLE_NAME";

/// Between two read-only queries with the same timeout exactly one setup runs (sent after the
/// first answer: the check, `ROLLBACK`, `SET`, `START TRANSACTION READ ONLY`), so each query has
/// a fresh read-only transaction and the second sends no setup of its own; the prepare is
/// cached and the session is not reset (its counters survive).
#[tokio::test]
async fn each_read_only_query_gets_a_fresh_read_only_transaction_set_up_after_the_previous_answer()
{
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
    let delta = |later: &std::collections::BTreeMap<String, i64>,
                 earlier: &std::collections::BTreeMap<String, i64>,
                 name: &str| later[name] - earlier[name];
    assert_eq!(delta(&second, &first, "com_stmt_execute"), 1, "{second:?}");
    assert_eq!(delta(&second, &first, "com_stmt_prepare"), 0, "{second:?}");
    for name in ["com_set_option", "com_rollback", "com_begin"] {
        assert_eq!(
            delta(&second, &first, name),
            1,
            "{name}: {first:?} {second:?}"
        );
    }
    // A different timeout needs its own setup before the statement: a second one.
    let mut other = query(COUNTERS);
    other.timeout = Duration::from_secs(29);
    let (_, third) = collect(&pool, other).await;
    let third = counters(third);
    assert_eq!(delta(&third, &second, "com_begin"), 2, "{third:?}");
    assert_eq!(delta(&third, &second, "com_set_option"), 2, "{third:?}");
    assert_eq!(delta(&third, &second, "com_stmt_prepare"), 0, "{third:?}");
    assert_eq!(pool.stats().size, 1);
}

#[tokio::test]
async fn a_statement_error_carries_the_servers_message_and_sqlstate() {
    let f = Fixture::new().await;
    let pool = f.pool(1).await;
    let err = pool
        .execute(query(&format!("SELECT * FROM {}", f.t("no_such_table"))))
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

/// Grants the service account more (SHOW VIEW, TRIGGER…).
async fn grant(f: &Fixture, privileges: &str, on: &str) {
    grant_to(f, &f.user, privileges, on).await;
}

async fn grant_to(f: &Fixture, user: &str, privileges: &str, on: &str) {
    let mut admin = f.admin().await;
    for host in ["%", "localhost"] {
        admin
            .query_drop(format!("GRANT {privileges} ON {on} TO '{user}'@'{host}'"))
            .await
            .unwrap();
    }
    admin.disconnect().await.unwrap();
}

/// Runs each statement as the admin, in the test database.
async fn admin_run(f: &Fixture, statements: &[&str]) {
    let mut admin = f.admin().await;
    for s in statements {
        admin.query_drop(*s).await.unwrap();
    }
    admin.disconnect().await.unwrap();
}

/// The error a statement ends with, whether the server sends it before the columns or among
/// the rows (a function that fails on its first row).
async fn error_of(pool: &MysqlPool, req: Execute) -> Option<ExecError> {
    match pool.execute(req).await {
        Err(e) => Some(e),
        Ok(Execution::Affected { .. }) => None,
        Ok(Execution::Rows(mut stream)) => {
            while let Some(r) = stream.next().await {
                if let Err(e) = r {
                    return Some(e);
                }
            }
            None
        }
    }
}

fn server_error(err: &ExecError) -> (&str, &str) {
    match err {
        ExecError::QueryFailed { message, sqlstate } => {
            (message.as_str(), sqlstate.as_deref().unwrap_or(""))
        }
        other => panic!("expected the server's refusal, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 14: no default database.

#[tokio::test]
async fn connections_have_no_default_database_so_an_unqualified_name_never_reaches_a_stored_function()
 {
    let f = Fixture::new().await;
    // MariaDB 10.11 has no built-in ANY_VALUE: with a default database the call ran this.
    admin_run(
        &f,
        &[
            "CREATE TABLE t (id INT)",
            "INSERT INTO t VALUES (1)",
            "CREATE FUNCTION any_value(x INT) RETURNS INT DETERMINISTIC RETURN 42",
        ],
    )
    .await;
    let pool = f.pool(1).await;
    let (_, rows) = collect(&pool, query("SELECT DATABASE()")).await;
    assert_eq!(rows[0], json!([null]));
    let err = error_of(&pool, query("SELECT any_value(1)"))
        .await
        .expect("an unqualified call must not run the stored function");
    let (message, _) = server_error(&err);
    assert!(message.contains("does not exist"), "{message}");
    // Unqualified tables do not resolve either; qualified ones do.
    let err = error_of(&pool, query("SELECT id FROM t")).await.unwrap();
    assert_eq!(server_error(&err).1, "3D000", "no database selected");
    let (_, rows) = collect(&pool, query(&format!("SELECT id FROM {}", f.t("t")))).await;
    assert_eq!(rows, vec![json!([1])]);
    // The catalogue still names the datasource's database as where names resolve.
    let catalog = pool.introspect().await.unwrap();
    assert_eq!(catalog.default_schema, f.db.name);
}

// ---------------------------------------------------------------------------------------------
// Issue 14: read-only is a property of every transaction.

#[tokio::test]
async fn a_function_that_clears_tx_read_only_leaves_the_next_requests_on_the_connection_read_only()
{
    let f = Fixture::new().await;
    admin_run(
        &f,
        &[
            "CREATE TABLE victims (id INT)",
            "CREATE FUNCTION flip() RETURNS INT BEGIN SET @@session.tx_read_only = 0; RETURN 1; END",
            "CREATE FUNCTION sneaky() RETURNS INT MODIFIES SQL DATA \
             BEGIN INSERT INTO victims VALUES (1); RETURN 1; END",
        ],
    )
    .await;
    let pool = f.pool(1).await;
    let id = |rows: Vec<Value>| rows[0][0].as_u64().expect("a connection id");
    let before = id(collect(&pool, query("SELECT CONNECTION_ID()")).await.1);
    // As if the policy had been fooled: not marked as calling user functions.
    let (_, rows) = collect(&pool, query(&format!("SELECT {}()", f.t("flip")))).await;
    assert_eq!(rows, vec![json!([1])]);
    for _ in 0..3 {
        let err = error_of(&pool, query(&format!("SELECT {}()", f.t("sneaky"))))
            .await
            .expect("the write must be refused");
        assert_eq!(server_error(&err).1, "25006", "{err:?}");
        let err = error_of(
            &pool,
            query(&format!("INSERT INTO {} VALUES (2)", f.t("victims"))),
        )
        .await
        .expect("the write must be refused");
        assert_eq!(server_error(&err).1, "25006", "{err:?}");
    }
    let after = id(collect(&pool, query("SELECT CONNECTION_ID()")).await.1);
    assert_eq!(before, after, "all of it ran on the one pooled connection");
    let mut admin = f.admin().await;
    let n: Option<i64> = admin
        .query_first("SELECT COUNT(*) FROM victims")
        .await
        .unwrap();
    assert_eq!(n, Some(0), "nothing was written");
    admin.disconnect().await.unwrap();
}

#[tokio::test]
async fn settings_a_function_changed_are_pinned_again_before_the_next_statement() {
    let f = Fixture::new().await;
    admin_run(
        &f,
        &["CREATE FUNCTION unpin() RETURNS INT BEGIN \
               SET @@session.sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES'; \
               SET @@session.time_zone = '+05:00'; \
               SET @@session.character_set_results = 'latin1'; \
               SET @@session.sql_select_limit = 1; \
               SET @@session.div_precision_increment = 12; \
               SET @@session.foreign_key_checks = 0; \
               SET @@session.max_statement_time = 1000; \
               RETURN 1; END"],
    )
    .await;
    let pool = f.pool(1).await;
    let (_, rows) = collect(&pool, query(&format!("SELECT {}()", f.t("unpin")))).await;
    assert_eq!(rows, vec![json!([1])]);
    let (_, rows) = collect(
        &pool,
        query(
            "SELECT @@sql_mode, @@time_zone, @@character_set_results, \
             @@div_precision_increment, @@max_statement_time \
             UNION ALL SELECT 'a second row', NULL, NULL, NULL, NULL",
        ),
    )
    .await;
    assert_eq!(
        rows,
        vec![
            json!([PINNED_SQL_MODE, "+00:00", "utf8mb4", "4", 30.0]),
            json!(["a second row", null, null, null, null])
        ],
        "sql_select_limit is back to its default too"
    );
    // What changes only writes is set back before a read-write statement.
    let (_, rows) = collect(&pool, query(&format!("SELECT {}()", f.t("unpin")))).await;
    assert_eq!(rows, vec![json!([1])]);
    let mut rw = query("SELECT @@foreign_key_checks");
    rw.read_only = false;
    let (_, rows) = collect(&pool, rw).await;
    assert_eq!(rows, vec![json!([1])]);
}

#[tokio::test]
async fn a_read_only_query_sees_what_was_committed_after_the_previous_one() {
    let f = Fixture::new().await;
    admin_run(&f, &["CREATE TABLE t (id INT)"]).await;
    let pool = f.pool(1).await;
    let count = format!("SELECT COUNT(*) FROM {}", f.t("t"));
    let (_, rows) = collect(&pool, query(&count)).await;
    assert_eq!(rows, vec![json!([0])]);
    // The connection now waits in the read-only transaction started after that answer; its
    // snapshot is taken by the next read, not when the transaction started.
    admin_run(&f, &["INSERT INTO t VALUES (1)"]).await;
    let (_, rows) = collect(&pool, query(&count)).await;
    assert_eq!(rows, vec![json!([1])]);
}

// ---------------------------------------------------------------------------------------------
// Issue 14: nothing a statement leaves in the session reaches the next request.

/// Each state of the issue goes through a pool of one connection, left by a stored function
/// called from a statement not marked `may_change_session` (as if the policy had been fooled).
#[tokio::test]
async fn session_state_left_by_a_function_the_policy_missed_never_reaches_the_next_request() {
    let f = Fixture::new().await;
    let lock = format!("{}_lock", f.db.name);
    admin_run(
        &f,
        &[
            "CREATE FUNCTION set_var() RETURNS INT BEGIN SET @leftover = 5; RETURN 1; END",
            &format!("CREATE FUNCTION take_lock() RETURNS INT RETURN GET_LOCK('{lock}', 0)"),
            "CREATE FUNCTION make_temp() RETURNS INT MODIFIES SQL DATA BEGIN \
               CREATE TEMPORARY TABLE leftover_tmp (a INT); RETURN 1; END",
            "CREATE FUNCTION set_mode() RETURNS INT BEGIN \
               SET @@session.sql_mode = 'ANSI_QUOTES'; SET @@session.time_zone = '+03:00'; \
               SET @@session.tx_read_only = 0; RETURN 1; END",
        ],
    )
    .await;
    grant(&f, "CREATE TEMPORARY TABLES", &format!("{}.*", f.db.name)).await;
    let pool = f.pool(1).await;
    let call = |name: &str| query(&format!("SELECT {}()", f.t(name)));
    let id = |rows: Vec<Value>| rows[0][0].as_u64().expect("a connection id");
    let first_connection = id(collect(&pool, query("SELECT CONNECTION_ID()")).await.1);

    // User variables.
    assert_eq!(collect(&pool, call("set_var")).await.1, vec![json!([1])]);
    let (_, rows) = collect(&pool, query("SELECT @leftover")).await;
    assert_eq!(rows, vec![json!([null])], "a user variable survived");

    // Named locks: released before anyone else gets the connection.
    assert_eq!(collect(&pool, call("take_lock")).await.1, vec![json!([1])]);
    let mut is_used = query("SELECT IS_USED_LOCK(?)");
    is_used.params = vec![json!(lock)];
    let (_, rows) = collect(&pool, is_used).await;
    assert_eq!(rows, vec![json!([null])], "a named lock is still held");

    // Settings, read-only included.
    assert_eq!(collect(&pool, call("set_mode")).await.1, vec![json!([1])]);
    let (_, rows) = collect(&pool, query("SELECT @@sql_mode, @@time_zone")).await;
    assert_eq!(rows, vec![json!([PINNED_SQL_MODE, "+00:00"])]);
    let err = error_of(&pool, query(&format!("SELECT {}()", f.t("make_temp"))))
        .await
        .expect("still read-only");
    assert_eq!(server_error(&err).1, "25006", "{err:?}");

    // Temporary tables: a read-only transaction refuses to create one (above); one made by a
    // read-write statement goes with the reset that follows it.
    let mut rw = call("make_temp");
    rw.read_only = false;
    assert_eq!(collect(&pool, rw).await.1, vec![json!([1])]);
    let err = error_of(
        &pool,
        query(&format!("SELECT a FROM {}", f.t("leftover_tmp"))),
    )
    .await
    .expect("the temporary table must be gone");
    assert_eq!(server_error(&err).1, "42S02", "{err:?}");

    // Prepared statements: a stored function cannot make one (the server refuses the function),
    // and PREPARE cannot be sent as a prepared statement, so there is nothing to detect.
    let mut admin = f.admin().await;
    let refused = admin
        .query_drop(
            "CREATE FUNCTION prep() RETURNS INT BEGIN PREPARE s FROM 'SELECT 1'; RETURN 1; END",
        )
        .await
        .expect_err("dynamic SQL in a function");
    assert!(refused.to_string().contains("1336"), "{refused}");
    admin.disconnect().await.unwrap();
    let err = error_of(&pool, query("PREPARE s FROM 'SELECT 1'"))
        .await
        .unwrap();
    assert!(matches!(err, ExecError::QueryFailed { .. }), "{err:?}");

    // All of it on the one connection: found and reset, not thrown away.
    let last = id(collect(&pool, query("SELECT CONNECTION_ID()")).await.1);
    assert_eq!(first_connection, last);
    assert_eq!(pool.stats().size, 1);
}

// ---------------------------------------------------------------------------------------------
// Issue 14: what KILL QUERY cannot stop keeps its pool slot.

/// One string function call MariaDB does not interrupt: about five seconds of one core on an
/// idle machine, nearly all of it after `KILL QUERY` (the case, with a shorter haystack).
const UNKILLABLE: &str = "SELECT LOCATE(CONCAT(REPEAT('a', 20000), 'b'), REPEAT('a', 800000))";

/// The service account's threads running anything (a killed statement shows as `Killed`).
async fn busy_threads(f: &Fixture) -> Vec<(String, Option<String>)> {
    let mut admin = f.admin().await;
    let rows: Vec<(String, Option<String>)> = admin
        .exec(
            "SELECT COMMAND, INFO FROM information_schema.PROCESSLIST \
             WHERE USER = ? AND COMMAND <> 'Sleep'",
            (f.user.clone(),),
        )
        .await
        .unwrap();
    admin.disconnect().await.unwrap();
    rows
}

#[tokio::test]
async fn a_statement_kill_query_cannot_stop_keeps_its_pool_slot_until_the_server_finishes() {
    let f = Fixture::new().await;
    let pool = f.pool(1).await;
    let mut req = query(UNKILLABLE);
    req.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = error_of(&pool, req).await.unwrap();
    assert!(matches!(err, ExecError::Timeout(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout came late: {:?}",
        started.elapsed()
    );
    // KILL QUERY was sent, and the statement runs on regardless.
    let busy = busy_threads(&f).await;
    assert!(
        busy.iter()
            .any(|(_, info)| info.as_deref().is_some_and(|i| i.contains("LOCATE"))),
        "the killed call still runs: {busy:?}"
    );
    // Its connection holds the only slot: the next request waits, then gets pool_timeout
    // rather than a second busy server thread.
    assert_eq!(pool.stats().in_use, 1);
    let err = error_of(&pool, query("SELECT 1")).await.unwrap();
    assert_eq!(err, ExecError::PoolTimeout);
    assert!(
        busy_threads(&f).await.len() <= 1,
        "a second statement started"
    );
    // Once the server is done, the slot comes back.
    let start = Instant::now();
    loop {
        match pool.execute(query("SELECT 1")).await {
            Ok(e) => {
                drop(e);
                break;
            }
            Err(ExecError::PoolTimeout) => {
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "the slot never came back"
                );
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    let busy = busy_threads(&f).await;
    assert!(
        !busy
            .iter()
            .any(|(_, info)| info.as_deref().is_some_and(|i| i.contains("LOCATE"))),
        "the slot came back while the call still ran: {busy:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 14: bounded values.

fn capped(bytes: u64) -> RegistrySettings {
    RegistrySettings {
        max_result_bytes: bytes,
        ..settings()
    }
}

#[tokio::test]
async fn a_value_larger_than_the_result_cap_ends_with_result_too_large_and_the_pool_still_serves() {
    let f = Fixture::new().await;
    let cap = 1024 * 1024;
    let pool = MysqlPool::open(&f.spec(1), &capped(cap)).await.unwrap();
    let mut stream = rows_of(
        pool.execute(query("SELECT REPEAT('x', 5000000)"))
            .await
            .unwrap(),
    );
    let mut errors = Vec::new();
    while let Some(r) = stream.next().await {
        if let Err(e) = r {
            errors.push(e);
        }
    }
    assert_eq!(errors, vec![ExecError::ResultTooLarge(cap)]);
    // As the HTTP layer does: the stream goes once read (what follows it runs after the drop).
    drop(stream);
    let (_, rows) = collect(&pool, query("SELECT 1")).await;
    assert_eq!(rows, vec![json!([1])]);
}

/// The rows a write returns are counted, not encoded, so only the client-side packet limit
/// keeps a huge returned value out of the gateway's memory.
#[tokio::test]
async fn a_write_returning_a_value_larger_than_the_cap_is_refused_and_rolled_back() {
    let f = Fixture::new().await;
    admin_run(&f, &["CREATE TABLE big (id INT PRIMARY KEY, v LONGTEXT)"]).await;
    let cap = 1024 * 1024;
    let pool = MysqlPool::open(&f.spec(1), &capped(cap)).await.unwrap();
    let err = pool
        .execute(write(&format!(
            "INSERT INTO {} VALUES (1, REPEAT('x', 5000000)) RETURNING v",
            f.t("big")
        )))
        .await
        .err()
        .expect("the returned value is over the cap");
    assert_eq!(err, ExecError::ResultTooLarge(cap));
    let mut admin = f.admin().await;
    let n: Option<i64> = admin.query_first("SELECT COUNT(*) FROM big").await.unwrap();
    assert_eq!(n, Some(0), "the write was not committed");
    admin.disconnect().await.unwrap();
    let (_, rows) = collect(&pool, query("SELECT 1")).await;
    assert_eq!(rows, vec![json!([1])]);
}

#[tokio::test]
async fn a_connection_that_read_a_very_large_row_is_not_pooled_again() {
    let f = Fixture::new().await;
    let pool = MysqlPool::open(&f.spec(1), &capped(64 * 1024 * 1024))
        .await
        .unwrap();
    let id = |rows: Vec<Value>| rows[0][0].as_u64().expect("a connection id");
    let (_, rows) = collect(
        &pool,
        query("SELECT CONNECTION_ID(), LENGTH(REPEAT('x', 100))"),
    )
    .await;
    let small = id(rows);
    let (_, rows) = collect(&pool, query("SELECT CONNECTION_ID(), REPEAT('x', 5000000)")).await;
    assert_eq!(id(rows.clone()), small, "a small row keeps the connection");
    assert_eq!(rows[0][1].as_str().map(str::len), Some(5_000_000));
    let (_, rows) = collect(&pool, query("SELECT CONNECTION_ID()")).await;
    assert_ne!(id(rows), small, "the connection that read 5 MB was dropped");
    assert_eq!(pool.stats().size, 1);
}

// ---------------------------------------------------------------------------------------------
// Issue 14: INSERT … RETURNING.

#[tokio::test]
async fn insert_returning_reports_the_rows_it_inserted_as_rows_affected() {
    let f = Fixture::new().await;
    admin_run(&f, &["CREATE TABLE t (id INT PRIMARY KEY)"]).await;
    let pool = f.pool(1).await;
    let t = f.t("t");
    match pool
        .execute(write(&format!(
            "INSERT INTO {t} VALUES (1), (2), (3) RETURNING id"
        )))
        .await
        .unwrap()
    {
        Execution::Affected { rows_affected } => assert_eq!(rows_affected, 3),
        Execution::Rows(_) => panic!("a write reports rows affected"),
    }
    // Without RETURNING, the server's own count.
    match pool
        .execute(write(&format!("DELETE FROM {t} WHERE id > 1")))
        .await
        .unwrap()
    {
        Execution::Affected { rows_affected } => assert_eq!(rows_affected, 2),
        Execution::Rows(_) => panic!("a write reports rows affected"),
    }
    let mut admin = f.admin().await;
    let n: Option<i64> = admin.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(1));
    admin.disconnect().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Issue 14: the catalogue.

#[tokio::test]
async fn introspect_lists_this_servers_own_built_ins_and_names_the_database_as_default() {
    let f = Fixture::new().await;
    let pool = f.pool(1).await;
    let c = pool.introspect().await.unwrap();
    assert_eq!(c.kind, Some(DatasourceKind::Mysql));
    assert!(
        c.server_version.to_lowercase().contains("mariadb"),
        "{}",
        c.server_version
    );
    assert_eq!(c.default_schema, f.db.name);
    for name in ["mid", "locate", "concat", "bit_count", "inet_aton", "nvl"] {
        assert!(c.builtin_functions.contains(name), "{name} is a built-in");
    }
    // Listed on the static allow-list, but not a built-in of MariaDB 10.11.
    for name in ["any_value", "regexp_like"] {
        assert!(
            !c.builtin_functions.contains(name),
            "{name} is not a built-in here"
        );
    }
    assert!(c.relations.is_empty(), "{:?}", c.relations);
}

#[tokio::test]
async fn views_list_the_tables_and_stored_functions_they_reach_in_any_visible_database() {
    let f = Fixture::new().await;
    let other = support::db::MysqlTestDb::create().await;
    let o = other.name.clone();
    let db = f.db.name.clone();
    admin_run(
        &f,
        &[
            "CREATE TABLE t (a INT)",
            &format!("CREATE TABLE {o}.hidden (a INT)"),
            "CREATE FUNCTION f(x INT) RETURNS INT DETERMINISTIC RETURN x + 1",
            &format!(
                "CREATE VIEW v AS WITH c AS (SELECT a FROM t) \
                 SELECT f(c.a) AS fa, CAST(c.a AS CHAR) AS ca, c.a MOD 2 AS m, \
                 (SELECT MAX(a) FROM {o}.hidden) AS h FROM c"
            ),
            "CREATE VIEW vv AS SELECT fa FROM v",
            &format!("CREATE VIEW {o}.ov AS SELECT a FROM {db}.t"),
        ],
    )
    .await;
    grant(&f, "SHOW VIEW", &format!("{db}.*")).await;
    grant(&f, "SELECT, SHOW VIEW", &format!("{o}.*")).await;
    let pool = f.pool(1).await;
    let c = pool.introspect().await.unwrap();
    let v = c
        .relation(&RelName::new(&db, "v"))
        .expect("the view is listed");
    assert_eq!(v.kind, RelationKind::View);
    assert!(!v.opaque_reads);
    assert_eq!(
        v.reads,
        vec![RelName::new(&db, "t"), RelName::new(&o, "hidden")]
    );
    assert_eq!(v.read_functions, vec![format!("{db}.f")]);
    let vv = c.relation(&RelName::new(&db, "vv")).expect("listed");
    assert_eq!(vv.reads, vec![RelName::new(&db, "v")]);
    assert!(vv.read_functions.is_empty());
    let ov = c
        .relation(&RelName::new(&o, "ov"))
        .expect("other databases are read");
    assert_eq!(ov.reads, vec![RelName::new(&db, "t")]);
}

#[tokio::test]
async fn a_view_whose_definition_the_account_may_not_see_is_opaque() {
    let f = Fixture::new().await;
    admin_run(
        &f,
        &["CREATE TABLE t (a INT)", "CREATE VIEW v AS SELECT a FROM t"],
    )
    .await;
    // SELECT, but no SHOW VIEW: MariaDB hides the definition.
    let pool = f.pool(1).await;
    let c = pool.introspect().await.unwrap();
    let v = c.relation(&RelName::new(&f.db.name, "v")).expect("listed");
    assert_eq!(v.kind, RelationKind::View);
    assert!(v.opaque_reads, "{v:?}");
    assert!(v.reads.is_empty());
}

#[tokio::test]
async fn a_merge_table_reads_its_member_tables() {
    let f = Fixture::new().await;
    let other = support::db::MysqlTestDb::create().await;
    let o = other.name.clone();
    admin_run(
        &f,
        &[
            "CREATE TABLE m1 (a INT) ENGINE=MyISAM",
            &format!("CREATE TABLE {o}.m2 (a INT) ENGINE=MyISAM"),
            &format!("CREATE TABLE mm (a INT) ENGINE=MRG_MyISAM UNION=(m1, {o}.m2)"),
        ],
    )
    .await;
    let pool = f.pool(1).await;
    let c = pool.introspect().await.unwrap();
    let mm = c.relation(&RelName::new(&f.db.name, "mm")).expect("listed");
    assert_eq!(mm.kind, RelationKind::Merge);
    assert_eq!(
        mm.reads,
        vec![RelName::new(&f.db.name, "m1"), RelName::new(&o, "m2")]
    );
    assert!(!mm.opaque_reads);
}

/// MariaDB 10.11 lists a table's triggers only to accounts holding a privilege other than
/// SELECT on it (INSERT, UPDATE, DELETE, TRIGGER…: checked), that is to accounts that can fire
/// them. A read-only account sees none, and needs none.
#[tokio::test]
async fn a_table_with_a_trigger_has_opaque_writes_for_an_account_that_can_write_it() {
    let f = Fixture::new().await;
    admin_run(
        &f,
        &[
            "CREATE TABLE t (a INT)",
            "CREATE TABLE audit (a INT)",
            "CREATE TRIGGER t_ai AFTER INSERT ON t FOR EACH ROW INSERT INTO audit VALUES (NEW.a)",
        ],
    )
    .await;
    let t = RelName::new(&f.db.name, "t");
    let pool = f.pool(1).await;
    let c = pool.introspect().await.unwrap();
    let rel = c.relation(&t).expect("listed");
    assert!(rel.opaque_writes);
    assert!(c.relation(&RelName::new(&f.db.name, "audit")).is_none());

    let reader = f.db.create_user("reader", PASSWORD).await;
    grant_to(&f, &reader, "SELECT", &format!("{}.*", f.db.name)).await;
    let mut spec = f.spec(1);
    if let Connection::Network { user, .. } = &mut spec.connection {
        *user = reader;
    }
    let pool = MysqlPool::open(&spec, &settings()).await.unwrap();
    let c = pool.introspect().await.unwrap();
    assert!(
        c.relation(&t).is_none(),
        "a SELECT-only account sees no trigger"
    );
}

#[tokio::test]
async fn a_foreign_key_that_cascades_lists_the_child_on_its_parent() {
    let f = Fixture::new().await;
    let other = support::db::MysqlTestDb::create().await;
    let o = other.name.clone();
    let db = f.db.name.clone();
    let fk = |table: &str, db_: &str, rule: &str| {
        format!(
            "CREATE TABLE {db_}.{table} (pid INT, FOREIGN KEY (pid) REFERENCES {db}.p (id) {rule}) \
             ENGINE=InnoDB"
        )
    };
    admin_run(
        &f,
        &[
            "CREATE TABLE p (id INT PRIMARY KEY) ENGINE=InnoDB",
            &fk("cascade_child", &db, "ON DELETE CASCADE"),
            &fk("null_child", &db, "ON UPDATE SET NULL"),
            &fk("plain_child", &db, ""),
            &fk("far_child", &o, "ON DELETE CASCADE"),
            &fk("far_plain", &o, "ON DELETE RESTRICT"),
            &fk("unseen_child", &o, "ON DELETE CASCADE"),
        ],
    )
    .await;
    // Only SELECT on the other database's tables: MariaDB then hides the foreign keys' rules
    // (`REFERENTIAL_CONSTRAINTS`), and they are read from `SHOW CREATE TABLE` instead.
    grant(&f, "SELECT", &format!("{o}.far_child")).await;
    grant(&f, "SELECT", &format!("{o}.far_plain")).await;
    let pool = f.pool(1).await;
    let c = pool.introspect().await.unwrap();
    let p = c.relation(&RelName::new(&db, "p")).expect("listed");
    let mut cascades = p.cascades.clone();
    cascades.sort();
    let mut expected = vec![
        RelName::new(&db, "cascade_child"),
        RelName::new(&db, "null_child"),
        RelName::new(&o, "far_child"),
    ];
    expected.sort();
    // `unseen_child`, on which the account has no privilege at all, is invisible to it: the
    // grants' job (module notes of `mysql/catalog.rs`).
    assert_eq!(cascades, expected);
    assert!(c.relation(&RelName::new(&db, "plain_child")).is_none());
}
