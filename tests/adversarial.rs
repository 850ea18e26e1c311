//! The adversarial corpus (`tests/adversarial/{postgres,mysql,sqlite}.toml`) run end to end: every
//! case is sent over HTTP to an in-process gateway in front of the acme fixture on a real server
//! (through the analyst service account), and must end exactly as the corpus says — answered, or
//! refused with the expected status and error code. Failures are collected and printed together.
//!
//! Around each run the database is fingerprinted as its admin (a checksum of every fixture table,
//! counts of tables, functions, roles, large objects and sequence values, the files an
//! `INTO OUTFILE` or `ATTACH` could create) and a `write_log` table is fed by triggers on every
//! fixture table: after the run the fingerprint must be unchanged and the log empty. No corpus
//! case may expect a statement on a read_write scope to be answered, so the whole run must write
//! nothing at all.
mod support;

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use support::gateway::{
    Gateway, MysqlAcme, PgAcme, mysql_acme, pg_acme, sqlite_acme, sqlite_datasource,
};

/// The statement timeout of every corpus datasource unless a case sets its own: short, so a
/// statement that wrongly gets through cannot stall the run for the default 30 s.
const CORPUS_TIMEOUT_MS: u64 = 5_000;

/// Files created by the corpus's `INTO OUTFILE` / `ATTACH` attempts all carry this in their name.
const PROBE_FILE_MARK: &str = "sluice_adv";

/// Every expected outcome and the HTTP status it comes with.
const OUTCOMES: [(&str, u16); 7] = [
    ("allowed", 200),
    ("sql_parse_error", 400),
    ("statement_not_allowed", 403),
    ("table_not_allowed", 403),
    ("function_not_allowed", 403),
    ("query_failed", 422),
    ("query_timeout", 504),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    case: Vec<Case>,
}

/// One corpus entry: the statement, the datasource scope it runs under, what must happen, and why.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// The THREATS.md class the case exercises (`allowed` for legitimate queries).
    threat: String,
    /// The statement. `{repeat:N:text}` stands for `text` written N times (parser-DoS cases).
    sql: String,
    /// `allowed` or the error code.
    expect: String,
    why: String,
    #[serde(default)]
    access: Option<String>,
    #[serde(default)]
    allowed_tables: Option<Vec<String>>,
    #[serde(default)]
    denied_tables: Vec<String>,
    #[serde(default)]
    extra_functions: Vec<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    params: Vec<Value>,
    /// For answered cases: the rows the server must return (proves parser and server agree on
    /// what the statement means, e.g. where a comment ends).
    #[serde(default)]
    rows: Option<Value>,
}

impl Case {
    fn access(&self) -> &str {
        self.access.as_deref().unwrap_or("read_only")
    }

    /// The datasource policy this case needs; cases with equal policies share a datasource.
    fn policy(&self) -> Value {
        json!({
            "access": self.access(),
            "allowed_tables": self.allowed_tables,
            "denied_tables": self.denied_tables,
            "extra_functions": self.extra_functions,
            "timeout_ms": self.timeout_ms.unwrap_or(CORPUS_TIMEOUT_MS),
        })
    }

    fn expanded_sql(&self) -> String {
        expand(&self.sql)
    }
}

/// Replaces every `{repeat:N:text}` by `text` written N times (`text` may not contain `}`).
fn expand(sql: &str) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(start) = rest.find("{repeat:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{repeat:".len()..];
        let end = after.find('}').expect("unclosed {repeat:…}");
        let (n, text) = after[..end].split_once(':').expect("{repeat:N:text}");
        let n: usize = n.parse().expect("repeat count");
        out.push_str(&text.repeat(n));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn corpus_path(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/adversarial")
        .join(format!("{kind}.toml"))
}

fn load(kind: &str) -> Vec<Case> {
    let path = corpus_path(kind);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let corpus: Corpus = toml::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    corpus.case
}

fn status_of(expect: &str) -> Option<u16> {
    OUTCOMES
        .iter()
        .find(|(code, _)| *code == expect)
        .map(|(_, s)| *s)
}

// ---------------------------------------------------------------------------------------------
// The corpus itself

/// The THREATS.md classes every kind's corpus must exercise, and those only some kinds have.
const COMMON_THREATS: &[&str] = &[
    "allowed",
    "write",
    "data-modifying-cte",
    "select-into",
    "locking",
    "effect-function",
    "user-function",
    "not-a-query",
    "multi-statement",
    "comment",
    "name-spelling",
    "tables",
    "render",
    "parser-dos",
    "resource",
    "hint",
];
const POSTGRES_THREATS: &[&str] = &["explain", "unicode-identifier", "backslash"];
const MYSQL_THREATS: &[&str] = &[
    "explain",
    "executable-comment",
    "variable",
    "outfile",
    "backslash",
];
const SQLITE_THREATS: &[&str] = &["attach", "pragma", "variable"];

#[test]
fn the_corpus_is_well_formed_large_and_covers_every_threat_class() {
    let mut total = 0;
    for (kind, specific) in [
        ("postgres", POSTGRES_THREATS),
        ("mysql", MYSQL_THREATS),
        ("sqlite", SQLITE_THREATS),
    ] {
        let cases = load(kind);
        total += cases.len();
        let mut seen = BTreeMap::<&str, usize>::new();
        let mut sqls = BTreeSet::new();
        for c in &cases {
            assert!(
                status_of(&c.expect).is_some(),
                "{kind}: unknown outcome {:?} for {}",
                c.expect,
                c.sql
            );
            assert!(
                matches!(c.access(), "read_only" | "read_write"),
                "{kind}: access {:?}",
                c.access
            );
            // The nothing-written proof covers the whole run only if no statement that could
            // write is ever answered.
            assert!(
                !(c.access() == "read_write" && c.expect == "allowed"),
                "{kind}: a read_write case must expect a refusal: {}",
                c.sql
            );
            assert!(!c.why.trim().is_empty(), "{kind}: no why for {}", c.sql);
            let key = (c.expanded_sql(), c.policy().to_string());
            assert!(sqls.insert(key), "{kind}: duplicate case {}", c.sql);
            *seen.entry(c.threat.as_str()).or_default() += 1;
        }
        for threat in COMMON_THREATS.iter().chain(specific) {
            let n = seen.get(threat).copied().unwrap_or(0);
            assert!(
                n >= 2,
                "{kind}: threat {threat} has {n} cases, want several"
            );
        }
        let allowed = cases.iter().filter(|c| c.expect == "allowed").count();
        assert!(
            allowed >= 20,
            "{kind}: only {allowed} allowed cases: safety must not come from refusing everything"
        );
    }
    assert!(total >= 300, "{total} cases, want at least 300");
}

#[test]
fn repeat_expands_in_place() {
    assert_eq!(expand("SELECT {repeat:3:(}1{repeat:3:)}"), "SELECT (((1)))");
    assert_eq!(expand("no template"), "no template");
}

// ---------------------------------------------------------------------------------------------
// Running cases over HTTP

/// Makes a datasource create body from a name and a policy.
type DatasourceBody<'a> = dyn Fn(&str, Value) -> Value + 'a;

/// The gateway side of one kind's run: one app (with one datasource) per distinct scope,
/// created on first use.
struct Runner<'a> {
    gw: &'a Gateway,
    kind: &'static str,
    body: Box<DatasourceBody<'a>>,
    apps: HashMap<String, String>,
}

impl Runner<'_> {
    async fn app_for(&mut self, policy: &Value) -> String {
        let key = policy.to_string();
        if let Some(app) = self.apps.get(&key) {
            return app.clone();
        }
        let name = format!("adv-{}-{}", self.kind, self.apps.len());
        let ds = self
            .gw
            .datasource(&self.gw.owner, (self.body)(&name, policy.clone()))
            .await;
        let app = self.gw.app(&self.gw.owner, &name, &[&ds]).await;
        self.apps.insert(key, app.clone());
        app
    }

    /// Runs every case; returns one line per case that did not end as expected.
    async fn run(&mut self, cases: &[Case]) -> Vec<String> {
        let mut failures = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            let app = self.app_for(&c.policy()).await;
            let sql = c.expanded_sql();
            let mut body = json!({ "sql": sql });
            if !c.params.is_empty() {
                body["params"] = Value::Array(c.params.clone());
            }
            let (status, v) = self.gw.query(&self.gw.owner, &app, body).await;
            let got = if status == 200 {
                "allowed".to_owned()
            } else {
                v["error"]["code"].as_str().unwrap_or("?").to_owned()
            };
            let want_status = status_of(&c.expect).unwrap_or(0);
            let rows_differ = status == 200 && c.rows.as_ref().is_some_and(|r| *r != v["rows"]);
            if got != c.expect || status != want_status || rows_differ {
                let shown: String = c.sql.chars().take(160).collect();
                let message = if rows_differ {
                    format!("rows {} instead of {:?}", v["rows"], c.rows)
                } else {
                    v["error"]["message"].as_str().unwrap_or("").to_owned()
                };
                failures.push(format!(
                    "  {} #{i} [{}] {shown}\n      want {} ({want_status}), got {got} ({status}) {message}\n      why: {}",
                    self.kind, c.threat, c.expect, c.why
                ));
            }
        }
        failures
    }
}

fn report(kind: &str, cases: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {cases} {kind} corpus cases did not end as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What changed between two fingerprints, one line per key.
fn differences(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("  {k}: {:?} -> {:?}", before.get(k), after.get(k)))
        .collect()
}

/// Names (roles, users) that appeared between two listings and are not another test process's
/// throwaway accounts (`prefix_<pid>_<n>_<salt>` from tests/support/db.rs with a pid other than
/// ours): the server is shared with other test binaries, which create and drop their own.
fn foreign_new_names(before: &BTreeSet<String>, after: &BTreeSet<String>) -> Vec<String> {
    let ours = std::process::id().to_string();
    after
        .difference(before)
        .filter(|name| {
            let base = name.split('@').next().unwrap_or(name);
            let parts: Vec<&str> = base.rsplitn(4, '_').collect();
            let throwaway = parts.len() == 4
                && parts[..3]
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            !(throwaway && parts[2] != ours)
        })
        .cloned()
        .collect()
}

/// Every file whose name carries [`PROBE_FILE_MARK`] in the directories a corpus statement could
/// write to (those that exist and are readable).
fn probe_files(dirs: &[PathBuf]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(PROBE_FILE_MARK) {
                found.insert(entry.path().display().to_string());
            }
        }
    }
    found
}

fn removal_of_stale_probe_files(dirs: &[PathBuf]) {
    // A file left by an earlier broken run would hide nothing (the check compares before and
    // after), but would be reported forever; a fresh run starts clean.
    for f in probe_files(dirs) {
        let _ = std::fs::remove_file(f);
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

const PG_TABLES: [&str; 8] = [
    "sales_reps",
    "customers",
    "products",
    "orders",
    "order_items",
    "invoices",
    "financial_summary",
    "bump_log",
];

/// `write_log` and one statement-level trigger per fixture table (statement level, so even a
/// write that touches no row, or a TRUNCATE, is logged). SECURITY DEFINER: whoever writes, the
/// log is written.
async fn pg_install_write_log(admin: &tokio_postgres::Client) {
    let mut sql = String::from(
        "CREATE TABLE write_log (id bigserial PRIMARY KEY, tbl text NOT NULL, op text NOT NULL);
         CREATE FUNCTION write_log_note() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
             SET search_path = public AS $$
             BEGIN INSERT INTO public.write_log (tbl, op) VALUES (TG_TABLE_NAME, TG_OP); RETURN NULL; END $$;
         REVOKE ALL ON FUNCTION write_log_note() FROM PUBLIC;",
    );
    for t in PG_TABLES {
        sql.push_str(&format!(
            "CREATE TRIGGER write_log_{t} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {t}
                 FOR EACH STATEMENT EXECUTE FUNCTION write_log_note();"
        ));
    }
    admin.batch_execute(&sql).await.expect("install write_log");
}

async fn pg_text(admin: &tokio_postgres::Client, sql: &str) -> String {
    let row = admin.query_one(sql, &[]).await.expect(sql);
    row.get::<_, Option<String>>(0).unwrap_or_default()
}

/// The database as its admin sees it; `roles` separately (cluster-wide, shared with other tests).
async fn pg_fingerprint(
    admin: &tokio_postgres::Client,
    analyst: &str,
) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut f = BTreeMap::new();
    for t in PG_TABLES.iter().chain(&["write_log"]) {
        let sql = format!(
            "SELECT md5(count(*)::text || ':' || coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {t} t"
        );
        f.insert(format!("table {t}"), pg_text(admin, &sql).await);
    }
    for (key, sql) in [
        ("relations", "SELECT count(*)::text FROM pg_class"),
        ("functions", "SELECT count(*)::text FROM pg_proc"),
        ("schemas", "SELECT count(*)::text FROM pg_namespace"),
        ("types", "SELECT count(*)::text FROM pg_type"),
        ("triggers", "SELECT count(*)::text FROM pg_trigger"),
        (
            "large objects",
            "SELECT count(*)::text FROM pg_largeobject_metadata",
        ),
        (
            "extensions",
            "SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension",
        ),
        (
            "sequences",
            "SELECT string_agg(schemaname || '.' || sequencename || '=' || coalesce(last_value::text, 'unset'), ',' ORDER BY 1) FROM pg_sequences",
        ),
        (
            "table grants",
            "SELECT md5(string_agg(relname || coalesce(relacl::text, ''), ',' ORDER BY relname)) FROM pg_class WHERE relnamespace = 'public'::regnamespace",
        ),
        (
            "database settings",
            "SELECT string_agg(array_to_string(setconfig, ','), ';') FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database()",
        ),
    ] {
        f.insert(key.to_owned(), pg_text(admin, sql).await);
    }
    let row = admin
        .query_one(
            "SELECT coalesce(array_to_string(rolconfig, ','), '') || '|' || rolsuper::text || rolcreaterole::text || rolcreatedb::text FROM pg_roles WHERE rolname = $1",
            &[&analyst],
        )
        .await
        .expect("analyst role");
    f.insert("analyst role".into(), row.get(0));
    let roles = admin
        .query("SELECT rolname::text FROM pg_roles", &[])
        .await
        .expect("roles")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    (f, roles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_corpus_ends_as_expected_and_writes_nothing() {
    let cases = load("postgres");
    let acme: PgAcme = pg_acme().await;
    let admin = acme.db.admin_client().await;
    pg_install_write_log(&admin).await;
    let analyst = acme.accounts.analyst.clone();
    let dirs = vec![PathBuf::from("/tmp"), std::env::current_dir().expect("cwd")];
    removal_of_stale_probe_files(&dirs);

    let gw = Gateway::start().await;
    gw.set_integration(&gw.owner, "postgres", true).await;
    let (before, roles_before) = pg_fingerprint(&admin, &analyst.0).await;

    let mut runner = Runner {
        gw: &gw,
        kind: "postgres",
        body: Box::new(|name, policy| acme.datasource(name, &analyst, policy)),
        apps: HashMap::new(),
    };
    let failures = runner.run(&cases).await;
    drop(runner);

    let (after, roles_after) = pg_fingerprint(&admin, &analyst.0).await;
    let changed = differences(&before, &after);
    let new_roles = foreign_new_names(&roles_before, &roles_after);
    let files = probe_files(&dirs);
    report("postgres", cases.len(), &failures);
    assert!(
        changed.is_empty(),
        "the corpus run changed the database:\n{}",
        changed.join("\n")
    );
    assert!(new_roles.is_empty(), "new roles: {new_roles:?}");
    assert!(files.is_empty(), "files written: {files:?}");
    assert_eq!(after["table write_log"], before["table write_log"]);

    // The proof can fail: one admin write shows in the log and in the fingerprint.
    admin
        .batch_execute("DELETE FROM bump_log WHERE false")
        .await
        .expect("admin write");
    let (written, _) = pg_fingerprint(&admin, &analyst.0).await;
    assert_ne!(
        written["table write_log"], after["table write_log"],
        "the trigger log missed a write"
    );
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// MySQL / MariaDB

const MYSQL_OPS: [&str; 3] = ["INSERT", "UPDATE", "DELETE"];

/// `write_log` and an AFTER INSERT/UPDATE/DELETE row trigger per fixture table (MySQL has no
/// statement-level triggers; `CHECKSUM TABLE` covers what they cannot see).
async fn mysql_install_write_log(admin: &mut mysql_async::Conn) {
    use mysql_async::prelude::Queryable;
    admin
        .query_drop(
            "CREATE TABLE write_log (id BIGINT AUTO_INCREMENT PRIMARY KEY, tbl VARCHAR(64) NOT NULL, \
             op VARCHAR(16) NOT NULL) ENGINE = InnoDB",
        )
        .await
        .expect("write_log");
    for t in PG_TABLES {
        for op in MYSQL_OPS {
            let sql = format!(
                "CREATE TRIGGER write_log_{t}_{} AFTER {op} ON {t} FOR EACH ROW \
                 INSERT INTO write_log (tbl, op) VALUES ('{t}', '{op}')",
                op.to_lowercase()
            );
            admin.query_drop(&sql).await.expect("trigger");
        }
    }
}

async fn mysql_fingerprint(
    admin: &mut mysql_async::Conn,
    db: &str,
    analyst: &str,
) -> (BTreeMap<String, String>, BTreeSet<String>) {
    use mysql_async::prelude::Queryable;
    let mut f = BTreeMap::new();
    let tables: Vec<&str> = PG_TABLES.iter().copied().chain(["write_log"]).collect();
    let sums: Vec<(String, Option<i64>)> = admin
        .query(format!("CHECKSUM TABLE {} EXTENDED", tables.join(", ")))
        .await
        .expect("checksum");
    for (t, sum) in sums {
        // The server names them `database.table`.
        let t = t.rsplit('.').next().unwrap_or(&t).to_owned();
        f.insert(format!("table {t}"), format!("{sum:?}"));
    }
    let counts = [
        (
            "tables",
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ?",
        ),
        (
            "columns",
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = ?",
        ),
        (
            "routines",
            "SELECT count(*) FROM information_schema.routines WHERE routine_schema = ?",
        ),
        (
            "triggers",
            "SELECT count(*) FROM information_schema.triggers WHERE trigger_schema = ?",
        ),
        (
            "events",
            "SELECT count(*) FROM information_schema.events WHERE event_schema = ?",
        ),
        (
            "views",
            "SELECT count(*) FROM information_schema.views WHERE table_schema = ?",
        ),
    ];
    for (key, sql) in counts {
        let n: Option<i64> = admin.exec_first(sql, (db,)).await.expect(sql);
        f.insert(key.to_owned(), format!("{n:?}"));
    }
    let auto: Vec<(String, Option<u64>)> = admin
        .exec(
            "SELECT table_name, auto_increment FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name",
            (db,),
        )
        .await
        .expect("auto_increment");
    f.insert("auto_increment".into(), format!("{auto:?}"));
    let total: Option<i64> = admin
        .query_first("SELECT count(*) FROM write_log")
        .await
        .expect("write_log");
    f.insert("write_log rows".into(), format!("{total:?}"));
    for host in ["%", "localhost"] {
        let grants: Vec<String> = admin
            .query(format!("SHOW GRANTS FOR '{analyst}'@'{host}'"))
            .await
            .expect("grants");
        f.insert(format!("grants {host}"), grants.join(";"));
    }
    let users: Vec<(String, String)> = admin
        .query("SELECT user, host FROM mysql.user")
        .await
        .expect("users");
    let users = users.into_iter().map(|(u, h)| format!("{u}@{h}")).collect();
    (f, users)
}

/// Where `SELECT … INTO OUTFILE` could put a file: the database's directory for a relative path,
/// `secure_file_priv` when set, and /tmp.
async fn mysql_outfile_dirs(admin: &mut mysql_async::Conn, db: &str) -> Vec<PathBuf> {
    use mysql_async::prelude::Queryable;
    let (datadir, priv_dir): (Option<String>, Option<String>) = admin
        .query_first("SELECT @@datadir, @@secure_file_priv")
        .await
        .expect("server dirs")
        .unwrap_or((None, None));
    let mut dirs = vec![PathBuf::from("/tmp")];
    if let Some(d) = datadir {
        dirs.push(Path::new(&d).join(db));
        dirs.push(PathBuf::from(d));
    }
    if let Some(p) = priv_dir.filter(|p| !p.is_empty()) {
        dirs.push(PathBuf::from(p));
    }
    dirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mysql_corpus_ends_as_expected_and_writes_nothing() {
    use mysql_async::prelude::Queryable;
    let cases = load("mysql");
    let acme: MysqlAcme = mysql_acme().await;
    let mut admin = acme.db.admin_conn().await;
    mysql_install_write_log(&mut admin).await;
    let analyst = acme.accounts.analyst.clone();
    let db = acme.db.name.clone();
    let dirs = mysql_outfile_dirs(&mut admin, &db).await;
    removal_of_stale_probe_files(&dirs);

    let gw = Gateway::start().await;
    gw.set_integration(&gw.owner, "mysql", true).await;
    let (before, users_before) = mysql_fingerprint(&mut admin, &db, &analyst.0).await;

    let mut runner = Runner {
        gw: &gw,
        kind: "mysql",
        body: Box::new(|name, policy| acme.datasource(name, &analyst, policy)),
        apps: HashMap::new(),
    };
    let failures = runner.run(&cases).await;
    drop(runner);

    let (after, users_after) = mysql_fingerprint(&mut admin, &db, &analyst.0).await;
    let changed = differences(&before, &after);
    let new_users = foreign_new_names(&users_before, &users_after);
    let files = probe_files(&dirs);
    report("mysql", cases.len(), &failures);
    assert!(
        changed.is_empty(),
        "the corpus run changed the database:\n{}",
        changed.join("\n")
    );
    assert!(new_users.is_empty(), "new users: {new_users:?}");
    assert!(files.is_empty(), "files written: {files:?}");
    assert_eq!(after["write_log rows"], "Some(0)", "write_log holds rows");

    // The proof can fail: one admin write shows in the log and in the checksums.
    admin
        .query_drop("INSERT INTO bump_log (bumped_by) VALUES ('admin')")
        .await
        .expect("admin write");
    let (written, _) = mysql_fingerprint(&mut admin, &db, &analyst.0).await;
    assert_eq!(
        written["write_log rows"], "Some(1)",
        "the trigger log missed a write"
    );
    assert_ne!(written["table bump_log"], after["table bump_log"]);
    let _ = admin.disconnect().await;
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// SQLite

fn sqlite_install_write_log(path: &str) {
    let conn = rusqlite::Connection::open(path).expect("open acme");
    let mut sql = String::from(
        "CREATE TABLE write_log (id INTEGER PRIMARY KEY, tbl TEXT NOT NULL, op TEXT NOT NULL);",
    );
    for t in PG_TABLES {
        for op in MYSQL_OPS {
            sql.push_str(&format!(
                "CREATE TRIGGER write_log_{t}_{} AFTER {op} ON {t} BEGIN \
                 INSERT INTO write_log (tbl, op) VALUES ('{t}', '{op}'); END;",
                op.to_lowercase()
            ));
        }
    }
    conn.execute_batch(&sql).expect("install write_log");
}

/// A hash of every row of every table (in rowid order) plus the schema and header counters.
fn sqlite_fingerprint(path: &str) -> BTreeMap<String, String> {
    use rusqlite::types::ValueRef;
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open acme");
    let mut f = BTreeMap::new();
    let schema: Vec<(String, String, String)> = conn
        .prepare("SELECT type, name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .expect("schema");
    f.insert(
        "schema".into(),
        hex::encode(Sha256::digest(format!("{schema:?}"))),
    );
    for (_, name, _) in schema
        .iter()
        .filter(|(k, n, _)| k == "table" && !n.starts_with("sqlite_"))
    {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"))
            .expect("select");
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).expect("rows");
        let mut hasher = Sha256::new();
        let mut count = 0u64;
        while let Some(row) = rows.next().expect("row") {
            count += 1;
            for i in 0..columns {
                let cell = match row.get_ref(i).expect("cell") {
                    ValueRef::Null => "N".to_owned(),
                    ValueRef::Integer(v) => format!("I{v}"),
                    ValueRef::Real(v) => format!("R{v:?}"),
                    ValueRef::Text(t) => format!("T{}", String::from_utf8_lossy(t)),
                    ValueRef::Blob(b) => format!("B{}", hex::encode(b)),
                };
                hasher.update(cell.len().to_le_bytes());
                hasher.update(cell.as_bytes());
            }
        }
        f.insert(
            format!("table {name}"),
            format!("{count}:{}", hex::encode(hasher.finalize())),
        );
    }
    for pragma in [
        "user_version",
        "schema_version",
        "application_id",
        "journal_mode",
    ] {
        let v: String = conn
            .query_row(
                &format!("SELECT CAST({pragma} AS TEXT) FROM pragma_{pragma}"),
                [],
                |r| r.get(0),
            )
            .expect(pragma);
        f.insert(format!("pragma {pragma}"), v);
    }
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_corpus_ends_as_expected_and_writes_nothing() {
    let cases = load("sqlite");
    let gw = Gateway::start().await;
    gw.set_integration(&gw.owner, "sqlite", true).await;
    let path = sqlite_acme(&gw, "acme.sqlite");
    sqlite_install_write_log(&path);
    let dirs = vec![
        PathBuf::from("/tmp"),
        std::env::current_dir().expect("cwd"),
        gw.sqlite_dir(),
        gw.data_dir.clone(),
    ];
    removal_of_stale_probe_files(&dirs);
    let files_before: BTreeSet<String> = std::fs::read_dir(gw.sqlite_dir())
        .expect("sqlite dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let before = sqlite_fingerprint(&path);

    let mut runner = Runner {
        gw: &gw,
        kind: "sqlite",
        body: Box::new(|name, policy| sqlite_datasource(name, &path, policy)),
        apps: HashMap::new(),
    };
    let failures = runner.run(&cases).await;
    drop(runner);

    let after = sqlite_fingerprint(&path);
    let changed = differences(&before, &after);
    let files = probe_files(&dirs);
    // -wal / -shm files come and go with the gateway's own connections; anything else is new.
    let files_after: Vec<String> = std::fs::read_dir(gw.sqlite_dir())
        .expect("sqlite dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !files_before.contains(n) && !n.ends_with("-wal") && !n.ends_with("-shm"))
        .collect();
    report("sqlite", cases.len(), &failures);
    assert!(
        changed.is_empty(),
        "the corpus run changed the database:\n{}",
        changed.join("\n")
    );
    assert!(files.is_empty(), "files written: {files:?}");
    assert!(
        files_after.is_empty(),
        "new files next to the database: {files_after:?}"
    );

    // The proof can fail: one write shows in the log and in the fingerprint.
    rusqlite::Connection::open(&path)
        .and_then(|c| c.execute("INSERT INTO bump_log (bumped_by) VALUES ('admin')", []))
        .expect("admin write");
    let written = sqlite_fingerprint(&path);
    assert_ne!(
        written["table write_log"], after["table write_log"],
        "the trigger log missed a write"
    );
    assert_ne!(written["table bump_log"], after["table bump_log"]);
    gw.stop().await;
}
