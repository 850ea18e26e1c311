//! SSRF through datasource registration: hosts that resolve into loopback, link-local (cloud
//! metadata) or private ranges are refused when the connection is made, on the resolved address,
//! unless the operator opened that network; opening it lets the same datasource through.

mod support;

use serde_json::json;
use support::gateway::{Gateway, pg_server};

async fn register(gw: &Gateway, name: &str, host: &str, port: u16) -> String {
    gw.datasource(
        &gw.owner,
        json!({"name": name, "kind": "postgres",
               "connection": {"host": host, "port": port, "database": "postgres",
                              "user": "postgres", "password": "x",
                              "tls": {"mode": "disable"}}}),
    )
    .await
}

#[tokio::test]
async fn internal_addresses_are_refused_at_connect_time_without_an_allow_list() {
    let gw = Gateway::start_with(|c| c.allow_networks.clear()).await;
    let owner = gw.owner.clone();
    gw.set_integration(&owner, "postgres", true).await;
    let (_, port) = pg_server();
    let mut ids = Vec::new();
    for (name, host) in [
        ("loopback-ip", "127.0.0.1"),
        // A name is resolved and its address checked: localhost is loopback.
        ("loopback-name", "localhost"),
        ("metadata", "169.254.169.254"),
        ("private", "10.0.0.1"),
        ("mapped", "::ffff:127.0.0.1"),
    ] {
        ids.push((name, register(&gw, name, host, port).await));
    }
    let ds_ids: Vec<&str> = ids.iter().map(|(_, id)| id.as_str()).collect();
    let app = gw.app(&owner, "probe", &ds_ids).await;
    for (name, id) in &ids {
        let (status, v) = gw
            .query(&owner, &app, json!({"datasource": name, "sql": "SELECT 1"}))
            .await;
        assert_eq!(status, 503, "{name}: {v}");
        assert_eq!(v["error"]["code"], "datasource_unavailable", "{name}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("not allowed"), "{name}: {msg}");
        assert!(
            !msg.contains("169.254") || *name == "metadata",
            "{name}: {msg}"
        );
        // The connection check refuses the same way, so probing by /check does not help either.
        let (status, v) = gw
            .call(&owner, "POST", &format!("/v1/datasources/{id}/check"), None)
            .await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (503, Some("datasource_unavailable"))
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn the_operator_allow_list_opens_exactly_its_networks() {
    let gw = Gateway::start_with(|c| {
        c.allow_networks = vec!["127.0.0.0/8".parse().expect("net")];
    })
    .await;
    let owner = gw.owner.clone();
    gw.set_integration(&owner, "postgres", true).await;
    let (host, port) = pg_server();
    let ok = register(&gw, "local", &host, port).await;
    let meta = register(&gw, "metadata", "169.254.169.254", port).await;
    let app = gw.app(&owner, "probe", &[&ok, &meta]).await;
    let rows = gw
        .rows(
            &owner,
            &app,
            json!({"datasource": "local", "sql": "SELECT 1 AS one"}),
        )
        .await;
    assert_eq!(rows["rows"], json!([[1]]));
    let (status, v) = gw
        .query(
            &owner,
            &app,
            json!({"datasource": "metadata", "sql": "SELECT 1"}),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (503, Some("datasource_unavailable")),
        "{v}"
    );
    gw.stop().await;
}
