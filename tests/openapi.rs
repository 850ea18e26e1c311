//! `GET /openapi.json`: served by the in-process server, valid OpenAPI 3.x JSON, documenting
//! exactly API.md's routes, each of them really routed with that method (and no other), with the
//! error shape and the bearer scheme on every /v1 operation.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::OnceLock;

/// API.md's route list (method, path), kept by hand on purpose: the document must match the
/// contract, not whatever the code happens to register.
const API_MD_ROUTES: &[(&str, &str)] = &[
    // Identity
    ("get", "/v1/me"),
    ("post", "/v1/users"),
    ("get", "/v1/users"),
    ("patch", "/v1/users/{id}"),
    ("delete", "/v1/users/{id}"),
    ("post", "/v1/api-users"),
    ("post", "/v1/users/{id}/tokens"),
    ("delete", "/v1/tokens/{id}"),
    ("post", "/v1/groups"),
    ("get", "/v1/groups"),
    ("delete", "/v1/groups/{id}"),
    ("put", "/v1/groups/{id}/members/{user_id}"),
    ("delete", "/v1/groups/{id}/members/{user_id}"),
    // Datasources
    ("post", "/v1/datasources"),
    ("get", "/v1/datasources"),
    ("get", "/v1/datasources/{id}"),
    ("patch", "/v1/datasources/{id}"),
    ("delete", "/v1/datasources/{id}"),
    ("post", "/v1/datasources/{id}/check"),
    ("get", "/v1/datasources/{id}/schema"),
    ("put", "/v1/datasources/{id}/members/{principal_id}"),
    ("delete", "/v1/datasources/{id}/members/{principal_id}"),
    ("get", "/v1/datasources/{id}/members"),
    ("post", "/v1/datasources/{id}/transfer"),
    // Apps
    ("post", "/v1/apps"),
    ("get", "/v1/apps"),
    ("get", "/v1/apps/{id}"),
    ("patch", "/v1/apps/{id}"),
    ("delete", "/v1/apps/{id}"),
    ("put", "/v1/apps/{id}/datasources/{datasource_id}"),
    ("delete", "/v1/apps/{id}/datasources/{datasource_id}"),
    ("put", "/v1/apps/{id}/members/{principal_id}"),
    ("delete", "/v1/apps/{id}/members/{principal_id}"),
    ("get", "/v1/apps/{id}/members"),
    ("post", "/v1/apps/{id}/clone"),
    ("post", "/v1/apps/{id}/transfer"),
    // Query
    ("post", "/v1/apps/{id}/query"),
    // Integrations and company
    ("get", "/v1/integrations"),
    ("patch", "/v1/integrations/{kind}"),
    ("get", "/v1/company"),
    ("patch", "/v1/company"),
    // Audit
    ("get", "/v1/audit"),
    // Operations
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// One server for the whole file, on its own runtime thread so every test can reach it.
fn base_url() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                let server = support::server::Server::start(&[], |_| {}).await;
                tx.send(server.base.clone()).expect("send addr");
                // Serves until the test process ends.
                std::future::pending::<()>().await;
                drop(server);
            });
        });
        rx.recv().expect("server address")
    })
}

async fn document() -> Value {
    let res = reqwest::get(format!("{}/openapi.json", base_url()))
        .await
        .expect("GET /openapi.json");
    assert_eq!(res.status(), 200);
    let body = res.text().await.expect("body");
    serde_json::from_str(&body).expect("the document is JSON")
}

/// (method, path) of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths object");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_string(), path.clone()))
        })
        .collect()
}

/// A concrete URL for a templated path: every `{param}` becomes a harmless placeholder id.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                out.push_str("x_1");
            }
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn the_served_document_is_openapi_3_and_documents_exactly_the_routes_of_api_md() {
    let doc = document().await;
    let version = doc["openapi"].as_str().expect("openapi field");
    assert!(version.starts_with("3."), "openapi version {version}");

    let documented = operations(&doc);
    let expected: BTreeSet<(String, String)> = API_MD_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = expected.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&expected).collect();
    assert!(
        missing.is_empty(),
        "API.md routes not documented: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented routes not in API.md: {extra:?}"
    );
}

#[tokio::test]
async fn every_documented_path_is_routed_with_exactly_its_documented_methods() {
    let doc = document().await;
    let documented = operations(&doc);
    let http = reqwest::Client::new();
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        let url = format!("{}{}", base_url(), concrete(path));
        for method in METHODS {
            let res = http
                .request(
                    reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method"),
                    &url,
                )
                .send()
                .await
                .expect("request");
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let is_documented = documented.contains(&(method.to_string(), path.clone()));
            if !is_documented {
                assert_eq!(
                    (status, code.as_str()),
                    (405, "method_not_allowed"),
                    "{method} {path} is not documented but the router takes it"
                );
            } else if path.starts_with("/v1/") {
                // No token: the route exists and authenticates before anything else.
                assert_eq!(
                    (status, code.as_str()),
                    (401, "unauthenticated"),
                    "{method} {path} is documented but not routed as an authenticated route"
                );
            } else {
                assert_eq!(
                    status, 200,
                    "{method} {path} is documented but answers {status}"
                );
            }
        }
    }
}

#[tokio::test]
async fn errors_have_the_documented_shape_and_v1_operations_need_the_bearer_scheme() {
    let doc = document().await;
    let schemas = &doc["components"]["schemas"];
    let error_body = &schemas["ErrorBody"];
    assert_eq!(error_body["required"], serde_json::json!(["error"]));
    assert_eq!(
        error_body["properties"]["error"]["$ref"],
        "#/components/schemas/ErrorDetail"
    );
    let detail = &schemas["ErrorDetail"];
    for field in ["code", "message"] {
        assert_eq!(detail["properties"][field]["type"], "string", "{field}");
        assert!(
            detail["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|f| f == field)),
            "{field} is required"
        );
    }
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");

    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        let responses = op["responses"].as_object().expect("responses");
        let path_params: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|s| s.split('}').next())
            .collect();
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(path_params, declared, "{method} {path}: path parameters");
        if path.starts_with("/v1/") {
            assert_eq!(
                op["security"],
                serde_json::json!([{"bearer": []}]),
                "{method} {path}"
            );
            let errors: Vec<_> = responses
                .iter()
                .filter(|(status, _)| status.starts_with('4') || status.starts_with('5'))
                .collect();
            assert!(errors.iter().any(|(s, _)| *s == "401"), "{method} {path}");
            for (status, r) in errors {
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status} uses the error shape"
                );
            }
        } else {
            assert!(
                op.get("security").is_none(),
                "{method} {path} needs no auth"
            );
        }
    }
}

/// `connection.tls` is documented as sent and as answered: the client key is accepted and never
/// answered (only `client_key_set`), the modes are libpq's four, and the check reports `tls`.
#[tokio::test]
async fn the_tls_settings_are_documented_with_the_client_key_write_only() {
    let doc = document().await;
    let schemas = &doc["components"]["schemas"];
    let props = |name: &str| {
        schemas[name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no schema {name}: {}", schemas[name]))
            .clone()
    };
    let input = props("TlsInput");
    for field in ["mode", "ca_pem", "client_cert_pem", "client_key_pem"] {
        assert!(input.contains_key(field), "TlsInput.{field}");
    }
    let answer = props("Tls");
    assert!(
        !answer.contains_key("client_key_pem"),
        "the key is never answered"
    );
    assert_eq!(answer["client_key_set"]["type"], "boolean");
    assert_eq!(
        schemas["TlsMode"]["enum"],
        serde_json::json!(["disable", "require", "verify-ca", "verify-full"])
    );
    assert!(props("ConnectionInput").contains_key("tls"));
    assert!(props("Connection").contains_key("tls"));
    let report = props("TlsReport");
    for field in ["version", "verified", "chain_verified", "host_verified"] {
        assert!(report.contains_key(field), "TlsReport.{field}");
    }
    assert!(props("CheckResult").contains_key("tls"));
}
