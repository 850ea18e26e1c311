//! Slow and abandoned queries on real PostgreSQL: a statement past its timeout answers 504 and is
//! gone from `pg_stat_activity` within a second; a client that hangs up on a plain JSON query
//! leaves nothing running; a client that reads a stream slowly makes the gateway stop fetching
//! (the portal waits) instead of buffering the result.
mod support;

use futures::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};
use support::db::PgTestDb;
use support::gateway::{Gateway, pg_server};

struct World {
    db: PgTestDb,
    role: String,
    gw: Gateway,
    app: String,
}

async fn world(max_rows: u64) -> World {
    let db = PgTestDb::create().await;
    let role = db.create_role("slow", "slow_pw").await;
    let gw = Gateway::start_with(|c| c.limits.max_rows = max_rows).await;
    gw.set_integration(&gw.owner, "postgres", true).await;
    let (host, port) = pg_server();
    let ds = gw
        .datasource(
            &gw.owner,
            json!({
                "name": "slow-pg", "kind": "postgres",
                "connection": {"host": host, "port": port, "database": db.name,
                               "user": role, "password": "slow_pw", "tls": {"mode": "disable"}},
                "policy": {"extra_functions": ["pg_sleep"], "max_rows": max_rows},
            }),
        )
        .await;
    let app = gw.app(&gw.owner, "slow", &[&ds]).await;
    World { db, role, gw, app }
}

impl World {
    /// The service account's sessions that are not idle: (state, wait_event, state_change µs).
    async fn busy_sessions(&self) -> Vec<(String, Option<String>, i64)> {
        let admin = self.db.admin_client().await;
        admin
            .query(
                "SELECT state, wait_event, \
                        (extract(epoch FROM state_change) * 1000000)::bigint \
                 FROM pg_stat_activity WHERE usename = $1 AND state <> 'idle'",
                &[&self.role],
            )
            .await
            .expect("pg_stat_activity")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    /// Waits until no statement of the service account runs (or is held in a transaction).
    async fn assert_nothing_running_within(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let busy = self.busy_sessions().await;
            if busy.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {limit:?}: {busy:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the service account runs something (the gateway reached the database).
    async fn wait_until_running(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.busy_sessions().await.is_empty() {
            assert!(Instant::now() < deadline, "the statement never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_its_timeout_answers_504_and_is_gone_from_the_server_within_a_second() {
    let w = world(10_000).await;
    let started = Instant::now();
    let code =
        w.gw.refused(
            &w.gw.owner,
            &w.app,
            json!({"sql": "SELECT pg_sleep(30)", "timeout_ms": 500}),
            504,
        )
        .await;
    assert_eq!(code, "query_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    w.assert_nothing_running_within(Duration::from_secs(1))
        .await;
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_on_a_plain_json_query_leaves_nothing_running() {
    let w = world(10_000).await;
    let gw = &w.gw;
    let hang_up = tokio::time::timeout(
        Duration::from_secs(3),
        gw.query(&gw.owner, &w.app, json!({"sql": "SELECT pg_sleep(5)"})),
    );
    let watch = async {
        w.wait_until_running().await;
        // The statement is running on the server; now the client goes away.
    };
    tokio::select! {
        _ = hang_up => panic!("the query ended before the client hung up"),
        () = watch => {}
    }
    // Leaving the select dropped the request future: the connection is closed.
    w.assert_nothing_running_within(Duration::from_secs(1))
        .await;
    // The gateway still serves the next query on the same pool.
    let v = gw
        .rows(&gw.owner, &w.app, json!({"sql": "SELECT 1 AS one"}))
        .await;
    assert_eq!(v["rows"], json!([[1]]));
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_reader_makes_the_gateway_stop_fetching_instead_of_buffering() {
    let w = world(100_000_000).await;
    let res = w
        .gw
        .request(&w.gw.owner, "POST", &format!("/v1/apps/{}/query", w.app))
        .header("accept", "application/x-ndjson")
        .json(&json!({"sql": "SELECT generate_series(1, 50000000) AS g, repeat('x', 40) AS pad"}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 200);
    let mut stream = res.bytes_stream();
    let first = stream.next().await.expect("a first chunk").expect("chunk");
    assert!(first.starts_with(b"{\"columns\""));

    // Read nothing more. Once the socket, the response channel and the row channel are full,
    // the query task stops reading rows, and the server waits for the gateway: a read-only
    // query is blocked writing to its socket (`active`, wait event `ClientWrite`), a statement
    // run through a portal sits `idle in transaction`. Either way it stays so. A gateway that
    // buffered would keep reading until all 50 million rows were in memory, and the server
    // would be busy producing them.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = w.busy_sessions().await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let after = w.busy_sessions().await;
    assert_eq!(before.len(), 1, "{before:?}");
    let waiting = |s: &(String, Option<String>, i64)| {
        s.0 == "idle in transaction" || (s.0 == "active" && s.1.as_deref() == Some("ClientWrite"))
    };
    assert!(
        waiting(&before[0]),
        "the server is not waiting for the gateway: {before:?}"
    );
    assert_eq!(
        before, after,
        "the server kept producing rows for a reader that reads nothing"
    );

    // Reading again resumes the stream where it stopped.
    let mut more = 0usize;
    while more < 1_000_000 {
        let chunk = stream.next().await.expect("more rows").expect("chunk");
        more += chunk.len();
    }
    drop(stream);
    w.assert_nothing_running_within(Duration::from_secs(2))
        .await;
    w.gw.stop().await;
}
