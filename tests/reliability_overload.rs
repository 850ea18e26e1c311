//! Overload on a real PostgreSQL datasource: more queries than its pool holds wait at most
//! `pools.wait_timeout_ms` and then answer 503 `pool_timeout`; an app flooding a shared
//! datasource is held to `limits.max_concurrent_per_app` (429 with Retry-After) so a quiet app on
//! the same datasource keeps being served.
mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::db::PgTestDb;
use support::gateway::{Gateway, pg_server};

struct World {
    db: PgTestDb,
    role: String,
    gw: Gateway,
    ds: String,
}

impl World {
    /// Waits until `n` statements of the datasource's account sleep on the server.
    async fn until_sleeping(&self, n: i64) {
        let admin = self.db.admin_client().await;
        let started = Instant::now();
        loop {
            let row = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE usename = $1 AND query LIKE '%pg_sleep%' AND state = 'active'",
                    &[&self.role],
                )
                .await
                .expect("pg_stat_activity");
            if row.get::<_, i64>(0) >= n {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the holders never started sleeping"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A gateway with one PostgreSQL datasource (pool of `pool` connections) on a fresh database.
async fn world(pool: usize, tweak: impl FnOnce(&mut sluice::config::Config)) -> World {
    let db = PgTestDb::create().await;
    let role = db.create_role("ovl", "ovl_pw").await;
    let gw = Gateway::start_with(tweak).await;
    gw.set_integration(&gw.owner, "postgres", true).await;
    let (host, port) = pg_server();
    let ds = gw
        .datasource(
            &gw.owner,
            json!({
                "name": "shared-pg", "kind": "postgres",
                "connection": {"host": host, "port": port, "database": db.name,
                               "user": role, "password": "ovl_pw", "tls": {"mode": "disable"}},
                "policy": {"extra_functions": ["pg_sleep"]},
                "pool": {"max_size": pool},
            }),
        )
        .await;
    World { db, role, gw, ds }
}

/// A query's status, error code (if any), Retry-After (if any) and how long it took.
async fn timed(gw: &Gateway, app: &str, sql: &str) -> (u16, Option<String>, bool, Duration) {
    let started = Instant::now();
    let res = gw
        .request(&gw.owner, "POST", &format!("/v1/apps/{app}/query"))
        .json(&json!({"sql": sql}))
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    let retry_after = res.headers().contains_key("retry-after");
    let body: Value = res.json().await.expect("json");
    let code = body["error"]["code"].as_str().map(str::to_owned);
    (status, code, retry_after, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_beyond_the_pool_wait_their_bounded_time_then_answer_503_pool_timeout() {
    let w = world(2, |c| c.pools.wait_timeout_ms = 500).await;
    let app = w.gw.app(&w.gw.owner, "busy", &[&w.ds]).await;
    let gw = &w.gw;
    let holders = futures::future::join_all((0..2).map(|_| timed(gw, &app, "SELECT pg_sleep(2)")));
    let waiters = async {
        // The two holders take both connections first.
        w.until_sleeping(2).await;
        futures::future::join_all((0..3).map(|_| timed(gw, &app, "SELECT 1 AS one"))).await
    };
    let (held, waited) = tokio::join!(holders, waiters);
    for (status, code, _, _) in &held {
        assert_eq!(*status, 200, "{code:?}");
    }
    for (status, code, retry_after, took) in &waited {
        assert_eq!(*status, 503, "{code:?}");
        assert_eq!(code.as_deref(), Some("pool_timeout"));
        assert!(*retry_after, "503 pool_timeout without Retry-After");
        assert!(
            *took >= Duration::from_millis(450) && *took < Duration::from_millis(1_500),
            "waited {took:?} for a 500 ms pool wait"
        );
    }
    // The pool recovers at once when the connections come back.
    let (status, code, _, _) = timed(gw, &app, "SELECT 1 AS one").await;
    assert_eq!(status, 200, "{code:?}");
    let metrics = gw.metrics().await;
    let line = format!(
        "sluice_datasource_errors_total{{datasource=\"{}\",code=\"pool_timeout\"}} 3",
        w.ds
    );
    assert!(metrics.contains(&line), "no {line} in\n{metrics}");
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_flooding_a_shared_datasource_is_held_to_its_limit_and_a_quiet_app_keeps_working() {
    let w = world(4, |c| {
        c.pools.wait_timeout_ms = 500;
        c.limits.max_concurrent_per_app = 2;
    })
    .await;
    let gw = &w.gw;
    let flood = gw.app(&gw.owner, "flood", &[&w.ds]).await;
    let quiet = gw.app(&gw.owner, "quiet", &[&w.ds]).await;

    let flooding =
        futures::future::join_all((0..12).map(|_| timed(gw, &flood, "SELECT pg_sleep(1.5)")));
    let quietly = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(timed(gw, &quiet, "SELECT 1 AS one").await);
        }
        seen
    };
    let (flooded, quiet_results) = tokio::join!(flooding, quietly);

    for (status, code, _, took) in &quiet_results {
        assert_eq!(*status, 200, "the quiet app was starved: {code:?}");
        assert!(
            *took < Duration::from_millis(400),
            "quiet query took {took:?}"
        );
    }
    let ran = flooded.iter().filter(|r| r.0 == 200).count();
    assert_eq!(ran, 2, "the flooding app ran {ran} at once: {flooded:?}");
    for (status, code, retry_after, took) in flooded.iter().filter(|r| r.0 != 200) {
        assert_eq!(*status, 429, "{code:?}");
        assert_eq!(code.as_deref(), Some("too_many_requests"));
        assert!(*retry_after, "429 without Retry-After");
        assert!(*took < Duration::from_millis(500), "refusal took {took:?}");
    }
    w.gw.stop().await;
}
