//! App routes: create, list, edit, delete, attach/detach datasources, sharing, clone, transfer.

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
use super::extract::{Json, OptionalJson};
use super::openapi as doc;
use super::sharing::{self, Kind, MemberBody, TransferBody};
use super::views::{self, app_acl, ds_acl, find_app, find_ds, valid_name};
use super::{AppState, change_record};
use crate::identity::Caller;
use crate::model::*;
use crate::permission::{self, AppAction, CompanyAction};
use crate::store::{App, Change};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/apps", get(list).post(create))
        .route("/v1/apps/{id}", get(get_one).patch(patch).delete(remove))
        .route(
            "/v1/apps/{id}/datasources/{datasource_id}",
            put(attach).delete(detach),
        )
        .route("/v1/apps/{id}/members", get(list_members))
        .route(
            "/v1/apps/{id}/members/{principal_id}",
            put(set_member).delete(remove_member),
        )
        .route("/v1/apps/{id}/clone", post(clone_app))
        .route("/v1/apps/{id}/transfer", post(transfer))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = CreateApp)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    description: String,
    visibility: Option<Visibility>,
    #[serde(default)]
    datasource_ids: Vec<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PatchApp)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    name: Option<String>,
    description: Option<String>,
    visibility: Option<Visibility>,
}

fn guard<'a>(caller: &'a Caller, id: &str, action: AppAction) -> Result<&'a App, ApiError> {
    let app = find_app(&caller.company, id)?;
    require(permission::app(&caller.principal(), &app_acl(app), action))?;
    Ok(app)
}

fn name_taken(caller: &Caller, name: &str, except: Option<&AppId>) -> bool {
    caller
        .company
        .apps
        .values()
        .any(|a| a.name == name && Some(&a.id) != except)
}

#[utoipa::path(get, path = "/v1/apps", tag = "apps",
    responses((status = 200, description = "The apps the caller can use", body = doc::AppList)))]
async fn list(caller: Caller) -> impl IntoResponse {
    let cv = &caller.company;
    let p = caller.principal();
    let mut items: Vec<&App> = cv
        .apps
        .values()
        .filter(|a| permission::app(&p, &app_acl(a), AppAction::Use).is_allow())
        .collect();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    let items: Vec<_> = items
        .into_iter()
        .map(|a| views::app(&caller, cv, a))
        .collect();
    axum::Json(json!({ "items": items }))
}

#[utoipa::path(post, path = "/v1/apps", tag = "apps", request_body = CreateBody, responses(
    (status = 201, description = "The new app (attaching needs viewer on each datasource)", body = doc::App),
    doc::BadRequest, doc::Forbidden, doc::NotFound, doc::Conflict, doc::PayloadTooLarge,
))]
async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<CreateBody>,
) -> Result<impl IntoResponse, ApiError> {
    require(permission::company(
        &caller.principal(),
        CompanyAction::CreateApp,
    ))?;
    let name = valid_name("name", &body.name)?;
    if name_taken(&caller, &name, None) {
        return Err(ApiError::conflict("an app with that name already exists"));
    }
    let now = Utc::now();
    let app = App {
        id: AppId::generate(),
        company_id: caller.user.company_id.clone(),
        name,
        description: body.description,
        visibility: body.visibility.unwrap_or(Visibility::Private),
        owner_id: caller.user.id.clone(),
        members: Vec::new(),
        datasources: Vec::new(),
        created_at: now,
        updated_at: now,
    };
    let mut changes = vec![Change::PutApp {
        app: app.clone(),
        is_new: true,
    }];
    let mut records = Vec::new();
    let mut rec = change_record(&caller, "app.create");
    rec.app_id = Some(app.id.clone());
    rec.detail = Some(json!({"name": app.name, "visibility": app.visibility}));
    records.push(rec);
    // Attaching at creation needs viewer on each datasource, as attaching later does.
    let acl = app_acl(&app);
    for ds_id in &body.datasource_ids {
        let ds = find_ds(&caller.company, ds_id)?;
        require(permission::attach(&caller.principal(), &acl, &ds_acl(ds)))?;
        changes.push(Change::Attach {
            app_id: app.id.clone(),
            datasource_id: ds.id.clone(),
            by: caller.user.id.clone(),
        });
        let mut rec = change_record(&caller, "app.attach");
        rec.app_id = Some(app.id.clone());
        rec.datasource_id = Some(ds.id.clone());
        records.push(rec);
    }
    let cv = state
        .apply(&caller.user.company_id, changes, records)
        .await?;
    let app = find_app(&cv, app.id.as_str())?;
    Ok((
        StatusCode::CREATED,
        axum::Json(views::app(&caller, &cv, app)),
    ))
}

#[utoipa::path(get, path = "/v1/apps/{id}", tag = "apps", params(("id" = String, Path, description = "App id")),
    responses((status = 200, description = "The app", body = doc::App), doc::Forbidden, doc::NotFound))]
async fn get_one(caller: Caller, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let app = guard(&caller, &id, AppAction::View)?;
    Ok(axum::Json(views::app(&caller, &caller.company, app)))
}

#[utoipa::path(patch, path = "/v1/apps/{id}", tag = "apps", request_body = PatchBody, params(("id" = String, Path, description = "App id")),
    responses(
        (status = 200, description = "The app after the change (editor+)", body = doc::App),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::Conflict, doc::PayloadTooLarge,
    ))]
async fn patch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<PatchBody>,
) -> Result<impl IntoResponse, ApiError> {
    let old = guard(&caller, &id, AppAction::Edit)?;
    let mut app = old.clone();
    let mut changed = Vec::new();
    if let Some(n) = &body.name {
        app.name = valid_name("name", n)?;
        if name_taken(&caller, &app.name, Some(&app.id)) {
            return Err(ApiError::conflict("an app with that name already exists"));
        }
        changed.push("name");
    }
    if let Some(d) = body.description {
        app.description = d;
        changed.push("description");
    }
    if let Some(v) = body.visibility {
        app.visibility = v;
        changed.push("visibility");
    }
    app.updated_at = Utc::now();
    let action = if body.visibility.is_some_and(|v| v != old.visibility) {
        "app.visibility"
    } else {
        "app.update"
    };
    let mut rec = change_record(&caller, action);
    rec.app_id = Some(app.id.clone());
    rec.detail = Some(json!({"changed": changed, "visibility": app.visibility}));
    let cv = state
        .apply(
            &caller.user.company_id,
            vec![Change::PutApp { app, is_new: false }],
            vec![rec],
        )
        .await?;
    let app = find_app(&cv, &id)?;
    Ok(axum::Json(views::app(&caller, &cv, app)))
}

#[utoipa::path(delete, path = "/v1/apps/{id}", tag = "apps", params(("id" = String, Path, description = "App id")),
    responses((status = 204, description = "Deleted (owner)"), doc::Forbidden, doc::NotFound))]
async fn remove(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let app = guard(&caller, &id, AppAction::Delete)?;
    let mut rec = change_record(&caller, "app.delete");
    rec.app_id = Some(app.id.clone());
    rec.detail = Some(json!({"name": app.name}));
    state
        .apply(
            &caller.user.company_id,
            vec![Change::DeleteApp { id: app.id.clone() }],
            vec![rec],
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/v1/apps/{id}/datasources/{datasource_id}", tag = "apps",
    params(("id" = String, Path, description = "App id"), ("datasource_id" = String, Path, description = "Datasource id")),
    responses(
        (status = 200, description = "The app with the datasource attached", body = doc::App),
        doc::Forbidden, doc::NotFound,
    ))]
async fn attach(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, ds_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let app = guard(&caller, &id, AppAction::View)?;
    let ds = find_ds(&caller.company, &ds_id)?;
    require(permission::attach(
        &caller.principal(),
        &app_acl(app),
        &ds_acl(ds),
    ))?;
    let mut rec = change_record(&caller, "app.attach");
    rec.app_id = Some(app.id.clone());
    rec.datasource_id = Some(ds.id.clone());
    let cv = state
        .apply(
            &caller.user.company_id,
            vec![Change::Attach {
                app_id: app.id.clone(),
                datasource_id: ds.id.clone(),
                by: caller.user.id.clone(),
            }],
            vec![rec],
        )
        .await?;
    let app = find_app(&cv, &id)?;
    Ok(axum::Json(views::app(&caller, &cv, app)))
}

#[utoipa::path(delete, path = "/v1/apps/{id}/datasources/{datasource_id}", tag = "apps",
    params(("id" = String, Path, description = "App id"), ("datasource_id" = String, Path, description = "Datasource id")),
    responses(
        (status = 200, description = "The app without the datasource", body = doc::App),
        doc::Forbidden, doc::NotFound,
    ))]
async fn detach(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, ds_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let app = guard(&caller, &id, AppAction::Detach)?;
    let ds_id = DatasourceId(ds_id);
    if !app.datasources.contains(&ds_id) {
        return Err(ApiError::not_found());
    }
    let mut rec = change_record(&caller, "app.detach");
    rec.app_id = Some(app.id.clone());
    rec.datasource_id = Some(ds_id.clone());
    let cv = state
        .apply(
            &caller.user.company_id,
            vec![Change::Detach {
                app_id: app.id.clone(),
                datasource_id: ds_id,
            }],
            vec![rec],
        )
        .await?;
    let app = find_app(&cv, &id)?;
    Ok(axum::Json(views::app(&caller, &cv, app)))
}

#[utoipa::path(get, path = "/v1/apps/{id}/members", tag = "apps", params(("id" = String, Path, description = "App id")),
    responses((status = 200, description = "Direct grants on the app", body = doc::MemberList), doc::Forbidden, doc::NotFound))]
async fn list_members(
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    sharing::list_members_route(&caller, Kind::App, &id)
}

#[utoipa::path(put, path = "/v1/apps/{id}/members/{principal_id}", tag = "apps",
    request_body = MemberBody,
    params(("id" = String, Path, description = "App id"), ("principal_id" = String, Path, description = "A user's (person or API) or a group's id")),
    responses(
        (status = 200, description = "The app's members after the grant", body = doc::MemberList),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::PayloadTooLarge,
    ))]
async fn set_member(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, principal_id)): Path<(String, String)>,
    Json(body): Json<MemberBody>,
) -> Result<impl IntoResponse, ApiError> {
    sharing::set_member_route(&state, &caller, Kind::App, &id, principal_id, body.role).await
}

#[utoipa::path(delete, path = "/v1/apps/{id}/members/{principal_id}", tag = "apps",
    params(("id" = String, Path, description = "App id"), ("principal_id" = String, Path, description = "A user's or a group's id")),
    responses((status = 204, description = "The grant is gone"), doc::Forbidden, doc::NotFound))]
async fn remove_member(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, principal_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    sharing::remove_member_route(&state, &caller, Kind::App, &id, principal_id).await
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CloneBody {
    name: Option<String>,
}

#[utoipa::path(post, path = "/v1/apps/{id}/clone", tag = "apps",
    request_body(content = Option<CloneBody>, description = "May be left out; the name defaults to \"<name> (copy)\""),
    params(("id" = String, Path, description = "App id")),
    responses(
        (status = 201, description = "The private copy, without the datasources the caller may not attach", body = doc::CloneResult),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::Conflict, doc::PayloadTooLarge,
    ))]
async fn clone_app(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<CloneBody>,
) -> Result<impl IntoResponse, ApiError> {
    let cv = &caller.company;
    let src = find_app(cv, &id)?;
    let ds_acls: Vec<(&DatasourceId, permission::Acl)> = src
        .datasources
        .iter()
        .filter_map(|d| cv.datasources.get(d).map(|ds| (&ds.id, ds_acl(ds))))
        .collect();
    let plan = permission::clone_plan(&caller.principal(), &app_acl(src), &ds_acls)
        .map_err(ApiError::from)?;
    let name = match &body.name {
        Some(n) => valid_name("name", n)?,
        None => {
            let mut n = format!("{} (copy)", src.name);
            let mut i = 2;
            while name_taken(&caller, &n, None) {
                n = format!("{} (copy {i})", src.name);
                i += 1;
            }
            n
        }
    };
    if name_taken(&caller, &name, None) {
        return Err(ApiError::conflict("an app with that name already exists"));
    }
    let now = Utc::now();
    let app = App {
        id: AppId::generate(),
        company_id: caller.user.company_id.clone(),
        name,
        description: src.description.clone(),
        visibility: Visibility::Private,
        owner_id: caller.user.id.clone(),
        members: Vec::new(),
        datasources: Vec::new(),
        created_at: now,
        updated_at: now,
    };
    let mut changes = vec![Change::PutApp {
        app: app.clone(),
        is_new: true,
    }];
    for d in &plan.kept {
        changes.push(Change::Attach {
            app_id: app.id.clone(),
            datasource_id: (*d).clone(),
            by: caller.user.id.clone(),
        });
    }
    let dropped: Vec<DatasourceId> = plan.dropped.iter().map(|d| (*d).clone()).collect();
    let mut rec = change_record(&caller, "app.clone");
    rec.app_id = Some(app.id.clone());
    rec.target_id = Some(src.id.to_string());
    rec.detail = Some(json!({"kept": plan.kept, "dropped": dropped}));
    let cv2 = state
        .apply(&caller.user.company_id, changes, vec![rec])
        .await?;
    let new_app = find_app(&cv2, app.id.as_str())?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "app": views::app(&caller, &cv2, new_app),
            "dropped_datasources": dropped,
        })),
    ))
}

#[utoipa::path(post, path = "/v1/apps/{id}/transfer", tag = "apps", request_body = TransferBody, params(("id" = String, Path, description = "App id")),
    responses(
        (status = 200, description = "The app with its new owner; the previous owner keeps editor", body = doc::App),
        doc::BadRequest, doc::Forbidden, doc::NotFound, doc::Conflict, doc::PayloadTooLarge,
    ))]
async fn transfer(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<TransferBody>,
) -> Result<impl IntoResponse, ApiError> {
    sharing::transfer_route(&state, &caller, Kind::App, &id, &body.user_id).await
}
