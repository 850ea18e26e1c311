//! One store test suite, two backends: a fresh SQLite file, or a throwaway PostgreSQL database
//! `sluice_store_<uuid>` on the local server (dropped afterwards). A server that does not answer
//! fails the test, saying how to start it.

use super::*;
use chrono::Utc;
use std::path::PathBuf;
use std::time::Duration;

pub const PG_START_HINT: &str = "PostgreSQL is not reachable. Start it with:\n  \
    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
    or point SLUICE_TEST_PG_URL at a server (default postgres://postgres@127.0.0.1:5432/postgres).";

pub fn pg_admin_url() -> String {
    std::env::var("SLUICE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A connection to the server's administrative database.
pub fn pg_admin() -> ::postgres::Client {
    let url = pg_admin_url();
    ::postgres::Client::connect(&url, ::postgres::NoTls)
        .unwrap_or_else(|e| panic!("{PG_START_HINT}\n(connecting to {url}: {e})"))
}

pub fn key() -> MasterKey {
    MasterKey::from_bytes(&[3u8; 32]).unwrap()
}

/// Creates a company with its owner; their ids.
pub fn company(store: &Store, name: &str) -> (CompanyId, UserId) {
    let now = Utc::now();
    let c = Company {
        id: CompanyId::generate(),
        name: name.into(),
        redact_private_audit: true,
        created_at: now,
    };
    let owner = User {
        id: UserId::generate(),
        company_id: c.id.clone(),
        kind: UserKind::Person,
        email: Some(format!("owner@{name}.test")),
        name: "o".into(),
        role: CompanyRole::Owner,
        created_at: now,
    };
    let (cid, oid) = (c.id.clone(), owner.id.clone());
    store
        .apply(
            &cid,
            vec![Change::CreateCompany(c), Change::CreateUser(owner)],
            vec![],
        )
        .unwrap();
    (cid, oid)
}

/// A throwaway PostgreSQL database, empty; dropped with its connections when this is dropped.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

impl PgDb {
    pub fn create() -> PgDb {
        let name = format!("sluice_store_{}", uuid::Uuid::new_v4().simple());
        pg_admin()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create the test database");
        let admin = pg_admin_url();
        let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
        let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        PgDb {
            url: format!("{server}/{name}{query}"),
            name,
        }
    }

    /// A plain connection to the database (not through the store's `connect`).
    pub fn client(&self) -> ::postgres::Client {
        let mut config: ::postgres::Config = pg_admin_url().parse().unwrap();
        config.dbname(&self.name);
        config
            .connect(::postgres::NoTls)
            .expect("connect to the test database")
    }

    /// Terminates every connection to the database; how many there were.
    pub fn kill_connections(&self) -> usize {
        pg_admin()
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&self.name],
            )
            .expect("terminate the connections")
            .len()
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = ::postgres::Client::connect(&pg_admin_url(), ::postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// Where a test's store lives.
pub enum TestStore {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres(PgDb),
}

impl TestStore {
    pub fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        TestStore::Sqlite { _dir: dir, path }
    }

    pub fn postgres() -> TestStore {
        TestStore::Postgres(PgDb::create())
    }

    /// Opens a store on it with the test key (another one each call: another process).
    pub fn open(&self) -> Store {
        self.open_with(key()).expect("open the store")
    }

    pub fn open_with(&self, key: MasterKey) -> Result<Store, StoreError> {
        match self {
            TestStore::Sqlite { path, .. } => Store::open(path, key),
            TestStore::Postgres(db) => Store::open_postgres(&db.url, key),
        }
    }

    /// Runs `sql` in a transaction on a connection of its own, holding that transaction open
    /// for `hold` before committing. Returns once the statement ran (its locks are held).
    pub fn hold(&self, sql: &'static str, hold: Duration) -> std::thread::JoinHandle<()> {
        let (held_tx, held) = std::sync::mpsc::channel();
        let handle = match self {
            TestStore::Sqlite { path, .. } => {
                let mut other = rusqlite::Connection::open(path).unwrap();
                std::thread::spawn(move || {
                    let tx = other
                        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                        .unwrap();
                    tx.execute(sql, []).unwrap();
                    held_tx.send(()).unwrap();
                    std::thread::sleep(hold);
                    tx.commit().unwrap();
                })
            }
            TestStore::Postgres(db) => {
                let mut other = db.client();
                std::thread::spawn(move || {
                    let mut tx = other.transaction().unwrap();
                    tx.execute(sql, &[]).unwrap();
                    held_tx.send(()).unwrap();
                    std::thread::sleep(hold);
                    tx.commit().unwrap();
                })
            }
        };
        held.recv().unwrap();
        handle
    }

    /// Every value stored in the datasources table, as bytes (text and blobs alike).
    pub fn datasource_bytes(&self) -> Vec<Vec<u8>> {
        const SQL: &str =
            "SELECT connection, policy, password_enc, tls_client_key_enc FROM datasources";
        match self {
            TestStore::Sqlite { path, .. } => {
                let mut all = vec![std::fs::read(path).unwrap()];
                let wal = path.with_extension("db-wal");
                all.extend(std::fs::read(wal).ok());
                all
            }
            TestStore::Postgres(db) => {
                let mut out = Vec::new();
                for r in db.client().query(SQL, &[]).unwrap() {
                    out.push(r.get::<_, String>(0).into_bytes());
                    out.push(r.get::<_, String>(1).into_bytes());
                    out.extend(r.get::<_, Option<Vec<u8>>>(2));
                    out.extend(r.get::<_, Option<Vec<u8>>>(3));
                }
                out
            }
        }
    }
}

/// Defines a module per test body with one test per backend, `sqlite` and `postgres`, each
/// handing the body a fresh [`TestStore`].
macro_rules! on_both_backends {
    ($(#[$meta:meta])* fn $name:ident($db:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run($db: $crate::store::testutil::TestStore) $body
            #[test]
            fn sqlite() {
                run($crate::store::testutil::TestStore::sqlite())
            }
            #[test]
            fn postgres() {
                run($crate::store::testutil::TestStore::postgres())
            }
        }
    };
}
pub(crate) use on_both_backends;
