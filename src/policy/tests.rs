//! Dense tests of the policy: every rule in several spellings and positions, on each dialect
//! where it applies, plus real queries that must keep working.

use super::*;
use crate::model::Access;

const PG: DatasourceKind = DatasourceKind::Postgres;
const MY: DatasourceKind = DatasourceKind::Mysql;
const LITE: DatasourceKind = DatasourceKind::Sqlite;

fn default_schema(kind: DatasourceKind) -> &'static str {
    match kind {
        DatasourceKind::Postgres => "public",
        DatasourceKind::Mysql => "shop",
        DatasourceKind::Sqlite => "main",
    }
}

/// The relations of `pg_catalog` the tests name without a schema.
const PG_SYSTEM_RELATIONS: &[&str] = &[
    "pg_class",
    "pg_authid",
    "pg_user",
    "pg_settings",
    "pg_stats",
    "pg_statistic",
    "pg_proc",
    "pg_namespace",
    "pg_tables",
    "pg_roles",
    "pg_stat_activity",
    "pg_database",
    "pg_views",
    "pg_largeobject",
    "pg_shadow",
    "pg_type",
    "pg_attribute",
];

/// A catalogue as a plain server of each kind would give it: nothing behind any table name,
/// built-ins as the static lists say (an empty list is taken at its word), and for PostgreSQL the
/// `pg_catalog` relations the tests name.
pub(super) fn catalog(kind: DatasourceKind) -> &'static Catalog {
    use std::sync::OnceLock;
    static PG_CAT: OnceLock<Catalog> = OnceLock::new();
    static MY_CAT: OnceLock<Catalog> = OnceLock::new();
    static LITE_CAT: OnceLock<Catalog> = OnceLock::new();
    let cell = match kind {
        DatasourceKind::Postgres => &PG_CAT,
        DatasourceKind::Mysql => &MY_CAT,
        DatasourceKind::Sqlite => &LITE_CAT,
    };
    cell.get_or_init(|| Catalog {
        kind: Some(kind),
        server_version: "test".into(),
        default_schema: default_schema(kind).into(),
        system_relations: if kind == DatasourceKind::Postgres {
            PG_SYSTEM_RELATIONS.iter().map(|s| s.to_string()).collect()
        } else {
            Default::default()
        },
        ..Catalog::default()
    })
}

fn run(kind: DatasourceKind, sql: &str, scope: &ScopePolicy) -> Result<Checked, PolicyError> {
    run_on(kind, sql, scope, catalog(kind))
}

fn run_on(
    kind: DatasourceKind,
    sql: &str,
    scope: &ScopePolicy,
    cat: &Catalog,
) -> Result<Checked, PolicyError> {
    let target = Target {
        kind,
        default_schema: default_schema(kind),
        max_sql_bytes: 1 << 20,
        catalog: cat,
    };
    check(sql, &target, scope)
}

fn read_only() -> ScopePolicy {
    ScopePolicy::default()
}

fn read_write() -> ScopePolicy {
    ScopePolicy {
        access: Access::ReadWrite,
        ..ScopePolicy::default()
    }
}

fn denying(tables: &[&str]) -> ScopePolicy {
    ScopePolicy {
        denied_tables: tables.iter().map(|s| s.to_string()).collect(),
        ..ScopePolicy::default()
    }
}

fn allowing(tables: &[&str]) -> ScopePolicy {
    ScopePolicy {
        allowed_tables: Some(tables.iter().map(|s| s.to_string()).collect()),
        ..ScopePolicy::default()
    }
}

#[track_caller]
fn accepted(kind: DatasourceKind, sql: &str, scope: &ScopePolicy) -> Checked {
    match run(kind, sql, scope) {
        Ok(c) => {
            sends_what_was_checked(kind, sql, &c.sql, scope);
            c
        }
        Err(e) => panic!("{kind} refused {sql:?}: {e:?}"),
    }
}

/// For every accepted statement, checked apart from `render` (which skips its re-parse when the
/// rendering is the input itself): the text to send is one statement, checking it again accepts
/// it unchanged (names already explicit are not qualified twice), and it touches the same
/// tables and functions.
#[track_caller]
fn sends_what_was_checked(kind: DatasourceKind, input: &str, to_send: &str, scope: &ScopePolicy) {
    let parsed = stacker::maybe_grow(RED_ZONE_BYTES, CHECK_STACK_BYTES, || {
        parse_one(to_send, kind, dialect(kind)).map(|_| ())
    });
    if let Err(e) = parsed {
        panic!("{kind} {input:?} sends {to_send:?}, which does not parse: {e}");
    }
    let first = run(kind, input, scope).expect("accepted");
    match run(kind, to_send, scope) {
        Ok(again) => {
            assert_eq!(again.sql, to_send, "{kind} {input:?}");
            assert_eq!(again.tables, first.tables, "{kind} {input:?}");
            assert_eq!(again.functions, first.functions, "{kind} {input:?}");
        }
        Err(e) => panic!("{kind} refused its own rendering {to_send:?} of {input:?}: {e:?}"),
    }
}

#[track_caller]
fn refused(kind: DatasourceKind, sql: &str, scope: &ScopePolicy) -> PolicyError {
    match run(kind, sql, scope) {
        Ok(c) => panic!("{kind} accepted {sql:?} as {:?}", c.sql),
        Err(e) => e,
    }
}

/// Refused with the given variant, and the message names `needle`.
#[track_caller]
fn refused_naming(
    kind: DatasourceKind,
    sql: &str,
    scope: &ScopePolicy,
    variant: fn(&PolicyError) -> bool,
    needle: &str,
) {
    let e = refused(kind, sql, scope);
    assert!(variant(&e), "{kind} {sql:?}: wrong refusal {e:?}");
    assert!(
        e.to_string()
            .to_ascii_lowercase()
            .contains(&needle.to_ascii_lowercase()),
        "{kind} {sql:?}: message {e} does not name {needle}"
    );
}

fn is_statement(e: &PolicyError) -> bool {
    matches!(e, PolicyError::StatementNotAllowed(_))
}
fn is_table(e: &PolicyError) -> bool {
    matches!(e, PolicyError::TableNotAllowed(_))
}
fn is_function(e: &PolicyError) -> bool {
    matches!(e, PolicyError::FunctionNotAllowed(_))
}
fn is_parse(e: &PolicyError) -> bool {
    matches!(e, PolicyError::Parse(_))
}

// ---------------------------------------------------------------- queries that must keep working

#[test]
fn real_postgres_analytic_queries_are_accepted() {
    for sql in [
        "WITH monthly AS (
            SELECT date_trunc('month', o.created_at) AS month, c.region, SUM(o.total) AS revenue
            FROM orders o JOIN customers c ON c.id = o.customer_id
            WHERE o.created_at >= now() - INTERVAL '12 months' AND o.status <> 'cancelled'
            GROUP BY 1, 2)
         SELECT month, region, revenue,
                revenue - LAG(revenue) OVER (PARTITION BY region ORDER BY month) AS growth,
                RANK() OVER (PARTITION BY month ORDER BY revenue DESC) AS rank_in_month
         FROM monthly ORDER BY month DESC, revenue DESC LIMIT 100",
        "SELECT id, payload->>'kind' AS kind, payload #>> '{a,b}' AS ab,
                COALESCE(payload->'n', '0')::int AS n
         FROM events WHERE payload @> '{\"ok\": true}' AND payload ? 'kind' AND tags && ARRAY['x']",
        "SELECT CASE WHEN amount > 100 THEN 'big' WHEN amount > 10 THEN 'medium' ELSE 'small' END,
                NULLIF(qty, 0), EXTRACT(YEAR FROM created_at), created_at::date + 7,
                created_at AT TIME ZONE 'UTC', CAST(amount AS numeric(10, 2))
         FROM payments WHERE created_at BETWEEN $1 AND $2 AND note ILIKE '%refund%'",
        "SELECT d::date, count(o.id) FROM generate_series($1::date, $2::date, '1 day') AS d
         LEFT JOIN orders o ON o.created_at::date = d::date GROUP BY d ORDER BY d",
        "SELECT u.id FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)
         UNION ALL SELECT id FROM admins EXCEPT SELECT id FROM banned",
        "WITH RECURSIVE tree AS (SELECT id, parent_id, 1 AS depth FROM nodes WHERE parent_id IS NULL
           UNION ALL SELECT n.id, n.parent_id, t.depth + 1 FROM nodes n JOIN tree t ON n.parent_id = t.id)
         SELECT * FROM tree",
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FILTER (WHERE total > 0) FROM orders",
        "SELECT x.* FROM orders o, LATERAL jsonb_array_elements(o.items) AS x",
        "VALUES (1, 'a'), (2, 'b')",
        "SELECT string_agg(DISTINCT name, ', ' ORDER BY name), array_agg(id) FROM customers",
        "SELECT * FROM orders WHERE customer_id = ANY($1) AND total > ALL (SELECT 0)",
        "SELECT upper(name) || ' ' || lower(city), name ~* '^a', to_char(now(), 'YYYY') FROM customers",
        "SELECT pg_catalog.lower(name), public.orders.id FROM public.orders",
        "SELECT 1 -- trailing comment",
        "/* leading */ SELECT /* inside */ 1",
    ] {
        let c = accepted(PG, sql, &read_only());
        assert_eq!(c.class, StatementClass::Query, "{sql}");
    }
}

#[test]
fn real_mysql_and_sqlite_queries_are_accepted() {
    for sql in [
        "SELECT DATE_FORMAT(o.created_at, '%Y-%m') AS m, c.region, SUM(o.total),
                ROW_NUMBER() OVER (PARTITION BY c.region ORDER BY SUM(o.total) DESC)
         FROM orders o JOIN customers c ON c.id = o.customer_id
         WHERE o.created_at >= DATE_SUB(NOW(), INTERVAL 30 DAY) GROUP BY m, c.region",
        "SELECT `id`, JSON_EXTRACT(doc, '$.a'), doc->>'$.b', IFNULL(x, 0), IF(a > 1, 'y', \"n\")
         FROM `shop`.`events` WHERE name LIKE 'a%' LIMIT 10, 20",
        "WITH t AS (SELECT id FROM orders WHERE total > ?) SELECT COUNT(*) FROM t",
        "SELECT GROUP_CONCAT(name ORDER BY name SEPARATOR ', ') FROM customers WHERE id IN (?, ?)",
        "SELECT * FROM JSON_TABLE('[1,2]', '$[*]' COLUMNS (x INT PATH '$')) AS jt",
        "SELECT 'it''s', 'a\\'b', '/*! not a comment */', \"/*+ nor a hint */\" # comment",
    ] {
        accepted(MY, sql, &read_only());
    }
    for sql in [
        "SELECT strftime('%Y-%m', created_at) AS m, SUM(total), COUNT(*) FILTER (WHERE total > 0)
         FROM orders GROUP BY m HAVING SUM(total) > ? ORDER BY m",
        "SELECT j.value FROM events, json_each(events.doc) AS j WHERE j.key = ?",
        "SELECT [id], \"name\", `city`, iif(a, 1, 2), coalesce(b, 0) FROM customers",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10) SELECT x FROM c",
        "SELECT lag(total) OVER (ORDER BY id), doc ->> '$.a' FROM orders",
    ] {
        accepted(LITE, sql, &read_only());
    }
}

#[test]
fn accepted_statements_report_tables_functions_and_the_sql_to_send() {
    let c = accepted(
        PG,
        "select COUNT(*), Lower(o.Name) from Orders o join \"Sales\".\"Items\" i on i.order_id = o.id",
        &read_only(),
    );
    assert_eq!(c.tables, vec!["public.orders", "Sales.Items"]);
    assert_eq!(c.functions, vec!["count", "lower"]);
    assert_eq!(c.param_count, 0);
    assert!(c.sql.starts_with("SELECT COUNT(*)"), "{}", c.sql);
    let c = accepted(MY, "SELECT * FROM Orders, other.t", &read_only());
    assert_eq!(c.tables, vec!["shop.Orders", "other.t"]);
    let c = accepted(LITE, "SELECT * FROM Orders", &read_only());
    assert_eq!(c.tables, vec!["main.orders"]);
}

// ---------------------------------------------------------------- one statement

#[test]
fn more_than_one_statement_is_refused_on_every_dialect() {
    for kind in DatasourceKind::ALL {
        for sql in [
            "SELECT 1; SELECT 2",
            "SELECT 1; COMMIT; DROP TABLE t",
            "SELECT 1;;SELECT 2",
            "SELECT 1; /* c */ DELETE FROM t",
        ] {
            refused_naming(*kind, sql, &read_write(), is_statement, "statements");
        }
        accepted(*kind, "SELECT 1;", &read_only());
        for sql in ["", "   ", "-- only a comment", ";"] {
            let e = refused(*kind, sql, &read_only());
            assert!(is_parse(&e), "{kind} {sql:?}: {e:?}");
        }
    }
}

// ---------------------------------------------------------------- read-only statements

#[test]
fn writes_are_refused_on_a_read_only_datasource_and_named() {
    for kind in DatasourceKind::ALL {
        for (sql, verb) in [
            ("INSERT INTO t VALUES (1)", "INSERT"),
            ("insert into t (a) select a from u", "INSERT"),
            ("UPDATE t SET a = 1", "UPDATE"),
            ("update t set a = a + 1 where id = 2", "UPDATE"),
            ("DELETE FROM t", "DELETE"),
            ("  delete from t where id = 1", "DELETE"),
        ] {
            let e = refused(*kind, sql, &read_only());
            assert_eq!(
                e,
                PolicyError::StatementNotAllowed(format!(
                    "{verb} is not allowed on a read-only datasource"
                )),
                "{kind} {sql}"
            );
        }
    }
}

#[test]
fn data_modifying_ctes_and_subqueries_are_refused_everywhere_even_on_read_write() {
    for scope in [read_only(), read_write()] {
        for sql in [
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "with d as (update t set a = 1 returning a) select * from d",
            "WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM i",
            "WITH a AS (SELECT 1), d AS (DELETE FROM t RETURNING *) SELECT * FROM a",
            "SELECT * FROM (WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d) x",
            "SELECT 1 WHERE EXISTS (WITH d AS (DELETE FROM t RETURNING 1) SELECT * FROM d)",
            "WITH outer_cte AS (WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d) SELECT 1",
            "SELECT 1 UNION SELECT * FROM (WITH d AS (DELETE FROM t RETURNING 1) SELECT * FROM d) x",
            "WITH src AS (SELECT 1) INSERT INTO t SELECT * FROM src",
        ] {
            refused_naming(PG, sql, &scope, is_statement, "not allowed");
        }
    }
}

#[test]
fn select_into_and_locking_clauses_are_refused_at_any_depth() {
    for sql in [
        "SELECT * INTO newtab FROM t",
        "select a into temp x from t",
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM t FOR SHARE",
        "SELECT * FROM t FOR NO KEY UPDATE",
        "SELECT * FROM t FOR KEY SHARE",
        "SELECT * FROM t FOR UPDATE OF t NOWAIT",
        "SELECT * FROM t FOR UPDATE SKIP LOCKED",
        "SELECT * FROM (SELECT * FROM t FOR UPDATE) x",
        "WITH c AS (SELECT * FROM t FOR UPDATE) SELECT * FROM c",
        "SELECT 1 WHERE 1 IN (SELECT a FROM t FOR SHARE)",
        "SELECT 1 UNION (SELECT 1 FROM t FOR UPDATE)",
    ] {
        refused(PG, sql, &read_write());
    }
    for sql in [
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM t LOCK IN SHARE MODE",
        "SELECT * FROM t INTO OUTFILE '/tmp/x'",
        "SELECT * INTO OUTFILE '/tmp/x' FROM t",
        "SELECT * FROM t INTO DUMPFILE '/tmp/x'",
        "SELECT a INTO @x FROM t",
        "SELECT * FROM (SELECT * FROM t FOR SHARE) x",
    ] {
        refused(MY, sql, &read_write());
    }
}

#[test]
fn explain_of_any_kind_is_refused() {
    for sql in [
        "EXPLAIN SELECT 1",
        "explain analyze select 1",
        "EXPLAIN (ANALYZE) DELETE FROM t",
        "EXPLAIN (ANALYZE true, FORMAT json) SELECT 1",
        "EXPLAIN ANALYZE DELETE FROM t",
    ] {
        refused_naming(PG, sql, &read_write(), is_statement, "EXPLAIN");
    }
    refused_naming(
        MY,
        "EXPLAIN SELECT 1",
        &read_write(),
        is_statement,
        "EXPLAIN",
    );
    refused_naming(MY, "DESCRIBE t", &read_write(), is_statement, "not allowed");
    refused_naming(
        LITE,
        "EXPLAIN QUERY PLAN SELECT 1",
        &read_write(),
        is_statement,
        "EXPLAIN",
    );
}

#[test]
fn statements_other_than_queries_and_dml_are_refused_even_on_read_write() {
    let scope = read_write();
    for sql in [
        "DROP TABLE t",
        "CREATE TABLE x (a int)",
        "ALTER TABLE t ADD COLUMN b int",
        "TRUNCATE t",
        "GRANT SELECT ON t TO public",
        "SET search_path = evil",
        "SET LOCAL statement_timeout = 0",
        "RESET ALL",
        "SHOW search_path",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "START TRANSACTION",
        "DO $$ BEGIN PERFORM pg_sleep(1); END $$",
        "CALL p()",
        "PREPARE s AS SELECT 1",
        "EXECUTE s",
        "DEALLOCATE s",
        "LISTEN ch",
        "NOTIFY ch",
        "UNLISTEN ch",
        "LOCK TABLE t",
        "COPY t TO PROGRAM 'id'",
        "COPY t FROM STDIN",
        "VACUUM t",
        "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE",
        "DISCARD ALL",
        "DECLARE c CURSOR FOR SELECT 1",
        "CREATE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql",
        "COMMENT ON TABLE t IS 'x'",
    ] {
        let e = refused(PG, sql, &scope);
        assert!(is_statement(&e) || is_parse(&e), "{sql}: {e:?}");
    }
    for sql in [
        "REPLACE INTO t VALUES (1)",
        "SET @a = 1",
        "SET SESSION sql_mode = ''",
        "SET STATEMENT max_statement_time=0 FOR SELECT 1",
        "LOCK TABLES t READ",
        "UNLOCK TABLES",
        "HANDLER t OPEN",
        "DO SLEEP(1)",
        "CALL p()",
        "SHOW TABLES",
        "USE other",
        "LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t",
        "KILL 1",
        "FLUSH PRIVILEGES",
    ] {
        let e = refused(MY, sql, &scope);
        assert!(is_statement(&e) || is_parse(&e), "{sql}: {e:?}");
    }
    for sql in [
        "PRAGMA writable_schema = 1",
        "ATTACH DATABASE '/tmp/x' AS x",
        "DETACH x",
        "VACUUM",
        "INSERT OR REPLACE INTO t VALUES (1)",
        "REPLACE INTO t VALUES (1)",
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END",
    ] {
        let e = refused(LITE, sql, &scope);
        assert!(is_statement(&e) || is_parse(&e), "{sql}: {e:?}");
    }
}

// ---------------------------------------------------------------- read-write

#[test]
fn read_write_accepts_insert_update_delete_with_returning_and_upserts() {
    let scope = read_write();
    for (kind, sql, class) in [
        (
            PG,
            "INSERT INTO t (a) VALUES ($1) RETURNING id",
            StatementClass::Insert,
        ),
        (
            PG,
            "INSERT INTO t (id, a) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET a = excluded.a",
            StatementClass::Insert,
        ),
        (
            PG,
            "UPDATE t SET a = a + 1 FROM u WHERE u.id = t.id",
            StatementClass::Update,
        ),
        (
            PG,
            "DELETE FROM t USING u WHERE u.id = t.id RETURNING t.*",
            StatementClass::Delete,
        ),
        (
            MY,
            "INSERT INTO t (id, a) VALUES (?, ?) ON DUPLICATE KEY UPDATE a = VALUES(a)",
            StatementClass::Insert,
        ),
        (
            MY,
            "UPDATE t SET a = ? WHERE id = ? LIMIT 1",
            StatementClass::Update,
        ),
        (MY, "DELETE FROM t WHERE id = ?", StatementClass::Delete),
        (
            LITE,
            "INSERT INTO t (a) VALUES (?) ON CONFLICT DO NOTHING",
            StatementClass::Insert,
        ),
        (
            LITE,
            "UPDATE t SET a = ? WHERE id = ?",
            StatementClass::Update,
        ),
        (
            LITE,
            "DELETE FROM t WHERE id = ? RETURNING id",
            StatementClass::Delete,
        ),
        (PG, "SELECT 1", StatementClass::Query),
    ] {
        assert_eq!(accepted(kind, sql, &scope).class, class, "{kind} {sql}");
    }
}

#[test]
fn tables_written_and_read_by_dml_are_checked_like_tables_read() {
    let scope = ScopePolicy {
        access: Access::ReadWrite,
        denied_tables: vec!["secret".into()],
        ..ScopePolicy::default()
    };
    for sql in [
        "INSERT INTO secret VALUES (1)",
        "INSERT INTO public.secret (a) SELECT 1",
        "INSERT INTO t SELECT * FROM secret",
        "INSERT INTO t VALUES ((SELECT max(a) FROM secret))",
        "INSERT INTO t (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET a = (SELECT a FROM secret)",
        "INSERT INTO t VALUES (1) RETURNING (SELECT 1 FROM secret)",
        "UPDATE secret SET a = 1",
        "UPDATE t SET a = 1 FROM secret WHERE secret.id = t.id",
        "UPDATE t SET a = (SELECT a FROM secret LIMIT 1)",
        "UPDATE t SET a = 1 WHERE id IN (SELECT id FROM Secret)",
        "DELETE FROM secret",
        "DELETE FROM t USING secret WHERE secret.id = t.id",
        "DELETE FROM t WHERE EXISTS (SELECT 1 FROM \"secret\")",
    ] {
        refused_naming(PG, sql, &scope, is_table, "public.secret");
    }
    let scope = ScopePolicy {
        access: Access::ReadWrite,
        denied_tables: vec!["shop.secret".into()],
        ..ScopePolicy::default()
    };
    for sql in [
        "INSERT INTO secret VALUES (1)",
        "UPDATE t JOIN secret s ON s.id = t.id SET t.a = s.a",
        "DELETE t FROM t JOIN secret ON secret.id = t.id",
        "DELETE secret FROM secret",
        "INSERT INTO t SET a = (SELECT a FROM SECRET)",
    ] {
        refused_naming(MY, sql, &scope, is_table, "secret");
    }
}

// ---------------------------------------------------------------- comments the server executes

#[test]
fn executable_comments_and_hints_are_refused_wherever_they_sit() {
    for sql in [
        "SELECT /*! SLEEP(1) */ 1",
        "SELECT 1 /*!50000 , SLEEP(1) */",
        "/*!50000 SELECT */ 1",
        "SELECT /*M! SLEEP(1), */ 1",
        "SELECT /*M!100000 1, */ 2",
        "SELECT /*+ MAX_EXECUTION_TIME(1000000) */ * FROM t",
        "SELECT * FROM t WHERE a = 1 /*! OR 1=1 */",
        "UPDATE /*+ NO_RANGE_OPTIMIZER(t) */ t SET a = 1",
    ] {
        let e = refused(MY, sql, &read_write());
        assert!(is_statement(&e) || is_parse(&e), "{sql}: {e:?}");
    }
    for kind in [PG, LITE] {
        for sql in [
            "SELECT /*+ SeqScan(t) */ * FROM t",
            "SELECT /*!50000 1 */",
            "SELECT /*M! 1 */ 2",
            "SELECT 1 --+ hint",
        ] {
            refused_naming(kind, sql, &read_only(), is_statement, "not allowed");
        }
    }
}

#[test]
fn comment_markers_inside_string_literals_are_only_text() {
    for sql in [
        "SELECT '/*! SLEEP(1) */'",
        "SELECT \"/*M! x */\"",
        "SELECT '/*+ hint */', 'a -- b', '@a', '@@version'",
        "SELECT 'it\\'s /*! no */'",
    ] {
        accepted(MY, sql, &read_only());
    }
    accepted(
        PG,
        "SELECT '/*+ hint */', $$ /*! x */ $$, E'/*! \\' */'",
        &read_only(),
    );
    accepted(LITE, "SELECT '/*! x */'", &read_only());
}

#[test]
fn a_mysql_double_dash_without_an_ascii_space_is_refused_or_read_as_minus() {
    // MySQL ends `--` comments only before a space or control character.
    let e = refused(MY, "SELECT 1 --\u{a0}DROP", &read_only());
    assert!(is_parse(&e), "{e:?}");
    let c = accepted(MY, "SELECT 1--1", &read_only());
    assert!(c.sql.contains('-'), "{}", c.sql);
}

// ---------------------------------------------------------------- identifiers and variables

#[test]
fn identifiers_containing_a_backslash_are_refused() {
    for sql in [
        "SELECT U&\"\\0070g_sleep\"(1)",
        "SELECT * FROM U&\"\\0073ecret\"",
        "SELECT \"a\\b\" FROM t",
        "SELECT 1 AS \"x\\\"",
    ] {
        refused_naming(PG, sql, &read_only(), is_statement, "backslash");
    }
    refused_naming(
        MY,
        "SELECT `a\\b` FROM t",
        &read_only(),
        is_statement,
        "backslash",
    );
    refused_naming(
        LITE,
        "SELECT [a\\b] FROM t",
        &read_only(),
        is_statement,
        "backslash",
    );
}

#[test]
fn mysql_user_and_system_variables_are_refused() {
    for sql in [
        "SELECT @a",
        "SELECT @a := 1",
        "SELECT @@version",
        "SELECT @@session.sql_mode",
        "SELECT @@GLOBAL.secure_file_priv",
        "SELECT * FROM t WHERE id = @id",
        "SELECT (@n := @n + 1) AS rn FROM t",
        "SELECT @`quoted`",
        "SELECT @'quoted'",
        "SELECT * FROM (SELECT @x) y",
    ] {
        let e = refused(MY, sql, &read_only());
        assert!(is_statement(&e) || is_parse(&e), "{sql}: {e:?}");
    }
    let e = refused(MY, "SELECT a := 1", &read_only());
    assert!(is_function(&e) || is_parse(&e), "{e:?}");
}

// ---------------------------------------------------------------- functions

#[test]
fn postgres_dangerous_functions_are_refused_in_every_spelling_and_position() {
    let spellings = [
        "pg_sleep(1)",
        "PG_SLEEP(1)",
        "Pg_Sleep(1)",
        "pg_catalog.pg_sleep(1)",
        "PG_CATALOG.PG_SLEEP(1)",
        "\"pg_catalog\".\"pg_sleep\"(1)",
        "\"pg_sleep\"(1)",
        "public.pg_sleep(1)",
    ];
    for f in spellings {
        for sql in [
            format!("SELECT {f}"),
            format!("SELECT 1 FROM t WHERE {f} IS NULL"),
            format!("SELECT count(*) FROM t GROUP BY {f}"),
            format!("SELECT count(*) FROM t HAVING {f} IS NULL"),
            format!("SELECT * FROM t ORDER BY {f}"),
            format!("SELECT coalesce({f}, 1)"),
            format!("SELECT CASE WHEN true THEN {f} END"),
            format!("WITH c AS (SELECT {f}) SELECT * FROM c"),
            format!("SELECT * FROM (SELECT {f}) x"),
            format!("SELECT 1 WHERE EXISTS (SELECT {f})"),
            format!("SELECT 1 UNION ALL SELECT {f}"),
            format!("VALUES (1), ({f})"),
            format!("SELECT sum(a) OVER (ORDER BY {f}) FROM t"),
            format!("SELECT * FROM t JOIN u ON {f} IS NULL"),
            format!("SELECT /* c */ {f} -- c"),
        ] {
            refused_naming(PG, &sql, &read_only(), is_function, "pg_sleep");
        }
    }
}

#[test]
fn functions_with_effects_or_outside_reach_are_refused_on_each_dialect() {
    for (kind, sql, name) in [
        (PG, "SELECT set_config('role', 'x', false)", "set_config"),
        (
            PG,
            "SELECT current_setting('app.secret')",
            "current_setting",
        ),
        (PG, "SELECT pg_advisory_lock(1)", "pg_advisory_lock"),
        (PG, "SELECT pg_terminate_backend(1)", "pg_terminate_backend"),
        (PG, "SELECT nextval('s')", "nextval"),
        (PG, "SELECT lo_import('/etc/passwd')", "lo_import"),
        (PG, "SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
        (PG, "SELECT * FROM pg_ls_dir('.')", "pg_ls_dir"),
        (
            PG,
            "SELECT * FROM dblink('host=x', 'select 1') AS t(a int)",
            "dblink",
        ),
        (
            PG,
            "SELECT query_to_xml('select * from secret', true, true, '')",
            "query_to_xml",
        ),
        (
            PG,
            "SELECT table_to_xml('secret', true, true, '')",
            "table_to_xml",
        ),
        (PG, "SELECT txid_current()", "txid_current"),
        (PG, "SELECT evil.lower('x')", "evil.lower"),
        (PG, "SELECT my_func(1)", "my_func"),
        (MY, "SELECT SLEEP(1)", "sleep"),
        (MY, "SELECT sleep(1) FROM t", "sleep"),
        (MY, "SELECT BENCHMARK(1000000, MD5('x'))", "benchmark"),
        (MY, "SELECT GET_LOCK('a', 10)", "get_lock"),
        (MY, "SELECT LOAD_FILE('/etc/passwd')", "load_file"),
        (MY, "SELECT `sleep`(1)", "sleep"),
        (MY, "SELECT other.now()", "other.now"),
        (MY, "SELECT * FROM t WHERE a = (SELECT SLEEP(1))", "sleep"),
        (LITE, "SELECT load_extension('x')", "load_extension"),
        (LITE, "SELECT randomblob(1000000000)", "randomblob"),
        (
            LITE,
            "SELECT * FROM pragma_table_info('t')",
            "pragma_table_info",
        ),
        (LITE, "SELECT sqlite_version()", "sqlite_version"),
        (LITE, "SELECT main.lower('x')", "main.lower"),
    ] {
        refused_naming(kind, sql, &read_only(), is_function, name);
    }
}

#[test]
fn a_built_in_name_qualified_with_the_datasource_schema_is_a_user_function() {
    // `public.lower(…)` / `acme.upper(…)` call a function someone created under that name, not
    // the built-in: refused unless an admin allowed it, and then never recorded as the built-in.
    refused_naming(
        PG,
        "SELECT public.lower(name) FROM t",
        &ScopePolicy::default(),
        is_function,
        "public.lower",
    );
    refused_naming(
        MY,
        "SELECT shop.upper(name) FROM t",
        &ScopePolicy::default(),
        is_function,
        "shop.upper",
    );
    let c = accepted(
        PG,
        "SELECT pg_catalog.lower(name), lower(name) FROM t",
        &ScopePolicy::default(),
    );
    assert_eq!(c.functions, vec!["lower"]);
    assert!(!c.calls_user_functions);
    let allowed = ScopePolicy {
        extra_functions: vec!["public.lower".into()],
        ..ScopePolicy::default()
    };
    let c = accepted(
        PG,
        "SELECT public.lower(name), lower(name) FROM t",
        &allowed,
    );
    assert_eq!(c.functions, vec!["public.lower", "lower"]);
    assert!(
        c.functions
            .iter()
            .any(|f| !is_builtin(DatasourceKind::Postgres, f))
    );
    assert!(c.calls_user_functions);
}

#[test]
fn extra_functions_extend_the_built_in_list() {
    let scope = ScopePolicy {
        extra_functions: vec!["my_func".into(), "public.other_func".into()],
        ..ScopePolicy::default()
    };
    let c = accepted(
        PG,
        "SELECT my_func(1), other_func(2), public.my_func(3)",
        &scope,
    );
    // A user function is recorded, and sent, with its schema: nothing is left to the search path.
    assert_eq!(c.functions, vec!["public.my_func", "public.other_func"]);
    assert_eq!(
        c.sql,
        "SELECT \"public\".my_func(1), \"public\".other_func(2), public.my_func(3)"
    );
    refused_naming(
        PG,
        "SELECT evil.my_func(1)",
        &scope,
        is_function,
        "evil.my_func",
    );
    refused_naming(
        PG,
        "SELECT third_func(1)",
        &scope,
        is_function,
        "third_func",
    );
    // MySQL connects with no default database: a stored function is sent qualified.
    let c = accepted(MY, "SELECT MY_FUNC(1)", &scope);
    assert_eq!(c.sql, "SELECT `shop`.MY_FUNC(1)");
    // SQLite has no schemas for functions.
    let c = accepted(LITE, "SELECT My_Func(1)", &scope);
    assert_eq!(c.sql, "SELECT My_Func(1)");
}

#[test]
fn table_functions_in_from_are_functions() {
    accepted(PG, "SELECT * FROM generate_series(1, 10) g", &read_only());
    accepted(
        PG,
        "SELECT * FROM unnest(ARRAY[1, 2]) AS u(x)",
        &read_only(),
    );
    accepted(PG, "SELECT * FROM jsonb_each('{}'::jsonb)", &read_only());
    accepted(LITE, "SELECT * FROM json_tree('{}')", &read_only());
    let c = accepted(
        PG,
        "SELECT * FROM generate_series(1, 3)",
        &allowing(&["orders"]),
    );
    assert!(c.tables.is_empty(), "{:?}", c.tables);
    assert_eq!(c.functions, vec!["generate_series"]);
    refused_naming(
        PG,
        "SELECT * FROM pg_stat_file('x')",
        &read_only(),
        is_function,
        "pg_stat_file",
    );
    refused_naming(
        PG,
        "SELECT * FROM t, LATERAL pg_ls_dir(t.path) d",
        &read_only(),
        is_function,
        "pg_ls_dir",
    );
}

#[test]
fn custom_and_unknown_operators_are_refused_and_known_ones_accepted() {
    for sql in [
        "SELECT 1 OPERATOR(public.+) 2",
        "SELECT 1 OPERATOR(pg_catalog.+) 2",
        "SELECT a === b FROM t",
    ] {
        let e = refused(PG, sql, &read_only());
        assert!(is_function(&e) || is_parse(&e), "{sql}: {e:?}");
    }
    accepted(
        PG,
        "SELECT a -> 'k', a ->> 'k', a #> '{k}', a #>> '{k}', a @> b, a <@ b, a ? 'k', a ?| b, \
         a ?& b, a || b, a - 'k', a #- '{k}', 2 ^ 3, 5 % 2, |/ 4.0, @ a, t ~ 'x', t !~* 'y' FROM t",
        &read_only(),
    );
    refused_naming(MY, "SELECT 'a' || 'b'", &read_only(), is_function, "||");
    accepted(
        MY,
        "SELECT a <=> b, a DIV 2, a XOR b, a REGEXP 'x', a -> '$.k' FROM t",
        &read_only(),
    );
}

// ---------------------------------------------------------------- tables

#[test]
fn a_denied_table_is_found_in_every_position_of_a_query() {
    let scope = denying(&["secret"]);
    for sql in [
        "SELECT * FROM secret",
        "SELECT * FROM SECRET",
        "SELECT * FROM public.secret",
        "SELECT * FROM \"public\".\"secret\"",
        "SELECT * FROM PUBLIC.Secret s",
        "SELECT * FROM t JOIN secret ON true",
        "SELECT * FROM t LEFT JOIN (u JOIN secret ON true) ON true",
        "SELECT * FROM t, secret",
        "SELECT (SELECT max(a) FROM secret) FROM t",
        "SELECT * FROM t WHERE a IN (SELECT a FROM secret)",
        "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM secret)",
        "SELECT a, count(*) FROM t GROUP BY a HAVING count(*) > (SELECT count(*) FROM secret)",
        "SELECT coalesce((SELECT a FROM secret), 1)",
        "SELECT * FROM t ORDER BY (SELECT a FROM secret)",
        "SELECT 1 UNION SELECT a FROM secret",
        "SELECT 1 INTERSECT (SELECT 1 EXCEPT SELECT a FROM secret)",
        "WITH c AS (SELECT * FROM secret) SELECT * FROM c",
        "WITH a AS (SELECT 1), b AS (SELECT * FROM a, secret) SELECT * FROM b",
        "SELECT * FROM (SELECT * FROM (SELECT * FROM secret) x) y",
        "SELECT * FROM t, LATERAL (SELECT * FROM secret WHERE secret.id = t.id) s",
        "VALUES ((SELECT 1 FROM secret))",
        "SELECT CASE WHEN true THEN (SELECT 1 FROM secret) END",
        "SELECT sum(a) OVER (PARTITION BY (SELECT 1 FROM secret)) FROM t",
        "SELECT /* secret */ * FROM -- x\n secret",
        "SELECT * FROM t WHERE a = ANY (SELECT a FROM secret)",
        "SELECT * FROM generate_series(1, (SELECT count(*) FROM secret)::int)",
    ] {
        refused_naming(PG, sql, &scope, is_table, "public.secret");
    }
}

#[test]
fn a_table_outside_the_allow_list_is_refused_and_inside_it_accepted() {
    let scope = allowing(&["orders", "public.customers", "sales.*"]);
    accepted(
        PG,
        "SELECT * FROM orders o JOIN customers c ON true JOIN sales.x ON true JOIN Sales.Y ON true",
        &scope,
    );
    for sql in [
        "SELECT * FROM invoices",
        "SELECT * FROM orders WHERE id IN (SELECT id FROM invoices)",
        "SELECT * FROM other.orders",
        "SELECT * FROM \"Orders\"",
        "SELECT * FROM \"Sales\".x",
    ] {
        refused_naming(PG, sql, &scope, is_table, "is not allowed");
    }
    let scope = allowing(&["shop.orders"]);
    accepted(
        MY,
        "SELECT * FROM orders JOIN shop.orders o2 ON true",
        &scope,
    );
    refused_naming(MY, "SELECT * FROM ORDERS", &scope, is_table, "shop.ORDERS");
    refused_naming(
        MY,
        "SELECT * FROM other.orders",
        &scope,
        is_table,
        "other.orders",
    );
    let scope = allowing(&["orders"]);
    accepted(LITE, "SELECT * FROM ORDERS, main.Orders", &scope);
    refused_naming(
        LITE,
        "SELECT * FROM aux.orders",
        &scope,
        is_table,
        "aux.orders",
    );
}

#[test]
fn cte_names_shadow_tables_only_within_their_scope() {
    let scope = denying(&["secret"]);
    // The CTE named like the table is not the table…
    accepted(
        PG,
        "WITH secret AS (SELECT 1 AS a) SELECT * FROM secret",
        &scope,
    );
    accepted(
        PG,
        "WITH secret AS (SELECT 1 AS a) SELECT * FROM t WHERE a IN (SELECT a FROM secret)",
        &scope,
    );
    accepted(
        PG,
        "WITH secret AS (SELECT 1 AS a), b AS (SELECT * FROM secret) SELECT * FROM b",
        &scope,
    );
    accepted(
        PG,
        "WITH RECURSIVE secret(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM secret WHERE n < 3) \
         SELECT * FROM secret",
        &scope,
    );
    // …but the same name outside the WITH, qualified, in its own body, or before it is defined
    // is the real table.
    for sql in [
        "SELECT * FROM (WITH secret AS (SELECT 1) SELECT * FROM secret) x, secret",
        "SELECT * FROM (WITH secret AS (SELECT 1) SELECT * FROM secret) x \
         WHERE EXISTS (SELECT 1 FROM secret)",
        "WITH secret AS (SELECT 1) SELECT * FROM public.secret",
        "WITH secret AS (SELECT * FROM secret) SELECT * FROM secret",
        "WITH a AS (SELECT * FROM secret), secret AS (SELECT 1) SELECT * FROM a",
        "WITH \"Secret\" AS (SELECT 1) SELECT * FROM secret",
        "WITH a AS (SELECT 1) SELECT * FROM a UNION SELECT * FROM secret",
    ] {
        refused_naming(PG, sql, &scope, is_table, "public.secret");
    }
    let scope = denying(&["shop.secret"]);
    accepted(MY, "WITH secret AS (SELECT 1) SELECT * FROM secret", &scope);
    // MySQL may tell case apart in table names: a differently-cased CTE does not shadow.
    refused(MY, "WITH Secret AS (SELECT 1) SELECT * FROM secret", &scope);
}

#[test]
fn catalog_and_system_tables_are_refused_unless_explicitly_allowed() {
    for sql in [
        "SELECT * FROM pg_catalog.pg_authid",
        "SELECT * FROM pg_authid",
        "SELECT * FROM PG_SHADOW",
        "SELECT * FROM PG_CATALOG.PG_CLASS",
        "SELECT * FROM \"pg_catalog\".\"pg_user\"",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM INFORMATION_SCHEMA.COLUMNS",
        "SELECT * FROM pg_settings",
        "SELECT * FROM pg_toast.pg_toast_1",
        "SELECT * FROM t WHERE a IN (SELECT usename FROM pg_user)",
    ] {
        refused_naming(PG, sql, &read_only(), is_table, "is not allowed");
    }
    for sql in [
        "SELECT * FROM mysql.user",
        "SELECT * FROM information_schema.TABLES",
        "SELECT * FROM INFORMATION_SCHEMA.tables",
        "SELECT * FROM performance_schema.threads",
        "SELECT * FROM sys.session",
        "SELECT * FROM `mysql`.`user`",
    ] {
        refused_naming(MY, sql, &read_only(), is_table, "is not allowed");
    }
    for sql in [
        "SELECT * FROM sqlite_master",
        "SELECT * FROM SQLITE_MASTER",
        "SELECT * FROM main.sqlite_schema",
        "SELECT * FROM sqlite_temp_master",
        "SELECT * FROM \"sqlite_master\"",
    ] {
        refused_naming(LITE, sql, &read_only(), is_table, "sqlite_");
    }
    accepted(
        PG,
        "SELECT relname FROM pg_catalog.pg_class",
        &allowing(&["pg_catalog.pg_class"]),
    );
    accepted(
        MY,
        "SELECT * FROM information_schema.tables",
        &allowing(&["information_schema.*"]),
    );
}

#[test]
fn names_are_compared_as_the_database_resolves_them() {
    // Postgres keeps 63 bytes of a name: a longer spelling of a denied table is the same table.
    let long = "a".repeat(63);
    let scope = denying(&[&format!("public.{long}")]);
    refused_naming(
        PG,
        &format!("SELECT * FROM {long}_and_more"),
        &scope,
        is_table,
        &long,
    );
    refused(PG, "SELECT * FROM a.b.c", &read_only());
    refused(MY, "SELECT * FROM a.b.c", &read_only());
}

// ---------------------------------------------------------------- placeholders

#[test]
fn placeholders_are_counted_per_dialect() {
    assert_eq!(
        accepted(PG, "SELECT $1, $2, $1", &read_only()).param_count,
        2
    );
    assert_eq!(
        accepted(PG, "SELECT a FROM t WHERE b ? 'k'", &read_only()).param_count,
        0
    );
    assert_eq!(accepted(PG, "SELECT 1", &read_only()).param_count, 0);
    assert_eq!(
        accepted(MY, "SELECT ?, ? FROM t WHERE a = ?", &read_only()).param_count,
        3
    );
    assert_eq!(accepted(LITE, "SELECT ?, ?", &read_only()).param_count, 2);
    let c = accepted(
        PG,
        "SELECT * FROM t WHERE a = $2 AND b IN (SELECT $1)",
        &read_only(),
    );
    assert_eq!(c.param_count, 2);
}

#[test]
fn placeholders_of_the_wrong_form_or_with_gaps_are_refused() {
    for (kind, sql) in [
        (PG, "SELECT $1, $3"),
        (PG, "SELECT $2"),
        (PG, "SELECT $0"),
        (MY, "SELECT ?1"),
        (LITE, "SELECT ?1"),
        (LITE, "SELECT :name"),
        (LITE, "SELECT @name"),
        (LITE, "SELECT $name"),
    ] {
        let e = refused(kind, sql, &read_only());
        assert!(is_parse(&e) || is_statement(&e), "{kind} {sql}: {e:?}");
    }
}

// ---------------------------------------------------------------- rendering

#[test]
fn a_statement_that_renders_unfaithfully_is_refused() {
    // sqlparser renders the string `\' ; DROP TABLE t; --` as '\' ; DROP TABLE t; --', which
    // Postgres (standard_conforming_strings=on) reads as two statements.
    let e = refused(PG, "SELECT '\\'' ; DROP TABLE t; --'", &read_only());
    assert_eq!(e, PolicyError::RenderMismatch);
    let e = refused(PG, "SELECT 'x\\'''", &read_only());
    assert_eq!(e, PolicyError::RenderMismatch);
}

#[test]
fn a_mysql_string_with_an_escaped_backslash_is_refused_because_it_renders_differently() {
    // 'a\\b' is the string a\b, which sqlparser renders as 'a\b' (a, backspace).
    assert_eq!(
        refused(MY, "SELECT 'a\\\\b'", &read_only()),
        PolicyError::RenderMismatch
    );
    // A newline escape survives: it renders as a literal newline inside the quotes.
    accepted(MY, "SELECT 'c\\nd'", &read_only());
}

#[test]
fn the_sql_to_send_is_the_rendered_statement_without_comments() {
    let c = accepted(PG, "select /* c */ 'it''s' as x -- tail", &read_only());
    assert_eq!(c.sql, "SELECT 'it''s' AS x");
    let c = accepted(MY, "SELECT 'a\\'b', \"q\" # c", &read_only());
    assert_eq!(c.sql, "SELECT 'a''b', \"q\"");
}

// ---------------------------------------------------------------- size and depth

#[test]
fn sql_longer_than_the_cap_is_refused_before_parsing() {
    let target = Target {
        kind: PG,
        default_schema: "public",
        max_sql_bytes: 16,
        catalog: catalog(PG),
    };
    assert_eq!(
        check("SELECT 1 + 1 + 1 + 1", &target, &read_only()),
        Err(PolicyError::TooLong { max: 16 })
    );
    assert!(check("SELECT 1", &target, &read_only()).is_ok());
}

#[test]
fn ten_thousand_nested_parentheses_are_an_error_not_a_crash() {
    for kind in DatasourceKind::ALL {
        let sql = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(is_parse(&refused(*kind, &sql, &read_only())));
        let sql = format!(
            "SELECT * FROM {}t{}",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        assert!(is_parse(&refused(*kind, &sql, &read_only())));
    }
}

#[test]
fn deep_expressions_are_an_error_not_a_crash() {
    for kind in DatasourceKind::ALL {
        // Left-deep chains grow the tree without parser recursion.
        let sql = format!("SELECT 1{}", " + 1".repeat(60_000));
        assert!(is_parse(&refused(*kind, &sql, &read_only())));
        let sql = format!(
            "SELECT 1 FROM t WHERE {}",
            vec!["a = 1"; 5_000].join(" OR ")
        );
        assert!(is_parse(&refused(*kind, &sql, &read_only())));
        let sql = vec!["SELECT 1"; 3_000].join(" UNION ALL ");
        assert!(is_parse(&refused(*kind, &sql, &read_only())));
        let sql = format!("SELECT {}", "NOT ".repeat(5_000) + "true");
        assert!(is_parse(&refused(*kind, &sql, &read_only())));
    }
    // Subqueries nested past the recursion limit.
    let sql = format!("SELECT {}1{}", "(SELECT ".repeat(200), ")".repeat(200));
    assert!(is_parse(&refused(PG, &sql, &read_only())));
}

/// The server's threads have `RUNTIME_THREAD_STACK_BYTES` and check without growing the stack:
/// the pathological inputs must be refused cleanly on that path too.
#[test]
fn deep_statements_are_refused_on_a_runtime_sized_stack_without_growing_it() {
    let worker = std::thread::Builder::new()
        .stack_size(RUNTIME_THREAD_STACK_BYTES)
        .spawn(|| {
            assert!(
                stacker::remaining_stack().is_some_and(|r| r >= RED_ZONE_BYTES),
                "the direct path is the one under test"
            );
            for kind in DatasourceKind::ALL {
                let sql = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
                assert!(is_parse(&refused(*kind, &sql, &read_only())));
                let sql = format!("SELECT 1{}", " + 1".repeat(60_000));
                assert!(is_parse(&refused(*kind, &sql, &read_only())));
                let sql = format!("SELECT 1{}", " + 1".repeat(walk::MAX_NESTING - 10));
                accepted(*kind, &sql, &read_only());
            }
        })
        .expect("spawn");
    assert!(worker.join().is_ok(), "the checks ran without overflowing");
}

#[test]
fn long_but_shallow_statements_within_the_caps_are_accepted() {
    let sql = format!("SELECT 1 FROM t WHERE {}", vec!["a = 1"; 400].join(" OR "));
    accepted(PG, &sql, &read_only());
    let ids: Vec<String> = (0..5_000).map(|i| i.to_string()).collect();
    let sql = format!("SELECT * FROM t WHERE id IN ({})", ids.join(", "));
    accepted(MY, &sql, &read_only());
}

#[test]
fn an_expression_just_under_the_nesting_cap_is_compared_without_exhausting_the_stack() {
    // The render check compares trees with the derived, unprotected PartialEq.
    let sql = format!("SELECT 1{}", " + 1".repeat(walk::MAX_NESTING - 10));
    let c = accepted(PG, &sql, &read_only());
    assert_eq!(c.sql.matches('+').count(), walk::MAX_NESTING - 10);
    let sql = format!("SELECT 1{}", " + 1".repeat(walk::MAX_NESTING + 10));
    assert!(is_parse(&refused(PG, &sql, &read_only())));
}

#[test]
fn the_table_shorthand_is_refused_because_it_hides_the_table_name_from_the_walk() {
    for kind in DatasourceKind::ALL {
        for sql in [
            "TABLE secret",
            "SELECT 1 UNION TABLE secret",
            "(TABLE secret)",
        ] {
            let e = refused(*kind, sql, &read_only());
            assert!(is_statement(&e) || is_parse(&e), "{kind} {sql}: {e:?}");
        }
    }
}

#[tokio::test]
async fn check_isolated_gives_the_same_answer_as_check() {
    let sql = "SELECT count(*) FROM orders WHERE id = $1";
    let cat = |k| std::sync::Arc::new(catalog(k).clone());
    let isolated = check_isolated(
        sql.into(),
        PG,
        "public".into(),
        1 << 20,
        read_only(),
        cat(PG),
    )
    .await;
    assert_eq!(isolated, run(PG, sql, &read_only()));
    assert!(isolated.is_ok());
    let refusal = check_isolated(
        "SELECT pg_sleep(1)".into(),
        PG,
        "public".into(),
        1 << 20,
        read_only(),
        cat(PG),
    )
    .await;
    assert!(matches!(refusal, Err(PolicyError::FunctionNotAllowed(_))));
    let deep = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    let deep = check_isolated(deep, MY, "shop".into(), 1 << 20, read_only(), cat(MY)).await;
    assert!(matches!(deep, Err(PolicyError::Parse(_))));
}

#[test]
fn keyword_functions_written_without_parentheses_are_checked_as_functions() {
    for (kind, sql, name) in [
        (PG, "SELECT current_role", "current_role"),
        (PG, "SELECT CURRENT_SCHEMA AS s", "current_schema"),
        (
            PG,
            "SELECT 1 WHERE current_role IS NOT NULL",
            "current_role",
        ),
        (MY, "SELECT CURRENT_USER", "current_user"),
        (MY, "SELECT current_role", "current_role"),
        (
            MY,
            "SELECT id FROM t WHERE CURRENT_USER <> ''",
            "current_user",
        ),
    ] {
        refused_naming(kind, sql, &read_only(), is_function, name);
    }
    // Quoted, they are columns; a scope may still allow the function.
    accepted(PG, "SELECT \"current_role\" FROM t", &read_only());
    accepted(MY, "SELECT `current_user` FROM t", &read_only());
    let extra = ScopePolicy {
        extra_functions: vec!["current_user".into()],
        ..ScopePolicy::default()
    };
    accepted(MY, "SELECT CURRENT_USER", &extra);
    // SQLite has no such functions: the name is a column.
    accepted(LITE, "SELECT current_role FROM t", &read_only());
}
