//! The OpenAPI document served at `GET /openapi.json`, generated from the handlers'
//! `#[utoipa::path]` attributes, plus the documentation-only shapes of the JSON answers (handlers
//! build their answers with `json!`, so these types exist only to describe them).

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use crate::model::{CompanyRole, DatasourceKind, ObjectRole, ScopePolicy, UserKind, Visibility};

/// The document as JSON, for the `/openapi.json` route.
pub fn document() -> serde_json::Value {
    // Serialising utoipa's plain data types cannot fail; fall back to an empty object rather
    // than panic in a request.
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "could not serialise the OpenAPI document");
        serde_json::json!({})
    })
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sluice",
        description = "SQL datasource query gateway. Every /v1 route takes `Authorization: Bearer <token>`; \
            errors answer `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        super::ops::openapi,
        super::routes_identity::me,
        super::routes_identity::list_users,
        super::routes_identity::invite_user,
        super::routes_identity::change_role,
        super::routes_identity::delete_user,
        super::routes_identity::create_api_user,
        super::routes_identity::create_token,
        super::routes_identity::revoke_token,
        super::routes_identity::list_groups,
        super::routes_identity::create_group,
        super::routes_identity::delete_group,
        super::routes_identity::add_group_member,
        super::routes_identity::remove_group_member,
        super::routes_company::get_company,
        super::routes_company::patch_company,
        super::routes_company::list_integrations,
        super::routes_company::patch_integration,
        super::routes_company::read_audit,
        super::routes_datasources::list,
        super::routes_datasources::create,
        super::routes_datasources::get_one,
        super::routes_datasources::patch,
        super::routes_datasources::remove,
        super::routes_datasources::list_members,
        super::routes_datasources::set_member,
        super::routes_datasources::remove_member,
        super::routes_datasources::transfer,
        super::routes_datasources::check,
        super::routes_datasources::schema,
        super::routes_apps::list,
        super::routes_apps::create,
        super::routes_apps::get_one,
        super::routes_apps::patch,
        super::routes_apps::remove,
        super::routes_apps::attach,
        super::routes_apps::detach,
        super::routes_apps::list_members,
        super::routes_apps::set_member,
        super::routes_apps::remove_member,
        super::routes_apps::clone_app,
        super::routes_apps::transfer,
        super::routes_query::query,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&Conventions),
    tags(
        (name = "operations", description = "Liveness, readiness, metrics, this document (no auth)"),
        (name = "identity", description = "The caller, users, API users, tokens and groups"),
        (name = "company", description = "Company settings, integrations and the audit log"),
        (name = "datasources", description = "Databases registered with their scope policy"),
        (name = "apps", description = "Apps, their datasources and sharing"),
        (name = "query", description = "Running SQL through an app"),
    )
)]
pub struct ApiDoc;

/// What holds for every route rather than one: each `/v1` route authenticates with a bearer token
/// (the `Caller` extractor), so its security requirement and 401 answer are added here at once.
struct Conventions;

const BEARER: &str = "bearer";

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        // utoipa fills the license from Cargo.toml, which names none: say nothing rather than "".
        doc.info.license = None;
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An opaque token shown once at creation (`sluice company create`, \
                         POST /v1/users, POST /v1/api-users, POST /v1/users/{id}/tokens)",
                    ))
                    .build(),
            ),
        );
        let unauthenticated = ResponseBuilder::new()
            .description(
                "`unauthenticated`: the bearer token is missing, unknown, revoked or expired",
            )
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for (path, item) in doc.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let ops: [&mut Option<Operation>; 5] = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
                op.responses
                    .responses
                    .insert("401".to_owned(), unauthenticated.clone().into());
            }
        }
    }
}

// ---- The error shape and the error answers, one type per status of API.md's table. ----

/// The body of every error answer.
#[derive(ToSchema)]
#[schema(example = json!({"error": {"code": "not_found", "message": "no such object"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code: `bad_request`, `sql_parse_error`, `bad_params`,
    /// `unauthenticated`, `forbidden`, `statement_not_allowed`, `table_not_allowed`,
    /// `function_not_allowed`, `integration_disabled`, `not_found`, `conflict`,
    /// `payload_too_large`, `query_failed`, `too_many_requests`, `pool_timeout`,
    /// `datasource_unavailable`, `unavailable`, `query_timeout`, `internal`.
    pub code: String,
    /// A human sentence; never a stack trace, a connection string or a password.
    pub message: String,
}

/// `bad_request`: the body, a path or a query parameter is malformed or out of range.
#[derive(IntoResponses)]
#[response(status = 400)]
pub struct BadRequest(pub ErrorBody);

/// `forbidden`: the caller's role does not allow this (the object itself is visible).
#[derive(IntoResponses)]
#[response(status = 403)]
pub struct Forbidden(pub ErrorBody);

/// `not_found`: no such object in the caller's company, or one the caller may not even view.
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct NotFound(pub ErrorBody);

/// `conflict`: duplicate name, last owner, datasource not attached, ambiguous datasource.
#[derive(IntoResponses)]
#[response(status = 409)]
pub struct Conflict(pub ErrorBody);

/// `payload_too_large`: the request body is larger than the configured limit.
#[derive(IntoResponses)]
#[response(status = 413)]
pub struct PayloadTooLarge(pub ErrorBody);

/// `integration_disabled`: this kind of datasource is turned off for the company.
#[derive(IntoResponses)]
#[response(status = 403)]
pub struct IntegrationDisabled(pub ErrorBody);

/// What the database (or the way to it) can answer with: `query_failed` (422), `pool_timeout` or
/// `datasource_unavailable` (503), `query_timeout` (504).
#[derive(IntoResponses)]
pub enum DatabaseErrors {
    /// `query_failed`: the database rejected the statement (its message, scrubbed of secrets).
    #[response(status = 422)]
    QueryFailed(ErrorBody),
    /// `pool_timeout` (no connection free in time) or `datasource_unavailable`; has `Retry-After`.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// `query_timeout`: the statement was cancelled on the server.
    #[response(status = 504)]
    Timeout(ErrorBody),
}

// ---- Answer shapes (documentation only). ----

#[derive(ToSchema)]
pub struct Status {
    /// `ok`, `ready` or `not_ready`.
    pub status: String,
    /// Why the server is not ready (only with `not_ready`).
    pub reason: Option<String>,
}

#[derive(ToSchema)]
pub struct User {
    pub id: String,
    /// Null for API users.
    pub email: Option<String>,
    pub name: String,
    /// Null for API users (they have no company role).
    pub role: Option<CompanyRole>,
    pub kind: UserKind,
    pub created_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub struct CompanyRef {
    pub id: String,
    pub name: String,
}

#[derive(ToSchema)]
pub struct Me {
    pub user: User,
    pub company: CompanyRef,
}

#[derive(ToSchema)]
pub struct UserList {
    pub items: Vec<User>,
}

/// A new user with a first token; the token is shown only here.
#[derive(ToSchema)]
pub struct UserWithToken {
    pub user: User,
    pub token: String,
}

/// A new token; the token itself is shown only here.
#[derive(ToSchema)]
pub struct TokenCreated {
    pub id: String,
    pub token: String,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(ToSchema)]
pub struct Group {
    pub id: String,
    pub name: String,
    /// User ids.
    pub members: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub struct GroupList {
    pub items: Vec<Group>,
}

#[derive(ToSchema)]
pub struct Company {
    pub id: String,
    pub name: String,
    /// Admins who cannot use a private app see its audit records without SQL or error detail.
    pub redact_private_audit: bool,
}

#[derive(ToSchema)]
pub struct Integration {
    pub kind: DatasourceKind,
    pub enabled: bool,
    pub creators_can_register: bool,
    /// Statement classes the gateway can allow on this kind (`select`, `insert`, ...).
    pub available_actions: Vec<String>,
}

#[derive(ToSchema)]
pub struct IntegrationList {
    pub items: Vec<Integration>,
}

#[derive(ToSchema)]
pub struct AuditItem {
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor_id: Option<String>,
    /// `query`, or one name per kind of change (`app.create`, `user.role`, ...).
    pub action: String,
    pub app_id: Option<String>,
    pub datasource_id: Option<String>,
    pub target_id: Option<String>,
    /// `allowed`, `denied` or `failed`.
    pub outcome: String,
    pub code: Option<String>,
    pub sql: Option<String>,
    pub row_count: Option<u64>,
    pub duration_ms: Option<f64>,
    pub request_id: Option<String>,
    pub detail: Option<serde_json::Value>,
}

/// Newest first; pass `next_cursor` as `cursor` for the next page.
#[derive(ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditItem>,
    pub next_cursor: Option<String>,
}

/// How a datasource is reached, as answered (never with the password).
#[derive(ToSchema)]
pub struct Connection {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub options: Option<BTreeMap<String, String>>,
    /// SQLite only.
    pub path: Option<String>,
    /// PostgreSQL and MySQL only (always present for them). Datasources registered before TLS
    /// existed were migrated to `{"mode": "disable"}`.
    pub tls: Option<Tls>,
}

/// libpq's `sslmode` meanings: `disable` plain TCP; `require` encrypted, the certificate not
/// checked; `verify-ca` the chain must lead to a trusted root (`ca_pem`, else the system's);
/// `verify-full` (the default) as `verify-ca`, and the certificate must name the registered host.
#[derive(ToSchema, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Disable,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A datasource's TLS settings as answered: never the client key.
#[derive(ToSchema)]
pub struct Tls {
    pub mode: TlsMode,
    /// The roots trusted instead of the system's (PEM).
    pub ca_pem: Option<String>,
    /// The certificate chain presented for mutual TLS (PEM).
    pub client_cert_pem: Option<String>,
    /// Whether a client key is stored (`client_key_pem` is write-only).
    pub client_key_set: bool,
}

/// What `check` learned of the connection's TLS.
#[derive(ToSchema)]
pub struct TlsReport {
    /// The negotiated protocol, e.g. `TLSv1.3`.
    pub version: String,
    /// Everything the mode asks for was verified (`false` under `require`, which verifies nothing).
    pub verified: bool,
    /// The certificate chain led to a trusted root.
    pub chain_verified: bool,
    /// The certificate named the registered host.
    pub host_verified: bool,
}

#[derive(ToSchema)]
pub struct Pool {
    pub max_size: usize,
}

#[derive(ToSchema)]
pub struct Datasource {
    pub id: String,
    pub name: String,
    pub description: String,
    pub kind: DatasourceKind,
    pub visibility: Visibility,
    pub owner_id: String,
    pub connection: Connection,
    pub policy: ScopePolicy,
    pub pool: Pool,
    /// The caller's effective role on this datasource.
    pub my_role: Option<ObjectRole>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub struct DatasourceList {
    pub items: Vec<Datasource>,
}

#[derive(ToSchema)]
pub struct Member {
    pub principal_id: String,
    /// `user` or `group`.
    pub principal_kind: String,
    pub role: ObjectRole,
}

#[derive(ToSchema)]
pub struct MemberList {
    pub items: Vec<Member>,
}

#[derive(ToSchema)]
pub struct CheckResult {
    pub ok: bool,
    pub latency_ms: f64,
    pub server_version: String,
    /// The connection's TLS; null under `disable` and for SQLite. A TLS failure (no TLS on the
    /// server, an untrusted chain, a host name mismatch, an expired or refused certificate) is
    /// not an answer here but 503 `datasource_unavailable` naming the cause.
    pub tls: Option<TlsReport>,
    /// Where unqualified table names resolve: the policy's `default_schema`, else what the
    /// server says (PostgreSQL: the service account's own search path; MySQL: the database;
    /// SQLite: `main`). The check also records it in a PostgreSQL policy that names none.
    pub default_schema: String,
}

#[derive(ToSchema)]
pub struct SchemaColumn {
    pub name: String,
    /// The database's own type name.
    #[schema(rename = "type")]
    pub type_name: String,
    pub nullable: bool,
}

#[derive(ToSchema)]
pub struct SchemaTable {
    pub schema: String,
    pub name: String,
    pub columns: Vec<SchemaColumn>,
}

/// The tables the datasource's policy allows.
#[derive(ToSchema)]
pub struct SchemaListing {
    pub tables: Vec<SchemaTable>,
}

#[derive(ToSchema)]
pub struct AppDatasource {
    pub id: String,
    pub name: String,
    pub kind: DatasourceKind,
}

#[derive(ToSchema)]
pub struct App {
    pub id: String,
    pub name: String,
    pub description: String,
    pub visibility: Visibility,
    pub owner_id: String,
    pub datasources: Vec<AppDatasource>,
    /// The caller's effective role on this app.
    pub my_role: Option<ObjectRole>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub struct AppList {
    pub items: Vec<App>,
}

#[derive(ToSchema)]
pub struct CloneResult {
    pub app: App,
    /// Ids of the source app's datasources the caller could not attach.
    pub dropped_datasources: Vec<String>,
}

#[derive(ToSchema)]
pub struct ResultColumn {
    pub name: String,
    /// The database's own type name (`int4`, `varchar`, ...).
    #[schema(rename = "type")]
    pub type_name: String,
}

#[derive(ToSchema)]
pub struct DatasourceRef {
    pub id: String,
    pub name: String,
}

/// A query's answer. For reads: `columns`, `rows`, `row_count`, `truncated`; for writes on
/// `read_write` datasources: `rows_affected` and no rows.
#[derive(ToSchema)]
pub struct QueryResult {
    pub columns: Option<Vec<ResultColumn>>,
    /// One array per row, values mapped as API.md says (numeric as strings, bytea as base64, ...).
    pub rows: Option<Vec<Vec<serde_json::Value>>>,
    pub row_count: Option<u64>,
    /// True when more rows matched than `max_rows`.
    pub truncated: Option<bool>,
    pub rows_affected: Option<u64>,
    pub datasource: DatasourceRef,
    pub elapsed_ms: f64,
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Schemathesis found `POST /v1/groups` answering an undocumented 409 for a duplicate name.
    #[test]
    fn every_route_that_creates_a_named_object_documents_the_duplicate_name_conflict() {
        let doc = document();
        for path in ["/v1/groups", "/v1/apps", "/v1/datasources", "/v1/users"] {
            let responses = &doc["paths"][path]["post"]["responses"];
            assert!(
                responses.get("409").is_some(),
                "POST {path} does not document 409: {responses}"
            );
        }
    }
}
