//! The PostgreSQL driver against the real local server, connected as a service-account role: what
//! is particular to PostgreSQL. What every driver does (max_rows, streaming, writes, deadlines,
//! cancellation, pool bounds, the allow-list, check and schema, the result cap) is checked in
//! `tests/driver_contract.rs`.
mod support;

use sluice::datasource::tls::TlsSettings;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use sluice::datasource::postgres::PgPool;
use sluice::datasource::{
    Column, Connection, DatasourceSpec, ExecError, Execute, Execution, RegistrySettings, Secret,
};
use sluice::model::{DatasourceId, DatasourceKind};
use support::db::{PgTestDb, pg_admin_url};

const PASSWORD: &str = "s3cret-Pw'x";

struct Fixture {
    db: PgTestDb,
    role: String,
    admin: tokio_postgres::Client,
}

/// A fresh database with `setup` run by the admin, and a login role for the service account.
async fn fixture(setup: &str) -> Fixture {
    let db = PgTestDb::create().await;
    let role = db.create_role("sluice_sa", "s3cret-Pw''x").await;
    let admin = db.admin_client().await;
    let setup = setup.replace("{role}", &role);
    if !setup.is_empty() {
        admin.batch_execute(&setup).await.expect("fixture setup");
    }
    Fixture { db, role, admin }
}

fn server() -> (String, u16) {
    let cfg: tokio_postgres::Config = pg_admin_url().parse().expect("admin url");
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    (host, cfg.get_ports().first().copied().unwrap_or(5432))
}

fn settings() -> RegistrySettings {
    RegistrySettings {
        pool_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(5),
        allow_networks: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        ..RegistrySettings::default()
    }
}

fn spec(f: &Fixture, pool_max_size: usize) -> DatasourceSpec {
    let (host, port) = server();
    DatasourceSpec {
        id: DatasourceId::from("ds_test"),
        kind: DatasourceKind::Postgres,
        connection: Connection::Network {
            host,
            port,
            database: f.db.name.clone(),
            user: f.role.clone(),
            password: Secret::new(PASSWORD),
            options: BTreeMap::from([("application_name".to_owned(), "sluice-test".to_owned())]),
            tls: TlsSettings::disabled(),
        },
        pool_max_size,
        generation: 1,
    }
}

async fn pool(f: &Fixture) -> PgPool {
    PgPool::open(&spec(f, 4), &settings())
        .await
        .expect("open pool")
}

fn query(sql: &str) -> Execute {
    Execute {
        sql: sql.to_owned(),
        params: Vec::new(),
        is_query: true,
        read_only: true,
        max_rows: 10_000,
        timeout: Duration::from_secs(10),
        may_change_session: false,
        search_path: Some("public".into()),
        paced_by_client: false,
    }
}

struct Rows {
    columns: Vec<Column>,
    rows: Vec<Value>,
    truncated: bool,
}

async fn rows(pool: &PgPool, req: Execute) -> Result<Rows, ExecError> {
    match pool.execute(req).await? {
        Execution::Rows(mut s) => {
            let mut rows = Vec::new();
            while let Some(r) = s.next().await {
                rows.push(serde_json::from_slice(&r?).expect("each row is JSON"));
            }
            Ok(Rows {
                columns: s.columns.clone(),
                rows,
                truncated: s.truncated(),
            })
        }
        Execution::Affected { .. } => panic!("expected rows"),
    }
}

/// Whether the role's statements all stop within five seconds (room for a loaded machine: the
/// statements stopped here run for 30 s or more).
async fn nothing_running_for(f: &Fixture) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = f
            .admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND state = 'active'",
                &[&f.role],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn every_common_type_maps_to_the_api_json_and_null_stays_null() {
    let f = fixture(
        "CREATE EXTENSION citext; CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);",
    )
    .await;
    let pool = pool(&f).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("true::bool", json!(true), "bool"),
        ("7::int2", json!(7), "int2"),
        ("(-2147483648)::int4", json!(-2147483648i64), "int4"),
        (
            "9223372036854775807::int8",
            json!(9223372036854775807i64),
            "int8",
        ),
        ("42::oid", json!(42), "oid"),
        ("0.1::float4", json!(0.1), "float4"),
        ("2.5e300::float8", json!(2.5e300), "float8"),
        ("'NaN'::float8", json!("NaN"), "float8"),
        ("'-Infinity'::float8", json!("-Infinity"), "float8"),
        (
            "12345678901234567890.000123::numeric",
            json!("12345678901234567890.000123"),
            "numeric",
        ),
        ("(-0.5)::numeric(10,3)", json!("-0.500"), "numeric"),
        ("'NaN'::numeric", json!("NaN"), "numeric"),
        ("'Infinity'::numeric", json!("Infinity"), "numeric"),
        ("'-Infinity'::numeric", json!("-Infinity"), "numeric"),
        ("'héllo \"q\" \\'::text", json!("héllo \"q\" \\"), "text"),
        ("'v'::varchar(5)", json!("v"), "varchar"),
        ("'ab'::char(3)", json!("ab "), "bpchar"),
        ("'nm'::name", json!("nm"), "name"),
        ("'MiXeD'::citext", json!("MiXeD"), "citext"),
        ("'happy'::mood", json!("happy"), "mood"),
        ("5::posint", json!(5), "int4"),
        (
            "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid",
            json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            "uuid",
        ),
        ("'2024-02-29'::date", json!("2024-02-29"), "date"),
        ("'infinity'::date", json!("infinity"), "date"),
        ("'13:45:06.5'::time", json!("13:45:06.5"), "time"),
        (
            "'13:45:06+05:30'::timetz",
            json!("13:45:06+05:30"),
            "timetz",
        ),
        (
            "'2024-02-29 13:45:06.123456'::timestamp",
            json!("2024-02-29T13:45:06.123456"),
            "timestamp",
        ),
        (
            "'2024-02-29 13:45:06+02'::timestamptz",
            json!("2024-02-29T11:45:06Z"),
            "timestamptz",
        ),
        (
            "'1 year 2 months 3 days 04:05:06.5'::interval",
            json!("P1Y2M3DT4H5M6.5S"),
            "interval",
        ),
        (
            "'{\"a\": [1, 2.5, null]}'::json",
            json!({"a": [1, 2.5, null]}),
            "json",
        ),
        ("'{\"b\": true}'::jsonb", json!({"b": true}), "jsonb"),
        ("'\\x00ff41'::bytea", json!("AP9B"), "bytea"),
        ("'192.168.0.1/24'::inet", json!("192.168.0.1/24"), "inet"),
        ("'::1'::inet", json!("::1"), "inet"),
        ("'10.0.0.0/8'::cidr", json!("10.0.0.0/8"), "cidr"),
        (
            "'08:00:2b:01:02:03'::macaddr",
            json!("08:00:2b:01:02:03"),
            "macaddr",
        ),
        ("ARRAY[1, NULL, 3]::int4[]", json!([1, null, 3]), "int4[]"),
        (
            "ARRAY[['a', 'b'], ['c', NULL]]::text[]",
            json!([["a", "b"], ["c", null]]),
            "text[]",
        ),
        ("ARRAY['sad']::mood[]", json!(["sad"]), "mood[]"),
        ("'{}'::int8[]", json!([]), "int8[]"),
        (
            "ARRAY['2024-01-01 00:00:00+00']::timestamptz[]",
            json!(["2024-01-01T00:00:00Z"]),
            "timestamptz[]",
        ),
        ("ARRAY[1.50]::numeric[]", json!(["1.50"]), "numeric[]"),
        ("ARRAY['{\"k\":1}']::jsonb[]", json!([{"k": 1}]), "jsonb[]"),
        ("ARRAY['\\x01']::bytea[]", json!(["AQ=="]), "bytea[]"),
    ];
    let values: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (expr, _, _))| format!("{expr} AS c{i}"))
        .collect();
    let nulls: Vec<&str> = cases.iter().map(|_| "NULL").collect();
    let sql = format!(
        "SELECT {} UNION ALL SELECT {}",
        values.join(", "),
        nulls.join(", ")
    );
    let r = rows(&pool, query(&sql)).await.expect("type query");
    assert_eq!(r.rows.len(), 2);
    for (i, (expr, expected, ty)) in cases.iter().enumerate() {
        assert_eq!(&r.rows[0][i], expected, "value of {expr}");
        assert_eq!(r.columns[i].type_name, *ty, "type of {expr}");
        assert_eq!(r.columns[i].name, format!("c{i}"));
        assert_eq!(r.rows[1][i], Value::Null, "NULL {ty}");
    }
}

#[tokio::test]
async fn a_type_the_gateway_cannot_encode_is_refused_with_a_cast_hint_and_the_pool_stays_usable() {
    let f = fixture("").await;
    let pool = PgPool::open(&spec(&f, 1), &settings()).await.unwrap();
    let err = rows(&pool, query("SELECT point(1, 2) AS p")).await.err();
    match err {
        Some(ExecError::UnsupportedType(m)) => {
            assert!(m.contains("point") && m.contains("::text"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let r = rows(&pool, query("SELECT point(1, 2)::text AS p"))
        .await
        .unwrap();
    assert_eq!(r.rows, vec![json!(["(1,2)"])]);
}

#[tokio::test]
async fn params_bind_by_the_placeholder_types_and_misfits_are_bad_params() {
    let f = fixture("CREATE TYPE mood AS ENUM ('sad', 'happy');").await;
    let pool = pool(&f).await;
    let mut req = query(
        "SELECT $1::int4 + 1, $2::text, $3::date, $4::numeric, $5::uuid, $6::jsonb, \
         $7::timestamptz, $8::int8[], $9::bool, $10::float8, $11::mood, $12::bytea, \
         $13::interval, $14::int4",
    );
    req.params = vec![
        json!(41),
        json!("it's"),
        json!("2024-02-29"),
        json!("123456789012345678901234567890.5"),
        json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        json!({"x": [1, "y"]}),
        json!("2024-02-29T10:00:00+02:00"),
        json!([1, null, "9007199254740993"]),
        json!(false),
        json!(0.25),
        json!("happy"),
        json!("AP8="),
        json!("P1DT2H"),
        json!(null),
    ];
    let r = rows(&pool, req).await.expect("good params");
    assert_eq!(
        r.rows[0],
        json!([
            42,
            "it's",
            "2024-02-29",
            "123456789012345678901234567890.5",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            {"x": [1, "y"]},
            "2024-02-29T08:00:00Z",
            [1, null, 9007199254740993i64],
            false,
            0.25,
            "happy",
            "AP8=",
            "P1DT2H",
            null
        ])
    );

    let bad = |sql: &str, params: Vec<Value>| {
        let mut q = query(sql);
        q.params = params;
        q
    };
    for (sql, params, must_name) in [
        ("SELECT $1::int4", vec![json!("abc")], "$1"),
        (
            "SELECT $1::int4, $2::int2",
            vec![json!(1), json!(40000)],
            "$2",
        ),
        ("SELECT $1::date", vec![json!(20240229)], "date"),
        ("SELECT $1::mood", vec![json!("angry")], "mood"),
        ("SELECT $1::interval", vec![json!("not an interval")], "$1"),
        ("SELECT $1::int4", vec![], "placeholder"),
        ("SELECT 1", vec![json!(1)], "placeholder"),
    ] {
        match rows(&pool, bad(sql, params.clone())).await.err() {
            Some(ExecError::BadParams(m)) => assert!(m.contains(must_name), "{sql}: {m}"),
            other => panic!("{sql} {params:?}: {other:?}"),
        }
    }
    // The connection survived the refusals.
    let r = rows(&pool, query("SELECT 1")).await.unwrap();
    assert_eq!(r.rows, vec![json!([1])]);
}

#[tokio::test]
async fn sessions_are_pinned_to_the_settings_the_policy_assumes_even_against_role_defaults() {
    let f = fixture(
        "ALTER ROLE {role} SET standard_conforming_strings = off;
         ALTER ROLE {role} SET TimeZone = 'America/New_York';
         ALTER ROLE {role} SET IntervalStyle = 'sql_standard';",
    )
    .await;
    let pool = pool(&f).await;
    let r = rows(
        &pool,
        query(
            "SELECT current_setting('standard_conforming_strings'), current_setting('TimeZone'), \
             current_setting('IntervalStyle'), current_setting('DateStyle'), \
             current_setting('client_encoding'), current_setting('transaction_read_only'), \
             current_setting('application_name')",
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        r.rows[0],
        json!([
            "on",
            "UTC",
            "iso_8601",
            "ISO, MDY",
            "UTF8",
            "on",
            "sluice-test"
        ])
    );
}

/// That a truncated statement is stopped on the server is the driver contract's; PostgreSQL goes
/// further and gives the very connection back, idle and read-only, to the next statement.
#[tokio::test]
async fn a_truncated_query_gives_its_connection_back_for_the_next_statement() {
    let f = fixture("").await;
    let pool = PgPool::open(&spec(&f, 1), &settings()).await.unwrap();
    let pid = |r: Rows| r.rows[0][0].as_i64().expect("a pid");
    let before = pid(rows(&pool, query("SELECT pg_backend_pid()")).await.unwrap());
    // Far more rows than anyone reads: left alone, the server would generate them all.
    // (In the select list the set-returning function streams; in FROM it would be materialized.)
    let mut q = query("SELECT generate_series(1, 2000000000)");
    q.max_rows = 5;
    // (A guard against hanging, not a timing check: the whole result would take many minutes.)
    let r = tokio::time::timeout(Duration::from_secs(60), rows(&pool, q))
        .await
        .expect("stopping early must not wait for the whole result")
        .unwrap();
    assert_eq!(r.rows.len(), 5);
    assert!(r.truncated);
    assert!(nothing_running_for(&f).await, "the statement was cancelled");
    // The one connection came back idle and is used again; the cancel did not hit this query.
    let after = rows(
        &pool,
        query("SELECT pg_backend_pid(), current_setting('transaction_read_only')"),
    )
    .await
    .unwrap();
    assert_eq!(after.rows[0][0].as_i64(), Some(before));
    assert_eq!(after.rows[0][1], json!("on"));
}

#[tokio::test]
async fn a_cancel_after_truncation_never_reaches_the_connections_next_statement() {
    // The statement is done before its cancel arrives; a cancel acted on late would stop the
    // next statement on the same connection instead (seen as a spurious timeout).
    let f = fixture("").await;
    let pool = PgPool::open(&spec(&f, 1), &settings()).await.unwrap();
    let mut cut = query("SELECT g FROM generate_series(1, 10) g");
    cut.max_rows = 3;
    let next = query("SELECT count(*)::int FROM generate_series(1, 20000)");
    for i in 0..100 {
        let r = rows(&pool, cut.clone()).await.unwrap();
        assert!(r.truncated);
        let r = rows(&pool, next.clone()).await;
        assert_eq!(r.unwrap().rows, vec![json!([20000])], "round {i}");
    }
    assert_eq!(pool.stats().size, 1, "one connection throughout");
}

#[tokio::test]
async fn every_statement_is_preceded_by_the_setup_whatever_ran_before() {
    // Read-only must hold per transaction, never rest on a session default: a function can
    // turn `default_transaction_read_only` off for the session, so no statement may skip the
    // setup that sets it back (and pins the search path and role).
    let f = fixture("").await;
    let pool = PgPool::open(&spec(&f, 1), &settings()).await.unwrap();
    // The backend's local transaction counter: the setup statement is a transaction of its own.
    let q = query(
        "SELECT split_part(virtualtransaction, '/', 2)::int FROM pg_locks \
         WHERE pid = pg_backend_pid() AND locktype = 'virtualxid'",
    );
    let lxid = |r: Rows| r.rows[0][0].as_i64().expect("a number");
    let a = lxid(rows(&pool, q.clone()).await.unwrap());
    let b = lxid(rows(&pool, q.clone()).await.unwrap());
    assert_eq!(b - a, 2, "the setup statement, then the query, every time");
    let c = lxid(rows(&pool, q.clone()).await.unwrap());
    assert_eq!(c - b, 2);
    assert_eq!(pool.stats().size, 1);
}

#[tokio::test]
async fn a_session_turned_read_write_by_a_function_is_read_only_again_for_the_next_statement() {
    let f = fixture(
        "CREATE TABLE marks (n int); GRANT INSERT, SELECT ON marks TO {role}; \
         CREATE FUNCTION unlock() RETURNS int LANGUAGE sql AS $$ \
           SELECT 1 FROM (SELECT set_config('default_transaction_read_only', 'off', false)) s $$; \
         GRANT EXECUTE ON FUNCTION unlock() TO {role};",
    )
    .await;
    let pool = PgPool::open(&spec(&f, 1), &settings()).await.unwrap();
    // As if the policy had been fooled into letting the call through unmarked.
    rows(&pool, query("SELECT unlock()")).await.unwrap();
    for _ in 0..3 {
        // Sent the way a read-only datasource sends a query: its transaction must start
        // read-only.
        let e = rows(&pool, query("INSERT INTO marks VALUES (1) RETURNING n"))
            .await
            .err();
        assert!(
            matches!(&e, Some(ExecError::QueryFailed { sqlstate: Some(c), .. }) if c == "25006"),
            "{e:?}"
        );
    }
    let n: i64 = f
        .admin
        .query_one("SELECT count(*) FROM marks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing was written");
    assert_eq!(pool.stats().size, 1, "all on the one pooled connection");
}

/// A connection the server ended while it sat idle in the pool (an administrator's
/// `pg_terminate_backend`, `idle_session_timeout`, a restart) is noticed and replaced when the
/// pool would hand it out, instead of failing the next statement with "connection closed".
#[tokio::test]
async fn a_connection_the_server_ended_while_idle_is_replaced_at_checkout() {
    let f = fixture("").await;
    let pool = PgPool::open(&spec(&f, 1), &settings()).await.unwrap();
    let pid = |r: Rows| r.rows[0][0].as_i64().expect("a pid");
    let first = pid(rows(&pool, query("SELECT pg_backend_pid()")).await.unwrap());
    let ended: bool = f
        .admin
        .query_one("SELECT pg_terminate_backend($1, 5000)", &[&(first as i32)])
        .await
        .unwrap()
        .get(0);
    assert!(ended, "the backend did not end within 5 s");
    // Idle for a moment, as such a connection would be: the driver reads the server's goodbye
    // when it arrives, not at the instant the admin's call returns.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let next = pid(rows(&pool, query("SELECT pg_backend_pid()")).await.expect(
            "a connection ended while idle is replaced, not handed out to fail the statement",
        ));
        assert_ne!(next, first);
    }
    assert_eq!(pool.stats().size, 1);
}

#[tokio::test]
async fn the_read_only_transaction_refuses_a_write_hidden_in_a_function() {
    let f = fixture(
        "CREATE TABLE audit (n int);
         GRANT SELECT, INSERT ON audit TO {role};
         CREATE FUNCTION bump() RETURNS int LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO audit VALUES (1); RETURN 1; END $$;
         GRANT EXECUTE ON FUNCTION bump() TO {role};",
    )
    .await;
    let pool = pool(&f).await;
    match rows(&pool, query("SELECT bump()")).await.err() {
        Some(ExecError::QueryFailed { message, sqlstate }) => {
            assert_eq!(sqlstate.as_deref(), Some("25006"), "{message}");
            assert!(message.contains("read-only"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let n: i64 = f
        .admin
        .query_one("SELECT count(*) FROM audit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing was written");
}

#[tokio::test]
async fn errors_carry_the_database_message_and_sqlstate() {
    let f = fixture("").await;
    let pool = pool(&f).await;
    match rows(&pool, query("SELECT 1/0")).await.err() {
        Some(ExecError::QueryFailed { message, sqlstate }) => {
            assert_eq!(sqlstate.as_deref(), Some("22012"));
            assert!(message.contains("division by zero"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match rows(&pool, query("SELECT * FROM no_such_table"))
        .await
        .err()
    {
        Some(ExecError::QueryFailed { sqlstate, .. }) => {
            assert_eq!(sqlstate.as_deref(), Some("42P01"))
        }
        other => panic!("{other:?}"),
    }
    // Only one statement goes through the extended protocol.
    match rows(&pool, query("SELECT 1; SELECT 2")).await.err() {
        Some(ExecError::QueryFailed { sqlstate, .. }) => {
            assert_eq!(sqlstate.as_deref(), Some("42601"))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_pool_serves_across_tasks_and_never_prints_the_password() {
    // (That a closed pool refuses new work is the driver contract's.)
    let f = fixture("").await;
    let pool = std::sync::Arc::new(pool(&f).await);
    // The pool is shared across tasks (the registry holds it in an Arc; handlers are Send).
    let shared = pool.clone();
    let n = tokio::spawn(async move { rows(&shared, query("SELECT 1")).await.map(|r| r.rows) })
        .await
        .unwrap();
    assert_eq!(n, Ok(vec![json!([1])]));
    assert!(!format!("{pool:?}").contains(PASSWORD));
}

#[tokio::test]
async fn an_error_mid_stream_ends_the_stream_with_it_and_the_pool_recovers() {
    let f = fixture("").await;
    let pool = PgPool::open(&spec(&f, 1), &settings()).await.unwrap();
    let Execution::Rows(mut s) = pool
        .execute(query(
            "SELECT 1 / (g - 500) FROM generate_series(1, 1000) g",
        ))
        .await
        .unwrap()
    else {
        panic!("expected rows")
    };
    let (mut n, mut err) = (0, None);
    while let Some(r) = s.next().await {
        match r {
            Ok(_) => n += 1,
            Err(e) => err = Some(e),
        }
    }
    assert_eq!(n, 499);
    assert!(
        matches!(&err, Some(ExecError::QueryFailed { sqlstate: Some(c), .. }) if c == "22012"),
        "{err:?}"
    );
    assert_eq!(
        rows(&pool, query("SELECT 3")).await.unwrap().rows,
        vec![json!([3])]
    );
}

#[tokio::test]
async fn an_empty_statement_returns_no_rows_instead_of_looping() {
    let f = fixture("").await;
    let pool = pool(&f).await;
    let mut q = query("");
    q.timeout = Duration::from_secs(2);
    let r = rows(&pool, q).await.unwrap();
    assert!(r.rows.is_empty() && r.columns.is_empty() && !r.truncated);
}

#[tokio::test]
async fn a_session_setting_changed_by_a_statement_does_not_reach_the_next_request() {
    let f = fixture("").await;
    let pool = PgPool::open(&spec(&f, 1), &settings()).await.unwrap();
    // As if the SQL policy had let a session-level change through on a read-write datasource.
    let mut w = query(
        "SELECT set_config('standard_conforming_strings', 'off', false), \
         set_config('TimeZone', 'America/New_York', false)",
    );
    w.read_only = false;
    rows(&pool, w).await.unwrap();
    let r = rows(
        &pool,
        query(
            "SELECT current_setting('standard_conforming_strings'), current_setting('TimeZone'), \
             '2024-01-01 00:00:00+00'::timestamptz",
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.rows, vec![json!(["on", "UTC", "2024-01-01T00:00:00Z"])]);
}

#[tokio::test]
async fn a_query_calling_functions_the_policy_cannot_see_into_leaves_no_session_state() {
    // A function an admin allowed can take session-level locks and change settings the setup
    // statement does not watch; with `may_change_session` the connection's session is put back.
    let f = fixture(
        "CREATE FUNCTION sticky() RETURNS int LANGUAGE sql AS $$ \
           SELECT pg_advisory_lock(42); \
           SELECT set_config('search_path', 'pg_temp, elsewhere', false); \
           SELECT 1 $$; \
         GRANT EXECUTE ON FUNCTION sticky() TO {role};",
    )
    .await;
    let pool = PgPool::open(&spec(&f, 1), &settings()).await.unwrap();
    let state = "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                 AND pid = pg_backend_pid())::int, current_setting('search_path'), \
                 pg_backend_pid()";
    let before = rows(&pool, query(state)).await.unwrap().rows;
    let mut sticky = query("SELECT sticky()");
    sticky.may_change_session = true;
    assert_eq!(rows(&pool, sticky).await.unwrap().rows, vec![json!([1])]);
    let after = rows(&pool, query(state)).await.unwrap().rows;
    assert_eq!(after[0][0], json!(0), "the advisory lock was released");
    assert_eq!(after[0][1], before[0][1], "search_path is back");
    assert_eq!(after[0][2], before[0][2], "on the same connection");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_within_the_connect_timeout() {
    let f = fixture("").await;
    // Nothing listens on port 1.
    let mut s = spec(&f, 1);
    if let Connection::Network { port, .. } = &mut s.connection {
        *port = 1;
    }
    let pool = PgPool::open(&s, &settings()).await.unwrap();
    match pool.execute(query("SELECT 1")).await.err() {
        Some(ExecError::Unavailable(m)) => assert!(!m.contains(PASSWORD), "{m}"),
        other => panic!("{other:?}"),
    }

    // A non-routable address: the connection attempt is cut at connect_timeout.
    let mut settings = settings();
    settings.connect_timeout = Duration::from_millis(300);
    settings.allow_networks.push("10.0.0.0/8".parse().unwrap());
    if let Connection::Network { host, port, .. } = &mut s.connection {
        *host = "10.255.255.1".into();
        *port = 5432;
    }
    let pool = PgPool::open(&s, &settings).await.unwrap();
    let start = Instant::now();
    assert!(matches!(
        pool.execute(query("SELECT 1")).await.err(),
        Some(ExecError::Unavailable(_))
    ));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_value_larger_than_the_result_cap_is_refused_before_it_is_read() {
    // One 50 MB value against a 1 MiB cap: the socket watch fails the read at the row's header,
    // so the gateway never buffers the row (tokio-postgres would reserve all of it at once).
    let f = fixture("").await;
    let mut settings = settings();
    settings.max_result_bytes = 1024 * 1024;
    let pool = PgPool::open(&spec(&f, 1), &settings).await.unwrap();
    for paced in [false, true] {
        let mut big = query("SELECT repeat('x', 50000000)");
        big.paced_by_client = paced;
        match rows(&pool, big).await {
            Err(ExecError::ResultTooLarge(n)) => assert_eq!(n, 1024 * 1024),
            other => panic!("paced {paced}: {:?}", other.map(|r| r.rows.len())),
        }
        // The connection went with it; the next statement gets a fresh one.
        let r = rows(&pool, query("SELECT 1")).await.unwrap();
        assert_eq!(r.rows, vec![json!([1])]);
    }
}

#[tokio::test]
async fn a_connection_that_buffered_a_large_row_is_closed_rather_than_kept() {
    let f = fixture("").await;
    let pool = PgPool::open(&spec(&f, 1), &settings()).await.unwrap();
    let pid = |r: Rows| r.rows[0][0].as_i64().expect("a pid");
    let first = pid(rows(&pool, query("SELECT pg_backend_pid()")).await.unwrap());
    let again = pid(rows(&pool, query("SELECT pg_backend_pid()")).await.unwrap());
    assert_eq!(first, again, "small rows: the connection is kept");
    // 8 MB in one row is under the cap but grew the connection's read buffer.
    let big = rows(
        &pool,
        query("SELECT length(repeat('x', 8000000)), repeat('y', 8000000)"),
    )
    .await
    .unwrap();
    assert_eq!(big.rows[0][0], json!(8000000));
    let after = pid(rows(&pool, query("SELECT pg_backend_pid()")).await.unwrap());
    assert_ne!(after, first, "the connection that held 8 MB was closed");
}

/// Everything a function can leave in a session, one state per column, read on the connection.
const SESSION_STATE: &str = "SELECT current_setting('search_path'), \
     current_setting('standard_conforming_strings'), current_user::text, \
     current_setting('TimeZone'), current_setting('default_transaction_read_only'), \
     (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())::int, \
     (SELECT count(*) FROM pg_prepared_statements WHERE from_sql)::int, \
     (SELECT count(*) FROM pg_listening_channels())::int, \
     (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema())::int, \
     pg_backend_pid()";

#[tokio::test]
async fn nothing_a_function_leaves_in_the_session_reaches_the_next_request() {
    // One connection, so every statement follows the one before it on the same session.
    let f = fixture(
        "CREATE ROLE {role}_other NOLOGIN; GRANT {role}_other TO {role};
         CREATE FUNCTION leave_everything() RETURNS int LANGUAGE plpgsql AS $$
         BEGIN
           PERFORM set_config('search_path', 'elsewhere, public', false);
           PERFORM set_config('standard_conforming_strings', 'off', false);
           PERFORM set_config('role', current_user || '_other', false);
           PERFORM set_config('TimeZone', 'America/New_York', false);
           PERFORM set_config('default_transaction_read_only', 'off', false);
           PERFORM pg_advisory_lock(42);
           EXECUTE 'PREPARE leftover AS SELECT 1';
           EXECUTE 'LISTEN leftover';
           CREATE TEMP TABLE leftover_t (x int);
           RETURN 1;
         END $$;
         GRANT EXECUTE ON FUNCTION leave_everything() TO {role};",
    )
    .await;
    let pool = PgPool::open(&spec(&f, 1), &settings()).await.unwrap();
    let clean = rows(&pool, query(SESSION_STATE)).await.unwrap().rows;
    let expected_settings = json!(["public", "on", f.role.clone(), "UTC", "on"]);
    assert_eq!(json!(clean[0].as_array().unwrap()[..5]), expected_settings);
    // The function runs in a read-write transaction (temp tables and locks need one) and the
    // policy marks it as user code (`may_change_session`): everything is put back.
    let mut call = query("SELECT leave_everything()");
    call.read_only = false;
    call.may_change_session = true;
    rows(&pool, call).await.unwrap();
    let after = rows(&pool, query(SESSION_STATE)).await.unwrap().rows;
    assert_eq!(after[0][9], clean[0][9], "the same connection");
    assert_eq!(
        json!(after[0].as_array().unwrap()[..9]),
        json!(clean[0].as_array().unwrap()[..9]),
        "settings, role, read-only, advisory locks, prepared statements, LISTEN, temp tables"
    );

    // Even unmarked (a policy fooled into thinking nothing runs), the settings the policy's
    // model depends on are pinned again before the next statement: search path, escapes, role,
    // time zone and read-only.
    let mut fooled = query("SELECT leave_everything()");
    fooled.read_only = false;
    rows(&pool, fooled).await.unwrap();
    let after = rows(&pool, query(SESSION_STATE)).await.unwrap().rows;
    assert_eq!(after[0][9], clean[0][9], "still the same connection");
    assert_eq!(json!(after[0].as_array().unwrap()[..5]), expected_settings);
}

#[tokio::test]
async fn introspection_reads_what_stands_behind_each_name() {
    use sluice::policy::catalog::{RelName, RelationKind};
    let f = fixture(
        "CREATE SCHEMA lib;
         ALTER ROLE {role} SET search_path = lib;
         GRANT USAGE ON SCHEMA lib TO {role};
         CREATE TABLE lib.ev_parent (id int);
         CREATE TABLE lib.ev_secret () INHERITS (lib.ev_parent);
         CREATE TABLE lib.pay (id int, y int) PARTITION BY RANGE (y);
         CREATE TABLE lib.pay_2024 PARTITION OF lib.pay FOR VALUES FROM (2024) TO (2025);
         CREATE TABLE lib.secrets (id int PRIMARY KEY, v text);
         CREATE TABLE lib.notes (id int REFERENCES lib.secrets ON DELETE CASCADE);
         CREATE FUNCTION lib.leak() RETURNS int LANGUAGE sql AS 'SELECT 1';
         CREATE VIEW lib.v_secrets AS SELECT v, lib.leak() AS l FROM lib.secrets;
         CREATE MATERIALIZED VIEW lib.mv AS SELECT v FROM lib.v_secrets;
         CREATE FUNCTION lib.stamp() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
         CREATE TRIGGER stamp BEFORE INSERT ON lib.notes FOR EACH ROW EXECUTE FUNCTION lib.stamp();
         CREATE TABLE lib.defaults (n int DEFAULT lib.leak(), m int CHECK (m > lib.leak()));
         CREATE TABLE lib.guarded (id int); ALTER TABLE lib.guarded ENABLE ROW LEVEL SECURITY;
         CREATE POLICY p ON lib.guarded USING (id > lib.leak());
         CREATE TYPE lib.mood AS ENUM ('ok', 'sad');
         CREATE TABLE lib.members (id int, mood lib.mood);
         CREATE FUNCTION lib.mood_text(lib.mood) RETURNS text LANGUAGE sql AS 'SELECT ''x''';
         CREATE CAST (lib.mood AS text) WITH FUNCTION lib.mood_text(lib.mood);
         CREATE FUNCTION lib.member_text(lib.members) RETURNS text LANGUAGE sql AS 'SELECT ''x''';
         CREATE CAST (lib.members AS text) WITH FUNCTION lib.member_text(lib.members);
         CREATE RULE log_del AS ON DELETE TO lib.ev_parent DO ALSO DELETE FROM lib.notes;
         CREATE VIEW lib.v_roles AS SELECT rolname FROM pg_catalog.pg_authid;
         CREATE EXTENSION pg_trgm;
         CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE sql AS 'SELECT ''x''';",
    )
    .await;
    let pool = PgPool::open(&spec(&f, 1), &settings()).await.unwrap();
    let c = pool.introspect().await.expect("introspect");
    let r = |s: &str| {
        let (schema, name) = s.split_once('.').unwrap();
        c.relations
            .get(&RelName::new(schema, name))
            .unwrap_or_else(|| panic!("{s} missing from {:#?}", c.relations.keys()))
    };
    assert_eq!(c.default_schema, "lib", "the role's own search path");
    assert!(
        c.server_version.starts_with("PostgreSQL"),
        "{}",
        c.server_version
    );
    assert!(c.builtin_functions.contains("lower") && c.builtin_functions.contains("date_trunc"));
    assert!(!c.builtin_functions.contains("leak"));
    assert!(c.system_relations.contains("pg_class") && c.system_relations.contains("pg_stats"));
    assert_eq!(
        r("lib.ev_parent").children,
        vec![RelName::new("lib", "ev_secret")]
    );
    assert_eq!(
        r("lib.ev_parent").cascades,
        vec![RelName::new("lib", "notes")],
        "the rule"
    );
    assert_eq!(r("lib.pay").kind, RelationKind::Partitioned);
    assert_eq!(r("lib.pay").children, vec![RelName::new("lib", "pay_2024")]);
    assert_eq!(r("lib.v_secrets").kind, RelationKind::View);
    assert_eq!(
        r("lib.v_secrets").reads,
        vec![RelName::new("lib", "secrets")]
    );
    assert_eq!(
        r("lib.v_secrets").read_functions,
        vec!["lib.leak".to_string()]
    );
    // pg_authid is pinned (no pg_depend row): found in the view's query tree.
    assert_eq!(
        r("lib.v_roles").reads,
        vec![RelName::new("pg_catalog", "pg_authid")]
    );
    assert_eq!(r("lib.mv").kind, RelationKind::MaterializedView);
    assert_eq!(r("lib.mv").reads, vec![RelName::new("lib", "v_secrets")]);
    assert_eq!(
        r("lib.secrets").cascades,
        vec![RelName::new("lib", "notes")]
    );
    assert_eq!(
        r("lib.notes").write_functions,
        vec!["lib.stamp".to_string()]
    );
    assert_eq!(
        r("lib.defaults").write_functions,
        vec!["lib.leak".to_string()]
    );
    assert_eq!(
        r("lib.guarded").read_functions,
        vec!["lib.leak".to_string()]
    );
    assert!(r("lib.members").row_cast, "members has a user cast to text");
    assert_eq!(r("lib.members").cast_columns, vec!["mood".to_string()]);
    let trgm = c.extensions.get("pg_trgm").expect("pg_trgm");
    assert_eq!(trgm.schema, "public");
    assert!(trgm.functions.contains("similarity") && trgm.operators.contains("%"));
    assert!(trgm.volatile_functions.contains("set_limit"));
    let public = c
        .extension_schemas
        .get("public")
        .expect("public hosts pg_trgm");
    assert_eq!(
        public.functions.get("lower").map(|p| p.contains(&None)),
        Some(true),
        "the planted lower(varchar) belongs to no extension"
    );
}

#[tokio::test]
async fn nothing_of_ours_resolves_a_name_through_the_accounts_own_search_path() {
    // The account's search path puts a user schema before pg_catalog, and that schema holds a
    // domain named `text` whose check writes a marker: any unqualified `text` in the gateway's own
    // SQL (at connect, in the cleanup after RESET ALL, in introspection) would run it.
    let f = fixture(
        "CREATE SCHEMA trap; CREATE TABLE public.marks (what text);
         GRANT INSERT ON public.marks TO {role}; GRANT USAGE ON SCHEMA trap TO {role};
         CREATE FUNCTION trap.note(v pg_catalog.text) RETURNS boolean LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO public.marks VALUES (v); RETURN true;
           EXCEPTION WHEN OTHERS THEN RETURN true; END $$;
         CREATE DOMAIN trap.text AS pg_catalog.text CHECK (trap.note(VALUE));
         CREATE DOMAIN trap.bool AS pg_catalog.bool CHECK (trap.note('bool'));
         GRANT EXECUTE ON FUNCTION trap.note(pg_catalog.text) TO {role};
         ALTER ROLE {role} SET search_path = trap, pg_catalog;",
    )
    .await;
    let pool = PgPool::open(&spec(&f, 1), &settings()).await.unwrap();
    let catalog = pool.introspect().await.expect("introspect");
    assert_eq!(catalog.default_schema, "trap");
    let mut user_code = query("SELECT 1");
    user_code.may_change_session = true;
    rows(&pool, user_code).await.unwrap();
    pool.introspect()
        .await
        .expect("introspect after the cleanup");
    pool.schema().await.expect("schema");
    let n: i64 = f
        .admin
        .query_one("SELECT count(*) FROM public.marks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "a trap.* object ran for the gateway's own SQL");
}
