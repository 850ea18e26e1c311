//! The store's rows as both backends read and write them: one text per statement (SQLite's `?N`
//! placeholders; the PostgreSQL backend numbers them `$N`), one way of loading a company's view,
//! one way of applying a change set and checking the invariants. A backend supplies a [`Sql`]
//! connection or transaction; the two databases hold the same tables and columns with the same
//! values (text, 64-bit integers, bytes), so only a statement that uses JSON functions differs.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use super::*;

/// Which database a statement runs on, for the few statements whose text differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

/// A bound parameter. Booleans are stored as the integers 0 and 1 on both databases.
#[derive(Clone, Copy, Debug)]
pub(super) enum Param<'a> {
    Null,
    Text(&'a str),
    Int(i64),
    Bytes(&'a [u8]),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(v: &'a Option<String>) -> Self {
        v.as_deref().map_or(Param::Null, Param::Text)
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(Param::Null, Param::Text)
    }
}

impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(v: &'a [u8]) -> Self {
        Param::Bytes(v)
    }
}

impl<'a> From<&'a Option<Vec<u8>>> for Param<'a> {
    fn from(v: &'a Option<Vec<u8>>) -> Self {
        v.as_deref().map_or(Param::Null, Param::Bytes)
    }
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Int(v.into())
    }
}

/// `p![a, b]`: the parameters of one statement.
macro_rules! p {
    ($($v:expr),* $(,)?) => { &[$($crate::store::sql::Param::from($v)),*] };
}
pub(super) use p;

/// A value read back.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// One row read back, its columns in the order the statement selects them.
#[derive(Clone, Debug, Default)]
pub(super) struct Row(pub(super) Vec<Cell>);

fn bad(what: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("stored value: {what}"))
}

impl Row {
    fn cell(&self, i: usize) -> Result<&Cell, StoreError> {
        self.0.get(i).ok_or_else(|| bad(format!("no column {i}")))
    }

    pub(super) fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Text(s) => Ok(Some(s.clone())),
            other => Err(bad(format!("column {i} is not text: {other:?}"))),
        }
    }

    pub(super) fn text(&self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?
            .ok_or_else(|| bad(format!("column {i} is null")))
    }

    pub(super) fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.cell(i)? {
            Cell::Int(n) => Ok(*n),
            other => Err(bad(format!("column {i} is not an integer: {other:?}"))),
        }
    }

    pub(super) fn bool(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.int(i)? != 0)
    }

    pub(super) fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Bytes(b) => Ok(Some(b.clone())),
            other => Err(bad(format!("column {i} is not bytes: {other:?}"))),
        }
    }

    pub(super) fn ts(&self, i: usize) -> Result<DateTime<Utc>, StoreError> {
        parse_ts(&self.text(i)?)
    }

    pub(super) fn opt_ts(&self, i: usize) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.opt_text(i)?.as_deref().map(parse_ts).transpose()
    }

    pub(super) fn parse<T: FromStr>(&self, i: usize) -> Result<T, StoreError>
    where
        T::Err: std::fmt::Display,
    {
        self.text(i)?.parse::<T>().map_err(bad)
    }

    pub(super) fn json<T: serde::de::DeserializeOwned>(&self, i: usize) -> Result<T, StoreError> {
        serde_json::from_str(&self.text(i)?).map_err(bad)
    }
}

/// A connection or an open transaction of a backend. Errors are already the store's: a unique
/// violation is a [`StoreError::Conflict`] with the same text on both databases.
pub(super) trait Sql {
    fn dialect(&self) -> Dialect;

    /// Runs a statement; the number of rows it changed.
    fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError>;

    /// Runs a query; all its rows.
    fn rows(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError>;

    /// The first row, if any.
    fn row(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.rows(sql, params)?.into_iter().next())
    }

    /// The first row, which must exist.
    fn one(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Row, StoreError> {
        self.row(sql, params)?
            .ok_or_else(|| StoreError::Internal(format!("no row from: {sql}")))
    }
}

/// The text a unique violation reports, on every backend.
pub(super) const DUPLICATE: &str = "an object with that name already exists";
/// The text any other integrity violation reports, on every backend.
pub(super) const CONFLICTS: &str = "the change conflicts with existing data";

pub(super) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(bad)
}

pub(super) const VERSION_SQL: &str = "SELECT value FROM meta WHERE key = 'version'";
pub(super) const BUMP_SQL: &str = "UPDATE meta SET value = value + 1 WHERE key = 'version'";

pub(super) fn version(db: &mut dyn Sql) -> Result<i64, StoreError> {
    db.one(VERSION_SQL, &[])?.int(0)
}

/// Every company's view.
pub(super) fn load_all(db: &mut dyn Sql, key: &MasterKey) -> Result<View, StoreError> {
    let ids = db
        .rows("SELECT id FROM companies", &[])?
        .iter()
        .map(|r| r.text(0).map(CompanyId))
        .collect::<Result<Vec<_>, _>>()?;
    let mut view = View::default();
    for id in ids {
        let cv = load_company(db, &id, key)?;
        for t in cv.tokens.keys() {
            view.token_company.insert(t.clone(), id.clone());
        }
        view.companies.insert(id, Arc::new(cv));
    }
    Ok(view)
}

pub(super) fn load_company(
    db: &mut dyn Sql,
    id: &CompanyId,
    key: &MasterKey,
) -> Result<CompanyView, StoreError> {
    let Some(r) = db.row(
        "SELECT id, name, redact_private_audit, created_at FROM companies WHERE id = ?1",
        p![id.as_str()],
    )?
    else {
        return Err(StoreError::NotFound);
    };
    let mut cv = CompanyView {
        company: Some(Company {
            id: CompanyId(r.text(0)?),
            name: r.text(1)?,
            redact_private_audit: r.bool(2)?,
            created_at: r.ts(3)?,
        }),
        ..Default::default()
    };
    load_people(db, id, &mut cv)?;
    load_groups(db, id, &mut cv)?;
    let members = load_members(db, id)?;
    load_datasources(db, id, key, &members, &mut cv)?;
    load_apps(db, id, &members, &mut cv)?;
    load_integrations(db, id, &mut cv)?;
    Ok(cv)
}

/// Roles on apps and datasources, by object id.
type Members = HashMap<String, Vec<(PrincipalId, ObjectRole)>>;

/// A company's users and their tokens.
fn load_people(db: &mut dyn Sql, id: &CompanyId, cv: &mut CompanyView) -> Result<(), StoreError> {
    for r in db.rows(
        "SELECT id, kind, email, name, role, created_at FROM users WHERE company_id = ?1",
        p![id.as_str()],
    )? {
        let u = User {
            id: UserId(r.text(0)?),
            company_id: id.clone(),
            kind: r.parse(1)?,
            email: r.opt_text(2)?,
            name: r.text(3)?,
            role: r.parse(4)?,
            created_at: r.ts(5)?,
        };
        cv.users.insert(u.id.clone(), u);
    }
    for r in db.rows(
        "SELECT id, user_id, name, hash, created_at, expires_at FROM tokens WHERE company_id = ?1",
        p![id.as_str()],
    )? {
        let t = Token {
            id: TokenId(r.text(0)?),
            user_id: UserId(r.text(1)?),
            company_id: id.clone(),
            name: r.opt_text(2)?,
            hash: r
                .opt_bytes(3)?
                .and_then(|h| h.try_into().ok())
                .unwrap_or([0u8; 32]),
            created_at: r.ts(4)?,
            expires_at: r.opt_ts(5)?,
        };
        cv.tokens.insert(t.id.clone(), t);
    }
    Ok(())
}

/// Groups and who is in them.
fn load_groups(db: &mut dyn Sql, id: &CompanyId, cv: &mut CompanyView) -> Result<(), StoreError> {
    for r in db.rows(
        "SELECT id, name, created_at FROM groups WHERE company_id = ?1",
        p![id.as_str()],
    )? {
        let g = Group {
            id: GroupId(r.text(0)?),
            company_id: id.clone(),
            name: r.text(1)?,
            members: Vec::new(),
            created_at: r.ts(2)?,
        };
        cv.groups.insert(g.id.clone(), g);
    }
    for r in db.rows(
        "SELECT gm.group_id, gm.user_id FROM group_members gm JOIN groups g ON g.id = gm.group_id
         WHERE g.company_id = ?1 ORDER BY gm.user_id",
        p![id.as_str()],
    )? {
        let (g, u) = (GroupId(r.text(0)?), UserId(r.text(1)?));
        if let Some(group) = cv.groups.get_mut(&g) {
            group.members.push(u.clone());
        }
        cv.user_groups.entry(u).or_default().push(g);
    }
    Ok(())
}

/// Members of apps and datasources.
fn load_members(db: &mut dyn Sql, id: &CompanyId) -> Result<Members, StoreError> {
    let mut members = Members::new();
    for r in db.rows(
        "SELECT object_id, principal_id, principal_kind, role FROM members
         WHERE company_id = ?1 ORDER BY principal_id",
        p![id.as_str()],
    )? {
        let pid = r.text(1)?;
        let principal = if r.text(2)? == "group" {
            PrincipalId::Group(GroupId(pid))
        } else {
            PrincipalId::User(UserId(pid))
        };
        let role: ObjectRole = r.parse(3)?;
        members
            .entry(r.text(0)?)
            .or_default()
            .push((principal, role));
    }
    Ok(members)
}

/// Datasources with their members, each with its connection spec (password decrypted once).
fn load_datasources(
    db: &mut dyn Sql,
    id: &CompanyId,
    key: &MasterKey,
    members: &Members,
    cv: &mut CompanyView,
) -> Result<(), StoreError> {
    for r in db.rows(
        "SELECT id, name, description, kind, visibility, owner_id, connection, password_enc,
                policy, pool_max_size, generation, created_at, updated_at, tls_client_key_enc
         FROM datasources WHERE company_id = ?1",
        p![id.as_str()],
    )? {
        let ds_id = DatasourceId(r.text(0)?);
        let kind: DatasourceKind = r.parse(3)?;
        let connection: ConnectionSettings = r.json(6)?;
        let password_enc = r.opt_bytes(7)?;
        let tls_client_key_enc = r.opt_bytes(13)?;
        let pool_max_size = r.int(9)?.max(1) as usize;
        let generation = r.int(10)? as u64;
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
        let d = Datasource {
            members: members.get(ds_id.as_str()).cloned().unwrap_or_default(),
            id: ds_id,
            company_id: id.clone(),
            name: r.text(1)?,
            description: r.text(2)?,
            kind,
            visibility: r.parse(4)?,
            owner_id: UserId(r.text(5)?),
            connection,
            password_enc,
            tls_client_key_enc,
            policy: r.json(8)?,
            pool_max_size,
            generation,
            created_at: r.ts(11)?,
            updated_at: r.ts(12)?,
            spec: Arc::new(spec),
        };
        cv.datasources.insert(d.id.clone(), d);
    }
    Ok(())
}

/// Apps with their members and attached datasources in attachment order.
fn load_apps(
    db: &mut dyn Sql,
    id: &CompanyId,
    members: &Members,
    cv: &mut CompanyView,
) -> Result<(), StoreError> {
    for r in db.rows(
        "SELECT id, name, description, visibility, owner_id, created_at, updated_at
         FROM apps WHERE company_id = ?1",
        p![id.as_str()],
    )? {
        let app_id = AppId(r.text(0)?);
        let a = App {
            members: members.get(app_id.as_str()).cloned().unwrap_or_default(),
            id: app_id,
            company_id: id.clone(),
            name: r.text(1)?,
            description: r.text(2)?,
            visibility: r.parse(3)?,
            owner_id: UserId(r.text(4)?),
            datasources: Vec::new(),
            created_at: r.ts(5)?,
            updated_at: r.ts(6)?,
        };
        cv.apps.insert(a.id.clone(), a);
    }
    for r in db.rows(
        "SELECT ad.app_id, ad.datasource_id FROM app_datasources ad JOIN apps a ON a.id = ad.app_id
         WHERE a.company_id = ?1 ORDER BY ad.seq",
        p![id.as_str()],
    )? {
        if let Some(app) = cv.apps.get_mut(&AppId(r.text(0)?)) {
            app.datasources.push(DatasourceId(r.text(1)?));
        }
    }
    Ok(())
}

fn load_integrations(
    db: &mut dyn Sql,
    id: &CompanyId,
    cv: &mut CompanyView,
) -> Result<(), StoreError> {
    for r in db.rows(
        "SELECT kind, enabled, creators_can_register FROM integrations WHERE company_id = ?1",
        p![id.as_str()],
    )? {
        let i = Integration {
            kind: r.parse(0)?,
            enabled: r.bool(1)?,
            creators_can_register: r.bool(2)?,
        };
        cv.integrations.insert(i.kind, i);
    }
    Ok(())
}

/// Applies each change in order inside the caller's transaction.
pub(super) fn apply_changes(
    db: &mut dyn Sql,
    company: &CompanyId,
    changes: &[Change],
) -> Result<(), StoreError> {
    let co = company.as_str();
    for change in changes {
        match change {
            Change::CreateCompany(_) | Change::UpdateCompany(_) | Change::SetIntegration(_) => {
                apply_company(db, co, change)?
            }
            Change::CreateUser(_)
            | Change::SetUserRole { .. }
            | Change::DeleteUser { .. }
            | Change::CreateToken(_)
            | Change::RevokeToken { .. }
            | Change::CreateGroup(_)
            | Change::DeleteGroup { .. }
            | Change::AddGroupMember { .. }
            | Change::RemoveGroupMember { .. } => apply_people(db, co, change)?,
            Change::PutDatasource { .. }
            | Change::FillDefaultSchema { .. }
            | Change::DeleteDatasource { .. }
            | Change::PutApp { .. }
            | Change::DeleteApp { .. }
            | Change::Attach { .. }
            | Change::Detach { .. } => apply_objects(db, co, change)?,
            Change::SetMember { .. } | Change::RemoveMember { .. } => {
                apply_sharing(db, co, change)?
            }
        }
    }
    Ok(())
}

/// Rules that must hold after every change set, checked inside the transaction so that two
/// concurrent changes cannot both pass a check made against an older view.
pub(super) fn check_invariants(db: &mut dyn Sql, company: &CompanyId) -> Result<(), StoreError> {
    let exists = db
        .one(
            "SELECT EXISTS(SELECT 1 FROM companies WHERE id = ?1)",
            p![company.as_str()],
        )?
        .bool(0)?;
    if !exists {
        return Ok(());
    }
    let owners = db
        .one(
            "SELECT COUNT(*) FROM users
             WHERE company_id = ?1 AND kind = 'person' AND role = 'owner'",
            p![company.as_str()],
        )?
        .int(0)?;
    if owners == 0 {
        return Err(StoreError::Conflict(
            "a company must keep at least one owner".to_owned(),
        ));
    }
    Ok(())
}

fn affected(n: u64) -> Result<(), StoreError> {
    if n == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// The company row and its integrations.
fn apply_company(db: &mut dyn Sql, co: &str, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::CreateCompany(c) => {
            db.exec(
                "INSERT INTO companies (id, name, redact_private_audit, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                p![
                    c.id.as_str(),
                    &c.name,
                    c.redact_private_audit,
                    &ts(&c.created_at)
                ],
            )?;
        }
        Change::UpdateCompany(c) => affected(db.exec(
            "UPDATE companies SET name = ?2, redact_private_audit = ?3 WHERE id = ?1",
            p![c.id.as_str(), &c.name, c.redact_private_audit],
        )?)?,
        Change::SetIntegration(i) => {
            db.exec(
                "INSERT INTO integrations (company_id, kind, enabled, creators_can_register)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (company_id, kind) DO UPDATE
                 SET enabled = excluded.enabled, creators_can_register = excluded.creators_can_register",
                p![co, i.kind.as_str(), i.enabled, i.creators_can_register],
            )?;
        }
        // The other areas' changes: `apply_changes` sends each to its own function.
        _ => {}
    }
    Ok(())
}

/// Users, their tokens, groups and group membership.
fn apply_people(db: &mut dyn Sql, co: &str, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::CreateUser(u) => {
            db.exec(
                "INSERT INTO users (id, company_id, kind, email, name, role, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                p![
                    u.id.as_str(),
                    co,
                    u.kind.as_str(),
                    &u.email,
                    &u.name,
                    u.role.as_str(),
                    &ts(&u.created_at)
                ],
            )?;
        }
        Change::SetUserRole { user_id, role } => affected(db.exec(
            "UPDATE users SET role = ?3 WHERE id = ?1 AND company_id = ?2",
            p![user_id.as_str(), co, role.as_str()],
        )?)?,
        Change::DeleteUser { user_id } => {
            let owns = db
                .one(
                    "SELECT EXISTS(SELECT 1 FROM apps WHERE owner_id = ?1)
                         OR EXISTS(SELECT 1 FROM datasources WHERE owner_id = ?1)",
                    p![user_id.as_str()],
                )?
                .bool(0)?;
            if owns {
                return Err(StoreError::Conflict(
                    "the user still owns apps or datasources: transfer them first".to_owned(),
                ));
            }
            db.exec(
                "DELETE FROM members WHERE principal_id = ?1",
                p![user_id.as_str()],
            )?;
            affected(db.exec(
                "DELETE FROM users WHERE id = ?1 AND company_id = ?2",
                p![user_id.as_str(), co],
            )?)?;
        }
        Change::CreateToken(t) => {
            db.exec(
                "INSERT INTO tokens (id, company_id, user_id, name, hash, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                p![
                    t.id.as_str(),
                    co,
                    t.user_id.as_str(),
                    &t.name,
                    &t.hash[..],
                    &ts(&t.created_at),
                    &t.expires_at.as_ref().map(ts)
                ],
            )?;
        }
        Change::RevokeToken { token_id } => affected(db.exec(
            "DELETE FROM tokens WHERE id = ?1 AND company_id = ?2",
            p![token_id.as_str(), co],
        )?)?,
        Change::CreateGroup(g) => {
            db.exec(
                "INSERT INTO groups (id, company_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                p![g.id.as_str(), co, &g.name, &ts(&g.created_at)],
            )?;
        }
        Change::DeleteGroup { group_id } => {
            db.exec(
                "DELETE FROM members WHERE principal_id = ?1",
                p![group_id.as_str()],
            )?;
            affected(db.exec(
                "DELETE FROM groups WHERE id = ?1 AND company_id = ?2",
                p![group_id.as_str(), co],
            )?)?;
        }
        Change::AddGroupMember { group_id, user_id } => {
            db.exec(
                "INSERT INTO group_members (group_id, user_id) VALUES (?1, ?2)
                 ON CONFLICT DO NOTHING",
                p![group_id.as_str(), user_id.as_str()],
            )?;
        }
        Change::RemoveGroupMember { group_id, user_id } => {
            db.exec(
                "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2",
                p![group_id.as_str(), user_id.as_str()],
            )?;
        }
        // The other areas' changes: `apply_changes` sends each to its own function.
        _ => {}
    }
    Ok(())
}

/// Only while unset: a policy an admin edited in the meantime wins.
fn fill_default_schema_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "UPDATE datasources SET policy = json_set(policy, '$.default_schema', ?3)
             WHERE id = ?1 AND company_id = ?2
               AND json_extract(policy, '$.default_schema') IS NULL"
        }
        Dialect::Postgres => {
            "UPDATE datasources
                SET policy = jsonb_set(policy::jsonb, '{default_schema}', to_jsonb(?3::text))::text
             WHERE id = ?1 AND company_id = ?2
               AND (policy::jsonb ->> 'default_schema') IS NULL"
        }
    }
}

/// Datasources, apps and which datasources an app has.
fn apply_objects(db: &mut dyn Sql, co: &str, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::PutDatasource { ds, is_new } => {
            let conn = serde_json::to_string(&ds.connection)
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let policy = serde_json::to_string(&ds.policy)
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let (updated_at, created_at) = (ts(&ds.updated_at), ts(&ds.created_at));
            // What an update sets first, then what only an insert does.
            let row = p![
                ds.id.as_str(),
                co,
                &ds.name,
                &ds.description,
                ds.visibility.as_str(),
                ds.owner_id.as_str(),
                &conn,
                &ds.password_enc,
                &policy,
                ds.pool_max_size as i64,
                ds.generation as i64,
                &updated_at,
                &ds.tls_client_key_enc,
                ds.kind.as_str(),
                &created_at
            ];
            if *is_new {
                db.exec(
                    "INSERT INTO datasources (id, company_id, name, description, visibility,
                        owner_id, connection, password_enc, policy, pool_max_size, generation,
                        updated_at, tls_client_key_enc, kind, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                    row,
                )?;
            } else {
                affected(db.exec(
                    "UPDATE datasources SET name = ?3, description = ?4, visibility = ?5,
                        owner_id = ?6, connection = ?7, password_enc = ?8, policy = ?9,
                        pool_max_size = ?10, generation = ?11, updated_at = ?12,
                        tls_client_key_enc = ?13
                     WHERE id = ?1 AND company_id = ?2",
                    &row[..13],
                )?)?;
            }
        }
        Change::FillDefaultSchema { id, schema } => {
            let sql = fill_default_schema_sql(db.dialect());
            db.exec(sql, p![id.as_str(), co, schema])?;
        }
        Change::DeleteDatasource { id } => {
            db.exec("DELETE FROM members WHERE object_id = ?1", p![id.as_str()])?;
            affected(db.exec(
                "DELETE FROM datasources WHERE id = ?1 AND company_id = ?2",
                p![id.as_str(), co],
            )?)?;
        }
        Change::PutApp { app, is_new } => {
            let (updated_at, created_at) = (ts(&app.updated_at), ts(&app.created_at));
            // What an update sets first, then what only an insert does.
            let row = p![
                app.id.as_str(),
                co,
                &app.name,
                &app.description,
                app.visibility.as_str(),
                app.owner_id.as_str(),
                &updated_at,
                &created_at
            ];
            if *is_new {
                db.exec(
                    "INSERT INTO apps (id, company_id, name, description, visibility, owner_id,
                        updated_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    row,
                )?;
            } else {
                affected(db.exec(
                    "UPDATE apps SET name = ?3, description = ?4, visibility = ?5, owner_id = ?6,
                        updated_at = ?7 WHERE id = ?1 AND company_id = ?2",
                    &row[..7],
                )?)?;
            }
        }
        Change::DeleteApp { id } => {
            db.exec("DELETE FROM members WHERE object_id = ?1", p![id.as_str()])?;
            affected(db.exec(
                "DELETE FROM apps WHERE id = ?1 AND company_id = ?2",
                p![id.as_str(), co],
            )?)?;
        }
        Change::Attach {
            app_id,
            datasource_id,
            by,
        } => {
            db.exec(
                "INSERT INTO app_datasources (app_id, datasource_id, attached_by, seq)
                 VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM app_datasources))
                 ON CONFLICT DO NOTHING",
                p![app_id.as_str(), datasource_id.as_str(), by.as_str()],
            )?;
        }
        Change::Detach {
            app_id,
            datasource_id,
        } => {
            db.exec(
                "DELETE FROM app_datasources WHERE app_id = ?1 AND datasource_id = ?2",
                p![app_id.as_str(), datasource_id.as_str()],
            )?;
        }
        // The other areas' changes: `apply_changes` sends each to its own function.
        _ => {}
    }
    Ok(())
}

/// Roles on apps and datasources.
fn apply_sharing(db: &mut dyn Sql, co: &str, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::SetMember {
            object_id,
            principal,
            role,
        } => {
            db.exec(
                "INSERT INTO members (company_id, object_id, principal_id, principal_kind, role)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (object_id, principal_id) DO UPDATE SET role = excluded.role",
                p![
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
            db.exec(
                "DELETE FROM members WHERE object_id = ?1 AND principal_id = ?2",
                p![object_id, principal.as_str()],
            )?;
        }
        // The other areas' changes: `apply_changes` sends each to its own function.
        _ => {}
    }
    Ok(())
}

/// What a store says when the master key does not open its secrets.
pub const WRONG_KEY: &str = "the master key does not decrypt this store's secrets; every replica \
     must run with the same SLUICE_MASTER_KEY";

/// The associated data of the key-check value, bound to nothing a datasource could be.
const KEY_CHECK_AAD: &str = "sluice store key check";

/// Refuses a master key that does not open this store's secrets: one stored datasource password,
/// and the sealed key-check value when the backend keeps one (`key_check` names its table; a
/// store without the row gets one sealed with this key, so a store with no datasource yet still
/// refuses a replica started with another key).
pub(super) fn check_master_key(
    db: &mut dyn Sql,
    key: &MasterKey,
    key_check: Option<&str>,
) -> Result<(), StoreError> {
    let wrong = || StoreError::Internal(WRONG_KEY.to_owned());
    let stored = db.row(
        "SELECT id, password_enc FROM datasources WHERE password_enc IS NOT NULL LIMIT 1",
        &[],
    )?;
    if let Some(r) = stored {
        let id = DatasourceId(r.text(0)?);
        let sealed = r.opt_bytes(1)?.unwrap_or_default();
        if key
            .decrypt(&sealed, &SecretField::Password.aad(&id))
            .is_err()
        {
            return Err(wrong());
        }
    }
    let Some(table) = key_check else {
        return Ok(());
    };
    let select = format!("SELECT sealed FROM {table} WHERE id = 1");
    if db.row(&select, &[])?.is_none() {
        // The first start seals one; of two replicas starting at once, one row wins and the
        // other replica checks its key against it below.
        let sealed = key.encrypt(b"sluice", KEY_CHECK_AAD);
        db.exec(
            &format!("INSERT INTO {table} (id, sealed) VALUES (1, ?1) ON CONFLICT DO NOTHING"),
            p![&sealed[..]],
        )?;
    }
    let sealed = db.one(&select, &[])?.opt_bytes(0)?.unwrap_or_default();
    if key.decrypt(&sealed, KEY_CHECK_AAD).is_err() {
        return Err(wrong());
    }
    Ok(())
}
