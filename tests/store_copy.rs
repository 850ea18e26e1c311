//! `sluice store copy`: a populated one-node installation (its SQLite store, made over HTTP by a
//! real gateway) copied by the real binary into a throwaway PostgreSQL database, compared object
//! by object with the PostgreSQL store opened with the same key, refused the second time, and then
//! served by the real binary from the copy.
//!
//! PostgreSQL at 127.0.0.1:5432 (`SLUICE_TEST_PG_URL`): the test fails, never skips, when it is
//! down, naming the command that starts it.

mod support;

use serde_json::{Value, json};
use sluice::store::{CompanyView, MasterKey, Store, View};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use support::certs::TestCa;
use support::db::{PG_START_HINT, pg_admin_url};
use support::gateway::{Gateway, pg_acme, sqlite_datasource};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// A throwaway target database `sluice_copy_<uuid>`, dropped when the guard is.
struct TargetDb {
    name: String,
}

impl TargetDb {
    fn create() -> TargetDb {
        let name = format!("sluice_copy_{}", uuid::Uuid::new_v4().simple());
        let sql = format!("CREATE DATABASE {name}");
        on_own_thread(move || {
            let mut admin = pg(&pg_admin_url());
            admin
                .batch_execute(&sql)
                .expect("create the target database");
        });
        TargetDb { name }
    }

    fn url(&self) -> String {
        // The admin URL with this database: the path replaced, any query kept.
        let admin = pg_admin_url();
        let (base, query) = match admin.split_once('?') {
            Some((b, q)) => (b.to_owned(), Some(q.to_owned())),
            None => (admin.clone(), None),
        };
        let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
        let host_end = base[scheme_end..]
            .find('/')
            .map(|i| scheme_end + i)
            .unwrap_or(base.len());
        let mut url = format!("{}/{}", &base[..host_end], self.name);
        if let Some(q) = query {
            url = format!("{url}?{q}");
        }
        url
    }
}

impl Drop for TargetDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&pg_admin_url(), postgres::NoTls) {
                let _ = c.batch_execute(&sql);
            }
        })
        .join();
    }
}

/// A blocking PostgreSQL client, or the failure that says how to start the server.
fn pg(url: &str) -> postgres::Client {
    match postgres::Client::connect(url, postgres::NoTls) {
        Ok(c) => c,
        Err(e) => panic!("{PG_START_HINT}\n(connecting to {url}: {e})"),
    }
}

/// Runs blocking code (the sync PostgreSQL client, the store) off the test's runtime.
fn on_own_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().expect("blocking helper")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy file");
        }
    }
}

fn store_copy(from: &Path, to: &str) -> Output {
    store_copy_with_key(from, to, None)
}

/// `sluice store copy`, with `SLUICE_MASTER_KEY` set to `key` or unset.
fn store_copy_with_key(from: &Path, to: &str, key: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["store", "copy", "--from"])
        .arg(from)
        .args(["--to", to])
        .env_remove("SLUICE_MASTER_KEY")
        .env_remove("SLUICE_STORE__URL");
    if let Some(k) = key {
        cmd.env("SLUICE_MASTER_KEY", k);
    }
    cmd.output().expect("run sluice store copy")
}

/// `table -> rows` from the copy's printout (`  users   5`).
fn printed_counts(stdout: &str) -> BTreeMap<String, u64> {
    stdout
        .lines()
        .filter(|l| l.starts_with("  "))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.parse().ok()?))
        })
        .collect()
}

/// The rows of each copied table in the SQLite store (audit: the log and the staging table).
fn sqlite_counts(db: &Path) -> BTreeMap<String, u64> {
    let conn = rusqlite::Connection::open(db).expect("open source");
    let mut out = BTreeMap::new();
    for t in sluice::store::copy::TABLES {
        let mut n = 0u64;
        for (src, _) in t.sources {
            let c: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {src}"), [], |r| r.get(0))
                .expect("count");
            n += c as u64;
        }
        out.insert(t.name.to_owned(), n);
    }
    out
}

fn audit_ids_sqlite(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open source");
    let mut ids: Vec<String> = conn
        .prepare("SELECT id FROM audit_log UNION ALL SELECT id FROM audit_staging")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("ids");
    ids.sort();
    ids
}

/// Every object of one company, compared field by field (secrets: the sealed bytes and what
/// they decrypt to).
fn compare_company(label: &str, a: &CompanyView, b: &CompanyView) {
    assert_eq!(a.company, b.company, "{label}: company");
    assert_eq!(a.users, b.users, "{label}: users");
    assert_eq!(a.integrations, b.integrations, "{label}: integrations");
    let sorted = |v: &CompanyView| {
        let mut groups: Vec<_> = v.groups.values().cloned().collect();
        groups.sort_by(|x, y| x.id.as_str().cmp(y.id.as_str()));
        for g in &mut groups {
            g.members.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        }
        groups
    };
    assert_eq!(sorted(a), sorted(b), "{label}: groups");
    assert_eq!(
        a.apps.len(),
        b.apps.len(),
        "{label}: apps {:?}",
        b.apps.keys()
    );
    for (id, app) in &a.apps {
        let other = b
            .apps
            .get(id)
            .unwrap_or_else(|| panic!("{label}: app {id:?}"));
        let (mut x, mut y) = (app.clone(), other.clone());
        x.members.sort_by(|p, q| p.0.as_str().cmp(q.0.as_str()));
        y.members.sort_by(|p, q| p.0.as_str().cmp(q.0.as_str()));
        assert_eq!(x, y, "{label}: app {id:?}");
    }
    assert_eq!(a.tokens.len(), b.tokens.len(), "{label}: tokens");
    for (id, t) in &a.tokens {
        let u = b
            .tokens
            .get(id)
            .unwrap_or_else(|| panic!("{label}: token {id:?}"));
        assert_eq!(t.hash, u.hash, "{label}: token {id:?} hash");
        assert_eq!(
            (
                &t.user_id,
                &t.company_id,
                &t.name,
                t.created_at,
                t.expires_at
            ),
            (
                &u.user_id,
                &u.company_id,
                &u.name,
                u.created_at,
                u.expires_at
            ),
            "{label}: token {id:?}"
        );
    }
    assert_eq!(
        a.datasources.len(),
        b.datasources.len(),
        "{label}: datasources"
    );
    for (id, d) in &a.datasources {
        let e = b
            .datasources
            .get(id)
            .unwrap_or_else(|| panic!("{label}: datasource {id:?}"));
        let mut dm = d.members.clone();
        let mut em = e.members.clone();
        dm.sort_by(|p, q| p.0.as_str().cmp(q.0.as_str()));
        em.sort_by(|p, q| p.0.as_str().cmp(q.0.as_str()));
        assert_eq!(dm, em, "{label}: datasource {id:?} members");
        assert_eq!(
            (
                &d.company_id,
                &d.name,
                &d.description,
                d.kind,
                d.visibility,
                &d.owner_id,
                &d.connection,
                &d.policy,
                d.pool_max_size,
                d.generation,
                d.created_at,
                d.updated_at,
            ),
            (
                &e.company_id,
                &e.name,
                &e.description,
                e.kind,
                e.visibility,
                &e.owner_id,
                &e.connection,
                &e.policy,
                e.pool_max_size,
                e.generation,
                e.created_at,
                e.updated_at,
            ),
            "{label}: datasource {id:?}"
        );
        assert_eq!(
            d.password_enc, e.password_enc,
            "{label}: {id:?} sealed password"
        );
        assert_eq!(
            d.tls_client_key_enc, e.tls_client_key_enc,
            "{label}: {id:?} sealed client key"
        );
        // The same key opens them in the copy: the same decrypted connection.
        assert_eq!(
            format!("{:?}", d.spec.connection),
            format!("{:?}", e.spec.connection),
            "{label}: {id:?} spec"
        );
        match (&d.spec.connection, &e.spec.connection) {
            (
                sluice::datasource::Connection::Network {
                    password: p,
                    tls: t,
                    ..
                },
                sluice::datasource::Connection::Network {
                    password: q,
                    tls: u,
                    ..
                },
            ) => {
                assert_eq!(p.expose(), q.expose(), "{label}: {id:?} password");
                assert_eq!(
                    t.client_key_pem.as_ref().map(|k| k.expose().to_owned()),
                    u.client_key_pem.as_ref().map(|k| k.expose().to_owned()),
                    "{label}: {id:?} client key"
                );
            }
            (sluice::datasource::Connection::Sqlite { .. }, _) => {}
            other => panic!("{label}: {id:?} {other:?}"),
        }
    }
}

fn compare_views(a: &View, b: &View) {
    let mut ids: Vec<_> = a.companies.keys().collect();
    ids.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    let mut other: Vec<_> = b.companies.keys().collect();
    other.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    assert_eq!(ids, other, "the same companies");
    for id in ids {
        compare_company(id.as_str(), &a.companies[id], &b.companies[id]);
    }
    assert_eq!(a.token_company, b.token_company, "the token index");
}

/// The real binary serving the copied store.
struct Replica {
    child: Child,
    base: String,
}

impl Replica {
    fn start(store_url: &str, master_key: &str, data_dir: &Path, sqlite_root: &Path) -> Replica {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--allow-networks"])
            .arg("127.0.0.0/8,::1/128")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--store-url", store_url])
            .env("SLUICE_MASTER_KEY", master_key)
            .env("SLUICE_SQLITE_ROOTS", sqlite_root)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let addr = serde_json::from_str::<Value>(&line)
                    .ok()
                    .filter(|v| v["message"] == "sluice listening")
                    .and_then(|v| v["addr"].as_str().map(str::to_owned));
                if let Some(t) = &tx {
                    match addr {
                        Some(a) => {
                            let _ = t.send(Ok(a));
                            tx = None;
                        }
                        None => {
                            let _ = t.send(Err(line));
                        }
                    }
                }
            }
        });
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(Ok(addr)) => {
                    return Replica {
                        child,
                        base: format!("http://{addr}"),
                    };
                }
                Ok(Err(line)) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "sluice serve --store-url did not report its address; it logged:\n{}",
                        seen.join("\n")
                    );
                }
            }
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(
    base: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    support::client::call(&reqwest::Client::new(), base, token, method, path, body).await
}

fn token_id(token: &str) -> &str {
    token.split('.').nth(1).expect("token id")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_populated_installation_is_copied_into_postgres_once_and_served_from_there() {
    // ---- A one-node installation with every kind of object, made as an operator would.
    let acme = pg_acme().await;
    let sqlite_root = tempfile::tempdir().expect("tempdir");
    let sqlite_file = sqlite_root.path().join("acme.db");
    sluice::fixtures::create_sqlite(&sqlite_file).expect("acme sqlite");
    let root = sqlite_root.path().to_owned();
    let mut gw = Gateway::start_with(move |c| c.sqlite_roots = vec![root]).await;
    let owner = gw.owner.clone();
    for kind in ["postgres", "sqlite"] {
        gw.set_integration(&owner, kind, true).await;
    }
    let (_admin_id, admin) = gw.invite(&owner, "ada@acme.test", "admin").await;
    let (_creator_id, creator) = gw.invite(&admin, "cy@acme.test", "creator").await;
    let (consumer_id, consumer) = gw.invite(&admin, "con@acme.test", "consumer").await;
    let (gone_id, gone) = gw.invite(&admin, "gone@acme.test", "consumer").await;
    let bot = gw
        .ok(
            &admin,
            "POST",
            "/v1/api-users",
            Some(json!({"name": "robot"})),
        )
        .await;
    let bot_id = bot["user"]["id"].as_str().expect("bot id").to_owned();
    let expiring = gw
        .ok(
            &admin,
            "POST",
            &format!("/v1/users/{bot_id}/tokens"),
            Some(json!({"name": "until 2099", "expires_at": "2099-06-30T00:00:00Z"})),
        )
        .await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let group = gw
        .ok(
            &admin,
            "POST",
            "/v1/groups",
            Some(json!({"name": "analysts"})),
        )
        .await["id"]
        .as_str()
        .expect("group id")
        .to_owned();
    gw.ok(
        &admin,
        "PUT",
        &format!("/v1/groups/{group}/members/{consumer_id}"),
        Some(json!({})),
    )
    .await;
    let pg_ds = gw
        .datasource(
            &creator,
            acme.datasource(
                "warehouse",
                &acme.accounts.analyst,
                json!({"max_rows": 100}),
            ),
        )
        .await;
    // A datasource with a mutual-TLS client key: the second sealed secret.
    let ca = TestCa::new("copy test CA");
    let client = ca.client_cert("sluice");
    let mut mtls = acme.datasource("mtls", &acme.accounts.sales, json!({}));
    mtls["connection"]["tls"] = json!({
        "mode": "verify-full", "ca_pem": ca.cert_pem,
        "client_cert_pem": client.cert_pem, "client_key_pem": client.key_pem,
    });
    let mtls_ds = gw.datasource(&creator, mtls).await;
    let lite_ds = gw
        .datasource(
            &creator,
            sqlite_datasource(
                "lite",
                &sqlite_file.display().to_string(),
                json!({"denied_tables": ["sales_reps"]}),
            ),
        )
        .await;
    gw.ok(
        &creator,
        "PUT",
        &format!("/v1/datasources/{pg_ds}/members/{group}"),
        Some(json!({"role": "viewer"})),
    )
    .await;
    let app = gw.app(&creator, "Sales", &[&pg_ds, &lite_ds]).await;
    gw.app(&creator, "Secure", &[&mtls_ds]).await;
    gw.share(&creator, &app, &consumer_id).await;
    gw.share(&creator, &app, &group).await;
    gw.share(&creator, &app, &bot_id).await;
    gw.share(&creator, &app, &gone_id).await;
    let count_customers =
        json!({"sql": "SELECT count(*) AS n FROM customers", "datasource": pg_ds});
    for _ in 0..3 {
        gw.rows(&consumer, &app, count_customers.clone()).await;
    }
    gw.rows(&expiring, &app, count_customers.clone()).await;
    let (s, v) = gw
        .query(
            &consumer,
            &app,
            json!({"sql": "SELECT * FROM sales_reps", "datasource": lite_ds}),
        )
        .await;
    assert!(
        (400..500).contains(&s),
        "a refused query, audited as denied: {s} {v}"
    );
    // A revoked token must stay refused after the move.
    gw.ok(
        &admin,
        "DELETE",
        &format!("/v1/tokens/{}", token_id(&gone)),
        None,
    )
    .await;
    let expected_customers =
        gw.rows(&consumer, &app, count_customers.clone()).await["rows"].clone();

    // ---- The data directory as the stopped node left it.
    let src_dir = tempfile::tempdir().expect("tempdir");
    let src = src_dir.path().join("data");
    {
        let src = src.clone();
        gw.restart(move |data| copy_dir(data, &src)).await;
    }
    gw.stop().await;
    let db = src.join("sluice.db");
    {
        // The newest records as a kill -9 between their commit and their move leaves them: in
        // the staging table. Both tables must reach the target's audit_log.
        let conn = rusqlite::Connection::open(&db).expect("open");
        let cols = "id, at_us, company_id, actor_id, action, app_id, datasource_id, target_id, \
                    outcome, code, sql, row_count, duration_ms, request_id, detail";
        conn.execute_batch(&format!(
            "BEGIN;
             INSERT INTO audit_staging ({cols})
                SELECT {cols} FROM audit_log ORDER BY at_us DESC, id DESC LIMIT 3;
             DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_staging);
             COMMIT;"
        ))
        .expect("stage the newest records");
    }
    let source_counts = sqlite_counts(&db);
    let source_audit = audit_ids_sqlite(&db);
    assert_eq!(source_counts["audit_log"], source_audit.len() as u64);
    assert!(
        source_audit.len() > 10,
        "the installation has an audit log: {source_counts:?}"
    );
    for t in [
        "companies",
        "users",
        "tokens",
        "groups",
        "group_members",
        "datasources",
        "apps",
        "app_datasources",
        "members",
        "integrations",
    ] {
        assert!(
            source_counts[t] > 0,
            "nothing in {t} to copy: {source_counts:?}"
        );
    }
    let master_key = std::fs::read_to_string(src.join("master.key")).expect("master.key");

    // ---- The copy, by the real binary. First with a key that is not the installation's:
    // refused before anything is written.
    let target = TargetDb::create();
    let url = target.url();
    let wrong = store_copy_with_key(&src, &url, Some(&"ab".repeat(32)));
    let err = String::from_utf8_lossy(&wrong.stderr).into_owned();
    assert!(!wrong.status.success(), "a copy with another key must fail");
    println!("with another key: {err}");
    assert!(
        err.contains("master key"),
        "the refusal names the key: {err}"
    );
    let out = store_copy(&src, &url);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "store copy failed:\n{stdout}\n{stderr}"
    );
    println!("sluice store copy printed:\n{stdout}");
    assert_eq!(
        printed_counts(&stdout),
        source_counts,
        "printed counts:\n{stdout}"
    );
    assert!(
        stdout.contains("SLUICE_MASTER_KEY") && stdout.contains("master.key"),
        "the printout says which key the replicas need:\n{stdout}"
    );
    assert!(
        !stdout.contains(master_key.trim()) && !stderr.contains(master_key.trim()),
        "the key itself is never printed"
    );

    // ---- The PostgreSQL store, opened with the same key, holds the same objects.
    let target_audit: Vec<String> = {
        let (db, url, key) = (db.clone(), url.clone(), master_key.clone());
        on_own_thread(move || {
            let source = Store::open(&db, MasterKey::parse(&key).unwrap()).expect("source");
            let copied = Store::open_postgres(&url, MasterKey::parse(&key).unwrap())
                .expect("open the copied store");
            compare_views(&source.view(), &copied.view());
            let mut ids: Vec<String> = pg(&url)
                .query("SELECT id::text FROM audit_log", &[])
                .expect("audit ids")
                .iter()
                .map(|r| r.get(0))
                .collect();
            ids.sort();
            ids
        })
    };
    assert_eq!(target_audit, source_audit, "every audit record, once");

    // ---- A second copy into the same target is refused, and changes nothing.
    let again = store_copy(&src, &url);
    let err = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(!again.status.success(), "a second copy must fail");
    assert!(err.contains("not empty"), "{err}");
    let still: i64 = {
        let url = url.clone();
        on_own_thread(move || {
            pg(&url)
                .query_one("SELECT count(*) FROM audit_log", &[])
                .unwrap()
                .get(0)
        })
    };
    assert_eq!(still as usize, source_audit.len());

    // ---- The real binary serves the copy: every token works as before.
    let replica_dir = tempfile::tempdir().expect("tempdir");
    let replica = Replica::start(
        &url,
        master_key.trim(),
        replica_dir.path(),
        sqlite_root.path(),
    );
    let base = replica.base.clone();
    // As a load balancer does: requests once /readyz says the replica's view is current.
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ready = http.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().as_u16() == 200) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica on the copied store never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = {
        let (s, v) = call(
            &base,
            &consumer,
            "POST",
            &format!("/v1/apps/{app}/query"),
            Some(count_customers.clone()),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        v["rows"].clone()
    };
    assert_eq!(
        rows, expected_customers,
        "the copied datasource answers, its password opened"
    );
    let (s, v) = call(
        &base,
        &consumer,
        "POST",
        &format!("/v1/apps/{app}/query"),
        Some(json!({"sql": "SELECT count(*) FROM customers", "datasource": lite_ds})),
    )
    .await;
    assert_eq!(s, 200, "the SQLite datasource: {v}");
    let (s, v) = call(
        &base,
        &expiring,
        "POST",
        &format!("/v1/apps/{app}/query"),
        Some(count_customers.clone()),
    )
    .await;
    assert_eq!(s, 200, "the API user's expiring token: {v}");
    for (who, token) in [("owner", &owner), ("admin", &admin), ("creator", &creator)] {
        let (s, v) = call(&base, token, "GET", "/v1/apps", None).await;
        assert_eq!(s, 200, "{who}: {v}");
    }
    let (s, _) = call(&base, &gone, "GET", "/v1/apps", None).await;
    assert_eq!(s, 401, "the revoked token stays revoked");
    let (s, v) = call(&base, &admin, "GET", "/v1/audit?limit=500", None).await;
    assert_eq!(s, 200, "{v}");
    let listed = v["items"].as_array().expect("items").len();
    assert!(
        listed > source_audit.len(),
        "the audit listing has the copied records and the new ones: {listed}"
    );
    drop(replica);
    drop(target);
    drop(acme);
}

/// A target that is not a fresh store is refused with its reason, and an empty one gets the
/// schema from the store's migrations (no rows copied from an empty installation is fine).
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_source_and_a_used_target_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = TargetDb::create();
    let out = store_copy(&dir.path().join("nothing"), &target.url());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no SQLite store"), "{err}");

    // A fresh installation (a company made by the CLI): copied, then refused the second time.
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args([
            "company",
            "create",
            "Tiny",
            "--owner-email",
            "o@tiny.test",
            "--data-dir",
        ])
        .arg(&data)
        .env_remove("SLUICE_MASTER_KEY")
        .env_remove("SLUICE_STORE__URL")
        .output()
        .expect("company create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = store_copy(&data, &target.url());
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let counts = printed_counts(&String::from_utf8_lossy(&first.stdout));
    assert_eq!(counts["companies"], 1);
    assert_eq!(counts["users"], 1);
    assert_eq!(counts["audit_log"], 1, "the company.create record");
    let second = store_copy(&data, &target.url());
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("not empty") && err.contains("companies has 1 row"),
        "{err}"
    );
}

/// A data directory of an older version (here: from before datasources had TLS settings) is
/// migrated by the copy's own open of it, so what reaches PostgreSQL has this version's shape.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_data_dir_is_migrated_before_it_is_copied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args([
            "company",
            "create",
            "Old",
            "--owner-email",
            "o@old.test",
            "--data-dir",
        ])
        .arg(&data)
        .env_remove("SLUICE_MASTER_KEY")
        .env_remove("SLUICE_STORE__URL")
        .output()
        .expect("company create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key_text = std::fs::read_to_string(data.join("master.key")).expect("master.key");
    let key = MasterKey::parse(&key_text).expect("key");
    {
        // Back to schema version 4, with a datasource as that version stored it: no TLS
        // settings, no client-key column, the password sealed to its id.
        let conn = rusqlite::Connection::open(data.join("sluice.db")).expect("open");
        let (company, owner): (String, String) = conn
            .query_row("SELECT company_id, id FROM users", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("owner");
        conn.execute_batch(
            "ALTER TABLE datasources DROP COLUMN tls_client_key_enc; PRAGMA user_version = 4;",
        )
        .expect("downgrade");
        let sealed = key.encrypt(b"old-pw", "ds_old");
        conn.execute(
            "INSERT INTO datasources (id, company_id, name, description, kind, visibility,
                owner_id, connection, password_enc, policy, pool_max_size, generation,
                created_at, updated_at)
             VALUES ('ds_old', ?1, 'legacy', '', 'postgres', 'private', ?2,
                '{\"host\":\"db.example.com\",\"port\":5432,\"database\":\"d\",\"user\":\"u\"}',
                ?3, '{}', 4, 7, '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z')",
            rusqlite::params![company, owner, sealed],
        )
        .expect("an old datasource");
    }
    let target = TargetDb::create();
    let out = store_copy(&data, &target.url());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = printed_counts(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(counts["datasources"], 1, "{counts:?}");
    let version: i64 = rusqlite::Connection::open(data.join("sluice.db"))
        .expect("open")
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert!(version > 4, "the source was migrated: {version}");
    let url = target.url();
    on_own_thread(move || {
        let copied = Store::open_postgres(&url, MasterKey::parse(&key_text).unwrap())
            .expect("open the copied store");
        let view = copied.view();
        let cv = view.companies.values().next().expect("the company");
        let ds = &cv.datasources[&sluice::model::DatasourceId("ds_old".into())];
        assert_eq!(
            ds.connection.tls.as_ref().map(|t| t.mode),
            Some(sluice::datasource::tls::TlsMode::Disable),
            "migrated to an explicit disable before the copy"
        );
        assert_eq!(ds.generation, 7);
        match &ds.spec.connection {
            sluice::datasource::Connection::Network { password, .. } => {
                assert_eq!(
                    password.expose(),
                    "old-pw",
                    "the sealed password still opens"
                )
            }
            other => panic!("{other:?}"),
        }
    });
}
