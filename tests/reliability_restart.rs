//! Stopping and killing the real `sluice` binary: SIGTERM lets in-flight queries finish (within
//! `shutdown_grace_secs`, never longer), flushes the audit log and exits 0; after `kill -9`
//! every admin change and every query that was answered is still there, audit record included.
mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::db::PgTestDb;
use support::gateway::pg_server;
use support::throwaway::SluiceProcess;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(p: &SluiceProcess, token: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: p.base.clone(),
            token: token.to_owned(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        support::client::call(&self.http, &self.base, &self.token, method, path, body).await
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        support::client::ok(&self.http, &self.base, &self.token, method, path, body).await
    }

    /// Turns the integration on, registers the datasource and an app on it; returns the app id.
    async fn app_on(&self, kind: &str, datasource: Value) -> String {
        self.ok(
            "PATCH",
            &format!("/v1/integrations/{kind}"),
            Some(json!({"enabled": true})),
        )
        .await;
        let ds = self.ok("POST", "/v1/datasources", Some(datasource)).await;
        let app = self
            .ok(
                "POST",
                "/v1/apps",
                Some(json!({"name": "ops", "datasource_ids": [ds["id"]]})),
            )
            .await;
        app["id"].as_str().expect("app id").to_owned()
    }

    async fn audit(&self, query: &str) -> Vec<Value> {
        let v = self.ok("GET", &format!("/v1/audit?{query}"), None).await;
        v["items"].as_array().expect("items").clone()
    }
}

/// A company made the way an operator makes one, before the server starts; the owner's token.
fn company(data_dir: &Path) -> String {
    let config = sluice::config::Config {
        data_dir: data_dir.to_owned(),
        ..Default::default()
    };
    sluice::cli::create_company(&config, "Acme", "owner@acme.example").expect("create company")
}

async fn pg_datasource(db: &PgTestDb, role: &str) -> Value {
    let (host, port) = pg_server();
    json!({
        "name": "pg", "kind": "postgres",
        "connection": {"host": host, "port": port, "database": db.name,
                       "user": role, "password": "rst_pw", "tls": {"mode": "disable"}},
        "policy": {"extra_functions": ["pg_sleep"]},
    })
}

/// SIGTERM after `after`, joined with a request so the request is in flight when it lands.
async fn terminate_after(p: &SluiceProcess, after: Duration) {
    tokio::time::sleep(after).await;
    p.signal("TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_query_finish_flushes_its_audit_record_and_exits_0() {
    let db = PgTestDb::create().await;
    let role = db.create_role("rst", "rst_pw").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = company(dir.path());
    let mut p = SluiceProcess::start(BIN, dir.path(), &[]);
    let c = Client::new(&p, &token);
    let app = c.app_on("postgres", pg_datasource(&db, &role).await).await;

    let path = format!("/v1/apps/{app}/query");
    let query = c.call(
        "POST",
        &path,
        Some(json!({"sql": "SELECT pg_sleep(1.5) AS slept, 42 AS answer"})),
    );
    let ((status, body), ()) = tokio::join!(query, terminate_after(&p, Duration::from_millis(400)));
    assert_eq!(status, 200, "the in-flight query was cut off: {body}");
    assert_eq!(body["rows"][0][1], 42, "{body}");
    let exit = tokio::task::block_in_place(|| p.wait_exit(Duration::from_secs(10)));
    let exit = exit.unwrap_or_else(|| panic!("no exit after SIGTERM\n{}", p.log_text()));
    assert!(exit.success(), "exit {exit}\n{}", p.log_text());
    drop(p);

    let mut again = SluiceProcess::start(BIN, dir.path(), &[]);
    let c = Client::new(&again, &token);
    let items = c.audit("action=query").await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["outcome"], "allowed", "{items:?}");
    assert_eq!(items[0]["row_count"], 1, "{items:?}");
    again.signal("TERM");
    let exit = tokio::task::block_in_place(|| again.wait_exit(Duration::from_secs(10)));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_outlasting_the_grace_period_does_not_hold_the_process_up() {
    let db = PgTestDb::create().await;
    let role = db.create_role("rst", "rst_pw").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = company(dir.path());
    let mut p = SluiceProcess::start(BIN, dir.path(), &[("SLUICE_SHUTDOWN_GRACE_SECS", "1")]);
    let c = Client::new(&p, &token);
    let app = c.app_on("postgres", pg_datasource(&db, &role).await).await;

    let http = c.http.clone();
    let url = format!("{}/v1/apps/{app}/query", c.base);
    let token2 = token.clone();
    let query = tokio::spawn(async move {
        http.post(url)
            .bearer_auth(token2)
            .json(&json!({"sql": "SELECT pg_sleep(20)"}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    terminate_after(&p, Duration::from_millis(400)).await;
    let signalled = Instant::now();
    let exit = tokio::task::block_in_place(|| p.wait_exit(Duration::from_secs(5)));
    let exit = exit.unwrap_or_else(|| {
        panic!(
            "still running 5 s after SIGTERM with a 1 s grace period\n{}",
            p.log_text()
        )
    });
    assert!(exit.success(), "exit {exit}\n{}", p.log_text());
    assert!(
        signalled.elapsed() >= Duration::from_millis(900),
        "it did not wait for the grace period: {:?}",
        signalled.elapsed()
    );
    assert!(
        p.log_text().contains("grace period ended"),
        "{}",
        p.log_text()
    );
    // The client learns its query was cut off (the connection closed), never a false 200.
    let answer = query.await.expect("client task");
    assert!(!matches!(answer, Ok(200)), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_and_query_answered_before_kill_9_is_there_after_a_restart() {
    const N: usize = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = company(dir.path());
    let lite = dir.path().join("sqlite").join("acme.db");
    std::fs::create_dir_all(lite.parent().expect("parent")).expect("sqlite root");
    sluice::fixtures::create_sqlite(&lite).expect("acme sqlite");
    let mut p = SluiceProcess::start(BIN, dir.path(), &[]);
    let c = Client::new(&p, &token);
    let app = c
        .app_on(
            "sqlite",
            json!({"name": "lite", "kind": "sqlite",
                   "connection": {"path": lite.display().to_string()}}),
        )
        .await;

    let mut sqls = Vec::new();
    for i in 0..N {
        c.ok(
            "POST",
            "/v1/groups",
            Some(json!({"name": format!("team-{i}")})),
        )
        .await;
        let sql = format!("SELECT id FROM customers WHERE id = {}", i + 1);
        let v = c
            .ok(
                "POST",
                &format!("/v1/apps/{app}/query"),
                Some(json!({"sql": sql})),
            )
            .await;
        assert_eq!(v["rows"], json!([[i + 1]]), "{v}");
        sqls.push(sql);
    }
    // No warning, no flush: the process dies right after the last answer.
    p.signal("KILL");
    let exit = tokio::task::block_in_place(|| p.wait_exit(Duration::from_secs(5)));
    assert!(exit.is_some_and(|s| !s.success()), "{exit:?}");
    drop(p);

    let mut again = SluiceProcess::start(BIN, dir.path(), &[]);
    let c = Client::new(&again, &token);
    let groups = c.ok("GET", "/v1/groups", None).await;
    let mut names: Vec<String> = groups["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|g| g["name"].as_str().expect("name").to_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..N).map(|i| format!("team-{i}")).collect();
    expected.sort();
    assert_eq!(names, expected);

    let items = c.audit(&format!("action=query&limit={}", N * 2)).await;
    let mut audited: Vec<String> = items
        .iter()
        .filter(|e| e["outcome"] == "allowed")
        .map(|e| e["sql"].as_str().expect("sql").to_owned())
        .collect();
    audited.sort();
    sqls.sort();
    assert_eq!(audited, sqls, "answered queries missing from the audit log");
    let created = c.audit("action=group.create&limit=100").await;
    assert_eq!(created.len(), N, "{created:?}");
    again.signal("TERM");
    let exit = tokio::task::block_in_place(|| again.wait_exit(Duration::from_secs(10)));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
}
