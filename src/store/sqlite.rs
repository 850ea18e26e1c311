//! The embedded SQLite backend of the store: its migrations, its connection, and the
//! transaction a change set runs in (the statements themselves are shared: `sql.rs`).

use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite_migration::{M, Migrations};
use std::path::Path;

use super::sql::{self, Cell, Dialect, Param, Row, Sql};
use super::*;

/// The control plane's tables as the first migration created them (the PostgreSQL store derives
/// its own from this text, so both hold the same tables and columns).
pub(super) const CONTROL_PLANE_SQL: &str =
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO meta VALUES ('version', 0);
             CREATE TABLE companies (
                id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                redact_private_audit INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL);
             CREATE TABLE users (
                id TEXT PRIMARY KEY, company_id TEXT NOT NULL REFERENCES companies(id),
                kind TEXT NOT NULL, email TEXT, name TEXT NOT NULL, role TEXT NOT NULL,
                created_at TEXT NOT NULL);
             CREATE UNIQUE INDEX users_email ON users(company_id, email COLLATE NOCASE)
                WHERE email IS NOT NULL;
             CREATE UNIQUE INDEX users_api_name ON users(company_id, name) WHERE kind = 'api';
             CREATE TABLE tokens (
                id TEXT PRIMARY KEY, company_id TEXT NOT NULL, user_id TEXT NOT NULL
                REFERENCES users(id) ON DELETE CASCADE, name TEXT, hash BLOB NOT NULL,
                created_at TEXT NOT NULL, expires_at TEXT);
             CREATE INDEX tokens_company ON tokens(company_id);
             CREATE TABLE groups (
                id TEXT PRIMARY KEY, company_id TEXT NOT NULL, name TEXT NOT NULL,
                created_at TEXT NOT NULL, UNIQUE(company_id, name));
             CREATE TABLE group_members (
                group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
                user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                PRIMARY KEY (group_id, user_id));
             CREATE TABLE datasources (
                id TEXT PRIMARY KEY, company_id TEXT NOT NULL, name TEXT NOT NULL,
                description TEXT NOT NULL, kind TEXT NOT NULL, visibility TEXT NOT NULL,
                owner_id TEXT NOT NULL, connection TEXT NOT NULL, password_enc BLOB,
                policy TEXT NOT NULL, pool_max_size INTEGER NOT NULL, generation INTEGER NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL, UNIQUE(company_id, name));
             CREATE TABLE apps (
                id TEXT PRIMARY KEY, company_id TEXT NOT NULL, name TEXT NOT NULL,
                description TEXT NOT NULL, visibility TEXT NOT NULL, owner_id TEXT NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL, UNIQUE(company_id, name));
             CREATE TABLE app_datasources (
                app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
                datasource_id TEXT NOT NULL REFERENCES datasources(id) ON DELETE CASCADE,
                attached_by TEXT NOT NULL, seq INTEGER NOT NULL,
                PRIMARY KEY (app_id, datasource_id));
             CREATE TABLE members (
                company_id TEXT NOT NULL, object_id TEXT NOT NULL, principal_id TEXT NOT NULL,
                principal_kind TEXT NOT NULL, role TEXT NOT NULL,
                PRIMARY KEY (object_id, principal_id));
             CREATE INDEX members_company ON members(company_id);
             CREATE TABLE integrations (
                company_id TEXT NOT NULL, kind TEXT NOT NULL, enabled INTEGER NOT NULL,
                creators_can_register INTEGER NOT NULL, PRIMARY KEY (company_id, kind));";

/// Migrations, applied in order at start; a released migration is never edited, only added to.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(CONTROL_PLANE_SQL),
        M::up(crate::audit::SCHEMA_SQL),
        M::up(crate::audit::INDEXES_SQL),
        M::up(crate::audit::STAGING_SQL),
        // TLS to datasources (issue 16). Rows stored before it connected in plain TCP: they say
        // so explicitly, and keep working, rather than meet the new default (`verify-full`).
        M::up(
            r#"ALTER TABLE datasources ADD COLUMN tls_client_key_enc BLOB;
             UPDATE datasources
                SET connection = json_set(connection, '$.tls', json('{"mode":"disable"}'))
              WHERE kind IN ('postgres', 'mysql') AND json_type(connection, '$.tls') IS NULL;"#,
        ),
    ])
}

pub(super) struct Backend {
    conn: Connection,
    /// Where the store file lies, and which file (device, inode) the connection opened there:
    /// an open connection keeps answering after its file was deleted or replaced, so readiness
    /// compares the two.
    path: std::path::PathBuf,
    identity: Option<(u64, u64)>,
}

/// Device and inode of the file at `path`, `None` when there is none.
#[cfg(unix)]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Elsewhere only presence is checked.
#[cfg(not(unix))]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|_| (0, 0))
}

impl Backend {
    pub(super) fn open(path: &Path) -> Result<Backend, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("data directory: {e}")))?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Every answered change must survive a crash: full sync on commit.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations()
            .to_latest(&mut conn)
            .map_err(|e| StoreError::Internal(format!("migrations: {e}")))?;
        Ok(Backend {
            conn,
            path: path.to_owned(),
            identity: file_identity(path),
        })
    }
}

/// A connection (or a transaction, which derefs to one) as the shared statements see it.
struct Lite<'a>(&'a Connection);

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Null => ValueRef::Null,
            Param::Text(s) => ValueRef::Text(s.as_bytes()),
            Param::Int(n) => ValueRef::Integer(n),
            Param::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

impl Sql for Lite<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let n = self
            .0
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params))?;
        Ok(n as u64)
    }

    fn rows(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut st = self.0.prepare_cached(sql)?;
        let width = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut cells = Vec::with_capacity(width);
            for i in 0..width {
                cells.push(match r.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(n) => Cell::Int(n),
                    ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
                    ValueRef::Real(f) => {
                        return Err(StoreError::Internal(format!("unexpected real {f}")));
                    }
                });
            }
            out.push(Row(cells));
        }
        Ok(out)
    }
}

impl super::Backend for Backend {
    fn version(&mut self) -> Result<i64, StoreError> {
        sql::version(&mut Lite(&self.conn))
    }

    /// The store answers a query on its connection, and its file is still the one the
    /// connection opened (writes to a deleted or replaced file would be lost at the next start).
    fn ping(&mut self) -> Result<(), StoreError> {
        if file_identity(&self.path) != self.identity {
            return Err(StoreError::Unavailable(format!(
                "the store file {} was removed or replaced while open",
                self.path.display()
            )));
        }
        self.version().map(drop)
    }

    fn check_key(&mut self, key: &MasterKey) -> Result<(), StoreError> {
        sql::check_master_key(&mut Lite(&self.conn), key, None)
    }

    fn audit_query(
        &mut self,
        filter: &crate::audit::AuditFilter,
    ) -> Result<crate::audit::AuditPage, crate::audit::AuditError> {
        crate::audit::query(&self.conn, filter)
    }

    fn apply(
        &mut self,
        company: &CompanyId,
        changes: &[Change],
        audit: &[AuditRecord],
    ) -> Result<i64, StoreError> {
        // IMMEDIATE takes the write lock before the first read. A deferred transaction would read
        // `meta.version` first and then fail at once (SQLITE_BUSY, no busy wait: it already holds
        // a read snapshot) whenever the audit writer or a lone query's own audit commit holds the
        // lock or committed since that read.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let db = &mut Lite(&tx);
        let before = sql::version(db)?;
        sql::apply_changes(db, company, changes)?;
        for rec in audit {
            crate::audit::insert(&tx, rec)?;
        }
        sql::check_invariants(db, company)?;
        db.exec(sql::BUMP_SQL, &[])?;
        tx.commit()?;
        Ok(before)
    }

    fn load_all(&mut self, key: &MasterKey) -> Result<View, StoreError> {
        sql::load_all(&mut Lite(&self.conn), key)
    }

    fn load_company(&mut self, id: &CompanyId, key: &MasterKey) -> Result<CompanyView, StoreError> {
        sql::load_company(&mut Lite(&self.conn), id, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasource::Connection as Reach;
    use crate::datasource::tls::TlsMode;
    use chrono::Utc;
    use rusqlite::params;
    use sql::ts;

    /// The schema version before datasources had TLS settings.
    const BEFORE_TLS: usize = 4;

    #[test]
    fn datasources_stored_before_tls_are_migrated_to_an_explicit_disable_and_keep_their_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let key = MasterKey::from_bytes(&[5u8; 32]).unwrap();
        let mut conn = Connection::open(&path).unwrap();
        migrations().to_version(&mut conn, BEFORE_TLS).unwrap();
        conn.execute(
            "INSERT INTO companies (id, name, created_at) VALUES ('co_1', 'acme', ?1)",
            [ts(&Utc::now())],
        )
        .unwrap();
        let now = ts(&Utc::now());
        let rows = [
            (
                "ds_pg",
                "postgres",
                r#"{"host":"db","port":5432,"database":"d","user":"u"}"#,
            ),
            (
                "ds_my",
                "mysql",
                r#"{"host":"db","port":3306,"database":"d","user":"u"}"#,
            ),
            ("ds_lite", "sqlite", r#"{"path":"/srv/acme.db"}"#),
        ];
        for (id, kind, connection) in rows {
            let pw = key.encrypt(b"old-pw", id);
            conn.execute(
                "INSERT INTO datasources (id, company_id, name, description, kind, visibility,
                    owner_id, connection, password_enc, policy, pool_max_size, generation,
                    created_at, updated_at)
                 VALUES (?1, 'co_1', ?1, '', ?2, 'private', 'usr_1', ?3, ?4, '{}', 4, 7, ?5, ?5)",
                params![id, kind, connection, pw, now],
            )
            .unwrap();
        }
        drop(conn);

        for _ in 0..2 {
            // Opened twice: the second start finds the migration applied and changes nothing.
            let store = Store::open(&path, MasterKey::from_bytes(&[5u8; 32]).unwrap()).unwrap();
            let view = store.view();
            let cv = view.company(&CompanyId("co_1".into())).unwrap();
            for (id, kind, _) in rows {
                let ds = &cv.datasources[&DatasourceId(id.into())];
                assert_eq!(
                    ds.generation, 7,
                    "{id}: the pool is not rebuilt for nothing"
                );
                assert_eq!(ds.tls_client_key_enc, None, "{id}");
                match (kind, &ds.connection.tls, &ds.spec.connection) {
                    ("sqlite", None, Reach::Sqlite { .. }) => {}
                    (
                        _,
                        Some(StoredTls {
                            mode: TlsMode::Disable,
                            ca_pem: None,
                            client_cert_pem: None,
                        }),
                        Reach::Network { password, tls, .. },
                    ) => {
                        assert_eq!(password.expose(), "old-pw", "{id}");
                        assert_eq!(*tls, crate::datasource::tls::TlsSettings::disabled());
                    }
                    other => panic!("{id}: {other:?}"),
                }
            }
            let conn = Connection::open(&path).unwrap();
            let text: String = conn
                .query_row(
                    "SELECT connection FROM datasources WHERE id = 'ds_pg'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(text.contains(r#""tls":{"mode":"disable"}"#), "{text}");
        }
    }
}
