//! The SQLite driver against real files under an allowed root: what is particular to SQLite.
//! What every driver does (max_rows, streaming, writes, deadlines, cancellation, pool bounds, the
//! allowed roots, check and schema, the result cap) is checked in `tests/driver_contract.rs`.
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use sluice::datasource::sqlite::SqlitePool;
use sluice::datasource::{
    Connection, DatasourceSpec, ExecError, Execute, Execution, RegistrySettings, RowStream,
};
use sluice::model::{DatasourceId, DatasourceKind};
use sluice::policy::catalog::{RelName, RelationKind};

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

/// One call of a quadratic built-in: SQLite looks at its interrupt only between VDBE steps, so
/// nothing stops this call once it started (it runs for seconds).
const STUCK: &str =
    "SELECT instr(printf('%.*c', 1000000, 'a'), printf('%.*c', 500000, 'a') || 'b')";

/// Waits (generously: the abandoned call runs on for seconds) until no abandoned statement of
/// `pool` is running any more.
async fn assert_abandoned_statements_end(pool: &SqlitePool) {
    let start = Instant::now();
    while pool.abandoned() != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the abandoned statement never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_string_past_the_value_limit_is_refused_before_it_is_built_and_the_next_statement_works()
{
    let f = Fixture::new("");
    let pool = f.pool(1).await;
    let err = pool
        .execute(query("SELECT length(printf('%.*c', 900000000, 'x'))"))
        .await
        .err()
        .expect("a 900 MB string is refused");
    assert!(
        matches!(&err, ExecError::QueryFailed { message, .. } if message.contains("larger than")),
        "{err:?}"
    );
    // The limit follows the result cap: a value the result could never carry is never built.
    let settings = RegistrySettings {
        max_result_bytes: 1000,
        ..f.settings()
    };
    let small = SqlitePool::open(&f.spec(1), &settings).await.unwrap();
    let err = small
        .execute(query("SELECT length(zeroblob(2000))"))
        .await
        .err()
        .expect("a value larger than the result cap is refused");
    assert!(matches!(err, ExecError::QueryFailed { .. }), "{err:?}");
    let (_, rows) = collect(&small, query("SELECT length(zeroblob(900))")).await;
    assert_eq!(rows, vec![json!([900])]);
    let (_, rows) = collect(&pool, query("SELECT 1")).await;
    assert_eq!(rows, vec![json!([1])]);
}

/// Runs in a process of its own (see the test below): the heap limit is process-wide, and
/// filling it would make the other tests' allocations fail too.
#[tokio::test]
#[ignore = "run by a_statement_that_fills_the_sqlite_heap_fails_clearly_and_the_next_one_works"]
async fn heap_limit_child() {
    if std::env::var_os("SLUICE_TEST_HEAP_CHILD").is_none() {
        return;
    }
    sluice::datasource::sqlite::set_heap_limit(128 * 1024 * 1024);
    assert_eq!(sluice::datasource::sqlite::heap_limit(), 128 * 1024 * 1024);
    let f = Fixture::new("");
    let pool = f.pool(1).await;
    // Six values of 30 MB, each under the value limit (a quarter of the heap), held at once.
    let column = |c: char| format!("printf('%.*c', 30000000, '{c}')");
    let sql = format!(
        "SELECT {} FROM (SELECT 1)",
        ['a', 'b', 'c', 'd', 'e', 'f'].map(column).join(", ")
    );
    let err = pool.execute(query(&sql)).await.err().expect("refused");
    assert!(
        matches!(&err, ExecError::QueryFailed { message, .. } if message.contains("more memory")),
        "{err:?}"
    );
    let (_, rows) = collect(&pool, query("SELECT length(printf('%.*c', 1000000, 'x'))")).await;
    assert_eq!(rows, vec![json!([1_000_000])]);
}

#[test]
fn a_statement_that_fills_the_sqlite_heap_fails_clearly_and_the_next_one_works() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["heap_limit_child", "--exact", "--ignored", "--nocapture"])
        .env("SLUICE_TEST_HEAP_CHILD", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("1 passed"),
        "the child test did not run:\n{text}"
    );
}

#[tokio::test]
async fn a_statement_that_ignores_its_interrupt_answers_timeout_on_time_and_counts_until_it_ends() {
    let f = Fixture::new("");
    let pool = f.pool(2).await;
    let mut req = query(STUCK);
    req.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = pool.execute(req).await.err().expect("times out");
    assert!(matches!(err, ExecError::Timeout(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(
        pool.abandoned(),
        1,
        "the statement is abandoned, not finished"
    );
    assert!(sluice::datasource::sqlite::abandoned().total >= 1);
    assert_eq!(pool.stats().in_use, 1, "it still holds its pool slot");
    assert_abandoned_statements_end(&pool).await;
    assert_idle_within_a_second(&pool).await;
    assert_eq!(pool.stats().size, 0, "its connection was discarded");
    let (_, rows) = collect(&pool, query("SELECT 1")).await;
    assert_eq!(rows, vec![json!([1])]);
}

#[tokio::test]
async fn a_pool_of_one_keeps_its_slot_while_an_abandoned_statement_runs() {
    let f = Fixture::new("");
    let pool = f.pool(1).await;
    let mut req = query(STUCK);
    req.timeout = Duration::from_millis(300);
    let err = pool.execute(req).await.err().expect("times out");
    assert!(matches!(err, ExecError::Timeout(_)), "{err:?}");
    assert_eq!(pool.abandoned(), 1);
    let err = pool.execute(query("SELECT 1")).await.err();
    assert_eq!(
        err,
        Some(ExecError::PoolTimeout),
        "a second statement ran beside the abandoned one"
    );
    assert_eq!(
        pool.abandoned(),
        1,
        "the abandoned statement was still running"
    );
    assert_abandoned_statements_end(&pool).await;
    let (_, rows) = collect(&pool, query("SELECT 1")).await;
    assert_eq!(rows, vec![json!([1])]);
}

#[tokio::test]
async fn a_consumer_that_goes_away_abandons_a_statement_that_ignores_its_interrupt() {
    let f = Fixture::new("");
    let pool = f.pool(2).await;
    let fut = pool.execute(query(STUCK));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), fut)
            .await
            .is_err()
    );
    let start = Instant::now();
    while pool.abandoned() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the statement was not abandoned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pool.stats().in_use, 1, "it still holds its pool slot");
    assert_abandoned_statements_end(&pool).await;
    assert_idle_within_a_second(&pool).await;
}

#[tokio::test]
async fn a_stream_whose_next_row_ignores_the_interrupt_ends_with_timeout_on_time() {
    let f = Fixture::new("");
    let pool = f.pool(2).await;
    let sql = format!(
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 3) \
         SELECT CASE WHEN n < 3 THEN n ELSE ({STUCK}) END FROM c"
    );
    let mut req = query(&sql);
    req.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let mut stream = rows_of(pool.execute(req).await.unwrap());
    let mut rows = Vec::new();
    let mut last = None;
    while let Some(r) = stream.next().await {
        match r {
            Ok(b) => rows.push(serde_json::from_slice::<Value>(&b).unwrap()),
            Err(e) => last = Some(e),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(rows, vec![json!([1]), json!([2])]);
    assert!(matches!(last, Some(ExecError::Timeout(_))), "{last:?}");
    assert_eq!(pool.abandoned(), 1);
    assert_abandoned_statements_end(&pool).await;
}

fn main_rel(name: &str) -> RelName {
    RelName::new("main", name)
}

#[tokio::test]
async fn introspection_finds_virtual_tables_their_shadows_and_content_views_and_triggers() {
    let f = Fixture::new(
        "CREATE TABLE Docs (id INTEGER PRIMARY KEY, body TEXT);
         CREATE TABLE audit_log (id INTEGER, at TEXT);
         CREATE VIRTUAL TABLE Notes_FTS USING fts5(body, content='Docs', content_rowid='id');
         CREATE VIRTUAL TABLE notes_fts_vocab USING fts5vocab(notes_fts, 'row');
         CREATE VIRTUAL TABLE plain_fts USING fts4(body);
         CREATE VIRTUAL TABLE places USING rtree(id, min_x, max_x);
         CREATE VIEW recent AS WITH last AS (SELECT * FROM docs ORDER BY id DESC LIMIT 5)
             SELECT last.body, a.at FROM last JOIN audit_log AS a ON a.id = last.id;
         CREATE TRIGGER docs_logged AFTER INSERT ON Docs
             BEGIN INSERT INTO audit_log VALUES (new.id, datetime('now')); END;",
    );
    let pool = f.pool(1).await;
    let c = pool.introspect().await.unwrap();
    assert_eq!(c.kind, Some(DatasourceKind::Sqlite));
    assert!(
        c.server_version.starts_with("SQLite 3."),
        "{}",
        c.server_version
    );
    assert_eq!(c.default_schema, "main");
    for name in [
        "instr",
        "printf",
        "json_each",
        "json_tree",
        "fts5",
        "bm25",
        "rtree",
    ] {
        assert!(c.builtin_functions.contains(name), "{name} is a built-in");
    }
    assert!(!c.builtin_functions.contains("no_such_function"));

    let fts = &c.relations[&main_rel("notes_fts")];
    assert_eq!(fts.kind, RelationKind::Virtual);
    assert_eq!(fts.reads, [main_rel("docs")], "its external content table");
    for suffix in ["data", "idx", "docsize", "config"] {
        let shadow = &c.relations[&main_rel(&format!("notes_fts_{suffix}"))];
        assert_eq!(shadow.kind, RelationKind::Shadow, "{suffix}");
        assert_eq!(shadow.shadow_of, Some(main_rel("notes_fts")), "{suffix}");
    }
    let vocab = &c.relations[&main_rel("notes_fts_vocab")];
    assert_eq!(vocab.kind, RelationKind::Virtual);
    assert_eq!(vocab.shadow_of, None, "a virtual table, not a shadow");
    assert_eq!(vocab.reads, [main_rel("notes_fts")]);
    for suffix in ["content", "segments", "segdir", "docsize", "stat"] {
        let shadow = &c.relations[&main_rel(&format!("plain_fts_{suffix}"))];
        assert_eq!(shadow.shadow_of, Some(main_rel("plain_fts")), "{suffix}");
    }
    assert_eq!(c.relations[&main_rel("places")].kind, RelationKind::Virtual);
    for suffix in ["node", "parent", "rowid"] {
        let shadow = &c.relations[&main_rel(&format!("places_{suffix}"))];
        assert_eq!(shadow.kind, RelationKind::Shadow, "{suffix}");
        assert_eq!(shadow.shadow_of, Some(main_rel("places")), "{suffix}");
    }

    let view = &c.relations[&main_rel("recent")];
    assert_eq!(view.kind, RelationKind::View);
    assert_eq!(view.reads, [main_rel("docs"), main_rel("audit_log")]);
    assert!(!view.opaque_reads);

    let docs = &c.relations[&main_rel("docs")];
    assert!(docs.opaque_writes, "a trigger runs on writes to it");
    assert!(
        !c.relations.contains_key(&main_rel("audit_log")),
        "nothing behind it"
    );
}

#[tokio::test]
async fn a_view_that_does_not_parse_reads_opaquely_and_an_unknown_module_is_opaque() {
    let f = Fixture::new(
        "CREATE TABLE t (x);
         CREATE VIEW odd AS SELECT x FROM t INDEXED BY no_such_index;
         CREATE VIRTUAL TABLE pages USING dbstat;",
    );
    let pool = f.pool(1).await;
    let c = pool.introspect().await.unwrap();
    assert!(c.relations[&main_rel("odd")].opaque_reads);
    let pages = &c.relations[&main_rel("pages")];
    assert_eq!(pages.kind, RelationKind::Virtual);
    assert!(pages.opaque_reads && pages.opaque_writes);
}

#[tokio::test]
async fn foreign_keys_are_enforced_so_their_cascades_are_in_the_catalogue() {
    let f = Fixture::new(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);
         CREATE TABLE child (p INTEGER REFERENCES Parent(id) ON DELETE CASCADE);
         CREATE TABLE keeps (p INTEGER REFERENCES parent(id) ON DELETE RESTRICT);
         INSERT INTO parent VALUES (1), (2);
         INSERT INTO child VALUES (1), (2);",
    );
    let pool = f.pool(1).await;
    // The bundled SQLite turns foreign keys on by default: the delete reaches the child.
    match pool
        .execute(write("DELETE FROM parent WHERE id = 1"))
        .await
        .unwrap()
    {
        Execution::Affected { rows_affected } => assert_eq!(rows_affected, 1),
        Execution::Rows(_) => panic!("a write reports rows affected"),
    }
    let (_, rows) = collect(&pool, query("SELECT p FROM child")).await;
    assert_eq!(rows, vec![json!([2])], "the delete cascaded");
    let c = pool.introspect().await.unwrap();
    assert_eq!(
        c.relations[&main_rel("parent")].cascades,
        [main_rel("child")]
    );
}

#[tokio::test]
async fn an_abandoned_write_is_not_committed_when_its_thread_ends() {
    let f = Fixture::new("CREATE TABLE t (v INTEGER)");
    let pool = f.pool(1).await;
    let mut req = write(&format!("INSERT INTO t VALUES (({STUCK}))"));
    req.timeout = Duration::from_millis(300);
    let err = pool.execute(req).await.err().expect("times out");
    assert!(matches!(err, ExecError::Timeout(_)), "{err:?}");
    assert_eq!(pool.abandoned(), 1);
    assert_abandoned_statements_end(&pool).await;
    let n: i64 = f
        .admin()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0, "the caller was told Timeout: nothing was written");
}
