//! Helpers shared by the audit tests: a fresh store file with the audit schema, and records.

use super::*;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// A fresh `sluice.db` in its own temporary directory, in WAL mode like the store's, with the
/// audit schema applied. Keep the `TempDir` alive for the test's duration.
pub fn fresh_db() -> (TempDir, PathBuf, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.db");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(SCHEMA_SQL).unwrap();
    conn.execute_batch(INDEXES_SQL).unwrap();
    conn.execute_batch(STAGING_SQL).unwrap();
    (dir, path, conn)
}

/// A minimal allowed record of `action` in `company`.
pub fn sample(company: &CompanyId, action: &str) -> AuditRecord {
    AuditRecord::new(
        company.clone(),
        Some(UserId::generate()),
        action,
        Outcome::Allowed,
    )
}

/// A record with every optional field set.
pub fn full_record(company: &CompanyId) -> AuditRecord {
    AuditRecord {
        app_id: Some(AppId::generate()),
        datasource_id: Some(DatasourceId::generate()),
        target_id: Some("usr_target".into()),
        outcome: Outcome::Failed,
        code: Some("query_failed".into()),
        sql: Some("SELECT * FROM t WHERE x = 'é'".into()),
        row_count: Some(42),
        duration_ms: Some(12.625),
        request_id: Some("req-1".into()),
        detail: Some(serde_json::json!({"message": "relation does not exist", "n": [1, 2]})),
        ..sample(company, "query")
    }
}

/// Inserts records in one committed transaction.
pub fn insert_all(conn: &mut Connection, recs: &[AuditRecord]) {
    let tx = conn.transaction().unwrap();
    for r in recs {
        insert(&tx, r).unwrap();
    }
    tx.commit().unwrap();
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL, and one suite over both databases

pub const PG_START_HINT: &str = "PostgreSQL is not reachable. Start it with:\n  \
    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
    or point SLUICE_TEST_PG_URL at a server (default postgres://postgres@127.0.0.1:5432/postgres).";

fn pg_admin_url() -> String {
    std::env::var("SLUICE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Runs `f` on a thread of its own: the sync PostgreSQL client runs a runtime of its own, which
/// cannot start on a thread that drives a tokio runtime (an async test's).
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// A throwaway database `sluice_audit_<uuid>` on the local PostgreSQL with [`PG_SCHEMA_SQL`]
/// applied; dropped (with any connection still open to it) when this is dropped.
pub struct PgDb {
    pub name: String,
    config: postgres::Config,
}

impl PgDb {
    pub fn create() -> PgDb {
        off_runtime(|| {
            let admin_url = pg_admin_url();
            let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls)
                .unwrap_or_else(|e| panic!("{PG_START_HINT}\n(connecting to {admin_url}: {e})"));
            let name = format!("sluice_audit_{}", uuid::Uuid::new_v4().simple());
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .expect("create the test database");
            let mut config: postgres::Config = admin_url.parse().expect("SLUICE_TEST_PG_URL");
            config.dbname(&name);
            let db = PgDb { name, config };
            db.client()
                .batch_execute(PG_SCHEMA_SQL)
                .expect("apply the audit schema");
            db
        })
    }

    /// A new connection to the database (call it off any runtime, see [`off_runtime`]).
    pub fn client(&self) -> postgres::Client {
        self.config
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("{PG_START_HINT}\n(connecting to {}: {e})", self.name))
    }

    /// What [`AuditWriter::start_postgres`] is given: a new connection each call.
    pub fn connector(&self) -> AuditConnect {
        let config = self.config.clone();
        Box::new(move || config.connect(postgres::NoTls).map_err(|e| e.to_string()))
    }

    /// Terminates every connection to the database but the caller's.
    pub fn kill_connections(&self) -> u64 {
        off_runtime(|| {
            let n = self
                .client()
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&self.name],
                )
                .expect("terminate the connections")
                .len();
            n as u64
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        off_runtime(move || {
            if let Ok(mut admin) = postgres::Client::connect(&pg_admin_url(), postgres::NoTls) {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        });
    }
}

/// Which database a test of the suite runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh audit database of either kind, reached the way the gateway reaches it. Every call
/// opens a new connection (so it sees only what was committed) and may run inside an async
/// test.
pub enum TestDb {
    Sqlite { _dir: TempDir, path: PathBuf },
    Postgres(Box<PgDb>),
}

impl TestDb {
    pub fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let (dir, path, _conn) = fresh_db();
                TestDb::Sqlite { _dir: dir, path }
            }
            Backend::Postgres => TestDb::Postgres(Box::new(PgDb::create())),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            TestDb::Sqlite { .. } => Backend::Sqlite,
            TestDb::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite file (panics on PostgreSQL).
    pub fn path(&self) -> &Path {
        match self {
            TestDb::Sqlite { path, .. } => path,
            TestDb::Postgres(_) => panic!("not a SQLite test database"),
        }
    }

    /// Starts a writer on this database.
    pub fn start(&self, settings: AuditSettings) -> Result<AuditWriter, AuditError> {
        match self {
            TestDb::Sqlite { path, .. } => AuditWriter::start(path, settings),
            TestDb::Postgres(db) => AuditWriter::start_postgres(db.connector(), settings),
        }
    }

    /// Inserts records in one committed transaction, as the store's changes do.
    pub fn insert_all(&self, recs: &[AuditRecord]) {
        match self {
            TestDb::Sqlite { path, .. } => insert_all(&mut Connection::open(path).unwrap(), recs),
            TestDb::Postgres(db) => off_runtime(|| {
                let mut client = db.client();
                let mut tx = client.transaction().unwrap();
                for r in recs {
                    insert_pg(&mut tx, r).unwrap();
                }
                tx.commit().unwrap();
            }),
        }
    }

    pub fn query(&self, filter: &AuditFilter) -> Result<AuditPage, AuditError> {
        match self {
            TestDb::Sqlite { path, .. } => query(&Connection::open(path).unwrap(), filter),
            TestDb::Postgres(db) => off_runtime(|| query_pg(&mut db.client(), filter)),
        }
    }

    pub fn count(&self, company: &CompanyId) -> u64 {
        match self {
            TestDb::Sqlite { path, .. } => count(&Connection::open(path).unwrap(), company),
            TestDb::Postgres(db) => off_runtime(|| count_pg(&mut db.client(), company)),
        }
        .unwrap()
    }

    /// Runs SQL written for both databases.
    pub fn execute(&self, sql: &str) {
        match self {
            TestDb::Sqlite { path, .. } => Connection::open(path).unwrap().execute_batch(sql),
            TestDb::Postgres(db) => {
                return off_runtime(|| db.client().batch_execute(sql).unwrap());
            }
        }
        .unwrap()
    }

    /// Records in the log (and, on SQLite, in the staging table).
    pub fn rows(&self) -> i64 {
        let sql = format!(
            "SELECT (SELECT count(*) FROM {TABLE}) + {}",
            match self {
                TestDb::Sqlite { .. } => format!("(SELECT count(*) FROM {STAGING_TABLE})"),
                TestDb::Postgres(_) => "0".to_owned(),
            }
        );
        match self {
            TestDb::Sqlite { path, .. } => Connection::open(path)
                .unwrap()
                .query_row(&sql, [], |r| r.get(0))
                .unwrap(),
            TestDb::Postgres(db) => {
                off_runtime(|| db.client().query_one(sql.as_str(), &[]).unwrap().get(0))
            }
        }
    }
}

/// Defines one test module per test body with a test per database, `sqlite` and `postgres`,
/// each handing the body a fresh [`TestDb`] (`async` bodies run on a two-thread runtime).
macro_rules! on_both_databases {
    ($(#[$meta:meta])* fn $name:ident($db:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run($db: TestDb) $body
            #[test]
            fn sqlite() {
                run(TestDb::new(Backend::Sqlite))
            }
            #[test]
            fn postgres() {
                run(TestDb::new(Backend::Postgres))
            }
        }
    };
    ($(#[$meta:meta])* async fn $name:ident($db:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($db: TestDb) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run(TestDb::new(Backend::Sqlite)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run(TestDb::new(Backend::Postgres)).await
            }
        }
    };
}
pub(crate) use on_both_databases;
