//! The embedded SQLite backend of the store: versioned migrations, atomic change sets, and
//! loading a company's rows into its view.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use rusqlite_migration::{M, Migrations};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use super::*;

/// Migrations, applied in order at start; a released migration is never edited, only added to.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
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
                creators_can_register INTEGER NOT NULL, PRIMARY KEY (company_id, kind));",
        ),
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

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

fn parse_enum<T: FromStr>(s: &str) -> rusqlite::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    s.parse::<T>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
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

    fn read_version(conn: &Connection) -> Result<i64, StoreError> {
        Ok(
            conn.query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
                r.get(0)
            })?,
        )
    }
}

impl super::Backend for Backend {
    fn version(&mut self) -> Result<i64, StoreError> {
        Self::read_version(&self.conn)
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
        Self::read_version(&self.conn).map(|_| ())
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
        key: &MasterKey,
    ) -> Result<i64, StoreError> {
        // IMMEDIATE takes the write lock before the first read. A deferred transaction would read
        // `meta.version` first and then fail at once (SQLITE_BUSY, no busy wait: it already holds
        // a read snapshot) whenever the audit writer or a lone query's own audit commit holds the
        // lock or committed since that read.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let before: i64 =
            tx.query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
                r.get(0)
            })?;
        for c in changes {
            apply_one(&tx, company, c, key)?;
        }
        for rec in audit {
            crate::audit::insert(&tx, rec)?;
        }
        check_invariants(&tx, company)?;
        tx.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'version'",
            [],
        )?;
        tx.commit()?;
        Ok(before)
    }

    fn load_all(&mut self, key: &MasterKey) -> Result<View, StoreError> {
        let ids: Vec<CompanyId> = {
            let mut st = self.conn.prepare("SELECT id FROM companies")?;
            st.query_map([], |r| Ok(CompanyId(r.get(0)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut view = View::default();
        for id in ids {
            let cv = self.load_company(&id, key)?;
            for t in cv.tokens.keys() {
                view.token_company.insert(t.clone(), id.clone());
            }
            view.companies.insert(id, Arc::new(cv));
        }
        Ok(view)
    }

    fn load_company(&mut self, id: &CompanyId, key: &MasterKey) -> Result<CompanyView, StoreError> {
        let c = &self.conn;
        let mut cv = CompanyView {
            company: c
                .query_row(
                    "SELECT id, name, redact_private_audit, created_at FROM companies WHERE id = ?1",
                    [id.as_str()],
                    |r| {
                        Ok(Company {
                            id: CompanyId(r.get(0)?),
                            name: r.get(1)?,
                            redact_private_audit: r.get(2)?,
                            created_at: parse_ts(&r.get::<_, String>(3)?)?,
                        })
                    },
                )
                .optional()?,
            ..Default::default()
        };
        if cv.company.is_none() {
            return Err(StoreError::NotFound);
        }
        load_people(c, id, &mut cv)?;
        load_groups(c, id, &mut cv)?;
        let members = load_members(c, id)?;
        load_datasources(c, id, key, &members, &mut cv)?;
        load_apps(c, id, &members, &mut cv)?;
        load_integrations(c, id, &mut cv)?;
        Ok(cv)
    }
}

/// Roles on apps and datasources, by object id.
type Members = HashMap<String, Vec<(PrincipalId, ObjectRole)>>;

/// A company's users and their tokens.
fn load_people(c: &Connection, id: &CompanyId, cv: &mut CompanyView) -> Result<(), StoreError> {
    let mut st = c.prepare(
        "SELECT id, kind, email, name, role, created_at FROM users WHERE company_id = ?1",
    )?;
    for u in st.query_map([id.as_str()], |r| {
        Ok(User {
            id: UserId(r.get(0)?),
            company_id: id.clone(),
            kind: parse_enum(&r.get::<_, String>(1)?)?,
            email: r.get(2)?,
            name: r.get(3)?,
            role: parse_enum(&r.get::<_, String>(4)?)?,
            created_at: parse_ts(&r.get::<_, String>(5)?)?,
        })
    })? {
        let u = u?;
        cv.users.insert(u.id.clone(), u);
    }
    let mut st = c.prepare(
        "SELECT id, user_id, name, hash, created_at, expires_at FROM tokens WHERE company_id = ?1",
    )?;
    for t in st.query_map([id.as_str()], |r| {
        let hash: Vec<u8> = r.get(3)?;
        let expires: Option<String> = r.get(5)?;
        Ok(Token {
            id: TokenId(r.get(0)?),
            user_id: UserId(r.get(1)?),
            company_id: id.clone(),
            name: r.get(2)?,
            hash: hash.try_into().unwrap_or([0u8; 32]),
            created_at: parse_ts(&r.get::<_, String>(4)?)?,
            expires_at: expires.as_deref().map(parse_ts).transpose()?,
        })
    })? {
        let t = t?;
        cv.tokens.insert(t.id.clone(), t);
    }
    Ok(())
}

/// Groups and who is in them.
fn load_groups(c: &Connection, id: &CompanyId, cv: &mut CompanyView) -> Result<(), StoreError> {
    let mut st = c.prepare("SELECT id, name, created_at FROM groups WHERE company_id = ?1")?;
    for g in st.query_map([id.as_str()], |r| {
        Ok(Group {
            id: GroupId(r.get(0)?),
            company_id: id.clone(),
            name: r.get(1)?,
            members: Vec::new(),
            created_at: parse_ts(&r.get::<_, String>(2)?)?,
        })
    })? {
        let g = g?;
        cv.groups.insert(g.id.clone(), g);
    }
    let mut st = c.prepare(
        "SELECT gm.group_id, gm.user_id FROM group_members gm JOIN groups g ON g.id = gm.group_id
         WHERE g.company_id = ?1 ORDER BY gm.user_id",
    )?;
    for row in st.query_map([id.as_str()], |r| {
        Ok((GroupId(r.get(0)?), UserId(r.get(1)?)))
    })? {
        let (g, u) = row?;
        if let Some(group) = cv.groups.get_mut(&g) {
            group.members.push(u.clone());
        }
        cv.user_groups.entry(u).or_default().push(g);
    }
    Ok(())
}

fn load_members(c: &Connection, id: &CompanyId) -> Result<Members, StoreError> {
    // Members of apps and datasources.
    let mut members = Members::new();
    let mut st = c.prepare(
        "SELECT object_id, principal_id, principal_kind, role FROM members
         WHERE company_id = ?1 ORDER BY principal_id",
    )?;
    for row in st.query_map([id.as_str()], |r| {
        let pid: String = r.get(1)?;
        let kind: String = r.get(2)?;
        let principal = if kind == "group" {
            PrincipalId::Group(GroupId(pid))
        } else {
            PrincipalId::User(UserId(pid))
        };
        Ok((
            r.get::<_, String>(0)?,
            principal,
            parse_enum::<ObjectRole>(&r.get::<_, String>(3)?)?,
        ))
    })? {
        let (obj, p, role) = row?;
        members.entry(obj).or_default().push((p, role));
    }
    Ok(members)
}

/// Datasources with their members, each with its connection spec (password decrypted once).
fn load_datasources(
    c: &Connection,
    id: &CompanyId,
    key: &MasterKey,
    members: &Members,
    cv: &mut CompanyView,
) -> Result<(), StoreError> {
    let mut st = c.prepare(
        "SELECT id, name, description, kind, visibility, owner_id, connection, password_enc,
                policy, pool_max_size, generation, created_at, updated_at, tls_client_key_enc
         FROM datasources WHERE company_id = ?1",
    )?;
    for d in st.query_map([id.as_str()], |r| {
        let ds_id = DatasourceId(r.get(0)?);
        let kind: DatasourceKind = parse_enum(&r.get::<_, String>(3)?)?;
        let connection: ConnectionSettings =
            serde_json::from_str(&r.get::<_, String>(6)?).map_err(json_err)?;
        let password_enc: Option<Vec<u8>> = r.get(7)?;
        let tls_client_key_enc: Option<Vec<u8>> = r.get(13)?;
        let pool_max_size = r.get::<_, i64>(9)?.max(1) as usize;
        let generation = r.get::<_, i64>(10)? as u64;
        let sealed = SealedSecrets {
            password: password_enc.as_deref(),
            tls_client_key: tls_client_key_enc.as_deref(),
        };
        let spec = build_spec(
            &ds_id,
            kind,
            &connection,
            sealed,
            pool_max_size,
            generation,
            key,
        );
        Ok(Datasource {
            members: members.get(ds_id.as_str()).cloned().unwrap_or_default(),
            id: ds_id,
            company_id: id.clone(),
            name: r.get(1)?,
            description: r.get(2)?,
            kind,
            visibility: parse_enum(&r.get::<_, String>(4)?)?,
            owner_id: UserId(r.get(5)?),
            connection,
            password_enc,
            tls_client_key_enc,
            policy: serde_json::from_str(&r.get::<_, String>(8)?).map_err(json_err)?,
            pool_max_size,
            generation,
            created_at: parse_ts(&r.get::<_, String>(11)?)?,
            updated_at: parse_ts(&r.get::<_, String>(12)?)?,
            spec: Arc::new(spec),
        })
    })? {
        let d = d?;
        cv.datasources.insert(d.id.clone(), d);
    }
    Ok(())
}

/// Apps with their members and attached datasources in attachment order.
fn load_apps(
    c: &Connection,
    id: &CompanyId,
    members: &Members,
    cv: &mut CompanyView,
) -> Result<(), StoreError> {
    let mut st = c.prepare(
        "SELECT id, name, description, visibility, owner_id, created_at, updated_at
         FROM apps WHERE company_id = ?1",
    )?;
    for a in st.query_map([id.as_str()], |r| {
        let app_id = AppId(r.get(0)?);
        Ok(App {
            members: members.get(app_id.as_str()).cloned().unwrap_or_default(),
            id: app_id,
            company_id: id.clone(),
            name: r.get(1)?,
            description: r.get(2)?,
            visibility: parse_enum(&r.get::<_, String>(3)?)?,
            owner_id: UserId(r.get(4)?),
            datasources: Vec::new(),
            created_at: parse_ts(&r.get::<_, String>(5)?)?,
            updated_at: parse_ts(&r.get::<_, String>(6)?)?,
        })
    })? {
        let a = a?;
        cv.apps.insert(a.id.clone(), a);
    }
    let mut st = c.prepare(
        "SELECT ad.app_id, ad.datasource_id FROM app_datasources ad JOIN apps a ON a.id = ad.app_id
         WHERE a.company_id = ?1 ORDER BY ad.seq",
    )?;
    for row in st.query_map([id.as_str()], |r| {
        Ok((AppId(r.get(0)?), DatasourceId(r.get(1)?)))
    })? {
        let (a, d) = row?;
        if let Some(app) = cv.apps.get_mut(&a) {
            app.datasources.push(d);
        }
    }
    Ok(())
}

fn load_integrations(
    c: &Connection,
    id: &CompanyId,
    cv: &mut CompanyView,
) -> Result<(), StoreError> {
    let mut st = c.prepare(
        "SELECT kind, enabled, creators_can_register FROM integrations WHERE company_id = ?1",
    )?;
    for i in st.query_map([id.as_str()], |r| {
        Ok(Integration {
            kind: parse_enum(&r.get::<_, String>(0)?)?,
            enabled: r.get(1)?,
            creators_can_register: r.get(2)?,
        })
    })? {
        let i = i?;
        cv.integrations.insert(i.kind, i);
    }
    Ok(())
}

/// Rules that must hold after every change set, checked inside the transaction so that two
/// concurrent changes cannot both pass a check made against an older view.
fn check_invariants(tx: &Transaction<'_>, company: &CompanyId) -> Result<(), StoreError> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM companies WHERE id = ?1)",
        [company.as_str()],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(());
    }
    let owners: i64 = tx.query_row(
        "SELECT COUNT(*) FROM users WHERE company_id = ?1 AND kind = 'person' AND role = 'owner'",
        [company.as_str()],
        |r| r.get(0),
    )?;
    if owners == 0 {
        return Err(StoreError::Conflict(
            "a company must keep at least one owner".to_owned(),
        ));
    }
    Ok(())
}

fn affected(n: usize) -> Result<(), StoreError> {
    if n == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

fn apply_one(
    tx: &Transaction<'_>,
    company: &CompanyId,
    change: &Change,
    _key: &MasterKey,
) -> Result<(), StoreError> {
    let co = company.as_str();
    match change {
        Change::CreateCompany(_) | Change::UpdateCompany(_) | Change::SetIntegration(_) => {
            apply_company(tx, co, change)
        }
        Change::CreateUser(_)
        | Change::SetUserRole { .. }
        | Change::DeleteUser { .. }
        | Change::CreateToken(_)
        | Change::RevokeToken { .. }
        | Change::CreateGroup(_)
        | Change::DeleteGroup { .. }
        | Change::AddGroupMember { .. }
        | Change::RemoveGroupMember { .. } => apply_people(tx, co, change),
        Change::PutDatasource { .. }
        | Change::FillDefaultSchema { .. }
        | Change::DeleteDatasource { .. }
        | Change::PutApp { .. }
        | Change::DeleteApp { .. }
        | Change::Attach { .. }
        | Change::Detach { .. } => apply_objects(tx, co, change),
        Change::SetMember { .. } | Change::RemoveMember { .. } => apply_sharing(tx, co, change),
    }
}

/// The company row and its integrations.
fn apply_company(tx: &Transaction<'_>, co: &str, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::CreateCompany(c) => {
            tx.execute(
                "INSERT INTO companies (id, name, redact_private_audit, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![c.id.as_str(), c.name, c.redact_private_audit, ts(&c.created_at)],
            )?;
        }
        Change::UpdateCompany(c) => affected(tx.execute(
            "UPDATE companies SET name = ?2, redact_private_audit = ?3 WHERE id = ?1",
            params![c.id.as_str(), c.name, c.redact_private_audit],
        )?)?,
        Change::SetIntegration(i) => {
            tx.execute(
                "INSERT INTO integrations (company_id, kind, enabled, creators_can_register)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (company_id, kind) DO UPDATE
                 SET enabled = excluded.enabled, creators_can_register = excluded.creators_can_register",
                params![co, i.kind.as_str(), i.enabled, i.creators_can_register],
            )?;
        }
        // The other areas' changes: `apply_one` sends each to its own function.
        _ => {}
    }
    Ok(())
}

/// Users, their tokens, groups and group membership.
fn apply_people(tx: &Transaction<'_>, co: &str, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::CreateUser(u) => {
            tx.execute(
                "INSERT INTO users (id, company_id, kind, email, name, role, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    u.id.as_str(),
                    co,
                    u.kind.as_str(),
                    u.email,
                    u.name,
                    u.role.as_str(),
                    ts(&u.created_at)
                ],
            )?;
        }
        Change::SetUserRole { user_id, role } => affected(tx.execute(
            "UPDATE users SET role = ?3 WHERE id = ?1 AND company_id = ?2",
            params![user_id.as_str(), co, role.as_str()],
        )?)?,
        Change::DeleteUser { user_id } => {
            let owns: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM apps WHERE owner_id = ?1)
                     OR EXISTS(SELECT 1 FROM datasources WHERE owner_id = ?1)",
                [user_id.as_str()],
                |r| r.get(0),
            )?;
            if owns {
                return Err(StoreError::Conflict(
                    "the user still owns apps or datasources: transfer them first".to_owned(),
                ));
            }
            tx.execute(
                "DELETE FROM members WHERE principal_id = ?1",
                [user_id.as_str()],
            )?;
            affected(tx.execute(
                "DELETE FROM users WHERE id = ?1 AND company_id = ?2",
                params![user_id.as_str(), co],
            )?)?;
        }
        Change::CreateToken(t) => {
            tx.execute(
                "INSERT INTO tokens (id, company_id, user_id, name, hash, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    t.id.as_str(),
                    co,
                    t.user_id.as_str(),
                    t.name,
                    &t.hash[..],
                    ts(&t.created_at),
                    t.expires_at.as_ref().map(ts)
                ],
            )?;
        }
        Change::RevokeToken { token_id } => affected(tx.execute(
            "DELETE FROM tokens WHERE id = ?1 AND company_id = ?2",
            params![token_id.as_str(), co],
        )?)?,
        Change::CreateGroup(g) => {
            tx.execute(
                "INSERT INTO groups (id, company_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![g.id.as_str(), co, g.name, ts(&g.created_at)],
            )?;
        }
        Change::DeleteGroup { group_id } => {
            tx.execute(
                "DELETE FROM members WHERE principal_id = ?1",
                [group_id.as_str()],
            )?;
            affected(tx.execute(
                "DELETE FROM groups WHERE id = ?1 AND company_id = ?2",
                params![group_id.as_str(), co],
            )?)?;
        }
        Change::AddGroupMember { group_id, user_id } => {
            tx.execute(
                "INSERT OR IGNORE INTO group_members (group_id, user_id) VALUES (?1, ?2)",
                params![group_id.as_str(), user_id.as_str()],
            )?;
        }
        Change::RemoveGroupMember { group_id, user_id } => {
            tx.execute(
                "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2",
                params![group_id.as_str(), user_id.as_str()],
            )?;
        }
        // The other areas' changes: `apply_one` sends each to its own function.
        _ => {}
    }
    Ok(())
}

/// Datasources, apps and which datasources an app has.
fn apply_objects(tx: &Transaction<'_>, co: &str, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::PutDatasource { ds, is_new } => {
            let conn = serde_json::to_string(&ds.connection)
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let policy = serde_json::to_string(&ds.policy)
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            if *is_new {
                tx.execute(
                    "INSERT INTO datasources (id, company_id, name, description, kind, visibility,
                        owner_id, connection, password_enc, policy, pool_max_size, generation,
                        created_at, updated_at, tls_client_key_enc)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                    params![
                        ds.id.as_str(),
                        co,
                        ds.name,
                        ds.description,
                        ds.kind.as_str(),
                        ds.visibility.as_str(),
                        ds.owner_id.as_str(),
                        conn,
                        ds.password_enc,
                        policy,
                        ds.pool_max_size as i64,
                        ds.generation as i64,
                        ts(&ds.created_at),
                        ts(&ds.updated_at),
                        ds.tls_client_key_enc
                    ],
                )?;
            } else {
                affected(tx.execute(
                    "UPDATE datasources SET name = ?3, description = ?4, visibility = ?5,
                        owner_id = ?6, connection = ?7, password_enc = ?8, policy = ?9,
                        pool_max_size = ?10, generation = ?11, updated_at = ?12,
                        tls_client_key_enc = ?13
                     WHERE id = ?1 AND company_id = ?2",
                    params![
                        ds.id.as_str(),
                        co,
                        ds.name,
                        ds.description,
                        ds.visibility.as_str(),
                        ds.owner_id.as_str(),
                        conn,
                        ds.password_enc,
                        policy,
                        ds.pool_max_size as i64,
                        ds.generation as i64,
                        ts(&ds.updated_at),
                        ds.tls_client_key_enc
                    ],
                )?)?;
            }
        }
        Change::FillDefaultSchema { id, schema } => {
            // Only while unset: a policy an admin edited in the meantime wins.
            tx.execute(
                "UPDATE datasources SET policy = json_set(policy, '$.default_schema', ?3)
                 WHERE id = ?1 AND company_id = ?2
                   AND json_extract(policy, '$.default_schema') IS NULL",
                params![id.as_str(), co, schema],
            )?;
        }
        Change::DeleteDatasource { id } => {
            tx.execute("DELETE FROM members WHERE object_id = ?1", [id.as_str()])?;
            affected(tx.execute(
                "DELETE FROM datasources WHERE id = ?1 AND company_id = ?2",
                params![id.as_str(), co],
            )?)?;
        }
        Change::PutApp { app, is_new } => {
            if *is_new {
                tx.execute(
                    "INSERT INTO apps (id, company_id, name, description, visibility, owner_id,
                        created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        app.id.as_str(),
                        co,
                        app.name,
                        app.description,
                        app.visibility.as_str(),
                        app.owner_id.as_str(),
                        ts(&app.created_at),
                        ts(&app.updated_at)
                    ],
                )?;
            } else {
                affected(tx.execute(
                    "UPDATE apps SET name = ?3, description = ?4, visibility = ?5, owner_id = ?6,
                        updated_at = ?7 WHERE id = ?1 AND company_id = ?2",
                    params![
                        app.id.as_str(),
                        co,
                        app.name,
                        app.description,
                        app.visibility.as_str(),
                        app.owner_id.as_str(),
                        ts(&app.updated_at)
                    ],
                )?)?;
            }
        }
        Change::DeleteApp { id } => {
            tx.execute("DELETE FROM members WHERE object_id = ?1", [id.as_str()])?;
            affected(tx.execute(
                "DELETE FROM apps WHERE id = ?1 AND company_id = ?2",
                params![id.as_str(), co],
            )?)?;
        }
        Change::Attach {
            app_id,
            datasource_id,
            by,
        } => {
            tx.execute(
                "INSERT OR IGNORE INTO app_datasources (app_id, datasource_id, attached_by, seq)
                 VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM app_datasources))",
                params![app_id.as_str(), datasource_id.as_str(), by.as_str()],
            )?;
        }
        Change::Detach {
            app_id,
            datasource_id,
        } => {
            tx.execute(
                "DELETE FROM app_datasources WHERE app_id = ?1 AND datasource_id = ?2",
                params![app_id.as_str(), datasource_id.as_str()],
            )?;
        }
        // The other areas' changes: `apply_one` sends each to its own function.
        _ => {}
    }
    Ok(())
}

/// Roles on apps and datasources.
fn apply_sharing(tx: &Transaction<'_>, co: &str, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::SetMember {
            object_id,
            principal,
            role,
        } => {
            tx.execute(
                "INSERT INTO members (company_id, object_id, principal_id, principal_kind, role)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (object_id, principal_id) DO UPDATE SET role = excluded.role",
                params![
                    co,
                    object_id,
                    principal.as_str(),
                    principal.kind_str(),
                    role.as_str()
                ],
            )?;
        }
        Change::RemoveMember {
            object_id,
            principal,
        } => {
            tx.execute(
                "DELETE FROM members WHERE object_id = ?1 AND principal_id = ?2",
                params![object_id, principal.as_str()],
            )?;
        }
        // The other areas' changes: `apply_one` sends each to its own function.
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasource::Connection as Reach;
    use crate::datasource::tls::TlsMode;

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
