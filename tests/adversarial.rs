//! The adversarial corpus (`tests/adversarial/{postgres,mysql,sqlite}.toml`, and the
//! `*-resolution.toml` files about what the server does behind a name) run end to end: every case
//! is sent over HTTP to an in-process gateway in front of the acme fixture on a real server
//! (through the analyst service account, or another account a case names), and must end exactly
//! as the corpus says — answered, or refused with the expected status and error code. Failures
//! are collected and printed together.
//!
//! Besides acme, each kind gets the objects of `tests/adversarial/<kind>-fixture.sql`: a second
//! PostgreSQL service account whose own search path is not `public`, inherited and partitioned
//! tables, views over denied tables, FTS and R*Tree tables, MERGE tables, triggers, rules and
//! cascades, and user functions, casts, operators and overloads that note in a marker table that
//! they ran.
//!
//! Every datasource has a pool of one connection, so the cases of one scope run one after the
//! other on the same pooled session: an earlier case that flips the session (read-write, search
//! path, role, timeouts, locks) is followed by cases that would profit from it.
//!
//! Around each run the database is fingerprinted as its admin (a checksum of every fixture table,
//! counts of tables, functions, roles, large objects and sequence values, the files an
//! `INTO OUTFILE` or `ATTACH` could create) and a `write_log` table is fed by triggers on every
//! fixture table: after the run the fingerprint must be unchanged and the log empty. No corpus
//! case may expect a statement on a read_write scope to be answered, so the whole run must write
//! nothing at all — across every request on every pooled connection, not only within one
//! statement.
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

/// The result cap of the corpus gateway: small, so a single huge value is refused rather than
/// streamed (and a gateway that buffered it whole would show in the process's memory).
const CORPUS_MAX_RESULT_BYTES: u64 = 32 * 1024 * 1024;

/// A case that takes longer than this is reported on stderr (the run must stay short).
const SLOW_CASE: std::time::Duration = std::time::Duration::from_secs(2);

/// The corpus files of one kind, run in this order.
const CORPUS_FILES: [&str; 2] = ["", "-resolution"];

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
    #[serde(default)]
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
    /// The service account the datasource logs in as (PostgreSQL: `analyst`, `lib`, `trap`;
    /// MySQL: `analyst`). Default `analyst`.
    #[serde(default)]
    account: Option<String>,
    /// The scope's `default_schema` (PostgreSQL).
    #[serde(default)]
    default_schema: Option<String>,
    /// The scope's trusted `extensions` (PostgreSQL).
    #[serde(default)]
    extensions: Vec<String>,
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

    fn account(&self) -> &str {
        self.account.as_deref().unwrap_or("analyst")
    }

    /// The datasource policy this case needs; cases with equal policies (and accounts) share a
    /// datasource, and so its one pooled connection.
    fn policy(&self) -> Value {
        let mut policy = json!({
            "access": self.access(),
            "allowed_tables": self.allowed_tables,
            "denied_tables": self.denied_tables,
            "extra_functions": self.extra_functions,
            "timeout_ms": self.timeout_ms.unwrap_or(CORPUS_TIMEOUT_MS),
        });
        if let Some(schema) = &self.default_schema {
            policy["default_schema"] = json!(schema);
        }
        if !self.extensions.is_empty() {
            policy["extensions"] = json!(self.extensions);
        }
        policy
    }

    /// What decides which datasource (and pooled connection) the case runs on.
    fn datasource_key(&self) -> String {
        format!("{} {}", self.account(), self.policy())
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

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/adversarial")
}

/// Every case of one kind, in file order.
fn load(kind: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for suffix in CORPUS_FILES {
        let path = corpus_dir().join(format!("{kind}{suffix}.toml"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let corpus: Corpus = toml::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        cases.extend(corpus.case);
    }
    cases
}

/// The fixture SQL of one kind (`<kind>-fixture.sql`).
fn fixture_sql(kind: &str) -> String {
    let path = corpus_dir().join(format!("{kind}-fixture.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
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
const SQLITE_THREATS: &[&str] = &["attach", "pragma", "variable", "explain"];

/// The classes of "the database resolves names its own way" (THREATS.md, issue 14) each kind
/// must exercise, with many variants each.
const POSTGRES_RESOLUTION: &[&str] = &[
    "search-path",
    "inheritance",
    "view",
    "hidden-code",
    "extension",
    "session-state",
    "catalogue-side-channel",
    "in-process-resource",
    "write-side-effect",
    "false-positive",
];
const MYSQL_RESOLUTION: &[&str] = &[
    "view",
    "hidden-code",
    "session-state",
    "catalogue-side-channel",
    "in-process-resource",
    "write-side-effect",
    "false-positive",
];
const SQLITE_RESOLUTION: &[&str] = &[
    "shadow-table",
    "view",
    "catalogue-side-channel",
    "in-process-resource",
    "write-side-effect",
    "false-positive",
];
/// Variants each resolution class needs at least.
const RESOLUTION_VARIANTS: usize = 5;

/// The service accounts a case may name, per kind.
fn accounts_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "postgres" => &["analyst", "lib", "trap"],
        "mysql" => &["analyst"],
        _ => &["analyst"],
    }
}

#[test]
fn the_corpus_is_well_formed_large_and_covers_every_threat_class() {
    let mut total = 0;
    for (kind, specific, resolution) in [
        ("postgres", POSTGRES_THREATS, POSTGRES_RESOLUTION),
        ("mysql", MYSQL_THREATS, MYSQL_RESOLUTION),
        ("sqlite", SQLITE_THREATS, SQLITE_RESOLUTION),
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
            assert!(
                accounts_of(kind).contains(&c.account()),
                "{kind}: unknown account {:?} for {}",
                c.account,
                c.sql
            );
            assert!(
                kind == "postgres" || (c.default_schema.is_none() && c.extensions.is_empty()),
                "{kind}: default_schema and extensions are PostgreSQL scope fields: {}",
                c.sql
            );
            let key = (c.expanded_sql(), c.datasource_key());
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
        for threat in resolution {
            let n = seen.get(threat).copied().unwrap_or(0);
            assert!(
                n >= RESOLUTION_VARIANTS,
                "{kind}: threat {threat} has {n} cases, want at least {RESOLUTION_VARIANTS}"
            );
        }
        let known: BTreeSet<&str> = COMMON_THREATS
            .iter()
            .chain(specific)
            .chain(resolution)
            .copied()
            .collect();
        for threat in seen.keys() {
            assert!(
                known.contains(threat),
                "{kind}: unknown threat class {threat}"
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

/// Makes a datasource create body from a name, a service account (see [`Case::account`]) and a
/// policy.
type DatasourceBody<'a> = dyn Fn(&str, &str, Value) -> Value + 'a;

/// The gateway side of one kind's run: one app (with one datasource, whose pool holds one
/// connection) per distinct account and scope, created on first use.
struct Runner<'a> {
    gw: &'a Gateway,
    kind: &'static str,
    body: Box<DatasourceBody<'a>>,
    apps: HashMap<String, String>,
}

impl Runner<'_> {
    async fn app_for(&mut self, case: &Case) -> String {
        let key = case.datasource_key();
        if let Some(app) = self.apps.get(&key) {
            return app.clone();
        }
        let name = format!("adv-{}-{}", self.kind, self.apps.len());
        let mut body = (self.body)(&name, case.account(), case.policy());
        // One connection: every case of this scope runs on the same pooled session, in order.
        body["pool"] = json!({"max_size": 1});
        let ds = self.gw.datasource(&self.gw.owner, body).await;
        let app = self.gw.app(&self.gw.owner, &name, &[&ds]).await;
        self.apps.insert(key, app.clone());
        app
    }

    /// Runs every case; returns one line per case that did not end as expected.
    async fn run(&mut self, cases: &[Case]) -> Vec<String> {
        let mut failures = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            let app = self.app_for(c).await;
            let sql = c.expanded_sql();
            let mut body = json!({ "sql": sql });
            if !c.params.is_empty() {
                body["params"] = Value::Array(c.params.clone());
            }
            let started = std::time::Instant::now();
            let (status, v) = self.gw.query(&self.gw.owner, &app, body).await;
            let took = started.elapsed();
            if took > SLOW_CASE {
                // Shown with --nocapture: what makes a run long.
                eprintln!("slow case: {} #{i} took {took:?}", self.kind);
            }
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
                } else if status == 200 {
                    // What came back, and when: tells a statement cut short apart from one
                    // that ran its course.
                    format!(
                        "rows {} elapsed_ms {} after {took:?}",
                        v["rows"], v["elapsed_ms"]
                    )
                } else {
                    v["error"]["message"].as_str().unwrap_or("").to_owned()
                };
                failures.push(format!(
                    "  {} #{i} [{}] ({}) {shown}\n      want {} ({want_status}), got {got} ({status}) {message}\n      why: {}",
                    self.kind,
                    c.threat,
                    c.account(),
                    c.expect,
                    c.why
                ));
            }
        }
        failures
    }
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

/// The service accounts of the PostgreSQL run, as (user, password): the acme analyst, `lib`
/// (own search path `lib`), `trap` (own search path `trap, pg_catalog`); and `power`, a role
/// `lib` may switch to.
struct PgAccounts {
    analyst: (String, String),
    lib: (String, String),
    trap: (String, String),
    power: (String, String),
}

impl PgAccounts {
    fn get(&self, account: &str) -> &(String, String) {
        match account {
            "lib" => &self.lib,
            "trap" => &self.trap,
            _ => &self.analyst,
        }
    }

    fn names(&self) -> [&str; 4] {
        [&self.analyst.0, &self.lib.0, &self.trap.0, &self.power.0]
    }
}

/// The objects of `postgres-fixture.sql`, with the accounts they are granted to.
async fn pg_install_resolution_fixture(admin: &tokio_postgres::Client, accounts: &PgAccounts) {
    let sql = fixture_sql("postgres")
        .replace("{{analyst}}", &format!("\"{}\"", accounts.analyst.0))
        .replace("{{lib}}", &format!("\"{}\"", accounts.lib.0))
        .replace("{{trap}}", &format!("\"{}\"", accounts.trap.0))
        .replace("{{power}}", &accounts.power.0);
    admin
        .batch_execute(&sql)
        .await
        .unwrap_or_else(|e| panic!("postgres resolution fixture: {e:?}"));
}

/// The schemas whose tables the fingerprint hashes row by row.
const PG_FINGERPRINT_SCHEMAS: &str = "ARRAY['public', 'lib', 'trap', 'ext', 'kv']";

/// The database as its admin sees it; `roles` separately (cluster-wide, shared with other tests).
/// Every table and materialized view of the fixture schemas is hashed (its own rows: `ONLY`),
/// through `row_to_json` so no user-defined cast of a row type runs; every name is qualified and
/// the admin session's search path is `pg_catalog`, so nothing planted runs here either.
async fn pg_fingerprint(
    admin: &tokio_postgres::Client,
    accounts: &[&str],
) -> (BTreeMap<String, String>, BTreeSet<String>) {
    admin
        .batch_execute("SET search_path = pg_catalog")
        .await
        .expect("admin search path");
    let mut f = BTreeMap::new();
    let relations: Vec<(String, String)> = admin
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'm') AND n.nspname = ANY ({PG_FINGERPRINT_SCHEMAS}) \
                 ORDER BY 1, 2"
            ),
            &[],
        )
        .await
        .expect("fixture tables")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (schema, table) in relations {
        let sql = format!(
            "SELECT md5(count(*)::text || ':' || coalesce(string_agg(row_to_json(t)::text, ',' \
             ORDER BY row_to_json(t)::text), '')) FROM ONLY \"{schema}\".\"{table}\" t"
        );
        // The acme tables keep their short keys (`table write_log`).
        let key = if schema == "public" {
            format!("table {table}")
        } else {
            format!("table {schema}.{table}")
        };
        f.insert(key, pg_text(admin, &sql).await);
    }
    let grants = format!(
        "SELECT md5(string_agg(relnamespace::regnamespace::text || '.' || relname || coalesce(relacl::text, ''), ',' ORDER BY 1)) \
         FROM pg_class WHERE relnamespace::regnamespace::text = ANY ({PG_FINGERPRINT_SCHEMAS})"
    );
    for (key, sql) in [
        ("relations", "SELECT count(*)::text FROM pg_class"),
        ("functions", "SELECT count(*)::text FROM pg_proc"),
        ("schemas", "SELECT count(*)::text FROM pg_namespace"),
        ("types", "SELECT count(*)::text FROM pg_type"),
        ("triggers", "SELECT count(*)::text FROM pg_trigger"),
        ("casts", "SELECT count(*)::text FROM pg_cast"),
        ("operators", "SELECT count(*)::text FROM pg_operator"),
        ("rules", "SELECT count(*)::text FROM pg_rewrite"),
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
        ("table grants", grants.as_str()),
        (
            "database settings",
            "SELECT string_agg(array_to_string(setconfig, ','), ';') FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database()",
        ),
        // A session-level lock a function took must not outlive its request on a pooled
        // connection.
        (
            "advisory locks",
            "SELECT count(*)::text FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' AND d.datname = current_database()",
        ),
    ] {
        f.insert(key.to_owned(), pg_text(admin, sql).await);
    }
    for account in accounts {
        let row = admin
            .query_one(
                "SELECT coalesce(array_to_string(rolconfig, ','), '') || '|' || rolsuper::text || rolcreaterole::text || rolcreatedb::text FROM pg_roles WHERE rolname = $1",
                &[account],
            )
            .await
            .expect("account role");
        f.insert(format!("role {account}"), row.get(0));
    }
    let roles = admin
        .query("SELECT rolname::text FROM pg_roles", &[])
        .await
        .expect("roles")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    (f, roles)
}

/// Fails the test with every problem of a run at once: cases that ended otherwise than
/// expected, and what changed in the database or on disk.
fn conclude(kind: &str, cases: usize, failures: &[String], problems: &[String]) {
    let mut text = String::new();
    if !failures.is_empty() {
        text.push_str(&format!(
            "{} of {cases} {kind} corpus cases did not end as expected:\n{}\n",
            failures.len(),
            failures.join("\n")
        ));
    }
    for p in problems {
        text.push_str(p);
        text.push('\n');
    }
    assert!(text.is_empty(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_corpus_ends_as_expected_and_writes_nothing() {
    let cases = load("postgres");
    let acme: PgAcme = pg_acme().await;
    let admin = acme.db.admin_client().await;
    pg_install_write_log(&admin).await;
    let accounts = PgAccounts {
        analyst: acme.accounts.analyst.clone(),
        lib: (
            acme.db.create_role("qa_lib", "lib_pw").await,
            "lib_pw".into(),
        ),
        trap: (
            acme.db.create_role("qa_trap", "trap_pw").await,
            "trap_pw".into(),
        ),
        power: (
            acme.db.create_role("qa_power", "power_pw").await,
            "power_pw".into(),
        ),
    };
    pg_install_resolution_fixture(&admin, &accounts).await;
    let names = accounts.names();
    let dirs = vec![PathBuf::from("/tmp"), std::env::current_dir().expect("cwd")];
    removal_of_stale_probe_files(&dirs);

    let gw = Gateway::start_with(|c| c.limits.max_result_bytes = CORPUS_MAX_RESULT_BYTES).await;
    gw.set_integration(&gw.owner, "postgres", true).await;
    let (before, roles_before) = pg_fingerprint(&admin, &names).await;

    let mut runner = Runner {
        gw: &gw,
        kind: "postgres",
        body: Box::new(|name, account, policy| {
            acme.datasource(name, accounts.get(account), policy)
        }),
        apps: HashMap::new(),
    };
    let failures = runner.run(&cases).await;
    drop(runner);

    let (after, roles_after) = pg_fingerprint(&admin, &names).await;
    let marker = admin
        .query(
            "SELECT note FROM public.adv_marker ORDER BY id LIMIT 20",
            &[],
        )
        .await
        .expect("marker")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>();
    let changed = differences(&before, &after);
    let new_roles = foreign_new_names(&roles_before, &roles_after);
    let files = probe_files(&dirs);
    let mut problems = Vec::new();
    if !changed.is_empty() {
        problems.push(format!(
            "the corpus run changed the database:\n{}\n  marker notes: {marker:?}",
            changed.join("\n")
        ));
    }
    if !new_roles.is_empty() {
        problems.push(format!("new roles: {new_roles:?}"));
    }
    if !files.is_empty() {
        problems.push(format!("files written: {files:?}"));
    }
    conclude("postgres", cases.len(), &failures, &problems);

    // The proof can fail: one admin write shows in the log and in the fingerprint, and a note in
    // the marker table shows too.
    admin
        .batch_execute(
            "DELETE FROM public.bump_log WHERE false; \
             INSERT INTO public.adv_marker (note) VALUES ('admin')",
        )
        .await
        .expect("admin write");
    let (written, _) = pg_fingerprint(&admin, &names).await;
    assert_ne!(
        written["table write_log"], after["table write_log"],
        "the trigger log missed a write"
    );
    assert_ne!(
        written["table adv_marker"], after["table adv_marker"],
        "the fingerprint missed a marker"
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

/// The objects of `mysql-fixture.sql` (one statement per `//` line), the statements after
/// `-- @grants` once per host of the analyst account.
async fn mysql_install_resolution_fixture(admin: &mut mysql_async::Conn, db: &str, analyst: &str) {
    use mysql_async::prelude::Queryable;
    let text = fixture_sql("mysql").replace("{{database}}", &format!("`{db}`"));
    let mut grants = false;
    for chunk in text.split("\n//\n") {
        grants |= chunk.lines().any(|l| l.trim() == "-- @grants");
        let statement: String = chunk
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let statement = statement.trim();
        if statement.is_empty() {
            continue;
        }
        let hosts: &[&str] = if grants { &["%", "localhost"] } else { &[""] };
        for host in hosts {
            let sql = statement.replace("{{analyst}}", &format!("'{analyst}'@'{host}'"));
            admin
                .query_drop(&sql)
                .await
                .unwrap_or_else(|e| panic!("mysql resolution fixture: {e}\n{sql}"));
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
    // Every base table (acme, write_log and the resolution fixture's); a MERGE table's rows are
    // its members'.
    let tables: Vec<String> = admin
        .exec(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? \
             AND table_type = 'BASE TABLE' AND engine <> 'MRG_MYISAM' ORDER BY table_name",
            (db,),
        )
        .await
        .expect("tables");
    let quoted: Vec<String> = tables.iter().map(|t| format!("`{t}`")).collect();
    let sums: Vec<(String, Option<i64>)> = admin
        .query(format!("CHECKSUM TABLE {} EXTENDED", quoted.join(", ")))
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
    // A named lock a stored function took must not outlive its request on a pooled connection.
    let lock: Option<Option<u64>> = admin
        .query_first("SELECT IS_USED_LOCK('sluice_adv_lock')")
        .await
        .expect("named lock");
    f.insert("named lock".into(), format!("{lock:?}"));
    for host in ["%", "localhost"] {
        let mut grants: Vec<String> = admin
            .query(format!("SHOW GRANTS FOR '{analyst}'@'{host}'"))
            .await
            .expect("grants");
        // The server lists them in an order other sessions' grant changes can shuffle: compare
        // the set.
        grants.sort();
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
    mysql_install_resolution_fixture(&mut admin, &db, &analyst.0).await;
    let dirs = mysql_outfile_dirs(&mut admin, &db).await;
    removal_of_stale_probe_files(&dirs);

    let gw = Gateway::start_with(|c| c.limits.max_result_bytes = CORPUS_MAX_RESULT_BYTES).await;
    gw.set_integration(&gw.owner, "mysql", true).await;
    let (before, users_before) = mysql_fingerprint(&mut admin, &db, &analyst.0).await;

    let mut runner = Runner {
        gw: &gw,
        kind: "mysql",
        body: Box::new(|name, _account, policy| acme.datasource(name, &analyst, policy)),
        apps: HashMap::new(),
    };
    let failures = runner.run(&cases).await;
    drop(runner);

    let (after, users_after) = mysql_fingerprint(&mut admin, &db, &analyst.0).await;
    let marker: Vec<String> = admin
        .query("SELECT note FROM adv_marker ORDER BY id LIMIT 20")
        .await
        .expect("marker");
    let changed = differences(&before, &after);
    let new_users = foreign_new_names(&users_before, &users_after);
    let files = probe_files(&dirs);
    let mut problems = Vec::new();
    if !changed.is_empty() {
        problems.push(format!(
            "the corpus run changed the database:\n{}\n  marker notes: {marker:?}",
            changed.join("\n")
        ));
    }
    if !new_users.is_empty() {
        problems.push(format!("new users: {new_users:?}"));
    }
    if !files.is_empty() {
        problems.push(format!("files written: {files:?}"));
    }
    if after["write_log rows"] != "Some(0)" {
        problems.push(format!("write_log holds rows: {}", after["write_log rows"]));
    }
    conclude("mysql", cases.len(), &failures, &problems);

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
    admin
        .query_drop("INSERT INTO adv_marker (note) VALUES ('admin')")
        .await
        .expect("admin marker");
    let (marked, _) = mysql_fingerprint(&mut admin, &db, &analyst.0).await;
    assert_ne!(
        marked["table adv_marker"], written["table adv_marker"],
        "the fingerprint missed a marker"
    );
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

/// The objects of `sqlite-fixture.sql`.
fn sqlite_install_resolution_fixture(path: &str) {
    let conn = rusqlite::Connection::open(path).expect("open acme");
    conn.execute_batch(&fixture_sql("sqlite"))
        .expect("sqlite resolution fixture");
}

/// A hash of every row of every table (in rowid order, or by every column for a WITHOUT ROWID
/// table) plus the schema and header counters.
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
        // WITHOUT ROWID tables (FTS5's _config and _idx) are ordered by every column instead.
        let order = if conn
            .prepare(&format!("SELECT rowid FROM \"{name}\" LIMIT 0"))
            .is_ok()
        {
            "rowid".to_owned()
        } else {
            let n = conn
                .prepare(&format!("SELECT * FROM \"{name}\""))
                .expect("select")
                .column_count();
            (1..=n)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{name}\" ORDER BY {order}"))
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
    let gw = Gateway::start_with(|c| c.limits.max_result_bytes = CORPUS_MAX_RESULT_BYTES).await;
    gw.set_integration(&gw.owner, "sqlite", true).await;
    let path = sqlite_acme(&gw, "acme.sqlite");
    sqlite_install_write_log(&path);
    sqlite_install_resolution_fixture(&path);
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
        body: Box::new(|name, _account, policy| sqlite_datasource(name, &path, policy)),
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
    let mut problems = Vec::new();
    if !changed.is_empty() {
        problems.push(format!(
            "the corpus run changed the database:\n{}",
            changed.join("\n")
        ));
    }
    if !files.is_empty() {
        problems.push(format!("files written: {files:?}"));
    }
    if !files_after.is_empty() {
        problems.push(format!("new files next to the database: {files_after:?}"));
    }
    conclude("sqlite", cases.len(), &failures, &problems);

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
