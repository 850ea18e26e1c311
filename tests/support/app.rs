//! Starts the real application in-process (fresh data directory, port 0) and offers short helpers
//! for the HTTP tests: raw calls that never panic, and fixture builders that assert success.

use reqwest::Method;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice::config::Config;

use super::server::Server;

/// One running server and the companies created before it started.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// The owner token of each company, in the order of the names given to `spawn_app_with`.
    pub owners: Vec<String>,
    counter: AtomicUsize,
    /// Stops the server when the app is dropped.
    _server: Server,
}

/// An answer: status, parsed body (`Null` when empty or not JSON) and raw text.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// The error code of an error answer, if the body has the API's error shape.
    pub fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    /// True when the body is exactly `{"error": {"code": string, "message": string}}`.
    pub fn has_error_shape(&self) -> bool {
        let Some(obj) = self.body.as_object() else {
            return false;
        };
        let Some(err) = obj.get("error").and_then(Value::as_object) else {
            return false;
        };
        obj.len() == 1
            && err.len() == 2
            && err.get("code").is_some_and(Value::is_string)
            && err
                .get("message")
                .and_then(Value::as_str)
                .is_some_and(|m| !m.is_empty())
    }
}

/// A user created through the API, with its first token.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub token: String,
}

impl Person {
    /// The token's id (the middle part of `prefix.id.secret`).
    pub fn token_id(&self) -> String {
        token_id(&self.token)
    }
}

pub fn token_id(token: &str) -> String {
    token.split('.').nth(1).unwrap_or_default().to_owned()
}

/// A server with one company ("acme").
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&["acme"], |_| {}).await
}

/// A server with the given companies (created through the CLI function before the server starts,
/// so no wait for the store poll) and a configuration adjusted by `tweak`.
pub async fn spawn_app_with(companies: &[&str], tweak: impl FnOnce(&mut Config)) -> TestApp {
    let emails: Vec<String> = companies
        .iter()
        .enumerate()
        .map(|(i, name)| format!("owner{i}@{name}.example"))
        .collect();
    let companies: Vec<(&str, &str)> = companies
        .iter()
        .zip(&emails)
        .map(|(n, e)| (*n, e.as_str()))
        .collect();
    let server = Server::start(&companies, tweak).await;
    TestApp {
        base: server.base.clone(),
        client: reqwest::Client::new(),
        owners: server.owners.clone(),
        counter: AtomicUsize::new(0),
        _server: server,
    }
}

fn check(r: &Resp, want: u16, what: &str) {
    assert_eq!(r.status, want, "{what}: unexpected answer {}", r.text);
}

impl TestApp {
    /// The first company's owner token.
    pub fn owner(&self) -> &str {
        &self.owners[0]
    }

    /// A name never used before in this server (`prefix-N`).
    pub fn unique(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// Any request; never panics on an error answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send(req).await
    }

    /// Sends a prepared request (for raw headers or bodies).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, body, text }
    }

    pub fn raw(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    pub async fn get(&self, token: &str, path: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }
    pub async fn post(&self, token: &str, path: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(&body))
            .await
    }
    pub async fn put(&self, token: &str, path: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(token), Some(&body)).await
    }
    pub async fn patch(&self, token: &str, path: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(token), Some(&body))
            .await
    }
    pub async fn delete(&self, token: &str, path: &str) -> Resp {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Invites a person with `role` (as `by`, an admin or owner).
    pub async fn invite(&self, by: &str, role: &str) -> Person {
        let email = format!("{}@example.com", self.unique(role));
        let r = self
            .post(by, "/v1/users", json!({"email": email, "role": role}))
            .await;
        check(&r, 201, "invite");
        Person {
            id: r.body["user"]["id"].as_str().expect("user id").to_owned(),
            token: r.body["token"].as_str().expect("token").to_owned(),
        }
    }

    /// Creates an API user (as `by`, an admin or owner).
    pub async fn api_user(&self, by: &str) -> Person {
        let r = self
            .post(by, "/v1/api-users", json!({"name": self.unique("robot")}))
            .await;
        check(&r, 201, "create api user");
        Person {
            id: r.body["user"]["id"].as_str().expect("user id").to_owned(),
            token: r.body["token"].as_str().expect("token").to_owned(),
        }
    }

    /// Turns an integration on (as an admin or owner).
    pub async fn enable(&self, by: &str, kind: &str) {
        let r = self
            .patch(
                by,
                &format!("/v1/integrations/{kind}"),
                json!({"enabled": true}),
            )
            .await;
        check(&r, 200, "enable integration");
    }

    /// A real SQLite file under the allowed root, with one small table; returns its path.
    pub fn sqlite_file(&self) -> String {
        let path = self
            ._server
            .data_dir
            .join("sqlite")
            .join(format!("{}.db", self.unique("db")));
        let conn = rusqlite::Connection::open(&path).expect("sqlite open");
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO t VALUES (1, 'a');",
        )
        .expect("sqlite setup");
        path.to_string_lossy().into_owned()
    }

    /// Registers a SQLite datasource (the sqlite integration must be on); returns its id.
    pub async fn sqlite_datasource(&self, by: &str, visibility: &str) -> String {
        let body = json!({
            "name": self.unique("ds"),
            "kind": "sqlite",
            "visibility": visibility,
            "connection": {"path": self.sqlite_file()},
        });
        let r = self.post(by, "/v1/datasources", body).await;
        check(&r, 201, "register datasource");
        r.body["id"].as_str().expect("ds id").to_owned()
    }

    /// Creates an app with the given datasources attached; returns its id.
    pub async fn create_app(&self, by: &str, visibility: &str, datasource_ids: &[&str]) -> String {
        let body = json!({
            "name": self.unique("app"),
            "visibility": visibility,
            "datasource_ids": datasource_ids,
        });
        let r = self.post(by, "/v1/apps", body).await;
        check(&r, 201, "create app");
        r.body["id"].as_str().expect("app id").to_owned()
    }

    /// Grants `role` on an app to a user or group.
    pub async fn share_app(&self, by: &str, app: &str, principal: &str, role: &str) {
        let r = self
            .put(
                by,
                &format!("/v1/apps/{app}/members/{principal}"),
                json!({"role": role}),
            )
            .await;
        check(&r, 200, "share app");
    }

    /// Grants `role` on a datasource to a user or group.
    pub async fn share_ds(&self, by: &str, ds: &str, principal: &str, role: &str) {
        let r = self
            .put(
                by,
                &format!("/v1/datasources/{ds}/members/{principal}"),
                json!({"role": role}),
            )
            .await;
        check(&r, 200, "share datasource");
    }

    /// Creates a group; returns its id.
    pub async fn group(&self, by: &str) -> String {
        let r = self
            .post(by, "/v1/groups", json!({"name": self.unique("group")}))
            .await;
        check(&r, 201, "create group");
        r.body["id"].as_str().expect("group id").to_owned()
    }

    pub async fn add_to_group(&self, by: &str, group: &str, user: &str) {
        let r = self
            .put(by, &format!("/v1/groups/{group}/members/{user}"), json!({}))
            .await;
        check(&r, 204, "add group member");
    }

    /// Mints a token for `user` (as `by`); returns `(token id, token)`.
    pub async fn mint(&self, by: &str, user: &str, body: Value) -> (String, String) {
        let r = self
            .post(by, &format!("/v1/users/{user}/tokens"), body)
            .await;
        check(&r, 201, "mint token");
        (
            r.body["id"].as_str().expect("token id").to_owned(),
            r.body["token"].as_str().expect("token").to_owned(),
        )
    }
}

/// Collects labelled failures so one table-walking test reports every wrong row at once.
#[derive(Default)]
pub struct Failures(pub Vec<String>);

impl Failures {
    /// Checks an answer: its status, and for errors the API's error shape and `code`. Any 5xx is
    /// a failure whatever was expected.
    pub fn expect(&mut self, label: &str, r: &Resp, status: u16, code: Option<&str>) {
        if r.status >= 500 {
            self.0
                .push(format!("{label}: server error {} {}", r.status, r.text));
            return;
        }
        if r.status != status {
            self.0.push(format!(
                "{label}: expected {status}{}, got {} {}",
                code.map(|c| format!(" {c}")).unwrap_or_default(),
                r.status,
                r.text
            ));
            return;
        }
        if r.status >= 400 {
            if !r.has_error_shape() {
                self.0.push(format!(
                    "{label}: error body has the wrong shape: {}",
                    r.text
                ));
            } else if let Some(c) = code
                && r.code() != Some(c)
            {
                self.0.push(format!(
                    "{label}: expected code {c}, got {:?} ({})",
                    r.code(),
                    r.text
                ));
            }
        }
    }

    /// Records `msg` unless `ok`.
    pub fn check(&mut self, ok: bool, msg: impl Into<String>) {
        if !ok {
            self.0.push(msg.into());
        }
    }

    /// Panics with every failure, one per line.
    pub fn finish(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} failure(s):\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}
