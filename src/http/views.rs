//! The JSON shapes of API.md, built from store records for one caller (`my_role` depends on who
//! asks), plus the lookups every handler repeats: find an object in the caller's company and build
//! its ACL for the permission engine.

use serde_json::{Value, json};

use crate::identity::Caller;
use crate::model::*;
use crate::permission::{self, Acl};
use crate::store::{App, CompanyView, Datasource, User};

use super::error::ApiError;

pub fn user(u: &User) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "name": u.name,
        // An API user's stored role means nothing; say so rather than show "consumer".
        "role": if u.kind == UserKind::Api { Value::Null } else { json!(u.role) },
        "kind": u.kind,
        "created_at": u.created_at,
    })
}

pub fn app_acl(a: &App) -> Acl<'_> {
    a.acl()
}

pub fn ds_acl(d: &Datasource) -> Acl<'_> {
    d.acl()
}

pub fn app(caller: &Caller, cv: &CompanyView, a: &App) -> Value {
    let datasources: Vec<Value> = a
        .datasources
        .iter()
        .filter_map(|id| cv.datasources.get(id))
        .map(|d| json!({"id": d.id, "name": d.name, "kind": d.kind}))
        .collect();
    json!({
        "id": a.id,
        "name": a.name,
        "description": a.description,
        "visibility": a.visibility,
        "owner_id": a.owner_id,
        "datasources": datasources,
        "my_role": permission::effective_role(&principal_in(caller, cv), &app_acl(a)),
        "created_at": a.created_at,
        "updated_at": a.updated_at,
    })
}

pub fn datasource(caller: &Caller, cv: &CompanyView, d: &Datasource) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "description": d.description,
        "kind": d.kind,
        "visibility": d.visibility,
        "owner_id": d.owner_id,
        "connection": connection(d),
        "policy": d.policy,
        "pool": {"max_size": d.pool_max_size},
        "my_role": permission::effective_role(&principal_in(caller, cv), &ds_acl(d)),
        "created_at": d.created_at,
        "updated_at": d.updated_at,
    })
}

/// A datasource's connection as answered. Never the password nor the TLS client key:
/// ConnectionSettings has no field for either; `tls.client_key_set` says whether a key is stored.
fn connection(d: &Datasource) -> Value {
    let mut c = json!(d.connection);
    if let Some(tls) = c.get_mut("tls").and_then(Value::as_object_mut) {
        tls.insert(
            "client_key_set".into(),
            Value::Bool(d.tls_client_key_enc.is_some()),
        );
    }
    c
}

/// The caller as a principal, with group memberships read from `cv` (which may be fresher than
/// the view the caller was authenticated with, right after a write).
pub fn principal_in<'a>(caller: &'a Caller, cv: &'a CompanyView) -> permission::Principal<'a> {
    permission::Principal {
        user_id: &caller.user.id,
        kind: caller.user.kind,
        company_role: cv
            .users
            .get(&caller.user.id)
            .map(|u| u.role)
            .unwrap_or(caller.user.role),
        groups: cv.groups_of(&caller.user.id),
    }
}

pub fn members(list: &[(PrincipalId, ObjectRole)]) -> Value {
    let items: Vec<Value> = list
        .iter()
        .map(
            |(p, r)| json!({"principal_id": p.as_str(), "principal_kind": p.kind_str(), "role": r}),
        )
        .collect();
    json!({ "items": items })
}

/// Looks up an app of the caller's company; anything else is 404 (never 403: existence in another
/// company is not revealed).
pub fn find_app<'a>(cv: &'a CompanyView, id: &str) -> Result<&'a App, ApiError> {
    cv.apps
        .get(&AppId(id.to_owned()))
        .ok_or_else(ApiError::not_found)
}

pub fn find_ds<'a>(cv: &'a CompanyView, id: &str) -> Result<&'a Datasource, ApiError> {
    cv.datasources
        .get(&DatasourceId(id.to_owned()))
        .ok_or_else(ApiError::not_found)
}

pub fn find_user<'a>(cv: &'a CompanyView, id: &str) -> Result<&'a User, ApiError> {
    cv.users
        .get(&UserId(id.to_owned()))
        .ok_or_else(ApiError::not_found)
}

/// A principal id from a path: a user or a group of the caller's company.
pub fn find_principal(cv: &CompanyView, id: &str) -> Result<PrincipalId, ApiError> {
    if cv.users.contains_key(&UserId(id.to_owned())) {
        return Ok(PrincipalId::User(UserId(id.to_owned())));
    }
    if cv.groups.contains_key(&GroupId(id.to_owned())) {
        return Ok(PrincipalId::Group(GroupId(id.to_owned())));
    }
    Err(ApiError::not_found())
}

/// Names: non-empty after trimming, at most 200 characters, no control characters.
pub fn valid_name(what: &str, name: &str) -> Result<String, ApiError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 200 || n.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{what} must be 1 to 200 printable characters"
        )));
    }
    Ok(n.to_owned())
}
