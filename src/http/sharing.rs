//! Sharing and ownership transfer, which work the same way for apps and datasources: grant or
//! revoke an object role, hand ownership to another creator+ person. The routes check the
//! caller's right on the object first; this module validates the target and writes the change.

use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

use super::error::{ApiError, require};
use super::views::{self, find_app, find_ds, find_principal, find_user};
use super::{AppState, change_record};
use crate::audit::AuditRecord;
use crate::identity::Caller;
use crate::model::*;
use crate::permission;
use crate::store::{App, Change, CompanyView, Datasource};

/// `viewer` or `editor` (ownership moves with `/transfer`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MemberBody {
    pub role: ObjectRole,
}

/// The new owner: a person user with creator role or higher.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TransferBody {
    pub user_id: String,
}

/// Which kind of object a member or transfer route serves.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    App,
    Datasource,
}

/// What a member or transfer route does with the object, each needing its own right.
#[derive(Clone, Copy)]
enum Step {
    View,
    Share,
    Transfer,
}

/// The object (404 when the caller may not even view it), once the caller's right to `step` on
/// it is checked.
fn guarded<'a>(
    caller: &'a Caller,
    kind: Kind,
    id: &str,
    step: Step,
) -> Result<Shared<'a>, ApiError> {
    let p = caller.principal();
    match kind {
        Kind::App => {
            let app = find_app(&caller.company, id)?;
            let action = match step {
                Step::View => permission::AppAction::View,
                Step::Share => permission::AppAction::Share,
                Step::Transfer => permission::AppAction::Transfer,
            };
            require(permission::app(&p, &app.acl(), action))?;
            Ok(Shared::App(app))
        }
        Kind::Datasource => {
            let ds = find_ds(&caller.company, id)?;
            let action = match step {
                Step::View => permission::DatasourceAction::View,
                Step::Share => permission::DatasourceAction::Share,
                Step::Transfer => permission::DatasourceAction::Transfer,
            };
            require(permission::datasource(&p, &ds.acl(), action))?;
            Ok(Shared::Datasource(ds))
        }
    }
}

/// The object's direct grants as the member routes answer them.
fn members_of(cv: &CompanyView, kind: Kind, id: &str) -> Result<serde_json::Value, ApiError> {
    Ok(match kind {
        Kind::App => views::members(&find_app(cv, id)?.members),
        Kind::Datasource => views::members(&find_ds(cv, id)?.members),
    })
}

/// `GET …/{id}/members`.
pub(super) fn list_members_route(
    caller: &Caller,
    kind: Kind,
    id: &str,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    guarded(caller, kind, id, Step::View)?;
    Ok(axum::Json(members_of(&caller.company, kind, id)?))
}

/// `PUT …/{id}/members/{principal_id}`: the members after the grant.
pub(super) async fn set_member_route(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    id: &str,
    principal_id: String,
    role: ObjectRole,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let object = guarded(caller, kind, id, Step::Share)?;
    let cv = set_member(state, caller, object, principal_id, role).await?;
    Ok(axum::Json(members_of(&cv, kind, id)?))
}

/// `DELETE …/{id}/members/{principal_id}`.
pub(super) async fn remove_member_route(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    id: &str,
    principal_id: String,
) -> Result<axum::http::StatusCode, ApiError> {
    let object = guarded(caller, kind, id, Step::Share)?;
    remove_member(state, caller, object, principal_id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `POST …/{id}/transfer`: the object with its new owner.
pub(super) async fn transfer_route(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    id: &str,
    user_id: &str,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let object = guarded(caller, kind, id, Step::Transfer)?;
    let cv = transfer(state, caller, object, user_id).await?;
    Ok(axum::Json(match kind {
        Kind::App => views::app(caller, &cv, find_app(&cv, id)?),
        Kind::Datasource => views::datasource(caller, &cv, find_ds(&cv, id)?),
    }))
}

/// One of the two kinds of shared object.
#[derive(Clone, Copy)]
pub(super) enum Shared<'a> {
    App(&'a App),
    Datasource(&'a Datasource),
}

impl Shared<'_> {
    fn object_id(&self) -> String {
        match self {
            Shared::App(a) => a.id.to_string(),
            Shared::Datasource(d) => d.id.to_string(),
        }
    }

    /// An audit record of `verb` (`share`, `unshare`, `transfer`) on this object.
    fn record(&self, caller: &Caller, verb: &str) -> AuditRecord {
        match self {
            Shared::App(a) => {
                let mut r = change_record(caller, &format!("app.{verb}"));
                r.app_id = Some(a.id.clone());
                r
            }
            Shared::Datasource(d) => {
                let mut r = change_record(caller, &format!("datasource.{verb}"));
                r.datasource_id = Some(d.id.clone());
                r
            }
        }
    }

    /// The object with a new owner, as a store change.
    fn with_owner(&self, to: &UserId) -> (UserId, Change) {
        let now = Utc::now();
        match self {
            Shared::App(a) => {
                let mut new = (*a).clone();
                let from = std::mem::replace(&mut new.owner_id, to.clone());
                new.updated_at = now;
                (
                    from,
                    Change::PutApp {
                        app: new,
                        is_new: false,
                    },
                )
            }
            Shared::Datasource(d) => {
                let mut new = (*d).clone();
                let from = std::mem::replace(&mut new.owner_id, to.clone());
                new.updated_at = now;
                (
                    from,
                    Change::PutDatasource {
                        ds: Box::new(new),
                        is_new: false,
                    },
                )
            }
        }
    }
}

/// Validates a grant: only viewer or editor (ownership moves by transfer), only to users or
/// groups of the company, and never to API users on datasources (they reach data through apps).
fn member_principal(
    caller: &Caller,
    object: Shared<'_>,
    principal_id: &str,
    role: ObjectRole,
) -> Result<PrincipalId, ApiError> {
    if role == ObjectRole::Owner {
        return Err(ApiError::bad_request(
            "role must be viewer or editor; ownership moves with /transfer",
        ));
    }
    let p = find_principal(&caller.company, principal_id)?;
    if let PrincipalId::User(u) = &p
        && matches!(object, Shared::Datasource(_))
        && caller
            .company
            .users
            .get(u)
            .is_some_and(|u| u.kind == UserKind::Api)
    {
        return Err(ApiError::bad_request(
            "API users cannot be given datasources; add them to an app",
        ));
    }
    Ok(p)
}

/// Grants (or changes) `principal_id`'s role on the object.
pub(super) async fn set_member(
    state: &AppState,
    caller: &Caller,
    object: Shared<'_>,
    principal_id: String,
    role: ObjectRole,
) -> Result<Arc<CompanyView>, ApiError> {
    let principal = member_principal(caller, object, &principal_id, role)?;
    let mut rec = object.record(caller, "share");
    rec.target_id = Some(principal_id);
    rec.detail = Some(json!({ "role": role }));
    let change = Change::SetMember {
        object_id: object.object_id(),
        principal,
        role,
    };
    state
        .apply(&caller.user.company_id, vec![change], vec![rec])
        .await
}

/// Revokes `principal_id`'s grant on the object.
pub(super) async fn remove_member(
    state: &AppState,
    caller: &Caller,
    object: Shared<'_>,
    principal_id: String,
) -> Result<(), ApiError> {
    let principal = find_principal(&caller.company, &principal_id)?;
    let mut rec = object.record(caller, "unshare");
    rec.target_id = Some(principal_id);
    let change = Change::RemoveMember {
        object_id: object.object_id(),
        principal,
    };
    state
        .apply(&caller.user.company_id, vec![change], vec![rec])
        .await?;
    Ok(())
}

/// Hands ownership to a person of the company with creator role or higher (409 otherwise). The
/// previous owner keeps editor access, so a transfer never locks its giver out by surprise.
pub(super) async fn transfer(
    state: &AppState,
    caller: &Caller,
    object: Shared<'_>,
    user_id: &str,
) -> Result<Arc<CompanyView>, ApiError> {
    let target = find_user(&caller.company, user_id)?;
    if !permission::can_receive_ownership(target.kind, target.role) {
        return Err(ApiError::conflict(
            "ownership can go only to a person user with creator role or higher",
        ));
    }
    let to = target.id.clone();
    let (from, put) = object.with_owner(&to);
    let mut rec = object.record(caller, "transfer");
    rec.target_id = Some(to.to_string());
    rec.detail = Some(json!({"from": from, "to": to}));
    let changes = vec![
        put,
        Change::SetMember {
            object_id: object.object_id(),
            principal: PrincipalId::User(from),
            role: ObjectRole::Editor,
        },
    ];
    state
        .apply(&caller.user.company_id, changes, vec![rec])
        .await
}
