//! A real gateway in the test process for HTTP-level tests: a company made with the CLI's
//! `create_company` before the server is built (as an operator would), the server on
//! 127.0.0.1:0 with a temporary data directory, and a small reqwest client that sets things up
//! over HTTP like a real admin. Also the acme fixture on throwaway PostgreSQL/MariaDB databases
//! with per-test service accounts.

use serde_json::{Value, json};
use sluice::config::Config;
use sluice::fixtures::{self, AcmeAccounts};
use std::path::{Path, PathBuf};

use super::db::{MysqlTestDb, PgTestDb, mysql_admin_url, pg_admin_url};
use super::server::Server;

pub struct Gateway {
    pub base: String,
    pub http: reqwest::Client,
    /// The company owner's token, from `sluice::cli::create_company`.
    pub owner: String,
    pub data_dir: PathBuf,
    server: Server,
}

impl Gateway {
    /// Starts a gateway with the default configuration.
    pub async fn start() -> Gateway {
        Self::start_with(|_| {}).await
    }

    /// Starts a gateway, allowed to reach the local databases, after `tweak` adjusted the
    /// configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Gateway {
        let server = Server::start(&[("Acme", "owner@acme.example")], |config| {
            config.allow_networks = vec![
                "127.0.0.0/8".parse().expect("net"),
                "::1/128".parse().expect("net"),
            ];
            tweak(config);
        })
        .await;
        Gateway {
            base: server.base.clone(),
            http: reqwest::Client::new(),
            owner: server.owners[0].clone(),
            data_dir: server.data_dir.clone(),
            server,
        }
    }

    /// The directory SQLite datasource files may lie in (the default `sqlite_roots`).
    pub fn sqlite_dir(&self) -> PathBuf {
        self.data_dir.join("sqlite")
    }

    /// Stops the server gracefully and checks it ended without error.
    pub async fn stop(self) {
        self.server.stop().await;
    }

    /// Stops the gateway, runs `offline` on its data directory, and starts it again there with
    /// the same configuration (a restart, or an upgrade from an older version).
    pub async fn restart(&mut self, offline: impl FnOnce(&Path)) {
        self.server.restart(offline).await;
        self.base = self.server.base.clone();
    }

    pub fn request(&self, token: &str, method: &str, path: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
    }

    /// Any call: the status and the body as JSON (`Null` when empty, a string when not JSON).
    pub async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        super::client::call(&self.http, &self.base, token, method, path, body).await
    }

    /// A call that must succeed (2xx).
    pub async fn ok(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        super::client::ok(&self.http, &self.base, token, method, path, body).await
    }

    /// POST /v1/apps/{app}/query with a JSON answer.
    pub async fn query(&self, token: &str, app: &str, body: Value) -> (u16, Value) {
        self.call(token, "POST", &format!("/v1/apps/{app}/query"), Some(body))
            .await
    }

    /// A query that must answer 200 with rows; returns the body.
    pub async fn rows(&self, token: &str, app: &str, body: Value) -> Value {
        let (s, v) = self.query(token, app, body.clone()).await;
        assert_eq!(s, 200, "query {body} -> {v}");
        assert!(v["rows"].is_array(), "no rows in {v}");
        v
    }

    /// The error code of a refused query, asserting its status.
    pub async fn refused(&self, token: &str, app: &str, body: Value, status: u16) -> String {
        let (s, v) = self.query(token, app, body.clone()).await;
        assert_eq!(s, status, "query {body} -> {v}");
        v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {v}"))
            .to_owned()
    }

    /// Invites a person user (as `admin`); returns (user id, first token).
    pub async fn invite(&self, admin: &str, email: &str, role: &str) -> (String, String) {
        let v = self
            .ok(
                admin,
                "POST",
                "/v1/users",
                Some(json!({"email": email, "role": role})),
            )
            .await;
        (
            v["user"]["id"].as_str().expect("user id").to_owned(),
            v["token"].as_str().expect("token").to_owned(),
        )
    }

    pub async fn set_integration(&self, admin: &str, kind: &str, enabled: bool) {
        let v = self
            .ok(
                admin,
                "PATCH",
                &format!("/v1/integrations/{kind}"),
                Some(json!({"enabled": enabled})),
            )
            .await;
        assert_eq!(v["enabled"], enabled, "{v}");
    }

    /// Registers a datasource (the full create body); returns its id.
    pub async fn datasource(&self, creator: &str, body: Value) -> String {
        let (s, v) = self
            .call(creator, "POST", "/v1/datasources", Some(body))
            .await;
        assert_eq!(s, 201, "create datasource -> {v}");
        v["id"].as_str().expect("datasource id").to_owned()
    }

    /// Creates an app with these datasources attached; returns its id.
    pub async fn app(&self, creator: &str, name: &str, datasource_ids: &[&str]) -> String {
        let (s, v) = self
            .call(
                creator,
                "POST",
                "/v1/apps",
                Some(json!({"name": name, "datasource_ids": datasource_ids})),
            )
            .await;
        assert_eq!(s, 201, "create app -> {v}");
        v["id"].as_str().expect("app id").to_owned()
    }

    /// Shares an app with a user or group as viewer.
    pub async fn share(&self, editor: &str, app: &str, principal: &str) {
        self.ok(
            editor,
            "PUT",
            &format!("/v1/apps/{app}/members/{principal}"),
            Some(json!({"role": "viewer"})),
        )
        .await;
    }

    /// Audit entries with this query string (e.g. `action=query&app_id=…`), newest first.
    pub async fn audit(&self, admin: &str, query: &str) -> Vec<Value> {
        let v = self
            .ok(admin, "GET", &format!("/v1/audit?{query}"), None)
            .await;
        v["items"].as_array().expect("items").clone()
    }

    /// The Prometheus text of /metrics.
    pub async fn metrics(&self) -> String {
        let res = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics");
        assert_eq!(res.status().as_u16(), 200);
        res.text().await.expect("metrics body")
    }
}

/// The value of one `sluice_queries_total` series, 0 when absent.
pub fn query_counter(metrics: &str, outcome: &str, kind: &str) -> u64 {
    let labels = [format!("outcome=\"{outcome}\""), format!("kind=\"{kind}\"")];
    metrics
        .lines()
        .filter(|l| l.starts_with("sluice_queries_total{"))
        .filter(|l| labels.iter().all(|lab| l.contains(lab.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Servers and the acme fixture

/// Host and port of the test PostgreSQL server.
pub fn pg_server() -> (String, u16) {
    let cfg: tokio_postgres::Config = pg_admin_url().parse().expect("admin url");
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    (host, cfg.get_ports().first().copied().unwrap_or(5432))
}

/// Host and port of the test MariaDB/MySQL server.
pub fn mysql_server() -> (String, u16) {
    let opts = mysql_async::Opts::from_url(&mysql_admin_url()).expect("admin url");
    (opts.ip_or_hostname().to_owned(), opts.tcp_port())
}

/// acme loaded into a throwaway PostgreSQL database, with three per-test service accounts
/// (dropped with the database).
pub struct PgAcme {
    pub db: PgTestDb,
    pub accounts: AcmeAccounts,
}

pub async fn pg_acme() -> PgAcme {
    let db = PgTestDb::create().await;
    let admin = db.admin_client().await;
    fixtures::load_postgres(&admin).await.expect("load acme");
    let mut roles = Vec::new();
    for (prefix, password) in [
        ("qa_analyst", "analyst_pw"),
        ("qa_sales", "sales_pw"),
        ("qa_exec", "executive_pw"),
    ] {
        roles.push((db.create_role(prefix, "placeholder").await, password.into()));
    }
    let [analyst, sales, executive] = <[_; 3]>::try_from(roles).expect("three roles");
    let accounts = AcmeAccounts {
        analyst,
        sales,
        executive,
    };
    fixtures::create_postgres_accounts(&admin, &db.name, &accounts)
        .await
        .expect("acme accounts");
    PgAcme { db, accounts }
}

impl PgAcme {
    /// A datasource create body for one of the service accounts. TLS is `disable`, stated: the
    /// local server's certificate is Debian's self-signed one, which the default `verify-full`
    /// refuses (the TLS tests use throwaway servers with their own CA).
    pub fn datasource(&self, name: &str, account: &(String, String), policy: Value) -> Value {
        let (host, port) = pg_server();
        json!({
            "name": name,
            "kind": "postgres",
            "connection": {"host": host, "port": port, "database": self.db.name,
                           "user": account.0, "password": account.1,
                           "tls": {"mode": "disable"}},
            "policy": policy,
        })
    }
}

/// acme loaded into a throwaway MariaDB/MySQL database, with three per-test accounts.
pub struct MysqlAcme {
    pub db: MysqlTestDb,
    pub accounts: AcmeAccounts,
}

pub async fn mysql_acme() -> MysqlAcme {
    let db = MysqlTestDb::create().await;
    let mut admin = db.admin_conn().await;
    fixtures::load_mysql(&mut admin).await.expect("load acme");
    let mut users = Vec::new();
    for (prefix, password) in [
        ("qa_analyst", "analyst_pw"),
        ("qa_sales", "sales_pw"),
        ("qa_exec", "executive_pw"),
    ] {
        users.push((db.create_user(prefix, "placeholder").await, password.into()));
    }
    let [analyst, sales, executive] = <[_; 3]>::try_from(users).expect("three users");
    let accounts = AcmeAccounts {
        analyst,
        sales,
        executive,
    };
    fixtures::create_mysql_accounts(&mut admin, &db.name, &accounts)
        .await
        .expect("acme accounts");
    let _ = admin.disconnect().await;
    MysqlAcme { db, accounts }
}

impl MysqlAcme {
    /// A datasource create body for one of the accounts. TLS is `disable`, stated: the local
    /// MariaDB has no TLS, which the default `verify-full` refuses.
    pub fn datasource(&self, name: &str, account: &(String, String), policy: Value) -> Value {
        let (host, port) = mysql_server();
        json!({
            "name": name,
            "kind": "mysql",
            "connection": {"host": host, "port": port, "database": self.db.name,
                           "user": account.0, "password": account.1,
                           "tls": {"mode": "disable"}},
            "policy": policy,
        })
    }
}

/// Writes the acme SQLite file into the gateway's SQLite root; returns its path.
pub fn sqlite_acme(gw: &Gateway, file: &str) -> String {
    let path = gw.sqlite_dir().join(file);
    fixtures::create_sqlite(&path).expect("acme sqlite");
    path.display().to_string()
}

/// A SQLite datasource create body.
pub fn sqlite_datasource(name: &str, path: &str, policy: Value) -> Value {
    json!({"name": name, "kind": "sqlite", "connection": {"path": path}, "policy": policy})
}
