//! Tenant isolation over real HTTP: callers of company A replay every admin route with company
//! B's ids (apps, datasources, users, groups, tokens, members). The answer is always 404
//! `not_found` (never 403, which would confirm the id exists) and nothing in B changes.
mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::app::{Failures, Person, TestApp, spawn_app_with};

/// One company's objects, as seen by its own owner.
struct Company {
    owner: Person,
    admin: Person,
    creator: Person,
    consumer: Person,
    api: Person,
    group: String,
    ds: String,
    app: String,
    /// A token id of `consumer`.
    token_id: String,
}

async fn populate(app: &TestApp, owner_token: &str) -> Company {
    let o = owner_token;
    let me = app.get(o, "/v1/me").await;
    let owner = Person {
        id: me.body["user"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        token: o.to_owned(),
    };
    app.enable(o, "sqlite").await;
    let admin = app.invite(o, "admin").await;
    let creator = app.invite(o, "creator").await;
    let consumer = app.invite(o, "consumer").await;
    let api = app.api_user(o).await;
    let group = app.group(o).await;
    app.add_to_group(o, &group, &consumer.id).await;
    // Public objects: every person of the owning company may see them, which must not leak out.
    let ds = app.sqlite_datasource(o, "public").await;
    let a = app.create_app(o, "public", &[&ds]).await;
    app.share_app(o, &a, &consumer.id, "editor").await;
    app.share_app(o, &a, &group, "viewer").await;
    app.share_app(o, &a, &api.id, "viewer").await;
    app.share_ds(o, &ds, &consumer.id, "viewer").await;
    app.share_ds(o, &ds, &group, "editor").await;
    let token_id = consumer.token_id();
    Company {
        owner,
        admin,
        creator,
        consumer,
        api,
        group,
        ds,
        app: a,
        token_id,
    }
}

impl Company {
    /// The ids a replay may carry.
    fn ids(&self) -> Vec<String> {
        vec![
            self.owner.id.clone(),
            self.admin.id.clone(),
            self.creator.id.clone(),
            self.consumer.id.clone(),
            self.api.id.clone(),
            self.group.clone(),
            self.ds.clone(),
            self.app.clone(),
            self.token_id.clone(),
            self.owner.token_id(),
        ]
    }
}

/// `path` and `body` with every id of `ids` replaced by one of the same prefix that exists
/// nowhere.
fn ghost(path: &str, body: Option<&Value>, ids: &[String]) -> (String, Option<Value>) {
    let mut p = path.to_owned();
    let mut b = body.map(Value::to_string);
    for id in ids {
        let prefix = id.split('_').next().unwrap_or("x");
        let fake = format!("{prefix}_{}", "0".repeat(32));
        p = p.replace(id.as_str(), &fake);
        b = b.map(|s| s.replace(id.as_str(), &fake));
    }
    (p, b.and_then(|s| serde_json::from_str(&s).ok()))
}

/// Everything of B that a replay could change, read by B's owner (and B's tokens still working).
async fn state_of(app: &TestApp, b: &Company) -> Vec<Value> {
    let o = &b.owner.token;
    let mut out = Vec::new();
    for p in [
        format!("/v1/apps/{}", b.app),
        format!("/v1/apps/{}/members", b.app),
        "/v1/apps".to_owned(),
        format!("/v1/datasources/{}", b.ds),
        format!("/v1/datasources/{}/members", b.ds),
        "/v1/datasources".to_owned(),
        "/v1/users".to_owned(),
        "/v1/groups".to_owned(),
        "/v1/integrations".to_owned(),
        "/v1/company".to_owned(),
    ] {
        let r = app.get(o, &p).await;
        out.push(json!({"path": p, "status": r.status, "body": r.body}));
    }
    for t in [&b.consumer.token, &b.api.token, &b.admin.token] {
        out.push(json!(app.get(t, "/v1/me").await.status));
    }
    out
}

/// Every route of A that takes an id, with B's ids in it (and A's ids where a route takes two).
fn replays(a: &Company, b: &Company) -> Vec<(Method, String, Option<Value>)> {
    let role = Some(json!({"role": "editor"}));
    let to = |u: &str| Some(json!({"user_id": u}));
    vec![
        // Identity.
        (
            Method::PATCH,
            format!("/v1/users/{}", b.consumer.id),
            Some(json!({"role": "admin"})),
        ),
        (
            Method::PATCH,
            format!("/v1/users/{}", b.owner.id),
            Some(json!({"role": "consumer"})),
        ),
        (Method::DELETE, format!("/v1/users/{}", b.consumer.id), None),
        (Method::DELETE, format!("/v1/users/{}", b.api.id), None),
        (Method::DELETE, format!("/v1/users/{}", b.owner.id), None),
        (
            Method::POST,
            format!("/v1/users/{}/tokens", b.consumer.id),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/users/{}/tokens", b.api.id),
            Some(json!({})),
        ),
        (Method::DELETE, format!("/v1/tokens/{}", b.token_id), None),
        (
            Method::DELETE,
            format!("/v1/tokens/{}", b.owner.token_id()),
            None,
        ),
        (Method::DELETE, format!("/v1/groups/{}", b.group), None),
        (
            Method::PUT,
            format!("/v1/groups/{}/members/{}", b.group, b.creator.id),
            None,
        ),
        (
            Method::PUT,
            format!("/v1/groups/{}/members/{}", b.group, a.creator.id),
            None,
        ),
        (
            Method::PUT,
            format!("/v1/groups/{}/members/{}", a.group, b.creator.id),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/groups/{}/members/{}", b.group, b.consumer.id),
            None,
        ),
        // Datasources.
        (Method::GET, format!("/v1/datasources/{}", b.ds), None),
        (
            Method::PATCH,
            format!("/v1/datasources/{}", b.ds),
            Some(json!({"description": "pwned"})),
        ),
        (Method::DELETE, format!("/v1/datasources/{}", b.ds), None),
        (
            Method::POST,
            format!("/v1/datasources/{}/check", b.ds),
            None,
        ),
        (
            Method::GET,
            format!("/v1/datasources/{}/schema", b.ds),
            None,
        ),
        (
            Method::GET,
            format!("/v1/datasources/{}/members", b.ds),
            None,
        ),
        (
            Method::PUT,
            format!("/v1/datasources/{}/members/{}", b.ds, a.creator.id),
            role.clone(),
        ),
        (
            Method::PUT,
            format!("/v1/datasources/{}/members/{}", a.ds, b.consumer.id),
            role.clone(),
        ),
        (
            Method::PUT,
            format!("/v1/datasources/{}/members/{}", a.ds, b.group),
            role.clone(),
        ),
        (
            Method::DELETE,
            format!("/v1/datasources/{}/members/{}", b.ds, b.consumer.id),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/datasources/{}/members/{}", b.ds, b.group),
            None,
        ),
        (
            Method::POST,
            format!("/v1/datasources/{}/transfer", b.ds),
            to(&a.creator.id),
        ),
        (
            Method::POST,
            format!("/v1/datasources/{}/transfer", a.ds),
            to(&b.creator.id),
        ),
        // Apps.
        (Method::GET, format!("/v1/apps/{}", b.app), None),
        (
            Method::PATCH,
            format!("/v1/apps/{}", b.app),
            Some(json!({"visibility": "private"})),
        ),
        (Method::DELETE, format!("/v1/apps/{}", b.app), None),
        (
            Method::PUT,
            format!("/v1/apps/{}/datasources/{}", b.app, a.ds),
            None,
        ),
        (
            Method::PUT,
            format!("/v1/apps/{}/datasources/{}", a.app, b.ds),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/apps/{}/datasources/{}", b.app, b.ds),
            None,
        ),
        (Method::GET, format!("/v1/apps/{}/members", b.app), None),
        (
            Method::PUT,
            format!("/v1/apps/{}/members/{}", b.app, a.creator.id),
            role.clone(),
        ),
        (
            Method::PUT,
            format!("/v1/apps/{}/members/{}", a.app, b.consumer.id),
            role.clone(),
        ),
        (
            Method::PUT,
            format!("/v1/apps/{}/members/{}", a.app, b.api.id),
            role.clone(),
        ),
        (
            Method::PUT,
            format!("/v1/apps/{}/members/{}", a.app, b.group),
            role.clone(),
        ),
        (
            Method::DELETE,
            format!("/v1/apps/{}/members/{}", b.app, b.consumer.id),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/apps/{}/members/{}", b.app, b.group),
            None,
        ),
        (
            Method::POST,
            format!("/v1/apps/{}/clone", b.app),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/apps/{}/transfer", b.app),
            to(&a.creator.id),
        ),
        (
            Method::POST,
            format!("/v1/apps/{}/transfer", a.app),
            to(&b.creator.id),
        ),
        (
            Method::POST,
            "/v1/apps".to_owned(),
            Some(json!({"name": "steal", "datasource_ids": [b.ds]})),
        ),
    ]
}

#[tokio::test]
async fn another_companys_ids_answer_404_on_every_route_and_change_nothing() {
    let app = spawn_app_with(&["alpha", "bravo"], |_| {}).await;
    let a = populate(&app, &app.owners[0]).await;
    let b = populate(&app, &app.owners[1]).await;
    let a_before = state_of(&app, &a).await;
    let b_before = state_of(&app, &b).await;
    let mut f = Failures::default();
    let b_ids = b.ids();
    let a_ids = a.ids();
    for (who, caller) in [
        ("A owner", &a.owner),
        ("A admin", &a.admin),
        ("A creator", &a.creator),
        ("A consumer", &a.consumer),
        ("A api user", &a.api),
    ] {
        for (m, p, body) in replays(&a, &b) {
            let label = format!("{who}: {m} {p}");
            // The same call with ids that exist nowhere: B's ids must be indistinguishable.
            let (gp, gbody) = ghost(&p, body.as_ref(), &b_ids);
            let g = app
                .call(m.clone(), &gp, Some(&caller.token), gbody.as_ref())
                .await;
            let r = app
                .call(m.clone(), &p, Some(&caller.token), body.as_ref())
                .await;
            // Mixed: the path names one of A's objects (or none, as for creating an app).
            let mixed = a_ids.iter().any(|id| p.contains(id.as_str()))
                || !b_ids.iter().any(|id| p.contains(id.as_str()));
            if !mixed || caller.id == a.owner.id {
                // The path names B's object, or the caller may do anything in A: 404.
                f.expect(&label, &r, 404, Some("not_found"));
            } else {
                // A refusal about A's own object (e.g. a consumer may not share) is fine, as long
                // as it does not depend on B's id existing.
                f.expect(&label, &r, g.status, g.code());
            }
        }
    }
    let b_after = state_of(&app, &b).await;
    f.check(
        b_before == b_after,
        format!("company B changed:\n  before {b_before:?}\n  after  {b_after:?}"),
    );
    // Half of some replays were A's own ids: A must not have changed either.
    let a_after = state_of(&app, &a).await;
    f.check(
        a_before == a_after,
        format!("company A changed:\n  before {a_before:?}\n  after  {a_after:?}"),
    );
    f.finish("tenancy");
}

#[tokio::test]
async fn lists_and_the_audit_log_show_nothing_of_another_company() {
    let app = spawn_app_with(&["alpha", "bravo"], |_| {}).await;
    let a = populate(&app, &app.owners[0]).await;
    let b = populate(&app, &app.owners[1]).await;
    let mut f = Failures::default();
    let b_ids = [
        &b.owner.id,
        &b.admin.id,
        &b.creator.id,
        &b.consumer.id,
        &b.api.id,
        &b.group,
        &b.ds,
        &b.app,
    ];
    for p in [
        "/v1/users",
        "/v1/groups",
        "/v1/apps",
        "/v1/datasources",
        "/v1/audit?limit=1000",
        &format!("/v1/audit?app_id={}", b.app),
        &format!("/v1/audit?datasource_id={}", b.ds),
        &format!("/v1/audit?actor_id={}", b.owner.id),
        "/v1/company",
        "/v1/me",
    ] {
        let r = app.get(&a.owner.token, p).await;
        f.expect(&format!("A owner GET {p}"), &r, 200, None);
        for id in b_ids {
            f.check(
                !r.text.contains(id.as_str()),
                format!("A owner GET {p} shows B's id {id}: {}", r.text),
            );
        }
    }
    // A's own lists do show A's objects, so the check above can fail.
    let r = app.get(&a.owner.token, "/v1/apps").await;
    f.check(
        r.text.contains(a.app.as_str()),
        format!("A cannot see its own app: {}", r.text),
    );
    let r = app.get(&a.owner.token, "/v1/audit?limit=1000").await;
    f.check(
        r.text.contains(a.app.as_str()),
        format!("A's audit misses its own app: {}", r.text),
    );
    // B's token never acts in A.
    let r = app
        .get(&b.owner.token, &format!("/v1/apps/{}", a.app))
        .await;
    f.expect("B owner GET A's app", &r, 404, Some("not_found"));
    f.finish("tenancy lists");
}
