//! Every 4xx path of the admin API (API.md): bad bodies, bad tokens, unknown ids, duplicates,
//! illegal role changes, invalid values, unsafe connections, policy bounds, bad audit queries and
//! unknown routes. Each answer must carry the `{"error": {"code", "message"}}` shape; no 5xx.
mod support;

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use std::time::Duration;
use support::app::{Failures, spawn_app, spawn_app_with, token_id};

#[tokio::test]
async fn malformed_unknown_and_mistyped_bodies_are_refused_with_400() {
    let app = spawn_app().await;
    let owner = app.owner().to_owned();
    let mut f = Failures::default();
    let raw = |body: &'static str, ct: Option<&'static str>| {
        let mut r = app
            .raw(Method::POST, "/v1/apps")
            .bearer_auth(&owner)
            .body(body);
        if let Some(ct) = ct {
            r = r.header(CONTENT_TYPE, ct);
        }
        r
    };
    let r = app.send(raw("{not json", Some("application/json"))).await;
    f.expect("malformed JSON", &r, 400, Some("bad_request"));
    let r = app.send(raw("", Some("application/json"))).await;
    f.expect("empty JSON body", &r, 400, Some("bad_request"));
    let r = app.send(raw(r#"{"name": "x"}"#, None)).await;
    f.expect("missing content type", &r, 400, Some("bad_request"));
    let r = app.send(raw(r#"{"name": "x"}"#, Some("text/plain"))).await;
    f.expect("wrong content type", &r, 400, Some("bad_request"));

    let cases: Vec<(&str, &str, Value)> = vec![
        (
            "unknown field on app create",
            "/v1/apps",
            json!({"name": "a", "colour": "red"}),
        ),
        ("wrong type on app create", "/v1/apps", json!({"name": 5})),
        (
            "missing required field on app create",
            "/v1/apps",
            json!({"description": "d"}),
        ),
        (
            "datasource_ids not a list",
            "/v1/apps",
            json!({"name": "a", "datasource_ids": "ds"}),
        ),
        (
            "unknown field on invite",
            "/v1/users",
            json!({"email": "a@b.example", "role": "consumer", "admin": true}),
        ),
        ("wrong type on group", "/v1/groups", json!({"name": ["g"]})),
        (
            "unknown field on api user",
            "/v1/api-users",
            json!({"name": "r", "role": "owner"}),
        ),
        (
            "unknown field in connection",
            "/v1/datasources",
            json!({"name": "d", "kind": "sqlite", "connection": {"path": "x.db", "sslmode": "disable"}}),
        ),
        (
            "unknown field in policy",
            "/v1/datasources",
            json!({"name": "d", "kind": "sqlite", "connection": {"path": "x.db"}, "policy": {"superuser": true}}),
        ),
        (
            "wrong type for port",
            "/v1/datasources",
            json!({"name": "d", "kind": "postgres", "connection": {"host": "db.example.com", "port": "5432", "database": "x", "user": "u"}}),
        ),
        (
            "port out of range",
            "/v1/datasources",
            json!({"name": "d", "kind": "postgres", "connection": {"host": "db.example.com", "port": 70000, "database": "x", "user": "u"}}),
        ),
        ("empty app name", "/v1/apps", json!({"name": "   "})),
        (
            "control characters in a name",
            "/v1/groups",
            json!({"name": "a\u{0007}b"}),
        ),
        (
            "invalid email",
            "/v1/users",
            json!({"email": "not-an-email", "role": "consumer"}),
        ),
    ];
    for (label, path, body) in cases {
        let r = app.post(&owner, path, body).await;
        f.expect(label, &r, 400, Some("bad_request"));
    }
    let r = app
        .patch(&owner, "/v1/company", json!({"name": "x", "plan": "gold"}))
        .await;
    f.expect(
        "unknown field on company patch",
        &r,
        400,
        Some("bad_request"),
    );
    let r = app
        .patch(&owner, "/v1/company", json!({"redact_private_audit": "no"}))
        .await;
    f.expect("wrong type on company patch", &r, 400, Some("bad_request"));
    let me = app.get(&owner, "/v1/me").await;
    let my_id = me.body["user"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let r = app
        .post(
            &owner,
            &format!("/v1/users/{my_id}/tokens"),
            json!({"expires_at": "tomorrow"}),
        )
        .await;
    f.expect("token expires_at not a time", &r, 400, Some("bad_request"));
    let r = app
        .post(
            &owner,
            &format!("/v1/users/{my_id}/tokens"),
            json!({"expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    f.expect("token expires_at in the past", &r, 400, Some("bad_request"));
    // Nothing above created an app.
    let apps = app.get(&owner, "/v1/apps").await;
    f.check(
        apps.body["items"].as_array().is_some_and(Vec::is_empty),
        format!("refused creates left apps behind: {}", apps.text),
    );
    f.finish("bad bodies");
}

#[tokio::test]
async fn bodies_over_the_limit_answer_413_payload_too_large() {
    let app = spawn_app_with(&["acme"], |c| c.limits.max_body_bytes = 1024).await;
    let owner = app.owner().to_owned();
    let mut f = Failures::default();
    let big = "x".repeat(4096);
    let r = app
        .post(
            &owner,
            "/v1/apps",
            json!({"name": "big", "description": big}),
        )
        .await;
    f.expect("oversized app create", &r, 413, Some("payload_too_large"));
    let small = app.create_app(&owner, "private", &[]).await;
    let r = app
        .post(
            &owner,
            &format!("/v1/apps/{small}/clone"),
            json!({"name": big}),
        )
        .await;
    f.expect(
        "oversized optional body (clone)",
        &r,
        413,
        Some("payload_too_large"),
    );
    let r = app
        .patch(
            &owner,
            &format!("/v1/apps/{small}"),
            json!({"description": big}),
        )
        .await;
    f.expect("oversized app patch", &r, 413, Some("payload_too_large"));
    // Chunked, so no content-length tells the server up front.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(br#"{"name": "chunked", "description": ""#.to_vec()),
        Ok(vec![b'y'; 4096]),
        Ok(br#""}"#.to_vec()),
    ];
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = app
        .send(
            app.raw(Method::POST, "/v1/apps")
                .bearer_auth(&owner)
                .header(CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await;
    f.expect("oversized chunked body", &r, 413, Some("payload_too_large"));
    let one = app.get(&owner, &format!("/v1/apps/{small}")).await;
    f.check(
        one.body["description"] == "",
        format!("refused patch changed the app: {}", one.text),
    );
    let apps = app.get(&owner, "/v1/apps").await;
    f.check(
        apps.body["items"].as_array().map(Vec::len) == Some(1),
        format!("refused bodies created apps: {}", apps.text),
    );
    f.finish("body limit");
}

#[tokio::test]
async fn missing_malformed_unknown_expired_and_revoked_tokens_answer_401() {
    let app = spawn_app().await;
    let owner = app.owner().to_owned();
    let mut f = Failures::default();
    let r = app.call(Method::GET, "/v1/me", None, None).await;
    f.expect("no authorization header", &r, 401, Some("unauthenticated"));
    let res = app
        .raw(Method::GET, "/v1/me")
        .send()
        .await
        .expect("request sent");
    f.check(
        res.headers().get(WWW_AUTHENTICATE).is_some(),
        "401 without WWW-Authenticate",
    );
    for (label, header) in [
        ("basic scheme", "Basic dXNlcjpwYXNz".to_owned()),
        ("bearer without token", "Bearer ".to_owned()),
        ("garbage token", "Bearer not-a-token".to_owned()),
        ("token with a wrong secret", format!("Bearer {owner}x")),
        (
            "token with an unknown id",
            format!(
                "Bearer {}",
                owner.replacen(&token_id(&owner), "tok_doesnotexist", 1)
            ),
        ),
        ("overlong token", format!("Bearer {}", "a".repeat(5000))),
    ] {
        let r = app
            .send(app.raw(Method::GET, "/v1/me").header(AUTHORIZATION, header))
            .await;
        f.expect(label, &r, 401, Some("unauthenticated"));
    }
    for (m, p) in [
        (Method::GET, "/v1/apps"),
        (Method::POST, "/v1/apps"),
        (Method::GET, "/v1/audit"),
        (Method::PATCH, "/v1/company"),
    ] {
        let r = app.call(m.clone(), p, None, Some(&json!({}))).await;
        f.expect(
            &format!("{m} {p} without a token"),
            &r,
            401,
            Some("unauthenticated"),
        );
    }

    // Revocation works at once.
    let me = app.get(&owner, "/v1/me").await;
    let my_id = me.body["user"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (tid, tok) = app.mint(&owner, &my_id, json!({"name": "short"})).await;
    f.expect(
        "fresh token works",
        &app.get(&tok, "/v1/me").await,
        200,
        None,
    );
    let r = app.delete(&owner, &format!("/v1/tokens/{tid}")).await;
    f.expect("revoke", &r, 204, None);
    f.expect(
        "revoked token right after revocation",
        &app.get(&tok, "/v1/me").await,
        401,
        Some("unauthenticated"),
    );
    let r = app.delete(&owner, &format!("/v1/tokens/{tid}")).await;
    f.expect("revoking twice", &r, 404, Some("not_found"));

    // A deleted user's tokens stop at once.
    let p = app.invite(&owner, "creator").await;
    f.expect(
        "invitee token works",
        &app.get(&p.token, "/v1/me").await,
        200,
        None,
    );
    let (_, second) = app.mint(&p.token, &p.id, json!({})).await;
    f.expect(
        "delete user",
        &app.delete(&owner, &format!("/v1/users/{}", p.id)).await,
        204,
        None,
    );
    f.expect(
        "deleted user's first token",
        &app.get(&p.token, "/v1/me").await,
        401,
        Some("unauthenticated"),
    );
    f.expect(
        "deleted user's minted token",
        &app.get(&second, "/v1/apps").await,
        401,
        Some("unauthenticated"),
    );
    let robot = app.api_user(&owner).await;
    f.expect(
        "delete api user",
        &app.delete(&owner, &format!("/v1/users/{}", robot.id)).await,
        204,
        None,
    );
    f.expect(
        "deleted api user's token",
        &app.get(&robot.token, "/v1/me").await,
        401,
        Some("unauthenticated"),
    );

    // Expiry: valid now, refused once the time has passed.
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(1200);
    let (_, short) = app
        .mint(&owner, &my_id, json!({"expires_at": at.to_rfc3339()}))
        .await;
    f.expect(
        "token before expiry",
        &app.get(&short, "/v1/me").await,
        200,
        None,
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    f.expect(
        "token after expiry",
        &app.get(&short, "/v1/me").await,
        401,
        Some("unauthenticated"),
    );
    f.expect(
        "owner token still works",
        &app.get(&owner, "/v1/me").await,
        200,
        None,
    );
    f.finish("tokens");
}

#[tokio::test]
async fn unknown_ids_answer_404_not_found() {
    let app = spawn_app().await;
    let owner = app.owner().to_owned();
    app.enable(&owner, "sqlite").await;
    let ds = app.sqlite_datasource(&owner, "private").await;
    let other_ds = app.sqlite_datasource(&owner, "private").await;
    let a = app.create_app(&owner, "private", &[&ds]).await;
    let g = app.group(&owner).await;
    let consumer = app.invite(&owner, "consumer").await;
    let mut f = Failures::default();
    let role = json!({"role": "viewer"});
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/apps/app_nope".into(), None),
        (
            Method::PATCH,
            "/v1/apps/app_nope".into(),
            Some(json!({"description": "x"})),
        ),
        (Method::DELETE, "/v1/apps/app_nope".into(), None),
        (Method::GET, "/v1/apps/app_nope/members".into(), None),
        (
            Method::PUT,
            format!("/v1/apps/{a}/members/usr_nope"),
            Some(role.clone()),
        ),
        (
            Method::DELETE,
            format!("/v1/apps/{a}/members/usr_nope"),
            None,
        ),
        (
            Method::PUT,
            format!("/v1/apps/{a}/datasources/ds_nope"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/apps/{a}/datasources/{other_ds}"),
            None,
        ),
        (
            Method::PUT,
            format!("/v1/apps/app_nope/datasources/{ds}"),
            None,
        ),
        (
            Method::POST,
            "/v1/apps/app_nope/clone".into(),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/v1/apps/app_nope/transfer".into(),
            Some(json!({"user_id": consumer.id})),
        ),
        (
            Method::POST,
            format!("/v1/apps/{a}/transfer"),
            Some(json!({"user_id": "usr_nope"})),
        ),
        (
            Method::POST,
            "/v1/apps".into(),
            Some(json!({"name": "with-ghost", "datasource_ids": ["ds_nope"]})),
        ),
        (Method::GET, "/v1/datasources/ds_nope".into(), None),
        (
            Method::PATCH,
            "/v1/datasources/ds_nope".into(),
            Some(json!({"description": "x"})),
        ),
        (Method::DELETE, "/v1/datasources/ds_nope".into(), None),
        (Method::POST, "/v1/datasources/ds_nope/check".into(), None),
        (Method::GET, "/v1/datasources/ds_nope/schema".into(), None),
        (Method::GET, "/v1/datasources/ds_nope/members".into(), None),
        (
            Method::PUT,
            format!("/v1/datasources/{ds}/members/grp_nope"),
            Some(role.clone()),
        ),
        (
            Method::DELETE,
            format!("/v1/datasources/{ds}/members/grp_nope"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/datasources/{ds}/transfer"),
            Some(json!({"user_id": "usr_nope"})),
        ),
        (
            Method::PATCH,
            "/v1/users/usr_nope".into(),
            Some(json!({"role": "creator"})),
        ),
        (Method::DELETE, "/v1/users/usr_nope".into(), None),
        (
            Method::POST,
            "/v1/users/usr_nope/tokens".into(),
            Some(json!({})),
        ),
        (Method::DELETE, "/v1/tokens/tok_nope".into(), None),
        (Method::DELETE, "/v1/groups/grp_nope".into(), None),
        (
            Method::PUT,
            format!("/v1/groups/grp_nope/members/{}", consumer.id),
            None,
        ),
        (
            Method::PUT,
            format!("/v1/groups/{g}/members/usr_nope"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/groups/{g}/members/usr_nope"),
            None,
        ),
        (
            Method::PATCH,
            "/v1/integrations/oracle".into(),
            Some(json!({"enabled": true})),
        ),
    ];
    for (m, p, body) in cases {
        let r = app.call(m.clone(), &p, Some(&owner), body.as_ref()).await;
        f.expect(&format!("{m} {p}"), &r, 404, Some("not_found"));
    }
    let one = app.get(&owner, &format!("/v1/apps/{a}")).await;
    f.check(
        one.body["datasources"].as_array().map(Vec::len) == Some(1)
            && one.body["owner_id"] == app.get(&owner, "/v1/me").await.body["user"]["id"],
        format!("404 calls changed the app: {}", one.text),
    );
    f.finish("unknown ids");
}

#[tokio::test]
async fn duplicate_names_answer_409_conflict() {
    let app = spawn_app().await;
    let owner = app.owner().to_owned();
    app.enable(&owner, "sqlite").await;
    let mut f = Failures::default();
    let r = app.post(&owner, "/v1/apps", json!({"name": "Sales"})).await;
    f.expect("first app", &r, 201, None);
    let r = app.post(&owner, "/v1/apps", json!({"name": "Sales"})).await;
    f.expect("duplicate app name", &r, 409, Some("conflict"));
    let r = app
        .post(&owner, "/v1/apps", json!({"name": "  Sales  "}))
        .await;
    f.expect(
        "duplicate app name after trimming",
        &r,
        409,
        Some("conflict"),
    );
    let other = app.create_app(&owner, "private", &[]).await;
    let r = app
        .patch(
            &owner,
            &format!("/v1/apps/{other}"),
            json!({"name": "Sales"}),
        )
        .await;
    f.expect("rename app onto a taken name", &r, 409, Some("conflict"));
    let r = app
        .post(
            &owner,
            &format!("/v1/apps/{other}/clone"),
            json!({"name": "Sales"}),
        )
        .await;
    f.expect("clone onto a taken name", &r, 409, Some("conflict"));

    let path = app.sqlite_file();
    let ds = json!({"name": "Warehouse", "kind": "sqlite", "connection": {"path": path}});
    f.expect(
        "first datasource",
        &app.post(&owner, "/v1/datasources", ds.clone()).await,
        201,
        None,
    );
    let r = app.post(&owner, "/v1/datasources", ds).await;
    f.expect("duplicate datasource name", &r, 409, Some("conflict"));
    let ds2 = app.sqlite_datasource(&owner, "private").await;
    let r = app
        .patch(
            &owner,
            &format!("/v1/datasources/{ds2}"),
            json!({"name": "Warehouse"}),
        )
        .await;
    f.expect(
        "rename datasource onto a taken name",
        &r,
        409,
        Some("conflict"),
    );

    let r = app
        .post(
            &owner,
            "/v1/users",
            json!({"email": "dup@example.com", "role": "consumer"}),
        )
        .await;
    f.expect("first invite", &r, 201, None);
    let r = app
        .post(
            &owner,
            "/v1/users",
            json!({"email": "DUP@example.com", "role": "creator"}),
        )
        .await;
    f.expect("duplicate email (any case)", &r, 409, Some("conflict"));
    f.expect(
        "first api user",
        &app.post(&owner, "/v1/api-users", json!({"name": "etl"}))
            .await,
        201,
        None,
    );
    let r = app
        .post(&owner, "/v1/api-users", json!({"name": "etl"}))
        .await;
    f.expect("duplicate api user name", &r, 409, Some("conflict"));
    f.expect(
        "first group",
        &app.post(&owner, "/v1/groups", json!({"name": "analysts"}))
            .await,
        201,
        None,
    );
    let r = app
        .post(&owner, "/v1/groups", json!({"name": "analysts"}))
        .await;
    f.expect("duplicate group name", &r, 409, Some("conflict"));

    let apps = app.get(&owner, "/v1/apps").await;
    f.check(
        apps.body["items"].as_array().map(Vec::len) == Some(2),
        format!("duplicates created apps: {}", apps.text),
    );
    let groups = app.get(&owner, "/v1/groups").await;
    f.check(
        groups.body["items"].as_array().map(Vec::len) == Some(1),
        format!("duplicates created groups: {}", groups.text),
    );
    f.finish("duplicates");
}

#[tokio::test]
async fn illegal_role_changes_and_transfers_are_refused() {
    let app = spawn_app().await;
    let owner = app.owner().to_owned();
    let mut f = Failures::default();
    let me = app.get(&owner, "/v1/me").await;
    let owner_id = me.body["user"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let admin = app.invite(&owner, "admin").await;
    let consumer = app.invite(&owner, "consumer").await;
    let robot = app.api_user(&owner).await;

    let r = app
        .patch(
            &admin.token,
            &format!("/v1/users/{}", consumer.id),
            json!({"role": "owner"}),
        )
        .await;
    f.expect("admin promotes to owner", &r, 403, Some("forbidden"));
    let r = app
        .patch(
            &admin.token,
            &format!("/v1/users/{owner_id}"),
            json!({"role": "admin"}),
        )
        .await;
    f.expect("admin demotes an owner", &r, 403, Some("forbidden"));
    let r = app
        .delete(&admin.token, &format!("/v1/users/{owner_id}"))
        .await;
    f.expect("admin removes an owner", &r, 403, Some("forbidden"));
    let r = app
        .post(
            &admin.token,
            "/v1/users",
            json!({"email": "o2@example.com", "role": "owner"}),
        )
        .await;
    f.expect("admin invites an owner", &r, 403, Some("forbidden"));
    let r = app
        .patch(
            &owner,
            &format!("/v1/users/{owner_id}"),
            json!({"role": "admin"}),
        )
        .await;
    f.expect("last owner demotes themself", &r, 409, Some("conflict"));
    let r = app.delete(&owner, &format!("/v1/users/{owner_id}")).await;
    f.expect("last owner removes themself", &r, 409, Some("conflict"));
    let r = app
        .patch(
            &owner,
            &format!("/v1/users/{}", robot.id),
            json!({"role": "admin"}),
        )
        .await;
    f.expect("role for an api user", &r, 400, Some("bad_request"));
    let r = app
        .patch(
            &owner,
            &format!("/v1/users/{}", consumer.id),
            json!({"role": "superuser"}),
        )
        .await;
    f.expect("unknown role value", &r, 400, Some("bad_request"));
    let r = app
        .post(
            &owner,
            "/v1/users",
            json!({"email": "x@example.com", "role": "root"}),
        )
        .await;
    f.expect("invite with an unknown role", &r, 400, Some("bad_request"));
    let r = app
        .put(
            &owner,
            &format!(
                "/v1/groups/{}/members/{}",
                app.group(&owner).await,
                robot.id
            ),
            json!({}),
        )
        .await;
    f.expect("api user into a group", &r, 400, Some("bad_request"));

    // Ownership goes only to persons with creator role or higher.
    let a = app.create_app(&owner, "private", &[]).await;
    for (label, to) in [("consumer", &consumer.id), ("api user", &robot.id)] {
        let r = app
            .post(
                &owner,
                &format!("/v1/apps/{a}/transfer"),
                json!({"user_id": to}),
            )
            .await;
        f.expect(
            &format!("transfer app to a {label}"),
            &r,
            409,
            Some("conflict"),
        );
    }
    let one = app.get(&owner, &format!("/v1/apps/{a}")).await;
    f.check(
        one.body["owner_id"] == owner_id.as_str(),
        format!("refused transfer moved the app: {}", one.text),
    );
    // Object roles: owner is not grantable, unknown values are refused.
    for role in ["owner", "admin"] {
        let r = app
            .put(
                &owner,
                &format!("/v1/apps/{a}/members/{}", consumer.id),
                json!({"role": role}),
            )
            .await;
        f.expect(
            &format!("grant {role} on an app"),
            &r,
            400,
            Some("bad_request"),
        );
    }
    let r = app
        .patch(
            &owner,
            &format!("/v1/apps/{a}"),
            json!({"visibility": "secret"}),
        )
        .await;
    f.expect("unknown visibility", &r, 400, Some("bad_request"));
    let members = app.get(&owner, &format!("/v1/apps/{a}/members")).await;
    f.check(
        members.body["items"].as_array().is_some_and(Vec::is_empty),
        format!("refused grants added members: {}", members.text),
    );

    let users = app.get(&owner, "/v1/users").await;
    let role_of = |id: &str| {
        users.body["items"]
            .as_array()
            .and_then(|v| v.iter().find(|u| u["id"] == id))
            .map(|u| u["role"].clone())
    };
    f.check(
        role_of(&owner_id) == Some(json!("owner"))
            && role_of(&consumer.id) == Some(json!("consumer")),
        format!("refused role changes changed roles: {}", users.text),
    );
    f.finish("roles");
}

#[tokio::test]
async fn unsafe_connections_invalid_values_and_policy_bounds_answer_400() {
    let app = spawn_app().await;
    let owner = app.owner().to_owned();
    for k in ["postgres", "mysql", "sqlite"] {
        app.enable(&owner, k).await;
    }
    let mut f = Failures::default();
    let pg = |conn: Value| json!({"name": "pg", "kind": "postgres", "connection": conn});
    let good = json!({"host": "db.example.com", "database": "d", "user": "u", "password": "p"});
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let cases: Vec<(&str, Value)> = vec![
        (
            "option host override",
            pg(with("options", json!({"host": "10.0.0.1"}))),
        ),
        (
            "option hostaddr",
            pg(with("options", json!({"hostaddr": "127.0.0.1"}))),
        ),
        (
            "option sslmode",
            pg(with("options", json!({"sslmode": "disable"}))),
        ),
        (
            "socket path as host",
            pg(with("host", json!("/var/run/postgresql"))),
        ),
        (
            "host with a user part",
            pg(with("host", json!("evil@db.example.com"))),
        ),
        (
            "host list",
            pg(with("host", json!("a.example.com,b.example.com"))),
        ),
        ("empty host", pg(with("host", json!("")))),
        ("port zero", pg(with("port", json!(0)))),
        ("postgres with a path", pg(with("path", json!("/tmp/x.db")))),
        (
            "missing database",
            pg(json!({"host": "db.example.com", "user": "u"})),
        ),
        (
            "unknown kind",
            json!({"name": "o", "kind": "oracle", "connection": {"host": "h"}}),
        ),
        (
            "unknown visibility",
            json!({"name": "v", "kind": "sqlite", "visibility": "secret", "connection": {"path": "x.db"}}),
        ),
        (
            "sqlite with a host",
            json!({"name": "s", "kind": "sqlite", "connection": {"path": "x.db", "host": "h"}}),
        ),
        (
            "sqlite with a password",
            json!({"name": "s", "kind": "sqlite", "connection": {"path": "x.db", "password": "p"}}),
        ),
        (
            "sqlite without a path",
            json!({"name": "s", "kind": "sqlite", "connection": {}}),
        ),
        (
            "mysql socket option",
            json!({"name": "m", "kind": "mysql", "connection": {"host": "db.example.com", "database": "d", "user": "u", "options": {"socket": "/tmp/mysql.sock"}}}),
        ),
    ];
    for (label, body) in cases {
        let r = app.post(&owner, "/v1/datasources", body).await;
        f.expect(label, &r, 400, Some("bad_request"));
    }
    let path = app.sqlite_file();
    let lite = |policy: Value, pool: Value| {
        let mut b = json!({"name": "lite", "kind": "sqlite", "connection": {"path": path}, "policy": policy});
        if !pool.is_null() {
            b["pool"] = pool;
        }
        b
    };
    let bounds: Vec<(&str, Value)> = vec![
        ("max_rows zero", lite(json!({"max_rows": 0}), Value::Null)),
        (
            "max_rows above the limit",
            lite(json!({"max_rows": 1_000_001}), Value::Null),
        ),
        (
            "max_rows negative",
            lite(json!({"max_rows": -1}), Value::Null),
        ),
        ("timeout zero", lite(json!({"timeout_ms": 0}), Value::Null)),
        (
            "timeout above the limit",
            lite(json!({"timeout_ms": 300_001}), Value::Null),
        ),
        (
            "empty allowed table",
            lite(json!({"allowed_tables": [" "]}), Value::Null),
        ),
        (
            "empty denied table",
            lite(json!({"denied_tables": [""]}), Value::Null),
        ),
        (
            "extra function with SQL in it",
            lite(
                json!({"extra_functions": ["pg_sleep(1); drop"]}),
                Value::Null,
            ),
        ),
        (
            "unknown access",
            lite(json!({"access": "superuser"}), Value::Null),
        ),
        ("pool size zero", lite(json!({}), json!({"max_size": 0}))),
        (
            "pool size above the limit",
            lite(json!({}), json!({"max_size": 65})),
        ),
        (
            "unknown pool field",
            lite(json!({}), json!({"max_size": 2, "min_size": 1})),
        ),
    ];
    for (label, body) in bounds {
        let r = app.post(&owner, "/v1/datasources", body).await;
        f.expect(label, &r, 400, Some("bad_request"));
    }
    let listed = app.get(&owner, "/v1/datasources").await;
    f.check(
        listed.body["items"].as_array().is_some_and(Vec::is_empty),
        format!("refused registrations left datasources: {}", listed.text),
    );
    // The same checks on PATCH, which must leave the datasource as it was.
    let ds = app.sqlite_datasource(&owner, "private").await;
    let before = app.get(&owner, &format!("/v1/datasources/{ds}")).await;
    let patches: Vec<(&str, Value)> = vec![
        ("patch max_rows zero", json!({"policy": {"max_rows": 0}})),
        (
            "patch timeout above the limit",
            json!({"policy": {"timeout_ms": 10_000_000}}),
        ),
        ("patch pool size zero", json!({"pool": {"max_size": 0}})),
        ("patch kind", json!({"kind": "postgres"})),
        (
            "patch sqlite connection with a host",
            json!({"connection": {"host": "h", "path": "x.db"}}),
        ),
        (
            "patch connection option",
            json!({"connection": {"path": "x.db", "options": {"host": "h"}}}),
        ),
        ("patch unknown visibility", json!({"visibility": "hidden"})),
    ];
    for (label, body) in patches {
        let r = app
            .patch(&owner, &format!("/v1/datasources/{ds}"), body)
            .await;
        f.expect(label, &r, 400, Some("bad_request"));
    }
    let after = app.get(&owner, &format!("/v1/datasources/{ds}")).await;
    f.check(
        before.body == after.body,
        format!(
            "refused patches changed the datasource:\n{}\n{}",
            before.text, after.text
        ),
    );
    // API users are never given datasources.
    let robot = app.api_user(&owner).await;
    let r = app
        .put(
            &owner,
            &format!("/v1/datasources/{ds}/members/{}", robot.id),
            json!({"role": "viewer"}),
        )
        .await;
    f.expect(
        "datasource grant to an api user",
        &r,
        400,
        Some("bad_request"),
    );
    f.finish("connections and policies");
}

#[tokio::test]
async fn a_disabled_integration_refuses_registration_with_403_integration_disabled() {
    let app = spawn_app().await;
    let owner = app.owner().to_owned();
    let mut f = Failures::default();
    let path = app.sqlite_file();
    let body = json!({"name": "lite", "kind": "sqlite", "connection": {"path": path}});
    let r = app.post(&owner, "/v1/datasources", body.clone()).await;
    f.expect(
        "integrations start off",
        &r,
        403,
        Some("integration_disabled"),
    );
    let consumer = app.invite(&owner, "consumer").await;
    let r = app
        .post(&consumer.token, "/v1/datasources", body.clone())
        .await;
    f.expect("consumer, integration off", &r, 403, Some("forbidden"));
    app.enable(&owner, "sqlite").await;
    let ds = app.sqlite_datasource(&owner, "public").await;
    let creator = app.invite(&owner, "creator").await;
    let r = app
        .patch(&owner, "/v1/integrations/sqlite", json!({"enabled": false}))
        .await;
    f.expect("turn off", &r, 200, None);
    for (m, p) in [
        (Method::POST, format!("/v1/datasources/{ds}/check")),
        (Method::GET, format!("/v1/datasources/{ds}/schema")),
    ] {
        let r = app.call(m.clone(), &p, Some(&creator.token), None).await;
        f.expect(
            &format!("{m} {p} while off"),
            &r,
            403,
            Some("integration_disabled"),
        );
    }
    let r = app
        .patch(&owner, "/v1/integrations/sqlite", json!({"enabled": "yes"}))
        .await;
    f.expect(
        "integration toggle with a wrong type",
        &r,
        400,
        Some("bad_request"),
    );
    let r = app.get(&owner, &format!("/v1/datasources/{ds}")).await;
    f.expect("datasource still there while off", &r, 200, None);
    f.finish("integrations");
}

#[tokio::test]
async fn bad_audit_queries_answer_400() {
    let app = spawn_app().await;
    let owner = app.owner().to_owned();
    let mut f = Failures::default();
    for q in [
        "cursor=not-a-cursor",
        "cursor=%00%01",
        "outcome=maybe",
        "limit=0",
        "limit=-3",
        "limit=lots",
        "since=yesterday",
        "until=2024-13-45T00:00:00Z",
        "colour=red",
    ] {
        let r = app.get(&owner, &format!("/v1/audit?{q}")).await;
        f.expect(&format!("audit ?{q}"), &r, 400, Some("bad_request"));
    }
    let r = app.get(&owner, "/v1/audit?limit=1").await;
    f.expect("a good audit query", &r, 200, None);
    f.finish("audit queries");
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_use_the_error_shape() {
    let app = spawn_app().await;
    let owner = app.owner().to_owned();
    let mut f = Failures::default();
    for p in ["/v1/nope", "/v2/apps", "/v1/apps/x/y/z", "/nope"] {
        let r = app.get(&owner, p).await;
        f.expect(&format!("GET {p}"), &r, 404, Some("not_found"));
    }
    let r = app.call(Method::GET, "/v1/nope", None, None).await;
    f.expect("unknown route without a token", &r, 404, Some("not_found"));
    for (m, p) in [
        (Method::DELETE, "/v1/me"),
        (Method::PUT, "/v1/apps"),
        (Method::POST, "/v1/company"),
        (Method::GET, "/v1/api-users"),
        (Method::GET, "/v1/tokens/tok_x"),
        (Method::PATCH, "/v1/groups/grp_x"),
    ] {
        let r = app.call(m.clone(), p, Some(&owner), None).await;
        f.expect(&format!("{m} {p}"), &r, 405, Some("method_not_allowed"));
    }
    f.finish("routes");
}

#[tokio::test]
async fn an_admin_cannot_revoke_an_owners_token_but_another_owner_can() {
    let app = spawn_app().await;
    let owner = app.owner().to_owned();
    let admin = app.invite(&owner, "admin").await;
    let second_owner = app.invite(&owner, "owner").await;
    let owner_token_id = owner.split('.').nth(1).expect("token id").to_owned();
    let r = app
        .delete(&admin.token, &format!("/v1/tokens/{owner_token_id}"))
        .await;
    assert_eq!((r.status, r.code()), (403, Some("forbidden")), "{}", r.text);
    assert_eq!(
        app.get(&owner, "/v1/me").await.status,
        200,
        "the owner keeps access"
    );
    let r = app
        .delete(&second_owner.token, &format!("/v1/tokens/{owner_token_id}"))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(app.get(&owner, "/v1/me").await.status, 401);
}

/// A refusal sent before the body was read (here: 401) cannot keep the connection alive; the
/// answer says so, instead of the connection being dropped under the client's next request.
/// Answers that read their body keep the connection.
#[tokio::test]
async fn an_answer_sent_before_the_body_was_read_announces_connection_close() {
    let app = spawn_app().await;
    let url = format!("{}/v1/apps", app.base);
    let res = app
        .client
        .post(&url)
        .bearer_auth("slc.tok_unknown.secret")
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    // No body: nothing left unread, keep-alive stays.
    let res = app
        .client
        .get(&url)
        .bearer_auth("slc.tok_unknown.secret")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("connection").is_none());
    // A body the handler read: keep-alive stays, even on a refusal.
    let res = app
        .client
        .post(&url)
        .bearer_auth(app.owner())
        .json(&serde_json::json!({"name": "x", "unknown_field": 1}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("connection").is_none());
}
