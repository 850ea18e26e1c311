//! The query route's behaviour over HTTP on real databases: parameter binding, row caps, NDJSON
//! streaming, writes, the read-only guarantee, timeouts, integrations, datasource resolution,
//! audit records and metrics.
mod support;

use futures::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::gateway::{
    Gateway, PgAcme, mysql_acme, pg_acme, query_counter, sqlite_acme, sqlite_datasource,
};

/// A gateway, acme on PostgreSQL through the analyst account, and the owner's app on it.
struct Pg {
    acme: PgAcme,
    gw: Gateway,
    app: String,
    ds: String,
}

async fn pg_world(policy: Value) -> Pg {
    let acme = pg_acme().await;
    let gw = Gateway::start().await;
    gw.set_integration(&gw.owner, "postgres", true).await;
    let body = acme.datasource("acme-pg", &acme.accounts.analyst, policy);
    let ds = gw.datasource(&gw.owner, body).await;
    let app = gw.app(&gw.owner, "analytics", &[&ds]).await;
    Pg { acme, gw, app, ds }
}

impl Pg {
    async fn query(&self, body: Value) -> (u16, Value) {
        self.gw.query(&self.gw.owner, &self.app, body).await
    }

    async fn rows(&self, body: Value) -> Value {
        self.gw.rows(&self.gw.owner, &self.app, body).await
    }

    async fn refused(&self, body: Value, status: u16) -> String {
        self.gw
            .refused(&self.gw.owner, &self.app, body, status)
            .await
    }

    /// A count through the admin connection (not the gateway).
    async fn admin_count(&self, sql: &str) -> i64 {
        let admin = self.acme.db.admin_client().await;
        admin.query_one(sql, &[]).await.expect(sql).get(0)
    }
}

/// An NDJSON answer: status, and the lines parsed, plus how many body chunks carried them.
async fn ndjson(gw: &Gateway, app: &str, body: Value) -> (u16, Vec<Value>, usize) {
    let res = gw
        .request(&gw.owner, "POST", &format!("/v1/apps/{app}/query"))
        .header("accept", "application/x-ndjson")
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    if status == 200 {
        assert_eq!(
            res.headers()["content-type"],
            "application/x-ndjson",
            "content type"
        );
    }
    let mut stream = res.bytes_stream();
    let mut pending = Vec::new();
    let mut lines = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        chunks += 1;
        pending.extend_from_slice(&chunk);
        // Parse complete lines as they come, so a large stream is never held whole as bytes.
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            lines.push(serde_json::from_slice(&line).expect("a JSON line"));
        }
    }
    if !pending.is_empty() {
        lines.push(serde_json::from_slice(&pending).expect("a JSON body"));
    }
    (status, lines, chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_bind_on_every_kind_and_a_count_or_type_mismatch_is_bad_params() {
    let pg = pg_acme().await;
    let my = mysql_acme().await;
    let gw = Gateway::start().await;
    let owner = gw.owner.clone();
    for kind in ["postgres", "mysql", "sqlite"] {
        gw.set_integration(&owner, kind, true).await;
    }
    let path = sqlite_acme(&gw, "acme.sqlite");
    let pg_ds = gw
        .datasource(&owner, pg.datasource("pg", &pg.accounts.sales, json!({})))
        .await;
    let my_ds = gw
        .datasource(&owner, my.datasource("my", &my.accounts.sales, json!({})))
        .await;
    let lite_ds = gw
        .datasource(&owner, sqlite_datasource("lite", &path, json!({})))
        .await;
    let app = gw
        .app(&owner, "three kinds", &[&pg_ds, &my_ds, &lite_ds])
        .await;

    // The same customer through each kind's placeholder, naming the datasource by name or id.
    for (datasource, id, sql) in [
        (
            "pg",
            &pg_ds,
            "SELECT id, name FROM customers WHERE id = $1 AND country = $2",
        ),
        (
            my_ds.as_str(),
            &my_ds,
            "SELECT id, name FROM customers WHERE id = ? AND country = ?",
        ),
        (
            "lite",
            &lite_ds,
            "SELECT id, name FROM customers WHERE id = ? AND country = ?",
        ),
    ] {
        let country = gw
            .rows(
                &owner,
                &app,
                json!({"datasource": datasource, "sql": "SELECT country FROM customers WHERE id = 7"}),
            )
            .await["rows"][0][0]
            .clone();
        let v = gw
            .rows(
                &owner,
                &app,
                json!({"datasource": datasource, "sql": sql, "params": [7, country]}),
            )
            .await;
        assert_eq!(v["row_count"], 1, "{datasource}: {v}");
        assert_eq!(v["rows"][0][0], 7, "{datasource}: {v}");
        assert_eq!(
            v["datasource"]["id"],
            json!(id),
            "the named datasource answered"
        );
        // A param that does not match changes the answer: it was really bound.
        let none = gw
            .rows(
                &owner,
                &app,
                json!({"datasource": datasource, "sql": sql, "params": [7, "??"]}),
            )
            .await;
        assert_eq!(none["row_count"], 0, "{datasource}: {none}");
        for params in [json!([]), json!([7]), json!([7, "x", 8])] {
            let code = gw
                .refused(
                    &owner,
                    &app,
                    json!({"datasource": datasource, "sql": sql, "params": params}),
                    400,
                )
                .await;
            assert_eq!(code, "bad_params", "{datasource} with {params}");
        }
    }
    // A value PostgreSQL cannot take for an integer placeholder.
    let code = gw
        .refused(
            &owner,
            &app,
            json!({"datasource": pg_ds, "sql": "SELECT name FROM customers WHERE id = $1",
                   "params": ["seven"]}),
            400,
        )
        .await;
    assert_eq!(code, "bad_params");

    // Three datasources and none named: ambiguous.
    let code = gw
        .refused(&owner, &app, json!({"sql": "SELECT 1 AS one"}), 409)
        .await;
    assert_eq!(code, "conflict");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datasource_that_is_not_attached_or_does_not_exist_is_a_conflict() {
    let pg = pg_world(json!({})).await;
    let other = pg
        .gw
        .datasource(
            &pg.gw.owner,
            pg.acme
                .datasource("acme-pg-exec", &pg.acme.accounts.executive, json!({})),
        )
        .await;
    for named in [other.as_str(), "acme-pg-exec", "no-such-datasource"] {
        let code = pg
            .refused(json!({"datasource": named, "sql": "SELECT 1 AS one"}), 409)
            .await;
        assert_eq!(code, "conflict", "{named}");
    }
    // The attached one by name and by id, and the only one when none is named.
    for named in [json!("acme-pg"), json!(pg.ds), Value::Null] {
        let v = pg
            .rows(json!({"datasource": named, "sql": "SELECT 1 AS one"}))
            .await;
        assert_eq!(v["rows"], json!([[1]]));
        assert_eq!(v["datasource"]["id"], json!(pg.ds));
    }
    // With no datasource attached at all there is nothing to run on.
    let empty = pg.gw.app(&pg.gw.owner, "empty", &[]).await;
    let code = pg
        .gw
        .refused(&pg.gw.owner, &empty, json!({"sql": "SELECT 1 AS one"}), 409)
        .await;
    assert_eq!(code, "conflict");
    pg.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rows_in_a_request_lowers_the_policy_cap_but_never_raises_it() {
    let pg = pg_world(json!({"max_rows": 50})).await;
    let sql = "SELECT id FROM customers ORDER BY id";
    let lower = pg.rows(json!({"sql": sql, "max_rows": 10})).await;
    assert_eq!(
        (lower["row_count"].clone(), lower["truncated"].clone()),
        (json!(10), json!(true))
    );
    assert_eq!(lower["rows"].as_array().unwrap().len(), 10);
    assert_eq!(lower["rows"][9], json!([10]));

    let higher = pg.rows(json!({"sql": sql, "max_rows": 100_000})).await;
    assert_eq!(
        (higher["row_count"].clone(), higher["truncated"].clone()),
        (json!(50), json!(true))
    );
    let default = pg.rows(json!({"sql": sql})).await;
    assert_eq!(default["row_count"], 50);

    // Exactly as many rows as the cap: nothing was cut off.
    let exact = pg
        .rows(json!({"sql": "SELECT id FROM customers WHERE id <= 5", "max_rows": 5}))
        .await;
    assert_eq!(
        (exact["row_count"].clone(), exact["truncated"].clone()),
        (json!(5), json!(false))
    );
    pg.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_streams_a_columns_line_then_rows_then_a_summary() {
    let pg = pg_world(json!({})).await;
    let (status, lines, _) = ndjson(
        &pg.gw,
        &pg.app,
        json!({"sql": "SELECT id, name FROM customers WHERE id <= 3 ORDER BY id"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(lines.len(), 5, "{lines:?}");
    let names: Vec<&Value> = lines[0]["columns"]
        .as_array()
        .expect("columns first")
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, [&json!("id"), &json!("name")]);
    for (i, row) in lines[1..4].iter().enumerate() {
        assert_eq!(row[0], json!(i + 1), "{row}");
        assert!(row[1].is_string());
    }
    assert_eq!(lines[4]["row_count"], 3);
    assert_eq!(lines[4]["truncated"], false);
    assert!(lines[4]["elapsed_ms"].is_number());

    // A refusal before streaming is a plain error answer.
    let (status, lines, _) = ndjson(
        &pg.gw,
        &pg.app,
        json!({"sql": "SELECT salary FROM sales_reps"}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(lines[0]["error"]["code"], "query_failed");
    pg.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_after_streaming_began_is_the_last_ndjson_line() {
    let pg = pg_world(json!({"max_rows": 1_000_000})).await;
    let (status, lines, _) = ndjson(
        &pg.gw,
        &pg.app,
        json!({"sql": "SELECT 1 / (5000 - g) AS x FROM generate_series(1, 10000) AS g"}),
    )
    .await;
    assert_eq!(status, 200, "the stream began before the failure");
    assert!(lines[0]["columns"].is_array());
    let last = lines.last().expect("lines");
    assert_eq!(last["error"]["code"], "query_failed", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("division by zero"),
        "{last}"
    );
    let rows = lines.len() - 2;
    assert!(rows > 0 && rows <= 4_999, "{rows} rows before the error");
    assert!(lines[1..=rows].iter().all(Value::is_array));
    let audit = pg
        .gw
        .audit(&pg.gw.owner, "action=query&outcome=failed")
        .await;
    assert_eq!(audit[0]["code"], "query_failed");
    assert_eq!(audit[0]["row_count"], rows);
    pg.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_ndjson_stream_arrives_in_many_chunks_with_every_row() {
    let pg = pg_world(json!({"max_rows": 1_000_000})).await;
    let started = Instant::now();
    let (status, lines, chunks) = ndjson(
        &pg.gw,
        &pg.app,
        json!({"sql": "SELECT g, 'row ' || g AS label FROM generate_series(1, 200000) AS g"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(lines.len(), 200_002);
    assert!(chunks > 10, "streamed in {chunks} chunk(s)");
    for (expected, row) in (1..).zip(&lines[1..200_001]) {
        assert_eq!(row[0], json!(expected));
    }
    assert_eq!(lines[200_000][1], "row 200000");
    assert_eq!(lines[200_001]["row_count"], 200_000);
    assert_eq!(lines[200_001]["truncated"], false);
    assert!(started.elapsed() < Duration::from_secs(30));
    pg.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_read_write_answer_rows_affected_and_on_read_only_are_refused() {
    let acme = pg_acme().await;
    let admin = acme.db.admin_client().await;
    let writer = acme.db.create_role("qa_writer", "writer_pw").await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);
             GRANT USAGE ON SCHEMA public TO {writer};
             GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO {writer};
             GRANT USAGE ON SEQUENCE notes_id_seq TO {writer};"
        ))
        .await
        .unwrap();
    let gw = Gateway::start().await;
    gw.set_integration(&gw.owner, "postgres", true).await;
    let account = (writer, "writer_pw".to_owned());
    let rw = gw
        .datasource(
            &gw.owner,
            acme.datasource("notes-rw", &account, json!({"access": "read_write"})),
        )
        .await;
    let ro = gw
        .datasource(&gw.owner, acme.datasource("notes-ro", &account, json!({})))
        .await;
    let app = gw.app(&gw.owner, "notes", &[&rw, &ro]).await;
    let count = || async {
        admin
            .query_one("SELECT count(*) FROM notes", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };

    let (s, v) = gw
        .query(
            &gw.owner,
            &app,
            json!({"datasource": "notes-rw", "sql": "INSERT INTO notes (body) VALUES ($1), ($2)",
                   "params": ["one", "two"]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rows_affected"], 2, "{v}");
    assert!(v.get("rows").is_none(), "a write has no rows: {v}");
    assert_eq!(count().await, 2);
    let (_, v) = gw
        .query(
            &gw.owner,
            &app,
            json!({"datasource": "notes-rw", "sql": "UPDATE notes SET body = 'uno' WHERE body = 'one'"}),
        )
        .await;
    assert_eq!(v["rows_affected"], 1, "{v}");
    let body: String = admin
        .query_one("SELECT body FROM notes ORDER BY id LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, "uno");

    let code = gw
        .refused(
            &gw.owner,
            &app,
            json!({"datasource": "notes-ro", "sql": "INSERT INTO notes (body) VALUES ('three')"}),
            403,
        )
        .await;
    assert_eq!(code, "statement_not_allowed");
    assert_eq!(
        count().await,
        2,
        "nothing written through the read-only datasource"
    );
    let (_, v) = gw
        .query(
            &gw.owner,
            &app,
            json!({"datasource": "notes-rw", "sql": "DELETE FROM notes"}),
        )
        .await;
    assert_eq!(v["rows_affected"], 2, "{v}");
    assert_eq!(count().await, 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writing_function_allowed_by_name_is_still_stopped_by_the_database() {
    let pg = pg_world(json!({"extra_functions": ["acme_bump"]})).await;
    let (status, v) = pg
        .query(json!({"sql": "SELECT acme_bump() AS bumped"}))
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "query_failed");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("read-only"),
        "{v}"
    );
    assert_eq!(pg.admin_count("SELECT count(*) FROM bump_log").await, 0);
    // Without the allowance the policy refuses it before the database sees it.
    let plain = pg_world(json!({})).await;
    let code = plain
        .refused(json!({"sql": "SELECT acme_bump()"}), 403)
        .await;
    assert_eq!(code, "function_not_allowed");

    let my = mysql_acme().await;
    let gw = &pg.gw;
    gw.set_integration(&gw.owner, "mysql", true).await;
    let ds = gw
        .datasource(
            &gw.owner,
            my.datasource(
                "acme-my",
                &my.accounts.sales,
                json!({"extra_functions": ["acme_bump"]}),
            ),
        )
        .await;
    let app = gw.app(&gw.owner, "mysql bump", &[&ds]).await;
    let (status, v) = gw
        .query(
            &gw.owner,
            &app,
            json!({"sql": "SELECT acme_bump() AS bumped"}),
        )
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (422, &json!("query_failed")),
        "{v}"
    );
    let mut admin = my.db.admin_conn().await;
    let n: Option<i64> =
        mysql_async::prelude::Queryable::query_first(&mut admin, "SELECT count(*) FROM bump_log")
            .await
            .unwrap();
    assert_eq!(n, Some(0));
    let _ = admin.disconnect().await;
    plain.gw.stop().await;
    pg.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_its_timeout_answers_504_and_leaves_nothing_running() {
    let pg = pg_world(json!({"extra_functions": ["pg_sleep"]})).await;
    let started = Instant::now();
    let code = pg
        .refused(
            json!({"sql": "SELECT pg_sleep(20)", "timeout_ms": 300}),
            504,
        )
        .await;
    assert_eq!(code, "query_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let role = &pg.acme.accounts.analyst.0;
    let running = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}' AND state <> 'idle'"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let n = pg.admin_count(&running).await;
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} statement(s) still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection is usable again afterwards.
    let v = pg.rows(json!({"sql": "SELECT 1 AS one"})).await;
    assert_eq!(v["rows"], json!([[1]]));
    pg.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_the_integration_off_refuses_queries_and_on_again_restores_them() {
    let pg = pg_world(json!({})).await;
    let sql = json!({"sql": "SELECT count(*) AS n FROM customers"});
    assert_eq!(pg.rows(sql.clone()).await["rows"], json!([[500]]));
    pg.gw.set_integration(&pg.gw.owner, "postgres", false).await;
    assert_eq!(pg.refused(sql.clone(), 403).await, "integration_disabled");
    pg.gw.set_integration(&pg.gw.owner, "postgres", true).await;
    assert_eq!(pg.rows(sql).await["rows"], json!([[500]]));
    pg.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_is_audited_and_counted_in_the_metrics() {
    let pg = pg_world(json!({"denied_tables": ["public.invoices"]})).await;
    let before = pg.gw.metrics().await;
    pg.rows(json!({"sql": "SELECT id FROM customers WHERE id <= 4"}))
        .await;
    pg.refused(json!({"sql": "SELECT * FROM invoices"}), 403)
        .await;
    pg.refused(json!({"sql": "DELETE FROM customers"}), 403)
        .await;
    pg.refused(json!({"sql": "SELECT salary FROM sales_reps"}), 422)
        .await;
    pg.refused(json!({"sql": "SELEC 1"}), 400).await;

    let items = pg
        .gw
        .audit(&pg.gw.owner, &format!("action=query&app_id={}", pg.app))
        .await;
    let seen: Vec<(String, Option<String>, Option<u64>, String)> = items
        .iter()
        .map(|e| {
            (
                e["outcome"].as_str().unwrap().to_owned(),
                e["code"].as_str().map(str::to_owned),
                e["row_count"].as_u64(),
                e["sql"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("denied", Some("sql_parse_error"), None, "SELEC 1"),
        (
            "failed",
            Some("query_failed"),
            None,
            "SELECT salary FROM sales_reps",
        ),
        (
            "denied",
            Some("statement_not_allowed"),
            None,
            "DELETE FROM customers",
        ),
        (
            "denied",
            Some("table_not_allowed"),
            None,
            "SELECT * FROM invoices",
        ),
        (
            "allowed",
            None,
            Some(4),
            "SELECT id FROM customers WHERE id <= 4",
        ),
    ]
    .map(|(o, c, n, s)| (o.to_owned(), c.map(str::to_owned), n, s.to_owned()));
    assert_eq!(seen, expected);
    for e in &items {
        assert_eq!(e["datasource_id"], json!(pg.ds), "{e}");
        assert!(e["request_id"].is_string(), "{e}");
        assert!(e["duration_ms"].is_number(), "{e}");
    }

    let after = pg.gw.metrics().await;
    for (outcome, more) in [
        ("ok", 1),
        ("table_not_allowed", 1),
        ("statement_not_allowed", 1),
        ("query_failed", 1),
        ("sql_parse_error", 1),
    ] {
        assert_eq!(
            query_counter(&after, outcome, "postgres")
                - query_counter(&before, outcome, "postgres"),
            more,
            "sluice_queries {outcome}\n{after}"
        );
    }
    pg.gw.stop().await;
}

/// An NDJSON answer of 100 million rows, its first chunk read and the rest left pending: the
/// statement keeps running (and its attempt stays open) until the stream is dropped.
async fn endless_stream(
    pg: &Pg,
) -> (
    impl futures::Stream<Item = reqwest::Result<bytes::Bytes>>,
    bytes::Bytes,
) {
    let res = pg
        .gw
        .request(&pg.gw.owner, "POST", &format!("/v1/apps/{}/query", pg.app))
        .header("accept", "application/x-ndjson")
        .json(&json!({"sql": "SELECT generate_series(1, 100000000) AS g"}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 200);
    let mut stream = Box::pin(res.bytes_stream());
    let first = stream.next().await.expect("a first chunk").expect("chunk");
    (stream, first)
}

/// `sluice_audit_inline_commits_total`: audit records a query committed on its own thread.
fn inline_commits(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_audit_inline_commits_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no inline commit counter in\n{metrics}"))
}

/// A query alone in the gateway commits its own audit record (sparing the writer thread's two
/// wake-ups); one that is not alone leaves it to the writer's next batch, also a refused
/// statement, which never holds a concurrency permit: counting permits took every refusal for
/// alone, and under a load of refusals the runtime's threads committed one record each in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_query_alone_commits_its_own_audit_record() {
    let pg = pg_world(json!({"max_rows": 1_000_000})).await;
    let before = inline_commits(&pg.gw.metrics().await);
    for _ in 0..3 {
        pg.refused(json!({"sql": "SELEC 1"}), 400).await;
    }
    let alone = inline_commits(&pg.gw.metrics().await) - before;
    // (A commit the writer thread happened to hold the connection for goes to the writer.)
    assert!(alone >= 1, "no refusal alone committed its own record");

    // A stream left open: its attempt runs (and holds a permit) until it ends.
    let (stream, _) = endless_stream(&pg).await;
    let before = inline_commits(&pg.gw.metrics().await);
    for _ in 0..3 {
        pg.refused(json!({"sql": "SELEC 1"}), 400).await;
        pg.refused(json!({"sql": "DELETE FROM customers"}), 403)
            .await;
    }
    let beside_a_stream = inline_commits(&pg.gw.metrics().await) - before;
    assert_eq!(
        beside_a_stream, 0,
        "refusals answered while a stream ran committed their own records"
    );
    assert_eq!(
        pg.gw
            .audit(&pg.gw.owner, "action=query&outcome=denied")
            .await
            .len(),
        9,
        "every refusal is audited"
    );
    drop(stream);
    pg.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_goes_away_mid_stream_stops_the_statement_and_is_audited() {
    let pg = pg_world(json!({"max_rows": 1_000_000})).await;
    let (stream, first) = endless_stream(&pg).await;
    assert!(first.starts_with(b"{\"columns\""));
    drop(stream);

    let role = &pg.acme.accounts.analyst.0;
    let running = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}' AND state <> 'idle'"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let audited = pg
            .gw
            .audit(&pg.gw.owner, "action=query&outcome=failed")
            .await;
        if pg.admin_count(&running).await == 0 && !audited.is_empty() {
            assert_eq!(audited[0]["code"], "client_disconnected", "{audited:?}");
            let n = audited[0]["row_count"].as_u64().expect("row_count");
            assert!(n < 1_000_000, "{n} rows were read for nobody");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the statement kept running or the attempt was not audited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_before_the_answer_stops_the_statement_and_is_audited() {
    let pg = pg_world(json!({"extra_functions": ["pg_sleep"]})).await;
    // A buffered answer: nothing is sent before the statement ends, and the client gives up.
    let gone = pg
        .gw
        .request(&pg.gw.owner, "POST", &format!("/v1/apps/{}/query", pg.app))
        .timeout(Duration::from_millis(500))
        .json(&json!({"sql": "SELECT pg_sleep(20) AS slept"}))
        .send()
        .await;
    assert!(gone.is_err(), "the client was meant to give up: {gone:?}");

    let role = &pg.acme.accounts.analyst.0;
    let running = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}' AND state <> 'idle'"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audited = pg
            .gw
            .audit(&pg.gw.owner, "action=query&outcome=failed")
            .await;
        if pg.admin_count(&running).await == 0 && !audited.is_empty() {
            assert_eq!(audited[0]["code"], "client_disconnected", "{audited:?}");
            assert_eq!(audited[0]["row_count"], Value::Null, "{audited:?}");
            assert_eq!(
                audited[0]["sql"], "SELECT pg_sleep(20) AS slept",
                "{audited:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the statement kept running or the attempt was not audited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_statement_past_its_timeout_answers_504_and_leaves_nothing_running() {
    use mysql_async::prelude::Queryable;
    let my = mysql_acme().await;
    let gw = Gateway::start().await;
    gw.set_integration(&gw.owner, "mysql", true).await;
    let ds = gw
        .datasource(
            &gw.owner,
            my.datasource(
                "acme-my",
                &my.accounts.sales,
                json!({"extra_functions": ["sleep"]}),
            ),
        )
        .await;
    let app = gw.app(&gw.owner, "sleepy", &[&ds]).await;
    let started = Instant::now();
    let code = gw
        .refused(
            &gw.owner,
            &app,
            json!({"sql": "SELECT SLEEP(20) AS slept", "timeout_ms": 300}),
            504,
        )
        .await;
    assert_eq!(code, "query_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let user = &my.accounts.sales.0;
    let mut admin = my.db.admin_conn().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let n: Option<i64> = admin
            .query_first(format!(
                "SELECT count(*) FROM information_schema.processlist \
                 WHERE user = '{user}' AND command = 'Query'"
            ))
            .await
            .unwrap();
        if n == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n:?} statement(s) still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = admin.disconnect().await;
    let v = gw
        .rows(
            &gw.owner,
            &app,
            json!({"sql": "SELECT count(*) AS n FROM customers"}),
        )
        .await;
    assert_eq!(v["rows"], json!([[500]]));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_read_write_mysql_and_sqlite_really_write_and_read_only_refuses_them() {
    use mysql_async::prelude::Queryable;
    let my = mysql_acme().await;
    let gw = Gateway::start().await;
    let owner = gw.owner.clone();
    gw.set_integration(&owner, "mysql", true).await;
    gw.set_integration(&owner, "sqlite", true).await;
    let path = sqlite_acme(&gw, "acme.sqlite");
    let rw = json!({"access": "read_write"});
    let mut ids = Vec::new();
    for body in [
        my.datasource("my-rw", &my.accounts.sales, rw.clone()),
        my.datasource("my-ro", &my.accounts.sales, json!({})),
        sqlite_datasource("lite-rw", &path, rw.clone()),
        sqlite_datasource("lite-ro", &path, json!({})),
    ] {
        ids.push(gw.datasource(&owner, body).await);
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let app = gw.app(&owner, "writers", &ids).await;
    let insert = "INSERT INTO bump_log (bumped_by) VALUES (?), (?)";
    for ds in ["my-rw", "lite-rw"] {
        let (s, v) = gw
            .query(
                &owner,
                &app,
                json!({"datasource": ds, "sql": insert, "params": ["http", "test"]}),
            )
            .await;
        assert_eq!((s, &v["rows_affected"]), (200, &json!(2)), "{ds}: {v}");
    }
    for ds in ["my-ro", "lite-ro"] {
        let code = gw
            .refused(
                &owner,
                &app,
                json!({"datasource": ds, "sql": insert, "params": ["no", "no"]}),
                403,
            )
            .await;
        assert_eq!(code, "statement_not_allowed", "{ds}");
    }
    let mut admin = my.db.admin_conn().await;
    let by: Vec<String> = admin
        .query("SELECT bumped_by FROM bump_log ORDER BY id")
        .await
        .unwrap();
    assert_eq!(by, ["http", "test"]);
    let _ = admin.disconnect().await;
    let lite = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = lite
        .query_row(
            "SELECT count(*) FROM bump_log WHERE bumped_by IN ('http', 'test')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 2);
    gw.stop().await;
}
