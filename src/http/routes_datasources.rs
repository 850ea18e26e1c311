//! Datasource routes: registration and editing of connection settings and scope policy, sharing,
//! ownership transfer, connection check and schema.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

use super::error::{ApiError, require};
use super::extract::Json;
use super::openapi as doc;
use super::sharing::{self, Kind, MemberBody, TransferBody};
use super::views::{self, ds_acl, find_ds, valid_name};
use super::{AppState, change_record};
use crate::datasource::tls::{self, TlsMode, TlsSettings};
use crate::datasource::{Connection, Secret};
use crate::identity::Caller;
use crate::model::*;
use crate::permission::{self, CompanyAction, DatasourceAction};
use crate::store::{Change, ConnectionSettings, Datasource, SealedSecrets, StoredTls, build_spec};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/datasources", get(list).post(create))
        .route(
            "/v1/datasources/{id}",
            get(get_one).patch(patch).delete(remove),
        )
        .route("/v1/datasources/{id}/members", get(list_members))
        .route(
            "/v1/datasources/{id}/members/{principal_id}",
            put(set_member).delete(remove_member),
        )
        .route("/v1/datasources/{id}/transfer", post(transfer))
        .route("/v1/datasources/{id}/check", post(check))
        .route("/v1/datasources/{id}/schema", get(schema))
}

/// The connection as a client sends it: the settings plus a write-only password.
#[derive(Deserialize, Clone, Default, utoipa::ToSchema)]
#[schema(as = ConnectionInput)]
#[serde(deny_unknown_fields)]
struct ConnectionBody {
    host: Option<String>,
    port: Option<u16>,
    database: Option<String>,
    user: Option<String>,
    /// Write-only: stored encrypted, never returned.
    password: Option<String>,
    #[serde(default)]
    options: std::collections::BTreeMap<String, String>,
    path: Option<String>,
    /// PostgreSQL and MySQL only. Create: absent means `{"mode": "verify-full"}`. PATCH: absent
    /// keeps the stored TLS settings; present replaces them (see `TlsInput`).
    tls: Option<TlsBody>,
}

impl ConnectionBody {
    /// Only `tls` is sent: a PATCH that changes the TLS settings alone, the rest kept.
    fn is_tls_only(&self) -> bool {
        self.tls.is_some()
            && self.host.is_none()
            && self.port.is_none()
            && self.database.is_none()
            && self.user.is_none()
            && self.password.is_none()
            && self.options.is_empty()
            && self.path.is_none()
    }
}

/// `connection.tls` as a client sends it. It is taken whole: a field left out is absent, never
/// the stored value, with one exception on PATCH: `client_key_pem` left out keeps the stored key
/// as long as `client_cert_pem` is sent unchanged (a new or removed certificate drops it).
#[derive(Deserialize, Clone, Default, utoipa::ToSchema)]
#[schema(as = TlsInput)]
#[serde(deny_unknown_fields)]
struct TlsBody {
    /// libpq's sslmode: `disable`, `require`, `verify-ca` or `verify-full`. Absent: `verify-full`.
    #[schema(value_type = Option<doc::TlsMode>)]
    mode: Option<String>,
    /// PEM bundle of the roots to trust (`verify-ca`, `verify-full`). Absent: the system's
    /// trusted roots.
    ca_pem: Option<String>,
    /// PEM certificate chain for mutual TLS; needs `client_key_pem`.
    client_cert_pem: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert_pem`. Write-only: stored
    /// encrypted, never returned, logged or audited; answers show `client_key_set`.
    client_key_pem: Option<String>,
}

/// Whether two PEM chains hold the same certificates: a form sends the stored PEM back with its
/// line endings changed (a browser's textarea turns CRLF into LF), which is no new certificate.
fn same_certs(a: &str, b: &str) -> bool {
    match (
        tls::parse_certs("client_cert_pem", a),
        tls::parse_certs("client_cert_pem", b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The TLS settings a create, or a PATCH that sends `connection.tls`, asks for.
struct TlsChange {
    stored: StoredTls,
    /// A key sent with the request, to seal.
    new_key: Option<Secret>,
    /// PATCH without a key and with the certificate unchanged: the stored key stays.
    keep_stored_key: bool,
}

/// Reads `connection.tls` (the default when absent) and judges it whole with the drivers' own
/// parser, so a malformed PEM or half a client identity is a 400 naming the field now rather
/// than a failed connection later. `current`: the stored settings and the decrypted stored key
/// (PATCH), for a key the body leaves out.
fn read_tls(
    body: Option<&TlsBody>,
    current: Option<(&StoredTls, Option<&Secret>)>,
) -> Result<TlsChange, ApiError> {
    let body = body.cloned().unwrap_or_default();
    let mode = match body.mode.as_deref() {
        None => TlsMode::default(),
        Some(m) => serde_json::from_value::<TlsMode>(json!(m)).map_err(|_| {
            ApiError::bad_request(
                "connection.tls.mode must be disable, require, verify-ca or verify-full",
            )
        })?,
    };
    let stored = StoredTls {
        mode,
        ca_pem: body.ca_pem,
        client_cert_pem: body.client_cert_pem,
    };
    let new_key = body.client_key_pem.map(Secret::new);
    let kept = match (&new_key, current, &stored.client_cert_pem) {
        (None, Some((old, old_key)), Some(cert))
            if old
                .client_cert_pem
                .as_deref()
                .is_some_and(|c| same_certs(c, cert)) =>
        {
            old_key.cloned()
        }
        _ => None,
    };
    let settings = TlsSettings {
        mode,
        ca_pem: stored.ca_pem.clone(),
        client_cert_pem: stored.client_cert_pem.clone(),
        client_key_pem: new_key.clone().or_else(|| kept.clone()),
    };
    // The error names the field and says why; it never quotes the PEM.
    tls::validate(&settings).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(TlsChange {
        stored,
        new_key,
        keep_stored_key: kept.is_some(),
    })
}

#[derive(Deserialize, Clone, Copy, utoipa::ToSchema)]
#[schema(as = PoolInput)]
#[serde(deny_unknown_fields)]
struct PoolBody {
    max_size: usize,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = CreateDatasource)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    description: String,
    kind: DatasourceKind,
    visibility: Option<Visibility>,
    connection: ConnectionBody,
    policy: Option<ScopePolicy>,
    pool: Option<PoolBody>,
}

/// Any subset of the create body. A `connection` sent replaces the stored one, except that a
/// password or a `tls` left out keeps the stored one (a new password replaces the old), and that
/// a `connection` of `tls` alone changes only the TLS settings. Any connection change (TLS
/// included) bumps the datasource's generation: its pool is rebuilt.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PatchDatasource)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    name: Option<String>,
    description: Option<String>,
    kind: Option<DatasourceKind>,
    visibility: Option<Visibility>,
    connection: Option<ConnectionBody>,
    policy: Option<ScopePolicy>,
    pool: Option<PoolBody>,
}

/// Startup options a datasource may set; anything that could redirect the connection (host
/// overrides, socket paths, `hostaddr`) is refused.
const ALLOWED_OPTIONS: &[&str] = &["application_name"];

fn text_field(what: &str, v: &Option<String>) -> Result<String, ApiError> {
    match v.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() && s.len() <= 255 && !s.chars().any(char::is_control) => {
            Ok(s.to_owned())
        }
        _ => Err(ApiError::bad_request(format!(
            "connection.{what} is required (1 to 255 printable characters)"
        ))),
    }
}

/// Validates a connection for `kind` and returns the settings to store (no password; no TLS
/// settings either: `read_tls` judges those).
fn validate_connection(
    kind: DatasourceKind,
    c: &ConnectionBody,
) -> Result<ConnectionSettings, ApiError> {
    for k in c.options.keys() {
        if !ALLOWED_OPTIONS.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "connection option {k:?} is not allowed (allowed: {})",
                ALLOWED_OPTIONS.join(", ")
            )));
        }
    }
    match kind {
        DatasourceKind::Sqlite => {
            if c.tls.is_some() {
                return Err(ApiError::bad_request(
                    "connection.tls is only for postgres and mysql datasources: a sqlite \
                     datasource is a local file, with no network connection to encrypt",
                ));
            }
            if c.host.is_some() || c.port.is_some() || c.user.is_some() || c.password.is_some() {
                return Err(ApiError::bad_request(
                    "a sqlite connection takes only connection.path",
                ));
            }
            let path = text_field("path", &c.path)?;
            Ok(ConnectionSettings {
                path: Some(path),
                ..Default::default()
            })
        }
        _ => {
            if c.path.is_some() {
                return Err(ApiError::bad_request(
                    "connection.path is only for sqlite datasources",
                ));
            }
            let host = text_field("host", &c.host)?;
            if host.starts_with('/') || host.contains(['@', '/', '\\', ',', ' ']) {
                return Err(ApiError::bad_request(
                    "connection.host must be a host name or an IP address",
                ));
            }
            if c.port == Some(0) {
                return Err(ApiError::bad_request("connection.port must be 1 to 65535"));
            }
            Ok(ConnectionSettings {
                host: Some(host),
                port: Some(c.port.unwrap_or(if kind == DatasourceKind::Mysql {
                    3306
                } else {
                    5432
                })),
                database: Some(text_field("database", &c.database)?),
                user: Some(text_field("user", &c.user)?),
                options: c.options.clone(),
                path: None,
                tls: None,
            })
        }
    }
}

/// Extensions a scope may trust at most.
const MAX_EXTENSIONS: usize = 32;

fn validate_policy(
    state: &AppState,
    kind: DatasourceKind,
    p: &ScopePolicy,
) -> Result<(), ApiError> {
    let l = &state.config.limits;
    if p.max_rows == 0 || p.max_rows > l.max_rows {
        return Err(ApiError::bad_request(format!(
            "policy.max_rows must be 1 to {}",
            l.max_rows
        )));
    }
    if p.timeout_ms == 0 || p.timeout_ms > l.max_timeout_ms {
        return Err(ApiError::bad_request(format!(
            "policy.timeout_ms must be 1 to {}",
            l.max_timeout_ms
        )));
    }
    let table_ok =
        |t: &String| !t.trim().is_empty() && t.len() <= 255 && !t.chars().any(char::is_control);
    if !p.allowed_tables.iter().flatten().all(table_ok) || !p.denied_tables.iter().all(table_ok) {
        return Err(ApiError::bad_request(
            "policy table entries must be non-empty `schema.table` or `schema.*`",
        ));
    }
    if !p.extra_functions.iter().all(|f| {
        !f.is_empty()
            && f.len() <= 128
            && f.chars().all(|c| c.is_alphanumeric() || "_.".contains(c))
    }) {
        return Err(ApiError::bad_request(
            "policy.extra_functions entries must be function names",
        ));
    }
    let pg_only = kind != DatasourceKind::Postgres;
    if let Some(schema) = &p.default_schema {
        if pg_only {
            return Err(ApiError::bad_request(
                "policy.default_schema is for postgres datasources (a mysql datasource's tables \
                 live in its database)",
            ));
        }
        // PostgreSQL keeps at most 63 bytes of a name.
        if schema.is_empty() || schema.len() > 63 || schema.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "policy.default_schema must be a schema name (1 to 63 bytes)",
            ));
        }
    }
    if !p.extensions.is_empty() && pg_only {
        return Err(ApiError::bad_request(
            "policy.extensions is for postgres datasources",
        ));
    }
    if p.extensions.len() > MAX_EXTENSIONS
        || !p.extensions.iter().all(|e| {
            !e.is_empty()
                && e.len() <= 63
                && e.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        })
    {
        return Err(ApiError::bad_request(format!(
            "policy.extensions must be at most {MAX_EXTENSIONS} extension names (like \"postgis\")"
        )));
    }
    Ok(())
}

fn validate_pool(state: &AppState, p: Option<PoolBody>) -> Result<Option<usize>, ApiError> {
    match p {
        Some(PoolBody { max_size }) if max_size == 0 || max_size > state.config.pools.max_size => {
            Err(ApiError::bad_request(format!(
                "pool.max_size must be 1 to {}",
                state.config.pools.max_size
            )))
        }
        Some(p) => Ok(Some(p.max_size)),
        None => Ok(None),
    }
}

#[utoipa::path(get, path = "/v1/datasources", tag = "datasources",
    responses((status = 200, description = "The datasources the caller can view", body = doc::DatasourceList)))]
async fn list(caller: Caller) -> impl IntoResponse {
    let cv = &caller.company;
    let p = caller.principal();
    let mut items: Vec<&Datasource> = cv
        .datasources
        .values()
        .filter(|d| permission::datasource(&p, &ds_acl(d), DatasourceAction::View).is_allow())
        .collect();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    let items: Vec<_> = items
        .into_iter()
        .map(|d| views::datasource(&caller, cv, d))
        .collect();
    axum::Json(json!({ "items": items }))
}

#[utoipa::path(post, path = "/v1/datasources", tag = "datasources", request_body = CreateBody, responses(
    (status = 201, description = "The registered datasource", body = doc::Datasource),
    doc::BadRequest, doc::Forbidden, doc::Conflict, doc::PayloadTooLarge,
))]
async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<CreateBody>,
) -> Result<impl IntoResponse, ApiError> {
    let cv = &caller.company;
    let integration = cv.integration(body.kind);
    require(permission::company(
        &caller.principal(),
        CompanyAction::RegisterDatasource {
            integration_enabled: integration.enabled,
            creators_can_register: integration.creators_can_register,
        },
    ))?;
    let name = valid_name("name", &body.name)?;
    let mut connection = validate_connection(body.kind, &body.connection)?;
    let tls = match body.kind {
        DatasourceKind::Sqlite => None,
        _ => Some(read_tls(body.connection.tls.as_ref(), None)?),
    };
    let policy = body.policy.unwrap_or_default();
    validate_policy(&state, body.kind, &policy)?;
    let pool_max_size =
        validate_pool(&state, body.pool)?.unwrap_or(state.config.pools.default_size);
    if cv.datasources.values().any(|d| d.name == name) {
        return Err(ApiError::conflict(
            "a datasource with that name already exists",
        ));
    }
    let id = DatasourceId::generate();
    let password_enc = body
        .connection
        .password
        .as_deref()
        .map(|p| state.store.seal_password(&id, p));
    let tls_mode = tls.as_ref().map(|t| t.stored.mode);
    let tls_client_key_enc = tls
        .as_ref()
        .and_then(|t| t.new_key.as_ref())
        .map(|k| state.store.seal_client_key(&id, k));
    connection.tls = tls.map(|t| t.stored);
    let now = Utc::now();
    let sealed = SealedSecrets {
        password: password_enc.as_deref(),
        tls_client_key: tls_client_key_enc.as_deref(),
    };
    let spec = build_spec(
        &id,
        body.kind,
        &connection,
        sealed,
        pool_max_size,
        1,
        state.store.key(),
    );
    let ds = Datasource {
        id: id.clone(),
        company_id: caller.user.company_id.clone(),
        name,
        description: body.description,
        kind: body.kind,
        visibility: body.visibility.unwrap_or(Visibility::Private),
        owner_id: caller.user.id.clone(),
        connection,
        password_enc,
        tls_client_key_enc,
        policy,
        pool_max_size,
        generation: 1,
        members: Vec::new(),
        created_at: now,
        updated_at: now,
        spec: Arc::new(spec),
    };
    let mut rec = change_record(&caller, "datasource.create");
    rec.datasource_id = Some(id.clone());
    // The TLS mode, so an unencrypted registration shows in the audit log; never a PEM.
    rec.detail = Some(
        json!({"name": ds.name, "kind": ds.kind, "visibility": ds.visibility, "tls_mode": tls_mode}),
    );
    let cv = state
        .apply(
            &caller.user.company_id,
            vec![Change::PutDatasource {
                ds: Box::new(ds),
                is_new: true,
            }],
            vec![rec],
        )
        .await?;
    let ds = find_ds(&cv, id.as_str())?;
    if ds.kind == DatasourceKind::Postgres && ds.policy.default_schema.is_none() {
        // Read from the server without holding up the answer: shown once read, and filled by
        // `check` at the latest. A server that cannot be reached yet is simply not read.
        let (state, caller, spec) = (state.clone(), caller.clone(), ds.spec.clone());
        tokio::spawn(async move {
            if let Ok(read) = state.registry.catalog(&spec).await
                && let Some(ds) = state
                    .store
                    .view()
                    .companies
                    .get(&caller.user.company_id)
                    .and_then(|cv| cv.datasources.get(&spec.id).cloned())
            {
                let schema = read.known.catalog.default_schema.clone();
                let _ = fill_default_schema(&state, &caller, &ds, &schema).await;
            }
        });
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(views::datasource(&caller, &cv, ds)),
    ))
}

/// Finds a datasource the caller may at least view (404 otherwise) and checks `action`.
fn guard<'a>(
    caller: &'a Caller,
    id: &str,
    action: DatasourceAction,
) -> Result<&'a Datasource, ApiError> {
    let ds = find_ds(&caller.company, id)?;
    require(permission::datasource(
        &caller.principal(),
        &ds_acl(ds),
        action,
    ))?;
    Ok(ds)
}

#[utoipa::path(get, path = "/v1/datasources/{id}", tag = "datasources", params(("id" = String, Path, description = "Datasource id")),
    responses((status = 200, description = "The datasource", body = doc::Datasource), doc::NotFound))]
async fn get_one(caller: Caller, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let ds = guard(&caller, &id, DatasourceAction::View)?;
    Ok(axum::Json(views::datasource(&caller, &caller.company, ds)))
}

#[utoipa::path(patch, path = "/v1/datasources/{id}", tag = "datasources", request_body = PatchBody,
    params(("id" = String, Path, description = "Datasource id")),
    responses(
        (status = 200, description = "The datasource after the change (editor+)", body = doc::Datasource),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::Conflict, doc::PayloadTooLarge,
    ))]
async fn patch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<PatchBody>,
) -> Result<impl IntoResponse, ApiError> {
    let old = guard(&caller, &id, DatasourceAction::Edit)?;
    let mut ds = old.clone();
    let mut changed = Vec::new();
    if let Some(k) = body.kind
        && k != ds.kind
    {
        return Err(ApiError::bad_request("a datasource's kind cannot change"));
    }
    if let Some(n) = &body.name {
        ds.name = valid_name("name", n)?;
        if caller
            .company
            .datasources
            .values()
            .any(|d| d.name == ds.name && d.id != ds.id)
        {
            return Err(ApiError::conflict(
                "a datasource with that name already exists",
            ));
        }
        changed.push("name");
    }
    if let Some(d) = body.description {
        ds.description = d;
        changed.push("description");
    }
    if let Some(v) = body.visibility {
        ds.visibility = v;
        changed.push("visibility");
    }
    let mut reconnect = false;
    if let Some(c) = &body.connection {
        // SQLite goes through validate_connection, which refuses its `tls`.
        let tls_only = c.is_tls_only() && ds.kind != DatasourceKind::Sqlite;
        let mut connection = if tls_only {
            ds.connection.clone()
        } else {
            validate_connection(ds.kind, c)?
        };
        match &c.tls {
            // Like the password: left out, the stored settings stay.
            None => connection.tls = ds.connection.tls.clone(),
            Some(t) => {
                let stored_key = match &old.spec.connection {
                    Connection::Network { tls, .. } => tls.client_key_pem.as_ref(),
                    Connection::Sqlite { .. } => None,
                };
                let current = ds.connection.tls.as_ref().map(|s| (s, stored_key));
                let change = read_tls(Some(t), current)?;
                if let Some(k) = &change.new_key {
                    ds.tls_client_key_enc = Some(state.store.seal_client_key(&ds.id, k));
                    changed.push("tls.client_key_pem");
                } else if !change.keep_stored_key {
                    ds.tls_client_key_enc = None;
                }
                connection.tls = Some(change.stored);
                changed.push("tls");
            }
        }
        ds.connection = connection;
        if let Some(p) = &c.password {
            ds.password_enc = Some(state.store.seal_password(&ds.id, p));
            changed.push("password");
        }
        if !tls_only {
            changed.push("connection");
        }
        // Any connection change, TLS included, bumps the generation: the pool is rebuilt.
        reconnect = true;
    }
    if let Some(p) = body.policy {
        validate_policy(&state, ds.kind, &p)?;
        ds.policy = p;
        changed.push("policy");
    }
    if let Some(size) = validate_pool(&state, body.pool)? {
        ds.pool_max_size = size;
        changed.push("pool");
        reconnect = true;
    }
    if reconnect {
        ds.generation += 1;
    }
    ds.updated_at = Utc::now();
    let mut rec = change_record(&caller, "datasource.update");
    rec.datasource_id = Some(ds.id.clone());
    // Which fields changed, never their values: a connection may carry a password.
    rec.detail = Some(json!({"changed": changed}));
    let cv = state
        .apply(
            &caller.user.company_id,
            vec![Change::PutDatasource {
                ds: Box::new(ds),
                is_new: false,
            }],
            vec![rec],
        )
        .await?;
    if reconnect {
        state.registry.close(&DatasourceId(id.clone()));
    }
    let ds = find_ds(&cv, &id)?;
    Ok(axum::Json(views::datasource(&caller, &cv, ds)))
}

#[utoipa::path(delete, path = "/v1/datasources/{id}", tag = "datasources", params(("id" = String, Path, description = "Datasource id")),
    responses((status = 204, description = "Deleted (owner)"), doc::Forbidden, doc::NotFound))]
async fn remove(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let ds = guard(&caller, &id, DatasourceAction::Delete)?;
    let mut rec = change_record(&caller, "datasource.delete");
    rec.datasource_id = Some(ds.id.clone());
    rec.detail = Some(json!({"name": ds.name}));
    let ds_id = ds.id.clone();
    state
        .apply(
            &caller.user.company_id,
            vec![Change::DeleteDatasource { id: ds_id.clone() }],
            vec![rec],
        )
        .await?;
    state.registry.close(&ds_id);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/datasources/{id}/members", tag = "datasources", params(("id" = String, Path, description = "Datasource id")),
    responses((status = 200, description = "Direct grants on the datasource", body = doc::MemberList), doc::NotFound))]
async fn list_members(
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    sharing::list_members_route(&caller, Kind::Datasource, &id)
}

#[utoipa::path(put, path = "/v1/datasources/{id}/members/{principal_id}", tag = "datasources",
    request_body = MemberBody,
    params(("id" = String, Path, description = "Datasource id"), ("principal_id" = String, Path, description = "A person user's or a group's id")),
    responses(
        (status = 200, description = "The datasource's members after the grant", body = doc::MemberList),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::PayloadTooLarge,
    ))]
async fn set_member(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, principal_id)): Path<(String, String)>,
    Json(body): Json<MemberBody>,
) -> Result<impl IntoResponse, ApiError> {
    sharing::set_member_route(
        &state,
        &caller,
        Kind::Datasource,
        &id,
        principal_id,
        body.role,
    )
    .await
}

#[utoipa::path(delete, path = "/v1/datasources/{id}/members/{principal_id}", tag = "datasources",
    params(("id" = String, Path, description = "Datasource id"), ("principal_id" = String, Path, description = "A user's or a group's id")),
    responses((status = 204, description = "The grant is gone"), doc::Forbidden, doc::NotFound))]
async fn remove_member(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, principal_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    sharing::remove_member_route(&state, &caller, Kind::Datasource, &id, principal_id).await
}

#[utoipa::path(post, path = "/v1/datasources/{id}/transfer", tag = "datasources", request_body = TransferBody,
    params(("id" = String, Path, description = "Datasource id")),
    responses(
        (status = 200, description = "The datasource with its new owner; the previous owner keeps editor", body = doc::Datasource),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::Conflict, doc::PayloadTooLarge,
    ))]
async fn transfer(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<TransferBody>,
) -> Result<impl IntoResponse, ApiError> {
    sharing::transfer_route(&state, &caller, Kind::Datasource, &id, &body.user_id).await
}

#[utoipa::path(post, path = "/v1/datasources/{id}/check", tag = "datasources", params(("id" = String, Path, description = "Datasource id")),
    responses(
        (status = 200, description = "The datasource answered", body = doc::CheckResult),
        doc::IntegrationDisabled, doc::NotFound, doc::DatabaseErrors,
    ))]
async fn check(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let ds = guard(&caller, &id, DatasourceAction::View)?;
    if !caller.company.integration(ds.kind).enabled {
        return Err(permission::Decision::IntegrationDisabled.into());
    }
    let (info, catalog) = state.registry.check(&ds.spec).await?;
    fill_default_schema(&state, &caller, ds, &catalog.known.catalog.default_schema).await?;
    Ok(axum::Json(json!({
        "ok": true,
        "latency_ms": info.latency_ms,
        "server_version": info.server_version,
        // What the connection negotiated and verified; null under `disable` (and for SQLite).
        "tls": info.tls,
        "default_schema": crate::policy::default_schema(ds.kind, &ds.policy, &catalog.known.catalog),
    })))
}

/// Records in a PostgreSQL datasource's policy the schema its unqualified names resolve in, as
/// read from the server (the service account's own search path), when the policy names none.
async fn fill_default_schema(
    state: &AppState,
    caller: &Caller,
    ds: &Datasource,
    read: &str,
) -> Result<(), ApiError> {
    if ds.kind != DatasourceKind::Postgres || ds.policy.default_schema.is_some() || read.is_empty()
    {
        return Ok(());
    }
    let mut rec = change_record(caller, "datasource.update");
    rec.datasource_id = Some(ds.id.clone());
    rec.detail = Some(json!({"changed": ["policy.default_schema"], "read_from": "server"}));
    state
        .apply(
            &caller.user.company_id,
            vec![Change::FillDefaultSchema {
                id: ds.id.clone(),
                schema: read.to_owned(),
            }],
            vec![rec],
        )
        .await?;
    Ok(())
}

#[utoipa::path(get, path = "/v1/datasources/{id}/schema", tag = "datasources", params(("id" = String, Path, description = "Datasource id")),
    responses(
        (status = 200, description = "Tables and columns, limited to what the policy allows", body = doc::SchemaListing),
        doc::IntegrationDisabled, doc::NotFound, doc::DatabaseErrors,
    ))]
async fn schema(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let ds = guard(&caller, &id, DatasourceAction::View)?;
    if !caller.company.integration(ds.kind).enabled {
        return Err(permission::Decision::IntegrationDisabled.into());
    }
    // The same listing the MCP tools give an app's users (`QueryService::visible_tables`).
    let tables = state.query.visible_tables(ds).await?;
    Ok(axum::Json(json!({ "tables": tables })))
}
