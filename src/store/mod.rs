//! The control plane: companies, users, tokens, groups, datasources, apps and their sharing.
//!
//! All writes go through one interface, [`Change`], applied atomically with their audit records by
//! a [`Backend`] (the embedded SQLite file, or PostgreSQL shared by several replicas). Reads are
//! served from an in-memory [`View`], one immutable snapshot per company, swapped after every
//! committed write, so the query path never waits on the store.

pub mod copy;
pub mod crypto;
pub mod postgres;
mod sql;
mod sqlite;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::audit::AuditRecord;
use crate::datasource::tls::{TlsMode, TlsSettings};
use crate::datasource::{Connection, DatasourceSpec, Secret};
use crate::model::*;
pub use crypto::MasterKey;
pub use sql::WRONG_KEY;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Company {
    pub id: CompanyId,
    pub name: String,
    pub redact_private_audit: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct User {
    pub id: UserId,
    #[serde(skip)]
    pub company_id: CompanyId,
    pub kind: UserKind,
    pub email: Option<String>,
    pub name: String,
    /// For API users this is always `consumer` and means nothing: they are governed by explicit
    /// app grants only.
    pub role: CompanyRole,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    pub id: GroupId,
    #[serde(skip)]
    pub company_id: CompanyId,
    pub name: String,
    pub members: Vec<UserId>,
    pub created_at: DateTime<Utc>,
}

/// The connection settings as the API shows them: never a password.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// SQLite only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// PostgreSQL and MySQL: how the connection is encrypted. Every network datasource has it
    /// (those stored before TLS existed were migrated to an explicit `disable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<StoredTls>,
}

/// A datasource's TLS settings as stored and shown: all but the client key, which is sealed apart
/// (`Datasource::tls_client_key_enc`) like the password.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredTls {
    pub mode: TlsMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
}

/// What a sealed secret is. The associated data of its ciphertext binds it to its datasource and
/// to its role, so neither a ciphertext copied from another row nor the password's ciphertext put
/// in the client key's place (or the other way round) decrypts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretField {
    Password,
    TlsClientKey,
}

impl SecretField {
    fn aad(self, ds: &DatasourceId) -> String {
        match self {
            // As passwords were sealed from the start: the id alone.
            SecretField::Password => ds.as_str().to_owned(),
            // Ids are `ds_<hex>`: no id ends like this, so no password's binding equals it.
            SecretField::TlsClientKey => format!("{}#connection.tls.client_key_pem", ds.as_str()),
        }
    }
}

/// A datasource's secrets as stored, each sealed with the master key (see [`SecretField`]).
#[derive(Clone, Copy, Default)]
pub struct SealedSecrets<'a> {
    pub password: Option<&'a [u8]>,
    pub tls_client_key: Option<&'a [u8]>,
}

#[derive(Clone, Debug)]
pub struct Datasource {
    pub id: DatasourceId,
    pub company_id: CompanyId,
    pub name: String,
    pub description: String,
    pub kind: DatasourceKind,
    pub visibility: Visibility,
    pub owner_id: UserId,
    pub connection: ConnectionSettings,
    /// Encrypted with the master key, bound to the datasource id.
    pub password_enc: Option<Vec<u8>>,
    /// The mutual-TLS client key (`connection.tls.client_key_pem`), encrypted with the master key,
    /// bound to the datasource id and to being the client key. Write-only like the password.
    pub tls_client_key_enc: Option<Vec<u8>>,
    pub policy: ScopePolicy,
    pub pool_max_size: usize,
    /// Bumped when connection or pool settings change, so the pool is rebuilt.
    pub generation: u64,
    pub members: Vec<(PrincipalId, ObjectRole)>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What the pool registry needs, with the password decrypted once at load time.
    pub spec: Arc<DatasourceSpec>,
}

impl Datasource {
    /// Who may do what with it, for the permission engine.
    pub fn acl(&self) -> crate::permission::Acl<'_> {
        crate::permission::Acl {
            owner_id: &self.owner_id,
            visibility: self.visibility,
            members: &self.members,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct App {
    pub id: AppId,
    pub company_id: CompanyId,
    pub name: String,
    pub description: String,
    pub visibility: Visibility,
    pub owner_id: UserId,
    pub members: Vec<(PrincipalId, ObjectRole)>,
    /// Attached datasources in attachment order.
    pub datasources: Vec<DatasourceId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl App {
    /// Who may do what with it, for the permission engine.
    pub fn acl(&self) -> crate::permission::Acl<'_> {
        crate::permission::Acl {
            owner_id: &self.owner_id,
            visibility: self.visibility,
            members: &self.members,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Integration {
    pub kind: DatasourceKind,
    pub enabled: bool,
    pub creators_can_register: bool,
}

impl Integration {
    /// Integrations start off; creators may register once an admin turns one on.
    pub fn default_for(kind: DatasourceKind) -> Self {
        Integration {
            kind,
            enabled: false,
            creators_can_register: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Token {
    pub id: TokenId,
    pub user_id: UserId,
    pub company_id: CompanyId,
    pub name: Option<String>,
    /// SHA-256 of the token's secret part.
    pub hash: [u8; 32],
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// One company's state, immutable once built.
#[derive(Debug, Default)]
pub struct CompanyView {
    pub company: Option<Company>,
    pub users: HashMap<UserId, User>,
    pub groups: HashMap<GroupId, Group>,
    /// The groups each user belongs to.
    pub user_groups: HashMap<UserId, Vec<GroupId>>,
    pub apps: HashMap<AppId, App>,
    pub datasources: HashMap<DatasourceId, Datasource>,
    pub integrations: HashMap<DatasourceKind, Integration>,
    pub tokens: HashMap<TokenId, Token>,
}

impl CompanyView {
    pub fn company(&self) -> &Company {
        // A view is only built for a company row that exists.
        self.company.as_ref().expect("company view without company")
    }

    pub fn integration(&self, kind: DatasourceKind) -> Integration {
        self.integrations
            .get(&kind)
            .copied()
            .unwrap_or_else(|| Integration::default_for(kind))
    }

    pub fn groups_of(&self, user: &UserId) -> &[GroupId] {
        self.user_groups.get(user).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn owner_count(&self) -> usize {
        self.users
            .values()
            .filter(|u| u.kind == UserKind::Person && u.role == CompanyRole::Owner)
            .count()
    }
}

/// Every company's view plus the global token index (token ids are global; the token names its
/// company).
#[derive(Debug, Default)]
pub struct View {
    pub companies: HashMap<CompanyId, Arc<CompanyView>>,
    pub token_company: HashMap<TokenId, CompanyId>,
}

impl View {
    pub fn company(&self, id: &CompanyId) -> Option<&Arc<CompanyView>> {
        self.companies.get(id)
    }
}

/// A new token to store: the hash only; the plain token was shown once to its owner.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub token: Token,
}

/// Every write the control plane knows. A backend applies a list of them atomically, with the
/// audit records that describe them, in one transaction.
#[derive(Clone, Debug)]
pub enum Change {
    CreateCompany(Company),
    UpdateCompany(Company),
    CreateUser(User),
    SetUserRole {
        user_id: UserId,
        role: CompanyRole,
    },
    DeleteUser {
        user_id: UserId,
    },
    CreateToken(Token),
    RevokeToken {
        token_id: TokenId,
    },
    CreateGroup(Group),
    DeleteGroup {
        group_id: GroupId,
    },
    AddGroupMember {
        group_id: GroupId,
        user_id: UserId,
    },
    RemoveGroupMember {
        group_id: GroupId,
        user_id: UserId,
    },
    /// Create or replace a datasource row (members are separate changes).
    PutDatasource {
        ds: Box<Datasource>,
        is_new: bool,
    },
    DeleteDatasource {
        id: DatasourceId,
    },
    /// Records the schema unqualified names resolve in, as read from the server, in a
    /// datasource's policy that names none (never overwriting one an admin set meanwhile).
    FillDefaultSchema {
        id: DatasourceId,
        schema: String,
    },
    PutApp {
        app: App,
        is_new: bool,
    },
    DeleteApp {
        id: AppId,
    },
    Attach {
        app_id: AppId,
        datasource_id: DatasourceId,
        by: UserId,
    },
    Detach {
        app_id: AppId,
        datasource_id: DatasourceId,
    },
    /// Grant (or change) an object role on an app or datasource.
    SetMember {
        object_id: String,
        principal: PrincipalId,
        role: ObjectRole,
    },
    RemoveMember {
        object_id: String,
        principal: PrincipalId,
    },
    SetIntegration(Integration),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness or invariant rule refused the change (duplicate name, last owner…).
    #[error("{0}")]
    Conflict(String),
    /// The object the change names does not exist (it was deleted concurrently).
    #[error("not found")]
    NotFound,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store: {0}")]
    Internal(String),
}

impl crate::code::Coded for StoreError {
    fn code(&self) -> crate::code::Code {
        use crate::code::Code;
        match self {
            StoreError::Conflict(_) => Code::Conflict,
            StoreError::NotFound => Code::NotFound,
            StoreError::Unavailable(_) => Code::Unavailable,
            StoreError::Internal(_) => Code::Internal,
        }
    }

    /// What the store says is for the log; the client reads a fixed sentence.
    fn message(&self) -> String {
        match self {
            StoreError::Conflict(m) => m.clone(),
            StoreError::NotFound => "no such object".into(),
            StoreError::Unavailable(_) => {
                "the control-plane store is unavailable; retry shortly".into()
            }
            StoreError::Internal(_) => "an internal error occurred; it has been logged".into(),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, msg) = &e {
            match f.code {
                rusqlite::ErrorCode::ConstraintViolation => {
                    let m = msg.clone().unwrap_or_default();
                    return StoreError::Conflict(if m.contains("UNIQUE") {
                        sql::DUPLICATE.to_owned()
                    } else {
                        sql::CONFLICTS.to_owned()
                    });
                }
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                    return StoreError::Unavailable("the store is busy".to_owned());
                }
                _ => {}
            }
        }
        StoreError::Internal(e.to_string())
    }
}

/// Where the control plane is kept durably. Every method is synchronous and may block on I/O:
/// callers hold the store's mutex and run on a blocking thread.
///
/// Versions: every committed change set bumps one counter (`meta.version`); a store compares it
/// with the last one it saw to notice writes by other processes or replicas.
pub trait Backend: Send {
    /// Applies `changes` and their audit records in one transaction, checks the invariants
    /// inside it, bumps the version and commits. Returns the version the transaction found
    /// before its own bump (so the new version is that plus one).
    fn apply(
        &mut self,
        company: &CompanyId,
        changes: &[Change],
        audit: &[AuditRecord],
    ) -> Result<i64, StoreError>;

    /// Every company's view.
    fn load_all(&mut self, key: &MasterKey) -> Result<View, StoreError>;

    /// One company's view; [`StoreError::NotFound`] when it does not exist.
    fn load_company(&mut self, id: &CompanyId, key: &MasterKey) -> Result<CompanyView, StoreError>;

    /// The current version counter.
    fn version(&mut self) -> Result<i64, StoreError>;

    /// Readiness: the backend answers a trivial query (and is still the store it opened).
    fn ping(&mut self) -> Result<(), StoreError>;

    /// Refuses a master key that does not decrypt the secrets this store holds (the message is
    /// [`WRONG_KEY`]), so a replica started with another key stops at once instead of serving
    /// datasources it cannot connect to.
    fn check_key(&mut self, key: &MasterKey) -> Result<(), StoreError>;

    /// Reads audit records (admin route; not the query hot path).
    fn audit_query(
        &mut self,
        filter: &crate::audit::AuditFilter,
    ) -> Result<crate::audit::AuditPage, crate::audit::AuditError>;
}

/// The control-plane store: the durable backend plus the in-memory view it keeps current.
pub struct Store {
    backend: Mutex<Box<dyn Backend>>,
    /// The version this store last saw or wrote; changed only while holding `backend`.
    seen_version: AtomicI64,
    view: ArcSwap<View>,
    key: Arc<MasterKey>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (creating if needed) the store file, applies migrations and loads the view.
    pub fn open(path: &Path, key: MasterKey) -> Result<Store, StoreError> {
        Self::with_backend(Box::new(sqlite::Backend::open(path)?), key)
    }

    /// Opens the PostgreSQL store at `url` (`postgres://user:pass@host:port/db?sslmode=...`, see
    /// [`postgres::connect`]), applies its migrations (once, whichever replica gets there first)
    /// and loads the view. Refuses a `key` that does not decrypt the secrets already stored.
    pub fn open_postgres(url: &str, key: MasterKey) -> Result<Store, StoreError> {
        Self::with_backend(Box::new(postgres::Backend::open(url)?), key)
    }

    /// Builds a store over an opened (and migrated) backend: checks the key, loads the view.
    pub fn with_backend(
        mut backend: Box<dyn Backend>,
        key: MasterKey,
    ) -> Result<Store, StoreError> {
        backend.check_key(&key)?;
        let key = Arc::new(key);
        let seen = backend.version()?;
        let view = backend.load_all(&key)?;
        Ok(Store {
            backend: Mutex::new(backend),
            seen_version: AtomicI64::new(seen),
            view: ArcSwap::from_pointee(view),
            key,
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Box<dyn Backend>>, StoreError> {
        self.backend
            .lock()
            .map_err(|_| StoreError::Internal("store lock poisoned".to_owned()))
    }

    /// The current snapshot: no lock, no I/O.
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// Applies `changes` and their audit records in one transaction, then refreshes the company's
    /// view. Returns after the commit: an answered change is durable.
    pub fn apply(
        &self,
        company: &CompanyId,
        changes: Vec<Change>,
        audit: Vec<AuditRecord>,
    ) -> Result<Arc<CompanyView>, StoreError> {
        let mut backend = self.lock()?;
        let before = backend.apply(company, &changes, &audit)?;
        // Only our own write came in since we last looked: the view stays current. Otherwise
        // leave the seen version behind so the next poll reloads what the other process wrote.
        let _ = self.seen_version.compare_exchange(
            before,
            before + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        let cv = Arc::new(backend.load_company(company, &self.key)?);
        let old = self.view.load_full();
        let mut companies = old.companies.clone();
        let mut token_company: HashMap<TokenId, CompanyId> = old
            .token_company
            .iter()
            .filter(|(_, c)| *c != company)
            .map(|(t, c)| (t.clone(), c.clone()))
            .collect();
        for t in cv.tokens.keys() {
            token_company.insert(t.clone(), company.clone());
        }
        companies.insert(company.clone(), cv.clone());
        self.view.store(Arc::new(View {
            companies,
            token_company,
        }));
        Ok(cv)
    }

    /// Reloads everything when another process (the `sluice company create` CLI, or another
    /// replica) wrote to the store since this one last looked. Cheap when nothing changed.
    pub fn refresh_if_changed(&self) -> Result<bool, StoreError> {
        let mut backend = self.lock()?;
        let current = backend.version()?;
        if current == self.seen_version.load(Ordering::Acquire) {
            return Ok(false);
        }
        // Note the version before loading: a write that lands during the load is seen next time.
        let view = backend.load_all(&self.key)?;
        self.seen_version.store(current, Ordering::Release);
        self.view.store(Arc::new(view));
        Ok(true)
    }

    /// Readiness: the store answers a trivial query.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.lock()?.ping()
    }

    /// Reads audit records (admin route; not the query hot path).
    pub fn audit_query(
        &self,
        filter: &crate::audit::AuditFilter,
    ) -> Result<crate::audit::AuditPage, crate::audit::AuditError> {
        let mut backend = self
            .backend
            .lock()
            .map_err(|_| crate::audit::AuditError::Closed)?;
        backend.audit_query(filter)
    }

    /// Encrypts a datasource password for storage.
    pub fn seal_password(&self, ds: &DatasourceId, password: &str) -> Vec<u8> {
        seal(&self.key, SecretField::Password, ds, password)
    }

    /// Encrypts a datasource's mutual-TLS client key (PEM) for storage.
    pub fn seal_client_key(&self, ds: &DatasourceId, key_pem: &Secret) -> Vec<u8> {
        seal(&self.key, SecretField::TlsClientKey, ds, key_pem.expose())
    }
}

fn seal(key: &MasterKey, field: SecretField, ds: &DatasourceId, plain: &str) -> Vec<u8> {
    key.encrypt(plain.as_bytes(), &field.aad(ds))
}

/// A sealed secret decrypted, `None` when absent or when it does not decrypt as `field` of `ds`
/// (another key, another row, or another field's ciphertext).
fn unseal(
    key: &MasterKey,
    field: SecretField,
    ds: &DatasourceId,
    sealed: Option<&[u8]>,
) -> Option<Secret> {
    let plain = key.decrypt(sealed?, &field.aad(ds)).ok()?;
    Some(Secret::new(String::from_utf8_lossy(&plain).into_owned()))
}

/// The settings the drivers get: the stored ones with the client key decrypted. A network
/// datasource without stored settings cannot come from this version (the migration gave every
/// older one `disable`); it is read as what it was, plain TCP.
fn tls_settings(
    key: &MasterKey,
    ds: &DatasourceId,
    stored: Option<&StoredTls>,
    sealed_key: Option<&[u8]>,
) -> TlsSettings {
    let Some(t) = stored else {
        return TlsSettings::disabled();
    };
    TlsSettings {
        mode: t.mode,
        ca_pem: t.ca_pem.clone(),
        client_cert_pem: t.client_cert_pem.clone(),
        client_key_pem: unseal(key, SecretField::TlsClientKey, ds, sealed_key),
    }
}

/// Builds the registry's spec from a stored row (secrets decrypted here, once per load).
pub(crate) fn build_spec(
    ds_id: &DatasourceId,
    kind: DatasourceKind,
    conn: &ConnectionSettings,
    sealed: SealedSecrets<'_>,
    pool_max_size: usize,
    generation: u64,
    key: &MasterKey,
) -> DatasourceSpec {
    let password = unseal(key, SecretField::Password, ds_id, sealed.password).unwrap_or_default();
    let connection = match kind {
        DatasourceKind::Sqlite => Connection::Sqlite {
            path: conn.path.clone().unwrap_or_default().into(),
        },
        _ => Connection::Network {
            host: conn.host.clone().unwrap_or_default(),
            port: conn.port.unwrap_or(match kind {
                DatasourceKind::Mysql => 3306,
                _ => 5432,
            }),
            database: conn.database.clone().unwrap_or_default(),
            user: conn.user.clone().unwrap_or_default(),
            password,
            options: conn.options.clone(),
            tls: tls_settings(key, ds_id, conn.tls.as_ref(), sealed.tls_client_key),
        },
    };
    DatasourceSpec {
        id: ds_id.clone(),
        kind,
        connection,
        pool_max_size,
        generation,
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::testutil::{company, key, on_both_backends};
    use super::*;
    use crate::audit::Outcome;
    use chrono::Utc;

    fn group(cid: &CompanyId, name: &str) -> Group {
        Group {
            id: GroupId::generate(),
            company_id: cid.clone(),
            name: name.into(),
            members: vec![],
            created_at: Utc::now(),
        }
    }

    /// A datasource row with a sealed password and client key.
    fn datasource(store: &Store, cid: &CompanyId, owner: &UserId, tls: StoredTls) -> Datasource {
        let id = DatasourceId::generate();
        let conn = ConnectionSettings {
            host: Some("db.example.com".into()),
            port: Some(5432),
            database: Some("d".into()),
            user: Some("u".into()),
            tls: Some(tls),
            ..Default::default()
        };
        let enc = store.seal_password(&id, "s3cret-pw-xyz");
        let key_enc = store.seal_client_key(&id, &Secret::new("s3cret-key-xyz"));
        let sealed = SealedSecrets {
            password: Some(&enc),
            tls_client_key: Some(&key_enc),
        };
        let spec = build_spec(
            &id,
            DatasourceKind::Postgres,
            &conn,
            sealed,
            4,
            1,
            store.key(),
        );
        let now = Utc::now();
        Datasource {
            id,
            company_id: cid.clone(),
            name: "pg".into(),
            description: String::new(),
            kind: DatasourceKind::Postgres,
            visibility: Visibility::Private,
            owner_id: owner.clone(),
            connection: conn,
            password_enc: Some(enc),
            tls_client_key_enc: Some(key_enc),
            policy: ScopePolicy::default(),
            pool_max_size: 4,
            generation: 1,
            members: vec![],
            created_at: now,
            updated_at: now,
            spec: Arc::new(spec),
        }
    }

    fn put(store: &Store, cid: &CompanyId, ds: Datasource) {
        let change = Change::PutDatasource {
            ds: Box::new(ds),
            is_new: true,
        };
        store.apply(cid, vec![change], vec![]).unwrap();
    }

    on_both_backends! {
        fn a_write_is_visible_in_the_view_at_once_and_after_reopening(db) {
            let store = db.open();
            let (cid, oid) = company(&store, "acme");
            assert_eq!(
                store.view().company(&cid).unwrap().users[&oid].role,
                CompanyRole::Owner
            );
            drop(store);
            let store = db.open();
            assert!(store.view().company(&cid).unwrap().users.contains_key(&oid));
        }
    }

    on_both_backends! {
        fn the_last_owner_rule_holds_inside_the_transaction(db) {
            let store = db.open();
            let (cid, oid) = company(&store, "acme");
            let err = store
                .apply(
                    &cid,
                    vec![Change::SetUserRole {
                        user_id: oid.clone(),
                        role: CompanyRole::Admin,
                    }],
                    vec![],
                )
                .unwrap_err();
            assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
            assert_eq!(
                store.view().company(&cid).unwrap().users[&oid].role,
                CompanyRole::Owner,
                "nothing changed"
            );
        }
    }

    on_both_backends! {
        fn duplicate_names_are_conflicts_and_the_audit_record_rolls_back_with_the_change(db) {
            let store = db.open();
            let (cid, oid) = company(&store, "acme");
            let rec = || {
                AuditRecord::new(
                    cid.clone(),
                    Some(oid.clone()),
                    "group.create",
                    Outcome::Allowed,
                )
            };
            store
                .apply(&cid, vec![Change::CreateGroup(group(&cid, "analysts"))], vec![rec()])
                .unwrap();
            let err = store
                .apply(&cid, vec![Change::CreateGroup(group(&cid, "analysts"))], vec![rec()])
                .unwrap_err();
            assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
            let page = store
                .audit_query(&crate::audit::AuditFilter::new(cid.clone()))
                .unwrap();
            assert_eq!(page.items.len(), 1, "the refused change left no audit record");
        }
    }

    on_both_backends! {
        /// Both backends answer a refused change in the same words.
        fn conflicts_read_the_same_on_every_backend(db) {
            let store = db.open();
            let (cid, _) = company(&store, "acme");
            store
                .apply(&cid, vec![Change::CreateGroup(group(&cid, "analysts"))], vec![])
                .unwrap();
            let text = |changes: Vec<Change>| match store.apply(&cid, changes, vec![]) {
                Err(StoreError::Conflict(m)) => m,
                other => panic!("{other:?}"),
            };
            let dup = text(vec![Change::CreateGroup(group(&cid, "analysts"))]);
            assert_eq!(dup, "an object with that name already exists");
            // Emails are unique whatever their case.
            let user = |email: &str| User {
                id: UserId::generate(),
                company_id: cid.clone(),
                kind: UserKind::Person,
                email: Some(email.into()),
                name: "u".into(),
                role: CompanyRole::Consumer,
                created_at: Utc::now(),
            };
            let dup = text(vec![Change::CreateUser(user("Owner@ACME.test"))]);
            assert_eq!(dup, "an object with that name already exists");
            // A token of a user that does not exist breaks a foreign key.
            let token = Token {
                id: TokenId::generate(),
                user_id: UserId::generate(),
                company_id: cid.clone(),
                name: None,
                hash: [7u8; 32],
                created_at: Utc::now(),
                expires_at: None,
            };
            let other = text(vec![Change::CreateToken(token)]);
            assert_eq!(other, "the change conflicts with existing data");
        }
    }

    on_both_backends! {
        fn a_change_waits_for_another_connections_write_instead_of_failing(db) {
            // SQLite: the audit writer (and a lone query committing its own record) write to the
            // same file on their own connections. PostgreSQL: another replica's change holds the
            // version row. A change must wait for their lock, not answer "unavailable".
            let store = db.open();
            let holder = db.hold(
                "UPDATE meta SET value = value WHERE key = 'version'",
                std::time::Duration::from_millis(300),
            );
            let (cid, _) = company(&store, "acme");
            holder.join().unwrap();
            assert!(store.view().company(&cid).is_some());
        }
    }

    on_both_backends! {
        /// Another process on SQLite (the CLI); another replica on PostgreSQL.
        fn a_write_by_another_process_is_picked_up_by_refresh(db) {
            let server = db.open();
            assert!(!server.refresh_if_changed().unwrap(), "nothing changed yet");
            let cli = db.open();
            let (cid, _) = company(&cli, "other");
            assert!(server.view().company(&cid).is_none());
            assert!(server.refresh_if_changed().unwrap());
            assert!(server.view().company(&cid).is_some());
            assert!(
                !server.refresh_if_changed().unwrap(),
                "its own state is now current"
            );
            // An outside write followed by one of the server's own: the outside one is not
            // skipped.
            let (cid2, _) = company(&cli, "third");
            let (own, _) = company(&server, "own");
            assert!(server.view().company(&own).is_some());
            assert!(server.refresh_if_changed().unwrap());
            assert!(server.view().company(&cid2).is_some());
            assert!(!server.refresh_if_changed().unwrap());
        }
    }

    on_both_backends! {
        fn a_datasource_password_and_client_key_are_sealed_and_decrypted_only_into_the_spec(db) {
            let store = db.open();
            let (cid, oid) = company(&store, "acme");
            let tls = StoredTls {
                mode: TlsMode::VerifyCa,
                ca_pem: Some("the CA".into()),
                client_cert_pem: Some("the certificate".into()),
            };
            let ds = datasource(&store, &cid, &oid, tls.clone());
            let id = ds.id.clone();
            put(&store, &cid, ds);
            drop(store);
            // Read back from the database, not from the view the write produced.
            let store = db.open();
            let view = store.view();
            let loaded = &view.company(&cid).unwrap().datasources[&id];
            assert_eq!(loaded.connection.tls.as_ref(), Some(&tls));
            match &loaded.spec.connection {
                Connection::Network { password, tls, .. } => {
                    assert_eq!(password.expose(), "s3cret-pw-xyz");
                    assert_eq!(tls.mode, TlsMode::VerifyCa);
                    assert_eq!(tls.ca_pem.as_deref(), Some("the CA"));
                    assert_eq!(tls.client_cert_pem.as_deref(), Some("the certificate"));
                    let k = tls.client_key_pem.as_ref().map(Secret::expose);
                    assert_eq!(k, Some("s3cret-key-xyz"));
                }
                other => panic!("{other:?}"),
            }
            assert!(
                !format!("{loaded:?}").contains("s3cret"),
                "Debug shows no secret"
            );
            drop(store);
            for bytes in db.datasource_bytes() {
                for secret in [&b"s3cret-pw-xyz"[..], b"s3cret-key-xyz"] {
                    assert!(!bytes.windows(secret.len()).any(|w| w == secret));
                }
            }
        }
    }

    on_both_backends! {
        fn a_store_refuses_a_master_key_that_does_not_decrypt_its_secrets(db) {
            let store = db.open();
            let (cid, oid) = company(&store, "acme");
            put(&store, &cid, datasource(&store, &cid, &oid, StoredTls::default()));
            drop(store);
            let other = MasterKey::from_bytes(&[9u8; 32]).unwrap();
            let err = db.open_with(other).unwrap_err();
            assert_eq!(
                err.to_string(),
                "store: the master key does not decrypt this store's secrets; every replica \
                 must run with the same SLUICE_MASTER_KEY"
            );
            assert!(db.open_with(key()).is_ok(), "the right key still opens it");
        }
    }

    #[test]
    fn a_password_ciphertext_cannot_stand_in_for_the_client_key_nor_the_other_way_round() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), key()).unwrap();
        let id = DatasourceId::generate();
        let pw = store.seal_password(&id, "pw");
        let ck = store.seal_client_key(&id, &Secret::new("client key"));
        let conn = ConnectionSettings {
            host: Some("db.example.com".into()),
            tls: Some(StoredTls {
                mode: TlsMode::VerifyFull,
                client_cert_pem: Some("cert".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = |password: &[u8], client_key: &[u8]| {
            let sealed = SealedSecrets {
                password: Some(password),
                tls_client_key: Some(client_key),
            };
            let spec = build_spec(&id, DatasourceKind::Mysql, &conn, sealed, 1, 1, store.key());
            match spec.connection {
                Connection::Network { password, tls, .. } => (
                    password.expose().to_owned(),
                    tls.client_key_pem.map(|k| k.expose().to_owned()),
                ),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(spec(&pw, &ck), ("pw".into(), Some("client key".into())));
        assert_eq!(
            spec(&ck, &pw),
            (String::new(), None),
            "swapped: neither decrypts"
        );
        // Bound to the row as well: another datasource's client key does not decrypt here.
        let other = store.seal_client_key(&DatasourceId::generate(), &Secret::new("other"));
        assert_eq!(spec(&pw, &other).1, None);
    }
}
