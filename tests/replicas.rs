//! Several replicas of the real binary over one PostgreSQL store (issue 17): changes made through
//! any replica are enforced by every other within the staleness bound, losing a replica or the
//! store loses no answered query's audit record, and replicas starting together on an empty store
//! both come up.

mod support;

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::db::PgTestDb;
use support::gateway::{PgAcme, pg_acme};
use support::throwaway::{SluiceProcess, ThrowawayPg};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const KEY: &str = "6d2b1f4c8a9e0d3b7c5a1f2e4d6b8a0c9e7f5d3b1a2c4e6f8d0b2a4c6e8f0a1b";
/// The replicas' `store.max_staleness_ms` (the default).
const BOUND: Duration = Duration::from_millis(1_000);

/// A store database on the local PostgreSQL, `sslmode=disable` (the local certificate is
/// Debian's self-signed one; the store's TLS is tested with the datasource TLS code it reuses).
fn store_url(db: &PgTestDb) -> String {
    format!("{}?sslmode=disable", db.url())
}

/// `sluice --store-url URL company create NAME`: the owner's token (the last line printed).
fn create_company(url: &str, name: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(BIN)
        .args(["--store-url", url, "--data-dir"])
        .arg(dir.path())
        .args(["company", "create", name, "--owner-email"])
        .arg(format!("owner@{}.example", name.to_lowercase()))
        .env("SLUICE_MASTER_KEY", KEY)
        .output()
        .expect("run sluice company create");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "company create failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().expect("token line").trim().to_owned()
}

struct Replica {
    process: SluiceProcess,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn start(url: &str) -> Replica {
        let dir = tempfile::tempdir().expect("tempdir");
        let process = SluiceProcess::start(
            BIN,
            dir.path(),
            &[("SLUICE_STORE__URL", url), ("SLUICE_MASTER_KEY", KEY)],
        );
        Replica { process, _dir: dir }
    }

    fn base(&self) -> &str {
        &self.process.base
    }
}

struct Api {
    http: reqwest::Client,
}

impl Api {
    fn new() -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
        }
    }

    async fn call(
        &self,
        base: &str,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        support::client::call(&self.http, base, token, method, path, body).await
    }

    async fn ok(
        &self,
        base: &str,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        support::client::ok(&self.http, base, token, method, path, body).await
    }

    async fn query(&self, base: &str, token: &str, app: &str, sql: &str) -> (u16, Value) {
        self.call(
            base,
            token,
            "POST",
            &format!("/v1/apps/{app}/query"),
            Some(json!({"sql": sql})),
        )
        .await
    }
}

/// What a request answers: 200, or the error code.
fn outcome(status: u16, v: &Value) -> String {
    if status == 200 {
        "ok".to_owned()
    } else {
        v["error"]["code"].as_str().unwrap_or("?").to_owned()
    }
}

/// A request repeated until it answers as expected.
enum Probe<'a> {
    /// `POST /v1/apps/{app}/query`.
    Query {
        token: &'a str,
        app: &'a str,
        sql: &'a str,
    },
    /// `GET path`.
    Get { token: &'a str, path: &'a str },
}

fn query<'a>(token: &'a str, app: &'a str, sql: &'a str) -> Probe<'a> {
    Probe::Query { token, app, sql }
}

fn get<'a>(token: &'a str, path: &'a str) -> Probe<'a> {
    Probe::Get { token, path }
}

impl Api {
    async fn probe(&self, base: &str, probe: &Probe<'_>) -> (u16, Value) {
        match *probe {
            Probe::Query { token, app, sql } => self.query(base, token, app, sql).await,
            Probe::Get { token, path } => self.call(base, token, "GET", path, None).await,
        }
    }
}

/// Repeats `probe` against `base` until it answers `want`. Any answer still the old `stale` one
/// to a request sent more than [`BOUND`] after `changed` (when the change's answer arrived) fails
/// the test: a replica may answer 503 while it cannot confirm its view, never the old answer.
/// Returns how long after `changed` the new answer first came.
async fn await_effect(
    api: &Api,
    what: &str,
    base: &str,
    changed: Instant,
    stale: &str,
    want: &str,
    probe: &Probe<'_>,
) -> Duration {
    let give_up = changed + Duration::from_secs(20);
    loop {
        let sent = Instant::now();
        let (s, v) = api.probe(base, probe).await;
        let got = outcome(s, &v);
        if got == want {
            return changed.elapsed();
        }
        assert!(
            !(got == stale && sent > changed + BOUND),
            "{what} on {base}: still the old answer ({got}) {} ms after the change: {v}",
            sent.duration_since(changed).as_millis()
        );
        assert!(
            got == stale || got == "unavailable",
            "{what} on {base}: unexpected answer {s} {v}"
        );
        assert!(
            Instant::now() < give_up,
            "{what} on {base}: never took effect (last answer {s} {v})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`await_effect`] on each of `bases`, in turn; the delays.
async fn await_everywhere(
    api: &Api,
    bases: &[String],
    what: &str,
    changed: Instant,
    stale: &str,
    want: &str,
    probe: &Probe<'_>,
) -> Vec<Duration> {
    let mut delays = Vec::new();
    for base in bases {
        delays.push(await_effect(api, what, base, changed, stale, want, probe).await);
    }
    delays
}

/// Three replicas on one store, and the acme database as a datasource registered through the
/// second.
struct Cluster {
    _store: PgTestDb,
    replicas: Vec<Replica>,
    owner: String,
    acme: PgAcme,
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        let store = PgTestDb::create().await;
        let url = store_url(&store);
        let owner = create_company(&url, "Acme");
        let replicas = (0..n).map(|_| Replica::start(&url)).collect();
        Cluster {
            _store: store,
            replicas,
            owner,
            acme: pg_acme().await,
        }
    }

    fn base(&self, i: usize) -> String {
        self.replicas[i].base().to_owned()
    }

    fn others(&self, i: usize) -> Vec<String> {
        (0..self.replicas.len())
            .filter(|&j| j != i)
            .map(|j| self.base(j))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_change_through_one_replica_is_enforced_by_the_others() {
    let c = Cluster::start(3).await;
    let api = Api::new();
    let (a, b, cc) = (c.base(0), c.base(1), c.base(2));
    let owner = c.owner.clone();
    let mut delays = Vec::new();

    // A datasource registered on B answers queries on C.
    enable_postgres(&api, &b, &owner).await;
    let ds_body = c
        .acme
        .datasource("warehouse", &c.acme.accounts.analyst, json!({}));
    let ds = api
        .ok(&b, &owner, "POST", "/v1/datasources", Some(ds_body))
        .await["id"]
        .as_str()
        .expect("ds id")
        .to_owned();
    let app = api
        .ok(
            &b,
            &owner,
            "POST",
            "/v1/apps",
            Some(json!({"name": "reports", "datasource_ids": [ds]})),
        )
        .await["id"]
        .as_str()
        .expect("app id")
        .to_owned();
    let changed = Instant::now();
    let sql = "SELECT count(*) AS n FROM customers";
    delays.extend(
        await_everywhere(
            &api,
            &c.others(1),
            "new datasource",
            changed,
            "not_found",
            "ok",
            &query(&owner, &app, sql),
        )
        .await,
    );

    // A user invited and given the app on A uses it on C; the share removed on A is refused on
    // B and C.
    let invited_at = Instant::now();
    let invited = api
        .ok(
            &a,
            &owner,
            "POST",
            "/v1/users",
            Some(json!({"email": "ana@acme.example", "role": "admin"})),
        )
        .await;
    let ana = invited["user"]["id"].as_str().expect("user id").to_owned();
    let ana_token = invited["token"].as_str().expect("token").to_owned();
    // Her account reaches C first: until it does, C does not know her token (401), which is
    // the invitation's old answer, not the share's.
    await_effect(
        &api,
        "new user",
        &cc,
        invited_at,
        "unauthenticated",
        "not_found",
        &query(&ana_token, &app, sql),
    )
    .await;
    api.ok(
        &a,
        &owner,
        "PUT",
        &format!("/v1/apps/{app}/members/{ana}"),
        Some(json!({"role": "viewer"})),
    )
    .await;
    let changed = Instant::now();
    await_effect(
        &api,
        "new share",
        &cc,
        changed,
        "not_found",
        "ok",
        &query(&ana_token, &app, sql),
    )
    .await;
    api.ok(
        &a,
        &owner,
        "DELETE",
        &format!("/v1/apps/{app}/members/{ana}"),
        None,
    )
    .await;
    let changed = Instant::now();
    delays.extend(
        await_everywhere(
            &api,
            &c.others(0),
            "removed share",
            changed,
            "ok",
            "not_found",
            &query(&ana_token, &app, sql),
        )
        .await,
    );

    // Demoted on C: ana's admin route is refused on A and B.
    let audit = "/v1/audit?limit=1";
    for base in [&a, &b] {
        await_effect(
            &api,
            "admin before demotion",
            base,
            Instant::now(),
            "?",
            "ok",
            &get(&ana_token, audit),
        )
        .await;
    }
    api.ok(
        &cc,
        &owner,
        "PATCH",
        &format!("/v1/users/{ana}"),
        Some(json!({"role": "creator"})),
    )
    .await;
    let changed = Instant::now();
    delays.extend(
        await_everywhere(
            &api,
            &c.others(2),
            "demotion",
            changed,
            "ok",
            "forbidden",
            &get(&ana_token, audit),
        )
        .await,
    );

    // A token ana makes for herself on A, revoked by the owner on B, is refused on A and C.
    let minted = api
        .ok(
            &a,
            &ana_token,
            "POST",
            &format!("/v1/users/{ana}/tokens"),
            None,
        )
        .await;
    let (tid, second) = (
        minted["id"].as_str().expect("token id").to_owned(),
        minted["token"].as_str().expect("token").to_owned(),
    );
    await_effect(
        &api,
        "new token",
        &b,
        Instant::now(),
        "unauthenticated",
        "ok",
        &get(&second, "/v1/me"),
    )
    .await;
    api.ok(&b, &owner, "DELETE", &format!("/v1/tokens/{tid}"), None)
        .await;
    let changed = Instant::now();
    delays.extend(
        await_everywhere(
            &api,
            &c.others(1),
            "revoked token",
            changed,
            "ok",
            "unauthenticated",
            &get(&second, "/v1/me"),
        )
        .await,
    );

    // A scope policy edited on C (customers denied) is enforced on A and B.
    api.ok(
        &cc,
        &owner,
        "PATCH",
        &format!("/v1/datasources/{ds}"),
        Some(json!({"policy": {"denied_tables": ["customers"]}})),
    )
    .await;
    let changed = Instant::now();
    delays.extend(
        await_everywhere(
            &api,
            &c.others(2),
            "edited policy",
            changed,
            "ok",
            "table_not_allowed",
            &query(&owner, &app, sql),
        )
        .await,
    );
    api.ok(
        &cc,
        &owner,
        "PATCH",
        &format!("/v1/datasources/{ds}"),
        Some(json!({"policy": {"denied_tables": []}})),
    )
    .await;
    for base in c.others(2) {
        await_effect(
            &api,
            "restored policy",
            &base,
            Instant::now(),
            "table_not_allowed",
            "ok",
            &query(&owner, &app, sql),
        )
        .await;
    }

    // The integration turned off on A: refused on B and C.
    api.ok(
        &a,
        &owner,
        "PATCH",
        "/v1/integrations/postgres",
        Some(json!({"enabled": false})),
    )
    .await;
    let changed = Instant::now();
    delays.extend(
        await_everywhere(
            &api,
            &c.others(0),
            "integration off",
            changed,
            "ok",
            "integration_disabled",
            &query(&owner, &app, sql),
        )
        .await,
    );
    api.ok(
        &a,
        &owner,
        "PATCH",
        "/v1/integrations/postgres",
        Some(json!({"enabled": true})),
    )
    .await;
    for base in c.others(0) {
        await_effect(
            &api,
            "integration on",
            &base,
            Instant::now(),
            "integration_disabled",
            "ok",
            &query(&owner, &app, sql),
        )
        .await;
    }

    // Detached on B: refused on A and C; then the datasource deleted on C.
    api.ok(
        &b,
        &owner,
        "DELETE",
        &format!("/v1/apps/{app}/datasources/{ds}"),
        None,
    )
    .await;
    let changed = Instant::now();
    let detached = outcome_after_detach(&api, &b, &owner, &app, sql).await;
    delays.extend(
        await_everywhere(
            &api,
            &c.others(1),
            "detached datasource",
            changed,
            "ok",
            &detached,
            &query(&owner, &app, sql),
        )
        .await,
    );
    api.ok(
        &b,
        &owner,
        "PUT",
        &format!("/v1/apps/{app}/datasources/{ds}"),
        None,
    )
    .await;
    for base in c.others(1) {
        await_effect(
            &api,
            "attached again",
            &base,
            Instant::now(),
            &detached,
            "ok",
            &query(&owner, &app, sql),
        )
        .await;
    }
    api.ok(
        &cc,
        &owner,
        "DELETE",
        &format!("/v1/datasources/{ds}"),
        None,
    )
    .await;
    let changed = Instant::now();
    let deleted = outcome_after_detach(&api, &cc, &owner, &app, sql).await;
    delays.extend(
        await_everywhere(
            &api,
            &c.others(2),
            "deleted datasource",
            changed,
            "ok",
            &deleted,
            &query(&owner, &app, sql),
        )
        .await,
    );
    eprintln!(
        "propagation delays (ms, measured from the change's answer): {:?}",
        delays.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
}

/// What the replica that made a change answers right after it (its own view is updated by the
/// write itself): the answer the others must come to.
async fn outcome_after_detach(api: &Api, base: &str, token: &str, app: &str, sql: &str) -> String {
    let (s, v) = api.query(base, token, app, sql).await;
    let got = outcome(s, &v);
    assert_ne!(
        got, "ok",
        "the replica that made the change still answers: {v}"
    );
    got
}

/// Answered queries' request ids, sent round-robin to `bases` until `stop`, from `workers`
/// tasks. Requests to a replica that is gone (connection refused) are not answers; any other
/// failure is counted.
async fn load(
    bases: Arc<std::sync::Mutex<Vec<String>>>,
    token: String,
    app: String,
    stop: Arc<AtomicBool>,
    workers: usize,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (bases, token, app, stop) = (bases.clone(), token.clone(), app.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client");
            let (mut answered, mut errors) = (Vec::new(), Vec::new());
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let base = {
                    let b = bases.lock().expect("bases");
                    b[i % b.len()].clone()
                };
                i += 1;
                let res = http
                    .post(format!("{base}/v1/apps/{app}/query"))
                    .bearer_auth(&token)
                    .json(&json!({"sql": "SELECT id FROM customers ORDER BY id LIMIT 1"}))
                    .send()
                    .await;
                match res {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        if status == 200 {
                            let rid = v["request_id"].as_str().unwrap_or_default().to_owned();
                            answered.push((base, rid));
                        } else {
                            errors.push(format!("{base}: {status} {v}"));
                        }
                    }
                    Err(e) => errors.push(format!("{base}: {e}")),
                }
            }
            (answered, errors)
        }));
    }
    let (mut answered, mut errors) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, e) = t.await.expect("load task");
        answered.extend(a);
        errors.extend(e);
    }
    (answered, errors)
}

/// Every audit record of a query, by request id, read through `base` (all pages).
async fn audited_request_ids(
    api: &Api,
    base: &str,
    owner: &str,
) -> std::collections::HashSet<String> {
    let mut ids = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/audit?action=query&limit=1000".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = api.ok(base, owner, "GET", &path, None).await;
        for item in page["items"].as_array().expect("items") {
            if let Some(r) = item["request_id"].as_str() {
                ids.insert(r.to_owned());
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
}

/// Turns the PostgreSQL integration on (off in a new company) through `base`.
async fn enable_postgres(api: &Api, base: &str, owner: &str) {
    api.ok(
        base,
        owner,
        "PATCH",
        "/v1/integrations/postgres",
        Some(json!({"enabled": true})),
    )
    .await;
}

/// Registers the acme datasource and an app through `base`; returns the app id.
async fn acme_app(api: &Api, base: &str, c: &Cluster) -> String {
    enable_postgres(api, base, &c.owner).await;
    let body = c
        .acme
        .datasource("warehouse", &c.acme.accounts.analyst, json!({}));
    let ds = api
        .ok(base, &c.owner, "POST", "/v1/datasources", Some(body))
        .await["id"]
        .as_str()
        .expect("ds id")
        .to_owned();
    api.ok(
        base,
        &c.owner,
        "POST",
        "/v1/apps",
        Some(json!({"name": "load", "datasource_ids": [ds]})),
    )
    .await["id"]
        .as_str()
        .expect("app id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_replica_under_load_loses_no_answer_and_no_record() {
    let mut c = Cluster::start(3).await;
    let api = Api::new();
    let app = acme_app(&api, &c.base(0), &c).await;
    // Every replica knows the app before the load starts.
    for i in 0..3 {
        let base = c.base(i);
        await_effect(
            &api,
            "app known",
            &base,
            Instant::now(),
            "not_found",
            "ok",
            &query(&c.owner, &app, "SELECT 1"),
        )
        .await;
    }
    let survivors = vec![c.base(0), c.base(1)];
    let bases = Arc::new(std::sync::Mutex::new(vec![c.base(0), c.base(1), c.base(2)]));
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(
        bases.clone(),
        c.owner.clone(),
        app.clone(),
        stop.clone(),
        6,
    ));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // kill -9 the third replica, and stop sending to it (a load balancer's health check would).
    let victim = c.replicas.pop().expect("third replica");
    let victim_base = victim.base().to_owned();
    victim.process.signal("KILL");
    bases.lock().expect("bases").retain(|b| *b != victim_base);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    let (answered, errors) = running.await.expect("load");
    let survivor_errors: Vec<&String> = errors
        .iter()
        .filter(|e| survivors.iter().any(|s| e.starts_with(s.as_str())))
        .collect();
    assert!(
        survivor_errors.is_empty(),
        "requests to the surviving replicas failed: {survivor_errors:?}"
    );
    assert!(
        answered.iter().any(|(b, _)| *b == victim_base)
            && answered.iter().any(|(b, _)| *b != victim_base),
        "the load did not reach every replica: {} answers",
        answered.len()
    );
    // Every answered query, on any replica (the killed one too), has its record, readable from
    // either survivor.
    for base in &survivors {
        let audited = audited_request_ids(&api, base, &c.owner).await;
        let missing: Vec<&(String, String)> = answered
            .iter()
            .filter(|(_, rid)| !audited.contains(rid))
            .collect();
        assert!(
            missing.is_empty(),
            "{} of {} answered queries have no audit record (read via {base}): {:?}",
            missing.len(),
            answered.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_store_answers_503_then_recovers_without_restart() {
    let pg = tokio::task::spawn_blocking(ThrowawayPg::start)
        .await
        .expect("throwaway cluster");
    let admin = pg.admin().await;
    admin
        .batch_execute("CREATE DATABASE sluice_store")
        .await
        .expect("create store database");
    drop(admin);
    let url = format!("{}?sslmode=disable", pg.url("sluice_store"));
    let owner = create_company(&url, "Acme");
    let replicas = [Replica::start(&url), Replica::start(&url)];
    let bases: Vec<String> = replicas.iter().map(|r| r.base().to_owned()).collect();
    let acme = pg_acme().await;
    let api = Api::new();
    enable_postgres(&api, &bases[0], &owner).await;
    let body = acme.datasource("warehouse", &acme.accounts.analyst, json!({}));
    let ds = api
        .ok(&bases[0], &owner, "POST", "/v1/datasources", Some(body))
        .await["id"]
        .as_str()
        .expect("ds id")
        .to_owned();
    let app = api
        .ok(
            &bases[0],
            &owner,
            "POST",
            "/v1/apps",
            Some(json!({"name": "load", "datasource_ids": [ds]})),
        )
        .await["id"]
        .as_str()
        .expect("app id")
        .to_owned();
    for base in &bases {
        await_effect(
            &api,
            "app known",
            base,
            Instant::now(),
            "not_found",
            "ok",
            &query(&owner, &app, "SELECT 1"),
        )
        .await;
    }

    let shared = Arc::new(std::sync::Mutex::new(bases.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(shared, owner.clone(), app.clone(), stop.clone(), 4));
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    // The store goes away (as a crash would): every replica refuses with 503 and is not ready.
    pg.stop_server("immediate");
    let down = Instant::now();
    for base in &bases {
        await_effect(
            &api,
            "store down",
            base,
            down,
            "ok",
            "unavailable",
            &query(&owner, &app, "SELECT 1"),
        )
        .await;
        let ready = api
            .http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(
            ready.status().as_u16(),
            503,
            "{base} still ready without its store"
        );
        // Admin reads are served from memory only within the staleness bound.
        await_effect(
            &api,
            "admin read, store down",
            base,
            down,
            "ok",
            "unavailable",
            &get(&owner, "/v1/apps"),
        )
        .await;
        let (s, v) = api
            .call(
                base,
                &owner,
                "POST",
                "/v1/apps",
                Some(json!({"name": "while-down"})),
            )
            .await;
        assert_eq!(
            (s, outcome(s, &v).as_str()),
            (503, "unavailable"),
            "admin write: {v}"
        );
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    // Back: both recover by themselves.
    let pg_ref = &pg;
    tokio::task::block_in_place(|| pg_ref.start_server());
    let up = Instant::now();
    for base in &bases {
        await_effect(
            &api,
            "store back",
            base,
            up,
            "unavailable",
            "ok",
            &query(&owner, &app, "SELECT 1"),
        )
        .await;
        let ready = api
            .http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(
            ready.status().as_u16(),
            200,
            "{base} not ready after the store came back"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (answered, errors) = running.await.expect("load");
    assert!(
        errors
            .iter()
            .all(|e| e.contains(" 503 ") && e.contains("unavailable")),
        "while the store was down, only 503 unavailable: {:?}",
        errors
            .iter()
            .filter(|e| !e.contains(" 503 "))
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(!errors.is_empty(), "the load never met the store's absence");
    let audited = audited_request_ids(&api, &bases[1], &owner).await;
    let missing = answered
        .iter()
        .filter(|(_, rid)| !audited.contains(rid))
        .count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} answered queries have no record",
        answered.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_starting_together_on_an_empty_store_both_serve() {
    let store = PgTestDb::create().await;
    let url = store_url(&store);
    let (u1, u2) = (url.clone(), url.clone());
    let first = std::thread::spawn(move || Replica::start(&u1));
    let second = std::thread::spawn(move || Replica::start(&u2));
    let (first, second) = (
        first.join().expect("first replica"),
        second.join().expect("second replica"),
    );
    let owner = create_company(&url, "Acme");
    let api = Api::new();
    for r in [&first, &second] {
        let ready = api
            .http
            .get(format!("{}/readyz", r.base()))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status().as_u16(), 200, "{}", r.process.log_text());
        await_effect(
            &api,
            "company made by the CLI",
            r.base(),
            Instant::now(),
            "unauthenticated",
            "ok",
            &get(&owner, "/v1/me"),
        )
        .await;
    }
    // The migrations ran once.
    let admin = store.admin_client().await;
    let applied: i64 = admin
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .expect("schema_migrations")
        .get(0);
    let versions: i64 = admin
        .query_one("SELECT count(DISTINCT version) FROM schema_migrations", &[])
        .await
        .expect("schema_migrations")
        .get(0);
    assert_eq!(applied, versions, "a migration was applied twice");
}

#[test]
fn a_replica_with_another_master_key_refuses_to_start() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = rt.block_on(PgTestDb::create());
    let url = store_url(&store);
    create_company(&url, "Acme");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SLUICE_STORE__URL", &url)
        .env("SLUICE_MASTER_KEY", KEY.replace('6', "7"))
        .output()
        .expect("run sluice serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started with the wrong key: {stderr}"
    );
    assert!(
        stderr.contains("SLUICE_MASTER_KEY"),
        "the refusal does not name the key: {stderr}"
    );
    // Without any key, it refuses too, saying the replicas must share one.
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SLUICE_STORE__URL", &url)
        .env_remove("SLUICE_MASTER_KEY")
        .output()
        .expect("run sluice serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("SLUICE_MASTER_KEY"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("master.key").exists(),
        "a replica of a shared store made up a key of its own"
    );
}
