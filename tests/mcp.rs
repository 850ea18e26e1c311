//! The MCP endpoint (`/v1/apps/{id}/mcp`) driven by clients nobody here wrote: the official MCP
//! Python SDK (PyPI `mcp`, through `tests/mcp/client.py`) and the MCP Inspector CLI (npm
//! `@modelcontextprotocol/inspector --cli`), on a real gateway with the acme fixture on the local
//! PostgreSQL. `.ci/run` installs both under `target/mcp-clients/`; without them these tests fail
//! and say how to install them.
//!
//! The datasources are seed 002's: the sales reps' service account, whose scope also lists its
//! tables (so a table outside it is refused by sluice itself, `table_not_allowed`), and the
//! executives'. The MCP client is an API user added to one app, as the README tells operators.
mod support;

#[path = "mcp/clients.rs"]
mod clients;

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use clients::{inspector_call, python_session, spawn_python};
use support::gateway::{Gateway, PgAcme, pg_acme};

const SALES_TABLES: [&str; 3] = ["public.customers", "public.orders", "public.order_items"];

struct Seed002 {
    gw: Gateway,
    acme: PgAcme,
    sales_app: String,
    sales_ds: String,
    exec_app: String,
    /// API users added to one app each: (user id, token).
    sales_bot: (String, String),
    exec_bot: (String, String),
}

impl Seed002 {
    fn mcp_url(&self, app: &str) -> String {
        format!("{}/v1/apps/{app}/mcp", self.gw.base)
    }
}

async fn api_user(gw: &Gateway, name: &str, app: &str) -> (String, String) {
    let v = gw
        .ok(
            &gw.owner,
            "POST",
            "/v1/api-users",
            Some(json!({"name": name})),
        )
        .await;
    let id = v["user"]["id"].as_str().expect("api user id").to_owned();
    gw.share(&gw.owner, app, &id).await;
    (id, v["token"].as_str().expect("token").to_owned())
}

/// The sales reps' and executives' datasources and apps, each used by its own API user.
async fn seed_002(sales_policy: Value) -> Seed002 {
    let acme = pg_acme().await;
    let gw = Gateway::start().await;
    gw.set_integration(&gw.owner, "postgres", true).await;
    let a = &acme.accounts;
    let sales_ds = gw
        .datasource(
            &gw.owner,
            acme.datasource("acme-pg-sales", &a.sales, sales_policy),
        )
        .await;
    let exec_ds = gw
        .datasource(
            &gw.owner,
            acme.datasource("acme-pg-executives", &a.executive, json!({})),
        )
        .await;
    let sales_app = gw.app(&gw.owner, "Sales reps", &[&sales_ds]).await;
    let exec_app = gw.app(&gw.owner, "Executives", &[&exec_ds]).await;
    let sales_bot = api_user(&gw, "sales assistant", &sales_app).await;
    let exec_bot = api_user(&gw, "executives assistant", &exec_app).await;
    Seed002 {
        gw,
        acme,
        sales_app,
        sales_ds,
        exec_app,
        sales_bot,
        exec_bot,
    }
}

fn sales_policy() -> Value {
    json!({"allowed_tables": SALES_TABLES})
}

/// Rows of a statement run directly on the fixture database, as JSON arrays of text.
async fn db_rows(acme: &PgAcme, sql: &str) -> Vec<Vec<Value>> {
    let admin = acme.db.admin_client().await;
    admin
        .query(sql, &[])
        .await
        .expect("direct query")
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.try_get::<_, i32>(i) {
                    Ok(n) => json!(n),
                    Err(_) => match r.try_get::<_, i64>(i) {
                        Ok(n) => json!(n),
                        Err(_) => match r.try_get::<_, bool>(i) {
                            Ok(b) => json!(b),
                            Err(_) => json!(r.try_get::<_, String>(i).expect("text column")),
                        },
                    },
                })
                .collect()
        })
        .collect()
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|t| {
            format!(
                "{}.{}",
                t["schema"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_initializes_lists_and_calls_every_tool_with_rows_from_the_database() {
    let s = seed_002(sales_policy()).await;
    let schema_uri = format!("sluice://datasources/{}/schema", s.sales_ds);
    let seen = python_session(
        &s.mcp_url(&s.sales_app),
        &s.sales_bot.1,
        json!([
            {"tool": "list_datasources"},
            {"tool": "list_tables"},
            {"tool": "describe_table", "args": {"table": "customers"}},
            {"tool": "query", "args": {
                "sql": "SELECT id, name, country FROM customers WHERE country = $1 ORDER BY id",
                "params": ["DE"]}},
            {"tool": "query", "args": {"sql": "SELECT id FROM customers ORDER BY id"}},
            {"tool": "query", "args": {"sql": "SELECT id FROM customers ORDER BY id", "max_rows": 5}},
            {"tool": "query", "args": {"sql": "SELECT * FROM financial_summary"}},
            {"tool": "describe_table", "args": {"table": "financial_summary"}},
            {"read": schema_uri},
        ]),
    )
    .await;

    // The handshake: the current revision, and the app named in the instructions.
    assert_eq!(seen["protocol_version"], "2025-11-25", "{seen}");
    assert_eq!(seen["server_info"]["name"], "sluice");
    assert!(
        seen["instructions"]
            .as_str()
            .unwrap()
            .contains("Sales reps")
    );
    let tools: Vec<&str> = seen["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        ["list_datasources", "list_tables", "describe_table", "query"]
    );
    // The query tool tells the model the dialect, the access mode and the tables it may use.
    let query_tool = &seen["tools"][3];
    let description = query_tool["description"].as_str().unwrap();
    for needle in ["PostgreSQL", "read-only", "$1"]
        .iter()
        .chain(&SALES_TABLES)
    {
        assert!(
            description.contains(needle),
            "{needle} not in {description}"
        );
    }
    assert!(!description.contains("financial_summary"), "{description}");
    assert_eq!(query_tool["annotations"]["readOnlyHint"], true);
    assert!(query_tool["outputSchema"].is_object(), "{query_tool}");
    assert_eq!(seen["resources"].as_array().unwrap().len(), 1);
    assert_eq!(seen["resources"][0]["uri"], schema_uri);

    let calls = seen["calls"].as_array().unwrap();
    for (i, c) in calls.iter().enumerate().take(6) {
        assert_eq!(c["is_error"], false, "call {i}: {c}");
    }
    let ds = &calls[0]["structured"]["datasources"];
    assert_eq!(ds.as_array().unwrap().len(), 1, "{ds}");
    assert_eq!(
        (&ds[0]["id"], &ds[0]["kind"], &ds[0]["access"]),
        (&json!(s.sales_ds), &json!("postgres"), &json!("read_only"))
    );

    // list_tables is the schema listing of GET /v1/datasources/{id}/schema, scope applied.
    let listed = names(&calls[1]["structured"]["tables"]);
    let http =
        s.gw.ok(
            &s.gw.owner,
            "GET",
            &format!("/v1/datasources/{}/schema", s.sales_ds),
            None,
        )
        .await;
    assert_eq!(listed, names(&http["tables"]));
    let mut sorted = listed.clone();
    sorted.sort();
    let mut want: Vec<String> = SALES_TABLES.iter().map(|t| t.to_string()).collect();
    want.sort();
    assert_eq!(sorted, want);

    // describe_table: the columns, types and nullability the database has.
    let columns = &calls[2]["structured"]["columns"];
    let db_columns = db_rows(
        &s.acme,
        "SELECT column_name::text, (is_nullable = 'YES') FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 'customers' ORDER BY ordinal_position",
    )
    .await;
    let got: Vec<Vec<Value>> = columns
        .as_array()
        .unwrap()
        .iter()
        .map(|c| vec![c["name"].clone(), c["nullable"].clone()])
        .collect();
    assert_eq!(got, db_columns);
    assert!(
        columns[0]["type"].as_str().unwrap().contains("int"),
        "{columns}"
    );

    // query: typed columns and the same rows as the database.
    let q = &calls[3]["structured"];
    assert_eq!(
        q["columns"],
        json!([{"name": "id", "type": "int4"}, {"name": "name", "type": "varchar"},
               {"name": "country", "type": "bpchar"}])
    );
    let direct = db_rows(
        &s.acme,
        "SELECT id, name::text, country::text FROM customers WHERE country = 'DE' ORDER BY id",
    )
    .await;
    assert!(!direct.is_empty());
    assert_eq!(q["rows"], json!(direct));
    assert_eq!(q["row_count"], direct.len());
    assert_eq!(q["truncated"], false);
    assert_eq!(q["datasource"]["id"], s.sales_ds);
    // The text content is the same answer, for clients that show only text.
    let text: Value = serde_json::from_str(calls[3]["text"][0].as_str().unwrap()).unwrap();
    assert_eq!(&text, q);

    // The MCP row cap (200 by default) and a call's own max_rows, with the truncated notice.
    let capped = &calls[4];
    assert_eq!(capped["structured"]["row_count"], 200, "{capped}");
    assert_eq!(capped["structured"]["truncated"], true);
    assert_eq!(capped["structured"]["rows"][199], json!([200]));
    assert!(
        capped["text"][1].as_str().unwrap().contains("truncated"),
        "{capped}"
    );
    assert_eq!(calls[5]["structured"]["row_count"], 5);
    assert_eq!(calls[5]["structured"]["truncated"], true);

    // A refusal is a tool result the model can read, not a protocol error.
    assert_eq!(calls[6]["is_error"], true, "{}", calls[6]);
    assert_eq!(calls[6]["structured"]["error"]["code"], "table_not_allowed");
    assert!(
        calls[6]["structured"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("financial_summary")
    );
    assert_eq!(calls[7]["is_error"], true, "{}", calls[7]);
    assert_eq!(calls[7]["structured"]["error"]["code"], "not_found");

    // The schema resource: the same tables, with their columns.
    let contents = &seen["reads"][0][0];
    assert_eq!(contents["mimeType"], "application/json");
    let resource: Value = serde_json::from_str(contents["text"].as_str().unwrap()).unwrap();
    assert_eq!(names(&resource["tables"]), listed);
    assert!(resource["tables"][0]["columns"].as_array().unwrap().len() > 1);

    // Every statement is audited like one over HTTP, marked as coming through MCP.
    let audit =
        s.gw.audit(
            &s.gw.owner,
            &format!(
                "action=query&app_id={}&actor_id={}",
                s.sales_app, s.sales_bot.0
            ),
        )
        .await;
    assert_eq!(audit.len(), 4, "{audit:?}");
    assert!(
        audit.iter().all(|e| e["detail"]["via"] == "mcp"),
        "{audit:?}"
    );
    let outcomes: Vec<&str> = audit
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["denied", "allowed", "allowed", "allowed"]);
    assert_eq!(audit[0]["code"], "table_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_over_mcp_each_assistant_reads_what_its_app_may_and_others_get_404_or_401() {
    let s = seed_002(sales_policy()).await;

    // The sales reps' assistant reads customers and is refused the financial summary.
    let sales = python_session(
        &s.mcp_url(&s.sales_app),
        &s.sales_bot.1,
        json!([
            {"tool": "query", "args": {"sql": "SELECT count(*) AS n FROM customers"}},
            {"tool": "query", "args": {"sql": "SELECT month, revenue FROM financial_summary"}},
        ]),
    )
    .await;
    assert_eq!(
        sales["calls"][0]["structured"]["rows"],
        json!([[500]]),
        "{sales}"
    );
    let refused = &sales["calls"][1];
    assert_eq!(refused["is_error"], true, "{refused}");
    assert_eq!(refused["structured"]["error"]["code"], "table_not_allowed");

    // The executives' assistant reads the summary.
    let execs = python_session(
        &s.mcp_url(&s.exec_app),
        &s.exec_bot.1,
        json!([{"tool": "query", "args": {
            "sql": "SELECT month, revenue FROM financial_summary ORDER BY month"}}]),
    )
    .await;
    let summary = &execs["calls"][0];
    assert_eq!(summary["is_error"], false, "{summary}");
    assert_eq!(summary["structured"]["row_count"], 36);
    assert!(summary["structured"]["rows"][0][0].is_string());

    // An API user not added to an app: 404, as the query route answers.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"}}});
    let post = |app: &str, token: Option<&str>| {
        let mut r =
            s.gw.http
                .post(s.mcp_url(app))
                .header("accept", "application/json, text/event-stream")
                .json(&init);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    for (app, token) in [(&s.exec_app, &s.sales_bot.1), (&s.sales_app, &s.exec_bot.1)] {
        let res = post(app, Some(token)).await.expect("post");
        assert_eq!(res.status().as_u16(), 404);
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"]["code"], "not_found");
        let (status, _) =
            s.gw.query(token, app, json!({"sql": "SELECT 1 AS one"}))
                .await;
        assert_eq!(status, 404, "the query route answers the same");
    }
    // Its own app answers the same request.
    let res = post(&s.sales_app, Some(&s.sales_bot.1))
        .await
        .expect("post");
    assert_eq!(res.status().as_u16(), 200);

    // No token, or a token that is not valid: 401 pointing at the RFC 9728 metadata.
    let metadata = format!(
        "{}/.well-known/oauth-protected-resource/v1/apps/{}/mcp",
        s.gw.base, s.sales_app
    );
    for (token, error) in [(None, false), (Some("slc.tok_0.bad"), true)] {
        let res = post(&s.sales_app, token).await.expect("post");
        assert_eq!(res.status().as_u16(), 401);
        let challenge = res
            .headers()
            .get("www-authenticate")
            .expect("WWW-Authenticate")
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with("Bearer ")
                && challenge.contains(&format!("resource_metadata=\"{metadata}\"")),
            "{challenge}"
        );
        assert_eq!(
            challenge.contains("error=\"invalid_token\""),
            error,
            "{challenge}"
        );
    }
    let doc: Value =
        s.gw.http
            .get(&metadata)
            .send()
            .await
            .expect("metadata")
            .json()
            .await
            .expect("metadata json");
    assert_eq!(doc["resource"], s.mcp_url(&s.sales_app));
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_cli_lists_the_tools_and_calls_query() {
    let s = seed_002(sales_policy()).await;
    let url = s.mcp_url(&s.sales_app);
    let token = &s.sales_bot.1;
    let (listed, failed) = inspector_call(&url, token, &["--method", "tools/list"]).await;
    assert_eq!(failed, None);
    let tools: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        ["list_datasources", "list_tables", "describe_table", "query"]
    );
    let (called, failed) = inspector_call(
        &url,
        token,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "query",
            "--tool-arg",
            "sql=SELECT id, name FROM customers ORDER BY id LIMIT 3",
        ],
    )
    .await;
    assert_eq!(failed, None);
    assert_eq!(called["isError"], false, "{called}");
    let direct = db_rows(
        &s.acme,
        "SELECT id, name::text FROM customers ORDER BY id LIMIT 3",
    )
    .await;
    assert_eq!(called["structuredContent"]["rows"], json!(direct));
    let (refused, failed) = inspector_call(
        &url,
        token,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "query",
            "--tool-arg",
            "sql=SELECT * FROM financial_summary",
        ],
    )
    .await;
    // The Inspector reports the error result as such (and exits non-zero).
    assert!(failed.is_some_and(|e| e.contains("tool_is_error")));
    assert_eq!(refused["isError"], true, "{refused}");
    assert_eq!(
        refused["structuredContent"]["error"]["code"],
        "table_not_allowed"
    );
}

/// The fields of an adversarial corpus case this test reads (tests/adversarial.rs owns the
/// format; cases with anything more than a statement are not sampled).
#[derive(Deserialize)]
struct Case {
    threat: String,
    sql: String,
    expect: String,
    #[serde(default)]
    params: Vec<Value>,
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

/// Threat classes sampled: statements that must never run through a read-only analytics app.
const SAMPLED: &[&str] = &[
    "multi-statement",
    "write",
    "effect-function",
    "not-a-query",
    "data-modifying-cte",
    "select-into",
    "locking",
    "comment",
];
const PER_CLASS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangerous_sql_through_the_query_tool_is_refused_exactly_as_over_http() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/adversarial/postgres.toml");
    let corpus: Corpus =
        toml::from_str(&std::fs::read_to_string(&path).expect("corpus")).expect("corpus toml");
    // Refusals on the analyst account's plain read-only scope, the first few of each class.
    let mut sample: Vec<&Case> = Vec::new();
    for class in SAMPLED {
        sample.extend(
            corpus
                .case
                .iter()
                .filter(|c| c.threat == *class && c.expect != "allowed")
                .filter(|c| c.other.keys().all(|k| k == "why"))
                .filter(|c| !c.sql.contains("{repeat:"))
                .take(PER_CLASS),
        );
    }
    for must in ["multi-statement", "write", "effect-function", "not-a-query"] {
        assert!(
            sample.iter().any(|c| c.threat == must),
            "the corpus sample has no {must} case"
        );
    }
    assert!(sample.len() >= 25, "only {} cases sampled", sample.len());
    assert!(sample.iter().any(|c| c.expect == "function_not_allowed"));
    assert!(sample.iter().any(|c| c.expect == "statement_not_allowed"));

    let acme = pg_acme().await;
    let gw = Gateway::start().await;
    gw.set_integration(&gw.owner, "postgres", true).await;
    let ds = gw
        .datasource(
            &gw.owner,
            acme.datasource("acme-pg-analysts", &acme.accounts.analyst, json!({})),
        )
        .await;
    let app = gw.app(&gw.owner, "Analysts", &[&ds]).await;
    let (_, token) = api_user(&gw, "analyst assistant", &app).await;

    let steps: Vec<Value> = sample
        .iter()
        .map(|c| json!({"tool": "query", "args": {"sql": c.sql, "params": c.params}}))
        .collect();
    let seen = python_session(
        &format!("{}/v1/apps/{app}/mcp", gw.base),
        &token,
        json!(steps),
    )
    .await;
    let mut failures = Vec::new();
    for (c, got) in sample.iter().zip(seen["calls"].as_array().unwrap()) {
        let (_, http) = gw
            .query(&token, &app, json!({"sql": c.sql, "params": c.params}))
            .await;
        let mcp_error = &got["structured"]["error"];
        let same = got["is_error"] == true
            && mcp_error["code"] == http["error"]["code"]
            && mcp_error["message"] == http["error"]["message"];
        if !same || mcp_error["code"] != c.expect.as_str() {
            failures.push(format!(
                "[{}] {}\n  want {}, http {}, mcp {}",
                c.threat, c.sql, c.expect, http["error"], got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        sample.len(),
        failures.join("\n")
    );
}

/// Statements the service account has running now.
async fn running(admin: &tokio_postgres::Client, role: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND state = 'active'",
            &[&role],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

/// Waits until `running` is `want`, for at most `within`; returns whether it got there.
async fn until_running(
    admin: &tokio_postgres::Client,
    role: &str,
    want: i64,
    within: Duration,
) -> bool {
    let start = Instant::now();
    loop {
        if (running(admin, role).await == 0) == (want == 0) {
            return true;
        }
        if start.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_tool_call_or_a_dropped_connection_leaves_no_statement_running() {
    // A minute's timeout: only the client's cancellation can end the statement in time.
    let mut policy = sales_policy();
    policy["timeout_ms"] = json!(60_000);
    let s = seed_002(policy).await;
    let admin = s.acme.db.admin_client().await;
    let role = s.acme.accounts.sales.0.clone();
    let url = s.mcp_url(&s.sales_app);
    let endless = json!({"tool": "query", "args": {"sql":
        "SELECT count(*) FROM generate_series(1, 100000) AS a(g), generate_series(1, 100000) AS b(g)"}});

    // The client gives up on the call: the SDK sends notifications/cancelled and keeps the
    // connection open.
    let mut plan = endless.clone();
    plan["after_s"] = json!(2.0);
    plan["linger_s"] = json!(6.0);
    let mut child = spawn_python("cancel", &url, &s.sales_bot.1, &plan).await;
    assert!(
        until_running(&admin, &role, 1, Duration::from_secs(10)).await,
        "the statement never started"
    );
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let said = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the client did not cancel")
        .expect("read")
        .expect("a line");
    let said: Value = serde_json::from_str(&said).expect("json");
    assert_eq!(said["cancelled"], true, "{said}");
    assert!(
        until_running(&admin, &role, 0, Duration::from_secs(3)).await,
        "the statement still runs after the client cancelled it"
    );
    // The client is still connected: the cancellation, not a disconnect, ended it.
    assert!(child.try_wait().expect("child").is_none());
    let _ = child.kill().await;

    // The client goes away mid-call.
    let mut child = spawn_python("hang", &url, &s.sales_bot.1, &endless).await;
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let said = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the client did not start")
        .expect("read");
    assert_eq!(said.as_deref(), Some("started"));
    assert!(
        until_running(&admin, &role, 1, Duration::from_secs(10)).await,
        "the statement never started"
    );
    child.kill().await.expect("kill the client");
    assert!(
        until_running(&admin, &role, 0, Duration::from_secs(3)).await,
        "the statement still runs after its client went away"
    );
}
