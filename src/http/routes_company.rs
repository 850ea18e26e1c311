//! Company routes: company settings, integrations, and the audit log.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

use super::error::{ApiError, require};
use super::extract::Json;
use super::openapi as doc;
use super::views::{app_acl, valid_name};
use super::{AppState, change_record};
use crate::audit::{AuditFilter, Outcome};
use crate::identity::Caller;
use crate::model::*;
use crate::permission::{self, Acl, CompanyAction};
use crate::store::{Change, Integration};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/company", get(get_company).patch(patch_company))
        .route("/v1/integrations", get(list_integrations))
        .route(
            "/v1/integrations/{kind}",
            axum::routing::patch(patch_integration),
        )
        .route("/v1/audit", get(read_audit))
}

fn company_json(c: &crate::store::Company) -> serde_json::Value {
    json!({"id": c.id, "name": c.name, "redact_private_audit": c.redact_private_audit})
}

#[utoipa::path(get, path = "/v1/company", tag = "company",
    responses((status = 200, description = "The caller's company", body = doc::Company), doc::Forbidden))]
async fn get_company(caller: Caller) -> Result<impl IntoResponse, ApiError> {
    require(permission::company(
        &caller.principal(),
        CompanyAction::ViewCompany,
    ))?;
    Ok(axum::Json(company_json(caller.company.company())))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CompanyPatch {
    name: Option<String>,
    redact_private_audit: Option<bool>,
}

#[utoipa::path(patch, path = "/v1/company", tag = "company", request_body = CompanyPatch, responses(
    (status = 200, description = "The company after the change (admin+)", body = doc::Company),
    doc::BadRequest, doc::Forbidden, doc::PayloadTooLarge,
))]
async fn patch_company(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<CompanyPatch>,
) -> Result<impl IntoResponse, ApiError> {
    require(permission::company(
        &caller.principal(),
        CompanyAction::EditCompany,
    ))?;
    let mut c = caller.company.company().clone();
    if let Some(n) = &body.name {
        c.name = valid_name("name", n)?;
    }
    if let Some(r) = body.redact_private_audit {
        c.redact_private_audit = r;
    }
    let mut rec = change_record(&caller, "company.update");
    rec.target_id = Some(c.id.to_string());
    rec.detail = Some(json!({"name": c.name, "redact_private_audit": c.redact_private_audit}));
    let cv = state
        .apply(
            &caller.user.company_id,
            vec![Change::UpdateCompany(c)],
            vec![rec],
        )
        .await?;
    Ok(axum::Json(company_json(cv.company())))
}

/// The statement classes the gateway can allow on a kind of datasource ("available actions").
fn available_actions(_kind: DatasourceKind) -> [&'static str; 4] {
    ["select", "insert", "update", "delete"]
}

fn integration_json(i: &Integration) -> serde_json::Value {
    json!({
        "kind": i.kind,
        "enabled": i.enabled,
        "creators_can_register": i.creators_can_register,
        "available_actions": available_actions(i.kind),
    })
}

#[utoipa::path(get, path = "/v1/integrations", tag = "company", responses(
    (status = 200, description = "One item per datasource kind (person users only)", body = doc::IntegrationList),
    doc::Forbidden,
))]
async fn list_integrations(caller: Caller) -> Result<impl IntoResponse, ApiError> {
    require(permission::company(
        &caller.principal(),
        CompanyAction::ViewIntegrations,
    ))?;
    let items: Vec<_> = DatasourceKind::ALL
        .iter()
        .map(|k| integration_json(&caller.company.integration(*k)))
        .collect();
    Ok(axum::Json(json!({ "items": items })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct IntegrationPatch {
    enabled: Option<bool>,
    creators_can_register: Option<bool>,
}

#[utoipa::path(patch, path = "/v1/integrations/{kind}", tag = "company", request_body = IntegrationPatch,
    params(("kind" = DatasourceKind, Path, description = "Datasource kind")),
    responses(
        (status = 200, description = "The integration after the change (admin+); turning it off closes its pools", body = doc::Integration),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::PayloadTooLarge,
    ))]
async fn patch_integration(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kind): Path<String>,
    Json(body): Json<IntegrationPatch>,
) -> Result<impl IntoResponse, ApiError> {
    let kind: DatasourceKind = kind.parse().map_err(|_| ApiError::not_found())?;
    require(permission::company(
        &caller.principal(),
        CompanyAction::ToggleIntegrations,
    ))?;
    let mut i = caller.company.integration(kind);
    if let Some(e) = body.enabled {
        i.enabled = e;
    }
    if let Some(c) = body.creators_can_register {
        i.creators_can_register = c;
    }
    let mut rec = change_record(&caller, "integration.update");
    rec.target_id = Some(kind.to_string());
    rec.detail =
        Some(json!({"enabled": i.enabled, "creators_can_register": i.creators_can_register}));
    let cv = state
        .apply(
            &caller.user.company_id,
            vec![Change::SetIntegration(i)],
            vec![rec],
        )
        .await?;
    if !i.enabled {
        // Turning an integration off closes its pools at once; queries are refused by the
        // permission check from the new view on.
        for ds in cv.datasources.values().filter(|d| d.kind == kind) {
            state.registry.close(&ds.id);
        }
    }
    Ok(axum::Json(integration_json(&cv.integration(kind))))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    action: Option<String>,
    actor_id: Option<String>,
    app_id: Option<String>,
    datasource_id: Option<String>,
    /// `allowed`, `denied` or `failed`.
    outcome: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    /// Items per page (capped by the server).
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "company", params(AuditQuery), responses(
    (status = 200, description = "Audit records, newest first (admin+)", body = doc::AuditPage),
    doc::BadRequest, doc::Forbidden,
))]
async fn read_audit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    require(permission::company(
        &caller.principal(),
        CompanyAction::ReadAudit,
    ))?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let outcome = q
        .outcome
        .as_deref()
        .map(|o| {
            o.parse::<Outcome>()
                .map_err(|_| ApiError::bad_request("outcome must be allowed, denied or failed"))
        })
        .transpose()?;
    if q.limit == Some(0) {
        return Err(ApiError::bad_request("limit must be at least 1"));
    }
    let mut filter = AuditFilter::new(caller.user.company_id.clone());
    filter.action = q.action;
    filter.actor_id = q.actor_id.map(UserId);
    filter.app_id = q.app_id.map(AppId);
    filter.datasource_id = q.datasource_id.map(DatasourceId);
    filter.outcome = outcome;
    filter.since = q.since;
    filter.until = q.until;
    if let Some(l) = q.limit {
        filter.limit = l.min(crate::audit::MAX_LIMIT);
    }
    filter.cursor = q.cursor;
    let store = state.store.clone();
    let page = tokio::task::spawn_blocking(move || store.audit_query(&filter))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| match e {
            crate::audit::AuditError::BadCursor => ApiError::bad_request("malformed cursor"),
            other => {
                tracing::error!(error = %other, "audit read failed");
                ApiError::internal()
            }
        })?;
    // Redaction: an admin who cannot use a private app sees that a request was made and how it
    // ended, not its SQL or error detail. A deleted app counts as private with no members.
    let cv = &caller.company;
    let redact = cv.company().redact_private_audit;
    let reader = caller.principal();
    let nobody = UserId(String::new());
    let deleted_acl = Acl {
        owner_id: &nobody,
        visibility: Visibility::Private,
        members: &[],
    };
    let items: Vec<_> = page
        .items
        .into_iter()
        .map(|rec| {
            let acl = rec.app_id.as_ref().map(|a| match cv.apps.get(a) {
                Some(app) => app_acl(app),
                None => deleted_acl,
            });
            if permission::audit_sees_detail(&reader, acl.as_ref(), redact) {
                rec
            } else {
                rec.redacted()
            }
        })
        .collect();
    Ok(axum::Json(
        json!({"items": items, "next_cursor": page.next_cursor}),
    ))
}
