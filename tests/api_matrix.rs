//! The route × role matrix of the admin API over real HTTP. Expectations are written down here from
//! PERMISSIONS.md and docs/permissions.md (never computed by the engine): one row per (route,
//! caller). Every refused mutating call must leave what it targeted unchanged (re-read by the
//! company owner), and every allowed one must change it.
mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::app::{Failures, Person, Resp, TestApp, spawn_app};

/// An expected answer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum E {
    Ok(u16),
    NotFound,
    Forbidden,
    Disabled,
}
use E::{Disabled as DIS, Forbidden as F, NotFound as NF};
const OK: E = E::Ok(200);
const NEW: E = E::Ok(201);
const GONE: E = E::Ok(204);

impl E {
    fn status_code(self) -> (u16, Option<&'static str>) {
        match self {
            E::Ok(s) => (s, None),
            E::NotFound => (404, Some("not_found")),
            E::Forbidden => (403, Some("forbidden")),
            E::Disabled => (403, Some("integration_disabled")),
        }
    }
}

/// One call to make, and what to re-read (path, token) to prove what it changed.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    probes: Vec<(String, String)>,
}

async fn snapshot(app: &TestApp, probes: &[(String, String)]) -> Vec<Value> {
    let mut out = Vec::new();
    for (p, t) in probes {
        let r = app.get(t, p).await;
        out.push(json!({"status": r.status, "body": r.body}));
    }
    out
}

/// Runs one row: the call, the expected status and code, and the changed/unchanged proof.
async fn run_row(app: &TestApp, f: &mut Failures, label: &str, token: &str, call: Call, want: E) {
    let before = snapshot(app, &call.probes).await;
    let r: Resp = app
        .call(
            call.method.clone(),
            &call.path,
            Some(token),
            call.body.as_ref(),
        )
        .await;
    let (status, code) = want.status_code();
    let label = format!("{label} ({} {})", call.method, call.path);
    f.expect(&label, &r, status, code);
    if call.probes.is_empty() || call.method == Method::GET {
        return;
    }
    let after = snapshot(app, &call.probes).await;
    if r.status >= 400 {
        f.check(
            before == after,
            format!("{label}: refused, yet it changed something:\n    before {before:?}\n    after  {after:?}"),
        );
    } else {
        f.check(
            before != after,
            format!("{label}: allowed, yet nothing observable changed"),
        );
    }
}

/// Everyone the tables talk about, in one company.
struct World {
    app: TestApp,
    owner: Person,
    admin: Person,
    creator: Person,
    consumer: Person,
    api: Person,
    objowner: Person,
    editor: Person,
    viewer: Person,
    groupviewer: Person,
    norole: Person,
    consumer_editor: Person,
    bystander: Person,
    newmember: Person,
    recipient: Person,
    robot2: Person,
    group: String,
    ds_a: String,
    ds_b: String,
    ds_private: String,
}

async fn world() -> World {
    let app = spawn_app().await;
    let o = app.owner().to_owned();
    let me = app.get(&o, "/v1/me").await;
    let owner = Person {
        id: me.body["user"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        token: o.clone(),
    };
    app.enable(&o, "sqlite").await;
    app.enable(&o, "postgres").await;
    let r = app
        .patch(
            &o,
            "/v1/integrations/postgres",
            json!({"creators_can_register": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let admin = app.invite(&o, "admin").await;
    let creator = app.invite(&o, "creator").await;
    let consumer = app.invite(&o, "consumer").await;
    let api = app.api_user(&o).await;
    let robot2 = app.api_user(&o).await;
    let objowner = app.invite(&o, "creator").await;
    let editor = app.invite(&o, "creator").await;
    let viewer = app.invite(&o, "creator").await;
    let groupviewer = app.invite(&o, "creator").await;
    let norole = app.invite(&o, "creator").await;
    let consumer_editor = app.invite(&o, "consumer").await;
    let bystander = app.invite(&o, "consumer").await;
    let newmember = app.invite(&o, "consumer").await;
    let recipient = app.invite(&o, "creator").await;
    let group = app.group(&o).await;
    app.add_to_group(&o, &group, &groupviewer.id).await;
    let ds_a = app.sqlite_datasource(&o, "public").await;
    let ds_b = app.sqlite_datasource(&o, "public").await;
    let ds_private = app.sqlite_datasource(&o, "private").await;
    World {
        app,
        owner,
        admin,
        creator,
        consumer,
        api,
        objowner,
        editor,
        viewer,
        groupviewer,
        norole,
        consumer_editor,
        bystander,
        newmember,
        recipient,
        robot2,
        group,
        ds_a,
        ds_b,
        ds_private,
    }
}

/// Callers on one object (app or datasource).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    CompanyOwner,
    AdminNoRole,
    ObjectOwner,
    EditorGrantee,
    ViewerGrantee,
    GroupViewer,
    NoRolePrivate,
    NoRolePublic,
    ConsumerEditor,
    ApiUser,
}

const WHO: [Who; 10] = [
    Who::CompanyOwner,
    Who::AdminNoRole,
    Who::ObjectOwner,
    Who::EditorGrantee,
    Who::ViewerGrantee,
    Who::GroupViewer,
    Who::NoRolePrivate,
    Who::NoRolePublic,
    Who::ConsumerEditor,
    Who::ApiUser,
];

impl World {
    fn object_caller(&self, who: Who) -> &Person {
        match who {
            Who::CompanyOwner => &self.owner,
            Who::AdminNoRole => &self.admin,
            Who::ObjectOwner => &self.objowner,
            Who::EditorGrantee => &self.editor,
            Who::ViewerGrantee => &self.viewer,
            Who::GroupViewer => &self.groupviewer,
            Who::NoRolePrivate | Who::NoRolePublic => &self.norole,
            Who::ConsumerEditor => &self.consumer_editor,
            Who::ApiUser => &self.api,
        }
    }

    /// A fresh app owned by `objowner` (public only for the no-role-on-public caller), with
    /// `ds_a` attached and the grants every column relies on.
    async fn app_fixture(&self, who: Who) -> String {
        let a = &self.app;
        let vis = if who == Who::NoRolePublic {
            "public"
        } else {
            "private"
        };
        let t = &self.objowner.token;
        let id = a.create_app(t, vis, &[&self.ds_a]).await;
        a.share_app(t, &id, &self.editor.id, "editor").await;
        a.share_app(t, &id, &self.viewer.id, "viewer").await;
        a.share_app(t, &id, &self.group, "viewer").await;
        a.share_app(t, &id, &self.consumer_editor.id, "editor")
            .await;
        // The API user is added explicitly: it then sees the app, and only may use it.
        a.share_app(t, &id, &self.api.id, "viewer").await;
        a.share_app(t, &id, &self.bystander.id, "viewer").await;
        id
    }

    /// A fresh SQLite datasource owned by `objowner`, with the same grants (API users cannot be
    /// given datasources, so the API user column has none).
    async fn ds_fixture(&self, who: Who) -> String {
        let a = &self.app;
        let vis = if who == Who::NoRolePublic {
            "public"
        } else {
            "private"
        };
        let t = &self.objowner.token;
        let id = a.sqlite_datasource(t, vis).await;
        a.share_ds(t, &id, &self.editor.id, "editor").await;
        a.share_ds(t, &id, &self.viewer.id, "viewer").await;
        a.share_ds(t, &id, &self.group, "viewer").await;
        a.share_ds(t, &id, &self.consumer_editor.id, "editor").await;
        a.share_ds(t, &id, &self.bystander.id, "viewer").await;
        id
    }
}

#[derive(Clone, Copy, Debug)]
enum AppRoute {
    View,
    Members,
    Edit,
    Delete,
    Attach,
    AttachPrivateDatasource,
    Detach,
    Share,
    Unshare,
    Clone,
    Transfer,
}

/// Columns in the order of `WHO`: company owner, admin (no role), object owner, editor grantee,
/// viewer grantee, group viewer, no role (private), no role (public), consumer with editor grant,
/// API user added as viewer.
///
/// Sources: visibility first (404 for anyone who cannot view: admins have no implicit access to
/// private objects; API users only see apps they were added to); then object role × company role
/// (edit/share/attach/detach: editor + creator; delete/transfer: owner + creator; clone: viewer +
/// creator); company owners pass everything; API users may only view/use.
const APP_TABLE: &[(AppRoute, [E; 10])] = &[
    (AppRoute::View, [OK, NF, OK, OK, OK, OK, NF, OK, OK, OK]),
    (AppRoute::Members, [OK, NF, OK, OK, OK, OK, NF, OK, OK, OK]),
    (AppRoute::Edit, [OK, NF, OK, OK, F, F, NF, F, F, F]),
    (AppRoute::Delete, [GONE, NF, GONE, F, F, F, NF, F, F, F]),
    // Attach also needs viewer on the datasource (ds_b is public; API users never see datasources).
    (AppRoute::Attach, [OK, NF, OK, OK, F, F, NF, F, F, NF]),
    // A private datasource nobody was given: 404 to all but the company owner.
    (
        AppRoute::AttachPrivateDatasource,
        [OK, NF, NF, NF, NF, NF, NF, NF, NF, NF],
    ),
    (AppRoute::Detach, [OK, NF, OK, OK, F, F, NF, F, F, F]),
    (AppRoute::Share, [OK, NF, OK, OK, F, F, NF, F, F, F]),
    (AppRoute::Unshare, [GONE, NF, GONE, GONE, F, F, NF, F, F, F]),
    (
        AppRoute::Clone,
        [NEW, NF, NEW, NEW, NEW, NEW, NF, NEW, F, F],
    ),
    (AppRoute::Transfer, [OK, NF, OK, F, F, F, NF, F, F, F]),
];

fn app_call(w: &World, route: AppRoute, id: &str) -> Call {
    let o = &w.owner.token;
    let probes = vec![
        (format!("/v1/apps/{id}"), o.clone()),
        (format!("/v1/apps/{id}/members"), o.clone()),
        ("/v1/apps".to_owned(), o.clone()),
    ];
    let (method, path, body) = match route {
        AppRoute::View => (Method::GET, format!("/v1/apps/{id}"), None),
        AppRoute::Members => (Method::GET, format!("/v1/apps/{id}/members"), None),
        AppRoute::Edit => (
            Method::PATCH,
            format!("/v1/apps/{id}"),
            Some(json!({"description": "changed"})),
        ),
        AppRoute::Delete => (Method::DELETE, format!("/v1/apps/{id}"), None),
        AppRoute::Attach => (
            Method::PUT,
            format!("/v1/apps/{id}/datasources/{}", w.ds_b),
            None,
        ),
        AppRoute::AttachPrivateDatasource => (
            Method::PUT,
            format!("/v1/apps/{id}/datasources/{}", w.ds_private),
            None,
        ),
        AppRoute::Detach => (
            Method::DELETE,
            format!("/v1/apps/{id}/datasources/{}", w.ds_a),
            None,
        ),
        AppRoute::Share => (
            Method::PUT,
            format!("/v1/apps/{id}/members/{}", w.newmember.id),
            Some(json!({"role": "viewer"})),
        ),
        AppRoute::Unshare => (
            Method::DELETE,
            format!("/v1/apps/{id}/members/{}", w.bystander.id),
            None,
        ),
        AppRoute::Clone => (
            Method::POST,
            format!("/v1/apps/{id}/clone"),
            Some(json!({"name": w.app.unique("clone")})),
        ),
        AppRoute::Transfer => (
            Method::POST,
            format!("/v1/apps/{id}/transfer"),
            Some(json!({"user_id": w.recipient.id})),
        ),
    };
    Call {
        method,
        path,
        body,
        probes,
    }
}

#[tokio::test]
async fn every_app_route_answers_each_kind_of_caller_as_the_permission_table_says() {
    let w = world().await;
    let mut f = Failures::default();
    // Every row gets a fresh app, so an allowed delete or transfer cannot affect the next row.
    for (route, row) in APP_TABLE {
        for (who, want) in WHO.iter().zip(row) {
            let id = w.app_fixture(*who).await;
            let call = app_call(&w, *route, &id);
            let label = format!("app {route:?} as {who:?}");
            run_row(
                &w.app,
                &mut f,
                &label,
                &w.object_caller(*who).token,
                call,
                *want,
            )
            .await;
        }
    }
    // Listing shows exactly the apps the caller may use.
    for who in WHO {
        let id = w.app_fixture(who).await;
        let r = w.app.get(&w.object_caller(who).token, "/v1/apps").await;
        let listed = r.body["items"]
            .as_array()
            .is_some_and(|v| v.iter().any(|a| a["id"] == id.as_str()));
        let want = !matches!(who, Who::AdminNoRole | Who::NoRolePrivate);
        f.check(
            r.status == 200 && listed == want,
            format!(
                "app list as {who:?}: expected listed={want}, got {} {}",
                r.status, r.text
            ),
        );
    }
    f.finish("app matrix");
}

#[derive(Clone, Copy, Debug)]
enum DsRoute {
    View,
    Members,
    Check,
    Schema,
    Edit,
    Delete,
    Share,
    Unshare,
    Transfer,
}

/// Columns as in `WHO`; the API user has no grant (none can be made) and never sees datasources.
const DS_TABLE: &[(DsRoute, [E; 10])] = &[
    (DsRoute::View, [OK, NF, OK, OK, OK, OK, NF, OK, OK, NF]),
    (DsRoute::Members, [OK, NF, OK, OK, OK, OK, NF, OK, OK, NF]),
    (DsRoute::Check, [OK, NF, OK, OK, OK, OK, NF, OK, OK, NF]),
    (DsRoute::Schema, [OK, NF, OK, OK, OK, OK, NF, OK, OK, NF]),
    (DsRoute::Edit, [OK, NF, OK, OK, F, F, NF, F, F, NF]),
    (DsRoute::Delete, [GONE, NF, GONE, F, F, F, NF, F, F, NF]),
    (DsRoute::Share, [OK, NF, OK, OK, F, F, NF, F, F, NF]),
    (DsRoute::Unshare, [GONE, NF, GONE, GONE, F, F, NF, F, F, NF]),
    (DsRoute::Transfer, [OK, NF, OK, F, F, F, NF, F, F, NF]),
];

fn ds_call(w: &World, route: DsRoute, id: &str) -> Call {
    let o = &w.owner.token;
    let probes = vec![
        (format!("/v1/datasources/{id}"), o.clone()),
        (format!("/v1/datasources/{id}/members"), o.clone()),
        ("/v1/datasources".to_owned(), o.clone()),
    ];
    let base = format!("/v1/datasources/{id}");
    let (method, path, body) = match route {
        DsRoute::View => (Method::GET, base, None),
        DsRoute::Members => (Method::GET, format!("{base}/members"), None),
        DsRoute::Check => (Method::POST, format!("{base}/check"), None),
        DsRoute::Schema => (Method::GET, format!("{base}/schema"), None),
        DsRoute::Edit => (
            Method::PATCH,
            base,
            Some(json!({"description": "changed", "policy": {"max_rows": 5}})),
        ),
        DsRoute::Delete => (Method::DELETE, base, None),
        DsRoute::Share => (
            Method::PUT,
            format!("{base}/members/{}", w.newmember.id),
            Some(json!({"role": "viewer"})),
        ),
        DsRoute::Unshare => (
            Method::DELETE,
            format!("{base}/members/{}", w.bystander.id),
            None,
        ),
        DsRoute::Transfer => (
            Method::POST,
            format!("{base}/transfer"),
            Some(json!({"user_id": w.recipient.id})),
        ),
    };
    // A connection check changes nothing; it needs no proof.
    let probes = if matches!(route, DsRoute::Check) {
        Vec::new()
    } else {
        probes
    };
    Call {
        method,
        path,
        body,
        probes,
    }
}

#[tokio::test]
async fn every_datasource_route_answers_each_kind_of_caller_as_the_permission_table_says() {
    let w = world().await;
    let mut f = Failures::default();
    for (route, row) in DS_TABLE {
        for (who, want) in WHO.iter().zip(row) {
            let id = w.ds_fixture(*who).await;
            let call = ds_call(&w, *route, &id);
            let label = format!("datasource {route:?} as {who:?}");
            run_row(
                &w.app,
                &mut f,
                &label,
                &w.object_caller(*who).token,
                call,
                *want,
            )
            .await;
        }
    }
    for who in WHO {
        let id = w.ds_fixture(who).await;
        let r = w
            .app
            .get(&w.object_caller(who).token, "/v1/datasources")
            .await;
        let listed = r.body["items"]
            .as_array()
            .is_some_and(|v| v.iter().any(|a| a["id"] == id.as_str()));
        let want = !matches!(who, Who::AdminNoRole | Who::NoRolePrivate | Who::ApiUser);
        f.check(
            r.status == 200 && listed == want,
            format!(
                "datasource list as {who:?}: expected listed={want}, got {} {}",
                r.status, r.text
            ),
        );
        // No answer ever carries a password field.
        f.check(
            !r.text.contains("password"),
            format!("datasource list as {who:?} mentions a password: {}", r.text),
        );
    }
    f.finish("datasource matrix");
}

/// Company-level callers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Owner,
    Admin,
    Creator,
    Consumer,
    ApiUser,
}

const ROLES: [Role; 5] = [
    Role::Owner,
    Role::Admin,
    Role::Creator,
    Role::Consumer,
    Role::ApiUser,
];

#[derive(Clone, Copy, Debug)]
enum CoRoute {
    Me,
    ListUsers,
    InviteConsumer,
    InviteOwner,
    ChangeRole,
    PromoteToOwner,
    DemoteAnOwner,
    RemoveUser,
    RemoveAnOwner,
    CreateApiUser,
    TokenForSelf,
    TokenForApiUser,
    TokenForAnotherPerson,
    RevokeOwnToken,
    RevokeSomeoneElsesToken,
    CreateGroup,
    ListGroups,
    DeleteGroup,
    AddGroupMember,
    RemoveGroupMember,
    RegisterDatasource,
    RegisterWhenCreatorsMayNot,
    RegisterWhenDisabled,
    ListDatasources,
    CreateApp,
    ListApps,
    ListIntegrations,
    PatchIntegration,
    GetCompany,
    PatchCompany,
    ReadAudit,
}

/// Columns: owner, admin, creator, consumer, API user.
///
/// Sources: PERMISSIONS.md's company-role table (admin+: invite, roles not to/from owner, groups,
/// API users, integrations, company settings, audit; owner only: anything with owner on either
/// side; creator+: create apps and datasources); docs/permissions.md for API users (only
/// `GET /v1/company` and `/v1/me`; user and group objects are invisible to them, hence 404 on
/// routes naming one), for tokens (only for oneself, or by admin+ for API users; API users mint
/// none; revoking someone else's token is 404 unless admin+), and for registration (role checks
/// before the integration's state; `creators_can_register` off leaves it to admins).
const CO_TABLE: &[(CoRoute, [E; 5])] = &[
    (CoRoute::Me, [OK, OK, OK, OK, OK]),
    (CoRoute::ListUsers, [OK, OK, OK, OK, F]),
    (CoRoute::InviteConsumer, [NEW, NEW, F, F, F]),
    (CoRoute::InviteOwner, [NEW, F, F, F, F]),
    (CoRoute::ChangeRole, [OK, OK, F, F, NF]),
    (CoRoute::PromoteToOwner, [OK, F, F, F, NF]),
    (CoRoute::DemoteAnOwner, [OK, F, F, F, NF]),
    (CoRoute::RemoveUser, [GONE, GONE, F, F, NF]),
    (CoRoute::RemoveAnOwner, [GONE, F, F, F, NF]),
    (CoRoute::CreateApiUser, [NEW, NEW, F, F, F]),
    (CoRoute::TokenForSelf, [NEW, NEW, NEW, NEW, F]),
    (CoRoute::TokenForApiUser, [NEW, NEW, F, F, F]),
    (CoRoute::TokenForAnotherPerson, [F, F, F, F, F]),
    (CoRoute::RevokeOwnToken, [GONE, GONE, GONE, GONE, GONE]),
    (CoRoute::RevokeSomeoneElsesToken, [GONE, GONE, NF, NF, NF]),
    (CoRoute::CreateGroup, [NEW, NEW, F, F, F]),
    (CoRoute::ListGroups, [OK, OK, OK, OK, F]),
    (CoRoute::DeleteGroup, [GONE, GONE, F, F, NF]),
    (CoRoute::AddGroupMember, [GONE, GONE, F, F, NF]),
    (CoRoute::RemoveGroupMember, [GONE, GONE, F, F, NF]),
    (CoRoute::RegisterDatasource, [NEW, NEW, NEW, F, F]),
    (CoRoute::RegisterWhenCreatorsMayNot, [NEW, NEW, F, F, F]),
    (CoRoute::RegisterWhenDisabled, [DIS, DIS, DIS, F, F]),
    (CoRoute::ListDatasources, [OK, OK, OK, OK, OK]),
    (CoRoute::CreateApp, [NEW, NEW, NEW, F, F]),
    (CoRoute::ListApps, [OK, OK, OK, OK, OK]),
    (CoRoute::ListIntegrations, [OK, OK, OK, OK, F]),
    (CoRoute::PatchIntegration, [OK, OK, F, F, F]),
    (CoRoute::GetCompany, [OK, OK, OK, OK, OK]),
    (CoRoute::PatchCompany, [OK, OK, F, F, F]),
    (CoRoute::ReadAudit, [OK, OK, F, F, F]),
];

impl World {
    fn company_caller(&self, role: Role) -> &Person {
        match role {
            Role::Owner => &self.owner,
            Role::Admin => &self.admin,
            Role::Creator => &self.creator,
            Role::Consumer => &self.consumer,
            Role::ApiUser => &self.api,
        }
    }

    /// Sets up what the row needs (fresh targets for destructive calls) and returns the call.
    async fn company_call(&self, route: CoRoute, role: Role) -> Call {
        let a = &self.app;
        let o = self.owner.token.clone();
        let users = ("/v1/users".to_owned(), o.clone());
        let groups = ("/v1/groups".to_owned(), o.clone());
        let caller = self.company_caller(role);
        let (method, path, body, probes) = match route {
            CoRoute::Me => (Method::GET, "/v1/me".to_owned(), None, vec![]),
            CoRoute::ListUsers => (Method::GET, "/v1/users".to_owned(), None, vec![]),
            CoRoute::InviteConsumer | CoRoute::InviteOwner => {
                let r = if matches!(route, CoRoute::InviteOwner) {
                    "owner"
                } else {
                    "consumer"
                };
                let email = format!("{}@example.com", a.unique("new"));
                (
                    Method::POST,
                    "/v1/users".to_owned(),
                    Some(json!({"email": email, "role": r})),
                    vec![users],
                )
            }
            CoRoute::ChangeRole | CoRoute::PromoteToOwner | CoRoute::DemoteAnOwner => {
                let (from, to) = match route {
                    CoRoute::ChangeRole => ("consumer", "creator"),
                    CoRoute::PromoteToOwner => ("consumer", "owner"),
                    _ => ("owner", "admin"),
                };
                let target = a.invite(&o, from).await;
                (
                    Method::PATCH,
                    format!("/v1/users/{}", target.id),
                    Some(json!({"role": to})),
                    vec![users],
                )
            }
            CoRoute::RemoveUser | CoRoute::RemoveAnOwner => {
                let r = if matches!(route, CoRoute::RemoveAnOwner) {
                    "owner"
                } else {
                    "consumer"
                };
                let target = a.invite(&o, r).await;
                // The target's token must keep working when the removal is refused.
                let me = ("/v1/me".to_owned(), target.token.clone());
                (
                    Method::DELETE,
                    format!("/v1/users/{}", target.id),
                    None,
                    vec![users, me],
                )
            }
            CoRoute::CreateApiUser => (
                Method::POST,
                "/v1/api-users".to_owned(),
                Some(json!({"name": a.unique("bot")})),
                vec![users],
            ),
            CoRoute::TokenForSelf => (
                Method::POST,
                format!("/v1/users/{}/tokens", caller.id),
                Some(json!({})),
                vec![],
            ),
            CoRoute::TokenForApiUser => (
                Method::POST,
                format!("/v1/users/{}/tokens", self.robot2.id),
                Some(json!({})),
                vec![],
            ),
            CoRoute::TokenForAnotherPerson => (
                Method::POST,
                format!("/v1/users/{}/tokens", self.bystander.id),
                Some(json!({})),
                vec![],
            ),
            CoRoute::RevokeOwnToken => {
                let (tid, tok) = if role == Role::ApiUser {
                    a.mint(&o, &caller.id, json!({})).await
                } else {
                    a.mint(&caller.token, &caller.id, json!({})).await
                };
                (
                    Method::DELETE,
                    format!("/v1/tokens/{tid}"),
                    None,
                    vec![("/v1/me".to_owned(), tok)],
                )
            }
            CoRoute::RevokeSomeoneElsesToken => {
                let victim = a.invite(&o, "consumer").await;
                (
                    Method::DELETE,
                    format!("/v1/tokens/{}", victim.token_id()),
                    None,
                    vec![("/v1/me".to_owned(), victim.token.clone())],
                )
            }
            CoRoute::CreateGroup => (
                Method::POST,
                "/v1/groups".to_owned(),
                Some(json!({"name": a.unique("team")})),
                vec![groups],
            ),
            CoRoute::ListGroups => (Method::GET, "/v1/groups".to_owned(), None, vec![]),
            CoRoute::DeleteGroup => {
                let g = a.group(&o).await;
                (
                    Method::DELETE,
                    format!("/v1/groups/{g}"),
                    None,
                    vec![groups],
                )
            }
            CoRoute::AddGroupMember => {
                let g = a.group(&o).await;
                (
                    Method::PUT,
                    format!("/v1/groups/{g}/members/{}", self.bystander.id),
                    None,
                    vec![groups],
                )
            }
            CoRoute::RemoveGroupMember => {
                let g = a.group(&o).await;
                a.add_to_group(&o, &g, &self.bystander.id).await;
                (
                    Method::DELETE,
                    format!("/v1/groups/{g}/members/{}", self.bystander.id),
                    None,
                    vec![groups],
                )
            }
            CoRoute::RegisterDatasource => (
                Method::POST,
                "/v1/datasources".to_owned(),
                Some(json!({"name": a.unique("reg"), "kind": "sqlite",
                            "connection": {"path": a.sqlite_file()}})),
                vec![("/v1/datasources".to_owned(), o.clone())],
            ),
            CoRoute::RegisterWhenCreatorsMayNot | CoRoute::RegisterWhenDisabled => {
                let kind = if matches!(route, CoRoute::RegisterWhenDisabled) {
                    "mysql"
                } else {
                    "postgres"
                };
                (
                    Method::POST,
                    "/v1/datasources".to_owned(),
                    Some(json!({"name": a.unique("reg"), "kind": kind,
                                "connection": {"host": "db.example.com", "database": "d",
                                               "user": "u", "password": "secret"}})),
                    vec![("/v1/datasources".to_owned(), o.clone())],
                )
            }
            CoRoute::ListDatasources => (Method::GET, "/v1/datasources".to_owned(), None, vec![]),
            CoRoute::CreateApp => (
                Method::POST,
                "/v1/apps".to_owned(),
                Some(json!({"name": a.unique("made")})),
                vec![("/v1/apps".to_owned(), o.clone())],
            ),
            CoRoute::ListApps => (Method::GET, "/v1/apps".to_owned(), None, vec![]),
            CoRoute::ListIntegrations => (Method::GET, "/v1/integrations".to_owned(), None, vec![]),
            CoRoute::PatchIntegration => {
                // Flip a setting no other row depends on.
                let now = a.get(&o, "/v1/integrations").await;
                let cur = now.body["items"]
                    .as_array()
                    .and_then(|v| v.iter().find(|i| i["kind"] == "mysql"))
                    .and_then(|i| i["creators_can_register"].as_bool())
                    .unwrap_or(true);
                (
                    Method::PATCH,
                    "/v1/integrations/mysql".to_owned(),
                    Some(json!({"creators_can_register": !cur})),
                    vec![("/v1/integrations".to_owned(), o.clone())],
                )
            }
            CoRoute::GetCompany => (Method::GET, "/v1/company".to_owned(), None, vec![]),
            CoRoute::PatchCompany => {
                let now = a.get(&o, "/v1/company").await;
                let cur = now.body["redact_private_audit"].as_bool().unwrap_or(true);
                (
                    Method::PATCH,
                    "/v1/company".to_owned(),
                    Some(json!({"redact_private_audit": !cur})),
                    vec![("/v1/company".to_owned(), o.clone())],
                )
            }
            CoRoute::ReadAudit => (Method::GET, "/v1/audit".to_owned(), None, vec![]),
        };
        Call {
            method,
            path,
            body,
            probes,
        }
    }
}

#[tokio::test]
async fn every_company_route_answers_each_company_role_as_the_permission_table_says() {
    let w = world().await;
    let mut f = Failures::default();
    for (route, row) in CO_TABLE {
        for (role, want) in ROLES.iter().zip(row) {
            let call = w.company_call(*route, *role).await;
            let label = format!("{route:?} as {role:?}");
            let token = w.company_caller(*role).token.clone();
            run_row(&w.app, &mut f, &label, &token, call, *want).await;
        }
    }
    f.finish("company matrix");
}
