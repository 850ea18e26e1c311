//! `GET /v1/datasources/{id}/schema` lists only the tables the datasource's scope allows, and
//! `POST …/check` reports the server, on a real SQLite acme file.

mod support;

use serde_json::json;
use support::gateway::{Gateway, sqlite_acme, sqlite_datasource};

#[tokio::test]
async fn the_schema_lists_only_allowed_tables_and_check_reports_the_server() {
    let gw = Gateway::start().await;
    let owner = gw.owner.clone();
    gw.set_integration(&owner, "sqlite", true).await;
    let path = sqlite_acme(&gw, "acme.sqlite");
    let ds = gw
        .datasource(
            &owner,
            sqlite_datasource(
                "acme-sales",
                &path,
                json!({"allowed_tables": ["main.customers", "main.orders"], "denied_tables": ["main.orders"]}),
            ),
        )
        .await;
    let schema = gw
        .ok(&owner, "GET", &format!("/v1/datasources/{ds}/schema"), None)
        .await;
    let mut names: Vec<&str> = schema["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["customers"],
        "denied beats allowed; nothing else shows"
    );
    let customers = &schema["tables"][0];
    assert!(
        customers["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .any(|c| c["name"] == "email" && c["nullable"] == false),
        "{customers}"
    );

    let open = gw
        .datasource(&owner, sqlite_datasource("acme-all", &path, json!({})))
        .await;
    let schema = gw
        .ok(
            &owner,
            "GET",
            &format!("/v1/datasources/{open}/schema"),
            None,
        )
        .await;
    assert!(schema["tables"].as_array().expect("tables").len() >= 8);

    let check = gw
        .ok(&owner, "POST", &format!("/v1/datasources/{ds}/check"), None)
        .await;
    assert_eq!(check["ok"], true);
    assert!(
        check["server_version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{check}"
    );
    gw.stop().await;
}

/// Policy decisions are cached per statement text; editing the policy must still take effect on
/// the very next query.
#[tokio::test]
async fn a_policy_edit_applies_at_once_to_a_statement_already_answered() {
    let gw = Gateway::start().await;
    let owner = gw.owner.clone();
    gw.set_integration(&owner, "sqlite", true).await;
    let path = sqlite_acme(&gw, "acme.sqlite");
    let ds = gw
        .datasource(&owner, sqlite_datasource("acme", &path, json!({})))
        .await;
    let app = gw.app(&owner, "dash", &[&ds]).await;
    let body = json!({"sql": "SELECT count(*) FROM invoices"});
    gw.rows(&owner, &app, body.clone()).await;
    gw.rows(&owner, &app, body.clone()).await;
    gw.ok(
        &owner,
        "PATCH",
        &format!("/v1/datasources/{ds}"),
        Some(json!({"policy": {"denied_tables": ["main.invoices"]}})),
    )
    .await;
    let code = gw.refused(&owner, &app, body.clone(), 403).await;
    assert_eq!(code, "table_not_allowed");
    gw.ok(
        &owner,
        "PATCH",
        &format!("/v1/datasources/{ds}"),
        Some(json!({"policy": {}})),
    )
    .await;
    gw.rows(&owner, &app, body).await;
    gw.stop().await;
}
