//! Sharing and ownership transfer, which work the same way for apps and datasources: grant or
//! revoke an object role, hand ownership to another creator+ person. The routes check the
//! caller's right on the object first; this module validates the target and writes the change.

use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

use super::error::ApiError;
use super::views::{find_principal, find_user};
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
