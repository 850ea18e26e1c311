//! A database server going down and coming back, on a throwaway PostgreSQL server: queries to it
//! answer 503 `datasource_unavailable` quickly (never a hang, a 500 or a 422), another datasource
//! keeps serving, /metrics counts the failures per datasource, and once the server is back the
//! gateway serves again without a restart and without handing out the broken connections.
mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::gateway::{Gateway, sqlite_acme, sqlite_datasource};
use support::throwaway::ThrowawayPg;

/// How long a query may wait for a connection in these tests.
const WAIT_MS: u64 = 2_000;
/// Connections the PostgreSQL datasource's pool holds.
const POOL: usize = 3;

struct World {
    pg: ThrowawayPg,
    gw: Gateway,
    app: String,
    pg_ds: String,
}

async fn world() -> World {
    let pg = ThrowawayPg::start();
    let admin = pg.admin().await;
    admin
        .batch_execute(
            "CREATE ROLE svc LOGIN PASSWORD 'svc_pw';
             CREATE TABLE items AS SELECT g AS id FROM generate_series(1, 10) g;
             GRANT SELECT ON items TO svc;",
        )
        .await
        .expect("set up the throwaway database");
    let gw = Gateway::start_with(|c| {
        c.pools.wait_timeout_ms = WAIT_MS;
        c.pools.connect_timeout_ms = 1_000;
    })
    .await;
    gw.set_integration(&gw.owner, "postgres", true).await;
    gw.set_integration(&gw.owner, "sqlite", true).await;
    let pg_ds = gw
        .datasource(
            &gw.owner,
            json!({
                "name": "flaky-pg", "kind": "postgres",
                "connection": {"host": "127.0.0.1", "port": pg.port, "database": "postgres",
                               "user": "svc", "password": "svc_pw", "tls": {"mode": "disable"}},
                "policy": {"extra_functions": ["pg_sleep"]},
                "pool": {"max_size": POOL},
            }),
        )
        .await;
    let path = sqlite_acme(&gw, "steady.db");
    let lite_ds = gw
        .datasource(
            &gw.owner,
            sqlite_datasource("steady-lite", &path, json!({})),
        )
        .await;
    let app = gw.app(&gw.owner, "both", &[&pg_ds, &lite_ds]).await;
    World { pg, gw, app, pg_ds }
}

impl World {
    async fn pg_query(&self, sql: &str) -> (u16, Value) {
        self.gw
            .query(
                &self.gw.owner,
                &self.app,
                json!({"sql": sql, "datasource": "flaky-pg"}),
            )
            .await
    }

    /// `POOL` queries at once, each holding a connection for a moment, so that every
    /// connection of the pool is opened (and later, every one of them is tried).
    async fn fill_pool(&self) -> Vec<(u16, Value)> {
        let runs =
            (0..POOL).map(|_| self.pg_query("SELECT count(*) AS n FROM items, pg_sleep(0.3)"));
        futures::future::join_all(runs).await
    }

    async fn sqlite_still_serves(&self) {
        let v = self
            .gw
            .rows(
                &self.gw.owner,
                &self.app,
                json!({"sql": "SELECT count(*) AS n FROM customers", "datasource": "steady-lite"}),
            )
            .await;
        assert_eq!(v["rows"], json!([[500]]), "{v}");
    }

    /// While the server is down: 503 `datasource_unavailable` with Retry-After, well within the
    /// pool's wait time.
    async fn assert_unavailable_fast(&self) {
        for _ in 0..3 {
            let started = Instant::now();
            let res = self
                .gw
                .request(
                    &self.gw.owner,
                    "POST",
                    &format!("/v1/apps/{}/query", self.app),
                )
                .json(&json!({"sql": "SELECT count(*) FROM items", "datasource": "flaky-pg"}))
                .send()
                .await
                .expect("request");
            let status = res.status().as_u16();
            let retry_after = res.headers().get("retry-after").cloned();
            let body: Value = res.json().await.expect("json body");
            let took = started.elapsed();
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "datasource_unavailable", "{body}");
            assert!(retry_after.is_some(), "503 without Retry-After");
            assert!(
                took < Duration::from_millis(WAIT_MS + 500),
                "the refusal took {took:?}"
            );
        }
    }

    async fn errors_counted(&self, code: &str) -> u64 {
        let metrics = self.gw.metrics().await;
        datasource_errors(&metrics, &self.pg_ds, code)
    }
}

/// The value of `sluice_datasource_errors_total{datasource=…, code=…}`, 0 when absent.
fn datasource_errors(metrics: &str, ds: &str, code: &str) -> u64 {
    let labels = [format!("datasource=\"{ds}\""), format!("code=\"{code}\"")];
    metrics
        .lines()
        .filter(|l| l.starts_with("sluice_datasource_errors_total{"))
        .filter(|l| labels.iter().all(|lab| l.contains(lab.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// After the server came back, every connection the pool held before is broken: each of
/// `POOL` concurrent queries must still succeed at the first attempt.
async fn assert_serves_again(w: &World) {
    for (status, body) in w.fill_pool().await {
        assert_eq!(status, 200, "a broken connection was handed out: {body}");
        assert_eq!(body["rows"], json!([[10]]), "{body}");
    }
    let (status, body) = w.pg_query("SELECT max(id) AS m FROM items").await;
    assert_eq!((status, &body["rows"]), (200, &json!([[10]])), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_restart_answers_503_meanwhile_and_serves_again_afterwards() {
    let w = world().await;
    for (status, body) in w.fill_pool().await {
        assert_eq!(status, 200, "{body}");
    }

    // A statement in flight when the server shuts down ends with a clear 503, not a 422.
    let gw = &w.gw;
    let app = w.app.clone();
    let in_flight = gw.query(
        &gw.owner,
        &app,
        json!({"sql": "SELECT pg_sleep(20)", "datasource": "flaky-pg"}),
    );
    let stop = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pg = &w.pg;
        tokio::task::block_in_place(|| pg.stop_server("fast"));
    };
    let ((status, body), ()) = tokio::join!(in_flight, stop);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "datasource_unavailable", "{body}");

    w.assert_unavailable_fast().await;
    w.sqlite_still_serves().await;
    assert!(
        w.errors_counted("datasource_unavailable").await >= 4,
        "{}",
        w.gw.metrics().await
    );
    let audited = w.gw.audit(&w.gw.owner, "action=query&outcome=failed").await;
    assert!(
        audited
            .iter()
            .filter(|e| e["code"] == "datasource_unavailable")
            .count()
            >= 4,
        "{audited:?}"
    );

    tokio::task::block_in_place(|| w.pg.start_server());
    assert_serves_again(&w).await;
    w.sqlite_still_serves().await;
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_server_answers_503_meanwhile_and_its_dead_connections_are_never_reused() {
    let w = world().await;
    for (status, body) in w.fill_pool().await {
        assert_eq!(status, 200, "{body}");
    }
    // Crash and come back before the gateway tries the datasource again: every connection the
    // pool holds belongs to the dead server.
    tokio::task::block_in_place(|| {
        w.pg.stop_server("immediate");
        w.pg.start_server();
    });
    assert_serves_again(&w).await;

    tokio::task::block_in_place(|| w.pg.stop_server("immediate"));
    w.assert_unavailable_fast().await;
    w.sqlite_still_serves().await;
    assert!(w.errors_counted("datasource_unavailable").await >= 3);
    tokio::task::block_in_place(|| w.pg.start_server());
    assert_serves_again(&w).await;
    w.gw.stop().await;
}
