//! `sluice demo` prints each app's MCP URL, and an MCP client (the official Python SDK) that
//! follows the printout reaches that app with that audience's token. The demo runs here on its
//! SQLite datasources only (the database servers' addresses point at a closed port), so it does
//! not touch the PostgreSQL/MySQL demo databases `tests/query_demo.rs` uses.
#[path = "mcp/clients.rs"]
mod clients;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// What the demo printed for one audience.
#[derive(Debug, Default)]
struct Printed {
    key: String,
    token: String,
    mcp: String,
    datasource: String,
}

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.split_once(marker).map(|(_, rest)| rest.trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_an_mcp_url_per_app_that_serves_that_app() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("demo"))
        .env("SLUICE_LOG", "warn")
        .env(
            "SLUICE_DEMO_PG_URL",
            "postgres://postgres@127.0.0.1:1/postgres",
        )
        .env("SLUICE_DEMO_MYSQL_URL", "mysql://root@127.0.0.1:1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice demo");
    let stdout = child.stdout.take().expect("stdout");
    let _demo = Demo(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut printed: Vec<Printed> = Vec::new();
    let mut base = String::new();
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the demo stopped printing:\n{}", seen.join("\n")));
        seen.push(line.clone());
        if let Some(rest) = after(&line, "sluice demo is running on ") {
            base = rest.split(' ').next().unwrap_or_default().to_owned();
        } else if let Some(rest) = line.strip_prefix("== ")
            && let Some((_, key)) = rest.split_once(" app (")
        {
            printed.push(Printed {
                key: key.split(')').next().unwrap_or_default().to_owned(),
                ..Default::default()
            });
        } else if let Some(p) = printed.last_mut() {
            if let Some(t) = after(&line, "token: ") {
                p.token = t.to_owned();
            } else if let Some(d) = after(&line, "datasources: ") {
                p.datasource = d.split(", ").next().unwrap_or_default().to_owned();
            } else if let Some(u) = after(&line, "MCP (for AI assistants): ") {
                p.mcp = u.to_owned();
            }
        }
        if line.starts_with("== refused") {
            break;
        }
    }
    let keys: Vec<&str> = printed.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["analysts", "sales", "executives"], "{seen:?}");
    for p in &printed {
        assert!(
            p.mcp.starts_with(&format!("{base}/v1/apps/app_")) && p.mcp.ends_with("/mcp"),
            "{p:?}"
        );
    }

    // The sales reps' printed URL and token: customers yes, the financial summary no.
    let sales = &printed[1];
    let got = clients::python_session(
        &sales.mcp,
        &sales.token,
        json!([
            {"tool": "query", "args": {"datasource": sales.datasource,
                                       "sql": "SELECT count(*) AS n FROM customers"}},
            {"tool": "query", "args": {"datasource": sales.datasource,
                                       "sql": "SELECT * FROM financial_summary"}},
        ]),
    )
    .await;
    assert!(
        got["instructions"].as_str().unwrap().contains("Sales reps"),
        "{got}"
    );
    assert_eq!(
        got["calls"][0]["structured"]["rows"],
        json!([[500]]),
        "{got}"
    );
    assert_eq!(
        got["calls"][1]["structured"]["error"]["code"],
        "table_not_allowed"
    );

    // One audience's token does not open another audience's MCP URL.
    let res = reqwest::Client::new()
        .post(&printed[2].mcp)
        .bearer_auth(&sales.token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status().as_u16(), 404);
}
