//! Identity routes: `/v1/me`, users, API users, tokens, groups.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

use super::error::{ApiError, require};
use super::extract::{Json, OptionalJson};
use super::openapi as doc;
use super::views::{self, find_user, valid_name};
use super::{AppState, change_record};
use crate::identity::{Caller, mint};
use crate::model::*;
use crate::permission::{self, CompanyAction};
use crate::store::{Change, Group, User};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/users", get(list_users).post(invite_user))
        .route(
            "/v1/users/{id}",
            axum::routing::patch(change_role).delete(delete_user),
        )
        .route("/v1/api-users", post(create_api_user))
        .route("/v1/users/{id}/tokens", post(create_token))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/v1/groups", get(list_groups).post(create_group))
        .route("/v1/groups/{id}", delete(delete_group))
        .route(
            "/v1/groups/{id}/members/{user_id}",
            put(add_group_member).delete(remove_group_member),
        )
}

#[utoipa::path(get, path = "/v1/me", tag = "identity",
    responses((status = 200, description = "The caller and their company", body = doc::Me)))]
async fn me(caller: Caller) -> impl IntoResponse {
    let c = caller.company.company();
    axum::Json(json!({
        "user": views::user(&caller.user),
        "company": {"id": c.id, "name": c.name},
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct UserSearch {
    /// Only users whose name or email contains this text, ignoring case (the console's
    /// "add people by name or email"). Empty or absent: every user.
    q: Option<String>,
}

/// The longest search text taken: longer than any name (200) or email (254) could match.
const MAX_SEARCH_CHARS: usize = 256;

/// Does `u` match the search text `needle` (already lowercased)?
fn user_matches(u: &User, needle: &str) -> bool {
    u.name.to_lowercase().contains(needle)
        || u.email
            .as_deref()
            .is_some_and(|e| e.to_lowercase().contains(needle))
}

#[utoipa::path(get, path = "/v1/users", tag = "identity", params(UserSearch), responses(
    (status = 200, description = "The company's users, oldest first (person users only may list)", body = doc::UserList),
    doc::BadRequest, doc::Forbidden,
))]
async fn list_users(
    caller: Caller,
    q: Result<Query<UserSearch>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    // Searching is listing with a filter: the same rule, so a search can never show a user the
    // plain listing would not.
    require(permission::company(
        &caller.principal(),
        CompanyAction::ListUsers,
    ))?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let needle = q.q.as_deref().map(str::trim).unwrap_or_default();
    if needle.chars().count() > MAX_SEARCH_CHARS {
        return Err(ApiError::bad_request(format!(
            "q must be at most {MAX_SEARCH_CHARS} characters"
        )));
    }
    let needle = needle.to_lowercase();
    let mut users: Vec<&User> = caller
        .company
        .users
        .values()
        .filter(|u| user_matches(u, &needle))
        .collect();
    users.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    let items: Vec<_> = users.into_iter().map(views::user).collect();
    Ok(axum::Json(json!({ "items": items })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct InviteBody {
    email: String,
    name: Option<String>,
    role: CompanyRole,
}

fn valid_email(e: &str) -> Result<String, ApiError> {
    let e = e.trim();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && !d.is_empty() && d.contains('.') && !d.starts_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(e.to_owned())
    } else {
        Err(ApiError::bad_request("email is not a valid address"))
    }
}

fn token_expiry(
    state: &AppState,
    now: DateTime<Utc>,
    requested: Option<DateTime<Utc>>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    match requested {
        Some(t) if t <= now => Err(ApiError::bad_request("expires_at must be in the future")),
        Some(t) => Ok(Some(t)),
        None if state.config.tokens.default_ttl_days > 0 => Ok(Some(
            now + chrono::Duration::days(state.config.tokens.default_ttl_days as i64),
        )),
        None => Ok(None),
    }
}

#[utoipa::path(post, path = "/v1/users", tag = "identity", request_body = InviteBody, responses(
    (status = 201, description = "The invited user and a first token for them (admin+)", body = doc::UserWithToken),
    doc::BadRequest, doc::Forbidden, doc::Conflict, doc::PayloadTooLarge,
))]
async fn invite_user(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<InviteBody>,
) -> Result<impl IntoResponse, ApiError> {
    require(permission::company(
        &caller.principal(),
        CompanyAction::InviteUser { role: body.role },
    ))?;
    let email = valid_email(&body.email)?;
    let name = match &body.name {
        Some(n) => valid_name("name", n)?,
        None => email.clone(),
    };
    if caller.company.users.values().any(|u| {
        u.email
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case(&email))
    }) {
        return Err(ApiError::conflict("a user with that email already exists"));
    }
    let now = Utc::now();
    let user = User {
        id: UserId::generate(),
        company_id: caller.user.company_id.clone(),
        kind: UserKind::Person,
        email: Some(email),
        name,
        role: body.role,
        created_at: now,
    };
    let minted = mint(
        &user.id,
        &user.company_id,
        Some("first token".to_owned()),
        now,
        token_expiry(&state, now, None)?,
    );
    let mut rec = change_record(&caller, "user.create");
    rec.target_id = Some(user.id.to_string());
    rec.detail = Some(json!({"role": body.role}));
    state
        .apply(
            &caller.user.company_id,
            vec![
                Change::CreateUser(user.clone()),
                Change::CreateToken(minted.token.clone()),
            ],
            vec![rec],
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"user": views::user(&user), "token": minted.plain})),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: CompanyRole,
}

#[utoipa::path(patch, path = "/v1/users/{id}", tag = "identity", request_body = RoleBody,
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The user with their new role (admin+)", body = doc::User),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::Conflict, doc::PayloadTooLarge,
    ))]
async fn change_role(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<RoleBody>,
) -> Result<impl IntoResponse, ApiError> {
    let cv = &caller.company;
    // Person users only see users at all; API users get 404 like any object they cannot view.
    require(permission::company(
        &caller.principal(),
        CompanyAction::ListUsers,
    ))
    .map_err(|_| ApiError::not_found())?;
    let target = find_user(cv, &id)?;
    if target.kind == UserKind::Api {
        return Err(ApiError::bad_request("API users have no company role"));
    }
    require(permission::company(
        &caller.principal(),
        CompanyAction::ChangeRole {
            from: target.role,
            to: body.role,
        },
    ))?;
    require(permission::last_owner_rule(
        cv.owner_count(),
        target.role,
        Some(body.role),
    ))?;
    let mut rec = change_record(&caller, "user.role");
    rec.target_id = Some(target.id.to_string());
    rec.detail = Some(json!({"from": target.role, "to": body.role}));
    let cv = state
        .apply(
            &caller.user.company_id,
            vec![Change::SetUserRole {
                user_id: target.id.clone(),
                role: body.role,
            }],
            vec![rec],
        )
        .await?;
    let updated = find_user(&cv, &id)?;
    Ok(axum::Json(views::user(updated)))
}

#[utoipa::path(delete, path = "/v1/users/{id}", tag = "identity",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 204, description = "Deleted; the user's tokens stop working at once (admin+)"),
        doc::Forbidden, doc::NotFound, doc::Conflict,
    ))]
async fn delete_user(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let cv = &caller.company;
    require(permission::company(
        &caller.principal(),
        CompanyAction::ListUsers,
    ))
    .map_err(|_| ApiError::not_found())?;
    let target = find_user(cv, &id)?;
    let action = if target.kind == UserKind::Api {
        CompanyAction::ManageApiUsers
    } else {
        CompanyAction::RemoveUser { role: target.role }
    };
    require(permission::company(&caller.principal(), action))?;
    if target.kind == UserKind::Person {
        require(permission::last_owner_rule(
            cv.owner_count(),
            target.role,
            None,
        ))?;
    }
    let mut rec = change_record(&caller, "user.delete");
    rec.target_id = Some(target.id.to_string());
    state
        .apply(
            &caller.user.company_id,
            vec![Change::DeleteUser {
                user_id: target.id.clone(),
            }],
            vec![rec],
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ApiUserBody {
    name: String,
}

#[utoipa::path(post, path = "/v1/api-users", tag = "identity", request_body = ApiUserBody, responses(
    (status = 201, description = "The API user (kind api) and its first token (admin+)", body = doc::UserWithToken),
    doc::BadRequest, doc::Forbidden, doc::Conflict, doc::PayloadTooLarge,
))]
async fn create_api_user(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<ApiUserBody>,
) -> Result<impl IntoResponse, ApiError> {
    require(permission::company(
        &caller.principal(),
        CompanyAction::ManageApiUsers,
    ))?;
    let name = valid_name("name", &body.name)?;
    if caller
        .company
        .users
        .values()
        .any(|u| u.kind == UserKind::Api && u.name == name)
    {
        return Err(ApiError::conflict(
            "an API user with that name already exists",
        ));
    }
    let now = Utc::now();
    let user = User {
        id: UserId::generate(),
        company_id: caller.user.company_id.clone(),
        kind: UserKind::Api,
        email: None,
        name,
        role: CompanyRole::Consumer,
        created_at: now,
    };
    let minted = mint(
        &user.id,
        &user.company_id,
        Some("first token".to_owned()),
        now,
        token_expiry(&state, now, None)?,
    );
    let mut rec = change_record(&caller, "api_user.create");
    rec.target_id = Some(user.id.to_string());
    state
        .apply(
            &caller.user.company_id,
            vec![
                Change::CreateUser(user.clone()),
                Change::CreateToken(minted.token.clone()),
            ],
            vec![rec],
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"user": views::user(&user), "token": minted.plain})),
    ))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/v1/users/{id}/tokens", tag = "identity",
    request_body(content = Option<TokenBody>, description = "May be left out"),
    params(("id" = String, Path, description = "User id: the caller, or an API user for admin+")),
    responses(
        (status = 201, description = "The new token, shown only here", body = doc::TokenCreated),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::Conflict, doc::PayloadTooLarge,
    ))]
async fn create_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<TokenBody>,
) -> Result<impl IntoResponse, ApiError> {
    let cv = &caller.company;
    let target = if id == caller.user.id.as_str() {
        &caller.user
    } else {
        find_user(cv, &id)?
    };
    require(permission::create_token(
        &caller.principal(),
        &target.id,
        target.kind,
    ))?;
    let name = body
        .name
        .as_deref()
        .map(|n| valid_name("name", n))
        .transpose()?;
    let count = cv
        .tokens
        .values()
        .filter(|t| t.user_id == target.id)
        .count();
    if count >= state.config.tokens.max_per_user {
        return Err(ApiError::conflict(format!(
            "the user already has {count} tokens, the most allowed; revoke one first"
        )));
    }
    let now = Utc::now();
    let expires_at = token_expiry(&state, now, body.expires_at)?;
    let minted = mint(&target.id, &target.company_id, name, now, expires_at);
    let mut rec = change_record(&caller, "token.create");
    rec.target_id = Some(minted.token.id.to_string());
    rec.detail = Some(json!({"user_id": target.id}));
    state
        .apply(
            &caller.user.company_id,
            vec![Change::CreateToken(minted.token.clone())],
            vec![rec],
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "id": minted.token.id,
            "token": minted.plain,
            "expires_at": minted.token.expires_at,
        })),
    ))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "identity",
    params(("id" = String, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked (the token's user, or admin+)"),
        doc::NotFound,
    ))]
async fn revoke_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let cv = &caller.company;
    let token = cv
        .tokens
        .get(&TokenId(id.clone()))
        .ok_or_else(ApiError::not_found)?;
    let decision = permission::revoke_token(&caller.principal(), &token.user_id);
    if !decision.is_allow() {
        // Someone else's token: do not reveal that it exists.
        return Err(ApiError::not_found());
    }
    // Nobody can mint a token for another person, so an admin revoking an owner's tokens could
    // lock the owner out for good: only owners (or the token's own user) may do that.
    let holder = cv.users.get(&token.user_id);
    if holder.is_some_and(|u| {
        u.kind == UserKind::Person && u.role == CompanyRole::Owner && u.id != caller.user.id
    }) && caller.user.role != CompanyRole::Owner
    {
        return Err(ApiError::forbidden(
            "only a company owner may revoke another owner's token",
        ));
    }
    let mut rec = change_record(&caller, "token.revoke");
    rec.target_id = Some(id.clone());
    state
        .apply(
            &caller.user.company_id,
            vec![Change::RevokeToken {
                token_id: token.id.clone(),
            }],
            vec![rec],
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn group_json(g: &Group) -> serde_json::Value {
    json!({"id": g.id, "name": g.name, "members": g.members, "created_at": g.created_at})
}

#[utoipa::path(get, path = "/v1/groups", tag = "identity", responses(
    (status = 200, description = "The company's groups (person users only)", body = doc::GroupList),
    doc::Forbidden,
))]
async fn list_groups(caller: Caller) -> Result<impl IntoResponse, ApiError> {
    require(permission::company(
        &caller.principal(),
        CompanyAction::ListGroups,
    ))?;
    let mut groups: Vec<&Group> = caller.company.groups.values().collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(axum::Json(
        json!({"items": groups.into_iter().map(group_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    name: String,
}

#[utoipa::path(post, path = "/v1/groups", tag = "identity", request_body = GroupBody, responses(
    (status = 201, description = "The new group (admin+)", body = doc::Group),
    doc::BadRequest, doc::Forbidden, doc::Conflict, doc::PayloadTooLarge,
))]
async fn create_group(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<GroupBody>,
) -> Result<impl IntoResponse, ApiError> {
    require(permission::company(
        &caller.principal(),
        CompanyAction::ManageGroups,
    ))?;
    let name = valid_name("name", &body.name)?;
    let group = Group {
        id: GroupId::generate(),
        company_id: caller.user.company_id.clone(),
        name,
        members: Vec::new(),
        created_at: Utc::now(),
    };
    let mut rec = change_record(&caller, "group.create");
    rec.target_id = Some(group.id.to_string());
    state
        .apply(
            &caller.user.company_id,
            vec![Change::CreateGroup(group.clone())],
            vec![rec],
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(group_json(&group))))
}

fn find_group<'a>(caller: &'a Caller, id: &str) -> Result<&'a Group, ApiError> {
    caller
        .company
        .groups
        .get(&GroupId(id.to_owned()))
        .ok_or_else(ApiError::not_found)
}

/// Group routes: API users cannot see groups at all (404), consumers/creators see them but may
/// not change them (403).
fn group_guard(caller: &Caller, id: &str) -> Result<GroupId, ApiError> {
    require(permission::company(
        &caller.principal(),
        CompanyAction::ListGroups,
    ))
    .map_err(|_| ApiError::not_found())?;
    let g = find_group(caller, id)?;
    require(permission::company(
        &caller.principal(),
        CompanyAction::ManageGroups,
    ))?;
    Ok(g.id.clone())
}

#[utoipa::path(delete, path = "/v1/groups/{id}", tag = "identity",
    params(("id" = String, Path, description = "Group id")),
    responses((status = 204, description = "Deleted (admin+)"), doc::Forbidden, doc::NotFound))]
async fn delete_group(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let group_id = group_guard(&caller, &id)?;
    let mut rec = change_record(&caller, "group.delete");
    rec.target_id = Some(id);
    state
        .apply(
            &caller.user.company_id,
            vec![Change::DeleteGroup { group_id }],
            vec![rec],
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/v1/groups/{id}/members/{user_id}", tag = "identity",
    params(("id" = String, Path, description = "Group id"), ("user_id" = String, Path, description = "A person user's id")),
    responses(
        (status = 204, description = "The user is a member (admin+)"),
        doc::BadRequest, doc::Forbidden, doc::NotFound,
    ))]
async fn add_group_member(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let group_id = group_guard(&caller, &id)?;
    let user = find_user(&caller.company, &user_id)?;
    if user.kind == UserKind::Api {
        return Err(ApiError::bad_request(
            "API users cannot join groups; add them to apps directly",
        ));
    }
    let mut rec = change_record(&caller, "group.member_add");
    rec.target_id = Some(id);
    rec.detail = Some(json!({"user_id": user.id}));
    state
        .apply(
            &caller.user.company_id,
            vec![Change::AddGroupMember {
                group_id,
                user_id: user.id.clone(),
            }],
            vec![rec],
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/groups/{id}/members/{user_id}", tag = "identity",
    params(("id" = String, Path, description = "Group id"), ("user_id" = String, Path, description = "User id")),
    responses((status = 204, description = "The user is no longer a member (admin+)"), doc::Forbidden, doc::NotFound))]
async fn remove_group_member(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let group_id = group_guard(&caller, &id)?;
    let user = find_user(&caller.company, &user_id)?;
    let mut rec = change_record(&caller, "group.member_remove");
    rec.target_id = Some(id);
    rec.detail = Some(json!({"user_id": user.id}));
    state
        .apply(
            &caller.user.company_id,
            vec![Change::RemoveGroupMember {
                group_id,
                user_id: user.id.clone(),
            }],
            vec![rec],
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
